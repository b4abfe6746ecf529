//! Content that no longer matches its file ID is never served or replicated as if it
//! were good.
//!
//! A normal file's ID carries its size and CRC32. They are checked where it is cheap:
//! the size on every download, the CRC32 on whole downloads of small files (read into
//! memory anyway) and on the small files replication sends inline; and by a scrub that
//! reads every normal file at a bounded rate (`scrub_bytes_per_second`). A file found
//! damaged is refused (EIO), counted, logged, and healed: a copy is fetched from a
//! member of the group, checked against the ID, and put in its place.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fdfs_proto::fileid::{FileKind, RemoteName};
use fdfs_proto::msg::Download;
use fdfs_proto::{cmd, Header};
use tracing::{error, info, warn};

use crate::appenders::crc32_sparse;
use crate::state::Storage;
use crate::store::NewFile;

/// The size and CRC32 a file's ID promises, for the files whose ID carries both.
pub fn promised(name: &RemoteName<'_>) -> Option<(u64, u32)> {
    let info = name.info().ok()?;
    (info.kind == FileKind::Normal && !name.is_metadata()).then_some((info.file_size, info.crc32))
}

#[derive(Default)]
pub struct Integrity {
    /// Requests and scrub checks that met a file not matching its ID.
    pub damaged: AtomicU64,
    /// Of those, the ones replaced by a good copy from a peer.
    pub healed: AtomicU64,
    /// Files checked by the scrub.
    pub scrubbed: AtomicU64,
    queue: Mutex<(VecDeque<String>, HashSet<String>)>,
    wake: tokio::sync::Notify,
}

impl Integrity {
    /// Records that the file `name` (remote filename) does not match its ID, and has it
    /// healed in the background.
    pub fn report(&self, name: &str, why: &str) {
        self.damaged.fetch_add(1, Ordering::Relaxed);
        let mut q = self.queue.lock().unwrap();
        // Logged once per healing attempt, not once per refused request.
        if q.1.insert(name.to_string()) {
            error!("{name} is damaged ({why}): refused, to be healed from a peer");
            q.0.push_back(name.to_string());
            self.wake.notify_one();
        }
    }

    fn next(&self) -> Option<String> {
        self.queue.lock().unwrap().0.pop_front()
    }

    fn done(&self, name: &str) {
        self.queue.lock().unwrap().1.remove(name);
    }
}

/// Checks `content`, a whole file, against what its ID promises.
pub fn check(name: &RemoteName<'_>, content: &[u8]) -> Result<(), String> {
    let Some((size, crc)) = promised(name) else {
        return Ok(());
    };
    if content.len() as u64 != size {
        return Err(format!("{} bytes, its ID says {size}", content.len()));
    }
    let got = crc32fast::hash(content);
    if got != crc {
        return Err(format!("CRC32 {got:08X}, its ID says {crc:08X}"));
    }
    Ok(())
}

/// Checks the file at `path` by reading it (blocking).
fn check_file(path: &Path, size: u64, crc: u32) -> std::io::Result<Result<(), String>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if len != size {
        return Ok(Err(format!("{len} bytes, its ID says {size}")));
    }
    let got = crc32_sparse(&mut f, len)?;
    Ok(if got == crc {
        Ok(())
    } else {
        Err(format!("CRC32 {got:08X}, its ID says {crc:08X}"))
    })
}

