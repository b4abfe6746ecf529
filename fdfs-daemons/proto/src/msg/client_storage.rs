//! Client ↔ storage (port 23000): uploads, downloads, metadata, appender changes.
//!
//! Commands that carry file content are split in two: a fixed head (decoded here) and
//! the content, which the server streams straight to disk and never holds in memory.

use super::*;

fn ext_field(r: &mut Reader<'_>) -> Result<String, ProtoError> {
    let ext = r.fixed_str(EXT_NAME_MAX_LEN, "ext name")?;
    // A name ending with `-m` would be taken for another file's metadata.
    if !valid_name_part(&ext) || ends_like_metadata(&ext) {
        return Err(ProtoError::field("ext name", format!("{ext:?}")));
    }
    Ok(ext)
}

/// Head of 11 UPLOAD_FILE / 23 UPLOAD_APPENDER_FILE (15 bytes, then the content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadHead {
    /// −1 lets the storage choose.
    pub store_path_index: i8,
    pub file_size: u64,
    pub ext: String,
}

impl UploadHead {
    pub const LEN: usize = 15;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::LEN);
        w.u8(self.store_path_index as u8)
            .i64(self.file_size as i64)
            .fixed_str(&self.ext, EXT_NAME_MAX_LEN);
        w.finish()
    }

    pub fn decode(head: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(head);
        let store_path_index = r.u8()? as i8;
        let file_size = r.len_field("file size", i64::MAX)?;
        let ext = ext_field(&mut r)?;
        r.finish()?;
        Ok(UploadHead {
            store_path_index,
            file_size,
            ext,
        })
    }
}

/// Reply to uploads and to 38: the group and the new remote filename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub group: String,
    pub filename: String,
}

impl StoredFile {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed_str(&self.group, GROUP_NAME_LEN)
            .bytes(self.filename.as_bytes());
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() <= GROUP_NAME_LEN || body.len() >= 128 + GROUP_NAME_LEN {
            return Err(ProtoError::length("17..=143", body.len()));
        }
        let mut r = Reader::new(body);
        let group = r.fixed_str(GROUP_NAME_LEN, "group name")?;
        let filename = r.str(r.remaining(), "file name")?;
        Ok(StoredFile { group, filename })
    }

    pub fn file_id(&self) -> String {
        format!("{}/{}", self.group, self.filename)
    }
}

/// Head of 21 UPLOAD_SLAVE_FILE: 38 fixed bytes, the master name, then the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveHead {
    pub master_len: usize,
    pub file_size: u64,
    pub prefix: String,
    pub ext: String,
}

impl SlaveHead {
    pub const LEN: usize = 38;

    /// Encodes the fixed part followed by the master filename.
    pub fn encode(&self, master: &str) -> Vec<u8> {
        let mut w = Writer::new();
        w.i64(master.len() as i64)
            .i64(self.file_size as i64)
            .fixed_str(&self.prefix, PREFIX_MAX_LEN)
            .fixed_str(&self.ext, EXT_NAME_MAX_LEN)
            .bytes(master.as_bytes());
        w.finish()
    }

    pub fn decode(head: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(head);
        let master_len = filename_len(&mut r, 11)?;
        let file_size = r.len_field("file size", i64::MAX)?;
        let prefix = r.fixed_str(PREFIX_MAX_LEN, "prefix")?;
        if prefix.is_empty() || !valid_name_part(&prefix) {
            return Err(ProtoError::field("prefix", format!("{prefix:?}")));
        }
        let ext = ext_field(&mut r)?;
        // The prefix (and ext) end the slave's name: `-m` there would make the slave
        // the master's metadata file.
        let tail = if ext.is_empty() {
            prefix.clone()
        } else {
            format!("{prefix}.{ext}")
        };
        if ends_like_metadata(&tail) {
            return Err(ProtoError::field("prefix", format!("{prefix:?}")));
        }
        r.finish()?;
        Ok(SlaveHead {
            master_len,
            file_size,
            prefix,
            ext,
        })
    }
}

/// A group and a filename: the body of 12 DELETE, 15 GET_METADATA and 22
/// QUERY_FILE_INFO to a storage, and of 102/103/105 (which storage has the file) to a
/// tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub group: String,
    pub filename: String,
}

