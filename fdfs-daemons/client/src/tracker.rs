//! Talking to the trackers: where to upload, where to read, what the cluster looks like.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fdfs_proto::msg::FileRef;
use fdfs_proto::msg::{
    DeleteGroup, DeleteStorage, Fetch, ListAllGroups, QueryFetch, QueryStore, QueryStoreAll,
    Request, SetTrunkServer,
};
use fdfs_proto::msg::{
    FetchTargets, GroupStat, ServerAddr, StorageSelector, StorageStat, StoreTarget, StoreTargets,
};
use fdfs_proto::{errno, status};
use fdfs_runtime::{Connection, Error};

use crate::config::ClientConfig;
use crate::{invalid_input, split_file_id};

/// Indexes to try for one call: the current tracker first, then the others in order.
pub fn failover_order(start: usize, count: usize) -> Vec<usize> {
    (0..count).map(|i| (start + i) % count.max(1)).collect()
}

/// Whether an error means "this tracker is unreachable, try another one".
/// Replies carrying an errno and malformed replies are final.
pub fn is_connection_error(err: &Error) -> bool {
    matches!(err, Error::Io(_))
}

/// The trackers of a cluster, used round robin with failover.
#[derive(Debug)]
pub struct TrackerClient {
    servers: Vec<SocketAddr>,
    index: AtomicUsize,
    connect_timeout: Duration,
    network_timeout: Duration,
}

impl TrackerClient {
    /// `servers` are used in the given order (pass them sorted, as the config gives them).
    pub fn new(
        servers: Vec<SocketAddr>,
        connect_timeout: Duration,
        network_timeout: Duration,
    ) -> Self {
        TrackerClient {
            servers,
            index: AtomicUsize::new(0),
            connect_timeout,
            network_timeout,
        }
    }

