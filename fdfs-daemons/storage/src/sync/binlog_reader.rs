//! Reads the binlog from a position onwards, record by record, across file rotation.
//!
//! A record that does not parse (a torn line left by a crash, garbage) is logged, counted
//! and skipped: it never stops replication. A line without its newline at the end of the
//! file being written is not a record yet; the reader waits for the rest.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::binlog::{file_name, BinlogPos};

/// Bytes read from the file at once.
const READ_CHUNK: usize = 64 * 1024;

/// One binlog record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub timestamp: i64,
    pub op: char,
    pub name: String,
    /// Second name (L, R) or the two numbers (A, M, T), as written.
    pub extra: Option<String>,
    /// The position just after this record.
    pub end: BinlogPos,
}

impl Record {
    /// The two numbers of an A/M/T record.
    pub fn numbers(&self) -> Option<(u64, u64)> {
        let (a, b) = self.extra.as_deref()?.split_once(' ')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }
}

/// Parses one line (without its newline): `<ts> <op> <name>[ <extra>]`.
pub fn parse_line(line: &str) -> Option<(i64, char, String, Option<String>)> {
    let mut parts = line.splitn(3, ' ');
    let ts = parts.next()?;
    if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let timestamp: i64 = ts.parse().ok()?;
    let op_text = parts.next()?;
    let mut chars = op_text.chars();
    let op = chars.next()?;
    if chars.next().is_some() || !"CDUAMTLRcduamtlr".contains(op) {
        return None;
    }
    let rest = parts.next()?;
    let (name, extra) = match rest.split_once(' ') {
        Some((n, x)) => (n, Some(x)),
        None => (rest, None),
    };
    if name.is_empty() {
        return None;
    }
    let extra_ok = match op.to_ascii_uppercase() {
        'A' | 'M' | 'T' => extra.is_some_and(|x| {
            let v: Vec<&str> = x.split(' ').collect();
            v.len() == 2 && v.iter().all(|n| n.parse::<u64>().is_ok())
        }),
        'L' | 'R' => extra.is_some_and(|x| !x.is_empty() && !x.contains(' ')),
        _ => extra.is_none(),
    };
    if !extra_ok {
        return None;
    }
    Some((timestamp, op, name.to_string(), extra.map(str::to_string)))
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
    pub fn read_batch(&mut self, max: usize, write_index: u32) -> io::Result<Vec<Record>> {
        let mut out = Vec::new();
        while out.len() < max {
            // Whole lines already buffered first.
            if let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                self.pos.offset += line.len() as u64;
                let text = &line[..line.len() - 1];
                match std::str::from_utf8(text).ok().and_then(parse_line) {
                    Some((timestamp, op, name, extra)) => out.push(Record {
                        timestamp,
                        op,
                        name,
                        extra,
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
    fn lines_parse_with_their_extras() {
        assert_eq!(
            parse_line("1795475354 T M00/00/00/b.txt 15 7"),
            Some((
                1795475354,
                'T',
                "M00/00/00/b.txt".into(),
                Some("15 7".into())
            ))
        );
        assert_eq!(
            parse_line("5 c M00/00/00/a"),
            Some((5, 'c', "M00/00/00/a".into(), None))
        );
        assert!(parse_line("5 R M00/00/00/new M00/00/00/old").is_some());
        assert!(parse_line("").is_none());
        assert!(parse_line("x C M00/a").is_none());
        assert!(parse_line("5 X M00/a").is_none());
        assert!(parse_line("5 CC M00/a").is_none());
        assert!(parse_line("5 A M00/a 1").is_none());
        assert!(parse_line("5 A M00/a 1 z").is_none());
        assert!(parse_line("5 C M00/a extra").is_none());
        assert!(parse_line("5 R M00/a").is_none());
        assert!(parse_line("5 C ").is_none());
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
        let names: Vec<_> = got.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["M00/00/00/a", "M00/00/00/b"]);
        assert_eq!(got[1].numbers(), Some((0, 5)));
        assert_eq!(r.malformed, 2);
        let before = r.position();
        assert_eq!(before.index, 0);
        // The writer moved on to file 1: the torn record is skipped and counted.
        let got = r.read_batch(1, 1).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "M00/00/00/c");
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
        assert_eq!(got[0].op, 'U');
        assert!(r.read_batch(100, 1).unwrap().is_empty());
        // New records appear at the end; a half-written one waits for its newline.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(d.join("binlog.001"))
            .unwrap();
        f.write_all(b"8 D M00/00/00/c\n9 C M00/0").unwrap();
        let got = r.read_batch(100, 1).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].timestamp, 8);
        f.write_all(b"0/00/d\n").unwrap();
        let got = r.read_batch(100, 1).unwrap();
        assert_eq!(got[0].name, "M00/00/00/d");
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
        assert_eq!(got[0].timestamp, 8);
        let _ = fs::remove_dir_all(d);
    }
}
