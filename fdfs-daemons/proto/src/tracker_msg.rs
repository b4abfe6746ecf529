//! Requests and replies exchanged with a tracker (port 22122).

use crate::codec::{ProtoError, Reader, Writer};
use crate::{IpSize, GROUP_NAME_LEN, IP_ADDRESS_SIZE, STORAGE_ID_LEN, VERSION_SIZE};

/// Group names in most tracker structs take 17 bytes (16 + NUL).
pub const GROUP_FIELD_17: usize = GROUP_NAME_LEN + 1;

/// A storage's address as the tracker hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    pub ip: String,
    pub port: u16,
}

fn put_addr(w: &mut Writer, a: &ServerAddr, ip_size: IpSize) {
    // Query replies use one byte less than the address size for the IP text.
    w.fixed_str(&a.ip, ip_size.width() - 1).i64(a.port as i64);
}

fn get_addr(r: &mut Reader<'_>, ip_size: IpSize) -> Result<ServerAddr, ProtoError> {
    let ip = r.fixed_str(ip_size.width() - 1, "ip")?;
    let port = r.i64()?;
    Ok(ServerAddr {
        ip,
        port: u16::try_from(port).map_err(|_| ProtoError::field("port", port.to_string()))?,
    })
}

/// Reads a 16-byte group field and checks it is a valid group name.
pub fn get_group(r: &mut Reader<'_>) -> Result<String, ProtoError> {
    let g = r.fixed_str(GROUP_NAME_LEN, "group name")?;
    if !crate::valid_group_name(&g) {
        return Err(ProtoError::field("group name", format!("{g:?}")));
    }
    Ok(g)
}

/// Reply to 101/104 (store one): where to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreTarget {
    pub group: String,
    pub server: ServerAddr,
    pub store_path_index: u8,
}

impl StoreTarget {
    pub fn encode(&self, ip_size: IpSize) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed_str(&self.group, GROUP_NAME_LEN);
        put_addr(&mut w, &self.server, ip_size);
        w.u8(self.store_path_index);
        w.finish()
    }

    /// Accepts both widths (40 or 70 bytes), as 6.15+ clients do.
    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let ip_size = match body.len() {
            40 => IpSize::V4,
            70 => IpSize::V6,
            n => return Err(ProtoError::length("40 or 70", n)),
        };
        let mut r = Reader::new(body);
        let group = r.fixed_str(GROUP_NAME_LEN, "group name")?;
        let server = get_addr(&mut r, ip_size)?;
        let store_path_index = r.u8()?;
        r.finish()?;
        Ok(StoreTarget {
            group,
            server,
            store_path_index,
        })
    }
}

/// Reply to 106/107 (store all): every writable storage of the chosen group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreTargets {
    pub group: String,
    pub servers: Vec<ServerAddr>,
    pub store_path_index: u8,
}

impl StoreTargets {
    pub fn encode(&self, ip_size: IpSize) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed_str(&self.group, GROUP_NAME_LEN);
        for s in &self.servers {
            put_addr(&mut w, s, ip_size);
        }
        w.u8(self.store_path_index);
        w.finish()
    }

    pub fn decode(body: &[u8], ip_size: IpSize) -> Result<Self, ProtoError> {
        let per = ip_size.width() - 1 + 8;
        if body.len() < GROUP_NAME_LEN + 1 + per
            || !(body.len() - GROUP_NAME_LEN - 1).is_multiple_of(per)
        {
            return Err(ProtoError::length(format!("16 + n*{per} + 1"), body.len()));
        }
        let mut r = Reader::new(body);
        let group = r.fixed_str(GROUP_NAME_LEN, "group name")?;
        let n = (body.len() - GROUP_NAME_LEN - 1) / per;
        let servers = (0..n)
            .map(|_| get_addr(&mut r, ip_size))
            .collect::<Result<_, _>>()?;
        let store_path_index = r.u8()?;
        Ok(StoreTargets {
            group,
            servers,
            store_path_index,
        })
    }
}

/// Body of 102/103/105: which file a client wants to read or change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileQuery {
    pub group: String,
    pub filename: String,
}

impl FileQuery {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed_str(&self.group, GROUP_NAME_LEN)
            .bytes(self.filename.as_bytes());
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() < GROUP_NAME_LEN + 22 || body.len() >= GROUP_NAME_LEN + 128 {
            return Err(ProtoError::length("38..=143", body.len()));
        }
        let mut r = Reader::new(body);
        let group = get_group(&mut r)?;
        let filename = r.str(r.remaining(), "file name")?;
        Ok(FileQuery { group, filename })
    }
}

