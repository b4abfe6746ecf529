//! `tracker.conf`: every upstream key is accepted (unknown keys are ignored, as upstream's
//! ini reader does); the keys this tracker acts on are parsed and validated here, so the
//! rest of the daemon only ever sees typed, checked values.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fdfs_proto::config::{ConfigError, IniFile, Section, SpaceLimit, TimeOfDay};
use fdfs_proto::storage_ids::ServerIds;
use fdfs_proto::IpSize;

/// `store_lookup`: how an upload without a group picks one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLookup {
    RoundRobin,
    /// Always `store_group`.
    Fixed(String),
    /// The group with the most free space.
    LoadBalance,
}

/// `store_server`: which storage of the group receives an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreServer {
    RoundRobin,
    FirstById,
    /// Lowest `upload_priority` wins.
    ByPriority,
}

/// `store_path`: which store path of the storage receives an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorePath {
    RoundRobin,
    /// The path with the most free space.
    LoadBalance,
}

/// `download_server`: who serves a read first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadServer {
    RoundRobin,
    SourceFirst,
}

/// `id_type_in_filename`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdType {
    Ip,
    Id,
}

/// Where uploads and reads go (§7 of the protocol notes); shared with the cluster state.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub store_lookup: StoreLookup,
    pub store_server: StoreServer,
    pub store_path: StorePath,
    pub download_server: DownloadServer,
    pub reserved_storage_space: SpaceLimit,
    /// `storage_sync_file_max_delay`, seconds.
    pub sync_file_max_delay: i64,
    /// `storage_sync_file_max_time`, seconds.
    pub sync_file_max_time: i64,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            store_lookup: StoreLookup::RoundRobin,
            store_server: StoreServer::RoundRobin,
            store_path: StorePath::RoundRobin,
            download_server: DownloadServer::RoundRobin,
            reserved_storage_space: SpaceLimit::Bytes(DEFAULT_RESERVED_BYTES),
            sync_file_max_delay: 86400,
            sync_file_max_time: 300,
        }
    }
}

/// Trunk settings: not implemented, but storages ask for them in 75 PARAMETER_REQ.
#[derive(Debug, Clone, PartialEq)]
pub struct TrunkSettings {
    pub slot_min_size: u64,
    pub slot_max_size: u64,
    pub alloc_alignment_size: u64,
    pub file_size: u64,
    pub create_file_advance: bool,
    pub create_file_time_base: TimeOfDay,
    pub create_file_interval: i64,
    pub create_file_space_threshold: u64,
    pub init_check_occupying: bool,
    pub init_reload_from_binlog: bool,
    pub free_space_merge: bool,
    pub delete_unused_trunk_files: bool,
    pub compress_binlog_min_interval: i64,
    pub compress_binlog_interval: i64,
    pub compress_binlog_time_base: TimeOfDay,
    pub binlog_max_backups: i64,
}

const DEFAULT_RESERVED_BYTES: u64 = 1024 * 1024 * 1024;
const MB: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// The file this was read from (for messages).
    pub path: PathBuf,
    pub disabled: bool,
    /// `bind_addr`; `None` = all addresses.
    pub bind_addr: Option<IpAddr>,
    pub port: u16,
    pub connect_timeout: Duration,
    pub network_timeout: Duration,
    pub base_path: PathBuf,
    pub max_connections: usize,
    /// `metrics_listen` (extension): where `/metrics`, `/healthz`, `/readyz` and the
    /// console are served; `None` (the default): nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `storage_metrics_port` (extension): the port of the storages' `metrics_listen`;
    /// the console then charts their request latency (read from their `/metrics`).
    pub storage_metrics_port: Option<u16>,
    /// `allow_hosts`: client addresses accepted (everyone by default).
    pub allow_hosts: std::sync::Arc<fdfs_proto::allow_hosts::AllowHosts>,
    /// `cluster_secret`: storages and other trackers must prove it (extension; none by
    /// default).
    pub cluster_secret: Option<Vec<u8>>,
    /// Accepted for compatibility; tokio schedules the work.
    pub work_threads: usize,
    /// Largest request body accepted.
    pub buff_size: u64,
    pub placement: Placement,
    /// Seconds without a heartbeat before a storage is considered OFFLINE.
    pub check_active_interval: i64,
    pub response_ip_size: IpSize,
    /// Validated `log_level` word (syslog names).
    pub log_level: String,
    pub use_storage_id: bool,
    /// `storage_ids.conf`, read at start-up when `use_storage_id` is on.
    pub storage_ids: Option<std::sync::Arc<ServerIds>>,
    pub id_type_in_filename: IdType,
    pub trust_storage_server_id: bool,
    pub storage_ip_changed_auto_adjust: bool,
    pub store_slave_file_use_link: bool,
    pub use_trunk_file: bool,
    pub trunk: TrunkSettings,
}

