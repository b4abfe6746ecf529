//! The trunk server sends its trunk binlog to every peer of its group (30
//! TRUNK_SYNC_BINLOG, whole lines, at most 64 KiB a request), from where the peer's
//! mark says it got to; a peer that starts from nothing is first told to start its
//! copy afresh (33). Whichever peer becomes trunk server next replays its copy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fdfs_proto::msg::{StorageBrief, TrunkTruncateBinlog};
use fdfs_proto::{cmd, status};
use fdfs_runtime::server::Shutdown;
use fdfs_runtime::Error;
use tracing::{debug, warn};

use super::binlog::PUSH_MAX;
use crate::state::Storage;

/// How long a push that caught up waits before it sends the lines written meanwhile.
const GATHER: Duration = Duration::from_millis(50);

/// How long a stopping storage tries to send its peers the trunk binlog's last lines.
const LAST_LINES: Duration = Duration::from_secs(5);

/// Starts and stops a push task per peer while this storage is the trunk server.
pub async fn run_manager(st: Arc<Storage>, mut shutdown: Shutdown) {
    let mut tasks: HashMap<String, (u64, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut ticks = super::housekeeping::Ticks::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.recv() => break,
        }
        tasks.retain(|_, (_, t)| !t.is_finished());
        if st.trunk.needs_role().await {
            // The allocator did not load (an unreadable binlog, say): again.
            let again = st.clone();
            tokio::spawn(async move { again.trunk.take_role(&again).await });
        }
        if !st.trunk.is_server() || st.trunk.free_mb().await.is_none() {
            continue;
        }
        super::housekeeping::tick(&st, &mut ticks, fdfs_runtime::unix_now()).await;
        let epoch = st.trunk.epoch.load(Ordering::Acquire);
        // Pushes of an earlier epoch (the binlog was rewritten) end now.
        tasks.retain(|_, (e, t)| {
            if *e != epoch {
                t.abort();
            }
            *e == epoch
        });
        for peer in st.sync.members() {
            if is_me(&st, &peer)
                || matches!(
                    peer.status,
                    status::DELETED | status::IP_CHANGED | status::NONE
                )
            {
                continue;
            }
            let name = mark_name(&st, &peer);
            if tasks.get(&name).is_some_and(|(e, _)| *e == epoch) {
                continue;
            }
            let task = tokio::spawn(push(st.clone(), peer, name.clone(), epoch));
            tasks.insert(name, (epoch, task));
        }
    }
    // Stopping. Once the requests in flight are done, every push sends the lines
    // written up to then (for a while at most): a peer that becomes trunk server next
    // must not hand out again the slots of the last uploads here.
    let mut done = st.trunk.requests_done.subscribe();
    let _ = done.wait_for(|d| *d).await;
    let _ = tokio::time::timeout(LAST_LINES, async {
        for (_, t) in tasks.values_mut() {
            let _ = t.await;
        }
    })
    .await;
    for (_, (_, t)) in tasks {
        t.abort();
    }
}

fn is_me(st: &Storage, peer: &StorageBrief) -> bool {
    st.my_id().is_some_and(|id| id == peer.id)
        && (peer.port == st.cfg.port as u32 || st.by_server_id())
}

/// The peer's mark file name, as upstream names it: its id with storage ids, else its
/// address and *this* storage's port.
fn mark_name(st: &Storage, peer: &StorageBrief) -> String {
    if st.by_server_id() {
        peer.id.clone()
    } else {
        format!("{}_{}", peer.ip, st.cfg.port)
    }
}

async fn push(st: Arc<Storage>, peer: StorageBrief, mark: String, epoch: u64) {
    let Some(log) = st.trunk.binlog().cloned() else {
        return;
    };
    let Ok(ip) = peer.ip.parse() else {
        return;
    };
    let addr = SocketAddr::new(ip, peer.port as u16);
    let current = || st.trunk.epoch.load(Ordering::Acquire) == epoch && st.trunk.is_server();
    let mut offset = log.load_mark(&mark);
    let mut failing = false;
    let mut done = st.trunk.requests_done.subscribe();
    while current() {
        let stopping = *done.borrow();
        match push_some(&st, &log, addr, &mut offset, &mark, &current).await {
            Ok(()) => return,
            Err(e) => {
                if !failing {
                    warn!("trunk binlog to {addr}: {e}; retrying");
                }
                failing = true;
                if current() {
                    let _ = log.save_mark(&mark, offset);
                }
                if stopping {
                    // One try once the requests were done, no more.
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = done.wait_for(|d| *d) => {}
                }
            }
        }
    }
}

/// Sends lines until this storage is no longer the trunk server (`Ok`) or the
/// connection fails.
async fn push_some(
    st: &Storage,
    log: &super::binlog::TrunkBinlog,
    addr: SocketAddr,
    offset: &mut u64,
    mark: &str,
    current: &impl Fn() -> bool,
) -> Result<(), Error> {
    let mut conn = crate::outbound::connect(st, addr).await?;
    if *offset == 0 || *offset > log.size()? {
        conn.call(&TrunkTruncateBinlog).await?;
        *offset = 0;
    }
    let mut saved = *offset;
    let mut idle = 0u32;
    let mut done = st.trunk.requests_done.subscribe();
    while current() {
        // Read after the stop is seen: this chunk holds every line there will be.
        let last = *done.borrow_and_update();
        let chunk = log.read_from(*offset)?;
        if chunk.is_empty() {
            if saved != *offset && current() {
                log.save_mark(mark, *offset)?;
                saved = *offset;
            }
            if last {
                break;
            }
            wait_unless(&mut done, Duration::from_millis(200)).await;
            idle += 1;
            // Keeps the connection known alive, as upstream's 111 does.
            if idle.is_multiple_of(5 * st.cfg.heart_beat_interval.as_secs().max(1) as u32) {
                conn.request(cmd::ACTIVE_TEST, &[]).await?;
            }
            continue;
        }
        idle = 0;
        conn.request(cmd::TRUNK_SYNC_BINLOG, &chunk).await?;
        *offset += chunk.len() as u64;
        debug!("trunk binlog to {addr}: {offset} bytes");
        if chunk.len() < PUSH_MAX / 2 {
            // Caught up: the next lines go together a moment later, not a request
            // (and a write at the peer) for every few uploads.
            wait_unless(&mut done, GATHER).await;
        }
    }
    // (Unless stopping, no mark saved: this term or this binlog is over; the next
    // push starts afresh or from the last mark saved while it was current.)
    conn.quit().await;
    Ok(())
}

/// Sleeps for `time`, or less if the daemon's requests are done (it is stopping).
async fn wait_unless(done: &mut tokio::sync::watch::Receiver<bool>, time: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(time) => {}
        _ = done.wait_for(|d| *d) => {}
    }
}