/// Reply to 102/103 (one server) and 105 (all servers that have the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTargets {
    pub group: String,
    pub servers: Vec<ServerAddr>,
}

impl FetchTargets {
    pub fn encode(&self, ip_size: IpSize) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed_str(&self.group, GROUP_NAME_LEN);
        for s in &self.servers {
            put_addr(&mut w, s, ip_size);
        }
        w.finish()
    }

    /// Decodes a reply; the IP width is detected for one-server replies (39/69 bytes).
    pub fn decode(body: &[u8], ip_size: Option<IpSize>) -> Result<Self, ProtoError> {
        let ip_size = match (body.len(), ip_size) {
            (39, _) => IpSize::V4,
            (69, _) => IpSize::V6,
            (_, Some(s)) => s,
            (n, None) => return Err(ProtoError::length("39 or 69", n)),
        };
        let per = ip_size.width() - 1 + 8;
        if body.len() < GROUP_NAME_LEN + per || !(body.len() - GROUP_NAME_LEN).is_multiple_of(per) {
            return Err(ProtoError::length(format!("16 + n*{per}"), body.len()));
        }
        let mut r = Reader::new(body);
        let group = r.fixed_str(GROUP_NAME_LEN, "group name")?;
        let servers = (0..(body.len() - GROUP_NAME_LEN) / per)
            .map(|_| get_addr(&mut r, ip_size))
            .collect::<Result<_, _>>()?;
        Ok(FetchTargets { group, servers })
    }
}

/// One group in the reply to 90/91 (113 bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupStat {
    pub group: String,
    pub total_mb: i64,
    pub free_mb: i64,
    pub reserved_mb: i64,
    pub trunk_free_mb: i64,
    pub storage_count: i64,
    pub storage_port: i64,
    pub readable_server_count: i64,
    pub writable_server_count: i64,
    pub current_write_server: i64,
    pub store_path_count: i64,
    pub subdir_count_per_path: i64,
    pub current_trunk_file_id: i64,
}

impl GroupStat {
    pub const LEN: usize = 113;

    pub fn encode_into(&self, w: &mut Writer) {
        w.fixed_str(&self.group, GROUP_FIELD_17);
        for v in [
            self.total_mb,
            self.free_mb,
            self.reserved_mb,
            self.trunk_free_mb,
            self.storage_count,
            self.storage_port,
            self.readable_server_count,
            self.writable_server_count,
            self.current_write_server,
            self.store_path_count,
            self.subdir_count_per_path,
            self.current_trunk_file_id,
        ] {
            w.i64(v);
        }
    }

    pub fn decode_list(body: &[u8]) -> Result<Vec<Self>, ProtoError> {
        if !body.len().is_multiple_of(Self::LEN) {
            return Err(ProtoError::length("a multiple of 113", body.len()));
        }
        let mut r = Reader::new(body);
        let mut out = Vec::new();
        while r.remaining() > 0 {
            out.push(GroupStat {
                group: r.fixed_str(GROUP_FIELD_17, "group name")?,
                total_mb: r.i64()?,
                free_mb: r.i64()?,
                reserved_mb: r.i64()?,
                trunk_free_mb: r.i64()?,
                storage_count: r.i64()?,
                storage_port: r.i64()?,
                readable_server_count: r.i64()?,
                writable_server_count: r.i64()?,
                current_write_server: r.i64()?,
                store_path_count: r.i64()?,
                subdir_count_per_path: r.i64()?,
                current_trunk_file_id: r.i64()?,
            });
        }
        Ok(out)
    }
}

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

/// One storage in the reply to 92 (487 bytes with 16-byte IPs, 517 with 46).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageStat {
    pub status: u8,
    pub rw_mode: u8,
    pub id: String,
    pub ip: String,
    pub sync_src_id: String,
    pub version: String,
    pub join_time: i64,
    pub up_time: i64,
    pub total_mb: i64,
    pub free_mb: i64,
    pub reserved_mb: i64,
    pub upload_priority: i64,
    pub store_path_count: i64,
    pub subdir_count_per_path: i64,
    pub current_write_path: i64,
    pub storage_port: i64,
    pub counters: StorageCounters,
    pub is_trunk_server: bool,
}

impl StorageStat {
    pub fn len(ip_size: IpSize) -> usize {
        471 + ip_size.width()
    }

