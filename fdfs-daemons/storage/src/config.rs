//! `storage.conf`: every upstream key is accepted; the ones this daemon uses are checked
//! at start-up so that a bad value stops it with file, line and key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use fdfs_proto::addr::HostPort;
use fdfs_proto::allow_hosts::AllowHosts;
use fdfs_proto::config::{ConfigError, IniFile};
use fdfs_proto::{valid_group_name, DEFAULT_STORAGE_PORT};

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub disabled: bool,
    /// Empty when `storage.conf` leaves it to the trackers (see `identity`).
    pub group_name: String,
    /// `server_id`: the id this storage declares, taken by trackers that trust it
    /// (`trust_storage_server_id`).
    pub server_id: Option<String>,
    pub bind_addr: Option<IpAddr>,
    /// Bind outgoing connections to `bind_addr` too.
    pub client_bind: bool,
    pub port: u16,
    pub connect_timeout: Duration,
    pub network_timeout: Duration,
    pub heart_beat_interval: Duration,
    pub stat_report_interval: Duration,
    pub base_path: PathBuf,
    pub max_connections: usize,
    /// Largest request body that is not file content.
    pub buff_size: usize,
    pub store_paths: Vec<StorePathConfig>,
    pub subdir_count_per_path: u32,
    pub tracker_servers: Vec<HostPort>,
    /// 0: rotate XX/YY every `file_distribute_rotate_count` files; 1: hash the name.
    pub file_distribute_path_mode: u8,
    pub file_distribute_rotate_count: u32,
    pub fsync_after_written_bytes: u64,
    /// Flush content, directory and binlog record before acknowledging a change
    /// (extension, on by default; see `durability`).
    pub fsync_before_reply: bool,
    /// Bytes per second the scrub reads to check files against their IDs (extension;
    /// 0 turns it off).
    pub scrub_bytes_per_second: u64,
    pub upload_priority: i64,
    pub log_level: String,
    /// Uploads answer only once this many peers have the new file (0: at once, as
    /// upstream).
    pub sync_wait_replicas: usize,
    /// ... or once this much time has passed.
    pub sync_wait_timeout: Duration,
    /// `allow_hosts`: addresses that may connect at all (everyone by default).
    pub allow_hosts: Arc<AllowHosts>,
    /// `metrics_listen` (extension): where `/metrics`, `/healthz` and `/readyz` are
    /// served; `None` (the default): nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `modify_allow_hosts`: addresses that may delete or change files (everyone by
    /// default; an extension).
    pub modify_allow_hosts: AllowHosts,
    /// `cluster_secret`: trackers and peer storages must prove it (extension).
    pub cluster_secret: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct StorePathConfig {
    pub path: PathBuf,
    pub readonly: bool,
}

