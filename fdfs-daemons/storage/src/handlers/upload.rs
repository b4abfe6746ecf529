//! 11 UPLOAD_FILE, 23 UPLOAD_APPENDER_FILE and 21 UPLOAD_SLAVE_FILE.
//!
//! Content goes to a temporary file in its final directory while its CRC32 is computed;
//! only when it is complete does it get its real name (which encodes size, CRC32 and
//! mtime), so a reader never sees a partial file.

use std::path::Path;

use fdfs_proto::errno;
use fdfs_proto::fileid::{
    appender_size_field, ends_like_metadata, formatted_ext, normal_size_field, remote_name,
    PackedName, RemoteName, BASE64_LEN, FEXT_LEN, NORMAL_NAME_LEN, SIZE_FLAG_TRUNK,
};
use fdfs_proto::msg::{SlaveHead, StoredFile, UploadHead};
use fdfs_proto::trunk::{SlotHeader, SLOT_FILE};
use fdfs_runtime::{unix_now, Connection};
use rand::Rng;

use super::{binlog_failed, flush_failed, Fail, Handled};
use crate::appenders::Version;
use crate::binlog::{BinlogPos, Change, Record};
use crate::durability::{blocking, SealError};
use crate::state::Storage;
use crate::stats::counter;
use crate::store::NewFile;
use crate::transfer::{receive_into, TransferError};
use crate::trunk::flusher::FlushFailed;

/// Logs a failed write in `dir`, taking its store path out of service if the disk is
/// broken; returns the errno for the client.
fn disk_failed(st: &Storage, dir: &Path, e: std::io::Error) -> u8 {
    st.store.note_error_in(dir, &e);
    tracing::error!("cannot store a file in {}: {e}", dir.display());
    errno::from_io(&e)
}

/// Receives `size` bytes into `temp`, a new unnamed file in `dir`; returns it with its
/// CRC32 and mtime (not yet flushed: [`Storage::seal`] does that before naming it).
pub(crate) async fn receive_temp(
    st: &Storage,
    conn: &mut Connection,
    mut temp: NewFile,
    dir: &Path,
    size: u64,
) -> Result<(NewFile, u32, i64), Fail> {
    let mut crc = crc32fast::Hasher::new();
    match receive_into(conn, &mut temp.file, size, Some(&mut crc)).await {
        Ok(()) => {}
        Err(TransferError::Net(_)) => return Err(Fail::Close),
        Err(TransferError::Disk(e)) => return Err(Fail::Reply(disk_failed(st, dir, e))),
    }
    // The name carries this storage's time, and the file's modification time is that
    // same second (as upstream, where the name is taken from it): set from our clock
    // rather than left to the file system's.
    let now = unix_now();
    temp.file
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(now.max(0) as u64))
        .map_err(|e| Fail::Reply(disk_failed(st, dir, e)))?;
    Ok((temp, crc.finalize(), now))
}

/// How a failed [`Storage::seal`] of a file in `dir` is answered.
fn seal_failed(st: &Storage, dir: &Path, e: SealError) -> Fail {
    match e {
        SealError::Content(e) => Fail::Reply(disk_failed(st, dir, e)),
        SealError::Name(f) => f,
        SealError::Names(e) => flush_failed(e),
        SealError::Task(why) => flush_failed(std::io::Error::other(why)),
    }
}

/// With `sync_wait_replicas = N`, holds the reply until N peers have the file (or the
/// timeout passed: then the upload still succeeds, with a warning).
async fn wait_replicas(st: &Storage, pos: BinlogPos, name: &str) {
    let want = st.cfg.sync_wait_replicas;
    if want == 0 {
        return;
    }
    if !st
        .sync
        .wait_replicas(pos, want, st.cfg.sync_wait_timeout)
        .await
    {
        tracing::warn!(
            "{name}: fewer than {want} peer(s) confirmed it within {} ms; answering anyway",
            st.cfg.sync_wait_timeout.as_millis()
        );
    }
}

