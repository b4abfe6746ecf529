//! The accept loop both daemons use: a bounded number of connections, each handled by its
//! own task, and a graceful stop that lets requests in flight finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fdfs_proto::allow_hosts::AllowHosts;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{info, warn};

/// Tells a connection handler that the daemon is stopping. Handlers check it between
/// requests, never in the middle of one.
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

/// Accepts connections until `shutdown` fires, then waits up to `drain` for handlers to
/// finish the request they are serving.
pub async fn serve<H, F>(
    listener: TcpListener,
    max_connections: usize,
    shutdown: Shutdown,
    drain: Duration,
    handler: H,
) where
    H: Fn(TcpStream, SocketAddr, Shutdown) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let everyone = Arc::new(AllowHosts::default());
    serve_allowed(
        listener,
        max_connections,
        everyone,
        shutdown,
        drain,
        handler,
    )
    .await
}

/// As [`serve`], closing at once every connection from an address `allow` refuses
/// (`allow_hosts`), before a byte is read.
pub async fn serve_allowed<H, F>(
    listener: TcpListener,
    max_connections: usize,
    allow: Arc<AllowHosts>,
    mut shutdown: Shutdown,
    drain: Duration,
    handler: H,
) where
    H: Fn(TcpStream, SocketAddr, Shutdown) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
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
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!("max_connections ({max_connections}) reached, closing connection from {peer}");
            drop(stream);
            continue;
        };
        let fut = handler(stream, peer, shutdown.clone());
        let done = done_tx.clone();
        tokio::spawn(async move {
            fut.await;
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
