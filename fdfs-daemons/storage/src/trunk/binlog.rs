//! `base_path/data/trunk/binlog`: the trunk server's record of which trunk regions it
//! freed (`A`) and took (`D`), one line each, as upstream writes it:
//!
//! ```text
//! <time> <A|D> <store path> <high dir> <low dir> <trunk id> <offset> <size>
//! ```
//!
//! The trunk server appends to its own and sends the lines to every peer of the group
//! (30), which append them to theirs unread: whichever storage becomes trunk server
//! next replays its copy to know what is free. Peers' progress is kept in
//! `data/trunk/<peer>.mark` files (`binlog_offset=N`).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fdfs_proto::trunk::Slot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The region is free.
    Add,
    /// The region is taken.
    Del,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub timestamp: i64,
    pub op: Op,
    pub slot: Slot,
}

impl Line {
    pub fn new(timestamp: i64, op: Op, slot: Slot) -> Line {
        Line {
            timestamp,
            op,
            slot,
        }
    }

    /// Reads one line (without its newline); `None` for a line upstream would skip.
    pub fn parse(text: &str) -> Option<Line> {
        let f: Vec<&str> = text.split(' ').collect();
        if f.len() != 8 {
            return None;
        }
        let op = match f[1] {
            "A" => Op::Add,
            "D" => Op::Del,
            _ => return None,
        };
        Some(Line {
            timestamp: f[0].parse().ok()?,
            op,
            slot: Slot {
                path: f[2].parse().ok()?,
                high: f[3].parse().ok()?,
                low: f[4].parse().ok()?,
                trunk_id: f[5].parse().ok()?,
                offset: f[6].parse().ok()?,
                size: f[7].parse().ok()?,
            },
        })
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.slot;
        writeln!(
            f,
            "{} {} {} {} {} {} {} {}",
            self.timestamp,
            match self.op {
                Op::Add => 'A',
                Op::Del => 'D',
            },
            s.path,
            s.high,
            s.low,
            s.trunk_id,
            s.offset,
            s.size
        )
    }
}

/// Present while the binlog holds only this storage's own allocator lines since it was
/// last trunk server (no other trunk server sent lines since).
const MINE: &str = "allocator.mine";

/// Most bytes of one 30 TRUNK_SYNC_BINLOG body.
pub const PUSH_MAX: usize = 64 * 1024;

/// The binlog open for appending, with its size (kept here: no `stat` per append).
struct Appending {
    file: File,
    len: u64,
}

impl Appending {
    fn new(file: File) -> io::Result<Appending> {
        let len = file.metadata()?.len();
        Ok(Appending { file, len })
    }
}

pub struct TrunkBinlog {
    dir: PathBuf,
    file: Mutex<Appending>,
    /// Held while flushing; the size flushed through.
    synced: Mutex<u64>,
}

