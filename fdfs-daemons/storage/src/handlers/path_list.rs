//! 26 FETCH_ONE_PATH_BINLOG: the list of files of one store path, for a peer that
//! recovers a replaced disk (see [`crate::recovery`]).
//!
//! The reply is framed as upstream frames it: a header whose length is the "infinite"
//! size 2^58, then binlog lines (`<ts> C|c <name>` for files, `<ts> L|l <name>
//! <target>` for symbolic links), then the 8-byte length of those lines, then the
//! connection is closed. Only files that exist here now are listed: the creates and
//! renames of the whole binlog up to its end when the request came, filtered by store
//! path and by a look at the disk (a link whose target is gone is left out). A look
//! that fails otherwise than "not found" breaks the list off (no length is sent, so
//! the peer asks again). The binlog is read on a blocking thread and sent in chunks, so
//! memory stays flat whatever its size; at most [`SCANS`] lists are made at once, and
//! a list is given up as soon as its peer is gone.

use std::fs;
use std::io;
use std::path::Path;

use fdfs_proto::fileid::RemoteName;
use fdfs_proto::msg::{FetchOnePathBinlog, INFINITE_LEN};
use fdfs_proto::{errno, Header};
use fdfs_runtime::Connection;
use tokio::sync::{mpsc, Semaphore};
use tracing::{info, warn};

use super::{Fail, Handled};
use crate::binlog::{BinlogPos, BinlogReader, Change, Record};
use crate::state::Storage;

/// Output gathered before it is handed to the connection.
const CHUNK: usize = 64 * 1024;
/// Lists made at once (each reads the whole binlog).
pub const SCANS: usize = 2;
static SCANNING: Semaphore = Semaphore::const_new(SCANS);

