//! One task per connection: read a request, dispatch it to its handler, send the reply.
//! A malformed or failing request never takes the daemon down: it is answered with an
//! errno (EINVAL for a bad length, after which the connection is closed).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

use fdfs_proto::cluster_auth::{self, Answer};
use fdfs_proto::{cmd, errno};
use fdfs_runtime::metrics::Outcome;
use fdfs_runtime::server::IdleEnd;
use fdfs_runtime::Connection;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::cluster::{Cluster, Joined};
use crate::config::TrackerConfig;
use crate::persist::Files;
use crate::refusal::{Refusal, Reply};
use crate::relationship::Relationship;
use crate::{service, storage_cmds, tracker_cmds};

/// What every connection task shares.
pub struct Shared {
    pub config: TrackerConfig,
    pub cluster: Mutex<Cluster>,
    /// When this tracker started (unix time).
    pub started: i64,
    /// How long this tracker was down before this start (from `.tracker_status`).
    pub restart_interval: i64,
    /// The tracker cluster: who we are, who leads. Lock order: `cluster` before `peers`
    /// (never take `cluster` while holding `peers`).
    pub peers: Mutex<Relationship>,
    pub connections: ConnectionGauge,
    /// Requests by command and result, and their latency (`/metrics`).
    pub requests: fdfs_runtime::metrics::RequestMetrics,
    /// Started without groups or after a long downtime: copy a peer's sys files.
    pub copy_sys_files: std::sync::atomic::AtomicBool,
}

/// Connection counts reported to the leader (65) and in 96.
#[derive(Debug, Default)]
pub struct ConnectionGauge {
    current: AtomicU32,
    peak: AtomicU32,
}

