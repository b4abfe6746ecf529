//! Storage → tracker commands (§3.4): join, heartbeats and reports, the sync source
//! hand-shake and the small status queries a storage makes at start-up.

use std::fmt::Write as _;

use fdfs_proto::codec::{Reader, Writer};
use fdfs_proto::msg::{
    BeatReply, DiskUsage, GetMyIp, JoinRequest, StorageBrief, StorageCounters, SyncReport,
    SyncSource,
};
use fdfs_proto::msg::{
    Count64, FetchStorageIds, GetGroupName, GroupHost, GroupName, ReportStatus, StorageIdsPage,
    SyncSrcReq, TrunkFileId,
};
use fdfs_proto::{errno, DEFAULT_STORAGE_PORT, STORAGE_ID_LEN};
use fdfs_runtime::unix_now;
use tracing::{info, warn};

use crate::cluster::Joined;
use crate::config::IdType;
use crate::refusal::{Refusal, Reply};
use crate::relationship::{host_of, split_host};
use crate::server::{Request, Session, Shared};

/// Commands marked "L" need a JOIN on the same connection first.
fn joined(session: &Session) -> Result<&Joined, Refusal> {
    session
        .joined
        .as_ref()
        .ok_or_else(|| Refusal::new(errno::EACCES, "storage command before STORAGE_JOIN"))
}

fn expect_len(body: &[u8], len: usize) -> Result<(), Refusal> {
    if body.len() != len {
        return Err(Refusal::invalid(format!(
            "body is {} bytes, expected {len}",
            body.len()
        )));
    }
    Ok(())
}

/// 81.
pub fn join(shared: &Shared, session: &mut Session, req: &Request<'_>) -> Reply {
    let join = JoinRequest::decode(req.body)?;
    let peer_ip = req.peer_ip().to_string();
    let me = host_of(req.tracker_ip(&shared.config), shared.config.port);
    let (who, reply, alone) = {
        let mut cluster = shared.cluster();
        let (who, reply) = cluster.join(&join, &peer_ip, unix_now())?;
        let alone = cluster.trackers().iter().all(|t| *t == me);
        (who, reply, alone)
    };
    {
        let mut peers = shared.peers();
        peers.learn_me(me);
        // The only tracker of its storages leads without an election.
        if alone && peers.leader().is_none() {
            let me = peers.me().map(str::to_string);
            peers.set_leader(me, "the only tracker");
        }
    }
    info!(
        "storage {}:{} (version {}) joined group {} from {}, status {}",
        peer_ip,
        join.storage_port,
        join.version,
        join.group,
        req.peer,
        fdfs_proto::status::name(reply.status)
    );
    // A (re)join starts the beat reply announcements afresh.
    session.joined = Some(who);
    session.leader_told = None;
    session.members_told = None;
    session.trunk_told = None;
    Ok(reply.encode())
}

/// The reply to 83/84/89: flag byte plus what this connection has not been told yet.
/// Only the leader announces anything; followers always answer `00`.
fn beat_reply(shared: &Shared, session: &mut Session, _req: &Request<'_>) -> Vec<u8> {
    let who = session.joined.clone().expect("checked by the caller");
    let (leader_version, me) = {
        let peers = shared.peers();
        if !peers.is_leader() {
            return BeatReply::default().encode();
        }
        (peers.version(), peers.me().unwrap_or_default().to_string())
    };
    let group_members = shared
        .cluster()
        .members_if_changed(&who, &mut session.members_told);
    let leader = (session.leader_told != Some(leader_version)).then(|| {
        session.leader_told = Some(leader_version);
        let (ip, port) = split_host(&me);
        StorageBrief {
            status: 0,
            port: port as u32,
            id: ip.chars().take(STORAGE_ID_LEN - 1).collect(),
            ip: ip.to_string(),
        }
    });
    // The trunk server goes with or after the leader (a storage takes it only from the
    // tracker it knows leads), once per change.
    let trunk_server = shared
        .cluster()
        .trunk_brief(&who.group)
        .filter(|(version, _)| session.trunk_told != Some(*version))
        .map(|(version, brief)| {
            session.trunk_told = Some(version);
            brief
        });
    BeatReply {
        leader,
        trunk_server,
        group_members,
    }
    .encode()
}

/// 83: empty body, or the 348-byte counters when they changed.
pub fn beat(shared: &Shared, session: &mut Session, req: &Request<'_>) -> Reply {
    let who = joined(session)?.clone();
    let counters = match req.body.len() {
        0 => None,
        StorageCounters::LEN => Some(StorageCounters::decode_from(&mut Reader::new(req.body))?),
        n => {
            return Err(Refusal::invalid(format!(
                "beat body is {n} bytes, expected 0 or {}",
                StorageCounters::LEN
            )))
        }
    };
    shared.cluster().beat(&who, counters, unix_now())?;
    Ok(beat_reply(shared, session, req))
}

