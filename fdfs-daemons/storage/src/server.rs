//! One client connection: read a request, hand it to its command's handler, repeat.

use std::net::SocketAddr;
use std::sync::Arc;

use fdfs_proto::{cmd, errno, Header};
use fdfs_runtime::server::Shutdown;
use fdfs_runtime::Connection;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::handlers::{appender, download, metadata, query, remove, sync, upload, Fail, Handled};
use crate::state::Storage;

pub async fn handle_connection(
    st: Arc<Storage>,
    stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: Shutdown,
) {
    st.stats.connection_opened();
    let mut conn = Connection::new(stream, st.cfg.network_timeout);
    let mut sync_src: sync::SyncSource = None;
    loop {
        let header = tokio::select! {
            h = conn.read_header(st.cfg.network_timeout) => h,
            _ = shutdown.recv() => break,
        };
        let header = match header {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) => {
                debug!("{peer}: {e}");
                break;
            }
        };
        let Ok(body_len) = header.body_len(i64::MAX as u64) else {
            warn!("{peer}: negative package length {}", header.pkg_len);
            let _ = conn.reply(errno::EINVAL, &[]).await;
            break;
        };
        let outcome = dispatch(&st, &mut conn, header, body_len, &mut sync_src).await;
        let (status, close) = match outcome {
            Ok(()) => continue,
            Err(Fail::Close) => break,
            Err(Fail::Reply(e)) => (e, e == errno::EINVAL),
            Err(Fail::ReplyAndClose(e)) => (e, true),
        };
        if status == errno::EINVAL {
            warn!("{peer}: invalid request (command {})", header.cmd);
        }
        if conn.reply(status, &[]).await.is_err() || close {
            break;
        }
    }
    st.stats.connection_closed();
}

async fn dispatch(
    st: &Storage,
    conn: &mut Connection,
    header: Header,
    body_len: u64,
    sync_src: &mut sync::SyncSource,
) -> Handled {
    // Commands that carry file content stream it; they read their own bodies.
    match header.cmd {
        cmd::UPLOAD_FILE => return upload::upload(st, conn, body_len, false).await,
        cmd::UPLOAD_APPENDER_FILE => return upload::upload(st, conn, body_len, true).await,
        cmd::UPLOAD_SLAVE_FILE => return upload::upload_slave(st, conn, body_len).await,
        cmd::APPEND_FILE => return appender::append(st, conn, body_len).await,
        cmd::MODIFY_FILE => return appender::modify(st, conn, body_len).await,
        cmd::SYNC_CREATE_FILE | cmd::SYNC_UPDATE_FILE => {
            let update = header.cmd == cmd::SYNC_UPDATE_FILE;
            return sync::create_or_update(st, conn, header.status, body_len, update, sync_src)
                .await;
        }
        cmd::SYNC_APPEND_FILE | cmd::SYNC_MODIFY_FILE => {
            let modify = header.cmd == cmd::SYNC_MODIFY_FILE;
            return sync::append_or_modify(st, conn, body_len, modify, sync_src).await;
        }
        cmd::QUIT => return Err(Fail::Close),
        _ => {}
    }
    if body_len > st.cfg.buff_size as u64 {
        return Err(Fail::ReplyAndClose(errno::EINVAL));
    }
    let body = conn
        .read_body(body_len as usize)
        .await
        .map_err(|_| Fail::Close)?;
    match header.cmd {
        cmd::DOWNLOAD_FILE => download::download(st, conn, &body).await,
        cmd::DELETE_FILE => remove::delete(st, conn, &body).await,
        cmd::SET_METADATA => metadata::set_metadata(st, conn, &body).await,
        cmd::GET_METADATA => metadata::get_metadata(st, conn, &body).await,
        cmd::QUERY_FILE_INFO => query::query_file_info(st, conn, header.status, &body).await,
        cmd::TRUNCATE_FILE => appender::truncate(st, conn, &body).await,
        cmd::REGENERATE_APPENDER_FILENAME => appender::regenerate(st, conn, &body).await,
        cmd::STORAGE_REPORT_SERVER_ID => sync::report_server_id(conn, &body, sync_src).await,
        cmd::SYNC_DELETE_FILE => sync::delete(st, conn, &body, sync_src).await,
        cmd::SYNC_TRUNCATE_FILE => sync::truncate(st, conn, &body, sync_src).await,
        cmd::SYNC_RENAME_FILE => sync::rename(st, conn, &body, sync_src).await,
        cmd::SYNC_CREATE_LINK => sync::create_link(st, conn, &body, sync_src).await,
        cmd::ACTIVE_TEST if body.is_empty() => conn.reply(0, &[]).await.map_err(|_| Fail::Close),
        _ => Err(Fail::Reply(errno::EINVAL)),
    }
}
