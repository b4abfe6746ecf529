//! The storage's per-connection loop (`server::handle_connection` and the `Fail`
//! outcomes of its handlers), over raw requests, as upstream C clients rely on it:
//!
//! - a refused request gets its errno and the connection goes on: what the handler left
//!   of the request's body is read and dropped first, so the next request is answered;
//! - an invalid request (EINVAL: a body of the wrong length for its command, an unknown
//!   command) gets its errno, then the connection ends, as upstream's does;
//! - a refused request whose body is too large to read and drop (over `DRAIN_LIMIT`,
//!   1 TiB) is answered, then the connection ends;
//! - requests written back to back are all answered, in order;
//! - QUIT ends the connection;
//! - a client that stalls in a request, or between requests, is dropped after
//!   `network_timeout`.
//!
//! A real tracker and a real storage run in this process (see `common`); the tests talk
//! to the storage with [`Connection`] and hand-built requests, so what is checked is
//! what goes over the wire.

mod common;

use std::io;
use std::time::{Duration, Instant};

use common::{payload, Cluster, Node, DEADLINE, GROUP};
use fdfs_proto::msg::{AppendHead, Download, FileInfoReply, FileRef, SlaveHead, UploadHead};
use fdfs_proto::{cmd, errno, Header};
use fdfs_runtime::Connection;

/// `DRAIN_LIMIT` of `server.rs`: the most of a refused request's body the storage
/// reads and drops to keep the connection.
const DRAIN_LIMIT: u64 = 1 << 40;

/// The `network_timeout` of the storages the timing tests start (the helpers write 10 s).
const SHORT_TIMEOUT: Duration = Duration::from_secs(2);

/// How much earlier than `network_timeout` (as measured here) a drop may come: the
/// storage's clock for it may start a little before ours.
const EARLY: Duration = Duration::from_millis(250);

/// Starts a tracker and one storage, with `network_timeout` set if given, and waits
/// until the tracker lists the storage ACTIVE.
async fn start(name: &str, network_timeout: Option<Duration>) -> (Cluster, Node) {
    let mut c = Cluster::start(name).await;
    let mut node = c.add_storage().await;
    if let Some(t) = network_timeout {
        // The helpers write their own storage.conf; restart on an edited copy of it.
        node.stop().await;
        let conf = node.base.join("storage.conf");
        let text = std::fs::read_to_string(&conf).unwrap();
        let default = "network_timeout = 10\n";
        assert!(text.contains(default), "unexpected storage.conf:\n{text}");
        let edited = text.replace(default, &format!("network_timeout = {}\n", t.as_secs()));
        std::fs::write(&conf, edited).unwrap();
        node.start().await;
    }
    c.wait_active(&[&node]).await;
    (c, node)
}

async fn connect(node: &Node) -> Connection {
    Connection::connect(node.addr(), None, DEADLINE, DEADLINE)
        .await
        .unwrap()
}

/// A header announcing `pkg_len` bytes of body, followed by `sent` (which may be only
/// part of that body, or none of it).
fn announce(command: u8, pkg_len: i64, sent: &[u8]) -> Vec<u8> {
    let header = Header {
        pkg_len,
        cmd: command,
        status: 0,
    };
    [&header.encode()[..], sent].concat()
}

/// A whole request.
fn request(command: u8, body: &[u8]) -> Vec<u8> {
    announce(command, body.len() as i64, body)
}

fn active_test() -> Vec<u8> {
    request(cmd::ACTIVE_TEST, &[])
}

fn file_ref(name: &str) -> Vec<u8> {
    FileRef {
        group: GROUP.into(),
        filename: name.into(),
    }
    .encode()
}

fn query(name: &str) -> Vec<u8> {
    request(cmd::QUERY_FILE_INFO, &file_ref(name))
}

fn delete(name: &str) -> Vec<u8> {
    request(cmd::DELETE_FILE, &file_ref(name))
}

fn download(name: &str) -> Vec<u8> {
    let body = Download {
        offset: 0,
        count: 0,
        group: GROUP.into(),
        filename: name.into(),
    }
    .encode();
    request(cmd::DOWNLOAD_FILE, &body)
}

