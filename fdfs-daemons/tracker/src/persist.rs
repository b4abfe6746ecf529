//! The tracker's files under `<base_path>/data` (§5.2), in upstream's ini layout so an
//! operator (or an upstream tracker) finds what it expects:
//! `storage_groups_new.dat`, `storage_servers_new.dat`, `storage_sync_timestamp.dat` and
//! `.tracker_status`. Each is written to `<name>.tmp`, fsync'ed, then renamed.
//!
//! Rendering happens under the cluster lock (cheap string building); the writes happen
//! after the lock is released.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::Mutex;

use fdfs_proto::config::{IniFile, Section};
use fdfs_proto::msg::COUNTER_NAMES;
use fdfs_proto::status;

use crate::cluster::{Cluster, Group, Storage, Synced};

pub const GROUPS_FILE: &str = "storage_groups_new.dat";
pub const SERVERS_FILE: &str = "storage_servers_new.dat";
pub const SYNC_TIMESTAMP_FILE: &str = "storage_sync_timestamp.dat";
pub const TRACKER_STATUS_FILE: &str = ".tracker_status";
/// The other trackers learned from storage joins, one `ip:port` a line (not an upstream
/// file: upstream relearns them from the joins after a restart).
pub const TRACKERS_FILE: &str = "tracker_servers.dat";

/// The four files' contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub groups: String,
    pub servers: String,
    pub sync_timestamps: String,
    pub tracker_status: String,
    pub trackers: String,
}

impl Files {
    /// A sys file as 63 GET_ONE_SYS_FILE hands it out (index 3, the change log, is not
    /// kept: empty).
    pub fn sys_file(&self, index: u8) -> &[u8] {
        use fdfs_proto::msg::sys_file;
        match index {
            sys_file::GROUPS => self.groups.as_bytes(),
            sys_file::SERVERS => self.servers.as_bytes(),
            sys_file::SYNC_TIMESTAMPS => self.sync_timestamps.as_bytes(),
            _ => &[],
        }
    }
}

/// The file name behind a sys file index (63), when we keep that file.
pub fn sys_file_name(index: u8) -> Option<&'static str> {
    use fdfs_proto::msg::sys_file;
    match index {
        sys_file::GROUPS => Some(GROUPS_FILE),
        sys_file::SERVERS => Some(SERVERS_FILE),
        sys_file::SYNC_TIMESTAMPS => Some(SYNC_TIMESTAMP_FILE),
        _ => None,
    }
}

/// Renders the state. `up_time` is when this tracker started.
pub fn render(cluster: &Cluster, up_time: i64, now: i64) -> Files {
    let mut groups = String::new();
    let group_list: Vec<&Group> = cluster.groups().collect();
    let _ = write!(groups, "[Global]\n\tgroup_count={}\n\n", group_list.len());
    for (i, g) in group_list.iter().enumerate() {
        let _ = write!(
            groups,
            "# group: {name}\n[Group{n:03}]\n\tgroup_name={name}\n\tstorage_port={port}\n\
             \tstore_path_count={paths}\n\tsubdir_count_per_path={subdirs}\n\
             \tcurrent_trunk_file_id={fid}\n\ttrunk_server={trunk}\n\tlast_trunk_server={last}\n\n",
            n = i + 1,
            name = g.name,
            fid = g.trunk.file_id,
            trunk = g.trunk.server.as_deref().unwrap_or(""),
            last = g.trunk.last,
            port = g.storage_port,
            paths = g.store_path_count,
            subdirs = g.subdir_count_per_path,
        );
    }

    let mut servers = String::new();
    let mut count = 0;
    for g in &group_list {
        for s in g.storages.values() {
            if matches!(s.status, status::DELETED | status::IP_CHANGED) {
                continue;
            }
            count += 1;
            render_storage(&mut servers, count, g, s);
        }
    }
    let _ = write!(servers, "[Global]\n\tstorage_count={count}\n");

    // Row = source, column = destination, both in the group's id order.
    let mut sync_timestamps = String::new();
    for g in &group_list {
        for src in g.storages.keys() {
            let _ = write!(sync_timestamps, "{},{src}", g.name);
            for dest in g.storages.values() {
                let ts = dest.synced_from.get(src).map_or(0, |s| s.ts);
                let _ = write!(sync_timestamps, ",{ts}");
            }
            sync_timestamps.push('\n');
        }
    }

    let tracker_status = tracker_status(up_time, now);
    let mut trackers = String::new();
    for t in cluster.trackers() {
        let _ = writeln!(trackers, "{t}");
    }
    Files {
        groups,
        servers,
        sync_timestamps,
        tracker_status,
        trackers,
    }
}

