//! The receiving side of replication (§3.6): 9 REPORT_SERVER_ID, 16 SYNC_CREATE_FILE,
//! 17 SYNC_DELETE_FILE, 18 SYNC_UPDATE_FILE, 19 SYNC_CREATE_LINK, 25 SYNC_APPEND_FILE,
//! 35 SYNC_MODIFY_FILE, 37 SYNC_TRUNCATE_FILE and 40 SYNC_RENAME_FILE.
//!
//! Every name is checked like a client's ([`locate`]), so a peer cannot write outside
//! the store. Whole files arrive in a temporary file that is renamed into place; each
//! applied change is logged in lowercase with the source's timestamp, and the newest
//! timestamp per source is kept for 89 SYNC_REPORT.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use fdfs_proto::errno;
use fdfs_proto::fileid::RemoteName;
use fdfs_proto::msg::{
    decode_server_id, SyncDelete, SyncFileHead, SyncRangeHead, SyncTruncate, SyncTwoNames,
    PIPELINE_ANSWER, PIPELINE_ASK,
};
use fdfs_proto::trunk::{Slot, SlotHeader, SLOT_HEADER_LEN};
use fdfs_runtime::{unix_now, Connection};

use super::{locate, Fail, Handled};
use crate::binlog::{Change, Record};
use crate::state::Storage;
use crate::stats::counter;
use crate::store::NewFile;
use crate::transfer::{discard, receive_into};

/// A replication connection's state: the peer it replicates from (set by 9
/// REPORT_SERVER_ID) and the binlog records of changes applied but not written yet.
///
/// A sending peer pipelines its requests, so a burst of them is handled from the
/// connection's read-ahead buffer; their replies are queued and their records gathered
/// here. The server loop writes the records (one write) and then the replies (one
/// write) before it waits for more input: a peer never hears of a change that is not
/// in the binlog.
///
/// With `fsync_before_reply`, whole files of a burst are flushed together: each copy
/// waits, still unnamed, in `held` (and every reply after it waits with it, to keep
/// their order) until [`SyncSession::settle`] flushes them side by side, names them and
/// queues the replies. A burst of copies then costs about one flush, not one each, so
/// replication keeps pace with uploads that are flushed concurrently.
#[derive(Default)]
pub struct SyncSession {
    pub src: Option<String>,
    records: Vec<u8>,
    /// Directories that gained or lost a name since the last binlog write (flushed
    /// with it under `fsync_before_reply`).
    dirs: Vec<std::path::PathBuf>,
    /// The replies of the burst from the first copy held back on, in request order.
    held: Vec<Held>,
    /// Trunk slots written by this burst, flushed with its binlog records (one flush
    /// per trunk file for the whole burst).
    trunk_slots: Vec<crate::trunk::Written>,
}

/// A reply held back behind a copy that waits for its flush (with the source timestamp
/// it confirms as received, told once the copies before it are named).
enum Held {
    Reply(u8, Option<i32>),
    Copy(Copy),
}

/// Most copies held at once (our senders keep at most this many requests in flight).
const HELD_MAX: usize = 128;

/// A received whole file, flushed with the others of its burst before it is named.
struct Copy {
    temp: NewFile,
    path: std::path::PathBuf,
    filename: String,
    timestamp: i32,
    size: u64,
    update: bool,
}

impl Copy {
    fn change(&self) -> Change {
        if self.update {
            Change::Update
        } else {
            Change::Create
        }
    }
}

impl SyncSession {
    /// Gathers the record of a change a peer sent (written before the replies go).
    fn log(&mut self, timestamp: i32, name: &str, change: Change) {
        Record::from_peer(timestamp as i64, name, change).write_to(&mut self.records);
    }

    pub fn has_unwritten(&self) -> bool {
        !self.records.is_empty()
    }

    /// Whether replies wait for held copies (see [`SyncSession::settle`]).
    pub fn holds_replies(&self) -> bool {
        !self.held.is_empty()
    }

