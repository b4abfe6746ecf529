//! Storage ↔ storage: replication inside a group (§3.6) and the binlog of one store
//! path a recovering storage fetches (26).

use super::*;

fn sync_group(r: &mut Reader<'_>) -> Result<String, ProtoError> {
    get_group(r)
}

/// Header status of a 9 REPORT_SERVER_ID request by which a sender asks whether the
/// receiver answers pipelined replication requests. Upstream storages ignore a request's
/// status and answer with an empty body; this implementation answers
/// [`PIPELINE_ANSWER`] as the body, and only then may requests be pipelined to it.
pub const PIPELINE_ASK: u8 = b'P';

pub const PIPELINE_ANSWER: &[u8] = b"pipeline";

/// Body of 9 REPORT_SERVER_ID: the sender's id, NUL padded to 16 bytes (an empty id is
/// invalid).
pub fn encode_server_id(id: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.fixed_str(id, STORAGE_ID_LEN);
    w.finish()
}

pub fn decode_server_id(body: &[u8]) -> Result<String, ProtoError> {
    if body.len() != STORAGE_ID_LEN {
        return Err(ProtoError::length(STORAGE_ID_LEN, body.len()));
    }
    let id = Reader::new(body).fixed_str(STORAGE_ID_LEN, "server id")?;
    if id.is_empty() {
        return Err(ProtoError::field("server id", "empty"));
    }
    Ok(id)
}

/// Head of 16 SYNC_CREATE_FILE / 18 SYNC_UPDATE_FILE: 36 fixed bytes, then the filename,
/// then the content (omitted when the request header's status is EEXIST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFileHead {
    pub filename_len: usize,
    pub file_size: u64,
    /// The source's record timestamp.
    pub timestamp: i32,
    pub group: String,
}

impl SyncFileHead {
    pub const LEN: usize = 8 + 8 + 4 + GROUP_NAME_LEN;

    /// The fixed head followed by the filename (the content is streamed after it).
    pub fn encode(&self, filename: &str) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::LEN + filename.len());
        w.i64(filename.len() as i64)
            .i64(self.file_size as i64)
            .i32(self.timestamp)
            .fixed_str(&self.group, GROUP_NAME_LEN)
            .bytes(filename.as_bytes());
        w.finish()
    }

    pub fn decode(head: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(head);
        let filename_len = filename_len(&mut r, 1)?;
        let file_size = r.len_field("file size", i64::MAX)?;
        let timestamp = r.i32()?;
        let group = sync_group(&mut r)?;
        r.finish()?;
        Ok(SyncFileHead {
            filename_len,
            file_size,
            timestamp,
            group,
        })
    }
}

/// Head of 25 SYNC_APPEND_FILE / 35 SYNC_MODIFY_FILE: 44 fixed bytes, the filename, then
/// `length` bytes of content to write at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRangeHead {
    pub filename_len: usize,
    pub offset: u64,
    pub length: u64,
    pub timestamp: i32,
    pub group: String,
}

impl SyncRangeHead {
    pub const LEN: usize = 8 + 8 + 8 + 4 + GROUP_NAME_LEN;

    pub fn encode(&self, filename: &str) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::LEN + filename.len());
        w.i64(filename.len() as i64)
            .i64(self.offset as i64)
            .i64(self.length as i64)
            .i32(self.timestamp)
            .fixed_str(&self.group, GROUP_NAME_LEN)
            .bytes(filename.as_bytes());
        w.finish()
    }

    pub fn decode(head: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(head);
        let filename_len = filename_len(&mut r, 1)?;
        let offset = r.len_field("offset", i64::MAX)?;
        let length = r.len_field("length", i64::MAX)?;
        let timestamp = r.i32()?;
        let group = sync_group(&mut r)?;
        r.finish()?;
        Ok(SyncRangeHead {
            filename_len,
            offset,
            length,
            timestamp,
            group,
        })
    }
}

/// Body of 17 SYNC_DELETE_FILE: i32 timestamp, group, filename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncDelete {
    pub timestamp: i32,
    pub group: String,
    pub filename: String,
}

