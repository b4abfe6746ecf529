//! Replication inside a group: every storage pushes its own changes to every peer.
//!
//! - [`binlog_reader`]: reads the binlog from a saved position, across rotation;
//! - [`mark`]: per-peer progress in `data/sync/<ip>_<port>.mark`;
//! - [`dispatcher`]: one task per peer replaying records with the sync commands;
//! - the receiving side lives in `handlers::sync`.
//!
//! [`SyncState`] is what the rest of the daemon sees: the group members the leader
//! tracker announced, how far each peer has confirmed our binlog (for
//! `sync_wait_replicas`), and per source how far we have received its changes (reported
//! to the trackers with 89 SYNC_REPORT).

pub mod binlog_reader;
pub mod dispatcher;
pub mod mark;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fdfs_proto::status;
use fdfs_proto::tracker_msg::{StorageBrief, SyncSource};
use fdfs_proto::{cmd, GROUP_NAME_LEN, STORAGE_ID_LEN};
use fdfs_runtime::server::Shutdown;
use fdfs_runtime::{Connection, Error};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::binlog::BinlogPos;
use crate::state::Storage;

/// Counters of the replication, for logs and tests.
#[derive(Default)]
pub struct SyncCounters {
    /// Records a peer applied.
    pub sent: AtomicU64,
    /// Records not sent (filtered, source file gone).
    pub skipped: AtomicU64,
    /// Records a peer rejected as invalid.
    pub rejected: AtomicU64,
    /// Malformed binlog records skipped by readers.
    pub malformed: AtomicU64,
}

pub struct SyncState {
    /// The group members, as the leader tracker last announced them.
    members: watch::Sender<Vec<StorageBrief>>,
    /// How many member lists the trackers sent (they send one when the group changed on
    /// their side, even if it reads the same as the last one here).
    lists: AtomicU64,
    /// Per peer id: the member list count when this storage finished copying the old
    /// files to it.
    copied_old: Mutex<HashMap<String, u64>>,
    /// Per peer id: the binlog position up to which that peer is done.
    progress: Mutex<HashMap<String, BinlogPos>>,
    /// Bumped on every progress change.
    tick: watch::Sender<u64>,
    /// Per source id: newest source timestamp received from it.
    received: Mutex<BTreeMap<String, i32>>,
    received_version: AtomicU64,
    pub counters: SyncCounters,
}

impl Default for SyncState {
    fn default() -> Self {
        SyncState {
            members: watch::channel(Vec::new()).0,
            lists: AtomicU64::new(0),
            copied_old: Mutex::new(HashMap::new()),
            progress: Mutex::new(HashMap::new()),
            tick: watch::channel(0).0,
            received: Mutex::new(BTreeMap::new()),
            received_version: AtomicU64::new(0),
            counters: SyncCounters::default(),
        }
    }
}

impl SyncState {
    /// A new member list from a beat reply.
    pub fn set_members(&self, list: Vec<StorageBrief>) {
        self.lists.fetch_add(1, Ordering::Relaxed);
        // Always announced: a list that reads the same still says something changed
        // (a peer may have left and joined again as new between two beats).
        self.members.send_replace(list);
    }

    /// The initial copy of the old files to `peer` is done.
    pub fn note_copied_old(&self, peer: &str) {
        let n = self.lists.load(Ordering::Relaxed);
        self.copied_old.lock().unwrap().insert(peer.to_string(), n);
    }

    /// Whether the trackers sent a member list after the initial copy to `peer` was
    /// done: a peer still new in it then lost its data and joined again.
    fn listed_since_copied_old(&self, peer: &str) -> bool {
        let n = self.lists.load(Ordering::Relaxed);
        self.copied_old
            .lock()
            .unwrap()
            .get(peer)
            .is_some_and(|&at| at < n)
    }

    fn forget_copied_old(&self, peer: &str) {
        self.copied_old.lock().unwrap().remove(peer);
    }

    pub fn members(&self) -> Vec<StorageBrief> {
        self.members.borrow().clone()
    }

    /// A dispatcher reports that its peer is done up to `pos` (or stopped: `None`).
    pub fn set_progress(&self, peer: &str, pos: Option<BinlogPos>) {
        {
            let mut p = self.progress.lock().unwrap();
            match pos {
                Some(pos) => {
                    p.insert(peer.to_string(), pos);
                }
                None => {
                    p.remove(peer);
                }
            }
        }
        self.tick.send_modify(|t| *t += 1);
    }

