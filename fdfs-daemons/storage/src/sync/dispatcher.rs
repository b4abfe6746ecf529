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
use fdfs_proto::msg::{
    encode_server_id, Request, StorageBrief, SyncCreateLink, SyncDelete, SyncFileHead,
    SyncRangeHead, SyncRename, SyncTruncate, SyncTwoNames, PIPELINE_ANSWER, PIPELINE_ASK,
};
use fdfs_proto::{cmd, errno, status, Header};
use fdfs_runtime::{Connection, Error};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::mark::{self, Mark};
use super::{my_id, report_status, sync_src_req};
use crate::binlog::{BinlogReader, Change, Logged, Origin, Record};
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
    pending: VecDeque<Logged>,
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
    let mark_path = mark::path(st.binlog.dir(), &peer, st.by_server_id());
    if st.by_server_id() {
        mark::adopt_ip_named(st.binlog.dir(), &peer);
    }
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
        let mut conn = crate::outbound::connect(&self.st, addr).await?;
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
        let mut s = Stream {
            window: if self.pipelined { WINDOW } else { 1 },
            flight: VecDeque::new(),
            out: Vec::with_capacity(FLUSH_AT + INLINE_MAX as usize),
            end_rx: self.st.binlog.subscribe(),
            last_traffic: Instant::now(),
        };
        loop {
            if stopped(&self.stop) {
                return End::Stop;
            }
            let step = async {
                self.confirm_done(&mut s.flight);
                self.refill(conn, &mut s).await?;
                flush(conn, &mut s.out).await?;
                match s.flight.front() {
                    Some(Flight::Done(_)) => Ok(()),
                    Some(Flight::Awaiting(kind)) => {
                        let kind = *kind;
                        self.await_reply(conn, &mut s, kind).await
                    }
                    // Nothing in flight and nothing to send: caught up.
                    None if self.pending.is_empty() => self.caught_up(conn, &mut s).await,
                    None => Ok(()),
                }
            };
            if let Err(end) = step.await {
                return end;
            }
        }
    }

    /// Confirms the records at the front that need no reply, in order.
    fn confirm_done(&mut self, flight: &mut VecDeque<Flight>) {
        while let Some(Flight::Done(outcome)) = flight.front() {
            let outcome = *outcome;
            flight.pop_front();
            self.confirm(outcome);
        }
    }

    /// Reads more of the binlog when everything read is in flight, and puts more
    /// requests on the wire: only once half the window is answered, so they go out (and
    /// the peer reads them) in large writes, not one per reply.
    async fn refill(&mut self, conn: &mut Connection, s: &mut Stream) -> Result<(), End> {
        if self.pending.len() == s.flight.len() && s.flight.len() < s.window {
            s.end_rx.borrow_and_update();
            self.read_more();
        }
        if s.flight.len() > s.window / 2 {
            return Ok(());
        }
        while s.flight.len() < s.window && s.flight.len() < self.pending.len() {
            let rec = self.pending[s.flight.len()].record.clone();
            if !self.wanted(&rec) {
                s.flight.push_back(Flight::Done(Outcome::Skipped));
                continue;
            }
            if !rec.change.is_whole_file() {
                // One by one, once everything before it is answered.
                if s.flight.is_empty() {
                    flush(conn, &mut s.out).await?;
                    let outcome = self.sync_one(conn, &rec).await?;
                    s.last_traffic = Instant::now();
                    s.flight.push_back(Flight::Done(outcome));
                }
                break;
            }
            let flight = self.queue_whole(conn, &rec, &mut s.out).await?;
            s.flight.push_back(flight);
            if s.out.len() >= FLUSH_AT {
                flush(conn, &mut s.out).await?;
            }
        }
        Ok(())
    }

    /// Reads the reply to the front request in flight and confirms its record.
    async fn await_reply(
        &mut self,
        conn: &mut Connection,
        s: &mut Stream,
        kind: Awaiting,
    ) -> Result<(), End> {
        if conn.buffered().len() < HEADER_LEN {
            // About to wait: let the waiters of sync_wait_replicas know.
            self.publish_progress();
        }
        let status = reply_status(conn).await?;
        s.last_traffic = Instant::now();
        let outcome = match (kind, status) {
            (_, 0) => Outcome::Applied,
            (Awaiting::File, errno::EEXIST) => Outcome::Applied,
            (Awaiting::Delete, errno::ENOENT) => Outcome::Applied,
            (_, status) => {
                let rec = &self.pending.front().expect("in flight").record;
                self.refused(rec, status)?
            }
        };
        s.flight.pop_front();
        self.confirm(outcome);
        Ok(())
    }

    /// Everything is sent and confirmed: records the position, ends the copy of old
    /// files if that was going on, then waits for new records (or a second), keeping an
    /// idle connection alive.
    async fn caught_up(&mut self, conn: &mut Connection, s: &mut Stream) -> Result<(), End> {
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
            r = s.end_rx.changed() => { if r.is_err() { return Err(End::Stop); } }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = wait_stop(&mut stop) => return Err(End::Stop),
        }
        if s.last_traffic.elapsed() >= idle_limit && self.st.binlog.end() <= pos {
            // Keeps the idle connection from timing out on the peer's side.
            conn.request(cmd::ACTIVE_TEST, &[]).await?;
            s.last_traffic = Instant::now();
        }
        Ok(())
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
        let done = self.pending.pop_front().expect("a pending record");
        if done.record.change == Change::Delete && !self.behind.is_empty() {
            self.behind.remove(&done.record.name);
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
        self.mark.set_position(done.end);
        self.progress_unpublished = true;
        self.unsaved += 1;
        if self.unsaved >= MARK_EVERY {
            self.save_mark_soon();
        }
    }

    /// Should this record go to the peer (§6.1)?
    fn wanted(&self, rec: &Record) -> bool {
        let m = &self.mark;
        match rec.origin {
            // A non-source peer gets the old files from its source.
            Origin::Here => m.need_sync_old || rec.timestamp >= m.until_timestamp,
            // A peer's changes go only to a new member copying the old files, and only
            // those that carry whole files or names.
            Origin::Peer => {
                m.need_sync_old
                    && !m.sync_old_done
                    && rec.timestamp <= m.until_timestamp
                    && !matches!(
                        rec.change,
                        Change::Append { .. } | Change::Modify { .. } | Change::Truncate { .. }
                    )
            }
        }
    }

    fn local_path(&self, name: &str) -> Option<PathBuf> {
        let n = RemoteName::parse(name).ok()?;
        self.st.store.resolve(&n).ok()
    }

    /// Adds the request of a create, update or delete to `out` (large content is
    /// streamed straight to the connection); says what its reply will mean.
    async fn queue_whole(
        &self,
        conn: &mut Connection,
        rec: &Record,
        out: &mut Vec<u8>,
    ) -> Result<Flight, End> {
        let command = match rec.change {
            Change::Delete => {
                let req = self.delete(rec.timestamp, &rec.name);
                let body = req.body();
                out.extend_from_slice(&Header::request(req.cmd(), body.len()).encode());
                out.extend_from_slice(&body);
                return Ok(Flight::Awaiting(Awaiting::Delete));
            }
            Change::Create => cmd::SYNC_CREATE_FILE,
            _ => cmd::SYNC_UPDATE_FILE,
        };
        Ok(
            match self
                .put_file(conn, out, rec.timestamp, &rec.name, command)
                .await?
            {
                Put::Queued { size } => {
                    self.st
                        .stats
                        .add_bytes(counter::TOTAL_SYNC_OUT_BYTES, size, true);
                    Flight::Awaiting(Awaiting::File)
                }
                Put::Not(outcome) => Flight::Done(outcome),
            },
        )
    }

    /// Puts a 16 / 18 request with the whole current content of local file `name` in
    /// `out` (small files) or on the wire (large ones, after `out`). A file gone since
    /// its record is skipped (its delete or rename record follows); a small file that
    /// does not match its ID is not spread (rejected, and healed here from a peer).
    async fn put_file(
        &self,
        conn: &mut Connection,
        out: &mut Vec<u8>,
        timestamp: i64,
        name: &str,
        command: u8,
    ) -> Result<Put, End> {
        let Some(path) = self.local_path(name) else {
            return Ok(Put::Not(Outcome::Skipped));
        };
        let Ok(remote) = RemoteName::parse(name) else {
            return Ok(Put::Not(Outcome::Skipped));
        };
        // A trunk-stored file is sent from its slot, while the slot still holds it.
        let stored = match crate::handlers::open_stored(&remote, &path) {
            Ok(s) => s,
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    warn!("cannot open {}: {e}; record skipped", path.display());
                }
                return Ok(Put::Not(Outcome::Skipped));
            }
        };
        let (mut file, start, size) = (stored.file, stored.start, stored.size);
        let head = SyncFileHead {
            filename_len: name.len(),
            file_size: size,
            timestamp: timestamp as i32,
            group: self.st.cfg.group_name.clone(),
        }
        .encode(name);
        let request_start = out.len();
        if let Some(inline) = put_content(conn, out, command, &head, &mut file, start, size).await?
        {
            if let Err(why) = integrity::check(&remote, &out[inline..]) {
                out.truncate(request_start);
                self.st.integrity.report(name, &why);
                return Ok(Put::Not(Outcome::Rejected));
            }
        }
        Ok(Put::Queued { size })
    }

    /// 16 / 18 with the whole current content of local file `name`, on its own.
    async fn send_file(
        &self,
        conn: &mut Connection,
        rec: &Record,
        name: &str,
        command: u8,
    ) -> Result<Outcome, End> {
        let mut out = Vec::new();
        match self
            .put_file(conn, &mut out, rec.timestamp, name, command)
            .await?
        {
            Put::Not(outcome) => Ok(outcome),
            Put::Queued { size } => {
                flush(conn, &mut out).await?;
                let status = reply_status(conn).await?;
                self.st
                    .stats
                    .add_bytes(counter::TOTAL_SYNC_OUT_BYTES, size, status == 0);
                match status {
                    0 | errno::EEXIST => Ok(Outcome::Applied),
                    s => self.refused(rec, s),
                }
            }
        }
    }

    fn delete(&self, timestamp: i64, name: &str) -> SyncDelete {
        SyncDelete {
            timestamp: timestamp as i32,
            group: self.st.cfg.group_name.clone(),
            filename: name.to_string(),
        }
    }

    fn two_names(&self, timestamp: i64, first: &str, second: &str) -> SyncTwoNames {
        SyncTwoNames {
            timestamp: timestamp as i32,
            group: self.st.cfg.group_name.clone(),
            first: first.to_string(),
            second: second.to_string(),
        }
    }

    /// A record that goes on its own (append, modify, truncate, rename, link), with its
    /// fallbacks when the peer's copy is not what the change needs.
    async fn sync_one(&mut self, conn: &mut Connection, rec: &Record) -> Result<Outcome, End> {
        match &rec.change {
            Change::Append { offset, length } => {
                self.send_range(conn, rec, *offset, *length, cmd::SYNC_APPEND_FILE)
                    .await
            }
            Change::Modify { offset, length } => {
                self.send_range(conn, rec, *offset, *length, cmd::SYNC_MODIFY_FILE)
                    .await
            }
            Change::Truncate { old_size, new_size } => {
                self.send_truncate(conn, rec, *old_size, *new_size).await
            }
            Change::Rename { from } => {
                if self.behind.remove(from) {
                    return self.send_renamed_whole(conn, rec, from).await;
                }
                let req = SyncRename(self.two_names(rec.timestamp, &rec.name, from));
                match status_of(conn, &req).await? {
                    0 | errno::EEXIST => Ok(Outcome::Applied),
                    errno::ENOENT => {
                        self.send_file(conn, rec, &rec.name, cmd::SYNC_CREATE_FILE)
                            .await
                    }
                    s => self.refused(rec, s),
                }
            }
            Change::Link { target } => {
                let req = SyncCreateLink(self.two_names(rec.timestamp, &rec.name, target));
                match status_of(conn, &req).await? {
                    0 | errno::EEXIST => Ok(Outcome::Applied),
                    errno::ENOENT => Ok(Outcome::Skipped),
                    s => self.refused(rec, s),
                }
            }
            Change::Create | Change::Update | Change::Delete => {
                unreachable!("whole-file changes are queued, not sent one by one")
            }
        }
    }

    /// 36 TRUNCATE. The truncate may not have been made (a crash right after its
    /// record, which comes first), or the file has changed since: then the peer gets the
    /// whole file as it is.
    async fn send_truncate(
        &self,
        conn: &mut Connection,
        rec: &Record,
        old_size: u64,
        new_size: u64,
    ) -> Result<Outcome, End> {
        if let Some(path) = self.local_path(&rec.name) {
            drop(self.st.appenders.lock(&path).await);
            if fs::metadata(&path).is_ok_and(|m| m.len() != new_size) {
                return self
                    .send_file(conn, rec, &rec.name, cmd::SYNC_UPDATE_FILE)
                    .await;
            }
        }
        let req = SyncTruncate {
            old_size,
            new_size,
            timestamp: rec.timestamp as i32,
            group: self.st.cfg.group_name.clone(),
            filename: rec.name.clone(),
        };
        match status_of(conn, &req).await? {
            // EEXIST: the peer's size is not the one before the truncate; done, as for
            // upstream senders (see `send_range`).
            0 | errno::EEXIST => Ok(Outcome::Applied),
            errno::ENOENT => {
                self.send_file(conn, rec, &rec.name, cmd::SYNC_UPDATE_FILE)
                    .await
            }
            s => self.refused(rec, s),
        }
    }

    /// A peer's error reply: invalid requests are logged and skipped; anything else
    /// (no space, I/O error) is retried after a pause.
    fn refused(&self, rec: &Record, status: u8) -> Result<Outcome, End> {
        if status == errno::EINVAL {
            warn!(
                "{}:{} rejected {rec} as invalid; skipped",
                self.peer.ip, self.peer.port
            );
            return Ok(Outcome::Rejected);
        }
        Err(End::Broken(Error::Status(status)))
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
        match status_of(conn, &self.delete(rec.timestamp, old)).await? {
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
        let mut out = Vec::new();
        put_content(conn, &mut out, command, &head, &mut file, offset, length).await?;
        flush(conn, &mut out).await?;
        match reply_status(conn).await? {
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
}

/// The state of [`Dispatcher::stream`] on one connection.
struct Stream {
    /// Requests on the wire at most.
    window: usize,
    /// `flight[i]` describes `pending[i]`, for the records already handled.
    flight: VecDeque<Flight>,
    /// Requests queued, not written yet.
    out: Vec<u8>,
    end_rx: watch::Receiver<crate::binlog::BinlogPos>,
    last_traffic: Instant,
}

/// What [`Dispatcher::put_file`] did.
enum Put {
    /// The request (with `size` bytes of content) is queued or sent; its reply decides.
    Queued { size: u64 },
    /// No request: the record is done with this outcome.
    Not(Outcome),
}

/// Puts a request (`head`, then `len` bytes of `file` from `offset`) after `out`:
/// content up to [`INLINE_MAX`] goes into `out` (returns where it starts there), larger
/// content is streamed to the connection after `out` is written.
async fn put_content(
    conn: &mut Connection,
    out: &mut Vec<u8>,
    command: u8,
    head: &[u8],
    file: &mut File,
    offset: u64,
    len: u64,
) -> Result<Option<usize>, End> {
    let header = Header {
        pkg_len: (head.len() as u64 + len) as i64,
        cmd: command,
        status: 0,
    };
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(head);
    if len <= INLINE_MAX {
        let start = out.len();
        out.resize(start + len as usize, 0);
        // Shrunk under us (the request head is already queued): the connection starts
        // over.
        read_at(file, offset, &mut out[start..])?;
        return Ok(Some(start));
    }
    flush(conn, out).await?;
    send_range(conn, file, offset, len)
        .await
        .map_err(|e| End::Broken(Error::Io(e.into_io())))?;
    Ok(None)
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
async fn status_of(conn: &mut Connection, req: &impl Request) -> Result<u8, End> {
    let body = req.body();
    conn.send(Header::request(req.cmd(), body.len()), &body)
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