impl FileRef {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed_str(&self.group, GROUP_NAME_LEN)
            .bytes(self.filename.as_bytes());
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() <= GROUP_NAME_LEN || body.len() > GROUP_NAME_LEN + REMOTE_NAME_MAX_LEN {
            return Err(ProtoError::length("17..=143", body.len()));
        }
        let mut r = Reader::new(body);
        let group = get_group(&mut r)?;
        let filename = r.str(r.remaining(), "file name")?;
        Ok(FileRef { group, filename })
    }

    /// As a tracker reads it (102/103/105): the filename is 22..=127 bytes.
    pub fn decode_query(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() < GROUP_NAME_LEN + 22 || body.len() >= GROUP_NAME_LEN + 128 {
            return Err(ProtoError::length("38..=143", body.len()));
        }
        Self::decode(body)
    }
}

/// Body of 13 SET_METADATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetMetadata {
    /// `b'O'` overwrite or `b'M'` merge.
    pub op: u8,
    pub group: String,
    pub filename: String,
    pub packed: Vec<u8>,
}

impl SetMetadata {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.i64(self.filename.len() as i64)
            .i64(self.packed.len() as i64)
            .u8(self.op)
            .fixed_str(&self.group, GROUP_NAME_LEN)
            .bytes(self.filename.as_bytes())
            .bytes(&self.packed);
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(body);
        let name_len = filename_len(&mut r, 1)?;
        let meta_len = r.len_field("metadata length", body.len() as i64)? as usize;
        let op = r.u8()?;
        if op != crate::metadata::OP_OVERWRITE && op != crate::metadata::OP_MERGE {
            return Err(ProtoError::field("metadata op", format!("{op:#x}")));
        }
        let group = get_group(&mut r)?;
        if r.remaining() != name_len + meta_len {
            return Err(ProtoError::length(33 + name_len + meta_len, body.len()));
        }
        let filename = r.str(name_len, "file name")?;
        let packed = r.rest().to_vec();
        Ok(SetMetadata {
            op,
            group,
            filename,
            packed,
        })
    }
}

/// Body of 14 DOWNLOAD_FILE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    pub offset: u64,
    /// 0 means "to the end of the file".
    pub count: u64,
    pub group: String,
    pub filename: String,
}

impl Download {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.i64(self.offset as i64)
            .i64(self.count as i64)
            .fixed_str(&self.group, GROUP_NAME_LEN)
            .bytes(self.filename.as_bytes());
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() <= 32 || body.len() > 32 + REMOTE_NAME_MAX_LEN {
            return Err(ProtoError::length("33..=159", body.len()));
        }
        let mut r = Reader::new(body);
        let offset = r.len_field("offset", i64::MAX)?;
        let count = r.len_field("count", i64::MAX)?;
        let group = get_group(&mut r)?;
        let filename = r.str(r.remaining(), "file name")?;
        Ok(Download {
            offset,
            count,
            group,
            filename,
        })
    }
}

/// Flags carried in the header status byte of 22 QUERY_FILE_INFO.
pub mod file_info_flag {
    pub const NO_CRC32: u8 = 1;
    pub const SILENT: u8 = 2;
}

/// Reply to 22 QUERY_FILE_INFO (40 or 70 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfoReply {
    pub file_size: i64,
    pub timestamp: i64,
    pub crc32: u32,
    pub source_ip: String,
}

impl FileInfoReply {
    pub fn encode(&self, ip_size: IpSize) -> Vec<u8> {
        let mut w = Writer::new();
        // The CRC travels sign-extended, as the C server stores it in an int.
        w.i64(self.file_size)
            .i64(self.timestamp)
            .i64(self.crc32 as i32 as i64)
            .fixed_str(&self.source_ip, ip_size.width());
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let ip_size = match body.len() {
            40 => IpSize::V4,
            70 => IpSize::V6,
            n => return Err(ProtoError::length("40 or 70", n)),
        };
        let mut r = Reader::new(body);
        Ok(FileInfoReply {
            file_size: r.i64()?,
            timestamp: r.i64()?,
            crc32: r.i64()? as u32,
            source_ip: r.fixed_str(ip_size.width(), "source ip")?,
        })
    }
}

/// Head of 24 APPEND_FILE: 16 fixed bytes, the appender filename, then the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendHead {
    pub filename_len: usize,
    pub size: u64,
}

impl AppendHead {
    pub const LEN: usize = 16;

    pub fn encode(filename: &str, size: u64) -> Vec<u8> {
        let mut w = Writer::new();
        w.i64(filename.len() as i64)
            .i64(size as i64)
            .bytes(filename.as_bytes());
        w.finish()
    }

    pub fn decode(head: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(head);
        let filename_len = filename_len(&mut r, 44)?;
        let size = r.len_field("append size", i64::MAX)?;
        r.finish()?;
        Ok(AppendHead { filename_len, size })
    }
}

