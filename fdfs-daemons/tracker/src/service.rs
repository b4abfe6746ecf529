//! Client and admin commands (§3.1, §3.3): where to upload, where to read, listings,
//! deletions. Each handler decodes its body, asks the [`Cluster`](crate::cluster::Cluster)
//! and encodes the reply.

use fdfs_proto::codec::{Reader, Writer};
use fdfs_proto::msg::DeleteStorage;
use fdfs_proto::msg::FileRef;
use fdfs_proto::msg::{
    get_group, FetchTargets, GroupStat, StorageClusterFilter, StorageSelector, StorageStat,
    StoreTarget, StoreTargets, VolumeFilter,
};
use fdfs_proto::{cmd, errno, GROUP_NAME_LEN, STORAGE_ID_LEN};
use fdfs_runtime::unix_now;
use tracing::info;

use crate::cluster::FetchKind;
use crate::refusal::{Refusal, Reply};
use crate::server::{Request, Shared};

fn expect_len(body: &[u8], len: usize) -> Result<(), Refusal> {
    if body.len() != len {
        return Err(Refusal::invalid(format!(
            "body is {} bytes, expected {len}",
            body.len()
        )));
    }
    Ok(())
}

/// A body that is exactly one 16-byte group name.
fn group_body(body: &[u8]) -> Result<String, Refusal> {
    expect_len(body, GROUP_NAME_LEN)?;
    Ok(get_group(&mut Reader::new(body))?)
}

/// 101/104/106/107.
pub fn query_store(shared: &Shared, req: &Request<'_>) -> Reply {
    let all = matches!(
        req.cmd,
        cmd::QUERY_STORE_WITHOUT_GROUP_ALL | cmd::QUERY_STORE_WITH_GROUP_ALL
    );
    let group = match req.cmd {
        cmd::QUERY_STORE_WITH_GROUP_ONE | cmd::QUERY_STORE_WITH_GROUP_ALL => {
            Some(group_body(req.body)?)
        }
        _ => {
            expect_len(req.body, 0)?;
            None
        }
    };
    let choice = shared.cluster().select_store(group.as_deref(), all)?;
    let ip_size = shared.config.response_ip_size;
    Ok(if all {
        StoreTargets {
            group: choice.group,
            servers: choice.servers,
            store_path_index: choice.store_path_index,
        }
        .encode(ip_size)
    } else {
        StoreTarget {
            group: choice.group,
            server: choice.servers.into_iter().next().expect("one server"),
            store_path_index: choice.store_path_index,
        }
        .encode(ip_size)
    })
}

/// 102/103/105.
pub fn query_fetch(shared: &Shared, req: &Request<'_>) -> Reply {
    let query = FileRef::decode_query(req.body)?;
    let kind = match req.cmd {
        cmd::QUERY_FETCH_ONE => FetchKind::One,
        cmd::QUERY_FETCH_ALL => FetchKind::All,
        _ => FetchKind::Update,
    };
    let servers = shared
        .cluster()
        .select_fetch(&query.group, &query.filename, kind, unix_now())?;
    Ok(FetchTargets {
        group: query.group,
        servers,
    }
    .encode(shared.config.response_ip_size))
}

/// 90 (one group) / 91 (all groups).
pub fn list_groups(shared: &Shared, req: &Request<'_>) -> Reply {
    let only = if req.cmd == cmd::SERVER_LIST_ONE_GROUP {
        Some(group_body(req.body)?)
    } else {
        expect_len(req.body, 0)?;
        None
    };
    let stats = shared.cluster().group_stats(only.as_deref())?;
    let mut w = Writer::with_capacity(stats.len() * GroupStat::LEN);
    for s in &stats {
        s.encode_into(&mut w);
    }
    Ok(w.finish())
}

/// 92.
pub fn list_storages(shared: &Shared, req: &Request<'_>) -> Reply {
    let sel = StorageSelector::decode(req.body)?;
    let stats = shared
        .cluster()
        .storage_stats(&sel.group, sel.storage_id.as_deref())?;
    let ip_size = shared.config.response_ip_size;
    let mut w = Writer::with_capacity(stats.len() * StorageStat::len(ip_size));
    for s in &stats {
        s.encode_into(&mut w, ip_size);
    }
    Ok(w.finish())
}

/// 97 STORAGE_CLUSTER_STAT (6.16, `fdfs_storage_stat`): every storage of the cluster.
pub fn storage_cluster_stat(shared: &Shared, req: &Request<'_>) -> Reply {
    let filter = StorageClusterFilter::decode(req.body)?;
    Ok(shared.cluster().storage_cluster_stat(&filter).encode())
}

/// 98 STORAGE_VOLUMN_STAT (6.16, `fdfs_volumn_stat`): every group's space.
pub fn volume_stat(shared: &Shared, req: &Request<'_>) -> Reply {
    let filter = VolumeFilter::decode(req.body)?;
    Ok(shared.cluster().volume_stat(&filter).encode())
}

/// 93: group + storage id (1..15 bytes).
pub fn delete_storage(shared: &Shared, req: &Request<'_>) -> Reply {
    let del = DeleteStorage::decode(req.body)?;
    shared
        .cluster()
        .delete_storage(&del.group, &del.storage_id)?;
    info!(
        "storage {} of {} deleted on request of {}",
        del.storage_id, del.group, req.peer
    );
    Ok(Vec::new())
}

/// 108.
pub fn delete_group(shared: &Shared, req: &Request<'_>) -> Reply {
    let group = group_body(req.body)?;
    shared.cluster().delete_group(&group)?;
    info!("group {group} deleted on request of {}", req.peer);
    Ok(Vec::new())
}

/// 94: the trunk server of a group (group alone), or makes the named storage it (the
/// leader switches within a second, telling it first to forget its peers' marks). The
/// leader answers, and only with `use_trunk_file`; an active trunk server is not
/// replaced (EEXIST), as upstream. The reply is the trunk server's id and a NUL.
pub fn set_trunk_server(shared: &Shared, req: &Request<'_>) -> Reply {
    if !shared.config.use_trunk_file || !shared.peers().is_leader() {
        return Err(Refusal::new(
            errno::EOPNOTSUPP,
            "only the leader of a tracker cluster with use_trunk_file sets trunk servers",
        ));
    }
    if !(GROUP_NAME_LEN..GROUP_NAME_LEN + STORAGE_ID_LEN).contains(&req.body.len()) {
        return Err(Refusal::invalid("body is not a group and an optional id"));
    }
    let group = group_body(&req.body[..GROUP_NAME_LEN])?;
    let id = std::str::from_utf8(&req.body[GROUP_NAME_LEN..])
        .map_err(|_| Refusal::invalid("storage id is not text"))?
        .trim_matches('\0');
    let id = (!id.is_empty()).then_some(id);
    let current = shared.cluster().set_trunk_server_on_request(&group, id)?;
    if id.is_some() {
        info!(
            "group {group}: trunk server {current} asked for by {}",
            req.peer
        );
    }
    let mut out = current.into_bytes();
    out.push(0);
    Ok(out)
}