/// 24 APPEND_FILE of `size` bytes to `appender`, with `content` (the first bytes of
/// them) sent.
fn append(appender: &str, size: u64, content: &[u8]) -> Vec<u8> {
    let head = AppendHead::encode(appender, size);
    let pkg_len = head.len() as u64 + size;
    announce(
        cmd::APPEND_FILE,
        pkg_len as i64,
        &[&head[..], content].concat(),
    )
}

/// 21 UPLOAD_SLAVE_FILE of `size` bytes for `master`, with `content` sent.
fn upload_slave(master: &str, size: u64, content: &[u8]) -> Vec<u8> {
    let head = SlaveHead {
        master_len: master.len(),
        file_size: size,
        prefix: "_s".into(),
        ext: "bin".into(),
    }
    .encode(master);
    let pkg_len = head.len() as u64 + size;
    announce(
        cmd::UPLOAD_SLAVE_FILE,
        pkg_len as i64,
        &[&head[..], content].concat(),
    )
}

/// The 15-byte head of 11 UPLOAD_FILE.
fn upload_head(store_path_index: i8, size: u64, ext: &str) -> Vec<u8> {
    UploadHead {
        store_path_index,
        file_size: size,
        ext: ext.into(),
    }
    .encode()
}

/// `len` bytes of file content that, were they read as requests, would be ACTIVE_TESTs:
/// content the storage failed to skip would be answered.
fn decoy(len: usize) -> Vec<u8> {
    assert_eq!(len % 10, 0);
    active_test().repeat(len / 10)
}

async fn send(conn: &mut Connection, bytes: &[u8]) {
    conn.write_all(bytes).await.unwrap();
}

/// The next reply: its status and body.
async fn reply(conn: &mut Connection, what: &str) -> (u8, Vec<u8>) {
    let header = match conn.read_header(DEADLINE).await {
        Ok(Some(h)) => h,
        Ok(None) => panic!("{what}: the connection closed instead of a reply"),
        Err(e) => panic!("{what}: no reply: {e}"),
    };
    assert_eq!(header.cmd, cmd::RESP, "{what}: reply header {header:?}");
    let len = header
        .body_len(1 << 20)
        .unwrap_or_else(|e| panic!("{what}: reply header {header:?}: {e}"));
    let body = conn
        .read_body(len as usize)
        .await
        .unwrap_or_else(|e| panic!("{what}: reply body: {e}"));
    (header.status, body)
}

/// The next reply, which must carry `status` (an errno reply has no body).
async fn expect_reply(conn: &mut Connection, status: u8, what: &str) -> Vec<u8> {
    let (got, body) = reply(conn, what).await;
    assert_eq!(got, status, "{what}: status");
    if status != 0 {
        assert!(body.is_empty(), "{what}: errno reply with a body");
    }
    body
}

/// An empty success reply (ACTIVE_TEST's).
async fn expect_ok_empty(conn: &mut Connection, what: &str) {
    let body = expect_reply(conn, 0, what).await;
    assert!(body.is_empty(), "{what}: {} bytes of body", body.len());
}

/// The connection ends with no further byte from the storage.
async fn expect_closed(conn: &mut Connection, what: &str) {
    match conn.read_header(DEADLINE).await {
        Ok(None) => {}
        // Closed with input unread: the kernel answers with a reset instead.
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Ok(Some(h)) => panic!("{what}: expected the connection closed, got {h:?}"),
        Err(e) => panic!("{what}: expected the connection closed, got {e}"),
    }
}

/// Files of the storage the tests ask about.
struct Files {
    /// A normal file and its content.
    normal: String,
    data: Vec<u8>,
    /// A normal file uploaded and deleted again.
    missing: String,
    /// An appender file uploaded and deleted again.
    missing_appender: String,
}

async fn files(node: &Node) -> Files {
    let data = payload(1000, 1);
    let normal = node.upload(&data, "bin").await;
    let mut c = node.client().await;
    let missing = node.upload(&payload(10, 2), "bin").await;
    c.delete(GROUP, &missing).await.unwrap();
    let missing_appender = c
        .upload_appender_buffer(&payload(10, 3), "bin", 0)
        .await
        .unwrap()
        .filename;
    c.delete(GROUP, &missing_appender).await.unwrap();
    c.quit().await;
    assert!(!node.has(&missing) && !node.has(&missing_appender));
    Files {
        normal,
        data,
        missing,
        missing_appender,
    }
}

