//! File IDs: `group/Mxx/XX/YY/<27 base64 chars><7-char ext>`.
//!
//! The 27 characters are 20 packed bytes (source, timestamp, size field, CRC32), so any
//! client can learn where a file came from and how big it is without asking a server.

use std::net::Ipv4Addr;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

use crate::codec::ProtoError;
use crate::{valid_group_name, valid_name_part, EXT_NAME_MAX_LEN};

/// `M00/00/00/`
pub const LOGIC_PATH_LEN: usize = 10;
/// 20 bytes in base64 without padding.
pub const BASE64_LEN: usize = 27;
/// Random digits plus `.ext`, always this long.
pub const FEXT_LEN: usize = 7;
/// Remote name of a normal file.
pub const NORMAL_NAME_LEN: usize = LOGIC_PATH_LEN + BASE64_LEN + FEXT_LEN;
/// Remote name of a file packed in a trunk.
pub const TRUNK_NAME_LEN: usize = NORMAL_NAME_LEN + 16;
/// Longest remote filename a request may carry.
pub const REMOTE_NAME_MAX_LEN: usize = 127;

/// Size field bit 63: a normal file below 4 GiB, high word padded with random bits.
pub const SIZE_FLAG_SMALL: u64 = 1 << 63;
/// Size field bit 58: an appender file.
pub const SIZE_FLAG_APPENDER: u64 = 1 << 58;
/// Size field bit 59: a file packed in a trunk.
pub const SIZE_FLAG_TRUNK: u64 = 1 << 59;

const RANDOM_MASK: u64 = 0x007F_FFFF;

/// FastDFS's base64: standard alphabet with `-` and `_` for 62 and 63, no padding.
pub const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Where a file was first stored: an IPv4 address, or a numeric server id when the
/// cluster names storages by id (`id_type_in_filename = id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Ip(Ipv4Addr),
    ServerId(u32),
}

impl Source {
    /// Largest numeric server id; anything above decodes as an IPv4 address.
    pub const MAX_SERVER_ID: u32 = 0x00FF_FFFF;

    pub fn to_bytes(self) -> [u8; 4] {
        match self {
            Source::Ip(ip) => ip.octets(),
            // The id is stored little-endian, unlike every other field.
            Source::ServerId(id) => id.to_le_bytes(),
        }
    }

    pub fn from_bytes(raw: [u8; 4]) -> Self {
        let as_id = u32::from_le_bytes(raw);
        if as_id > 0 && as_id <= Self::MAX_SERVER_ID {
            Source::ServerId(as_id)
        } else {
            Source::Ip(Ipv4Addr::from(raw))
        }
    }
}

/// The 20 bytes behind the 27 base64 characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedName {
    pub source: Source,
    pub timestamp: u32,
    pub size_field: u64,
    pub crc32: u32,
}