/// Heals reported files and scrubs the store paths until `stop`.
pub async fn run(st: Arc<Storage>, mut stop: fdfs_runtime::server::Shutdown) {
    let rate = st.cfg.scrub_bytes_per_second;
    let mut scrub = Scrub::default();
    loop {
        while let Some(name) = st.integrity.next() {
            heal(&st, &name).await;
            st.integrity.done(&name);
        }
        let pause = if rate == 0 {
            Duration::from_secs(3600)
        } else {
            match scrub.step(&st).await {
                // Paced so that reading stays under the configured rate; a file counts
                // as at least 64 KiB, for what opening it costs.
                Some(bytes) => Duration::from_secs_f64((bytes.max(64 << 10) as f64) / rate as f64),
                // A whole pass done: a breath before the next.
                None => Duration::from_secs(5),
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = st.integrity.wake.notified() => {}
            _ = stop.recv() => return,
        }
    }
}

/// Where the scrub is: store path, directory, and the files of that directory left.
#[derive(Default)]
struct Scrub {
    path: usize,
    dir: u32,
    files: Vec<String>,
}

impl Scrub {
    /// Checks the next normal file; returns the bytes read (`None` at the end of a pass
    /// over every store path).
    async fn step(&mut self, st: &Arc<Storage>) -> Option<u64> {
        let paths = st.store.paths().len();
        let subdirs = st.store.subdirs();
        let Some(base) = self.files.pop() else {
            let mut pass_done = false;
            self.dir += 1;
            if self.dir >= subdirs * subdirs {
                self.dir = 0;
                self.path = (self.path + 1) % paths;
                pass_done = self.path == 0;
            }
            let dir = st.store.dir(
                self.path,
                (self.dir / subdirs) as u8,
                (self.dir % subdirs) as u8,
            );
            self.files = tokio::task::spawn_blocking(move || {
                std::fs::read_dir(&dir)
                    .map(|it| {
                        it.flatten()
                            .filter_map(|e| e.file_name().into_string().ok())
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .await
            .unwrap_or_default();
            return (!pass_done).then_some(0);
        };
        let remote = format!(
            "M{:02X}/{:02X}/{:02X}/{base}",
            self.path,
            self.dir / subdirs,
            self.dir % subdirs
        );
        let Some((name, (size, crc))) = RemoteName::parse(&remote)
            .ok()
            .and_then(|n| Some((n.clone(), promised(&n)?)))
        else {
            return Some(0);
        };
        let Ok(path) = st.store.resolve(&name) else {
            return Some(0);
        };
        let Ok(verdict) = tokio::task::spawn_blocking(move || check_file(&path, size, crc)).await
        else {
            return Some(0);
        };
        st.integrity.scrubbed.fetch_add(1, Ordering::Relaxed);
        match verdict {
            Ok(Ok(())) => {}
            Ok(Err(why)) => st.integrity.report(&remote, &why),
            // Deleted meanwhile, or unreadable: the latter is the disk's to report.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => st.integrity.report(&remote, &format!("cannot read: {e}")),
        }
        Some(size)
    }
}

/// Replaces a damaged file with a good copy from a member of the group.
async fn heal(st: &Storage, remote: &str) {
    let Ok(name) = RemoteName::parse(remote) else {
        return;
    };
    if promised(&name).is_none() {
        return;
    }
    let Ok(path) = st.store.resolve(&name) else {
        return;
    };
    let me = crate::sync::my_id(st);
    for peer in st.sync.members() {
        let myself = Some(&peer.id) == me.as_ref() || Some(&peer.ip) == me.as_ref();
        if myself || peer.status != fdfs_proto::status::ACTIVE {
            continue;
        }
        let Ok(ip) = peer.ip.parse::<std::net::IpAddr>() else {
            continue;
        };
        let addr = std::net::SocketAddr::new(ip, peer.port as u16);
        match fetch(st, addr, remote, &path).await {
            Ok(()) => {
                st.integrity.healed.fetch_add(1, Ordering::Relaxed);
                info!("{remote} healed with a good copy from {addr}");
                return;
            }
            Err(e) => warn!("{remote}: no good copy from {addr}: {e}"),
        }
    }
    error!("{remote} stays damaged: no member of the group has a good copy");
}

/// Downloads `remote` from `addr`, checks it, and puts it in place of `path`.
async fn fetch(
    st: &Storage,
    addr: std::net::SocketAddr,
    remote: &str,
    path: &Path,
) -> Result<(), String> {
    let dir: PathBuf = path.parent().ok_or("no directory")?.to_path_buf();
    let mut conn = crate::outbound::connect(st, addr)
        .await
        .map_err(|e| e.to_string())?;
    let dest = path.to_path_buf();
    download(st, &mut conn, remote, dir, move |temp| {
        // Deleted here while it was fetched: it stays deleted.
        if !dest.is_file() {
            return Err(std::io::Error::other("deleted meanwhile"));
        }
        temp.commit_replace(&dest)
    })
    .await
    .map_err(|e| e.to_string())?;
    conn.quit().await;
    Ok(())
}

/// Why [`download`] got no file.
#[derive(Debug)]
pub enum DownloadError {
    /// The peer answered this errno (ENOENT: it does not have the file).
    Peer(u8),
    /// The content does not match what the file ID promises.
    Mismatch(String),
    /// The connection failed (it is unusable now).
    Net(fdfs_runtime::Error),
    /// Writing here failed, or the `commit` step did.
    Disk(std::io::Error),
}

impl std::fmt::Display for DownloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownloadError::Peer(s) => write!(f, "the peer answered errno {s}"),
            DownloadError::Mismatch(why) => write!(f, "the copy does not match its ID: {why}"),
            DownloadError::Net(e) => write!(f, "{e}"),
            DownloadError::Disk(e) => write!(f, "{e}"),
        }
    }
}

/// What the blocking writer of [`download`] ends with.
enum Written<R> {
    Done(R),
    Mismatch(String),
}

/// Downloads the whole file `remote` from the peer on `conn` (14 DOWNLOAD_FILE) into a
/// new unnamed file in `dir`. One blocking task writes it (the content goes to it in
/// bounded chunks: memory stays flat, no disk write on the async workers), checks it
/// against what the file ID promises ([`promised`]), flushes it with
/// `fsync_before_reply`, then hands it to `commit`, which names it. Returns the size
/// and what `commit` returned. On `Net` and `Disk` errors the connection must not be
/// used again.
pub async fn download<R: Send + 'static>(
    st: &Storage,
    conn: &mut fdfs_runtime::Connection,
    remote: &str,
    dir: PathBuf,
    commit: impl FnOnce(&mut NewFile) -> std::io::Result<R> + Send + 'static,
) -> Result<(u64, R), DownloadError> {
    use std::io::Write;
    let expect = RemoteName::parse(remote).ok().and_then(|n| promised(&n));
    let body = Download {
        offset: 0,
        count: 0,
        group: st.cfg.group_name.clone(),
        filename: remote.to_string(),
    }
    .encode();
    conn.send(Header::request(cmd::DOWNLOAD_FILE, body.len()), &body)
        .await
        .map_err(|e| DownloadError::Net(e.into()))?;
    let len = match conn.read_reply_header(i64::MAX as u64).await {
        Ok(n) => n,
        Err(fdfs_runtime::Error::Status(s)) => return Err(DownloadError::Peer(s)),
        Err(e) => return Err(DownloadError::Net(e)),
    };
    if let Some((size, _)) = expect {
        if len != size {
            // The content is still on the wire: the connection is given up.
            return Err(DownloadError::Mismatch(format!(
                "{len} bytes, the ID says {size}"
            )));
        }
    }
    let flush = st.cfg.fsync_before_reply;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let dirs = st.store.data_dirs();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<Written<R>> {
        let mut temp = crate::store::in_data_dir(&dir, dirs, || NewFile::create(&dir))?;
        let mut h = crc32fast::Hasher::new();
        let mut got = 0u64;
        while let Some(chunk) = rx.blocking_recv() {
            h.update(&chunk);
            got += chunk.len() as u64;
            temp.file.write_all(&chunk)?;
        }
        if got != len {
            // Cut short: the unnamed file goes away.
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some((_, want)) = expect {
            let crc = h.finalize();
            if crc != want {
                return Ok(Written::Mismatch(format!(
                    "CRC32 {crc:08X}, the ID says {want:08X}"
                )));
            }
        }
        if flush {
            temp.file.sync_data()?;
        }
        commit(&mut temp).map(Written::Done)
    });
    let mut left = len;
    let mut net = None;
    while left > 0 {
        let mut buf = vec![0u8; (left as usize).min(crate::transfer::CHUNK)];
        match conn.read_some(&mut buf).await {
            Ok(0) => {
                net = Some(std::io::ErrorKind::UnexpectedEof.into());
                break;
            }
            Ok(n) => {
                buf.truncate(n);
                left -= n as u64;
                if tx.send(buf).await.is_err() {
                    // The writer failed: its error says why.
                    break;
                }
            }
            Err(e) => {
                net = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| DownloadError::Disk(std::io::Error::other(e.to_string())))?;
    if let Some(e) = net {
        return Err(DownloadError::Net(e.into()));
    }
    match written {
        Ok(Written::Done(r)) => Ok((len, r)),
        Ok(Written::Mismatch(why)) => Err(DownloadError::Mismatch(why)),
        Err(e) => Err(DownloadError::Disk(e)),
    }
}
