//! The tracker's whole view of the storage cluster: groups, their storages, statuses,
//! disk space and sync progress. [`Cluster`] is the one owner of that state; the server
//! keeps it behind a `std::sync::Mutex` that is held only for the duration of one method
//! call (never across an `.await`). Everything here is pure logic: no sockets, no files.
//!
//! - `mod.rs`: the types, joins, heartbeats and the status state machine (§6.3);
//! - `placement.rs`: where uploads go and who may serve a read (§6.4, §7);
//! - `stats.rs`: the records of the admin listings (90/91/92).

mod placement;
mod stats;
mod trunk;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fdfs_proto::errno;
use fdfs_proto::msg::{
    DiskUsage, JoinReply, JoinRequest, StorageBrief, StorageCounters, SyncReport, SyncSource,
};
use fdfs_proto::status::{self, ACTIVE, INIT, OFFLINE, ONLINE, RECOVERY, SYNCING, WAIT_SYNC};
use fdfs_proto::storage_ids::{rw, ServerId, ServerIds};
use std::sync::Arc;
use tracing::info;

use crate::config::Placement;
use crate::refusal::Refusal;

pub use placement::{FetchKind, StoreChoice};
pub use trunk::{Candidate, PickRequest, TrunkChange, TrunkState};

/// `rw_mode` bits as reported in 92 (R_OK | W_OK): without storage ids every storage
/// may both read and write; `storage_ids.conf` may say otherwise (`rw=`).
pub const RW_BOTH: u8 = rw::BOTH;

/// Free and total space of one store path, from the last disk usage report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathSpace {
    pub total_mb: i64,
    pub free_mb: i64,
}

/// How far a storage has received the changes of one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// The newest timestamp received from the source (stamped by the source's clock).
    pub ts: i64,
    /// When (by this tracker's clock, and only ever compared with it) `ts` last moved,
    /// or was first known to this tracker: reported, loaded from the sys files or copied
    /// from a peer tracker.
    pub since: i64,
}

/// One storage server as the tracker knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Storage {
    /// Its server id from `storage_ids.conf`, or its IP text without storage ids.
    pub id: String,
    pub ip: String,
    pub port: u16,
    pub status: u8,
    pub rw_mode: u8,
    pub version: String,
    pub join_time: i64,
    pub up_time: i64,
    pub upload_priority: i64,
    pub store_path_count: u32,
    pub subdir_count_per_path: u32,
    /// Per store path; empty until the first disk usage report.
    pub paths: Vec<PathSpace>,
    pub total_mb: i64,
    pub free_mb: i64,
    /// The store path the last upload was sent to.
    pub current_write_path: usize,
    /// Where the next round-robin path search starts.
    pub(crate) path_cursor: usize,
    pub counters: StorageCounters,
    pub sync_src_id: String,
    pub sync_until_timestamp: i64,
    pub last_heart_beat_time: i64,
    /// Per source storage id: how far this storage has received its changes (from 89
    /// SYNC_REPORT, the destination's view).
    pub synced_from: BTreeMap<String, Synced>,
    /// The storage's own clock at its last heartbeat with counters; 0 when it never
    /// sent one (upstream storages leave that field zero).
    pub reported_clock: i64,
    pub changelog_offset: i64,
    /// The connection that joined last; only that connection's close takes it offline.
    pub(crate) session: u64,
}

impl Storage {
    pub fn new(id: &str, ip: &str, port: u16) -> Self {
        Storage {
            id: id.to_string(),
            ip: ip.to_string(),
            port,
            status: INIT,
            rw_mode: RW_BOTH,
            version: String::new(),
            join_time: 0,
            up_time: 0,
            upload_priority: 10,
            store_path_count: 1,
            subdir_count_per_path: 256,
            paths: Vec::new(),
            total_mb: 0,
            free_mb: 0,
            current_write_path: 0,
            path_cursor: 0,
            counters: StorageCounters::default(),
            sync_src_id: String::new(),
            sync_until_timestamp: 0,
            last_heart_beat_time: 0,
            synced_from: BTreeMap::new(),
            reported_clock: 0,
            changelog_offset: 0,
            session: 0,
        }
    }

    /// ACTIVE storages take uploads and serve reads.
    pub fn is_active(&self) -> bool {
        self.status == ACTIVE
    }

    pub fn is_writable(&self) -> bool {
        self.is_active() && self.rw_mode & 2 != 0
    }

    pub fn is_readable(&self) -> bool {
        self.is_active() && self.rw_mode & 4 != 0
    }

    /// "Available" in upstream's words: connected or recently connected, fully synced.
    fn is_available(&self) -> bool {
        matches!(self.status, OFFLINE | ONLINE | ACTIVE)
    }

    pub fn brief(&self) -> StorageBrief {
        StorageBrief {
            status: self.status,
            port: self.port as u32,
            id: self.id.clone(),
            ip: self.ip.clone(),
        }
    }
}

/// A group: storages that hold the same files.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub store_path_count: u32,
    pub subdir_count_per_path: u32,
    pub storage_port: u16,
    pub storages: BTreeMap<String, Storage>,
    pub current_write_server: usize,
    pub current_read_server: usize,
    /// Bumped whenever a member is added or removed or changes status, so each storage
    /// connection can tell whether its member list is stale (beat reply flag 0x04).
    pub version: u64,
    /// The group's trunk server and trunk file ids (`use_trunk_file`).
    pub trunk: TrunkState,
}

impl Group {
    pub fn new(name: &str, store_path_count: u32, subdir_count_per_path: u32, port: u16) -> Self {
        Group {
            name: name.to_string(),
            store_path_count,
            subdir_count_per_path,
            storage_port: port,
            storages: BTreeMap::new(),
            current_write_server: 0,
            current_read_server: 0,
            version: 0,
            trunk: TrunkState::default(),
        }
    }

    /// A time the clock of storage `source` has certainly reached: the newest of its own
    /// heartbeat clock, its last upload and what its peers received from it, all
    /// stamped by that storage's clock (0 if none is known).
    pub fn source_clock(&self, source: &Storage) -> i64 {
        let received = self
            .storages
            .values()
            .filter_map(|p| p.synced_from.get(&source.id).map(|s| s.ts));
        received
            .chain([source.reported_clock, source.counters.last_source_update])
            .max()
            .unwrap_or(0)
    }

