//! The connections a storage opens: to its trackers and to the peers of its group. One
//! way to open them: bound to `bind_addr` when `client_bind` says so, with the
//! `cluster_secret` proven before anything else is sent.

use std::net::SocketAddr;
use std::time::Duration;

use fdfs_proto::addr::HostPort;
use fdfs_proto::msg::Request;
use fdfs_runtime::{Connection, Error};

use crate::config::StorageConfig;
use crate::state::Storage;

/// The address to connect to for a `tracker_server` entry (its first host, resolved).
pub async fn resolve(tracker: &HostPort) -> Result<SocketAddr, Error> {
    if let Some(ip) = tracker.ip() {
        return Ok(SocketAddr::new(ip, tracker.port));
    }
    let host = tracker.host();
    let found = tokio::net::lookup_host((host, tracker.port)).await?.next();
    found.ok_or_else(|| Error::Other(format!("{host} does not resolve")))
}

/// A connection to a tracker or a peer of the group: bound as `client_bind` says, and
/// with `cluster_secret` proven.
pub(crate) async fn connect(st: &Storage, addr: SocketAddr) -> Result<Connection, Error> {
    connect_with(st, addr, st.cfg.connect_timeout, st.cfg.network_timeout).await
}

/// [`connect`] with other timeouts (short calls that must not keep their caller long).
pub(crate) async fn connect_with(
    st: &Storage,
    addr: SocketAddr,
    connect_timeout: Duration,
    network_timeout: Duration,
) -> Result<Connection, Error> {
    connect_cfg(&st.cfg, addr, connect_timeout, network_timeout).await
}

async fn connect_cfg(
    cfg: &StorageConfig,
    addr: SocketAddr,
    connect_timeout: Duration,
    network_timeout: Duration,
) -> Result<Connection, Error> {
    let bind = if cfg.client_bind { cfg.bind_addr } else { None };
    let mut conn = Connection::connect(addr, bind, connect_timeout, network_timeout).await?;
    if let Some(secret) = &cfg.cluster_secret {
        conn.prove_secret(secret).await?;
    }
    Ok(conn)
}

/// One request on a short connection to a tracker, before the storage is built (the
/// group name is asked for first).
pub(crate) async fn cfg_tracker_call<R: Request>(
    cfg: &StorageConfig,
    tracker: &HostPort,
    req: &R,
) -> Result<R::Reply, Error> {
    let addr = resolve(tracker).await?;
    let mut conn = connect_cfg(cfg, addr, cfg.connect_timeout, cfg.network_timeout).await?;
    let reply = conn.call(req).await;
    conn.quit().await;
    reply
}

/// One request on a short connection to a tracker; learns our own address from the
/// connection's local end.
pub(crate) async fn tracker_call<R: Request>(
    st: &Storage,
    tracker: &HostPort,
    req: &R,
) -> Result<R::Reply, Error> {
    let timeouts = (st.cfg.connect_timeout, st.cfg.network_timeout);
    one_call(st, tracker, req, timeouts).await
}

/// The short calls to a tracker besides the sessions (64 and 68 when two trackers lead,
/// 92 for a peer's join time) give up quickly: a session or the sync manager waits for
/// them.
const SHORT_CALL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const SHORT_CALL_NETWORK_TIMEOUT: Duration = Duration::from_secs(10);

/// [`tracker_call`] with short timeouts.
pub(crate) async fn short_call<R: Request>(
    st: &Storage,
    tracker: &HostPort,
    req: &R,
) -> Result<R::Reply, Error> {
    let timeouts = (
        st.cfg.connect_timeout.min(SHORT_CALL_CONNECT_TIMEOUT),
        st.cfg.network_timeout.min(SHORT_CALL_NETWORK_TIMEOUT),
    );
    one_call(st, tracker, req, timeouts).await
}

async fn one_call<R: Request>(
    st: &Storage,
    tracker: &HostPort,
    req: &R,
    (connect_timeout, network_timeout): (Duration, Duration),
) -> Result<R::Reply, Error> {
    let addr = resolve(tracker).await?;
    let mut conn = connect_with(st, addr, connect_timeout, network_timeout).await?;
    if let Ok(local) = conn.local_addr() {
        st.learn_ip(local.ip());
    }
    let reply = conn.call(req).await;
    conn.quit().await;
    reply
}

/// One request to the first tracker that answers it (in configuration order).
pub(crate) async fn first_tracker_call<R: Request>(
    st: &Storage,
    req: &R,
) -> Result<R::Reply, Error> {
    let mut last = Error::Other("no tracker configured".into());
    for t in &st.cfg.tracker_servers {
        match tracker_call(st, t, req).await {
            Ok(reply) => return Ok(reply),
            Err(e) => last = e,
        }
    }
    Err(last)
}