/// The reply to an upload of a new file named `remote` (recorded at `pos`), once the
/// peers `sync_wait_replicas` asks for have it.
async fn reply_stored(
    st: &Storage,
    conn: &mut Connection,
    pos: BinlogPos,
    remote: String,
) -> Handled {
    wait_replicas(st, pos, &remote).await;
    st.stats
        .last_source_update
        .store(unix_now(), std::sync::atomic::Ordering::Relaxed);
    let reply = StoredFile {
        group: st.cfg.group_name.clone(),
        filename: remote,
    };
    conn.reply(0, &reply.encode())
        .await
        .map_err(|_| Fail::Close)
}

fn random_digit() -> u8 {
    rand::thread_rng().gen_range(0..10)
}

pub async fn upload(st: &Storage, conn: &mut Connection, body_len: u64, appender: bool) -> Handled {
    // Appender creations count as uploads, as upstream does.
    let result = upload_inner(st, conn, body_len, appender).await;
    st.stats.record(counter::TOTAL_UPLOAD, result.is_ok());
    result
}

async fn upload_inner(
    st: &Storage,
    conn: &mut Connection,
    body_len: u64,
    appender: bool,
) -> Handled {
    if body_len < UploadHead::LEN as u64 {
        return Err(Fail::Reply(errno::EINVAL));
    }
    let mut raw = [0u8; UploadHead::LEN];
    conn.read_exact(&mut raw).await.map_err(|_| Fail::Close)?;
    let head = UploadHead::decode(&raw).map_err(|_| Fail::Reply(errno::EINVAL))?;
    if body_len != UploadHead::LEN as u64 + head.file_size {
        return Err(Fail::Reply(errno::EINVAL));
    }
    if !appender && st.trunk.takes(head.file_size) {
        return upload_to_trunk(st, conn, &head).await;
    }
    let local_ip = conn.local_addr().map_err(|_| Fail::Close)?.ip();
    let source = st.source(local_ip);
    // The directory is picked from a provisional name, as upstream does.
    let provisional = PackedName {
        source,
        timestamp: unix_now() as u32,
        size_field: normal_size_field(head.file_size, rand::random()),
        crc32: rand::random(),
    }
    .encode();
    let (high, low) = st.store.choose_subdir(&provisional);
    // A store path that turns out read-only or broken is taken out of service and the
    // next one tried, before any content is read.
    let mut tries = st.store.paths().len();
    let (reservation, dir, temp) = loop {
        let reservation = match st.store.choose_path(head.store_path_index, head.file_size) {
            Ok(r) => r,
            Err(e) => {
                if e == errno::ENOSPC {
                    tracing::warn!(
                        "no store path has {} bytes above reserved_storage_space",
                        head.file_size
                    );
                }
                return Err(Fail::Reply(e));
            }
        };
        let dir = st.store.dir(reservation.index, high, low);
        match st.store.new_file(&dir).await {
            Ok(t) => break (reservation, dir, t),
            Err(e) => {
                let code = disk_failed(st, &dir, e);
                tries -= 1;
                if tries == 0 || !st.store.paths()[reservation.index].is_failed() {
                    return Err(Fail::Reply(code));
                }
            }
        }
    };
    let path_index = reservation.index;
    let (temp, crc, mtime) = receive_temp(st, conn, temp, &dir, head.file_size).await?;
    drop(reservation);
    st.stats
        .add_bytes(counter::TOTAL_UPLOAD_BYTES, head.file_size, true);

    let fext = formatted_ext(&head.ext, random_digit);
    let file_size = head.file_size;
    let binlog = st.binlog.clone();
    let name_dir = dir.clone();
    let (temp, (base, remote), pos) = st
        .seal(temp, dir.clone(), move |temp| {
            let base = temp
                .commit_new_name(&name_dir, || {
                    let size_field = if appender {
                        appender_size_field(rand::random())
                    } else {
                        normal_size_field(file_size, rand::random())
                    };
                    let packed = PackedName {
                        source,
                        timestamp: mtime as u32,
                        size_field,
                        crc32: crc,
                    };
                    format!("{}{fext}", packed.encode())
                })
                .map_err(Fail::Reply)?;
            let remote = remote_name(path_index as u8, high, low, &base);
            let pos = binlog
                .append(&Record::here(mtime, remote.as_str(), Change::Create))
                .map_err(binlog_failed)?;
            Ok(((base, remote), pos))
        })
        .await
        .map_err(|e| seal_failed(st, &dir, e))?;
    if appender {
        // Later appends extend this CRC32 instead of reading the file again.
        if let Ok(meta) = temp.file.metadata() {
            st.appenders
                .remember_crc(&dir.join(&base), Version::of(&meta), crc);
        }
    }
    reply_stored(st, conn, pos, remote).await
}

