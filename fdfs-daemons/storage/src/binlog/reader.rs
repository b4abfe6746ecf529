//! Reads the binlog from a position onwards, record by record, across file rotation.
//!
//! A record that does not parse (a torn line left by a crash, garbage) is logged, counted
//! and skipped: it never stops replication. A line without its newline at the end of the
//! file being written is not a record yet; the reader waits for the rest.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{file_name, BinlogPos, Record};

/// Bytes read from the file at once.
const READ_CHUNK: usize = 64 * 1024;

/// A record read, with where it ends in the binlog (where a reader that has handled it
/// resumes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub record: Record,
    /// The position just after this record.
    pub end: BinlogPos,
}

pub struct BinlogReader {
    dir: PathBuf,
    /// Position of the next unread byte (start of the next record).
    pos: BinlogPos,
    file: Option<File>,
    /// Bytes read after `pos` that do not yet make a whole line.
    pending: Vec<u8>,
    /// Malformed records skipped so far.
    pub malformed: u64,
}

impl BinlogReader {
    pub fn new(dir: &Path, pos: BinlogPos) -> Self {
        BinlogReader {
            dir: dir.to_path_buf(),
            pos,
            file: None,
            pending: Vec::new(),
            malformed: 0,
        }
    }

    /// Where the next record starts.
    pub fn position(&self) -> BinlogPos {
        self.pos
    }

    fn skip_to_next_file(&mut self) {
        if !self.pending.is_empty() {
            tracing::warn!(
                "binlog.{:03}: torn last record of {} bytes skipped",
                self.pos.index,
                self.pending.len()
            );
            self.malformed += 1;
        }
        self.pos = BinlogPos {
            index: self.pos.index + 1,
            offset: 0,
        };
        self.file = None;
        self.pending.clear();
    }

    /// Reads up to `max` whole records that are in the binlog now. `write_index` is the
    /// index of the file being written: older files are finished, so their end means
    /// "go on with the next file".
    pub fn read_batch(&mut self, max: usize, write_index: u32) -> io::Result<Vec<Logged>> {
        let mut out = Vec::new();
        while out.len() < max {
            // Whole lines already buffered first.
            if let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                self.pos.offset += line.len() as u64;
                let text = &line[..line.len() - 1];
                match std::str::from_utf8(text).ok().and_then(Record::parse) {
                    Some(record) => out.push(Logged {
                        record,
                        end: self.pos,
                    }),
                    None => {
                        self.malformed += 1;
                        tracing::warn!(
                            "binlog.{:03} offset {}: malformed record {:?} skipped",
                            self.pos.index,
                            self.pos.offset - line.len() as u64,
                            String::from_utf8_lossy(text)
                        );
                    }
                }
                continue;
            }
            if self.file.is_none() {
                match File::open(file_name(&self.dir, self.pos.index)) {
                    Ok(mut f) => {
                        f.seek(SeekFrom::Start(self.pos.offset))?;
                        self.file = Some(f);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        if self.pos.index < write_index {
                            self.skip_to_next_file();
                            continue;
                        }
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            let f = self.file.as_mut().expect("opened above");
            let start = self.pending.len();
            self.pending.resize(start + READ_CHUNK, 0);
            let n = f.read(&mut self.pending[start..])?;
            self.pending.truncate(start + n);
            if n == 0 {
                if self.pos.index < write_index {
                    self.skip_to_next_file();
                    continue;
                }
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fdfs-reader-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_across_rotation_and_skips_garbage() {
        let d = dir("rot");
        fs::write(
            d.join("binlog.000"),
            "1 C M00/00/00/a\n2 D M00/0garbage3 C x\n\n4 A M00/00/00/b 0 5\n5 C M00/00/00/torn",
        )
        .unwrap();
        fs::write(d.join("binlog.001"), "6 C M00/00/00/c\n7 U M00/00/00/c\n").unwrap();
        let mut r = BinlogReader::new(&d, BinlogPos::default());
        // File 0 is still being written: the torn tail is waited for, not skipped.
        let got = r.read_batch(100, 0).unwrap();
        let names: Vec<_> = got.iter().map(|r| r.record.name.as_str()).collect();
        assert_eq!(names, ["M00/00/00/a", "M00/00/00/b"]);
        assert_eq!(
            got[1].record.change,
            crate::binlog::Change::Append {
                offset: 0,
                length: 5
            }
        );
        assert_eq!(r.malformed, 2);
        let before = r.position();
        assert_eq!(before.index, 0);
        // The writer moved on to file 1: the torn record is skipped and counted.
        let got = r.read_batch(1, 1).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].record.name, "M00/00/00/c");
        assert_eq!(
            got[0].end,
            BinlogPos {
                index: 1,
                offset: 16
            }
        );
        assert_eq!(r.malformed, 3);
        let got = r.read_batch(100, 1).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].record.change, crate::binlog::Change::Update);
        assert!(r.read_batch(100, 1).unwrap().is_empty());
        // New records appear at the end; a half-written one waits for its newline.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(d.join("binlog.001"))
            .unwrap();
        f.write_all(b"8 D M00/00/00/c\n9 C M00/0").unwrap();
        let got = r.read_batch(100, 1).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].record.timestamp, 8);
        f.write_all(b"0/00/d\n").unwrap();
        let got = r.read_batch(100, 1).unwrap();
        assert_eq!(got[0].record.name, "M00/00/00/d");
        assert_eq!(
            r.position(),
            BinlogPos {
                index: 1,
                offset: 64
            }
        );
        // A reader resumed from a saved position sees only what follows.
        let mut again = BinlogReader::new(
            &d,
            BinlogPos {
                index: 1,
                offset: 32,
            },
        );
        let got = again.read_batch(100, 1).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].record.timestamp, 8);
        let _ = fs::remove_dir_all(d);
    }
}
