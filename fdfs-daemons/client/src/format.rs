//! Text output of the tools, following upstream's layouts line by line.

use std::fmt::Write as _;

use fdfs_proto::fileid::FileKind;
use fdfs_proto::msg::{GroupStat, StorageStat};
use fdfs_proto::status;

use crate::client::FileDetails;

/// `%Y-%m-%d %H:%M:%S` in local time (`TZ`, else `/etc/localtime`), as upstream's
/// `formatDatetime`; empty for a time out of range.
pub fn datetime(ts: i64) -> String {
    use chrono::{Datelike, Local, TimeZone, Timelike};
    let Some(t) = Local.timestamp_opt(ts, 0).single() else {
        return String::new();
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A readable text for an errno: FastDFS's wording, or the OS's for other codes.
pub fn errno_text(code: u8) -> String {
    let text = fdfs_proto::errno::describe(code);
    if text != "unknown error" {
        return text.to_string();
    }
    let os = std::io::Error::from_raw_os_error(code as i32).to_string();
    match os.find(" (os error") {
        Some(p) => os[..p].to_string(),
        None => os,
    }
}

/// `fdfs_file_info`'s output.
pub fn file_info(d: &FileDetails) -> String {
    let kind = match d.kind {
        FileKind::Normal | FileKind::Trunk => "normal",
        FileKind::Slave => "slave",
        FileKind::Appender => "appender",
    };
    let mut out = String::new();
    let _ = writeln!(out, "GET FROM SERVER: {}\n", d.get_from_server);
    let _ = writeln!(out, "file type: {kind}");
    let _ = writeln!(out, "source storage id: {}", d.source_id as i32);
    let _ = writeln!(out, "source ip address: {}", d.source_ip);
    let _ = writeln!(
        out,
        "file create timestamp: {}",
        datetime(d.create_timestamp)
    );
    let _ = writeln!(out, "file size: {}", d.file_size);
    // Upstream prints the CRC with %d (signed) and %08x.
    let _ = writeln!(out, "file crc32: {} (0x{:08x})", d.crc32 as i32, d.crc32);
    out
}

/// libfastcommon's `bytes_to_human_str`: the largest unit the value reaches, integer.
pub fn bytes_to_human(bytes: i64) -> String {
    const KB: i64 = 1 << 10;
    const MB: i64 = 1 << 20;
    const GB: i64 = 1 << 30;
    const TB: i64 = 1 << 40;
    const PB: i64 = 1 << 50;
    if bytes < KB {
        format!("{bytes} B")
    } else if bytes < MB {
        format!("{} KB", bytes / KB)
    } else if bytes < GB {
        format!("{} MB", bytes / MB)
    } else if bytes < TB {
        format!("{} GB", bytes / GB)
    } else if bytes < PB {
        format!("{} TB", bytes / TB)
    } else {
        format!("{} PB", bytes / PB)
    }
}

/// A size in MB as [`bytes_to_human`] prints it.
pub fn mb_to_human(mb: i64) -> String {
    bytes_to_human(mb.saturating_mul(1 << 20))
}

/// Caption of a storage's read/write mode (6.13+).
pub fn rw_caption(mode: u8) -> &'static str {
    match mode {
        0 => "none (disabled)",
        4 => "readonly",
        2 => "writeonly",
        6 => "both (normal)",
        _ => "unknown",
    }
}

/// How far a storage is behind the newest upload on the other storages of its group,
/// from the 92 records: its `last_synced_timestamp` against its peers' newest
/// `last_source_update`, as upstream's `fdfs_monitor` computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncLag {
    /// No peer has had an upload: nothing to sync.
    Nothing,
    /// Peers have had uploads, and this storage has synced none.
    Never,
    /// Seconds behind the newest upload on a peer (0 when up to date).
    Behind(i64),
}

