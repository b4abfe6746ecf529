//! `fdfs_runtime::Connection` on loopback, against tiny peers written here: typed and
//! raw round trips, errno replies, the read-ahead buffer serving pipelined requests,
//! queued replies, `body_read`, the reply size limit, the network timeout and QUIT.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fdfs_proto::header::HEADER_LEN;
use fdfs_proto::msg::{ActiveTest, QueryStore, ServerAddr, StoreTarget};
use fdfs_proto::{cmd, errno, Header, IpSize, ProtoError};
use fdfs_runtime::{Connection, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Bound for anything that should happen at once: a failure, not a slow machine.
const T: Duration = Duration::from_secs(5);

/// A connected pair on loopback: (client stream, server stream).
async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
    (c.unwrap(), s.unwrap().0)
}

/// A client `Connection` (made with `Connection::connect`) and the server's raw stream.
async fn client_and_raw_server(network_timeout: Duration) -> (Connection, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(
        Connection::connect(addr, None, T, network_timeout),
        l.accept()
    );
    let c = c.unwrap();
    let (s, peer) = s.unwrap();
    assert_eq!(c.local_addr().unwrap(), peer);
    assert_eq!(c.peer_addr().unwrap(), addr);
    assert_eq!(c.timeout(), network_timeout);
    (c, s)
}

/// Reads one request off a raw stream: (header, body).
async fn read_request(s: &mut TcpStream) -> (Header, Vec<u8>) {
    let mut raw = [0u8; HEADER_LEN];
    timeout(T, s.read_exact(&mut raw)).await.unwrap().unwrap();
    let h = Header::decode(&raw);
    let mut body = vec![0u8; h.pkg_len as usize];
    timeout(T, s.read_exact(&mut body)).await.unwrap().unwrap();
    (h, body)
}

fn frame(h: Header, body: &[u8]) -> Vec<u8> {
    let mut out = h.encode().to_vec();
    out.extend_from_slice(body);
    out
}

fn request_frame(cmd: u8, body: &[u8]) -> Vec<u8> {
    frame(Header::request(cmd, body.len()), body)
}

fn reply_frame(status: u8, body: &[u8]) -> Vec<u8> {
    frame(Header::response(status, body.len() as u64), body)
}

/// Waits until the peer has closed `s` (EOF, or a reset); fails after `T`.
async fn assert_closed(s: &mut TcpStream) {
    let mut b = [0u8; 64];
    match timeout(T, s.read(&mut b))
        .await
        .expect("peer did not close")
    {
        Ok(0) => {}
        Ok(n) => panic!("expected the peer to close, got {n} bytes"),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }
}

fn target() -> StoreTarget {
    StoreTarget {
        group: "group1".into(),
        server: ServerAddr {
            ip: "192.168.0.17".into(),
            port: 23000,
        },
        store_path_index: 3,
    }
}

