//! The accept loop (`fdfs_runtime::server::serve_allowed`) on loopback, with a handler
//! written here the way the daemons write theirs: a full server closes its longest-idle
//! connection for a new client, never a busy or a pinned one; `allow_hosts` refuses
//! before anything is read; a stop lets the request in flight finish.
//!
//! Every test runs on a current-thread runtime: when the test sees a handler's
//! `Waiting` event, that handler has already polled `IdleEnd::recv` (it reports the
//! event right before its `select!` and only yields inside it), so its connection counts
//! as idle from then on.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fdfs_proto::allow_hosts::AllowHosts;
use fdfs_proto::msg::ActiveTest;
use fdfs_proto::Header;
use fdfs_runtime::server::{listen, serve_allowed, ShutdownTrigger};
use fdfs_runtime::Connection;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

/// Bound for anything that should happen at once: a failure, not a slow machine.
const T: Duration = Duration::from_secs(5);
/// A request the handler answers only once the test lets it (one gate permit each).
const SLOW: u8 = 200;
/// A request that pins its connection.
const PIN: u8 = 201;
/// The accept loop's idle times have millisecond resolution: connections made idle
/// this far apart are ordered.
const APART: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// `IdleEnd::recv` fired without a stop: the slot went to a new client.
    Evicted,
    /// `IdleEnd::recv` fired for the stop.
    Shutdown,
    /// The peer closed between requests.
    PeerClosed,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Opened(SocketAddr),
    /// The handler waits for the next request, after serving this many.
    Waiting(SocketAddr, usize),
    /// A SLOW request is being served.
    Busy(SocketAddr),
    Ended(SocketAddr, End),
}

struct Harness {
    addr: SocketAddr,
    trigger: ShutdownTrigger,
    server: JoinHandle<()>,
    events: mpsc::UnboundedReceiver<Event>,
    log: Vec<Event>,
    gate: Arc<Semaphore>,
}

/// Starts `serve_allowed` on 127.0.0.1 with the test handler.
fn start(max_connections: usize, allow: AllowHosts, drain: Duration) -> Harness {
    let listener = listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown) = ShutdownTrigger::new();
    let (tx, events) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let handler_gate = gate.clone();
    let server = tokio::spawn(serve_allowed(
        listener,
        max_connections,
        Arc::new(allow),
        shutdown,
        drain,
        move |stream: TcpStream, peer, mut idle_end| {
            let tx: mpsc::UnboundedSender<Event> = tx.clone();
            let gate = handler_gate.clone();
            async move {
                let _ = tx.send(Event::Opened(peer));
                let mut conn = Connection::new(stream, T);
                let mut served = 0;
                let end = loop {
                    let _ = tx.send(Event::Waiting(peer, served));
                    let header = tokio::select! {
                        biased;
                        h = conn.read_header(Duration::from_secs(60)) => Some(h),
                        _ = idle_end.recv() => None,
                    };
                    let header = match header {
                        None if idle_end.is_shutdown() => break End::Shutdown,
                        None => break End::Evicted,
                        Some(Ok(Some(h))) => h,
                        Some(Ok(None)) => break End::PeerClosed,
                        Some(Err(_)) => break End::Error,
                    };
                    match header.cmd {
                        SLOW => {
                            let _ = tx.send(Event::Busy(peer));
                            gate.acquire().await.unwrap().forget();
                        }
                        PIN => idle_end.pin(),
                        _ => {}
                    }
                    if conn.reply(0, &[]).await.is_err() {
                        break End::Error;
                    }
                    served += 1;
                };
                let _ = tx.send(Event::Ended(peer, end));
            }
        },
    ));
    Harness {
        addr,
        trigger,
        server,
        events,
        log: Vec::new(),
        gate,
    }
}

