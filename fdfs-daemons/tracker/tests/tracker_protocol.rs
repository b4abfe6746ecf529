//! Runs the real tracker in-process on a random 127.0.0.x:port and drives it over TCP
//! the way storages, clients and fdfs_monitor do.

mod common;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fdfs_proto::fileid::{normal_size_field, remote_name, PackedName, Source, SIZE_FLAG_APPENDER};
use fdfs_proto::msg::FileRef;
use fdfs_proto::msg::{
    BeatReply, DiskUsage, FetchTargets, GroupStat, JoinReply, JoinRequest, StorageClusterFilter,
    StorageClusterStat, StorageSelector, StorageStat, StoreTarget, StoreTargets, SyncSource,
    VolumeFilter, VolumeStat,
};
use fdfs_proto::status::{ACTIVE, INIT, OFFLINE, ONLINE, WAIT_SYNC};
use fdfs_proto::{cmd, errno, Header};
use fdfs_runtime::server::ShutdownTrigger;
use fdfs_runtime::{unix_now, Connection, Error};
use fdfs_tracker::config::TrackerConfig;
use fdfs_tracker::Tracker;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const TIMEOUT: Duration = Duration::from_secs(5);
const DEADLINE: Duration = Duration::from_secs(15);

struct TestTracker {
    addr: SocketAddr,
    trigger: ShutdownTrigger,
    task: JoinHandle<io::Result<()>>,
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("fdfs-tracker-it", name)
}

/// Starts a tracker on a free random 127.0.0.x:port with `extra` config lines.
async fn start(base: &Path, extra: &str) -> TestTracker {
    let mut rng = rand::thread_rng();
    for _ in 0..50 {
        let ip = format!("127.0.0.{}", rng.gen_range(2..254));
        let port: u16 = rng.gen_range(20_000..60_000);
        let conf = base.join("tracker.conf");
        std::fs::write(
            &conf,
            format!(
                "base_path = {}\nbind_addr = {ip}\nport = {port}\nnetwork_timeout = 30\n\
                 reserved_storage_space = 10MB\nlog_level = debug\n{extra}\n",
                base.display()
            ),
        )
        .unwrap();
        let config = TrackerConfig::load(&conf).unwrap();
        match Tracker::bind(config).await {
            Ok(tracker) => {
                let addr = tracker.local_addr().unwrap();
                let (trigger, shutdown) = ShutdownTrigger::new();
                let task = tokio::spawn(tracker.run(shutdown));
                return TestTracker {
                    addr,
                    trigger,
                    task,
                };
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::AddrInUse) => continue,
            Err(e) => panic!("cannot start the tracker: {e}"),
        }
    }
    panic!("no free address found");
}

impl TestTracker {
    async fn stop(self) {
        self.trigger.trigger();
        self.task.await.unwrap().unwrap();
    }

    async fn client(&self) -> Connection {
        Connection::connect(self.addr, None, TIMEOUT, TIMEOUT)
            .await
            .unwrap()
    }
}

/// A simulated storage: one long-lived connection from its own loopback address.
struct FakeStorage {
    conn: Connection,
    ip: String,
}

fn join_request(group: &str, paths: u32, init: bool) -> JoinRequest {
    JoinRequest {
        group: group.into(),
        storage_port: 23000,
        store_path_count: paths,
        subdir_count_per_path: 256,
        upload_priority: 10,
        join_time: 1_700_000_000,
        up_time: 1_700_000_100,
        version: "6.16.1".into(),
        init_flag: init,
        status: 0,
        storage_id: String::new(),
        tracker_ip: String::new(),
        trackers: Vec::new(),
    }
}

impl FakeStorage {
    async fn join(t: &TestTracker, ip: &str, group: &str) -> (FakeStorage, JoinReply) {
        Self::join_with(t, ip, join_request(group, 1, false)).await
    }