impl SyncDelete {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.i32(self.timestamp)
            .fixed_str(&self.group, GROUP_NAME_LEN)
            .bytes(self.filename.as_bytes());
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let min = 4 + GROUP_NAME_LEN + 1;
        if body.len() < min || body.len() > min - 1 + REMOTE_NAME_MAX_LEN {
            return Err(ProtoError::length("21..=147", body.len()));
        }
        let mut r = Reader::new(body);
        let timestamp = r.i32()?;
        let group = sync_group(&mut r)?;
        let filename = r.str(r.remaining(), "file name")?;
        Ok(SyncDelete {
            timestamp,
            group,
            filename,
        })
    }
}

/// Body of 37 SYNC_TRUNCATE_FILE: i64 name length, i64 old size, i64 new size,
/// i32 timestamp, group, filename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncTruncate {
    pub old_size: u64,
    pub new_size: u64,
    pub timestamp: i32,
    pub group: String,
    pub filename: String,
}

impl SyncTruncate {
    pub const FIXED: usize = 8 + 8 + 8 + 4 + GROUP_NAME_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.i64(self.filename.len() as i64)
            .i64(self.old_size as i64)
            .i64(self.new_size as i64)
            .i32(self.timestamp)
            .fixed_str(&self.group, GROUP_NAME_LEN)
            .bytes(self.filename.as_bytes());
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(body);
        let name_len = filename_len(&mut r, 1)?;
        let old_size = r.len_field("old size", i64::MAX)?;
        let new_size = r.len_field("new size", i64::MAX)?;
        let timestamp = r.i32()?;
        let group = sync_group(&mut r)?;
        if r.remaining() != name_len {
            return Err(ProtoError::length(Self::FIXED + name_len, body.len()));
        }
        let filename = r.str(name_len, "file name")?;
        Ok(SyncTruncate {
            old_size,
            new_size,
            timestamp,
            group,
            filename,
        })
    }
}

/// Body of 40 SYNC_RENAME_FILE (first = new name, second = old name) and
/// 19 SYNC_CREATE_LINK (first = link, second = its target): i64 first length,
/// i64 second length, i32 timestamp, group, first, second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncTwoNames {
    pub timestamp: i32,
    pub group: String,
    pub first: String,
    pub second: String,
}

impl SyncTwoNames {
    pub const FIXED: usize = 8 + 8 + 4 + GROUP_NAME_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.i64(self.first.len() as i64)
            .i64(self.second.len() as i64)
            .i32(self.timestamp)
            .fixed_str(&self.group, GROUP_NAME_LEN)
            .bytes(self.first.as_bytes())
            .bytes(self.second.as_bytes());
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(body);
        let first_len = filename_len(&mut r, 1)?;
        let second_len = filename_len(&mut r, 1)?;
        let timestamp = r.i32()?;
        let group = sync_group(&mut r)?;
        if r.remaining() != first_len + second_len {
            return Err(ProtoError::length(
                Self::FIXED + first_len + second_len,
                body.len(),
            ));
        }
        let first = r.str(first_len, "file name")?;
        let second = r.str(second_len, "file name")?;
        Ok(SyncTwoNames {
            timestamp,
            group,
            first,
            second,
        })
    }
}

/// Body length of a reply streamed without a known length (26 FETCH_ONE_PATH_BINLOG):
/// 2^58. The stream ends with its 8-byte big-endian length, then the connection closes.
pub const INFINITE_LEN: u64 = 256 << 50;

/// 26 FETCH_ONE_PATH_BINLOG request: group (16 bytes) and store path index (1 byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOnePathBinlog {
    pub group: String,
    pub store_path: u8,
}

impl FetchOnePathBinlog {
    pub const LEN: usize = GROUP_NAME_LEN + 1;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed_str(&self.group, GROUP_NAME_LEN).u8(self.store_path);
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() != Self::LEN {
            return Err(ProtoError::length("17", body.len()));
        }
        let mut r = Reader::new(body);
        let group = r.fixed_str(GROUP_NAME_LEN, "group")?;
        Ok(FetchOnePathBinlog {
            group,
            store_path: r.u8()?,
        })
    }
}

/// 19: a symbolic link a peer made (first = the link, second = its target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncCreateLink(pub SyncTwoNames);
/// 40: an appender a peer renamed (first = the new name, second = the old one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRename(pub SyncTwoNames);

/// 27 TRUNK_ALLOC_SPACE: a storage asks its group's trunk server for a slot of `size`
/// bytes (content and its 24-byte header) in store path `path`; the reply is the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkAllocSpace {
    pub group: String,
    pub size: u32,
    pub path: u8,
}

