//! The accept loop both daemons use: a bounded number of connections, each handled by its
//! own task, and a graceful stop that lets requests in flight finish.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fdfs_proto::allow_hosts::AllowHosts;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tracing::{info, warn};

/// Tells a task that the daemon is stopping.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once the stop has been requested.
    pub async fn recv(&mut self) {
        let _ = self.rx.wait_for(|stop| *stop).await;
    }
}

/// Tells a connection handler, while it waits for the next request, that its connection
/// should end: the daemon is stopping, or the server is full and this connection has
/// been idle the longest (its slot goes to a new client). Handlers wait on it only
/// between requests, never in the middle of one.
pub struct IdleEnd {
    shutdown: Shutdown,
    slot: Arc<Slot>,
}

impl IdleEnd {
    pub fn is_shutdown(&self) -> bool {
        self.shutdown.is_shutdown()
    }

    /// Keeps this connection when the server is full: it is never closed to make room
    /// (a storage's link to its tracker, a peer's replication stream).
    pub fn pin(&self) {
        self.slot.pinned.store(true, Ordering::Relaxed);
    }

    /// Resolves once the stop has been requested or the accept loop reclaims this idle
    /// connection for a new client; the connection counts as idle while this waits.
    pub async fn recv(&mut self) {
        // Registered before the slot shows idle, so no notice sent from then on is
        // missed; a notice sent while the connection is busy reaches no one and is not
        // kept (`notify_waiters` stores nothing).
        let evicted = self.slot.evict.notified();
        tokio::pin!(evicted);
        evicted.as_mut().enable();
        let _idle = self.slot.idle();
        tokio::select! {
            _ = self.shutdown.recv() => {}
            _ = evicted => {}
        }
    }
}

/// One accepted connection as the accept loop sees it.
struct Slot {
    peer: SocketAddr,
    /// When the connection began waiting for its next request, in ms since the loop
    /// started; `BUSY` while a request is being served.
    idle_since: AtomicU64,
    evict: Notify,
    /// Never evicted (see [`IdleEnd::pin`]).
    pinned: AtomicBool,
}

const BUSY: u64 = u64::MAX;

/// Marks a slot idle for as long as it lives.
struct IdleGuard<'a>(&'a Slot);

impl Slot {
    fn idle(&self) -> IdleGuard<'_> {
        self.idle_since
            .store(millis_since_start(), Ordering::Relaxed);
        IdleGuard(self)
    }
}

impl Drop for IdleGuard<'_> {
    fn drop(&mut self) {
        self.0.idle_since.store(BUSY, Ordering::Relaxed);
    }
}

fn millis_since_start() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The open connections, so that a full server can close its longest-idle one.
#[derive(Default)]
struct Slots {
    next_id: u64,
    open: HashMap<u64, Arc<Slot>>,
}

impl Slots {
    fn add(&mut self, peer: SocketAddr) -> (u64, Arc<Slot>) {
        let id = self.next_id;
        self.next_id += 1;
        let slot = Arc::new(Slot {
            peer,
            idle_since: AtomicU64::new(BUSY),
            evict: Notify::new(),
            pinned: AtomicBool::new(false),
        });
        self.open.insert(id, slot.clone());
        (id, slot)
    }

    /// Asks the connection idle for the longest time to close; false if none is idle.
    fn evict_oldest_idle(&self) -> Option<SocketAddr> {
        let oldest = self
            .open
            .values()
            .filter(|s| {
                s.idle_since.load(Ordering::Relaxed) != BUSY && !s.pinned.load(Ordering::Relaxed)
            })
            .min_by_key(|s| s.idle_since.load(Ordering::Relaxed))?;
        oldest.evict.notify_waiters();
        Some(oldest.peer)
    }
}

/// A stop trigger for background tasks and the listener.
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

impl ShutdownTrigger {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx }, Shutdown { rx })
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }

    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

/// Connections the kernel may complete before the accept loop takes them: bursts of
/// thousands of clients (or of reconnecting pools) must not see dropped SYNs.
const LISTEN_BACKLOG: u32 = 4096;

/// Listens on `addr` with a deep accept queue (address reuse on, as upstream).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How long a full server waits for evicted idle connections to free a slot.
const EVICT_WAIT: Duration = Duration::from_secs(2);
/// How long it waits for one evicted connection before it evicts the next idle one (the
/// first may have taken a request just as it was asked to close).
const EVICT_STEP: Duration = Duration::from_millis(250);

/// A full server's slot for a new client: the connection idle the longest is asked to
/// close, and the next one if that one took a request meanwhile, until a slot is free,
/// no idle connection is left, or [`EVICT_WAIT`] has passed.
async fn make_room(
    permits: &Arc<Semaphore>,
    slots: &Mutex<Slots>,
    evictions: &mut u64,
    max_connections: usize,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let deadline = Instant::now() + EVICT_WAIT;
    loop {
        let idle_peer = slots.lock().unwrap().evict_oldest_idle()?;
        *evictions += 1;
        if *evictions == 1 || evictions.is_multiple_of(1000) {
            warn!("max_connections ({max_connections}) reached: closing idle connections to serve new ones ({evictions} so far, latest {idle_peer})");
        }
        let step = EVICT_STEP.min(deadline.saturating_duration_since(Instant::now()));
        if let Ok(Ok(p)) = tokio::time::timeout(step, permits.clone().acquire_owned()).await {
            return Some(p);
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

/// Accepts connections until `shutdown` fires, then waits up to `drain` for handlers to
/// finish the request they are serving. A connection from an address `allow` refuses
/// (`allow_hosts`) is closed at once, before a byte is read.
///
/// With `max_connections` open, a new client is still served: the connection idle for
/// the longest time (waiting between requests, never one in the middle of a request) is
/// closed to make room. Only when every connection is busy is the new one refused.
pub async fn serve_allowed<H, F>(
    listener: TcpListener,
    max_connections: usize,
    allow: Arc<AllowHosts>,
    mut shutdown: Shutdown,
    drain: Duration,
    handler: H,
) where
    H: Fn(TcpStream, SocketAddr, IdleEnd) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let slots = Arc::new(Mutex::new(Slots::default()));
    let mut evictions = 0u64;
    // Every handler holds a sender; when all are dropped, the receiver sees the end.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.recv() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and similar: back off briefly instead of spinning.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !allow.allows(peer.ip()) {
            warn!("{peer} is not in allow_hosts, connection refused");
            drop(stream);
            continue;
        }
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => match make_room(&permits, &slots, &mut evictions, max_connections).await {
                Some(p) => p,
                None => {
                    warn!("max_connections ({max_connections}) reached and no idle connection could make room, closing connection from {peer}");
                    drop(stream);
                    continue;
                }
            },
        };
        let (id, slot) = slots.lock().unwrap().add(peer);
        let conn_shutdown = IdleEnd {
            shutdown: shutdown.clone(),
            slot,
        };
        let fut = handler(stream, peer, conn_shutdown);
        let done = done_tx.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            fut.await;
            slots.lock().unwrap().open.remove(&id);
            drop(permit);
            drop(done);
        });
    }
    drop(done_tx);
    drop(listener);
    info!("stopping: waiting for requests in flight");
    if tokio::time::timeout(drain, done_rx.recv()).await.is_err() {
        warn!(
            "some connections were still busy after {} s",
            drain.as_secs()
        );
    }
}