    /// Changes a member's status; true if it changed.
    fn set_status(&mut self, id: &str, new: u8, why: &str) -> bool {
        let Some(s) = self.storages.get_mut(id) else {
            return false;
        };
        if s.status == new {
            return false;
        }
        info!(
            "storage {}:{} of {}: {} -> {} ({why})",
            s.ip,
            s.port,
            self.name,
            status::name(s.status),
            status::name(new)
        );
        s.status = new;
        self.version += 1;
        true
    }

    fn storage(&self, id: &str) -> Result<&Storage, Refusal> {
        self.storages
            .get(id)
            .ok_or_else(|| Refusal::not_found(format!("storage {id} not in group {}", self.name)))
    }

    fn storage_mut(&mut self, id: &str) -> Result<&mut Storage, Refusal> {
        let name = &self.name;
        self.storages
            .get_mut(id)
            .ok_or_else(|| Refusal::not_found(format!("storage {id} not in group {name}")))
    }

    /// Storages saved while they were named by IP (storage ids were just turned on)
    /// take the id `storage_ids.conf` gives their address and port; what refers to them
    /// (sync sources, sync progress) follows.
    fn rename_to_server_ids(&mut self, ids: &ServerIds) {
        let mut renamed: BTreeMap<String, String> = BTreeMap::new();
        for s in self.storages.values() {
            if ids.by_id(&s.id).is_some() {
                continue;
            }
            match ids.by_group_addr(&self.name, &s.ip, s.port) {
                Some(entry) => {
                    renamed.insert(s.id.clone(), entry.id.clone());
                }
                None => tracing::warn!(
                    "storage {}:{} of group {} is not in storage_ids.conf: it must join \
                     again to be known",
                    s.ip,
                    s.port,
                    self.name
                ),
            }
        }
        if renamed.is_empty() {
            return;
        }
        let new_id = |id: &str| renamed.get(id).cloned().unwrap_or_else(|| id.to_string());
        let storages = std::mem::take(&mut self.storages);
        for (old_key, mut s) in storages {
            if let Some(id) = renamed.get(&s.id) {
                info!("storage {}:{} of {} is now {id}", s.ip, s.port, self.name);
                s.id = id.clone();
            }
            if !s.sync_src_id.is_empty() {
                s.sync_src_id = new_id(&s.sync_src_id);
            }
            if self.trunk.server.as_deref() == Some(old_key.as_str()) {
                self.trunk.server = Some(s.id.clone());
            }
            if self.trunk.last == old_key {
                self.trunk.last = s.id.clone();
            }
            s.synced_from = std::mem::take(&mut s.synced_from)
                .into_iter()
                .map(|(src, synced)| (new_id(&src), synced))
                .collect();
            self.storages.insert(s.id.clone(), s);
        }
        self.version += 1;
    }

    /// Finds a member by IP (and port, when given).
    pub fn find_by_ip(&self, ip: &str, port: Option<u16>) -> Option<&Storage> {
        self.storages
            .values()
            .find(|s| s.ip == ip && port.is_none_or(|p| p == s.port))
    }

    /// Every member, sorted by id, as sent in beat replies.
    pub fn member_briefs(&self) -> Vec<StorageBrief> {
        self.storages.values().map(Storage::brief).collect()
    }
}

/// What a connection remembers after a successful JOIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub group: String,
    pub id: String,
    pub session: u64,
}

/// The cluster state.
/// How long a report about a storage not joined yet is kept (seconds).
const EARLY_REPORT_TTL: i64 = 300;

#[derive(Debug)]
pub struct Cluster {
    groups: BTreeMap<String, Group>,
    placement: Placement,
    /// Round-robin position over groups (store_lookup = 0).
    next_group: usize,
    /// Tracker addresses learned from JOIN bodies (`host:port`).
    trackers: BTreeSet<String>,
    next_session: u64,
    /// `storage_ids.conf`, when storages are named by id.
    ids: Option<Arc<ServerIds>>,
    /// The storages of a group may listen on different ports (`id_type_in_filename =
    /// id`: reads are routed by id, so several instances may share a host).
    ports_may_differ: bool,
    trust_declared_ids: bool,
    /// `use_trunk_file`: each group has a trunk server.
    trunk_files: bool,
    /// Moves on with every change of any group's trunk server (65 tells followers).
    trunk_epoch: u64,
    /// Reports (76) of the initial copy of a storage that had not joined this tracker
    /// yet (its source tells every tracker, possibly before the new storage reached this
    /// one): (group, ip) -> (status, when). Applied when it joins, if recent.
    early_reports: HashMap<(String, String), (u8, i64)>,
    /// Membership or a status changed: save soon.
    dirty: bool,
    /// Only counters / space changed: save eventually.
    stats_dirty: bool,
}

impl Cluster {
    pub fn new(placement: Placement) -> Self {
        Cluster {
            groups: BTreeMap::new(),
            placement,
            next_group: 0,
            trackers: BTreeSet::new(),
            next_session: 0,
            ids: None,
            ports_may_differ: false,
            trust_declared_ids: false,
            trunk_files: false,
            trunk_epoch: 0,
            early_reports: HashMap::new(),
            dirty: false,
            stats_dirty: false,
        }
    }

    /// Rebuilds the state saved by a previous run. Storages come back OFFLINE until they
    /// rejoin (statuses of storages still catching up are kept).
    pub fn restore(placement: Placement, groups: Vec<Group>) -> Self {
        let mut cluster = Cluster::new(placement);
        for mut g in groups {
            for s in g.storages.values_mut() {
                if matches!(s.status, ONLINE | ACTIVE) {
                    s.status = OFFLINE;
                }
            }
            cluster.groups.insert(g.name.clone(), g);
        }
        cluster
    }