/// The [`SyncLag`] of `storage`, one of `all` (its group, itself included).
pub fn sync_lag(storage: &StorageStat, all: &[StorageStat]) -> SyncLag {
    let max_src = all
        .iter()
        .filter(|p| !std::ptr::eq(*p, storage))
        .map(|p| p.counters.last_source_update)
        .fold(0, i64::max);
    if max_src == 0 {
        return SyncLag::Nothing;
    }
    let synced = storage.counters.last_synced_timestamp;
    if synced == 0 {
        return SyncLag::Never;
    }
    SyncLag::Behind((max_src - synced).max(0))
}

/// A delay as upstream's `fdfs_monitor` prints it: `5s`, `16m:40s`, `02h:00m:05s`,
/// `3 days 01h:00m:00s`.
pub fn delay_text(delay: i64) -> String {
    let delay = delay.max(0);
    let (day, rem) = (delay / 86400, delay % 86400);
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if day != 0 {
        format!("{day} days {hour:02}h:{minute:02}m:{second:02}s")
    } else if hour != 0 {
        format!("{hour:02}h:{minute:02}m:{second:02}s")
    } else if minute != 0 {
        format!("{minute:02}m:{second:02}s")
    } else {
        format!("{second}s")
    }
}

/// The sync delay suffix of `last_synced_timestamp`.
fn sync_delay(storage: &StorageStat, all: &[StorageStat]) -> String {
    match sync_lag(storage, all) {
        SyncLag::Nothing => String::new(),
        SyncLag::Never => "(never synced)".into(),
        SyncLag::Behind(delay) => format!("({} delay)", delay_text(delay)),
    }
}

/// The label `fdfs_monitor` prints for a counter: the wire name, except that upstream
/// spells one of them `stotal_download_bytes`; scripts that parse the output expect it.
fn counter_label(index: usize) -> &'static str {
    if index == fdfs_proto::msg::counter::TOTAL_DOWNLOAD_BYTES {
        "stotal_download_bytes"
    } else {
        fdfs_proto::msg::COUNTER_NAMES[index]
    }
}

/// One group and its storages, as `fdfs_monitor list` prints them.
pub fn group_listing(g: &GroupStat, storages: &[StorageStat]) -> String {
    let mut o = String::new();
    let avail = (g.free_mb - g.reserved_mb).max(0);
    let _ = writeln!(o, "group name = {}", g.group);
    let _ = writeln!(o, "disk total space     = {:>7}", mb_to_human(g.total_mb));
    let _ = writeln!(o, "disk free space      = {:>7}", mb_to_human(g.free_mb));
    let _ = writeln!(
        o,
        "disk reserved space  = {:>7}",
        mb_to_human(g.reserved_mb)
    );
    let _ = writeln!(o, "disk available space = {:>7}", mb_to_human(avail));
    let trunk = g.current_trunk_file_id >= 0;
    if trunk {
        let _ = writeln!(o, "trunk free space = {:>7}", mb_to_human(g.trunk_free_mb));
    }
    let _ = writeln!(o, "storage server count = {}", g.storage_count);
    let _ = writeln!(o, "readable server count = {}", g.readable_server_count);
    let _ = writeln!(o, "writable server count = {}", g.writable_server_count);
    let _ = writeln!(o, "storage server port = {}", g.storage_port);
    let _ = writeln!(o, "store path count = {}", g.store_path_count);
    let _ = writeln!(o, "subdir count per path = {}", g.subdir_count_per_path);
    let _ = writeln!(o, "current write server index = {}", g.current_write_server);
    match storages.iter().find(|s| s.is_trunk_server) {
        Some(t) if trunk => {
            let _ = writeln!(o, "current trunk server = {} ({})", t.id, t.ip);
            let _ = writeln!(o, "current trunk file id = {}\n", g.current_trunk_file_id);
        }
        _ => o.push('\n'),
    }
    for (k, s) in storages.iter().enumerate() {
        storage_listing(&mut o, k + 1, s, storages);
    }
    o
}

