//! 26 FETCH_ONE_PATH_BINLOG: the list of files of one store path, for a peer that
//! recovers a replaced disk (see [`crate::recovery`]).
//!
//! The reply is framed as upstream frames it: a header whose length is the "infinite"
//! size 2^58, then binlog lines (`<ts> C|c <name>` for files, `<ts> L|l <name>
//! <target>` for symbolic links), then the 8-byte length of those lines, then the
//! connection is closed. Only files that exist here now are listed: the creates and
//! renames of the whole binlog, filtered by store path and by a look at the disk.
//! The binlog is read on a blocking thread and sent in chunks, so memory stays flat
//! whatever its size.

use std::fs;
use std::path::Path;

use fdfs_proto::codec::Reader;
use fdfs_proto::fileid::RemoteName;
use fdfs_proto::{errno, Header, GROUP_NAME_LEN};
use fdfs_runtime::Connection;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Fail, Handled};
use crate::binlog::BinlogPos;
use crate::state::Storage;
use crate::sync::binlog_reader::{BinlogReader, Record};

/// Body length of the "infinite" reply upstream uses for a stream of unknown length.
pub const INFINITE_LEN: u64 = 256 << 50;
/// Output gathered before it is handed to the connection.
const CHUNK: usize = 64 * 1024;

/// The request: group (16 bytes) and the store path index (1 byte).
pub fn decode_request(body: &[u8]) -> Option<(String, u8)> {
    if body.len() != GROUP_NAME_LEN + 1 {
        return None;
    }
    let mut r = Reader::new(body);
    let group = r.fixed_str(GROUP_NAME_LEN, "group").ok()?;
    Some((group, r.u8().ok()?))
}

pub async fn fetch_one_path_binlog(st: &Storage, conn: &mut Connection, body: &[u8]) -> Handled {
    let Some((group, index)) = decode_request(body) else {
        return Err(Fail::Reply(errno::EINVAL));
    };
    if group != st.cfg.group_name || index as usize >= st.store.paths().len() {
        return Err(Fail::Reply(errno::EINVAL));
    }
    let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    info!("{peer}: sending the file list of store path {index}");
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    let dir = st.binlog.dir().to_path_buf();
    let end = st.binlog.end();
    let data = st.store.paths()[index as usize].data.clone();
    let producer = tokio::task::spawn_blocking(move || {
        list_path(&dir, end, index, &data, |chunk| {
            tx.blocking_send(chunk).is_ok()
        })
    });
    conn.send(Header::response(0, INFINITE_LEN), &[])
        .await
        .map_err(|_| Fail::Close)?;
    let mut sent = 0u64;
    while let Some(chunk) = rx.recv().await {
        if conn.write_all(&chunk).await.is_err() {
            // Dropping the receiver stops the producer.
            drop(rx);
            let _ = producer.await;
            return Err(Fail::Close);
        }
        sent += chunk.len() as u64;
    }
    match producer.await {
        Ok(Ok(files)) => {
            let _ = conn.write_all(&sent.to_be_bytes()).await;
            let _ = conn.flush().await;
            info!("{peer}: file list of store path {index} sent ({files} entries, {sent} bytes)");
        }
        Ok(Err(e)) => warn!("{peer}: file list of store path {index} broke off: {e}"),
        Err(e) => warn!("{peer}: file list of store path {index} broke off: {e}"),
    }
    // The length went out last: the connection ends here, as upstream ends it.
    Err(Fail::Close)
}

/// Reads the whole binlog up to `end` and hands `emit` chunks of list lines for store
/// path `index` whose files exist under `data`. Stops early when `emit` says false.
/// Returns how many lines were listed.
pub fn list_path(
    dir: &Path,
    end: BinlogPos,
    index: u8,
    data: &Path,
    mut emit: impl FnMut(Vec<u8>) -> bool,
) -> std::io::Result<u64> {
    let mut reader = BinlogReader::new(dir, BinlogPos::default());
    let mut out = Vec::with_capacity(CHUNK + 512);
    let mut listed = 0u64;
    loop {
        let batch = reader.read_batch(512, end.index)?;
        if batch.is_empty() {
            break;
        }
        let past_end = batch.last().is_some_and(|r| r.end > end);
        for rec in &batch {
            if rec.end > end {
                break;
            }
            if let Some(line) = list_line(rec, index, data) {
                out.extend_from_slice(line.as_bytes());
                listed += 1;
            }
        }
        if out.len() >= CHUNK {
            if !emit(std::mem::take(&mut out)) {
                return Ok(listed);
            }
            out.reserve(CHUNK + 512);
        }
        if past_end {
            break;
        }
    }
    if !out.is_empty() {
        emit(out);
    }
    Ok(listed)
}

/// The list line for one binlog record, if it names a file of store path `index` that
/// is here now: creates and renames become `C`/`c` (the case says who the source is),
/// symbolic links `L`/`l` with their target.
fn list_line(rec: &Record, index: u8, data: &Path) -> Option<String> {
    let op = match rec.op {
        'C' | 'R' => 'C',
        'c' | 'r' => 'c',
        'L' => 'L',
        'l' => 'l',
        _ => return None,
    };
    let name = RemoteName::parse(&rec.name).ok()?;
    if name.store_path != index {
        return None;
    }
    let path = data.join(name.data_relative());
    let meta = fs::symlink_metadata(&path).ok()?;
    let upper = op.is_ascii_uppercase();
    if meta.file_type().is_symlink() {
        // The target as a remote name of the same store path, when it is one.
        let target = fs::read_link(&path).ok()?;
        let rel = target.strip_prefix(data).ok()?.to_str()?.to_string();
        let remote = format!("M{index:02X}/{rel}");
        RemoteName::parse(&remote).ok()?;
        let op = if upper { 'L' } else { 'l' };
        return Some(format!("{} {op} {} {remote}\n", rec.timestamp, rec.name));
    }
    let op = if upper { 'C' } else { 'c' };
    Some(format!("{} {op} {}\n", rec.timestamp, rec.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_existing_files_of_one_path() {
        let base = std::env::temp_dir().join(format!("fdfs-list-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let sync = base.join("sync");
        let data = base.join("data");
        fs::create_dir_all(&sync).unwrap();
        fs::create_dir_all(data.join("00/01")).unwrap();
        let a = "M00/00/01/fwAAPWsEx2iADTARAAAADwL5vO4236.txt";
        let b = "M00/00/01/fwAAPWsEx3-AJPpFAAAADwL5vO4702.txt";
        let c = "M00/00/01/fwAAPWsEx4uAEgtOAAAAHpBT5lw141.txt";
        let other = "M01/00/01/fwAAPWsEx2iADTARAAAADwL5vO4236.txt";
        fs::write(data.join(&a[4..]), b"a").unwrap();
        fs::write(data.join(&c[4..]), b"c").unwrap();
        let text = format!("1 C {a}\n2 c {b}\n3 A {a} 1 1\n4 R {c} {b}\n5 C {other}\n6 D {b}\n");
        fs::write(sync.join("binlog.000"), &text).unwrap();
        let end = BinlogPos {
            index: 0,
            offset: text.len() as u64,
        };
        let mut got = Vec::new();
        let n = list_path(&sync, end, 0, &data, |c| {
            got.extend(c);
            true
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            String::from_utf8(got).unwrap(),
            format!("1 C {a}\n4 C {c}\n")
        );
        assert_eq!(decode_request(&[0u8; 17]), Some((String::new(), 0)));
        assert_eq!(decode_request(&[0u8; 16]), None);
        let _ = fs::remove_dir_all(base);
    }
}