    pub fn encode_into(&self, w: &mut Writer, ip_size: IpSize) {
        w.u8(self.status)
            .u8(self.rw_mode)
            .fixed_str(&self.id, STORAGE_ID_LEN)
            .fixed_str(&self.ip, ip_size.width())
            .fixed_str(&self.sync_src_id, STORAGE_ID_LEN)
            .fixed_str(&self.version, VERSION_SIZE);
        for v in [
            self.join_time,
            self.up_time,
            self.total_mb,
            self.free_mb,
            self.reserved_mb,
            self.upload_priority,
            self.store_path_count,
            self.subdir_count_per_path,
            self.current_write_path,
            self.storage_port,
        ] {
            w.i64(v);
        }
        self.counters.encode_into(w);
        w.u8(self.is_trunk_server as u8);
    }

    /// Decodes a list; the record width tells the IP size.
    pub fn decode_list(body: &[u8]) -> Result<Vec<Self>, ProtoError> {
        let ip_size = if body.len().is_multiple_of(Self::len(IpSize::V4)) {
            IpSize::V4
        } else if body.len().is_multiple_of(Self::len(IpSize::V6)) {
            IpSize::V6
        } else {
            return Err(ProtoError::length("a multiple of 487 or 517", body.len()));
        };
        let mut r = Reader::new(body);
        let mut out = Vec::new();
        while r.remaining() > 0 {
            out.push(StorageStat {
                status: r.u8()?,
                rw_mode: r.u8()?,
                id: r.fixed_str(STORAGE_ID_LEN, "id")?,
                ip: r.fixed_str(ip_size.width(), "ip")?,
                sync_src_id: r.fixed_str(STORAGE_ID_LEN, "sync src")?,
                version: r.fixed_str(VERSION_SIZE, "version")?,
                join_time: r.i64()?,
                up_time: r.i64()?,
                total_mb: r.i64()?,
                free_mb: r.i64()?,
                reserved_mb: r.i64()?,
                upload_priority: r.i64()?,
                store_path_count: r.i64()?,
                subdir_count_per_path: r.i64()?,
                current_write_path: r.i64()?,
                storage_port: r.i64()?,
                counters: StorageCounters::decode_from(&mut r)?,
                is_trunk_server: r.u8()? != 0,
            });
        }
        Ok(out)
    }
}

/// Body of 92: a group, optionally narrowed to one storage id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSelector {
    pub group: String,
    pub storage_id: Option<String>,
}

impl StorageSelector {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed_str(&self.group, GROUP_NAME_LEN);
        if let Some(id) = &self.storage_id {
            w.bytes(id.as_bytes());
        }
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() < GROUP_NAME_LEN || body.len() >= GROUP_NAME_LEN + STORAGE_ID_LEN {
            return Err(ProtoError::length("16..=31", body.len()));
        }
        let mut r = Reader::new(body);
        let group = get_group(&mut r)?;
        let id = r.str(r.remaining(), "storage id")?;
        Ok(StorageSelector {
            group,
            storage_id: (!id.is_empty()).then_some(id),
        })
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
        let q = FileQuery {
            group: "group1".into(),
            filename: "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt".into(),
        };
        let raw = q.encode();
        assert_eq!(raw.len(), 60);
        assert_eq!(FileQuery::decode(&raw).unwrap(), q);
        assert!(FileQuery::decode(&raw[..20]).is_err());
        let mut bad = raw.clone();
        bad[0] = b'.';
        assert!(FileQuery::decode(&bad).is_err());
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

// ----- tracker ↔ tracker (§3.5) and the tracker cluster listing (96) --------------------

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

/// Request of 96 TRACKER_CLUSTER_STAT (3 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerClusterFilter {
    /// Bit 1: filter on `is_active`; bit 2: filter on `is_leader`.
    pub filter_by: u8,
    pub is_active: bool,
    pub is_leader: bool,
}

impl TrackerClusterFilter {
    pub const LEN: usize = 3;
    pub const BY_ACTIVE: u8 = 1;
    pub const BY_LEADER: u8 = 2;

    pub fn encode(&self) -> Vec<u8> {
        vec![self.filter_by, self.is_active as u8, self.is_leader as u8]
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        match body {
            [filter_by, is_active, is_leader] => Ok(TrackerClusterFilter {
                filter_by: *filter_by,
                is_active: *is_active != 0,
                is_leader: *is_leader != 0,
            }),
            _ => Err(ProtoError::length(Self::LEN, body.len())),
        }
    }