impl TrackerConfig {
    /// Reads and validates `path`. Errors name the file, the line and the key.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let ini = IniFile::load(path.as_ref())?;
        Self::from_ini(&ini)
    }

    pub fn from_ini(ini: &IniFile) -> Result<Self, ConfigError> {
        let g = ini.global();
        let base_path = base_path(&g)?;
        let store_lookup = match g.int_in("store_lookup", 0, 0, 2)? {
            0 => StoreLookup::RoundRobin,
            1 => {
                let name = g.str("store_group").unwrap_or_default();
                if !fdfs_proto::valid_group_name(name) {
                    return Err(g.invalid(
                        "store_group",
                        "a group name of 1 to 16 letters and digits (required by store_lookup = 1)",
                    ));
                }
                StoreLookup::Fixed(name.to_string())
            }
            _ => StoreLookup::LoadBalance,
        };
        let use_trunk_file = g.bool("use_trunk_file", false)?;
        let store_server = match g.int_in("store_server", 0, 0, 2)? {
            // With trunk files, round robin becomes "first by id", as upstream does.
            0 if use_trunk_file => StoreServer::FirstById,
            0 => StoreServer::RoundRobin,
            1 => StoreServer::FirstById,
            _ => StoreServer::ByPriority,
        };
        let store_path = match g.int("store_path", 0)? {
            0 => StorePath::RoundRobin,
            2 => StorePath::LoadBalance,
            _ => return Err(g.invalid("store_path", "0 (round robin) or 2 (most free space)")),
        };
        let download_server = match g.int_in("download_server", 0, 0, 1)? {
            0 => DownloadServer::RoundRobin,
            _ => DownloadServer::SourceFirst,
        };
        let log_level = g.str("log_level").unwrap_or("info").to_string();
        if fdfs_runtime::logging::level_from_name(&log_level).is_none() {
            return Err(g.invalid(
                "log_level",
                "one of emerg, alert, crit, error, warn, notice, info, debug",
            ));
        }
        let use_storage_id = g.bool("use_storage_id", false)?;
        let storage_ids = if use_storage_id {
            Some(std::sync::Arc::new(load_storage_ids(ini)?))
        } else {
            None
        };
        // auto: 16-byte addresses, unless a storage has an IPv6 one.
        let response_ip_size = match g.choice("response_ip_addr_size", &["auto", "IPv6"], 0)? {
            1 => IpSize::V6,
            _ if storage_ids.as_ref().is_some_and(|ids| ids.has_ipv6()) => IpSize::V6,
            _ => IpSize::V4,
        };
        let id_type_in_filename = match g.choice("id_type_in_filename", &["ip", "id"], 0)? {
            1 => IdType::Id,
            _ => IdType::Ip,
        };
        let trunk_file_size = g.size("trunk_file_size", 64 * MB)?;
        Ok(TrackerConfig {
            path: ini.path().to_path_buf(),
            disabled: g.bool("disabled", false)?,
            bind_addr: bind_addr(&g)?,
            port: g.int_in("port", 22122, 1, 65535)? as u16,
            connect_timeout: seconds(g.int_in("connect_timeout", 10, 1, 3600)?),
            network_timeout: seconds(g.int_in("network_timeout", 60, 1, 86400)?),
            base_path,
            max_connections: g.int_in("max_connections", 256, 1, 1_000_000)? as usize,
            metrics_listen: g.listen_addr("metrics_listen")?,
            storage_metrics_port: match g.int_in("storage_metrics_port", 0, 0, 65535)? {
                0 => None,
                port => Some(port as u16),
            },
            allow_hosts: std::sync::Arc::new(
                fdfs_proto::allow_hosts::AllowHosts::parse(g.all("allow_hosts"))
                    .map_err(|e| g.invalid("allow_hosts", &e))?,
            ),
            cluster_secret: fdfs_proto::cluster_auth::parse_secret(g.str("cluster_secret"))
                .map_err(|e| g.invalid("cluster_secret", &e))?,
            work_threads: g.int_in("work_threads", 4, 1, 1024)? as usize,
            buff_size: buff_size(&g)?,
            placement: Placement {
                store_lookup,
                store_server,
                store_path,
                download_server,
                reserved_storage_space: g.space(
                    "reserved_storage_space",
                    SpaceLimit::Bytes(DEFAULT_RESERVED_BYTES),
                )?,
                sync_file_max_delay: g.int_in(
                    "storage_sync_file_max_delay",
                    86400,
                    1,
                    i32::MAX as i64,
                )?,
                sync_file_max_time: g.int_in(
                    "storage_sync_file_max_time",
                    300,
                    1,
                    i32::MAX as i64,
                )?,
            },
            check_active_interval: g.int_in("check_active_interval", 100, 1, 86400)?,
            response_ip_size,
            log_level,
            use_storage_id,
            storage_ids,
            id_type_in_filename,
            trust_storage_server_id: g.bool("trust_storage_server_id", true)?,
            storage_ip_changed_auto_adjust: g.bool("storage_ip_changed_auto_adjust", true)?,
            store_slave_file_use_link: refused_if_on(
                &g,
                "store_slave_file_use_link",
                "false: slave files are stored as regular files, not as links",
            )?,
            use_trunk_file,
            trunk: TrunkSettings {
                // Capped as upstream caps them.
                slot_min_size: g.size("slot_min_size", 256)?.min(64 * 1024),
                slot_max_size: g
                    .size("slot_max_size", trunk_file_size / 8)?
                    .min(trunk_file_size / 2),
                alloc_alignment_size: g.size("trunk_alloc_alignment_size", 0)?,
                file_size: trunk_file_size,
                create_file_advance: g.bool("trunk_create_file_advance", false)?,
                create_file_time_base: g.time_of_day(
                    "trunk_create_file_time_base",
                    TimeOfDay { hour: 2, minute: 0 },
                )?,
                create_file_interval: g.int("trunk_create_file_interval", 86400)?,
                create_file_space_threshold: g.size("trunk_create_file_space_threshold", 0)?,
                init_check_occupying: g.bool("trunk_init_check_occupying", false)?,
                init_reload_from_binlog: g.bool("trunk_init_reload_from_binlog", false)?,
                free_space_merge: g.bool("trunk_free_space_merge", false)?,
                delete_unused_trunk_files: g.bool("delete_unused_trunk_files", false)?,
                compress_binlog_min_interval: g.int("trunk_compress_binlog_min_interval", 0)?,
                compress_binlog_interval: g.int("trunk_compress_binlog_interval", 0)?,
                compress_binlog_time_base: g.time_of_day(
                    "trunk_compress_binlog_time_base",
                    TimeOfDay { hour: 3, minute: 0 },
                )?,
                binlog_max_backups: g.int("trunk_binlog_max_backups", 0)?,
            },
        })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.base_path.join("data")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.base_path.join("logs")
    }

    /// Whether file names carry server ids (and a group's storages may use different
    /// ports: several instances on one host).
    pub fn ids_in_filenames(&self) -> bool {
        self.use_storage_id && self.id_type_in_filename == IdType::Id
    }

    /// Settings that are accepted but not acted on; main logs these once logging is up.
    pub fn unsupported_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.id_type_in_filename == IdType::Id && !self.use_storage_id {
            out.push("id_type_in_filename = id needs use_storage_id; using ip".to_string());
        }
        out
    }
}

