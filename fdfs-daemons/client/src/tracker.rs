//! Talking to the trackers: where to upload, where to read, what the cluster looks like.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fdfs_proto::tracker_msg::{
    FetchTargets, FileQuery, GroupStat, ServerAddr, StorageSelector, StorageStat, StoreTarget,
    StoreTargets,
};
use fdfs_proto::{cmd, errno, status, IpSize, ProtoError, Writer, GROUP_NAME_LEN};
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
    pub async fn request_on(
        &self,
        addr: SocketAddr,
        command: u8,
        body: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let mut conn = self.connect_to(addr).await?;
        let reply = conn.request(command, body).await;
        match &reply {
            // The tracker keeps the connection after an errno reply: end it politely.
            Ok(_) | Err(Error::Status(_)) => conn.quit().await,
            _ => {}
        }
        reply
    }

    /// One request, trying the trackers in failover order until one answers.
    pub async fn request(&self, command: u8, body: &[u8]) -> Result<Vec<u8>, Error> {
        let start = self.take_start();
        let mut last = None;
        for i in failover_order(start, self.servers.len()) {
            match self.request_on(self.servers[i], command, body).await {
                Err(e) if is_connection_error(&e) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| Error::Other("no tracker server configured".into())))
    }

    /// 101 / 104: where to upload (optionally inside `group`).
    pub async fn query_store(&self, group: Option<&str>) -> Result<StoreTarget, Error> {
        let (command, body) = store_request(group, false);
        let reply = self.request(command, &body).await?;
        Ok(StoreTarget::decode(&reply)?)
    }

    /// 106 / 107: every storage an upload could go to.
    pub async fn query_store_all(&self, group: Option<&str>) -> Result<StoreTargets, Error> {
        let (command, body) = store_request(group, true);
        let reply = self.request(command, &body).await?;
        decode_store_all(&reply)
    }

    /// 102: one storage that can serve a download of `file_id`.
    pub async fn query_fetch(&self, file_id: &str) -> Result<(String, ServerAddr), Error> {
        self.query_one(cmd::QUERY_FETCH_ONE, file_id).await
    }

    /// 105: every storage that can serve `file_id`.
    pub async fn query_fetch_all(&self, file_id: &str) -> Result<FetchTargets, Error> {
        let reply = self
            .request(cmd::QUERY_FETCH_ALL, &file_query(file_id)?)
            .await?;
        decode_fetch_all(&reply)
    }

    /// 103: the storage that must apply a change to `file_id` (its source).
    pub async fn query_update(&self, file_id: &str) -> Result<(String, ServerAddr), Error> {
        self.query_one(cmd::QUERY_UPDATE, file_id).await
    }

    async fn query_one(&self, command: u8, file_id: &str) -> Result<(String, ServerAddr), Error> {
        let reply = self.request(command, &file_query(file_id)?).await?;
        decode_fetch_one(&reply)
    }

    /// 91: every group's summary.
    pub async fn list_groups(&self) -> Result<Vec<GroupStat>, Error> {
        let reply = self.request(cmd::SERVER_LIST_ALL_GROUPS, &[]).await?;
        Ok(GroupStat::decode_list(&reply)?)
    }

    /// 92: the storages of `group`, or just `storage_id`.
    pub async fn list_storages(
        &self,
        group: &str,
        storage_id: Option<&str>,
    ) -> Result<Vec<StorageStat>, Error> {
        let reply = self
            .request(
                cmd::SERVER_LIST_STORAGE,
                &storage_selector(group, storage_id)?,
            )
            .await?;
        Ok(StorageStat::decode_list(&reply)?)
    }

    /// Removes a storage from every tracker. Like upstream, first checks on every
    /// tracker that it is neither ONLINE nor ACTIVE (EBUSY otherwise), then sends 93
    /// to every tracker. Succeeds if at least one tracker knew the storage.
    pub async fn delete_storage(&self, group: &str, storage_id: &str) -> Result<(), Error> {
        let selector = storage_selector(group, Some(storage_id))?;
        for &addr in &self.servers {
            match self
                .request_on(addr, cmd::SERVER_LIST_STORAGE, &selector)
                .await
            {
                Ok(body) => {
                    let stats = StorageStat::decode_list(&body)?;
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
        self.on_every_tracker(cmd::SERVER_DELETE_STORAGE, &selector)
            .await
            .map(|_| ())
    }

    /// 108 on every tracker: removes an empty group.
    pub async fn delete_group(&self, group: &str) -> Result<(), Error> {
        self.on_every_tracker(cmd::SERVER_DELETE_GROUP, &group_field(group)?)
            .await
            .map(|_| ())
    }

    /// Sends a request to every tracker; ENOENT answers are tolerated as long as one
    /// tracker succeeds. Returns the first successful body.
    async fn on_every_tracker(&self, command: u8, body: &[u8]) -> Result<Vec<u8>, Error> {
        let mut first_ok = None;
        for &addr in &self.servers {
            match self.request_on(addr, command, body).await {
                Ok(b) => {
                    first_ok.get_or_insert(b);
                }
                Err(Error::Status(errno::ENOENT)) => {}
                Err(e) => return Err(e),
            }
        }
        first_ok.ok_or(Error::Status(errno::ENOENT))
    }

    /// 94: makes `storage_id` (or, when empty, the tracker's choice) the trunk server
    /// of `group`; returns the new trunk server id. Only the leader answers, so every
    /// tracker is tried until one accepts.
    pub async fn set_trunk_server(&self, group: &str, storage_id: &str) -> Result<String, Error> {
        let body = storage_selector(group, (!storage_id.is_empty()).then_some(storage_id))?;
        let mut last = Error::Status(errno::ENOENT);
        for &addr in &self.servers {
            match self
                .request_on(addr, cmd::SERVER_SET_TRUNK_SERVER, &body)
                .await
            {
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

fn store_request(group: Option<&str>, all: bool) -> (u8, Vec<u8>) {
    match group {
        Some(g) if !g.is_empty() => {
            let mut w = Writer::new();
            w.fixed_str(g, GROUP_NAME_LEN);
            let c = if all {
                cmd::QUERY_STORE_WITH_GROUP_ALL
            } else {
                cmd::QUERY_STORE_WITH_GROUP_ONE
            };
            (c, w.finish())
        }
        _ => {
            let c = if all {
                cmd::QUERY_STORE_WITHOUT_GROUP_ALL
            } else {
                cmd::QUERY_STORE_WITHOUT_GROUP_ONE
            };
            (c, Vec::new())
        }
    }
}

fn group_field(group: &str) -> Result<Vec<u8>, Error> {
    if !fdfs_proto::valid_group_name(group) {
        return Err(invalid_input("group name", format!("{group:?}")));
    }
    let mut w = Writer::new();
    w.fixed_str(group, GROUP_NAME_LEN);
    Ok(w.finish())
}

fn storage_selector(group: &str, storage_id: Option<&str>) -> Result<Vec<u8>, Error> {
    group_field(group)?;
    if let Some(id) = storage_id {
        if id.is_empty() || id.len() >= fdfs_proto::STORAGE_ID_LEN {
            return Err(invalid_input("storage id", format!("{id:?}")));
        }
    }
    Ok(StorageSelector {
        group: group.to_string(),
        storage_id: storage_id.map(str::to_string),
    }
    .encode())
}

/// Body of 102/103/105 for a file id.
pub fn file_query(file_id: &str) -> Result<Vec<u8>, Error> {
    let (group, filename) = split_file_id(file_id)?;
    Ok(FileQuery {
        group: group.to_string(),
        filename: filename.to_string(),
    }
    .encode())
}

/// Decodes a 102/103 reply (39 or 69 bytes) into group and server.
pub fn decode_fetch_one(body: &[u8]) -> Result<(String, ServerAddr), Error> {
    if body.len() != 39 && body.len() != 69 {
        return Err(ProtoError::length("39 or 69", body.len()).into());
    }
    let t = FetchTargets::decode(body, None)?;
    let server = t
        .servers
        .into_iter()
        .next()
        .ok_or_else(|| Error::Other("tracker returned no storage".into()))?;
    Ok((t.group, server))
}

/// Width of the IP fields in a 105 reply, from its length.
fn fetch_all_ip_size(len: usize) -> Option<IpSize> {
    let rest = len.checked_sub(GROUP_NAME_LEN)?;
    if rest == 0 {
        return None;
    }
    if rest % (IpSize::V4.width() - 1 + 8) == 0 {
        Some(IpSize::V4)
    } else if rest % (IpSize::V6.width() - 1 + 8) == 0 {
        Some(IpSize::V6)
    } else {
        None
    }
}

pub fn decode_fetch_all(body: &[u8]) -> Result<FetchTargets, Error> {
    let size = fetch_all_ip_size(body.len())
        .ok_or_else(|| ProtoError::length("16 + n*23 or 16 + n*53", body.len()))?;
    Ok(FetchTargets::decode(body, Some(size))?)
}

pub fn decode_store_all(body: &[u8]) -> Result<StoreTargets, Error> {
    let size = body
        .len()
        .checked_sub(1)
        .and_then(fetch_all_ip_size)
        .ok_or_else(|| ProtoError::length("17 + n*23 or 17 + n*53", body.len()))?;
    Ok(StoreTargets::decode(body, size)?)
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
        assert!(!is_connection_error(&Error::Proto(ProtoError::length(
            "39", 3
        ))));
    }

    #[test]
    fn fetch_replies_of_both_widths() {
        let t = FetchTargets {
            group: "group1".into(),
            servers: vec![ServerAddr {
                ip: "127.0.0.61".into(),
                port: 23400,
            }],
        };
        for size in [IpSize::V4, IpSize::V6] {
            let (g, s) = decode_fetch_one(&t.encode(size)).unwrap();
            assert_eq!(g, "group1");
            assert_eq!(s.ip, "127.0.0.61");
            assert_eq!(s.port, 23400);
        }
        let mut two = t.clone();
        two.servers.push(ServerAddr {
            ip: "127.0.0.62".into(),
            port: 23000,
        });
        assert!(decode_fetch_one(&two.encode(IpSize::V4)).is_err());
        assert_eq!(
            decode_fetch_all(&two.encode(IpSize::V4)).unwrap().servers,
            two.servers
        );
        assert_eq!(
            decode_fetch_all(&two.encode(IpSize::V6)).unwrap().servers,
            two.servers
        );
        assert!(decode_fetch_all(&[0u8; 20]).is_err());
    }

    #[test]
    fn store_all_replies() {
        let t = StoreTargets {
            group: "group1".into(),
            servers: vec![ServerAddr {
                ip: "127.0.0.61".into(),
                port: 23400,
            }],
            store_path_index: 1,
        };
        assert_eq!(decode_store_all(&t.encode(IpSize::V4)).unwrap(), t);
        assert_eq!(decode_store_all(&t.encode(IpSize::V6)).unwrap(), t);
    }

    #[test]
    fn request_bodies() {
        assert_eq!(store_request(None, false), (101, vec![]));
        let (c, b) = store_request(Some("group1"), false);
        assert_eq!(c, 104);
        assert_eq!(b.len(), 16);
        assert_eq!(store_request(None, true).0, 106);
        assert_eq!(store_request(Some("g"), true).0, 107);
        let q = file_query("group1/M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt").unwrap();
        assert_eq!(q.len(), 16 + 44);
        assert!(file_query("nogroup").is_err());
        assert!(storage_selector("group1", Some("")).is_err());
        assert_eq!(
            storage_selector("group1", Some("100001")).unwrap().len(),
            22
        );
    }
}
