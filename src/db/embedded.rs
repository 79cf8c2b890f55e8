//! A private PostgreSQL cluster run from the machine's own PostgreSQL binaries.

use std::ffi::{CStr, CString, OsStr};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};

/// Port the private server listens on; only its Unix socket exists, so a fixed port cannot clash.
pub const PORT: u16 = 5432;

/// Longest socket path the kernel accepts (sun_path is 108 bytes including the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Lines of command output or server log quoted in errors.
const TAIL_LINES: usize = 20;

/// Seconds pg_ctl waits for the server to start or stop.
const PG_CTL_WAIT_SECS: &str = "60";

/// Name of the settings file hdls rewrites in the data directory on every start.
const HDLS_CONF: &str = "hdls.conf";

/// Line appended once to postgresql.conf so the server picks up hdls.conf.
const INCLUDE_LINE: &str = "include 'hdls.conf'";

/// Where the cluster goes when hdls runs as root and the `postgres` user cannot reach the data
/// directory (a checkout in root's 0700 home): a system directory, as PostgreSQL's own
/// packages keep theirs under /var/lib/postgresql.
pub const SYSTEM_CLUSTERS: &str = "/var/lib/hdls";

/// Name of the symlink in the data directory that points at a cluster kept elsewhere.
pub const CLUSTER_LINK: &str = "cluster";

/// Errors from locating, initialising, starting or stopping the embedded cluster.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No usable initdb/pg_ctl/postgres was found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH, via `pg_config --bindir`, or under /usr/lib/postgresql/*/bin; install them with `apt-get install postgresql` (or put their bin directory on PATH), or give hdls an external database URL"
    )]
    BinariesNotFound,
    /// Running as root, which PostgreSQL refuses, and there is no `postgres` user to switch to.
    #[error(
        "hdls is running as root, but PostgreSQL refuses to run as root and there is no `postgres` system user to run it as; create one (e.g. `useradd --system --home-dir /var/lib/postgresql postgres`) or run hdls as a non-root user"
    )]
    RootWithoutPostgresUser,
    /// The user the server runs as cannot reach the data directory.
    #[error(
        "user `{user}` (which runs the embedded PostgreSQL) cannot traverse {}; grant it search permission (e.g. `chmod o+x {}`) or put the hdls data directory somewhere it can reach",
        .path.display(), .path.display()
    )]
    PathNotTraversable { path: PathBuf, user: String },
    /// The Unix socket path would exceed the kernel's limit.
    #[error(
        "the embedded PostgreSQL socket path {} is {len} bytes, over the limit of {MAX_SOCKET_PATH}; use a shorter data directory path",
        .path.display()
    )]
    SocketPathTooLong { path: PathBuf, len: usize },
    /// The data directory has no link to its cluster, but the cluster made for it is still there.
    #[error(
        "{} holds the embedded PostgreSQL cluster made for {}, but {}/{CLUSTER_LINK} no longer links to it (was the data directory deleted?); to keep that database, put back the master.key it was used with and run `ln -s {} {}/{CLUSTER_LINK}`; to start afresh, remove it with `rm -rf {}`",
        .cluster.display(), .data_dir.display(), .data_dir.display(),
        .cluster.display(), .data_dir.display(), .cluster.display()
    )]
    UnlinkedCluster { cluster: PathBuf, data_dir: PathBuf },
    /// The data directory path cannot be written into PostgreSQL's configuration safely.
    #[error("the hdls data directory {} cannot be used: {reason}", .path.display())]
    InvalidPath { path: PathBuf, reason: &'static str },
    /// Looking up the `postgres` system user failed.
    #[error("looking up the `postgres` system user failed: {0}")]
    UserLookup(#[source] io::Error),
    /// A PostgreSQL tool exited unsuccessfully.
    #[error("{what} failed ({status}):\n{stderr_tail}")]
    Command {
        what: String,
        status: ExitStatus,
        stderr_tail: String,
    },
    /// `pg_ctl start` failed; the server log explains why.
    #[error(
        "starting the embedded PostgreSQL failed ({status}):\n{output_tail}\nlast lines of {}:\n{log_tail}",
        .log_path.display()
    )]
    StartFailed {
        status: ExitStatus,
        output_tail: String,
        log_path: PathBuf,
        log_tail: String,
    },
    /// A filesystem operation on a named path failed.
    #[error("{action} {}: {source}", .path.display())]
    Fs {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Any other I/O failure (e.g. spawning a tool).
    #[error("embedded PostgreSQL I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Wraps an io::Error with what was being done to which path.
fn fs_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EmbeddedError {
    let path = path.to_path_buf();
    move |source| EmbeddedError::Fs {
        action,
        path,
        source,
    }
}

/// Where the PostgreSQL server binaries live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    pub bindir: PathBuf,
}

