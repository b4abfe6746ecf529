//! Where an upload goes (§7: group, storage, store path, reserved space) and which
//! storages may serve a read or an update of an existing file (§6.4).

use fdfs_proto::config::SpaceLimit;
use fdfs_proto::errno;
use fdfs_proto::fileid::{FileKind, RemoteName, Source};
use fdfs_proto::msg::ServerAddr;

use super::{Cluster, Group, PathSpace, Storage, Synced};
use crate::config::{DownloadServer, StoreLookup, StorePath, StoreServer};
use crate::refusal::Refusal;

/// What a store query (101/104/106/107) answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreChoice {
    pub group: String,
    /// One server (ONE queries) or every writable server in id order (ALL queries).
    pub servers: Vec<ServerAddr>,
    pub store_path_index: u8,
}

/// The three file queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchKind {
    /// 102: one server to download from.
    One,
    /// 105: every server that has the file.
    All,
    /// 103: the server to change the file on.
    Update,
}

const MB: u64 = 1024 * 1024;

/// MB kept free for a storage or group of `total_mb`.
pub(crate) fn reserved_mb(limit: &SpaceLimit, total_mb: i64) -> i64 {
    limit.reserved_mb(total_mb.max(0) as u64) as i64
}

/// A group's space is that of its writable storage with the least free space.
pub(crate) fn group_space(g: &Group) -> Option<PathSpace> {
    g.storages
        .values()
        .filter(|s| s.is_writable())
        .min_by_key(|s| s.free_mb)
        .map(|s| PathSpace {
            total_mb: s.total_mb,
            free_mb: s.free_mb,
        })
}

/// Index of the path with the most free space (the first one on ties).
pub(crate) fn most_free_path(paths: &[PathSpace]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, p) in paths.iter().enumerate() {
        if best.is_none_or(|b| p.free_mb > paths[b].free_mb) {
            best = Some(i);
        }
    }
    best
}

fn addr(s: &Storage) -> ServerAddr {
    ServerAddr {
        ip: s.ip.clone(),
        port: s.port,
    }
}

impl Cluster {
    /// Why `g` cannot take an upload, if it cannot.
    fn upload_refusal(&self, g: &Group) -> Option<Refusal> {
        let Some(space) = group_space(g) else {
            return Some(Refusal::not_found(format!(
                "group {} has no active storage",
                g.name
            )));
        };
        let reserved = reserved_mb(&self.placement.reserved_storage_space, space.total_mb);
        (space.free_mb <= reserved).then(|| {
            Refusal::new(
                errno::ENOSPC,
                format!(
                    "group {}: {} MB free, {reserved} MB reserved",
                    g.name, space.free_mb
                ),
            )
        })
    }

    fn round_robin_group(&mut self) -> Result<String, Refusal> {
        let names: Vec<String> = self.groups.keys().cloned().collect();
        if names.is_empty() {
            return Err(Refusal::not_found("no groups"));
        }
        let mut refusal: Option<Refusal> = None;
        for k in 0..names.len() {
            let i = (self.next_group + k) % names.len();
            match self.upload_refusal(&self.groups[&names[i]]) {
                None => {
                    self.next_group = (i + 1) % names.len();
                    return Ok(names[i].clone());
                }
                // A full group says more than an empty one.
                Some(r)
                    if refusal
                        .as_ref()
                        .is_none_or(|old| old.errno != errno::ENOSPC) =>
                {
                    refusal = Some(r)
                }
                Some(_) => {}
            }
        }
        Err(refusal.expect("at least one group"))
    }

    fn most_free_group(&self) -> Result<String, Refusal> {
        let mut best: Option<(&Group, i64)> = None;
        for g in self.groups.values() {
            if let Some(space) = group_space(g) {
                if best.is_none_or(|(_, free)| space.free_mb > free) {
                    best = Some((g, space.free_mb));
                }
            }
        }
        let (g, _) = best.ok_or_else(|| Refusal::not_found("no group has an active storage"))?;
        match self.upload_refusal(g) {
            Some(r) => Err(r),
            None => Ok(g.name.clone()),
        }
    }

