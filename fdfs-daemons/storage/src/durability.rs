//! What is on disk when a change is acknowledged (`fsync_before_reply`, on by default).
//!
//! A new file's content is flushed (`fdatasync`) before it gets its name, so a name can
//! never point at content that a power loss took away. After the rename or link, the
//! directory is flushed, and the binlog record of the change is flushed before the
//! reply (concurrent requests share one binlog flush). With the setting off the reply
//! comes as soon as the kernel has the data: that survives a crash of the daemon
//! (`kill -9`) but not of the machine.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::binlog::BinlogPos;
use crate::state::Storage;

/// Runs blocking disk work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))?
}

/// Flushes a directory's entries (names added or removed).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Storage {
    /// Flushes a file's content (before it is named, or before a change to it is
    /// acknowledged).
    pub async fn durable_data(&self, file: &File) -> io::Result<()> {
        if !self.cfg.fsync_before_reply {
            return Ok(());
        }
        let file = file.try_clone()?;
        blocking(move || file.sync_data()).await
    }

    /// Flushes the directory that gained or lost a name, and the binlog up to `pos`.
    pub async fn durable_names(&self, dir: Option<&Path>, pos: BinlogPos) -> io::Result<()> {
        if !self.cfg.fsync_before_reply {
            return Ok(());
        }
        // Two independent flushes: run side by side, so their journal commits overlap.
        let binlog = self.binlog.clone();
        let log = blocking(move || binlog.sync_through(pos));
        match dir.map(Path::to_path_buf) {
            Some(d) => {
                let (a, b) = tokio::join!(blocking(move || sync_dir(&d)), log);
                a.and(b)
            }
            None => log.await,
        }
    }
}