    /// Joins `t`; a request without tracker lines names `t` as the storage's only tracker.
    async fn join_with(
        t: &TestTracker,
        ip: &str,
        mut req: JoinRequest,
    ) -> (FakeStorage, JoinReply) {
        if req.trackers.is_empty() {
            req.trackers = vec![t.addr.to_string()];
        }
        let bind: IpAddr = ip.parse().unwrap();
        let mut conn = Connection::connect(t.addr, Some(bind), TIMEOUT, TIMEOUT)
            .await
            .unwrap();
        let reply = conn
            .request(cmd::STORAGE_JOIN, &req.encode())
            .await
            .unwrap();
        let reply = JoinReply::decode(&reply).unwrap();
        (
            FakeStorage {
                conn,
                ip: ip.into(),
            },
            reply,
        )
    }

    async fn beat(&mut self) -> BeatReply {
        let body = self.conn.request(cmd::STORAGE_BEAT, &[]).await.unwrap();
        BeatReply::decode(&body).unwrap()
    }

    async fn disk_usage(&mut self, free_mb: i64) -> BeatReply {
        let usage = DiskUsage {
            paths: vec![(100_000, free_mb)],
        };
        let body = self
            .conn
            .request(cmd::STORAGE_REPORT_DISK_USAGE, &usage.encode())
            .await
            .unwrap();
        BeatReply::decode(&body).unwrap()
    }
}

fn status_errno(r: Result<Vec<u8>, Error>) -> u8 {
    match r {
        Err(Error::Status(s)) => s,
        other => panic!("expected an errno reply, got {other:?}"),
    }
}

fn group_field(name: &str) -> Vec<u8> {
    let mut g = name.as_bytes().to_vec();
    g.resize(16, 0);
    g
}

async fn list_storages(c: &mut Connection, group: &str) -> Vec<StorageStat> {
    let sel = StorageSelector {
        group: group.into(),
        storage_id: None,
    };
    let body = c
        .request(cmd::SERVER_LIST_STORAGE, &sel.encode())
        .await
        .unwrap();
    StorageStat::decode_list(&body).unwrap()
}

async fn status_of(c: &mut Connection, group: &str, id: &str) -> Option<u8> {
    list_storages(c, group)
        .await
        .into_iter()
        .find(|s| s.id == id)
        .map(|s| s.status)
}

/// Polls the storage listing until `id` has `status` or the deadline passes.
async fn wait_for_status(c: &mut Connection, group: &str, id: &str, status: u8) {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if status_of(c, group, id).await == Some(status) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {id} of {group} to become {status}");
}

fn file_name(ip: &str, timestamp: i64, size_field: u64) -> String {
    let packed = PackedName {
        source: Source::Ip(ip.parse().unwrap()),
        timestamp: timestamp as u32,
        size_field,
        crc32: 0x1234_5678,
    };
    remote_name(0, 0x1A, 0x2B, &format!("{}0000txt", packed.encode()))
}

/// Joins 127.0.0.11 and .12 in group1, .13 in group2, all ACTIVE.
async fn three_storages(t: &TestTracker) -> Vec<FakeStorage> {
    let mut out = Vec::new();
    for (ip, group) in [
        ("127.0.0.11", "group1"),
        ("127.0.0.12", "group1"),
        ("127.0.0.13", "group2"),
    ] {
        let (s, reply) = FakeStorage::join(t, ip, group).await;
        assert_eq!(reply.status, ONLINE);
        assert_eq!(reply.sync_src_id, "");
        out.push(s);
    }
    out
}