fn render_storage(out: &mut String, n: usize, g: &Group, s: &Storage) {
    let _ = write!(
        out,
        "# storage {ip}:{port}\n[Storage{n:03}]\n\tid={id}\n\tgroup_name={group}\n\
         \tip_addr={ip}\n\tstatus={status}\n\tversion={version}\n\tjoin_time={join}\n\
         \tstorage_port={port}\n\tsync_src_server={src}\n\tsync_until_timestamp={until}\n\
         \ttotal_mb={total}\n\tfree_mb={free}\n\tchangelog_offset={changelog}\n\
         \tstore_path_count={paths}\n\tsubdir_count_per_path={subdirs}\n\
         \tupload_priority={priority}\n",
        id = s.id,
        group = g.name,
        ip = s.ip,
        status = s.status,
        version = s.version,
        join = s.join_time,
        port = s.port,
        src = s.sync_src_id,
        until = s.sync_until_timestamp,
        total = s.total_mb,
        free = s.free_mb,
        changelog = s.changelog_offset,
        paths = s.store_path_count,
        subdirs = s.subdir_count_per_path,
        priority = s.upload_priority,
    );
    for (name, value) in COUNTER_NAMES.iter().zip(s.counters.counters.iter()) {
        let _ = writeln!(out, "\t{name}={value}");
    }
    let c = &s.counters;
    let _ = write!(
        out,
        "\tlast_source_update={}\n\tlast_sync_update={}\n\tlast_synced_timestamp={}\n\
         \tlast_heart_beat_time={}\n\n",
        c.last_source_update, c.last_sync_update, c.last_synced_timestamp, s.last_heart_beat_time
    );
}

/// Writes one file atomically: `<name>.tmp`, fsync, rename.
fn write_atomic(dir: &Path, name: &str, content: &str) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))
}

pub fn write(dir: &Path, files: &Files) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    write_atomic(dir, GROUPS_FILE, &files.groups)?;
    write_atomic(dir, SERVERS_FILE, &files.servers)?;
    write_atomic(dir, SYNC_TIMESTAMP_FILE, &files.sync_timestamps)?;
    write_atomic(dir, TRACKERS_FILE, &files.trackers)?;
    write_atomic(dir, TRACKER_STATUS_FILE, &files.tracker_status)
}

fn tracker_status(up_time: i64, now: i64) -> String {
    format!("up_time={up_time}\nlast_check_time={now}\n")
}

/// Writes only `.tracker_status` (done periodically: the next start measures its
/// downtime from `last_check_time`).
pub fn write_tracker_status(dir: &Path, up_time: i64, now: i64) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    write_atomic(dir, TRACKER_STATUS_FILE, &tracker_status(up_time, now))
}