    /// Waits until `want` peers (at most as many as there are) are past `pos`, or
    /// `timeout`. True if they are.
    pub async fn wait_replicas(&self, pos: BinlogPos, want: usize, timeout: Duration) -> bool {
        let mut rx = self.tick.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            let (done, peers) = {
                let p = self.progress.lock().unwrap();
                (p.values().filter(|v| **v >= pos).count(), p.len())
            };
            if done >= want.min(peers) {
                return true;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// The receiving side applied a change from `source` stamped `timestamp`.
    pub fn note_received(&self, source: &str, timestamp: i32) {
        let mut r = self.received.lock().unwrap();
        let e = r.entry(source.to_string()).or_insert(0);
        if timestamp > *e {
            *e = timestamp;
            self.received_version.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Version of the received timestamps (changes when one moves) and their values.
    pub fn received(&self) -> (u64, Vec<(String, i32)>) {
        let r = self.received.lock().unwrap();
        (
            self.received_version.load(Ordering::Relaxed),
            r.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        )
    }
}

/// Our id in the cluster: the IP text (IP mode).
pub fn my_id(st: &Storage) -> Option<String> {
    st.my_ip().map(|ip| ip.to_string())
}

/// A connection to a tracker or a peer of the group: bound as `client_bind` says, and
/// with `cluster_secret` proven.
pub(crate) async fn connect(st: &Storage, addr: std::net::SocketAddr) -> Result<Connection, Error> {
    let mut conn = Connection::connect(
        addr,
        bind_addr(st),
        st.cfg.connect_timeout,
        st.cfg.network_timeout,
    )
    .await?;
    if let Some(secret) = &st.cfg.cluster_secret {
        conn.prove_secret(secret).await?;
    }
    Ok(conn)
}

fn bind_addr(st: &Storage) -> Option<std::net::IpAddr> {
    if st.cfg.client_bind {
        st.cfg.bind_addr
    } else {
        None
    }
}

/// One request on a short connection to a tracker.
async fn tracker_request(
    st: &Storage,
    tracker: &str,
    cmd: u8,
    body: &[u8],
) -> Result<Vec<u8>, Error> {
    let (host, port) = crate::tracker_link::parse_host_port(tracker)
        .ok_or_else(|| Error::Other(format!("bad tracker address {tracker:?}")))?;
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or_else(|| Error::Other(format!("{host} does not resolve")))?;
    let mut conn = connect(st, addr).await?;
    let reply = conn.request(cmd, body).await;
    conn.quit().await;
    reply
}

/// 86 SYNC_SRC_REQ: who copies the old files to `dest`, asked of the trackers in turn.
pub async fn sync_src_req(st: &Storage, dest: &str) -> Result<Option<SyncSource>, Error> {
    let mut w = fdfs_proto::codec::Writer::new();
    w.fixed_str(&st.cfg.group_name, GROUP_NAME_LEN)
        .fixed_str(dest, STORAGE_ID_LEN);
    let body = w.finish();
    // Every tracker is asked: one that saw `dest` join late may not know its source
    // yet, and a "nobody" from it must not hide another tracker's answer.
    let mut last = Error::Other("no tracker configured".into());
    let mut answered = false;
    for t in &st.cfg.tracker_servers {
        match tracker_request(st, t, cmd::STORAGE_SYNC_SRC_REQ, &body).await {
            Ok(reply) => match SyncSource::decode(&reply)? {
                Some(src) => return Ok(Some(src)),
                None => answered = true,
            },
            Err(e) => last = e,
        }
    }
    if answered {
        Ok(None)
    } else {
        Err(last)
    }
}

/// 76 REPORT_STATUS: tells every tracker the status of peer `dest`.
pub async fn report_status(st: &Storage, dest: &StorageBrief, new_status: u8) {
    let mut w = fdfs_proto::codec::Writer::new();
    w.fixed_str(&st.cfg.group_name, GROUP_NAME_LEN);
    StorageBrief {
        status: new_status,
        ..dest.clone()
    }
    .encode_into(&mut w);
    let body = w.finish();
    for t in &st.cfg.tracker_servers {
        match tracker_request(st, t, cmd::STORAGE_REPORT_STATUS, &body).await {
            Ok(_) => info!(
                "reported {}:{} as {} to tracker {t}",
                dest.ip,
                dest.port,
                status::name(new_status)
            ),
            Err(e) => warn!(
                "cannot report {}:{} as {} to tracker {t}: {e}",
                dest.ip,
                dest.port,
                status::name(new_status)
            ),
        }
    }
}

/// A member that waits for its initial copy (new, or back after losing its data).
fn joins_as_new(s: u8) -> bool {
    matches!(s, status::INIT | status::WAIT_SYNC)
}

/// Removes the mark of a peer that is new to the group (as upstream ignores it): the
/// tracker decides afresh who copies it the old files. An initial copy this storage
/// had under way is kept (it goes on from its mark) unless `always`.
fn discard_mark(path: &std::path::Path, always: bool) {
    let keep = !always
        && matches!(mark::Mark::load(path), Ok(Some(m)) if m.need_sync_old && !m.sync_old_done);
    if keep {
        return;
    }
    match std::fs::remove_file(path) {
        Ok(()) => info!("{}: removed, the peer joins as new", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!("cannot remove {}: {e}", path.display()),
    }
}

/// A running dispatcher: its stop switch, its task, its peer.
type Running = (
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
    StorageBrief,
);

/// Starts and stops one dispatcher per peer as the member list changes, until shutdown.
pub async fn run_manager(st: Arc<Storage>, mut shutdown: Shutdown) {
    let mut members = st.sync.members.subscribe();
    let mut running: HashMap<String, Running> = HashMap::new();
    loop {
        let list = members.borrow_and_update().clone();
        if let Some(me) = my_id(&st) {
            let wanted: HashMap<String, StorageBrief> = list
                .into_iter()
                .filter(|b| !(b.id == me || (b.ip == me && b.port == st.cfg.port as u32)))
                .filter(|b| {
                    !matches!(
                        b.status,
                        status::DELETED | status::IP_CHANGED | status::NONE
                    )
                })
                .map(|b| (b.id.clone(), b))
                .collect();
            let gone: Vec<String> = running
                .keys()
                .filter(|id| !wanted.contains_key(*id))
                .cloned()
                .collect();
            for id in gone {
                if let Some((stop, task, brief)) = running.remove(&id) {
                    info!("peer {id} left the group: stopping its replication");
                    let _ = stop.send(true);
                    let _ = task.await;
                    // If it comes back, it comes back empty.
                    let _ = std::fs::remove_file(mark::path(
                        st.binlog.dir(),
                        &brief.ip,
                        brief.port as u16,
                    ));
                }
            }
            for (id, brief) in wanted {
                let mark_path = mark::path(st.binlog.dir(), &brief.ip, brief.port as u16);
                if let Some((_, _, known)) = running.get_mut(&id) {
                    let came_back_new = joins_as_new(brief.status)
                        && (!joins_as_new(known.status) || st.sync.listed_since_copied_old(&id));
                    known.status = brief.status;
                    if !came_back_new {
                        continue;
                    }
                    // It lost its data and joined again as new: whatever our mark says it
                    // has is gone. Start over, as for a new storage.
                    warn!(
                        "peer {}:{} ({id}) is {} again: its replication starts over",
                        brief.ip,
                        brief.port,
                        status::name(brief.status)
                    );
                    if let Some((stop, task, _)) = running.remove(&id) {
                        let _ = stop.send(true);
                        let _ = task.await;
                    }
                    st.sync.forget_copied_old(&id);
                    discard_mark(&mark_path, true);
                } else if joins_as_new(brief.status) {
                    discard_mark(&mark_path, false);
                }
                info!(
                    "peer {}:{} ({id}): starting replication",
                    brief.ip, brief.port
                );
                let (stop, stop_rx) = watch::channel(false);
                let task = tokio::spawn(dispatcher::run(st.clone(), brief.clone(), stop_rx));
                running.insert(id, (stop, task, brief));
            }
        }
        tokio::select! {
            r = members.changed() => if r.is_err() { break },
            // Our own address may be learnt after the first list.
            _ = tokio::time::sleep(Duration::from_secs(1)), if my_id(&st).is_none() => {}
            _ = shutdown.recv() => break,
        }
    }
    for (stop, _, _) in running.values() {
        let _ = stop.send(true);
    }
    for (_, (_, task, _)) in running {
        let _ = task.await;
    }
}
