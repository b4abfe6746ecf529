//! [`Client`]: file operations by file id, routed through the trackers the way the C
//! client does (upload → 101/104, download → 102, changes → 103 on the source).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use fdfs_proto::fileid::{FileKind, RemoteName, Source};
use fdfs_proto::metadata::Pairs;
use fdfs_proto::msg::ServerAddr;
use fdfs_proto::msg::StoredFile;
use fdfs_runtime::Error;
use tokio::io::AsyncRead;

use crate::config::ClientConfig;
use crate::storage::{open_local, StorageClient};
use crate::tracker::TrackerClient;
use crate::{invalid_input, split_file_id};

/// What `fdfs_file_info` reports about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDetails {
    /// Whether the storage was asked (appender and slave files, unknown source).
    pub get_from_server: bool,
    pub kind: FileKind,
    /// Numeric server id of the source (0 when the name holds an IP address).
    pub source_id: u32,
    pub source_ip: String,
    pub create_timestamp: i64,
    pub file_size: i64,
    pub crc32: u32,
}

/// Decodes what the file id itself says. The boolean tells whether the storage must be
/// asked for the real values (appender and slave files, whose names describe the
/// initial or the master content, and files whose source is a server id this client
/// cannot map to an address).
pub fn decode_file_id(file_id: &str) -> Result<(FileDetails, bool), Error> {
    let (_, remote) = split_file_id(file_id)?;
    let info = RemoteName::parse(remote)
        .and_then(|r| r.info())
        .map_err(|e| invalid_input("file id", e))?;
    let (source_id, source_ip) = match info.source {
        Source::Ip(ip) => (0, ip.to_string()),
        Source::ServerId(id) => (id, String::new()),
    };
    let needs_server = matches!(info.kind, FileKind::Appender | FileKind::Slave)
        || matches!(info.source, Source::ServerId(_));
    Ok((
        FileDetails {
            get_from_server: false,
            kind: info.kind,
            source_id,
            source_ip,
            create_timestamp: info.timestamp as i64,
            file_size: info.file_size as i64,
            crc32: info.crc32,
        },
        needs_server,
    ))
}

/// Resolves an address a tracker handed out.
pub async fn resolve(server: &ServerAddr) -> Result<SocketAddr, Error> {
    if let Ok(ip) = server.ip.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, server.port));
    }
    tokio::net::lookup_host((server.ip.as_str(), server.port))
        .await?
        .next()
        .ok_or_else(|| Error::Other(format!("cannot resolve storage address {:?}", server.ip)))
}

/// A FastDFS client: trackers plus on-demand storage sessions.
#[derive(Debug)]
pub struct Client {
    tracker: TrackerClient,
}

impl Client {
    pub fn new(config: &ClientConfig) -> Self {
        Client {
            tracker: TrackerClient::from_config(config),
        }
    }

    pub fn from_tracker(tracker: TrackerClient) -> Self {
        Client { tracker }
    }

    pub fn tracker(&self) -> &TrackerClient {
        &self.tracker
    }

    /// Opens a session with a storage.
    pub async fn storage(&self, addr: SocketAddr) -> Result<StorageClient, Error> {
        StorageClient::connect(
            addr,
            self.tracker.connect_timeout(),
            self.tracker.network_timeout(),
        )
        .await
    }

    async fn storage_at(&self, server: &ServerAddr) -> Result<StorageClient, Error> {
        self.storage(resolve(server).await?).await
    }

