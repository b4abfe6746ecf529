//! `fdfs_bench`: drives a tracker (query + transfer, as real clients do) or one storage
//! directly, with `--threads` concurrent sessions, and prints one JSON line of results.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use fdfs_client::StorageClient;
use fdfs_proto::fileid;
use fdfs_proto::msg::FileRef;
use fdfs_proto::msg::{Fetch, QueryFetch, QueryStore};
use fdfs_runtime::{Connection, Error};
use rand::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Upload,
    Download,
    /// One upload for every four downloads.
    Mixed,
}

#[derive(Parser, Debug)]
#[command(about = "Load generator for FastDFS-protocol servers")]
struct Args {
    /// Tracker to ask where to upload and download (`ip:port`).
    #[arg(long, conflicts_with = "storage")]
    tracker: Option<SocketAddr>,
    /// Talk to this storage directly, skipping the tracker (`ip:port`).
    #[arg(long)]
    storage: Option<SocketAddr>,
    #[arg(long, value_enum, default_value = "upload")]
    mode: Mode,
    /// Concurrent sessions, each with its own connections.
    #[arg(long, default_value_t = 16)]
    threads: usize,
    /// File size in bytes.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// How long to run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Stop after this many operations instead (with `--windows` progress lines).
    #[arg(long)]
    total: Option<u64>,
    /// With `--total`: print the rate of each of this many equal windows.
    #[arg(long, default_value_t = 10)]
    windows: u64,
    /// Files uploaded before a download run starts (not timed).
    #[arg(long, default_value_t = 1000)]
    prefill: usize,
    /// Label copied into the JSON line.
    #[arg(long, default_value = "")]
    label: String,
    /// Instead of FastDFS traffic, copy this many bytes over a loopback TCP connection on
    /// this address (`ip:port`) and report MB/s: the machine's own limit.
    #[arg(long, value_name = "IP:PORT")]
    loopback_copy: Option<SocketAddr>,
    /// Bytes for `--loopback-copy`.
    #[arg(long, default_value_t = 1 << 30)]
    copy_bytes: u64,
}

/// Where requests go: through a tracker session, or straight to one storage.
struct Session {
    tracker: Option<Connection>,
    tracker_addr: Option<SocketAddr>,
    storages: Vec<(SocketAddr, StorageClient)>,
}

const TIMEOUT: Duration = Duration::from_secs(30);

impl Session {
    async fn new(args: &Args) -> Result<Session, Error> {
        let tracker = match args.tracker {
            Some(addr) => Some(Connection::connect(addr, None, TIMEOUT, TIMEOUT).await?),
            None => None,
        };
        Ok(Session {
            tracker,
            tracker_addr: args.tracker,
            storages: Vec::new(),
        })
    }

    async fn storage(&mut self, addr: SocketAddr) -> Result<&mut StorageClient, Error> {
        let pos = match self.storages.iter().position(|(a, _)| *a == addr) {
            Some(p) => p,
            None => {
                let client = StorageClient::connect(addr, TIMEOUT, TIMEOUT).await?;
                self.storages.push((addr, client));
                self.storages.len() - 1
            }
        };
        Ok(&mut self.storages[pos].1)
    }

    fn tracker(&mut self) -> &mut Connection {
        self.tracker.as_mut().expect("tracker session")
    }

    async fn upload(&mut self, data: &[u8], direct: Option<SocketAddr>) -> Result<String, Error> {
        let (addr, path) = match direct {
            Some(a) => (a, -1),
            None => {
                let t = self.tracker().call(&QueryStore { group: None }).await?;
                (
                    addr_of(&t.server.ip, t.server.port)?,
                    t.store_path_index as i8,
                )
            }
        };
        let stored = self
            .storage(addr)
            .await?
            .upload_buffer(data, "bin", path)
            .await?;
        Ok(stored.file_id())
    }

    async fn download(
        &mut self,
        file_id: &str,
        direct: Option<SocketAddr>,
    ) -> Result<usize, Error> {
        let (group, remote) = fileid::split_file_id(file_id)?;
        let addr = match direct {
            Some(a) => a,
            None => {
                let q = QueryFetch {
                    kind: Fetch::One,
                    file: FileRef {
                        group: group.to_string(),
                        filename: remote.to_string(),
                    },
                };
                let t = self.tracker().call(&q).await?;
                let s = t
                    .servers
                    .first()
                    .ok_or_else(|| Error::Other("no storage in reply".into()))?;
                addr_of(&s.ip, s.port)?
            }
        };
        let data = self
            .storage(addr)
            .await?
            .download_to_vec(group, remote, 0, 0)
            .await?;
        Ok(data.len())
    }
}

fn addr_of(ip: &str, port: u16) -> Result<SocketAddr, Error> {
    format!("{ip}:{port}")
        .parse()
        .map_err(|_| Error::Other(format!("bad address {ip}:{port}")))
}

