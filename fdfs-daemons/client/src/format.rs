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
    strerror(code)
}

/// The C library's text for an errno, as upstream's `STRERROR` prints it.
pub fn strerror(code: u8) -> String {
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

/// libfastcommon's `format_bytes_string`: `bytes` in `unit`s, one decimal under 10
/// (`2.5`, `9.0`), else whole; rounded half up either way.
fn bytes_in_unit(bytes: i64, unit: i64) -> String {
    // i128: ten times the remainder of an exabyte does not fit an i64.
    let (bytes, unit) = (bytes as i128, unit as i128);
    let mut n = bytes / unit;
    let remain = bytes - n * unit;
    if n < 10 {
        let mut fragment = (remain * 10 + unit / 2) / unit;
        if fragment == 10 {
            n += 1;
            fragment = 0;
        }
        if n < 10 {
            format!("{n}.{fragment}")
        } else {
            n.to_string()
        }
    } else {
        if remain >= unit / 2 {
            n += 1;
        }
        n.to_string()
    }
}

/// libfastcommon's `bytes_to_human_str` (6.16): the largest unit the value reaches,
/// with a decimal under 10 of it (`2.5 GB`, `10 GB`, `513 MB`); bytes as `N  B` (two
/// spaces, for alignment).
pub fn bytes_to_human(bytes: i64) -> String {
    const KB: i64 = 1 << 10;
    const MB: i64 = 1 << 20;
    const GB: i64 = 1 << 30;
    const TB: i64 = 1 << 40;
    const PB: i64 = 1 << 50;
    const EB: i64 = 1 << 60;
    let (unit, letter) = match bytes {
        b if b < KB => return format!("{bytes}  B"),
        b if b < MB => (KB, 'K'),
        b if b < GB => (MB, 'M'),
        b if b < TB => (GB, 'G'),
        b if b < PB => (TB, 'T'),
        b if b < EB => (PB, 'P'),
        _ => (EB, 'E'),
    };
    format!("{} {letter}B", bytes_in_unit(bytes, unit))
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

/// A delay in the summary's short form: `5s`, `16m:40s`, `02h:00m:05s`,
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

/// libfastcommon's `seconds_to_human_str`, as `fdfs_monitor list` prints a delay:
/// `0 second`, `1 second`, `16 minutes 40 seconds`, `2 hours 5 seconds`, `3 days 1 hour`
/// (units at zero left out).
pub fn seconds_to_human(seconds: i64) -> String {
    let rem = seconds.max(0);
    let parts = [
        (rem / 86400, "day"),
        (rem % 86400 / 3600, "hour"),
        (rem % 3600 / 60, "minute"),
        (rem % 60, "second"),
    ];
    let Some(first) = parts.iter().position(|&(n, _)| n > 0) else {
        return "0 second".into();
    };
    parts[first..]
        .iter()
        .filter(|&&(n, _)| n > 0)
        .map(|&(n, unit)| {
            if n == 1 {
                format!("1 {unit}")
            } else {
                format!("{n} {unit}s")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The sync delay suffix of `last_synced_timestamp`.
fn sync_delay(storage: &StorageStat, all: &[StorageStat]) -> String {
    match sync_lag(storage, all) {
        SyncLag::Nothing => String::new(),
        SyncLag::Never => "(never synced)".into(),
        SyncLag::Behind(delay) => format!("({} delay)", seconds_to_human(delay)),
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

/// A storage status as upstream's `get_storage_status_caption`: `UNKNOWN` for any code
/// it does not name (NONE, 99, among them).
fn status_caption(code: u8) -> &'static str {
    match code {
        status::NONE => "UNKNOWN",
        other => status::name(other),
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
        status_caption(s.status)
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
        // libfastcommon 1.0.x's bytes_to_human_str, checked against C's fdfs_monitor.
        assert_eq!(bytes_to_human(0), "0  B");
        assert_eq!(bytes_to_human(512), "512  B");
        assert_eq!(bytes_to_human(1023), "1023  B");
        assert_eq!(bytes_to_human(1024), "1.0 KB");
        assert_eq!(bytes_to_human(1536), "1.5 KB");
        assert_eq!(bytes_to_human(10 * 1024 - 52), "9.9 KB");
        assert_eq!(bytes_to_human(10 * 1024 - 51), "10 KB");
        assert_eq!(mb_to_human(0), "0  B");
        assert_eq!(mb_to_human(5), "5.0 MB");
        assert_eq!(mb_to_human(1023), "1023 MB");
        assert_eq!(mb_to_human(2560), "2.5 GB");
        assert_eq!(mb_to_human(2611), "2.5 GB");
        assert_eq!(mb_to_human(2612), "2.6 GB");
        assert_eq!(mb_to_human(10_188), "9.9 GB");
        assert_eq!(mb_to_human(10_189), "10 GB");
        assert_eq!(mb_to_human(51_175), "50 GB");
        assert_eq!(mb_to_human(50_687), "49 GB");
        assert_eq!(mb_to_human(3 << 20), "3.0 TB");
        assert_eq!(mb_to_human(3 << 30), "3.0 PB");
        assert_eq!(mb_to_human(5 << 40), "5.0 EB");
        assert_eq!(mb_to_human(i64::MAX), "8.0 EB");
        assert_eq!(format!("{:>7}", mb_to_human(5)), " 5.0 MB");
        assert_eq!(format!("{:>7}", mb_to_human(0)), "   0  B");
    }

    #[test]
    fn seconds_texts() {
        assert_eq!(seconds_to_human(-5), "0 second");
        assert_eq!(seconds_to_human(0), "0 second");
        assert_eq!(seconds_to_human(1), "1 second");
        assert_eq!(seconds_to_human(59), "59 seconds");
        assert_eq!(seconds_to_human(60), "1 minute");
        assert_eq!(seconds_to_human(1000), "16 minutes 40 seconds");
        assert_eq!(seconds_to_human(7205), "2 hours 5 seconds");
        assert_eq!(seconds_to_human(3 * 86400 + 3600), "3 days 1 hour");
        assert_eq!(
            seconds_to_human(86400 + 2 * 3600 + 60 + 1),
            "1 day 2 hours 1 minute 1 second"
        );
    }

    #[test]
    fn errno_texts() {
        assert_eq!(errno_text(2), "no such file, group or server");
        assert!(!errno_text(104).is_empty());
        assert!(!errno_text(104).contains("os error"));
        assert_eq!(strerror(2), "No such file or directory");
        assert_eq!(strerror(16), "Device or resource busy");
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
        assert_eq!(lines[1], "disk total space     =  2.0 GB");
        assert_eq!(lines[2], "disk free space      =  1.0 GB");
        assert_eq!(lines[3], "disk reserved space  =  100 MB");
        assert_eq!(lines[4], "disk available space =  924 MB");
        assert_eq!(lines[5], "storage server count = 2");
        assert_eq!(lines[11], "current write server index = 0");
        assert_eq!(lines[12], "");
        assert!(text.contains("\t\thost = 127.0.0.62:23000  WAIT_SYNC\n"));
        assert!(text.contains("\t\tstotal_download_bytes = 77\n"));
        assert!(text.contains(
            "\t\tlast_synced_timestamp = 2026-11-23 22:46:40 (16 minutes 40 seconds delay)\n"
        ));
        assert_eq!(text.matches("\tStorage ").count(), 2);
        // The first storage, whole: C's keys in C's order, nothing more.
        let first: Vec<&str> = lines[13..]
            .iter()
            .take_while(|l| **l != "\tStorage 2:")
            .copied()
            .collect();
        let mut expected = vec![
            "\tStorage 1:",
            "\t\tid = 127.0.0.61",
            "\t\thost = 127.0.0.61:23000  ACTIVE",
            "\t\tread write mode = both (normal)",
            "\t\tversion = 6.16.1",
            "\t\tjoin time = 2026-11-23 23:08:24",
            "\t\tup time = 2026-11-23 23:08:24",
            "\t\tdisk total space     =    0  B",
            "\t\tdisk free space      =    0  B",
            "\t\tdisk reserved space  =    0  B",
            "\t\tdisk available space =    0  B",
            "\t\tupload priority = 0",
            "\t\tstore_path_count = 0",
            "\t\tsubdir_count_per_path = 0",
            "\t\tcurrent_write_path = 0",
            "\t\tsource storage id = ",
            "\t\tif_trunk_server = 0",
            "\t\tconnection.alloc_count = 0",
            "\t\tconnection.current_count = 0",
            "\t\tconnection.max_count = 0",
        ];
        let counters: Vec<String> = (0..fdfs_proto::msg::COUNTER_NAMES.len())
            .map(|i| format!("\t\t{} = 0", counter_label(i)))
            .collect();
        expected.extend(counters.iter().map(String::as_str));
        expected.extend([
            "\t\tlast_heart_beat_time = 1970-01-01 00:00:00",
            "\t\tlast_source_update = 2026-11-23 23:03:20",
            "\t\tlast_sync_update = 1970-01-01 00:00:00",
            "\t\tlast_synced_timestamp = 2026-11-23 23:08:24 (0 second delay)",
        ]);
        assert_eq!(first, expected);
        assert!(text.ends_with(
            "\t\tlast_synced_timestamp = 2026-11-23 22:46:40 (16 minutes 40 seconds delay)\n"
        ));
    }

    #[test]
    fn monitor_sync_delay_texts() {
        let g = GroupStat {
            group: "g".into(),
            ..Default::default()
        };
        let a = StorageStat {
            id: "a".into(),
            status: status::NONE,
            ..Default::default()
        };
        let b = StorageStat {
            id: "b".into(),
            ..Default::default()
        };
        // Nothing uploaded anywhere: no delay text, the separating space kept.
        let text = in_utc(|| group_listing(&g, &[a.clone(), b.clone()]));
        assert!(text.contains("\t\tlast_synced_timestamp = 1970-01-01 00:00:00 \n"));
        assert!(text.contains("\t\thost = :0  UNKNOWN\n"));
        let mut b = b;
        b.counters.last_source_update = 1_795_475_304;
        let text = in_utc(|| group_listing(&g, &[a, b]));
        assert!(text.contains("\t\tlast_synced_timestamp = 1970-01-01 00:00:00 (never synced)\n"));
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
