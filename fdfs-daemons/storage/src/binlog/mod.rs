//! The binlog: every change this storage records, one line each, in FastDFS's format
//! under `base_path/data/sync/binlog.NNN`, ready for replication.
//!
//! - [`record`]: what a record says (a typed change, its origin and time) and its line.
//! - [`Binlog`] (here): the writer, with rotation, group flushes and the end position
//!   replication readers follow.
//! - [`reader`]: reads records from a saved position onwards, across rotation.

pub mod reader;
pub mod record;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::watch;

pub use reader::{BinlogReader, Logged};
pub use record::{Change, Origin, Record};

/// A binlog file is closed and the next one started at this size, as upstream does.
const ROTATE_SIZE: u64 = 1 << 30;

/// A place in the binlog: file index and byte offset in it. Ordered as the records are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BinlogPos {
    pub index: u32,
    pub offset: u64,
}

struct Current {
    file: File,
    index: u32,
    size: u64,
}

pub struct Binlog {
    dir: PathBuf,
    current: Mutex<Current>,
    /// The end of the last record written; replication readers wait on it.
    end: watch::Sender<BinlogPos>,
    /// Everything before this is flushed to disk. Held while flushing, so concurrent
    /// callers share one flush.
    synced: Mutex<BinlogPos>,
}

pub fn file_name(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("binlog.{index:03}"))
}

fn read_index(dir: &Path) -> u32 {
    let Ok(text) = fs::read_to_string(dir.join("binlog_index.dat"))
        .or_else(|_| fs::read_to_string(dir.join("binlog.index")))
    else {
        // Without its index the newest binlog file is the one being written.
        let newest = newest_file(dir);
        if newest > 0 {
            tracing::warn!(
                "{}: binlog index missing, going on with binlog.{newest:03}",
                dir.display()
            );
        }
        return newest;
    };
    text.lines()
        .find_map(|l| l.trim().strip_prefix("current_write="))
        .or_else(|| {
            text.lines()
                .next()
                .filter(|l| l.trim().parse::<u32>().is_ok())
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The highest N of the `binlog.NNN` files in `dir` (0 when there is none).
fn newest_file(dir: &Path) -> u32 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix("binlog.")?;
            (n.len() >= 3 && n.bytes().all(|b| b.is_ascii_digit()))
                .then(|| n.parse::<u32>().ok())
                .flatten()
        })
        .max()
        .unwrap_or(0)
}

/// The size of `binlog.NNN`, `None` when it does not exist.
pub fn file_size(dir: &Path, index: u32) -> Option<u64> {
    fs::metadata(file_name(dir, index)).ok().map(|m| m.len())
}

fn write_index(dir: &Path, index: u32) -> io::Result<()> {
    let tmp = dir.join("binlog_index.dat.tmp");
    fs::write(&tmp, format!("current_write={index}\ncurrent_compress=0\n"))?;
    fs::rename(tmp, dir.join("binlog_index.dat"))
}

/// Cuts a torn last line (a crash in the middle of a write) so every record is whole.
fn repair_tail(path: &Path) -> io::Result<u64> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let keep = data.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    if keep != data.len() {
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(keep as u64)?;
        tracing::warn!(
            "binlog {}: removed a torn last record of {} bytes",
            path.display(),
            data.len() - keep
        );
    }
    Ok(keep as u64)
}

impl Binlog {
    pub fn open(base_path: &Path) -> io::Result<Binlog> {
        let dir = base_path.join("data").join("sync");
        fs::create_dir_all(&dir)?;
        let index = read_index(&dir);
        let path = file_name(&dir, index);
        let size = repair_tail(&path)?;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        write_index(&dir, index)?;
        let (end, _) = watch::channel(BinlogPos {
            index,
            offset: size,
        });
        Ok(Binlog {
            dir,
            current: Mutex::new(Current { file, index, size }),
            end,
            synced: Mutex::new(BinlogPos {
                index,
                offset: size,
            }),
        })
    }

    /// Appends one record. The write goes straight to the file so that a record is in
    /// the binlog before the client hears that its change succeeded. Returns the
    /// position just after the record and wakes the replication readers.
    pub fn append(&self, record: &Record) -> io::Result<BinlogPos> {
        let mut line = Vec::with_capacity(96);
        record.write_to(&mut line);
        let mut cur = self.current.lock().unwrap();
        if cur.size + line.len() as u64 > ROTATE_SIZE {
            self.rotate(&mut cur)?;
        }
        cur.file.write_all(&line)?;
        cur.size += line.len() as u64;
        let pos = BinlogPos {
            index: cur.index,
            offset: cur.size,
        };
        // Sent under the lock so the published end never goes backwards.
        self.end.send_replace(pos);
        Ok(pos)
    }

