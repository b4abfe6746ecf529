//! Every decoder of the client ↔ storage and storage ↔ storage messages (`msg`): the first byte picks one, the rest is the body.
//!
//! Besides "no panic": whatever decodes re-encodes to a body that decodes to the same
//! value, and to the same bytes where the layout has no NUL-terminated text.
#![no_main]

use fdfs_proto::fileid::REMOTE_NAME_MAX_LEN;
use fdfs_proto::msg::*;
use fdfs_proto::IpSize;
use libfuzzer_sys::fuzz_target;

/// Number of cases in the `match` below.
const DECODERS: u8 = 18;

/// A file name of `n` bytes, for the heads whose name follows separately.
fn name_of(n: usize) -> String {
    "M".repeat(n)
}

fn no_nul(b: &[u8]) -> bool {
    !b.contains(&0)
}

fuzz_target!(|data: &[u8]| {
    let Some((sel, body)) = fdfs_fuzz::split_selector(data) else {
        return;
    };
    match sel % DECODERS {
        0 => {
            if let Ok(h) = UploadHead::decode(body) {
                assert!(fdfs_proto::fileid::valid_ext(&h.ext));
                assert!(h.file_size <= i64::MAX as u64);
                let raw = h.encode();
                assert_eq!(raw[..9], body[..9]);
                assert_eq!(UploadHead::decode(&raw).unwrap(), h);
            }
        }
        1 => {
            if let Ok(f) = StoredFile::decode(body) {
                if no_nul(&body[16..]) {
                    let raw = f.encode();
                    assert_eq!(raw[16..], body[16..]);
                    assert_eq!(StoredFile::decode(&raw).unwrap(), f);
                }
                let _ = f.file_id();
            }
        }
        2 => {
            if let Ok(h) = SlaveHead::decode(body) {
                assert!((11..=REMOTE_NAME_MAX_LEN).contains(&h.master_len));
                assert!(!h.prefix.is_empty() && fdfs_proto::valid_name_part(&h.prefix));
                let raw = h.encode(&name_of(h.master_len));
                assert_eq!(raw.len(), SlaveHead::LEN + h.master_len);
                assert_eq!(raw[..16], body[..16]);
                assert_eq!(SlaveHead::decode(&raw[..SlaveHead::LEN]).unwrap(), h);
            }
        }
        3 => {
            if let Ok(f) = FileRef::decode(body) {
                assert!(fdfs_proto::valid_group_name(&f.group));
                if no_nul(&body[16..]) {
                    let raw = f.encode();
                    assert_eq!(raw[16..], body[16..]);
                    assert_eq!(FileRef::decode(&raw).unwrap(), f);
                }
            }
        }
        4 => {
            if let Ok(m) = SetMetadata::decode(body) {
                assert!(m.op == b'O' || m.op == b'M');
                assert!(fdfs_proto::valid_group_name(&m.group));
                if !m.filename.is_empty() {
                    let raw = m.encode();
                    assert_eq!(SetMetadata::decode(&raw).unwrap(), m);
                    let name_len = i64::from_be_bytes(body[..8].try_into().unwrap()) as usize;
                    if no_nul(&body[33..33 + name_len]) {
                        // Only the group field's padding may differ.
                        assert_eq!(raw[..17], body[..17]);
                        assert_eq!(raw[33..], body[33..]);
                    }
                }
                let _ = fdfs_proto::metadata::unpack(&m.packed);
            }
        }
        5 => {
            if let Ok(d) = Download::decode(body) {
                assert!(d.offset <= i64::MAX as u64 && d.count <= i64::MAX as u64);
                if no_nul(&body[32..]) {
                    let raw = d.encode();
                    assert_eq!(raw[32..], body[32..]);
                    assert_eq!(raw[..16], body[..16]);
                    assert_eq!(Download::decode(&raw).unwrap(), d);
                }
            }
        }
        6 => {
            if let Ok(f) = FileInfoReply::decode(body) {
                let size = if body.len() == 40 {
                    IpSize::V4
                } else {
                    IpSize::V6
                };
                let raw = f.encode(size);
                assert_eq!(raw.len(), body.len());
                assert_eq!(raw[..16], body[..16]);
                assert_eq!(FileInfoReply::decode(&raw).unwrap(), f);
            }
        }
        7 => {
            if let Ok(h) = AppendHead::decode(body) {
                let raw = AppendHead::encode(&name_of(h.filename_len), h.size);
                assert_eq!(raw[..AppendHead::LEN], *body);
                assert_eq!(AppendHead::decode(&raw[..AppendHead::LEN]).unwrap(), h);
            }
        }
        8 => {
            if let Ok(h) = ModifyHead::decode(body) {
                let raw = ModifyHead::encode(&name_of(h.filename_len), h.offset, h.size);
                assert_eq!(raw[..ModifyHead::LEN], *body);
            }
        }
        9 => {
            if let Ok(t) = Truncate::decode(body) {
                let raw = t.encode();
                if no_nul(&body[16..]) {
                    assert_eq!(raw, body);
                }
                if t.filename.len() >= 44 {
                    assert_eq!(Truncate::decode(&raw).unwrap(), t);
                }
            }
        }
        10 => {
            if let Ok(name) = decode_regenerate(body) {
                assert!(name.len() <= body.len());
                if no_nul(body) {
                    assert_eq!(name.as_bytes(), body);
                }
            }
        }
        11 => {
            if let Ok(id) = decode_server_id(body) {
                assert!(!id.is_empty());
                assert_eq!(decode_server_id(&encode_server_id(&id)).unwrap(), id);
            }
        }
        12 => {
            if let Ok(h) = SyncFileHead::decode(body) {
                let raw = h.encode(&name_of(h.filename_len));
                assert_eq!(raw[..20], body[..20]);
                assert_eq!(SyncFileHead::decode(&raw[..SyncFileHead::LEN]).unwrap(), h);
            }
        }
        13 => {
            if let Ok(h) = SyncRangeHead::decode(body) {
                let raw = h.encode(&name_of(h.filename_len));
                assert_eq!(raw[..28], body[..28]);
                assert_eq!(
                    SyncRangeHead::decode(&raw[..SyncRangeHead::LEN]).unwrap(),
                    h
                );
            }
        }
        14 => {
            if let Ok(d) = SyncDelete::decode(body) {
                if no_nul(&body[20..]) {
                    let raw = d.encode();
                    assert_eq!(raw[20..], body[20..]);
                    assert_eq!(SyncDelete::decode(&raw).unwrap(), d);
                }
            }
        }
        15 => {
            if let Ok(t) = SyncTruncate::decode(body) {
                if !t.filename.is_empty() {
                    assert_eq!(SyncTruncate::decode(&t.encode()).unwrap(), t);
                }
                if no_nul(&body[SyncTruncate::FIXED..]) {
                    assert_eq!(t.encode().len(), body.len());
                }
            }
        }
        16 => {
            if let Ok(t) = SyncTwoNames::decode(body) {
                if !t.first.is_empty() && !t.second.is_empty() {
                    assert_eq!(SyncTwoNames::decode(&t.encode()).unwrap(), t);
                }
                if no_nul(&body[SyncTwoNames::FIXED..]) {
                    assert_eq!(t.encode().len(), body.len());
                }
            }
        }
        _ => {
            // A stored file reply carries a file ID the client then parses.
            if let Ok(f) = StoredFile::decode(body) {
                let id = f.file_id();
                if let Ok((g, remote)) = fdfs_proto::fileid::split_file_id(&id) {
                    assert_eq!(format!("{g}/{remote}"), id);
                }
            }
        }
    }
});