    /// The source storage of `file_id` (103), with the group and remote name.
    async fn update_target<'a>(
        &self,
        file_id: &'a str,
    ) -> Result<(StorageClient, &'a str, &'a str), Error> {
        let (group, remote) = split_file_id(file_id)?;
        let (_, server) = self.tracker.query_update(file_id).await?;
        Ok((self.storage_at(&server).await?, group, remote))
    }

    /// A storage that can serve `file_id` (102).
    async fn fetch_target<'a>(
        &self,
        file_id: &'a str,
    ) -> Result<(StorageClient, &'a str, &'a str), Error> {
        let (group, remote) = split_file_id(file_id)?;
        let (_, server) = self.tracker.query_fetch(file_id).await?;
        Ok((self.storage_at(&server).await?, group, remote))
    }

    /// Runs one storage operation and ends the session afterwards (on success, and on
    /// errno replies, which leave the session usable).
    async fn finish<T>(storage: StorageClient, result: Result<T, Error>) -> Result<T, Error> {
        if matches!(result, Ok(_) | Err(Error::Status(_))) {
            storage.quit().await;
        }
        result
    }

    /// Uploads `size` bytes from `reader`: 101/104, then 11 (or 23 when `appender`) on
    /// the storage the tracker picked, in the store path it picked. Returns the file id.
    pub async fn upload_reader<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        size: u64,
        ext: &str,
        group: Option<&str>,
        appender: bool,
    ) -> Result<String, Error> {
        let target = self.tracker.query_store(group).await?;
        let mut storage = self.storage_at(&target.server).await?;
        let spi = target.store_path_index as i8;
        let r = if appender {
            storage.upload_appender_reader(reader, size, ext, spi).await
        } else {
            storage.upload_reader(reader, size, ext, spi).await
        };
        Self::finish(storage, r).await.map(|f| f.file_id())
    }

    /// Uploads a local file (streamed). `ext` without the dot; see
    /// [`fdfs_proto::fileid::ext_from_local_name`].
    pub async fn upload_file(
        &self,
        path: &Path,
        ext: &str,
        group: Option<&str>,
    ) -> Result<String, Error> {
        let (mut f, size) = open_local(path).await?;
        self.upload_reader(&mut f, size, ext, group, false).await
    }

    pub async fn upload_buffer(
        &self,
        data: &[u8],
        ext: &str,
        group: Option<&str>,
    ) -> Result<String, Error> {
        let mut r = data;
        self.upload_reader(&mut r, data.len() as u64, ext, group, false)
            .await
    }

    pub async fn upload_appender_file(
        &self,
        path: &Path,
        ext: &str,
        group: Option<&str>,
    ) -> Result<String, Error> {
        let (mut f, size) = open_local(path).await?;
        self.upload_reader(&mut f, size, ext, group, true).await
    }

    pub async fn upload_appender_buffer(
        &self,
        data: &[u8],
        ext: &str,
        group: Option<&str>,
    ) -> Result<String, Error> {
        let mut r = data;
        self.upload_reader(&mut r, data.len() as u64, ext, group, true)
            .await
    }

    /// Uploads a local file straight to one storage, without asking a tracker
    /// (`fdfs_upload_file conf file ip:port [path]`).
    pub async fn upload_file_to(
        &self,
        storage: SocketAddr,
        path: &Path,
        ext: &str,
        store_path_index: i8,
        appender: bool,
    ) -> Result<String, Error> {
        let mut s = self.storage(storage).await?;
        let r = if appender {
            s.upload_appender_file(path, ext, store_path_index).await
        } else {
            s.upload_file(path, ext, store_path_index).await
        };
        Self::finish(s, r).await.map(|f| f.file_id())
    }

    /// Uploads a slave file next to `master_file_id` (103 on the master, then 21).
    pub async fn upload_slave_buffer(
        &self,
        master_file_id: &str,
        prefix: &str,
        ext: &str,
        data: &[u8],
    ) -> Result<String, Error> {
        let (mut s, _, remote) = self.update_target(master_file_id).await?;
        let r = s.upload_slave_buffer(remote, prefix, ext, data).await;
        Self::finish(s, r).await.map(|f| f.file_id())
    }

    pub async fn upload_slave_file(
        &self,
        master_file_id: &str,
        prefix: &str,
        ext: &str,
        path: &Path,
    ) -> Result<String, Error> {
        let (mut s, _, remote) = self.update_target(master_file_id).await?;
        let r = s.upload_slave_file(remote, prefix, ext, path).await;
        Self::finish(s, r).await.map(|f| f.file_id())
    }

    /// Downloads into a local file (streamed); `count` 0 = to the end. Returns the
    /// number of bytes written.
    pub async fn download_to_file(
        &self,
        file_id: &str,
        offset: u64,
        count: u64,
        path: &Path,
    ) -> Result<u64, Error> {
        let (mut s, group, remote) = self.fetch_target(file_id).await?;
        let r = s.download_to_file(group, remote, offset, count, path).await;
        Self::finish(s, r).await
    }

    pub async fn download_to_vec(
        &self,
        file_id: &str,
        offset: u64,
        count: u64,
    ) -> Result<Vec<u8>, Error> {
        let (mut s, group, remote) = self.fetch_target(file_id).await?;
        let r = s.download_to_vec(group, remote, offset, count).await;
        Self::finish(s, r).await
    }

    pub async fn delete_file(&self, file_id: &str) -> Result<(), Error> {
        let (mut s, group, remote) = self.update_target(file_id).await?;
        let r = s.delete(group, remote).await;
        Self::finish(s, r).await
    }

    pub async fn set_metadata(
        &self,
        file_id: &str,
        op: u8,
        pairs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), Error> {
        let (mut s, group, remote) = self.update_target(file_id).await?;
        let r = s.set_metadata(group, remote, op, pairs).await;
        Self::finish(s, r).await
    }

    pub async fn get_metadata(&self, file_id: &str) -> Result<Pairs, Error> {
        let (mut s, group, remote) = self.update_target(file_id).await?;
        let r = s.get_metadata(group, remote).await;
        Self::finish(s, r).await
    }

    pub async fn append_file(&self, appender_file_id: &str, path: &Path) -> Result<(), Error> {
        let (mut s, _, remote) = self.update_target(appender_file_id).await?;
        let r = s.append_file(remote, path).await;
        Self::finish(s, r).await
    }

    pub async fn append_buffer(&self, appender_file_id: &str, data: &[u8]) -> Result<(), Error> {
        let (mut s, _, remote) = self.update_target(appender_file_id).await?;
        let r = s.append_buffer(remote, data).await;
        Self::finish(s, r).await
    }

    pub async fn modify_buffer(
        &self,
        appender_file_id: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Error> {
        let (mut s, _, remote) = self.update_target(appender_file_id).await?;
        let r = s.modify_buffer(remote, offset, data).await;
        Self::finish(s, r).await
    }

    pub async fn modify_file(
        &self,
        appender_file_id: &str,
        offset: u64,
        path: &Path,
    ) -> Result<(), Error> {
        let (mut s, _, remote) = self.update_target(appender_file_id).await?;
        let r = s.modify_file(remote, offset, path).await;
        Self::finish(s, r).await
    }

    pub async fn truncate_file(&self, appender_file_id: &str, new_size: u64) -> Result<(), Error> {
        let (mut s, _, remote) = self.update_target(appender_file_id).await?;
        let r = s.truncate(remote, new_size).await;
        Self::finish(s, r).await
    }

    /// Turns an appender file into a normal one; returns the new file id.
    pub async fn regenerate_appender_filename(
        &self,
        appender_file_id: &str,
    ) -> Result<String, Error> {
        let (mut s, _, remote) = self.update_target(appender_file_id).await?;
        let r = s.regenerate_appender_filename(remote).await;
        Self::finish(s, r).await.map(|f: StoredFile| f.file_id())
    }

    /// What `fdfs_file_info` prints: decoded from the name, or asked from a storage
    /// that has the file (102 then 22) for appender/slave files, unknown sources, or
    /// when `force_server` is set.
    pub async fn file_info(&self, file_id: &str, force_server: bool) -> Result<FileDetails, Error> {
        let (mut details, needs_server) = decode_file_id(file_id)?;
        if !(needs_server || force_server) {
            return Ok(details);
        }
        let (mut s, group, remote) = self.fetch_target(file_id).await?;
        let r = s.query_file_info(group, remote, 0).await;
        let reply = Self::finish(s, r).await?;
        details.get_from_server = true;
        details.source_ip = reply.source_ip;
        details.create_timestamp = reply.timestamp;
        details.file_size = reply.file_size;
        details.crc32 = reply.crc32;
        Ok(details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_is_decoded_locally() {
        let (d, ask) =
            decode_file_id("group1/M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt").unwrap();
        assert!(!ask);
        assert_eq!(
            d,
            FileDetails {
                get_from_server: false,
                kind: FileKind::Normal,
                source_id: 0,
                source_ip: "127.0.0.61".into(),
                create_timestamp: 1_795_475_304,
                file_size: 15,
                crc32: 0x02F9_BCEE,
            }
        );
    }

    #[test]
    fn slave_and_server_id_files_ask_the_storage() {
        let (d, ask) =
            decode_file_id("group1/M00/00/00/fwAAPWsEx3-AJPpFAAAADwL5vO4702_big.txt").unwrap();
        assert!(ask);
        assert_eq!(d.kind, FileKind::Slave);
        let (d, ask) =
            decode_file_id("group1/M00/00/00/oYYBAGsEx2iADTARAAAADwL5vO4236.txt").unwrap();
        assert!(ask);
        assert_eq!(d.source_id, 100_001);
        assert_eq!(d.source_ip, "");
        assert!(decode_file_id("group1/bad").is_err());
    }
}
