//! Several real trackers in-process, each on its own 127.0.0.x, with simulated storages
//! that join and beat every one of them: leader election, follower beat replies,
//! failover when the leader stops, a restarted leader coming back as a follower.

mod common;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fdfs_client::tracker::TrackerClient;
use fdfs_proto::fileid::{normal_size_field, remote_name, PackedName, Source};
use fdfs_proto::msg::FileRef;
use fdfs_proto::msg::{
    beat_flag, sys_file, BeatReply, DiskUsage, FetchTargets, JoinRequest, StorageSelector,
    StorageStat, StoreTarget, SysFileChunk, SysFileRequest, TrackerClusterFilter, TrackerInfo,
    TrackerStatus,
};
use fdfs_proto::status::{ACTIVE, OFFLINE};
use fdfs_proto::{cmd, errno};
use fdfs_runtime::server::ShutdownTrigger;
use fdfs_runtime::{unix_now, Connection, Error};
use fdfs_tracker::config::TrackerConfig;
use fdfs_tracker::Tracker;
use rand::Rng;
use tokio::task::JoinHandle;

const TIMEOUT: Duration = Duration::from_secs(5);
const DEADLINE: Duration = Duration::from_secs(30);
const TRACKER_CLUSTER_STAT: u8 = 96;

struct TestTracker {
    addr: SocketAddr,
    base: PathBuf,
    trigger: ShutdownTrigger,
    task: JoinHandle<io::Result<()>>,
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("fdfs-tcluster-it", name)
}

async fn start_at(base: &Path, ip: IpAddr, port: u16) -> io::Result<TestTracker> {
    let conf = base.join("tracker.conf");
    std::fs::write(
        &conf,
        format!(
            "base_path = {}\nbind_addr = {ip}\nport = {port}\nnetwork_timeout = 30\n\
             connect_timeout = 2\nreserved_storage_space = 10MB\nlog_level = debug\n",
            base.display()
        ),
    )
    .unwrap();
    let config = TrackerConfig::load(&conf).unwrap();
    let tracker = Tracker::bind(config).await?;
    let addr = tracker.local_addr().unwrap();
    let (trigger, shutdown) = ShutdownTrigger::new();
    let task = tokio::spawn(tracker.run(shutdown));
    Ok(TestTracker {
        addr,
        base: base.to_path_buf(),
        trigger,
        task,
    })
}

/// `n` trackers, each on a different random 127.0.0.x and its own base path.
async fn start_trackers(name: &str, n: usize) -> Vec<TestTracker> {
    let mut rng = rand::thread_rng();
    let mut out: Vec<TestTracker> = Vec::new();
    while out.len() < n {
        let ip: IpAddr = format!("127.0.0.{}", rng.gen_range(100..250))
            .parse()
            .unwrap();
        if out.iter().any(|t| t.addr.ip() == ip) {
            continue;
        }
        let port: u16 = rng.gen_range(20_000..60_000);
        let base = scratch(&format!("{name}-{}", out.len()));
        match start_at(&base, ip, port).await {
            Ok(t) => out.push(t),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => panic!("cannot start a tracker: {e}"),
        }
    }
    out
}

impl TestTracker {
    async fn stop(self) -> (SocketAddr, PathBuf) {
        self.trigger.trigger();
        self.task.await.unwrap().unwrap();
        (self.addr, self.base)
    }
}

async fn client(addr: SocketAddr) -> Connection {
    Connection::connect(addr, None, TIMEOUT, TIMEOUT)
        .await
        .unwrap()
}

async fn request(addr: SocketAddr, command: u8, body: &[u8]) -> Result<Vec<u8>, Error> {
    let mut c = Connection::connect(addr, None, TIMEOUT, TIMEOUT).await?;
    let r = c.request(command, body).await;
    c.quit().await;
    r
}

fn errno_of<T: std::fmt::Debug>(r: Result<T, Error>) -> u8 {
    match r {
        Err(Error::Status(s)) => s,
        other => panic!("expected an errno reply, got {other:?}"),
    }
}

async fn leader_of(addr: SocketAddr) -> Option<String> {
    request(addr, cmd::SERVER_GET_LEADER, &[])
        .await
        .ok()
        .map(|b| String::from_utf8(b).unwrap())
}

