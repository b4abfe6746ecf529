//! Storage ↔ tracker: joining, heartbeats and reports (81-89), sync sources for a new
//! member (79, 86-88), and the few commands a storage uses to learn about itself.

use super::*;

/// Names of the 38 counters of a storage, in wire order (also the keys of
/// `storage_stat.dat` and of the tracker's server file).
pub const COUNTER_NAMES: [&str; 38] = [
    "total_upload_count",
    "success_upload_count",
    "total_append_count",
    "success_append_count",
    "total_modify_count",
    "success_modify_count",
    "total_truncate_count",
    "success_truncate_count",
    "total_set_meta_count",
    "success_set_meta_count",
    "total_delete_count",
    "success_delete_count",
    "total_download_count",
    "success_download_count",
    "total_get_meta_count",
    "success_get_meta_count",
    "total_create_link_count",
    "success_create_link_count",
    "total_delete_link_count",
    "success_delete_link_count",
    "total_upload_bytes",
    "success_upload_bytes",
    "total_append_bytes",
    "success_append_bytes",
    "total_modify_bytes",
    "success_modify_bytes",
    "total_download_bytes",
    "success_download_bytes",
    "total_sync_in_bytes",
    "success_sync_in_bytes",
    "total_sync_out_bytes",
    "success_sync_out_bytes",
    "total_file_open_count",
    "success_file_open_count",
    "total_file_read_count",
    "success_file_read_count",
    "total_file_write_count",
    "success_file_write_count",
];

/// Index of each counter in [`StorageCounters::counters`].
pub mod counter {
    pub const TOTAL_UPLOAD: usize = 0;
    pub const TOTAL_APPEND: usize = 2;
    pub const TOTAL_MODIFY: usize = 4;
    pub const TOTAL_TRUNCATE: usize = 6;
    pub const TOTAL_SET_META: usize = 8;
    pub const TOTAL_DELETE: usize = 10;
    pub const TOTAL_DOWNLOAD: usize = 12;
    pub const TOTAL_GET_META: usize = 14;
    pub const TOTAL_CREATE_LINK: usize = 16;
    pub const TOTAL_DELETE_LINK: usize = 18;
    pub const TOTAL_UPLOAD_BYTES: usize = 20;
    pub const TOTAL_APPEND_BYTES: usize = 22;
    pub const TOTAL_MODIFY_BYTES: usize = 24;
    pub const TOTAL_DOWNLOAD_BYTES: usize = 26;
    pub const TOTAL_SYNC_IN_BYTES: usize = 28;
    pub const TOTAL_SYNC_OUT_BYTES: usize = 30;
    pub const TOTAL_FILE_OPEN: usize = 32;
    pub const TOTAL_FILE_READ: usize = 34;
    pub const TOTAL_FILE_WRITE: usize = 36;
    /// The `success_*` twin of a `total_*` counter.
    pub const fn success(total: usize) -> usize {
        total + 1
    }
}

/// A storage's activity counters (348 bytes): the BEAT body and part of 92's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageCounters {
    pub conn_alloc: u32,
    pub conn_current: u32,
    pub conn_max: u32,
    pub counters: [i64; 38],
    pub last_source_update: i64,
    pub last_sync_update: i64,
    pub last_synced_timestamp: i64,
    pub last_heart_beat_time: i64,
}

impl Default for StorageCounters {
    fn default() -> Self {
        StorageCounters {
            conn_alloc: 0,
            conn_current: 0,
            conn_max: 0,
            counters: [0; 38],
            last_source_update: 0,
            last_sync_update: 0,
            last_synced_timestamp: 0,
            last_heart_beat_time: 0,
        }
    }
}

impl StorageCounters {
    pub const LEN: usize = 348;