/// An upload small enough for a trunk file (`use_trunk_file`): a slot from the trunk
/// server, checked free here, the content and then its header written into this
/// storage's copy of the trunk file (flushed with whatever else went into it
/// meanwhile), the slot confirmed, and the file named: 60 characters, the slot's
/// location among them. The name, the header and the record carry the time the upload
/// started, as upstream's do.
async fn upload_to_trunk(st: &Storage, conn: &mut Connection, head: &UploadHead) -> Handled {
    let started = unix_now();
    let local_ip = conn.local_addr().map_err(|_| Fail::Close)?.ip();
    let source = st.source(local_ip);
    let reservation = st
        .store
        .choose_path(head.store_path_index, head.file_size)
        .map_err(Fail::Reply)?;
    let path = reservation.index as u8;
    let mut tries = 0;
    let (io, mut file) = loop {
        tries += 1;
        let slot = st
            .trunk
            .alloc(st, path, head.file_size)
            .await
            .map_err(|e| {
                tracing::warn!(
                    "no trunk slot for {} bytes: errno {e} ({})",
                    head.file_size,
                    errno::describe(e)
                );
                Fail::Reply(e)
            })?;
        let io = st
            .trunk
            .slot_io(st, &slot)
            .ok_or(Fail::Reply(errno::EINVAL))?;
        let writer = match io.cached() {
            Some(w) => Ok(w),
            None => {
                let opener = io.clone();
                blocking(move || opener.writer()).await
            }
        };
        match writer.and_then(|w| w.slot_is_free().map(|free| (w, free))) {
            Ok((w, true)) => break (io, w),
            Ok((_, false)) => {
                // Handed out while a file holds it (a trunk server that had not heard
                // of that file): reported taken, so it stays out of use, and another
                // one asked for.
                tracing::warn!("trunk slot {slot:?} holds a file already; asking for another");
                let _ = st.trunk.confirm(st, &slot, errno::EEXIST).await;
                if tries >= crate::trunk::ALLOC_TRIES {
                    return Err(Fail::Reply(errno::EEXIST));
                }
            }
            Err(e) => {
                let code = trunk_failed(st, &io, e);
                let _ = st.trunk.confirm(st, &slot, code).await;
                return Err(Fail::Reply(code));
            }
        }
    };
    let slot = io.slot;
    let coming = st.cfg.fsync_before_reply.then(|| st.trunk.flusher.coming());
    let mut crc = crc32fast::Hasher::new();
    let received = receive_into(conn, &mut file, head.file_size, Some(&mut crc)).await;
    drop(reservation);
    if let Err(e) = received {
        let (fail, code) = match e {
            TransferError::Net(_) => (Fail::Close, errno::EIO),
            TransferError::Disk(e) => {
                let code = trunk_failed(st, &io, e);
                (Fail::Reply(code), code)
            }
        };
        give_back(st, &io, code).await;
        return Err(fail);
    }
    st.stats
        .add_bytes(counter::TOTAL_UPLOAD_BYTES, head.file_size, true);
    // The content is in place: the slot is ours (its header follows, with the name).
    if let Err(e) = st.trunk.confirm(st, &slot, 0).await {
        tracing::warn!(
            "trunk slot {slot:?}: the trunk server did not confirm it: errno {e} ({})",
            errno::describe(e)
        );
        let zero = io.clone();
        let _ = blocking(move || zero.zero_unclaimed()).await;
        return Err(Fail::Reply(e));
    }
    let crc = crc.finalize();
    let fext = formatted_ext(&head.ext, random_digit);
    let packed = PackedName {
        source,
        timestamp: started as u32,
        size_field: normal_size_field(head.file_size, rand::random()) | SIZE_FLAG_TRUNK,
        crc32: crc,
    };
    let base = format!("{}{}{fext}", packed.encode(), slot.location().encode());
    let remote = remote_name(slot.path, slot.high, slot.low, &base);
    let header = SlotHeader {
        kind: SLOT_FILE,
        alloc_size: slot.size,
        file_size: head.file_size as u32,
        crc32: crc,
        mtime: started as u32,
        ext: fext.as_bytes()[fext.len() - FEXT_LEN..]
            .try_into()
            .expect("a formatted extension is 7 bytes"),
    };
    // Header and record: two small writes into the page cache, made here. Then, with
    // `fsync_before_reply`, the flushes of the trunk file and the binlog, shared with
    // every upload waiting meanwhile (the trunk flusher's group commit). The record goes
    // in before the flushes, so the binlog flush that follows the trunk file's covers
    // it. (A record on disk before its content is harmless: the file is not served,
    // nor sent to peers, until its slot's header names it.)
    let written = match file.seal(&header) {
        Ok(w) => w,
        Err(e) => return Err(unwritten(st, &io, e).await),
    };
    let record = Record::here(started, remote.as_str(), Change::Create);
    let pos = match st.binlog.append(&record) {
        Ok(pos) => pos,
        Err(e) => return Err(unrecorded(st, &io, binlog_failed(e)).await),
    };
    if let Some(coming) = coming {
        match st
            .trunk
            .flusher
            .flush(coming, written, &st.binlog, pos)
            .await
        {
            Ok(()) => {}
            Err(FlushFailed::Binlog(e)) => return Err(unrecorded(st, &io, binlog_failed(e)).await),
            Err(FlushFailed::Trunk(e)) => return Err(unwritten(st, &io, e).await),
        }
    }
    reply_stored(st, conn, pos, remote).await
}

