//! 12 DELETE_FILE: removes the file and its metadata.

use std::fs;

use fdfs_proto::errno;
use fdfs_proto::fileid::{FileKind, METADATA_SUFFIX};
use fdfs_proto::msg::FileRef;
use fdfs_runtime::{unix_now, Connection};

use super::{binlog_failed, flush_failed, locate, remove_stored, Fail, Handled};
use crate::binlog::{Change, Record};
use crate::state::Storage;
use crate::stats::counter;

pub async fn delete(st: &Storage, conn: &mut Connection, body: &[u8]) -> Handled {
    let result = async {
        let req = FileRef::decode(body).map_err(|_| Fail::Reply(errno::EINVAL))?;
        let (name, path) = locate(st, &req.group, &req.filename).map_err(Fail::Reply)?;
        // An appender is not deleted in the middle of an append or a regenerate.
        let is_appender = name.info().is_ok_and(|i| i.kind == FileKind::Appender);
        let _guard = if is_appender {
            let guard = st.appenders.lock(&path).await;
            st.appenders.forget(&path);
            Some(guard)
        } else {
            None
        };
        let slot = remove_stored(st, &name, &path)
            .await
            .map_err(|e| Fail::Reply(errno::from_io(&e)))?;
        if let Some(slot) = slot {
            // Its space goes back to the trunk server (only the storage that deleted
            // the file first does this; its peers zero their copies).
            if let Err(e) = st.trunk.free(st, slot).await {
                tracing::warn!(
                    "{}: the trunk server did not take its slot back: errno {e} ({})",
                    name.full,
                    errno::describe(e)
                );
            }
        }
        let now = unix_now();
        st.tombstones.record(name.full, now, now);
        let mut pos = st
            .binlog
            .append(&Record::here(now, name.full, Change::Delete))
            .map_err(binlog_failed)?;
        // Then its metadata, with a record of its own, as upstream writes them: upstream
        // peers delete only what a record names.
        let mut meta = path.clone().into_os_string();
        meta.push(METADATA_SUFFIX);
        match fs::remove_file(meta) {
            Ok(()) => {
                let meta_name = format!("{}{METADATA_SUFFIX}", name.full);
                pos = st
                    .binlog
                    .append(&Record::here(now, meta_name, Change::Delete))
                    .map_err(binlog_failed)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!("cannot delete the metadata of {}: {e}", name.full);
            }
        }
        st.durable_names(path.parent(), pos)
            .await
            .map_err(flush_failed)?;
        Ok::<(), Fail>(())
    }
    .await;
    st.stats.record(counter::TOTAL_DELETE, result.is_ok());
    result?;
    conn.reply(0, &[]).await.map_err(|_| Fail::Close)
}
