//! `Storage`: everything one storage daemon owns, shared by the connection handlers and
//! the tracker links.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::RwLock;

use fdfs_proto::fileid::Source;
use fdfs_proto::IpSize;

use crate::binlog::Binlog;
use crate::config::StorageConfig;
use crate::identity::Identity;
use crate::stats::Stats;
use crate::store::Store;
use crate::sync::SyncState;

pub struct Storage {
    pub cfg: StorageConfig,
    pub store: Store,
    pub binlog: std::sync::Arc<Binlog>,
    pub stats: Stats,
    /// Requests by command and result, and their latency (`/metrics`).
    pub requests: fdfs_runtime::metrics::RequestMetrics,
    /// Replication: group members, peers' progress, what we received.
    pub sync: SyncState,
    /// Recent deletes, so that a replayed copy does not bring a file back.
    pub tombstones: crate::tombstones::Tombstones,
    /// One change at a time per appender, and their CRC32s.
    pub appenders: std::sync::Arc<crate::appenders::Appenders>,
    /// Damaged files found, and their healing.
    pub integrity: crate::integrity::Integrity,
    /// Trunk files: settings, the trunk server, and the allocator when it is us.
    pub trunk: crate::trunk::Trunk,
    /// Our own address as the cluster sees it: `bind_addr`, else learnt from the tracker
    /// connection. It goes into every new file name.
    my_ip: RwLock<Option<IpAddr>>,
    /// How the cluster names us (settled with the trackers at start-up).
    identity: RwLock<Identity>,
    /// IP field width in file-info replies; follows the tracker's setting.
    ip_size: RwLock<IpSize>,
    pub up_time: i64,
}

impl Storage {
    pub fn new(cfg: StorageConfig, store: Store, binlog: Binlog) -> Storage {
        let my_ip = cfg.bind_addr;
        Storage {
            cfg,
            store,
            binlog: std::sync::Arc::new(binlog),
            stats: Stats::default(),
            requests: Default::default(),
            sync: SyncState::default(),
            tombstones: Default::default(),
            appenders: Default::default(),
            integrity: Default::default(),
            trunk: Default::default(),
            my_ip: RwLock::new(my_ip),
            identity: RwLock::new(Identity::default()),
            ip_size: RwLock::new(IpSize::V4),
            up_time: fdfs_runtime::unix_now(),
        }
    }

    pub fn stat_file(&self) -> PathBuf {
        self.cfg.base_path.join("data").join("storage_stat.dat")
    }

    pub fn my_ip(&self) -> Option<IpAddr> {
        *self.my_ip.read().unwrap()
    }

    /// Learns our address from a connection's local end, unless `bind_addr` fixes it.
    pub fn learn_ip(&self, ip: IpAddr) {
        if self.cfg.bind_addr.is_none() && !ip.is_unspecified() {
            *self.my_ip.write().unwrap() = Some(ip);
        }
    }

    pub fn identity(&self) -> Identity {
        self.identity.read().unwrap().clone()
    }

    pub fn set_identity(&self, identity: Identity) {
        *self.identity.write().unwrap() = identity;
    }

    /// The trackers' `storage_ids.conf`, fetched after start-up.
    pub fn set_storage_ids(&self, ids: fdfs_proto::storage_ids::ServerIds) {
        self.identity.write().unwrap().ids = Some(std::sync::Arc::new(ids));
    }

    /// Our id in the cluster: the server id with storage ids, else the IP text.
    pub fn my_id(&self) -> Option<String> {
        let identity = self.identity.read().unwrap();
        match &identity.server_id {
            Some(id) if identity.by_server_id => Some(id.clone()),
            _ => self.my_ip().map(|ip| ip.to_string()),
        }
    }

    /// Whether storages are named by server id (marks are then `<id>.mark`).
    pub fn by_server_id(&self) -> bool {
        self.identity.read().unwrap().by_server_id
    }

    /// Whether a file whose name holds `source` was first stored here.
    pub fn is_mine(&self, source: &Source) -> Option<bool> {
        if let Some(me) = self.identity.read().unwrap().source() {
            return Some(*source == me);
        }
        match (source, self.my_ip()) {
            (Source::Ip(ip), Some(IpAddr::V4(me))) => Some(*ip == me),
            _ => None,
        }
    }

    /// The source field of new file names.
    pub fn source(&self, fallback: IpAddr) -> Source {
        if let Some(id) = self.identity.read().unwrap().source() {
            return id;
        }
        let ip = self.my_ip().unwrap_or(fallback);
        match ip {
            IpAddr::V4(v4) => Source::Ip(v4),
            // IPv6 in IP mode keeps bytes 8..12 of the address, as upstream does.
            IpAddr::V6(v6) => {
                let o = v6.octets();
                Source::Ip(Ipv4Addr::new(o[8], o[9], o[10], o[11]))
            }
        }
    }

    pub fn ip_size(&self) -> IpSize {
        *self.ip_size.read().unwrap()
    }

    pub fn set_ip_size(&self, size: IpSize) {
        *self.ip_size.write().unwrap() = size;
    }
}