#[tokio::test]
async fn storages_join_and_clients_are_placed() {
    let base = scratch("placed");
    let t = start(&base, "store_lookup = 0").await;
    let mut s = three_storages(&t).await;

    // First report after the join: leader brief + members.
    let first = s[0].disk_usage(50_000).await;
    let leader = first.leader.expect("leader brief");
    assert_eq!(leader.port, t.addr.port() as u32);
    assert_eq!(leader.ip, t.addr.ip().to_string());
    assert_eq!(leader.status, 0);
    let members = first.group_members.expect("member briefs");
    assert_eq!(
        members
            .iter()
            .map(|b| (b.id.as_str(), b.status))
            .collect::<Vec<_>>(),
        [("127.0.0.11", ACTIVE), ("127.0.0.12", ONLINE)]
    );
    s[1].disk_usage(40_000).await;
    s[2].disk_usage(60_000).await;
    // 127.0.0.12 became ACTIVE: announced again, then nothing new.
    let second = s[0].beat().await;
    assert!(second.leader.is_none());
    assert_eq!(second.group_members.unwrap()[1].status, ACTIVE);
    let raw = s[0].conn.request(cmd::STORAGE_BEAT, &[]).await.unwrap();
    assert_eq!(raw, [0]);

    let mut c = t.client().await;
    // Round robin over the groups.
    let mut groups = Vec::new();
    for _ in 0..4 {
        let body = c
            .request(cmd::QUERY_STORE_WITHOUT_GROUP_ONE, &[])
            .await
            .unwrap();
        assert_eq!(body.len(), 40);
        let target = StoreTarget::decode(&body).unwrap();
        assert_eq!(target.server.port, 23000);
        groups.push(target.group);
    }
    assert_eq!(groups, ["group1", "group2", "group1", "group2"]);
    let body = c
        .request(cmd::QUERY_STORE_WITH_GROUP_ONE, &group_field("group2"))
        .await
        .unwrap();
    assert_eq!(StoreTarget::decode(&body).unwrap().server.ip, "127.0.0.13");
    let body = c
        .request(cmd::QUERY_STORE_WITH_GROUP_ALL, &group_field("group1"))
        .await
        .unwrap();
    let all = StoreTargets::decode(&body, fdfs_proto::IpSize::V4).unwrap();
    assert_eq!(
        all.servers
            .iter()
            .map(|a| a.ip.as_str())
            .collect::<Vec<_>>(),
        ["127.0.0.11", "127.0.0.12"]
    );
    let unknown = c
        .request(cmd::QUERY_STORE_WITH_GROUP_ONE, &group_field("nogroup"))
        .await;
    assert_eq!(status_errno(unknown), errno::ENOENT);

    // Reads and updates of a fresh file go to its source.
    let query = FileRef {
        group: "group1".into(),
        filename: file_name("127.0.0.12", unix_now() - 10, normal_size_field(100, 5)),
    };
    for code in [
        cmd::QUERY_FETCH_ONE,
        cmd::QUERY_UPDATE,
        cmd::QUERY_FETCH_ALL,
    ] {
        let body = c.request(code, &query.encode()).await.unwrap();
        assert_eq!(body.len(), 39, "command {code}");
        let targets = FetchTargets::decode(&body, None).unwrap();
        assert_eq!(targets.servers[0].ip, "127.0.0.12", "command {code}");
    }
    // An old file may come from any storage of the group.
    let old = FileRef {
        filename: file_name(
            "127.0.0.12",
            unix_now() - 200_000,
            normal_size_field(100, 5),
        ),
        ..query.clone()
    };
    let body = c
        .request(cmd::QUERY_FETCH_ALL, &old.encode())
        .await
        .unwrap();
    assert_eq!(body.len(), 16 + 2 * 23);
    // An appender always comes from its source.
    let appender = FileRef {
        filename: file_name(
            "127.0.0.11",
            unix_now() - 200_000,
            SIZE_FLAG_APPENDER | 1 << 63,
        ),
        ..query.clone()
    };
    for _ in 0..3 {
        let body = c
            .request(cmd::QUERY_FETCH_ONE, &appender.encode())
            .await
            .unwrap();
        assert_eq!(
            FetchTargets::decode(&body, None).unwrap().servers[0].ip,
            "127.0.0.11"
        );
    }
    let mut bad = query.encode();
    bad[16 + 1] = b'x'; // "Mx0/..."
    assert_eq!(
        status_errno(c.request(cmd::QUERY_FETCH_ONE, &bad).await),
        errno::EINVAL
    );
    let elsewhere = FileRef {
        group: "group9".into(),
        ..query.clone()
    };
    let r = c.request(cmd::QUERY_FETCH_ONE, &elsewhere.encode()).await;
    assert_eq!(status_errno(r), errno::ENOENT);

    // fdfs_monitor's listings.
    let body = c.request(cmd::SERVER_LIST_ALL_GROUPS, &[]).await.unwrap();
    assert_eq!(body.len(), 2 * 113);
    let stats = GroupStat::decode_list(&body).unwrap();
    assert_eq!(stats[0].group, "group1");
    assert_eq!(
        (stats[0].storage_count, stats[0].writable_server_count),
        (2, 2)
    );
    assert_eq!((stats[0].total_mb, stats[0].free_mb), (100_000, 40_000));
    assert_eq!(stats[0].reserved_mb, 10);
    let body = c
        .request(cmd::SERVER_LIST_ONE_GROUP, &group_field("group2"))
        .await
        .unwrap();
    assert_eq!(body.len(), 113);
    let sel = StorageSelector {
        group: "group1".into(),
        storage_id: None,
    };
    let body = c
        .request(cmd::SERVER_LIST_STORAGE, &sel.encode())
        .await
        .unwrap();
    assert_eq!(body.len(), 2 * 487);
    let list = StorageStat::decode_list(&body).unwrap();
    assert_eq!(list[0].id, "127.0.0.11");
    assert_eq!(list[0].ip, "127.0.0.11");
    assert_eq!(list[0].status, ACTIVE);
    assert_eq!(list[0].version, "6.16.1");
    assert_eq!(list[0].storage_port, 23000);
    assert_eq!(list[0].join_time, 1_700_000_000);
    assert!(list[0].counters.last_heart_beat_time > 0);

    // 6.16's fdfs_storage_stat (97) and fdfs_volumn_stat (98): the whole cluster.
    let all = StorageClusterFilter::default();
    let body = c
        .request(cmd::SERVER_STORAGE_CLUSTER_STAT, &all.encode())
        .await
        .unwrap();
    let stat = StorageClusterStat::decode(&body).unwrap();
    let hosts: Vec<&str> = stat.storages.iter().map(|s| s.host.as_str()).collect();
    assert!(hosts.contains(&"127.0.0.11:23000"), "{hosts:?}");
    assert_eq!(
        stat.storages.len(),
        list_storages(&mut c, "group1").await.len() + 1
    );
    assert!(stat
        .storages
        .iter()
        .all(|s| s.version == "6.16.1" && s.last_heartbeat > 0));
    let not_active = StorageClusterFilter {
        filter_by: StorageClusterFilter::BY_STATUS,
        op: b'!',
        status: ACTIVE,
        is_trunk_server: false,
    };
    let body = c
        .request(cmd::SERVER_STORAGE_CLUSTER_STAT, &not_active.encode())
        .await
        .unwrap();
    assert!(StorageClusterStat::decode(&body)
        .unwrap()
        .storages
        .is_empty());
    let r = c.request(cmd::SERVER_STORAGE_CLUSTER_STAT, &[0; 3]).await;
    assert_eq!(status_errno(r), errno::EINVAL);
    let body = c
        .request(
            cmd::SERVER_STORAGE_VOLUMN_STAT,
            &VolumeFilter::default().encode(),
        )
        .await
        .unwrap();
    let volumes = VolumeStat::decode(&body).unwrap();
    let names: Vec<&str> = volumes.groups.iter().map(|g| g.group.as_str()).collect();
    assert_eq!(names, ["group1", "group2"]);
    let g1 = &volumes.groups[0];
    assert_eq!(
        (g1.total_mb, g1.free_mb, g1.reserved_mb),
        (100_000, 40_000, 10)
    );
    assert_eq!(g1.avail_mb, 40_000 - 10);
    assert!(g1.is_disk_available);
    let one = StorageSelector {
        group: "group1".into(),
        storage_id: Some("127.0.0.99".into()),
    };
    let r = c.request(cmd::SERVER_LIST_STORAGE, &one.encode()).await;
    assert_eq!(status_errno(r), errno::ENOENT);

    // Deleting an active storage is refused; once it is gone it works.
    let mut del = group_field("group1");
    del.extend_from_slice(b"127.0.0.12");
    assert_eq!(
        status_errno(c.request(cmd::SERVER_DELETE_STORAGE, &del).await),
        errno::EBUSY
    );
    let gone = s.remove(1);
    assert_eq!(gone.ip, "127.0.0.12");
    gone.conn.quit().await;
    wait_for_status(&mut c, "group1", "127.0.0.12", OFFLINE).await;
    c.request(cmd::SERVER_DELETE_STORAGE, &del).await.unwrap();
    assert_eq!(list_storages(&mut c, "group1").await.len(), 1);
    assert_eq!(
        status_errno(c.request(cmd::SERVER_DELETE_STORAGE, &del).await),
        errno::ENOENT
    );

    // Leader, active test, parameters, my ip.
    let leader = c.request(cmd::SERVER_GET_LEADER, &[]).await.unwrap();
    assert_eq!(String::from_utf8(leader).unwrap(), t.addr.to_string());
    assert!(c.request(cmd::ACTIVE_TEST, &[]).await.unwrap().is_empty());
    let params = c.request(cmd::STORAGE_PARAMETER_REQ, &[]).await.unwrap();
    let params = String::from_utf8(params).unwrap();
    assert!(params.len() < 1024);
    assert!(params.contains("reserved_storage_space=10MB\n"), "{params}");
    assert!(
        params.contains("storage_sync_file_max_delay=86400\n"),
        "{params}"
    );
    let my_ip = s[0]
        .conn
        .request(
            cmd::STORAGE_GET_MY_IP,
            &fdfs_proto::msg::GetMyIp {
                group: "group1".into(),
                port: 23000,
            }
            .encode(),
        )
        .await
        .unwrap();
    assert_eq!(my_ip, b"127.0.0.11");

    c.quit().await;
    t.stop().await;
}

