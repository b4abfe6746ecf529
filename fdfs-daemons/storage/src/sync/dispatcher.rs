//! One task per peer: replays this storage's binlog to the peer with the sync commands
//! (§3.6), on one long-lived connection, record after record with no pause, resuming
//! from the peer's mark file after a restart or a broken connection.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fdfs_proto::fileid::RemoteName;
use fdfs_proto::header::HEADER_LEN;
use fdfs_proto::storage_msg::{
    encode_server_id, SyncDelete, SyncFileHead, SyncRangeHead, SyncTruncate, SyncTwoNames,
    PIPELINE_ANSWER, PIPELINE_ASK,
};
use fdfs_proto::tracker_msg::StorageBrief;
use fdfs_proto::{cmd, errno, status, Header};
use fdfs_runtime::{Connection, Error};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::binlog_reader::{BinlogReader, Record};
use super::mark::{self, Mark};
use super::{my_id, report_status, sync_src_req};
use crate::integrity;
use crate::state::Storage;
use crate::stats::counter;
use crate::transfer::send_range;

/// Records read from the binlog at once.
const BATCH: usize = 512;
/// The mark is saved after this many records (and when the peer is caught up), but at
/// most once per [`MARK_INTERVAL`] while records flow: each save writes a new file and
/// renames it over the old one, whose freed blocks the file system may discard
/// synchronously (milliseconds on a worker thread). A replay after a crash is harmless.
const MARK_EVERY: u64 = 500;
const MARK_INTERVAL: Duration = Duration::from_secs(1);
/// Content up to this size goes out in the same write as its request head.
const INLINE_MAX: u64 = 64 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);

/// Why the streaming loop ended.
enum End {
    Stop,
    Broken(Error),
}

impl From<Error> for End {
    fn from(e: Error) -> Self {
        End::Broken(e)
    }
}

impl From<io::Error> for End {
    fn from(e: io::Error) -> Self {
        End::Broken(Error::Io(e))
    }
}

/// Requests on the wire before the first reply is awaited (to a peer that pipelines).
const WINDOW: usize = 128;
/// Queued request bytes are written once they reach this size.
const FLUSH_AT: usize = 256 * 1024;

/// A record handled on the current connection.
#[derive(Debug, Clone, Copy)]
enum Flight {
    /// Nothing to wait for.
    Done(Outcome),
    /// Its request is sent; the reply decides.
    Awaiting(Awaiting),
}

#[derive(Debug, Clone, Copy)]
enum Awaiting {
    /// 16/18: EEXIST also means done.
    File,
    /// 17: ENOENT also means done.
    Delete,
}

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Applied,
    Skipped,
    Rejected,
}

struct Dispatcher {
    st: Arc<Storage>,
    peer: StorageBrief,
    mark_path: PathBuf,
    mark: Mark,
    reader: BinlogReader,
    /// Records read but not yet done (kept across reconnections).
    pending: VecDeque<Record>,
    unsaved: u64,
    last_saved: Instant,
    /// Confirmed records not yet told to `st.sync` (done before waiting).
    progress_unpublished: bool,
    /// Appenders whose append, modify or truncate could not be sent because the local
    /// file had already been renamed (regenerated): the peer's copy is behind, so their
    /// rename sends the renamed file whole instead.
    behind: HashSet<String>,
    /// Whether the peer (as of the last connection) takes pipelined requests.
    pipelined: bool,
    stop: watch::Receiver<bool>,
}

fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