    pub fn encode_into(&self, w: &mut Writer) {
        w.u32(self.conn_alloc)
            .u32(self.conn_current)
            .u32(self.conn_max);
        for v in self.counters {
            w.i64(v);
        }
        w.i64(self.last_source_update)
            .i64(self.last_sync_update)
            .i64(self.last_synced_timestamp)
            .i64(self.last_heart_beat_time);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::LEN);
        self.encode_into(&mut w);
        w.finish()
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let mut s = StorageCounters {
            conn_alloc: r.u32()?,
            conn_current: r.u32()?,
            conn_max: r.u32()?,
            ..Default::default()
        };
        for c in s.counters.iter_mut() {
            *c = r.i64()?;
        }
        s.last_source_update = r.i64()?;
        s.last_sync_update = r.i64()?;
        s.last_synced_timestamp = r.i64()?;
        s.last_heart_beat_time = r.i64()?;
        Ok(s)
    }
}

/// Body of 81 STORAGE_JOIN: 145 fixed bytes, then `host:port\n` per tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    pub group: String,
    pub storage_port: u16,
    pub store_path_count: u32,
    pub subdir_count_per_path: u32,
    pub upload_priority: i64,
    pub join_time: i64,
    pub up_time: i64,
    pub version: String,
    /// True while the first full copy from a peer is not done.
    pub init_flag: bool,
    /// The storage's last known own status (−1 if unknown).
    pub status: i8,
    pub storage_id: String,
    /// The address of the tracker this request goes to (`current_tracker_ip`).
    pub tracker_ip: String,
    pub trackers: Vec<String>,
}

impl JoinRequest {
    pub const FIXED_LEN: usize = 145;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed_str(&self.group, GROUP_FIELD_17)
            .i64(self.storage_port as i64)
            .i64(self.store_path_count as i64)
            .i64(self.subdir_count_per_path as i64)
            .i64(self.upload_priority)
            .i64(self.join_time)
            .i64(self.up_time)
            .fixed_str(&self.version, VERSION_SIZE)
            .u8(self.init_flag as u8)
            .u8(self.status as u8)
            .fixed_str(&self.storage_id, STORAGE_ID_LEN)
            .fixed_str(&self.tracker_ip, IP_ADDRESS_SIZE)
            .i64(self.trackers.len() as i64);
        for t in &self.trackers {
            w.bytes(t.as_bytes()).u8(b'\n');
        }
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() < Self::FIXED_LEN {
            return Err(ProtoError::length(">= 145", body.len()));
        }
        let mut r = Reader::new(body);
        let group = r.fixed_str(GROUP_FIELD_17, "group name")?;
        if !crate::valid_group_name(&group) {
            return Err(ProtoError::field("group name", format!("{group:?}")));
        }
        let storage_port = r.len_field("storage port", 65535)? as u16;
        let store_path_count = r.len_field("store path count", 256)? as u32;
        let subdir_count_per_path = r.len_field("subdir count", 256)? as u32;
        if store_path_count == 0 || subdir_count_per_path == 0 {
            return Err(ProtoError::field("store path count", "zero"));
        }
        let upload_priority = r.i64()?;
        let join_time = r.i64()?;
        let up_time = r.i64()?;
        let version = r.fixed_str(VERSION_SIZE, "version")?;
        let init_flag = r.u8()? != 0;
        let status = r.u8()? as i8;
        let storage_id = r.fixed_str(STORAGE_ID_LEN, "storage id")?;
        let tracker_ip = r.fixed_str(IP_ADDRESS_SIZE, "tracker ip")?;
        let count = r.len_field("tracker count", 16)?;
        if count == 0 {
            return Err(ProtoError::field("tracker count", "zero"));
        }
        let text = r.str(r.remaining(), "tracker list")?;
        let trackers: Vec<String> = text
            .split('\n')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if trackers.len() as u64 != count {
            return Err(ProtoError::field(
                "tracker list",
                format!("{} lines for a count of {count}", trackers.len()),
            ));
        }
        Ok(JoinRequest {
            group,
            storage_port,
            store_path_count,
            subdir_count_per_path,
            upload_priority,
            join_time,
            up_time,
            version,
            init_flag,
            status,
            storage_id,
            tracker_ip,
            trackers,
        })
    }
}

/// Reply to 81: the status the tracker holds for the storage and its sync source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReply {
    pub status: u8,
    pub sync_src_id: String,
}