    /// Queues a reply, or holds it behind the held copies.
    pub fn reply(&mut self, conn: &mut Connection, status: u8) {
        if self.held.is_empty() {
            conn.queue_reply(status, &[]);
        } else {
            self.held.push(Held::Reply(status, None));
        }
    }

    /// Success of a change already here (or deliberately not applied) up to the
    /// source's `timestamp`: recorded as received once the replies before it are.
    fn received(&mut self, st: &Storage, conn: &mut Connection, timestamp: i32) {
        if self.held.is_empty() {
            applied(st, self, timestamp);
            conn.queue_reply(0, &[]);
        } else {
            self.held.push(Held::Reply(0, Some(timestamp)));
        }
    }

    fn holds_copy_of(&self, name: &str) -> bool {
        self.held
            .iter()
            .any(|h| matches!(h, Held::Copy(c) if c.filename == name))
    }

    fn touched(&mut self, dir: Option<&std::path::Path>) {
        if let Some(d) = dir {
            if !self.dirs.iter().any(|x| x == d) {
                self.dirs.push(d.to_path_buf());
            }
        }
    }

    /// Flushes the held copies side by side, names them in order, and queues every held
    /// reply in request order. Records of the named copies join the session's, to be
    /// written (and flushed) before the replies go out.
    pub async fn settle(&mut self, st: &Storage, conn: &mut Connection) {
        let held = std::mem::take(&mut self.held);
        // One blocking task flushes every copy: their writeback is started together,
        // so the disk takes them side by side, and the burst costs one hand-off.
        let files: io::Result<Vec<File>> = held
            .iter()
            .filter_map(|h| match h {
                Held::Copy(c) => Some(c.temp.file.try_clone()),
                Held::Reply(..) => None,
            })
            .collect();
        let flushed = match files {
            Ok(files) => crate::durability::blocking(move || Ok(flush_together(&files))).await,
            Err(e) => Err(e),
        };
        let mut flushed = match flushed {
            Ok(each) => each.into_iter(),
            Err(e) => {
                let n = held.iter().filter(|h| matches!(h, Held::Copy(_))).count();
                let kind = e.kind();
                tracing::error!("cannot flush copies: {e}");
                (0..n)
                    .map(|_| Err(io::Error::from(kind)))
                    .collect::<Vec<_>>()
                    .into_iter()
            }
        };
        for h in held {
            let status = match h {
                Held::Reply(status, timestamp) => {
                    if let Some(ts) = timestamp {
                        applied(st, self, ts);
                    }
                    status
                }
                Held::Copy(copy) => match flushed.next().expect("a copy has its flush") {
                    Ok(()) => self.name_copy(st, copy),
                    Err(e) => {
                        tracing::error!("cannot flush a copy of {}: {e}", copy.filename);
                        errno::from_io(&e)
                    }
                },
            };
            conn.queue_reply(status, &[]);
        }
    }

    /// Gives a received (and, when asked for, flushed) copy its name; the reply status.
    fn name_copy(&mut self, st: &Storage, mut copy: Copy) -> u8 {
        let committed = if copy.update {
            copy.temp.commit_replace(&copy.path)
        } else {
            match copy.temp.commit_no_replace(&copy.path) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if fs::metadata(&copy.path).is_ok_and(|m| m.is_file() && m.len() == copy.size) {
                        // Already here (a replay after a restart). Its record is written
                        // again: the first one may have been lost with the replies.
                        self.log(copy.timestamp, &copy.filename, copy.change());
                        applied(st, self, copy.timestamp);
                        return errno::EEXIST;
                    }
                    copy.temp.commit_replace(&copy.path)
                }
                other => other,
            }
        };
        if let Err(e) = committed {
            return errno::from_io(&e);
        }
        self.touched(copy.path.parent());
        self.log(copy.timestamp, &copy.filename, copy.change());
        applied(st, self, copy.timestamp);
        0
    }

    /// Writes the gathered records to the binlog; with `fsync_before_reply`, flushes
    /// them and the directories they changed, and before them the trunk slots the
    /// burst wrote, all in one blocking task (the replies are sent after this).
    pub async fn write_binlog(&mut self, st: &Storage) -> io::Result<()> {
        if self.records.is_empty() {
            return Ok(());
        }
        let slots = std::mem::take(&mut self.trunk_slots);
        let dirs = std::mem::take(&mut self.dirs);
        if !st.cfg.fsync_before_reply {
            let r = st.binlog.append_records(&self.records);
            self.records.clear();
            return r.map(|_| ());
        }
        let records = std::mem::take(&mut self.records);
        let binlog = st.binlog.clone();
        let records = crate::durability::blocking(move || {
            // The slots' content before the records that say it is here.
            crate::trunk::flush_all(slots)?;
            let pos = binlog.append_records(&records)?;
            for d in &dirs {
                crate::durability::sync_dir(d)?;
            }
            binlog.sync_through(pos)?;
            Ok(records)
        })
        .await?;
        // (The buffer is kept for the next burst.)
        self.records = records;
        self.records.clear();
        Ok(())
    }
}