/// 84.
pub fn disk_usage(shared: &Shared, session: &mut Session, req: &Request<'_>) -> Reply {
    let who = joined(session)?.clone();
    let usage = DiskUsage::decode(req.body)?;
    shared.cluster().disk_usage(&who, &usage, unix_now())?;
    Ok(beat_reply(shared, session, req))
}

/// 89.
pub fn sync_report(shared: &Shared, session: &mut Session, req: &Request<'_>) -> Reply {
    let who = joined(session)?.clone();
    let report = SyncReport::decode(req.body)?;
    shared.cluster().sync_report(&who, &report, unix_now())?;
    Ok(beat_reply(shared, session, req))
}

fn encode_source(source: Option<SyncSource>) -> Vec<u8> {
    source.map(|s| s.encode()).unwrap_or_default()
}

/// 87.
pub fn sync_dest_req(shared: &Shared, session: &mut Session, req: &Request<'_>) -> Reply {
    let who = joined(session)?.clone();
    expect_len(req.body, 0)?;
    let source = shared.cluster().sync_dest_req(&who, unix_now())?;
    Ok(encode_source(source))
}

/// 88.
pub fn sync_notify(shared: &Shared, session: &mut Session, req: &Request<'_>) -> Reply {
    let who = joined(session)?.clone();
    expect_len(req.body, SyncSource::LEN)?;
    let source = SyncSource::decode(req.body)?;
    shared.cluster().sync_notify(&who, source)?;
    Ok(Vec::new())
}

/// 79.
pub fn sync_dest_query(shared: &Shared, session: &mut Session, _req: &Request<'_>) -> Reply {
    let who = joined(session)?.clone();
    let source = shared.cluster().sync_dest_query(&who)?;
    Ok(encode_source(source))
}

/// 86: group + destination id.
pub fn sync_src_req(shared: &Shared, req: &Request<'_>) -> Reply {
    let ask = SyncSrcReq::decode(req.body)?;
    let source = shared.cluster().sync_src_req(&ask.group, &ask.dest_id)?;
    Ok(encode_source(source))
}

/// 76: group + brief of the storage whose status is reported.
pub fn report_status(shared: &Shared, req: &Request<'_>) -> Reply {
    let report = ReportStatus::decode(req.body)?;
    shared
        .cluster()
        .report_status(&report.group, &report.brief)?;
    Ok(Vec::new())
}

/// 59: one byte, the storage's new status.
pub fn change_status(shared: &Shared, session: &mut Session, req: &Request<'_>) -> Reply {
    let who = joined(session)?.clone();
    expect_len(req.body, 1)?;
    shared.cluster().change_status(&who, req.body[0])?;
    Ok(Vec::new())
}

/// 85: the leader ignores replica changes; so do we.
pub fn replica_chg(_shared: &Shared, session: &mut Session, req: &Request<'_>) -> Reply {
    joined(session)?;
    if !req.body.len().is_multiple_of(StorageBrief::LEN) {
        return Err(Refusal::invalid("body is not a list of storage briefs"));
    }
    Ok(Vec::new())
}

/// 72: the group's current trunk file id (a new trunk server starts after it).
pub fn fetch_trunk_file_id(shared: &Shared, session: &mut Session, req: &Request<'_>) -> Reply {
    let who = joined(session)?.clone();
    expect_len(req.body, 0)?;
    let id = shared.cluster().trunk_file_id(&who)?;
    Ok(TrunkFileId(id).encode())
}

/// 73: the trunk server created a trunk file.
pub fn report_trunk_file_id(shared: &Shared, session: &mut Session, req: &Request<'_>) -> Reply {
    let who = joined(session)?.clone();
    let TrunkFileId(id) = TrunkFileId::decode(req.body)?;
    let leader = shared.peers().is_leader();
    shared.cluster().report_trunk_file_id(&who, id, leader)?;
    Ok(Vec::new())
}

/// 74: the trunk server's free trunk space, MB.
pub fn report_trunk_free(shared: &Shared, session: &mut Session, req: &Request<'_>) -> Reply {
    let who = joined(session)?.clone();
    let Count64(mb) = Count64::decode(req.body)?;
    let leader = shared.peers().is_leader();
    shared.cluster().report_trunk_free(&who, mb, leader)?;
    Ok(Vec::new())
}

