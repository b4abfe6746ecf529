//! `fdfs_trackerd`: the FastDFS tracker, wire-compatible with FastDFS 6.16.1.
//!
//! - `config`: tracker.conf;
//! - `cluster`: the one owner of the cluster state (groups, storages, statuses,
//!   placement and read eligibility), pure logic;
//! - `server`: the per-connection loop and the command table;
//! - `service`: client and admin commands; `storage_cmds`: storage commands;
//! - `persist`: the files under `base_path/data`;
//! - `relationship`, `peers`, `tracker_cmds`: the tracker cluster (leader election,
//!   followers, commands between trackers).
//!
//! [`Tracker`] ties them together so `main` and the integration tests run the same code.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod config;
pub mod peers;
pub mod persist;
pub mod refusal;
pub mod relationship;
pub mod server;
pub mod service;
pub mod storage_cmds;
pub mod tracker_cmds;
pub mod trunk;
pub mod web;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use crate::relationship::{host_of, split_host, Relationship};
use std::time::Duration;

use fdfs_runtime::server::{serve_allowed, Shutdown};
use fdfs_runtime::unix_now;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::cluster::Cluster;
use crate::config::TrackerConfig;
use crate::server::Shared;

/// How long requests in flight may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);
/// Counters alone (no status change) are saved at most this often.
const STATS_SAVE_INTERVAL: i64 = 60;
/// `.tracker_status` is refreshed at least this often (its `last_check_time` tells the
/// next start how long this tracker was down).
const STATUS_SAVE_INTERVAL: i64 = 60;
/// After a longer downtime the saved state is stale: copy a peer's sys files.
const LONG_DOWNTIME: i64 = 600;

/// A tracker bound to its port, with its saved state loaded.
pub struct Tracker {
    listener: TcpListener,
    /// `metrics_listen`, bound with the main port so a taken address stops the start.
    web: Option<TcpListener>,
    shared: Arc<Shared>,
}

