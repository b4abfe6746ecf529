//! Getting back what this storage lost, from the other storages of its group.
//!
//! **A replaced disk.** A store path whose data is gone at start (see [`crate::store`]
//! for how a replaced disk is told from an unmounted one), on a storage that had
//! already joined its group (`.data_init_flag` says its initial copy is done), lost its
//! files. Before the storage serves anything or joins its trackers it reports itself
//! RECOVERY (76), asks an ACTIVE peer for the path's file list (26
//! FETCH_ONE_PATH_BINLOG, as upstream) and downloads every file in it (14), each
//! streamed into an unnamed file that is named only once it is whole and, where the
//! file ID carries them, its size and CRC32 match. Then it flushes the path and
//! reports itself OFFLINE; the trackers make it ACTIVE at its first beat. Progress
//! lives in upstream's files and keys, so either implementation can go on with a
//! recovery the other began: `<store path>/data/.recovery.flag` (`fetch_binlog_done`,
//! `saved_storage_status`, `recovery_threads`; present while the recovery is not
//! done, removed first when it is), `.binlog.recovery.0` (the list) and
//! `.recovery.mark.0` (`binlog_offset`: how far the list is done).
//!
//! **A lost binlog.** A mark file pointing past the end of the binlog (the binlog was
//! removed or cut under it) would never see the new records. The binlog is then rebuilt
//! from the store paths and those marks start over from its beginning, so every peer
//! gets what it lacks (what it has is answered EEXIST): one create record per file
//! (uppercase for files this storage is the source of, lowercase for replicas), an
//! update record for its own appenders (sent whole, replacing an older copy), a link
//! record per symbolic link. Deletes made before the loss cannot be replayed.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use fdfs_proto::fileid::{FileKind, RemoteName};
use fdfs_proto::msg::ListOneGroup;
use fdfs_proto::msg::{FetchOnePathBinlog, INFINITE_LEN};
use fdfs_proto::msg::{StorageBrief, StorageSelector, StorageStat};
use fdfs_proto::{cmd, errno, status, Header};
use fdfs_runtime::{Connection, Error};
use tracing::{error, info, warn};

use crate::binlog::{self, BinlogPos, Change, Origin, Record};
use crate::durability::{blocking, sync_dir};
use crate::integrity::{self, DownloadError};
use crate::outbound::connect;
use crate::state::Storage;
use crate::store::{write_flushed, TEMP_PREFIX};
use crate::sync::mark::{self, Mark};
use crate::transfer::CHUNK;

const FLAG: &str = ".recovery.flag";
const LIST: &str = ".binlog.recovery.0";
const LIST_MARK: &str = ".recovery.mark.0";
/// What an earlier version of this storage named the list and its mark.
const OLD_NAMES: [&str; 2] = [".binlog.recovery", ".recovery.mark"];
/// List entries handled between two saves of `.recovery.mark.0`.
const MARK_EVERY: u64 = 200;
const RETRY: Duration = Duration::from_secs(1);
/// The least time the file list may take to come (the peer reads its whole binlog).
const LIST_TIMEOUT: Duration = Duration::from_secs(600);
/// Attempts at one file the peer refuses with an errno other than ENOENT.
const REFUSALS: u32 = 3;

// ----- lost binlog -------------------------------------------------------------------