impl Harness {
    /// Waits for `want` (or finds it among the events seen already).
    async fn wait_for(&mut self, want: Event) {
        if self.log.contains(&want) {
            return;
        }
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let e = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => e,
                Ok(None) => panic!("no {want:?}: every handler is gone; saw {:?}", self.log),
                Err(_) => panic!("no {want:?} within {T:?}; saw {:?}", self.log),
            };
            self.log.push(e);
            if e == want {
                return;
            }
        }
    }

    /// Every event reported so far.
    fn seen(&mut self) -> &[Event] {
        while let Ok(e) = self.events.try_recv() {
            self.log.push(e);
        }
        &self.log
    }

    fn ended(&mut self, peer: SocketAddr) -> bool {
        self.seen()
            .iter()
            .any(|e| matches!(e, Event::Ended(p, _) if *p == peer))
    }

    fn opened(&mut self, peer: SocketAddr) -> bool {
        self.seen().contains(&Event::Opened(peer))
    }

    /// A client from 127.0.0.1, with its address as the server sees it.
    async fn client(&self) -> (Connection, SocketAddr) {
        self.client_from(None).await
    }

    async fn client_from(&self, bind: Option<IpAddr>) -> (Connection, SocketAddr) {
        let c = Connection::connect(self.addr, bind, T, T).await.unwrap();
        let me = c.local_addr().unwrap();
        (c, me)
    }

    /// A client that has made one round trip and whose handler waits for more.
    async fn idle_client(&mut self) -> (Connection, SocketAddr) {
        let (mut c, me) = self.client().await;
        c.call(&ActiveTest).await.unwrap();
        self.wait_for(Event::Waiting(me, 1)).await;
        (c, me)
    }
}

/// Waits until the server has closed `c`: EOF (or a reset) instead of a reply.
async fn assert_closed(c: &mut Connection) {
    match c.read_header(T).await {
        Ok(None) => {}
        Ok(Some(h)) => panic!("expected the server to close, got {h:?}"),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }
}

async fn ping(c: &mut Connection) {
    tokio::time::timeout(T, c.call(&ActiveTest))
        .await
        .expect("no answer")
        .unwrap();
}

/// Starts a SLOW request on `c` and waits until its handler is serving it.
async fn start_slow(h: &mut Harness, c: &mut Connection, me: SocketAddr) {
    c.send(Header::request(SLOW, 0), &[]).await.unwrap();
    h.wait_for(Event::Busy(me)).await;
}

/// Reads the reply to a SLOW request once the gate has let it through.
async fn finish_slow(c: &mut Connection) {
    let len = tokio::time::timeout(T, c.read_reply_header(0))
        .await
        .expect("no reply to the slow request")
        .unwrap();
    assert_eq!(len, 0);
}

#[tokio::test]
async fn full_server_closes_the_longest_idle_connection_for_a_new_client() {
    let mut h = start(2, AllowHosts::default(), T);
    let (mut a, pa) = h.idle_client().await;
    tokio::time::sleep(APART).await;
    let (mut b, pb) = h.idle_client().await;

    // A third client is served: A, idle the longest, makes room.
    let (mut c, pc) = h.client().await;
    ping(&mut c).await;
    h.wait_for(Event::Ended(pa, End::Evicted)).await;
    assert_closed(&mut a).await;
    assert!(!h.ended(pb), "{:?}", h.seen());
    ping(&mut b).await;

    // Idleness counts from the last request: once B has asked again, after C went
    // idle, C is the longest idle and goes for the next client.
    h.wait_for(Event::Waiting(pb, 2)).await;
    h.wait_for(Event::Waiting(pc, 1)).await;
    tokio::time::sleep(APART).await;
    ping(&mut b).await;
    h.wait_for(Event::Waiting(pb, 3)).await;
    let (mut d, _) = h.client().await;
    ping(&mut d).await;
    h.wait_for(Event::Ended(pc, End::Evicted)).await;
    assert_closed(&mut c).await;
    ping(&mut b).await;
    ping(&mut d).await;
}

