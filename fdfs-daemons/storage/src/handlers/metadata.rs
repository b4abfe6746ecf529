//! 13 SET_METADATA and 15 GET_METADATA. Metadata lives beside the file as `<file>-m`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use fdfs_proto::errno;
use fdfs_proto::metadata::{self, OP_OVERWRITE};
use fdfs_proto::storage_msg::{FileRef, SetMetadata};
use fdfs_runtime::{unix_now, Connection};

use super::{binlog_failed, flush_failed, locate, Fail, Handled};
use crate::binlog::{op, BinlogPos};
use crate::state::Storage;
use crate::stats::counter;

fn meta_path(data: &Path) -> PathBuf {
    let mut p = data.as_os_str().to_owned();
    p.push("-m");
    PathBuf::from(p)
}

/// Replaces a file's content atomically (flushed before the rename when `flush`).
fn write_atomic(path: &Path, content: &[u8], flush: bool) -> io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(content)?;
    if flush {
        f.sync_data()?;
    }
    fs::rename(&tmp, path)
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
    let (name, path) = locate(st, &req.group, &req.filename).map_err(Fail::Reply)?;
    if !path.is_file() {
        return Err(Fail::Reply(errno::ENOENT));
    }
    let meta = meta_path(&path);
    let meta_name = format!("{}-m", name.full);
    let existed = meta.exists();
    let io_fail = |e: io::Error| Fail::Reply(errno::from_io(&e));
    let flush = st.cfg.fsync_before_reply;
    if req.op == OP_OVERWRITE {
        if req.packed.is_empty() {
            if existed {
                fs::remove_file(&meta).map_err(io_fail)?;
                let pos = st
                    .binlog
                    .append(unix_now(), op::DELETE, &meta_name, None)
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
    let record = if existed { op::UPDATE } else { op::CREATE };
    let pos = st
        .binlog
        .append(unix_now(), record, &meta_name, None)
        .map_err(binlog_failed)?;
    Ok(Some((meta, pos)))
}

pub async fn get_metadata(st: &Storage, conn: &mut Connection, body: &[u8]) -> Handled {
    let result = (|| {
        let req = FileRef::decode(body).map_err(|_| Fail::Reply(errno::EINVAL))?;
        let (_, path) = locate(st, &req.group, &req.filename).map_err(Fail::Reply)?;
        fs::read(meta_path(&path)).map_err(|e| Fail::Reply(errno::from_io(&e)))
    })();
    st.stats.record(counter::TOTAL_GET_META, result.is_ok());
    conn.reply(0, &result?).await.map_err(|_| Fail::Close)
}
