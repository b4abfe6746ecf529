//! Picking each group's trunk server (`use_trunk_file = true`), on the leader only.
//!
//! Every second the leader looks for groups without a trunk server (none yet, or the
//! one they had has not been heard of for twice `check_active_interval`) and picks one
//! as upstream does: the group's store server (its first writable storage by id) is asked
//! for the size of its trunk binlog (31), then every other writable storage; the last
//! one whose binlog is longer than the store server's wins, else the store server. A new
//! trunk server other than the last one is first told to forget its peers' trunk marks
//! (32); if it refuses, nobody is picked this round. The choice is announced in beat
//! replies (flag 0x02) and to follower trackers (65), saved with the groups and written
//! to `logs/trunk_server_change.log`.
//!
//! The picking talks to storages, so it runs here, outside the cluster lock, and never
//! in a storage's heartbeat as upstream's does (a storage that hangs cannot stall the
//! tracker).

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use fdfs_proto::msg::{TrunkDeleteBinlogMarks, TrunkGetBinlogSize};
use fdfs_runtime::server::Shutdown;
use fdfs_runtime::{unix_now, Error};
use tracing::{info, warn};

use crate::cluster::{Candidate, PickRequest, TrunkChange};
use crate::server::Shared;

/// Runs until shutdown.
pub async fn run(shared: Arc<Shared>, mut shutdown: Shutdown) {
    if !shared.config.use_trunk_file {
        return;
    }
    let interval = shared.config.check_active_interval;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut leading_since: Option<i64> = None;
    // Per group: when a pick last failed (retried once per check_active_interval).
    let mut failed: HashMap<String, i64> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tick.tick() => {}
        }
        let now = unix_now();
        if !shared.peers().is_leader() {
            leading_since = None;
            continue;
        }
        let since = *leading_since.get_or_insert(now);
        let due = shared.cluster().trunk_picks_due(now, since, 2 * interval);
        for request in due {
            let retry_at = failed.get(&request.group).map_or(0, |t| t + interval);
            if !request.forced && now < retry_at {
                continue;
            }
            if pick(&shared, &request).await {
                failed.remove(&request.group);
            } else {
                failed.insert(request.group.clone(), now);
            }
        }
    }
}

/// Picks (or switches to the one 94 asked for) and announces; false if nobody could be
/// picked.
async fn pick(shared: &Shared, request: &PickRequest) -> bool {
    let group = &request.group;
    let store = &request.candidates[0];
    let mut chosen = store;
    if !request.forced {
        let base = match binlog_size(shared, store).await {
            Ok(size) => size,
            Err(e) => {
                warn!(
                    "group {group}: store server {} did not tell its trunk binlog size: {e}",
                    store.id
                );
                return false;
            }
        };
        // As upstream: the last storage whose binlog is longer than the store server's.
        for c in &request.candidates[1..] {
            match binlog_size(shared, c).await {
                Ok(size) if size > base => chosen = c,
                Ok(_) => {}
                Err(e) => warn!("group {group}: storage {}: trunk binlog size: {e}", c.id),
            }
        }
    }
    if !request.last.is_empty() && request.last != chosen.id {
        if let Err(e) = call(shared, chosen, &TrunkDeleteBinlogMarks).await {
            warn!(
                "group {group}: {} refused to forget its trunk marks ({e}): no trunk server yet",
                chosen.id
            );
            return false;
        }
    }
    // Asked while the cluster lock was not held: what changed meanwhile wins.
    if !shared.peers().is_leader() {
        return false;
    }
    let Some(change) = shared.cluster().commit_trunk_pick(request, &chosen.id) else {
        return true;
    };
    info!(
        "group {group}: trunk server set to {} ({}:{})",
        chosen.id, chosen.ip, chosen.port
    );
    log_change(shared, change);
    true
}

async fn binlog_size(shared: &Shared, to: &Candidate) -> Result<i64, Error> {
    Ok(call(shared, to, &TrunkGetBinlogSize).await?.0)
}

async fn call<R: fdfs_proto::msg::Request>(
    shared: &Shared,
    to: &Candidate,
    req: &R,
) -> Result<R::Reply, Error> {
    let ip: IpAddr = to
        .ip
        .parse()
        .map_err(|_| Error::Other(format!("bad address {}", to.ip)))?;
    let mut conn = crate::peers::connect(shared, SocketAddr::new(ip, to.port)).await?;
    let reply = conn.call(req).await;
    conn.quit().await;
    reply
}

/// One line of `logs/trunk_server_change.log`, as upstream writes it:
/// `[time] group  old  =>  new` (`id/ip:port` with storage ids, `ip:port` without,
/// `-` for nobody).
fn change_line(change: &TrunkChange, by_id: bool, when: &str) -> String {
    let side = |c: &Option<Candidate>| match c {
        None if by_id => "-/-".to_string(),
        None => "-".to_string(),
        Some(c) => {
            let host = if c.ip.contains(':') {
                format!("[{}]:{}", c.ip, c.port)
            } else {
                format!("{}:{}", c.ip, c.port)
            };
            if by_id {
                format!("{}/{host}", c.id)
            } else {
                host
            }
        }
    };
    format!(
        "[{when}] {}  {}  =>  {}\n",
        change.group,
        side(&change.old),
        side(&change.new)
    )
}

fn log_change(shared: &Shared, change: Option<TrunkChange>) {
    let Some(change) = change else {
        return;
    };
    let when = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let line = change_line(&change, shared.config.use_storage_id, &when);
    let path = shared.config.logs_dir().join("trunk_server_change.log");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        warn!("cannot write {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_lines_as_upstream_writes_them() {
        let c = |id: &str, ip: &str| Candidate {
            id: id.into(),
            ip: ip.into(),
            port: 23000,
        };
        let first = TrunkChange {
            group: "group1".into(),
            old: None,
            new: Some(c("127.0.0.232", "127.0.0.232")),
        };
        assert_eq!(
            change_line(&first, false, "2026-12-07 06:44:21"),
            "[2026-12-07 06:44:21] group1  -  =>  127.0.0.232:23000\n"
        );
        let by_id = TrunkChange {
            group: "group1".into(),
            old: Some(c("100001", "10.0.0.1")),
            new: None,
        };
        assert_eq!(
            change_line(&by_id, true, "t"),
            "[t] group1  100001/10.0.0.1:23000  =>  -/-\n"
        );
    }
}