impl ConnectionGauge {
    fn opened(&self) {
        let now = self.current.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn closed(&self) {
        self.current.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> fdfs_proto::msg::ConnCounts {
        let peak = self.peak.load(Ordering::Relaxed);
        fdfs_proto::msg::ConnCounts {
            alloc: peak,
            current: self.current.load(Ordering::Relaxed),
            max: peak,
        }
    }
}

impl Shared {
    /// The cluster, locked. Never hold the guard across an `.await`.
    pub fn cluster(&self) -> MutexGuard<'_, Cluster> {
        // A handler that panicked cannot leave the state half-updated in a way that
        // matters more than stopping the whole tracker would.
        self.cluster.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tracker cluster relationship, locked. Never hold the guard across an
    /// `.await`, and never lock `cluster` while holding it.
    pub fn peers(&self) -> MutexGuard<'_, Relationship> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One request as the handlers see it.
pub struct Request<'a> {
    pub cmd: u8,
    pub body: &'a [u8],
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

impl Request<'_> {
    /// The peer's IP (IPv4-mapped IPv6 addresses shown as IPv4).
    pub fn peer_ip(&self) -> IpAddr {
        self.peer.ip().to_canonical()
    }

    /// This tracker's own IP as the peer reaches it.
    pub fn tracker_ip(&self, config: &TrackerConfig) -> IpAddr {
        match config.bind_addr {
            Some(ip) if !ip.is_unspecified() => ip,
            _ => self.local.ip().to_canonical(),
        }
    }
}

/// Per-connection state: whether a storage joined on it, and what its beat replies
/// have announced so far.
#[derive(Debug, Default)]
pub struct Session {
    pub joined: Option<Joined>,
    /// The leader version this storage connection was last told (flag 0x01).
    pub leader_told: Option<u64>,
    pub members_told: Option<u64>,
    /// The trunk server version this storage connection was last told (flag 0x02).
    pub trunk_told: Option<u64>,
    /// The trunk servers' epoch a follower tracker's connection was last told (65).
    pub trunk_epoch_told: Option<u64>,
    /// A follower tracker that sent 58 JOIN_LEADER on this connection (`ip:port`).
    pub follower: Option<String>,
    /// The sys files snapshot taken by 61 GET_SYS_FILES_START.
    pub sys_files: Option<Files>,
    /// The `cluster_secret` handshake on this connection.
    pub auth: cluster_auth::Responder,
}

/// Serves one connection until the peer quits or closes, an I/O error, or shutdown.
pub async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    mut idle_end: IdleEnd,
    shared: std::sync::Arc<Shared>,
) {
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(e) => {
            warn!("{peer}: cannot read local address: {e}");
            return;
        }
    };
    shared.connections.opened();
    serve_connection(stream, peer, local, &mut idle_end, &shared).await;
    shared.connections.closed();
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    idle_end: &mut IdleEnd,
    shared: &std::sync::Arc<Shared>,
) {
    let config = &shared.config;
    let mut conn = Connection::new(stream, config.network_timeout);
    let mut session = Session::default();
    loop {
        // A request that already arrived is served even when the stop has come.
        let header = tokio::select! {
            biased;
            h = conn.read_header(config.network_timeout) => h,
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
        let len = match header.body_len(config.buff_size) {
            Ok(len) => len as usize,
            Err(e) => {
                warn!("{peer}: command {}: {e}, closing", header.cmd);
                let _ = conn.reply(errno::EINVAL, &[]).await;
                break;
            }
        };
        let body = match conn.read_body(len).await {
            Ok(b) => b,
            Err(e) => {
                debug!("{peer}: reading a {len}-byte body: {e}");
                break;
            }
        };
        if header.cmd == cmd::QUIT {
            break;
        }
        if let Some(refused) = check_cluster_auth(config, &mut session, header, &body) {
            let (status, reply) = match refused {
                Answer::Reply(reply) => (0, reply),
                Answer::Refuse(errno) => {
                    warn!(
                        "{peer}: command {} refused: cluster_secret not proven",
                        header.cmd
                    );
                    (errno, Vec::new())
                }
            };
            if conn.reply(status, &reply).await.is_err() || status != 0 {
                break;
            }
            continue;
        }
        let req = Request {
            cmd: header.cmd,
            body: &body,
            peer,
            local,
        };
        let started = std::time::Instant::now();
        let (status, reply) = match dispatch(shared, &mut session, &req) {
            Ok(reply) => (0, reply),
            Err(refusal) => {
                log_refusal(&req, &refusal);
                (refusal.errno, Vec::new())
            }
        };
        let sent = conn.reply(status, &reply).await;
        let outcome = match sent {
            Ok(()) => Outcome::Status(status),
            Err(_) => Outcome::Closed,
        };
        shared
            .requests
            .observe(header.cmd, outcome, started.elapsed());
        if let Err(e) = sent {
            debug!("{peer}: sending reply: {e}");
            break;
        }
        if session.joined.is_some() || session.follower.is_some() {
            // A storage's or a follower tracker's link: idle most of the time, but never
            // closed to make room for clients.
            idle_end.pin();
        }
    }
    if let Some(who) = &session.joined {
        info!("storage {} of {} disconnected ({peer})", who.id, who.group);
        shared.cluster().disconnect(who);
    }
}

/// Handles the `cluster_secret` handshake, and refuses storage and tracker commands on
/// a connection that has not proven the secret (when one is configured). `None`: go on
/// with the command.
fn check_cluster_auth(
    config: &TrackerConfig,
    session: &mut Session,
    header: fdfs_proto::Header,
    body: &[u8],
) -> Option<Answer> {
    let Some(secret) = &config.cluster_secret else {
        // Without a secret the handshake is an unknown command, as upstream.
        return None;
    };
    if header.cmd == cmd::CLUSTER_AUTH {
        let fresh = fdfs_runtime::conn::fresh_nonce();
        return Some(session.auth.handle(secret, header.status, body, fresh));
    }
    if cluster_command(header.cmd) && !session.auth.proven() {
        return Some(Answer::Refuse(errno::EACCES));
    }
    None
}

/// Commands only storages and other trackers send.
fn cluster_command(command: u8) -> bool {
    matches!(
        command,
        cmd::STORAGE_JOIN
            | cmd::STORAGE_BEAT
            | cmd::STORAGE_REPORT_DISK_USAGE
            | cmd::STORAGE_SYNC_REPORT
            | cmd::STORAGE_SYNC_DEST_REQ
            | cmd::STORAGE_SYNC_NOTIFY
            | cmd::STORAGE_SYNC_DEST_QUERY
            | cmd::STORAGE_CHANGE_STATUS
            | cmd::STORAGE_REPLICA_CHG
            | cmd::STORAGE_FETCH_TRUNK_FID
            | cmd::STORAGE_REPORT_TRUNK_FID
            | cmd::STORAGE_REPORT_TRUNK_FREE
            | cmd::STORAGE_SYNC_SRC_REQ
            | cmd::STORAGE_REPORT_STATUS
            | cmd::STORAGE_GET_MY_IP
            | cmd::STORAGE_PARAMETER_REQ
            | cmd::STORAGE_CHANGELOG_REQ
            | cmd::STORAGE_GET_STATUS
            | cmd::STORAGE_GET_SERVER_ID
            | cmd::STORAGE_FETCH_STORAGE_IDS
            | cmd::STORAGE_GET_GROUP_NAME
            | cmd::TRACKER_NOTIFY_RESELECT_LEADER
            | cmd::TRACKER_GET_STATUS
            | cmd::TRACKER_NOTIFY_NEXT_LEADER
            | cmd::TRACKER_COMMIT_NEXT_LEADER
            | cmd::TRACKER_JOIN_LEADER
            | cmd::TRACKER_PING_LEADER
            | cmd::TRACKER_GET_SYS_FILES_START
            | cmd::TRACKER_GET_ONE_SYS_FILE
            | cmd::TRACKER_GET_SYS_FILES_END
    )
}

fn log_refusal(req: &Request<'_>, refusal: &Refusal) {
    // Lookups that find nothing are routine for clients, and so is a 68 that reaches a
    // tracker which no longer leads (storages tell both leaders); everything else is
    // worth a warning, a storage the tracker does not know (not in storage_ids.conf)
    // first of all.
    let identity = matches!(
        req.cmd,
        cmd::STORAGE_JOIN | cmd::STORAGE_GET_SERVER_ID | cmd::STORAGE_GET_GROUP_NAME
    );
    let routine = !identity
        && matches!(refusal.errno, errno::ENOENT | errno::ENOSPC | errno::EBUSY)
        || (req.cmd == cmd::TRACKER_NOTIFY_RESELECT_LEADER && refusal.errno == errno::EOPNOTSUPP);
    if routine {
        info!("{}: command {}: {refusal}", req.peer, req.cmd);
    } else {
        warn!("{}: command {}: {refusal}", req.peer, req.cmd);
    }
}

/// Maps a command code to its handler.
fn dispatch(shared: &Shared, session: &mut Session, req: &Request<'_>) -> Reply {
    match req.cmd {
        // Clients and admin tools.
        cmd::QUERY_STORE_WITHOUT_GROUP_ONE
        | cmd::QUERY_STORE_WITH_GROUP_ONE
        | cmd::QUERY_STORE_WITHOUT_GROUP_ALL
        | cmd::QUERY_STORE_WITH_GROUP_ALL => service::query_store(shared, req),
        cmd::QUERY_FETCH_ONE | cmd::QUERY_FETCH_ALL | cmd::QUERY_UPDATE => {
            service::query_fetch(shared, req)
        }
        cmd::SERVER_LIST_ONE_GROUP | cmd::SERVER_LIST_ALL_GROUPS => {
            service::list_groups(shared, req)
        }
        cmd::SERVER_LIST_STORAGE => service::list_storages(shared, req),
        cmd::SERVER_DELETE_STORAGE => service::delete_storage(shared, req),
        cmd::SERVER_DELETE_GROUP => service::delete_group(shared, req),
        cmd::SERVER_GET_LEADER => tracker_cmds::get_leader(shared, req),
        cmd::SERVER_TRACKER_CLUSTER_STAT => tracker_cmds::cluster_stat(shared, req),
        cmd::SERVER_STORAGE_CLUSTER_STAT => service::storage_cluster_stat(shared, req),
        cmd::SERVER_STORAGE_VOLUMN_STAT => service::volume_stat(shared, req),
        cmd::SERVER_SET_TRUNK_SERVER => service::set_trunk_server(shared, req),
        cmd::ACTIVE_TEST => Ok(Vec::new()),

        // Storages.
        cmd::STORAGE_JOIN => storage_cmds::join(shared, session, req),
        cmd::STORAGE_BEAT => storage_cmds::beat(shared, session, req),
        cmd::STORAGE_REPORT_DISK_USAGE => storage_cmds::disk_usage(shared, session, req),
        cmd::STORAGE_SYNC_REPORT => storage_cmds::sync_report(shared, session, req),
        cmd::STORAGE_SYNC_DEST_REQ => storage_cmds::sync_dest_req(shared, session, req),
        cmd::STORAGE_SYNC_NOTIFY => storage_cmds::sync_notify(shared, session, req),
        cmd::STORAGE_SYNC_DEST_QUERY => storage_cmds::sync_dest_query(shared, session, req),
        cmd::STORAGE_CHANGE_STATUS => storage_cmds::change_status(shared, session, req),
        cmd::STORAGE_REPLICA_CHG => storage_cmds::replica_chg(shared, session, req),
        cmd::STORAGE_FETCH_TRUNK_FID => storage_cmds::fetch_trunk_file_id(shared, session, req),
        cmd::STORAGE_REPORT_TRUNK_FID => storage_cmds::report_trunk_file_id(shared, session, req),
        cmd::STORAGE_REPORT_TRUNK_FREE => storage_cmds::report_trunk_free(shared, session, req),
        cmd::STORAGE_SYNC_SRC_REQ => storage_cmds::sync_src_req(shared, req),
        cmd::STORAGE_REPORT_STATUS => storage_cmds::report_status(shared, req),
        cmd::STORAGE_GET_MY_IP => storage_cmds::get_my_ip(shared, req),
        cmd::STORAGE_PARAMETER_REQ => storage_cmds::parameter_req(shared, req),
        cmd::STORAGE_CHANGELOG_REQ => storage_cmds::changelog_req(shared, req),
        cmd::STORAGE_GET_STATUS => storage_cmds::get_status(shared, req),
        cmd::STORAGE_GET_SERVER_ID => storage_cmds::get_server_id(shared, req),
        cmd::STORAGE_FETCH_STORAGE_IDS => storage_cmds::fetch_storage_ids(shared, req),
        cmd::STORAGE_GET_GROUP_NAME => storage_cmds::get_group_name(shared, req),
        cmd::TRACKER_NOTIFY_RESELECT_LEADER => tracker_cmds::reselect_leader(shared, req),

        // Other trackers.
        cmd::TRACKER_GET_STATUS => tracker_cmds::get_status(shared, req),
        cmd::TRACKER_NOTIFY_NEXT_LEADER => tracker_cmds::notify_next_leader(shared, req),
        cmd::TRACKER_COMMIT_NEXT_LEADER => tracker_cmds::commit_next_leader(shared, req),
        cmd::TRACKER_JOIN_LEADER => tracker_cmds::join_leader(shared, session, req),
        cmd::TRACKER_PING_LEADER => tracker_cmds::ping_leader(shared, session, req),
        cmd::TRACKER_GET_SYS_FILES_START => tracker_cmds::sys_files_start(shared, session, req),
        cmd::TRACKER_GET_ONE_SYS_FILE => tracker_cmds::one_sys_file(shared, session, req),
        cmd::TRACKER_GET_SYS_FILES_END => tracker_cmds::sys_files_end(shared, session, req),

        other => Err(Refusal::invalid(format!("unknown command {other}"))),
    }
}