/// Flushes the content of `files` (blocking): the writeback of all of them is started
/// first, then each is waited for. One result per file, in order.
fn flush_together(files: &[File]) -> Vec<io::Result<()>> {
    for f in files {
        // A failure here shows again in the `sync_data` below.
        let _ = crate::sys::start_writeback(f);
    }
    files
        .iter()
        .map(|f| crate::durability::counted(f.sync_data()))
        .collect()
}

fn applied(st: &Storage, sess: &SyncSession, timestamp: i32) {
    if let Some(id) = &sess.src {
        st.sync.note_received(id, timestamp);
    }
    st.stats
        .last_sync_update
        .store(unix_now(), Ordering::Relaxed);
}

/// Success: the reply is queued, or held (see [`SyncSession`]).
fn ok(conn: &mut Connection, sess: &mut SyncSession) -> Handled {
    sess.reply(conn, 0);
    Ok(())
}

async fn read_name(conn: &mut Connection, len: usize) -> Result<String, Fail> {
    let raw = conn.read_body(len).await.map_err(|_| Fail::Close)?;
    String::from_utf8(raw).map_err(|_| Fail::Reply(errno::EINVAL))
}

fn io_fail(e: io::Error) -> Fail {
    Fail::Reply(errno::from_io(&e))
}

/// 9: who replicates on this connection. A sender that asks (header status
/// [`PIPELINE_ASK`]) is told that its requests may be pipelined; upstream senders do not
/// ask and get the empty reply they expect.
pub async fn report_server_id(
    conn: &mut Connection,
    header_status: u8,
    body: &[u8],
    sess: &mut SyncSession,
) -> Handled {
    let id = decode_server_id(body).map_err(|_| Fail::Reply(errno::EINVAL))?;
    sess.src = Some(id);
    let answer = if header_status == PIPELINE_ASK {
        PIPELINE_ANSWER
    } else {
        &[]
    };
    conn.queue_reply(0, answer);
    Ok(())
}

