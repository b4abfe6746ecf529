//! Trunk files (`use_trunk_file = true`): small files packed into large preallocated
//! files. A trunk-stored file's ID is 16 characters longer than a normal one:
//!
//! ```text
//! M00/HH/LL/<27 packed chars><16 location chars><7-char ext>     60 characters
//! ```
//!
//! `HH/LL` is the directory of the trunk file (chosen when it was created), the location
//! is the trunk file's id, the slot's offset in it and the slot's size, and the slot
//! starts with a 24-byte header that repeats what the ID says, so a reader can tell a
//! live slot from a freed or reused one.

use crate::codec::ProtoError;
use crate::fileid::{RemoteName, BASE64, BASE64_LEN, FEXT_LEN, TRUNK_NAME_LEN};
use base64::Engine;

/// Characters of the location part.
pub const LOCATION_LEN: usize = 16;
/// Bytes of the slot header before the content.
pub const SLOT_HEADER_LEN: usize = 24;

/// Slot type byte: a regular file.
pub const SLOT_FILE: u8 = b'F';
/// Slot type byte: a link.
pub const SLOT_LINK: u8 = b'L';
/// Slot type byte: free space.
pub const SLOT_FREE: u8 = 0;

/// Where a trunk-stored file is: trunk file, offset of its slot, size of the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub trunk_id: u32,
    pub offset: u32,
    pub alloc_size: u32,
}

impl Location {
    pub fn encode(&self) -> String {
        let mut raw = [0u8; 12];
        raw[..4].copy_from_slice(&self.trunk_id.to_be_bytes());
        raw[4..8].copy_from_slice(&self.offset.to_be_bytes());
        raw[8..].copy_from_slice(&self.alloc_size.to_be_bytes());
        BASE64.encode(raw)
    }

    pub fn decode(text: &str) -> Result<Self, ProtoError> {
        let bad = |why: &str| ProtoError::field("trunk location", format!("{why}: {text:?}"));
        if text.len() != LOCATION_LEN {
            return Err(bad("not 16 characters"));
        }
        let mut raw = [0u8; 16];
        let n = BASE64
            .decode_slice(text, &mut raw)
            .map_err(|_| bad("not base64"))?;
        if n != 12 {
            return Err(bad("not 12 bytes"));
        }
        let word = |i: usize| u32::from_be_bytes(raw[i..i + 4].try_into().unwrap());
        Ok(Location {
            trunk_id: word(0),
            offset: word(4),
            alloc_size: word(8),
        })
    }

    /// The trunk file's name inside `data/HH/LL/`: its id, at least six digits.
    pub fn trunk_file_name(&self) -> String {
        format!("{:06}", self.trunk_id)
    }

    /// Where the content starts in the trunk file.
    pub fn content_offset(&self) -> u64 {
        self.offset as u64 + SLOT_HEADER_LEN as u64
    }
}

/// A region of a trunk file as the trunk server hands it out (27's reply, 28's and 29's
/// bodies, a trunk binlog line): store path, the trunk file's directory, its id, and the
/// region's offset and size (header included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot {
    pub path: u8,
    pub high: u8,
    pub low: u8,
    pub trunk_id: u32,
    pub offset: u32,
    pub size: u32,
}

impl Slot {
    /// Bytes on the wire.
    pub const LEN: usize = 15;

    pub fn encode(&self) -> [u8; Slot::LEN] {
        let mut out = [0u8; Slot::LEN];
        out[0] = self.path;
        out[1] = self.high;
        out[2] = self.low;
        out[3..7].copy_from_slice(&self.trunk_id.to_be_bytes());
        out[7..11].copy_from_slice(&self.offset.to_be_bytes());
        out[11..].copy_from_slice(&self.size.to_be_bytes());
        out
    }

