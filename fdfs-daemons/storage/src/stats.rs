//! Activity counters, sent to trackers with every beat and kept in
//! `base_path/data/storage_stat.dat` across restarts.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

use fdfs_proto::config::IniFile;
use fdfs_proto::msg::{StorageCounters, COUNTER_NAMES};

pub use fdfs_proto::msg::counter;

pub struct Stats {
    counters: [AtomicI64; 38],
    pub last_source_update: AtomicI64,
    pub last_sync_update: AtomicI64,
    pub connections: AtomicI64,
    pub max_connections: AtomicI64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            counters: std::array::from_fn(|_| AtomicI64::new(0)),
            last_source_update: AtomicI64::new(0),
            last_sync_update: AtomicI64::new(0),
            connections: AtomicI64::new(0),
            max_connections: AtomicI64::new(0),
        }
    }
}

impl Stats {
    /// Counts one attempt of an operation and, if it succeeded, its success.
    pub fn record(&self, total_index: usize, ok: bool) {
        self.counters[total_index].fetch_add(1, Ordering::Relaxed);
        if ok {
            self.counters[counter::success(total_index)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds bytes to a `*_bytes` pair.
    pub fn add_bytes(&self, total_index: usize, bytes: u64, ok: bool) {
        self.counters[total_index].fetch_add(bytes as i64, Ordering::Relaxed);
        if ok {
            self.counters[counter::success(total_index)].fetch_add(bytes as i64, Ordering::Relaxed);
        }
    }

    pub fn connection_opened(&self) {
        let now = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_connections.fetch_max(now, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StorageCounters {
        let mut s = StorageCounters::default();
        for (dst, src) in s.counters.iter_mut().zip(&self.counters) {
            *dst = src.load(Ordering::Relaxed);
        }
        s.conn_current = self.connections.load(Ordering::Relaxed) as u32;
        s.conn_max = self.max_connections.load(Ordering::Relaxed) as u32;
        s.conn_alloc = s.conn_max;
        s.last_source_update = self.last_source_update.load(Ordering::Relaxed);
        s.last_sync_update = self.last_sync_update.load(Ordering::Relaxed);
        s
    }

    /// Writes the counters and the directory rotation state (ini, replaced atomically).
    pub fn save(&self, path: &Path, rotation: (u32, u32, u32)) -> std::io::Result<()> {
        let snap = self.snapshot();
        let mut text = String::new();
        for (name, v) in COUNTER_NAMES.iter().zip(snap.counters) {
            text.push_str(&format!("{name}={v}\n"));
        }
        text.push_str(&format!(
            "last_source_update={}\nlast_sync_update={}\n\
             dist_path_index_high={}\ndist_path_index_low={}\ndist_write_file_count={}\n",
            snap.last_source_update, snap.last_sync_update, rotation.0, rotation.1, rotation.2
        ));
        let tmp = path.with_extension("dat.tmp");
        fs::write(&tmp, text)?;
        fs::rename(tmp, path)
    }

    /// Loads what [`Stats::save`] wrote; returns the rotation state.
    pub fn load(&self, path: &Path) -> Option<(u32, u32, u32)> {
        let ini = IniFile::load(path).ok()?;
        let g = ini.global();
        for (i, name) in COUNTER_NAMES.iter().enumerate() {
            self.counters[i].store(g.int(name, 0).unwrap_or(0), Ordering::Relaxed);
        }
        self.last_source_update.store(
            g.int("last_source_update", 0).unwrap_or(0),
            Ordering::Relaxed,
        );
        self.last_sync_update
            .store(g.int("last_sync_update", 0).unwrap_or(0), Ordering::Relaxed);
        let get = |k: &str| g.int(k, 0).unwrap_or(0).max(0) as u32;
        Some((
            get("dist_path_index_high"),
            get("dist_path_index_low"),
            get("dist_write_file_count"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_round_trip() {
        let s = Stats::default();
        s.record(counter::TOTAL_UPLOAD, true);
        s.record(counter::TOTAL_UPLOAD, false);
        s.add_bytes(counter::TOTAL_UPLOAD_BYTES, 15, true);
        let path = std::env::temp_dir().join(format!("fdfs-stat-{}.dat", std::process::id()));
        s.save(&path, (1, 2, 3)).unwrap();
        let t = Stats::default();
        assert_eq!(t.load(&path), Some((1, 2, 3)));
        let snap = t.snapshot();
        assert_eq!(snap.counters[counter::TOTAL_UPLOAD], 2);
        assert_eq!(snap.counters[counter::success(counter::TOTAL_UPLOAD)], 1);
        assert_eq!(snap.counters[counter::TOTAL_UPLOAD_BYTES], 15);
        let _ = fs::remove_file(path);
    }
}