fn seconds(n: i64) -> Duration {
    Duration::from_secs(n.max(0) as u64)
}

fn size_in(
    g: &Section<'_>,
    key: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let v = g.size(key, default)?;
    if !(min..=max).contains(&v) {
        return Err(g.invalid(key, &format!("a size between {min} and {max} bytes")));
    }
    Ok(v)
}

/// `buff_size`, or the newer `max_buff_size` when only that is given.
fn buff_size(g: &Section<'_>) -> Result<u64, ConfigError> {
    let key = if g.str("buff_size").is_none() && g.str("max_buff_size").is_some() {
        "max_buff_size"
    } else {
        "buff_size"
    };
    size_in(g, key, 256 * 1024, 4 * 1024, 64 * MB)
}

fn bind_addr(g: &Section<'_>) -> Result<Option<IpAddr>, ConfigError> {
    // Upstream accepts `v4`, `v6` or `v4,v6`; we listen on the first one.
    let Some(text) = g.str("bind_addr") else {
        return Ok(None);
    };
    let Some(first) = text.split(',').map(str::trim).find(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let first = first.trim_start_matches('[').trim_end_matches(']');
    first
        .parse::<IpAddr>()
        .map(Some)
        .map_err(|_| g.invalid("bind_addr", "an IPv4 or IPv6 address (or empty for all)"))
}

/// A switch whose feature is not implemented: on, it stops the start rather than be
/// ignored, since ignoring it would change what is stored or where.
fn refused_if_on(g: &Section<'_>, key: &str, expected: &str) -> Result<bool, ConfigError> {
    if g.bool(key, false)? {
        return Err(g.invalid(key, expected));
    }
    Ok(false)
}

/// `storage_ids_filename` (relative to the configuration file's directory), read and
/// checked; an error names the file and the line.
pub fn load_storage_ids(ini: &IniFile) -> Result<ServerIds, ConfigError> {
    let g = ini.global();
    let name = g.str("storage_ids_filename").unwrap_or("");
    if name.is_empty() {
        return Err(g.invalid(
            "storage_ids_filename",
            "the storage_ids.conf file (required by use_storage_id = true)",
        ));
    }
    fdfs_proto::storage_ids::load(ini.path(), name)
        .map_err(|why| g.invalid("storage_ids_filename", &why))
}

fn base_path(g: &Section<'_>) -> Result<PathBuf, ConfigError> {
    let text = g.require_str("base_path")?;
    let path = PathBuf::from(text);
    if !path.is_absolute() {
        return Err(g.invalid("base_path", "an absolute directory path"));
    }
    if !path.is_dir() {
        std::fs::create_dir_all(&path).map_err(|e| {
            g.invalid(
                "base_path",
                &format!("an existing or creatable directory ({e})"),
            )
        })?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory, removed when the test is done with it.
    struct Scratch(PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = PathBuf;
        fn deref(&self) -> &PathBuf {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("fdfs-tcfg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// The upstream sample tracker.conf of 6.16.1 (comments shortened).
    const SAMPLE: &str = "\
# is this config file disabled
disabled = false
bind_addr =
port = 22122
connect_timeout = 5
network_timeout = 60
base_path = @BASE@
max_connections = 1024
accept_threads = 1
work_threads = 4
min_buff_size = 8KB
max_buff_size = 128KB
store_lookup = 2
store_group = group2
store_server = 0
store_path = 0
download_server = 0
reserved_storage_space = 20%
log_level = info
run_by_group=
run_by_user =
allow_hosts = *
sync_log_buff_interval = 1
check_active_interval = 120
thread_stack_size = 256KB
storage_ip_changed_auto_adjust = true
storage_sync_file_max_delay = 86400
storage_sync_file_max_time = 300
use_trunk_file = false
slot_min_size = 256
slot_max_size = 1MB
trunk_alloc_alignment_size = 256
trunk_free_space_merge = true
delete_unused_trunk_files = false
trunk_file_size = 64MB
trunk_create_file_advance = false
trunk_create_file_time_base = 02:00
trunk_create_file_interval = 86400
trunk_create_file_space_threshold = 20G
trunk_init_check_occupying = false
trunk_init_reload_from_binlog = false
trunk_compress_binlog_min_interval = 86400
trunk_compress_binlog_interval = 86400
trunk_compress_binlog_time_base = 03:00
trunk_binlog_max_backups = 7
use_storage_id = false
storage_ids_filename = storage_ids.conf
id_type_in_filename = id
store_slave_file_use_link = false
rotate_error_log = false
error_log_rotate_time = 00:00
compress_old_error_log = false
compress_error_log_days_before = 7
rotate_error_log_size = 0
log_file_keep_days = 0
use_connection_pool = true
connection_pool_max_idle_time = 3600
http.server_port = 8080
http.check_alive_interval = 30
http.check_alive_type = tcp
http.check_alive_uri = /status.html
response_ip_addr_size = auto
";

    fn parse(text: &str, dir: &Path) -> Result<TrackerConfig, ConfigError> {
        let text = text.replace("@BASE@", &dir.join("base").display().to_string());
        let path = dir.join("tracker.conf");
        std::fs::write(&path, text).unwrap();
        TrackerConfig::load(&path)
    }

    #[test]
    fn upstream_sample_parses() {
        let dir = scratch("sample");
        let c = parse(SAMPLE, &dir).unwrap();
        assert_eq!(c.port, 22122);
        assert_eq!(c.bind_addr, None);
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.placement.store_lookup, StoreLookup::LoadBalance);
        assert_eq!(c.placement.reserved_storage_space, SpaceLimit::Ratio(0.2));
        assert_eq!(c.check_active_interval, 120);
        assert_eq!(c.response_ip_size, IpSize::V4);
        assert_eq!(c.id_type_in_filename, IdType::Id);
        assert_eq!(c.trunk.slot_max_size, MB);
        assert!(c.base_path.is_dir(), "base_path is created");
        assert_eq!(c.buff_size, 128 * 1024, "max_buff_size of the sample");
    }

    #[test]
    fn defaults_when_keys_are_absent() {
        let dir = scratch("defaults");
        let c = parse("base_path = @BASE@\n", &dir).unwrap();
        assert_eq!(c.placement, Placement::default());
        assert_eq!(c.check_active_interval, 100);
        assert_eq!(c.network_timeout, Duration::from_secs(60));
        assert!(c.unsupported_warnings().is_empty());
    }

    #[test]
    fn invalid_values_name_file_line_and_key() {
        let dir = scratch("invalid");
        for (line, expect) in [
            ("port = 70000", "port"),
            ("store_lookup = 3", "store_lookup"),
            ("store_path = 1", "store_path"),
            ("reserved_storage_space = 120%", "reserved_storage_space"),
            ("response_ip_addr_size = 32", "response_ip_addr_size"),
            ("log_level = chatty", "log_level"),
            ("bind_addr = not-an-ip", "bind_addr"),
            ("use_trunk_file = maybe", "use_trunk_file"),
        ] {
            let err = parse(&format!("base_path = @BASE@\n{line}\n"), &dir)
                .unwrap_err()
                .to_string();
            assert!(err.contains("tracker.conf:2"), "{line}: {err}");
            assert!(err.contains(expect), "{line}: {err}");
        }
    }

    #[test]
    fn store_group_required_for_fixed_lookup() {
        let dir = scratch("fixed");
        let err = parse("base_path = @BASE@\nstore_lookup = 1\n", &dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("store_group"), "{err}");
        let c = parse(
            "base_path = @BASE@\nstore_lookup = 1\nstore_group = g7\n",
            &dir,
        )
        .unwrap();
        assert_eq!(c.placement.store_lookup, StoreLookup::Fixed("g7".into()));
        let err = parse(
            "base_path = @BASE@\nstore_lookup = 1\nstore_group = bad-name\n",
            &dir,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("tracker.conf:3"), "{err}");
    }

    #[test]
    fn base_path_is_required() {
        let dir = scratch("nobase");
        let err = parse("port = 22122\n", &dir).unwrap_err().to_string();
        assert!(err.contains("base_path"), "{err}");
        let err = parse("base_path = relative/dir\n", &dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tracker.conf:1"), "{err}");
    }

    #[test]
    fn features_not_implemented_stop_the_start() {
        let dir = scratch("refuse");
        let key = "store_slave_file_use_link";
        let err = parse(&format!("base_path = @BASE@\n{key} = yes\n"), &dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains(key) && err.contains("tracker.conf:2"), "{err}");
        parse(&format!("base_path = @BASE@\n{key} = false\n"), &dir).unwrap();
    }

    #[test]
    fn trunk_files_as_upstream_reads_them() {
        let dir = scratch("trunk");
        let c = parse(
            "base_path = @BASE@\nuse_trunk_file = true\ntrunk_file_size = 4MB\n\
             slot_max_size = 3MB\nslot_min_size = 1MB\n",
            &dir,
        )
        .unwrap();
        assert!(c.use_trunk_file);
        // Round robin becomes "first by id"; slots are capped.
        assert_eq!(c.placement.store_server, StoreServer::FirstById);
        assert_eq!(c.trunk.slot_max_size, 2 * MB);
        assert_eq!(c.trunk.slot_min_size, 64 * 1024);
    }

    #[test]
    fn storage_ids_are_read_next_to_the_config() {
        let dir = scratch("ids");
        std::fs::write(
            dir.join("ids.conf"),
            "100001 group1 10.0.0.1\n100002 group1 [::1]:23001 rw=none\n",
        )
        .unwrap();
        let c = parse(
            "base_path = @BASE@\nuse_storage_id = true\nstorage_ids_filename = ids.conf\n\
             id_type_in_filename = id\n",
            &dir,
        )
        .unwrap();
        let ids = c.storage_ids.as_ref().unwrap();
        assert_eq!(ids.len(), 2);
        assert!(c.ids_in_filenames());
        // An IPv6 storage makes `auto` answer with 46-byte addresses.
        assert_eq!(c.response_ip_size, IpSize::V6);
        let err = parse(
            "base_path = @BASE@\nuse_storage_id = true\nstorage_ids_filename = none.conf\n",
            &dir,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("storage_ids_filename") && err.contains("none.conf"),
            "{err}"
        );
        let off = parse(
            "base_path = @BASE@\nstorage_ids_filename = none.conf\n",
            &dir,
        )
        .unwrap();
        assert!(off.storage_ids.is_none());
    }
}
