//! 14 DOWNLOAD_FILE: the whole file or a range, streamed from disk.

use std::os::unix::fs::FileExt;

use fdfs_proto::errno;
use fdfs_proto::header::HEADER_LEN;
use fdfs_proto::msg::Download;
use fdfs_proto::Header;
use fdfs_runtime::Connection;

use super::{locate, open_stored, Fail, Handled, Stored};
use crate::integrity;
use crate::state::Storage;
use crate::stats::counter;
use crate::transfer::send_range;

/// Files up to this size are read into memory and sent with their header in one write;
/// larger ones go out with `sendfile`.
const SMALL: u64 = 64 * 1024;

pub async fn download(st: &Storage, conn: &mut Connection, body: &[u8]) -> Handled {
    let req = Download::decode(body).map_err(|_| Fail::Reply(errno::EINVAL))?;
    let (name, path) = locate(st, &req.group, &req.filename).map_err(Fail::Reply)?;
    let result = async {
        let Stored {
            mut file,
            start,
            size,
            ..
        } = open_stored(&name, &path).map_err(|e| Fail::Reply(errno::from_io(&e)))?;
        let promised = integrity::promised(&name);
        if let Some((want, _)) = promised {
            if size != want {
                st.integrity
                    .report(name.full, &format!("{size} bytes, its ID says {want}"));
                return Err(Fail::Reply(errno::EIO));
            }
        }
        // As 6.16: an offset at or past the end is invalid and the count is clamped. An
        // empty file can still be read from offset 0 (6.16 refuses it; nothing relies on
        // that).
        if req.offset > size || (req.offset == size && size > 0) {
            return Err(Fail::Reply(errno::EINVAL));
        }
        let left = size - req.offset;
        let count = if req.count == 0 || req.count > left {
            left
        } else {
            req.count
        };
        if count <= SMALL {
            // Header and content in one write (one packet for a small file).
            let mut out = Vec::with_capacity(HEADER_LEN + count as usize);
            out.extend_from_slice(&Header::response(0, count).encode());
            out.resize(HEADER_LEN + count as usize, 0);
            file.read_exact_at(&mut out[HEADER_LEN..], start + req.offset)
                .map_err(|e| Fail::Reply(errno::from_io(&e)))?;
            if promised.is_some() && count == size {
                // The whole file is in memory: its CRC32 costs next to nothing.
                if let Err(why) = integrity::check(&name, &out[HEADER_LEN..]) {
                    st.integrity.report(name.full, &why);
                    return Err(Fail::Reply(errno::EIO));
                }
            }
            conn.write_all(&out).await.map_err(|_| Fail::Close)?;
            st.stats
                .add_bytes(counter::TOTAL_DOWNLOAD_BYTES, count, true);
            return Ok(());
        }
        conn.send(Header::response(0, count), &[])
            .await
            .map_err(|_| Fail::Close)?;
        // From here on a failure can only close the connection: the header is out.
        send_range(conn, &mut file, start + req.offset, count)
            .await
            .map_err(|e| {
                tracing::warn!("download of {} broke off: {e:?}", req.filename);
                Fail::Close
            })?;
        st.stats
            .add_bytes(counter::TOTAL_DOWNLOAD_BYTES, count, true);
        Ok(())
    }
    .await;
    st.stats.record(counter::TOTAL_DOWNLOAD, result.is_ok());
    result
}