/// Head of 34 MODIFY_FILE: 24 fixed bytes, the appender filename, then the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModifyHead {
    pub filename_len: usize,
    pub offset: u64,
    pub size: u64,
}

impl ModifyHead {
    pub const LEN: usize = 24;

    pub fn encode(filename: &str, offset: u64, size: u64) -> Vec<u8> {
        let mut w = Writer::new();
        w.i64(filename.len() as i64)
            .i64(offset as i64)
            .i64(size as i64)
            .bytes(filename.as_bytes());
        w.finish()
    }

    pub fn decode(head: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(head);
        let filename_len = filename_len(&mut r, 44)?;
        let offset = r.len_field("offset", i64::MAX)?;
        let size = r.len_field("modify size", i64::MAX)?;
        r.finish()?;
        Ok(ModifyHead {
            filename_len,
            offset,
            size,
        })
    }
}

/// Body of 36 TRUNCATE_FILE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    pub filename: String,
    pub new_size: u64,
}

impl Truncate {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.i64(self.filename.len() as i64)
            .i64(self.new_size as i64)
            .bytes(self.filename.as_bytes());
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(body);
        let name_len = filename_len(&mut r, 44)?;
        let new_size = r.len_field("new size", i64::MAX)?;
        if r.remaining() != name_len {
            return Err(ProtoError::length(16 + name_len, body.len()));
        }
        let filename = r.str(name_len, "file name")?;
        Ok(Truncate { filename, new_size })
    }
}

/// Body of 38 REGENERATE_APPENDER_FILENAME: just the appender filename.
pub fn decode_regenerate(body: &[u8]) -> Result<String, ProtoError> {
    if body.len() < 44 || body.len() > REMOTE_NAME_MAX_LEN {
        return Err(ProtoError::length("44..=127", body.len()));
    }
    Reader::new(body).str(body.len(), "file name")
}

/// 12: deletes a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteFile(pub FileRef);
/// 15: a file's metadata, packed as upstream packs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetMetadata(pub FileRef);
/// 22: a file's size, time, CRC32 and source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryFileInfo(pub FileRef);

file_ref_request! {
    DeleteFile => cmd::DELETE_FILE, ();
    GetMetadata => cmd::GET_METADATA, Vec<u8>;
    QueryFileInfo => cmd::QUERY_FILE_INFO, FileInfoReply;
}

