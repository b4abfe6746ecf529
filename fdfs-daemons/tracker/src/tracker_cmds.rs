//! Commands of the tracker cluster (§3.5, §8): what other trackers send us (64 status,
//! 66/67 leader hand-over, 58/65 followers, 61–63 sys files), plus 68 from storages and
//! the leader queries of admin tools (95, 96).

use fdfs_proto::msg::NextLeader;
use fdfs_proto::msg::{
    JoinLeader, SysFileChunk, SysFileRequest, TrackerClusterFilter, TrackerInfo, TrunkAssignments,
};
use fdfs_proto::{errno, msg::ConnCounts, VERSION_TEXT};
use fdfs_runtime::unix_now;
use tracing::{info, warn};

use crate::persist;
use crate::refusal::{Refusal, Reply};
use crate::relationship::{host_of, split_host, FOLLOWER_ACTIVE_SECS};
use crate::server::{Request, Session, Shared};

/// 63 hands out sys files in chunks of at most this size.
pub const SYS_FILE_CHUNK: usize = 8 * 1024;

fn expect_empty(body: &[u8]) -> Result<(), Refusal> {
    if !body.is_empty() {
        return Err(Refusal::invalid(format!(
            "body is {} bytes, expected none",
            body.len()
        )));
    }
    Ok(())
}

/// The `ip:port` text body of 66/67.
fn host_body(body: &[u8]) -> Result<String, Refusal> {
    Ok(NextLeader::decode_host(body)?)
}

/// This tracker's 64 status, computed locally.
pub fn local_status(shared: &Shared) -> Result<fdfs_proto::msg::TrackerStatus, Refusal> {
    let has_groups = shared.cluster().has_groups();
    shared.peers().status(
        has_groups,
        unix_now() - shared.started,
        shared.restart_interval,
    )
}

/// 64 TRACKER_GET_STATUS.
pub fn get_status(shared: &Shared, req: &Request<'_>) -> Reply {
    expect_empty(req.body)?;
    Ok(local_status(shared)?.encode())
}

/// 66 NOTIFY_NEXT_LEADER.
pub fn notify_next_leader(shared: &Shared, req: &Request<'_>) -> Reply {
    let candidate = host_body(req.body)?;
    // Known from storage joins, or (trackers listed by host name) the candidate is the
    // tracker talking to us.
    let from_candidate =
        split_host(&candidate).0.parse::<std::net::IpAddr>().ok() == Some(req.peer_ip());
    let known = from_candidate || shared.cluster().trackers().contains(&candidate);
    shared.peers().notify_next(&candidate, known)?;
    info!("{candidate} announced itself as the next leader");
    Ok(Vec::new())
}

/// 67 COMMIT_NEXT_LEADER.
pub fn commit_next_leader(shared: &Shared, req: &Request<'_>) -> Reply {
    let candidate = host_body(req.body)?;
    shared.peers().commit_next(&candidate)?;
    Ok(Vec::new())
}

/// 58 JOIN_LEADER: a follower introduces itself on the connection it will ping on.
pub fn join_leader(shared: &Shared, session: &mut Session, req: &Request<'_>) -> Reply {
    let join = JoinLeader::decode(req.body)?;
    if session.follower.is_some() {
        return Err(Refusal::new(errno::EEXIST, "follower already joined"));
    }
    let port = u16::try_from(join.server_port)
        .map_err(|_| Refusal::invalid(format!("server port {}", join.server_port)))?;
    let host = host_of(req.peer_ip(), port);
    shared.peers().follower_joined(&host, &join, unix_now())?;
    session.follower = Some(host);
    Ok(Vec::new())
}

/// 65 PING_LEADER: with trunk files, every group's trunk server when any changed since
/// this follower's last ping (the first ping always gets them).
pub fn ping_leader(shared: &Shared, session: &mut Session, req: &Request<'_>) -> Reply {
    let counts = ConnCounts::decode_ping(req.body)?;
    shared
        .peers()
        .follower_pinged(session.follower.as_deref(), counts, unix_now())?;
    let cluster = shared.cluster();
    if !cluster.trunk_files() {
        return Ok(Vec::new());
    }
    let epoch = cluster.trunk_epoch();
    if session.trunk_epoch_told == Some(epoch) {
        return Ok(Vec::new());
    }
    session.trunk_epoch_told = Some(epoch);
    Ok(TrunkAssignments {
        entries: cluster.trunk_assignments(),
    }
    .encode())
}

/// 68 NOTIFY_RESELECT_LEADER: a storage (or another leader) saw two leaders; if we
/// lead, step down so a new election runs. EOPNOTSUPP when we do not lead, as upstream.
pub fn reselect_leader(shared: &Shared, req: &Request<'_>) -> Reply {
    expect_empty(req.body)?;
    let why = format!("{} saw two leaders and asked for a new election", req.peer);
    if !shared.peers().reselect(&why) {
        return Err(Refusal::new(
            errno::EOPNOTSUPP,
            "asked to step down, but this tracker is not the leader",
        ));
    }
    warn!("{why}: stepped down");
    Ok(Vec::new())
}

