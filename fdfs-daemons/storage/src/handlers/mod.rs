//! One module per command family. Every handler reads its own request (file bodies are
//! streamed, never buffered whole) and sends its own reply.

pub mod appender;
pub mod download;
pub mod metadata;
pub mod path_list;
pub mod query;
pub mod remove;
pub mod sync;
pub mod trunk;
pub mod upload;

use std::path::PathBuf;

use fdfs_proto::errno;
use fdfs_proto::fileid::RemoteName;

use crate::state::Storage;
use crate::transfer::TransferError;

/// How a failed request ends.
#[derive(Debug, PartialEq, Eq)]
pub enum Fail {
    /// Answer with this errno. The connection goes on, as upstream's does: the server
    /// reads and drops whatever the handler left of the request first. EINVAL (the
    /// request cannot be trusted to say where it ends) always ends it, as upstream does.
    Reply(u8),
    /// Answer with this errno, then close whatever the request was.
    ReplyAndClose(u8),
    /// Close without an answer: the connection broke or a reply was half sent.
    Close,
}

pub type Handled = Result<(), Fail>;

impl From<TransferError> for Fail {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::Net(_) => Fail::Close,
            TransferError::Disk(e) => {
                tracing::error!("disk error: {e}");
                Fail::Reply(errno::from_io(&e))
            }
        }
    }
}

/// Checks the group and the file name of a request and finds the file on disk.
pub fn locate<'a>(
    st: &Storage,
    group: &str,
    filename: &'a str,
) -> Result<(RemoteName<'a>, PathBuf), u8> {
    if group != st.cfg.group_name {
        return Err(errno::EINVAL);
    }
    let name = RemoteName::parse(filename).map_err(|_| errno::EINVAL)?;
    let path = st.store.resolve(&name)?;
    Ok((name, path))
}

/// Where a stored file's bytes are: a file of its own, or a slot of a trunk file (a
/// small file a C storage packed, `use_trunk_file`).
pub struct Stored {
    pub file: std::fs::File,
    /// Where the content starts in `file`.
    pub start: u64,
    pub size: u64,
    /// Modification time (for a trunk slot: the upload time its header keeps).
    pub mtime: i64,
}

/// Opens the file `name` found at `path` (as [`locate`] gives it). A trunk-stored file
/// is read from its trunk file, and only while the slot still holds it: a freed or
/// reused slot is ENOENT, as upstream answers it.
pub fn open_stored(name: &RemoteName<'_>, path: &std::path::Path) -> std::io::Result<Stored> {
    use std::io::{Error, ErrorKind};
    let Some(location) = fdfs_proto::trunk::location_of(name) else {
        let file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        return Ok(Stored {
            file,
            start: 0,
            size: meta.len(),
            mtime: mtime_of(&meta),
        });
    };
    let gone = || {
        Error::new(
            ErrorKind::NotFound,
            "the trunk slot does not hold this file",
        )
    };
    let location = location.map_err(|_| gone())?;
    let expected = fdfs_proto::trunk::SlotHeader::expected(name).map_err(|_| gone())?;
    let trunk = path.with_file_name(location.trunk_file_name());
    let file = std::fs::File::open(trunk)?;
    let mut raw = [0u8; fdfs_proto::trunk::SLOT_HEADER_LEN];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut raw, location.offset as u64)
        .map_err(|_| gone())?;
    let header = fdfs_proto::trunk::SlotHeader::decode(&raw);
    if !header.holds(&expected) {
        return Err(gone());
    }
    Ok(Stored {
        file,
        start: location.content_offset(),
        size: header.file_size as u64,
        mtime: header.mtime as i64,
    })
}

/// Deletes the file `name` found at `path`: a file of its own is removed; a
/// trunk-stored one has its slot zeroed (flushed with `fsync_before_reply`) and the slot
/// is returned, to be given back to the trunk server by the storage that deleted it
/// first. NotFound when the file is not here (a trunk slot that holds another file
/// does not hold it).
pub async fn remove_stored(
    st: &Storage,
    name: &RemoteName<'_>,
    path: &std::path::Path,
) -> std::io::Result<Option<fdfs_proto::trunk::Slot>> {
    let Some(slot) = fdfs_proto::trunk::Slot::of(name) else {
        std::fs::remove_file(path)?;
        return Ok(None);
    };
    let expected = fdfs_proto::trunk::SlotHeader::expected(name)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::NotFound))?;
    let io = st
        .trunk
        .slot_io(st, &slot)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
    let sync = st.cfg.fsync_before_reply;
    crate::durability::blocking(move || {
        if !io.holds(&expected) {
            return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        }
        let written = io.zero()?;
        if sync {
            written.flush()?;
        }
        Ok(())
    })
    .await?;
    Ok(Some(slot))
}

/// Whether the file `name` found at `path` is here (a trunk-stored one in its slot).
pub fn is_here(name: &RemoteName<'_>, path: &std::path::Path) -> bool {
    open_stored(name, path).is_ok_and(|s| s.file.metadata().is_ok_and(|m| m.is_file()))
}

/// Modification time of a file in unix seconds.
pub fn mtime_of(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(fdfs_runtime::unix_now, |d| d.as_secs() as i64)
}

/// Logs a failed flush to disk (`fsync_before_reply`): the change is not acknowledged.
pub fn flush_failed(e: std::io::Error) -> Fail {
    tracing::error!("cannot flush a change to disk: {e}");
    Fail::Reply(errno::from_io(&e))
}

/// Logs a binlog write failure; the change is on disk but replication would miss it.
pub fn binlog_failed(e: std::io::Error) -> Fail {
    tracing::error!("cannot write binlog: {e}");
    Fail::Reply(errno::EIO)
}