#[tokio::test]
async fn a_connection_in_the_middle_of_a_request_is_never_evicted() {
    let mut h = start(2, AllowHosts::default(), T);
    // A goes idle first, so it would be the one to go if it were still idle.
    let (mut a, pa) = h.idle_client().await;
    tokio::time::sleep(APART).await;
    let (mut b, pb) = h.idle_client().await;
    start_slow(&mut h, &mut a, pa).await;

    let (mut c, pc) = h.client().await;
    ping(&mut c).await;
    h.wait_for(Event::Ended(pb, End::Evicted)).await;
    assert_closed(&mut b).await;
    assert!(!h.ended(pa), "{:?}", h.seen());

    // Both connections busy: a new client is closed at once (no wait for a slot).
    start_slow(&mut h, &mut c, pc).await;
    let started = Instant::now();
    let (mut d, pd) = h.client().await;
    assert_closed(&mut d).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "refusing took {:?}",
        started.elapsed()
    );
    assert!(!h.opened(pd), "{:?}", h.seen());

    // The busy requests finish normally and their connections go on.
    h.gate.add_permits(2);
    finish_slow(&mut a).await;
    finish_slow(&mut c).await;
    ping(&mut a).await;
    ping(&mut c).await;
    assert!(!h.ended(pa) && !h.ended(pc), "{:?}", h.seen());
}

#[tokio::test]
async fn a_pinned_connection_is_never_evicted() {
    let mut h = start(2, AllowHosts::default(), T);
    // A is pinned and idle the longest.
    let (mut a, pa) = h.client().await;
    a.request(PIN, &[]).await.unwrap();
    h.wait_for(Event::Waiting(pa, 1)).await;
    tokio::time::sleep(APART).await;
    let (mut b, pb) = h.idle_client().await;

    // B goes instead of A.
    let (mut c, pc) = h.client().await;
    ping(&mut c).await;
    h.wait_for(Event::Ended(pb, End::Evicted)).await;
    assert_closed(&mut b).await;

    // With every connection pinned, none can go: the new client is closed at once.
    c.request(PIN, &[]).await.unwrap();
    h.wait_for(Event::Waiting(pc, 2)).await;
    let started = Instant::now();
    let (mut d, pd) = h.client().await;
    assert_closed(&mut d).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "refusing took {:?}",
        started.elapsed()
    );
    assert!(!h.opened(pd), "{:?}", h.seen());
    ping(&mut a).await;
    ping(&mut c).await;
    assert!(!h.ended(pa) && !h.ended(pc), "{:?}", h.seen());
}

#[tokio::test]
async fn an_address_outside_allow_hosts_is_closed_unread() {
    let allow = AllowHosts::parse(["127.0.0.1"]).unwrap();
    let mut h = start(2, allow, T);
    // 127.0.0.2 is loopback too (all of 127/8 is, on Linux), but not allowed.
    let (mut refused, pr) = h
        .client_from(Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))))
        .await;
    assert_eq!(pr.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    assert_closed(&mut refused).await;
    // The loop takes connections in order: once the next client's handler has run,
    // the refused one's would have too, had it been handed over.
    let (mut ok, pok) = h.client().await;
    ping(&mut ok).await;
    h.wait_for(Event::Opened(pok)).await;
    assert!(!h.opened(pr), "{:?}", h.seen());

    // A request sent by a refused client gets no answer either.
    let (mut refused, pr) = h
        .client_from(Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))))
        .await;
    let e = tokio::time::timeout(T, refused.call(&ActiveTest))
        .await
        .expect("the refused connection was not closed")
        .unwrap_err();
    assert!(matches!(e, fdfs_runtime::Error::Io(_)), "{e:?}");
    ping(&mut ok).await;
    assert!(!h.opened(pr), "{:?}", h.seen());
    // A refused client does not take a slot: two more allowed clients fit.
    let (mut ok2, _) = h.client().await;
    ping(&mut ok2).await;
    assert!(!h.ended(pok), "{:?}", h.seen());
}

