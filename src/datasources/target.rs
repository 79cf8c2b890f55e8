//! The strict parse of a linked database's connection string: a `postgres://` or
//! `postgresql://` URL naming exactly one network host. Everything libpq would read as a
//! Unix socket, a second host or an address override is refused here, before anything
//! resolves or connects; what is left is checked by the outbound guard at every connect.
//!
//! Messages never contain the string or any part of its user information.

use std::fmt;

use crate::error::ToolError;
use crate::net::guard::parse_ip_literal;

/// Longest connection string accepted.
const MAX_LEN: usize = 2048;

/// Where the string is refused, for `invalid_input`.
const PATH: &str = "connection_string";

/// What the connection string asked for TLS (`sslmode`); see [`Target::ssl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ssl {
    /// No `sslmode`: TLS, unless the operator allowed the network (then TLS if offered).
    Default,
    /// `disable`: plain, allowed only inside the operator's allowed networks.
    Disable,
    /// `allow`/`prefer`: treated like [`Ssl::Default`].
    Prefer,
    /// `require`/`verify-ca`/`verify-full`: TLS, the certificate verified against the host name.
    Require,
}

/// A parsed connection string. `Debug` never shows the user or the password.
#[derive(Clone)]
pub struct Target {
    /// The host as the TLS certificate must name it (an IP literal in canonical form).
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<String>,
    pub dbname: String,
    pub ssl: Ssl,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("ssl", &self.ssl)
            .finish_non_exhaustive()
    }
}

fn refuse(message: impl Into<String>) -> ToolError {
    ToolError::invalid_input(PATH, message)
}