    /// 101/104/106/107: picks the group (`requested` or per store_lookup), the storage
    /// (per store_server; all writable ones when `all`) and the store path.
    pub fn select_store(
        &mut self,
        requested: Option<&str>,
        all: bool,
    ) -> Result<StoreChoice, Refusal> {
        let fixed = match (&self.placement.store_lookup, requested) {
            (_, Some(name)) => Some(name.to_string()),
            (StoreLookup::Fixed(name), None) => Some(name.clone()),
            _ => None,
        };
        let group_name = match fixed {
            Some(name) => {
                if let Some(r) = self.upload_refusal(self.group(&name)?) {
                    return Err(r);
                }
                name
            }
            None if self.placement.store_lookup == StoreLookup::LoadBalance => {
                self.most_free_group()?
            }
            None => self.round_robin_group()?,
        };
        let placement = self.placement.clone();
        let g = self.groups.get_mut(&group_name).expect("checked above");
        let chosen = if all {
            first_writable(g)
        } else {
            pick_writable(g, placement.store_server)
        }
        .ok_or_else(|| Refusal::not_found(format!("group {group_name} has no active storage")))?;
        let path_count = g.store_path_count;
        let s = g.storages.get_mut(&chosen).expect("picked from the group");
        let store_path_index = choose_path(s, path_count, &placement)?;
        let servers = if all {
            g.storages
                .values()
                .filter(|s| s.is_writable())
                .map(addr)
                .collect()
        } else {
            vec![addr(&g.storages[&chosen])]
        };
        Ok(StoreChoice {
            group: group_name,
            servers,
            store_path_index,
        })
    }

    /// 102/103/105: the storages that may serve `filename` of `group`.
    pub fn select_fetch(
        &mut self,
        group: &str,
        filename: &str,
        kind: FetchKind,
        now: i64,
    ) -> Result<Vec<ServerAddr>, Refusal> {
        let name = RemoteName::parse(filename)?;
        let info = name.info()?;
        let g = self.group(group)?;
        let source: Option<&Storage> = match info.source {
            Source::Ip(ip) => g.find_by_ip(&ip.to_string(), Some(g.storage_port)),
            Source::ServerId(id) => g.storages.get(&id.to_string()),
        };
        let no_server =
            || Refusal::not_found(format!("no storage of {group} can serve {filename}"));

        if kind == FetchKind::Update {
            if let Some(src) = source.filter(|s| s.is_writable()) {
                return Ok(vec![addr(src)]);
            }
            if info.kind == FileKind::Appender && source.is_some() {
                // An appender is changed on its source only. Another member's copy may
                // lack the source's latest changes, and the source, once back, would
                // overtake what the other member accepted: the replicas would differ
                // for good. Upstream sends the change elsewhere; here it waits for the
                // source.
                return Err(Refusal::not_found(format!(
                    "{filename}: its source storage is not active; appender changes wait for it"
                )));
            }
            let store_server = self.placement.store_server;
            let g = self.groups.get_mut(group).expect("checked above");
            let id = pick_writable(g, store_server).ok_or_else(no_server)?;
            return Ok(vec![addr(&g.storages[&id])]);
        }

        let readable_source = source.filter(|s| s.is_readable());
        if matches!(info.kind, FileKind::Appender | FileKind::Slave) {
            // Appender and slave files are never guaranteed to be synced elsewhere.
            return readable_source.map(|s| vec![addr(s)]).ok_or_else(no_server);
        }
        if kind == FetchKind::One && self.placement.download_server == DownloadServer::SourceFirst {
            if let Some(src) = readable_source {
                return Ok(vec![addr(src)]);
            }
        }

        let readable: Vec<&Storage> = g.storages.values().filter(|s| s.is_readable()).collect();
        if readable.is_empty() {
            return Err(no_server());
        }
        let timestamp = info.timestamp as i64;
        let max_delay = self.placement.sync_file_max_delay;
        let max_time = self.placement.sync_file_max_time;
        // A storage other than the source may serve the file once it has it. Times are
        // only compared with times of the same clock, so storages and trackers whose
        // clocks differ change nothing: the file's timestamp (from its name), the sync
        // progress a peer reports for the source and `source_clock` are all stamped by
        // the source storage; how long that progress has stood still is measured by
        // this tracker. A source that never told its clock (no heartbeat clock, upload or
        // sync progress known) is taken to share ours, as upstream does.
        //
        // Upstream (`tracker_mem.c`) lets a storage serve the file when
        // `last_synced_timestamp > file_timestamp`, or when `last_synced_timestamp + 1 >=
        // file_timestamp && now - file_timestamp > storage_sync_file_max_time`: one
        // progress value over all sources, a second of slack, and the tracker's clock
        // compared with the source's. Here the progress is the one for the file's own
        // source, there is no slack (a peer that reached the second before the file's has
        // not necessarily got it), and the wait is how long that progress has not moved,
        // by this tracker's clock (`may_serve`).
        // Scanned for only when a storage other than the source is considered.
        let clock = std::cell::OnceCell::new();
        let source_clock = |src: &Storage| {
            *clock.get_or_init(|| match g.source_clock(src) {
                0 => now,
                known => known,
            })
        };
        let eligible = |s: &Storage| match source {
            Some(src) if src.id == s.id => true,
            Some(src) => {
                // Everything the source stamped by then has reached its peers.
                timestamp < source_clock(src) - max_delay
                    || s.synced_from
                        .get(&src.id)
                        .is_some_and(|synced| may_serve(synced, timestamp, now, max_time))
            }
            // The source left the group: upstream's rules, with this tracker's clock.
            None => timestamp < now - max_delay || self.last_synced_timestamp(g, s) > timestamp,
        };
        let start = g.current_read_server % readable.len();
        let fallback = readable_source.unwrap_or(readable[start]);
        let chosen: Vec<ServerAddr> = match kind {
            FetchKind::All => {
                let all: Vec<ServerAddr> = readable
                    .iter()
                    .filter(|s| eligible(s))
                    .map(|s| addr(s))
                    .collect();
                if all.is_empty() {
                    vec![addr(fallback)]
                } else {
                    all
                }
            }
            _ => {
                let pick = (0..readable.len())
                    .map(|k| readable[(start + k) % readable.len()])
                    .find(|s| eligible(s))
                    .unwrap_or(fallback);
                vec![addr(pick)]
            }
        };
        let n = readable.len();
        if kind == FetchKind::One {
            self.groups
                .get_mut(group)
                .expect("checked above")
                .current_read_server = (start + 1) % n;
        }
        Ok(chosen)
    }
}