#[tokio::test]
async fn store_lookup_fixed_load_balance_and_wide_ips() {
    // store_lookup = 1: always store_group.
    let base = scratch("fixed");
    let t = start(&base, "store_lookup = 1\nstore_group = group2").await;
    let mut s = three_storages(&t).await;
    for (st, free) in s.iter_mut().zip([50_000, 40_000, 30_000]) {
        st.disk_usage(free).await;
    }
    let mut c = t.client().await;
    for _ in 0..3 {
        let body = c
            .request(cmd::QUERY_STORE_WITHOUT_GROUP_ONE, &[])
            .await
            .unwrap();
        assert_eq!(StoreTarget::decode(&body).unwrap().group, "group2");
    }
    t.stop().await;

    // store_lookup = 2: the group with the most free space; 46-byte IP fields.
    let base = scratch("balance");
    let t = start(&base, "store_lookup = 2\nresponse_ip_addr_size = IPv6").await;
    let mut s = three_storages(&t).await;
    for (st, free) in s.iter_mut().zip([50_000, 40_000, 30_000]) {
        st.disk_usage(free).await;
    }
    let mut c = t.client().await;
    for _ in 0..3 {
        let body = c
            .request(cmd::QUERY_STORE_WITHOUT_GROUP_ONE, &[])
            .await
            .unwrap();
        assert_eq!(body.len(), 70);
        assert_eq!(StoreTarget::decode(&body).unwrap().group, "group1");
    }
    s[2].disk_usage(90_000).await;
    let body = c
        .request(cmd::QUERY_STORE_WITHOUT_GROUP_ONE, &[])
        .await
        .unwrap();
    assert_eq!(StoreTarget::decode(&body).unwrap().group, "group2");
    let sel = StorageSelector {
        group: "group1".into(),
        storage_id: None,
    };
    let body = c
        .request(cmd::SERVER_LIST_STORAGE, &sel.encode())
        .await
        .unwrap();
    assert_eq!(body.len(), 2 * 517);
    t.stop().await;
}

