//! One binlog record: a change to one file, who made it, and when.
//!
//! On disk a record is one line, `<timestamp> <op> <remote filename>[ <extra>]`, as
//! FastDFS writes it (C peers and tools read ours, we read theirs). The op letter says
//! what changed; its case says where: uppercase for a change made on this storage (a
//! client asked it), lowercase for a change a peer sent. The extra field holds a second
//! name (links, renames) or two numbers (appends, modifies, truncates).

use std::fmt;
use std::io::Write;

/// Where a change was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// On this storage: it is the file's source and replicates the change.
    Here,
    /// On a peer, which sent it here (only a new member is sent these, §6.1).
    Peer,
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `C`: a new file (an upload, a slave file, a metadata file's first write).
    Create,
    /// `U`: a file replaced whole (metadata rewritten; an appender listed by recovery).
    Update,
    /// `D`: a file removed.
    Delete,
    /// `A`: `length` bytes appended at `offset`.
    Append { offset: u64, length: u64 },
    /// `M`: `length` bytes overwritten at `offset`.
    Modify { offset: u64, length: u64 },
    /// `T`: cut from `old_size` to `new_size`.
    Truncate { old_size: u64, new_size: u64 },
    /// `L`: the record's name is a symbolic link to `target`.
    Link { target: String },
    /// `R`: the record's name is what the appender `from` was renamed to.
    Rename { from: String },
}

impl Change {
    /// The op letter of a change made here (a peer's is its lowercase).
    pub fn letter(&self) -> char {
        match self {
            Change::Create => 'C',
            Change::Update => 'U',
            Change::Delete => 'D',
            Change::Append { .. } => 'A',
            Change::Modify { .. } => 'M',
            Change::Truncate { .. } => 'T',
            Change::Link { .. } => 'L',
            Change::Rename { .. } => 'R',
        }
    }

    /// A whole file goes to the peer (or, for a delete, only its name): the changes a
    /// sender may pipeline.
    pub fn is_whole_file(&self) -> bool {
        matches!(self, Change::Create | Change::Update | Change::Delete)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub timestamp: i64,
    pub origin: Origin,
    /// The remote filename (`M00/00/00/...`) the change is about.
    pub name: String,
    pub change: Change,
}

impl Record {
    pub fn new(timestamp: i64, origin: Origin, name: impl Into<String>, change: Change) -> Self {
        Record {
            timestamp,
            origin,
            name: name.into(),
            change,
        }
    }

    /// A change made here.
    pub fn here(timestamp: i64, name: impl Into<String>, change: Change) -> Self {
        Record::new(timestamp, Origin::Here, name, change)
    }

    /// A change a peer sent.
    pub fn from_peer(timestamp: i64, name: impl Into<String>, change: Change) -> Self {
        Record::new(timestamp, Origin::Peer, name, change)
    }

    /// The op letter as written: its case tells the origin.
    pub fn op(&self) -> char {
        let c = self.change.letter();
        match self.origin {
            Origin::Here => c,
            Origin::Peer => c.to_ascii_lowercase(),
        }
    }

    /// Appends the record's line (with its newline) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail.
        let _ = writeln!(out, "{self}");
    }

    /// Parses one line without its newline. `None` for anything that is not a whole,
    /// well-formed record.
    pub fn parse(line: &str) -> Option<Record> {
        let mut parts = line.splitn(3, ' ');
        let ts = parts.next()?;
        if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let timestamp: i64 = ts.parse().ok()?;
        let mut op = parts.next()?.chars();
        let letter = op.next()?;
        if op.next().is_some() {
            return None;
        }
        let origin = if letter.is_ascii_uppercase() {
            Origin::Here
        } else {
            Origin::Peer
        };
        let rest = parts.next()?;
        let (name, extra) = match rest.split_once(' ') {
            Some((n, x)) => (n, Some(x)),
            None => (rest, None),
        };
        if name.is_empty() {
            return None;
        }
        let numbers = || -> Option<(u64, u64)> {
            let (a, b) = extra?.split_once(' ')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        };
        let other_name = || extra.filter(|x| !x.is_empty() && !x.contains(' '));
        let change = match letter.to_ascii_uppercase() {
            'C' | 'U' | 'D' if extra.is_some() => return None,
            'C' => Change::Create,
            'U' => Change::Update,
            'D' => Change::Delete,
            'A' => {
                let (offset, length) = numbers()?;
                Change::Append { offset, length }
            }
            'M' => {
                let (offset, length) = numbers()?;
                Change::Modify { offset, length }
            }
            'T' => {
                let (old_size, new_size) = numbers()?;
                Change::Truncate { old_size, new_size }
            }
            'L' => Change::Link {
                target: other_name()?.to_string(),
            },
            'R' => Change::Rename {
                from: other_name()?.to_string(),
            },
            _ => return None,
        };
        Some(Record {
            timestamp,
            origin,
            name: name.to_string(),
            change,
        })
    }
}

impl fmt::Display for Record {
    /// The record's line, without its newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.timestamp, self.op(), self.name)?;
        match &self.change {
            Change::Create | Change::Update | Change::Delete => Ok(()),
            Change::Append { offset, length } | Change::Modify { offset, length } => {
                write!(f, " {offset} {length}")
            }
            Change::Truncate { old_size, new_size } => write!(f, " {old_size} {new_size}"),
            Change::Link { target } => write!(f, " {target}"),
            Change::Rename { from } => write!(f, " {from}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_typed_changes() {
        assert_eq!(
            Record::parse("1795475354 T M00/00/00/b.txt 15 7"),
            Some(Record::here(
                1795475354,
                "M00/00/00/b.txt",
                Change::Truncate {
                    old_size: 15,
                    new_size: 7
                }
            ))
        );
        assert_eq!(
            Record::parse("5 c M00/00/00/a"),
            Some(Record::from_peer(5, "M00/00/00/a", Change::Create))
        );
        assert_eq!(
            Record::parse("5 R M00/00/00/new M00/00/00/old"),
            Some(Record::here(
                5,
                "M00/00/00/new",
                Change::Rename {
                    from: "M00/00/00/old".into()
                }
            ))
        );
        assert_eq!(
            Record::parse("9 a M00/00/00/x 10 20").map(|r| r.change),
            Some(Change::Append {
                offset: 10,
                length: 20
            })
        );
        for bad in [
            "",
            "x C M00/a",
            "5 X M00/a",
            "5 CC M00/a",
            "5 A M00/a 1",
            "5 A M00/a 1 z",
            "5 C M00/a extra",
            "5 R M00/a",
            "5 L M00/a b c",
            "5 C ",
            "-5 C M00/a",
        ] {
            assert_eq!(Record::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_change_is_written_as_upstream_writes_it() {
        let lines = [
            "1 C M00/00/00/a",
            "2 u M00/00/00/a",
            "3 D M00/00/00/a-m",
            "4 A M00/00/00/b 0 5",
            "5 m M00/00/00/b 2 3",
            "6 T M00/00/00/b 5 1",
            "7 l M00/00/00/link M00/00/00/a",
            "8 R M00/00/00/new M00/00/00/old",
        ];
        let mut out = Vec::new();
        for l in lines {
            let r = Record::parse(l).unwrap();
            assert_eq!(r.to_string(), l);
            r.write_to(&mut out);
        }
        assert_eq!(String::from_utf8(out).unwrap(), lines.join("\n") + "\n");
    }
}