/// Whether a storage that received its source's changes as far as `synced` has the
/// file the source stamped `timestamp`: it received a change stamped after the file, or
/// it reached the file's second and nothing newer came for more than `max_time` seconds
/// (by this tracker's clock, `now`).
fn may_serve(synced: &Synced, timestamp: i64, now: i64, max_time: i64) -> bool {
    synced.ts > timestamp || (synced.ts >= timestamp && now - synced.since > max_time)
}

fn first_writable(g: &Group) -> Option<String> {
    g.storages
        .values()
        .find(|s| s.is_writable())
        .map(|s| s.id.clone())
}

/// The storage that takes the next upload, per `store_server`. With trunk files
/// (`FirstById`, as upstream forces it then) the group's trunk server goes first when
/// it takes uploads: it hands out trunk space to itself, without a round trip.
fn pick_writable(g: &mut Group, policy: StoreServer) -> Option<String> {
    let writable: Vec<&Storage> = g.storages.values().filter(|s| s.is_writable()).collect();
    if writable.is_empty() {
        return None;
    }
    if policy == StoreServer::FirstById {
        if let Some(t) = g.trunk.server.as_deref() {
            if let Some(s) = writable.iter().find(|s| s.id == t) {
                return Some(s.id.clone());
            }
        }
    }
    let chosen = match policy {
        StoreServer::RoundRobin => {
            let i = g.current_write_server % writable.len();
            let id = writable[i].id.clone();
            g.current_write_server = (i + 1) % writable.len();
            return Some(id);
        }
        StoreServer::FirstById => writable[0],
        StoreServer::ByPriority => writable.iter().copied().fold(writable[0], |best, s| {
            if s.upload_priority < best.upload_priority {
                s
            } else {
                best
            }
        }),
    };
    Some(chosen.id.clone())
}