/// Sends raw bytes on a fresh connection and returns the reply header, then checks
/// that the tracker closed the connection.
async fn raw_request_then_closed(addr: SocketAddr, bytes: &[u8]) -> Header {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut raw = [0u8; 10];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut rest))
        .await
        .expect("tracker closes the connection")
        .unwrap_or(0);
    assert_eq!(n, 0);
    Header::decode(&raw)
}

#[tokio::test]
async fn malformed_requests_get_errnos() {
    let base = scratch("errors");
    let t = start(&base, "").await;
    let mut c = t.client().await;

    // Storage commands before a join.
    for code in [
        cmd::STORAGE_BEAT,
        cmd::STORAGE_REPORT_DISK_USAGE,
        cmd::STORAGE_SYNC_REPORT,
        cmd::STORAGE_SYNC_DEST_REQ,
        cmd::STORAGE_CHANGE_STATUS,
    ] {
        assert_eq!(
            status_errno(c.request(code, &[]).await),
            errno::EACCES,
            "command {code}"
        );
    }
    // Unknown command: EINVAL, connection kept.
    assert_eq!(status_errno(c.request(200, b"xyz").await), errno::EINVAL);
    assert!(c.request(cmd::ACTIVE_TEST, &[]).await.unwrap().is_empty());
    // No groups yet.
    let r = c.request(cmd::QUERY_STORE_WITHOUT_GROUP_ONE, &[]).await;
    assert_eq!(status_errno(r), errno::ENOENT);
    // Bad bodies.
    let r = c.request(cmd::QUERY_STORE_WITH_GROUP_ONE, b"short").await;
    assert_eq!(status_errno(r), errno::EINVAL);
    let r = c.request(cmd::STORAGE_JOIN, &[0u8; 100]).await;
    assert_eq!(status_errno(r), errno::EINVAL);
    let r = c
        .request(cmd::STORAGE_FETCH_STORAGE_IDS, &[0, 0, 0, 0, 0])
        .await;
    assert_eq!(status_errno(r), errno::EOPNOTSUPP);
    let r = c
        .request(cmd::STORAGE_FETCH_STORAGE_IDS, &[0, 0, 0, 0, 1])
        .await;
    assert_eq!(r.unwrap(), [0u8; 8]);
    // The 4-byte body of releases before 6.x is invalid, as upstream answers it.
    let r = c
        .request(cmd::STORAGE_FETCH_STORAGE_IDS, &[0, 0, 0, 0])
        .await;
    assert_eq!(status_errno(r), errno::EINVAL);
    c.quit().await;

    // Negative, huge and garbage headers: EINVAL, then the connection is closed.
    let negative = Header {
        pkg_len: -5,
        cmd: cmd::ACTIVE_TEST,
        status: 0,
    };
    let huge = Header {
        pkg_len: 1 << 40,
        cmd: cmd::STORAGE_JOIN,
        status: 0,
    };
    for bytes in [negative.encode(), huge.encode(), [0xA5; 10]] {
        let reply = raw_request_then_closed(t.addr, &bytes).await;
        assert_eq!(reply.cmd, cmd::RESP);
        assert_eq!(reply.status, errno::EINVAL);
        assert_eq!(reply.pkg_len, 0);
    }
    // The tracker still serves new connections.
    let mut c = t.client().await;
    assert!(c.request(cmd::ACTIVE_TEST, &[]).await.unwrap().is_empty());
    t.stop().await;
}

