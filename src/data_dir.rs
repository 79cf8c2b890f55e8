//! The data directory (`./.hdls` by default): created so that other users may pass through
//! it (the embedded cluster may run as `postgres`) but not list what is inside.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// Creates the data directory (and missing parents) with mode 0711 if it does not exist.
pub fn ensure(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
}