impl PgBinaries {
    /// Finds initdb/pg_ctl/postgres: PATH (symlinks resolved), then `pg_config --bindir`, then the newest /usr/lib/postgresql/*/bin.
    pub fn locate() -> Result<PgBinaries, EmbeddedError> {
        if let Some(bindir) = bindir_from_path() {
            return Ok(PgBinaries { bindir });
        }
        if let Some(bindir) = bindir_from_pg_config() {
            return Ok(PgBinaries { bindir });
        }
        if let Some(bindir) = bindir_from_usr_lib(Path::new("/usr/lib/postgresql")) {
            return Ok(PgBinaries { bindir });
        }
        Err(EmbeddedError::BinariesNotFound)
    }

    /// Path of one tool in the bin directory.
    fn tool(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

/// Whether `dir` holds all three server tools as executable files.
fn is_server_bindir(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"].iter().all(|tool| {
        std::fs::metadata(dir.join(tool))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// The directory of the first initdb on PATH, after resolving symlinks (Debian links them from elsewhere).
fn bindir_from_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find_map(|dir| {
        let candidate = dir.join("initdb");
        if !candidate.is_file() {
            return None;
        }
        let resolved = std::fs::canonicalize(&candidate).ok()?;
        let bindir = resolved.parent()?.to_path_buf();
        is_server_bindir(&bindir).then_some(bindir)
    })
}

/// The bin directory `pg_config` reports, if it has the server tools (libpq-dev alone ships pg_config).
fn bindir_from_pg_config() -> Option<PathBuf> {
    let output = std::process::Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let trimmed = output.stdout.trim_ascii();
    if trimmed.is_empty() {
        return None;
    }
    let bindir = PathBuf::from(OsStr::from_bytes(trimmed));
    is_server_bindir(&bindir).then_some(bindir)
}

/// The bin directory of the highest PostgreSQL version installed under `base` (Debian layout).
fn bindir_from_usr_lib(base: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(base).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = parse_version(&entry.file_name())?;
            let bindir = entry.path().join("bin");
            is_server_bindir(&bindir).then_some((version, bindir))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bindir)| bindir)
}

/// Parses "15" or "9.6" into comparable numbers, so 10 sorts above 9.6.
fn parse_version(name: &OsStr) -> Option<Vec<u32>> {
    let name = name.to_str()?;
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// Which OS user the PostgreSQL tools run as.
#[derive(Debug, Clone)]
enum RunAs {
    /// The current (non-root) user.
    Current,
    /// Another user, switched to because we are root.
    User {
        name: String,
        uid: u32,
        gid: u32,
        home: PathBuf,
    },
}

impl RunAs {
    /// Current user unless root, in which case the `postgres` system user.
    fn detect() -> Result<RunAs, EmbeddedError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Ok(RunAs::Current);
        }
        match lookup_user("postgres").map_err(EmbeddedError::UserLookup)? {
            Some((uid, gid, home)) if uid != 0 => Ok(RunAs::User {
                name: "postgres".to_owned(),
                uid,
                gid,
                home,
            }),
            _ => Err(EmbeddedError::RootWithoutPostgresUser),
        }
    }
}

/// Looks a user up by name (thread-safe getpwnam_r), returning uid, gid and home.
fn lookup_user(name: &str) -> io::Result<Option<(u32, u32, PathBuf)>> {
    let cname = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut buf: Vec<libc::c_char> = vec![0; 4096];
    loop {
        // SAFETY: passwd is plain data (integers and pointers); all-zero is a valid value.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and buf.len() is its true size.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            let bigger = buf.len() * 2;
            buf.resize(bigger, 0);
            continue;
        }
        if rc == libc::ENOENT {
            return Ok(None);
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Ok(None);
        }
        let home = if pwd.pw_dir.is_null() {
            PathBuf::from("/")
        } else {
            // SAFETY: on success pw_dir points at a NUL-terminated string inside buf, still alive.
            let bytes = unsafe { CStr::from_ptr(pwd.pw_dir) }.to_bytes();
            PathBuf::from(OsStr::from_bytes(bytes))
        };
        return Ok(Some((pwd.pw_uid, pwd.pw_gid, home)));
    }
}