/// Checks the mark files against the binlog at start and repairs a lost binlog (see
/// the module doc). Blocking. The source in a file's name tells our own files from
/// replicas.
pub fn repair_binlog(st: &Storage) -> io::Result<()> {
    let dir = st.binlog.dir().to_path_buf();
    let end = st.binlog.end();
    let mut stale = Vec::new();
    for path in mark::list(&dir) {
        match Mark::load(&path) {
            Ok(Some(m)) => {
                if let Some(why) =
                    mark::check_position(m.position(), end, |n| binlog::file_size(&dir, n))
                {
                    warn!(
                        "{}: {why}; the binlog was lost or cut: it is rebuilt from the \
                         store paths and replication to this peer starts over",
                        path.display()
                    );
                    stale.push((path, m));
                }
            }
            Ok(None) => {}
            Err(e) => warn!("{}: unreadable: {e}", path.display()),
        }
    }
    let empty = end == BinlogPos::default();
    let fresh = st.store.paths().iter().any(|p| p.fresh);
    // Whether files are there was seen by the walk of Store::open.
    let has_files = st.store.paths().iter().any(|p| p.has_files);
    let orphan_files = stale.is_empty() && empty && !fresh && has_files;
    if orphan_files {
        warn!(
            "{}: the binlog is empty but the store paths hold files: it is rebuilt from them",
            dir.display()
        );
    }
    if stale.is_empty() && !orphan_files {
        return Ok(());
    }
    let n = rebuild_binlog(st)?;
    warn!(
        "binlog rebuilt from the store paths: {n} file(s), now ending at binlog.{:03} offset {}",
        st.binlog.end().index,
        st.binlog.end().offset
    );
    error!(
        "the binlog was lost: files deleted here before the loss cannot be deleted on the \
         peers by replication (delete them there again); appenders this storage is the \
         source of are sent whole"
    );
    for (path, mut m) in stale {
        m.set_position(BinlogPos::default());
        m.scan_row_count = 0;
        m.sync_row_count = 0;
        m.save(&path)?;
    }
    Ok(())
}

fn subdir_names(st: &Storage) -> impl Iterator<Item = (u8, u8)> {
    let n = st.store.subdirs().min(256);
    (0..n).flat_map(move |h| (0..n).map(move |l| (h as u8, l as u8)))
}

fn listed(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| !n.starts_with('.') && !n.starts_with(TEMP_PREFIX))
}

/// Appends one record per file of the store paths to the binlog: a link record for a
/// symbolic link, an update record (sent whole, replacing) for an appender this
/// storage is the source of (its peers may hold an older copy), else a create record.
fn rebuild_binlog(st: &Storage) -> io::Result<u64> {
    let mut out = Vec::with_capacity(CHUNK + 512);
    let mut count = 0u64;
    for (i, p) in st.store.paths().iter().enumerate() {
        for (h, l) in subdir_names(st) {
            let Ok(entries) = fs::read_dir(st.store.dir(i, h, l)) else {
                continue;
            };
            for e in entries.flatten() {
                let file_name = e.file_name();
                if !listed(&file_name) {
                    continue;
                }
                let Some(base) = file_name.to_str() else {
                    continue;
                };
                let remote = fdfs_proto::fileid::remote_name(i as u8, h, l, base);
                let Ok(name) = RemoteName::parse(&remote) else {
                    continue;
                };
                let Ok(meta) = fs::symlink_metadata(e.path()) else {
                    continue;
                };
                // Unknown: sent as ours; a peer that has it answers EEXIST.
                let ours = name
                    .packed()
                    .ok()
                    .and_then(|p| st.is_mine(&p.source))
                    .unwrap_or(true);
                let ts = crate::handlers::mtime_of(&meta);
                let target = meta
                    .file_type()
                    .is_symlink()
                    .then(|| link_target(&p.data, i as u8, &e.path()))
                    .flatten();
                let origin = if ours { Origin::Here } else { Origin::Peer };
                let change = match target {
                    Some(target) => Change::Link { target },
                    None => {
                        let appender = !name.is_metadata()
                            && name.info().is_ok_and(|i| i.kind == FileKind::Appender);
                        // An appender of ours goes whole (it may have changed since).
                        if ours && appender {
                            Change::Update
                        } else {
                            Change::Create
                        }
                    }
                };
                Record::new(ts, origin, remote.as_str(), change).write_to(&mut out);
                count += 1;
                if out.len() >= CHUNK {
                    st.binlog.append_records(&out)?;
                    out.clear();
                }
            }
        }
    }
    st.binlog.append_records(&out)?;
    st.binlog.sync()?;
    Ok(count)
}

/// The remote name a symbolic link in store path `index` points at, if it is one.
pub(crate) fn link_target(data: &Path, index: u8, link: &Path) -> Option<String> {
    let target = fs::read_link(link).ok()?;
    let rel = target.strip_prefix(data).ok()?.to_str()?;
    let remote = format!("M{index:02X}/{rel}");
    RemoteName::parse(&remote).ok()?;
    Some(remote)
}