async fn wait_stop(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

pub async fn run(st: Arc<Storage>, peer: StorageBrief, mut stop: watch::Receiver<bool>) {
    let mark_path = mark::path(st.binlog.dir(), &peer.ip, peer.port as u16);
    let mark = match Mark::load(&mark_path) {
        Ok(Some(m)) => m,
        other => {
            if let Err(e) = other {
                warn!("{}: unreadable, starting over: {e}", mark_path.display());
            }
            let Some(m) = initial_mark(&st, &peer, &mut stop).await else {
                return;
            };
            if let Err(e) = m.save(&mark_path) {
                warn!("cannot save {}: {e}", mark_path.display());
            }
            m
        }
    };
    info!(
        "replication to {}:{} from binlog.{:03} offset {}{}",
        peer.ip,
        peer.port,
        mark.binlog_index,
        mark.binlog_offset,
        if mark.need_sync_old && !mark.sync_old_done {
            " (copying old files first)"
        } else {
            ""
        }
    );
    let reader = BinlogReader::new(st.binlog.dir(), mark.position());
    st.sync.set_progress(&peer.id, Some(mark.position()));
    let mut d = Dispatcher {
        st: st.clone(),
        peer,
        mark_path,
        mark,
        reader,
        pending: VecDeque::new(),
        behind: HashSet::new(),
        pipelined: false,
        unsaved: 0,
        last_saved: Instant::now(),
        progress_unpublished: false,
        stop,
    };
    if d.mark.need_sync_old && !d.mark.sync_old_done {
        report_status(&d.st, &d.peer, status::SYNCING).await;
    }
    d.run().await;
    d.save_mark();
    st.sync.set_progress(&d.peer.id, None);
}

/// First contact with a peer: ask the tracker whether we must copy it the old files.
async fn initial_mark(
    st: &Storage,
    peer: &StorageBrief,
    stop: &mut watch::Receiver<bool>,
) -> Option<Mark> {
    let mut logged = false;
    loop {
        if let Some(me) = my_id(st) {
            match sync_src_req(st, &peer.id).await {
                Ok(src) => {
                    let mut m = Mark::default();
                    if let Some(src) = src {
                        m.until_timestamp = src.until_timestamp;
                        m.need_sync_old = src.src_id == me;
                    }
                    m.sync_old_done = !m.need_sync_old;
                    return Some(m);
                }
                Err(e) => {
                    if !logged {
                        info!(
                            "sync source of {}:{} not known yet: {e}",
                            peer.ip, peer.port
                        );
                        logged = true;
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            _ = wait_stop(stop) => return None,
        }
    }
}

impl Dispatcher {
    fn save_mark(&mut self) {
        self.publish_progress();
        if let Err(e) = self.mark.save(&self.mark_path) {
            warn!("cannot save {}: {e}", self.mark_path.display());
        }
        self.unsaved = 0;
        self.last_saved = Instant::now();
    }

    /// Saves the mark if it moved and the last save is [`MARK_INTERVAL`] old.
    fn save_mark_soon(&mut self) {
        if self.unsaved > 0 && self.last_saved.elapsed() >= MARK_INTERVAL {
            self.save_mark();
        }
    }

    async fn run(&mut self) {
        let mut backoff = BACKOFF_MIN;
        let mut failing = false;
        loop {
            if stopped(&self.stop) {
                return;
            }
            let result = match self.connect().await {
                Ok((mut conn, pipelined)) => {
                    self.pipelined = pipelined;
                    if failing {
                        info!("replication to {}:{} resumed", self.peer.ip, self.peer.port);
                    }
                    failing = false;
                    backoff = BACKOFF_MIN;
                    let r = self.stream(&mut conn).await;
                    if matches!(r, End::Stop) {
                        conn.quit().await;
                    }
                    r
                }
                Err(e) => End::Broken(e),
            };
            match result {
                End::Stop => return,
                End::Broken(e) => {
                    if !failing {
                        warn!(
                            "replication to {}:{}: {e}; retrying",
                            self.peer.ip, self.peer.port
                        );
                    } else {
                        debug!("replication to {}:{}: {e}", self.peer.ip, self.peer.port);
                    }
                    failing = true;
                }
            }
            if self.unsaved > 0 {
                self.save_mark();
            }
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = wait_stop(&mut stop) => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Connects and says who we are; true if the peer may be sent pipelined requests
    /// (it answered [`PIPELINE_ASK`]). Upstream storages read one request at a time:
    /// they get each request only after the reply to the one before.
    async fn connect(&self) -> Result<(Connection, bool), Error> {
        let me = my_id(&self.st).ok_or_else(|| Error::Other("own address unknown".into()))?;
        let ip: std::net::IpAddr = self
            .peer
            .ip
            .parse()
            .map_err(|_| Error::Other(format!("bad peer address {:?}", self.peer.ip)))?;
        let addr = SocketAddr::new(ip, self.peer.port as u16);
        let mut conn = super::connect(&self.st, addr).await?;
        let answer = conn
            .request_with_status(
                cmd::STORAGE_REPORT_SERVER_ID,
                PIPELINE_ASK,
                &encode_server_id(&me),
            )
            .await?;
        let pipelined = answer == PIPELINE_ANSWER;
        if pipelined != self.pipelined {
            info!(
                "replication to {}:{}: {}",
                self.peer.ip,
                self.peer.port,
                if pipelined {
                    "requests pipelined"
                } else {
                    "one request at a time (the peer does not pipeline)"
                }
            );
        }
        Ok((conn, pipelined))
    }

    /// Streams records until stopped or the connection breaks. Creates, updates and
    /// deletes are pipelined: up to [`WINDOW`] requests are on the wire before their
    /// replies are read (replies are 10 bytes, so they never fill a socket buffer and
    /// the peer never blocks). Records that may need a fallback (append, modify,
    /// truncate, rename, link) wait for the pipeline to drain and go one by one.
    async fn stream(&mut self, conn: &mut Connection) -> End {
        let window = if self.pipelined { WINDOW } else { 1 };
        // With more requests than this awaiting replies, no new ones are sent; at or
        // below it, the window is filled up again.
        let low_water = window / 2;
        let mut end_rx = self.st.binlog.subscribe();
        let mut last_traffic = Instant::now();
        // flight[i] describes pending[i], for the records already handled.
        let mut flight: VecDeque<Flight> = VecDeque::new();
        let mut out: Vec<u8> = Vec::with_capacity(FLUSH_AT + INLINE_MAX as usize);
        loop {
            if stopped(&self.stop) {
                return End::Stop;
            }
            // Confirm records that need no reply, in order.
            while let Some(Flight::Done(outcome)) = flight.front() {
                let outcome = *outcome;
                flight.pop_front();
                self.confirm(outcome);
            }
            if self.pending.len() == flight.len() && flight.len() < window {
                end_rx.borrow_and_update();
                self.read_more();
            }
            // Put more requests on the wire: only once half the window is answered, so
            // they go out (and the peer reads them) in large writes, not one per reply.
            let refill = flight.len() <= low_water;
            while refill && flight.len() < window && flight.len() < self.pending.len() {
                let rec = &self.pending[flight.len()];
                if !self.wanted(rec) {
                    flight.push_back(Flight::Done(Outcome::Skipped));
                    continue;
                }
                let simple = matches!(rec.op.to_ascii_uppercase(), 'C' | 'U' | 'D');
                if !simple {
                    if !flight.is_empty() {
                        break;
                    }
                    if let Err(e) = flush(conn, &mut out).await {
                        return e;
                    }
                    let rec = rec.clone();
                    let outcome = match self.sync_record(conn, &rec).await {
                        Ok(o) => o,
                        Err(e) => return e,
                    };
                    last_traffic = Instant::now();
                    flight.push_back(Flight::Done(outcome));
                    break;
                }
                match self.queue_simple(conn, rec, &mut out).await {
                    Ok(f) => flight.push_back(f),
                    Err(e) => return e,
                }
                if out.len() >= FLUSH_AT {
                    if let Err(e) = flush(conn, &mut out).await {
                        return e;
                    }
                }
            }
            if let Err(e) = flush(conn, &mut out).await {
                return e;
            }
            match flight.front() {
                Some(Flight::Done(_)) => continue,
                Some(Flight::Awaiting(kind)) => {
                    let kind = *kind;
                    if conn.buffered().len() < HEADER_LEN {
                        // About to wait: let the waiters of sync_wait_replicas know.
                        self.publish_progress();
                    }
                    let status = match reply_status(conn).await {
                        Ok(s) => s,
                        Err(e) => return e,
                    };
                    last_traffic = Instant::now();
                    let rec = self.pending.front().expect("in flight");
                    let outcome = match (kind, status) {
                        (_, 0) => Outcome::Applied,
                        (Awaiting::File, errno::EEXIST) => Outcome::Applied,
                        (Awaiting::Delete, errno::ENOENT) => Outcome::Applied,
                        (_, s) => match self.refused(rec, s) {
                            Ok(o) => o,
                            Err(e) => return e,
                        },
                    };
                    flight.pop_front();
                    self.confirm(outcome);
                    continue;
                }
                None => {}
            }
            // Nothing in flight and nothing to send: caught up.
            if !self.pending.is_empty() {
                continue;
            }
            self.publish_progress();
            let pos = self.reader.position();
            if pos > self.mark.position() {
                // Malformed records at the end still move the position.
                self.mark.set_position(pos);
                self.unsaved += 1;
                self.st.sync.set_progress(&self.peer.id, Some(pos));
            }
            if self.mark.need_sync_old && !self.mark.sync_old_done {
                self.mark.sync_old_done = true;
                self.save_mark();
                info!("old files copied to {}:{}", self.peer.ip, self.peer.port);
                super::note_copied_old(&self.st, &self.peer).await;
                report_status(&self.st, &self.peer, status::OFFLINE).await;
            }
            // Saved later (the wait below ends within a second) if saved just now.
            self.save_mark_soon();
            let idle_limit = (conn.timeout() / 2).max(Duration::from_secs(1));
            let mut stop = self.stop.clone();
            tokio::select! {
                r = end_rx.changed() => { if r.is_err() { return End::Stop; } }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = wait_stop(&mut stop) => return End::Stop,
            }
            if last_traffic.elapsed() >= idle_limit && self.st.binlog.end() <= pos {
                // Keeps the idle connection from timing out on the peer's side.
                if let Err(e) = conn.request(cmd::ACTIVE_TEST, &[]).await {
                    return End::Broken(e);
                }
                last_traffic = Instant::now();
            }
        }
    }

    /// Reads the next records of the binlog into `pending`.
    fn read_more(&mut self) {
        let write_index = self.st.binlog.end().index;
        let before = self.reader.malformed;
        match self.reader.read_batch(BATCH, write_index) {
            Ok(batch) => self.pending.extend(batch),
            Err(e) => warn!("cannot read binlog: {e}"),
        }
        self.st
            .sync
            .counters
            .malformed
            .fetch_add(self.reader.malformed - before, Ordering::Relaxed);
    }

    /// Tells [`crate::sync`] (and uploads waiting for replicas) how far the peer is.
    fn publish_progress(&mut self) {
        if self.progress_unpublished {
            self.progress_unpublished = false;
            self.st
                .sync
                .set_progress(&self.peer.id, Some(self.mark.position()));
        }
    }

    /// The front record of `pending` is done.
    fn confirm(&mut self, outcome: Outcome) {
        let rec = self.pending.pop_front().expect("a pending record");
        if rec.op.eq_ignore_ascii_case(&'D') && !self.behind.is_empty() {
            self.behind.remove(&rec.name);
        }
        let counters = &self.st.sync.counters;
        match outcome {
            Outcome::Applied => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
                self.mark.sync_row_count += 1;
            }
            Outcome::Skipped => {
                counters.skipped.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Rejected => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.mark.scan_row_count += 1;
        self.mark.set_position(rec.end);
        self.progress_unpublished = true;
        self.unsaved += 1;
        if self.unsaved >= MARK_EVERY {
            self.save_mark_soon();
        }
    }

    /// Adds a create, update or delete request to `out` (large content is streamed
    /// straight to the connection); says what its reply will mean.
    async fn queue_simple(
        &self,
        conn: &mut Connection,
        rec: &Record,
        out: &mut Vec<u8>,
    ) -> Result<Flight, End> {
        let ts = rec.timestamp as i32;
        if rec.op.eq_ignore_ascii_case(&'D') {
            let body = SyncDelete {
                timestamp: ts,
                group: self.st.cfg.group_name.clone(),
                filename: rec.name.clone(),
            }
            .encode();
            out.extend_from_slice(&Header::request(cmd::SYNC_DELETE_FILE, body.len()).encode());
            out.extend_from_slice(&body);
            return Ok(Flight::Awaiting(Awaiting::Delete));
        }
        let command = if rec.op.eq_ignore_ascii_case(&'C') {
            cmd::SYNC_CREATE_FILE
        } else {
            cmd::SYNC_UPDATE_FILE
        };
        let Some(path) = self.local_path(&rec.name) else {
            return Ok(Flight::Done(Outcome::Skipped));
        };
        let mut file = match File::open(&path) {
            Ok(f) => f,
            // Deleted since: its delete record follows.
            Err(_) => return Ok(Flight::Done(Outcome::Skipped)),
        };
        let size = file.metadata()?.len();
        let head = SyncFileHead {
            filename_len: rec.name.len(),
            file_size: size,
            timestamp: ts,
            group: self.st.cfg.group_name.clone(),
        }
        .encode(&rec.name);
        let header = Header {
            pkg_len: (head.len() as u64 + size) as i64,
            cmd: command,
            status: 0,
        };
        let request_start = out.len();
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(&head);
        if size <= INLINE_MAX {
            let start = out.len();
            out.resize(start + size as usize, 0);
            if let Err(e) = read_at(&mut file, 0, &mut out[start..]) {
                // Shrunk under us (the request head is already queued): start over.
                return Err(End::Broken(Error::Io(e)));
            }
            // A damaged copy is not spread: the record is skipped (counted as rejected)
            // and the file healed here from a peer that has a good copy.
            if let Ok(name) = RemoteName::parse(&rec.name) {
                if let Err(why) = integrity::check(&name, &out[start..]) {
                    out.truncate(request_start);
                    self.st.integrity.report(&rec.name, &why);
                    return Ok(Flight::Done(Outcome::Rejected));
                }
            }
        } else {
            flush(conn, out).await?;
            send_range(conn, &mut file, 0, size)
                .await
                .map_err(|e| End::Broken(Error::Io(e.into_io())))?;
        }
        self.st
            .stats
            .add_bytes(counter::TOTAL_SYNC_OUT_BYTES, size, true);
        Ok(Flight::Awaiting(Awaiting::File))
    }

    /// Should this record go to the peer (§6.1)?
    fn wanted(&self, rec: &Record) -> bool {
        let m = &self.mark;
        if rec.op.is_ascii_uppercase() {
            // A non-source peer gets the old files from its source.
            m.need_sync_old || rec.timestamp >= m.until_timestamp
        } else {
            m.need_sync_old
                && !m.sync_old_done
                && rec.timestamp <= m.until_timestamp
                && matches!(rec.op, 'c' | 'u' | 'd' | 'r' | 'l')
        }
    }

    fn local_path(&self, name: &str) -> Option<PathBuf> {
        let n = RemoteName::parse(name).ok()?;
        self.st.store.resolve(&n).ok()
    }

    async fn sync_record(&mut self, conn: &mut Connection, rec: &Record) -> Result<Outcome, End> {
        if !self.wanted(rec) {
            return Ok(Outcome::Skipped);
        }
        let ts = rec.timestamp as i32;
        let outcome = match rec.op.to_ascii_uppercase() {
            'C' => {
                self.send_file(conn, rec, &rec.name, cmd::SYNC_CREATE_FILE)
                    .await?
            }
            'U' => {
                self.send_file(conn, rec, &rec.name, cmd::SYNC_UPDATE_FILE)
                    .await?
            }
            'D' => {
                let body = SyncDelete {
                    timestamp: ts,
                    group: self.st.cfg.group_name.clone(),
                    filename: rec.name.clone(),
                }
                .encode();
                match status_of(conn, cmd::SYNC_DELETE_FILE, &body).await? {
                    0 | errno::ENOENT => Outcome::Applied,
                    s => self.refused(rec, s)?,
                }
            }
            'A' | 'M' => {
                let (offset, length) = rec.numbers().unwrap_or((0, 0));
                let command = if rec.op.eq_ignore_ascii_case(&'A') {
                    cmd::SYNC_APPEND_FILE
                } else {
                    cmd::SYNC_MODIFY_FILE
                };
                self.send_range(conn, rec, offset, length, command).await?
            }
            'T' => {
                let (old_size, new_size) = rec.numbers().unwrap_or((0, 0));
                // The truncate may not have been made (a crash right after its record,
                // which comes first), or the file has changed since: then the peer gets
                // the whole file as it is.
                if let Some(path) = self.local_path(&rec.name) {
                    drop(self.st.appenders.lock(&path).await);
                    if fs::metadata(&path).is_ok_and(|m| m.len() != new_size) {
                        return self
                            .send_file(conn, rec, &rec.name, cmd::SYNC_UPDATE_FILE)
                            .await;
                    }
                }
                let body = SyncTruncate {
                    old_size,
                    new_size,
                    timestamp: ts,
                    group: self.st.cfg.group_name.clone(),
                    filename: rec.name.clone(),
                }
                .encode();
                match status_of(conn, cmd::SYNC_TRUNCATE_FILE, &body).await? {
                    // EEXIST: the peer's size is not the one before the truncate; done,
                    // as for upstream senders (see `send_range`).
                    0 | errno::EEXIST => Outcome::Applied,
                    errno::ENOENT => {
                        self.send_file(conn, rec, &rec.name, cmd::SYNC_UPDATE_FILE)
                            .await?
                    }
                    s => self.refused(rec, s)?,
                }
            }
            'R' => {
                let old = rec.extra.clone().unwrap_or_default();
                if self.behind.remove(&old) {
                    return self.send_renamed_whole(conn, rec, &old).await;
                }
                let body = SyncTwoNames {
                    timestamp: ts,
                    group: self.st.cfg.group_name.clone(),
                    first: rec.name.clone(),
                    second: old,
                }
                .encode();
                match status_of(conn, cmd::SYNC_RENAME_FILE, &body).await? {
                    0 | errno::EEXIST => Outcome::Applied,
                    errno::ENOENT => {
                        self.send_file(conn, rec, &rec.name, cmd::SYNC_CREATE_FILE)
                            .await?
                    }
                    s => self.refused(rec, s)?,
                }
            }
            'L' => {
                let target = rec.extra.clone().unwrap_or_default();
                let body = SyncTwoNames {
                    timestamp: ts,
                    group: self.st.cfg.group_name.clone(),
                    first: rec.name.clone(),
                    second: target,
                }
                .encode();
                match status_of(conn, cmd::SYNC_CREATE_LINK, &body).await? {
                    0 | errno::EEXIST => Outcome::Applied,
                    errno::ENOENT => Outcome::Skipped,
                    s => self.refused(rec, s)?,
                }
            }
            _ => Outcome::Skipped,
        };
        Ok(outcome)
    }

    /// A peer's error reply: invalid requests are logged and skipped; anything else
    /// (no space, I/O error) is retried after a pause.
    fn refused(&self, rec: &Record, status: u8) -> Result<Outcome, End> {
        if status == errno::EINVAL {
            warn!(
                "{}:{} rejected {} {} {} as invalid; skipped",
                self.peer.ip, self.peer.port, rec.timestamp, rec.op, rec.name
            );
            return Ok(Outcome::Rejected);
        }
        Err(End::Broken(Error::Status(status)))
    }

    /// 16 / 18 with the whole current content of local file `name`.
    async fn send_file(
        &self,
        conn: &mut Connection,
        rec: &Record,
        name: &str,
        command: u8,
    ) -> Result<Outcome, End> {
        let Some(path) = self.local_path(name) else {
            return Ok(Outcome::Skipped);
        };
        let mut file = match File::open(&path) {
            Ok(f) => f,
            // Deleted since: its delete record follows.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Outcome::Skipped),
            Err(e) => {
                warn!("cannot open {}: {e}; record skipped", path.display());
                return Ok(Outcome::Skipped);
            }
        };
        let size = file.metadata()?.len();
        let head = SyncFileHead {
            filename_len: name.len(),
            file_size: size,
            timestamp: rec.timestamp as i32,
            group: self.st.cfg.group_name.clone(),
        }
        .encode(name);
        let status = self
            .send_content(conn, command, &head, &mut file, 0, size)
            .await?;
        self.st
            .stats
            .add_bytes(counter::TOTAL_SYNC_OUT_BYTES, size, status == 0);
        match status {
            0 | errno::EEXIST => Ok(Outcome::Applied),
            s => self.refused(rec, s),
        }
    }

    /// A rename whose appender the peer holds an old version of: the renamed file goes
    /// whole (18, which creates or replaces), then the old name is deleted there.
    async fn send_renamed_whole(
        &self,
        conn: &mut Connection,
        rec: &Record,
        old: &str,
    ) -> Result<Outcome, End> {
        info!(
            "{}: changes to {old} missed by {}:{} before its rename; sending it whole",
            rec.name, self.peer.ip, self.peer.port
        );
        let sent = self
            .send_file(conn, rec, &rec.name, cmd::SYNC_UPDATE_FILE)
            .await?;
        let body = SyncDelete {
            timestamp: rec.timestamp as i32,
            group: self.st.cfg.group_name.clone(),
            filename: old.to_string(),
        }
        .encode();
        match status_of(conn, cmd::SYNC_DELETE_FILE, &body).await? {
            0 | errno::ENOENT => Ok(sent),
            s => self.refused(rec, s),
        }
    }

    /// 25 / 35: `length` bytes at `offset` of the local file.
    async fn send_range(
        &mut self,
        conn: &mut Connection,
        rec: &Record,
        offset: u64,
        length: u64,
        command: u8,
    ) -> Result<Outcome, End> {
        let Some(path) = self.local_path(&rec.name) else {
            return Ok(Outcome::Skipped);
        };
        // A change's record is written before the change is made, under the file's lock:
        // the change in progress (if it is this one) is done once the lock is free.
        drop(self.st.appenders.lock(&path).await);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(_) => {
                // Renamed or deleted since: a rename record follows, which must then
                // carry the content.
                self.behind.insert(rec.name.clone());
                return Ok(Outcome::Skipped);
            }
        };
        let size = file.metadata()?.len();
        if size < offset + length {
            // Truncated since: the whole file as it is now.
            return self
                .send_file(conn, rec, &rec.name, cmd::SYNC_UPDATE_FILE)
                .await;
        }
        let head = SyncRangeHead {
            filename_len: rec.name.len(),
            offset,
            length,
            timestamp: rec.timestamp as i32,
            group: self.st.cfg.group_name.clone(),
        }
        .encode(&rec.name);
        match self
            .send_content(conn, command, &head, &mut file, offset, length)
            .await?
        {
            // EEXIST: the peer's copy is not at this offset (upstream peers answer so
            // when theirs is already longer, or is no regular file) and will not take
            // the change; upstream senders count it as done, and so do we.
            0 | errno::EEXIST => Ok(Outcome::Applied),
            // The peer misses the file or the part before: send it whole.
            errno::ENOENT => {
                self.send_file(conn, rec, &rec.name, cmd::SYNC_UPDATE_FILE)
                    .await
            }
            s => self.refused(rec, s),
        }
    }

    /// Sends a request head then `len` bytes of `file` from `offset`; returns the
    /// reply status.
    async fn send_content(
        &self,
        conn: &mut Connection,
        command: u8,
        head: &[u8],
        file: &mut File,
        offset: u64,
        len: u64,
    ) -> Result<u8, End> {
        let header = Header {
            pkg_len: (head.len() as u64 + len) as i64,
            cmd: command,
            status: 0,
        };
        if len <= INLINE_MAX {
            let mut out = Vec::with_capacity(10 + head.len() + len as usize);
            out.extend_from_slice(&header.encode());
            out.extend_from_slice(head);
            let start = out.len();
            out.resize(start + len as usize, 0);
            read_at(file, offset, &mut out[start..])?;
            conn.write_all(&out).await?;
        } else {
            conn.send(header, head).await?;
            send_range(conn, file, offset, len)
                .await
                .map_err(|e| End::Broken(Error::Io(e.into_io())))?;
        }
        reply_status(conn).await
    }
}

async fn flush(conn: &mut Connection, out: &mut Vec<u8>) -> Result<(), End> {
    if !out.is_empty() {
        conn.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

fn read_at(file: &mut File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

/// Sends a request with a small body; returns the reply status.
async fn status_of(conn: &mut Connection, command: u8, body: &[u8]) -> Result<u8, End> {
    conn.send(Header::request(command, body.len()), body)
        .await?;
    reply_status(conn).await
}

/// Reads a reply header (and any body); errno replies are returned, not errors.
async fn reply_status(conn: &mut Connection) -> Result<u8, End> {
    match conn.read_reply_header(1 << 20).await {
        Ok(0) => Ok(0),
        Ok(n) => {
            conn.read_body(n as usize).await?;
            Ok(0)
        }
        Err(Error::Status(s)) => Ok(s),
        Err(e) => Err(End::Broken(e)),
    }
}