/// A private PostgreSQL cluster in a directory hdls owns.
#[derive(Debug)]
pub struct Cluster {
    bins: PgBinaries,
    run_as: RunAs,
    layout: Layout,
    /// The symlink in the data directory, when the cluster lives elsewhere (see [`SYSTEM_CLUSTERS`]).
    link: Option<PathBuf>,
    started_here: bool,
}

/// Absolute paths of everything the cluster keeps under its root.
#[derive(Debug, Clone)]
struct Layout {
    root: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
}

impl Layout {
    /// The fixed layout under an absolute root.
    fn new(root: PathBuf) -> Layout {
        Layout {
            pgdata: root.join("pgdata"),
            socket_dir: root.join("run"),
            log_path: root.join("postgres.log"),
            root,
        }
    }
}

/// Superuser role created by initdb.
const SUPERUSER: &str = "postgres";

impl Cluster {
    /// Initialises `root/pgdata` if absent, then starts the server (socket in `root/run` only) unless it is already running.
    pub async fn start(root: &Path) -> Result<Cluster, EmbeddedError> {
        let bins = PgBinaries::locate()?;
        let run_as = RunAs::detect()?;
        let (layout, link, needs_init, lock) = {
            let root = root.to_path_buf();
            let run_as = run_as.clone();
            blocking(move || {
                let created = !root.exists();
                let (root, link) = place(&root, &run_as)?;
                // A cluster moved to the system directory got its modes when that was made.
                let created = created && link.is_none();
                let (layout, needs_init, lock) = prepare_dirs(&root, &run_as, created)?;
                Ok((layout, link, needs_init, lock))
            })
            .await?
        };
        if let Some(link) = &link {
            tracing::info!(
                cluster = %layout.root.display(),
                link = %link.display(),
                "the data directory is out of the postgres user's reach; the embedded PostgreSQL cluster lives in a system directory, linked from the data directory"
            );
        }
        let mut cluster = Cluster {
            bins,
            run_as,
            layout,
            link,
            started_here: false,
        };
        if needs_init {
            cluster.initdb().await?;
        }
        {
            let layout = cluster.layout.clone();
            let run_as = cluster.run_as.clone();
            blocking(move || write_settings(&layout, &run_as)).await?;
        }
        if cluster.is_running().await? {
            tracing::info!(pgdata = %cluster.layout.pgdata.display(), "embedded PostgreSQL already running; reusing it");
        } else {
            {
                let log_path = cluster.layout.log_path.clone();
                let run_as = cluster.run_as.clone();
                blocking(move || prepare_log(&log_path, &run_as)).await?;
            }
            cluster.pg_ctl_start().await?;
            cluster.started_here = true;
            tracing::info!(socket_dir = %cluster.layout.socket_dir.display(), "embedded PostgreSQL started");
        }
        // Held until here so a concurrent start on the same root cannot initdb or start twice.
        drop(lock);
        Ok(cluster)
    }

