//! `fdfs_monitor`'s own modes: a snapshot of the cluster ([`ClusterReport`]) built from
//! the trackers' replies, printed as JSON (`--json`, its field names are the stable
//! keys the README documents) or as a one-screen summary ([`summary`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use fdfs_proto::msg::{GroupStat, StorageStat, COUNTER_NAMES};
use fdfs_proto::status;
use serde::{Deserialize, Serialize};

use crate::format::{delay_text, mb_to_human, rw_caption, sync_lag, SyncLag};

/// A storage with less free space than this share of its total (percent) is a problem.
pub const LOW_SPACE_PERCENT: i64 = 10;
/// A storage this many seconds or more behind its peers' newest upload is a problem.
pub const SYNC_DELAY_WARN_SECS: i64 = 300;

/// Everything `fdfs_monitor --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterReport {
    /// Unix time the snapshot was taken.
    pub time: i64,
    /// The tracker that answered the listing, `ip:port`.
    pub tracker_server: String,
    /// The leader tracker (`ip:port`) as the queried tracker names it (95 GET_LEADER),
    /// else as the first other reachable tracker names it; `null` while none leads.
    pub leader: Option<String>,
    /// Every tracker of client.conf, in its order.
    pub trackers: Vec<TrackerReport>,
    pub groups: Vec<GroupReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerReport {
    /// `ip:port` as client.conf gives it.
    pub address: String,
    /// It answered (a connection and a reply to 95).
    pub reachable: bool,
    /// It is the [`ClusterReport::leader`].
    pub is_leader: bool,
    /// The tracker the listing came from.
    pub queried: bool,
    /// The leader this tracker names; `null` when it names none or did not answer.
    pub leader_seen: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReport {
    pub name: String,
    pub total_mb: i64,
    pub free_mb: i64,
    pub reserved_mb: i64,
    /// `free_mb - reserved_mb`, at least 0.
    pub available_mb: i64,
    pub trunk_free_mb: i64,
    pub storage_count: i64,
    /// Storages of the group listed ACTIVE.
    pub active_count: i64,
    pub readable_server_count: i64,
    pub writable_server_count: i64,
    pub storage_port: i64,
    pub store_path_count: i64,
    pub subdir_count_per_path: i64,
    pub current_write_server: i64,
    /// -1 when the group uses no trunk files.
    pub current_trunk_file_id: i64,
    /// Id of the storage that is the group's trunk server, `null` when none is.
    pub trunk_server: Option<String>,
    pub storages: Vec<StorageReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageReport {
    pub id: String,
    pub ip: String,
    pub port: i64,
    /// Upstream's name of the status: `ACTIVE`, `ONLINE`, `OFFLINE`, `WAIT_SYNC`, ...
    pub status: String,
    pub status_code: u8,
    /// 6 both, 4 read only, 2 write only, 0 none.
    pub rw_mode: u8,
    /// As the `list` output words it: `both (normal)`, `readonly`, ...
    pub rw_mode_name: String,
    pub version: String,
    /// Unix times; 0 when never.
    pub join_time: i64,
    pub up_time: i64,
    pub total_mb: i64,
    pub free_mb: i64,
    pub reserved_mb: i64,
    /// `free_mb - reserved_mb`, at least 0.
    pub available_mb: i64,
    pub upload_priority: i64,
    pub store_path_count: i64,
    pub subdir_count_per_path: i64,
    pub current_write_path: i64,
    /// `source storage id` of the list output.
    pub sync_src_id: String,
    pub is_trunk_server: bool,
    pub connections: Connections,
    /// The 38 counters under their protocol names (`total_upload_count`,
    /// `success_upload_count`, ..., `success_file_write_count`).
    pub counters: BTreeMap<String, i64>,
    pub last_heart_beat_time: i64,
    pub last_source_update: i64,
    pub last_sync_update: i64,
    pub last_synced_timestamp: i64,
    /// Seconds behind the newest upload on the other storages of the group; `null`
    /// when there is nothing to sync or it never synced (see `never_synced`).
    pub sync_delay: Option<i64>,
    /// Peers have had uploads, and this storage has synced none of them.
    pub never_synced: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connections {
    pub alloc: u32,
    pub current: u32,
    pub max: u32,
}

/// What is wrong with a storage, worst first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// Not ACTIVE: the status.
    Status(String),
    /// Free space under [`LOW_SPACE_PERCENT`]: the percentage free.
    LowSpace(i64),
    /// Has synced nothing its peers got.
    NeverSynced,
    /// [`SYNC_DELAY_WARN_SECS`] or more behind: the seconds.
    SyncDelay(i64),
}

impl Problem {
    pub fn text(&self) -> String {
        match self {
            Problem::Status(s) => s.clone(),
            Problem::LowSpace(p) => format!("low space ({p}% free)"),
            Problem::NeverSynced => "never synced".into(),
            Problem::SyncDelay(d) => format!("sync {} behind", delay_text(*d)),
        }
    }
}

impl StorageReport {
    pub fn from_stat(s: &StorageStat, group: &[StorageStat]) -> Self {
        let c = &s.counters;
        let (sync_delay, never_synced) = match sync_lag(s, group) {
            SyncLag::Nothing => (None, false),
            SyncLag::Never => (None, true),
            SyncLag::Behind(d) => (Some(d), false),
        };
        StorageReport {
            id: s.id.clone(),
            ip: s.ip.clone(),
            port: s.storage_port,
            status: status::name(s.status).to_string(),
            status_code: s.status,
            rw_mode: s.rw_mode,
            rw_mode_name: rw_caption(s.rw_mode).to_string(),
            version: s.version.clone(),
            join_time: s.join_time,
            up_time: s.up_time,
            total_mb: s.total_mb,
            free_mb: s.free_mb,
            reserved_mb: s.reserved_mb,
            available_mb: (s.free_mb - s.reserved_mb).max(0),
            upload_priority: s.upload_priority,
            store_path_count: s.store_path_count,
            subdir_count_per_path: s.subdir_count_per_path,
            current_write_path: s.current_write_path,
            sync_src_id: s.sync_src_id.clone(),
            is_trunk_server: s.is_trunk_server,
            connections: Connections {
                alloc: c.conn_alloc,
                current: c.conn_current,
                max: c.conn_max,
            },
            counters: COUNTER_NAMES
                .iter()
                .zip(c.counters.iter())
                .map(|(name, v)| (name.to_string(), *v))
                .collect(),
            last_heart_beat_time: c.last_heart_beat_time,
            last_source_update: c.last_source_update,
            last_sync_update: c.last_sync_update,
            last_synced_timestamp: c.last_synced_timestamp,
            sync_delay,
            never_synced,
        }
    }

    /// `ip:port`, the IP in brackets when it is IPv6.
    pub fn host(&self) -> String {
        if self.ip.contains(':') {
            format!("[{}]:{}", self.ip, self.port)
        } else {
            format!("{}:{}", self.ip, self.port)
        }
    }

    pub fn counter(&self, name: &str) -> i64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// What is wrong with it, worst first; empty when nothing is.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.status_code != status::ACTIVE {
            out.push(Problem::Status(self.status.clone()));
        }
        if self.total_mb > 0 && self.free_mb * 100 < self.total_mb * LOW_SPACE_PERCENT {
            out.push(Problem::LowSpace(self.free_mb * 100 / self.total_mb));
        }
        if self.never_synced {
            out.push(Problem::NeverSynced);
        }
        if let Some(d) = self.sync_delay.filter(|&d| d >= SYNC_DELAY_WARN_SECS) {
            out.push(Problem::SyncDelay(d));
        }
        out
    }
}