    pub fn decode(raw: &[u8]) -> Result<Slot, ProtoError> {
        if raw.len() != Slot::LEN {
            return Err(ProtoError::length(Slot::LEN, raw.len()));
        }
        let word = |i: usize| u32::from_be_bytes(raw[i..i + 4].try_into().unwrap());
        let slot = Slot {
            path: raw[0],
            high: raw[1],
            low: raw[2],
            trunk_id: word(3),
            offset: word(7),
            size: word(11),
        };
        // The wire fields are signed 32-bit integers.
        if [slot.trunk_id, slot.offset, slot.size]
            .iter()
            .any(|v| *v > i32::MAX as u32)
        {
            return Err(ProtoError::field("trunk slot", format!("{slot:?}")));
        }
        Ok(slot)
    }

    /// The location part of the name of a file stored in this slot.
    pub fn location(&self) -> Location {
        Location {
            trunk_id: self.trunk_id,
            offset: self.offset,
            alloc_size: self.size,
        }
    }

    /// The slot a trunk-stored file `name` occupies.
    pub fn of(name: &RemoteName<'_>) -> Option<Slot> {
        let location = location_of(name)?.ok()?;
        Some(Slot {
            path: name.store_path,
            high: name.high,
            low: name.low,
            trunk_id: location.trunk_id,
            offset: location.offset,
            size: location.alloc_size,
        })
    }

    /// Where the content starts in the trunk file.
    pub fn content_offset(&self) -> u64 {
        self.offset as u64 + SLOT_HEADER_LEN as u64
    }

    /// The trunk file's name inside `data/HH/LL/`.
    pub fn trunk_file_name(&self) -> String {
        self.location().trunk_file_name()
    }
}

/// A trunk file id in base64 (upstream picks the trunk file's directory from it when
/// directories are chosen by hash).
pub fn trunk_id_text(id: u32) -> String {
    BASE64.encode(id.to_be_bytes())
}

/// Whether a slot header on disk leaves the slot free for a new file: upstream counts
/// it free when the CRC32, time and extension are zero, whatever the rest says.
pub fn slot_is_free(raw: &[u8; SLOT_HEADER_LEN]) -> bool {
    raw[9..].iter().all(|b| *b == 0)
}

/// The location part of a trunk-stored file's name, `None` for other names.
pub fn location_of(name: &RemoteName<'_>) -> Option<Result<Location, ProtoError>> {
    if name.full.len() != TRUNK_NAME_LEN {
        return None;
    }
    let text = &name.base[BASE64_LEN..BASE64_LEN + LOCATION_LEN];
    Some(Location::decode(text))
}

/// The 24 bytes in front of a slot's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotHeader {
    pub kind: u8,
    pub alloc_size: u32,
    pub file_size: u32,
    pub crc32: u32,
    pub mtime: u32,
    /// The last 7 characters of the file's name.
    pub ext: [u8; FEXT_LEN],
}

impl SlotHeader {
    pub fn encode(&self) -> [u8; SLOT_HEADER_LEN] {
        let mut out = [0u8; SLOT_HEADER_LEN];
        out[0] = self.kind;
        out[1..5].copy_from_slice(&self.alloc_size.to_be_bytes());
        out[5..9].copy_from_slice(&self.file_size.to_be_bytes());
        out[9..13].copy_from_slice(&self.crc32.to_be_bytes());
        out[13..17].copy_from_slice(&self.mtime.to_be_bytes());
        out[17..].copy_from_slice(&self.ext);
        out
    }

    pub fn decode(raw: &[u8; SLOT_HEADER_LEN]) -> SlotHeader {
        let word = |i: usize| u32::from_be_bytes(raw[i..i + 4].try_into().unwrap());
        SlotHeader {
            kind: raw[0],
            alloc_size: word(1),
            file_size: word(5),
            crc32: word(9),
            mtime: word(13),
            ext: raw[17..].try_into().unwrap(),
        }
    }

    /// The header a live slot of the file `name` holds, rebuilt from its name: a slot
    /// whose header differs was freed or reused, and the file is gone.
    pub fn expected(name: &RemoteName<'_>) -> Result<SlotHeader, ProtoError> {
        let location = location_of(name)
            .ok_or_else(|| ProtoError::field("file name", "not a trunk file name"))??;
        let packed = name.packed()?;
        let ext: [u8; FEXT_LEN] = name.base.as_bytes()[name.base.len() - FEXT_LEN..]
            .try_into()
            .unwrap();
        Ok(SlotHeader {
            kind: SLOT_FILE,
            alloc_size: location.alloc_size,
            file_size: (packed.size_field & 0xFFFF_FFFF) as u32,
            crc32: packed.crc32,
            mtime: packed.timestamp,
            ext,
        })
    }

