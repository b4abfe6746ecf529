//! A real tracker and real storages of `group1`, in-process, for the storage test
//! binaries: each cluster on its own loopback /24 (`127.a.b.0`, picked at random and
//! checked free), because FastDFS tells storages apart by IP and other test binaries
//! (and the pytest suites) run at the same time on `127.0.0.x`.
//!
//! Scratch directories live under cargo's `target/tmp/`; a passing test removes its
//! own, a failing one keeps it for a look and the next run of the binary sweeps it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fdfs_client::{StorageClient, TrackerClient};
use fdfs_proto::status;
use fdfs_runtime::server::ShutdownTrigger;
use fdfs_storage::config::StorageConfig;
use fdfs_tracker::config::TrackerConfig;
use fdfs_tracker::Tracker;
use rand::Rng;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const GROUP: &str = "group1";
/// How long a condition may take to come true. Generous: a loaded CI machine running
/// several test binaries at once must not turn a slow pass into a failure.
pub const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(25);
const TIMEOUT: Duration = Duration::from_secs(10);
const SCRATCH_PREFIX: &str = "fdfs-storage-it";

/// Log output (captured by the test harness, so shown only for a failing test):
/// `RUST_LOG` if set, else warnings.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A fresh directory `target/tmp/<prefix>-<pid>-<name>`. Directories left behind by
/// runs whose process is gone are removed the first time.
fn scratch(name: &str) -> PathBuf {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    SWEPT.call_once(|| sweep(&tmp));
    let dir = tmp.join(format!("{SCRATCH_PREFIX}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sweep(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(SCRATCH_PREFIX)) else {
            continue;
        };
        let pid = rest
            .trim_start_matches('-')
            .split('-')
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Polls `cond` every 25 ms until it holds; panics naming `what` after [`DEADLINE`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if cond() {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] with a condition that talks to the servers.
pub async fn eventually_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Content that differs with `seed` and does not compress to a pattern.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct TestTracker {
    addr: SocketAddr,
    trigger: ShutdownTrigger,
    task: JoinHandle<io::Result<()>>,
}

/// A running storage: its stop switch and its task.
type Running = (oneshot::Sender<()>, JoinHandle<Result<(), String>>);

/// One storage daemon, started with [`fdfs_storage::run`] on its own IP; stopped and
/// started again on the same base path with [`Node::stop`] / [`Node::start`].
pub struct Node {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub base: PathBuf,
    conf: PathBuf,
    running: Option<Running>,
}

impl Node {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.port)
    }

    /// The storage's id in the group (IP mode: its address).
    pub fn id(&self) -> String {
        self.ip.to_string()
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    pub async fn start(&mut self) {
        assert!(self.running.is_none(), "{} already runs", self.ip);
        let cfg = StorageConfig::load(&self.conf).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(fdfs_storage::run(cfg, async move {
            let _ = rx.await;
        }));
        // Listening is the first thing a start that fails would not get to.
        let addr = self.addr();
        let deadline = Instant::now() + DEADLINE;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if task.is_finished() {
                panic!("storage {addr} ended at start: {:?}", task.await);
            }
            assert!(Instant::now() < deadline, "storage {addr} does not listen");
            tokio::time::sleep(POLL).await;
        }
        self.running = Some((tx, task));
    }

    /// Stops the daemon the way a signal does, and waits until it has finished.
    pub async fn stop(&mut self) {
        let (tx, task) = self.running.take().expect("the storage runs");
        let _ = tx.send(());
        match tokio::time::timeout(DEADLINE, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("storage {} failed: {e}", self.ip),
            Ok(Err(e)) => panic!("storage {} panicked: {e}", self.ip),
            Err(_) => panic!("storage {} did not stop", self.ip),
        }
    }

    /// Where a remote name (`M00/XX/YY/name`) lives on this storage's disk.
    pub fn disk_path(&self, remote: &str) -> PathBuf {
        let rest = remote.strip_prefix("M00/").expect("store path 0");
        self.base.join("data").join(rest)
    }

    /// The bytes of a stored file, `None` if it is not there.
    pub fn read(&self, remote: &str) -> Option<Vec<u8>> {
        std::fs::read(self.disk_path(remote)).ok()
    }

    pub fn has(&self, remote: &str) -> bool {
        self.disk_path(remote).exists()
    }

    pub async fn client(&self) -> StorageClient {
        StorageClient::connect(self.addr(), TIMEOUT, TIMEOUT)
            .await
            .unwrap()
    }

    /// A download of the whole file from this very storage.
    pub async fn download(&self, remote: &str) -> Result<Vec<u8>, fdfs_client::Error> {
        let mut c = self.client().await;
        let r = c.download_to_vec(GROUP, remote, 0, 0).await;
        c.quit().await;
        r
    }

    /// Uploads a normal file here; returns its remote name.
    pub async fn upload(&self, data: &[u8], ext: &str) -> String {
        let mut c = self.client().await;
        let f = c.upload_buffer(data, ext, 0).await.unwrap();
        c.quit().await;
        assert_eq!(f.group, GROUP);
        f.filename
    }

    pub fn sync_dir(&self) -> PathBuf {
        self.base.join("data").join("sync")
    }

    /// Size of the binlog file being written (replication reads it; one file suffices
    /// here, a new one starts only at 1 GiB).
    pub fn binlog_size(&self) -> u64 {
        std::fs::metadata(self.sync_dir().join("binlog.000"))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    pub fn binlog_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.sync_dir().join("binlog.000"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// This storage's replication progress towards `peer`, as saved in
    /// `data/sync/<peer ip>_<peer port>.mark` (upstream's keys); `None` before any.
    /// Parsed here rather than through the crate, so the on-disk format is what is
    /// checked.
    pub fn mark_for(&self, peer: &Node) -> Option<HashMap<String, i64>> {
        let path = self
            .sync_dir()
            .join(format!("{}_{}.mark", peer.ip, peer.port));
        let text = std::fs::read_to_string(path).ok()?;
        Some(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().parse().unwrap_or(-1)))
                .collect(),
        )
    }
}

/// A tracker and the storages of `group1` that report to it, on one loopback /24.
pub struct Cluster {
    root: PathBuf,
    net: [u8; 2],
    tracker: Option<TestTracker>,
    /// All storages of the cluster use the group's one port, each on its own IP.
    pub storage_port: u16,
    pub tracker_client: TrackerClient,
    next_host: u8,
    done: bool,
}

fn ip(net: [u8; 2], host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, net[0], net[1], host)
}