/// 60: the IP this tracker sees the storage connect from; with storage ids, the
/// addresses `storage_ids.conf` gives it (`ip1,ip2` for a storage on two networks).
pub fn get_my_ip(shared: &Shared, req: &Request<'_>) -> Reply {
    let ask = if req.body.is_empty() {
        None
    } else {
        Some(GetMyIp::decode(req.body)?)
    };
    let peer_ip = req.peer_ip().to_string();
    let listed = match (&shared.config.storage_ids, &ask) {
        (Some(ids), Some(ask)) => {
            let found = u16::try_from(ask.port)
                .ok()
                .and_then(|port| ids.by_group_addr(&ask.group, &peer_ip, port));
            if found.is_none() {
                warn!(
                    "storage {peer_ip}:{} of group {} is not in storage_ids.conf",
                    ask.port, ask.group
                );
            }
            found.map(|s| s.addrs_text())
        }
        _ => None,
    };
    Ok(listed.unwrap_or(peer_ip).into_bytes())
}

/// 75: the cluster-wide settings storages take from the tracker. Must stay < 1024 bytes.
pub fn parameter_req(shared: &Shared, _req: &Request<'_>) -> Reply {
    let c = &shared.config;
    let t = &c.trunk;
    let b = |v: bool| v as u8;
    let mut text = String::new();
    let _ = write!(
        text,
        "use_storage_id={}\nid_type_in_filename={}\ntrust_storage_server_id={}\n\
         response_ip_addr_size={}\nstorage_ip_changed_auto_adjust={}\n\
         storage_sync_file_max_delay={}\nstore_path={}\nreserved_storage_space={}\n\
         use_trunk_file={}\nslot_min_size={}\nslot_max_size={}\n\
         trunk_alloc_alignment_size={}\ntrunk_file_size={}\ntrunk_create_file_advance={}\n\
         trunk_create_file_time_base={}\ntrunk_create_file_interval={}\n\
         trunk_create_file_space_threshold={}\ntrunk_init_check_occupying={}\n\
         trunk_init_reload_from_binlog={}\ntrunk_free_space_merge={}\n\
         delete_unused_trunk_files={}\ntrunk_compress_binlog_min_interval={}\n\
         trunk_compress_binlog_interval={}\ntrunk_compress_binlog_time_base={}\n\
         trunk_binlog_max_backups={}\nstore_slave_file_use_link={}\n",
        b(c.use_storage_id),
        match c.id_type_in_filename {
            IdType::Id if c.use_storage_id => "id",
            _ => "ip",
        },
        b(c.trust_storage_server_id),
        c.response_ip_size.width(),
        b(c.storage_ip_changed_auto_adjust),
        c.placement.sync_file_max_delay,
        match c.placement.store_path {
            crate::config::StorePath::RoundRobin => 0,
            crate::config::StorePath::LoadBalance => 2,
        },
        c.placement.reserved_storage_space.to_fdfs_string(),
        b(c.use_trunk_file),
        t.slot_min_size,
        t.slot_max_size,
        t.alloc_alignment_size,
        t.file_size,
        b(t.create_file_advance),
        t.create_file_time_base,
        t.create_file_interval,
        t.create_file_space_threshold,
        b(t.init_check_occupying),
        b(t.init_reload_from_binlog),
        b(t.free_space_merge),
        b(t.delete_unused_trunk_files),
        t.compress_binlog_min_interval,
        t.compress_binlog_interval,
        t.compress_binlog_time_base,
        t.binlog_max_backups,
        b(c.store_slave_file_use_link),
    );
    debug_assert!(
        text.len() < 1024,
        "parameter reply must fit the client buffer"
    );
    Ok(text.into_bytes())
}

/// 77: the change log (deletions, IP changes) is not kept yet: nothing to report.
pub fn changelog_req(_shared: &Shared, _req: &Request<'_>) -> Reply {
    Ok(Vec::new())
}

/// Body of 70/71: group + `ip:port` (6.16) or group [+ ip] (older).
fn group_and_host(req: &Request<'_>) -> Result<(String, String, Option<u16>), Refusal> {
    let GroupHost { group, host } = GroupHost::decode(req.body)?;
    let (ip, port) = split_host_port(&host);
    let ip = if ip.is_empty() {
        req.peer_ip().to_string()
    } else {
        ip.to_string()
    };
    Ok((group, ip, port))
}

/// `ip:port`, `[v6]:port`, `ip` or a bare IPv6 address.
fn split_host_port(text: &str) -> (&str, Option<u16>) {
    let (ip, port) = fdfs_proto::addr::split(text);
    (ip, port.and_then(|p| p.parse().ok()))
}