    pub fn accepts(&self, t: &TrackerInfo) -> bool {
        (self.filter_by & Self::BY_ACTIVE == 0 || t.is_active == self.is_active)
            && (self.filter_by & Self::BY_LEADER == 0 || t.is_leader == self.is_leader)
    }
}

/// One tracker in the reply to 96 (90 bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackerInfo {
    /// `ip:port`.
    pub host: String,
    pub is_leader: bool,
    pub is_active: bool,
    pub connections: ConnCounts,
    pub version: String,
    pub up_time: i64,
    pub last_heartbeat: i64,
}

impl TrackerInfo {
    pub const LEN: usize = IP_PORT_SIZE + 2 + ConnCounts::LEN + VERSION_SIZE + 16;

    pub fn encode_into(&self, w: &mut Writer) {
        w.fixed_str(&self.host, IP_PORT_SIZE)
            .u8(self.is_leader as u8)
            .u8(self.is_active as u8);
        self.connections.encode_into(w);
        w.fixed_str(&self.version, VERSION_SIZE)
            .i64(self.up_time)
            .i64(self.last_heartbeat);
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(TrackerInfo {
            host: r.fixed_str(IP_PORT_SIZE, "host")?,
            is_leader: r.u8()? != 0,
            is_active: r.u8()? != 0,
            connections: ConnCounts::decode_from(r)?,
            version: r.fixed_str(VERSION_SIZE, "version")?,
            up_time: r.i64()?,
            last_heartbeat: r.i64()?,
        })
    }

    /// The whole reply: a 1-byte count, then the records.
    pub fn encode_list(list: &[TrackerInfo]) -> Vec<u8> {
        let mut w = Writer::with_capacity(1 + list.len() * Self::LEN);
        w.u8(list.len().min(255) as u8);
        for t in list.iter().take(255) {
            t.encode_into(&mut w);
        }
        w.finish()
    }

    pub fn decode_list(body: &[u8]) -> Result<Vec<Self>, ProtoError> {
        let mut r = Reader::new(body);
        let count = r.u8()? as usize;
        if r.remaining() != count * Self::LEN {
            return Err(ProtoError::length(1 + count * Self::LEN, body.len()));
        }
        (0..count).map(|_| Self::decode_from(&mut r)).collect()
    }
}

/// Request of 97 STORAGE_CLUSTER_STAT (4 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageClusterFilter {
    /// Bit 1: filter on `is_trunk_server`; bit 2: filter on `status`.
    pub filter_by: u8,
    /// `=` (status equals) or `!` (status differs); anything else matches nothing.
    pub op: u8,
    pub status: u8,
    pub is_trunk_server: bool,
}

impl StorageClusterFilter {
    pub const LEN: usize = 4;
    pub const BY_TRUNK_SERVER: u8 = 1;
    pub const BY_STATUS: u8 = 2;

    pub fn encode(&self) -> Vec<u8> {
        vec![
            self.filter_by,
            self.op,
            self.status,
            self.is_trunk_server as u8,
        ]
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        match body {
            [filter_by, op, status, is_trunk_server] => Ok(StorageClusterFilter {
                filter_by: *filter_by,
                op: *op,
                status: *status,
                is_trunk_server: *is_trunk_server != 0,
            }),
            _ => Err(ProtoError::length(Self::LEN, body.len())),
        }
    }

    /// Whether a storage in `status` is listed (trunk servers only exist with trunk
    /// files, where the filter on them applies; without, it is ignored, as upstream does).
    pub fn accepts(&self, status: u8, is_trunk_server: bool, trunk_files: bool) -> bool {
        if trunk_files
            && self.filter_by & Self::BY_TRUNK_SERVER != 0
            && is_trunk_server != self.is_trunk_server
        {
            return false;
        }
        if self.filter_by & Self::BY_STATUS == 0 {
            return true;
        }
        match self.op {
            b'=' => status == self.status,
            b'!' => status != self.status,
            _ => false,
        }
    }
}

/// One storage in the reply to 97 (106 bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageClusterEntry {
    pub id: String,
    /// `ip:port` (`[ip]:port` for IPv6).
    pub host: String,
    pub is_trunk_server: bool,
    pub status: u8,
    pub connections: ConnCounts,
    pub version: String,
    pub up_time: i64,
    pub last_heartbeat: i64,
}

/// Reply to 97: `use_storage_id`, `use_trunk_file`, a 4-byte count, then the entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageClusterStat {
    pub use_storage_id: bool,
    pub use_trunk_file: bool,
    pub storages: Vec<StorageClusterEntry>,
}