    /// Connection settings for the superuser `postgres` on database `dbname` (host = socket dir, port).
    pub fn superuser_config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = self.base_config();
        config.user(SUPERUSER).dbname(dbname);
        config
    }

    /// Base settings (socket host and port only) so callers can pick a role and database.
    pub fn base_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config.host_path(&self.layout.socket_dir).port(PORT);
        config
    }

    /// Whether this handle started the server (and so should stop it).
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// Absolute, canonical root directory of the cluster.
    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    /// The data directory's symlink to the cluster, when the cluster lives outside it.
    pub fn link(&self) -> Option<&Path> {
        self.link.as_deref()
    }

    /// Directory holding the server's Unix socket (`.s.PGSQL.<PORT>`).
    pub fn socket_dir(&self) -> &Path {
        &self.layout.socket_dir
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.layout.pgdata
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.layout.log_path
    }

    /// Stops the server (pg_ctl stop -m fast, waiting) if this handle started it; no-op otherwise.
    pub async fn stop(&self) -> Result<(), EmbeddedError> {
        if !self.started_here {
            return Ok(());
        }
        let mut cmd = self.command("pg_ctl");
        cmd.args(["stop", "-m", "fast", "-w", "-t", PG_CTL_WAIT_SECS, "-D"])
            .arg(&self.layout.pgdata);
        let output = self.run("pg_ctl", cmd).await?;
        if output.status.success() {
            tracing::info!(pgdata = %self.layout.pgdata.display(), "embedded PostgreSQL stopped");
            return Ok(());
        }
        // Someone (or an earlier stop) already stopped it, which is the outcome we wanted.
        if !self.is_running().await? {
            return Ok(());
        }
        Err(EmbeddedError::Command {
            what: "pg_ctl stop".to_owned(),
            status: output.status,
            stderr_tail: output_tail(&output),
        })
    }

    /// Synchronous immediate stop (pg_ctl stop -m immediate) for atexit hooks; no-op unless this handle started the server.
    pub fn stop_blocking_immediate(&self) {
        if !self.started_here {
            return;
        }
        let mut cmd = self.command("pg_ctl");
        cmd.args(["stop", "-m", "immediate", "-w", "-t", "10", "-D"])
            .arg(&self.layout.pgdata)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match cmd.output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => tracing::warn!(
                status = %output.status,
                output = %output_tail(&output),
                "immediate stop of embedded PostgreSQL failed"
            ),
            Err(error) => {
                tracing::warn!(%error, "could not run pg_ctl to stop embedded PostgreSQL")
            }
        }
    }

    /// A command for one PostgreSQL tool, run as the right user with a sanitised environment.
    fn command(&self, tool: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(self.bins.tool(tool));
        // The postgres user cannot chdir into a root-owned 0700 cwd, and initdb complains when it cannot.
        cmd.current_dir(&self.layout.pgdata);
        // An operator's PGDATA/PGHOST/PGPORT/PGOPTIONS must not redirect the tools to another cluster.
        for (key, _) in std::env::vars_os() {
            if key.as_bytes().starts_with(b"PG") {
                cmd.env_remove(key);
            }
        }
        cmd.stdin(Stdio::null());
        if let RunAs::User {
            name,
            uid,
            gid,
            home,
        } = &self.run_as
        {
            // std sets the gid before the uid and drops root's supplementary groups when a uid is set.
            cmd.gid(*gid)
                .uid(*uid)
                .env("HOME", home)
                .env("USER", name)
                .env("LOGNAME", name);
        }
        cmd
    }

    /// Runs a tool to completion, capturing its output.
    async fn run(&self, tool: &str, cmd: std::process::Command) -> Result<Output, EmbeddedError> {
        tokio::process::Command::from(cmd)
            .output()
            .await
            .map_err(fs_err("running", &self.bins.tool(tool)))
    }

    /// Creates the cluster with trust auth for the `postgres` superuser and no locale dependence.
    async fn initdb(&self) -> Result<(), EmbeddedError> {
        tracing::info!(pgdata = %self.layout.pgdata.display(), "initialising embedded PostgreSQL cluster");
        let mut cmd = self.command("initdb");
        cmd.arg("-D").arg(&self.layout.pgdata).args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        ]);
        let output = self.run("initdb", cmd).await?;
        if output.status.success() {
            return Ok(());
        }
        Err(EmbeddedError::Command {
            what: "initdb".to_owned(),
            status: output.status,
            stderr_tail: output_tail(&output),
        })
    }

    /// Whether a server is running on the data directory, per `pg_ctl status`.
    async fn is_running(&self) -> Result<bool, EmbeddedError> {
        let mut cmd = self.command("pg_ctl");
        cmd.args(["status", "-D"]).arg(&self.layout.pgdata);
        let output = self.run("pg_ctl", cmd).await?;
        // pg_ctl status: 0 = running, 3 = not running; anything else means it could not tell.
        match output.status.code() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => Err(EmbeddedError::Command {
                what: "pg_ctl status".to_owned(),
                status: output.status,
                stderr_tail: output_tail(&output),
            }),
        }
    }

    /// Starts the server and waits until it accepts connections.
    async fn pg_ctl_start(&self) -> Result<(), EmbeddedError> {
        let mut cmd = self.command("pg_ctl");
        cmd.args(["start", "-w", "-t", PG_CTL_WAIT_SECS, "-D"])
            .arg(&self.layout.pgdata)
            // -l also matters for us: without it the server would inherit our output pipes and output() would never finish.
            .arg("-l")
            .arg(&self.layout.log_path);
        let output = self.run("pg_ctl", cmd).await?;
        if output.status.success() {
            return Ok(());
        }
        let log_path = self.layout.log_path.clone();
        let log_tail = blocking(move || Ok(read_log_tail(&log_path))).await?;
        Err(EmbeddedError::StartFailed {
            status: output.status,
            output_tail: output_tail(&output),
            log_path: self.layout.log_path.clone(),
            log_tail,
        })
    }
}