impl Target {
    /// The password, for the connector only.
    pub(super) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Parses a connection string strictly (see the module docs).
    pub fn parse(text: &str) -> Result<Target, ToolError> {
        let text = text.trim();
        if text.len() > MAX_LEN {
            return Err(refuse(format!(
                "the connection string is longer than {MAX_LEN} characters"
            )));
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(refuse(
                "expected a URL like postgres://user:password@db.example.com:5432/dbname",
            ));
        };
        if !matches!(
            scheme.to_ascii_lowercase().as_str(),
            "postgres" | "postgresql"
        ) {
            return Err(refuse(
                "the connection string must start with postgres:// or postgresql://",
            ));
        }
        // The authority, as libpq reads it: up to the first '/', '?' or '#'; the host list
        // follows the last '@'. A comma there is a second host.
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if hosts.contains(',') {
            return Err(refuse(
                "the connection string names more than one host; link one host",
            ));
        }
        if hosts.is_empty() || hosts.starts_with(':') {
            return Err(refuse(
                "the connection string names no host; host-less and Unix-socket connection strings are refused",
            ));
        }
        if hosts.contains('%') || hosts.starts_with('/') {
            return Err(refuse(
                "the host is a Unix-socket path; hdls connects only to a network host",
            ));
        }
        let url = url::Url::parse(text).map_err(|_| {
            refuse("the connection string is not a valid URL (percent-encode special characters in the password)")
        })?;
        let host = match url.host() {
            Some(url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => {
                return Err(refuse(
                    "the connection string names no host; host-less and Unix-socket connection strings are refused",
                ));
            }
        };
        // An IP literal in any spelling (127.1, 2130706433, 0x7f000001) is written canonically,
        // so what the guard judges is what TLS verifies and what is shown.
        let host = match parse_ip_literal(&host) {
            Some(ip) => ip.to_string(),
            None => host.to_ascii_lowercase(),
        };
        if url.fragment().is_some() {
            return Err(refuse("the connection string must not have a #fragment"));
        }
        let port = url.port().unwrap_or(5432);
        if port == 0 {
            return Err(refuse("the port must be between 1 and 65535"));
        }
        let decode = |s: &str| {
            percent_decode(s)
                .ok_or_else(|| refuse("the connection string has invalid percent-encoding"))
        };
        let user = decode(url.username())?;
        if user.is_empty() {
            return Err(refuse(
                "the connection string must name a database user (postgres://user:password@host/db)",
            ));
        }
        let password = url.password().map(decode).transpose()?;
        let path = url.path().strip_prefix('/').unwrap_or(url.path());
        let dbname = decode(path)?;
        if dbname.contains('/') || dbname.len() > 63 {
            return Err(refuse("the database name is not valid"));
        }
        let dbname = if dbname.is_empty() {
            user.clone()
        } else {
            dbname
        };
        let mut ssl = Ssl::Default;
        for (name, value) in url.query_pairs() {
            match name.as_ref() {
                "host" => {
                    return Err(refuse(
                        if value.starts_with('/') || value.starts_with('@') {
                            "host= in the query string names a Unix socket; hdls connects only to a network host"
                        } else {
                            "host= may not be set in the query string; put the one host in the URL"
                        },
                    ));
                }
                "hostaddr" => {
                    return Err(refuse(
                        "hostaddr= may not be set: hdls resolves the host itself and connects to the address it checked",
                    ));
                }
                "sslmode" => {
                    ssl = match value.as_ref() {
                        "disable" => Ssl::Disable,
                        "allow" | "prefer" => Ssl::Prefer,
                        "require" | "verify-ca" | "verify-full" => Ssl::Require,
                        _ => {
                            return Err(refuse(
                                "sslmode must be disable, allow, prefer, require, verify-ca or verify-full",
                            ));
                        }
                    };
                }
                // Harmless, and hdls sets its own anyway.
                "application_name" | "connect_timeout" => {}
                other => {
                    let shown: String = other.chars().take(40).collect();
                    return Err(refuse(format!(
                        "the query parameter {shown:?} is not accepted (only sslmode, application_name and connect_timeout are)"
                    )));
                }
            }
        }
        Ok(Target {
            host,
            port,
            user,
            password,
            dbname,
            ssl,
        })
    }
}

/// Percent-decodes a URL component as UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        let error = Target::parse(text).expect_err(text);
        assert_eq!(error.code, crate::error::ErrorCode::InvalidInput, "{text}");
        assert!(!error.message.contains("s3cret"), "{}", error.message);
        error.message
    }

    #[test]
    fn network_urls_parse() {
        let t = Target::parse("postgres://app:s3cret%40x@DB.Example.com:6543/shop?sslmode=require")
            .unwrap();
        assert_eq!(t.host, "db.example.com");
        assert_eq!(t.port, 6543);
        assert_eq!(t.user, "app");
        assert_eq!(t.password(), Some("s3cret@x"));
        assert_eq!(t.dbname, "shop");
        assert_eq!(t.ssl, Ssl::Require);
        assert!(!format!("{t:?}").contains("s3cret"));
        let t = Target::parse("postgresql://app@[::1]/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.dbname.as_str()),
            ("::1", 5432, "app")
        );
        assert_eq!(
            Target::parse("postgres://u@2130706433/d").unwrap().host,
            "127.0.0.1"
        );
        assert_eq!(
            Target::parse("postgres://u@0x7f000001/d").unwrap().host,
            "127.0.0.1"
        );
    }

    #[test]
    fn sockets_hostless_and_smuggled_hosts_are_refused() {
        for (text, expect) in [
            ("postgres:///db", "no host"),
            ("postgres://u:s3cret@/db", "no host"),
            ("postgres://%2Fvar%2Frun%2Fpostgresql/db", "Unix-socket"),
            ("postgres://u:s3cret@%2Ftmp/db", "Unix-socket"),
            ("/var/run/postgresql", "postgres://"),
            ("postgres://u:s3cret@db.example/db?host=/tmp", "Unix socket"),
            (
                "postgres://u:s3cret@db.example/db?host=other.example",
                "host=",
            ),
            (
                "postgres://u:s3cret@db.example/db?hostaddr=10.0.0.1",
                "hostaddr",
            ),
            (
                "postgres://u:s3cret@a.example,b.example/db",
                "more than one host",
            ),
            (
                "postgres://u:s3cret@a.example:5432,b.example:5433/db",
                "more than one host",
            ),
            ("mysql://u:s3cret@db.example/db", "postgres://"),
            ("postgres://db.example/db", "user"),
            (
                "postgres://u:s3cret@db.example/db?options=-c%20x",
                "not accepted",
            ),
            ("postgres://u:s3cret@db.example/db?sslmode=bogus", "sslmode"),
        ] {
            let message = refused(text);
            assert!(message.contains(expect), "{text}: {message}");
        }
    }
}
