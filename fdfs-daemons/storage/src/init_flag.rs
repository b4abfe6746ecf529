//! `base_path/data/.data_init_flag`: facts about this storage that outlive restarts
//! (first join time, whether the initial copy from a peer is done, its source).

use std::fs;
use std::path::{Path, PathBuf};

use fdfs_proto::config::IniFile;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitFlag {
    pub join_time: i64,
    pub sync_old_done: bool,
    pub sync_src_server: String,
    pub sync_until_timestamp: i64,
    pub last_ip_addr: String,
    pub last_server_port: u16,
}

pub fn path(base_path: &Path) -> PathBuf {
    base_path.join("data").join(".data_init_flag")
}

impl InitFlag {
    /// Loads the flag file; `None` on the very first start.
    pub fn load(base_path: &Path) -> Option<InitFlag> {
        let ini = IniFile::load(path(base_path)).ok()?;
        let g = ini.global();
        Some(InitFlag {
            join_time: g.int("storage_join_time", 0).unwrap_or(0),
            sync_old_done: g.bool("sync_old_done", false).unwrap_or(false),
            sync_src_server: g.str("sync_src_server").unwrap_or("").to_string(),
            sync_until_timestamp: g.int("sync_until_timestamp", 0).unwrap_or(0),
            last_ip_addr: g.str("last_ip_addr").unwrap_or("").to_string(),
            last_server_port: g.int("last_server_port", 0).unwrap_or(0) as u16,
        })
    }

    pub fn save(&self, base_path: &Path) -> std::io::Result<()> {
        let text = format!(
            "storage_join_time={}\nsync_old_done={}\nsync_src_server={}\n\
             sync_until_timestamp={}\nlast_ip_addr={}\nlast_server_port={}\n",
            self.join_time,
            self.sync_old_done as u8,
            self.sync_src_server,
            self.sync_until_timestamp,
            self.last_ip_addr,
            self.last_server_port
        );
        let target = path(base_path);
        let tmp = target.with_extension("tmp");
        fs::write(&tmp, text)?;
        fs::rename(tmp, target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let base = std::env::temp_dir().join(format!("fdfs-init-{}", std::process::id()));
        fs::create_dir_all(base.join("data")).unwrap();
        assert_eq!(InitFlag::load(&base), None);
        let f = InitFlag {
            join_time: 1_795_475_000,
            sync_old_done: true,
            sync_src_server: "127.0.0.61".into(),
            sync_until_timestamp: 5,
            last_ip_addr: "127.0.0.62".into(),
            last_server_port: 23000,
        };
        f.save(&base).unwrap();
        assert_eq!(InitFlag::load(&base), Some(f));
        let _ = fs::remove_dir_all(base);
    }
}
