//! The client against tiny scripted TCP peers that send fixed bytes: protocol errors
//! must surface as errors (never panics), tracker failover must follow the rules, and
//! file content must move in bounded chunks.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use fdfs_client::storage::CHUNK_SIZE;
use fdfs_client::{Client, Error, StorageClient, TrackerClient};
use fdfs_proto::msg::StoredFile;
use fdfs_proto::msg::{FetchTargets, ServerAddr, StoreTarget};
use fdfs_proto::IpSize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

const FILE_ID: &str = "group1/M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt";
const REMOTE: &str = "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt";
const T: Duration = Duration::from_secs(5);

/// Starts a peer that runs `script` on each of the next `conns` connections.
async fn peer<F, Fut>(conns: usize, script: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..conns {
            let (s, _) = l.accept().await.unwrap();
            script(s).await;
        }
    });
    addr
}

/// Reads one request: returns (cmd, status, body).
async fn read_request(s: &mut TcpStream) -> (u8, u8, Vec<u8>) {
    let mut h = [0u8; 10];
    s.read_exact(&mut h).await.unwrap();
    let len = i64::from_be_bytes(h[..8].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    (h[8], h[9], body)
}

fn header(len: u64, status: u8) -> Vec<u8> {
    let mut out = (len as i64).to_be_bytes().to_vec();
    out.push(100);
    out.push(status);
    out
}

fn reply(status: u8, body: &[u8]) -> Vec<u8> {
    let mut out = header(body.len() as u64, status);
    out.extend_from_slice(body);
    out
}

fn tracker(addrs: Vec<SocketAddr>) -> TrackerClient {
    TrackerClient::new(addrs, T, T)
}

/// An address nobody listens on.
async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

fn store_target(port: u16) -> Vec<u8> {
    StoreTarget {
        group: "group1".into(),
        server: ServerAddr {
            ip: "127.0.0.1".into(),
            port,
        },
        store_path_index: 0,
    }
    .encode(IpSize::V4)
}

#[tokio::test]
async fn wrong_length_tracker_reply_is_an_error() {
    let addr = peer(1, |mut s| async move {
        let (cmd, _, body) = read_request(&mut s).await;
        assert_eq!((cmd, body.len()), (101, 0));
        // 41 bytes: neither 40 nor 70.
        s.write_all(&reply(0, &[0u8; 41])).await.unwrap();
        let _ = s.read(&mut [0u8; 16]).await;
    })
    .await;
    let err = tracker(vec![addr]).query_store(None).await.unwrap_err();
    assert!(matches!(err, Error::Proto(_)), "{err:?}");
    assert_eq!(err.errno(), 22);
}

#[tokio::test]
async fn negative_length_and_wrong_command_are_errors() {
    let addr = peer(1, |mut s| async move {
        let _ = read_request(&mut s).await;
        let mut bad = reply(0, &[]);
        bad[..8].copy_from_slice(&(-5i64).to_be_bytes());
        s.write_all(&bad).await.unwrap();
        let _ = s.read(&mut [0u8; 16]).await;
    })
    .await;
    let t = tracker(vec![addr]);
    assert!(t.list_groups().await.is_err());
    let addr2 = peer(1, |mut s| async move {
        let _ = read_request(&mut s).await;
        let mut bad = reply(0, &[]);
        bad[8] = 11; // not RESP
        s.write_all(&bad).await.unwrap();
    })
    .await;
    assert!(tracker(vec![addr2]).list_groups().await.is_err());
}

#[tokio::test]
async fn truncated_reply_is_an_error() {
    let addr = peer(1, |mut s| async move {
        let _ = read_request(&mut s).await;
        // Announces 40 bytes, sends 10, closes.
        let full = reply(0, &store_target(23000));
        s.write_all(&full[..20]).await.unwrap();
    })
    .await;
    let err = tracker(vec![addr]).query_store(None).await.unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");
}

#[tokio::test]
async fn failover_on_connection_errors_only() {
    let dead = dead_addr().await;
    let good = peer(1, |mut s| async move {
        let _ = read_request(&mut s).await;
        s.write_all(&reply(0, &store_target(23000))).await.unwrap();
        let _ = s.read(&mut [0u8; 16]).await;
    })
    .await;
    let t = tracker(vec![dead, good]);
    let target = t.query_store(Some("group1")).await.unwrap();
    assert_eq!(target.server.port, 23000);
    // The round robin moved on: the next call starts at the second tracker.
    assert_eq!(t.current_index(), 1);

    // An errno reply is final even if another tracker would have answered.
    let enoent = peer(1, |mut s| async move {
        let _ = read_request(&mut s).await;
        s.write_all(&reply(2, &[])).await.unwrap();
        let _ = s.read(&mut [0u8; 16]).await;
    })
    .await;
    let never = peer(0, |_s| async {}).await;
    let t = tracker(vec![enoent, never]);
    let err = t.query_fetch(FILE_ID).await.unwrap_err();
    assert!(matches!(err, Error::Status(2)), "{err:?}");

    // All down: the last connection error comes back.
    let t = tracker(vec![dead_addr().await, dead_addr().await]);
    assert!(matches!(
        t.query_store(None).await.unwrap_err(),
        Error::Io(_)
    ));
}

/// A reader producing `len` pattern bytes and recording the largest read it was asked
/// for, to show uploads never pull the whole content at once.
struct PatternReader {
    left: u64,
    pos: u64,
    max_ask: Arc<Mutex<usize>>,
}

impl AsyncRead for PatternReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        {
            let mut m = self.max_ask.lock().unwrap();
            *m = (*m).max(buf.remaining());
        }
        let n = (buf.remaining() as u64).min(self.left).min(100_000) as usize;
        for _ in 0..n {
            buf.put_slice(&[(self.pos % 251) as u8]);
            self.pos += 1;
        }
        self.left -= n as u64;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn upload_streams_in_chunks() {
    let size = 3 * CHUNK_SIZE as u64 + 12_345;
    let got = Arc::new(Mutex::new((0u64, 0u32, String::new())));
    let got2 = got.clone();
    let storage = peer(1, move |mut s| {
        let got = got2.clone();
        async move {
            let mut h = [0u8; 10];
            s.read_exact(&mut h).await.unwrap();
            assert_eq!(h[8], 11);
            let total = i64::from_be_bytes(h[..8].try_into().unwrap()) as u64;
            let mut head = [0u8; 15];
            s.read_exact(&mut head).await.unwrap();
            let ext = String::from_utf8_lossy(&head[9..12]).into_owned();
            let mut hasher = crc32fast::Hasher::new();
            let mut left = total - 15;
            let mut buf = vec![0u8; 65536];
            while left > 0 {
                let n = s
                    .read(&mut buf[..(left.min(65536) as usize)])
                    .await
                    .unwrap();
                assert!(n > 0);
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
            *got.lock().unwrap() = (total - 15, hasher.finalize(), ext);
            let body = StoredFile {
                group: "group1".into(),
                filename: REMOTE.into(),
            }
            .encode();
            s.write_all(&reply(0, &body)).await.unwrap();
            let _ = s.read(&mut [0u8; 16]).await;
        }
    })
    .await;
    let max_ask = Arc::new(Mutex::new(0));
    let mut reader = PatternReader {
        left: size,
        pos: 0,
        max_ask: max_ask.clone(),
    };
    let mut sc = StorageClient::connect(storage, T, T).await.unwrap();
    let stored = sc
        .upload_reader(&mut reader, size, "txt", -1)
        .await
        .unwrap();
    assert_eq!(stored.file_id(), FILE_ID);
    let mut expect = crc32fast::Hasher::new();
    for i in 0..size {
        expect.update(&[(i % 251) as u8]);
    }
    let (n, crc, ext) = got.lock().unwrap().clone();
    assert_eq!(n, size);
    assert_eq!(crc, expect.finalize());
    assert_eq!(ext, "txt");
    assert!(*max_ask.lock().unwrap() <= CHUNK_SIZE);
}

/// A writer recording the largest single write.
struct CountingWriter {
    total: u64,
    max_write: usize,
    crc: crc32fast::Hasher,
}

impl AsyncWrite for CountingWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.total += buf.len() as u64;
        self.max_write = self.max_write.max(buf.len());
        self.crc.update(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

async fn download_peer(size: u64, send: u64) -> SocketAddr {
    peer(1, move |mut s| async move {
        let (cmd, _, body) = read_request(&mut s).await;
        assert_eq!(cmd, 14);
        assert_eq!(&body[32..], REMOTE.as_bytes());
        s.write_all(&header(size, 0)).await.unwrap();
        let chunk = vec![7u8; 100_000];
        let mut left = send;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if s.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            left -= n as u64;
        }
        if send == size {
            let _ = s.read(&mut [0u8; 16]).await;
        }
    })
    .await
}

#[tokio::test]
async fn download_streams_in_chunks() {
    let size = 2 * CHUNK_SIZE as u64 + 777;
    let addr = download_peer(size, size).await;
    let mut sc = StorageClient::connect(addr, T, T).await.unwrap();
    let mut w = CountingWriter {
        total: 0,
        max_write: 0,
        crc: crc32fast::Hasher::new(),
    };
    let n = sc
        .download_to_writer("group1", REMOTE, 0, 0, &mut w)
        .await
        .unwrap();
    assert_eq!((n, w.total), (size, size));
    assert!(w.max_write <= CHUNK_SIZE);
}

fn temp_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("fdfs-client-test-{}-{tag}", std::process::id()))
}