#[derive(Default)]
struct TaskResult {
    latencies_us: Vec<u32>,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn prefill(args: &Args) -> Result<Vec<String>, Error> {
    let data = vec![b'p'; args.size];
    let per_task = args.prefill.div_ceil(args.threads.max(1));
    let mut tasks = Vec::new();
    for _ in 0..args.threads.max(1) {
        let direct = args.storage;
        let data = data.clone();
        let mut session = Session::new(args).await?;
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                ids.push(session.upload(&data, direct).await?);
            }
            Ok::<_, Error>(ids)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.map_err(|e| Error::Other(e.to_string()))??);
    }
    Ok(ids)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(addr) = args.loopback_copy {
        return match loopback_copy(addr, args.copy_bytes).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fdfs_bench: loopback copy: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if args.tracker.is_none() && args.storage.is_none() {
        eprintln!("fdfs_bench: give --tracker or --storage");
        return std::process::ExitCode::from(2);
    }
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fdfs_bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Error> {
    let ids = Arc::new(if args.mode == Mode::Upload {
        Vec::new()
    } else {
        prefill(&args).await?
    });
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let data = Arc::new({
        let mut d = vec![0u8; args.size];
        rand::thread_rng().fill(&mut d[..]);
        d
    });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..args.threads.max(1) {
        let mut session = Session::new(&args).await?;
        let (stop, done, data, ids) = (stop.clone(), done.clone(), data.clone(), ids.clone());
        let (mode, direct, total) = (args.mode, args.storage, args.total);
        tasks.push(tokio::spawn(async move {
            let mut r = TaskResult::default();
            let mut n: u64 = task as u64;
            while !stop.load(Ordering::Relaxed) {
                if let Some(t) = total {
                    if done.fetch_add(1, Ordering::Relaxed) >= t {
                        break;
                    }
                }
                let upload = match mode {
                    Mode::Upload => true,
                    Mode::Download => false,
                    Mode::Mixed => n.is_multiple_of(5),
                };
                n += 1;
                let t0 = Instant::now();
                let outcome = if upload {
                    session.upload(&data, direct).await.map(|_| data.len())
                } else {
                    let id = &ids[rand::thread_rng().gen_range(0..ids.len())];
                    session.download(id, direct).await
                };
                match outcome {
                    Ok(bytes) => {
                        r.latencies_us
                            .push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        r.bytes += bytes as u64;
                    }
                    Err(e) => {
                        r.errors += 1;
                        r.first_error.get_or_insert_with(|| e.to_string());
                        // A broken session is rebuilt rather than reused.
                        session.storages.clear();
                        if let Some(addr) = session.tracker_addr {
                            if let Ok(c) = Connection::connect(addr, None, TIMEOUT, TIMEOUT).await {
                                session.tracker = Some(c);
                            }
                        }
                    }
                }
            }
            r
        }));
    }
    let windows = if let Some(total) = args.total {
        watch_windows(total, args.windows.max(1), &done).await
    } else {
        tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
        Vec::new()
    };
    stop.store(true, Ordering::Relaxed);
    let mut all = TaskResult::default();
    for t in tasks {
        let r = t.await.map_err(|e| Error::Other(e.to_string()))?;
        all.latencies_us.extend(r.latencies_us);
        all.bytes += r.bytes;
        all.errors += r.errors;
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let ops = all.latencies_us.len() as f64;
    let windows_json: Vec<String> = windows.iter().map(|w| format!("{w:.0}")).collect();
    println!(
        "{{\"label\":{:?},\"mode\":\"{:?}\",\"via\":\"{}\",\"threads\":{},\"size\":{},\"seconds\":{:.2},\
         \"ops\":{},\"ops_per_sec\":{:.0},\"mb_per_sec\":{:.2},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\
         \"max_ms\":{:.3},\"errors\":{},\"first_error\":{:?},\"window_ops_per_sec\":[{}]}}",
        args.label,
        args.mode,
        if args.storage.is_some() { "direct" } else { "tracker" },
        args.threads,
        args.size,
        elapsed,
        ops,
        ops / elapsed,
        all.bytes as f64 / elapsed / 1e6,
        percentile(&all.latencies_us, 0.50),
        percentile(&all.latencies_us, 0.99),
        percentile(&all.latencies_us, 1.0),
        all.errors,
        all.first_error.unwrap_or_default(),
        windows_json.join(",")
    );
    if all.errors > 0 && ops == 0.0 {
        return Err(Error::Other("every operation failed".into()));
    }
    Ok(())
}

/// Copies `bytes` from one socket to another over loopback with the same chunk size the
/// daemons use, and prints the rate.
async fn loopback_copy(addr: SocketAddr, bytes: u64) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Ok::<u64, std::io::Error>(got);
            }
            got += n as u64;
        }
    });
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let buf = vec![7u8; 256 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        s.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    s.shutdown().await?;
    let got = reader.await.map_err(std::io::Error::other)??;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"label\":\"loopback copy\",\"bytes\":{got},\"seconds\":{secs:.3},\"mb_per_sec\":{:.1}}}",
        got as f64 / secs / 1e6
    );
    Ok(())
}

/// With `--total`, samples progress and returns the rate of each window (windows that
/// end within one sample share the rate measured over that sample).
async fn watch_windows(total: u64, windows: u64, done: &AtomicU64) -> Vec<f64> {
    let step = (total / windows).max(1);
    let mut rates = Vec::new();
    let (mut mark_count, mut mark_time) = (0u64, Instant::now());
    let mut next = step;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let d = done.load(Ordering::Relaxed).min(total);
        if d >= next {
            let now = Instant::now();
            let rate = (d - mark_count) as f64 / now.duration_since(mark_time).as_secs_f64();
            while d >= next && next <= total {
                rates.push(rate);
                eprintln!("fdfs_bench: {next} ops, {rate:.0} ops/s in the last window");
                next += step;
            }
            (mark_count, mark_time) = (d, now);
        }
        if d >= total {
            return rates;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn args_parse() {
        let a = Args::parse_from([
            "fdfs_bench",
            "--tracker",
            "127.0.0.1:22122",
            "--mode",
            "mixed",
            "--threads",
            "4",
        ]);
        assert_eq!(a.mode, Mode::Mixed);
        assert_eq!(a.threads, 4);
        assert!(
            Args::try_parse_from(["x", "--tracker", "1.2.3.4:1", "--storage", "1.2.3.4:2"])
                .is_err()
        );
    }
}
