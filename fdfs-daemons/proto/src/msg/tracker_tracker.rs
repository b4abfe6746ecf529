//! Tracker ↔ tracker: status and leader election (64-68), followers (58, 65) and the
//! copy of the leader's sys files by a new tracker (61-63).

use super::*;

/// `ip:port` text fields of the tracker messages (`FDFS_MAX_IP_PORT_SIZE`).
pub const IP_PORT_SIZE: usize = 52;

/// Reply to 64 TRACKER_GET_STATUS (17 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerStatus {
    pub if_leader: bool,
    /// Seconds since the tracker started (rounded down to a multiple of 300 on the wire).
    pub running_time: i64,
    /// How long the tracker was down before its last start (same rounding).
    pub restart_interval: i64,
}

impl TrackerStatus {
    pub const LEN: usize = 17;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::LEN);
        w.u8(self.if_leader as u8)
            .i64(self.running_time)
            .i64(self.restart_interval);
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() != Self::LEN {
            return Err(ProtoError::length(Self::LEN, body.len()));
        }
        let mut r = Reader::new(body);
        Ok(TrackerStatus {
            if_leader: r.u8()? != 0,
            running_time: r.i64()?,
            restart_interval: r.i64()?,
        })
    }
}

/// Body of 58 TRACKER_JOIN_LEADER (24 bytes): a follower introduces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinLeader {
    /// When the follower started (unix time).
    pub up_time: i64,
    pub version: String,
    /// The follower's tracker port.
    pub server_port: i64,
}

impl JoinLeader {
    pub const LEN: usize = 8 + VERSION_SIZE + 8;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::LEN);
        w.i64(self.up_time)
            .fixed_str(&self.version, VERSION_SIZE)
            .i64(self.server_port);
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() != Self::LEN {
            return Err(ProtoError::length(Self::LEN, body.len()));
        }
        let mut r = Reader::new(body);
        Ok(JoinLeader {
            up_time: r.i64()?,
            version: r.fixed_str(VERSION_SIZE, "version")?,
            server_port: r.i64()?,
        })
    }
}

/// Connection counters {alloc, current, max} (3 × u32) of 65 PING_LEADER and 96.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnCounts {
    pub alloc: u32,
    pub current: u32,
    pub max: u32,
}

impl ConnCounts {
    pub const LEN: usize = 12;

    pub fn encode_into(&self, w: &mut Writer) {
        w.u32(self.alloc).u32(self.current).u32(self.max);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::LEN);
        self.encode_into(&mut w);
        w.finish()
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(ConnCounts {
            alloc: r.u32()?,
            current: r.u32()?,
            max: r.u32()?,
        })
    }

    /// Body of 65 PING_LEADER: 12 bytes (6.15.5+) or empty (older followers).
    pub fn decode_ping(body: &[u8]) -> Result<Option<Self>, ProtoError> {
        match body.len() {
            0 => Ok(None),
            Self::LEN => Ok(Some(Self::decode_from(&mut Reader::new(body))?)),
            n => Err(ProtoError::length("0 or 12", n)),
        }
    }
}

/// The leader's reply to 65 PING_LEADER: trunk server assignments that changed since the
/// follower's last ping, N × {group[16], trunk server id[16]} (empty when none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrunkAssignments {
    pub entries: Vec<(String, String)>,
}

impl TrunkAssignments {
    pub const ENTRY_LEN: usize = GROUP_NAME_LEN + STORAGE_ID_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.entries.len() * Self::ENTRY_LEN);
        for (group, id) in &self.entries {
            w.fixed_str(group, GROUP_NAME_LEN)
                .fixed_str(id, STORAGE_ID_LEN);
        }
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if !body.len().is_multiple_of(Self::ENTRY_LEN) {
            return Err(ProtoError::length("n * 32", body.len()));
        }
        let mut r = Reader::new(body);
        let mut entries = Vec::new();
        while r.remaining() > 0 {
            let group = r.fixed_str(GROUP_NAME_LEN, "group name")?;
            let id = r.fixed_str(STORAGE_ID_LEN, "trunk server id")?;
            entries.push((group, id));
        }
        Ok(TrunkAssignments { entries })
    }
}

/// The four files a tracker copies from a peer (61–63): index of 63's request.
pub mod sys_file {
    pub const GROUPS: u8 = 0;
    pub const SERVERS: u8 = 1;
    pub const SYNC_TIMESTAMPS: u8 = 2;
    pub const CHANGELOG: u8 = 3;
    pub const COUNT: u8 = 4;
}

