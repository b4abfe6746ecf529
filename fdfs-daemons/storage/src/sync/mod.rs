//! Replication inside a group: every storage pushes its own changes to every peer.
//!
//! - [`mark`]: per-peer progress in `data/sync/<ip>_<port>.mark`;
//! - [`dispatcher`]: one task per peer replaying records with the sync commands;
//! - the receiving side lives in `handlers::sync`.
//!
//! [`SyncState`] is what the rest of the daemon sees: the group members the leader
//! tracker announced, how far each peer has confirmed our binlog (for
//! `sync_wait_replicas`), and per source how far we have received its changes (reported
//! to the trackers with 89 SYNC_REPORT).

pub mod dispatcher;
pub mod mark;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fdfs_proto::msg::{ReportStatus, SyncSrcReq};
use fdfs_proto::msg::{StorageBrief, SyncSource};
use fdfs_proto::status;
use fdfs_runtime::server::Shutdown;
use fdfs_runtime::Error;
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
    /// Per peer id: the peer's join time (its `storage_join_time`, as the trackers list
    /// it) when this storage finished copying the old files to it; `None` when no
    /// tracker told it then.
    copied_old: Mutex<HashMap<String, Option<i64>>>,
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
        // Always announced: a list that reads the same still says something changed
        // (a peer may have left and joined again as new between two beats).
        self.members.send_replace(list);
    }

    /// The initial copy of the old files to `peer` is done; `join_time`: the peer's
    /// join time then, if a tracker told it.
    fn note_copied_old(&self, peer: &str, join_time: Option<i64>) {
        self.copied_old
            .lock()
            .unwrap()
            .insert(peer.to_string(), join_time);
    }

    /// `Some(join time)` if this storage copied the old files to `peer` (the join time
    /// `None` when unknown).
    fn copied_old(&self, peer: &str) -> Option<Option<i64>> {
        self.copied_old.lock().unwrap().get(peer).copied()
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

    /// Where `peer`'s dispatcher is done up to, while one runs.
    pub fn progress_of(&self, peer: &str) -> Option<BinlogPos> {
        self.progress.lock().unwrap().get(peer).copied()
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

/// Our id in the cluster: the server id with storage ids, else the IP text.
pub fn my_id(st: &Storage) -> Option<String> {
    st.my_id()
}

/// 86 SYNC_SRC_REQ: who copies the old files to `dest`, asked of the trackers in turn.
pub async fn sync_src_req(st: &Storage, dest: &str) -> Result<Option<SyncSource>, Error> {
    let req = SyncSrcReq {
        group: st.cfg.group_name.clone(),
        dest_id: dest.to_string(),
    };
    // Every tracker is asked: one that saw `dest` join late may not know its source
    // yet, and a "nobody" from it must not hide another tracker's answer.
    let mut last = Error::Other("no tracker configured".into());
    let mut answered = false;
    for t in &st.cfg.tracker_servers {
        match crate::outbound::tracker_call(st, t, &req).await {
            Ok(Some(src)) => return Ok(Some(src)),
            Ok(None) => answered = true,
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
    let req = ReportStatus {
        group: st.cfg.group_name.clone(),
        brief: StorageBrief {
            status: new_status,
            ..dest.clone()
        },
    };
    for t in &st.cfg.tracker_servers {
        match crate::outbound::tracker_call(st, t, &req).await {
            Ok(()) => info!(
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

/// The join time of `peer` (its `storage_join_time`, which a storage that lost its data
/// and joined again as new has anew) as the trackers list it (92): the newest any
/// tracker reports, `None` if none did.
async fn peer_join_time(st: &Storage, peer: &StorageBrief) -> Option<i64> {
    let req = fdfs_proto::msg::StorageSelector {
        group: st.cfg.group_name.clone(),
        storage_id: Some(peer.id.clone()),
    };
    let mut newest = None;
    for t in &st.cfg.tracker_servers {
        match crate::outbound::short_call(st, t, &req).await {
            Ok(list) => {
                let found = list.iter().filter(|s| s.id == peer.id).map(|s| s.join_time);
                newest = newest.max(found.max());
            }
            Err(Error::Proto(e)) => warn!("tracker {t}: bad storage list: {e}"),
            Err(e) => tracing::debug!("tracker {t}: cannot list {}: {e}", peer.id),
        }
    }
    newest
}

/// The initial copy of the old files to `peer` is done: remembers its join time then,
/// to tell later whether it joined again as new.
pub(crate) async fn note_copied_old(st: &Storage, peer: &StorageBrief) {
    let join_time = peer_join_time(st, peer).await;
    if join_time.is_none() {
        warn!(
            "no tracker lists the join time of {}:{}",
            peer.ip, peer.port
        );
    }
    st.sync.note_copied_old(&peer.id, join_time);
}

/// Whether a peer listed as new again after this storage copied it the old files
/// joined again since: its join time changed. `then`: its join time when the copy was
/// done; `now`: as the trackers list it now. A trackers' list that is late (one that
/// missed the peer's new status) changes no join time.
fn joined_again(then: Option<i64>, now: Option<i64>) -> bool {
    match (then, now) {
        (Some(then), Some(now)) => now != then,
        // Not known when the copy was done: start over rather than miss it.
        (None, _) => true,
        // No tracker answered: asked again with the next list.
        (Some(_), None) => false,
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
                        &brief,
                        st.by_server_id(),
                    ));
                }
            }
            for (id, brief) in wanted {
                let mark_path = mark::path(st.binlog.dir(), &brief, st.by_server_id());
                if let Some((_, _, known)) = running.get_mut(&id) {
                    let was_new = joins_as_new(known.status);
                    known.status = brief.status;
                    if !joins_as_new(brief.status) {
                        continue;
                    }
                    // Listed as new: it lost its data and joined again if its join time
                    // changed since we copied it the old files; without such a copy, if
                    // it was not new before.
                    let came_back_new = match st.sync.copied_old(&id) {
                        Some(then) => joined_again(then, peer_join_time(&st, &brief).await),
                        None => !was_new,
                    };
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use fdfs_proto::cmd;
    use fdfs_proto::msg::StorageStat;
    use fdfs_proto::IpSize;

    use super::*;
    use crate::test_support::{eventually, storage, FakeTracker};

    #[test]
    fn join_time_decides() {
        assert!(!joined_again(Some(100), Some(100)));
        assert!(joined_again(Some(100), Some(200)));
        assert!(!joined_again(Some(100), None));
        assert!(joined_again(None, Some(100)));
    }

    /// A peer still listed as new after this storage copied it the old files (a tracker
    /// missed the report that the copy is done) is not copied everything again; one
    /// whose join time changed (it lost its data and joined again) is.
    #[tokio::test]
    async fn a_late_list_does_not_restart_the_replication() {
        let join_time = Arc::new(AtomicI64::new(100));
        let jt = join_time.clone();
        let tracker = FakeTracker::start(move |_, command, _| match command {
            cmd::SERVER_LIST_STORAGE => {
                let stat = StorageStat {
                    status: status::WAIT_SYNC,
                    id: "127.0.0.9".into(),
                    ip: "127.0.0.9".into(),
                    join_time: jt.load(Ordering::Relaxed),
                    ..Default::default()
                };
                let mut w = fdfs_proto::codec::Writer::new();
                stat.encode_into(&mut w, IpSize::V4);
                (0, w.finish())
            }
            _ => (fdfs_proto::errno::ENOENT, Vec::new()),
        })
        .await;
        let (st, _dir) = storage("late-list", std::slice::from_ref(&tracker.addr));
        st.learn_ip("127.0.0.1".parse().unwrap());
        let (trigger, shutdown) = fdfs_runtime::server::ShutdownTrigger::new();
        let manager = tokio::spawn(run_manager(st.clone(), shutdown));
        let peer = StorageBrief {
            status: status::WAIT_SYNC,
            port: 9,
            id: "127.0.0.9".into(),
            ip: "127.0.0.9".into(),
        };
        st.sync.set_members(vec![peer.clone()]);
        // The copy is done, at the peer's join time 100.
        note_copied_old(&st, &peer).await;
        assert_eq!(st.sync.copied_old("127.0.0.9"), Some(Some(100)));
        let asked = tracker.count(cmd::SERVER_LIST_STORAGE);
        // A list that still shows it waiting: same join time, nothing starts over.
        st.sync.set_members(vec![peer.clone()]);
        assert!(eventually(10, || tracker.count(cmd::SERVER_LIST_STORAGE) > asked).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(st.sync.copied_old("127.0.0.9"), Some(Some(100)));
        // It joined again as new: its replication starts over.
        join_time.store(200, Ordering::Relaxed);
        st.sync.set_members(vec![peer.clone()]);
        assert!(eventually(10, || st.sync.copied_old("127.0.0.9").is_none()).await);
        trigger.trigger();
        manager.await.unwrap();
        let _ = std::fs::remove_dir_all(&st.cfg.base_path);
    }
}