/// Tracker at `.1`, storages from `.11` up.
const TRACKER_HOST: u8 = 1;
const FIRST_STORAGE_HOST: u8 = 11;
const MAX_STORAGES: u8 = 4;

fn port_free(addr: SocketAddr) -> bool {
    std::net::TcpListener::bind(addr).is_ok()
}

impl Cluster {
    /// Starts the tracker; storages come with [`Cluster::add_storage`].
    pub async fn start(name: &str) -> Cluster {
        init_logging();
        let root = scratch(name);
        let mut rng = rand::thread_rng();
        loop {
            // 127.0.x.x is left to the other suites.
            let net = [rng.gen_range(16..=250u8), rng.gen::<u8>()];
            let tracker_port: u16 = rng.gen_range(20_000..60_000);
            let storage_port: u16 = rng.gen_range(20_000..60_000);
            let tracker_addr = SocketAddr::new(ip(net, TRACKER_HOST).into(), tracker_port);
            let storages_free = (0..MAX_STORAGES).all(|i| {
                port_free(SocketAddr::new(
                    ip(net, FIRST_STORAGE_HOST + i).into(),
                    storage_port,
                ))
            });
            if tracker_port == storage_port || !storages_free || !port_free(tracker_addr) {
                continue;
            }
            let base = root.join("tracker");
            std::fs::create_dir_all(&base).unwrap();
            let conf = base.join("tracker.conf");
            std::fs::write(
                &conf,
                format!(
                    "base_path = {}\nbind_addr = {}\nport = {tracker_port}\n\
                     connect_timeout = 2\nnetwork_timeout = 10\n\
                     reserved_storage_space = 10MB\ncheck_active_interval = 30\n",
                    base.display(),
                    tracker_addr.ip()
                ),
            )
            .unwrap();
            let tracker = match Tracker::bind(TrackerConfig::load(&conf).unwrap()).await {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => panic!("cannot start the tracker: {e}"),
            };
            let (trigger, shutdown) = ShutdownTrigger::new();
            let task = tokio::spawn(tracker.run(shutdown));
            return Cluster {
                root,
                net,
                tracker: Some(TestTracker {
                    addr: tracker_addr,
                    trigger,
                    task,
                }),
                storage_port,
                tracker_client: TrackerClient::new(vec![tracker_addr], TIMEOUT, TIMEOUT),
                next_host: FIRST_STORAGE_HOST,
                done: false,
            };
        }
    }

