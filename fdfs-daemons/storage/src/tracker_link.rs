//! The storage's side of the tracker protocol: one long-lived connection per configured
//! tracker, carrying join, heartbeat, disk usage and the first-start sync decision.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fdfs_proto::config::{IniFile, SpaceLimit};
use fdfs_proto::tracker_msg::{
    BeatReply, DiskUsage, JoinReply, JoinRequest, SyncReport, SyncSource,
};
use fdfs_proto::{cmd, status, IpSize, VERSION_TEXT};
use fdfs_runtime::server::Shutdown;
use fdfs_runtime::{unix_now, Connection, Error};
use tracing::{info, warn};

use crate::init_flag::InitFlag;
use crate::state::Storage;

/// Splits `host:port` (also `[v6]:port` and the dual-address form `ip1,ip2:port`, of
/// which the first address is used).
pub fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.trim().rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.split(',').next()?.trim();
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// State shared by all tracker links of one storage.
pub struct Links {
    pub init: Mutex<InitFlag>,
    /// Held while a link settles the initial sync source with its tracker.
    pub first_sync: tokio::sync::Mutex<()>,
}

async fn resolve(text: &str) -> Result<SocketAddr, Error> {
    let (host, port) = parse_host_port(text)
        .ok_or_else(|| Error::Other(format!("bad tracker address {text:?}")))?;
    let found = tokio::net::lookup_host((host.as_str(), port)).await?.next();
    found.ok_or_else(|| Error::Other(format!("{host} does not resolve")))
}