impl JoinReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.status)
            .fixed_str(&self.sync_src_id, STORAGE_ID_LEN);
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(body);
        let status = r.u8()?;
        let sync_src_id = r.fixed_str(STORAGE_ID_LEN, "sync src")?;
        r.finish()?;
        Ok(JoinReply {
            status,
            sync_src_id,
        })
    }
}

/// `FDFSStorageBrief` (67 bytes): one storage in beat replies and status messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageBrief {
    pub status: u8,
    pub port: u32,
    pub id: String,
    pub ip: String,
}

impl StorageBrief {
    pub const LEN: usize = 1 + 4 + STORAGE_ID_LEN + IP_ADDRESS_SIZE;

    pub fn encode_into(&self, w: &mut Writer) {
        w.u8(self.status)
            .u32(self.port)
            .fixed_str(&self.id, STORAGE_ID_LEN)
            .fixed_str(&self.ip, IP_ADDRESS_SIZE);
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(StorageBrief {
            status: r.u8()?,
            port: r.u32()?,
            id: r.fixed_str(STORAGE_ID_LEN, "id")?,
            ip: r.fixed_str(IP_ADDRESS_SIZE, "ip")?,
        })
    }
}

/// Flags in the first byte of a beat / report reply.
pub mod beat_flag {
    pub const LEADER_CHANGED: u8 = 0x01;
    pub const TRUNK_SERVER_CHANGED: u8 = 0x02;
    pub const GROUP_MEMBERS_CHANGED: u8 = 0x04;
}

/// Reply to 83/84/89: a flag byte, then the briefs the flags announce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BeatReply {
    pub leader: Option<StorageBrief>,
    pub trunk_server: Option<StorageBrief>,
    pub group_members: Option<Vec<StorageBrief>>,
}

impl BeatReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0;
        let mut w = Writer::new();
        w.u8(0);
        if let Some(b) = &self.leader {
            flags |= beat_flag::LEADER_CHANGED;
            b.encode_into(&mut w);
        }
        if let Some(b) = &self.trunk_server {
            flags |= beat_flag::TRUNK_SERVER_CHANGED;
            b.encode_into(&mut w);
        }
        if let Some(list) = &self.group_members {
            flags |= beat_flag::GROUP_MEMBERS_CHANGED;
            for b in list {
                b.encode_into(&mut w);
            }
        }
        let mut out = w.finish();
        out[0] = flags;
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.is_empty() {
            return Ok(BeatReply::default());
        }
        let mut r = Reader::new(body);
        let flags = r.u8()?;
        let mut reply = BeatReply::default();
        if flags & beat_flag::LEADER_CHANGED != 0 {
            reply.leader = Some(StorageBrief::decode_from(&mut r)?);
        }
        if flags & beat_flag::TRUNK_SERVER_CHANGED != 0 {
            reply.trunk_server = Some(StorageBrief::decode_from(&mut r)?);
        }
        if flags & beat_flag::GROUP_MEMBERS_CHANGED != 0 {
            if !r.remaining().is_multiple_of(StorageBrief::LEN) {
                return Err(ProtoError::length("n * 67 member briefs", r.remaining()));
            }
            let mut list = Vec::new();
            while r.remaining() > 0 {
                list.push(StorageBrief::decode_from(&mut r)?);
            }
            reply.group_members = Some(list);
        }
        r.finish()?;
        Ok(reply)
    }
}

/// Body of 84: total and free MB of every store path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskUsage {
    pub paths: Vec<(i64, i64)>,
}

impl DiskUsage {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        for (total, free) in &self.paths {
            w.i64(*total).i64(*free);
        }
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.is_empty() || !body.len().is_multiple_of(16) {
            return Err(ProtoError::length("n * 16", body.len()));
        }
        let mut r = Reader::new(body);
        let mut paths = Vec::new();
        while r.remaining() > 0 {
            paths.push((r.i64()?, r.i64()?));
        }
        Ok(DiskUsage { paths })
    }
}

/// Body of 89: how far this storage has received each peer's changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub entries: Vec<(String, i32)>,
}