/// An upload whose header could not be written or whose trunk file could not be
/// flushed: logged, the slot zeroed; the errno for the client.
async fn unwritten(st: &Storage, io: &crate::trunk::SlotIo, e: std::io::Error) -> Fail {
    let code = trunk_failed(st, io, e);
    let zero = io.clone();
    let _ = blocking(move || zero.zero().map(|_| ())).await;
    Fail::Reply(code)
}

/// An upload whose record could not be written or flushed: not acknowledged, and no
/// peer would hear of it, so its slot is zeroed and goes back to the trunk server.
async fn unrecorded(st: &Storage, io: &crate::trunk::SlotIo, fail: Fail) -> Fail {
    let zero = io.clone();
    if blocking(move || zero.zero().map(|_| ())).await.is_ok() {
        let _ = st.trunk.free(st, io.slot).await;
    }
    fail
}

/// Logs a failed write into a trunk file; returns the errno for the client.
fn trunk_failed(st: &Storage, io: &crate::trunk::SlotIo, e: std::io::Error) -> u8 {
    let dir = st
        .store
        .dir(io.slot.path as usize, io.slot.high, io.slot.low);
    disk_failed(st, &dir, e)
}

/// A slot an upload did not fill: zeroed here, and free again at the trunk server.
async fn give_back(st: &Storage, io: &crate::trunk::SlotIo, code: u8) {
    let zero = io.clone();
    if let Err(e) = blocking(move || zero.zero_unclaimed()).await {
        tracing::error!("cannot zero trunk slot {:?}: {e}", io.slot);
    }
    let _ = st.trunk.confirm(st, &io.slot, code).await;
}

/// The slave's base name: the master's base without its `.ext`, then prefix and ext.
pub fn slave_base(master_base: &str, prefix: &str, ext: &str) -> String {
    let stem = match master_base[BASE64_LEN..].rfind('.') {
        Some(dot) => &master_base[..BASE64_LEN + dot],
        None => master_base,
    };
    if ext.is_empty() {
        format!("{stem}{prefix}")
    } else {
        format!("{stem}{prefix}.{ext}")
    }
}

pub async fn upload_slave(st: &Storage, conn: &mut Connection, body_len: u64) -> Handled {
    let result = upload_slave_inner(st, conn, body_len).await;
    st.stats.record(counter::TOTAL_UPLOAD, result.is_ok());
    result
}

