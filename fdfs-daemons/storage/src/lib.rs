//! `fdfs_storaged`: stores files for one group and serves them to clients.
//!
//! - [`store`]: store paths, directory layout, final file names;
//! - [`binlog`]: the change log replication reads;
//! - [`handlers`]: one module per command family;
//! - [`sync`]: replication to the other storages of the group;
//! - [`recovery`]: a replaced disk or a lost binlog, made whole again from the peers;
//! - [`tracker_link`]: join and heartbeat with every tracker;
//! - [`server`]: the per-connection request loop.

// No unsafe code but in `sys`, the calls without a safe wrapper.
#![deny(unsafe_code)]

pub mod appenders;
pub mod binlog;
pub mod config;
pub mod durability;
pub mod handlers;
pub mod identity;
pub mod init_flag;
pub mod integrity;
pub mod outbound;
pub mod recovery;
pub mod server;
pub mod state;
pub mod stats;
pub mod store;
pub mod sync;
mod sys;
#[cfg(test)]
mod test_support;
pub mod tombstones;
pub mod tracker_link;
pub mod transfer;
pub mod trunk;
pub mod web;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fdfs_runtime::server::{serve_allowed, ShutdownTrigger};
use tracing::{info, warn};

use crate::binlog::Binlog;
use crate::config::StorageConfig;
use crate::init_flag::InitFlag;
use crate::state::Storage;
use crate::store::Store;
use crate::tracker_link::Links;