/// 16 / 18: a whole file. With header status EEXIST the content is left out and the
/// sender only wants to know the file is here.
pub async fn create_or_update(
    st: &Storage,
    conn: &mut Connection,
    header_status: u8,
    body_len: u64,
    update: bool,
    sess: &mut SyncSession,
) -> Handled {
    if body_len < SyncFileHead::LEN as u64 {
        return Err(Fail::Reply(errno::EINVAL));
    }
    let mut raw = [0u8; SyncFileHead::LEN];
    conn.read_exact(&mut raw).await.map_err(|_| Fail::Close)?;
    let head = SyncFileHead::decode(&raw).map_err(|_| Fail::Reply(errno::EINVAL))?;
    let no_content = header_status == errno::EEXIST;
    let content = if no_content { 0 } else { head.file_size };
    if body_len != (SyncFileHead::LEN + head.filename_len) as u64 + content {
        return Err(Fail::Reply(errno::EINVAL));
    }
    let filename = read_name(conn, head.filename_len).await?;
    let path = match locate(st, &head.group, &filename) {
        Ok((_, p)) => p,
        Err(e) => return Err(Fail::Reply(e)),
    };
    if st
        .tombstones
        .deleted_since(&filename, head.timestamp as i64)
    {
        // A replay of a copy made before this storage deleted the file: keep it deleted.
        tracing::info!("{filename}: deleted here after this copy was made; copy ignored");
        discard(conn, content).await.map_err(|_| Fail::Close)?;
        sess.received(st, conn, head.timestamp);
        return Ok(());
    }
    let trunk_slot = RemoteName::parse(&filename)
        .ok()
        .and_then(|n| Some((Slot::of(&n)?, SlotHeader::expected(&n).ok()?)));
    if let Some((slot, expected)) = trunk_slot {
        return copy_into_trunk(st, conn, &head, filename, slot, expected, no_content, sess).await;
    }
    if no_content {
        if !path.is_file() {
            return Err(Fail::Reply(errno::ENOENT));
        }
        sess.received(st, conn, head.timestamp);
        return Ok(());
    }
    let dir = path.parent().expect("file has a directory");
    let mut temp = match st.store.new_file(dir).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("cannot create a file in {}: {e}", dir.display());
            return Err(Fail::Reply(errno::from_io(&e)));
        }
    };
    receive_into(conn, &mut temp.file, head.file_size, None).await?;
    st.stats
        .add_bytes(counter::TOTAL_SYNC_IN_BYTES, head.file_size, true);
    // The copy keeps the source's time.
    if head.timestamp > 0 {
        let _ = temp
            .file
            .set_modified(UNIX_EPOCH + Duration::from_secs(head.timestamp as u64));
    }
    let copy = Copy {
        temp,
        path,
        filename,
        timestamp: head.timestamp,
        size: head.file_size,
        update,
    };
    if st.cfg.fsync_before_reply {
        // Flushed and named with the rest of its burst (see `SyncSession::settle`).
        sess.held.push(Held::Copy(copy));
        return Ok(());
    }
    match sess.name_copy(st, copy) {
        0 => ok(conn, sess),
        status => Err(Fail::Reply(status)),
    }
}

/// 16 / 18 of a trunk-stored file: the content goes into the same slot of this
/// storage's copy of the trunk file (created if it is not here yet), then the header,
/// rebuilt from the name. A slot that already holds the file takes nothing (EEXIST, as
/// upstream answers).
#[allow(clippy::too_many_arguments)]
async fn copy_into_trunk(
    st: &Storage,
    conn: &mut Connection,
    head: &SyncFileHead,
    filename: String,
    slot: Slot,
    expected: SlotHeader,
    no_content: bool,
    sess: &mut SyncSession,
) -> Handled {
    let content = if no_content { 0 } else { head.file_size };
    // The content must fit its slot: a longer one would run into the next file.
    if head.file_size + SLOT_HEADER_LEN as u64 > slot.size as u64
        || head.file_size != expected.file_size as u64
    {
        return Err(Fail::Reply(errno::EINVAL));
    }
    let io = st
        .trunk
        .slot_io(st, &slot)
        .ok_or(Fail::Reply(errno::EINVAL))?;
    // The trunk file's shared handle once it is open: the small reads and writes of a
    // copy go through it here, without a hand-off to the blocking threads.
    let cached = io.cached();
    let here = match &cached {
        Some(w) => w.holds(&expected),
        None => {
            let probe = io.clone();
            crate::durability::blocking(move || Ok(probe.holds(&expected)))
                .await
                .map_err(io_fail)?
        }
    };
    if no_content {
        if !here {
            return Err(Fail::Reply(errno::ENOENT));
        }
        sess.received(st, conn, head.timestamp);
        return Ok(());
    }
    if here {
        discard(conn, content).await.map_err(|_| Fail::Close)?;
        sess.log(head.timestamp, &filename, Change::Create);
        applied(st, sess, head.timestamp);
        sess.reply(conn, errno::EEXIST);
        return Ok(());
    }
    let mut file = match cached {
        Some(w) => w,
        None => {
            let opener = io.clone();
            crate::durability::blocking(move || opener.writer())
                .await
                .map_err(io_fail)?
        }
    };
    // No name is served from the slot while its new content comes in.
    file.clear_header().map_err(io_fail)?;
    receive_into(conn, &mut file, head.file_size, None).await?;
    st.stats
        .add_bytes(counter::TOTAL_SYNC_IN_BYTES, head.file_size, true);
    let written = file.seal(&expected).map_err(io_fail)?;
    // Flushed with the burst's records (`SyncSession::write_binlog`), before its replies.
    sess.trunk_slots.push(written);
    sess.log(head.timestamp, &filename, Change::Create);
    sess.received(st, conn, head.timestamp);
    Ok(())
}