impl Tracker {
    /// Loads the state saved under `base_path/data` and binds `bind_addr:port`.
    pub async fn bind(config: TrackerConfig) -> io::Result<Tracker> {
        let saved = persist::load(&config.data_dir()).map_err(|e| {
            io::Error::new(e.kind(), format!("loading the saved cluster state: {e}"))
        })?;
        if !saved.is_empty() {
            info!(
                "loaded {} group(s) from {}",
                saved.len(),
                config.data_dir().display()
            );
        }
        let mut cluster = Cluster::restore(config.placement.clone(), saved);
        cluster.use_trunk_files(config.use_trunk_file);
        if let Some(ids) = &config.storage_ids {
            cluster.use_storage_ids(
                ids.clone(),
                config.ids_in_filenames(),
                config.trust_storage_server_id,
            );
        }
        let trackers = persist::load_trackers(&config.data_dir())
            .map_err(|e| io::Error::new(e.kind(), format!("loading the known trackers: {e}")))?;
        cluster.add_trackers(trackers);
        let started = unix_now();
        let restart_interval = persist::load_last_check_time(&config.data_dir())
            .filter(|&t| t > 0 && t <= started)
            .map_or(0, |t| started - t);
        let me = own_address(&config, cluster.trackers().iter());
        let copy_sys_files = !cluster.has_groups() || restart_interval > LONG_DOWNTIME;
        let ip = config
            .bind_addr
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let addr = SocketAddr::new(ip, config.port);
        let listener = fdfs_runtime::server::listen(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let web = match config.metrics_listen {
            Some(addr) => Some(fdfs_runtime::http::bind(addr).await?),
            None => None,
        };
        Ok(Tracker {
            listener,
            web,
            shared: Arc::new(Shared {
                config,
                cluster: Mutex::new(cluster),
                started,
                restart_interval,
                peers: Mutex::new(Relationship::new(me)),
                connections: Default::default(),
                requests: Default::default(),
                copy_sys_files: copy_sys_files.into(),
            }),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires, then saves the state.
    pub async fn run(self, shutdown: Shutdown) -> io::Result<()> {
        let shared = self.shared;
        info!(
            "fdfs_trackerd {} listening on {}",
            fdfs_proto::VERSION_TEXT,
            self.listener.local_addr()?
        );
        let checker = tokio::spawn(check_heartbeats(shared.clone(), shutdown.clone()));
        let saver = tokio::spawn(save_when_changed(shared.clone(), shutdown.clone()));
        let peers = tokio::spawn(peers::run(shared.clone(), shutdown.clone()));
        let trunks = tokio::spawn(trunk::run(shared.clone(), shutdown.clone()));
        if let Some(web) = self.web {
            info!("metrics and console on http://{}/", web.local_addr()?);
            tokio::spawn(fdfs_runtime::http::serve(
                web,
                shared.config.allow_hosts.clone(),
                web::handler(shared.clone()),
                shutdown.clone(),
            ));
        }
        let handler_shared = shared.clone();
        serve_allowed(
            self.listener,
            shared.config.max_connections,
            shared.config.allow_hosts.clone(),
            shutdown,
            DRAIN,
            move |stream, peer, stop| {
                server::handle_connection(stream, peer, stop, handler_shared.clone())
            },
        )
        .await;
        let _ = checker.await;
        let _ = saver.await;
        let _ = peers.await;
        let _ = trunks.await;
        save(&shared).await?;
        info!("cluster state saved, tracker stopped");
        Ok(())
    }
}

/// Convenience for callers that do not need the bound address first.
pub async fn run(config: TrackerConfig, shutdown: Shutdown) -> io::Result<()> {
    Tracker::bind(config).await?.run(shutdown).await
}

async fn save(shared: &Arc<Shared>) -> io::Result<()> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        persist::save(&shared.cluster, &shared.config.data_dir(), shared.started)
    })
    .await
    .map_err(io::Error::other)?
}

/// Every second: storages silent for longer than check_active_interval go OFFLINE.
async fn check_heartbeats(shared: Arc<Shared>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tick.tick() => {}
        }
        let marked = shared
            .cluster()
            .expire_heartbeats(unix_now(), shared.config.check_active_interval);
        if marked > 0 {
            warn!("{marked} storage(s) missed their heartbeat and are now OFFLINE");
        }
    }
}

/// Every second: writes the state if membership or a status changed (and at most once
/// a minute for mere counter updates).
async fn save_when_changed(shared: Arc<Shared>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_save = unix_now();
    let mut last_status = last_save;
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tick.tick() => {}
        }
        let now = unix_now();
        if now - last_status >= STATUS_SAVE_INTERVAL {
            last_status = now;
            let dir = shared.config.data_dir();
            let up_time = shared.started;
            let written = tokio::task::spawn_blocking(move || {
                persist::write_tracker_status(&dir, up_time, now)
            })
            .await
            .map_err(io::Error::other)
            .and_then(|r| r);
            if let Err(e) = written {
                error!("writing {}: {e}", persist::TRACKER_STATUS_FILE);
            }
        }
        let due = shared
            .cluster()
            .take_save_request(now - last_save >= STATS_SAVE_INTERVAL);
        if !due {
            continue;
        }
        last_save = now;
        if let Err(e) = save(&shared).await {
            error!("saving the cluster state: {e}");
            shared.cluster().request_save();
        }
    }
}

/// Our own `ip:port` before any storage joined: `bind_addr:port`, or the one saved
/// tracker on our port whose IP is an address of this host.
fn own_address<'a>(
    config: &TrackerConfig,
    known: impl Iterator<Item = &'a String>,
) -> Option<String> {
    if let Some(ip) = config.bind_addr.filter(|ip| !ip.is_unspecified()) {
        return Some(host_of(ip, config.port));
    }
    let mine: Vec<&String> = known
        .filter(|h| {
            let (ip, port) = split_host(h);
            port == config.port
                && ip
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok())
        })
        .collect();
    match mine.as_slice() {
        [one] => Some((*one).clone()),
        _ => None,
    }
}
