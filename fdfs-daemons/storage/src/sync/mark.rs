//! `data/sync/<ip>_<port>.mark` (`<id>.mark` with server ids): how far the binlog has been replayed to one peer, and
//! whether that peer still needs the old files. Written to a temporary file and renamed,
//! so a crash leaves the old mark or the new one, never half of one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use fdfs_proto::config::IniFile;

use fdfs_proto::msg::StorageBrief;

use crate::binlog::BinlogPos;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mark {
    pub binlog_index: u32,
    pub binlog_offset: u64,
    /// This storage is the peer's sync source: replay the old records (lowercase too).
    pub need_sync_old: bool,
    pub sync_old_done: bool,
    /// Records older than this are the source's job (non-source) / the end of the old
    /// data (source).
    pub until_timestamp: i64,
    pub scan_row_count: u64,
    pub sync_row_count: u64,
}

/// The mark of `peer`: `<id>.mark` when storages are named by server id, else
/// `<ip>_<port>.mark`, as upstream names them.
pub fn path(sync_dir: &Path, peer: &StorageBrief, by_server_id: bool) -> PathBuf {
    if by_server_id {
        sync_dir.join(format!("{}.mark", peer.id))
    } else {
        sync_dir.join(format!("{}_{}.mark", peer.ip, peer.port))
    }
}

/// Storage ids were turned on: the mark of `peer` written while it was named by IP
/// becomes its `<id>.mark` (unless that exists), as upstream renames it, so
/// replication goes on where it was instead of starting over.
pub fn adopt_ip_named(sync_dir: &Path, peer: &StorageBrief) {
    let by_id = path(sync_dir, peer, true);
    let by_ip = path(sync_dir, peer, false);
    if by_id.exists() || !by_ip.exists() {
        return;
    }
    match fs::rename(&by_ip, &by_id) {
        Ok(()) => tracing::info!("{} is now {}", by_ip.display(), by_id.display()),
        Err(e) => tracing::warn!("cannot rename {}: {e}", by_ip.display()),
    }
}

impl Mark {
    pub fn position(&self) -> BinlogPos {
        BinlogPos {
            index: self.binlog_index,
            offset: self.binlog_offset,
        }
    }

    pub fn set_position(&mut self, pos: BinlogPos) {
        self.binlog_index = pos.index;
        self.binlog_offset = pos.offset;
    }

    /// `Ok(None)` when there is no mark yet (a peer never synced to).
    pub fn load(path: &Path) -> io::Result<Option<Mark>> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let ini = IniFile::parse(&text, path)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let g = ini.global();
        let bad = |e: fdfs_proto::config::ConfigError| {
            io::Error::new(io::ErrorKind::InvalidData, e.to_string())
        };
        let num = |key: &str| g.int(key, 0).map_err(bad).map(|v| v.max(0));
        Ok(Some(Mark {
            binlog_index: num("binlog_index")? as u32,
            binlog_offset: num("binlog_offset")? as u64,
            need_sync_old: g.bool("need_sync_old", false).map_err(bad)?,
            sync_old_done: g.bool("sync_old_done", false).map_err(bad)?,
            until_timestamp: num("until_timestamp")?,
            scan_row_count: num("scan_row_count")? as u64,
            sync_row_count: num("sync_row_count")? as u64,
        }))
    }

    pub fn save(&self, path: &Path) -> io::Result<()> {
        let text = format!(
            "binlog_index={}\nbinlog_offset={}\nneed_sync_old={}\nsync_old_done={}\n\
             until_timestamp={}\nscan_row_count={}\nsync_row_count={}\n",
            self.binlog_index,
            self.binlog_offset,
            self.need_sync_old as u8,
            self.sync_old_done as u8,
            self.until_timestamp,
            self.scan_row_count,
            self.sync_row_count
        );
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        fs::write(&tmp, text)?;
        fs::rename(&tmp, path)
    }
}

