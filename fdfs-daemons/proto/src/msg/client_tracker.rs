//! Client (and admin tool) ↔ tracker: where to upload, where a file is (101-107),
//! and what the cluster looks like (90-98).

use super::*;

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

/// The body of the tracker commands that name one group (90, 104, 107, 108).
fn group_body(group: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.fixed_str(group, GROUP_NAME_LEN);
    w.finish()
}

/// 101 / 104: where to upload, in any group or in `group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryStore {
    pub group: Option<String>,
}

impl Request for QueryStore {
    type Reply = StoreTarget;
    fn cmd(&self) -> u8 {
        match self.group {
            Some(_) => cmd::QUERY_STORE_WITH_GROUP_ONE,
            None => cmd::QUERY_STORE_WITHOUT_GROUP_ONE,
        }
    }
    fn body(&self) -> Vec<u8> {
        self.group.as_deref().map(group_body).unwrap_or_default()
    }
}

/// 106 / 107: every storage an upload could go to, in any group or in `group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryStoreAll {
    pub group: Option<String>,
}

impl Request for QueryStoreAll {
    type Reply = StoreTargets;
    fn cmd(&self) -> u8 {
        match self.group {
            Some(_) => cmd::QUERY_STORE_WITH_GROUP_ALL,
            None => cmd::QUERY_STORE_WITHOUT_GROUP_ALL,
        }
    }
    fn body(&self) -> Vec<u8> {
        self.group.as_deref().map(group_body).unwrap_or_default()
    }
}

/// Width of the address fields of a reply listing `n` servers after `fixed` bytes,
/// from its length (a client does not know the tracker's `response_ip_addr_size`).
fn listed_ip_size(len: usize, fixed: usize) -> Option<IpSize> {
    let rest = len.checked_sub(fixed).filter(|r| *r > 0)?;
    [IpSize::V4, IpSize::V6]
        .into_iter()
        .find(|s| rest.is_multiple_of(s.width() - 1 + 8))
}

impl Reply for StoreTargets {
    fn from_body(body: &[u8]) -> Result<Self, ProtoError> {
        let size = listed_ip_size(body.len(), GROUP_NAME_LEN + 1)
            .ok_or_else(|| ProtoError::length("17 + n*23 or 17 + n*53", body.len()))?;
        StoreTargets::decode(body, size)
    }
}

impl Reply for FetchTargets {
    fn from_body(body: &[u8]) -> Result<Self, ProtoError> {
        let size = listed_ip_size(body.len(), GROUP_NAME_LEN)
            .ok_or_else(|| ProtoError::length("16 + n*23 or 16 + n*53", body.len()))?;
        FetchTargets::decode(body, Some(size))
    }
}

/// Which storage can serve or change a file (102, 103, 105).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// 102: one storage to download from.
    One,
    /// 103: the storage that must apply a change (the file's source).
    Update,
    /// 105: every storage that has the file.
    All,
}

/// 102 / 103 / 105 for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryFetch {
    pub kind: Fetch,
    pub file: FileRef,
}

impl Request for QueryFetch {
    type Reply = FetchTargets;
    fn cmd(&self) -> u8 {
        match self.kind {
            Fetch::One => cmd::QUERY_FETCH_ONE,
            Fetch::Update => cmd::QUERY_UPDATE,
            Fetch::All => cmd::QUERY_FETCH_ALL,
        }
    }
    fn body(&self) -> Vec<u8> {
        self.file.encode()
    }
}

impl Reply for Vec<GroupStat> {
    fn from_body(body: &[u8]) -> Result<Self, ProtoError> {
        GroupStat::decode_list(body)
    }
}

impl Reply for Vec<StorageStat> {
    fn from_body(body: &[u8]) -> Result<Self, ProtoError> {
        StorageStat::decode_list(body)
    }
}

impl Reply for Vec<TrackerInfo> {
    fn from_body(body: &[u8]) -> Result<Self, ProtoError> {
        TrackerInfo::decode_list(body)
    }
}

bodiless! {
    /// 91: every group's summary.
    ListAllGroups => cmd::SERVER_LIST_ALL_GROUPS, Vec<GroupStat>;
    /// 95: the tracker leader's `ip:port`.
    GetLeader => cmd::SERVER_GET_LEADER, Vec<u8>;
    /// 111: is the server there.
    ActiveTest => cmd::ACTIVE_TEST, ();
}

/// 90: one group's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOneGroup {
    pub group: String,
}

impl Request for ListOneGroup {
    type Reply = Vec<GroupStat>;
    fn cmd(&self) -> u8 {
        cmd::SERVER_LIST_ONE_GROUP
    }
    fn body(&self) -> Vec<u8> {
        group_body(&self.group)
    }
}

/// 108: removes an empty group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteGroup {
    pub group: String,
}

impl Request for DeleteGroup {
    type Reply = ();
    fn cmd(&self) -> u8 {
        cmd::SERVER_DELETE_GROUP
    }
    fn body(&self) -> Vec<u8> {
        group_body(&self.group)
    }
}

/// 93: removes a storage that is neither ONLINE nor ACTIVE; the body is a group and
/// the storage's id (1..=15 bytes, unpadded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteStorage {
    pub group: String,
    pub storage_id: String,
}

impl DeleteStorage {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed_str(&self.group, GROUP_NAME_LEN)
            .bytes(self.storage_id.as_bytes());
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() <= GROUP_NAME_LEN || body.len() >= GROUP_NAME_LEN + STORAGE_ID_LEN {
            return Err(ProtoError::length("17..=31", body.len()));
        }
        let mut r = Reader::new(body);
        let group = get_group(&mut r)?;
        let storage_id = r.str(r.remaining(), "storage id")?;
        Ok(DeleteStorage { group, storage_id })
    }
}

/// 94: makes a storage (or, without an id, the tracker's choice) its group's trunk
/// server; the reply is the new trunk server's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetTrunkServer(pub StorageSelector);

impl Request for SetTrunkServer {
    type Reply = Vec<u8>;
    fn cmd(&self) -> u8 {
        cmd::SERVER_SET_TRUNK_SERVER
    }
    fn body(&self) -> Vec<u8> {
        self.0.encode()
    }
}

request! {
    StorageSelector => cmd::SERVER_LIST_STORAGE, Vec<StorageStat>;
    DeleteStorage => cmd::SERVER_DELETE_STORAGE, ();
    StorageClusterFilter => cmd::SERVER_STORAGE_CLUSTER_STAT, StorageClusterStat;
    VolumeFilter => cmd::SERVER_STORAGE_VOLUMN_STAT, VolumeStat;
    TrackerClusterFilter => cmd::SERVER_TRACKER_CLUSTER_STAT, Vec<TrackerInfo>;
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