pub async fn fetch_one_path_binlog(st: &Storage, conn: &mut Connection, body: &[u8]) -> Handled {
    let Ok(req) = FetchOnePathBinlog::decode(body) else {
        return Err(Fail::Reply(errno::EINVAL));
    };
    let index = req.store_path;
    if req.group != st.cfg.group_name || index as usize >= st.store.paths().len() {
        return Err(Fail::Reply(errno::EINVAL));
    }
    let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let end = st.binlog.end();
    let Ok(_permit) = SCANNING.acquire().await else {
        return Err(Fail::Close);
    };
    info!("{peer}: sending the file list of store path {index}");
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    let dir = st.binlog.dir().to_path_buf();
    let data = st.store.paths()[index as usize].data.clone();
    let producer = tokio::task::spawn_blocking(move || {
        list_path(&dir, end, index, &data, |chunk| match chunk {
            Some(c) => tx.blocking_send(c).is_ok(),
            None => !tx.is_closed(),
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

/// Reads the binlog up to `end` and hands `emit` chunks of list lines for store path
/// `index` whose files exist under `data`. `emit(None)` asks whether to go on; `emit`
/// returning false stops the scan early. Returns how many lines were listed.
pub fn list_path(
    dir: &Path,
    end: BinlogPos,
    index: u8,
    data: &Path,
    mut emit: impl FnMut(Option<Vec<u8>>) -> bool,
) -> io::Result<u64> {
    let mut reader = BinlogReader::new(dir, BinlogPos::default());
    let mut out = Vec::with_capacity(CHUNK + 512);
    let mut listed = 0u64;
    loop {
        if !emit(None) {
            return Ok(listed);
        }
        let batch = reader.read_batch(512, end.index)?;
        if batch.is_empty() {
            break;
        }
        let past_end = batch.last().is_some_and(|r| r.end > end);
        for rec in &batch {
            if rec.end > end {
                break;
            }
            if list_line(&mut out, &rec.record, index, data)? {
                listed += 1;
            }
        }
        if out.len() >= CHUNK {
            if !emit(Some(std::mem::take(&mut out))) {
                return Ok(listed);
            }
            out.reserve(CHUNK + 512);
        }
        if past_end {
            break;
        }
    }
    if !out.is_empty() {
        emit(Some(out));
    }
    Ok(listed)
}

/// Appends the list line for one binlog record, if it names a file of store path
/// `index` that is here now: creates and renames become `C`/`c` (the case says who
/// the source is), symbolic links `L`/`l` with their target (left out when the target
/// is gone). Fails when the file cannot be looked at.
fn list_line(out: &mut Vec<u8>, rec: &Record, index: u8, data: &Path) -> io::Result<bool> {
    if !matches!(
        rec.change,
        Change::Create | Change::Rename { .. } | Change::Link { .. }
    ) {
        return Ok(false);
    }
    let Ok(name) = RemoteName::parse(&rec.name) else {
        return Ok(false);
    };
    if name.store_path != index {
        return Ok(false);
    }
    let path = data.join(name.data_relative());
    if fdfs_proto::trunk::location_of(&name).is_some() {
        // Trunk-stored: here while its slot holds it.
        if !super::is_here(&name, &path) {
            return Ok(false);
        }
        Record::new(rec.timestamp, rec.origin, rec.name.as_str(), Change::Create).write_to(out);
        return Ok(true);
    }
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    if meta.file_type().is_symlink() {
        let Some(target) = crate::recovery::link_target(data, index, &path) else {
            return Ok(false);
        };
        // The target must be here too (a dangling link is not recreated).
        if fs::metadata(&path).is_err() {
            return Ok(false);
        }
        Record::new(
            rec.timestamp,
            rec.origin,
            rec.name.as_str(),
            Change::Link { target },
        )
        .write_to(out);
        return Ok(true);
    }
    Record::new(rec.timestamp, rec.origin, rec.name.as_str(), Change::Create).write_to(out);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_existing_files_of_one_path() {
        let t = crate::test_support::scratch("list");
        let base = t.path();
        let sync = base.join("sync");
        let data = base.join("data");
        fs::create_dir_all(&sync).unwrap();
        fs::create_dir_all(data.join("00/01")).unwrap();
        let a = "M00/00/01/fwAAPWsEx2iADTARAAAADwL5vO4236.txt";
        let b = "M00/00/01/fwAAPWsEx3-AJPpFAAAADwL5vO4702.txt";
        let c = "M00/00/01/fwAAPWsEx4uAEgtOAAAAHpBT5lw141.txt";
        let other = "M01/00/01/fwAAPWsEx2iADTARAAAADwL5vO4236.txt";
        let link = "M00/00/01/fwAAPWsEx5uAEgtOAAAAHpBT5lw141_s.txt";
        let dangling = "M00/00/01/fwAAPWsEx6uAEgtOAAAAHpBT5lw141_s.txt";
        let late = "M00/00/01/fwAAPWsEx7uAEgtOAAAAHpBT5lw141.txt";
        fs::write(data.join(&a[4..]), b"a").unwrap();
        fs::write(data.join(&c[4..]), b"c").unwrap();
        fs::write(data.join(&late[4..]), b"late").unwrap();
        std::os::unix::fs::symlink(data.join(&a[4..]), data.join(&link[4..])).unwrap();
        std::os::unix::fs::symlink(data.join(&b[4..]), data.join(&dangling[4..])).unwrap();
        let text = format!(
            "1 C {a}\n2 c {b}\n3 A {a} 1 1\n4 R {c} {b}\n5 C {other}\n6 D {b}\n\
             7 L {link} {a}\n8 l {dangling} {b}\n"
        );
        let end = BinlogPos {
            index: 0,
            offset: text.len() as u64,
        };
        // A record written after the request came is not listed.
        fs::write(sync.join("binlog.000"), format!("{text}9 C {late}\n")).unwrap();
        let mut got = Vec::new();
        let n = list_path(&sync, end, 0, &data, |c| {
            got.extend(c.unwrap_or_default());
            true
        })
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            String::from_utf8(got).unwrap(),
            format!("1 C {a}\n4 C {c}\n7 L {link} {a}\n")
        );
        // A peer that is gone stops the scan.
        let mut asked = 0;
        list_path(&sync, end, 0, &data, |_| {
            asked += 1;
            false
        })
        .unwrap();
        assert_eq!(asked, 1);
    }
}
