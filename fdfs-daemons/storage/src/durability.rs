//! What is on disk when a change is acknowledged (`fsync_before_reply`, on by default).
//!
//! A new file's content is flushed (`fdatasync`) before it gets its name, so a name can
//! never point at content that a power loss took away. After the rename or link, the
//! directory is flushed, and the binlog record of the change is flushed before the
//! reply (concurrent requests share one binlog flush). With the setting off the reply
//! comes as soon as the kernel has the data: that survives a crash of the daemon
//! (`kill -9`) but not of the machine.
//!
//! A new file's flushes, naming and record run in one blocking task ([`Storage::seal`]):
//! each hand-off between the async workers and the blocking threads costs two context
//! switches, which on a small machine weigh as much as a flush.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::binlog::BinlogPos;
use crate::state::Storage;
use crate::store::NewFile;

/// Which step of [`Storage::seal`] failed.
#[derive(Debug)]
pub enum SealError {
    /// Flushing the content (before it was named).
    Content(io::Error),
    /// Naming or recording, as the `name` step reports it.
    Name(crate::handlers::Fail),
    /// Flushing the directory or the binlog (after naming: the file exists, unacknowledged).
    Names(io::Error),
    /// The blocking task itself.
    Task(String),
}

/// Runs blocking disk work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))?
}

/// Flushes made so that a change could be acknowledged (file content, directories,
/// binlogs), counted for the benchmark's "flushes per upload".
pub static FLUSHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts one flush (see [`FLUSHES`]).
pub(crate) fn counted<T>(r: io::Result<T>) -> io::Result<T> {
    FLUSHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    r
}

/// Flushes a directory's entries (names added or removed).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    counted(File::open(dir)?.sync_all())
}

impl Storage {
    /// Flushes a file's content (before it is named, or before a change to it is
    /// acknowledged).
    pub async fn durable_data(&self, file: &File) -> io::Result<()> {
        if !self.cfg.fsync_before_reply {
            return Ok(());
        }
        let file = file.try_clone()?;
        blocking(move || counted(file.sync_data())).await
    }

    /// Gives `temp`, a received file in `dir`, its name and its binlog record (`name`
    /// does both and returns the record's position). With `fsync_before_reply` the
    /// content is flushed before `name` runs, the directory and the binlog after it, all
    /// in one blocking task; without it `name` runs right here.
    pub async fn seal<R: Send + 'static>(
        &self,
        mut temp: NewFile,
        dir: PathBuf,
        name: impl FnOnce(&mut NewFile) -> Result<(R, BinlogPos), crate::handlers::Fail>
            + Send
            + 'static,
    ) -> Result<(NewFile, R, BinlogPos), SealError> {
        if !self.cfg.fsync_before_reply {
            let (r, pos) = name(&mut temp).map_err(SealError::Name)?;
            return Ok((temp, r, pos));
        }
        let binlog = self.binlog.clone();
        tokio::task::spawn_blocking(move || {
            counted(temp.file.sync_data()).map_err(SealError::Content)?;
            let (r, pos) = name(&mut temp).map_err(SealError::Name)?;
            sync_dir(&dir).map_err(SealError::Names)?;
            binlog.sync_through(pos).map_err(SealError::Names)?;
            Ok((temp, r, pos))
        })
        .await
        .map_err(|e| SealError::Task(e.to_string()))?
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