    /// Names storages by the ids of `ids` from now on; `ports_may_differ` when file
    /// names carry those ids; `trust_declared_ids`: a storage may say which id it is
    /// (`trust_storage_server_id`, for storages behind NAT). The roles (`rw=`) of known
    /// storages follow the table.
    pub fn use_storage_ids(
        &mut self,
        ids: Arc<ServerIds>,
        ports_may_differ: bool,
        trust_declared_ids: bool,
    ) {
        for g in self.groups.values_mut() {
            g.rename_to_server_ids(&ids);
            for s in g.storages.values_mut() {
                if let Some(entry) = ids.by_id(&s.id) {
                    s.rw_mode = entry.rw_mode;
                }
            }
        }
        self.ids = Some(ids);
        self.ports_may_differ = ports_may_differ;
        self.trust_declared_ids = trust_declared_ids;
    }

    /// The table of server ids, when storages are named by id.
    pub fn storage_ids(&self) -> Option<&ServerIds> {
        self.ids.as_deref()
    }

    /// Who a joining storage is: its entry of `storage_ids.conf` (by the id it declares
    /// when declared ids are trusted, else by its address and port), or `None` without
    /// storage ids.
    fn identify(&self, req: &JoinRequest, peer_ip: &str) -> Result<Option<ServerId>, Refusal> {
        let Some(ids) = &self.ids else {
            return Ok(None);
        };
        let entry = if self.trust_declared_ids && !req.storage_id.is_empty() {
            ids.by_id(&req.storage_id).ok_or_else(|| {
                Refusal::not_found(format!(
                    "storage {peer_ip}:{} declares id {}, which is not in storage_ids.conf",
                    req.storage_port, req.storage_id
                ))
            })?
        } else {
            ids.by_group_addr(&req.group, peer_ip, req.storage_port)
                .ok_or_else(|| {
                    Refusal::not_found(format!(
                        "storage {peer_ip}:{} of group {} is not in storage_ids.conf",
                        req.storage_port, req.group
                    ))
                })?
        };
        if entry.group != req.group {
            return Err(Refusal::invalid(format!(
                "storage {peer_ip}:{} joins group {}, storage_ids.conf puts id {} in {}",
                req.storage_port, req.group, entry.id, entry.group
            )));
        }
        Ok(Some(entry.clone()))
    }