impl SyncReport {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        for (id, ts) in &self.entries {
            w.fixed_str(id, STORAGE_ID_LEN).i32(*ts);
        }
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if !body.len().is_multiple_of(20) {
            return Err(ProtoError::length("n * 20", body.len()));
        }
        let mut r = Reader::new(body);
        let mut entries = Vec::new();
        while r.remaining() > 0 {
            entries.push((r.fixed_str(STORAGE_ID_LEN, "id")?, r.i32()?));
        }
        Ok(SyncReport { entries })
    }
}

/// A sync source and the time up to which it must copy old files (87/88/79/86).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSource {
    pub src_id: String,
    pub until_timestamp: i64,
}

impl SyncSource {
    pub const LEN: usize = STORAGE_ID_LEN + 8;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed_str(&self.src_id, STORAGE_ID_LEN)
            .i64(self.until_timestamp);
        w.finish()
    }

    /// An empty body means "no source".
    pub fn decode(body: &[u8]) -> Result<Option<Self>, ProtoError> {
        if body.is_empty() {
            return Ok(None);
        }
        let mut r = Reader::new(body);
        let src_id = r.fixed_str(STORAGE_ID_LEN, "src id")?;
        let until_timestamp = r.i64()?;
        r.finish()?;
        Ok((!src_id.is_empty()).then_some(SyncSource {
            src_id,
            until_timestamp,
        }))
    }
}

/// Body of 60 GET_MY_IP (6.16: group[17] + u32 port; older: group[16]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetMyIp {
    pub group: String,
    pub port: u32,
}

impl GetMyIp {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed_str(&self.group, GROUP_FIELD_17).u32(self.port);
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(body);
        match body.len() {
            21 => Ok(GetMyIp {
                group: r.fixed_str(GROUP_FIELD_17, "group name")?,
                port: r.u32()?,
            }),
            16 => Ok(GetMyIp {
                group: r.fixed_str(GROUP_NAME_LEN, "group name")?,
                port: 0,
            }),
            n => Err(ProtoError::length("16 or 21", n)),
        }
    }
}

/// 79 / 86 / 87: a sync source, or none (an empty body).
impl Reply for Option<SyncSource> {
    fn from_body(body: &[u8]) -> Result<Self, ProtoError> {
        SyncSource::decode(body)
    }
}

bodiless! {
    /// 75: the tracker's parameters, `key=value` lines.
    ParameterReq => cmd::STORAGE_PARAMETER_REQ, Vec<u8>;
    /// 79: whether a source is copying old files to us.
    SyncDestQuery => cmd::STORAGE_SYNC_DEST_QUERY, Option<SyncSource>;
    /// 87: who copies the old files to us (a new member asks when it joins).
    SyncDestReq => cmd::STORAGE_SYNC_DEST_REQ, Option<SyncSource>;
}

/// 83: a heartbeat, with the storage's counters when they changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    pub counters: Option<StorageCounters>,
}

impl Request for Beat {
    type Reply = BeatReply;
    fn cmd(&self) -> u8 {
        cmd::STORAGE_BEAT
    }
    fn body(&self) -> Vec<u8> {
        self.counters
            .as_ref()
            .map(StorageCounters::encode)
            .unwrap_or_default()
    }
}

/// 88: a new member's source tells the tracker it copies the old files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncNotify(pub SyncSource);

impl Request for SyncNotify {
    type Reply = ();
    fn cmd(&self) -> u8 {
        cmd::STORAGE_SYNC_NOTIFY
    }
    fn body(&self) -> Vec<u8> {
        self.0.encode()
    }
}

/// 86: who copies the old files to `dest_id` (asked by its peers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSrcReq {
    pub group: String,
    pub dest_id: String,
}

impl SyncSrcReq {
    pub const LEN: usize = GROUP_NAME_LEN + STORAGE_ID_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed_str(&self.group, GROUP_NAME_LEN)
            .fixed_str(&self.dest_id, STORAGE_ID_LEN);
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() != Self::LEN {
            return Err(ProtoError::length(Self::LEN, body.len()));
        }
        let mut r = Reader::new(body);
        let group = get_group(&mut r)?;
        let dest_id = r.fixed_str(STORAGE_ID_LEN, "dest id")?;
        Ok(SyncSrcReq { group, dest_id })
    }
}