impl TrunkBinlog {
    /// Opens (creating) `base_path/data/trunk/binlog`.
    pub fn open(base_path: &Path) -> io::Result<TrunkBinlog> {
        let dir = base_path.join("data").join("trunk");
        fs::create_dir_all(&dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("binlog"))?;
        Ok(TrunkBinlog {
            dir,
            file: Mutex::new(Appending::new(file)?),
            synced: Mutex::new(0),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("binlog")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends lines in one write; returns the size after them.
    pub fn append(&self, lines: &[Line]) -> io::Result<u64> {
        let text: String = lines.iter().map(Line::to_string).collect();
        self.append_raw(text.as_bytes())
    }

    /// Marks the binlog as written by this storage's own allocator up to its end: a
    /// later term of this storage may trust every free region it lists.
    pub fn mark_mine(&self) -> io::Result<()> {
        fs::write(self.dir.join(MINE), b"1\n")
    }

    /// A term of this storage's begins: until it ends cleanly, the binlog may lack lines.
    pub fn unmark_mine(&self) -> io::Result<()> {
        remove_if_there(&self.dir.join(MINE))
    }

    /// Whether no other trunk server wrote to the binlog since [`TrunkBinlog::mark_mine`].
    pub fn is_mine(&self) -> bool {
        self.dir.join(MINE).exists()
    }

    /// Appends lines another trunk server sent (30), as they are; returns the new size.
    pub fn append_theirs(&self, bytes: &[u8]) -> io::Result<u64> {
        remove_if_there(&self.dir.join(MINE))?;
        self.append_raw(bytes)
    }

    fn append_raw(&self, bytes: &[u8]) -> io::Result<u64> {
        let mut log = self.file.lock().unwrap();
        if !bytes.is_empty() {
            if let Err(e) = log.file.write_all(bytes) {
                // Part of it may be in: the size is asked of the file again.
                log.len = log.file.metadata()?.len();
                return Err(e);
            }
            log.len += bytes.len() as u64;
        }
        Ok(log.len)
    }

    /// Flushes at least through `size` bytes (concurrent callers share a flush).
    pub fn sync_through(&self, size: u64) -> io::Result<()> {
        let mut synced = self.synced.lock().unwrap();
        let (file, end) = {
            let log = self.file.lock().unwrap();
            (log.file.try_clone()?, log.len)
        };
        if *synced >= size.min(end) {
            return Ok(());
        }
        crate::durability::counted(file.sync_data())?;
        *synced = end;
        Ok(())
    }

    /// Size in bytes (31 TRUNK_GET_BINLOG_SIZE).
    pub fn size(&self) -> io::Result<u64> {
        Ok(self.file.lock().unwrap().len)
    }

    /// Every line, in order (what a new trunk server replays).
    pub fn lines(&self) -> io::Result<Vec<Line>> {
        let text = fs::read(self.path())?;
        Ok(String::from_utf8_lossy(&text)
            .lines()
            .filter_map(Line::parse)
            .collect())
    }

    /// Whole lines from `offset`, at most [`PUSH_MAX`] bytes (empty at the end).
    pub fn read_from(&self, offset: u64) -> io::Result<Vec<u8>> {
        let mut file = File::open(self.path())?;
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(PUSH_MAX);
        file.take(PUSH_MAX as u64).read_to_end(&mut buf)?;
        let whole = buf.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        buf.truncate(whole);
        Ok(buf)
    }

    /// 33: starts the copy afresh. With `max_backups`, the old one is kept as
    /// `binlog.<local time>` and the oldest backups beyond the limit removed.
    pub fn restart(&self, max_backups: u32) -> io::Result<()> {
        remove_if_there(&self.dir.join(MINE))?;
        let mut file = self.file.lock().unwrap();
        if max_backups > 0 {
            let mut backups: Vec<PathBuf> = fs::read_dir(&self.dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("binlog.") && n.len() == 21)
                })
                .collect();
            backups.sort();
            while backups.len() >= max_backups as usize {
                let _ = fs::remove_file(backups.remove(0));
            }
            let stamp = chrono::Local::now().format("%Y%m%d%H%M%S");
            file.file.sync_data()?;
            fs::rename(self.path(), self.dir.join(format!("binlog.{stamp}")))?;
            *file = Appending::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.path())?,
            )?;
        } else {
            file.file.set_len(0)?;
            file.len = 0;
        }
        // (Never both locks at once here: `sync_through` takes them the other way.)
        drop(file);
        *self.synced.lock().unwrap() = 0;
        remove_if_there(&self.snapshot_path())
    }

    /// Replaces the whole binlog with `lines` (a compaction): written aside, flushed,
    /// then renamed over it. Returns the sizes before and after.
    pub fn replace(&self, lines: &[Line]) -> io::Result<(u64, u64)> {
        let text: String = lines.iter().map(Line::to_string).collect();
        let tmp = self.dir.join("binlog.tmp");
        let mut file = self.file.lock().unwrap();
        let before = file.len;
        {
            let mut out = File::create(&tmp)?;
            out.write_all(text.as_bytes())?;
            out.sync_all()?;
        }
        fs::rename(&tmp, self.path())?;
        *file = Appending::new(OpenOptions::new().append(true).open(self.path())?)?;
        crate::durability::sync_dir(&self.dir)?;
        drop(file);
        *self.synced.lock().unwrap() = text.len() as u64;
        remove_if_there(&self.snapshot_path())?;
        Ok((before, text.len() as u64))
    }

    /// `data/storage_trunk.dat`: upstream's snapshot of the free regions (this storage
    /// never writes one; it is removed whenever upstream removes it).
    fn snapshot_path(&self) -> PathBuf {
        self.dir
            .parent()
            .expect("trunk dir has a parent")
            .join("storage_trunk.dat")
    }

    /// 32: forgets every peer's progress (and the snapshot).
    pub fn delete_marks(&self) -> io::Result<()> {
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "mark") {
                remove_if_there(&path)?;
            }
        }
        remove_if_there(&self.snapshot_path())
    }

    /// A peer's progress: `data/trunk/<name>.mark`.
    pub fn mark_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.mark"))
    }

    pub fn load_mark(&self, name: &str) -> u64 {
        fs::read_to_string(self.mark_path(name))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.trim().strip_prefix("binlog_offset=")?.parse().ok())
            })
            .unwrap_or(0)
    }

    pub fn save_mark(&self, name: &str, offset: u64) -> io::Result<()> {
        let path = self.mark_path(name);
        let tmp = path.with_extension("mark.tmp");
        fs::write(&tmp, format!("binlog_offset={offset}\n"))?;
        fs::rename(tmp, path)
    }
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_and_write_as_upstream() {
        let text = "1795475304 A 0 0 1 1 256 67108608";
        let line = Line::parse(text).unwrap();
        assert_eq!(line.op, Op::Add);
        assert_eq!(line.slot.offset, 256);
        assert_eq!(line.to_string(), format!("{text}\n"));
        assert!(Line::parse("1795475304 X 0 0 1 1 256 67108608").is_none());
        assert!(Line::parse("0 0 1 1 256 67108608").is_none());
    }

    #[test]
    fn pushes_whole_lines_and_restarts() {
        let dir = std::env::temp_dir().join(format!("trunk-binlog-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let log = TrunkBinlog::open(&dir).unwrap();
        let line = Line::parse("1 D 0 0 1 1 0 256").unwrap();
        let many: Vec<Line> = (0..5000).map(|_| line).collect();
        let size = log.append(&many).unwrap();
        assert_eq!(size, 18 * 5000);
        log.sync_through(size).unwrap();
        let first = log.read_from(0).unwrap();
        assert!(first.len() <= PUSH_MAX && first.ends_with(b"\n"));
        assert_eq!(first.len() % 18, 0);
        assert_eq!(log.lines().unwrap().len(), 5000);
        log.save_mark("127.0.0.9_23000", first.len() as u64)
            .unwrap();
        assert_eq!(log.load_mark("127.0.0.9_23000"), first.len() as u64);
        log.delete_marks().unwrap();
        assert_eq!(log.load_mark("127.0.0.9_23000"), 0);
        log.restart(2).unwrap();
        assert_eq!(log.size().unwrap(), 0);
        assert!(fs::read_dir(log.dir()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("binlog.")));
        log.append(&[line]).unwrap();
        log.restart(0).unwrap();
        assert_eq!(log.size().unwrap(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