    /// Creates and starts one more storage of `group1`.
    pub async fn add_storage(&mut self) -> Node {
        assert!(self.next_host < FIRST_STORAGE_HOST + MAX_STORAGES);
        let host = self.next_host;
        self.next_host += 1;
        let ip = ip(self.net, host);
        let base = self.root.join(format!("storage-{ip}"));
        std::fs::create_dir_all(&base).unwrap();
        let conf = base.join("storage.conf");
        let tracker = self.tracker.as_ref().unwrap().addr;
        std::fs::write(
            &conf,
            format!(
                "group_name = {GROUP}\nbind_addr = {ip}\nport = {}\nbase_path = {}\n\
                 subdir_count_per_path = 1\ntracker_server = {tracker}\n\
                 heart_beat_interval = 1\nstat_report_interval = 1\n\
                 connect_timeout = 2\nnetwork_timeout = 10\n\
                 fsync_before_reply = false\nscrub_bytes_per_second = 0\n",
                self.storage_port,
                base.display()
            ),
        )
        .unwrap();
        let mut node = Node {
            ip,
            port: self.storage_port,
            base,
            conf,
            running: None,
        };
        node.start().await;
        node
    }

    /// The status the tracker lists for each storage, by IP.
    pub async fn statuses(&self) -> HashMap<String, u8> {
        match self.tracker_client.list_storages(GROUP, None).await {
            Ok(list) => list.into_iter().map(|s| (s.ip, s.status)).collect(),
            Err(_) => HashMap::new(),
        }
    }

    /// One of `node`'s activity counters (`fdfs_proto::msg::counter`) as the
    /// tracker last heard it (reported every second); `None` if it does not list it.
    pub async fn counter(&self, node: &Node, index: usize) -> Option<i64> {
        let list = self
            .tracker_client
            .list_storages(GROUP, Some(&node.id()))
            .await
            .ok()?;
        list.iter()
            .find(|s| s.ip == node.id())
            .map(|s| s.counters.counters[index])
    }

    /// Waits until `node`'s counter `index` has reached `want`, then checks it is not
    /// past it: counters only grow, so a value over `want` is work done twice.
    pub async fn expect_counter(&self, node: &Node, index: usize, want: i64) {
        let what = format!("counter {index} of {} to reach {want}", node.ip);
        eventually_async(&what, || async move {
            self.counter(node, index).await.is_some_and(|v| v >= want)
        })
        .await;
        assert_eq!(
            self.counter(node, index).await,
            Some(want),
            "counter {index} of {}",
            node.ip
        );
    }

    /// Waits until the tracker lists every one of `nodes` ACTIVE: each has joined and
    /// holds the files its group had when it joined.
    pub async fn wait_active(&self, nodes: &[&Node]) {
        let ids: Vec<String> = nodes.iter().map(|n| n.id()).collect();
        let what = format!("{ids:?} ACTIVE");
        eventually_async(&what, || {
            let ids = ids.clone();
            async move {
                let s = self.statuses().await;
                ids.iter().all(|id| s.get(id) == Some(&status::ACTIVE))
            }
        })
        .await;
    }

    /// Stops the given storages (those still running) and the tracker, then removes
    /// the scratch directory.
    pub async fn shutdown(mut self, nodes: &mut [&mut Node]) {
        for n in nodes.iter_mut() {
            if n.is_running() {
                n.stop().await;
            }
        }
        let t = self.tracker.take().unwrap();
        t.trigger.trigger();
        let _ = tokio::time::timeout(DEADLINE, t.task).await;
        let _ = std::fs::remove_dir_all(&self.root);
        self.done = true;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.done {
            eprintln!("scratch directory kept: {}", self.root.display());
        }
    }
}