    pub fn from_config(config: &ClientConfig) -> Self {
        Self::new(
            config.trackers.clone(),
            config.connect_timeout,
            config.network_timeout,
        )
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Index of the tracker the next call starts with.
    pub fn current_index(&self) -> usize {
        self.index.load(Ordering::Relaxed) % self.servers.len().max(1)
    }

    /// Makes the next call start with tracker `index`.
    pub fn set_current_index(&self, index: usize) {
        self.index.store(index, Ordering::Relaxed);
    }

    /// Returns the index to start this call with and moves the round robin on.
    fn take_start(&self) -> usize {
        let n = self.servers.len().max(1);
        let start = self.index.load(Ordering::Relaxed) % n;
        self.index.store((start + 1) % n, Ordering::Relaxed);
        start
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub fn network_timeout(&self) -> Duration {
        self.network_timeout
    }

    /// Opens a connection to one particular tracker.
    pub async fn connect_to(&self, addr: SocketAddr) -> Result<Connection, Error> {
        Ok(Connection::connect(addr, None, self.connect_timeout, self.network_timeout).await?)
    }

    /// Connects to the first reachable tracker, starting at the current one.
    pub async fn connect(&self) -> Result<(Connection, SocketAddr), Error> {
        let start = self.take_start();
        let mut last = None;
        for i in failover_order(start, self.servers.len()) {
            let addr = self.servers[i];
            match self.connect_to(addr).await {
                Ok(c) => return Ok((c, addr)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Other("no tracker server configured".into())))
    }

    /// One request on one tracker over a fresh connection.
    pub async fn call_on<R: Request>(&self, addr: SocketAddr, req: &R) -> Result<R::Reply, Error> {
        let mut conn = self.connect_to(addr).await?;
        let reply = conn.call(req).await;
        match &reply {
            // The tracker keeps the connection after an errno reply: end it politely.
            Ok(_) | Err(Error::Status(_)) => conn.quit().await,
            _ => {}
        }
        reply
    }

    /// One request, trying the trackers in failover order until one answers.
    pub async fn call<R: Request>(&self, req: &R) -> Result<R::Reply, Error> {
        let start = self.take_start();
        let mut last = None;
        for i in failover_order(start, self.servers.len()) {
            match self.call_on(self.servers[i], req).await {
                Err(e) if is_connection_error(&e) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| Error::Other("no tracker server configured".into())))
    }

    /// 101 / 104: where to upload (optionally inside `group`).
    pub async fn query_store(&self, group: Option<&str>) -> Result<StoreTarget, Error> {
        self.call(&QueryStore {
            group: given_group(group)?,
        })
        .await
    }

    /// 106 / 107: every storage an upload could go to.
    pub async fn query_store_all(&self, group: Option<&str>) -> Result<StoreTargets, Error> {
        self.call(&QueryStoreAll {
            group: given_group(group)?,
        })
        .await
    }

    /// 102: one storage that can serve a download of `file_id`.
    pub async fn query_fetch(&self, file_id: &str) -> Result<(String, ServerAddr), Error> {
        self.query_one(Fetch::One, file_id).await
    }

    /// 105: every storage that can serve `file_id`.
    pub async fn query_fetch_all(&self, file_id: &str) -> Result<FetchTargets, Error> {
        self.call(&QueryFetch {
            kind: Fetch::All,
            file: file_ref(file_id)?,
        })
        .await
    }

    /// 103: the storage that must apply a change to `file_id` (its source).
    pub async fn query_update(&self, file_id: &str) -> Result<(String, ServerAddr), Error> {
        self.query_one(Fetch::Update, file_id).await
    }

    async fn query_one(&self, kind: Fetch, file_id: &str) -> Result<(String, ServerAddr), Error> {
        let file = file_ref(file_id)?;
        let targets = self.call(&QueryFetch { kind, file }).await?;
        // 102 and 103 name exactly one storage.
        match <[ServerAddr; 1]>::try_from(targets.servers) {
            Ok([server]) => Ok((targets.group, server)),
            Err(list) => Err(Error::Other(format!(
                "tracker returned {} storages for one",
                list.len()
            ))),
        }
    }

    /// 91: every group's summary.
    pub async fn list_groups(&self) -> Result<Vec<GroupStat>, Error> {
        self.call(&ListAllGroups).await
    }

    /// 92: the storages of `group`, or just `storage_id`.
    pub async fn list_storages(
        &self,
        group: &str,
        storage_id: Option<&str>,
    ) -> Result<Vec<StorageStat>, Error> {
        self.call(&storage_selector(group, storage_id)?).await
    }

    /// Removes a storage from every tracker. Like upstream, first checks on every
    /// tracker that it is neither ONLINE nor ACTIVE (EBUSY otherwise), then sends 93
    /// to every tracker. Succeeds if at least one tracker knew the storage.
    pub async fn delete_storage(&self, group: &str, storage_id: &str) -> Result<(), Error> {
        let selector = storage_selector(group, Some(storage_id))?;
        for &addr in &self.servers {
            match self.call_on(addr, &selector).await {
                Ok(stats) => {
                    if stats
                        .iter()
                        .any(|s| s.status == status::ONLINE || s.status == status::ACTIVE)
                    {
                        return Err(Error::Status(errno::EBUSY));
                    }
                }
                Err(Error::Status(errno::ENOENT)) => {}
                Err(e) => return Err(e),
            }
        }
        self.on_every_tracker(&DeleteStorage {
            group: group.to_string(),
            storage_id: storage_id.to_string(),
        })
        .await
    }

    /// 108 on every tracker: removes an empty group.
    pub async fn delete_group(&self, group: &str) -> Result<(), Error> {
        check_group(group)?;
        self.on_every_tracker(&DeleteGroup {
            group: group.to_string(),
        })
        .await
    }

    /// Sends a request to every tracker; ENOENT answers are tolerated as long as one
    /// tracker succeeds.
    async fn on_every_tracker<R: Request<Reply = ()>>(&self, req: &R) -> Result<(), Error> {
        let mut any_ok = false;
        for &addr in &self.servers {
            match self.call_on(addr, req).await {
                Ok(()) => any_ok = true,
                Err(Error::Status(errno::ENOENT)) => {}
                Err(e) => return Err(e),
            }
        }
        if any_ok {
            Ok(())
        } else {
            Err(Error::Status(errno::ENOENT))
        }
    }

    /// 94: makes `storage_id` (or, when empty, the tracker's choice) the trunk server
    /// of `group`; returns the new trunk server id. Only the leader answers, so every
    /// tracker is tried until one accepts.
    pub async fn set_trunk_server(&self, group: &str, storage_id: &str) -> Result<String, Error> {
        let req = SetTrunkServer(storage_selector(
            group,
            (!storage_id.is_empty()).then_some(storage_id),
        )?);
        let mut last = Error::Status(errno::ENOENT);
        for &addr in &self.servers {
            match self.call_on(addr, &req).await {
                Ok(reply) => {
                    let end = reply.iter().position(|&b| b == 0).unwrap_or(reply.len());
                    return Ok(String::from_utf8_lossy(&reply[..end]).into_owned());
                }
                // Not the leader: ask the next one.
                Err(Error::Status(errno::EOPNOTSUPP)) => last = Error::Status(errno::EOPNOTSUPP),
                Err(e) if is_connection_error(&e) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}

/// A group given by the caller (`None` or empty: any group), checked.
fn given_group(group: Option<&str>) -> Result<Option<String>, Error> {
    match group {
        Some(g) if !g.is_empty() => {
            check_group(g)?;
            Ok(Some(g.to_string()))
        }
        _ => Ok(None),
    }
}

fn check_group(group: &str) -> Result<(), Error> {
    if !fdfs_proto::valid_group_name(group) {
        return Err(invalid_input("group name", format!("{group:?}")));
    }
    Ok(())
}

fn storage_selector(group: &str, storage_id: Option<&str>) -> Result<StorageSelector, Error> {
    check_group(group)?;
    if let Some(id) = storage_id {
        if id.is_empty() || id.len() >= fdfs_proto::STORAGE_ID_LEN {
            return Err(invalid_input("storage id", format!("{id:?}")));
        }
    }
    Ok(StorageSelector {
        group: group.to_string(),
        storage_id: storage_id.map(str::to_string),
    })
}

/// The group and filename of a file id, as 102/103/105 carry them.
pub fn file_ref(file_id: &str) -> Result<FileRef, Error> {
    let (group, filename) = split_file_id(file_id)?;
    Ok(FileRef {
        group: group.to_string(),
        filename: filename.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_starts_at_current_and_wraps() {
        assert_eq!(failover_order(0, 3), vec![0, 1, 2]);
        assert_eq!(failover_order(2, 3), vec![2, 0, 1]);
        assert_eq!(failover_order(0, 1), vec![0]);
        assert!(failover_order(0, 0).is_empty());
    }

    #[test]
    fn round_robin_advances_once_per_call() {
        let t = TrackerClient::new(
            vec![
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.2:1".parse().unwrap(),
                "127.0.0.3:1".parse().unwrap(),
            ],
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert_eq!(t.take_start(), 0);
        assert_eq!(t.take_start(), 1);
        assert_eq!(t.take_start(), 2);
        assert_eq!(t.take_start(), 0);
        t.set_current_index(2);
        assert_eq!(t.current_index(), 2);
    }

    #[test]
    fn only_connection_errors_fail_over() {
        let io = Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_connection_error(&io));
        assert!(!is_connection_error(&Error::Status(errno::ENOENT)));
        assert!(!is_connection_error(&Error::Proto(
            fdfs_proto::ProtoError::length("39", 3)
        )));
    }

    #[test]
    fn request_bodies() {
        let q = file_ref("group1/M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt").unwrap();
        assert_eq!(q.group, "group1");
        assert_eq!(q.encode().len(), 16 + 44);
        assert!(file_ref("nogroup").is_err());
        assert!(given_group(Some("bad group")).is_err());
        assert_eq!(given_group(Some("")).unwrap(), None);
        assert!(storage_selector("group1", Some("")).is_err());
        assert_eq!(
            storage_selector("group1", Some("100001"))
                .unwrap()
                .encode()
                .len(),
            22
        );
    }
}