/// The store path for the next upload on `s`, per `store_path`, skipping paths whose
/// free space is at or below their share of the reservation.
fn choose_path(
    s: &mut Storage,
    path_count: u32,
    placement: &crate::config::Placement,
) -> Result<u8, Refusal> {
    let count = path_count.max(1) as usize;
    if s.paths.len() != count {
        // No disk report yet: nothing to check against.
        let i = match placement.store_path {
            StorePath::RoundRobin => s.path_cursor % count,
            StorePath::LoadBalance => s.current_write_path % count,
        };
        s.path_cursor = (i + 1) % count;
        s.current_write_path = i;
        return Ok(i as u8);
    }
    let reserved = |p: &PathSpace| match placement.reserved_storage_space {
        SpaceLimit::Ratio(r) => (p.total_mb.max(0) as f64 * r) as i64,
        SpaceLimit::Bytes(b) => (b / MB) as i64 / count as i64,
    };
    let has_room = |i: usize| s.paths[i].free_mb > reserved(&s.paths[i]);
    let chosen = match placement.store_path {
        StorePath::RoundRobin => (0..count)
            .map(|k| (s.path_cursor + k) % count)
            .find(|&i| has_room(i)),
        StorePath::LoadBalance => {
            let candidates: Vec<PathSpace> = (0..count)
                .map(|i| {
                    if has_room(i) {
                        s.paths[i]
                    } else {
                        PathSpace {
                            total_mb: 0,
                            free_mb: i64::MIN,
                        }
                    }
                })
                .collect();
            most_free_path(&candidates).filter(|&i| has_room(i))
        }
    };
    let i = chosen.ok_or_else(|| {
        Refusal::new(
            errno::ENOSPC,
            format!("storage {}: no store path above its reserved space", s.id),
        )
    })?;
    s.path_cursor = (i + 1) % count;
    s.current_write_path = i;
    Ok(i as u8)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{active, join_req};
    use super::*;
    use crate::config::Placement;
    use fdfs_proto::fileid::{normal_size_field, remote_name, PackedName, SIZE_FLAG_APPENDER};
    use fdfs_proto::msg::{DiskUsage, StorageCounters, SyncReport};
    use std::net::Ipv4Addr;

    fn placement(f: impl FnOnce(&mut Placement)) -> Placement {
        let mut p = Placement {
            reserved_storage_space: SpaceLimit::Bytes(100 * MB),
            ..Placement::default()
        };
        f(&mut p);
        p
    }

    fn file_name(ip: &str, timestamp: u32, size_field: u64) -> String {
        let packed = PackedName {
            source: Source::Ip(ip.parse::<Ipv4Addr>().unwrap()),
            timestamp,
            size_field,
            crc32: 7,
        };
        remote_name(0, 0, 0, &format!("{}1234567", packed.encode()))
    }

    fn groups_of(c: &mut Cluster, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| c.select_store(None, false).unwrap().group)
            .collect()
    }

    #[test]
    fn store_lookup_policies() {
        let mut c = Cluster::new(placement(|_| {}));
        active(&mut c, "g1", "10.0.0.1", 1, 5000);
        active(&mut c, "g2", "10.0.0.2", 1, 9000);
        assert_eq!(groups_of(&mut c, 4), ["g1", "g2", "g1", "g2"]);

        let mut c = Cluster::new(placement(|p| p.store_lookup = StoreLookup::LoadBalance));
        active(&mut c, "g1", "10.0.0.1", 1, 5000);
        active(&mut c, "g2", "10.0.0.2", 1, 9000);
        assert_eq!(groups_of(&mut c, 2), ["g2", "g2"]);

        let mut c = Cluster::new(placement(|p| {
            p.store_lookup = StoreLookup::Fixed("g1".into())
        }));
        active(&mut c, "g1", "10.0.0.1", 1, 5000);
        active(&mut c, "g2", "10.0.0.2", 1, 9000);
        assert_eq!(groups_of(&mut c, 2), ["g1", "g1"]);
        // An explicit group wins; an unknown one is ENOENT.
        assert_eq!(c.select_store(Some("g2"), false).unwrap().group, "g2");
        assert_eq!(
            c.select_store(Some("g9"), false).unwrap_err().errno,
            errno::ENOENT
        );
    }

    #[test]
    fn reserved_space_and_empty_clusters() {
        let mut c = Cluster::new(placement(|_| {}));
        assert_eq!(
            c.select_store(None, false).unwrap_err().errno,
            errno::ENOENT
        );
        // Joined but not active yet: no writable storage.
        c.join(&join_req("g1", 1, false), "10.0.0.9", 1).unwrap();
        assert_eq!(
            c.select_store(None, false).unwrap_err().errno,
            errno::ENOENT
        );
        active(&mut c, "g2", "10.0.0.1", 1, 50); // 50 MB free, 100 MB reserved
        assert_eq!(
            c.select_store(None, false).unwrap_err().errno,
            errno::ENOSPC
        );
        active(&mut c, "g3", "10.0.0.2", 1, 500);
        assert_eq!(groups_of(&mut c, 2), ["g3", "g3"]);

        // A ratio applies to the total.
        let mut c = Cluster::new(placement(|p| {
            p.reserved_storage_space = SpaceLimit::Ratio(0.2)
        }));
        active(&mut c, "g", "10.0.0.1", 1, 10_000); // of 100 000 MB: 10% free
        assert_eq!(
            c.select_store(None, false).unwrap_err().errno,
            errno::ENOSPC
        );
    }

    #[test]
    fn store_server_and_path_policies() {
        let mut c = Cluster::new(placement(|_| {}));
        active(&mut c, "g", "10.0.0.1", 2, 5000);
        active(&mut c, "g", "10.0.0.2", 2, 5000);
        let picks: Vec<(String, u8)> = (0..4)
            .map(|_| {
                let s = c.select_store(None, false).unwrap();
                (s.servers[0].ip.clone(), s.store_path_index)
            })
            .collect();
        assert_eq!(
            picks,
            [
                ("10.0.0.1".into(), 0),
                ("10.0.0.2".into(), 0),
                ("10.0.0.1".into(), 1),
                ("10.0.0.2".into(), 1)
            ]
        );
        let all = c.select_store(None, true).unwrap();
        assert_eq!(all.servers.len(), 2);

        let mut c = Cluster::new(placement(|p| {
            p.store_server = StoreServer::ByPriority;
            p.store_path = StorePath::LoadBalance;
        }));
        active(&mut c, "g", "10.0.0.1", 2, 5000);
        let mut req = join_req("g", 2, false);
        req.upload_priority = 1;
        let (who, _) = c.join(&req, "10.0.0.2", 100).unwrap();
        let usage = DiskUsage {
            paths: vec![(100_000, 3000), (100_000, 8000)],
        };
        c.disk_usage(&who, &usage, 100).unwrap();
        for _ in 0..2 {
            let s = c.select_store(None, false).unwrap();
            assert_eq!(
                (s.servers[0].ip.as_str(), s.store_path_index),
                ("10.0.0.2", 1)
            );
        }
        let mut c = Cluster::new(placement(|p| p.store_server = StoreServer::FirstById));
        let second = active(&mut c, "g", "10.0.0.2", 1, 5000);
        active(&mut c, "g", "10.0.0.1", 1, 5000);
        for _ in 0..2 {
            assert_eq!(
                c.select_store(None, false).unwrap().servers[0].ip,
                "10.0.0.1"
            );
        }
        // With trunk files the trunk server takes the uploads (no 27/28 round trips).
        c.groups.get_mut("g").unwrap().trunk.server = Some(second.id);
        for _ in 0..2 {
            assert_eq!(
                c.select_store(None, false).unwrap().servers[0].ip,
                "10.0.0.2"
            );
        }
    }

    #[test]
    fn reads_follow_sync_progress() {
        let mut c = Cluster::new(placement(|_| {}));
        active(&mut c, "g", "10.0.0.1", 1, 5000);
        let b = active(&mut c, "g", "10.0.0.2", 1, 5000);
        let now = 1_000_000;
        let fresh = file_name("10.0.0.1", (now - 10) as u32, normal_size_field(5, 0));
        // 10.0.0.2 has not received anything from 10.0.0.1: only the source qualifies.
        for _ in 0..3 {
            let one = c.select_fetch("g", &fresh, FetchKind::One, now).unwrap();
            assert_eq!(one[0].ip, "10.0.0.1");
        }
        assert_eq!(
            c.select_fetch("g", &fresh, FetchKind::All, now)
                .unwrap()
                .len(),
            1
        );
        // Once it reports having synced past the file's timestamp, both serve it.
        let report = SyncReport {
            entries: vec![("10.0.0.1".into(), (now - 5) as i32)],
        };
        c.sync_report(&b, &report, now).unwrap();
        let ips: Vec<String> = (0..2)
            .map(|_| {
                c.select_fetch("g", &fresh, FetchKind::One, now).unwrap()[0]
                    .ip
                    .clone()
            })
            .collect();
        assert!(ips.contains(&"10.0.0.1".to_string()) && ips.contains(&"10.0.0.2".to_string()));
        assert_eq!(
            c.select_fetch("g", &fresh, FetchKind::All, now)
                .unwrap()
                .len(),
            2
        );
        // Old files are everywhere.
        let old = file_name("10.0.0.1", (now - 100_000) as u32, normal_size_field(5, 0));
        assert_eq!(
            c.select_fetch("g", &old, FetchKind::All, now)
                .unwrap()
                .len(),
            2
        );
        // Appenders always go to the source; updates to the source.
        let appender = file_name(
            "10.0.0.2",
            (now - 100_000) as u32,
            SIZE_FLAG_APPENDER | (1 << 63),
        );
        for kind in [FetchKind::One, FetchKind::All, FetchKind::Update] {
            let got = c.select_fetch("g", &appender, kind, now).unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].ip, "10.0.0.2");
        }
    }

    #[test]
    fn reads_do_not_depend_on_clocks() {
        let mut c = Cluster::new(placement(|_| {}));
        let a = active(&mut c, "g", "10.0.0.1", 1, 5000);
        let b = active(&mut c, "g", "10.0.0.2", 1, 5000);
        let ips = |c: &mut Cluster, name: &str, now: i64| -> Vec<String> {
            let mut seen: Vec<String> = (0..4)
                .map(|_| {
                    c.select_fetch("g", name, FetchKind::One, now).unwrap()[0]
                        .ip
                        .clone()
                })
                .collect();
            seen.sort();
            seen.dedup();
            assert_eq!(
                c.select_fetch("g", name, FetchKind::All, now)
                    .unwrap()
                    .len(),
                seen.len()
            );
            seen
        };
        // The source's clock; the tracker's runs 400 s ahead of it.
        let src_now: i64 = 1_000_000;
        let now = src_now + 400;
        let counters = StorageCounters {
            last_heart_beat_time: src_now,
            ..StorageCounters::default()
        };
        c.beat(&a, Some(counters), now).unwrap();
        let fresh = file_name("10.0.0.1", src_now as u32, normal_size_field(5, 0));
        // 10.0.0.2 received a change stamped in the file's second: maybe not the file.
        let report = SyncReport {
            entries: vec![("10.0.0.1".into(), src_now as i32)],
        };
        c.sync_report(&b, &report, now).unwrap();
        assert_eq!(ips(&mut c, &fresh, now), ["10.0.0.1"]);
        assert_eq!(ips(&mut c, &fresh, now + 300), ["10.0.0.1"]);
        // Nothing newer came from the source for storage_sync_file_max_time (by the
        // tracker's clock): the file's second is complete there.
        assert_eq!(ips(&mut c, &fresh, now + 301), ["10.0.0.1", "10.0.0.2"]);
        // A report of the same progress does not restart that wait; a newer one serves.
        c.sync_report(&b, &report, now + 302).unwrap();
        assert_eq!(ips(&mut c, &fresh, now + 302), ["10.0.0.1", "10.0.0.2"]);
        let newer = file_name("10.0.0.1", (src_now + 1) as u32, normal_size_field(6, 0));
        assert_eq!(ips(&mut c, &newer, now + 302), ["10.0.0.1"]);

        // A tracker two days ahead does not take fresh files for old ones; the source's
        // own clock (its heartbeats) decides what is a day old.
        let far = src_now + 2 * 86_400;
        let other = file_name("10.0.0.1", (src_now + 5) as u32, normal_size_field(7, 0));
        assert_eq!(ips(&mut c, &other, far), ["10.0.0.1"]);
        let counters = StorageCounters {
            last_heart_beat_time: src_now + 5 + 86_401,
            ..StorageCounters::default()
        };
        c.beat(&a, Some(counters), far).unwrap();
        assert_eq!(ips(&mut c, &other, far), ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn may_serve_boundaries() {
        let (file, max_time, now) = (1000, 300, 5000);
        let at = |ts, since| Synced { ts, since };
        // A change stamped after the file came: at once.
        assert!(may_serve(&at(1001, now), file, now, max_time));
        // The file's own second: only once the progress stood still for more than
        // max_time by this tracker's clock.
        assert!(!may_serve(&at(1000, now - max_time), file, now, max_time));
        assert!(may_serve(
            &at(1000, now - max_time - 1),
            file,
            now,
            max_time
        ));
        // The second before the file's never suffices (upstream's `+ 1` slack would
        // accept it).
        assert!(!may_serve(&at(999, 0), file, now, max_time));
    }

    #[test]
    fn bad_names_unknown_groups_and_missing_sources() {
        let mut c = Cluster::new(placement(|_| {}));
        let a = active(&mut c, "g", "10.0.0.1", 1, 5000);
        let name = file_name("10.0.0.1", 5, normal_size_field(5, 0));
        assert_eq!(
            c.select_fetch("g", "M00/xx/00/whatever", FetchKind::One, 10)
                .unwrap_err()
                .errno,
            errno::EINVAL
        );
        assert_eq!(
            c.select_fetch("h", &name, FetchKind::One, 10)
                .unwrap_err()
                .errno,
            errno::ENOENT
        );
        let appender = file_name("10.0.0.1", 5, SIZE_FLAG_APPENDER | (1 << 63));
        c.disconnect(&a);
        assert_eq!(
            c.select_fetch("g", &appender, FetchKind::One, 10)
                .unwrap_err()
                .errno,
            errno::ENOENT
        );
        assert_eq!(
            c.select_fetch("g", &name, FetchKind::Update, 10)
                .unwrap_err()
                .errno,
            errno::ENOENT
        );
        // Update falls back to a writable storage when the source is gone, except for
        // appenders, which are changed on their source only.
        active(&mut c, "g", "10.0.0.2", 1, 5000);
        assert_eq!(
            c.select_fetch("g", &name, FetchKind::Update, 10).unwrap()[0].ip,
            "10.0.0.2"
        );
        assert_eq!(
            c.select_fetch("g", &appender, FetchKind::Update, 10)
                .unwrap_err()
                .errno,
            errno::ENOENT
        );
    }

    /// A cluster that names its storages by the ids of `table`.
    fn with_ids(table: &str, ids_in_filenames: bool, trusted: bool) -> Cluster {
        let ids = fdfs_proto::storage_ids::ServerIds::parse(table, |_| None).unwrap();
        let mut c = Cluster::new(placement(|p| {
            p.download_server = DownloadServer::SourceFirst;
        }));
        c.use_storage_ids(std::sync::Arc::new(ids), ids_in_filenames, trusted);
        c
    }

    fn join_as(
        c: &mut Cluster,
        ip: &str,
        port: u16,
        declared: &str,
    ) -> Result<super::super::Joined, Refusal> {
        let mut req = join_req("g", 1, false);
        req.storage_port = port;
        req.storage_id = declared.into();
        let (who, _) = c.join(&req, ip, 100)?;
        let usage = DiskUsage {
            paths: vec![(100_000, 5000)],
        };
        c.disk_usage(&who, &usage, 100).unwrap();
        Ok(who)
    }

    fn id_file_name(id: u32) -> String {
        let packed = PackedName {
            source: Source::ServerId(id),
            timestamp: 50,
            size_field: normal_size_field(5, 0),
            crc32: 7,
        };
        remote_name(0, 0, 0, &format!("{}1234567", packed.encode()))
    }

    #[test]
    fn storages_join_by_their_server_id() {
        let table = "100001 g 10.0.0.1\n100002 g 10.0.0.2:23001\n100003 h 10.0.0.3\n";
        let mut c = with_ids(table, false, false);
        let who = join_as(&mut c, "10.0.0.1", 23000, "").unwrap();
        assert_eq!(who.id, "100001");
        let listed = &c.group("g").unwrap().storages["100001"];
        assert_eq!((listed.ip.as_str(), listed.port), ("10.0.0.1", 23000));
        // Not in the table: refused (as upstream, ENOENT); the wrong port is not it.
        let err = join_as(&mut c, "10.0.0.9", 23000, "").unwrap_err();
        assert_eq!(err.errno, errno::ENOENT);
        assert_eq!(
            join_as(&mut c, "10.0.0.2", 23000, "").unwrap_err().errno,
            errno::ENOENT
        );
        // Another group's storage.
        assert_eq!(
            join_as(&mut c, "10.0.0.3", 23000, "").unwrap_err().errno,
            errno::ENOENT
        );
        // A declared id counts only when declared ids are trusted.
        let who = join_as(&mut c, "192.168.9.9", 23000, "100001");
        assert_eq!(who.unwrap_err().errno, errno::ENOENT);
        let mut trusting = with_ids(table, false, true);
        let who = join_as(&mut trusting, "192.168.9.9", 23001, "100002").unwrap();
        assert_eq!(who.id, "100002");
        assert_eq!(
            join_as(&mut trusting, "192.168.9.9", 23000, "100003")
                .unwrap_err()
                .errno,
            errno::EINVAL
        );
        assert_eq!(
            join_as(&mut trusting, "192.168.9.9", 23000, "100009")
                .unwrap_err()
                .errno,
            errno::ENOENT
        );
    }

    #[test]
    fn instances_on_one_host_are_routed_by_id() {
        let table = "100001 g 10.0.0.1:23001\n100002 g 10.0.0.1:23002\n";
        // File names by IP: the group must share one port.
        let mut c = with_ids(table, false, false);
        join_as(&mut c, "10.0.0.1", 23001, "").unwrap();
        let err = join_as(&mut c, "10.0.0.1", 23002, "").unwrap_err();
        assert_eq!(err.errno, errno::EINVAL);

        let mut c = with_ids(table, true, false);
        join_as(&mut c, "10.0.0.1", 23001, "").unwrap();
        join_as(&mut c, "10.0.0.1", 23002, "").unwrap();
        for (id, port) in [(100_001, 23001), (100_002, 23002)] {
            let to = c
                .select_fetch("g", &id_file_name(id), FetchKind::One, 100)
                .unwrap();
            assert_eq!((to[0].ip.as_str(), to[0].port), ("10.0.0.1", port));
            let to = c
                .select_fetch("g", &id_file_name(id), FetchKind::Update, 100)
                .unwrap();
            assert_eq!(to[0].port, port);
        }
        let all = c.select_store(Some("g"), true).unwrap();
        assert_eq!(all.servers.len(), 2);
    }

    #[test]
    fn ipv6_storages_need_ids_in_file_names() {
        let table = "1 g [::1]:23001\n2 g [::1]:23002\n";
        let mut c = with_ids(table, true, false);
        join_as(&mut c, "::1", 23001, "").unwrap();
        let mut by_ip_names = with_ids(table, false, false);
        let err = join_as(&mut by_ip_names, "::1", 23001, "").unwrap_err();
        assert_eq!(err.errno, errno::EINVAL);
        assert!(err.to_string().contains("id_type_in_filename"), "{err}");
        let mut no_ids = Cluster::new(placement(|_| {}));
        let err = join_as(&mut no_ids, "::1", 23001, "").unwrap_err();
        assert_eq!(err.errno, errno::EINVAL);
    }

    #[test]
    fn roles_decide_who_takes_uploads_and_reads() {
        let table = "1 g 10.0.0.1\n2 g 10.0.0.2 rw=none\n3 g 10.0.0.3 rw=read\n";
        let mut c = with_ids(table, true, false);
        for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            join_as(&mut c, ip, 23000, "").unwrap();
        }
        for _ in 0..6 {
            let s = c.select_store(None, false).unwrap();
            assert_eq!(s.servers[0].ip, "10.0.0.1");
        }
        let all = c.select_store(None, true).unwrap();
        assert_eq!(all.servers.len(), 1);
        // Reads: never the rw=none storage, even for the files it was the source of.
        let all = c
            .select_fetch("g", &id_file_name(2), FetchKind::All, 100)
            .unwrap_or_default();
        assert!(all.iter().all(|s| s.ip != "10.0.0.2"), "{all:?}");
        let stat = &c.group_stats(Some("g")).unwrap()[0];
        assert_eq!(
            (stat.readable_server_count, stat.writable_server_count),
            (2, 1)
        );
        // Promoted (the table changed, the trackers restarted): it serves.
        let promoted = "1 g 10.0.0.1\n2 g 10.0.0.2\n3 g 10.0.0.3 rw=read\n";
        let ids = fdfs_proto::storage_ids::ServerIds::parse(promoted, |_| None).unwrap();
        c.use_storage_ids(std::sync::Arc::new(ids), true, false);
        let picks: std::collections::BTreeSet<String> = (0..4)
            .map(|_| c.select_store(None, false).unwrap().servers[0].ip.clone())
            .collect();
        assert!(picks.contains("10.0.0.2"), "{picks:?}");
    }

    #[test]
    fn storages_saved_by_ip_take_their_ids() {
        let mut c = Cluster::new(placement(|_| {}));
        active(&mut c, "g", "10.0.0.1", 1, 5000);
        active(&mut c, "g", "10.0.0.2", 1, 5000);
        let report = SyncReport {
            entries: vec![("10.0.0.1".into(), 70)],
        };
        let who2 = super::super::Joined {
            group: "g".into(),
            id: "10.0.0.2".into(),
            session: c.group("g").unwrap().storages["10.0.0.2"].session,
        };
        c.sync_report(&who2, &report, 100).unwrap();
        let ids = fdfs_proto::storage_ids::ServerIds::parse(
            "100001 g 10.0.0.1\n100002 g 10.0.0.2\n",
            |_| None,
        )
        .unwrap();
        c.use_storage_ids(std::sync::Arc::new(ids), false, false);
        let g = c.group("g").unwrap();
        let keys: Vec<&String> = g.storages.keys().collect();
        assert_eq!(keys, ["100001", "100002"]);
        let s2 = &g.storages["100002"];
        assert_eq!(s2.id, "100002");
        assert_eq!(s2.synced_from["100001"].ts, 70);
    }
}