    /// Whether the slot on disk (`self`) holds the file `expected` describes; a link
    /// slot holds it too.
    pub fn holds(&self, expected: &SlotHeader) -> bool {
        let mut as_file = *self;
        if as_file.kind == SLOT_LINK {
            as_file.kind = SLOT_FILE;
        }
        as_file == *expected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fileid::FileKind;

    /// The worked example of the reference notes: 15 bytes from 192.168.0.196, in trunk
    /// file 1 at offset 0, a 256-byte slot.
    const EXAMPLE: &str = "M00/00/01/wKgAxGsEx2iIDTARAAAADwL5vO4AAAAAQAAAAAAAAEA236.txt";

    #[test]
    fn worked_example() {
        let name = RemoteName::parse(EXAMPLE).unwrap();
        assert_eq!(name.info().unwrap().kind, FileKind::Trunk);
        assert_eq!(name.info().unwrap().file_size, 15);
        let loc = location_of(&name).unwrap().unwrap();
        assert_eq!(
            loc,
            Location {
                trunk_id: 1,
                offset: 0,
                alloc_size: 256
            }
        );
        assert_eq!(loc.encode(), "AAAAAQAAAAAAAAEA");
        assert_eq!(loc.trunk_file_name(), "000001");
        assert_eq!(loc.content_offset(), 24);
        let header = SlotHeader::expected(&name).unwrap();
        assert_eq!(header.alloc_size, 256);
        assert_eq!(header.file_size, 15);
        assert_eq!(header.crc32, 0x02f9_bcee);
        assert_eq!(header.mtime, 0x6b04_c768);
        assert_eq!(&header.ext, b"236.txt");
        let raw = header.encode();
        assert_eq!(raw[0], b'F');
        assert_eq!(&raw[1..5], &[0, 0, 1, 0]);
        assert_eq!(&raw[5..9], &[0, 0, 0, 15]);
        assert_eq!(SlotHeader::decode(&raw), header);
        // A freed slot (zeroed) or one reused for another file does not hold it.
        assert!(!SlotHeader::decode(&[0; 24]).holds(&header));
        let mut other = header;
        other.crc32 ^= 1;
        assert!(!other.holds(&header));
        let mut link = header;
        link.kind = SLOT_LINK;
        assert!(link.holds(&header));
    }

    #[test]
    fn slots_travel_in_fifteen_bytes() {
        let slot = Slot {
            path: 0,
            high: 0,
            low: 1,
            trunk_id: 1,
            offset: 0,
            size: 256,
        };
        let raw = slot.encode();
        assert_eq!(raw, [0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(Slot::decode(&raw).unwrap(), slot);
        assert!(Slot::decode(&raw[..14]).is_err());
        let mut negative = raw;
        negative[11] = 0x80;
        assert!(Slot::decode(&negative).is_err());
        let name = RemoteName::parse(EXAMPLE).unwrap();
        assert_eq!(Slot::of(&name), Some(slot));
        assert_eq!(slot.location().encode(), "AAAAAQAAAAAAAAEA");
        // Free: nothing in the CRC32, time and extension fields.
        let mut header = [0u8; SLOT_HEADER_LEN];
        header[0] = b'F';
        header[4] = 1;
        assert!(slot_is_free(&header));
        header[20] = b'x';
        assert!(!slot_is_free(&header));
    }

    #[test]
    fn other_names_have_no_location() {
        let normal = RemoteName::parse("M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt").unwrap();
        assert!(location_of(&normal).is_none());
        assert!(Location::decode("AAAA").is_err());
        assert!(Location::decode("AAAAAQAAAAAAAA*A").is_err());
        assert_eq!(
            Location {
                trunk_id: 1_234_567,
                offset: 0,
                alloc_size: 1
            }
            .trunk_file_name(),
            "1234567"
        );
    }
}
