//! 22 QUERY_FILE_INFO: size, timestamp, CRC32 and source of a stored file.

use fdfs_proto::errno;
use fdfs_proto::fileid::FileKind;
use fdfs_proto::msg::{file_info_flag, FileInfoReply, FileRef};
use fdfs_runtime::Connection;

use super::{locate, mtime_of, Fail, Handled};
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
    let meta = std::fs::metadata(&path).map_err(|e| {
        if flags & file_info_flag::SILENT == 0 {
            tracing::info!("file info: {} not found", req.filename);
        }
        Fail::Reply(errno::from_io(&e))
    })?;
    // Normal files carry their CRC32 in the name; appenders and slaves must be read
    // (off the async workers, and only once per version of an appender).
    let (crc32, meta) = match info.kind {
        FileKind::Normal | FileKind::Trunk => (info.crc32, meta),
        _ if flags & file_info_flag::NO_CRC32 != 0 => (0, meta),
        _ => st
            .appenders
            .crc_of(&path)
            .await
            .map_err(|e| Fail::Reply(errno::from_io(&e)))?,
    };
    let source_ip = st.identity().source_ip(&info.source);
    let reply = FileInfoReply {
        file_size: meta.len() as i64,
        timestamp: mtime_of(&meta),
        crc32,
        source_ip,
    };
    conn.reply(0, &reply.encode(st.ip_size()))
        .await
        .map_err(|_| Fail::Close)
}
