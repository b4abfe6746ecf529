//! Getting back what this storage lost, from the other storages of its group.
//!
//! **A replaced disk.** A store path whose `data/` directory is missing at start, on a
//! storage that had already joined its group (`.data_init_flag` says its initial copy
//! is done), lost its files. Before the storage serves anything or joins its trackers
//! it reports itself RECOVERY (76), asks an ACTIVE peer for the path's file list
//! (26 FETCH_ONE_PATH_BINLOG, as upstream) and downloads every file in it (14), each
//! streamed into an unnamed file that is named only once it is whole and, where the
//! file ID carries them, its size and CRC32 match. Then it reports itself OFFLINE and
//! starts as usual: the trackers make it ACTIVE at its first beat. Progress lives in
//! `<store path>/data/.recovery.flag`, `.binlog.recovery` (the list) and
//! `.recovery.mark` (how far the list is done), so a restart goes on where it stopped.
//!
//! **A lost binlog.** A mark file pointing past the end of the binlog (the binlog was
//! removed or cut under it) would never see the new records. The binlog is then rebuilt
//! from the store paths (one create record per file: uppercase for files this storage
//! is the source of, lowercase for replicas) and those marks start over from its
//! beginning, so every peer gets what it lacks (what it has is answered EEXIST).

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use fdfs_proto::fileid::{FileKind, RemoteName, Source};
use fdfs_proto::storage_msg::Download;
use fdfs_proto::tracker_msg::{StorageBrief, StorageSelector, StorageStat};
use fdfs_proto::{cmd, errno, status, Header, GROUP_NAME_LEN};
use fdfs_runtime::{Connection, Error};
use tracing::{info, warn};

use crate::binlog::{self, format_record, BinlogPos};
use crate::state::Storage;
use crate::store::TEMP_PREFIX;
use crate::sync::binlog_reader::parse_line;
use crate::sync::connect;
use crate::sync::mark::{self, Mark};
use crate::transfer::CHUNK;

const FLAG: &str = ".recovery.flag";
const LIST: &str = ".binlog.recovery";
const LIST_MARK: &str = ".recovery.mark";
/// List entries handled between two saves of `.recovery.mark`.
const MARK_EVERY: u64 = 200;
const RETRY: Duration = Duration::from_secs(1);

// ----- lost binlog -------------------------------------------------------------------