/// Runs the storage until `stop` resolves.
pub async fn run(mut cfg: StorageConfig, stop: impl Future<Output = ()>) -> Result<(), String> {
    tokio::pin!(stop);
    tokio::select! {
        settled = identity::settle_group(&mut cfg) => settled?,
        _ = &mut stop => return Ok(()),
    }
    // The init flag comes first: it says whether this storage had joined its group
    // (a store path found empty then lost its files) and which store paths it made.
    let base = cfg.base_path.clone();
    let loaded = tokio::task::spawn_blocking(move || InitFlag::load(&base))
        .await
        .map_err(|e| e.to_string())?;
    let init_existed = loaded.is_some();
    let joined_before = loaded.as_ref().is_some_and(|f| f.sync_old_done);
    let mut init = loaded.unwrap_or_else(|| InitFlag {
        join_time: fdfs_runtime::unix_now(),
        ..Default::default()
    });
    let store_cfg = cfg.clone();
    let (store, init) = tokio::task::spawn_blocking(move || {
        Store::open(&store_cfg, &mut init, init_existed, joined_before).map(|s| (s, init))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("store paths: {e}"))?;
    let binlog = Binlog::open(&cfg.base_path).map_err(|e| format!("binlog: {e}"))?;
    let st = Arc::new(Storage::new(cfg, store, binlog));
    let current = binlog::file_name(st.binlog.dir(), st.binlog.end().index);
    match st
        .tombstones
        .load_from_binlog(&current, fdfs_runtime::unix_now())
    {
        Ok(n) if n > 0 => info!("remembering {n} recent delete(s) from the binlog"),
        Ok(_) => {}
        Err(e) => warn!("cannot read {}: {e}", current.display()),
    }
    if let Some((high, low, written)) = st.stats.load(&st.stat_file()) {
        st.store.restore_rotation(high, low, written);
    }
    if !init_existed {
        if let Err(e) = init.save(&st.cfg.base_path) {
            warn!("cannot save init flag: {e}");
        }
    }

    // How the cluster names us goes into every file name: settled before anything is
    // served.
    if st.my_ip().is_none() {
        if let Ok(ip) = init.last_ip_addr.parse() {
            st.learn_ip(ip);
        }
    }
    tokio::select! {
        settled = identity::settle(&st) => settled?,
        _ = &mut stop => return Ok(()),
    }

    // A binlog lost under the marks, and store paths on a replaced disk, are made
    // whole before anything is served.
    let check = st.clone();
    let to_recover = tokio::task::spawn_blocking(move || {
        if let Err(e) = recovery::repair_binlog(&check) {
            warn!("cannot repair the binlog: {e}");
        }
        recovery::paths_to_recover(&check)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("store paths: {e}"))?;
    if !to_recover.is_empty() {
        tokio::select! {
            _ = recovery::recover(st.clone(), to_recover) => {}
            _ = &mut stop => return Ok(()),
        }
    }

    let listen = SocketAddr::new(
        st.cfg
            .bind_addr
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        st.cfg.port,
    );
    let listener = fdfs_runtime::server::listen(listen)
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    info!(
        "group {} listening on {listen}, {} store path(s)",
        st.cfg.group_name,
        st.store.paths().len()
    );

    let web = match st.cfg.metrics_listen {
        Some(addr) => Some(
            fdfs_runtime::http::bind(addr)
                .await
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };

    let (trigger, shutdown) = ShutdownTrigger::new();
    let init = Arc::new(Mutex::new(init));
    let _ = trunk::INIT_BASE.set(st.cfg.base_path.clone());
    st.trunk.attach_init(init.clone());
    let links = Arc::new(Links {
        init,
        first_sync: tokio::sync::Mutex::new(()),
        leader: tokio::sync::Mutex::new(None),
    });
    let mut tasks = Vec::new();
    for tracker in st.cfg.tracker_servers.clone() {
        tasks.push(tokio::spawn(tracker_link::run(
            st.clone(),
            links.clone(),
            tracker,
            trigger.subscribe(),
        )));
    }
    tasks.push(tokio::spawn(housekeeping(st.clone(), trigger.subscribe())));
    tasks.push(tokio::spawn(integrity::run(
        st.clone(),
        trigger.subscribe(),
    )));
    tasks.push(tokio::spawn(sync::run_manager(
        st.clone(),
        trigger.subscribe(),
    )));
    tasks.push(tokio::spawn(trunk::push::run_manager(
        st.clone(),
        trigger.subscribe(),
    )));

    if let Some(web) = web {
        info!(
            "metrics on http://{}/metrics",
            web.local_addr().map_err(|e| e.to_string())?
        );
        tasks.push(tokio::spawn(fdfs_runtime::http::serve(
            web,
            st.cfg.allow_hosts.clone(),
            web::handler(st.clone()),
            trigger.subscribe(),
        )));
    }

    let server = {
        let st = st.clone();
        serve_allowed(
            listener,
            st.cfg.max_connections,
            st.cfg.allow_hosts.clone(),
            shutdown,
            st.cfg.network_timeout,
            move |stream, peer, shutdown| {
                server::handle_connection(st.clone(), stream, peer, shutdown)
            },
        )
    };
    tokio::pin!(server);
    tokio::select! {
        _ = &mut server => {}
        _ = &mut stop => {
            trigger.trigger();
            server.await;
        }
    }
    // No request writes trunk binlog lines any more: the pushes send the last ones.
    st.trunk.requests_done.send_replace(true);
    trigger.trigger();
    for t in tasks {
        let _ = t.await;
    }
    if let Err(e) = st.stats.save(&st.stat_file(), st.store.rotation()) {
        warn!("cannot save {}: {e}", st.stat_file().display());
    }
    if let Err(e) = st.binlog.sync() {
        warn!("cannot sync binlog: {e}");
    }
    st.trunk.end_term().await;
    info!(
        "stopped; {} flush(es) to disk before replies since the start",
        durability::FLUSHES.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}

/// Refreshes disk usage every second, tries store paths out of service every five, and
/// saves the counters every minute.
async fn housekeeping(st: Arc<Storage>, mut shutdown: fdfs_runtime::server::Shutdown) {
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.recv() => return,
        }
        st.store.refresh_usage();
        ticks += 1;
        if ticks.is_multiple_of(5) {
            let probe = st.clone();
            let _ = tokio::task::spawn_blocking(move || probe.store.probe_failed()).await;
        }
        if ticks.is_multiple_of(60) {
            if let Err(e) = st.stats.save(&st.stat_file(), st.store.rotation()) {
                warn!("cannot save {}: {e}", st.stat_file().display());
            }
        }
    }
}