/// Polls until every tracker in `addrs` names the same leader; returns it.
async fn agreed_leader(addrs: &[SocketAddr]) -> String {
    agreed_leader_other_than(addrs, None).await
}

/// Polls until every tracker in `addrs` names the same leader, other than `not`.
async fn agreed_leader_other_than(addrs: &[SocketAddr], not: Option<&str>) -> String {
    let end = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while Instant::now() < end {
        seen.clear();
        for &a in addrs {
            seen.push(leader_of(a).await);
        }
        if let Some(Some(first)) = seen.first() {
            if Some(first.as_str()) != not
                && seen.iter().all(|l| l.as_deref() == Some(first.as_str()))
            {
                return first.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("trackers {addrs:?} did not agree on a leader: {seen:?}");
}

async fn status_of_tracker(addr: SocketAddr) -> TrackerStatus {
    TrackerStatus::decode(&request(addr, cmd::TRACKER_GET_STATUS, &[]).await.unwrap()).unwrap()
}

/// A simulated storage: one connection per tracker from its own loopback address.
struct FakeStorage {
    ip: String,
    group: String,
    conns: Vec<(SocketAddr, Connection)>,
}

fn join_request(group: &str, trackers: &[SocketAddr]) -> JoinRequest {
    JoinRequest {
        group: group.into(),
        storage_port: 23000,
        store_path_count: 1,
        subdir_count_per_path: 256,
        upload_priority: 10,
        join_time: 1_700_000_000,
        up_time: 1_700_000_100,
        version: "6.16.1".into(),
        init_flag: false,
        status: 0,
        storage_id: String::new(),
        tracker_ip: String::new(),
        trackers: trackers.iter().map(|a| a.to_string()).collect(),
    }
}

impl FakeStorage {
    /// Joins every tracker of `all` (the join body lists all of them) and reports disk
    /// usage, so the storage is ACTIVE everywhere.
    async fn join_all(ip: &str, group: &str, all: &[SocketAddr]) -> FakeStorage {
        let mut s = FakeStorage {
            ip: ip.into(),
            group: group.into(),
            conns: Vec::new(),
        };
        for &t in all {
            s.join(t, all).await;
        }
        s
    }

    /// (Re)joins tracker `t` on a fresh connection and reports disk usage; returns the
    /// raw reply to the report (the first reply with beat flags).
    async fn join(&mut self, t: SocketAddr, all: &[SocketAddr]) -> Vec<u8> {
        self.conns.retain(|(a, _)| *a != t);
        let bind: IpAddr = self.ip.parse().unwrap();
        let mut conn = Connection::connect(t, Some(bind), TIMEOUT, TIMEOUT)
            .await
            .unwrap();
        conn.request(cmd::STORAGE_JOIN, &join_request(&self.group, all).encode())
            .await
            .unwrap();
        let usage = DiskUsage {
            paths: vec![(100_000, 50_000)],
        };
        let reply = conn
            .request(cmd::STORAGE_REPORT_DISK_USAGE, &usage.encode())
            .await
            .unwrap();
        self.conns.push((t, conn));
        reply
    }

    fn forget(&mut self, t: SocketAddr) {
        self.conns.retain(|(a, _)| *a != t);
    }

    /// A beat to tracker `t`: the raw reply body.
    async fn beat(&mut self, t: SocketAddr) -> Vec<u8> {
        let (_, conn) = self
            .conns
            .iter_mut()
            .find(|(a, _)| *a == t)
            .expect("joined");
        conn.request(cmd::STORAGE_BEAT, &[]).await.unwrap()
    }
}

async fn list_storages(addr: SocketAddr) -> Vec<StorageStat> {
    let sel = StorageSelector {
        group: "group1".into(),
        storage_id: None,
    };
    let body = request(addr, cmd::SERVER_LIST_STORAGE, &sel.encode())
        .await
        .unwrap();
    StorageStat::decode_list(&body).unwrap()
}

/// Polls until both storages are ACTIVE on `addr`.
async fn wait_all_active(addr: SocketAddr) {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        let list = list_storages(addr).await;
        if list.len() == 2 && list.iter().all(|s| s.status == ACTIVE) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("storages not ACTIVE on {addr}");
}

async fn cluster_stat(addr: SocketAddr) -> Result<Vec<TrackerInfo>, Error> {
    let body = request(
        addr,
        TRACKER_CLUSTER_STAT,
        &TrackerClusterFilter::default().encode(),
    )
    .await?;
    Ok(TrackerInfo::decode_list(&body).unwrap())
}

fn file_of(ip: &str) -> Vec<u8> {
    let packed = PackedName {
        source: Source::Ip(ip.parse().unwrap()),
        timestamp: (unix_now() - 100_000) as u32,
        size_field: normal_size_field(10, 7),
        crc32: 0x1234_5678,
    };
    FileRef {
        group: "group1".into(),
        filename: remote_name(0, 0x1A, 0x2B, &format!("{}0000txt", packed.encode())),
    }
    .encode()
}

fn addr_of(host: &str) -> SocketAddr {
    host.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_failover_and_rejoin() {
    let mut trackers = start_trackers("failover", 3).await;
    let all: Vec<SocketAddr> = trackers.iter().map(|t| t.addr).collect();
    let mut storages = [
        FakeStorage::join_all("127.0.0.31", "group1", &all).await,
        FakeStorage::join_all("127.0.0.32", "group1", &all).await,
    ];
    for &t in &all {
        wait_all_active(t).await;
    }

    // Exactly one leader, and every tracker agrees.
    let leader = agreed_leader(&all).await;
    let leader_addr = addr_of(&leader);
    assert!(
        all.contains(&leader_addr),
        "{leader} is one of the trackers"
    );
    let followers: Vec<SocketAddr> = all.iter().copied().filter(|&a| a != leader_addr).collect();
    assert!(status_of_tracker(leader_addr).await.if_leader);
    for &f in &followers {
        let st = status_of_tracker(f).await;
        assert!(!st.if_leader);
        assert_eq!(st.running_time % 300, 0, "rounded");
        // 96 is the leader's; 66 naming another tracker is refused by the leader.
        assert_eq!(errno_of(cluster_stat(f).await), errno::EOPNOTSUPP);
        let r = request(
            leader_addr,
            cmd::TRACKER_NOTIFY_NEXT_LEADER,
            f.to_string().as_bytes(),
        )
        .await;
        assert_eq!(errno_of(r), errno::EINVAL);
    }

    // The followers joined the leader and ping it.
    let end = Instant::now() + DEADLINE;
    loop {
        let list = cluster_stat(leader_addr).await.unwrap();
        let active = list.iter().filter(|t| t.is_active).count();
        if list.len() == 3 && active == 3 {
            let me = list.iter().find(|t| t.is_leader).unwrap();
            assert_eq!(me.host, leader);
            assert_eq!(list.iter().filter(|t| t.is_leader).count(), 1);
            assert!(list.iter().all(|t| t.version == "6.16.1"));
            break;
        }
        assert!(
            Instant::now() < end,
            "followers never became active: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Beat replies: a fresh join on the leader gets the leader brief and the members
    // (0x05) once, then `00`; followers always answer `00`.
    for s in storages.iter_mut() {
        let first = s.join(leader_addr, &all).await;
        assert_eq!(
            first[0],
            beat_flag::LEADER_CHANGED | beat_flag::GROUP_MEMBERS_CHANGED
        );
        let reply = BeatReply::decode(&first).unwrap();
        let brief = reply.leader.unwrap();
        assert_eq!(
            (brief.ip.as_str(), brief.port as u16, brief.id.as_str()),
            (
                leader_addr.ip().to_string().as_str(),
                leader_addr.port(),
                leader_addr.ip().to_string().as_str()
            )
        );
        assert_eq!(reply.group_members.unwrap().len(), 2);
        assert_eq!(s.beat(leader_addr).await, [0]);
        for &f in &followers {
            assert_eq!(s.join(f, &all).await, [0], "follower {f} sets no flags");
            assert_eq!(s.beat(f).await, [0], "follower {f} sets no flags");
        }
    }

    // Sys files from any tracker with groups.
    let mut c = client(followers[0]).await;
    c.request(cmd::TRACKER_GET_SYS_FILES_START, &[])
        .await
        .unwrap();
    let ask = SysFileRequest {
        index: sys_file::GROUPS,
        offset: 0,
    };
    let chunk = SysFileChunk::decode(
        &c.request(cmd::TRACKER_GET_ONE_SYS_FILE, &ask.encode())
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(chunk.file_size as usize, chunk.content.len());
    assert!(String::from_utf8(chunk.content)
        .unwrap()
        .contains("group_name=group1"));
    c.request(cmd::TRACKER_GET_SYS_FILES_END, &[])
        .await
        .unwrap();
    c.quit().await;

    // Stop the leader: the survivors elect another one.
    let idx = trackers.iter().position(|t| t.addr == leader_addr).unwrap();
    let (old_addr, old_base) = trackers.remove(idx).stop().await;
    for s in storages.iter_mut() {
        s.forget(old_addr);
    }
    let new_leader = agreed_leader_other_than(&followers, Some(&leader)).await;
    assert_ne!(new_leader, leader);
    let new_leader_addr = addr_of(&new_leader);
    assert!(followers.contains(&new_leader_addr));

    // Survivors still answer queries; the new leader announces itself to storages.
    for &f in &followers {
        let body = request(f, cmd::QUERY_STORE_WITHOUT_GROUP_ONE, &[])
            .await
            .unwrap();
        let target = StoreTarget::decode(&body).unwrap();
        assert!(["127.0.0.31", "127.0.0.32"].contains(&target.server.ip.as_str()));
        let body = request(f, cmd::QUERY_FETCH_ONE, &file_of("127.0.0.31"))
            .await
            .unwrap();
        let fetch = FetchTargets::decode(&body, None).unwrap();
        assert_eq!(fetch.group, "group1");
    }
    for s in storages.iter_mut() {
        let reply = BeatReply::decode(&s.beat(new_leader_addr).await).unwrap();
        let brief = reply.leader.expect("new leader brief");
        assert_eq!(brief.port as u16, new_leader_addr.port());
        assert!(reply.group_members.is_some());
    }
    // A client whose first tracker is the stopped one fails over.
    let tc = TrackerClient::new(
        vec![old_addr, new_leader_addr],
        Duration::from_secs(2),
        TIMEOUT,
    );
    let target = tc.query_store(None).await.unwrap();
    assert_eq!(target.group, "group1");

    // Restart the old leader on its address and data: it finds its saved state and
    // follows the current leader instead of claiming leadership.
    let saved = std::fs::read_to_string(old_base.join("data/tracker_servers.dat")).unwrap();
    for a in &all {
        assert!(saved.contains(&a.to_string()), "{a} in {saved}");
    }
    let restarted = start_at(&old_base, old_addr.ip(), old_addr.port())
        .await
        .unwrap();
    let list = list_storages(old_addr).await;
    assert_eq!(
        list.iter()
            .map(|s| (s.id.as_str(), s.status))
            .collect::<Vec<_>>(),
        [("127.0.0.31", OFFLINE), ("127.0.0.32", OFFLINE)]
    );
    trackers.push(restarted);
    let again = agreed_leader(&all).await;
    assert_eq!(again, new_leader, "no second leader");
    assert!(!status_of_tracker(old_addr).await.if_leader);
    for s in storages.iter_mut() {
        assert_eq!(s.join(old_addr, &all).await, [0]);
        assert_eq!(s.beat(old_addr).await, [0]);
    }
    wait_all_active(old_addr).await;

    // 68: a storage asks the leader to step down; the cluster elects again.
    request(new_leader_addr, cmd::TRACKER_NOTIFY_RESELECT_LEADER, &[])
        .await
        .unwrap();
    let after = agreed_leader(&all).await;
    assert!(all.contains(&addr_of(&after)));

    for t in trackers {
        t.stop().await;
    }
}

#[tokio::test]
async fn a_lone_tracker_leads_at_once() {
    let trackers = start_trackers("lone", 1).await;
    let t = trackers[0].addr;
    assert_eq!(
        errno_of(request(t, cmd::SERVER_GET_LEADER, &[]).await),
        errno::ENOENT
    );
    // Without groups a tracker cannot lead: 64 answers ENOENT.
    assert_eq!(
        errno_of(request(t, cmd::TRACKER_GET_STATUS, &[]).await),
        errno::ENOENT
    );
    let mut s = FakeStorage::join_all("127.0.0.33", "group1", &[t]).await;
    assert_eq!(leader_of(t).await.unwrap(), t.to_string());
    let st = status_of_tracker(t).await;
    assert!(st.if_leader);
    assert_eq!(st.restart_interval, 0);
    assert_eq!(s.beat(t).await, [0], "flags went with the disk report");
    // Bad tracker-to-tracker bodies.
    assert_eq!(
        errno_of(request(t, cmd::TRACKER_COMMIT_NEXT_LEADER, b"10.9.9.9:1").await),
        errno::EINVAL
    );
    assert_eq!(
        errno_of(request(t, cmd::TRACKER_NOTIFY_NEXT_LEADER, b"10.9.9.9:1").await),
        errno::ENOENT
    );
    assert_eq!(
        errno_of(request(t, cmd::TRACKER_JOIN_LEADER, &[0; 5]).await),
        errno::EINVAL
    );
    let list = cluster_stat(t).await.unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].is_leader && list[0].is_active);
    for t in trackers {
        t.stop().await;
    }
}

#[tokio::test]
async fn an_empty_tracker_copies_the_sys_files_of_a_peer() {
    let trackers = start_trackers("copy", 2).await;
    let all: Vec<SocketAddr> = trackers.iter().map(|t| t.addr).collect();
    let (t1, t2) = (all[0], all[1]);
    // Both storages only reach the first tracker so far.
    let mut a = FakeStorage::join_all("127.0.0.41", "group1", &all[..1]).await;
    let _b = FakeStorage::join_all("127.0.0.42", "group1", &all[..1]).await;
    wait_all_active(t1).await;
    // A joins the second (empty) tracker naming both: it learns its peer, copies the
    // peer's sys files and so knows B before B ever joins it.
    a.join(t2, &all).await;
    let end = Instant::now() + DEADLINE;
    loop {
        let list = list_storages(t2).await;
        let ids: Vec<(&str, u8)> = list.iter().map(|s| (s.id.as_str(), s.status)).collect();
        if ids == [("127.0.0.41", ACTIVE), ("127.0.0.42", OFFLINE)] {
            assert_eq!(list[1].total_mb, 100_000, "copied with its disk space");
            break;
        }
        assert!(Instant::now() < end, "never copied: {ids:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in trackers {
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_leaders_settle_on_one() {
    let trackers = start_trackers("clash", 2).await;
    let all: Vec<SocketAddr> = trackers.iter().map(|t| t.addr).collect();
    let (t1, t2) = (all[0], all[1]);
    // Each tracker first hears from a storage that lists only it, so each leads alone
    // (as both sides of a partition do).
    let _a = FakeStorage::join_all("127.0.0.51", "group1", &[t1]).await;
    let _b = FakeStorage::join_all("127.0.0.52", "group1", &[t2]).await;
    assert_eq!(leader_of(t1).await.unwrap(), t1.to_string());
    assert_eq!(leader_of(t2).await.unwrap(), t2.to_string());
    assert!(status_of_tracker(t1).await.if_leader && status_of_tracker(t2).await.if_leader);

    // A storage listing both makes them learn of each other: the two leaders settle on
    // the one the election prefers (same running times: the greatest address text).
    let _c = FakeStorage::join_all("127.0.0.53", "group1", &all).await;
    let expected = all
        .iter()
        .max_by_key(|a| (a.ip().to_string(), a.port()))
        .unwrap()
        .to_string();
    let leader = agreed_leader(&all).await;
    assert_eq!(leader, expected);
    let follower = if addr_of(&leader) == t1 { t2 } else { t1 };
    assert!(status_of_tracker(addr_of(&leader)).await.if_leader);
    assert!(!status_of_tracker(follower).await.if_leader);
    // 68 to a tracker that does not lead is refused, as upstream does.
    assert_eq!(
        errno_of(request(follower, cmd::TRACKER_NOTIFY_RESELECT_LEADER, &[]).await),
        errno::EOPNOTSUPP
    );
    // The follower joined the leader and pings it.
    let end = Instant::now() + DEADLINE;
    loop {
        let list = cluster_stat(addr_of(&leader)).await.unwrap();
        if list.len() == 2 && list.iter().all(|t| t.is_active) {
            break;
        }
        assert!(Instant::now() < end, "follower never joined: {list:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(agreed_leader(&all).await, leader, "still one leader");
    for t in trackers {
        t.stop().await;
    }
}