/// Whether a request may be handled while copies are held: another whole file of a
/// name not held. Anything else sees the held copies named first.
pub fn may_join_held(sess: &SyncSession, command: u8, buffered: &[u8]) -> bool {
    use fdfs_proto::cmd;
    if command != cmd::SYNC_CREATE_FILE && command != cmd::SYNC_UPDATE_FILE
        || sess.held.len() >= HELD_MAX
    {
        return false;
    }
    // The name follows the fixed head; an unreadable one is handled (and refused) in turn.
    let name = buffered
        .get(..SyncFileHead::LEN)
        .and_then(|raw| SyncFileHead::decode(raw).ok())
        .and_then(|h| buffered.get(SyncFileHead::LEN..SyncFileHead::LEN + h.filename_len))
        .and_then(|n| std::str::from_utf8(n).ok());
    match name {
        Some(n) => !sess.holds_copy_of(n),
        None => false,
    }
}

/// 25 / 35: `length` bytes written at `offset` of an existing file.
pub async fn append_or_modify(
    st: &Storage,
    conn: &mut Connection,
    body_len: u64,
    modify: bool,
    sess: &mut SyncSession,
) -> Handled {
    if body_len < SyncRangeHead::LEN as u64 {
        return Err(Fail::Reply(errno::EINVAL));
    }
    let mut raw = [0u8; SyncRangeHead::LEN];
    conn.read_exact(&mut raw).await.map_err(|_| Fail::Close)?;
    let head = SyncRangeHead::decode(&raw).map_err(|_| Fail::Reply(errno::EINVAL))?;
    if body_len != (SyncRangeHead::LEN + head.filename_len) as u64 + head.length {
        return Err(Fail::Reply(errno::EINVAL));
    }
    let filename = read_name(conn, head.filename_len).await?;
    let path = match locate(st, &head.group, &filename) {
        Ok((_, p)) => p,
        Err(e) => return Err(Fail::Reply(e)),
    };
    let mut file = match OpenOptions::new().write(true).open(&path) {
        Ok(f) => f,
        Err(e) => return Err(Fail::Reply(errno::from_io(&e))),
    };
    let size = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return Err(Fail::Reply(errno::from_io(&e))),
    };
    if head.offset > size {
        // A change before this one is missing here: the sender sends the whole file.
        return Err(Fail::Reply(errno::ENOENT));
    }
    if let Err(e) = file.seek(SeekFrom::Start(head.offset)) {
        return Err(Fail::Reply(errno::from_io(&e)));
    }
    receive_into(conn, &mut file, head.length, None).await?;
    st.durable_data(&file).await.map_err(io_fail)?;
    st.stats
        .add_bytes(counter::TOTAL_SYNC_IN_BYTES, head.length, true);
    let (offset, length) = (head.offset, head.length);
    let change = if modify {
        Change::Modify { offset, length }
    } else {
        Change::Append { offset, length }
    };
    sess.log(head.timestamp, &filename, change);
    applied(st, sess, head.timestamp);
    ok(conn, sess)
}