/// 95 GET_LEADER: `ip:port` of the leader, ENOENT while there is none.
pub fn get_leader(shared: &Shared, req: &Request<'_>) -> Reply {
    expect_empty(req.body)?;
    match shared.peers().leader() {
        Some(l) => Ok(l.as_bytes().to_vec()),
        None => Err(Refusal::not_found("no tracker leader yet")),
    }
}

/// 96 TRACKER_CLUSTER_STAT (leader only): every known tracker.
pub fn cluster_stat(shared: &Shared, req: &Request<'_>) -> Reply {
    let filter = TrackerClusterFilter::decode(req.body)?;
    if !shared.peers().is_leader() {
        return Err(Refusal::new(
            errno::EOPNOTSUPP,
            "this tracker is not the leader",
        ));
    }
    let list: Vec<TrackerInfo> = tracker_infos(shared)
        .into_iter()
        .filter(|t| filter.accepts(t))
        .collect();
    Ok(TrackerInfo::encode_list(&list))
}

/// Every tracker this one knows, by address. The leader knows its followers' pings
/// (96's view); a follower knows itself and who leads.
pub fn tracker_infos(shared: &Shared) -> Vec<TrackerInfo> {
    let now = unix_now();
    let known: Vec<String> = shared.cluster().trackers().iter().cloned().collect();
    let peers = shared.peers();
    let leading = peers.is_leader();
    let leader = peers.leader().map(str::to_string);
    let me = peers.me().unwrap_or_default().to_string();
    let mut hosts = known;
    if !hosts.contains(&me) {
        hosts.push(me.clone());
    }
    hosts.sort();
    hosts
        .into_iter()
        .map(|host| {
            if host == me {
                return TrackerInfo {
                    host,
                    is_leader: leading,
                    is_active: true,
                    connections: shared.connections.counts(),
                    version: VERSION_TEXT.into(),
                    up_time: shared.started,
                    last_heartbeat: now,
                };
            }
            match peers.followers().get(&host) {
                Some(f) if leading => TrackerInfo {
                    is_leader: false,
                    is_active: now - f.last_ping <= FOLLOWER_ACTIVE_SECS,
                    connections: f.connections,
                    version: f.version.clone(),
                    up_time: f.up_time,
                    last_heartbeat: f.last_ping,
                    host,
                },
                _ => TrackerInfo {
                    is_leader: leader.as_deref() == Some(host.as_str()),
                    is_active: leader.as_deref() == Some(host.as_str()),
                    host,
                    ..TrackerInfo::default()
                },
            }
        })
        .collect()
}

/// 61 GET_SYS_FILES_START: snapshots the sys files for this connection.
pub fn sys_files_start(shared: &Shared, session: &mut Session, req: &Request<'_>) -> Reply {
    expect_empty(req.body)?;
    let cluster = shared.cluster();
    if !cluster.has_groups() {
        return Err(Refusal::not_found("this tracker has no groups"));
    }
    session.sys_files = Some(persist::render(&cluster, shared.started, unix_now()));
    Ok(Vec::new())
}

/// 63 GET_ONE_SYS_FILE: a chunk of one sys file.
pub fn one_sys_file(shared: &Shared, session: &mut Session, req: &Request<'_>) -> Reply {
    let ask = SysFileRequest::decode(req.body)?;
    if session.sys_files.is_none() {
        let cluster = shared.cluster();
        session.sys_files = Some(persist::render(&cluster, shared.started, unix_now()));
    }
    let files = session.sys_files.as_ref().expect("just set");
    let content = files.sys_file(ask.index);
    let offset = usize::try_from(ask.offset).unwrap_or(usize::MAX);
    if offset > content.len() {
        return Err(Refusal::invalid(format!(
            "offset {} beyond the {} bytes of sys file {}",
            ask.offset,
            content.len(),
            ask.index
        )));
    }
    let end = content.len().min(offset + SYS_FILE_CHUNK);
    Ok(SysFileChunk {
        file_size: content.len() as i64,
        content: content[offset..end].to_vec(),
    }
    .encode())
}

/// 62 GET_SYS_FILES_END.
pub fn sys_files_end(_shared: &Shared, session: &mut Session, req: &Request<'_>) -> Reply {
    expect_empty(req.body)?;
    session.sys_files = None;
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bodies() {
        assert_eq!(host_body(b"10.0.0.1:22122").unwrap(), "10.0.0.1:22122");
        assert_eq!(host_body(b"10.0.0.1:22122\0\0").unwrap(), "10.0.0.1:22122");
        assert!(host_body(b"").is_err());
        assert!(host_body(&[b'1'; 53]).is_err());
        assert!(host_body(b"\0").is_err());
    }
}