/// Runs blocking filesystem work off the async runtime's worker threads.
async fn blocking<T, F>(work: F) -> Result<T, EmbeddedError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, EmbeddedError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EmbeddedError::Io(io::Error::other(e)))?
}

/// The system directory for the cluster of a data directory: named by a hash of the data
/// directory's canonical path, so one checkout always maps to one place.
pub fn system_cluster_dir(data_dir: &Path) -> PathBuf {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data_dir.as_os_str().as_bytes());
    Path::new(SYSTEM_CLUSTERS).join(hex::encode(&digest[..8]))
}

/// Decides where the cluster of `data_dir` lives: in it, as always, unless it already links
/// to a cluster elsewhere, or the server runs as another user (we are root) who cannot
/// traverse the way to it and no cluster exists there yet. Then the cluster goes to
/// [`system_cluster_dir`], which that user can reach without anyone loosening the
/// permissions of a home directory, and `data_dir/cluster` links to it so that it is found
/// again (and by the operator: `ls -l .hdls`). Returns the cluster root and that link.
fn place(data_dir: &Path, run_as: &RunAs) -> Result<(PathBuf, Option<PathBuf>), EmbeddedError> {
    std::fs::create_dir_all(data_dir).map_err(fs_err("creating", data_dir))?;
    let data_dir = std::fs::canonicalize(data_dir).map_err(fs_err("resolving", data_dir))?;
    let link = data_dir.join(CLUSTER_LINK);
    if let Some(target) = read_cluster_link(&link)? {
        return Ok((target, Some(link)));
    }
    let RunAs::User { uid, gid, .. } = run_as else {
        return Ok((data_dir, None));
    };
    if data_dir.join("pgdata").join("PG_VERSION").exists() {
        return Ok((data_dir, None));
    }
    let Some(closed) = first_untraversable(&data_dir, *uid, *gid)? else {
        return Ok((data_dir, None));
    };
    let target = system_cluster_dir(&data_dir);
    if target.join("pgdata").join("PG_VERSION").exists() {
        // Reusing it would pair an old database with this data directory's (new) master key;
        // deleting it would destroy someone's data. The operator decides.
        return Err(EmbeddedError::UnlinkedCluster {
            cluster: target,
            data_dir,
        });
    }
    tracing::info!(
        closed = %closed.display(),
        cluster = %target.display(),
        "the postgres user cannot traverse a parent of the data directory; placing the embedded PostgreSQL cluster in a system directory"
    );
    create_system_dir(&target)?;
    match std::os::unix::fs::symlink(&target, &link) {
        Ok(()) => Ok((target, Some(link))),
        // A concurrent start linked it first; follow what it wrote.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read_cluster_link(&link)? {
            Some(existing) => Ok((existing, Some(link))),
            None => Err(fs_err("linking", &link)(e)),
        },
        Err(e) => Err(fs_err("linking", &link)(e)),
    }
}

/// The target of the data directory's cluster link, if there is one.
fn read_cluster_link(link: &Path) -> Result<Option<PathBuf>, EmbeddedError> {
    match std::fs::symlink_metadata(link) {
        Ok(meta) if meta.file_type().is_symlink() => {}
        Ok(_) => {
            return Err(EmbeddedError::InvalidPath {
                path: link.to_path_buf(),
                reason: "it should be a symlink to the embedded PostgreSQL cluster",
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fs_err("inspecting", link)(e)),
    }
    let target = std::fs::read_link(link).map_err(fs_err("reading", link))?;
    if !target.is_absolute() {
        return Err(EmbeddedError::InvalidPath {
            path: link.to_path_buf(),
            reason: "it should be a symlink to an absolute path",
        });
    }
    Ok(Some(target))
}

/// Creates `dir` and its missing parents with mode 0711 (the cluster's user passes through,
/// nobody lists them), set explicitly so that a strict umask cannot close the way.
fn create_system_dir(dir: &Path) -> Result<(), EmbeddedError> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))
                .map_err(fs_err("setting permissions on", d))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fs_err("creating", d)(e)),
        }
    }
    Ok(())
}

