//! One client connection: read a request, hand it to its command's handler, repeat.

use std::net::SocketAddr;
use std::sync::Arc;

use fdfs_proto::cluster_auth::{Answer, Responder};
use fdfs_proto::header::HEADER_LEN;
use fdfs_proto::{cmd, errno, Header};
use fdfs_runtime::metrics::Outcome;
use fdfs_runtime::server::IdleEnd;
use fdfs_runtime::Connection;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::handlers::{
    appender, download, metadata, path_list, query, remove, sync, trunk, upload, Fail, Handled,
};
use crate::state::Storage;
use crate::transfer::discard;

pub async fn handle_connection(
    st: Arc<Storage>,
    stream: TcpStream,
    peer: SocketAddr,
    mut idle_end: IdleEnd,
) {
    st.stats.connection_opened();
    let mut conn = Connection::new(stream, st.cfg.network_timeout);
    let mut sync_sess = sync::SyncSession::default();
    let mut auth = Responder::default();
    let may_modify = st.cfg.modify_allow_hosts.allows(peer.ip());
    loop {
        // A request that already arrived is served even when the stop has come.
        let header = tokio::select! {
            biased;
            h = conn.read_header(st.cfg.network_timeout) => h,
            _ = idle_end.recv() => break,
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
        if (conn.buffered().len() as u64) < body_len {
            // The rest of the request is still coming (see `Connection::ack_now`).
            conn.ack_now();
        }
        if sync_sess.holds_replies()
            && !sync::may_join_held(&sync_sess, header.cmd, conn.buffered())
        {
            sync_sess.settle(&st, &mut conn).await;
        }
        if sync_sess.has_unwritten()
            && !batched(header.cmd)
            && !write_binlog(&st, &mut sync_sess).await
        {
            break;
        }
        let started = std::time::Instant::now();
        let outcome = match admit(&st, &mut auth, may_modify, header) {
            Admission::Go => dispatch(&st, &mut conn, header, body_len, &mut sync_sess).await,
            Admission::Handshake => cluster_auth(&st, &mut conn, &mut auth, header, body_len).await,
            Admission::Refuse(why) => {
                // Who may not ask is not heard further.
                warn!("{peer}: command {} refused: {why}", header.cmd);
                Err(Fail::ReplyAndClose(errno::EACCES))
            }
        };
        st.requests.observe(
            header.cmd,
            match &outcome {
                Ok(()) => Outcome::Status(0),
                Err(Fail::Reply(e) | Fail::ReplyAndClose(e)) => Outcome::Status(*e),
                Err(Fail::Close) => Outcome::Closed,
            },
            started.elapsed(),
        );
        let close = match outcome {
            // The client is done: the replies it was promised go out first (below).
            Ok(()) => header.cmd == cmd::QUIT,
            Err(Fail::Close) => break,
            Err(Fail::ReplyAndClose(e)) => {
                // The replies before it go first, in order.
                sync_sess.settle(&st, &mut conn).await;
                conn.queue_reply(e, &[]);
                true
            }
            Err(Fail::Reply(errno::EINVAL)) => {
                // As upstream: an invalid request ends the connection after its errno.
                warn!("{peer}: invalid request (command {})", header.cmd);
                sync_sess.settle(&st, &mut conn).await;
                conn.queue_reply(errno::EINVAL, &[]);
                true
            }
            Err(Fail::Reply(e)) => {
                // Any other refusal keeps the connection, as upstream does: what the
                // handler left of the request is read and dropped first, so the next
                // request starts where it should (pooled clients reuse the connection).
                let unread = body_len.saturating_sub(conn.body_read());
                if unread > DRAIN_LIMIT {
                    // Not a request anyone would send whole (a size of exabytes, say):
                    // answered, then the connection ends instead.
                    sync_sess.settle(&st, &mut conn).await;
                    conn.queue_reply(e, &[]);
                    true
                } else {
                    if discard(&mut conn, unread).await.is_err() {
                        break;
                    }
                    sync_sess.reply(&mut conn, e);
                    false
                }
            }
        };
        // Replies of a burst of pipelined requests wait until it is handled; then the
        // binlog records of their changes are written first, the replies after.
        if sync_sess.src.is_some() {
            // A peer's replication stream is never closed to make room for clients.
            idle_end.pin();
        }
        let waiting = conn.queued() > 0 || sync_sess.holds_replies();
        if close || waiting && !next_request_buffered(&conn) {
            sync_sess.settle(&st, &mut conn).await;
            if !write_binlog(&st, &mut sync_sess).await || conn.flush().await.is_err() || close {
                break;
            }
        }
    }
    // Copies still held are dropped unnamed: the peer sends them again.
    write_binlog(&st, &mut sync_sess).await;
    st.stats.connection_closed();
}

/// Most of a refused request read and dropped to keep the connection (any real file).
const DRAIN_LIMIT: u64 = 1 << 40;

enum Admission {
    Go,
    Handshake,
    Refuse(&'static str),
}

/// Access control before a command runs: replication commands need the proven
/// `cluster_secret` (when one is configured), changes to files an address in
/// `modify_allow_hosts`.
fn admit(st: &Storage, auth: &mut Responder, may_modify: bool, header: Header) -> Admission {
    if st.cfg.cluster_secret.is_some() {
        if header.cmd == cmd::CLUSTER_AUTH {
            return Admission::Handshake;
        }
        let peers_only = matches!(
            header.cmd,
            cmd::STORAGE_REPORT_SERVER_ID
                | cmd::FETCH_ONE_PATH_BINLOG
                | cmd::TRUNK_ALLOC_SPACE
                | cmd::TRUNK_ALLOC_CONFIRM
                | cmd::TRUNK_FREE_SPACE
                | cmd::TRUNK_SYNC_BINLOG
                | cmd::TRUNK_TRUNCATE_BINLOG_FILE
        );
        if (batched(header.cmd) || peers_only) && !auth.proven() {
            return Admission::Refuse("cluster_secret not proven");
        }
    }
    let modifies = matches!(
        header.cmd,
        cmd::DELETE_FILE
            | cmd::SET_METADATA
            | cmd::APPEND_FILE
            | cmd::MODIFY_FILE
            | cmd::TRUNCATE_FILE
            | cmd::REGENERATE_APPENDER_FILENAME
    );
    if modifies && !may_modify {
        return Admission::Refuse("address not in modify_allow_hosts");
    }
    Admission::Go
}

/// One step of the `cluster_secret` handshake.
async fn cluster_auth(
    st: &Storage,
    conn: &mut Connection,
    auth: &mut Responder,
    header: Header,
    body_len: u64,
) -> Handled {
    let Some(secret) = &st.cfg.cluster_secret else {
        return Err(Fail::Reply(errno::EINVAL));
    };
    if body_len > 256 {
        return Err(Fail::Reply(errno::EINVAL));
    }
    let body = conn
        .read_body(body_len as usize)
        .await
        .map_err(|_| Fail::Close)?;
    let fresh = fdfs_runtime::conn::fresh_nonce();
    match auth.handle(secret, header.status, &body, fresh) {
        Answer::Reply(reply) => {
            conn.queue_reply(0, &reply);
            Ok(())
        }
        Answer::Refuse(e) => {
            warn!("cluster_secret handshake refused (errno {e})");
            Err(Fail::ReplyAndClose(e))
        }
    }
}

/// Commands whose binlog records a [`sync::SyncSession`] gathers.
fn batched(command: u8) -> bool {
    matches!(
        command,
        cmd::SYNC_CREATE_FILE
            | cmd::SYNC_UPDATE_FILE
            | cmd::SYNC_DELETE_FILE
            | cmd::SYNC_APPEND_FILE
            | cmd::SYNC_MODIFY_FILE
            | cmd::SYNC_TRUNCATE_FILE
            | cmd::SYNC_RENAME_FILE
            | cmd::SYNC_CREATE_LINK
    )
}

/// Is a whole request already read ahead (so handling it cannot wait for input)?
fn next_request_buffered(conn: &Connection) -> bool {
    let b = conn.buffered();
    if b.len() < HEADER_LEN {
        return false;
    }
    let h = Header::decode(b[..HEADER_LEN].try_into().expect("header length"));
    h.pkg_len >= 0 && (b.len() - HEADER_LEN) as u64 >= h.pkg_len as u64
}

/// Writes a session's gathered binlog records; false (the connection must end without
/// its queued replies) if that fails.
async fn write_binlog(st: &Storage, sess: &mut sync::SyncSession) -> bool {
    match sess.write_binlog(st).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!("cannot write binlog: {e}");
            false
        }
    }
}