#[tokio::test]
async fn silent_storages_time_out_and_can_be_deleted() {
    let base = scratch("timeout");
    let t = start(&base, "check_active_interval = 2").await;
    let (mut s, _) = FakeStorage::join(&t, "127.0.0.21", "group1").await;
    s.disk_usage(50_000).await;
    let mut c = t.client().await;
    assert_eq!(
        status_of(&mut c, "group1", "127.0.0.21").await,
        Some(ACTIVE)
    );
    // Still connected, but silent.
    wait_for_status(&mut c, "group1", "127.0.0.21", OFFLINE).await;
    let r = c.request(cmd::QUERY_STORE_WITHOUT_GROUP_ONE, &[]).await;
    assert_eq!(status_errno(r), errno::ENOENT);
    // A beat revives it.
    s.beat().await;
    assert_eq!(
        status_of(&mut c, "group1", "127.0.0.21").await,
        Some(ACTIVE)
    );
    wait_for_status(&mut c, "group1", "127.0.0.21", OFFLINE).await;
    let mut del = group_field("group1");
    del.extend_from_slice(b"127.0.0.21");
    c.request(cmd::SERVER_DELETE_STORAGE, &del).await.unwrap();
    // The group is empty but still exists; now it can go too.
    assert!(list_storages(&mut c, "group1").await.is_empty());
    c.request(cmd::SERVER_DELETE_GROUP, &group_field("group1"))
        .await
        .unwrap();
    let r = c
        .request(cmd::SERVER_LIST_ONE_GROUP, &group_field("group1"))
        .await;
    assert_eq!(status_errno(r), errno::ENOENT);
    t.stop().await;
}