impl PackedName {
    pub fn encode(&self) -> String {
        let mut raw = [0u8; 20];
        raw[..4].copy_from_slice(&self.source.to_bytes());
        raw[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        raw[8..16].copy_from_slice(&self.size_field.to_be_bytes());
        raw[16..20].copy_from_slice(&self.crc32.to_be_bytes());
        BASE64.encode(raw)
    }

    pub fn decode(text: &str) -> Result<Self, ProtoError> {
        if text.len() != BASE64_LEN {
            return Err(ProtoError::field(
                "file name",
                "packed part is not 27 chars",
            ));
        }
        // Decoded on the stack: the nginx module decodes one name per request.
        let mut raw = [0u8; 24];
        let n = BASE64
            .decode_slice(text, &mut raw)
            .map_err(|e| ProtoError::field("file name", e.to_string()))?;
        if n != 20 {
            return Err(ProtoError::field(
                "file name",
                "packed part is not 20 bytes",
            ));
        }
        Ok(PackedName {
            source: Source::from_bytes(raw[..4].try_into().unwrap()),
            timestamp: u32::from_be_bytes(raw[4..8].try_into().unwrap()),
            size_field: u64::from_be_bytes(raw[8..16].try_into().unwrap()),
            crc32: u32::from_be_bytes(raw[16..20].try_into().unwrap()),
        })
    }
}

/// Size field of a normal file; `random` fills the spare high bits below 4 GiB.
pub fn normal_size_field(size: u64, random: u32) -> u64 {
    if size < (1 << 32) {
        SIZE_FLAG_SMALL | ((random as u64 & RANDOM_MASK) << 32) | size
    } else {
        size
    }
}

/// Size field of an appender file: its size in the name means nothing, so it is zero.
pub fn appender_size_field(random: u32) -> u64 {
    SIZE_FLAG_SMALL | SIZE_FLAG_APPENDER | ((random as u64 & RANDOM_MASK) << 32)
}

/// The 7-character tail: random digits, then `.ext` when there is an extension.
/// `digits` supplies random decimal digits.
pub fn formatted_ext(ext: &str, mut digits: impl FnMut() -> u8) -> String {
    let mut out = String::with_capacity(FEXT_LEN);
    let pad = if ext.is_empty() {
        FEXT_LEN
    } else {
        EXT_NAME_MAX_LEN - ext.len()
    };
    for _ in 0..pad {
        out.push(char::from(b'0' + digits() % 10));
    }
    if !ext.is_empty() {
        out.push('.');
        out.push_str(ext);
    }
    out
}

/// Checks an upload's extension name (without the dot).
pub fn valid_ext(ext: &str) -> bool {
    ext.len() <= EXT_NAME_MAX_LEN && valid_name_part(ext)
}

/// The extension `fdfs_upload_file` derives from a local file name: the text after the last
/// `.` when it is at most 6 characters and has no `/`.
pub fn ext_from_local_name(name: &str) -> &str {
    match name.rfind('.') {
        Some(pos) => {
            let ext = &name[pos + 1..];
            if ext.len() <= EXT_NAME_MAX_LEN && !ext.contains('/') && valid_name_part(ext) {
                ext
            } else {
                ""
            }
        }
        None => "",
    }
}

/// Suffix of a file's metadata file, stored beside it as `<file>-m`. No upload, slave or
/// appender may get a name ending with it: that name belongs to another file's metadata.
pub const METADATA_SUFFIX: &str = "-m";
/// Suffix of the file new metadata is written into before it replaces `<file>-m`
/// (`<file>-m.tmp`, as upstream).
pub const METADATA_TEMP_SUFFIX: &str = "-m.tmp";

/// Whether a name being made (an upload's extension, a slave's prefix and extension)
/// ends like a metadata file's name (`-m`, `-m.tmp`). Broad on purpose: a new name must
/// not even look like metadata. Existing names are judged by
/// [`RemoteName::is_metadata`].
pub fn ends_like_metadata(name: &str) -> bool {
    name.ends_with(METADATA_SUFFIX) || name.ends_with(METADATA_TEMP_SUFFIX)
}

/// A remote filename, checked so that it can only name a file inside a store path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteName<'a> {
    pub store_path: u8,
    pub high: u8,
    pub low: u8,
    /// The file name inside `data/XX/YY/`.
    pub base: &'a str,
    pub full: &'a str,
}

impl<'a> RemoteName<'a> {
    /// Accepts exactly `M` + 2 uppercase hex, `/XX/YY/` uppercase hex, then a base name of
    /// `[A-Za-z0-9._-]` that is at least 27 chars long and does not start with `.`: no `/`,
    /// so the base is always one plain path component (never `.` or `..`). Dots inside it
    /// are kept: an upload whose ext is `.jpg` is named `…11..jpg`.
    pub fn parse(full: &'a str) -> Result<Self, ProtoError> {
        let bad = |why: &str| ProtoError::field("file name", format!("{why}: {full:?}"));
        let b = full.as_bytes();
        if b.len() > REMOTE_NAME_MAX_LEN {
            return Err(bad("too long"));
        }
        if b.len() < LOGIC_PATH_LEN + BASE64_LEN
            || b[0] != b'M'
            || b[3] != b'/'
            || b[6] != b'/'
            || b[9] != b'/'
        {
            return Err(bad("not of the form Mxx/XX/YY/name"));
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        let hex = |i: usize| -> Result<u8, ProtoError> {
            match (digit(b[i]), digit(b[i + 1])) {
                (Some(h), Some(l)) => Ok(h << 4 | l),
                _ => Err(bad("path part is not uppercase hex")),
            }
        };
        let store_path = hex(1)?;
        let high = hex(4)?;
        let low = hex(7)?;
        let base = &full[LOGIC_PATH_LEN..];
        if !valid_name_part(base) || base.starts_with('.') {
            return Err(bad("bad characters in name"));
        }
        Ok(RemoteName {
            store_path,
            high,
            low,
            base,
            full,
        })
    }

    /// Whether this names the metadata file of a data file (`<file>-m`), or the file new
    /// metadata is written into (`<file>-m.tmp`): the name without that suffix is itself
    /// a data file's name (at least a normal file name's length, and its 27 characters
    /// decode). Exact, not a suffix test: a file whose extension is `-m` (`…1234.-m`,
    /// which a C storage accepts) is a data file, since `…1234.` is not a file name.
    ///
    /// A slave whose prefix ends in `-m` and that has no extension has the very name of
    /// its master's metadata file on disk; such a name is taken as metadata.
    pub fn is_metadata(&self) -> bool {
        let stem = match self.full.strip_suffix(METADATA_SUFFIX) {
            Some(stem) => stem,
            None => match self.full.strip_suffix(METADATA_TEMP_SUFFIX) {
                Some(stem) => stem,
                None => return false,
            },
        };
        stem.len() >= NORMAL_NAME_LEN && RemoteName::parse(stem).and_then(|n| n.packed()).is_ok()
    }

    /// `XX/YY/base`, relative to `<store path>/data`.
    pub fn data_relative(&self) -> &'a str {
        &self.full[4..]
    }