async fn upload_slave_inner(st: &Storage, conn: &mut Connection, body_len: u64) -> Handled {
    if body_len < SlaveHead::LEN as u64 {
        return Err(Fail::Reply(errno::EINVAL));
    }
    let mut raw = [0u8; SlaveHead::LEN];
    conn.read_exact(&mut raw).await.map_err(|_| Fail::Close)?;
    let head = SlaveHead::decode(&raw).map_err(|_| Fail::Reply(errno::EINVAL))?;
    if body_len != (SlaveHead::LEN + head.master_len) as u64 + head.file_size {
        return Err(Fail::Reply(errno::EINVAL));
    }
    let master_raw = conn
        .read_body(head.master_len)
        .await
        .map_err(|_| Fail::Close)?;
    let master_text = String::from_utf8(master_raw).map_err(|_| Fail::Reply(errno::EINVAL))?;
    let master = RemoteName::parse(&master_text).map_err(|_| Fail::Reply(errno::EINVAL))?;
    // A metadata file is no master: its slaves would pass for files of their own.
    if master.is_metadata() {
        return Err(Fail::Reply(errno::EINVAL));
    }
    let master_path = st.store.resolve(&master).map_err(Fail::Reply)?;
    // (A trunk-stored master is in its slot.)
    if !super::is_here(&master, &master_path) {
        return Err(Fail::Reply(errno::ENOENT));
    }
    let slave = remote_name(
        master.store_path,
        master.high,
        master.low,
        &slave_base(master.base, &head.prefix, &head.ext),
    );
    let slave_name = RemoteName::parse(&slave).map_err(|_| Fail::Reply(errno::EINVAL))?;
    // The head's checks already keep `-m` off the end of the name; a new slave's name must
    // never even look like some file's metadata, nor like a normal file: its ID would
    // promise the master's size and CRC32.
    if ends_like_metadata(&slave) || slave.len() == NORMAL_NAME_LEN {
        return Err(Fail::Reply(errno::EINVAL));
    }
    let slave_path = st.store.resolve(&slave_name).map_err(Fail::Reply)?;
    if slave_path.exists() {
        return Err(Fail::Reply(errno::EEXIST));
    }
    let dir = slave_path
        .parent()
        .expect("slave path has a directory")
        .to_path_buf();
    let temp = match st.store.new_file(&dir).await {
        Ok(t) => t,
        Err(e) => {
            let code = disk_failed(st, &dir, e);
            return Err(Fail::Reply(code));
        }
    };
    let (temp, _crc, mtime) = receive_temp(st, conn, temp, &dir, head.file_size).await?;
    st.stats
        .add_bytes(counter::TOTAL_UPLOAD_BYTES, head.file_size, true);
    let binlog = st.binlog.clone();
    let record = slave.clone();
    let (_, (), pos) = st
        .seal(temp, dir.clone(), move |temp| {
            // Never replaces: a slave uploaded concurrently under the same name wins.
            match temp.commit_no_replace(&slave_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(Fail::Reply(errno::EEXIST))
                }
                Err(e) => return Err(Fail::Reply(errno::from_io(&e))),
            }
            let pos = binlog
                .append(&Record::here(mtime, record, Change::Create))
                .map_err(binlog_failed)?;
            Ok(((), pos))
        })
        .await
        .map_err(|e| seal_failed(st, &dir, e))?;
    wait_replicas(st, pos, &slave).await;
    let reply = StoredFile {
        group: st.cfg.group_name.clone(),
        filename: slave,
    };
    conn.reply(0, &reply.encode())
        .await
        .map_err(|_| Fail::Close)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slave_names_follow_upstream() {
        let master = "fwAAPWsEx3-AJPpFAAAADwL5vO4702.txt";
        assert_eq!(
            slave_base(master, "_big", "txt"),
            "fwAAPWsEx3-AJPpFAAAADwL5vO4702_big.txt"
        );
        assert_eq!(
            slave_base(master, "_150x150", ""),
            "fwAAPWsEx3-AJPpFAAAADwL5vO4702_150x150"
        );
        assert_eq!(
            slave_base("fwAAPWsEx3-AJPpFAAAADwL5vO41234567", "_s", "jpg"),
            "fwAAPWsEx3-AJPpFAAAADwL5vO41234567_s.jpg"
        );
    }
}
