//! 22 QUERY_FILE_INFO: size, timestamp, CRC32 and source of a stored file.

use fdfs_proto::errno;
use fdfs_proto::fileid::FileKind;
use fdfs_proto::msg::{file_info_flag, FileInfoReply, FileRef};
use fdfs_runtime::Connection;

use super::{locate, mtime_of, open_stored, Fail, Handled};
use crate::state::Storage;

pub async fn query_file_info(
    st: &Storage,
    conn: &mut Connection,
    flags: u8,
    body: &[u8],
) -> Handled {
    let req = FileRef::decode(body).map_err(|_| Fail::Reply(errno::EINVAL))?;
    let (name, path) = locate(st, &req.group, &req.filename).map_err(Fail::Reply)?;
    let info = name.info().map_err(|_| Fail::Reply(errno::EINVAL))?;
    let stored = open_stored(&name, &path).map_err(|e| {
        if flags & file_info_flag::SILENT == 0 {
            tracing::info!("file info: {} not found", req.filename);
        }
        Fail::Reply(errno::from_io(&e))
    })?;
    // Normal and trunk-stored files carry their CRC32 in the name; appenders and slaves
    // must be read (off the async workers, and only once per version of an appender).
    let (crc32, size, mtime) = match info.kind {
        FileKind::Normal | FileKind::Trunk => (info.crc32, stored.size, stored.mtime),
        _ if flags & file_info_flag::NO_CRC32 != 0 => (0, stored.size, stored.mtime),
        _ => {
            drop(stored);
            let (crc32, meta) = st
                .appenders
                .crc_of(&path)
                .await
                .map_err(|e| Fail::Reply(errno::from_io(&e)))?;
            (crc32, meta.len(), mtime_of(&meta))
        }
    };
    let source_ip = st.identity().source_ip(&info.source);
    let reply = FileInfoReply {
        file_size: size as i64,
        timestamp: mtime,
        crc32,
        source_ip,
    };
    conn.reply(0, &reply.encode(st.ip_size()))
        .await
        .map_err(|_| Fail::Close)
}