impl TrunkAllocSpace {
    pub const LEN: usize = GROUP_NAME_LEN + 5;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::LEN);
        w.fixed_str(&self.group, GROUP_NAME_LEN)
            .u32(self.size)
            .u8(self.path);
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() != Self::LEN {
            return Err(ProtoError::length(Self::LEN, body.len()));
        }
        let mut r = Reader::new(body);
        let group = r.fixed_str(GROUP_NAME_LEN, "group name")?;
        let size = r.i32()?;
        if size < 0 {
            return Err(ProtoError::field("slot size", size.to_string()));
        }
        Ok(TrunkAllocSpace {
            group,
            size: size as u32,
            path: r.u8()?,
        })
    }
}

/// The body of 28 TRUNK_ALLOC_CONFIRM (the header's status says whether the slot was
/// written) and of 29 TRUNK_FREE_SPACE: the group and a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkSlotBody {
    pub group: String,
    pub slot: crate::trunk::Slot,
}

impl TrunkSlotBody {
    pub const LEN: usize = GROUP_NAME_LEN + crate::trunk::Slot::LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::LEN);
        w.fixed_str(&self.group, GROUP_NAME_LEN)
            .bytes(&self.slot.encode());
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() != Self::LEN {
            return Err(ProtoError::length(Self::LEN, body.len()));
        }
        let mut r = Reader::new(body);
        let group = r.fixed_str(GROUP_NAME_LEN, "group name")?;
        let slot = crate::trunk::Slot::decode(r.rest())?;
        Ok(TrunkSlotBody { group, slot })
    }
}

/// 29: a slot is free again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkFreeSpace(pub TrunkSlotBody);

impl Request for TrunkFreeSpace {
    type Reply = ();
    fn cmd(&self) -> u8 {
        cmd::TRUNK_FREE_SPACE
    }
    fn body(&self) -> Vec<u8> {
        self.0.encode()
    }
}

impl Reply for crate::trunk::Slot {
    fn from_body(body: &[u8]) -> Result<Self, ProtoError> {
        crate::trunk::Slot::decode(body)
    }
}

bodiless! {
    /// 33: the trunk server tells a peer to start its copy of the trunk binlog afresh.
    TrunkTruncateBinlog => cmd::TRUNK_TRUNCATE_BINLOG_FILE, ();
}

file_ref_request! {
    SyncCreateLink => cmd::SYNC_CREATE_LINK, ();
    SyncRename => cmd::SYNC_RENAME_FILE, ();
}

request! {
    TrunkAllocSpace => cmd::TRUNK_ALLOC_SPACE, crate::trunk::Slot;
    SyncDelete => cmd::SYNC_DELETE_FILE, ();
    SyncTruncate => cmd::SYNC_TRUNCATE_FILE, ();
}

#[cfg(test)]
mod fetch_one_path_binlog_tests {
    use super::*;

    #[test]
    fn round_trip() {
        let q = FetchOnePathBinlog {
            group: "group1".into(),
            store_path: 3,
        };
        let raw = q.encode();
        assert_eq!(raw.len(), 17);
        assert_eq!(&raw[..6], b"group1");
        assert_eq!(raw[16], 3);
        assert_eq!(FetchOnePathBinlog::decode(&raw).unwrap(), q);
        assert!(FetchOnePathBinlog::decode(&raw[..16]).is_err());
        assert_eq!(INFINITE_LEN, 1 << 58);
    }
}

#[cfg(test)]
mod trunk_tests {
    use super::*;

    #[test]
    fn alloc_request_is_twenty_one_bytes() {
        let req = TrunkAllocSpace {
            group: "group1".into(),
            size: 39,
            path: 0,
        };
        let raw = req.encode();
        assert_eq!(raw.len(), 21);
        assert_eq!(&raw[..6], b"group1");
        assert_eq!(&raw[16..], &[0, 0, 0, 39, 0]);
        assert_eq!(TrunkAllocSpace::decode(&raw).unwrap(), req);
        assert!(TrunkAllocSpace::decode(&raw[..20]).is_err());
        let body = TrunkSlotBody {
            group: "group1".into(),
            slot: crate::trunk::Slot {
                path: 0,
                high: 0,
                low: 1,
                trunk_id: 1,
                offset: 0,
                size: 256,
            },
        };
        let raw = body.encode();
        assert_eq!(raw.len(), 31);
        assert_eq!(TrunkSlotBody::decode(&raw).unwrap(), body);
    }
}
