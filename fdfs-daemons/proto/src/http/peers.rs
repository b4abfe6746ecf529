//! Where to get a file this node does not have: the local-miss rule (404 or forward), and
//! the storages to try: members of its group as the trackers list them, the source first
//! when it is one of them (so a replicated file is served while its source is down). The
//! source address comes from the file name, which anyone can make up: an address the
//! trackers do not list for the group is never contacted.

use std::net::Ipv4Addr;

use crate::cmd;
use crate::fileid::{FileInfo, Source};
use crate::header::Header;
use crate::msg::{StorageSelector, StorageStat};
use crate::status;
use crate::storage_ids::ServerIds;

/// A storage of a group as a tracker lists it (cmd 92): its address, parsed once when the
/// listing is read, and its status (`crate::status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub ip: Ipv4Addr,
    pub status: u8,
}

impl Peer {
    /// Whether a file may be fetched from this storage at all. Not from one that is being
    /// added (INIT), was removed (DELETED) or moved (IP_CHANGED): the address listed for
    /// it may belong to another host by now.
    pub fn usable(&self) -> bool {
        !matches!(
            self.status,
            status::INIT | status::IP_CHANGED | status::DELETED | status::NONE
        )
    }

    pub fn active(&self) -> bool {
        self.status == status::ACTIVE
    }
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

/// Decodes the body of the reply to cmd 92. Storages listed with an address that is not
/// IPv4 are left out (files are fetched by IPv4 address only).
pub fn parse_list_storage(body: &[u8]) -> Result<Vec<Peer>, crate::ProtoError> {
    Ok(StorageStat::decode_list(body)?
        .into_iter()
        .filter_map(|s| {
            Some(Peer {
                ip: s.ip.parse().ok()?,
                status: s.status,
            })
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

/// The source IP of a file: the address its name holds, or the IPv4 address
/// `storage_ids.conf` gives the server id it holds.
pub fn source_ip(info: &FileInfo, ids: Option<&ServerIds>) -> Option<Ipv4Addr> {
    match info.source {
        Source::Ip(ip) if !ip.is_unspecified() => Some(ip),
        Source::ServerId(id) => {
            let server = ids?.by_id(&id.to_string())?;
            server.addrs.iter().find_map(|a| match a {
                std::net::IpAddr::V4(v4) => Some(*v4),
                std::net::IpAddr::V6(_) => None,
            })
        }
        Source::Ip(_) => None,
    }
}

/// The storages to try for a file, and whether its source is in the listing at all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Candidates {
    pub ips: Vec<Ipv4Addr>,
    /// The source named by the file is one of the listed storages (whatever its status).
    pub source_listed: bool,
}

/// Storages to try, in order: the source when the trackers list it as ACTIVE, the
/// group's other ACTIVE members, then its other usable members ([`Peer::usable`]: the
/// source among them when it is not ACTIVE); never one for which `is_local` holds (this
/// node), never an address that is not in `peers`: a source the trackers do not list is
/// skipped.
pub fn candidates(
    source: Option<Ipv4Addr>,
    peers: &[Peer],
    is_local: impl Fn(Ipv4Addr) -> bool,
) -> Candidates {
    let mut out = Candidates::default();
    let listed_source = source.and_then(|s| peers.iter().find(|p| p.ip == s));
    out.source_listed = listed_source.is_some();
    let mut push = |ip: Ipv4Addr| {
        if !ip.is_unspecified() && !is_local(ip) && !out.ips.contains(&ip) {
            out.ips.push(ip);
        }
    };
    if let Some(s) = listed_source.filter(|p| p.active()) {
        push(s.ip);
    }
    for p in peers.iter().filter(|p| p.active()) {
        push(p.ip);
    }
    for p in peers.iter().filter(|p| p.usable()) {
        push(p.ip);
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
    fn sources_by_address_or_by_server_id() {
        assert_eq!(source_ip(&info(1), None), Some(Ipv4Addr::new(10, 0, 0, 1)));
        let by_id = FileInfo {
            source: Source::ServerId(100_002),
            ..info(1)
        };
        assert_eq!(source_ip(&by_id, None), None);
        let ids = ServerIds::parse(
            "100001 g [::1]:23001\n100002 g 10.0.0.7,172.16.0.7:23002\n",
            |_| None,
        )
        .unwrap();
        assert_eq!(
            source_ip(&by_id, Some(&ids)),
            Some(Ipv4Addr::new(10, 0, 0, 7))
        );
        let v6_only = FileInfo {
            source: Source::ServerId(100_001),
            ..info(1)
        };
        assert_eq!(source_ip(&v6_only, Some(&ids)), None);
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

    fn peer(last: u8, status: u8) -> Peer {
        Peer {
            ip: Ipv4Addr::new(10, 0, 0, last),
            status,
        }
    }

    fn ips(c: &Candidates) -> Vec<u8> {
        c.ips.iter().map(|ip| ip.octets()[3]).collect()
    }

    /// Found by fuzzing: a listing whose storage has no IPv4 address (here `.0.0.`)
    /// leaves that storage out, and keeps the others with their status.
    #[test]
    fn listing_leaves_out_storages_without_an_ipv4_address() {
        use crate::codec::Writer;
        use crate::msg::StorageStat;
        use crate::IpSize;
        let mut w = Writer::new();
        for (ip, st) in [
            ("127.0.0.61", status::ACTIVE),
            (".0.0.", status::ACTIVE),
            ("127.0.0.62", status::OFFLINE),
        ] {
            StorageStat {
                status: st,
                id: ip.into(),
                ip: ip.into(),
                ..Default::default()
            }
            .encode_into(&mut w, IpSize::V4);
        }
        let peers = parse_list_storage(&w.finish()).unwrap();
        let got: Vec<_> = peers.iter().map(|p| (p.ip, p.status)).collect();
        assert_eq!(
            got,
            [
                (Ipv4Addr::new(127, 0, 0, 61), status::ACTIVE),
                (Ipv4Addr::new(127, 0, 0, 62), status::OFFLINE)
            ]
        );
    }

    #[test]
    fn candidate_order() {
        let peers = vec![
            peer(1, status::OFFLINE),
            peer(2, status::ACTIVE),
            peer(3, status::ACTIVE),
            peer(4, status::ONLINE),
        ];
        let src = Some(Ipv4Addr::new(10, 0, 0, 1));
        let local = |ip: Ipv4Addr| ip == Ipv4Addr::new(10, 0, 0, 3);
        let c = candidates(src, &peers, local);
        assert_eq!(ips(&c), vec![2, 1, 4]);
        assert!(c.source_listed);
        let up: Vec<Peer> = peers
            .iter()
            .map(|p| Peer {
                status: status::ACTIVE,
                ..*p
            })
            .collect();
        assert_eq!(ips(&candidates(src, &up, local)), vec![1, 2, 4]);
        let none = candidates(src, &[], |_| false);
        assert!(none.ips.is_empty() && !none.source_listed);
    }

    #[test]
    fn a_source_no_tracker_lists_is_never_tried() {
        let peers = vec![peer(2, status::ACTIVE), peer(3, status::OFFLINE)];
        let outsider = Some(Ipv4Addr::new(169, 254, 169, 254));
        let c = candidates(outsider, &peers, |_| false);
        assert_eq!(ips(&c), vec![2, 3]);
        assert!(!c.source_listed);
        // the only member is this node: nobody to ask
        let c = candidates(outsider, &peers[..1], |ip| ip == peers[0].ip);
        assert!(c.ips.is_empty());
        // a member that is down is still tried, after the active ones
        let src = Some(Ipv4Addr::new(10, 0, 0, 3));
        let c = candidates(src, &peers, |_| false);
        assert_eq!(ips(&c), vec![2, 3]);
        assert!(c.source_listed);
    }

    #[test]
    fn storages_being_added_removed_or_moved_are_never_tried() {
        // their address may be another host's by now
        let peers = vec![
            peer(1, status::DELETED),
            peer(2, status::IP_CHANGED),
            peer(3, status::INIT),
            peer(4, status::NONE),
            peer(5, status::WAIT_SYNC),
            peer(6, status::SYNCING),
            peer(7, status::RECOVERY),
            peer(8, status::ACTIVE),
        ];
        for src in 1..=4 {
            let c = candidates(Some(Ipv4Addr::new(10, 0, 0, src)), &peers, |_| false);
            assert_eq!(ips(&c), vec![8, 5, 6, 7], "source .{src}");
            // listed all the same: no reason to ask the trackers again
            assert!(c.source_listed);
        }
        assert!(peers[..4].iter().all(|p| !p.usable()));
        assert!(peers[4..].iter().all(Peer::usable));
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
