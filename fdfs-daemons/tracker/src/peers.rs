//! The tracker cluster task (§8): elects a leader while there is none, and while another
//! tracker leads, follows it (58 JOIN_LEADER once, then 65 PING_LEADER every second on
//! one connection). Three failed pings in a row, or a leader that says it no longer
//! leads, and the leader is forgotten: the next round elects again.
//!
//! An election round asks every known tracker (and itself) for its 64 status, ranks the
//! answers (`relationship::elect`) and, when this tracker wins, announces itself with
//! 66 NOTIFY_NEXT_LEADER then 67 COMMIT_NEXT_LEADER to every reachable peer. When an
//! existing leader answered, it is simply adopted. Failed rounds back off 1–3 s.
//!
//! A leader also asks the other trackers for their 64 status every few seconds: after a
//! network partition heals, both sides may lead. The two settle by the election order
//! (`relationship::rank`): the lower-ranked leader steps down and adopts the other, the
//! higher-ranked one sends it 68 NOTIFY_RESELECT_LEADER (which upstream trackers also
//! obey). Trackers that follow (pinged within `FOLLOWER_ACTIVE_SECS`) are not asked.
//! Storages that see two leaders send 68 to both, as upstream's do.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fdfs_proto::msg::{sys_file, JoinLeader, SysFileRequest};
use fdfs_proto::msg::{
    NextLeader, NotifyReselectLeader, PingLeader, Request, SysFilesEnd, SysFilesStart,
    TrackerGetStatus,
};
use fdfs_proto::{errno, VERSION_TEXT};
use fdfs_runtime::server::Shutdown;
use fdfs_runtime::{Connection, Error};
use rand::Rng;
use tracing::{debug, info, warn};

use crate::persist;
use crate::relationship::{elect, host_of, rank, Candidate, FOLLOWER_ACTIVE_SECS};
use crate::server::Shared;
use crate::tracker_cmds::local_status;

/// How often followers ping, and how often an idle round runs.
pub const TICK: Duration = Duration::from_secs(1);
/// Consecutive failed pings before the leader is forgotten.
pub const MAX_PING_FAILURES: u32 = 3;
/// How often a leader looks for another tracker that leads too.
pub const RIVAL_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Peer connections give up quickly so elections converge in seconds.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const PEER_NETWORK_TIMEOUT: Duration = Duration::from_secs(5);

/// The follower's connection to its leader.
struct LeaderLink {
    leader: String,
    conn: Connection,
}

#[derive(Default)]
struct State {
    link: Option<LeaderLink>,
    failures: u32,
    /// Rounds spent trying to copy the sys files from a peer.
    copy_attempts: u32,
    /// When this tracker, as leader, last asked its peers whether they lead too.
    rivals_checked: Option<tokio::time::Instant>,
}

/// A tracker that started empty (or after a long downtime) tries this many rounds to
/// copy a peer's sys files before giving up.
const MAX_COPY_ATTEMPTS: u32 = 10;