impl StorageConfig {
    pub fn load(path: &Path) -> Result<StorageConfig, ConfigError> {
        let ini = IniFile::load(path)?;
        let g = ini.global();
        // Left out, the trackers tell it from storage_ids.conf (109).
        let group_name = g.str("group_name").unwrap_or("").to_string();
        if !group_name.is_empty() && !valid_group_name(&group_name) {
            return Err(g.invalid("group_name", "1 to 16 characters from [A-Za-z0-9]"));
        }
        if g.bool("check_file_duplicate", false)? {
            return Err(g.invalid(
                "check_file_duplicate",
                "false: duplicate detection through FastDHT is not supported, and storing \
                 full copies would leave FastDHT's reference counts wrong",
            ));
        }
        let bind_addr = match g.str("bind_addr").unwrap_or("") {
            "" => None,
            text => Some(
                text.parse::<IpAddr>()
                    .map_err(|_| g.invalid("bind_addr", "an IP address"))?,
            ),
        };
        let base_path = PathBuf::from(g.require_str("base_path")?);
        let store_path_count = g.int_in("store_path_count", 1, 1, 256)? as usize;
        let mut store_paths = Vec::with_capacity(store_path_count);
        for i in 0..store_path_count {
            let key = format!("store_path{i}");
            let dir = match g.str(&key) {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ if i == 0 => base_path.clone(),
                _ => return Err(g.invalid(&key, "a directory (store_path_count says it exists)")),
            };
            let readonly = g.bool(&format!("store_path{i}_readonly"), false)?;
            store_paths.push(StorePathConfig {
                path: dir,
                readonly,
            });
        }
        let mut tracker_servers = Vec::new();
        for t in g.all("tracker_server") {
            if t.trim().is_empty() {
                continue;
            }
            let t = HostPort::parse(t, None)
                .map_err(|why: String| g.invalid("tracker_server", why.as_str()))?;
            tracker_servers.push(t);
        }
        if tracker_servers.is_empty() {
            return Err(g.invalid("tracker_server", "at least one host:port"));
        }
        let secs = |key: &str, default: i64, min: i64| -> Result<Duration, ConfigError> {
            Ok(Duration::from_secs(
                g.int_in(key, default, min, 86400 * 365)? as u64,
            ))
        };
        Ok(StorageConfig {
            path: path.to_path_buf(),
            disabled: g.bool("disabled", false)?,
            group_name,
            server_id: match g.str("server_id").unwrap_or("") {
                "" => None,
                id if fdfs_proto::storage_ids::valid_server_id(id) => Some(id.to_string()),
                _ => {
                    return Err(g.invalid(
                        "server_id",
                        "a number from 1 to 16777215 without leading zeros",
                    ))
                }
            },
            bind_addr,
            client_bind: g.bool("client_bind", true)?,
            port: g.int_in("port", DEFAULT_STORAGE_PORT as i64, 1, 65535)? as u16,
            connect_timeout: secs("connect_timeout", 10, 1)?,
            network_timeout: secs("network_timeout", 60, 1)?,
            heart_beat_interval: secs("heart_beat_interval", 30, 1)?,
            stat_report_interval: secs("stat_report_interval", 300, 1)?,
            base_path,
            max_connections: g.int_in("max_connections", 256, 1, 1_000_000)? as usize,
            buff_size: g.size("buff_size", 256 * 1024)?.clamp(4096, 64 << 20) as usize,
            store_paths,
            subdir_count_per_path: g.int_in("subdir_count_per_path", 256, 1, 256)? as u32,
            tracker_servers,
            file_distribute_path_mode: g.int_in("file_distribute_path_mode", 0, 0, 1)? as u8,
            file_distribute_rotate_count: g.int_in(
                "file_distribute_rotate_count",
                100,
                1,
                i32::MAX as i64,
            )? as u32,
            fsync_after_written_bytes: g.size("fsync_after_written_bytes", 0)?,
            fsync_before_reply: g.bool("fsync_before_reply", true)?,
            scrub_bytes_per_second: g.size("scrub_bytes_per_second", 8 << 20)?,
            upload_priority: g.int("upload_priority", 10)?,
            log_level: g.str("log_level").unwrap_or("info").to_string(),
            sync_wait_replicas: g.int_in("sync_wait_replicas", 0, 0, 32)? as usize,
            sync_wait_timeout: Duration::from_millis(g.int_in(
                "sync_wait_timeout_ms",
                5000,
                0,
                3_600_000,
            )? as u64),
            allow_hosts: Arc::new(
                AllowHosts::parse(g.all("allow_hosts"))
                    .map_err(|e| g.invalid("allow_hosts", &e))?,
            ),
            metrics_listen: g.listen_addr("metrics_listen")?,
            modify_allow_hosts: AllowHosts::parse(g.all("modify_allow_hosts"))
                .map_err(|e| g.invalid("modify_allow_hosts", &e))?,
            cluster_secret: fdfs_proto::cluster_auth::parse_secret(g.str("cluster_secret"))
                .map_err(|e| g.invalid("cluster_secret", &e))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join("storage.conf");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn upstream_sample_keys_are_accepted() {
        let dir = std::env::temp_dir().join(format!("fdfs-stcfg-{}", std::process::id()));
        let p = write(
            &dir,
            "disabled = false\ngroup_name = group1\nbind_addr =\nclient_bind = true\nport = 23000\n\
             connect_timeout = 5\nnetwork_timeout = 60\nheart_beat_interval = 30\n\
             stat_report_interval = 60\nbase_path = /home/yuqing/fastdfs\nmax_connections = 1024\n\
             buff_size = 256KB\naccept_threads = 1\nwork_threads = 4\ndisk_rw_separated = true\n\
             store_path_count = 2\nstore_path0 = /data/fdfs0\nstore_path1 = /data/fdfs1\n\
             store_path1_readonly = yes\nsubdir_count_per_path = 256\n\
             tracker_server = 192.168.209.121:22122\ntracker_server = 192.168.209.122:22122\n\
             log_level = info\nrun_by_group=\nrun_by_user =\nallow_hosts = *\n\
             file_distribute_path_mode = 0\nfile_distribute_rotate_count = 100\n\
             fsync_after_written_bytes = 0\nsync_log_buff_interval = 1\n\
             [access-log]\nenabled = false\n",
        );
        let c = StorageConfig::load(&p).unwrap();
        assert_eq!(c.group_name, "group1");
        assert_eq!(c.port, 23000);
        assert_eq!(c.buff_size, 256 * 1024);
        assert_eq!(c.store_paths.len(), 2);
        assert!(c.store_paths[1].readonly);
        assert_eq!(c.tracker_servers.len(), 2);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn timeouts_default_as_upstream() {
        // Upstream storages send ACTIVE_TEST on an idle replication connection every 30 s:
        // a shorter default timeout would drop theirs between two tests.
        let dir = std::env::temp_dir().join(format!("fdfs-stcfg-def-{}", std::process::id()));
        let p = write(
            &dir,
            "group_name = g1\nbase_path = /tmp\ntracker_server = a:1\n",
        );
        let c = StorageConfig::load(&p).unwrap();
        assert_eq!(c.network_timeout, Duration::from_secs(60));
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_values_name_the_key() {
        let dir = std::env::temp_dir().join(format!("fdfs-stcfg-bad-{}", std::process::id()));
        let p = write(
            &dir,
            "group_name = group1\nbase_path = /tmp\ntracker_server = 127.0.0.1:22122\nport = abc\n",
        );
        let err = StorageConfig::load(&p).unwrap_err().to_string();
        assert!(err.contains("port") && err.contains(":4"), "{err}");
        let p = write(
            &dir,
            "group_name = group/1\nbase_path = /tmp\ntracker_server = a:1\n",
        );
        assert!(StorageConfig::load(&p)
            .unwrap_err()
            .to_string()
            .contains("group_name"));
        let p = write(
            &dir,
            "group_name = g1\nbase_path = /tmp\ntracker_server = a:1\ncheck_file_duplicate = 1\n",
        );
        let err = StorageConfig::load(&p).unwrap_err().to_string();
        assert!(
            err.contains("check_file_duplicate") && err.contains(":4"),
            "{err}"
        );
        let p = write(
            &dir,
            "base_path = /tmp\ntracker_server = a:1\nserver_id = 0100\n",
        );
        assert!(StorageConfig::load(&p)
            .unwrap_err()
            .to_string()
            .contains("server_id"));
        // No group_name: the trackers tell it.
        let p = write(
            &dir,
            "base_path = /tmp\ntracker_server = a:1\nserver_id = 100\n",
        );
        let c = StorageConfig::load(&p).unwrap();
        assert_eq!(
            (c.group_name.as_str(), c.server_id.as_deref()),
            ("", Some("100"))
        );
        let p = write(&dir, "group_name = g1\nbase_path = /tmp\n");
        assert!(StorageConfig::load(&p)
            .unwrap_err()
            .to_string()
            .contains("tracker_server"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
