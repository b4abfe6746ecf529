//! Where to get a file this node does not have: the local-miss rule (404 or forward), and
//! the storages to try: members of its group as the trackers list them, the source first
//! when it is one of them (so a replicated file is served while its source is down). The
//! source address comes from the file name, which anyone can make up: an address the
//! trackers do not list for the group is never contacted.

use std::net::Ipv4Addr;

use crate::cmd;
use crate::fileid::{FileInfo, Source};
use crate::header::Header;
use crate::status;
use crate::tracker_msg::{StorageSelector, StorageStat};

/// A storage of a group as a tracker lists it (cmd 92).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub ip: String,
    pub active: bool,
}

/// The bytes of a "list storages of `group`" request (cmd 92).
pub fn list_storage_request(group: &str) -> Vec<u8> {
    let body = StorageSelector {
        group: group.to_string(),
        storage_id: None,
    }
    .encode();
    let mut out = Header::request(cmd::SERVER_LIST_STORAGE, body.len())
        .encode()
        .to_vec();
    out.extend_from_slice(&body);
    out
}

/// Decodes the body of the reply to cmd 92.
pub fn parse_list_storage(body: &[u8]) -> Result<Vec<Peer>, crate::ProtoError> {
    Ok(StorageStat::decode_list(body)?
        .into_iter()
        .map(|s| Peer {
            active: s.status == status::ACTIVE,
            ip: s.ip,
        })
        .collect())
}

/// What to do when the file is not on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// It should be here (we are its source, or it is older than the sync window): 404.
    NotFound,
    /// It may still be on its way: ask the source (and its group).
    Forward,
}

/// Upstream's rule: a file of one of our groups is "gone" when we are its source or when
/// it is older than `max_delay`; a file of another group is always forwarded.
pub fn on_local_miss(
    same_group: bool,
    info: &FileInfo,
    source_is_local: bool,
    now: i64,
    max_delay: i64,
) -> Miss {
    let ts = info.timestamp as i64;
    if same_group && (source_is_local || (ts > 0 && now - ts > max_delay)) {
        Miss::NotFound
    } else {
        Miss::Forward
    }
}

/// The source IP of a file, if the name holds one.
pub fn source_ip(info: &FileInfo) -> Option<Ipv4Addr> {
    match info.source {
        Source::Ip(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// Whether `ip` is one of `peers`.
pub fn is_member(ip: Ipv4Addr, peers: &[Peer]) -> bool {
    peers.iter().any(|p| p.ip.parse::<Ipv4Addr>() == Ok(ip))
}

/// Storages to try, in order: the source when the trackers list it as an ACTIVE member,
/// the group's other ACTIVE members, then its other members (the source among them when
/// it is not ACTIVE); never one of `local` (this node), never an address that is not in
/// `peers`: a source the trackers do not list is skipped.
pub fn candidates(source: Option<Ipv4Addr>, peers: &[Peer], local: &[String]) -> Vec<String> {
    let src = source.and_then(|s| {
        peers
            .iter()
            .find(|p| p.active && p.ip.parse::<Ipv4Addr>() == Ok(s))
    });
    let mut out: Vec<String> = Vec::new();
    let mut push = |ip: &str| {
        if !ip.is_empty() && !local.iter().any(|l| l == ip) && !out.iter().any(|o| o == ip) {
            out.push(ip.to_string());
        }
    };
    if let Some(s) = src {
        push(&s.ip);
    }
    for p in peers.iter().filter(|p| p.active) {
        push(&p.ip);
    }
    for p in peers {
        push(&p.ip);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fileid::FileKind;

    fn info(ts: u32) -> FileInfo {
        FileInfo {
            source: Source::Ip(Ipv4Addr::new(10, 0, 0, 1)),
            timestamp: ts,
            file_size: 1,
            crc32: 0,
            kind: FileKind::Normal,
        }
    }

    #[test]
    fn miss_rule() {
        let i = info(1000);
        assert_eq!(on_local_miss(true, &i, true, 1001, 86400), Miss::NotFound);
        assert_eq!(on_local_miss(true, &i, false, 1001, 86400), Miss::Forward);
        assert_eq!(
            on_local_miss(true, &i, false, 100_000, 86400),
            Miss::NotFound
        );
        assert_eq!(
            on_local_miss(false, &i, true, 100_000, 86400),
            Miss::Forward
        );
    }

    #[test]
    fn candidate_order() {
        let peers = vec![
            Peer {
                ip: "10.0.0.1".into(),
                active: false,
            },
            Peer {
                ip: "10.0.0.2".into(),
                active: true,
            },
            Peer {
                ip: "10.0.0.3".into(),
                active: true,
            },
            Peer {
                ip: "10.0.0.4".into(),
                active: false,
            },
        ];
        let src = Some(Ipv4Addr::new(10, 0, 0, 1));
        let local = vec!["10.0.0.3".to_string()];
        assert_eq!(
            candidates(src, &peers, &local),
            vec!["10.0.0.2", "10.0.0.1", "10.0.0.4"]
        );
        let up: Vec<Peer> = peers
            .iter()
            .map(|p| Peer {
                active: true,
                ..p.clone()
            })
            .collect();
        assert_eq!(
            candidates(src, &up, &local),
            vec!["10.0.0.1", "10.0.0.2", "10.0.0.4"]
        );
        assert!(candidates(src, &[], &[]).is_empty());
    }

    #[test]
    fn a_source_no_tracker_lists_is_never_tried() {
        let peers = vec![
            Peer {
                ip: "10.0.0.2".into(),
                active: true,
            },
            Peer {
                ip: "10.0.0.3".into(),
                active: false,
            },
        ];
        let outsider = Some(Ipv4Addr::new(169, 254, 169, 254));
        assert_eq!(
            candidates(outsider, &peers, &[]),
            vec!["10.0.0.2", "10.0.0.3"]
        );
        assert!(!is_member(Ipv4Addr::new(169, 254, 169, 254), &peers));
        assert!(is_member(Ipv4Addr::new(10, 0, 0, 3), &peers));
        // the only member is this node: nobody to ask
        assert!(candidates(outsider, &peers[..1], &["10.0.0.2".to_string()]).is_empty());
        // a member that is down is still tried, after the active ones
        let src = Some(Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(candidates(src, &peers, &[]), vec!["10.0.0.2", "10.0.0.3"]);
    }

    #[test]
    fn list_request_bytes() {
        let r = list_storage_request("group1");
        assert_eq!(r.len(), 10 + 16);
        assert_eq!(r[8], cmd::SERVER_LIST_STORAGE);
        assert_eq!(&r[10..16], b"group1");
        assert!(parse_list_storage(&[]).unwrap().is_empty());
    }
}