/// 76: a storage tells the trackers the status of a peer (a new member's copy is done,
/// or it is being made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportStatus {
    pub group: String,
    pub brief: StorageBrief,
}

impl ReportStatus {
    pub const LEN: usize = GROUP_NAME_LEN + StorageBrief::LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed_str(&self.group, GROUP_NAME_LEN);
        self.brief.encode_into(&mut w);
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() != Self::LEN {
            return Err(ProtoError::length(Self::LEN, body.len()));
        }
        let mut r = Reader::new(body);
        let group = get_group(&mut r)?;
        let brief = StorageBrief::decode_from(&mut r)?;
        Ok(ReportStatus { group, brief })
    }
}

/// 70 GET_SERVER_ID / 71 GET_STATUS: a group and `ip:port` (6.16), or a group and an
/// optional IP (older tools).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHost {
    pub group: String,
    /// The host text as sent, NULs and blanks around it removed (may be empty).
    pub host: String,
}

impl GroupHost {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed_str(&self.group, GROUP_NAME_LEN)
            .bytes(self.host.as_bytes());
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() < GROUP_NAME_LEN {
            return Err(ProtoError::length(">= 16", body.len()));
        }
        let mut r = Reader::new(body);
        let group = get_group(&mut r)?;
        let text = r.str(r.remaining(), "host")?;
        let host = text.trim_matches(char::from(0)).trim().to_string();
        Ok(GroupHost { group, host })
    }
}

/// A 4-byte signed integer body: 72's reply (the group's current trunk file id) and
/// 73's request (a trunk file id the trunk server created).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrunkFileId(pub i32);

impl TrunkFileId {
    pub fn encode(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let raw: [u8; 4] = body
            .try_into()
            .map_err(|_| ProtoError::length("4", body.len()))?;
        let id = i32::from_be_bytes(raw);
        if id < 0 {
            return Err(ProtoError::field("trunk file id", id.to_string()));
        }
        Ok(TrunkFileId(id))
    }
}

/// An 8-byte signed count: 31's reply (a storage's trunk binlog size) and 74's request
/// (the trunk server's free trunk space in MB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count64(pub i64);

impl Count64 {
    pub fn encode(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let raw: [u8; 8] = body
            .try_into()
            .map_err(|_| ProtoError::length("8", body.len()))?;
        let n = i64::from_be_bytes(raw);
        if n < 0 {
            return Err(ProtoError::field("count", n.to_string()));
        }
        Ok(Count64(n))
    }
}

bodiless! {
    /// 31: the leader tracker asks a storage for the size of its trunk binlog.
    TrunkGetBinlogSize => cmd::TRUNK_GET_BINLOG_SIZE, Count64;
    /// 32: the leader tracker tells the new trunk server to forget its peers' marks.
    TrunkDeleteBinlogMarks => cmd::TRUNK_DELETE_BINLOG_MARKS, ();
    /// 72: a new trunk server asks the tracker for the group's newest trunk file id.
    FetchTrunkFileId => cmd::STORAGE_FETCH_TRUNK_FID, TrunkFileId;
}

/// 73: the trunk server reports the newest trunk file id it created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportTrunkFileId(pub TrunkFileId);

/// 74: the trunk server reports its free trunk space, in MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportTrunkFree(pub Count64);

impl Request for ReportTrunkFileId {
    type Reply = ();
    fn cmd(&self) -> u8 {
        cmd::STORAGE_REPORT_TRUNK_FID
    }
    fn body(&self) -> Vec<u8> {
        self.0.encode()
    }
}

impl Request for ReportTrunkFree {
    type Reply = ();
    fn cmd(&self) -> u8 {
        cmd::STORAGE_REPORT_TRUNK_FREE
    }
    fn body(&self) -> Vec<u8> {
        self.0.encode()
    }
}

/// 70 GET_SERVER_ID: a storage asks for its own id (group + `ip:port`); the reply is
/// the id text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetServerId(pub GroupHost);