pub async fn delete(
    st: &Storage,
    conn: &mut Connection,
    body: &[u8],
    sess: &mut SyncSession,
) -> Handled {
    let req = SyncDelete::decode(body).map_err(|_| Fail::Reply(errno::EINVAL))?;
    let (name, path) = locate(st, &req.group, &req.filename).map_err(Fail::Reply)?;
    // Remembered even when the file is not here yet: its copy may still be on the way.
    st.tombstones
        .record(name.full, req.timestamp as i64, unix_now());
    match super::remove_stored(st, &name, &path).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            applied(st, sess, req.timestamp);
            return Err(Fail::Reply(errno::ENOENT));
        }
        Err(e) => return Err(io_fail(e)),
    }
    sess.touched(path.parent());
    if !name.full.ends_with("-m") {
        let mut meta = path.into_os_string();
        meta.push("-m");
        let _ = fs::remove_file(meta);
    }
    sess.log(req.timestamp, name.full, Change::Delete);
    applied(st, sess, req.timestamp);
    ok(conn, sess)
}

pub async fn truncate(
    st: &Storage,
    conn: &mut Connection,
    body: &[u8],
    sess: &mut SyncSession,
) -> Handled {
    let req = SyncTruncate::decode(body).map_err(|_| Fail::Reply(errno::EINVAL))?;
    let (_, path) = locate(st, &req.group, &req.filename).map_err(Fail::Reply)?;
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(io_fail)?;
    file.set_len(req.new_size).map_err(io_fail)?;
    st.durable_data(&file).await.map_err(io_fail)?;
    let change = Change::Truncate {
        old_size: req.old_size,
        new_size: req.new_size,
    };
    sess.log(req.timestamp, &req.filename, change);
    applied(st, sess, req.timestamp);
    ok(conn, sess)
}

/// 40: appender renamed to its normal name (first = new, second = old).
pub async fn rename(
    st: &Storage,
    conn: &mut Connection,
    body: &[u8],
    sess: &mut SyncSession,
) -> Handled {
    let req = SyncTwoNames::decode(body).map_err(|_| Fail::Reply(errno::EINVAL))?;
    let (_, new_path) = locate(st, &req.group, &req.first).map_err(Fail::Reply)?;
    let (_, old_path) = locate(st, &req.group, &req.second).map_err(Fail::Reply)?;
    match fs::rename(&old_path, &new_path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if new_path.is_file() {
                applied(st, sess, req.timestamp);
                return ok(conn, sess);
            }
            return Err(Fail::Reply(errno::ENOENT));
        }
        Err(e) => return Err(io_fail(e)),
    }
    sess.touched(new_path.parent());
    let from = req.second.clone();
    sess.log(req.timestamp, &req.first, Change::Rename { from });
    applied(st, sess, req.timestamp);
    ok(conn, sess)
}

/// 19: a symbolic link (first = link, second = its target).
pub async fn create_link(
    st: &Storage,
    conn: &mut Connection,
    body: &[u8],
    sess: &mut SyncSession,
) -> Handled {
    let req = SyncTwoNames::decode(body).map_err(|_| Fail::Reply(errno::EINVAL))?;
    let (_, link) = locate(st, &req.group, &req.first).map_err(Fail::Reply)?;
    let (_, target) = locate(st, &req.group, &req.second).map_err(Fail::Reply)?;
    if fs::symlink_metadata(&link).is_ok() {
        return Err(Fail::Reply(errno::EEXIST));
    }
    if File::open(&target).is_err() {
        return Err(Fail::Reply(errno::ENOENT));
    }
    let make = || std::os::unix::fs::symlink(&target, &link);
    match make() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = link.parent().expect("a link in a directory");
            st.store.make_dir(dir).await.map_err(io_fail)?;
            make().map_err(io_fail)?;
        }
        r => r.map_err(io_fail)?,
    }
    sess.touched(link.parent());
    let target = req.second.clone();
    sess.log(req.timestamp, &req.first, Change::Link { target });
    applied(st, sess, req.timestamp);
    ok(conn, sess)
}