/// The next reply is the QUERY_FILE_INFO answer for a file of `node` holding `data`.
async fn expect_info(conn: &mut Connection, node: &Node, data: &[u8], what: &str) {
    let body = expect_reply(conn, 0, what).await;
    let info = FileInfoReply::decode(&body).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(info.file_size, data.len() as i64, "{what}: size");
    assert_eq!(info.crc32, crc32fast::hash(data), "{what}: crc32");
    assert_eq!(info.source_ip, node.ip.to_string(), "{what}: source");
}

/// The next reply is a download of `data`.
async fn expect_content(conn: &mut Connection, data: &[u8], what: &str) {
    let body = expect_reply(conn, 0, what).await;
    assert!(body == data, "{what}: {} bytes, not the file", body.len());
}

/// Refused requests (ENOENT here) are answered and the connection goes on; a refused
/// request with content has the content read and dropped first (it is made of
/// ACTIVE_TEST requests, which would be answered had it been read as requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_keep_the_connection() {
    let (c, mut node) = start("refused", None).await;
    let f = files(&node).await;
    let mut conn = connect(&node).await;

    send(&mut conn, &download(&f.missing)).await;
    expect_reply(&mut conn, errno::ENOENT, "DOWNLOAD of a missing file").await;
    send(&mut conn, &active_test()).await;
    expect_ok_empty(&mut conn, "ACTIVE_TEST after a refused DOWNLOAD").await;
    send(&mut conn, &query(&f.missing)).await;
    expect_reply(
        &mut conn,
        errno::ENOENT,
        "QUERY_FILE_INFO of a missing file",
    )
    .await;
    send(&mut conn, &delete(&f.missing)).await;
    expect_reply(&mut conn, errno::ENOENT, "DELETE of a missing file").await;
    send(&mut conn, &query(&f.normal)).await;
    expect_info(&mut conn, &node, &f.data, "QUERY_FILE_INFO after refusals").await;

    // More than one chunk (256 KiB) of content to skip.
    let n = 300_000;
    send(&mut conn, &append(&f.missing_appender, n as u64, &decoy(n))).await;
    expect_reply(&mut conn, errno::ENOENT, "APPEND to a missing appender").await;
    send(&mut conn, &query(&f.normal)).await;
    expect_info(
        &mut conn,
        &node,
        &f.data,
        "QUERY_FILE_INFO after a refused APPEND",
    )
    .await;

    send(&mut conn, &upload_slave(&f.missing, n as u64, &decoy(n))).await;
    expect_reply(&mut conn, errno::ENOENT, "UPLOAD_SLAVE of a missing master").await;
    send(&mut conn, &download(&f.normal)).await;
    expect_content(&mut conn, &f.data, "DOWNLOAD after a refused UPLOAD_SLAVE").await;

    // The content went nowhere.
    assert!(!node.has(&f.missing_appender));
    assert_eq!(node.read(&f.normal).as_deref(), Some(&f.data[..]));
    conn.quit().await;
    c.shutdown(&mut [&mut node]).await;
}