fn storage_listing(o: &mut String, k: usize, s: &StorageStat, all: &[StorageStat]) {
    let up_time = if s.up_time != 0 {
        datetime(s.up_time)
    } else {
        String::new()
    };
    let avail = (s.free_mb - s.reserved_mb).max(0);
    let c = &s.counters;
    let _ = writeln!(o, "\tStorage {k}:");
    let _ = writeln!(o, "\t\tid = {}", s.id);
    let host = if s.ip.contains(':') {
        format!("[{}]", s.ip)
    } else {
        s.ip.clone()
    };
    let _ = writeln!(
        o,
        "\t\thost = {host}:{}  {}",
        s.storage_port,
        status::name(s.status)
    );
    let _ = writeln!(o, "\t\tread write mode = {}", rw_caption(s.rw_mode));
    let _ = writeln!(o, "\t\tversion = {}", s.version);
    let _ = writeln!(o, "\t\tjoin time = {}", datetime(s.join_time));
    let _ = writeln!(o, "\t\tup time = {up_time}");
    let _ = writeln!(
        o,
        "\t\tdisk total space     = {:>7}",
        mb_to_human(s.total_mb)
    );
    let _ = writeln!(
        o,
        "\t\tdisk free space      = {:>7}",
        mb_to_human(s.free_mb)
    );
    let _ = writeln!(
        o,
        "\t\tdisk reserved space  = {:>7}",
        mb_to_human(s.reserved_mb)
    );
    let _ = writeln!(o, "\t\tdisk available space = {:>7}", mb_to_human(avail));
    let _ = writeln!(o, "\t\tupload priority = {}", s.upload_priority);
    let _ = writeln!(o, "\t\tstore_path_count = {}", s.store_path_count);
    let _ = writeln!(o, "\t\tsubdir_count_per_path = {}", s.subdir_count_per_path);
    let _ = writeln!(o, "\t\tstorage_port = {}", s.storage_port);
    let _ = writeln!(o, "\t\tcurrent_write_path = {}", s.current_write_path);
    let _ = writeln!(o, "\t\tsource storage id = {}", s.sync_src_id);
    let _ = writeln!(o, "\t\tif_trunk_server = {}", s.is_trunk_server as u8);
    let _ = writeln!(o, "\t\tconnection.alloc_count = {}", c.conn_alloc as i32);
    let _ = writeln!(
        o,
        "\t\tconnection.current_count = {}",
        c.conn_current as i32
    );
    let _ = writeln!(o, "\t\tconnection.max_count = {}", c.conn_max as i32);
    for (i, v) in c.counters.iter().enumerate() {
        let label = counter_label(i);
        let _ = writeln!(o, "\t\t{label} = {v}");
    }
    let _ = writeln!(
        o,
        "\t\tlast_heart_beat_time = {}",
        datetime(c.last_heart_beat_time)
    );
    let _ = writeln!(
        o,
        "\t\tlast_source_update = {}",
        datetime(c.last_source_update)
    );
    let _ = writeln!(o, "\t\tlast_sync_update = {}", datetime(c.last_sync_update));
    let _ = writeln!(
        o,
        "\t\tlast_synced_timestamp = {} {}",
        datetime(c.last_synced_timestamp),
        sync_delay(s, all)
    );
    // Not upstream: replication lag against each peer of the group, after the
    // upstream lines so scripts parsing those keep working.
    for p in all.iter().filter(|p| !std::ptr::eq(*p, s)) {
        let _ = writeln!(
            o,
            "\t\treplication from {} = {}",
            p.id,
            replication_lag(s, p)
        );
        let _ = writeln!(o, "\t\treplication to {} = {}", p.id, replication_lag(p, s));
    }
}