#[tokio::test]
async fn stop_lets_the_request_in_flight_finish_and_ends_idle_connections() {
    let drain = Duration::from_secs(30);
    let mut h = start(4, AllowHosts::default(), drain);
    let (mut a, pa) = h.idle_client().await;
    let (mut b, pb) = h.idle_client().await;
    start_slow(&mut h, &mut a, pa).await;

    let stopped = Instant::now();
    h.trigger.trigger();
    // The idle connection ends at once.
    h.wait_for(Event::Ended(pb, End::Shutdown)).await;
    assert_closed(&mut b).await;
    // The listener is closed: new clients are refused by the kernel.
    let deadline = Instant::now() + T;
    loop {
        match TcpStream::connect(h.addr).await {
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
                break;
            }
            Ok(_) => assert!(Instant::now() < deadline, "the listener stays open"),
        }
        tokio::task::yield_now().await;
    }
    // The busy one is still served: the loop waits for it.
    assert!(!h.server.is_finished());
    assert!(!h.ended(pa), "{:?}", h.seen());
    h.gate.add_permits(1);
    finish_slow(&mut a).await;
    // Then it ends too, and the loop returns without waiting for `drain`.
    h.wait_for(Event::Ended(pa, End::Shutdown)).await;
    assert_closed(&mut a).await;
    tokio::time::timeout(T, &mut h.server)
        .await
        .expect("serve_allowed did not return")
        .unwrap();
    assert!(stopped.elapsed() < T, "took {:?}", stopped.elapsed());
}

#[tokio::test]
async fn stop_gives_up_on_a_stuck_request_after_drain() {
    let drain = Duration::from_millis(300);
    let mut h = start(2, AllowHosts::default(), drain);
    let (mut a, pa) = h.client().await;
    start_slow(&mut h, &mut a, pa).await;
    let stopped = Instant::now();
    h.trigger.trigger();
    tokio::time::timeout(T, &mut h.server)
        .await
        .expect("serve_allowed did not return")
        .unwrap();
    let took = stopped.elapsed();
    assert!(took >= drain && took < T, "returned after {took:?}");
}

#[tokio::test]
async fn an_eviction_notice_that_comes_too_late_is_not_kept() {
    let mut h = start(1, AllowHosts::default(), T);
    let (mut a, pa) = h.idle_client().await;
    // Before the runtime runs again: C connects (the kernel completes it at once), then
    // A sends a slow request. The accept loop runs first and asks A, still idle, to make
    // room; A's handler then finds the request and serves it.
    let c = std::net::TcpStream::connect(h.addr).unwrap();
    let slow = Header::request(SLOW, 0).encode();
    assert_eq!(a.stream_mut().try_write(&slow).unwrap(), slow.len());
    h.wait_for(Event::Busy(pa)).await;
    c.set_nonblocking(true).unwrap();
    let mut c = Connection::new(TcpStream::from_std(c).unwrap(), T);
    // A never gave up its slot, so C is closed (after the loop's wait for that slot).
    let c_refused = match tokio::time::timeout(T, c.read_header(T)).await {
        Ok(Ok(None)) => true,
        Ok(Err(e)) => e.kind() == io::ErrorKind::ConnectionReset,
        _ => false,
    };
    h.gate.add_permits(1);
    finish_slow(&mut a).await;
    h.wait_for(Event::Waiting(pa, 2)).await;
    // If C was refused, nobody waits for A's slot: A must stay open.
    if c_refused {
        let a_served = tokio::time::timeout(T, a.call(&ActiveTest))
            .await
            .is_ok_and(|r| r.is_ok());
        assert!(
            a_served,
            "C was refused and A was closed afterwards anyway: {:?}",
            h.seen()
        );
    }
}
