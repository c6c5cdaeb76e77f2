//! What tells a file changed, for the certificates reloaded without a restart: its
//! modification time, size and inode, read through symbolic links (a Kubernetes Secret
//! volume swaps a link when it is updated). No IO beyond one `stat`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

/// A file's modification time (when the filesystem has one), size and inode.
pub type FileStamp = (Option<SystemTime>, u64, u64);

/// The stamp of the file at `path`, following symbolic links.
pub fn stamp(path: &Path) -> std::io::Result<FileStamp> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified().ok(), meta.len(), meta.ino()))
}