impl GroupReport {
    pub fn from_stats(g: &GroupStat, storages: &[StorageStat]) -> Self {
        GroupReport {
            name: g.group.clone(),
            total_mb: g.total_mb,
            free_mb: g.free_mb,
            reserved_mb: g.reserved_mb,
            available_mb: (g.free_mb - g.reserved_mb).max(0),
            trunk_free_mb: g.trunk_free_mb,
            storage_count: g.storage_count,
            active_count: storages
                .iter()
                .filter(|s| s.status == status::ACTIVE)
                .count() as i64,
            readable_server_count: g.readable_server_count,
            writable_server_count: g.writable_server_count,
            storage_port: g.storage_port,
            store_path_count: g.store_path_count,
            subdir_count_per_path: g.subdir_count_per_path,
            current_write_server: g.current_write_server,
            current_trunk_file_id: g.current_trunk_file_id,
            trunk_server: storages
                .iter()
                .find(|s| s.is_trunk_server)
                .map(|s| s.id.clone()),
            storages: storages
                .iter()
                .map(|s| StorageReport::from_stat(s, storages))
                .collect(),
        }
    }
}

/// Whether two `ip:port` texts name the same tracker (`127.0.0.1:22122` and
/// `[::1]:22122` forms; text equality when either does not parse).
pub fn same_tracker(a: &str, b: &str) -> bool {
    match (a.parse::<SocketAddr>(), b.parse::<SocketAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

impl ClusterReport {
    /// Marks the leader among `trackers`; `leader` is the queried tracker's answer,
    /// or the first answer of another when it has none.
    pub fn new(
        time: i64,
        tracker_server: String,
        mut trackers: Vec<TrackerReport>,
        groups: Vec<GroupReport>,
    ) -> Self {
        let leader = trackers
            .iter()
            .find(|t| t.queried)
            .and_then(|t| t.leader_seen.clone())
            .or_else(|| trackers.iter().find_map(|t| t.leader_seen.clone()));
        for t in &mut trackers {
            t.is_leader = leader
                .as_deref()
                .is_some_and(|l| same_tracker(l, &t.address));
        }
        ClusterReport {
            time,
            tracker_server,
            leader,
            trackers,
            groups,
        }
    }

    pub fn to_json(&self) -> String {
        // Plain data with string keys: serializing cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// "924 MB of 2.0 GB free (45%)".
fn space_text(free_mb: i64, total_mb: i64) -> String {
    let pct = if total_mb > 0 {
        format!(" ({}%)", free_mb.max(0) * 100 / total_mb)
    } else {
        String::new()
    };
    format!(
        "{} of {} free{pct}",
        mb_to_human(free_mb.max(0)),
        mb_to_human(total_mb)
    )
}

/// The one-screen summary: the trackers with the leader marked `*`, a line per group,
/// then a line per storage, those with problems first, marked `!`.
pub fn summary(r: &ClusterReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "tracker server is {}", r.tracker_server);
    let _ = writeln!(
        o,
        "leader: {}",
        r.leader.as_deref().unwrap_or("none (no tracker leads)")
    );
    let reachable = r.trackers.iter().filter(|t| t.reachable).count();
    let _ = writeln!(
        o,
        "\ntrackers: {}, reachable: {reachable}",
        r.trackers.len()
    );
    let width = r
        .trackers
        .iter()
        .map(|t| t.address.len())
        .max()
        .unwrap_or(0);
    for t in &r.trackers {
        let mut state = if !t.reachable {
            "unreachable".to_string()
        } else if t.is_leader {
            "leader".to_string()
        } else {
            "follower".to_string()
        };
        if t.reachable && t.leader_seen != r.leader {
            let seen = t.leader_seen.as_deref().unwrap_or("none");
            let _ = write!(state, ", names {seen} as leader");
        }
        if t.queried {
            state.push_str(", queried");
        }
        let mark = if t.is_leader { '*' } else { ' ' };
        let _ = writeln!(o, "{mark} {:width$}  {state}", t.address);
    }

    let _ = writeln!(o, "\ngroups: {}", r.groups.len());
    for g in &r.groups {
        let trunk = match &g.trunk_server {
            Some(id) => {
                let host = g
                    .storages
                    .iter()
                    .find(|s| &s.id == id)
                    .map(|s| s.host())
                    .unwrap_or_default();
                format!("{id} ({host})")
            }
            None => "none".into(),
        };
        let _ = writeln!(
            o,
            "  {}: storages {}, active {}; {}; trunk server {trunk}",
            g.name,
            g.storage_count,
            g.active_count,
            space_text(g.free_mb, g.total_mb)
        );
    }

    // (problems, group, storage) rows: problem rows first, worst first, then the rest in
    // listing order.
    let mut rows: Vec<(Vec<Problem>, &GroupReport, &StorageReport)> = r
        .groups
        .iter()
        .flat_map(|g| g.storages.iter().map(move |s| (s.problems(), g, s)))
        .collect();
    rows.sort_by(|a, b| match (a.0.first(), b.0.first()) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let problems = rows.iter().filter(|r| !r.0.is_empty()).count();
    let _ = writeln!(o, "\nstorages: {}, with problems: {problems}", rows.len());
    let header = [
        "GROUP",
        "ID",
        "HOST",
        "STATUS",
        "SPACE",
        "UPLOADS",
        "DOWNLOADS",
        "SYNC LAG",
        "PROBLEMS",
    ];
    let mut table: Vec<[String; 9]> = vec![header.map(String::from)];
    for (problems, g, s) in &rows {
        let counts = |total: &str, ok: &str| {
            let (t, k) = (s.counter(total), s.counter(ok));
            if t > k {
                format!("{k} ({} failed)", t - k)
            } else {
                k.to_string()
            }
        };
        let lag = match (s.sync_delay, s.never_synced) {
            (_, true) => "never".to_string(),
            (Some(d), _) => delay_text(d),
            (None, _) => "-".to_string(),
        };
        let problem_text = problems
            .iter()
            .map(Problem::text)
            .collect::<Vec<_>>()
            .join(", ");
        table.push([
            g.name.clone(),
            s.id.clone(),
            s.host(),
            s.status.clone(),
            space_text(s.free_mb, s.total_mb),
            counts("total_upload_count", "success_upload_count"),
            counts("total_download_count", "success_download_count"),
            lag,
            problem_text,
        ]);
    }
    let mut widths = [0usize; 9];
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for (i, row) in table.iter().enumerate() {
        let mark = if i > 0 && !rows[i - 1].0.is_empty() {
            '!'
        } else {
            ' '
        };
        let mut line = format!("{mark} ");
        for (k, (cell, w)) in row.iter().zip(widths.iter()).enumerate() {
            if k + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:w$}  ");
            }
        }
        let _ = writeln!(o, "{}", line.trim_end());
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdfs_proto::msg::counter;

    fn storage(id: &str, st: u8, total: i64, free: i64) -> StorageStat {
        StorageStat {
            status: st,
            rw_mode: 6,
            id: id.into(),
            ip: id.into(),
            version: "6.16.1".into(),
            join_time: 1_795_475_304,
            up_time: 1_795_475_304,
            storage_port: 23000,
            total_mb: total,
            free_mb: free,
            store_path_count: 1,
            subdir_count_per_path: 256,
            ..Default::default()
        }
    }

    fn group(name: &str, storages: &[StorageStat]) -> GroupStat {
        GroupStat {
            group: name.into(),
            total_mb: storages.iter().map(|s| s.total_mb).sum(),
            free_mb: storages.iter().map(|s| s.free_mb).sum(),
            storage_count: storages.len() as i64,
            storage_port: 23000,
            store_path_count: 1,
            subdir_count_per_path: 256,
            current_trunk_file_id: -1,
            ..Default::default()
        }
    }

    /// Two trackers (the second leads), group1 with an ACTIVE storage and an OFFLINE
    /// one, group2 with one storage low on space and one far behind.
    fn known_cluster() -> ClusterReport {
        let mut a = storage("127.0.0.61", status::ACTIVE, 2048, 1024);
        a.counters.counters[counter::TOTAL_UPLOAD] = 7;
        a.counters.counters[counter::success(counter::TOTAL_UPLOAD)] = 5;
        a.counters.counters[counter::TOTAL_DOWNLOAD] = 3;
        a.counters.counters[counter::success(counter::TOTAL_DOWNLOAD)] = 3;
        a.counters.last_source_update = 1_795_475_000;
        a.is_trunk_server = true;
        let mut b = storage("127.0.0.62", status::OFFLINE, 2048, 1500);
        b.counters.last_synced_timestamp = 1_795_475_000;
        let g1 = [a, b];
        let c = storage("127.0.0.71", status::ACTIVE, 10_240, 512);
        let mut d = storage("127.0.0.72", status::ACTIVE, 10_240, 9000);
        let mut c = c;
        c.counters.last_source_update = 1_795_475_304;
        c.counters.last_synced_timestamp = 1_795_475_304;
        d.counters.last_synced_timestamp = 1_795_475_304 - 3600;
        let g2 = [c, d];
        let trackers = vec![
            TrackerReport {
                address: "127.0.0.5:22122".into(),
                reachable: true,
                is_leader: false,
                queried: true,
                leader_seen: Some("127.0.0.6:22122".into()),
            },
            TrackerReport {
                address: "127.0.0.6:22122".into(),
                reachable: true,
                is_leader: false,
                queried: false,
                leader_seen: Some("127.0.0.6:22122".into()),
            },
            TrackerReport {
                address: "127.0.0.7:22122".into(),
                reachable: false,
                is_leader: false,
                queried: false,
                leader_seen: None,
            },
        ];
        ClusterReport::new(
            1_795_475_400,
            "127.0.0.5:22122".into(),
            trackers,
            vec![
                GroupReport::from_stats(&group("group1", &g1), &g1),
                GroupReport::from_stats(&group("group2", &g2), &g2),
            ],
        )
    }

    #[test]
    fn summary_of_a_known_cluster() {
        let text = summary(&known_cluster());
        let want = "\
tracker server is 127.0.0.5:22122
leader: 127.0.0.6:22122

trackers: 3, reachable: 2
  127.0.0.5:22122  follower, queried
* 127.0.0.6:22122  leader
  127.0.0.7:22122  unreachable

groups: 2
  group1: storages 2, active 1; 2.5 GB of 4.0 GB free (61%); trunk server 127.0.0.61 (127.0.0.61:23000)
  group2: storages 2, active 2; 9.3 GB of 20 GB free (46%); trunk server none

storages: 4, with problems: 3
  GROUP   ID          HOST              STATUS   SPACE                        UPLOADS       DOWNLOADS  SYNC LAG     PROBLEMS
! group1  127.0.0.62  127.0.0.62:23000  OFFLINE  1.5 GB of 2.0 GB free (73%)  0             0          0s           OFFLINE
! group2  127.0.0.71  127.0.0.71:23000  ACTIVE   512 MB of 10 GB free (5%)    0             0          -            low space (5% free)
! group2  127.0.0.72  127.0.0.72:23000  ACTIVE   8.8 GB of 10 GB free (87%)   0             0          01h:00m:00s  sync 01h:00m:00s behind
  group1  127.0.0.61  127.0.0.61:23000  ACTIVE   1.0 GB of 2.0 GB free (50%)  5 (2 failed)  3          -
";
        assert_eq!(text, want, "\n{text}");
    }

    #[test]
    fn problems_worst_first() {
        let mut s = StorageReport::from_stat(&storage("x", status::WAIT_SYNC, 100, 5), &[]);
        s.never_synced = true;
        assert_eq!(
            s.problems(),
            vec![
                Problem::Status("WAIT_SYNC".into()),
                Problem::LowSpace(5),
                Problem::NeverSynced
            ]
        );
        // An unreported disk (total 0) is not low on space; a short lag is no problem.
        let mut s = StorageReport::from_stat(&storage("y", status::ACTIVE, 0, 0), &[]);
        s.sync_delay = Some(SYNC_DELAY_WARN_SECS - 1);
        assert!(s.problems().is_empty());
        s.sync_delay = Some(SYNC_DELAY_WARN_SECS);
        assert_eq!(s.problems(), vec![Problem::SyncDelay(SYNC_DELAY_WARN_SECS)]);
    }

    #[test]
    fn no_leader_and_disagreeing_trackers() {
        let mut r = known_cluster();
        r.trackers[0].leader_seen = None;
        r.trackers[1].leader_seen = None;
        let r = ClusterReport::new(r.time, r.tracker_server, r.trackers, vec![]);
        assert_eq!(r.leader, None);
        assert!(r.trackers.iter().all(|t| !t.is_leader));
        let text = summary(&r);
        assert!(
            text.contains("\nleader: none (no tracker leads)\n"),
            "{text}"
        );
        assert!(text.contains("\n  127.0.0.6:22122  follower\n"), "{text}");

        // The queried tracker names none: the leader comes from another; the queried one
        // is shown disagreeing.
        let mut r = known_cluster();
        r.trackers[0].leader_seen = None;
        let r = ClusterReport::new(r.time, r.tracker_server, r.trackers, vec![]);
        assert_eq!(r.leader.as_deref(), Some("127.0.0.6:22122"));
        let text = summary(&r);
        assert!(
            text.contains("\n  127.0.0.5:22122  follower, names none as leader, queried\n"),
            "{text}"
        );
        assert!(text.contains("\nstorages: 0, with problems: 0\n"), "{text}");
    }

    #[test]
    fn json_round_trip_and_keys() {
        let r = known_cluster();
        let text = r.to_json();
        let back: ClusterReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["leader"], "127.0.0.6:22122");
        assert_eq!(v["trackers"][1]["is_leader"], true);
        assert_eq!(v["trackers"][2]["reachable"], false);
        assert_eq!(v["trackers"][2]["leader_seen"], serde_json::Value::Null);
        let g1 = &v["groups"][0];
        assert_eq!(g1["name"], "group1");
        assert_eq!(g1["active_count"], 1);
        assert_eq!(g1["trunk_server"], "127.0.0.61");
        let a = &g1["storages"][0];
        assert_eq!(a["status"], "ACTIVE");
        assert_eq!(a["status_code"], 7);
        assert_eq!(a["rw_mode_name"], "both (normal)");
        assert_eq!(a["counters"]["total_upload_count"], 7);
        assert_eq!(a["counters"]["success_upload_count"], 5);
        assert_eq!(a["counters"].as_object().unwrap().len(), 38);
        // The protocol's spelling, not the list output's `stotal_download_bytes`.
        assert!(a["counters"].get("total_download_bytes").is_some());
        assert_eq!(a["sync_delay"], serde_json::Value::Null);
        assert_eq!(g1["storages"][1]["sync_delay"], 0);
        assert_eq!(g1["storages"][1]["status"], "OFFLINE");
        assert_eq!(v["groups"][1]["storages"][1]["sync_delay"], 3600);
        let keys: Vec<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
        for k in [
            "id",
            "ip",
            "port",
            "join_time",
            "up_time",
            "total_mb",
            "free_mb",
            "available_mb",
            "connections",
            "last_heart_beat_time",
            "last_synced_timestamp",
            "never_synced",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn tracker_addresses_compare() {
        assert!(same_tracker("127.0.0.1:22122", "127.0.0.1:22122"));
        assert!(!same_tracker("127.0.0.1:22122", "127.0.0.1:22123"));
        assert!(same_tracker("[::1]:22122", "[0:0::1]:22122"));
        assert!(same_tracker("host:1", "host:1"));
    }
}