// ----- replaced disk -----------------------------------------------------------------

fn flag_path(data: &Path) -> PathBuf {
    data.join(FLAG)
}

/// What `.recovery.flag` says: `None` when there is none (no recovery under way), else
/// whether the file list is complete on disk.
fn read_flag(data: &Path) -> io::Result<Option<bool>> {
    match fs::read_to_string(flag_path(data)) {
        Ok(t) => Ok(Some(t.lines().any(|l| {
            l.trim()
                .strip_prefix("fetch_binlog_done=")
                .is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes" | "on"))
        }))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_flag(data: &Path, fetched: bool) -> io::Result<()> {
    // Upstream's keys: the status to report when done, whether the list is complete,
    // and into how many lists it was split (-1: none yet).
    let text = format!(
        "saved_storage_status={}\nfetch_binlog_done={}\nrecovery_threads={}\n",
        status::OFFLINE,
        fetched as u8,
        if fetched { 1 } else { -1 }
    );
    write_flushed(data, FLAG, &text)
}

/// Starts the recovery of store path data directory `data`, whose files are gone: its
/// flag is written and flushed before anything else goes into the path. Blocking.
pub fn begin(data: &Path) -> io::Result<()> {
    if read_flag(data)?.is_some() {
        return Ok(());
    }
    warn!(
        "{}: no data (a replaced disk?): its files are recovered from a peer of the group \
         before this storage serves",
        data.display()
    );
    write_flag(data, false)?;
    match data.parent() {
        Some(root) => sync_dir(root),
        None => Ok(()),
    }
}

fn read_list_mark(data: &Path) -> io::Result<u64> {
    match fs::read_to_string(data.join(LIST_MARK)) {
        Ok(t) => Ok(t
            .lines()
            .find_map(|l| l.trim().strip_prefix("binlog_offset="))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn write_list_mark(data: &Path, offset: u64) -> io::Result<()> {
    write_flushed(data, LIST_MARK, &format!("binlog_offset={offset}\n"))
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Ends the recovery of a path. The flag goes first: it is the commit point (without
/// it the path counts as whole), so a crash later leaves at most a stale list behind.
fn finish(data: &Path) -> io::Result<()> {
    remove_if_there(&flag_path(data))?;
    sync_dir(data)?;
    for name in [LIST, LIST_MARK].into_iter().chain(OLD_NAMES) {
        remove_if_there(&data.join(name))?;
    }
    Ok(())
}

/// Flushes everything written to the file system of `data` (the recovered files and
/// their directories) before the recovery is declared done.
fn flush_path(data: &Path) -> io::Result<()> {
    rustix::fs::syncfs(File::open(data)?)?;
    Ok(())
}

/// The store paths whose recovery is under way (their flag was written when their
/// data was found gone, see [`begin`]). Blocking.
pub fn paths_to_recover(st: &Storage) -> io::Result<Vec<usize>> {
    let mut out = Vec::new();
    for (i, p) in st.store.paths().iter().enumerate() {
        if read_flag(&p.data)?.is_some() {
            info!(
                "store path {i} ({}): its files are recovered from a peer",
                p.root.display()
            );
            out.push(i);
        }
    }
    Ok(out)
}

/// Recovers the store paths `paths` (see the module doc); retries until done.
pub async fn recover(st: Arc<Storage>, paths: Vec<usize>) {
    let mut reported = false;
    for index in paths {
        let mut failures = 0u64;
        loop {
            match recover_path(&st, index, &mut reported).await {
                Ok(()) => break,
                Err(e) => {
                    // Logged at once, then every half minute while it lasts.
                    if failures.is_multiple_of(30) {
                        warn!("store path {index}: recovery: {e}; retrying");
                    }
                    failures += 1;
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
    if reported {
        if let Some(me) = my_brief(&st) {
            // Done: the next join and beat make this storage ACTIVE again.
            crate::sync::report_status(&st, &me, status::OFFLINE).await;
        }
    }
}

fn my_brief(st: &Storage) -> Option<StorageBrief> {
    Some(StorageBrief {
        status: 0,
        port: st.cfg.port as u32,
        id: st.my_id()?,
        ip: st.my_ip()?.to_string(),
    })
}

/// Where to recover a store path from.
enum RecoverFrom {
    /// Nothing to recover, and why.
    Nothing(String),
    Peer(SocketAddr),
}

/// An ACTIVE peer of the group to recover store path `index` from.
async fn find_source(st: &Storage, index: usize) -> Result<RecoverFrom, Error> {
    let group = ListOneGroup {
        group: st.cfg.group_name.clone(),
    };
    match crate::outbound::first_tracker_call(st, &group).await {
        Ok(groups) => {
            let n = groups.first().map_or(0, |g| g.store_path_count);
            // A path the group's storages do not have (added here before them) is new.
            if n > 0 && index as i64 >= n {
                return Ok(RecoverFrom::Nothing(format!(
                    "the group has {n} store path(s), this one is new to it"
                )));
            }
        }
        Err(Error::Status(s)) => warn!(
            "group {}: the tracker answered errno {s}",
            st.cfg.group_name
        ),
        Err(e) => return Err(e),
    }
    let selector = StorageSelector {
        group: st.cfg.group_name.clone(),
        storage_id: None,
    };
    let list = crate::outbound::first_tracker_call(st, &selector).await?;
    let me = crate::sync::my_id(st).unwrap_or_default();
    let others: Vec<&StorageStat> = list
        .iter()
        .filter(|s| s.id != me && s.ip != me)
        .filter(|s| !matches!(s.status, status::DELETED | status::IP_CHANGED))
        .collect();
    if others.is_empty() {
        return Ok(RecoverFrom::Nothing(
            "no other storage in the group".to_string(),
        ));
    }
    let Some(src) = others.iter().find(|s| s.status == status::ACTIVE) else {
        return Err(Error::Other(format!(
            "no ACTIVE peer in group {} yet",
            st.cfg.group_name
        )));
    };
    let ip: IpAddr = src
        .ip
        .parse()
        .map_err(|_| Error::Other(format!("bad peer address {:?}", src.ip)))?;
    Ok(RecoverFrom::Peer(SocketAddr::new(
        ip,
        src.storage_port as u16,
    )))
}

async fn recover_path(st: &Arc<Storage>, index: usize, reported: &mut bool) -> Result<(), Error> {
    let data = st.store.paths()[index].data.clone();
    let src = match find_source(st, index).await? {
        RecoverFrom::Nothing(why) => {
            info!("store path {index}: {why}: nothing to recover");
            let d = data.clone();
            blocking(move || finish(&d)).await?;
            return Ok(());
        }
        RecoverFrom::Peer(a) => a,
    };
    if !*reported {
        if let Some(me) = my_brief(st) {
            crate::sync::report_status(st, &me, status::RECOVERY).await;
            *reported = true;
        }
    }
    let d = data.clone();
    let (fetched, list_there) =
        blocking(move || Ok((read_flag(&d)? == Some(true), d.join(LIST).is_file()))).await?;
    if !fetched || !list_there {
        if fetched {
            warn!("store path {index}: its file list is missing: fetched again");
            let d = data.clone();
            blocking(move || write_flag(&d, false)).await?;
        }
        info!("store path {index}: fetching its file list from {src}");
        let Some(n) = fetch_list(st, src, index as u8, &data.join(LIST)).await? else {
            warn!(
                "store path {index}: {src} has no such store path (answered EINVAL): \
                 nothing to recover"
            );
            let d = data.clone();
            blocking(move || finish(&d)).await?;
            return Ok(());
        };
        let d = data.clone();
        blocking(move || {
            write_list_mark(&d, 0)?;
            write_flag(&d, true)
        })
        .await?;
        info!("store path {index}: file list from {src}: {n} bytes");
    }
    let counts = download_all(st, src, index, &data).await?;
    let d = data.clone();
    blocking(move || {
        flush_path(&d)?;
        finish(&d)
    })
    .await?;
    info!(
        "store path {index}: recovered from {src}: {} file(s) ({} bytes) copied, {} link(s) \
         made, {} already here, {} gone on the peer, {} skipped (bad entries or copies that \
         failed verification)",
        counts.copied, counts.bytes, counts.linked, counts.present, counts.gone, counts.bad
    );
    Ok(())
}

/// Splits a stream that ends with an 8-byte big-endian count of the bytes before it.
#[derive(Default)]
struct TrailedStream {
    tail: Vec<u8>,
    body_len: u64,
}

impl TrailedStream {
    /// Takes the next received bytes; returns those that are certainly body.
    fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.tail.extend_from_slice(chunk);
        let keep = self.tail.len().saturating_sub(8);
        let body: Vec<u8> = self.tail.drain(..keep).collect();
        self.body_len += body.len() as u64;
        body
    }

    /// At the end of the stream: whether the trailer is there and matches.
    fn complete(&self) -> bool {
        self.tail.len() == 8
            && u64::from_be_bytes(self.tail[..].try_into().expect("8 bytes")) == self.body_len
    }
}

/// 26 FETCH_ONE_PATH_BINLOG into `dest`; returns the list's length, or `None` when the
/// peer answers EINVAL (it has no such store path). The peer reads its whole binlog
/// before and while it answers: the wait is at least [`LIST_TIMEOUT`].
async fn fetch_list(
    st: &Storage,
    src: SocketAddr,
    index: u8,
    dest: &Path,
) -> Result<Option<u64>, Error> {
    let mut conn = connect(st, src).await?;
    conn.set_timeout(st.cfg.network_timeout.max(LIST_TIMEOUT));
    let body = FetchOnePathBinlog {
        group: st.cfg.group_name.clone(),
        store_path: index,
    }
    .encode();
    conn.send(
        Header::request(cmd::FETCH_ONE_PATH_BINLOG, body.len()),
        &body,
    )
    .await?;
    let len = match conn.read_reply_header(u64::MAX).await {
        Ok(n) => n,
        Err(Error::Status(errno::EINVAL)) => return Ok(None),
        Err(e) => return Err(e),
    };
    // One blocking writer; the chunks go to it through a short queue.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let dest = dest.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || -> io::Result<()> {
        let mut f = File::create(dest)?;
        while let Some(chunk) = rx.blocking_recv() {
            f.write_all(&chunk)?;
        }
        f.sync_all()
    });
    let mut split = TrailedStream::default();
    // A finite length (no trailer) is taken as is.
    let mut left = (len != INFINITE_LEN).then_some(len);
    let read = async {
        loop {
            let want = left.map_or(CHUNK, |l| (l as usize).min(CHUNK));
            if want == 0 {
                return Ok(true);
            }
            let mut buf = vec![0u8; want];
            let n = conn.read_some(&mut buf).await?;
            if n == 0 {
                return Ok(left.is_none() && split.complete());
            }
            buf.truncate(n);
            let part = match &mut left {
                Some(l) => {
                    *l -= n as u64;
                    split.body_len += n as u64;
                    buf
                }
                None => split.push(&buf),
            };
            if !part.is_empty() && tx.send(part).await.is_err() {
                return Ok(false);
            }
        }
    };
    let whole: Result<bool, Error> = read.await;
    drop(tx);
    let written = writer.await.map_err(|e| io::Error::other(e.to_string()))?;
    if !whole? {
        written?;
        return Err(Error::Other(format!(
            "file list from {src} is incomplete ({} bytes)",
            split.body_len
        )));
    }
    written?;
    Ok(Some(split.body_len))
}

/// What one line of the file list asks for.
enum What {
    /// A file (`C`/`c`): where it goes, and whether it is here already.
    File { path: PathBuf, present: bool },
    /// A symbolic link (`L`/`l`) and its target.
    Link { link: PathBuf, target: PathBuf },
    /// A line that is not for this path, or not understood: skipped.
    Bad,
}

struct Entry {
    timestamp: i64,
    name: String,
    what: What,
    /// Offset just after the line.
    end: u64,
}

/// Up to `max` entries of the list from `offset`, with what they need resolved and
/// whether their file is here looked up (one blocking call per batch). `resolve` turns
/// a remote name of store path `index` into its local path.
fn read_list(
    path: &Path,
    offset: u64,
    max: usize,
    resolve: impl Fn(&RemoteName<'_>) -> Option<PathBuf>,
    index: u8,
) -> io::Result<Vec<Entry>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut r = BufReader::new(f);
    let mut out = Vec::new();
    let mut pos = offset;
    let mut line = Vec::new();
    let local = |name: &str| {
        RemoteName::parse(name)
            .ok()
            .filter(|n| n.store_path == index)
            .and_then(|n| resolve(&n))
    };
    while out.len() < max {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        pos += n as u64;
        let text = String::from_utf8_lossy(&line[..n - 1]);
        let parsed = Record::parse(&text);
        let what = match &parsed {
            Some(Record {
                name,
                change: Change::Create,
                ..
            }) => match local(name) {
                Some(path) => What::File {
                    present: fs::symlink_metadata(&path).is_ok(),
                    path,
                },
                None => What::Bad,
            },
            Some(Record {
                name,
                change: Change::Link { target },
                ..
            }) => match (local(name), local(target)) {
                (Some(link), Some(target)) => What::Link { link, target },
                _ => What::Bad,
            },
            _ => What::Bad,
        };
        if matches!(what, What::Bad) {
            warn!("file list: line {text:?} skipped");
        }
        let (timestamp, name) = parsed.map(|r| (r.timestamp, r.name)).unwrap_or_default();
        out.push(Entry {
            timestamp,
            name,
            what,
            end: pos,
        });
    }
    Ok(out)
}

#[derive(Default)]
struct Counts {
    copied: u64,
    bytes: u64,
    linked: u64,
    present: u64,
    gone: u64,
    bad: u64,
}

async fn download_all(
    st: &Arc<Storage>,
    src: SocketAddr,
    index: usize,
    data: &Path,
) -> Result<Counts, Error> {
    let list = data.join(LIST);
    let d = data.to_path_buf();
    let mut offset = blocking(move || read_list_mark(&d)).await?;
    let mut counts = Counts::default();
    let mut conn: Option<Connection> = None;
    let mut since_mark = 0u64;
    let mut last_log = Instant::now();
    let run = async {
        loop {
            let (l, s) = (list.clone(), st.clone());
            let batch = blocking(move || {
                read_list(&l, offset, 256, |n| s.store.resolve(n).ok(), index as u8)
            })
            .await?;
            if batch.is_empty() {
                return Ok::<(), Error>(());
            }
            for e in batch {
                match e.what {
                    What::Bad => counts.bad += 1,
                    What::File { present: true, .. } => counts.present += 1,
                    What::File { path, .. } => {
                        let mut refusals = 0;
                        loop {
                            let c = match conn.as_mut() {
                                Some(c) => c,
                                None => conn.insert(connect(st, src).await?),
                            };
                            match fetch_file(st, c, &e.name, e.timestamp, path.clone()).await {
                                Ok(Some(n)) => {
                                    counts.copied += 1;
                                    counts.bytes += n;
                                }
                                Ok(None) => counts.present += 1,
                                Err(DownloadError::Peer(errno::ENOENT)) => counts.gone += 1,
                                Err(DownloadError::Peer(s)) => {
                                    // Asked again on a new connection, a few times.
                                    conn = None;
                                    refusals += 1;
                                    if refusals < REFUSALS {
                                        tokio::time::sleep(RETRY).await;
                                        continue;
                                    }
                                    warn!("{}: {src} answered errno {s}; skipped", e.name);
                                    counts.bad += 1;
                                }
                                Err(DownloadError::Mismatch(why)) => {
                                    conn = None;
                                    warn!("{}: the copy from {src} is not kept: {why}", e.name);
                                    counts.bad += 1;
                                }
                                Err(DownloadError::Net(e)) => return Err(e),
                                Err(DownloadError::Disk(e)) => return Err(Error::Io(e)),
                            }
                            break;
                        }
                    }
                    What::Link { link, target } => {
                        let dirs = st.store.data_dirs();
                        match blocking(move || Ok(make_link(&link, &target, dirs))).await? {
                            Linked::Made => counts.linked += 1,
                            Linked::Present => counts.present += 1,
                            Linked::Failed => counts.bad += 1,
                        }
                    }
                }
                offset = e.end;
                since_mark += 1;
                if since_mark >= MARK_EVERY {
                    since_mark = 0;
                    let d = data.to_path_buf();
                    blocking(move || write_list_mark(&d, offset)).await?;
                }
            }
            if last_log.elapsed() >= Duration::from_secs(10) {
                last_log = Instant::now();
                info!(
                    "store path {index}: recovering from {src}: {} file(s) copied so far",
                    counts.copied
                );
            }
        }
    };
    let r = run.await;
    // The progress is kept whatever happened.
    let d = data.to_path_buf();
    let saved = blocking(move || write_list_mark(&d, offset)).await;
    if let (Some(c), Ok(())) = (conn, &r) {
        c.quit().await;
    }
    r?;
    saved?;
    Ok(counts)
}

/// Downloads one file of the list into `path` unless a file got there meanwhile:
/// its size, or `None` then.
async fn fetch_file(
    st: &Storage,
    conn: &mut Connection,
    name: &str,
    timestamp: i64,
    path: PathBuf,
) -> Result<Option<u64>, DownloadError> {
    let dir = path.parent().expect("a file in a directory").to_path_buf();
    let mtime = UNIX_EPOCH + Duration::from_secs(timestamp.max(0) as u64);
    // A trunk-stored file goes back into its slot of this storage's trunk file.
    let slot = RemoteName::parse(name).ok().and_then(|n| {
        let slot = fdfs_proto::trunk::Slot::of(&n)?;
        Some((
            st.trunk.slot_io(st, &slot)?,
            fdfs_proto::trunk::SlotHeader::expected(&n).ok()?,
        ))
    });
    let (len, named) = integrity::download(st, conn, name, dir, move |f| {
        if let Some((io, header)) = slot {
            let size = f.file.metadata()?.len();
            if size + fdfs_proto::trunk::SLOT_HEADER_LEN as u64 > io.slot.size as u64 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "larger than its trunk slot",
                ));
            }
            f.file.seek(SeekFrom::Start(0))?;
            let mut slot = io.writer()?;
            io::copy(&mut f.file, &mut slot)?;
            slot.seal(&header)?.flush()?;
            return Ok(true);
        }
        f.file.set_modified(mtime)?;
        match f.commit_no_replace(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })
    .await?;
    Ok(named.then_some(len))
}

enum Linked {
    Made,
    Present,
    Failed,
}

/// Recreates a symbolic link of the list (and its directory). Blocking.
fn make_link(link: &Path, target: &Path, dirs: crate::store::DataDirs) -> Linked {
    let dir = link.parent().expect("a link in a directory");
    match crate::store::in_data_dir(dir, dirs, || std::os::unix::fs::symlink(target, link)) {
        Ok(()) => Linked::Made,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Linked::Present,
        Err(e) => {
            warn!(
                "cannot link {} to {}: {e}",
                link.display(),
                target.display()
            );
            Linked::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_is_split_off_whatever_the_chunks() {
        let body = b"1 C M00/00/00/a\n2 c M00/00/00/b\n";
        let mut stream = body.to_vec();
        stream.extend_from_slice(&(body.len() as u64).to_be_bytes());
        for cut in [1, 3, 8, 9, 20, stream.len()] {
            let mut s = TrailedStream::default();
            let mut got = Vec::new();
            for c in stream.chunks(cut) {
                got.extend(s.push(c));
            }
            assert_eq!(got, body, "chunks of {cut}");
            assert!(s.complete());
        }
        // Cut short, or a wrong count: not complete.
        let mut s = TrailedStream::default();
        s.push(&stream[..stream.len() - 1]);
        assert!(!s.complete());
        let mut s = TrailedStream::default();
        s.push(body);
        s.push(&7u64.to_be_bytes());
        assert!(!s.complete());
    }

    #[test]
    fn list_is_read_in_batches_with_offsets() {
        let t = crate::test_support::scratch("rlist");
        let d = t.path();
        let p = d.join(LIST);
        let a = "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt";
        let b = "M00/00/00/fwAAPWsEx3-AJPpFAAAADwL5vO4702.txt";
        let c = "M00/00/00/fwAAPWsEx4uAEgtOAAAAHpBT5lw141.txt";
        let other = "M01/00/00/fwAAPWsEx4uAEgtOAAAAHpBT5lw141.txt";
        fs::write(d.join("present"), b"x").unwrap();
        let text = format!("1 C {a}\n2 l {b} {a}\nbad\n3 c {c}\n4 c {other}\n5 C M0");
        fs::write(&p, text).unwrap();
        let resolve = |n: &RemoteName<'_>| {
            Some(if n.base.starts_with("fwAAPWsEx4") {
                d.join("present")
            } else {
                d.join(n.data_relative())
            })
        };
        let first = read_list(&p, 0, 2, resolve, 0).unwrap();
        assert_eq!(first.len(), 2);
        assert!(matches!(first[0].what, What::File { present: false, .. }));
        assert!(matches!(&first[1].what, What::Link { target, .. } if target.ends_with(&a[4..])));
        let rest = read_list(&p, first[1].end, 10, resolve, 0).unwrap();
        // The bad line and the other path's line are skipped; the torn last one is not
        // read.
        assert_eq!(rest.len(), 3);
        assert!(matches!(rest[0].what, What::Bad));
        assert!(matches!(rest[1].what, What::File { present: true, .. }));
        assert_eq!(rest[1].name, c);
        assert_eq!(rest[1].timestamp, 3);
        assert!(matches!(rest[2].what, What::Bad));
        assert!(read_list(&p, rest[2].end, 10, resolve, 0)
            .unwrap()
            .is_empty());
        write_list_mark(d, 77).unwrap();
        assert_eq!(read_list_mark(d).unwrap(), 77);
    }

    #[test]
    fn flag_uses_upstream_keys() {
        let t = crate::test_support::scratch("rflag");
        let d = t.path();
        assert_eq!(read_flag(d).unwrap(), None);
        begin(d).unwrap();
        assert_eq!(read_flag(d).unwrap(), Some(false));
        let text = fs::read_to_string(d.join(".recovery.flag")).unwrap();
        assert!(text.contains("fetch_binlog_done=0\n"), "{text}");
        assert!(text.contains("saved_storage_status="), "{text}");
        assert!(text.contains("recovery_threads=-1\n"), "{text}");
        write_flag(d, true).unwrap();
        // A second begin (a restart) keeps the progress.
        begin(d).unwrap();
        assert_eq!(read_flag(d).unwrap(), Some(true));
        // Written by upstream.
        fs::write(
            d.join(FLAG),
            "saved_storage_status=7\nfetch_binlog_done=1\nrecovery_threads=1\n",
        )
        .unwrap();
        assert_eq!(read_flag(d).unwrap(), Some(true));
        fs::write(d.join(".recovery.mark.0"), "binlog_offset=12\n").unwrap();
        assert_eq!(read_list_mark(d).unwrap(), 12);
    }

    #[test]
    fn finish_removes_the_flag_first() {
        let t = crate::test_support::scratch("rfinish");
        let d = t.path();
        write_flag(d, true).unwrap();
        write_list_mark(d, 5).unwrap();
        // A list that cannot be removed (a crash at that point): the flag, the commit
        // point, is gone already, so the path is not recovered again and again.
        fs::create_dir_all(d.join(LIST).join("x")).unwrap();
        assert!(finish(d).is_err());
        assert_eq!(read_flag(d).unwrap(), None);
        fs::remove_dir_all(d.join(LIST)).unwrap();
        fs::write(d.join(LIST), "1 C M00/00/00/a\n").unwrap();
        finish(d).unwrap();
        assert!(!d.join(LIST).exists() && !d.join(LIST_MARK).exists());
    }
}