    /// The 20 packed bytes of the name.
    pub fn packed(&self) -> Result<PackedName, ProtoError> {
        PackedName::decode(&self.base[..BASE64_LEN])
    }

    pub fn info(&self) -> Result<FileInfo, ProtoError> {
        FileInfo::from_remote(self)
    }
}

/// Builds `Mxx/XX/YY/<base>`.
pub fn remote_name(store_path: u8, high: u8, low: u8, base: &str) -> String {
    format!("M{store_path:02X}/{high:02X}/{low:02X}/{base}")
}

/// Splits a file ID at the first `/` into group name and remote filename.
pub fn split_file_id(file_id: &str) -> Result<(&str, &str), ProtoError> {
    let (group, remote) = file_id
        .split_once('/')
        .ok_or_else(|| ProtoError::field("file id", format!("no group part: {file_id:?}")))?;
    if !valid_group_name(group) {
        return Err(ProtoError::field(
            "file id",
            format!("bad group name {group:?}"),
        ));
    }
    RemoteName::parse(remote)?;
    Ok((group, remote))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Normal,
    Appender,
    Slave,
    Trunk,
}

/// What a file name says about its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    pub source: Source,
    pub timestamp: u32,
    pub file_size: u64,
    /// Meaningful for normal and trunk files only.
    pub crc32: u32,
    pub kind: FileKind,
}

