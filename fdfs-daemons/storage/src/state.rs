//! `Storage`: everything one storage daemon owns, shared by the connection handlers and
//! the tracker links.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::RwLock;

use fdfs_proto::fileid::Source;
use fdfs_proto::IpSize;

use crate::binlog::Binlog;
use crate::config::StorageConfig;
use crate::stats::Stats;
use crate::store::Store;
use crate::sync::SyncState;

pub struct Storage {
    pub cfg: StorageConfig,
    pub store: Store,
    pub binlog: std::sync::Arc<Binlog>,
    pub stats: Stats,
    /// Replication: group members, peers' progress, what we received.
    pub sync: SyncState,
    /// Recent deletes, so that a replayed copy does not bring a file back.
    pub tombstones: crate::tombstones::Tombstones,
    /// One change at a time per appender, and their CRC32s.
    pub appenders: std::sync::Arc<crate::appenders::Appenders>,
    /// Damaged files found, and their healing.
    pub integrity: crate::integrity::Integrity,
    /// Our own address as the cluster sees it: `bind_addr`, else learnt from the tracker
    /// connection. It goes into every new file name.
    my_ip: RwLock<Option<IpAddr>>,
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
            sync: SyncState::default(),
            tombstones: Default::default(),
            appenders: Default::default(),
            integrity: Default::default(),
            my_ip: RwLock::new(my_ip),
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

    /// The source field of new file names.
    pub fn source(&self, fallback: IpAddr) -> Source {
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