    /// Adds what a peer tracker's sys files know and we do not (groups, storages, sync
    /// progress), without touching what storages told us directly. Copied ONLINE/ACTIVE
    /// storages come in OFFLINE until they join us. Returns how many storages were added.
    pub fn merge_missing(&mut self, groups: Vec<Group>) -> usize {
        let mut added = 0;
        for mut g in groups {
            for s in g.storages.values_mut() {
                if matches!(s.status, ONLINE | ACTIVE) {
                    s.status = OFFLINE;
                }
                s.session = 0;
            }
            let Some(mine) = self.groups.get_mut(&g.name) else {
                added += g.storages.len();
                self.groups.insert(g.name.clone(), g);
                continue;
            };
            if mine.store_path_count != g.store_path_count {
                continue;
            }
            for (id, s) in g.storages {
                match mine.storages.get_mut(&id) {
                    Some(known) => {
                        for (src, ts) in s.synced_from {
                            known.synced_from.entry(src).or_insert(ts);
                        }
                    }
                    None => {
                        mine.storages.insert(id, s);
                        mine.version += 1;
                        added += 1;
                    }
                }
            }
        }
        self.changed();
        added
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    pub fn group(&self, name: &str) -> Result<&Group, Refusal> {
        self.groups
            .get(name)
            .ok_or_else(|| Refusal::not_found(format!("group {name} not found")))
    }

    fn group_mut(&mut self, name: &str) -> Result<&mut Group, Refusal> {
        self.groups
            .get_mut(name)
            .ok_or_else(|| Refusal::not_found(format!("group {name} not found")))
    }

    pub fn trackers(&self) -> &BTreeSet<String> {
        &self.trackers
    }

    /// Adds trackers (saved by a previous run, or learned otherwise); true if any was new.
    pub fn add_trackers<I: IntoIterator<Item = String>>(&mut self, trackers: I) -> bool {
        let mut added = false;
        for t in trackers {
            let t = t.trim().to_string();
            if !t.is_empty() && self.trackers.insert(t) {
                added = true;
            }
        }
        added
    }

    /// True when no group is known: such a tracker cannot lead (64 answers ENOENT).
    pub fn has_groups(&self) -> bool {
        !self.groups.is_empty()
    }

    fn changed(&mut self) {
        self.dirty = true;
    }

    /// Asks for a save at the next opportunity (e.g. after a failed write).
    pub fn request_save(&mut self) {
        self.dirty = true;
    }

    /// True (once) when the state should be written: right away after membership or
    /// status changes, or when `stats_due` for mere counter updates.
    pub fn take_save_request(&mut self, stats_due: bool) -> bool {
        let save = self.dirty || (self.stats_dirty && stats_due);
        if save {
            self.dirty = false;
            self.stats_dirty = false;
        }
        save
    }

    // ----- storage → tracker ------------------------------------------------------------

    /// 81 STORAGE_JOIN from `peer_ip`.
    pub fn join(
        &mut self,
        req: &JoinRequest,
        peer_ip: &str,
        now: i64,
    ) -> Result<(Joined, JoinReply), Refusal> {
        let entry = self.identify(req, peer_ip)?;
        if peer_ip.contains(':') && !self.ports_may_differ {
            // A file name has room for an IPv4 address or a server id only.
            return Err(Refusal::invalid(format!(
                "storage [{peer_ip}]:{} connects over IPv6, which needs use_storage_id = \
                 true and id_type_in_filename = id (file names cannot hold an IPv6 address)",
                req.storage_port
            )));
        }
        let id = entry
            .as_ref()
            .map_or_else(|| peer_ip.to_string(), |e| e.id.clone());
        let rw_mode = entry.as_ref().map_or(RW_BOTH, |e| e.rw_mode);
        let ports_may_differ = self.ports_may_differ;
        for t in &req.trackers {
            if self.trackers.insert(t.clone()) {
                info!("learned tracker {t} from storage {peer_ip}");
            }
        }
        let group = self.groups.entry(req.group.clone()).or_insert_with(|| {
            info!("new group {}", req.group);
            Group::new(
                &req.group,
                req.store_path_count,
                req.subdir_count_per_path,
                req.storage_port,
            )
        });
        if group.store_path_count != req.store_path_count {
            return Err(Refusal::invalid(format!(
                "storage {peer_ip}: store_path_count {} != {} of group {}",
                req.store_path_count, group.store_path_count, group.name
            )));
        }
        if group.subdir_count_per_path != req.subdir_count_per_path {
            return Err(Refusal::invalid(format!(
                "storage {peer_ip}: subdir_count_per_path {} != {} of group {}",
                req.subdir_count_per_path, group.subdir_count_per_path, group.name
            )));
        }
        let others_use_other_port = !ports_may_differ
            && group
                .storages
                .values()
                .any(|s| s.id != id && s.port != req.storage_port);
        if others_use_other_port {
            return Err(Refusal::invalid(format!(
                "storage {peer_ip}: port {} differs from port {} of group {}",
                req.storage_port, group.storage_port, group.name
            )));
        }
        group.storage_port = req.storage_port;

        self.next_session += 1;
        let session = self.next_session;
        let is_new = !group.storages.contains_key(&id);
        if is_new {
            group
                .storages
                .insert(id.clone(), Storage::new(&id, peer_ip, req.storage_port));
            group.version += 1;
        }
        let s = group.storages.get_mut(&id).expect("just inserted");
        let known_join_time = s.join_time;
        s.ip = peer_ip.to_string();
        s.port = req.storage_port;
        s.rw_mode = rw_mode;
        s.version = req.version.clone();
        s.join_time = req.join_time;
        s.up_time = req.up_time;
        s.upload_priority = req.upload_priority;
        s.store_path_count = req.store_path_count;
        s.subdir_count_per_path = req.subdir_count_per_path;
        s.last_heart_beat_time = now;
        s.session = session;
        let old = s.status;
        // A known storage that joins as new (`init_flag` and a join time of its own: it
        // lost its base_path) starts over: INIT, then WAIT_SYNC with a fresh source,
        // which copies it everything. What it reported having received before no longer
        // holds. (A storage still joining its trackers one by one after its first start
        // also says `init_flag`, with the join time this tracker knows: it goes on.)
        let starts_over = !is_new
            && req.init_flag
            && req.join_time != known_join_time
            && !matches!(old, INIT | WAIT_SYNC | SYNCING);
        if starts_over {
            s.synced_from.clear();
            s.sync_src_id.clear();
            s.sync_until_timestamp = 0;
        }
        let new = if is_new {
            if req.init_flag {
                INIT
            } else {
                ONLINE
            }
        } else if starts_over {
            INIT
        } else if s.is_available() || old == RECOVERY {
            ONLINE
        } else {
            old
        };
        if is_new {
            s.status = new;
            info!(
                "storage {peer_ip}:{} joined group {} as new {}",
                req.storage_port,
                req.group,
                status::name(new)
            );
        } else {
            group.set_status(&id, new, "rejoined");
        }
        let s = &group.storages[&id];
        let reply = JoinReply {
            status: s.status,
            sync_src_id: s.sync_src_id.clone(),
        };
        self.changed();
        Ok((
            Joined {
                group: req.group.clone(),
                id,
                session,
            },
            reply,
        ))
    }

    /// The connection of a joined storage closed.
    pub fn disconnect(&mut self, who: &Joined) {
        let Ok(group) = self.group_mut(&who.group) else {
            return;
        };
        let Some(s) = group.storages.get(&who.id) else {
            return;
        };
        // A newer connection of the same storage owns its status now.
        if s.session != who.session || !matches!(s.status, ONLINE | ACTIVE) {
            return;
        }
        if group.set_status(&who.id, OFFLINE, "connection closed") {
            self.changed();
        }
    }

    /// Marks storages whose last heartbeat is older than `interval` seconds OFFLINE.
    /// Returns how many were marked.
    pub fn expire_heartbeats(&mut self, now: i64, interval: i64) -> usize {
        let mut marked = 0;
        for group in self.groups.values_mut() {
            let stale: Vec<String> = group
                .storages
                .values()
                .filter(|s| matches!(s.status, ONLINE | ACTIVE))
                .filter(|s| now - s.last_heart_beat_time > interval)
                .map(|s| s.id.clone())
                .collect();
            for id in stale {
                if group.set_status(&id, OFFLINE, "no heartbeat") {
                    marked += 1;
                }
            }
        }
        if marked > 0 {
            self.changed();
        }
        marked
    }

    /// A beat or a disk report proves the storage is alive: OFFLINE/ONLINE become ACTIVE.
    fn alive(&mut self, who: &Joined, now: i64, why: &str) -> Result<(), Refusal> {
        let group = self.group_mut(&who.group)?;
        let s = group.storage_mut(&who.id)?;
        s.last_heart_beat_time = now;
        if matches!(s.status, OFFLINE | ONLINE) && group.set_status(&who.id, ACTIVE, why) {
            self.changed();
        }
        Ok(())
    }

    /// 83 STORAGE_BEAT, with the counters when the storage sent them.
    pub fn beat(
        &mut self,
        who: &Joined,
        counters: Option<StorageCounters>,
        now: i64,
    ) -> Result<(), Refusal> {
        if let Some(c) = counters {
            let s = self.group_mut(&who.group)?.storage_mut(&who.id)?;
            if c.last_heart_beat_time > 0 {
                s.reported_clock = c.last_heart_beat_time;
            }
            // The last two timestamps are the tracker's own bookkeeping.
            let kept = (
                s.counters.last_synced_timestamp,
                s.counters.last_heart_beat_time,
            );
            s.counters = c;
            (
                s.counters.last_synced_timestamp,
                s.counters.last_heart_beat_time,
            ) = kept;
            self.stats_dirty = true;
        }
        self.alive(who, now, "heartbeat")
    }

    /// 84 REPORT_DISK_USAGE.
    pub fn disk_usage(&mut self, who: &Joined, usage: &DiskUsage, now: i64) -> Result<(), Refusal> {
        let load_balance = self.placement.store_path == crate::config::StorePath::LoadBalance;
        let group = self.group_mut(&who.group)?;
        if usage.paths.len() != group.store_path_count as usize {
            return Err(Refusal::invalid(format!(
                "disk usage of {} paths, group {} has {}",
                usage.paths.len(),
                group.name,
                group.store_path_count
            )));
        }
        let s = group.storage_mut(&who.id)?;
        s.paths = usage
            .paths
            .iter()
            .map(|&(total_mb, free_mb)| PathSpace { total_mb, free_mb })
            .collect();
        s.total_mb = s.paths.iter().map(|p| p.total_mb).sum();
        s.free_mb = s.paths.iter().map(|p| p.free_mb).sum();
        if load_balance {
            s.current_write_path = placement::most_free_path(&s.paths).unwrap_or(0);
        }
        self.stats_dirty = true;
        self.alive(who, now, "disk usage report")
    }

    /// 89 SYNC_REPORT: how far the reporting storage has received each source's changes.
    pub fn sync_report(
        &mut self,
        who: &Joined,
        report: &SyncReport,
        now: i64,
    ) -> Result<(), Refusal> {
        let group = self.group_mut(&who.group)?;
        let s = group.storage_mut(&who.id)?;
        for (src, ts) in &report.entries {
            if !src.is_empty() && *src != who.id {
                let ts = *ts as i64;
                s.synced_from
                    .entry(src.clone())
                    .and_modify(|e| {
                        if e.ts != ts {
                            *e = Synced { ts, since: now };
                        }
                    })
                    .or_insert(Synced { ts, since: now });
            }
        }
        s.last_heart_beat_time = now;
        self.stats_dirty = true;
        Ok(())
    }

    /// 87 SYNC_DEST_REQ: a new storage asks who will copy the existing files to it.
    /// `None`: nobody has data, the storage is ONLINE right away.
    pub fn sync_dest_req(&mut self, who: &Joined, now: i64) -> Result<Option<SyncSource>, Refusal> {
        let group = self.group_mut(&who.group)?;
        group.storage(&who.id)?;
        let others = || group.storages.values().filter(|s| s.id != who.id);
        if !others().any(Storage::is_available) {
            group.set_status(&who.id, ONLINE, "no peer to sync from");
            let s = group.storage_mut(&who.id)?;
            s.sync_src_id.clear();
            s.sync_until_timestamp = 0;
            self.changed();
            return Ok(None);
        }
        let Some(src) = others().find(|s| s.is_writable()).map(|s| s.id.clone()) else {
            return Err(Refusal::not_found(format!(
                "no active storage in group {} to sync {} from",
                group.name, who.id
            )));
        };
        let s = group.storage_mut(&who.id)?;
        s.sync_src_id = src.clone();
        s.sync_until_timestamp = now;
        group.set_status(&who.id, WAIT_SYNC, "sync source assigned");
        self.changed();
        self.apply_early_report(who);
        Ok(Some(SyncSource {
            src_id: src,
            until_timestamp: now,
        }))
    }

    fn remember_early_report(&mut self, group: &str, brief: &StorageBrief) {
        let now = fdfs_runtime::unix_now();
        self.early_reports
            .retain(|_, (_, at)| now - *at < EARLY_REPORT_TTL);
        if self.early_reports.len() < 1024 {
            self.early_reports
                .insert((group.to_string(), brief.ip.clone()), (brief.status, now));
        }
    }

    /// A storage waiting for its initial copy here (WAIT_SYNC): a recent report of that
    /// copy made before it joined this tracker takes effect now.
    fn apply_early_report(&mut self, who: &Joined) {
        let Some(g) = self.groups.get_mut(&who.group) else {
            return;
        };
        let Some(ip) = g.storages.get(&who.id).map(|s| s.ip.clone()) else {
            return;
        };
        let Some((status, at)) = self.early_reports.remove(&(who.group.clone(), ip)) else {
            return;
        };
        if fdfs_runtime::unix_now() - at < EARLY_REPORT_TTL
            && g.set_status(&who.id, status, "reported by a peer before it joined here")
        {
            self.changed();
        }
    }

    /// 88 SYNC_NOTIFY: the storage tells every tracker its sync source (or none).
    pub fn sync_notify(&mut self, who: &Joined, source: Option<SyncSource>) -> Result<(), Refusal> {
        let group = self.group_mut(&who.group)?;
        let status = group.storage(&who.id)?.status;
        match source {
            None => {
                let s = group.storage_mut(&who.id)?;
                s.sync_src_id.clear();
                s.sync_until_timestamp = 0;
                if matches!(status, INIT | WAIT_SYNC | SYNCING) {
                    group.set_status(&who.id, ONLINE, "no sync source");
                }
            }
            Some(src) => {
                group.storage(&src.src_id)?;
                let s = group.storage_mut(&who.id)?;
                s.sync_src_id = src.src_id;
                s.sync_until_timestamp = src.until_timestamp;
                if status == INIT {
                    group.set_status(&who.id, WAIT_SYNC, "sync source notified");
                }
            }
        }
        self.changed();
        self.apply_early_report(who);
        Ok(())
    }

    /// 79 SYNC_DEST_QUERY: the storage's own sync source, if any.
    pub fn sync_dest_query(&self, who: &Joined) -> Result<Option<SyncSource>, Refusal> {
        let s = self.group(&who.group)?.storage(&who.id)?;
        Ok(sync_source_of(s))
    }

    /// 86 SYNC_SRC_REQ: a storage asks who copies old files to `dest_id`.
    pub fn sync_src_req(&self, group: &str, dest_id: &str) -> Result<Option<SyncSource>, Refusal> {
        let s = self.group(group)?.storage(dest_id)?;
        if matches!(s.status, INIT | status::DELETED | status::IP_CHANGED) {
            return Err(Refusal::not_found(format!(
                "storage {dest_id} is {}",
                status::name(s.status)
            )));
        }
        Ok(sync_source_of(s))
    }

    /// 76 REPORT_STATUS: a source reports another storage's status (SYNCING, OFFLINE),
    /// or a storage its own (RECOVERY while it gets a replaced disk's files back from a
    /// peer, OFFLINE when done).
    pub fn report_status(&mut self, group: &str, brief: &StorageBrief) -> Result<(), Refusal> {
        let g = self.group_mut(group)?;
        let id = if g.storages.contains_key(&brief.id) {
            brief.id.clone()
        } else {
            match g.find_by_ip(&brief.ip, u16::try_from(brief.port).ok()) {
                Some(s) => s.id.clone(),
                None => {
                    // Not joined here yet: remembered for when it does.
                    if matches!(brief.status, SYNCING | OFFLINE) {
                        self.remember_early_report(group, brief);
                    }
                    return Err(Refusal::not_found(format!(
                        "storage {} not in group {group}",
                        brief.id
                    )));
                }
            }
        };
        // A peer only reports the steps of an initial copy: SYNCING when it starts, and
        // OFFLINE when it is done (the next beat makes the storage ACTIVE). A late or
        // repeated report must not knock a storage that is already past that step back.
        let current = g.storage(&id)?.status;
        let allowed = match brief.status {
            SYNCING => matches!(current, INIT | WAIT_SYNC),
            OFFLINE => matches!(current, INIT | WAIT_SYNC | SYNCING | RECOVERY),
            _ => true,
        };
        if !allowed {
            tracing::info!(
                "ignored report of {} as {} from a peer: it is {}",
                id,
                status::name(brief.status),
                status::name(current)
            );
            return Ok(());
        }
        if g.set_status(&id, brief.status, "reported by a peer") {
            self.changed();
        }
        Ok(())
    }

    /// 59 CHANGE_STATUS: the storage sets its own status.
    pub fn change_status(&mut self, who: &Joined, new: u8) -> Result<(), Refusal> {
        let g = self.group_mut(&who.group)?;
        g.storage(&who.id)?;
        if g.set_status(&who.id, new, "changed by the storage") {
            self.changed();
        }
        Ok(())
    }

    /// The group members to announce in a beat reply, if the connection's last known
    /// version (`told`) is stale; updates `told`.
    pub fn members_if_changed(
        &self,
        who: &Joined,
        told: &mut Option<u64>,
    ) -> Option<Vec<StorageBrief>> {
        let group = self.groups.get(&who.group)?;
        if *told == Some(group.version) {
            return None;
        }
        *told = Some(group.version);
        Some(group.member_briefs())
    }

    // ----- admin --------------------------------------------------------------------------

    /// 93 DELETE_STORAGE.
    pub fn delete_storage(&mut self, group: &str, id: &str) -> Result<(), Refusal> {
        let g = self.group_mut(group)?;
        let s = g.storage(id)?;
        if matches!(s.status, ONLINE | ACTIVE) {
            return Err(Refusal::new(
                errno::EBUSY,
                format!("storage {id} of {group} is {}", status::name(s.status)),
            ));
        }
        g.storages.remove(id);
        for other in g.storages.values_mut() {
            other.synced_from.remove(id);
        }
        g.version += 1;
        let was_trunk_server = g.trunk.server.as_deref() == Some(id);
        if was_trunk_server {
            g.trunk.server = None;
            g.trunk.version += 1;
        }
        info!("storage {id} deleted from group {group}");
        if was_trunk_server {
            self.trunk_epoch += 1;
        }
        self.changed();
        Ok(())
    }

    /// 108 DELETE_GROUP.
    pub fn delete_group(&mut self, group: &str) -> Result<(), Refusal> {
        let g = self.group(group)?;
        if let Some(s) = g
            .storages
            .values()
            .find(|s| matches!(s.status, ONLINE | ACTIVE))
        {
            return Err(Refusal::new(
                errno::EBUSY,
                format!("storage {} of {group} is {}", s.id, status::name(s.status)),
            ));
        }
        self.groups.remove(group);
        info!("group {group} deleted");
        self.changed();
        Ok(())
    }

    /// The newest time up to which storage `s` has all files of its active peers: min
    /// over the sources with round-robin uploads, max otherwise (§6.4).
    pub fn last_synced_timestamp(&self, group: &Group, s: &Storage) -> i64 {
        let active_sources = s
            .synced_from
            .iter()
            .filter(|(src, _)| group.storages.get(*src).is_some_and(Storage::is_active))
            .map(|(_, synced)| synced.ts);
        let value = if self.placement.store_server == crate::config::StoreServer::RoundRobin {
            active_sources.min()
        } else {
            active_sources.max()
        };
        value.unwrap_or(0)
    }
}

fn sync_source_of(s: &Storage) -> Option<SyncSource> {
    (!s.sync_src_id.is_empty()).then(|| SyncSource {
        src_id: s.sync_src_id.clone(),
        until_timestamp: s.sync_until_timestamp,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use fdfs_proto::status::{OFFLINE, SYNCING};

    pub fn join_req(group: &str, paths: u32, init: bool) -> JoinRequest {
        JoinRequest {
            group: group.into(),
            storage_port: 23000,
            store_path_count: paths,
            subdir_count_per_path: 256,
            upload_priority: 10,
            join_time: 1000,
            up_time: 1000,
            version: "6.16.1".into(),
            init_flag: init,
            status: 0,
            storage_id: String::new(),
            tracker_ip: String::new(),
            trackers: vec!["127.0.0.1:22122".into()],
        }
    }

    /// Joins `ip` to `group` and makes it ACTIVE with `free` MB on each of `paths` paths.
    pub fn active(c: &mut Cluster, group: &str, ip: &str, paths: u32, free: i64) -> Joined {
        let (who, _) = c.join(&join_req(group, paths, false), ip, 100).unwrap();
        let usage = DiskUsage {
            paths: (0..paths).map(|_| (100_000, free)).collect(),
        };
        c.disk_usage(&who, &usage, 100).unwrap();
        assert_eq!(status_of(c, group, ip), ACTIVE);
        who
    }

    pub fn status_of(c: &Cluster, group: &str, id: &str) -> u8 {
        c.group(group).unwrap().storages[id].status
    }

    #[test]
    fn join_creates_group_and_storage() {
        let mut c = Cluster::new(Placement::default());
        let (who, reply) = c
            .join(&join_req("group1", 2, false), "10.0.0.1", 5)
            .unwrap();
        assert_eq!(reply.status, ONLINE);
        assert_eq!(who.id, "10.0.0.1");
        let g = c.group("group1").unwrap();
        assert_eq!((g.store_path_count, g.storage_port), (2, 23000));
        assert_eq!(c.trackers().len(), 1);
        let mismatch = c.join(&join_req("group1", 1, false), "10.0.0.2", 5);
        assert_eq!(mismatch.unwrap_err().errno, errno::EINVAL);
        let (_, init) = c.join(&join_req("group1", 2, true), "10.0.0.3", 5).unwrap();
        assert_eq!(init.status, INIT);
    }

    #[test]
    fn status_machine_of_a_storage() {
        let mut c = Cluster::new(Placement::default());
        let who = active(&mut c, "g", "10.0.0.1", 1, 5000);
        // Disconnect: ACTIVE -> OFFLINE; beat on a new join: ONLINE -> ACTIVE.
        c.disconnect(&who);
        assert_eq!(status_of(&c, "g", "10.0.0.1"), OFFLINE);
        let (who2, reply) = c.join(&join_req("g", 1, false), "10.0.0.1", 200).unwrap();
        assert_eq!(reply.status, ONLINE);
        // The old connection closing late does not touch the new session.
        c.disconnect(&who);
        assert_eq!(status_of(&c, "g", "10.0.0.1"), ONLINE);
        c.beat(&who2, None, 201).unwrap();
        assert_eq!(status_of(&c, "g", "10.0.0.1"), ACTIVE);
        // Heartbeat expiry.
        assert_eq!(c.expire_heartbeats(250, 100), 0);
        assert_eq!(c.expire_heartbeats(302, 100), 1);
        assert_eq!(status_of(&c, "g", "10.0.0.1"), OFFLINE);
        assert!(c.take_save_request(false));
        assert!(!c.take_save_request(false));
    }

    #[test]
    fn storage_back_as_new_or_recovering() {
        let mut c = Cluster::new(Placement::default());
        active(&mut c, "g", "10.0.0.1", 1, 5000);
        let who = active(&mut c, "g", "10.0.0.2", 1, 5000);
        let report = SyncReport {
            entries: vec![("10.0.0.1".into(), 90)],
        };
        c.sync_report(&who, &report, 101).unwrap();
        c.disconnect(&who);
        // Its base_path was lost: it joins as new and starts over, with a fresh source
        // and its new join time (peers tell by it that it joined again).
        let mut again = join_req("g", 1, true);
        again.join_time = 1500;
        let (who, reply) = c.join(&again, "10.0.0.2", 200).unwrap();
        assert_eq!(reply.status, INIT);
        assert_eq!(
            c.storage_stats("g", Some("10.0.0.2")).unwrap()[0].join_time,
            1500
        );
        assert!(c.group("g").unwrap().storages["10.0.0.2"]
            .synced_from
            .is_empty());
        let src = c.sync_dest_req(&who, 200).unwrap().unwrap();
        assert_eq!(
            (src.src_id.as_str(), src.until_timestamp),
            ("10.0.0.1", 200)
        );
        assert_eq!(status_of(&c, "g", "10.0.0.2"), WAIT_SYNC);
        // A replaced disk: the storage reports itself RECOVERY, beats do not make it
        // ACTIVE; OFFLINE when done, then ACTIVE at the next beat.
        let first = c.join(&join_req("g", 1, false), "10.0.0.1", 300).unwrap().0;
        c.disconnect(&first);
        let mut brief = c.group("g").unwrap().storages["10.0.0.1"].brief();
        brief.status = RECOVERY;
        c.report_status("g", &brief).unwrap();
        assert_eq!(status_of(&c, "g", "10.0.0.1"), RECOVERY);
        let (first, reply) = c.join(&join_req("g", 1, false), "10.0.0.1", 301).unwrap();
        assert_eq!(reply.status, ONLINE, "a join ends RECOVERY, as upstream");
        c.disconnect(&first);
        c.report_status("g", &brief).unwrap();
        brief.status = OFFLINE;
        c.report_status("g", &brief).unwrap();
        assert_eq!(status_of(&c, "g", "10.0.0.1"), OFFLINE);
        let (first, _) = c.join(&join_req("g", 1, false), "10.0.0.1", 302).unwrap();
        c.beat(&first, None, 303).unwrap();
        assert_eq!(status_of(&c, "g", "10.0.0.1"), ACTIVE);
    }

    /// A follower tracker: the source reports the new storage's copy done before the
    /// new storage joined this tracker; when it joins, the report takes effect.
    #[test]
    fn a_report_before_the_join_takes_effect_at_the_join() {
        let mut c = Cluster::new(Placement::default());
        let (first, _) = c.join(&join_req("g", 1, true), "10.0.0.1", 10).unwrap();
        c.sync_dest_req(&first, 10).unwrap();
        c.beat(&first, None, 11).unwrap();
        let early = StorageBrief {
            status: OFFLINE,
            port: 23000,
            id: "10.0.0.2".into(),
            ip: "10.0.0.2".into(),
        };
        assert!(
            c.report_status("g", &early).is_err(),
            "not joined: ENOENT, as before"
        );
        let (second, _) = c.join(&join_req("g", 1, true), "10.0.0.2", 20).unwrap();
        let src = SyncSource {
            src_id: "10.0.0.1".into(),
            until_timestamp: 20,
        };
        c.sync_notify(&second, Some(src)).unwrap();
        assert_eq!(status_of(&c, "g", "10.0.0.2"), OFFLINE);
        c.beat(&second, None, 21).unwrap();
        assert_eq!(status_of(&c, "g", "10.0.0.2"), ACTIVE);
    }

    #[test]
    fn new_storage_catches_up_from_an_active_peer() {
        let mut c = Cluster::new(Placement::default());
        // Alone in its group: ONLINE at once, no source.
        let (first, _) = c.join(&join_req("g", 1, true), "10.0.0.1", 10).unwrap();
        assert_eq!(c.sync_dest_req(&first, 10).unwrap(), None);
        assert_eq!(status_of(&c, "g", "10.0.0.1"), ONLINE);
        c.beat(&first, None, 11).unwrap();
        // A second one gets the first as source.
        let (second, reply) = c.join(&join_req("g", 1, true), "10.0.0.2", 20).unwrap();
        assert_eq!(reply.status, INIT);
        let src = c.sync_dest_req(&second, 20).unwrap().unwrap();
        assert_eq!(src.src_id, "10.0.0.1");
        assert_eq!(src.until_timestamp, 20);
        assert_eq!(status_of(&c, "g", "10.0.0.2"), WAIT_SYNC);
        assert_eq!(c.sync_src_req("g", "10.0.0.2").unwrap(), Some(src.clone()));
        assert_eq!(c.sync_dest_query(&second).unwrap(), Some(src.clone()));
        c.sync_notify(&second, Some(src)).unwrap();
        // The source reports SYNCING, then OFFLINE; the next beat makes it ACTIVE.
        let mut brief = c.group("g").unwrap().storages["10.0.0.2"].brief();
        brief.status = SYNCING;
        c.report_status("g", &brief).unwrap();
        assert_eq!(status_of(&c, "g", "10.0.0.2"), SYNCING);
        c.disconnect(&second);
        assert_eq!(
            status_of(&c, "g", "10.0.0.2"),
            SYNCING,
            "kept on disconnect"
        );
        brief.status = OFFLINE;
        c.report_status("g", &brief).unwrap();
        let (second, reply) = c.join(&join_req("g", 1, false), "10.0.0.2", 30).unwrap();
        assert_eq!(reply.sync_src_id, "10.0.0.1");
        c.beat(&second, None, 31).unwrap();
        assert_eq!(status_of(&c, "g", "10.0.0.2"), ACTIVE);
        // A late or repeated report from the source does not knock it back.
        for late in [SYNCING, OFFLINE] {
            brief.status = late;
            c.report_status("g", &brief).unwrap();
            assert_eq!(
                status_of(&c, "g", "10.0.0.2"),
                ACTIVE,
                "after a late report"
            );
        }
        // A third storage while the only other peers are offline: no source yet.
        c.disconnect(&first);
        c.disconnect(&second);
        let (third, _) = c.join(&join_req("g", 1, true), "10.0.0.3", 40).unwrap();
        assert_eq!(
            c.sync_dest_req(&third, 40).unwrap_err().errno,
            errno::ENOENT
        );
    }

    #[test]
    fn member_versions_drive_beat_flags() {
        let mut c = Cluster::new(Placement::default());
        let a = active(&mut c, "g", "10.0.0.1", 1, 5000);
        let mut told = None;
        let list = c.members_if_changed(&a, &mut told).unwrap();
        assert_eq!(list.len(), 1);
        assert!(c.members_if_changed(&a, &mut told).is_none());
        c.join(&join_req("g", 1, false), "10.0.0.2", 100).unwrap();
        let list = c.members_if_changed(&a, &mut told).unwrap();
        assert_eq!(
            list.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
            ["10.0.0.1", "10.0.0.2"]
        );
        c.beat(&a, None, 101).unwrap(); // already ACTIVE: no change
        assert!(c.members_if_changed(&a, &mut told).is_none());
    }

    #[test]
    fn deleting_needs_inactive_storages() {
        let mut c = Cluster::new(Placement::default());
        let a = active(&mut c, "g", "10.0.0.1", 1, 5000);
        assert_eq!(
            c.delete_storage("g", "10.0.0.1").unwrap_err().errno,
            errno::EBUSY
        );
        assert_eq!(c.delete_group("g").unwrap_err().errno, errno::EBUSY);
        assert_eq!(
            c.delete_storage("g", "10.9.9.9").unwrap_err().errno,
            errno::ENOENT
        );
        assert_eq!(
            c.delete_storage("x", "10.0.0.1").unwrap_err().errno,
            errno::ENOENT
        );
        c.disconnect(&a);
        c.delete_storage("g", "10.0.0.1").unwrap();
        assert!(c.group("g").unwrap().storages.is_empty());
        c.delete_group("g").unwrap();
        assert!(c.group("g").is_err());
        // A deleted storage's connection closing later is harmless.
        c.disconnect(&a);
    }

    #[test]
    fn disk_usage_must_match_path_count() {
        let mut c = Cluster::new(Placement::default());
        let (who, _) = c.join(&join_req("g", 2, false), "10.0.0.1", 1).unwrap();
        let bad = DiskUsage {
            paths: vec![(10, 5)],
        };
        assert_eq!(
            c.disk_usage(&who, &bad, 1).unwrap_err().errno,
            errno::EINVAL
        );
        let good = DiskUsage {
            paths: vec![(10, 5), (20, 7)],
        };
        c.disk_usage(&who, &good, 1).unwrap();
        let s = &c.group("g").unwrap().storages["10.0.0.1"];
        assert_eq!((s.total_mb, s.free_mb), (30, 12));
    }

    #[test]
    fn merging_a_peers_view_keeps_our_own() {
        let mut peer = Cluster::new(Placement::default());
        let a = active(&mut peer, "g", "10.0.0.1", 1, 5000);
        active(&mut peer, "g", "10.0.0.2", 1, 5000);
        active(&mut peer, "h", "10.0.0.3", 1, 5000);
        peer.sync_report(
            &a,
            &SyncReport {
                entries: vec![("10.0.0.2".into(), 77)],
            },
            100,
        )
        .unwrap();
        let mut c = Cluster::new(Placement::default());
        active(&mut c, "g", "10.0.0.1", 1, 6000);
        let added = c.merge_missing(peer.groups().cloned().collect());
        assert_eq!(added, 2);
        assert_eq!(status_of(&c, "g", "10.0.0.1"), ACTIVE, "ours kept");
        assert_eq!(status_of(&c, "g", "10.0.0.2"), OFFLINE);
        assert_eq!(status_of(&c, "h", "10.0.0.3"), OFFLINE);
        let g = c.group("g").unwrap();
        assert_eq!(g.storages["10.0.0.1"].free_mb, 6000);
        assert_eq!(g.storages["10.0.0.1"].synced_from["10.0.0.2"].ts, 77);
    }

    #[test]
    fn restore_takes_storages_offline() {
        let mut c = Cluster::new(Placement::default());
        active(&mut c, "g", "10.0.0.1", 1, 5000);
        let (who, _) = c.join(&join_req("g", 1, true), "10.0.0.2", 1).unwrap();
        c.sync_dest_req(&who, 1).unwrap();
        let groups: Vec<Group> = c.groups().cloned().collect();
        let r = Cluster::restore(Placement::default(), groups);
        assert_eq!(status_of(&r, "g", "10.0.0.1"), OFFLINE);
        assert_eq!(status_of(&r, "g", "10.0.0.2"), WAIT_SYNC);
    }
}
