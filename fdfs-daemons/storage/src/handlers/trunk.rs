//! Trunk files between the storages of a group and their trackers: 27 ALLOC_SPACE,
//! 28 ALLOC_CONFIRM and 29 FREE_SPACE (answered by the trunk server), 30 SYNC_BINLOG
//! and 33 TRUNCATE_BINLOG_FILE (from the trunk server to its peers), 31
//! GET_BINLOG_SIZE and 32 DELETE_BINLOG_MARKS (from the leader tracker).
//!
//! As upstream, they are taken from any address `allow_hosts` lets in (a C storage may
//! connect from any of its addresses); with `cluster_secret`, the first five only from
//! peers that proved it, since a stranger that could free a slot could have a file
//! overwritten.

use fdfs_proto::errno;
use fdfs_proto::msg::{Count64, TrunkAllocSpace, TrunkSlotBody};
use fdfs_runtime::Connection;

use super::{Fail, Handled};
use crate::state::Storage;

fn check_group(st: &Storage, group: &str) -> Result<(), Fail> {
    if group != st.cfg.group_name {
        return Err(Fail::Reply(errno::EINVAL));
    }
    Ok(())
}

/// 27: a slot for a peer's upload.
pub async fn alloc_space(st: &Storage, conn: &mut Connection, body: &[u8]) -> Handled {
    let req = TrunkAllocSpace::decode(body).map_err(|_| Fail::Reply(errno::EINVAL))?;
    check_group(st, &req.group)?;
    if !st.trunk.is_server() {
        return Err(Fail::Reply(errno::EINVAL));
    }
    let slot = st
        .trunk
        .alloc_here(st, req.path, req.size)
        .await
        .map_err(Fail::Reply)?;
    conn.reply(0, &slot.encode()).await.map_err(|_| Fail::Close)
}

/// 28: a peer wrote its slot (header status 0) or did not (an errno).
pub async fn alloc_confirm(
    st: &Storage,
    conn: &mut Connection,
    status: u8,
    body: &[u8],
) -> Handled {
    let req = TrunkSlotBody::decode(body).map_err(|_| Fail::Reply(errno::EINVAL))?;
    check_group(st, &req.group)?;
    if !st.trunk.is_server() {
        return Err(Fail::Reply(errno::EINVAL));
    }
    st.trunk
        .confirm_here(&req.slot, status)
        .await
        .map_err(Fail::Reply)?;
    conn.reply(0, &[]).await.map_err(|_| Fail::Close)
}

/// 29: a peer deleted the file in a slot.
pub async fn free_space(st: &Storage, conn: &mut Connection, body: &[u8]) -> Handled {
    let req = TrunkSlotBody::decode(body).map_err(|_| Fail::Reply(errno::EINVAL))?;
    check_group(st, &req.group)?;
    if !st.trunk.is_server() {
        return Err(Fail::Reply(errno::EINVAL));
    }
    st.trunk.free_here(req.slot).await.map_err(Fail::Reply)?;
    conn.reply(0, &[]).await.map_err(|_| Fail::Close)
}

/// The trunk binlog of a storage that is not the trunk server (30 and 33 are refused
/// by the trunk server itself, and with trunk files off).
fn peer_binlog(st: &Storage) -> Result<&std::sync::Arc<crate::trunk::binlog::TrunkBinlog>, Fail> {
    if st.trunk.is_server() {
        return Err(Fail::Reply(errno::EINVAL));
    }
    st.trunk.binlog().ok_or(Fail::Reply(errno::EINVAL))
}

/// 30: lines of the trunk server's binlog, appended as they are.
pub async fn sync_binlog(st: &Storage, conn: &mut Connection, body: &[u8]) -> Handled {
    if body.is_empty() || st.trunk.params().is_none() {
        return Err(Fail::Reply(errno::EINVAL));
    }
    let log = peer_binlog(st)?;
    log.append_theirs(body).map_err(|e| {
        tracing::error!("cannot write the trunk binlog: {e}");
        Fail::Reply(errno::from_io(&e))
    })?;
    conn.reply(0, &[]).await.map_err(|_| Fail::Close)
}

/// 33: the trunk server sends its binlog from the start again.
pub async fn truncate_binlog(st: &Storage, conn: &mut Connection, body: &[u8]) -> Handled {
    let Some(params) = st.trunk.params() else {
        return Err(Fail::Reply(errno::EINVAL));
    };
    if !body.is_empty() {
        return Err(Fail::Reply(errno::EINVAL));
    }
    let log = peer_binlog(st)?.clone();
    let backups = params.binlog_max_backups;
    crate::durability::blocking(move || log.restart(backups))
        .await
        .map_err(|e| {
            tracing::error!("cannot restart the trunk binlog: {e}");
            Fail::Reply(errno::from_io(&e))
        })?;
    conn.reply(0, &[]).await.map_err(|_| Fail::Close)
}

/// 31: the size of this storage's trunk binlog (the leader tracker picks the trunk
/// server by it).
pub async fn get_binlog_size(st: &Storage, conn: &mut Connection, body: &[u8]) -> Handled {
    let log = match st.trunk.binlog() {
        Some(log) if body.is_empty() && st.trunk.params().is_some() => log,
        _ => return Err(Fail::Reply(errno::EINVAL)),
    };
    let size = log.size().map_err(|e| Fail::Reply(errno::from_io(&e)))?;
    conn.reply(0, &Count64(size as i64).encode())
        .await
        .map_err(|_| Fail::Close)
}

/// 32: this storage is about to become trunk server: its peers' marks go (each peer is
/// sent the whole binlog again).
pub async fn delete_binlog_marks(st: &Storage, conn: &mut Connection, body: &[u8]) -> Handled {
    if !body.is_empty() || st.trunk.is_server() {
        return Err(Fail::Reply(errno::EINVAL));
    }
    let log = st.trunk.binlog().ok_or(Fail::Reply(errno::EINVAL))?.clone();
    crate::durability::blocking(move || log.delete_marks())
        .await
        .map_err(|e| Fail::Reply(errno::from_io(&e)))?;
    conn.reply(0, &[]).await.map_err(|_| Fail::Close)
}