/// Runs until shutdown.
pub async fn run(shared: Arc<Shared>, mut shutdown: Shutdown) {
    let mut state = State::default();
    loop {
        // A round may wait on a slow peer: stopping must not.
        let delay = tokio::select! {
            _ = shutdown.recv() => break,
            d = round(&shared, &mut state) => d,
        };
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    if let Some(link) = state.link.take() {
        link.conn.quit().await;
    }
}

fn backoff() -> Duration {
    Duration::from_millis(rand::thread_rng().gen_range(1000..=3000))
}

async fn round(shared: &Arc<Shared>, state: &mut State) -> Duration {
    let (me, leader) = {
        let p = shared.peers();
        (p.me().map(str::to_string), p.leader().map(str::to_string))
    };
    let Some(me) = me else {
        // Until a storage tells us which of its trackers we are.
        return TICK;
    };
    if shared.copy_sys_files.load(Ordering::Relaxed) && state.copy_attempts < MAX_COPY_ATTEMPTS {
        match copy_sys_files(shared, &me).await {
            // No peer known yet: wait for a storage to name one.
            None => {}
            Some(true) => shared.copy_sys_files.store(false, Ordering::Relaxed),
            Some(false) => {
                state.copy_attempts += 1;
                if state.copy_attempts == MAX_COPY_ATTEMPTS {
                    warn!("no peer tracker handed over its sys files; relying on storage joins");
                }
            }
        }
    }
    match leader {
        Some(l) if l == me => {
            drop_link(state).await;
            state.failures = 0;
            let due = state
                .rivals_checked
                .is_none_or(|t| t.elapsed() >= RIVAL_CHECK_INTERVAL);
            if !due {
                return TICK;
            }
            state.rivals_checked = Some(tokio::time::Instant::now());
            check_rival_leaders(shared, &me).await
        }
        Some(l) => follow(shared, state, &l).await,
        None => {
            drop_link(state).await;
            state.failures = 0;
            state.rivals_checked = None;
            election(shared, &me).await
        }
    }
}

/// Leader duty: another tracker that leads as well (both sides of a healed partition)
/// is settled by the election order, the same way on both sides. Trackers that pinged
/// us as followers within `FOLLOWER_ACTIVE_SECS` follow us: they are not asked.
async fn check_rival_leaders(shared: &Arc<Shared>, me: &str) -> Duration {
    let now = fdfs_runtime::unix_now();
    let following: Vec<String> = shared
        .peers()
        .followers()
        .iter()
        .filter(|(_, f)| now - f.last_ping <= FOLLOWER_ACTIVE_SECS)
        .map(|(host, _)| host.clone())
        .collect();
    let others: Vec<(String, SocketAddr)> = resolve_others(shared, me)
        .await
        .into_iter()
        .filter(|(host, _)| !following.contains(host))
        .collect();
    if others.is_empty() {
        return TICK;
    }
    let rivals: Vec<Candidate> = collect_statuses(shared, &others)
        .await
        .into_iter()
        .filter(|(c, _)| c.status.if_leader)
        .map(|(c, _)| c)
        .collect();
    for rival in rivals {
        let Ok(mine) = local_status(shared) else {
            return TICK;
        };
        if !mine.if_leader {
            // Stepped down meanwhile (68 from a storage or from the rival).
            return Duration::ZERO;
        }
        let myself = Candidate {
            host: me.to_string(),
            status: mine,
        };
        // Both sides keep the one `elect` would choose among the two.
        if rank(&myself, &rival).is_lt() {
            warn!(
                "tracker {} leads too and ranks higher: stepping down",
                rival.host
            );
            shared
                .peers()
                .forget_leader(me, "another tracker leads and ranks higher");
            // The next round finds the rival leading and follows it.
            return Duration::ZERO;
        }
        warn!(
            "tracker {} leads too and ranks lower: asking it to step down",
            rival.host
        );
        let Some(&(_, addr)) = others.iter().find(|(h, _)| *h == rival.host) else {
            continue;
        };
        match call(shared, addr, &NotifyReselectLeader).await {
            // Already stepped down by itself.
            Ok(_) | Err(Error::Status(errno::EOPNOTSUPP)) => {}
            Err(e) => debug!("tracker {}: 68 failed: {e}", rival.host),
        }
    }
    TICK
}

async fn drop_link(state: &mut State) {
    if let Some(link) = state.link.take() {
        link.conn.quit().await;
    }
}

/// Connects to a tracker, from our bind address when we have one.
pub(crate) async fn connect(shared: &Shared, addr: SocketAddr) -> Result<Connection, Error> {
    let bind = shared
        .config
        .bind_addr
        .filter(|ip| !ip.is_unspecified() && ip.is_ipv4() == addr.is_ipv4());
    let connect_timeout = shared.config.connect_timeout.min(PEER_CONNECT_TIMEOUT);
    let network_timeout = shared.config.network_timeout.min(PEER_NETWORK_TIMEOUT);
    let mut conn = Connection::connect(addr, bind, connect_timeout, network_timeout).await?;
    if let Some(secret) = &shared.config.cluster_secret {
        conn.prove_secret(secret)
            .await
            .map_err(|e| Error::Other(format!("tracker {addr}: {e}")))?;
    }
    Ok(conn)
}

/// One request on a fresh connection.
async fn call<R: Request>(shared: &Shared, addr: SocketAddr, req: &R) -> Result<R::Reply, Error> {
    let mut conn = connect(shared, addr).await?;
    let reply = conn.call(req).await;
    conn.quit().await;
    reply
}

/// Follower duty: join the leader once per connection, then ping it.
async fn follow(shared: &Arc<Shared>, state: &mut State, leader: &str) -> Duration {
    if state.link.as_ref().is_some_and(|l| l.leader != leader) {
        drop_link(state).await;
        state.failures = 0;
    }
    let result = match state.link.as_mut() {
        Some(link) => {
            let ping = PingLeader(shared.connections.counts());
            link.conn.call(&ping).await.map(|trunks| {
                if !trunks.entries.is_empty() {
                    shared.cluster().apply_trunk_assignments(&trunks.entries);
                }
            })
        }
        None => join_leader(shared, leader).await.map(|conn| {
            state.link = Some(LeaderLink {
                leader: leader.to_string(),
                conn,
            });
        }),
    };
    match result {
        Ok(()) => {
            state.failures = 0;
            TICK
        }
        Err(Error::Status(errno::EOPNOTSUPP)) => {
            drop_link(state).await;
            shared
                .peers()
                .forget_leader(leader, "it says it is not the leader");
            TICK
        }
        Err(e) => {
            drop_link(state).await;
            state.failures += 1;
            debug!(
                "leader {leader}: ping failed ({e}), {} in a row",
                state.failures
            );
            if state.failures >= MAX_PING_FAILURES {
                state.failures = 0;
                warn!("leader {leader} unreachable: {e}");
                shared
                    .peers()
                    .forget_leader(leader, "three pings in a row failed");
                // Elect right away.
                return Duration::ZERO;
            }
            TICK
        }
    }
}

async fn join_leader(shared: &Shared, leader: &str) -> Result<Connection, Error> {
    let addr = resolve(leader)
        .await
        .ok_or_else(|| Error::Other(format!("cannot resolve {leader}")))?;
    let mut conn = connect(shared, addr).await?;
    let join = JoinLeader {
        up_time: shared.started,
        version: VERSION_TEXT.into(),
        server_port: shared.config.port as i64,
    };
    match conn.call(&join).await {
        Ok(_) | Err(Error::Status(errno::EEXIST)) => {
            info!("joined leader {leader}");
            Ok(conn)
        }
        Err(e) => Err(e),
    }
}

/// `host` (`ip:port`, or a name) resolved.
async fn resolve(host: &str) -> Option<SocketAddr> {
    tokio::net::lookup_host(host).await.ok()?.next()
}

/// Every other tracker we know of, each resolved once and named by its `ip:port` (so
/// every tracker ranks the same addresses); names that resolve to us are left out.
async fn resolve_others(shared: &Shared, me: &str) -> Vec<(String, SocketAddr)> {
    let hosts: Vec<String> = shared.cluster().trackers().iter().cloned().collect();
    let mut out: Vec<(String, SocketAddr)> = Vec::new();
    for host in hosts.iter().filter(|h| *h != me) {
        let Some(addr) = resolve(host).await else {
            debug!("tracker {host} does not resolve");
            continue;
        };
        let name = host_of(addr.ip(), addr.port());
        if name != me && !out.iter().any(|(n, _)| *n == name) {
            out.push((name, addr));
        }
    }
    out
}

/// 64 from every tracker of `others` that answers (those without groups answer
/// ENOENT).
async fn collect_statuses(
    shared: &Shared,
    others: &[(String, SocketAddr)],
) -> Vec<(Candidate, SocketAddr)> {
    let mut out = Vec::new();
    for (host, addr) in others {
        match call(shared, *addr, &TrackerGetStatus).await {
            Ok(status) => out.push((
                Candidate {
                    host: host.clone(),
                    status,
                },
                *addr,
            )),
            Err(Error::Proto(e)) => debug!("tracker {host}: bad status reply: {e}"),
            Err(e) => debug!("tracker {host}: no status: {e}"),
        }
    }
    out
}

async fn election(shared: &Arc<Shared>, me: &str) -> Duration {
    let others = resolve_others(shared, me).await;
    let mut candidates: Vec<Candidate> = collect_statuses(shared, &others)
        .await
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    if let Ok(status) = local_status(shared) {
        candidates.push(Candidate {
            host: me.to_string(),
            status,
        });
    }
    let Some(best) = elect(&candidates).cloned() else {
        return backoff();
    };
    if shared.peers().leader().is_some() {
        // A commit arrived while we were asking around.
        return TICK;
    }
    if best.host == me {
        match announce(shared, me, &others).await {
            Ok(()) => {
                let mut p = shared.peers();
                p.set_leader(Some(me.to_string()), "won the election");
                TICK
            }
            Err(why) => {
                warn!("leader election failed: {why}");
                backoff()
            }
        }
    } else if best.status.if_leader {
        let mut p = shared.peers();
        if p.leader().is_none() {
            p.set_leader(Some(best.host.clone()), "found the current leader");
        }
        Duration::ZERO
    } else {
        debug!("waiting for {} to announce itself as leader", best.host);
        backoff()
    }
}

/// 66 then 67 to every other tracker; unreachable ones are skipped, a refusal fails.
async fn announce(
    shared: &Shared,
    me: &str,
    others: &[(String, SocketAddr)],
) -> Result<(), String> {
    let mut notified = Vec::new();
    for (host, addr) in others {
        let notify = NextLeader {
            commit: false,
            host: me.to_string(),
        };
        match call(shared, *addr, &notify).await {
            Ok(_) => notified.push((host, *addr)),
            Err(Error::Status(e)) => {
                return Err(format!("{host} refused {me} as next leader (errno {e})"))
            }
            Err(e) => debug!("tracker {host} unreachable for the notification: {e}"),
        }
    }
    let commit = NextLeader {
        commit: true,
        host: me.to_string(),
    };
    for (host, addr) in notified {
        match call(shared, addr, &commit).await {
            Ok(_) => {}
            Err(Error::Status(e)) => {
                return Err(format!("{host} refused the commit of {me} (errno {e})"))
            }
            Err(e) => debug!("tracker {host} unreachable for the commit: {e}"),
        }
    }
    Ok(())
}

/// A tracker that started without groups (or after a long downtime) copies the best
/// peer's sys files (61, 63…, 62) and merges what it did not know. `Some(true)` when
/// done, `None` while no peer is known.
async fn copy_sys_files(shared: &Arc<Shared>, me: &str) -> Option<bool> {
    let others = resolve_others(shared, me).await;
    if others.is_empty() {
        return None;
    }
    let mut peers = collect_statuses(shared, &others).await;
    peers.sort_by(|(a, _), (b, _)| rank(b, a));
    for (peer, addr) in peers {
        match fetch_sys_files(shared, addr).await {
            Ok(groups) => {
                let added = shared.cluster().merge_missing(groups);
                info!(
                    "copied the sys files of tracker {}: {added} storage(s) learned",
                    peer.host
                );
                return Some(true);
            }
            Err(e) => warn!("copying the sys files of tracker {}: {e}", peer.host),
        }
    }
    Some(false)
}

async fn fetch_sys_files(
    shared: &Shared,
    addr: SocketAddr,
) -> Result<Vec<crate::cluster::Group>, Error> {
    let mut conn = connect(shared, addr).await?;
    conn.call(&SysFilesStart).await?;
    let dir = shared.config.data_dir().join("sys_files_copy");
    std::fs::create_dir_all(&dir)?;
    for index in 0..sys_file::COUNT {
        let mut content = Vec::new();
        loop {
            let ask = SysFileRequest {
                index,
                offset: content.len() as i64,
            };
            let chunk = conn.call(&ask).await?;
            content.extend_from_slice(&chunk.content);
            if content.len() as i64 >= chunk.file_size || chunk.content.is_empty() {
                break;
            }
        }
        if let Some(name) = persist::sys_file_name(index) {
            std::fs::write(dir.join(name), &content)?;
        }
    }
    conn.call(&SysFilesEnd).await?;
    conn.quit().await;
    let groups = persist::load(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(groups?)
}
