//! The trunk server's housekeeping, on upstream's tracker keys:
//!
//! - `trunk_create_file_advance`: from `trunk_create_file_time_base`, every
//!   `trunk_create_file_interval` seconds, trunk files are created until
//!   `trunk_create_file_space_threshold` bytes are free (so uploads do not wait for one);
//! - `trunk_compress_binlog_interval` (from `trunk_compress_binlog_time_base`, never more
//!   often than `trunk_compress_binlog_min_interval`): the trunk binlog is rewritten as
//!   the free regions it adds up to, one line each, and every peer is sent it afresh (33,
//!   then the whole); with `trunk_free_space_merge`, neighbouring free regions become one
//!   first (never a slot handed out and not yet confirmed, unlike upstream), and with
//!   `delete_unused_trunk_files` a trunk file left wholly free is removed here.

use std::sync::Arc;

use chrono::{Local, TimeZone};
use fdfs_proto::config::{IniFile, TimeOfDay};
use tracing::{info, warn};

use crate::state::Storage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub create_advance: bool,
    pub create_time_base: TimeOfDay,
    pub create_interval: i64,
    pub create_space_threshold: u64,
    pub free_space_merge: bool,
    pub delete_unused: bool,
    pub compress_min_interval: i64,
    pub compress_interval: i64,
    pub compress_time_base: TimeOfDay,
}

impl Schedule {
    pub fn from_parameters(ini: &IniFile) -> Schedule {
        let g = ini.global();
        let at = |key: &str, hour| {
            let default = TimeOfDay { hour, minute: 0 };
            g.time_of_day(key, default).unwrap_or(default)
        };
        let secs = |key: &str, default| g.int(key, default).unwrap_or(default).max(0);
        let flag = |key: &str| g.bool(key, false).unwrap_or(false);
        Schedule {
            create_advance: flag("trunk_create_file_advance"),
            create_time_base: at("trunk_create_file_time_base", 2),
            create_interval: secs("trunk_create_file_interval", 86400),
            create_space_threshold: g.size("trunk_create_file_space_threshold", 0).unwrap_or(0),
            free_space_merge: flag("trunk_free_space_merge"),
            delete_unused: flag("delete_unused_trunk_files"),
            compress_min_interval: secs("trunk_compress_binlog_min_interval", 0),
            compress_interval: secs("trunk_compress_binlog_interval", 0),
            compress_time_base: at("trunk_compress_binlog_time_base", 3),
        }
    }
}

/// The newest moment at or before `now` (unix seconds) of a schedule that starts at
/// `base` (local time) each day and repeats every `interval` seconds.
pub fn last_due(now: i64, base: TimeOfDay, interval: i64) -> i64 {
    let Some(local) = Local.timestamp_opt(now, 0).single() else {
        return now;
    };
    let day_start = local
        .date_naive()
        .and_hms_opt(base.hour as u32, base.minute as u32, 0)
        .and_then(|t| Local.from_local_datetime(&t).earliest())
        .map_or(now, |t| t.timestamp());
    let start = if day_start > now {
        day_start - 86400
    } else {
        day_start
    };
    let interval = interval.max(1);
    start + (now - start) / interval * interval
}

/// When each task last ran (or the term began).
pub struct Ticks {
    epoch: u64,
    created: i64,
    compressed: i64,
}

impl Ticks {
    pub fn new() -> Ticks {
        Ticks {
            epoch: u64::MAX,
            created: 0,
            compressed: 0,
        }
    }
}

impl Default for Ticks {
    fn default() -> Self {
        Ticks::new()
    }
}

/// Runs what is due (called every second by the trunk server's manager).
pub async fn tick(st: &Arc<Storage>, ticks: &mut Ticks, now: i64) {
    let Some(params) = st.trunk.params() else {
        return;
    };
    let s = params.housekeeping;
    let epoch = st.trunk.epoch.load(std::sync::atomic::Ordering::Acquire);
    if ticks.epoch != epoch {
        // A new term: nothing is due before its first scheduled moment.
        *ticks = Ticks {
            epoch,
            created: now,
            compressed: now,
        };
        return;
    }
    if s.create_advance
        && s.create_interval > 0
        && ticks.created < last_due(now, s.create_time_base, s.create_interval)
    {
        ticks.created = now;
        match st.trunk.create_ahead(st, s.create_space_threshold).await {
            Ok(0) => {}
            Ok(n) => info!("created {n} trunk file(s) ahead (trunk_create_file_advance)"),
            Err(e) => warn!("cannot create trunk files ahead: errno {e}"),
        }
    }
    let last_compress = st.trunk.last_compress_time();
    if s.compress_interval > 0
        && ticks.compressed < last_due(now, s.compress_time_base, s.compress_interval)
        && now - last_compress >= s.compress_min_interval
    {
        ticks.compressed = now;
        match st
            .trunk
            .compact(st, s.free_space_merge, s.delete_unused)
            .await
        {
            Ok(Some((before, after))) => info!(
                "trunk binlog compressed: {before} bytes to {after}; peers are sent it afresh"
            ),
            Ok(None) => {}
            Err(e) => warn!("cannot compress the trunk binlog: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_start_at_their_time_of_day() {
        let base = TimeOfDay { hour: 2, minute: 0 };
        let now = Local
            .with_ymd_and_hms(2026, 12, 7, 13, 30, 0)
            .unwrap()
            .timestamp();
        let two = Local
            .with_ymd_and_hms(2026, 12, 7, 2, 0, 0)
            .unwrap()
            .timestamp();
        assert_eq!(last_due(now, base, 86400), two);
        // Every hour from 02:00: 13:00 was the last one.
        assert_eq!(last_due(now, base, 3600), two + 11 * 3600);
        // Before today's 02:00: yesterday's.
        let early = Local
            .with_ymd_and_hms(2026, 12, 7, 1, 0, 0)
            .unwrap()
            .timestamp();
        assert_eq!(last_due(early, base, 86400), two - 86400);
    }
}