/// `last_check_time` of the previous run's `.tracker_status`, if any.
pub fn load_last_check_time(dir: &Path) -> Option<i64> {
    let text = fs::read_to_string(dir.join(TRACKER_STATUS_FILE)).ok()?;
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "last_check_time")
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// The trackers a previous run learned.
pub fn load_trackers(dir: &Path) -> io::Result<Vec<String>> {
    match fs::read_to_string(dir.join(TRACKERS_FILE)) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Renders under the lock, writes after releasing it.
pub fn save(cluster: &Mutex<Cluster>, dir: &Path, up_time: i64) -> io::Result<()> {
    let files = {
        let c = cluster.lock().unwrap_or_else(|e| e.into_inner());
        render(&c, up_time, fdfs_runtime::unix_now())
    };
    write(dir, &files)
}

fn invalid(e: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

fn int(s: &Section<'_>, key: &str) -> io::Result<i64> {
    s.int(key, 0).map_err(invalid)
}

/// Loads the groups and storages a previous run saved; empty when there is no file.
pub fn load(dir: &Path) -> io::Result<Vec<Group>> {
    let groups_path = dir.join(GROUPS_FILE);
    if !groups_path.exists() {
        return Ok(Vec::new());
    }
    let ini = IniFile::load(&groups_path).map_err(invalid)?;
    let mut groups: Vec<Group> = Vec::new();
    for name in ini.section_names() {
        if !name.starts_with("Group") {
            continue;
        }
        let s = ini.section(name).expect("listed");
        let group_name = s.require_str("group_name").map_err(invalid)?;
        let mut group = Group::new(
            group_name,
            int(&s, "store_path_count")?.clamp(1, 256) as u32,
            int(&s, "subdir_count_per_path")?.clamp(1, 256) as u32,
            int(&s, "storage_port")?.clamp(0, 65535) as u16,
        );
        group.trunk.file_id = int(&s, "current_trunk_file_id")?.clamp(0, i32::MAX as i64) as i32;
        group.trunk.server = s
            .str("trunk_server")
            .filter(|id| !id.is_empty())
            .map(String::from);
        group.trunk.last = s.str("last_trunk_server").unwrap_or("").to_string();
        groups.push(group);
    }

    let servers_path = dir.join(SERVERS_FILE);
    if servers_path.exists() {
        let ini = IniFile::load(&servers_path).map_err(invalid)?;
        for name in ini.section_names() {
            if !name.starts_with("Storage") {
                continue;
            }
            let sec = ini.section(name).expect("listed");
            let group_name = sec.require_str("group_name").map_err(invalid)?;
            let Some(group) = groups.iter_mut().find(|g| g.name == group_name) else {
                return Err(invalid(format!(
                    "{}: storage in unknown group {group_name}",
                    servers_path.display()
                )));
            };
            let storage = load_storage(&sec)?;
            group.storages.insert(storage.id.clone(), storage);
        }
    }

    // A saved trunk server that is not a saved storage is forgotten.
    for g in &mut groups {
        if g.trunk
            .server
            .as_ref()
            .is_some_and(|id| !g.storages.contains_key(id))
        {
            g.trunk.server = None;
        }
    }

    let sync_path = dir.join(SYNC_TIMESTAMP_FILE);
    if sync_path.exists() {
        load_sync_timestamps(
            &fs::read_to_string(&sync_path)?,
            &mut groups,
            fdfs_runtime::unix_now(),
        );
    }
    Ok(groups)
}

fn load_storage(sec: &Section<'_>) -> io::Result<Storage> {
    let ip = sec.require_str("ip_addr").map_err(invalid)?;
    let id = sec.str("id").filter(|s| !s.is_empty()).unwrap_or(ip);
    let port = int(sec, "storage_port")?.clamp(0, 65535) as u16;
    let mut s = Storage::new(id, ip, port);
    s.status = int(sec, "status")?.clamp(0, 255) as u8;
    s.version = sec.str("version").unwrap_or_default().to_string();
    s.join_time = int(sec, "join_time")?;
    s.sync_src_id = sec.str("sync_src_server").unwrap_or_default().to_string();
    s.sync_until_timestamp = int(sec, "sync_until_timestamp")?;
    s.total_mb = int(sec, "total_mb")?;
    s.free_mb = int(sec, "free_mb")?;
    s.changelog_offset = int(sec, "changelog_offset")?;
    s.store_path_count = int(sec, "store_path_count")?.clamp(1, 256) as u32;
    s.subdir_count_per_path = int(sec, "subdir_count_per_path")?.clamp(1, 256) as u32;
    s.upload_priority = int(sec, "upload_priority")?;
    for (i, name) in COUNTER_NAMES.iter().enumerate() {
        s.counters.counters[i] = int(sec, name)?;
    }
    s.counters.last_source_update = int(sec, "last_source_update")?;
    s.counters.last_sync_update = int(sec, "last_sync_update")?;
    s.last_heart_beat_time = int(sec, "last_heart_beat_time")?;
    Ok(s)
}

fn load_sync_timestamps(text: &str, groups: &mut [Group], now: i64) {
    for line in text.lines() {
        let fields: Vec<&str> = line.trim().split(',').collect();
        if fields.len() < 2 {
            continue;
        }
        let Some(group) = groups.iter_mut().find(|g| g.name == fields[0]) else {
            continue;
        };
        let src = fields[1];
        for (dest, ts) in group.storages.values_mut().zip(&fields[2..]) {
            match ts.parse::<i64>() {
                Ok(ts) if ts > 0 && dest.id != src => {
                    // Known from now on: a storage reports again only when its
                    // progress moves.
                    dest.synced_from
                        .insert(src.to_string(), Synced { ts, since: now });
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tests::{active, join_req};
    use crate::config::Placement;
    use fdfs_proto::msg::{StorageCounters, SyncReport};
    use fdfs_proto::status::{ACTIVE, OFFLINE, WAIT_SYNC};

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fdfs-tpersist-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn round_trip() {
        let mut c = Cluster::new(Placement::default());
        let a = active(&mut c, "group1", "10.0.0.1", 2, 5000);
        let b = active(&mut c, "group1", "10.0.0.2", 2, 6000);
        active(&mut c, "group2", "10.0.0.3", 1, 7000);
        let (late, _) = c
            .join(&join_req("group2", 1, true), "10.0.0.4", 100)
            .unwrap();
        c.sync_dest_req(&late, 100).unwrap();
        let mut counters = StorageCounters::default();
        counters.counters[3] = 33;
        counters.last_source_update = 77;
        c.beat(&a, Some(counters), 120).unwrap();
        c.sync_report(
            &b,
            &SyncReport {
                entries: vec![("10.0.0.1".into(), 1234)],
            },
            120,
        )
        .unwrap();

        let dir = scratch("rt");
        let files = render(&c, 10, 20);
        assert!(files.groups.starts_with("[Global]\n\tgroup_count=2\n"));
        assert!(files.servers.ends_with("[Global]\n\tstorage_count=4\n"));
        assert!(files.sync_timestamps.contains("group1,10.0.0.1,0,1234\n"));
        assert_eq!(files.tracker_status, "up_time=10\nlast_check_time=20\n");
        assert_eq!(files.trackers, "127.0.0.1:22122\n");
        write(&dir, &files).unwrap();
        assert_eq!(load_last_check_time(&dir), Some(20));
        assert_eq!(load_trackers(&dir).unwrap(), ["127.0.0.1:22122"]);
        write_tracker_status(&dir, 10, 30).unwrap();
        assert_eq!(load_last_check_time(&dir), Some(30));
        assert!(!dir.join(format!("{GROUPS_FILE}.tmp")).exists());

        let before = fdfs_runtime::unix_now();
        let loaded = load(&dir).unwrap();
        let r = Cluster::restore(Placement::default(), loaded);
        // Progress loaded counts as known since the load: storages report it again
        // only when it moves.
        assert!(
            r.group("group1").unwrap().storages["10.0.0.2"].synced_from["10.0.0.1"].since >= before
        );
        let g1 = r.group("group1").unwrap();
        assert_eq!((g1.store_path_count, g1.storage_port), (2, 23000));
        let sa = &g1.storages["10.0.0.1"];
        assert_eq!(sa.status, OFFLINE);
        assert_eq!(sa.counters.counters[3], 33);
        assert_eq!(sa.counters.last_source_update, 77);
        assert_eq!(sa.version, "6.16.1");
        assert_eq!((sa.total_mb, sa.free_mb), (200_000, 10_000));
        assert_eq!(g1.storages["10.0.0.2"].synced_from["10.0.0.1"].ts, 1234);
        let late = &r.group("group2").unwrap().storages["10.0.0.4"];
        assert_eq!(late.status, WAIT_SYNC);
        assert_eq!(late.sync_src_id, "10.0.0.3");
        // Saving the restored state again gives the same files (statuses aside).
        let again = render(&r, 10, 20);
        assert_eq!(again.groups, files.groups);
        assert_eq!(
            again.servers.replace(&format!("status={OFFLINE}"), ""),
            files.servers.replace(&format!("status={ACTIVE}"), "")
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_files_mean_an_empty_cluster() {
        let dir = scratch("empty");
        assert!(load(&dir).unwrap().is_empty());
        assert!(load_trackers(&dir).unwrap().is_empty());
        assert_eq!(load_last_check_time(&dir), None);
    }
}