/// Requests that cannot be trusted (EINVAL: bodies of the wrong length or content for
/// their command) are answered with EINVAL and end the connection, as upstream does.
/// Each case follows an ACTIVE_TEST in the same write, answered first. Each sends only
/// what the storage reads before it refuses (nothing is left unread, so the storage's
/// close is a clean end of stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_einval_and_the_connection_ends() {
    let (c, mut node) = start("invalid", None).await;
    let f = files(&node).await;
    let cases = [
        (
            "QUERY_FILE_INFO with a 5-byte body",
            request(cmd::QUERY_FILE_INFO, b"group"),
        ),
        (
            "DOWNLOAD with a 20-byte body",
            request(cmd::DOWNLOAD_FILE, &[0; 20]),
        ),
        ("ACTIVE_TEST with a body", request(cmd::ACTIVE_TEST, b"x")),
        (
            "DOWNLOAD announcing 2 TiB of body",
            announce(cmd::DOWNLOAD_FILE, 2 << 40, &[]),
        ),
        (
            "negative package length",
            announce(cmd::ACTIVE_TEST, -1, &[]),
        ),
        (
            "UPLOAD_FILE shorter than its head",
            announce(cmd::UPLOAD_FILE, 10, &[]),
        ),
        (
            "UPLOAD_FILE whose size does not match the package length",
            announce(cmd::UPLOAD_FILE, 15 + 50, &upload_head(0, 100, "bin")),
        ),
        (
            "UPLOAD_FILE to a store path that does not exist",
            announce(cmd::UPLOAD_FILE, 15 + 100, &upload_head(5, 100, "bin")),
        ),
        (
            "UPLOAD_FILE with an invalid ext",
            announce(cmd::UPLOAD_FILE, 15 + 100, &upload_head(0, 100, "a/b")),
        ),
        (
            "APPEND to a file that is no appender",
            append(&f.normal, 100, &[]),
        ),
        (
            // Refused on its fixed head, before the name is read.
            "APPEND whose lengths do not add up",
            announce(
                cmd::APPEND_FILE,
                (AppendHead::LEN + f.missing_appender.len() + 50) as i64,
                &AppendHead::encode(&f.missing_appender, 100)[..AppendHead::LEN],
            ),
        ),
        (
            "QUERY_FILE_INFO of another group",
            request(
                cmd::QUERY_FILE_INFO,
                &FileRef {
                    group: "group9".into(),
                    filename: f.normal.clone(),
                }
                .encode(),
            ),
        ),
    ];
    for (what, bytes) in cases {
        let mut conn = connect(&node).await;
        send(&mut conn, &[active_test(), bytes].concat()).await;
        expect_ok_empty(&mut conn, what).await;
        expect_reply(&mut conn, errno::EINVAL, what).await;
        expect_closed(&mut conn, what).await;
    }
    // None of it harmed the storage.
    let mut conn = connect(&node).await;
    send(&mut conn, &query(&f.normal)).await;
    expect_info(&mut conn, &node, &f.data, "QUERY_FILE_INFO afterwards").await;
    c.shutdown(&mut [&mut node]).await;
}

/// A command the storage does not serve is answered EINVAL and ends the connection,
/// whatever its body (read and dropped when it fits `buff_size`, not read at all when
/// it does not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_commands_get_einval_and_the_connection_ends() {
    let (c, mut node) = start("unknown", None).await;
    let cases = [
        ("command 250", request(250, &[])),
        ("command 250 with a body", request(250, &[7; 100])),
        (
            "command 250 announcing 1 MiB (over buff_size)",
            announce(250, 1 << 20, &[]),
        ),
        (
            "CREATE_LINK (upstream's, not served)",
            request(cmd::CREATE_LINK, &[0; 40]),
        ),
        (
            "a tracker's command",
            request(cmd::QUERY_STORE_WITHOUT_GROUP_ONE, &[]),
        ),
        ("a reply sent as a request", request(cmd::RESP, &[])),
    ];
    for (what, bytes) in cases {
        let mut conn = connect(&node).await;
        send(&mut conn, &[active_test(), bytes].concat()).await;
        expect_ok_empty(&mut conn, what).await;
        expect_reply(&mut conn, errno::EINVAL, what).await;
        expect_closed(&mut conn, what).await;
    }
    let mut conn = connect(&node).await;
    send(&mut conn, &active_test()).await;
    expect_ok_empty(&mut conn, "ACTIVE_TEST afterwards").await;
    c.shutdown(&mut [&mut node]).await;
}