/// Body of 63 TRACKER_GET_ONE_SYS_FILE (9 bytes): file index + offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SysFileRequest {
    pub index: u8,
    pub offset: i64,
}

impl SysFileRequest {
    pub const LEN: usize = 9;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::LEN);
        w.u8(self.index).i64(self.offset);
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() != Self::LEN {
            return Err(ProtoError::length(Self::LEN, body.len()));
        }
        let mut r = Reader::new(body);
        let index = r.u8()?;
        if index >= sys_file::COUNT {
            return Err(ProtoError::field("sys file index", index.to_string()));
        }
        let offset = r.len_field("offset", i64::MAX)? as i64;
        Ok(SysFileRequest { index, offset })
    }
}

/// Reply to 63: the whole file's size, then the chunk from the requested offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysFileChunk {
    pub file_size: i64,
    pub content: Vec<u8>,
}

impl SysFileChunk {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(8 + self.content.len());
        w.i64(self.file_size).bytes(&self.content);
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(body);
        let file_size = r.len_field("file size", i64::MAX)? as i64;
        Ok(SysFileChunk {
            file_size,
            content: r.rest().to_vec(),
        })
    }
}

bodiless! {
    /// 64: a peer's uptime and whether it is the leader.
    TrackerGetStatus => cmd::TRACKER_GET_STATUS, TrackerStatus;
    /// 61: a new tracker starts copying the leader's sys files.
    SysFilesStart => cmd::TRACKER_GET_SYS_FILES_START, ();
    /// 62: the copy of the sys files is done.
    SysFilesEnd => cmd::TRACKER_GET_SYS_FILES_END, ();
    /// 68: a storage that saw two leaders asks a tracker to elect again.
    NotifyReselectLeader => cmd::TRACKER_NOTIFY_RESELECT_LEADER, ();
}

/// 65: a follower's ping, with its connection counts (6.15.5+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingLeader(pub ConnCounts);

impl Request for PingLeader {
    type Reply = TrunkAssignments;
    fn cmd(&self) -> u8 {
        cmd::TRACKER_PING_LEADER
    }
    fn body(&self) -> Vec<u8> {
        self.0.encode()
    }
}

/// 66 NOTIFY_NEXT_LEADER, then 67 COMMIT_NEXT_LEADER: the candidate's `ip:port`
/// (1..=52 bytes, NUL-terminated or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextLeader {
    /// 67 (the commit) rather than 66 (the notification).
    pub commit: bool,
    pub host: String,
}

impl NextLeader {
    /// The candidate's address from a 66/67 body.
    pub fn decode_host(body: &[u8]) -> Result<String, ProtoError> {
        use crate::msg::IP_PORT_SIZE;
        if body.is_empty() || body.len() > IP_PORT_SIZE {
            return Err(ProtoError::length(
                format!("1..={IP_PORT_SIZE}"),
                body.len(),
            ));
        }
        let mut r = Reader::new(body);
        let host = r.fixed_str(body.len(), "tracker address")?;
        let host = host.trim();
        if host.is_empty() {
            return Err(ProtoError::field("tracker address", "empty"));
        }
        Ok(host.to_string())
    }
}

impl Request for NextLeader {
    type Reply = ();
    fn cmd(&self) -> u8 {
        if self.commit {
            cmd::TRACKER_COMMIT_NEXT_LEADER
        } else {
            cmd::TRACKER_NOTIFY_NEXT_LEADER
        }
    }
    fn body(&self) -> Vec<u8> {
        self.host.as_bytes().to_vec()
    }
}

request! {
    JoinLeader => cmd::TRACKER_JOIN_LEADER, ();
    SysFileRequest => cmd::TRACKER_GET_ONE_SYS_FILE, SysFileChunk;
}

#[cfg(test)]
mod tracker_peer_tests {
    use super::*;

    #[test]
    fn tracker_status_is_17_bytes() {
        let s = TrackerStatus {
            if_leader: true,
            running_time: 600,
            restart_interval: 300,
        };
        let raw = s.encode();
        assert_eq!(
            raw,
            [1, 0, 0, 0, 0, 0, 0, 0x02, 0x58, 0, 0, 0, 0, 0, 0, 0x01, 0x2c]
        );
        assert_eq!(TrackerStatus::decode(&raw).unwrap(), s);
        assert!(TrackerStatus::decode(&raw[..16]).is_err());
    }

