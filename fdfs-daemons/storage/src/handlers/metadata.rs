//! 13 SET_METADATA and 15 GET_METADATA. Metadata lives beside the file as `<file>-m`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use fdfs_proto::errno;
use fdfs_proto::metadata::{self, OP_OVERWRITE};
use fdfs_proto::storage_msg::{FileRef, SetMetadata};
use fdfs_runtime::{unix_now, Connection};

use super::{binlog_failed, locate, Fail, Handled};
use crate::binlog::op;
use crate::state::Storage;
use crate::stats::counter;

fn meta_path(data: &Path) -> PathBuf {
    let mut p = data.as_os_str().to_owned();
    p.push("-m");
    PathBuf::from(p)
}

/// Replaces a file's content atomically.
fn write_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    fs::write(&tmp, content)?;
    fs::rename(&tmp, path)
}

pub async fn set_metadata(st: &Storage, conn: &mut Connection, body: &[u8]) -> Handled {
    let result = set_inner(st, body);
    st.stats.record(counter::TOTAL_SET_META, result.is_ok());
    result?;
    conn.reply(0, &[]).await.map_err(|_| Fail::Close)
}

fn set_inner(st: &Storage, body: &[u8]) -> Handled {
    let req = SetMetadata::decode(body).map_err(|_| Fail::Reply(errno::EINVAL))?;
    let (name, path) = locate(st, &req.group, &req.filename).map_err(Fail::Reply)?;
    if !path.is_file() {
        return Err(Fail::Reply(errno::ENOENT));
    }
    let meta = meta_path(&path);
    let meta_name = format!("{}-m", name.full);
    let existed = meta.exists();
    let io_fail = |e: io::Error| Fail::Reply(errno::from_io(&e));
    if req.op == OP_OVERWRITE {
        if req.packed.is_empty() {
            if existed {
                fs::remove_file(&meta).map_err(io_fail)?;
                st.binlog
                    .append(unix_now(), op::DELETE, &meta_name, None)
                    .map_err(binlog_failed)?;
            }
            return Ok(());
        }
        let content = metadata::pack(&metadata::unpack(&req.packed));
        write_atomic(&meta, &content).map_err(io_fail)?;
    } else {
        if req.packed.is_empty() {
            return Ok(());
        }
        let current = if existed {
            fs::read(&meta).map_err(io_fail)?
        } else {
            Vec::new()
        };
        write_atomic(&meta, &metadata::merge(&current, &req.packed)).map_err(io_fail)?;
    }
    let record = if existed { op::UPDATE } else { op::CREATE };
    st.binlog
        .append(unix_now(), record, &meta_name, None)
        .map(|_| ())
        .map_err(binlog_failed)
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