/// The first of `dir`'s ancestors (not `dir` itself, whose mode hdls may set) that a process
/// with this uid and gid cannot search.
fn first_untraversable(dir: &Path, uid: u32, gid: u32) -> Result<Option<PathBuf>, EmbeddedError> {
    for ancestor in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor).map_err(fs_err("inspecting", ancestor))?;
        if !can_search(&meta, uid, gid) {
            return Ok(Some(ancestor.to_path_buf()));
        }
    }
    Ok(None)
}

/// Creates and checks the root, run and data directories; returns the layout, whether initdb is needed, and the start lock.
/// `created` says the root did not exist before this start.
fn prepare_dirs(
    root: &Path,
    run_as: &RunAs,
    created: bool,
) -> Result<(Layout, bool, File), EmbeddedError> {
    std::fs::create_dir_all(root).map_err(fs_err("creating", root))?;
    let root = std::fs::canonicalize(root).map_err(fs_err("resolving", root))?;
    validate_root_path(&root)?;
    let layout = Layout::new(root);

    let socket = layout.socket_dir.join(format!(".s.PGSQL.{PORT}"));
    let len = socket.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(EmbeddedError::SocketPathTooLong { path: socket, len });
    }

    if let RunAs::User { name, uid, gid, .. } = run_as {
        if created {
            // The postgres user must traverse root to reach pgdata, but has no business listing it.
            std::fs::set_permissions(&layout.root, std::fs::Permissions::from_mode(0o711))
                .map_err(fs_err("setting permissions on", &layout.root))?;
        }
        ensure_traversable(&layout.root, name, *uid, *gid)?;
    }

    let lock = lock_root(&layout.root)?;
    ensure_private_dir(&layout.socket_dir, run_as)?;
    let needs_init = !layout.pgdata.join("PG_VERSION").exists();
    if needs_init {
        ensure_private_dir(&layout.pgdata, run_as)?;
    }
    Ok((layout, needs_init, lock))
}

/// Rejects roots that PostgreSQL's configuration syntax cannot carry verbatim.
fn validate_root_path(root: &Path) -> Result<(), EmbeddedError> {
    let invalid = |reason| EmbeddedError::InvalidPath {
        path: root.to_path_buf(),
        reason,
    };
    let text = root
        .to_str()
        .ok_or_else(|| invalid("its path is not valid UTF-8"))?;
    if text
        .chars()
        .any(|c| matches!(c, '\'' | '"' | '\\') || c.is_control())
    {
        return Err(invalid(
            "its path contains a quote, backslash or control character",
        ));
    }
    Ok(())
}

/// Whether a process with exactly this uid and gid (no supplementary groups) may search the directory.
fn can_search(meta: &std::fs::Metadata, uid: u32, gid: u32) -> bool {
    let mode = meta.mode();
    if meta.uid() == uid {
        mode & 0o100 != 0
    } else if meta.gid() == gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// Checks the postgres user can traverse root and each of its ancestors, granting search on root itself if we own it.
fn ensure_traversable(root: &Path, user: &str, uid: u32, gid: u32) -> Result<(), EmbeddedError> {
    let meta = std::fs::metadata(root).map_err(fs_err("inspecting", root))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if !can_search(&meta, uid, gid) && meta.uid() == euid {
        // Root is hdls's own directory; search permission alone exposes no names in it.
        let mode = (meta.mode() & 0o7777) | 0o001;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode))
            .map_err(fs_err("setting permissions on", root))?;
    }
    for dir in root.ancestors() {
        let meta = std::fs::metadata(dir).map_err(fs_err("inspecting", dir))?;
        if !can_search(&meta, uid, gid) {
            return Err(EmbeddedError::PathNotTraversable {
                path: dir.to_path_buf(),
                user: user.to_owned(),
            });
        }
    }
    Ok(())
}

/// Takes an exclusive lock on the root, waiting for any other start on it to finish.
fn lock_root(root: &Path) -> Result<File, EmbeddedError> {
    let path = root.join("embedded.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(fs_err("opening", &path))?;
    file.lock().map_err(fs_err("locking", &path))?;
    Ok(file)
}

/// Makes `dir` exist as a 0700 directory owned by the server's user.
fn ensure_private_dir(dir: &Path, run_as: &RunAs) -> Result<(), EmbeddedError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fs_err("creating", dir)(e)),
    }
    chown_to(dir, run_as)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(fs_err("setting permissions on", dir))
}