/// Checks the mark files against the binlog at start and repairs a lost binlog (see
/// the module doc). Blocking. `my_ip` tells our own files from replicas.
pub fn repair_binlog(st: &Storage, my_ip: Option<IpAddr>) -> io::Result<()> {
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
    let orphan_files = stale.is_empty() && empty && !fresh && store_has_files(st);
    if orphan_files {
        warn!(
            "{}: the binlog is empty but the store paths hold files: it is rebuilt from them",
            dir.display()
        );
    }
    if stale.is_empty() && !orphan_files {
        return Ok(());
    }
    let n = rebuild_binlog(st, my_ip)?;
    warn!(
        "binlog rebuilt from the store paths: {n} file(s), now ending at binlog.{:03} offset {}",
        st.binlog.end().index,
        st.binlog.end().offset
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

fn store_has_files(st: &Storage) -> bool {
    st.store.paths().iter().enumerate().any(|(i, _)| {
        subdir_names(st).any(|(h, l)| {
            fs::read_dir(st.store.dir(i, h, l))
                .map(|mut d| d.any(|e| e.is_ok_and(|e| listed(&e.file_name()))))
                .unwrap_or(false)
        })
    })
}

fn listed(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| !n.starts_with('.') && !n.starts_with(TEMP_PREFIX))
}

/// Appends one create (or link) record per file of the store paths to the binlog.
fn rebuild_binlog(st: &Storage, my_ip: Option<IpAddr>) -> io::Result<u64> {
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
                let ours = match (name.packed().map(|p| p.source), my_ip) {
                    (Ok(Source::Ip(src)), Some(IpAddr::V4(me))) => src == me,
                    // Unknown: sent as ours; a peer that has it answers EEXIST.
                    _ => true,
                };
                let ts = crate::handlers::mtime_of(&meta);
                let target = meta
                    .file_type()
                    .is_symlink()
                    .then(|| link_target(&p.data, i as u8, &e.path()))
                    .flatten();
                match target {
                    Some(t) => {
                        let op = if ours { 'L' } else { 'l' };
                        format_record(&mut out, ts, op, &remote, Some(&t));
                    }
                    None => {
                        let op = if ours { 'C' } else { 'c' };
                        format_record(&mut out, ts, op, &remote, None);
                    }
                }
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
fn link_target(data: &Path, index: u8, link: &Path) -> Option<String> {
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

/// Whether the file list of a path being recovered is complete on disk.
fn list_fetched(data: &Path) -> bool {
    fs::read_to_string(flag_path(data))
        .map(|t| t.lines().any(|l| l.trim() == "fetch_binlog_done=1"))
        .unwrap_or(false)
}

fn write_flag(data: &Path, fetched: bool) -> io::Result<()> {
    let tmp = data.join(format!("{FLAG}.tmp"));
    fs::write(&tmp, format!("fetch_binlog_done={}\n", fetched as u8))?;
    fs::rename(tmp, flag_path(data))
}

fn read_list_mark(data: &Path) -> u64 {
    fs::read_to_string(data.join(LIST_MARK))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.trim().strip_prefix("binlog_offset="))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn write_list_mark(data: &Path, offset: u64) -> io::Result<()> {
    let tmp = data.join(format!("{LIST_MARK}.tmp"));
    fs::write(&tmp, format!("binlog_offset={offset}\n"))?;
    fs::rename(tmp, data.join(LIST_MARK))
}

fn finish(data: &Path) -> io::Result<()> {
    for name in [LIST, LIST_MARK] {
        match fs::remove_file(data.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    fs::remove_file(flag_path(data))
}

/// The store paths that need their files back: replaced since the last start (while
/// the storage had joined its group), or whose recovery was cut short. Blocking.
pub fn paths_to_recover(st: &Storage, joined_before: bool) -> io::Result<Vec<usize>> {
    let mut out = Vec::new();
    for (i, p) in st.store.paths().iter().enumerate() {
        if flag_path(&p.data).exists() {
            info!(
                "store path {i} ({}): recovery from a peer not finished, going on",
                p.root.display()
            );
            out.push(i);
        } else if p.fresh && joined_before {
            warn!(
                "store path {i} ({}) has no data directory (a new disk?): its files are \
                 recovered from a peer of the group before this storage serves",
                p.root.display()
            );
            write_flag(&p.data, false)?;
            out.push(i);
        }
    }
    Ok(out)
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(e.to_string()))
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
    let me = crate::sync::my_id(st)?;
    Some(StorageBrief {
        status: 0,
        port: st.cfg.port as u32,
        id: me.clone(),
        ip: me,
    })
}

/// One request on a short connection to the first tracker that answers; learns our
/// own address from the connection.
async fn tracker_request(st: &Storage, command: u8, body: &[u8]) -> Result<Vec<u8>, Error> {
    let mut last = Error::Other("no tracker configured".into());
    for t in &st.cfg.tracker_servers {
        let r = async {
            let (host, port) = crate::tracker_link::parse_host_port(t)
                .ok_or_else(|| Error::Other(format!("bad tracker address {t:?}")))?;
            let addr = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .next()
                .ok_or_else(|| Error::Other(format!("{host} does not resolve")))?;
            let mut conn = connect(st, addr).await?;
            st.learn_ip(conn.local_addr()?.ip());
            let reply = conn.request(command, body).await;
            conn.quit().await;
            reply
        }
        .await;
        match r {
            Ok(reply) => return Ok(reply),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// An ACTIVE peer of the group to recover from; `None` when this storage is alone in
/// its group (nothing to recover).
async fn find_source(st: &Storage) -> Result<Option<SocketAddr>, Error> {
    let body = StorageSelector {
        group: st.cfg.group_name.clone(),
        storage_id: None,
    }
    .encode();
    let reply = tracker_request(st, cmd::SERVER_LIST_STORAGE, &body).await?;
    let list = StorageStat::decode_list(&reply)?;
    let me = crate::sync::my_id(st).unwrap_or_default();
    let others: Vec<&StorageStat> = list
        .iter()
        .filter(|s| s.id != me && s.ip != me)
        .filter(|s| !matches!(s.status, status::DELETED | status::IP_CHANGED))
        .collect();
    if others.is_empty() {
        return Ok(None);
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
    Ok(Some(SocketAddr::new(ip, src.storage_port as u16)))
}

async fn recover_path(st: &Arc<Storage>, index: usize, reported: &mut bool) -> Result<(), Error> {
    let data = st.store.paths()[index].data.clone();
    let Some(src) = find_source(st).await? else {
        info!("store path {index}: no other storage in the group, nothing to recover");
        let d = data.clone();
        blocking(move || finish(&d)).await??;
        return Ok(());
    };
    if !*reported {
        if let Some(me) = my_brief(st) {
            crate::sync::report_status(st, &me, status::RECOVERY).await;
            *reported = true;
        }
    }
    let d = data.clone();
    if !blocking(move || list_fetched(&d)).await? {
        info!("store path {index}: fetching its file list from {src}");
        let n = fetch_list(st, src, index as u8, &data.join(LIST)).await?;
        let d = data.clone();
        blocking(move || {
            write_list_mark(&d, 0)?;
            write_flag(&d, true)
        })
        .await??;
        info!("store path {index}: file list from {src}: {n} bytes");
    }
    let counts = download_all(st, src, index, &data).await?;
    let d = data.clone();
    blocking(move || finish(&d)).await??;
    info!(
        "store path {index}: recovered from {src}: {} file(s) ({} bytes) copied, {} already \
         here, {} gone on the peer, {} failed verification",
        counts.copied, counts.bytes, counts.present, counts.gone, counts.bad
    );
    Ok(())
}

/// Splits a stream that ends with an 8-byte big-endian count of the bytes before it.
#[derive(Default)]
pub struct TrailedStream {
    tail: Vec<u8>,
    pub body_len: u64,
}

impl TrailedStream {
    /// Takes the next received bytes; returns those that are certainly body.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.tail.extend_from_slice(chunk);
        let keep = self.tail.len().saturating_sub(8);
        let body: Vec<u8> = self.tail.drain(..keep).collect();
        self.body_len += body.len() as u64;
        body
    }

    /// At the end of the stream: whether the trailer is there and matches.
    pub fn complete(&self) -> bool {
        self.tail.len() == 8
            && u64::from_be_bytes(self.tail[..].try_into().expect("8 bytes")) == self.body_len
    }
}

/// 26 FETCH_ONE_PATH_BINLOG into `dest`; returns the list's length.
async fn fetch_list(st: &Storage, src: SocketAddr, index: u8, dest: &Path) -> Result<u64, Error> {
    let mut conn = connect(st, src).await?;
    let mut body = Vec::with_capacity(GROUP_NAME_LEN + 1);
    let mut group = st.cfg.group_name.as_bytes().to_vec();
    group.resize(GROUP_NAME_LEN, 0);
    body.extend_from_slice(&group);
    body.push(index);
    conn.send(
        Header::request(cmd::FETCH_ONE_PATH_BINLOG, body.len()),
        &body,
    )
    .await?;
    conn.read_reply_header(u64::MAX).await?;
    let dest = dest.to_path_buf();
    let mut file = Some(blocking(move || File::create(dest)).await??);
    let mut split = TrailedStream::default();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = conn.read_some(&mut buf).await?;
        if n == 0 {
            break;
        }
        let part = split.push(&buf[..n]);
        if !part.is_empty() {
            let mut f = file.take().expect("file");
            let (f, r) = blocking(move || {
                let r = f.write_all(&part);
                (f, r)
            })
            .await?;
            file = Some(f);
            r?;
        }
    }
    if !split.complete() {
        return Err(Error::Other(format!(
            "file list from {src} is incomplete ({} bytes)",
            split.body_len
        )));
    }
    let f = file.take().expect("file");
    blocking(move || f.sync_all()).await??;
    Ok(split.body_len)
}

/// One line of the file list.
struct Entry {
    timestamp: i64,
    op: char,
    name: String,
    target: Option<String>,
    /// Offset just after the line.
    end: u64,
}

/// Up to `max` entries of the list from `offset`.
fn read_list(path: &Path, offset: u64, max: usize) -> io::Result<Vec<Entry>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut r = BufReader::new(f);
    let mut out = Vec::new();
    let mut pos = offset;
    let mut line = Vec::new();
    while out.len() < max {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        pos += n as u64;
        let text = String::from_utf8_lossy(&line[..n - 1]);
        match parse_line(&text) {
            Some((timestamp, op, name, extra)) if "CcLl".contains(op) => out.push(Entry {
                timestamp,
                op,
                name,
                target: extra,
                end: pos,
            }),
            _ => {
                warn!("file list: line {text:?} skipped");
                out.push(Entry {
                    timestamp: 0,
                    op: '-',
                    name: String::new(),
                    target: None,
                    end: pos,
                });
            }
        }
    }
    Ok(out)
}

#[derive(Default)]
struct Counts {
    copied: u64,
    bytes: u64,
    present: u64,
    gone: u64,
    bad: u64,
}

/// What became of one file.
enum Got {
    Copied(u64),
    Present,
    Gone,
    Bad,
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
    let mut conn = connect(st, src).await?;
    let mut since_mark = 0u64;
    let mut last_log = Instant::now();
    loop {
        let l = list.clone();
        let batch = blocking(move || read_list(&l, offset, 256)).await??;
        if batch.is_empty() {
            break;
        }
        for e in batch {
            let got = match e.op {
                'C' | 'c' => fetch_file(st, &mut conn, index, &e).await?,
                'L' | 'l' => {
                    let st2 = st.clone();
                    blocking(move || make_link(&st2, &e.name, e.target.as_deref())).await?
                }
                _ => Got::Bad,
            };
            match got {
                Got::Copied(n) => {
                    counts.copied += 1;
                    counts.bytes += n;
                }
                Got::Present => counts.present += 1,
                Got::Gone => counts.gone += 1,
                Got::Bad => counts.bad += 1,
            }
            offset = e.end;
            since_mark += 1;
            if since_mark >= MARK_EVERY {
                since_mark = 0;
                let d = data.to_path_buf();
                blocking(move || write_list_mark(&d, offset)).await??;
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
    conn.quit().await;
    let d = data.to_path_buf();
    blocking(move || write_list_mark(&d, offset)).await??;
    Ok(counts)
}

/// Downloads one file of the list into place, unless it is here already.
async fn fetch_file(
    st: &Storage,
    conn: &mut Connection,
    index: usize,
    e: &Entry,
) -> Result<Got, Error> {
    let Ok(name) = RemoteName::parse(&e.name) else {
        warn!("file list: bad name {:?} skipped", e.name);
        return Ok(Got::Bad);
    };
    if name.store_path as usize != index {
        return Ok(Got::Bad);
    }
    let Ok(path) = st.store.resolve(&name) else {
        return Ok(Got::Bad);
    };
    let p = path.clone();
    if blocking(move || fs::symlink_metadata(p).is_ok()).await? {
        return Ok(Got::Present);
    }
    // What the name says about the content: normal files carry size and CRC32.
    let expect = name
        .info()
        .ok()
        .filter(|i| i.kind == FileKind::Normal)
        .map(|i| (i.file_size, i.crc32));
    let req = Download {
        offset: 0,
        count: 0,
        group: st.cfg.group_name.clone(),
        filename: e.name.clone(),
    }
    .encode();
    conn.send(Header::request(cmd::DOWNLOAD_FILE, req.len()), &req)
        .await?;
    let len = match conn.read_reply_header(u64::MAX).await {
        Ok(n) => n,
        Err(Error::Status(errno::ENOENT)) => return Ok(Got::Gone),
        Err(Error::Status(s)) => {
            warn!("{}: the peer answered errno {s}; skipped", e.name);
            return Ok(Got::Bad);
        }
        Err(e) => return Err(e),
    };
    let dir = path.parent().expect("a file in a directory").to_path_buf();
    let mut new = Some(blocking(move || crate::store::NewFile::create(&dir)).await??);
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; (len as usize).clamp(1, CHUNK)];
    let mut left = len;
    while left > 0 {
        let want = (left as usize).min(buf.len());
        let n = conn.read_some(&mut buf[..want]).await?;
        if n == 0 {
            return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        crc.update(&buf[..n]);
        left -= n as u64;
        let mut f = new.take().expect("file");
        let b = std::mem::take(&mut buf);
        let (f, b, r) = blocking(move || {
            let r = f.file.write_all(&b[..n]);
            (f, b, r)
        })
        .await?;
        new = Some(f);
        buf = b;
        r?;
    }
    let crc = crc.finalize();
    if let Some((size, want_crc)) = expect {
        if size != len || want_crc != crc {
            warn!(
                "{}: the copy from the peer does not match its name (size {len}, CRC32 \
                 {crc:08X}; the name says size {size}, CRC32 {want_crc:08X}); not kept",
                e.name
            );
            return Ok(Got::Bad);
        }
    }
    let mut f = new.take().expect("file");
    let mtime = UNIX_EPOCH + Duration::from_secs(e.timestamp.max(0) as u64);
    let committed = blocking(move || {
        f.file.set_modified(mtime)?;
        f.commit_no_replace(&path)
    })
    .await?;
    match committed {
        Ok(()) => Ok(Got::Copied(len)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Got::Present),
        Err(e) => Err(Error::Io(e)),
    }
}

/// Recreates a symbolic link of the list. Blocking.
fn make_link(st: &Storage, name: &str, target: Option<&str>) -> Got {
    let (Ok(link), Some(Ok(target))) = (RemoteName::parse(name), target.map(RemoteName::parse))
    else {
        return Got::Bad;
    };
    let (Ok(link), Ok(target)) = (st.store.resolve(&link), st.store.resolve(&target)) else {
        return Got::Bad;
    };
    match std::os::unix::fs::symlink(&target, &link) {
        Ok(()) => Got::Copied(0),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Got::Present,
        Err(e) => {
            warn!(
                "cannot link {} to {}: {e}",
                link.display(),
                target.display()
            );
            Got::Bad
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
        let d = std::env::temp_dir().join(format!("fdfs-rlist-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let p = d.join(LIST);
        let text = "1 C M00/00/00/a\n2 l M00/00/00/b M00/00/00/a\nbad\n3 c M00/00/00/c\n4 c M0";
        fs::write(&p, text).unwrap();
        let first = read_list(&p, 0, 2).unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[1].op, 'l');
        assert_eq!(first[1].target.as_deref(), Some("M00/00/00/a"));
        let rest = read_list(&p, first[1].end, 10).unwrap();
        // The bad line is passed over; the torn last one is not read.
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[0].op, '-');
        assert_eq!(rest[1].name, "M00/00/00/c");
        assert_eq!(rest[1].timestamp, 3);
        assert!(read_list(&p, rest[1].end, 10).unwrap().is_empty());
        write_list_mark(&d, 77).unwrap();
        assert_eq!(read_list_mark(&d), 77);
        write_flag(&d, false).unwrap();
        assert!(!list_fetched(&d));
        write_flag(&d, true).unwrap();
        assert!(list_fetched(&d));
        finish(&d).unwrap();
        assert!(!flag_path(&d).exists() && !d.join(LIST).exists());
        let _ = fs::remove_dir_all(d);
    }
}