impl StorageClusterStat {
    pub const HEAD_LEN: usize = 6;
    pub const ENTRY_LEN: usize =
        STORAGE_ID_LEN + IP_PORT_SIZE + 2 + ConnCounts::LEN + VERSION_SIZE + 16;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::HEAD_LEN + self.storages.len() * Self::ENTRY_LEN);
        w.u8(self.use_storage_id as u8)
            .u8(self.use_trunk_file as u8)
            .u32(self.storages.len() as u32);
        for s in &self.storages {
            w.fixed_str(&s.id, STORAGE_ID_LEN)
                .fixed_str(&s.host, IP_PORT_SIZE)
                .u8(s.is_trunk_server as u8)
                .u8(s.status);
            s.connections.encode_into(&mut w);
            w.fixed_str(&s.version, VERSION_SIZE)
                .i64(s.up_time)
                .i64(s.last_heartbeat);
        }
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(body);
        let use_storage_id = r.u8()? != 0;
        let use_trunk_file = r.u8()? != 0;
        let count = r.u32()? as usize;
        if r.remaining() != count * Self::ENTRY_LEN {
            return Err(ProtoError::length(
                Self::HEAD_LEN + count * Self::ENTRY_LEN,
                body.len(),
            ));
        }
        let storages = (0..count)
            .map(|_| {
                Ok(StorageClusterEntry {
                    id: r.fixed_str(STORAGE_ID_LEN, "storage id")?,
                    host: r.fixed_str(IP_PORT_SIZE, "host")?,
                    is_trunk_server: r.u8()? != 0,
                    status: r.u8()?,
                    connections: ConnCounts::decode_from(&mut r)?,
                    version: r.fixed_str(VERSION_SIZE, "version")?,
                    up_time: r.i64()?,
                    last_heartbeat: r.i64()?,
                })
            })
            .collect::<Result<_, ProtoError>>()?;
        Ok(StorageClusterStat {
            use_storage_id,
            use_trunk_file,
            storages,
        })
    }
}

/// Request of 98 STORAGE_VOLUMN_STAT (4 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeFilter {
    /// Bit 1: filter on disk space, 2: on trunk space, 4: on either.
    pub filter_by: u8,
    pub is_disk_available: bool,
    pub is_trunk_available: bool,
    pub is_space_available: bool,
}

impl VolumeFilter {
    pub const LEN: usize = 4;
    pub const BY_DISK: u8 = 1;
    pub const BY_TRUNK: u8 = 2;
    pub const BY_SPACE: u8 = 4;

    pub fn encode(&self) -> Vec<u8> {
        vec![
            self.filter_by,
            self.is_disk_available as u8,
            self.is_trunk_available as u8,
            self.is_space_available as u8,
        ]
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        match body {
            [filter_by, disk, trunk, space] => Ok(VolumeFilter {
                filter_by: *filter_by,
                is_disk_available: *disk != 0,
                is_trunk_available: *trunk != 0,
                is_space_available: *space != 0,
            }),
            _ => Err(ProtoError::length(Self::LEN, body.len())),
        }
    }

    /// Whether a group is listed (the trunk filter applies only with trunk files).
    pub fn accepts(&self, v: &VolumeEntry, trunk_files: bool) -> bool {
        (self.filter_by & Self::BY_DISK == 0 || v.is_disk_available == self.is_disk_available)
            && (!trunk_files
                || self.filter_by & Self::BY_TRUNK == 0
                || v.is_trunk_available == self.is_trunk_available)
            && (self.filter_by & Self::BY_SPACE == 0
                || (v.is_disk_available || v.is_trunk_available) == self.is_space_available)
    }
}

/// One group in the reply to 98 (59 bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeEntry {
    pub group: String,
    pub total_mb: i64,
    pub free_mb: i64,
    pub reserved_mb: i64,
    /// Free beyond the reserved space; 0 when the disk space is not available.
    pub avail_mb: i64,
    pub trunk_free_mb: i64,
    pub is_disk_available: bool,
    pub is_trunk_available: bool,
}

/// Reply to 98: `use_trunk_file`, a 4-byte count, then the groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeStat {
    pub use_trunk_file: bool,
    pub groups: Vec<VolumeEntry>,
}

