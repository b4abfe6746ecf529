//! Appender files: 24 APPEND_FILE, 34 MODIFY_FILE, 36 TRUNCATE_FILE and
//! 38 REGENERATE_APPENDER_FILENAME (which turns an appender into a normal file).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;

use fdfs_proto::errno;
use fdfs_proto::fileid::{
    normal_size_field, remote_name, FileKind, PackedName, RemoteName, Source, FEXT_LEN,
};
use fdfs_proto::msg::{decode_regenerate, AppendHead, ModifyHead, StoredFile, Truncate};
use fdfs_runtime::{unix_now, Connection};
use rand::Rng;

use super::{binlog_failed, flush_failed, locate, Fail, Handled};
use crate::appenders::{FileGuard, Version};
use crate::binlog::{BinlogPos, Change, Record};
use crate::state::Storage;
use crate::stats::counter;
use crate::store::commit_new_file;
use crate::transfer::receive_into;

/// Checks that `filename` is an existing appender file of this group.
fn appender_path(st: &Storage, filename: &str) -> Result<PathBuf, u8> {
    let (name, path) = locate(st, &st.cfg.group_name, filename)?;
    let info = name.info().map_err(|_| errno::EINVAL)?;
    if info.kind != FileKind::Appender {
        return Err(errno::EINVAL);
    }
    if let Some(source) = source_elsewhere(st, &info.source) {
        // One writer per appender: a change accepted here while the source is away
        // would be overtaken by the source's own changes once it is back, and the
        // replicas would differ for good. The trackers send changes to the source.
        tracing::warn!("{filename}: a change refused here, its source {source} makes them");
        return Err(errno::EBUSY);
    }
    if !path.is_file() {
        return Err(errno::ENOENT);
    }
    Ok(path)
}

/// The other member of the group that created the file (its source), if it is one.
fn source_elsewhere(st: &Storage, source: &Source) -> Option<String> {
    if st.is_mine(source) != Some(false) {
        return None;
    }
    let members = st.sync.members();
    let found = match source {
        Source::Ip(ip) => {
            let ip = ip.to_string();
            members.iter().find(|m| m.ip == ip)
        }
        Source::ServerId(id) => {
            let id = id.to_string();
            members.iter().find(|m| m.id == id)
        }
    };
    found.map(|m| format!("{}:{}", m.ip, m.port))
}

/// A streamed appender request read up to its content, with the file open and held
/// against other changes.
struct Streamed<H> {
    head: H,
    size: u64,
    filename: String,
    path: PathBuf,
    file: File,
    _guard: FileGuard,
}

/// Reads the rest of a streamed appender request up to its content: the fixed head
/// (`head_len` bytes, turned by `decode` into the head, the filename length and the
/// content size), then the appender's name; checks the lengths add up, waits until no
/// other request changes the file, and opens it (`append` mode or plain write).
async fn open_streamed<H>(
    st: &Storage,
    conn: &mut Connection,
    body_len: u64,
    head_len: usize,
    decode: impl Fn(&[u8]) -> Option<(H, usize, u64)>,
    append: bool,
) -> Result<Streamed<H>, Fail> {
    let invalid = || Fail::Reply(errno::EINVAL);
    if body_len < head_len as u64 {
        return Err(invalid());
    }
    let raw = conn.read_body(head_len).await.map_err(|_| Fail::Close)?;
    let (head, name_len, size) = decode(&raw).ok_or_else(invalid)?;
    if body_len != (head_len + name_len) as u64 + size {
        return Err(invalid());
    }
    let raw = conn.read_body(name_len).await.map_err(|_| Fail::Close)?;
    let filename = String::from_utf8(raw).map_err(|_| invalid())?;
    let path = appender_path(st, &filename).map_err(Fail::Reply)?;
    let guard = st.appenders.lock(&path).await;
    // Checked again under the lock: a regenerate or delete may have just taken it.
    let path = appender_path(st, &filename).map_err(Fail::Reply)?;
    let file = OpenOptions::new()
        .append(append)
        .write(!append)
        .open(&path)
        .map_err(|e| Fail::Reply(errno::from_io(&e)))?;
    Ok(Streamed {
        head,
        size,
        filename,
        path,
        file,
        _guard: guard,
    })
}

/// Writes the binlog record of an append, modify (`a`, `b`: offset and length) or
/// truncate (old and new size) before the change is made, under the file's lock. A
/// record never goes missing then: a crash or a broken request after it leaves a record
/// whose change is partly or not made, and the sender (which waits for the file's lock
/// before it reads a changed range) finds the file not as the record says and sends it
/// whole, so the replicas match the source whatever happened. A change made before its
/// record would be lost for the replicas if the storage died in between.
fn record_change(st: &Storage, name: &str, change: Change) -> Result<BinlogPos, Fail> {
    st.binlog
        .append(&Record::here(unix_now(), name, change))
        .map_err(binlog_failed)
}

