//! 13 SET_METADATA and 15 GET_METADATA. Metadata lives beside the file as `<file>-m`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use fdfs_proto::errno;
use fdfs_proto::fileid::{RemoteName, METADATA_SUFFIX};
use fdfs_proto::metadata::{self, OP_OVERWRITE};
use fdfs_proto::msg::{FileRef, SetMetadata};
use fdfs_runtime::{unix_now, Connection};

use super::{binlog_failed, flush_failed, locate, Fail, Handled};
use crate::binlog::{BinlogPos, Change, Record};
use crate::state::Storage;
use crate::stats::counter;
use crate::store::NewFile;

fn meta_path(data: &Path) -> PathBuf {
    let mut p = data.as_os_str().to_owned();
    p.push(METADATA_SUFFIX);
    PathBuf::from(p)
}

/// Replaces a file's content atomically (flushed before it is named when `flush`). The
/// new content is written to an unnamed file (or a `.tmp-` one), never to a name a
/// client could give a file.
fn write_atomic(path: &Path, content: &[u8], flush: bool) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("metadata file has a directory");
    let mut f = NewFile::create(dir)?;
    f.file.write_all(content)?;
    if flush {
        f.file.sync_data()?;
    }
    f.commit_replace(path)
}

/// Finds the file a metadata request names: metadata of a metadata file is no such
/// thing (`<file>-m-m` would be a file of its own). The test is exact: a data file whose
/// name merely ends in `-m` (a C storage's `…1234.-m`) has metadata of its own.
/// The file a metadata request names; ENOENT unless it is here (a trunk-stored one in
/// its slot).
fn locate_for_metadata(st: &Storage, group: &str, filename: &str) -> Result<PathBuf, Fail> {
    let (name, path) = locate(st, group, filename).map_err(Fail::Reply)?;
    if name.is_metadata() {
        return Err(Fail::Reply(errno::EINVAL));
    }
    Ok(path)
}

/// Whether the file a metadata request names is here.
fn file_here(filename: &str, path: &Path) -> bool {
    RemoteName::parse(filename).is_ok_and(|name| super::is_here(&name, path))
}

pub async fn set_metadata(st: &Storage, conn: &mut Connection, body: &[u8]) -> Handled {
    let result = match set_inner(st, body) {
        Ok(Some((meta, pos))) => st
            .durable_names(meta.parent(), pos)
            .await
            .map_err(flush_failed),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    st.stats.record(counter::TOTAL_SET_META, result.is_ok());
    result?;
    conn.reply(0, &[]).await.map_err(|_| Fail::Close)
}

/// Applies the change; returns the metadata file and the binlog position of its record
/// when something changed.
fn set_inner(st: &Storage, body: &[u8]) -> Result<Option<(PathBuf, BinlogPos)>, Fail> {
    let req = SetMetadata::decode(body).map_err(|_| Fail::Reply(errno::EINVAL))?;
    let path = locate_for_metadata(st, &req.group, &req.filename)?;
    if !file_here(&req.filename, &path) {
        return Err(Fail::Reply(errno::ENOENT));
    }
    let meta = meta_path(&path);
    let meta_name = format!("{}{METADATA_SUFFIX}", req.filename);
    let existed = meta.exists();
    let io_fail = |e: io::Error| Fail::Reply(errno::from_io(&e));
    let flush = st.cfg.fsync_before_reply;
    if req.op == OP_OVERWRITE {
        if req.packed.is_empty() {
            if existed {
                fs::remove_file(&meta).map_err(io_fail)?;
                let pos = st
                    .binlog
                    .append(&Record::here(unix_now(), meta_name, Change::Delete))
                    .map_err(binlog_failed)?;
                return Ok(Some((meta, pos)));
            }
            return Ok(None);
        }
        let content = metadata::pack(&metadata::unpack(&req.packed));
        write_atomic(&meta, &content, flush).map_err(io_fail)?;
    } else {
        if req.packed.is_empty() {
            return Ok(None);
        }
        let current = if existed {
            fs::read(&meta).map_err(io_fail)?
        } else {
            Vec::new()
        };
        write_atomic(&meta, &metadata::merge(&current, &req.packed), flush).map_err(io_fail)?;
    }
    let change = if existed {
        Change::Update
    } else {
        Change::Create
    };
    let pos = st
        .binlog
        .append(&Record::here(unix_now(), meta_name, change))
        .map_err(binlog_failed)?;
    Ok(Some((meta, pos)))
}

pub async fn get_metadata(st: &Storage, conn: &mut Connection, body: &[u8]) -> Handled {
    let result = (|| {
        let req = FileRef::decode(body).map_err(|_| Fail::Reply(errno::EINVAL))?;
        let path = locate_for_metadata(st, &req.group, &req.filename)?;
        fs::read(meta_path(&path)).map_err(|e| Fail::Reply(errno::from_io(&e)))
    })();
    st.stats.record(counter::TOTAL_GET_META, result.is_ok());
    conn.reply(0, &result?).await.map_err(|_| Fail::Close)
}