impl VolumeStat {
    pub const HEAD_LEN: usize = 5;
    pub const ENTRY_LEN: usize = GROUP_FIELD_17 + 5 * 8 + 2;

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::HEAD_LEN + self.groups.len() * Self::ENTRY_LEN);
        w.u8(self.use_trunk_file as u8)
            .u32(self.groups.len() as u32);
        for g in &self.groups {
            w.fixed_str(&g.group, GROUP_FIELD_17)
                .i64(g.total_mb)
                .i64(g.free_mb)
                .i64(g.reserved_mb)
                .i64(g.avail_mb)
                .i64(g.trunk_free_mb)
                .u8(g.is_disk_available as u8)
                .u8(g.is_trunk_available as u8);
        }
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(body);
        let use_trunk_file = r.u8()? != 0;
        let count = r.u32()? as usize;
        if r.remaining() != count * Self::ENTRY_LEN {
            return Err(ProtoError::length(
                Self::HEAD_LEN + count * Self::ENTRY_LEN,
                body.len(),
            ));
        }
        let groups = (0..count)
            .map(|_| {
                Ok(VolumeEntry {
                    group: r.fixed_str(GROUP_FIELD_17, "group name")?,
                    total_mb: r.i64()?,
                    free_mb: r.i64()?,
                    reserved_mb: r.i64()?,
                    avail_mb: r.i64()?,
                    trunk_free_mb: r.i64()?,
                    is_disk_available: r.u8()? != 0,
                    is_trunk_available: r.u8()? != 0,
                })
            })
            .collect::<Result<_, ProtoError>>()?;
        Ok(VolumeStat {
            use_trunk_file,
            groups,
        })
    }
}

#[cfg(test)]
mod stat_tests {
    use super::*;

    #[test]
    fn storage_cluster_stat_layout() {
        let stat = StorageClusterStat {
            use_storage_id: false,
            use_trunk_file: false,
            storages: vec![StorageClusterEntry {
                id: "127.0.0.5".into(),
                host: "127.0.0.5:23000".into(),
                is_trunk_server: false,
                status: 7,
                connections: ConnCounts {
                    alloc: 3,
                    current: 2,
                    max: 4,
                },
                version: "6.16.1".into(),
                up_time: 1_700_000_000,
                last_heartbeat: 1_700_000_100,
            }],
        };
        let raw = stat.encode();
        assert_eq!(StorageClusterStat::ENTRY_LEN, 106);
        assert_eq!(raw.len(), 6 + 106);
        assert_eq!(&raw[..6], &[0, 0, 0, 0, 0, 1]);
        assert_eq!(&raw[6..15], b"127.0.0.5");
        assert_eq!(raw[6 + 16 + 52 + 1], 7);
        assert_eq!(StorageClusterStat::decode(&raw).unwrap(), stat);
        assert!(StorageClusterStat::decode(&raw[..raw.len() - 1]).is_err());
    }

    #[test]
    fn volume_stat_layout() {
        let stat = VolumeStat {
            use_trunk_file: false,
            groups: vec![VolumeEntry {
                group: "group1".into(),
                total_mb: 1000,
                free_mb: 400,
                reserved_mb: 100,
                avail_mb: 300,
                trunk_free_mb: 0,
                is_disk_available: true,
                is_trunk_available: false,
            }],
        };
        let raw = stat.encode();
        assert_eq!(VolumeStat::ENTRY_LEN, 59);
        assert_eq!(raw.len(), 5 + 59);
        assert_eq!(VolumeStat::decode(&raw).unwrap(), stat);
    }

    #[test]
    fn filters() {
        let f = StorageClusterFilter::decode(&[2, b'=', 7, 0]).unwrap();
        assert!(f.accepts(7, false, false));
        assert!(!f.accepts(1, false, false));
        let f = StorageClusterFilter::decode(&[2, b'!', 7, 0]).unwrap();
        assert!(!f.accepts(7, false, false));
        let f = StorageClusterFilter::decode(&[2, b'?', 7, 0]).unwrap();
        assert!(!f.accepts(7, false, false));
        // Without trunk files the trunk filter does not apply.
        let f = StorageClusterFilter::decode(&[1, 0, 0, 1]).unwrap();
        assert!(f.accepts(7, false, false));
        assert!(StorageClusterFilter::decode(&[0; 3]).is_err());
        let v = VolumeEntry {
            is_disk_available: false,
            ..VolumeEntry::default()
        };
        assert!(!VolumeFilter::decode(&[1, 1, 0, 0])
            .unwrap()
            .accepts(&v, false));
        assert!(VolumeFilter::decode(&[4, 0, 0, 0])
            .unwrap()
            .accepts(&v, false));
        assert!(VolumeFilter::decode(&[0; 5]).is_err());
    }
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
