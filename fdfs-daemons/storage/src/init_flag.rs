//! `base_path/data/.data_init_flag`: facts about this storage that outlive restarts
//! (first join time, whether the initial copy from a peer is done, its source, and the
//! mark of each store path this storage initialised: `store_path_mark<N>`, as upstream
//! keeps them; see [`crate::store`]).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
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
    /// Per store path index: the mark written into that path when it was initialised.
    pub store_path_marks: BTreeMap<usize, String>,
    /// The newest trunk file id this storage created or heard of as trunk server.
    pub current_trunk_file_id: u32,
    /// Upstream's trunk binlog compression state, kept as it was found.
    pub trunk_last_compress_time: i64,
    pub trunk_binlog_compress_stage: i64,
}

const MARK_KEY: &str = "store_path_mark";

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
            current_trunk_file_id: g
                .int_in("current_trunk_file_id", 0, 0, i32::MAX as i64)
                .unwrap_or(0) as u32,
            trunk_last_compress_time: g.int("trunk_last_compress_time", 0).unwrap_or(0),
            trunk_binlog_compress_stage: g.int("trunk_binlog_compress_stage", 0).unwrap_or(0),
            store_path_marks: g
                .keys()
                .into_iter()
                .filter_map(|k| {
                    let i = k.strip_prefix(MARK_KEY)?.parse().ok()?;
                    let v = g.str(k).filter(|v| !v.is_empty())?;
                    Some((i, v.to_string()))
                })
                .collect(),
        })
    }

    pub fn save(&self, base_path: &Path) -> std::io::Result<()> {
        let mut text = format!(
            "storage_join_time={}\nsync_old_done={}\nsync_src_server={}\n\
             sync_until_timestamp={}\nlast_ip_addr={}\nlast_server_port={}\n",
            self.join_time,
            self.sync_old_done as u8,
            self.sync_src_server,
            self.sync_until_timestamp,
            self.last_ip_addr,
            self.last_server_port
        );
        // Upstream's trunk keys, where it writes them.
        text.push_str(&format!(
            "current_trunk_file_id={}\ntrunk_last_compress_time={}\n\
             trunk_binlog_compress_stage={}\n",
            self.current_trunk_file_id,
            self.trunk_last_compress_time,
            self.trunk_binlog_compress_stage
        ));
        for (i, m) in &self.store_path_marks {
            text.push_str(&format!("{MARK_KEY}{i}={m}\n"));
        }
        let target = path(base_path);
        let tmp = target.with_extension("tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(tmp, &target)?;
        crate::durability::sync_dir(target.parent().expect("in data/"))
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
            store_path_marks: [(0, "abc".to_string()), (2, "def".to_string())].into(),
            current_trunk_file_id: 7,
            ..Default::default()
        };
        f.save(&base).unwrap();
        assert_eq!(InitFlag::load(&base), Some(f));
        let _ = fs::remove_dir_all(base);
    }
}