/// Keeps a session with one tracker alive until shutdown, reconnecting with back-off.
pub async fn run(st: Arc<Storage>, links: Arc<Links>, tracker: String, mut shutdown: Shutdown) {
    let mut backoff = Duration::from_millis(200);
    let mut failing = false;
    loop {
        match session(&st, &links, &tracker, &mut shutdown).await {
            Ok(()) => return,
            Err(e) => {
                if !failing {
                    warn!("tracker {tracker}: {e}; retrying");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.recv() => return,
        }
        backoff = (backoff * 2).min(st.cfg.heart_beat_interval.max(Duration::from_secs(1)));
    }
}

fn apply_parameters(st: &Storage, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    let Ok(ini) = IniFile::parse(&text, "tracker-parameters") else {
        warn!("tracker sent unreadable parameters");
        return;
    };
    let g = ini.global();
    let wide = matches!(
        g.str("response_ip_addr_size")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("ipv6") | Some("46")
    );
    st.set_ip_size(if wide { IpSize::V6 } else { IpSize::V4 });
    if let Ok(limit) = g.space("reserved_storage_space", SpaceLimit::Bytes(1024 << 20)) {
        st.store.set_reserved(limit);
    }
}

async fn session(
    st: &Storage,
    links: &Links,
    tracker: &str,
    shutdown: &mut Shutdown,
) -> Result<(), Error> {
    let addr = resolve(tracker).await?;
    let bind = if st.cfg.client_bind {
        st.cfg.bind_addr
    } else {
        None
    };
    let mut conn =
        Connection::connect(addr, bind, st.cfg.connect_timeout, st.cfg.network_timeout).await?;
    if let Some(secret) = &st.cfg.cluster_secret {
        conn.prove_secret(secret)
            .await
            .map_err(|e| Error::Other(format!("cluster_secret: {e}")))?;
    }
    let my_ip = conn.local_addr()?.ip();
    st.learn_ip(my_ip);

    let params = conn.request(cmd::STORAGE_PARAMETER_REQ, &[]).await?;
    apply_parameters(st, &params);

    let init = links.init.lock().unwrap().clone();
    let join = JoinRequest {
        group: st.cfg.group_name.clone(),
        storage_port: st.cfg.port,
        store_path_count: st.cfg.store_paths.len() as u32,
        subdir_count_per_path: st.cfg.subdir_count_per_path,
        upload_priority: st.cfg.upload_priority,
        join_time: init.join_time,
        up_time: st.up_time,
        version: VERSION_TEXT.to_string(),
        init_flag: !init.sync_old_done,
        status: status::INIT as i8,
        storage_id: String::new(),
        ip: st.my_ip().unwrap_or(my_ip).to_string(),
        trackers: st.cfg.tracker_servers.clone(),
    };
    let reply = JoinReply::decode(&conn.request(cmd::STORAGE_JOIN, &join.encode()).await?)?;
    info!(
        "joined tracker {tracker} as {} in {}, status {}",
        join.ip,
        st.cfg.group_name,
        status::name(reply.status)
    );

    // One link asks its tracker for our initial sync source (87); the others tell
    // theirs (88) if they still see us as new.
    let _first_sync = links.first_sync.lock().await;
    let init = links.init.lock().unwrap().clone();
    // A tracker that saw us join after the initial copy was arranged elsewhere does not
    // know its source: tell it too, or it answers "nobody" when the source asks.
    let source_unknown = init.sync_old_done
        && !init.sync_src_server.is_empty()
        && reply.status != status::ACTIVE
        && reply.status != status::INIT
        && SyncSource::decode(&conn.request(cmd::STORAGE_SYNC_DEST_QUERY, &[]).await?)?.is_none();
    if init.sync_old_done && (reply.status == status::INIT || source_unknown) {
        let src = (!init.sync_src_server.is_empty()).then(|| SyncSource {
            src_id: init.sync_src_server.clone(),
            until_timestamp: init.sync_until_timestamp,
        });
        let body = src.map(|s| s.encode()).unwrap_or_else(|| {
            SyncSource {
                src_id: String::new(),
                until_timestamp: 0,
            }
            .encode()
        });
        conn.request(cmd::STORAGE_SYNC_NOTIFY, &body).await?;
    }
    if !init.sync_old_done {
        // First start: the tracker says whether an existing member must copy its files
        // to us first, and from when.
        let src = SyncSource::decode(&conn.request(cmd::STORAGE_SYNC_DEST_REQ, &[]).await?)?;
        let mut flag = links.init.lock().unwrap();
        flag.sync_old_done = true;
        if let Some(src) = &src {
            flag.sync_src_server = src.src_id.clone();
            flag.sync_until_timestamp = src.until_timestamp;
            info!(
                "initial copy source {} until {}",
                src.src_id, src.until_timestamp
            );
        }
        flag.last_ip_addr = join.ip.clone();
        flag.last_server_port = st.cfg.port;
        if let Err(e) = flag.save(&st.cfg.base_path) {
            warn!("cannot save init flag: {e}");
        }
    }
    drop(_first_sync);

    // Report at once so the tracker marks us ACTIVE without waiting a whole interval.
    report_disk_usage(st, &mut conn).await?;
    let mut last_report = Instant::now();
    let mut sync_reported: Option<u64> = None;
    loop {
        beat(st, &mut conn).await?;
        sync_report(st, &mut conn, &mut sync_reported).await?;
        if last_report.elapsed() >= st.cfg.stat_report_interval {
            report_disk_usage(st, &mut conn).await?;
            last_report = Instant::now();
        }
        tokio::select! {
            _ = tokio::time::sleep(st.cfg.heart_beat_interval) => {}
            _ = shutdown.recv() => {
                conn.quit().await;
                return Ok(());
            }
        }
    }
}

async fn beat(st: &Storage, conn: &mut Connection) -> Result<(), Error> {
    let mut counters = st.stats.snapshot();
    counters.last_heart_beat_time = unix_now();
    let reply = conn.request(cmd::STORAGE_BEAT, &counters.encode()).await?;
    handle_beat_reply(st, &reply)
}

/// Takes the group member list a (leader) tracker sends when it changed.
fn handle_beat_reply(st: &Storage, raw: &[u8]) -> Result<(), Error> {
    let reply = BeatReply::decode(raw)?;
    if let Some(members) = reply.group_members {
        let list: Vec<String> = members
            .iter()
            .map(|b| format!("{}:{} {}", b.ip, b.port, status::name(b.status)))
            .collect();
        tracing::debug!("group members: {}", list.join(", "));
        st.sync.set_members(members);
    }
    Ok(())
}

/// 89 SYNC_REPORT when a source's newest received timestamp moved since the last
/// report on this connection.
async fn sync_report(
    st: &Storage,
    conn: &mut Connection,
    reported: &mut Option<u64>,
) -> Result<(), Error> {
    let (version, entries) = st.sync.received();
    if entries.is_empty() || *reported == Some(version) {
        return Ok(());
    }
    let body = SyncReport { entries }.encode();
    let reply = conn.request(cmd::STORAGE_SYNC_REPORT, &body).await?;
    *reported = Some(version);
    handle_beat_reply(st, &reply)
}

async fn report_disk_usage(st: &Storage, conn: &mut Connection) -> Result<(), Error> {
    st.store.refresh_usage();
    let usage = DiskUsage {
        paths: st
            .store
            .paths()
            .iter()
            .map(|p| (p.total_mb() as i64, p.free_mb() as i64))
            .collect(),
    };
    let reply = conn
        .request(cmd::STORAGE_REPORT_DISK_USAGE, &usage.encode())
        .await?;
    handle_beat_reply(st, &reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse_host_port("127.0.0.1:22122"),
            Some(("127.0.0.1".into(), 22122))
        );
        assert_eq!(
            parse_host_port("tracker.local:1"),
            Some(("tracker.local".into(), 1))
        );
        assert_eq!(
            parse_host_port("10.0.0.1,192.168.0.1:22122"),
            Some(("10.0.0.1".into(), 22122))
        );
        assert_eq!(parse_host_port("[::1]:22122"), Some(("::1".into(), 22122)));
        assert_eq!(parse_host_port("nohost"), None);
        assert_eq!(parse_host_port(":22122"), None);
        assert_eq!(parse_host_port("h:0"), None);
    }
}