async fn dispatch(
    st: &Storage,
    conn: &mut Connection,
    header: Header,
    body_len: u64,
    sync_src: &mut sync::SyncSession,
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
        cmd::QUIT => return Ok(()),
        _ => {}
    }
    // The trunk server's binlog lines come 64 KiB at a time, whatever buff_size says.
    let limit = if header.cmd == cmd::TRUNK_SYNC_BINLOG {
        st.cfg.buff_size.max(crate::trunk::binlog::PUSH_MAX)
    } else {
        st.cfg.buff_size
    };
    if body_len > limit as u64 {
        return Err(Fail::Reply(errno::EINVAL));
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
        cmd::STORAGE_REPORT_SERVER_ID => {
            sync::report_server_id(conn, header.status, &body, sync_src).await
        }
        cmd::SYNC_DELETE_FILE => sync::delete(st, conn, &body, sync_src).await,
        cmd::SYNC_TRUNCATE_FILE => sync::truncate(st, conn, &body, sync_src).await,
        cmd::SYNC_RENAME_FILE => sync::rename(st, conn, &body, sync_src).await,
        cmd::SYNC_CREATE_LINK => sync::create_link(st, conn, &body, sync_src).await,
        cmd::FETCH_ONE_PATH_BINLOG => path_list::fetch_one_path_binlog(st, conn, &body).await,
        cmd::TRUNK_ALLOC_SPACE => trunk::alloc_space(st, conn, &body).await,
        cmd::TRUNK_ALLOC_CONFIRM => trunk::alloc_confirm(st, conn, header.status, &body).await,
        cmd::TRUNK_FREE_SPACE => trunk::free_space(st, conn, &body).await,
        cmd::TRUNK_SYNC_BINLOG => trunk::sync_binlog(st, conn, &body).await,
        cmd::TRUNK_TRUNCATE_BINLOG_FILE => trunk::truncate_binlog(st, conn, &body).await,
        cmd::TRUNK_GET_BINLOG_SIZE => trunk::get_binlog_size(st, conn, &body).await,
        cmd::TRUNK_DELETE_BINLOG_MARKS => trunk::delete_binlog_marks(st, conn, &body).await,
        cmd::ACTIVE_TEST if body.is_empty() => conn.reply(0, &[]).await.map_err(|_| Fail::Close),
        _ => Err(Fail::Reply(errno::EINVAL)),
    }
}
