//! Test helpers: a storage opened on a scratch directory, and fake trackers that answer
//! each command with what a test tells them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fdfs_runtime::Connection;
use tokio::net::TcpListener;

use crate::binlog::Binlog;
use crate::config::StorageConfig;
use crate::init_flag::InitFlag;
use crate::state::Storage;
use crate::store::Store;

/// A scratch directory, removed when dropped (whether the test passed or not).
pub fn scratch(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("fdfs-test-{tag}-"))
        .tempdir()
        .unwrap()
}

/// A storage of group `group1` in a scratch directory, with these `tracker_server`
/// lines; beats every second. Not listening: only its tracker side is exercised.
/// The directory goes when the returned guard is dropped.
pub fn storage(tag: &str, trackers: &[String]) -> (Arc<Storage>, tempfile::TempDir) {
    let dir = scratch(tag);
    let base = dir.path();
    let mut conf = format!(
        "group_name = group1\nbase_path = {}\nport = 1\nsubdir_count_per_path = 1\n\
         heart_beat_interval = 1\nconnect_timeout = 2\nnetwork_timeout = 5\n",
        base.display()
    );
    for t in trackers {
        conf.push_str(&format!("tracker_server = {t}\n"));
    }
    let path = base.join("storage.conf");
    std::fs::write(&path, conf).unwrap();
    let cfg = StorageConfig::load(&path).unwrap();
    let mut init = InitFlag {
        join_time: fdfs_runtime::unix_now(),
        sync_old_done: true,
        ..Default::default()
    };
    let store = Store::open(&cfg, &mut init, false, false).unwrap();
    let binlog = Binlog::open(&cfg.base_path).unwrap();
    (Arc::new(Storage::new(cfg, store, binlog)), dir)
}

/// What a fake tracker answers: status (0 or an errno) and body.
pub type Answer = (u8, Vec<u8>);

/// A tracker on a local port that records the commands it gets and answers each with
/// `answer(connection number, command, body)`.
pub struct FakeTracker {
    pub addr: String,
    pub commands: Arc<Mutex<Vec<u8>>>,
}

impl FakeTracker {
    pub async fn start<F>(answer: F) -> FakeTracker
    where
        F: Fn(u64, u8, &[u8]) -> Answer + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let commands = Arc::new(Mutex::new(Vec::new()));
        let seen = commands.clone();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((stream, _)) = listener.accept().await {
                n += 1;
                let (seen, answer) = (seen.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut conn = Connection::new(stream, Duration::from_secs(10));
                    while let Ok(Some(h)) = conn.read_header(Duration::from_secs(60)).await {
                        let Ok(len) = h.body_len(1 << 20) else { return };
                        let Ok(body) = conn.read_body(len as usize).await else {
                            return;
                        };
                        if h.cmd == fdfs_proto::cmd::QUIT {
                            return;
                        }
                        seen.lock().unwrap().push(h.cmd);
                        let (status, reply) = answer(n, h.cmd, &body);
                        if conn.reply(status, &reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeTracker { addr, commands }
    }

    pub fn count(&self, command: u8) -> usize {
        self.commands
            .lock()
            .unwrap()
            .iter()
            .filter(|c| **c == command)
            .count()
    }
}

/// Polls `cond` every 50 ms for up to `secs` seconds.
pub async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}