/// Why a saved position cannot belong to the binlog as it is now (the binlog was lost
/// or cut under the marks), if it cannot. `end` is the end of the binlog being written,
/// `size_of(n)` the size of `binlog.n` (`None`: missing).
pub fn check_position(
    pos: BinlogPos,
    end: BinlogPos,
    size_of: impl Fn(u32) -> Option<u64>,
) -> Option<String> {
    if pos > end {
        return Some(format!(
            "binlog.{:03} offset {} is past the binlog's end (binlog.{:03} offset {})",
            pos.index, pos.offset, end.index, end.offset
        ));
    }
    if pos.index < end.index && pos.offset > 0 {
        return match size_of(pos.index) {
            None => Some(format!(
                "binlog.{:03} (offset {}) is missing",
                pos.index, pos.offset
            )),
            Some(size) if pos.offset > size => Some(format!(
                "binlog.{:03} offset {} is past that file's end ({size})",
                pos.index, pos.offset
            )),
            Some(_) => None,
        };
    }
    None
}

/// Names of the mark files in `sync_dir` (one per peer).
pub fn list(sync_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(sync_dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "mark"))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_past_a_lost_binlog_are_caught() {
        let pos = |index, offset| BinlogPos { index, offset };
        let sizes = |n: u32| match n {
            0 => Some(500),
            1 => Some(100),
            _ => None,
        };
        // A binlog started over (index 0, empty) under a mark of 1234.
        let why = check_position(pos(0, 1234), pos(0, 0), sizes).unwrap();
        assert!(why.contains("binlog.000 offset 1234"), "{why}");
        assert!(why.contains("past the binlog's end"), "{why}");
        // A mark at or before the end is fine.
        assert_eq!(check_position(pos(0, 0), pos(0, 0), sizes), None);
        assert_eq!(check_position(pos(1, 100), pos(1, 100), sizes), None);
        assert_eq!(check_position(pos(0, 500), pos(1, 100), sizes), None);
        // A later file index than the one being written.
        assert!(check_position(pos(2, 0), pos(1, 100), sizes).is_some());
        // An older file that is shorter than the mark, or gone.
        assert!(check_position(pos(0, 501), pos(1, 100), sizes).is_some());
        assert!(check_position(pos(0, 10), pos(3, 0), |_| None)
            .unwrap()
            .contains("missing"));
        // Offset 0 of a missing older file: nothing was read from it.
        assert_eq!(check_position(pos(0, 0), pos(3, 0), |_| None), None);
    }

    #[test]
    fn round_trip_and_upstream_keys() {
        let d = std::env::temp_dir().join(format!("fdfs-mark-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let peer = StorageBrief {
            status: 0,
            port: 23000,
            id: "100002".into(),
            ip: "127.0.0.62".into(),
        };
        assert!(path(&d, &peer, true).ends_with("100002.mark"));
        // A mark named by IP is adopted once storage ids are on.
        fs::write(path(&d, &peer, false), "binlog_offset=7\n").unwrap();
        adopt_ip_named(&d, &peer);
        let adopted = Mark::load(&path(&d, &peer, true)).unwrap().unwrap();
        assert_eq!(adopted.binlog_offset, 7);
        fs::remove_file(path(&d, &peer, true)).unwrap();
        let p = path(&d, &peer, false);
        assert!(p.ends_with("127.0.0.62_23000.mark"));
        assert_eq!(Mark::load(&p).unwrap(), None);
        let m = Mark {
            binlog_index: 2,
            binlog_offset: 12345,
            need_sync_old: true,
            sync_old_done: false,
            until_timestamp: 1_795_475_000,
            scan_row_count: 900,
            sync_row_count: 850,
        };
        m.save(&p).unwrap();
        assert_eq!(Mark::load(&p).unwrap(), Some(m.clone()));
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("binlog_index=2\nbinlog_offset=12345\nneed_sync_old=1\n"));
        assert_eq!(
            m.position(),
            BinlogPos {
                index: 2,
                offset: 12345
            }
        );
        // A mark written by upstream (same keys, other order, extra keys) loads too.
        fs::write(
            &p,
            "sync_row_count=1\nbinlog_offset=7\nbinlog_index=0\nneed_sync_old=0\n\
             sync_old_done=1\nuntil_timestamp=3\nscan_row_count=1\n",
        )
        .unwrap();
        let up = Mark::load(&p).unwrap().unwrap();
        assert_eq!(up.binlog_offset, 7);
        assert!(up.sync_old_done && !up.need_sync_old);
        assert!(!d.join("127.0.0.62_23000.mark.tmp").exists());
        let _ = fs::remove_dir_all(d);
    }
}
