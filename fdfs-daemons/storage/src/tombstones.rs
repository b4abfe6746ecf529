//! Names deleted here recently. A peer that restarts resends the binlog records after
//! the last mark it saved, and may resend the creation of a file that was deleted here
//! in the meantime (through this storage, before the delete reached that peer). Without
//! a memory of the delete the copy would bring the file back on this storage only.
//!
//! A create is stale when this storage deleted the name at or after the create's time.
//! File names are never reused except for slave files uploaded again under the same
//! prefix, and those carry a later time. Metadata files (`<name>-m`) are removed and
//! created again freely: they are judged by their file's delete, not their own.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;

/// How long a delete is remembered, and at most how many.
const KEEP_SECS: i64 = 3600;
const KEEP_MAX: usize = 200_000;
/// How much of the binlog's end is read at start-up to remember earlier deletes.
const LOAD_TAIL: u64 = 16 << 20;

#[derive(Default)]
pub struct Tombstones {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// name -> (deleted at, recorded at).
    by_name: HashMap<String, (i64, i64)>,
    /// (recorded at, name), oldest first; a name recorded twice is queued twice.
    order: VecDeque<(i64, String)>,
}

impl Tombstones {
    /// Remembers that `name` was deleted at `deleted_at` (unix seconds); `now` drives
    /// the expiry.
    pub fn record(&self, name: &str, deleted_at: i64, now: i64) {
        if name.ends_with("-m") {
            return;
        }
        let mut g = self.inner.lock().unwrap();
        let e = g
            .by_name
            .entry(name.to_string())
            .or_insert((deleted_at, now));
        *e = (e.0.max(deleted_at), now);
        g.order.push_back((now, name.to_string()));
        while let Some((at, _)) = g.order.front() {
            if g.order.len() <= KEEP_MAX && *at > now - KEEP_SECS {
                break;
            }
            let (at, old) = g.order.pop_front().expect("front exists");
            // Forgotten only with its latest record.
            if g.by_name.get(&old).is_some_and(|&(_, rec)| rec == at) {
                g.by_name.remove(&old);
            }
        }
    }

    /// Was `name` deleted here at or after `created` (so a copy made at `created` is
    /// stale)?
    pub fn deleted_since(&self, name: &str, created: i64) -> bool {
        let name = name.strip_suffix("-m").unwrap_or(name);
        self.inner
            .lock()
            .unwrap()
            .by_name
            .get(name)
            .is_some_and(|&(t, _)| t >= created)
    }

    /// Remembers the deletes (`D` and `d` records) near the end of the binlog file.
    pub fn load_from_binlog(&self, path: &Path, now: i64) -> std::io::Result<usize> {
        let mut f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let start = len.saturating_sub(LOAD_TAIL);
        f.seek(SeekFrom::Start(start))?;
        let mut text = Vec::new();
        f.read_to_end(&mut text)?;
        let mut lines = text.split(|&b| b == b'\n');
        if start > 0 {
            lines.next(); // a partial first line
        }
        let mut n = 0;
        for line in lines {
            let mut parts = line.split(|&b| b == b' ');
            let (Some(ts), Some(op), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if op != b"D" && op != b"d" {
                continue;
            }
            let (Ok(ts), Ok(name)) = (
                std::str::from_utf8(ts).unwrap_or("").parse::<i64>(),
                std::str::from_utf8(name),
            ) else {
                continue;
            };
            self.record(name, ts, now);
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_creates_are_recognised() {
        let t = Tombstones::default();
        t.record("M00/00/00/a.txt", 100, 100);
        assert!(t.deleted_since("M00/00/00/a.txt", 90));
        assert!(t.deleted_since("M00/00/00/a.txt", 100));
        // A later create under the same name (a slave uploaded again) is not stale.
        assert!(!t.deleted_since("M00/00/00/a.txt", 101));
        assert!(!t.deleted_since("M00/00/00/b.txt", 0));
        // Metadata follows its file; its own deletes are not remembered.
        assert!(t.deleted_since("M00/00/00/a.txt-m", 100));
        t.record("M00/00/00/c.txt-m", 100, 100);
        assert!(!t.deleted_since("M00/00/00/c.txt-m", 100));
    }

    #[test]
    fn old_deletes_expire() {
        let t = Tombstones::default();
        t.record("M00/00/00/a.txt", 100, 100);
        t.record("M00/00/00/b.txt", 100 + KEEP_SECS + 1, 100 + KEEP_SECS + 1);
        assert!(!t.deleted_since("M00/00/00/a.txt", 0));
        assert!(t.deleted_since("M00/00/00/b.txt", 0));
    }

    #[test]
    fn loads_deletes_from_the_binlog_tail() {
        let dir = std::env::temp_dir().join(format!("fdfs-tomb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("binlog.000");
        std::fs::write(
            &p,
            "10 C M00/00/00/a.txt\n20 D M00/00/00/a.txt\n30 c M00/00/00/b.txt\n\
             40 d M00/00/00/b.txt\n50 C M00/00/00/c.txt\n",
        )
        .unwrap();
        let t = Tombstones::default();
        assert_eq!(t.load_from_binlog(&p, 60).unwrap(), 2);
        assert!(t.deleted_since("M00/00/00/a.txt", 10));
        assert!(t.deleted_since("M00/00/00/b.txt", 30));
        assert!(!t.deleted_since("M00/00/00/c.txt", 50));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