/// A refused request whose body left to skip is over `DRAIN_LIMIT` is answered at
/// once and the connection ends (the body is never waited for); one of exactly
/// `DRAIN_LIMIT` is still to be skipped, so the storage waits for it and, as it never
/// comes, drops the connection after `network_timeout` without an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_the_drain_limit_are_answered_and_the_connection_ends() {
    let (c, mut node) = start("drain-limit", Some(SHORT_TIMEOUT)).await;
    let f = files(&node).await;
    let cases = [
        (
            "APPEND of DRAIN_LIMIT + 1 bytes to a missing appender",
            append(&f.missing_appender, DRAIN_LIMIT + 1, &[]),
            errno::ENOENT,
        ),
        (
            "UPLOAD_SLAVE of 2 TiB for a missing master",
            upload_slave(&f.missing, 2 << 40, &[]),
            errno::ENOENT,
        ),
        (
            // No disk has room for it.
            "UPLOAD_FILE of 8 EiB",
            announce(
                cmd::UPLOAD_FILE,
                i64::MAX,
                &upload_head(-1, i64::MAX as u64 - 15, "bin"),
            ),
            errno::ENOSPC,
        ),
    ];
    for (what, bytes, status) in cases {
        let mut conn = connect(&node).await;
        send(&mut conn, &[active_test(), bytes].concat()).await;
        expect_ok_empty(&mut conn, what).await;
        expect_reply(&mut conn, status, what).await;
        expect_closed(&mut conn, what).await;
    }

    let what = "APPEND of DRAIN_LIMIT bytes to a missing appender";
    let mut conn = connect(&node).await;
    send(&mut conn, &active_test()).await;
    expect_ok_empty(&mut conn, what).await;
    send(&mut conn, &append(&f.missing_appender, DRAIN_LIMIT, &[])).await;
    let t0 = Instant::now();
    expect_closed(&mut conn, what).await;
    let waited = t0.elapsed();
    assert!(
        waited >= SHORT_TIMEOUT - EARLY,
        "{what}: dropped after {waited:?}"
    );

    let mut conn = connect(&node).await;
    send(&mut conn, &query(&f.normal)).await;
    expect_info(&mut conn, &node, &f.data, "QUERY_FILE_INFO afterwards").await;
    c.shutdown(&mut [&mut node]).await;
}

/// Requests written back to back in one write are answered in order, refusals among
/// them included, whether the storage answers each at once or queues the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let (c, mut node) = start("pipelined", None).await;
    let f = files(&node).await;
    // Over 64 KiB: sent with `sendfile` rather than with its header.
    let big = payload(100_000, 4);
    let big_name = node.upload(&big, "bin").await;
    let mut conn = connect(&node).await;

    let burst = [
        active_test(),
        query(&f.normal),
        query(&f.missing),
        download(&f.normal),
        append(&f.missing_appender, 1000, &decoy(1000)),
        active_test(),
        download(&f.missing),
        download(&big_name),
        query(&f.missing),
        query(&big_name),
        delete(&f.missing),
        active_test(),
        query(&f.normal),
    ]
    .concat();
    send(&mut conn, &burst).await;
    expect_ok_empty(&mut conn, "1: ACTIVE_TEST").await;
    expect_info(&mut conn, &node, &f.data, "2: QUERY_FILE_INFO").await;
    expect_reply(&mut conn, errno::ENOENT, "3: QUERY_FILE_INFO, missing").await;
    expect_content(&mut conn, &f.data, "4: DOWNLOAD").await;
    expect_reply(&mut conn, errno::ENOENT, "5: APPEND, missing").await;
    expect_ok_empty(&mut conn, "6: ACTIVE_TEST").await;
    expect_reply(&mut conn, errno::ENOENT, "7: DOWNLOAD, missing").await;
    expect_content(&mut conn, &big, "8: DOWNLOAD, big").await;
    expect_reply(&mut conn, errno::ENOENT, "9: QUERY_FILE_INFO, missing").await;
    expect_info(&mut conn, &node, &big, "10: QUERY_FILE_INFO, big").await;
    expect_reply(&mut conn, errno::ENOENT, "11: DELETE, missing").await;
    expect_ok_empty(&mut conn, "12: ACTIVE_TEST").await;
    expect_info(&mut conn, &node, &f.data, "13: QUERY_FILE_INFO").await;

    // More than the storage reads at once (64 KiB): requests straddle its reads.
    let n = 10_000;
    let mut burst = active_test().repeat(n);
    burst.extend(query(&f.normal));
    send(&mut conn, &burst).await;
    for i in 0..n {
        expect_ok_empty(&mut conn, &format!("ACTIVE_TEST {i} of {n}")).await;
    }
    expect_info(&mut conn, &node, &f.data, "QUERY_FILE_INFO after the burst").await;

    conn.quit().await;
    c.shutdown(&mut [&mut node]).await;
}