#[tokio::test]
async fn new_storage_gets_a_sync_source() {
    let base = scratch("sync");
    let t = start(&base, "").await;
    let (mut first, _) = FakeStorage::join(&t, "127.0.0.31", "group1").await;
    first.disk_usage(50_000).await;
    let (mut second, reply) =
        FakeStorage::join_with(&t, "127.0.0.32", join_request("group1", 1, true)).await;
    assert_eq!(reply.status, INIT);
    let body = second
        .conn
        .request(cmd::STORAGE_SYNC_DEST_REQ, &[])
        .await
        .unwrap();
    let src = SyncSource::decode(&body).unwrap().expect("a source");
    assert_eq!(src.src_id, "127.0.0.31");
    second
        .conn
        .request(cmd::STORAGE_SYNC_NOTIFY, &src.encode())
        .await
        .unwrap();
    let mut c = t.client().await;
    assert_eq!(
        status_of(&mut c, "group1", "127.0.0.32").await,
        Some(WAIT_SYNC)
    );
    let mut ask = group_field("group1");
    ask.extend_from_slice(&group_field("127.0.0.32"));
    let body = first
        .conn
        .request(cmd::STORAGE_SYNC_SRC_REQ, &ask)
        .await
        .unwrap();
    assert_eq!(SyncSource::decode(&body).unwrap(), Some(src));
    // The member list pushed to the source shows the newcomer.
    let beat = first.beat().await;
    let members = beat.group_members.expect("members changed");
    assert_eq!(members[1].status, WAIT_SYNC);
    t.stop().await;
}

#[tokio::test]
async fn state_survives_a_restart() {
    let base = scratch("restart");
    let t = start(&base, "").await;
    let mut s = three_storages(&t).await;
    for st in s.iter_mut() {
        st.disk_usage(50_000).await;
    }
    t.stop().await;
    drop(s);
    for f in [
        "storage_groups_new.dat",
        "storage_servers_new.dat",
        "storage_sync_timestamp.dat",
        ".tracker_status",
    ] {
        assert!(base.join("data").join(f).exists(), "{f}");
    }

    let t = start(&base, "").await;
    let mut c = t.client().await;
    let list = list_storages(&mut c, "group1").await;
    assert_eq!(
        list.iter()
            .map(|s| (s.id.as_str(), s.status))
            .collect::<Vec<_>>(),
        [("127.0.0.11", OFFLINE), ("127.0.0.12", OFFLINE)]
    );
    assert_eq!(list[0].total_mb, 100_000);
    assert_eq!(
        status_of(&mut c, "group2", "127.0.0.13").await,
        Some(OFFLINE)
    );
    let r = c.request(cmd::QUERY_STORE_WITHOUT_GROUP_ONE, &[]).await;
    assert_eq!(status_errno(r), errno::ENOENT);
    // Rejoining brings a storage back.
    let (mut again, reply) = FakeStorage::join(&t, "127.0.0.12", "group1").await;
    assert_eq!(reply.status, ONLINE);
    again.beat().await;
    assert_eq!(
        status_of(&mut c, "group1", "127.0.0.12").await,
        Some(ACTIVE)
    );
    // A mismatching path count is refused.
    let bind: IpAddr = "127.0.0.14".parse().unwrap();
    let mut conn = Connection::connect(t.addr, Some(bind), TIMEOUT, TIMEOUT)
        .await
        .unwrap();
    let r = conn
        .request(
            cmd::STORAGE_JOIN,
            &JoinRequest {
                trackers: vec![t.addr.to_string()],
                ..join_request("group1", 2, false)
            }
            .encode(),
        )
        .await;
    assert_eq!(status_errno(r), errno::EINVAL);
    t.stop().await;
}