/// 69 FETCH_STORAGE_IDS: one page of the tracker's `storage_ids.conf`, from entry
/// `start`. With `allow_empty`, a tracker without storage ids answers an empty list
/// instead of EOPNOTSUPP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchStorageIds {
    pub start: u32,
    pub allow_empty: bool,
}

impl FetchStorageIds {
    pub const LEN: usize = 5;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.start).u8(self.allow_empty as u8);
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() != Self::LEN {
            return Err(ProtoError::length("5", body.len()));
        }
        let mut r = Reader::new(body);
        Ok(FetchStorageIds {
            start: r.u32()?,
            allow_empty: r.u8()? != 0,
        })
    }
}

/// Reply to 69: how many servers the table has, then the lines of this page
/// (`id group address:port[ rw=mode]`, see [`crate::storage_ids`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageIdsPage {
    pub total: u32,
    pub lines: Vec<String>,
}

impl StorageIdsPage {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.total).u32(self.lines.len() as u32);
        for line in &self.lines {
            w.bytes(line.as_bytes()).u8(b'\n');
        }
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() < 8 {
            return Err(ProtoError::length(">= 8", body.len()));
        }
        let mut r = Reader::new(body);
        let total = r.u32()?;
        let count = r.u32()? as usize;
        let text = r.str(r.remaining(), "storage id lines")?;
        let lines: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if lines.len() != count || count as u32 > total {
            return Err(ProtoError::field(
                "storage id lines",
                format!("{} lines, the header says {count} of {total}", lines.len()),
            ));
        }
        Ok(StorageIdsPage { total, lines })
    }
}

/// 109 GET_GROUP_NAME: the group `storage_ids.conf` gives the storage at `ip` (empty:
/// the address the request comes from) and `port`. The reply is a 16-byte group name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetGroupName {
    pub ip: String,
    pub port: u32,
}

impl GetGroupName {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(self.ip.as_bytes()).u32(self.port);
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() < 4 || body.len() - 4 >= IP_ADDRESS_SIZE {
            return Err(ProtoError::length("4 to 49", body.len()));
        }
        let mut r = Reader::new(body);
        let ip = r.str(body.len() - 4, "ip address")?;
        Ok(GetGroupName {
            ip: ip.trim_matches(char::from(0)).to_string(),
            port: r.u32()?,
        })
    }
}

/// The reply to 109.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupName(pub String);

impl GroupName {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed_str(&self.0, GROUP_NAME_LEN);
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() != GROUP_NAME_LEN {
            return Err(ProtoError::length("16", body.len()));
        }
        Ok(GroupName(get_group(&mut Reader::new(body))?))
    }
}

impl GetServerId {
    pub fn encode(&self) -> Vec<u8> {
        self.0.encode()
    }
}