/// QUIT ends the connection without an answer; what came before it in the same write
/// is answered first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_ends_the_connection() {
    let (c, mut node) = start("quit", None).await;
    let f = files(&node).await;
    let quit = request(cmd::QUIT, &[]);

    let mut conn = connect(&node).await;
    send(&mut conn, &quit).await;
    expect_closed(&mut conn, "QUIT").await;

    let mut conn = connect(&node).await;
    send(&mut conn, &active_test()).await;
    expect_ok_empty(&mut conn, "ACTIVE_TEST").await;
    send(&mut conn, &[query(&f.normal), active_test(), quit].concat()).await;
    expect_info(&mut conn, &node, &f.data, "QUERY_FILE_INFO before QUIT").await;
    expect_ok_empty(&mut conn, "ACTIVE_TEST before QUIT").await;
    expect_closed(&mut conn, "QUIT after requests").await;

    let mut conn = connect(&node).await;
    send(&mut conn, &active_test()).await;
    expect_ok_empty(&mut conn, "ACTIVE_TEST on a new connection").await;
    c.shutdown(&mut [&mut node]).await;
}

/// A refusal written back to back with a QUIT is answered before the connection ends,
/// as a success is (and as upstream, which answers each request before it reads the
/// next, does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_right_after_a_refusal_keeps_its_answer() {
    let (c, mut node) = start("quit-refused", None).await;
    let f = files(&node).await;
    let mut conn = connect(&node).await;
    send(
        &mut conn,
        &[query(&f.missing), request(cmd::QUIT, &[])].concat(),
    )
    .await;
    expect_reply(
        &mut conn,
        errno::ENOENT,
        "QUERY_FILE_INFO, missing, before QUIT",
    )
    .await;
    expect_closed(&mut conn, "QUIT").await;
    c.shutdown(&mut [&mut node]).await;
}

/// Sends `bytes` on a new connection and waits until the storage closes it without
/// an answer; returns how long that took from the send.
async fn dropped_after(node: &Node, what: &str, bytes: &[u8]) -> Duration {
    let mut conn = connect(node).await;
    let t0 = Instant::now();
    send(&mut conn, bytes).await;
    expect_closed(&mut conn, what).await;
    t0.elapsed()
}

/// A client that stalls, in the middle of a header, of a body, or between requests,
/// is dropped after `network_timeout` without an answer; one that keeps sending
/// requests more often than that is not, however long it stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_are_dropped_after_network_timeout() {
    let (c, mut node) = start("stalled", Some(SHORT_TIMEOUT)).await;
    let f = files(&node).await;
    let q = query(&f.normal);
    // The header and 40 of the 60 bytes of its body.
    let half_body = q.len() - 20;

    let lively = async {
        let mut conn = connect(&node).await;
        let t0 = Instant::now();
        let mut i = 0;
        while t0.elapsed() < SHORT_TIMEOUT * 3 / 2 {
            send(&mut conn, &active_test()).await;
            expect_ok_empty(&mut conn, &format!("ACTIVE_TEST {i} of the lively client")).await;
            tokio::time::sleep(SHORT_TIMEOUT / 3).await;
            i += 1;
        }
        send(&mut conn, &q).await;
        expect_info(
            &mut conn,
            &node,
            &f.data,
            "QUERY_FILE_INFO of the lively client",
        )
        .await;
    };
    let (idle, half_header, half_request, after_request, ()) = tokio::join!(
        dropped_after(&node, "idle", &[]),
        dropped_after(&node, "half a header", &q[..5]),
        dropped_after(&node, "half a request", &q[..half_body]),
        async {
            let mut conn = connect(&node).await;
            send(&mut conn, &active_test()).await;
            expect_ok_empty(&mut conn, "ACTIVE_TEST then idle").await;
            let t0 = Instant::now();
            expect_closed(&mut conn, "idle after a request").await;
            t0.elapsed()
        },
        lively,
    );
    for (what, waited) in [
        ("idle", idle),
        ("half a header", half_header),
        ("half a request", half_request),
        ("idle after a request", after_request),
    ] {
        // The helpers' 10 s would be over the upper bound.
        assert!(
            waited >= SHORT_TIMEOUT - EARLY && waited < SHORT_TIMEOUT + Duration::from_secs(6),
            "{what}: dropped after {waited:?}, network_timeout is {SHORT_TIMEOUT:?}"
        );
    }
    c.shutdown(&mut [&mut node]).await;
}