/// Gives a path to the server's user when that is not us.
fn chown_to(path: &Path, run_as: &RunAs) -> Result<(), EmbeddedError> {
    if let RunAs::User { uid, gid, .. } = run_as {
        std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
            .map_err(fs_err("changing owner of", path))?;
    }
    Ok(())
}

/// Writes hdls.conf (socket-only listening and sizing) and makes postgresql.conf include it.
fn write_settings(layout: &Layout, run_as: &RunAs) -> Result<(), EmbeddedError> {
    // Rewritten on every start so the socket directory follows the root if it is moved.
    let conf = format!(
        "# Written by hdls on every start of its embedded PostgreSQL; put your own settings in postgresql.conf.\n\
         listen_addresses = ''\n\
         unix_socket_directories = '\"{socket_dir}\"'\n\
         unix_socket_permissions = 0700\n\
         port = {PORT}\n\
         max_connections = 200\n\
         shared_buffers = 128MB\n",
        socket_dir = layout.socket_dir.display(),
    );
    let target = layout.pgdata.join(HDLS_CONF);
    let temp = layout.pgdata.join(format!("{HDLS_CONF}.tmp"));
    {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&temp)
            .map_err(fs_err("creating", &temp))?;
        file.write_all(conf.as_bytes())
            .map_err(fs_err("writing", &temp))?;
        file.sync_all().map_err(fs_err("syncing", &temp))?;
    }
    chown_to(&temp, run_as)?;
    std::fs::rename(&temp, &target).map_err(fs_err("replacing", &target))?;

    let main_conf = layout.pgdata.join("postgresql.conf");
    let current = std::fs::read_to_string(&main_conf).map_err(fs_err("reading", &main_conf))?;
    if !current.lines().any(|line| line.trim() == INCLUDE_LINE) {
        let mut file = OpenOptions::new()
            .append(true)
            .open(&main_conf)
            .map_err(fs_err("opening", &main_conf))?;
        // `include` rather than include_if_exists: a missing file must fail the start, not listen on TCP.
        let block = format!(
            "\n# Added by hdls: socket-only settings for the embedded server.\n{INCLUDE_LINE}\n"
        );
        file.write_all(block.as_bytes())
            .map_err(fs_err("writing", &main_conf))?;
        file.sync_all().map_err(fs_err("syncing", &main_conf))?;
    }
    Ok(())
}

/// Makes sure the log file exists and is writable by the server's user (the root directory is not).
fn prepare_log(log_path: &Path, run_as: &RunAs) -> Result<(), EmbeddedError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log_path)
        .map_err(fs_err("creating", log_path))?;
    chown_to(log_path, run_as)
}

/// The last lines of a tool's stderr, or of its stdout when stderr is empty.
fn output_tail(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    tail_lines(&text, TAIL_LINES)
}