/// How far `dest` has the files uploaded to `src`, from the 92 records alone:
/// `dest.last_synced_timestamp` (the newest source timestamp it has received, as the
/// tracker aggregates it over dest's sources) against `src.last_source_update` (the
/// last upload on src). Exact for two-storage groups; with more peers the tracker's
/// aggregate (minimum for round-robin uploads) makes it an upper bound.
pub fn replication_lag(dest: &StorageStat, src: &StorageStat) -> String {
    let newest = src.counters.last_source_update;
    let synced = dest.counters.last_synced_timestamp;
    if newest == 0 {
        return "nothing to sync".into();
    }
    if synced == 0 {
        return format!("never synced, source updated {}", datetime(newest));
    }
    format!(
        "synced up to {}, {} s behind",
        datetime(synced),
        (newest - synced).max(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::decode_file_id;

    /// Runs `f` with local time UTC so its output is predictable (`UTC0`, a POSIX TZ
    /// string: it needs no zoneinfo file).
    fn in_utc<T>(f: impl FnOnce() -> T) -> T {
        std::env::set_var("TZ", "UTC0");
        f()
    }

    #[test]
    fn worked_example_file_info() {
        let (d, _) = decode_file_id("group1/M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt").unwrap();
        let text = in_utc(|| file_info(&d));
        assert_eq!(
            text,
            "GET FROM SERVER: false\n\n\
             file type: normal\n\
             source storage id: 0\n\
             source ip address: 127.0.0.61\n\
             file create timestamp: 2026-11-23 23:08:24\n\
             file size: 15\n\
             file crc32: 49921262 (0x02f9bcee)\n"
        );
    }

    #[test]
    fn file_info_from_server_and_high_crc() {
        let d = FileDetails {
            get_from_server: true,
            kind: FileKind::Appender,
            source_id: 100_001,
            source_ip: "10.0.0.1".into(),
            create_timestamp: 0,
            file_size: 30,
            crc32: 0x9053_E65C,
        };
        let text = in_utc(|| file_info(&d));
        assert!(text.starts_with("GET FROM SERVER: true\n\nfile type: appender\n"));
        assert!(text.contains("source storage id: 100001\n"));
        assert!(text.contains("file create timestamp: 1970-01-01 00:00:00\n"));
        assert!(text.ends_with("file crc32: -1873549732 (0x9053e65c)\n"));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(bytes_to_human(512), "512 B");
        assert_eq!(mb_to_human(0), "0 B");
        assert_eq!(mb_to_human(1023), "1023 MB");
        assert_eq!(mb_to_human(51_175), "49 GB");
        assert_eq!(mb_to_human(3 << 20), "3 TB");
        assert_eq!(format!("{:>7}", mb_to_human(5)), "   5 MB");
    }

    #[test]
    fn errno_texts() {
        assert_eq!(errno_text(2), "no such file, group or server");
        assert!(!errno_text(104).is_empty());
        assert!(!errno_text(104).contains("os error"));
    }

    #[test]
    fn monitor_group_layout() {
        let g = GroupStat {
            group: "group1".into(),
            total_mb: 2048,
            free_mb: 1024,
            reserved_mb: 100,
            trunk_free_mb: 0,
            storage_count: 2,
            storage_port: 23000,
            readable_server_count: 1,
            writable_server_count: 1,
            current_write_server: 0,
            store_path_count: 1,
            subdir_count_per_path: 256,
            current_trunk_file_id: -1,
        };
        let mut a = StorageStat {
            status: status::ACTIVE,
            rw_mode: 6,
            id: "127.0.0.61".into(),
            ip: "127.0.0.61".into(),
            version: "6.16.1".into(),
            join_time: 1_795_475_304,
            up_time: 1_795_475_304,
            storage_port: 23000,
            ..Default::default()
        };
        a.counters.last_source_update = 1_795_475_000;
        a.counters.last_synced_timestamp = 1_795_475_304;
        let mut b = a.clone();
        b.id = "127.0.0.62".into();
        b.ip = "127.0.0.62".into();
        b.status = status::WAIT_SYNC;
        b.counters.last_synced_timestamp = 1_795_474_000;
        b.counters.counters[26] = 77;
        let text = in_utc(|| group_listing(&g, &[a, b]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "group name = group1");
        assert_eq!(lines[1], "disk total space     =    2 GB");
        assert_eq!(lines[2], "disk free space      =    1 GB");
        assert_eq!(lines[3], "disk reserved space  =  100 MB");
        assert_eq!(lines[4], "disk available space =  924 MB");
        assert_eq!(lines[5], "storage server count = 2");
        assert_eq!(lines[11], "current write server index = 0");
        assert_eq!(lines[12], "");
        assert_eq!(lines[13], "\tStorage 1:");
        assert_eq!(lines[14], "\t\tid = 127.0.0.61");
        assert_eq!(lines[15], "\t\thost = 127.0.0.61:23000  ACTIVE");
        assert_eq!(lines[16], "\t\tread write mode = both (normal)");
        assert_eq!(lines[18], "\t\tjoin time = 2026-11-23 23:08:24");
        assert!(text.contains("\t\thost = 127.0.0.62:23000  WAIT_SYNC\n"));
        assert!(text.contains("\t\tstotal_download_bytes = 77\n"));
        assert!(text.contains("\t\tlast_synced_timestamp = 2026-11-23 23:08:24 (0s delay)\n"));
        assert!(text.contains("\t\tlast_synced_timestamp = 2026-11-23 22:46:40 (16m:40s delay)\n"));
        let per_storage = text.matches("\tStorage ").count();
        assert_eq!(per_storage, 2);
        // The lag lines follow the upstream block of each storage.
        let a_block = &text[text.find("\tStorage 1:").unwrap()..text.find("\tStorage 2:").unwrap()];
        let last = a_block.find("\t\tlast_synced_timestamp = ").unwrap();
        assert!(a_block[last..].contains(
            "\t\treplication from 127.0.0.62 = synced up to 2026-11-23 23:08:24, 0 s behind\n\
             \t\treplication to 127.0.0.62 = synced up to 2026-11-23 22:46:40, 1000 s behind\n"
        ));
        assert!(text.ends_with(
            "\t\treplication from 127.0.0.61 = synced up to 2026-11-23 22:46:40, 1000 s behind\n\
             \t\treplication to 127.0.0.61 = synced up to 2026-11-23 23:08:24, 0 s behind\n"
        ));
    }

    #[test]
    fn replication_lag_texts() {
        let mut src = StorageStat::default();
        let mut dest = StorageStat::default();
        assert_eq!(in_utc(|| replication_lag(&dest, &src)), "nothing to sync");
        src.counters.last_source_update = 1_795_475_304;
        assert_eq!(
            in_utc(|| replication_lag(&dest, &src)),
            "never synced, source updated 2026-11-23 23:08:24"
        );
        dest.counters.last_synced_timestamp = 1_795_475_300;
        assert_eq!(
            in_utc(|| replication_lag(&dest, &src)),
            "synced up to 2026-11-23 23:08:20, 4 s behind"
        );
        dest.counters.last_synced_timestamp = 1_795_475_400;
        assert!(in_utc(|| replication_lag(&dest, &src)).ends_with(", 0 s behind"));
    }

    #[test]
    fn delay_texts() {
        assert_eq!(delay_text(0), "0s");
        assert_eq!(delay_text(59), "59s");
        assert_eq!(delay_text(1000), "16m:40s");
        assert_eq!(delay_text(7205), "02h:00m:05s");
        assert_eq!(delay_text(3 * 86400 + 3600), "3 days 01h:00m:00s");
    }

    #[test]
    fn monitor_trunk_lines() {
        let g = GroupStat {
            group: "g".into(),
            trunk_free_mb: 64,
            current_trunk_file_id: 3,
            ..Default::default()
        };
        let s = StorageStat {
            id: "100001".into(),
            ip: "10.0.0.1".into(),
            is_trunk_server: true,
            ..Default::default()
        };
        let text = in_utc(|| group_listing(&g, &[s]));
        assert!(text.contains("\ntrunk free space =   64 MB\n"));
        assert!(text
            .contains("current trunk server = 100001 (10.0.0.1)\ncurrent trunk file id = 3\n\n"));
    }
}