#[tokio::test]
async fn typed_call_round_trips() {
    let (mut c, mut s) = client_and_raw_server(T).await;
    let server = tokio::spawn(async move {
        // ACTIVE_TEST: empty body, empty reply.
        let (h, body) = read_request(&mut s).await;
        assert_eq!(h, Header::request(cmd::ACTIVE_TEST, 0));
        assert!(body.is_empty());
        s.write_all(&reply_frame(0, &[])).await.unwrap();
        // QUERY_STORE in a group: a 16-byte group body, a 40-byte reply.
        let (h, body) = read_request(&mut s).await;
        assert_eq!(h.cmd, cmd::QUERY_STORE_WITH_GROUP_ONE);
        assert_eq!(h.status, 0);
        assert_eq!(body.len(), 16);
        assert_eq!(&body[..6], b"group1");
        assert!(body[6..].iter().all(|b| *b == 0));
        s.write_all(&reply_frame(0, &target().encode(IpSize::V4)))
            .await
            .unwrap();
        // QUERY_STORE in any group: empty body, answered with the 70-byte (IPv6) form.
        let (h, body) = read_request(&mut s).await;
        assert_eq!(h, Header::request(cmd::QUERY_STORE_WITHOUT_GROUP_ONE, 0));
        assert!(body.is_empty());
        s.write_all(&reply_frame(0, &target().encode(IpSize::V6)))
            .await
            .unwrap();
        s
    });
    c.call(&ActiveTest).await.unwrap();
    let got = c
        .call(&QueryStore {
            group: Some("group1".into()),
        })
        .await
        .unwrap();
    assert_eq!(got, target());
    let got = c.call(&QueryStore { group: None }).await.unwrap();
    assert_eq!(got, target());
    timeout(T, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn raw_request_returns_the_reply_body_and_sends_status_flags() {
    let (mut c, mut s) = client_and_raw_server(T).await;
    let server = tokio::spawn(async move {
        let (h, body) = read_request(&mut s).await;
        assert_eq!(h, Header::request(cmd::ACTIVE_TEST, 3));
        assert_eq!(body, b"abc");
        s.write_all(&reply_frame(0, b"hello world")).await.unwrap();
        let (h, body) = read_request(&mut s).await;
        assert_eq!((h.cmd, h.status, h.pkg_len), (cmd::ACTIVE_TEST, 7, 0));
        assert!(body.is_empty());
        s.write_all(&reply_frame(0, b"")).await.unwrap();
        s
    });
    assert_eq!(
        c.request(cmd::ACTIVE_TEST, b"abc").await.unwrap(),
        b"hello world"
    );
    assert!(c
        .request_with_status(cmd::ACTIVE_TEST, 7, &[])
        .await
        .unwrap()
        .is_empty());
    timeout(T, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn errno_reply_is_a_status_error_and_the_stream_stays_in_step() {
    let (mut c, mut s) = client_and_raw_server(T).await;
    let server = tokio::spawn(async move {
        read_request(&mut s).await;
        s.write_all(&reply_frame(errno::ENOENT, &[])).await.unwrap();
        // An errno reply that (against the rules) carries a body: the client skips it.
        read_request(&mut s).await;
        let mut out = frame(Header::response(errno::EBUSY, 5), b"junk!");
        // The next reply follows in the same write.
        out.extend_from_slice(&reply_frame(0, &target().encode(IpSize::V4)));
        s.write_all(&out).await.unwrap();
        read_request(&mut s).await;
        s
    });
    let e = c.call(&ActiveTest).await.unwrap_err();
    assert!(matches!(e, Error::Status(errno::ENOENT)), "{e:?}");
    assert_eq!(e.errno(), errno::ENOENT);
    let e = c.call(&QueryStore { group: None }).await.unwrap_err();
    assert!(matches!(e, Error::Status(errno::EBUSY)), "{e:?}");
    // The skipped body did not leak into the next reply.
    assert_eq!(c.call(&QueryStore { group: None }).await.unwrap(), target());
    timeout(T, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn malformed_replies_are_errors() {
    let (mut c, mut s) = client_and_raw_server(T).await;
    let server = tokio::spawn(async move {
        // A reply under another command than RESP.
        read_request(&mut s).await;
        s.write_all(&frame(Header::request(cmd::ACTIVE_TEST, 0), &[]))
            .await
            .unwrap();
        // A reply body of the wrong length for a StoreTarget.
        read_request(&mut s).await;
        s.write_all(&reply_frame(0, &[0u8; 39])).await.unwrap();
        // The server closes instead of answering.
        read_request(&mut s).await;
    });
    let e = c.call(&ActiveTest).await.unwrap_err();
    assert!(matches!(e, Error::Other(_)), "{e:?}");
    let e = c.call(&QueryStore { group: None }).await.unwrap_err();
    assert!(matches!(e, Error::Proto(_)), "{e:?}");
    assert_eq!(e.errno(), errno::EINVAL);
    let e = c.call(&ActiveTest).await.unwrap_err();
    match &e {
        Error::Io(io) => assert_eq!(io.kind(), io::ErrorKind::UnexpectedEof),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    timeout(T, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn read_reply_header_refuses_a_body_over_the_limit() {
    let (mut c, mut s) = client_and_raw_server(T).await;
    let server = tokio::spawn(async move {
        s.write_all(&Header::response(0, 1000).encode())
            .await
            .unwrap();
        s.write_all(&Header::response(0, 1000).encode())
            .await
            .unwrap();
        s.write_all(
            &Header {
                pkg_len: -1,
                cmd: cmd::RESP,
                status: 0,
            }
            .encode(),
        )
        .await
        .unwrap();
        // `request` takes replies up to 16 MiB.
        read_request(&mut s).await;
        s.write_all(&Header::response(0, (16 << 20) + 1).encode())
            .await
            .unwrap();
        s
    });
    let e = c.read_reply_header(999).await.unwrap_err();
    assert!(
        matches!(e, Error::Proto(ProtoError::PackageLength(1000))),
        "{e:?}"
    );
    assert_eq!(c.read_reply_header(1000).await.unwrap(), 1000);
    let e = c.read_reply_header(u64::MAX).await.unwrap_err();
    assert!(
        matches!(e, Error::Proto(ProtoError::PackageLength(-1))),
        "{e:?}"
    );
    let e = c.request(cmd::ACTIVE_TEST, &[]).await.unwrap_err();
    assert!(
        matches!(e, Error::Proto(ProtoError::PackageLength(n)) if n == (16 << 20) + 1),
        "{e:?}"
    );
    timeout(T, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn pipelined_requests_are_served_from_one_read() {
    let (mut raw, s) = pair().await;
    let mut conn = Connection::new(s, T);
    let mut burst = request_frame(cmd::ACTIVE_TEST, &[]);
    burst.extend_from_slice(&request_frame(
        cmd::QUERY_STORE_WITH_GROUP_ONE,
        b"0123456789abcdef",
    ));
    burst.extend_from_slice(&request_frame(cmd::QUIT, &[]));
    raw.write_all(&burst).await.unwrap();
    // Wait (without consuming) until the whole burst is in the kernel's buffer, so the
    // connection's first read takes all of it.
    let deadline = Instant::now() + T;
    let mut peek = vec![0u8; burst.len() + 1];
    loop {
        let n = conn.stream_mut().peek(&mut peek).await.unwrap();
        if n == burst.len() {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} bytes arrived");
        tokio::task::yield_now().await;
    }
    assert!(conn.buffered().is_empty());

    let h = conn.read_header(T).await.unwrap().unwrap();
    assert_eq!(h, Header::request(cmd::ACTIVE_TEST, 0));
    // The rest of the burst was read with the first header.
    assert_eq!(conn.buffered(), &burst[HEADER_LEN..]);

    let h = conn.read_header(T).await.unwrap().unwrap();
    assert_eq!(h, Header::request(cmd::QUERY_STORE_WITH_GROUP_ONE, 16));
    assert_eq!(conn.buffered().len(), 16 + HEADER_LEN);
    assert_eq!(conn.read_body(16).await.unwrap(), b"0123456789abcdef");
    assert_eq!(conn.body_read(), 16);

    let h = conn.read_header(T).await.unwrap().unwrap();
    assert_eq!(h, Header::request(cmd::QUIT, 0));
    assert!(conn.buffered().is_empty());

    // Nothing more was sent: the next read goes to the socket and sees the close.
    drop(raw);
    assert!(conn.read_header(T).await.unwrap().is_none());
}

#[tokio::test]
async fn queued_replies_go_out_before_the_next_read() {
    let (mut raw, s) = pair().await;
    let server = tokio::spawn(async move {
        let mut conn = Connection::new(s, T);
        let h = conn.read_header(T).await.unwrap().unwrap();
        assert_eq!(h.cmd, cmd::ACTIVE_TEST);
        conn.queue_reply(0, b"one");
        assert_eq!(conn.queued(), HEADER_LEN + 3);
        // An errno reply is queued without its body.
        conn.queue_reply(errno::EINVAL, b"ignored");
        assert_eq!(conn.queued(), 2 * HEADER_LEN + 3);
        // The client sends its next request only after it has both replies: this
        // read must write them first, or both sides wait for ever.
        let h = conn.read_header(T).await.unwrap().unwrap();
        assert_eq!(conn.queued(), 0);
        assert_eq!(h.cmd, cmd::QUERY_STORE_WITH_GROUP_ONE);
        // Queued output goes before a direct reply, in order.
        conn.queue_reply(0, b"two");
        conn.reply(0, b"three").await.unwrap();
        assert_eq!(conn.queued(), 0);
        // And at an explicit flush.
        conn.queue_reply(errno::ENOENT, &[]);
        conn.flush().await.unwrap();
        assert_eq!(conn.queued(), 0);
        assert!(conn.read_header(T).await.unwrap().is_none());
    });
    raw.write_all(&request_frame(cmd::ACTIVE_TEST, &[]))
        .await
        .unwrap();
    let mut expect = reply_frame(0, b"one");
    expect.extend_from_slice(&reply_frame(errno::EINVAL, &[]));
    let mut got = vec![0u8; expect.len()];
    timeout(T, raw.read_exact(&mut got))
        .await
        .expect("queued replies were not flushed before the read")
        .unwrap();
    assert_eq!(got, expect);

    raw.write_all(&request_frame(cmd::QUERY_STORE_WITH_GROUP_ONE, &[]))
        .await
        .unwrap();
    let mut expect = reply_frame(0, b"two");
    expect.extend_from_slice(&reply_frame(0, b"three"));
    expect.extend_from_slice(&reply_frame(errno::ENOENT, &[]));
    let mut got = vec![0u8; expect.len()];
    timeout(T, raw.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, expect);
    drop(raw);
    timeout(T, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn body_read_counts_what_the_handler_consumed() {
    let (mut raw, s) = pair().await;
    // A small body, then a big one (bigger than the read-ahead buffer, so part of it is
    // read straight into the caller's buffer), then a header without a body.
    let small: Vec<u8> = (0..100u8).collect();
    let big: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
    let mut all = request_frame(cmd::ACTIVE_TEST, &small);
    all.extend_from_slice(&request_frame(cmd::ACTIVE_TEST, &big));
    all.extend_from_slice(&request_frame(cmd::QUIT, &[]));
    let writer = tokio::spawn(async move {
        raw.write_all(&all).await.unwrap();
        raw
    });
    let mut conn = Connection::new(s, T);

    let h = conn.read_header(T).await.unwrap().unwrap();
    assert_eq!(h.pkg_len, 100);
    assert_eq!(conn.body_read(), 0);
    let mut part = [0u8; 30];
    conn.read_exact(&mut part).await.unwrap();
    assert_eq!(&part[..], &small[..30]);
    assert_eq!(conn.body_read(), 30);
    let mut some = [0u8; 20];
    let n = conn.read_some(&mut some).await.unwrap();
    assert!(n > 0 && n <= 20);
    assert_eq!(&some[..n], &small[30..30 + n]);
    assert_eq!(conn.body_read(), 30 + n as u64);
    let rest = conn.read_body(70 - n).await.unwrap();
    assert_eq!(&rest[..], &small[30 + n..]);
    assert_eq!(conn.body_read(), 100);

    let h = conn.read_header(T).await.unwrap().unwrap();
    assert_eq!(h.pkg_len, big.len() as i64);
    assert_eq!(conn.body_read(), 0);
    let mut first = vec![0u8; 1000];
    conn.read_exact(&mut first).await.unwrap();
    assert_eq!(conn.body_read(), 1000);
    let rest = conn.read_body(big.len() - 1000).await.unwrap();
    assert_eq!(conn.body_read(), big.len() as u64);
    assert!(first == big[..1000] && rest == big[1000..]);

    let h = conn.read_header(T).await.unwrap().unwrap();
    assert_eq!(h, Header::request(cmd::QUIT, 0));
    assert_eq!(conn.body_read(), 0);
    timeout(T, writer).await.unwrap().unwrap();
}

#[tokio::test]
async fn network_timeout_fires_on_a_silent_peer() {
    let short = Duration::from_millis(200);
    let (mut c, mut s) = client_and_raw_server(short).await;
    let server = tokio::spawn(async move {
        // Takes the request and never answers.
        read_request(&mut s).await;
        // Then half a reply header, and nothing more.
        read_request(&mut s).await;
        s.write_all(&Header::response(0, 0).encode()[..4])
            .await
            .unwrap();
        s
    });
    let start = Instant::now();
    let e = timeout(T, c.call(&ActiveTest))
        .await
        .expect("the network timeout did not fire")
        .unwrap_err();
    let took = start.elapsed();
    match &e {
        Error::Io(io) => assert_eq!(io.kind(), io::ErrorKind::TimedOut, "{io}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(e.errno(), errno::ETIMEDOUT);
    assert!(took >= short && took < T, "timed out after {took:?}");

    let start = Instant::now();
    let e = timeout(T, c.call(&ActiveTest))
        .await
        .expect("the network timeout did not fire")
        .unwrap_err();
    let took = start.elapsed();
    match &e {
        Error::Io(io) => assert_eq!(io.kind(), io::ErrorKind::TimedOut, "{io}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(took >= short && took < T, "timed out after {took:?}");
    let _s = timeout(T, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn idle_wait_and_network_timeout_are_separate() {
    let (mut raw, s) = pair().await;
    let mut conn = Connection::new(s, Duration::from_secs(30));
    // Waiting for a request's first byte is bounded by the idle limit given.
    let start = Instant::now();
    let e = timeout(T, conn.read_header(Duration::from_millis(100)))
        .await
        .expect("the idle limit did not fire")
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert!(start.elapsed() < T);
    // Once a header has begun, its rest is bounded by the network timeout.
    conn.set_timeout(Duration::from_millis(150));
    assert_eq!(conn.timeout(), Duration::from_millis(150));
    raw.write_all(&Header::request(cmd::ACTIVE_TEST, 0).encode()[..3])
        .await
        .unwrap();
    let start = Instant::now();
    let e = timeout(T, conn.read_header(Duration::from_secs(30)))
        .await
        .expect("the network timeout did not fire")
        .unwrap_err();
    let took = start.elapsed();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert!(
        took >= Duration::from_millis(150) && took < T,
        "timed out after {took:?}"
    );
}

#[tokio::test]
async fn peer_closing_between_or_inside_headers() {
    let (raw, s) = pair().await;
    let mut conn = Connection::new(s, T);
    drop(raw);
    assert!(conn.read_header(T).await.unwrap().is_none());

    let (mut raw, s) = pair().await;
    let mut conn = Connection::new(s, T);
    raw.write_all(&Header::request(cmd::ACTIVE_TEST, 0).encode()[..4])
        .await
        .unwrap();
    drop(raw);
    let e = conn.read_header(T).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn quit_sends_quit_and_closes() {
    let (c, mut s) = client_and_raw_server(T).await;
    c.quit().await;
    let (h, body) = read_request(&mut s).await;
    assert_eq!(h, Header::request(cmd::QUIT, 0));
    assert!(body.is_empty());
    assert_closed(&mut s).await;
}