/// The last `n` lines of `text`.
fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last lines of the server log, or why it could not be read.
fn read_log_tail(path: &Path) -> String {
    // Only the end matters, and the log of a long-lived cluster can be large.
    const WINDOW: u64 = 64 * 1024;
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(tail_lines(&String::from_utf8_lossy(&bytes), TAIL_LINES))
    };
    match read() {
        Ok(tail) if tail.is_empty() => "(log is empty)".to_owned(),
        Ok(tail) => tail,
        Err(e) => format!("(could not read log: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// Stops the server and removes the directory even when an assertion fails.
    struct Scratch {
        dir: PathBuf,
        cluster: Option<Cluster>,
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            if let Some(cluster) = &self.cluster {
                cluster.stop_blocking_immediate();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn scratch_dir() -> PathBuf {
        #[allow(clippy::disallowed_methods)] // a unique temp name, not a clock reading
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        std::env::temp_dir().join(format!("hdls-embedded-{}-{nanos}", std::process::id()))
    }

    async fn query_identity(config: tokio_postgres::Config) -> (String, String) {
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect");
        let conn = tokio::spawn(connection);
        let row = client
            .query_one("select current_user, version()", &[])
            .await
            .expect("query");
        let identity = (row.get::<_, String>(0), row.get::<_, String>(1));
        drop(client);
        let _ = conn.await;
        identity
    }

    #[tokio::test]
    async fn starts_connects_reuses_and_stops() {
        let mut scratch = Scratch {
            dir: scratch_dir(),
            cluster: None,
        };
        scratch.cluster = Some(Cluster::start(&scratch.dir).await.expect("first start"));
        let cluster = scratch.cluster.as_ref().expect("cluster");
        assert!(cluster.started_here());
        assert!(
            cluster
                .socket_dir()
                .join(format!(".s.PGSQL.{PORT}"))
                .exists()
        );

        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let root_mode = std::fs::metadata(cluster.root()).expect("root meta").mode() & 0o777;
            assert_eq!(root_mode, 0o711);
            let pg_owner = std::fs::metadata(cluster.data_dir())
                .expect("pgdata meta")
                .uid();
            assert_ne!(pg_owner, 0, "pgdata must belong to the postgres user");
        }

        let (user, version) = query_identity(cluster.superuser_config("postgres")).await;
        assert_eq!(user, "postgres");
        assert!(version.starts_with("PostgreSQL"), "{version}");

        let again = Cluster::start(&scratch.dir).await.expect("second start");
        assert!(!again.started_here());
        assert_eq!(again.socket_dir(), cluster.socket_dir());
        again.stop().await.expect("no-op stop");
        let (user, _) = query_identity(again.superuser_config("postgres")).await;
        assert_eq!(
            user, "postgres",
            "server must survive the non-owning handle's stop"
        );

        cluster.stop().await.expect("stop");
        assert!(!cluster.is_running().await.expect("status"));
        assert!(
            !cluster
                .socket_dir()
                .join(format!(".s.PGSQL.{PORT}"))
                .exists()
        );
        // Stopping twice is harmless.
        cluster.stop().await.expect("second stop");
    }

    #[test]
    fn binaries_not_found_says_how_to_install() {
        let text = EmbeddedError::BinariesNotFound.to_string();
        assert!(text.contains("apt-get install postgresql"), "{text}");
        assert!(text.contains("initdb"), "{text}");
    }

    #[test]
    fn root_without_postgres_user_says_what_to_do() {
        let text = EmbeddedError::RootWithoutPostgresUser.to_string();
        assert!(text.contains("postgres"), "{text}");
        assert!(text.contains("non-root"), "{text}");
    }

    #[test]
    fn versions_sort_numerically() {
        let v = |s: &str| parse_version(OsStr::new(s));
        assert!(v("10") > v("9.6"));
        assert!(v("15") > v("9"));
        assert_eq!(v("main"), None);
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("", 2), "");
    }

    #[test]
    fn a_data_directory_maps_to_one_system_cluster_directory() {
        let a = system_cluster_dir(Path::new("/root/hdls/.hdls"));
        assert_eq!(a, system_cluster_dir(Path::new("/root/hdls/.hdls")));
        assert_ne!(a, system_cluster_dir(Path::new("/root/other/.hdls")));
        assert_eq!(a.parent(), Some(Path::new(SYSTEM_CLUSTERS)));
    }

    #[test]
    fn the_cluster_link_must_be_an_absolute_symlink() {
        let dir = scratch_dir();
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let link = dir.join(CLUSTER_LINK);
        assert!(matches!(read_cluster_link(&link), Ok(None)));
        std::os::unix::fs::symlink("/var/lib/hdls/0123456789abcdef", &link).expect("symlink");
        assert_eq!(
            read_cluster_link(&link).expect("absolute link"),
            Some(PathBuf::from("/var/lib/hdls/0123456789abcdef"))
        );
        std::fs::remove_file(&link).expect("remove link");
        std::os::unix::fs::symlink("relative/cluster", &link).expect("symlink");
        assert!(matches!(
            read_cluster_link(&link),
            Err(EmbeddedError::InvalidPath { .. })
        ));
        std::fs::remove_file(&link).expect("remove link");
        std::fs::write(&link, "not a link").expect("file");
        assert!(matches!(
            read_cluster_link(&link),
            Err(EmbeddedError::InvalidPath { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn quotes_in_root_are_rejected() {
        assert!(validate_root_path(Path::new("/tmp/it's")).is_err());
        assert!(validate_root_path(Path::new("/tmp/plain dir")).is_ok());
    }
}