    #[test]
    fn join_leader_is_24_bytes() {
        let j = JoinLeader {
            up_time: 0x0102,
            version: "6.16.1".into(),
            server_port: 22122,
        };
        let raw = j.encode();
        assert_eq!(raw.len(), 24);
        assert_eq!(&raw[..8], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&raw[8..16], b"6.16.1\0\0");
        assert_eq!(&raw[16..], &[0, 0, 0, 0, 0, 0, 0x56, 0x6a]);
        assert_eq!(JoinLeader::decode(&raw).unwrap(), j);
        assert!(JoinLeader::decode(&raw[1..]).is_err());
    }

    #[test]
    fn ping_and_trunk_assignments() {
        let c = ConnCounts {
            alloc: 1,
            current: 2,
            max: 0x0300,
        };
        let raw = c.encode();
        assert_eq!(raw, [0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 3, 0]);
        assert_eq!(ConnCounts::decode_ping(&raw).unwrap(), Some(c));
        assert_eq!(ConnCounts::decode_ping(&[]).unwrap(), None);
        assert!(ConnCounts::decode_ping(&[0; 5]).is_err());
        let t = TrunkAssignments {
            entries: vec![("group1".into(), "100001".into())],
        };
        let raw = t.encode();
        assert_eq!(raw.len(), 32);
        assert_eq!(&raw[..6], b"group1");
        assert_eq!(&raw[16..22], b"100001");
        assert_eq!(TrunkAssignments::decode(&raw).unwrap(), t);
        assert_eq!(TrunkAssignments::decode(&[]).unwrap().entries.len(), 0);
        assert!(TrunkAssignments::decode(&raw[1..]).is_err());
    }

    #[test]
    fn sys_file_messages() {
        let req = SysFileRequest {
            index: sys_file::SERVERS,
            offset: 8192,
        };
        let raw = req.encode();
        assert_eq!(raw, [1, 0, 0, 0, 0, 0, 0, 0x20, 0]);
        assert_eq!(SysFileRequest::decode(&raw).unwrap(), req);
        assert!(SysFileRequest::decode(&[4, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let chunk = SysFileChunk {
            file_size: 3,
            content: b"abc".to_vec(),
        };
        let raw = chunk.encode();
        assert_eq!(raw, [0, 0, 0, 0, 0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(SysFileChunk::decode(&raw).unwrap(), chunk);
    }

    #[test]
    fn tracker_cluster_stat_records_are_90_bytes() {
        assert_eq!(TrackerInfo::LEN, 90);
        let t = TrackerInfo {
            host: "127.0.0.60:22422".into(),
            is_leader: true,
            is_active: true,
            connections: ConnCounts {
                alloc: 4,
                current: 3,
                max: 5,
            },
            version: "6.16.1".into(),
            up_time: 1_795_475_304,
            last_heartbeat: 1_795_475_305,
        };
        let raw = TrackerInfo::encode_list(std::slice::from_ref(&t));
        assert_eq!(raw.len(), 91);
        assert_eq!(raw[0], 1);
        assert_eq!(&raw[1..17], b"127.0.0.60:22422");
        assert!(raw[17..53].iter().all(|&b| b == 0));
        assert_eq!(&raw[53..55], &[1, 1]);
        assert_eq!(&raw[55..67], &[0, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0, 5]);
        assert_eq!(&raw[67..75], b"6.16.1\0\0");
        assert_eq!(&raw[75..83], &1_795_475_304i64.to_be_bytes());
        assert_eq!(TrackerInfo::decode_list(&raw).unwrap(), vec![t.clone()]);
        assert_eq!(TrackerInfo::decode_list(&[0]).unwrap(), vec![]);
        assert!(TrackerInfo::decode_list(&raw[..90]).is_err());
        let f = TrackerClusterFilter {
            filter_by: TrackerClusterFilter::BY_LEADER,
            is_active: false,
            is_leader: false,
        };
        assert_eq!(f.encode(), [2, 0, 0]);
        assert_eq!(TrackerClusterFilter::decode(&[2, 0, 0]).unwrap(), f);
        assert!(!f.accepts(&t));
        assert!(TrackerClusterFilter::default().accepts(&t));
    }
}