    /// Appends whole record lines (written by [`Record::write_to`]) in one write (a
    /// peer's burst of changes). Returns the position after the last one.
    pub fn append_records(&self, records: &[u8]) -> io::Result<BinlogPos> {
        let mut cur = self.current.lock().unwrap();
        if cur.size > 0 && cur.size + records.len() as u64 > ROTATE_SIZE {
            self.rotate(&mut cur)?;
        }
        if !records.is_empty() {
            cur.file.write_all(records)?;
            cur.size += records.len() as u64;
        }
        let pos = BinlogPos {
            index: cur.index,
            offset: cur.size,
        };
        self.end.send_replace(pos);
        Ok(pos)
    }

    fn rotate(&self, cur: &mut Current) -> io::Result<()> {
        // A finished file is flushed once, so flushes of later positions only need the
        // current one.
        cur.file.sync_data()?;
        let index = cur.index + 1;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(file_name(&self.dir, index))?;
        write_index(&self.dir, index)?;
        *cur = Current {
            file,
            index,
            size: 0,
        };
        Ok(())
    }

    /// The end of the last record written.
    pub fn end(&self) -> BinlogPos {
        *self.end.borrow()
    }

    /// Follows the end of the binlog (changes whenever a record is written).
    pub fn subscribe(&self) -> watch::Receiver<BinlogPos> {
        self.end.subscribe()
    }

    pub fn sync(&self) -> io::Result<()> {
        self.current.lock().unwrap().file.sync_data()
    }

    /// Flushes the binlog at least up to `pos` (blocking). A caller whose record an
    /// earlier caller's flush already covered returns at once.
    pub fn sync_through(&self, pos: BinlogPos) -> io::Result<()> {
        let mut synced = self.synced.lock().unwrap();
        if *synced >= pos {
            return Ok(());
        }
        let (file, end) = {
            let cur = self.current.lock().unwrap();
            (
                cur.file.try_clone()?,
                BinlogPos {
                    index: cur.index,
                    offset: cur.size,
                },
            )
        };
        crate::durability::counted(file.sync_data())?;
        *synced = end;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_index_goes_on_with_the_newest_file() {
        let base = std::env::temp_dir().join(format!("fdfs-binlog-idx-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let dir = base.join("data/sync");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("binlog.000"), "1 C M00/00/00/a\n").unwrap();
        fs::write(dir.join("binlog.002"), "2 C M00/00/00/b\n").unwrap();
        fs::write(dir.join("binlog.002.gz.tmp"), "").unwrap();
        let log = Binlog::open(&base).unwrap();
        assert_eq!(
            log.end(),
            BinlogPos {
                index: 2,
                offset: 16
            }
        );
        assert_eq!(file_size(&dir, 0), Some(16));
        assert_eq!(file_size(&dir, 1), None);
        let _ = fs::remove_dir_all(base);
    }

    #[test]
    fn records_in_upstream_format_and_torn_tail_repaired() {
        let base = std::env::temp_dir().join(format!("fdfs-binlog-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let log = Binlog::open(&base).unwrap();
        log.append(&Record::here(1795475304, "M00/00/00/a.txt", Change::Create))
            .unwrap();
        let truncate = Change::Truncate {
            old_size: 15,
            new_size: 7,
        };
        log.append(&Record::here(1795475354, "M00/00/00/b.txt", truncate))
            .unwrap();
        drop(log);
        let path = base.join("data/sync/binlog.000");
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "1795475304 C M00/00/00/a.txt\n1795475354 T M00/00/00/b.txt 15 7\n"
        );
        // A crash mid-write leaves half a line; reopening cuts it.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"1795475360 D M00/0").unwrap();
        drop(f);
        let log = Binlog::open(&base).unwrap();
        log.append(&Record::here(1795475361, "M00/00/00/a.txt", Change::Delete))
            .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.ends_with("7\n1795475361 D M00/00/00/a.txt\n"),
            "{text}"
        );
        assert_eq!(
            fs::read_to_string(base.join("data/sync/binlog_index.dat")).unwrap(),
            "current_write=0\ncurrent_compress=0\n"
        );
        let _ = fs::remove_dir_all(base);
    }
}