/// The storage `ip:port` of `group` names: with storage ids, the id the table gives
/// it (ENOENT if none); without, the IP itself (a member of the group or not).
fn server_id_of(
    shared: &Shared,
    group: &str,
    ip: &str,
    port: Option<u16>,
) -> Result<String, Refusal> {
    let Some(ids) = &shared.config.storage_ids else {
        return Ok(ip.to_string());
    };
    let port = port.unwrap_or(DEFAULT_STORAGE_PORT);
    ids.by_group_addr(group, ip, port)
        .map(|s| s.id.clone())
        .ok_or_else(|| {
            Refusal::not_found(format!(
                "storage {ip}:{port} of group {group} is not in storage_ids.conf"
            ))
        })
}

/// 71: the brief of a storage.
pub fn get_status(shared: &Shared, req: &Request<'_>) -> Reply {
    let (group, ip, port) = group_and_host(req)?;
    let id = server_id_of(shared, &group, &ip, port)?;
    let cluster = shared.cluster();
    let g = cluster.group(&group)?;
    let s = match &shared.config.storage_ids {
        Some(_) => g.storages.get(&id),
        None => g.find_by_ip(&ip, port),
    };
    let s = s.ok_or_else(|| Refusal::not_found(format!("storage {ip} not in group {group}")))?;
    let mut w = Writer::with_capacity(StorageBrief::LEN);
    s.brief().encode_into(&mut w);
    Ok(w.finish())
}

/// 70: the id of a storage.
pub fn get_server_id(shared: &Shared, req: &Request<'_>) -> Reply {
    let (group, ip, port) = group_and_host(req)?;
    Ok(server_id_of(shared, &group, &ip, port)?.into_bytes())
}

/// 69: a page of `storage_ids.conf`, from the asked index on. Without storage ids:
/// EOPNOTSUPP, or an empty list if the asker allows it. The body is the start index and
/// the allow-empty flag, 5 bytes as in 6.x (the 4-byte body of older releases is
/// EINVAL, as upstream answers it).
pub fn fetch_storage_ids(shared: &Shared, req: &Request<'_>) -> Reply {
    let ask = FetchStorageIds::decode(req.body)?;
    let Some(ids) = &shared.config.storage_ids else {
        if ask.allow_empty {
            return Ok(StorageIdsPage {
                total: 0,
                lines: Vec::new(),
            }
            .encode());
        }
        return Err(Refusal::new(
            errno::EOPNOTSUPP,
            "use_storage_id is off: no storage ids to fetch",
        ));
    };
    let start = ask.start as usize;
    if start >= ids.len() {
        return Err(Refusal::invalid(format!(
            "start index {start} of {} storage ids",
            ids.len()
        )));
    }
    // A page fills the asker's buffer at most (upstream's is its buff_size).
    let room = (shared.config.buff_size as usize).saturating_sub(128);
    let mut used = 8;
    let mut lines = Vec::new();
    for s in &ids.all()[start..] {
        let line = s.to_string();
        if used + line.len() + 1 > room && !lines.is_empty() {
            break;
        }
        used += line.len() + 1;
        lines.push(line);
    }
    Ok(StorageIdsPage {
        total: ids.len() as u32,
        lines,
    }
    .encode())
}

/// 109: the group of the storage at an address (the asker's, when none is given) and a
/// port, from `storage_ids.conf`: a storage.conf may leave `group_name` out.
pub fn get_group_name(shared: &Shared, req: &Request<'_>) -> Reply {
    let Some(ids) = &shared.config.storage_ids else {
        return Err(Refusal::new(
            errno::EOPNOTSUPP,
            "use_storage_id is off: cannot tell a storage's group from its address",
        ));
    };
    let ask = GetGroupName::decode(req.body)?;
    let ip = if ask.ip.is_empty() {
        req.peer_ip().to_string()
    } else {
        ask.ip
    };
    let found = u16::try_from(ask.port)
        .ok()
        .and_then(|port| ids.by_addr(&ip, port));
    let s = found.ok_or_else(|| {
        Refusal::not_found(format!(
            "storage {ip}:{} is not in storage_ids.conf",
            ask.port
        ))
    })?;
    Ok(GroupName(s.group.clone()).encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("10.0.0.1:23000"), ("10.0.0.1", Some(23000)));
        assert_eq!(split_host_port("10.0.0.1"), ("10.0.0.1", None));
        assert_eq!(split_host_port("[::1]:23000"), ("::1", Some(23000)));
        assert_eq!(split_host_port("fe80::1"), ("fe80::1", None));
        assert_eq!(split_host_port(""), ("", None));
    }
}