impl FileInfo {
    pub fn from_remote(name: &RemoteName<'_>) -> Result<Self, ProtoError> {
        let packed = name.packed()?;
        let len = name.full.len();
        let trunk = packed.size_field & SIZE_FLAG_TRUNK != 0;
        // A slave keeps its master's 27 characters (and so its size and CRC32) under a
        // name of another length: only names of exactly a normal or trunk file's
        // length are what those 27 characters say.
        let kind = if packed.size_field & SIZE_FLAG_APPENDER != 0 {
            FileKind::Appender
        } else if trunk && len == TRUNK_NAME_LEN {
            FileKind::Trunk
        } else if !trunk && len == NORMAL_NAME_LEN {
            FileKind::Normal
        } else {
            FileKind::Slave
        };
        let file_size = if packed.size_field & SIZE_FLAG_SMALL != 0 || trunk {
            packed.size_field & 0xFFFF_FFFF
        } else {
            packed.size_field
        };
        Ok(FileInfo {
            source: packed.source,
            timestamp: packed.timestamp,
            file_size,
            crc32: packed.crc32,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt";

    #[test]
    fn reference_worked_example_decodes() {
        let name = RemoteName::parse(EXAMPLE).unwrap();
        assert_eq!((name.store_path, name.high, name.low), (0, 0, 0));
        let packed = name.packed().unwrap();
        assert_eq!(packed.source, Source::Ip(Ipv4Addr::new(127, 0, 0, 61)));
        assert_eq!(packed.timestamp, 1_795_475_304);
        assert_eq!(packed.size_field, 0x800D_3011_0000_000F);
        assert_eq!(packed.crc32, 0x02F9_BCEE);
        assert_eq!(packed.crc32, crate::crc32(b"Hello FastDFS!\n"));
        let info = name.info().unwrap();
        assert_eq!(info.kind, FileKind::Normal);
        assert_eq!(info.file_size, 15);
    }

    #[test]
    fn reference_worked_example_encodes() {
        let packed = PackedName {
            source: Source::Ip(Ipv4Addr::new(127, 0, 0, 61)),
            timestamp: 1_795_475_304,
            size_field: normal_size_field(15, 0x0D3011),
            crc32: 0x02F9_BCEE,
        };
        assert_eq!(packed.encode(), "fwAAPWsEx2iADTARAAAADwL5vO4");
        let id_twin = PackedName {
            source: Source::ServerId(100_001),
            ..packed
        };
        assert_eq!(id_twin.encode(), "oYYBAGsEx2iADTARAAAADwL5vO4");
        assert_eq!(
            PackedName::decode("oYYBAGsEx2iADTARAAAADwL5vO4")
                .unwrap()
                .source,
            Source::ServerId(100_001)
        );
    }

    #[test]
    fn formatted_ext_is_always_seven_chars() {
        let mut n = 0u8;
        let mut digits = || {
            n += 1;
            n
        };
        assert_eq!(formatted_ext("txt", &mut digits), "123.txt");
        assert_eq!(formatted_ext("", &mut digits), "4567890");
        assert_eq!(formatted_ext("abcdef", &mut digits), ".abcdef");
        assert_eq!(formatted_ext("jpeg", &mut digits), "12.jpeg");
    }

    #[test]
    fn appender_slave_and_large_sizes() {
        let app = appender_size_field(0x12345);
        assert_eq!(app & 0xFFFF_FFFF, 0);
        assert_ne!(app & SIZE_FLAG_APPENDER, 0);
        let name = remote_name(
            0,
            0,
            0,
            &format!(
                "{}141.txt",
                PackedName {
                    source: Source::Ip(Ipv4Addr::LOCALHOST),
                    timestamp: 1,
                    size_field: app,
                    crc32: 0
                }
                .encode()
            ),
        );
        let info = RemoteName::parse(&name).unwrap().info().unwrap();
        assert_eq!(info.kind, FileKind::Appender);
        // The captured slave name: the master's 27 chars, then prefix and ext.
        let slave = "M00/00/00/fwAAPWsEx3-AJPpFAAAADwL5vO4702_big.txt";
        let info = RemoteName::parse(slave).unwrap().info().unwrap();
        assert_eq!(info.kind, FileKind::Slave);
        // A slave without ext is shorter than a normal name: still a slave, whose size
        // and CRC32 are not the 27 characters' (those are its master's).
        let short = "M00/00/00/fwAAPWsEx3-AJPpFAAAADwL5vO4702_s";
        let info = RemoteName::parse(short).unwrap().info().unwrap();
        assert_eq!(info.kind, FileKind::Slave);
        assert_eq!(normal_size_field(5 << 32, 7), 5 << 32);
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "M00/00/00/../../../../etc/passwd",
            "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236/../x",
            "M00/../00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt",
            "M0G/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt",
            "M00/0a/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt",
            "/etc/passwd",
            "M00/00/00/short",
            "M00/00/00/.hidden-file-with-27-or-more-chars",
            "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.t\0xt",
        ] {
            assert!(RemoteName::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(split_file_id("group1/M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt").is_ok());
        assert!(split_file_id("../M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt").is_err());
        assert!(split_file_id("group1").is_err());
    }

    /// Fuzz regression (fuzz/fuzz_targets/file_id.rs): `..` inside a name is accepted and
    /// harmless, the name stays one path component inside `data/XX/YY/`.
    #[test]
    fn dots_inside_a_name_stay_one_component() {
        use std::path::{Component, Path};
        for ok in [
            "M23/03/23/0AAAAAA3yyAAAAAA3yyyyyyyyyyyppppppAAAggA--..A",
            "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO41..jpg",
        ] {
            let name = RemoteName::parse(ok).unwrap();
            let rel = Path::new(name.data_relative());
            assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
            assert_eq!(rel.components().count(), 3);
        }
        assert_eq!(formatted_ext(".jpg", || 1), "11..jpg");
    }

    #[test]
    fn metadata_names_exactly() {
        for name in [
            "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt-m",
            "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt-m.tmp",
            // of a file without extension, of a slave
            "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO41234567-m",
            "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236_big.txt-m",
        ] {
            assert!(RemoteName::parse(name).unwrap().is_metadata(), "{name}");
        }
        for name in [
            EXAMPLE,
            // data files whose extension is "-m" or "-m.tmp" (a C storage takes them)
            "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO41234.-m",
            "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4.-m.tmp",
            // a slave with the prefix "-m" of a master with an extension
            "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236-m.txt",
            // the rest is too short for a file name
            "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4-m",
        ] {
            assert!(!RemoteName::parse(name).unwrap().is_metadata(), "{name}");
        }
        // new names: anything ending like metadata is refused
        for tail in ["-m", "x-m", "-m.tmp", "_s-m.tmp"] {
            assert!(ends_like_metadata(tail), "{tail}");
        }
        for tail in ["m", "-mx", "jpg", "-m.tm"] {
            assert!(!ends_like_metadata(tail), "{tail}");
        }
    }

    #[test]
    fn ext_from_local_name_follows_upload_tool() {
        assert_eq!(ext_from_local_name("/tmp/a.jpg"), "jpg");
        assert_eq!(ext_from_local_name("/tmp/a.toolongext"), "");
        assert_eq!(ext_from_local_name("/tmp.d/noext"), "");
        assert_eq!(ext_from_local_name("noext"), "");
    }
}