#[tokio::test]
async fn failed_download_removes_the_partial_file() {
    let addr = download_peer(1_000_000, 300_000).await;
    let path = temp_path("partial");
    let mut sc = StorageClient::connect(addr, T, T).await.unwrap();
    let err = sc
        .download_to_file("group1", REMOTE, 0, 0, &path)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");
    assert!(!path.exists());
}

#[tokio::test]
async fn errno_download_creates_no_file_and_keeps_existing_one() {
    let path = temp_path("errno");
    std::fs::write(&path, b"keep me").unwrap();
    let addr = peer(1, |mut s| async move {
        let _ = read_request(&mut s).await;
        s.write_all(&reply(2, &[])).await.unwrap();
        let _ = s.read(&mut [0u8; 16]).await;
    })
    .await;
    let mut sc = StorageClient::connect(addr, T, T).await.unwrap();
    let err = sc
        .download_to_file("group1", REMOTE, 0, 0, &path)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Status(2)));
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn client_download_goes_through_query_fetch() {
    let path = temp_path("client");
    let storage = download_peer(15, 15).await;
    let trk = peer(1, move |mut s| async move {
        let (cmd, _, body) = read_request(&mut s).await;
        assert_eq!(cmd, 102);
        assert_eq!(&body[16..], REMOTE.as_bytes());
        let t = FetchTargets {
            group: "group1".into(),
            servers: vec![ServerAddr {
                ip: "127.0.0.1".into(),
                port: storage.port(),
            }],
        };
        s.write_all(&reply(0, &t.encode(IpSize::V4))).await.unwrap();
        let _ = s.read(&mut [0u8; 16]).await;
    })
    .await;
    let client = Client::from_tracker(tracker(vec![trk]));
    let n = client.download_to_file(FILE_ID, 0, 0, &path).await.unwrap();
    assert_eq!(n, 15);
    assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 15]);
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn oversized_upload_reply_is_an_error() {
    let addr = peer(1, |mut s| async move {
        let _ = read_request(&mut s).await;
        s.write_all(&reply(0, &[b'a'; 300])).await.unwrap();
        let _ = s.read(&mut [0u8; 16]).await;
    })
    .await;
    let mut sc = StorageClient::connect(addr, T, T).await.unwrap();
    let err = sc.upload_buffer(b"hello", "txt", 0).await.unwrap_err();
    assert!(matches!(err, Error::Proto(_)), "{err:?}");
}

#[tokio::test]
async fn file_info_reply_of_wrong_length_is_an_error() {
    let addr = peer(1, |mut s| async move {
        let (cmd, flags, _) = read_request(&mut s).await;
        assert_eq!((cmd, flags), (22, 1));
        s.write_all(&reply(0, &[0u8; 41])).await.unwrap();
        let _ = s.read(&mut [0u8; 16]).await;
    })
    .await;
    let mut sc = StorageClient::connect(addr, T, T).await.unwrap();
    assert!(sc.query_file_info("group1", REMOTE, 1).await.is_err());
}