pub async fn append(st: &Storage, conn: &mut Connection, body_len: u64) -> Handled {
    let result = async {
        let decode = |raw: &[u8]| {
            AppendHead::decode(raw)
                .ok()
                .map(|h| ((), h.filename_len, h.size))
        };
        let Streamed {
            size,
            filename,
            path,
            mut file,
            _guard,
            ..
        } = open_streamed(st, conn, body_len, AppendHead::LEN, decode, true).await?;
        let before = file
            .metadata()
            .map_err(|e| Fail::Reply(errno::from_io(&e)))?;
        let offset = file
            .seek(SeekFrom::End(0))
            .map_err(|e| Fail::Reply(errno::from_io(&e)))?;
        // The record goes first (see `record_change`).
        let pos = if size > 0 {
            Some(record_change(
                st,
                &filename,
                Change::Append {
                    offset,
                    length: size,
                },
            )?)
        } else {
            None
        };
        let mut crc = crc32fast::Hasher::new();
        if let Err(e) = receive_into(conn, &mut file, size, Some(&mut crc)).await {
            // A broken append leaves the file as it was, never half-extended.
            if let Err(t) = file.set_len(offset) {
                tracing::error!("cannot undo partial append to {filename}: {t}");
            }
            return Err(e.into());
        }
        st.stats.add_bytes(counter::TOTAL_APPEND_BYTES, size, true);
        if let Ok(after) = file.metadata() {
            st.appenders.extend_crc(
                &path,
                Version::of(&before),
                Version::of(&after),
                crc.finalize(),
                size,
            );
        }
        if let Some(pos) = pos {
            st.durable_data(&file).await.map_err(flush_failed)?;
            st.durable_names(None, pos).await.map_err(flush_failed)?;
        }
        Ok::<(), Fail>(())
    }
    .await;
    st.stats.record(counter::TOTAL_APPEND, result.is_ok());
    result?;
    conn.reply(0, &[]).await.map_err(|_| Fail::Close)
}

pub async fn modify(st: &Storage, conn: &mut Connection, body_len: u64) -> Handled {
    let result = async {
        let decode = |raw: &[u8]| {
            ModifyHead::decode(raw)
                .ok()
                .map(|h| (h.offset, h.filename_len, h.size))
        };
        let Streamed {
            head: offset,
            size,
            filename,
            path,
            mut file,
            _guard,
        } = open_streamed(st, conn, body_len, ModifyHead::LEN, decode, false).await?;
        st.appenders.forget(&path);
        let current = file
            .metadata()
            .map_err(|e| Fail::Reply(errno::from_io(&e)))?
            .len();
        if offset > current {
            return Err(Fail::Reply(errno::EINVAL));
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| Fail::Reply(errno::from_io(&e)))?;
        let pos = record_change(
            st,
            &filename,
            Change::Modify {
                offset,
                length: size,
            },
        )?;
        receive_into(conn, &mut file, size, None).await?;
        st.stats.add_bytes(counter::TOTAL_MODIFY_BYTES, size, true);
        st.durable_data(&file).await.map_err(flush_failed)?;
        st.durable_names(None, pos).await.map_err(flush_failed)
    }
    .await;
    st.stats.record(counter::TOTAL_MODIFY, result.is_ok());
    result?;
    conn.reply(0, &[]).await.map_err(|_| Fail::Close)
}

pub async fn truncate(st: &Storage, conn: &mut Connection, body: &[u8]) -> Handled {
    let result = async {
        let req = Truncate::decode(body).map_err(|_| Fail::Reply(errno::EINVAL))?;
        let path = appender_path(st, &req.filename).map_err(Fail::Reply)?;
        let _guard = st.appenders.lock(&path).await;
        let path = appender_path(st, &req.filename).map_err(Fail::Reply)?;
        st.appenders.forget(&path);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Fail::Reply(errno::from_io(&e)))?;
        let old = file
            .metadata()
            .map_err(|e| Fail::Reply(errno::from_io(&e)))?
            .len();
        if old == req.new_size {
            return Ok(());
        }
        let pos = record_change(
            st,
            &req.filename,
            Change::Truncate {
                old_size: old,
                new_size: req.new_size,
            },
        )?;
        file.set_len(req.new_size)
            .map_err(|e| Fail::Reply(errno::from_io(&e)))?;
        st.durable_data(&file).await.map_err(flush_failed)?;
        st.durable_names(None, pos).await.map_err(flush_failed)
    }
    .await;
    st.stats.record(counter::TOTAL_TRUNCATE, result.is_ok());
    result?;
    conn.reply(0, &[]).await.map_err(|_| Fail::Close)
}

pub async fn regenerate(st: &Storage, conn: &mut Connection, body: &[u8]) -> Handled {
    let old = decode_regenerate(body).map_err(|_| Fail::Reply(errno::EINVAL))?;
    let path = appender_path(st, &old).map_err(Fail::Reply)?;
    let _guard = st.appenders.lock(&path).await;
    // The content is final from here: no append or modify runs until it is renamed.
    let path = appender_path(st, &old).map_err(Fail::Reply)?;
    let name = RemoteName::parse(&old).map_err(|_| Fail::Reply(errno::EINVAL))?;
    let packed = name.packed().map_err(|_| Fail::Reply(errno::EINVAL))?;
    let (crc, meta) = st
        .appenders
        .crc_of(&path)
        .await
        .map_err(|e| Fail::Reply(errno::from_io(&e)))?;
    let size = meta.len();
    st.appenders.forget(&path);
    let now = unix_now();
    let fext = &name.base[name.base.len() - FEXT_LEN..];
    let dir = path.parent().expect("file has a directory");
    // The appender's own name is the "temporary" file: it is linked under the new name
    // and then removed, so the content is never copied.
    let base = commit_new_file(&path, dir, || {
        let renamed = PackedName {
            source: packed.source,
            timestamp: now as u32,
            size_field: normal_size_field(size, rand::thread_rng().gen()),
            crc32: crc,
        };
        format!("{}{fext}", renamed.encode())
    })
    .map_err(Fail::Reply)?;
    let new = remote_name(name.store_path, name.high, name.low, &base);
    let pos = st
        .binlog
        .append(&Record::here(
            now,
            new.as_str(),
            Change::Rename { from: old },
        ))
        .map_err(binlog_failed)?;
    st.durable_names(Some(dir), pos)
        .await
        .map_err(flush_failed)?;
    let reply = StoredFile {
        group: st.cfg.group_name.clone(),
        filename: new,
    };
    conn.reply(0, &reply.encode())
        .await
        .map_err(|_| Fail::Close)
}