request! {
    FetchStorageIds => cmd::STORAGE_FETCH_STORAGE_IDS, StorageIdsPage;
    GetGroupName => cmd::STORAGE_GET_GROUP_NAME, GroupName;
    GetServerId => cmd::STORAGE_GET_SERVER_ID, Vec<u8>;
    JoinRequest => cmd::STORAGE_JOIN, JoinReply;
    DiskUsage => cmd::STORAGE_REPORT_DISK_USAGE, BeatReply;
    SyncReport => cmd::STORAGE_SYNC_REPORT, BeatReply;
    SyncSrcReq => cmd::STORAGE_SYNC_SRC_REQ, Option<SyncSource>;
    ReportStatus => cmd::STORAGE_REPORT_STATUS, ();
    GetMyIp => cmd::STORAGE_GET_MY_IP, Vec<u8>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn storage_id_messages_round_trip() {
        let ask = FetchStorageIds {
            start: 2,
            allow_empty: true,
        };
        assert_eq!(ask.encode(), [0, 0, 0, 2, 1]);
        assert_eq!(FetchStorageIds::decode(&ask.encode()).unwrap(), ask);
        assert!(FetchStorageIds::decode(&[0, 0, 0, 2]).is_err());
        let page = StorageIdsPage {
            total: 3,
            lines: vec![
                "100001 group1 127.0.0.5:23000".into(),
                "100002 group1 [::1]:23001 rw=none".into(),
            ],
        };
        let raw = page.encode();
        assert_eq!(&raw[..8], [0, 0, 0, 3, 0, 0, 0, 2]);
        assert!(raw.ends_with(b"rw=none\n"));
        assert_eq!(StorageIdsPage::decode(&raw).unwrap(), page);
        let mut miscounted = raw.clone();
        miscounted[7] = 3;
        assert!(StorageIdsPage::decode(&miscounted).is_err());
        let empty = StorageIdsPage::decode(&[0; 8]).unwrap();
        assert!(empty.lines.is_empty() && empty.total == 0);
        let name = GetGroupName {
            ip: "10.0.0.1".into(),
            port: 23001,
        };
        assert_eq!(name.encode(), b"10.0.0.1\0\0\x59\xd9");
        assert_eq!(GetGroupName::decode(&name.encode()).unwrap(), name);
        let own = GetGroupName::decode(&[0, 0, 0x59, 0xd8]).unwrap();
        assert_eq!((own.ip.as_str(), own.port), ("", 23000));
        assert!(GetGroupName::decode(&[0; 3]).is_err());
        let g = GroupName("group1".into()).encode();
        assert_eq!(g.len(), 16);
        assert_eq!(GroupName::decode(&g).unwrap().0, "group1");
    }

    #[test]
    fn captured_store_target_reply() {
        let captured = hex("67726f757031 00000000000000000000
             3132372e302e302e3631 0000000000
             0000000000005b68 00");
        let t = StoreTarget::decode(&captured).unwrap();
        assert_eq!(t.group, "group1");
        assert_eq!(t.server.ip, "127.0.0.61");
        assert_eq!(t.server.port, 23400);
        assert_eq!(t.store_path_index, 0);
        assert_eq!(t.encode(IpSize::V4), captured);
        let wide = t.encode(IpSize::V6);
        assert_eq!(wide.len(), 70);
        assert_eq!(StoreTarget::decode(&wide).unwrap(), t);
    }

    #[test]
    fn fetch_targets_widths() {
        let t = FetchTargets {
            group: "group1".into(),
            servers: vec![ServerAddr {
                ip: "127.0.0.61".into(),
                port: 23400,
            }],
        };
        assert_eq!(t.encode(IpSize::V4).len(), 39);
        assert_eq!(t.encode(IpSize::V6).len(), 69);
        assert_eq!(
            FetchTargets::decode(&t.encode(IpSize::V6), None).unwrap(),
            t
        );
        let two = FetchTargets {
            servers: vec![t.servers[0].clone(), t.servers[0].clone()],
            ..t.clone()
        };
        let raw = two.encode(IpSize::V4);
        assert_eq!(raw.len(), 16 + 2 * 23);
        assert_eq!(FetchTargets::decode(&raw, Some(IpSize::V4)).unwrap(), two);
    }

    #[test]
    fn file_query_bounds() {
        use crate::msg::FileRef;
        let q = FileRef {
            group: "group1".into(),
            filename: "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt".into(),
        };
        let raw = q.encode();
        assert_eq!(raw.len(), 60);
        assert_eq!(FileRef::decode_query(&raw).unwrap(), q);
        assert!(FileRef::decode_query(&raw[..20]).is_err());
        // A storage takes shorter names (a tracker only file IDs).
        assert!(FileRef::decode(&raw[..20]).is_ok());
        let mut bad = raw.clone();
        bad[0] = b'.';
        assert!(FileRef::decode_query(&bad).is_err());
    }

    #[test]
    fn group_and_storage_stat_lengths() {
        let mut w = Writer::new();
        GroupStat {
            group: "group1".into(),
            current_trunk_file_id: -1,
            ..Default::default()
        }
        .encode_into(&mut w);
        let raw = w.finish();
        assert_eq!(raw.len(), 113);
        assert_eq!(
            GroupStat::decode_list(&raw).unwrap()[0].current_trunk_file_id,
            -1
        );

        let stat = StorageStat {
            status: 7,
            id: "127.0.0.61".into(),
            ip: "127.0.0.61".into(),
            version: "6.16.1".into(),
            storage_port: 23400,
            ..Default::default()
        };
        for size in [IpSize::V4, IpSize::V6] {
            let mut w = Writer::new();
            stat.encode_into(&mut w, size);
            let raw = w.finish();
            assert_eq!(raw.len(), if size == IpSize::V4 { 487 } else { 517 });
            assert_eq!(StorageStat::decode_list(&raw).unwrap(), vec![stat.clone()]);
        }
        assert_eq!(StorageCounters::default().encode().len(), 348);
    }

    #[test]
    fn join_request_matches_captured_length() {
        let j = JoinRequest {
            group: "group1".into(),
            storage_port: 23400,
            store_path_count: 1,
            subdir_count_per_path: 256,
            upload_priority: 10,
            join_time: 1_795_475_000,
            up_time: 1_795_475_100,
            version: "6.16.1".into(),
            init_flag: false,
            status: 0,
            storage_id: String::new(),
            tracker_ip: "127.0.0.61".into(),
            trackers: vec!["127.0.0.60:22422".into()],
        };
        let raw = j.encode();
        assert_eq!(raw.len(), 162);
        assert_eq!(&raw[..6], b"group1");
        assert_eq!(&raw[17..25], &23400i64.to_be_bytes());
        assert_eq!(&raw[91..101], b"127.0.0.61");
        assert_eq!(&raw[145..], b"127.0.0.60:22422\n");
        assert_eq!(JoinRequest::decode(&raw).unwrap(), j);
        let mut bad = raw.clone();
        bad[137 + 7] = 2; // claims two trackers, carries one line
        assert!(JoinRequest::decode(&bad).is_err());
    }

    #[test]
    fn captured_beat_reply() {
        // 05 + leader brief + own brief = 135 bytes.
        let reply = BeatReply {
            leader: Some(StorageBrief {
                status: 0,
                port: 22422,
                id: "127.0.0.60".into(),
                ip: "127.0.0.60".into(),
            }),
            trunk_server: None,
            group_members: Some(vec![StorageBrief {
                status: 7,
                port: 23400,
                id: "127.0.0.61".into(),
                ip: "127.0.0.61".into(),
            }]),
        };
        let raw = reply.encode();
        assert_eq!(raw.len(), 135);
        assert_eq!(raw[0], 0x05);
        assert_eq!(&raw[1..6], &[0, 0, 0, 0x57, 0x96]);
        assert_eq!(&raw[6..16], b"127.0.0.60");
        assert_eq!(&raw[68..73], &[7, 0, 0, 0x5b, 0x68]);
        assert_eq!(BeatReply::decode(&raw).unwrap(), reply);
        assert_eq!(BeatReply::default().encode(), vec![0]);
    }

    #[test]
    fn small_tracker_bodies() {
        let ju = JoinReply {
            status: 6,
            sync_src_id: String::new(),
        };
        assert_eq!(ju.encode().len(), 17);
        assert_eq!(JoinReply::decode(&ju.encode()).unwrap(), ju);
        let du = DiskUsage {
            paths: vec![(100, 50), (200, 10)],
        };
        assert_eq!(DiskUsage::decode(&du.encode()).unwrap(), du);
        let sr = SyncReport {
            entries: vec![("127.0.0.62".into(), 1_795_475_304)],
        };
        assert_eq!(sr.encode().len(), 20);
        assert_eq!(SyncReport::decode(&sr.encode()).unwrap(), sr);
        let src = SyncSource {
            src_id: "127.0.0.61".into(),
            until_timestamp: 5,
        };
        assert_eq!(src.encode().len(), 24);
        assert_eq!(SyncSource::decode(&src.encode()).unwrap(), Some(src));
        assert_eq!(SyncSource::decode(&[]).unwrap(), None);
        let ip = GetMyIp {
            group: "group1".into(),
            port: 23000,
        };
        assert_eq!(ip.encode().len(), 21);
        assert_eq!(GetMyIp::decode(&ip.encode()).unwrap(), ip);
        let sel = StorageSelector {
            group: "group1".into(),
            storage_id: Some("127.0.0.61".into()),
        };
        assert_eq!(StorageSelector::decode(&sel.encode()).unwrap(), sel);
    }
}