request! {
    SetMetadata => cmd::SET_METADATA, ();
    Truncate => cmd::TRUNCATE_FILE, ();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_upload_request_and_reply() {
        let head = UploadHead {
            store_path_index: 0,
            file_size: 15,
            ext: "txt".into(),
        };
        let raw = head.encode();
        assert_eq!(
            raw,
            [0, 0, 0, 0, 0, 0, 0, 0, 0x0f, b't', b'x', b't', 0, 0, 0]
        );
        assert_eq!(UploadHead::decode(&raw).unwrap(), head);
        // Header of the captured request: pkg_len 0x1e = 15 + 15.
        assert_eq!(raw.len() + 15, 0x1e);

        let reply = StoredFile {
            group: "group1".into(),
            filename: "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt".into(),
        };
        let raw = reply.encode();
        assert_eq!(raw.len(), 0x3c);
        assert_eq!(StoredFile::decode(&raw).unwrap(), reply);
        assert_eq!(
            reply.file_id(),
            "group1/M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt"
        );
    }

    #[test]
    fn upload_head_rejects_bad_ext_and_size() {
        let mut raw = UploadHead {
            store_path_index: -1,
            file_size: 1,
            ext: "a/b".into(),
        }
        .encode();
        assert!(UploadHead::decode(&raw).is_err());
        raw[9..15].copy_from_slice(b"jpg\0\0\0");
        raw[1] = 0x80; // negative size
        assert!(UploadHead::decode(&raw).is_err());
        raw[1] = 0;
        let ok = UploadHead::decode(&raw).unwrap();
        assert_eq!(ok.store_path_index, -1);
    }

    #[test]
    fn slave_head_layout() {
        let master = "M00/00/00/fwAAPWsEx3-AJPpFAAAADwL5vO4702.txt";
        let head = SlaveHead {
            master_len: master.len(),
            file_size: 15,
            prefix: "_big".into(),
            ext: "txt".into(),
        };
        let raw = head.encode(master);
        assert_eq!(raw.len(), 38 + 44);
        assert_eq!(&raw[16..20], b"_big");
        assert_eq!(SlaveHead::decode(&raw[..38]).unwrap(), head);
        let mut no_prefix = raw.clone();
        no_prefix[16..32].fill(0);
        assert!(SlaveHead::decode(&no_prefix[..38]).is_err());
    }

    #[test]
    fn names_that_would_be_metadata_are_refused() {
        let slave = |prefix: &str, ext: &str| {
            let head = SlaveHead {
                master_len: 44,
                file_size: 1,
                prefix: prefix.into(),
                ext: ext.into(),
            };
            SlaveHead::decode(&head.encode("M00/00/00/fwAAPWsEx3-AJPpFAAAADwL5vO4702.txt")[..38])
        };
        // The master's own metadata (`<stem>.txt-m`), or any file's, cannot be a slave.
        assert!(slave(".txt-m", "").is_err());
        assert!(slave("-m", "").is_err());
        assert!(slave("_s", "jpg-m").is_err());
        assert!(slave("_s", "-m").is_err());
        assert!(slave(".txt-m", "tmp").is_err());
        assert!(slave("-m", "jpg").is_ok());
        assert!(slave("_s", "m").is_ok());
        let upload = |ext: &str| {
            let head = UploadHead {
                store_path_index: 0,
                file_size: 1,
                ext: ext.into(),
            };
            UploadHead::decode(&head.encode())
        };
        assert!(upload("-m").is_err());
        assert!(upload("tar-m").is_err());
        assert!(upload("m").is_ok());
    }

    #[test]
    fn captured_set_metadata() {
        let name = "M00/00/00/fwAAPWsEx3-AJPpFAAAADwL5vO4702.txt";
        let packed = b"ext_name\x02jpg\x01width\x02160\x01height\x0280\x01file_size\x02115120";
        let msg = SetMetadata {
            op: b'O',
            group: "group1".into(),
            filename: name.into(),
            packed: packed.to_vec(),
        };
        let raw = msg.encode();
        assert_eq!(&raw[..8], &0x2ci64.to_be_bytes());
        assert_eq!(&raw[8..16], &(packed.len() as i64).to_be_bytes());
        assert_eq!(raw[16], 0x4f);
        assert_eq!(&raw[17..23], b"group1");
        assert_eq!(SetMetadata::decode(&raw).unwrap(), msg);
        assert!(SetMetadata::decode(&raw[..raw.len() - 1]).is_err());
    }

    #[test]
    fn download_and_file_info() {
        let d = Download {
            offset: 3,
            count: 0,
            group: "group1".into(),
            filename: "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt".into(),
        };
        assert_eq!(Download::decode(&d.encode()).unwrap(), d);
        // Captured file-info reply of a slave: size 15, ts 0x6b04c77f, crc 0x02f9bcee.
        let reply = FileInfoReply {
            file_size: 15,
            timestamp: 0x6b04_c77f,
            crc32: 0x02f9_bcee,
            source_ip: "127.0.0.61".into(),
        };
        let raw = reply.encode(IpSize::V4);
        assert_eq!(raw.len(), 40);
        assert_eq!(&raw[16..24], &[0, 0, 0, 0, 0x02, 0xf9, 0xbc, 0xee]);
        assert_eq!(FileInfoReply::decode(&raw).unwrap(), reply);
        let high = FileInfoReply {
            crc32: 0xF000_0001,
            ..reply
        };
        let raw = high.encode(IpSize::V6);
        assert_eq!(raw.len(), 70);
        assert_eq!(&raw[16..20], &[0xff; 4]);
        assert_eq!(FileInfoReply::decode(&raw).unwrap().crc32, 0xF000_0001);
    }

    #[test]
    fn appender_commands() {
        let name = "M00/00/00/fwAAPWsEx4eEapi7AAAAAAL5vO4141.txt";
        let raw = AppendHead::encode(name, 8);
        assert_eq!(
            AppendHead::decode(&raw[..16]).unwrap(),
            AppendHead {
                filename_len: 44,
                size: 8
            }
        );
        let raw = ModifyHead::encode(name, 22, 15);
        assert_eq!(ModifyHead::decode(&raw[..24]).unwrap().offset, 22);
        let t = Truncate {
            filename: name.into(),
            new_size: 7,
        };
        assert_eq!(Truncate::decode(&t.encode()).unwrap(), t);
        assert_eq!(decode_regenerate(name.as_bytes()).unwrap(), name);
        assert!(decode_regenerate(b"short").is_err());
    }

    #[test]
    fn file_ref_rejects_bad_group() {
        let r = FileRef {
            group: "gr/up".into(),
            filename: "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt".into(),
        };
        assert!(FileRef::decode(&r.encode()).is_err());
    }

    #[test]
    fn report_server_id_layout() {
        let raw = encode_server_id("127.0.0.61");
        assert_eq!(raw.len(), 16);
        assert_eq!(&raw[..10], b"127.0.0.61");
        assert!(raw[10..].iter().all(|&b| b == 0));
        assert_eq!(decode_server_id(&raw).unwrap(), "127.0.0.61");
        assert!(decode_server_id(&[0; 16]).is_err());
        assert!(decode_server_id(&raw[..15]).is_err());
    }

    #[test]
    fn sync_create_head_layout() {
        let name = "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt";
        let head = SyncFileHead {
            filename_len: name.len(),
            file_size: 15,
            timestamp: 0x6b04_c768,
            group: "group1".into(),
        };
        let raw = head.encode(name);
        assert_eq!(raw.len(), 36 + 44);
        assert_eq!(&raw[..8], &44i64.to_be_bytes());
        assert_eq!(&raw[8..16], &15i64.to_be_bytes());
        assert_eq!(&raw[16..20], &[0x6b, 0x04, 0xc7, 0x68]);
        assert_eq!(&raw[20..26], b"group1");
        assert!(raw[26..36].iter().all(|&b| b == 0));
        assert_eq!(&raw[36..], name.as_bytes());
        assert_eq!(SyncFileHead::decode(&raw[..36]).unwrap(), head);
        let mut bad = raw.clone();
        bad[0] = 0x80;
        assert!(SyncFileHead::decode(&bad[..36]).is_err());
        assert!(SyncFileHead::decode(&raw[..35]).is_err());
    }

    #[test]
    fn sync_range_head_layout() {
        let name = "M00/00/00/fwAAPWsEx5qEO0IaAAAAAAL5vO4178.txt";
        let head = SyncRangeHead {
            filename_len: 44,
            offset: 7,
            length: 8,
            timestamp: 1_795_475_354,
            group: "group1".into(),
        };
        let raw = head.encode(name);
        assert_eq!(raw.len(), 44 + 44);
        assert_eq!(&raw[8..16], &7i64.to_be_bytes());
        assert_eq!(&raw[16..24], &8i64.to_be_bytes());
        assert_eq!(&raw[24..28], &1_795_475_354i32.to_be_bytes());
        assert_eq!(&raw[28..34], b"group1");
        assert_eq!(SyncRangeHead::decode(&raw[..44]).unwrap(), head);
    }

    #[test]
    fn sync_delete_truncate_rename_layouts() {
        let name = "M00/00/00/fwAAPWsEx3-AJPpFAAAADwL5vO4702.txt-m";
        let d = SyncDelete {
            timestamp: 1_795_475_344,
            group: "group1".into(),
            filename: name.into(),
        };
        let raw = d.encode();
        assert_eq!(raw.len(), 4 + 16 + name.len());
        assert_eq!(&raw[..4], &1_795_475_344i32.to_be_bytes());
        assert_eq!(&raw[4..10], b"group1");
        assert_eq!(SyncDelete::decode(&raw).unwrap(), d);
        assert!(SyncDelete::decode(&raw[..20]).is_err());

        let t = SyncTruncate {
            old_size: 15,
            new_size: 7,
            timestamp: 9,
            group: "group1".into(),
            filename: name[..44].into(),
        };
        let raw = t.encode();
        assert_eq!(raw.len(), 44 + 44);
        assert_eq!(&raw[..8], &44i64.to_be_bytes());
        assert_eq!(&raw[8..16], &15i64.to_be_bytes());
        assert_eq!(&raw[16..24], &7i64.to_be_bytes());
        assert_eq!(&raw[24..28], &9i32.to_be_bytes());
        assert_eq!(SyncTruncate::decode(&raw).unwrap(), t);
        assert!(SyncTruncate::decode(&raw[..raw.len() - 1]).is_err());

        let r = SyncTwoNames {
            timestamp: 1_795_475_339,
            group: "group1".into(),
            first: "M00/00/00/fwAAPWsEx4uAEgtOAAAAHpBT5lw141.txt".into(),
            second: "M00/00/00/fwAAPWsEx4eEapi7AAAAAAL5vO4141.txt".into(),
        };
        let raw = r.encode();
        assert_eq!(raw.len(), 36 + 88);
        assert_eq!(&raw[..8], &44i64.to_be_bytes());
        assert_eq!(&raw[8..16], &44i64.to_be_bytes());
        assert_eq!(&raw[16..20], &1_795_475_339i32.to_be_bytes());
        assert_eq!(&raw[36..80], r.first.as_bytes());
        assert_eq!(&raw[80..], r.second.as_bytes());
        assert_eq!(SyncTwoNames::decode(&raw).unwrap(), r);
        assert!(SyncTwoNames::decode(&raw[..100]).is_err());
    }
}
