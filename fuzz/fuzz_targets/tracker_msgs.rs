//! Every decoder of the messages to and between trackers (`msg`): the first byte picks one, the rest is the body.
//!
//! Besides "no panic": whatever decodes re-encodes to a body of the same length that
//! decodes to the same value, and the layouts without text fields re-encode to exactly the
//! input bytes. (Text fields end at the first NUL, so bytes after it are not kept.)
#![no_main]

use fdfs_proto::codec::{Reader, Writer};
use fdfs_proto::msg::*;
use fdfs_proto::IpSize;
use libfuzzer_sys::fuzz_target;

/// Number of cases in the `match` below.
const DECODERS: u8 = 29;

fn ip_for(len: usize, v4: usize, v6: usize) -> Option<IpSize> {
    if len == v4 {
        Some(IpSize::V4)
    } else if len == v6 {
        Some(IpSize::V6)
    } else {
        None
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((sel, body)) = fdfs_fuzz::split_selector(data) else {
        return;
    };
    match sel % DECODERS {
        0 => {
            if let Ok(t) = StoreTarget::decode(body) {
                let size = ip_for(body.len(), 40, 70).expect("40 or 70 bytes");
                let raw = t.encode(size);
                assert_eq!(raw.len(), body.len());
                assert_eq!(StoreTarget::decode(&raw).unwrap(), t);
            }
        }
        1 | 2 => {
            let size = if sel % DECODERS == 1 {
                IpSize::V4
            } else {
                IpSize::V6
            };
            if let Ok(t) = StoreTargets::decode(body, size) {
                assert!(!t.servers.is_empty());
                let raw = t.encode(size);
                assert_eq!(raw.len(), body.len());
                assert_eq!(StoreTargets::decode(&raw, size).unwrap(), t);
            }
        }
        3 => {
            if let Ok(q) = FileRef::decode_query(body) {
                assert!(fdfs_proto::valid_group_name(&q.group));
                // A NUL ends the file name; without one the body comes back byte for byte
                // (the group field is NUL-padded text).
                if !body[16..].contains(&0) {
                    let raw = q.encode();
                    assert_eq!(raw[16..], body[16..]);
                    assert_eq!(FileRef::decode_query(&raw).unwrap(), q);
                }
            }
        }
        4..=6 => {
            let given = match sel % DECODERS {
                4 => None,
                5 => Some(IpSize::V4),
                _ => Some(IpSize::V6),
            };
            if let Ok(t) = FetchTargets::decode(body, given) {
                let size = ip_for(body.len(), 39, 69).or(given).expect("width known");
                let raw = t.encode(size);
                assert_eq!(raw.len(), body.len());
                assert_eq!(FetchTargets::decode(&raw, Some(size)).unwrap(), t);
            }
        }
        7 => {
            if let Ok(list) = GroupStat::decode_list(body) {
                let mut w = Writer::new();
                for g in &list {
                    g.encode_into(&mut w);
                }
                let raw = w.finish();
                assert_eq!(raw.len(), body.len());
                assert_eq!(GroupStat::decode_list(&raw).unwrap(), list);
            }
        }
        8 => {
            if let Ok(list) = StorageStat::decode_list(body) {
                let size = if body.len() % StorageStat::len(IpSize::V4) == 0 {
                    IpSize::V4
                } else {
                    IpSize::V6
                };
                let mut w = Writer::new();
                for s in &list {
                    s.encode_into(&mut w, size);
                }
                let raw = w.finish();
                assert_eq!(raw.len(), body.len());
                assert_eq!(StorageStat::decode_list(&raw).unwrap(), list);
                // The nginx module's view of the same reply: every storage listed with an
                // IPv4 address, in order, with its status.
                let peers = fdfs_proto::http::peers::parse_list_storage(body).unwrap();
                let v4: Vec<_> = list
                    .iter()
                    .filter_map(|s| Some((s.ip.parse::<std::net::Ipv4Addr>().ok()?, s.status)))
                    .collect();
                let got: Vec<_> = peers.iter().map(|p| (p.ip, p.status)).collect();
                assert_eq!(got, v4);
            }
        }
        9 => {
            if let Ok(s) = StorageSelector::decode(body) {
                assert!(fdfs_proto::valid_group_name(&s.group));
                assert_ne!(s.storage_id.as_deref(), Some(""));
                assert_eq!(StorageSelector::decode(&s.encode()).unwrap(), s);
            }
        }
        10 => {
            if let Ok(j) = JoinRequest::decode(body) {
                assert!(fdfs_proto::valid_group_name(&j.group));
                assert!(!j.trackers.is_empty() && j.trackers.len() <= 16);
                let raw = j.encode();
                assert!(raw.len() >= JoinRequest::FIXED_LEN);
                assert_eq!(JoinRequest::decode(&raw).unwrap(), j);
            }
        }
        11 => {
            if let Ok(j) = JoinReply::decode(body) {
                let raw = j.encode();
                assert_eq!(raw.len(), body.len());
                assert_eq!(JoinReply::decode(&raw).unwrap(), j);
            }
        }
        12 => {
            if let Ok(b) = BeatReply::decode(body) {
                let raw = b.encode();
                assert_eq!(raw.len(), body.len().max(1));
                assert_eq!(BeatReply::decode(&raw).unwrap(), b);
            }
        }
        13 => {
            if let Ok(d) = DiskUsage::decode(body) {
                assert_eq!(d.encode(), body);
            }
        }
        14 => {
            if let Ok(s) = SyncReport::decode(body) {
                let raw = s.encode();
                assert_eq!(raw.len(), body.len());
                assert_eq!(SyncReport::decode(&raw).unwrap(), s);
            }
        }
        15 => {
            if let Ok(s) = SyncSource::decode(body) {
                match s {
                    Some(s) => {
                        assert!(!s.src_id.is_empty());
                        let raw = s.encode();
                        assert_eq!(raw.len(), body.len());
                        assert_eq!(raw[16..], body[16..]);
                        assert_eq!(SyncSource::decode(&raw).unwrap(), Some(s));
                    }
                    None => assert!(body.is_empty() || body[0] == 0),
                }
            }
        }
        16 => {
            if let Ok(g) = GetMyIp::decode(body) {
                let raw = g.encode();
                assert_eq!(raw.len(), 21);
                assert_eq!(GetMyIp::decode(&raw).unwrap(), g);
            }
        }
        17 => {
            if let Ok(s) = TrackerStatus::decode(body) {
                let raw = s.encode();
                assert_eq!(raw[1..], body[1..]);
                assert_eq!(TrackerStatus::decode(&raw).unwrap(), s);
            }
        }
        18 => {
            if let Ok(j) = JoinLeader::decode(body) {
                let raw = j.encode();
                assert_eq!(raw.len(), body.len());
                assert_eq!(JoinLeader::decode(&raw).unwrap(), j);
            }
        }
        19 => {
            if let Ok(c) = ConnCounts::decode_ping(body) {
                match c {
                    Some(c) => assert_eq!(c.encode(), body),
                    None => assert!(body.is_empty()),
                }
            }
        }
        20 => {
            if let Ok(t) = TrunkAssignments::decode(body) {
                let raw = t.encode();
                assert_eq!(raw.len(), body.len());
                assert_eq!(TrunkAssignments::decode(&raw).unwrap(), t);
            }
        }
        21 => {
            if let Ok(r) = SysFileRequest::decode(body) {
                assert!(r.index < sys_file::COUNT && r.offset >= 0);
                assert_eq!(r.encode(), body);
            }
        }
        22 => {
            if let Ok(c) = SysFileChunk::decode(body) {
                assert!(c.file_size >= 0);
                assert_eq!(c.encode(), body);
            }
        }
        23 => {
            if let Ok(f) = TrackerClusterFilter::decode(body) {
                assert_eq!(f.encode()[0], body[0]);
                assert_eq!(TrackerClusterFilter::decode(&f.encode()).unwrap(), f);
                let t = TrackerInfo {
                    is_leader: body[1] & 1 != 0,
                    is_active: body[2] & 1 != 0,
                    ..Default::default()
                };
                let _ = f.accepts(&t);
            }
        }
        24 => {
            if let Ok(list) = TrackerInfo::decode_list(body) {
                let raw = TrackerInfo::encode_list(&list);
                assert_eq!(raw.len(), body.len());
                assert_eq!(TrackerInfo::decode_list(&raw).unwrap(), list);
            }
        }
        25 => {
            // The building blocks other decoders are made of.
            let mut r = Reader::new(body);
            if let Ok(g) = get_group(&mut r) {
                assert!(fdfs_proto::valid_group_name(&g));
                assert_eq!(r.remaining(), body.len() - 16);
            }
        }
        26 => {
            let mut r = Reader::new(body);
            if let Ok(c) = StorageCounters::decode_from(&mut r) {
                assert_eq!(c.encode(), body[..StorageCounters::LEN]);
            }
        }
        27 => {
            let mut r = Reader::new(body);
            if let Ok(b) = StorageBrief::decode_from(&mut r) {
                let mut w = Writer::new();
                b.encode_into(&mut w);
                assert_eq!(w.len(), StorageBrief::LEN);
                let raw = w.finish();
                assert_eq!(
                    StorageBrief::decode_from(&mut Reader::new(&raw)).unwrap(),
                    b
                );
            }
        }
        _ => {
            // Raw Reader primitives: never read past the end, never panic.
            let mut r = Reader::new(body);
            let _ = r.len_field("x", i64::MAX);
            let _ = r.fixed_str(5, "x");
            let _ = r.u32();
            let _ = r.i32();
            let n = r.remaining();
            let _ = r.str(n / 2, "x");
            let _ = r.bytes(n);
            let _ = r.u8();
            let _ = r.finish();
            let rest = r.rest();
            assert!(rest.len() <= body.len());
            assert_eq!(r.remaining(), 0);
        }
    }
});
