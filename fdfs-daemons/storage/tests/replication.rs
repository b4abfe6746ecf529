//! Replication inside a group, end to end and in seconds: a real tracker and real
//! storages run in this process (each storage on its own loopback IP, as FastDFS tells
//! storages apart by IP), a client changes files on one storage, and the test waits for
//! the peers' copies on disk to become byte-identical. The pytest suites cover the same
//! ground against the binaries but take minutes; these catch a broken replication
//! while one works on it.

mod common;

use common::{eventually, payload, Cluster, Node, GROUP};
use fdfs_client::Error;
use fdfs_proto::errno;
use fdfs_proto::metadata::{Pairs, OP_MERGE, OP_OVERWRITE};
use fdfs_proto::msg::counter::TOTAL_SYNC_IN_BYTES;

/// Name of the metadata file that goes with a remote name.
fn meta_of(remote: &str) -> String {
    format!("{remote}-m")
}

fn pairs(list: &[(&str, &str)]) -> Pairs {
    list.iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// Waits until `peer` holds `remote` with exactly `want`.
async fn wait_copy(peer: &Node, remote: &str, want: &[u8]) {
    let what = format!("{remote} ({} bytes) on {}", want.len(), peer.ip);
    eventually(&what, || peer.read(remote).as_deref() == Some(want)).await;
}

/// Waits until `peer` no longer holds `remote`.
async fn wait_gone(peer: &Node, remote: &str) {
    let what = format!("{remote} gone from {}", peer.ip);
    eventually(&what, || !peer.has(remote)).await;
}

/// Waits until `src`'s saved mark for `peer` points at the end of `src`'s binlog (the
/// peer confirmed everything, and the mark was written); returns the mark.
async fn wait_mark_caught_up(src: &Node, peer: &Node) -> std::collections::HashMap<String, i64> {
    let what = format!("mark of {} for {} at the binlog's end", src.ip, peer.ip);
    eventually(&what, || {
        src.mark_for(peer).is_some_and(|m| {
            m.get("binlog_index") == Some(&0)
                && m.get("binlog_offset") == Some(&(src.binlog_size() as i64))
        })
    })
    .await;
    src.mark_for(peer).unwrap()
}

/// How many records of `node`'s binlog copy `remote` from a peer (lowercase `c`).
fn copies_logged(node: &Node, remote: &str) -> usize {
    node.binlog_lines()
        .iter()
        .filter(|l| {
            let mut f = l.split(' ');
            f.nth(1) == Some("c") && f.next() == Some(remote)
        })
        .count()
}

/// An upload reaches every other storage of the group byte for byte, whatever its
/// size: empty, small (sent inline with its request), just over 64 KiB (streamed), and
/// a slave file. Each copy is logged in the peer's binlog as one applied from a peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_reaches_every_peer() {
    let mut c = Cluster::start("create").await;
    let mut a = c.add_storage().await;
    let mut b = c.add_storage().await;
    let mut d = c.add_storage().await;
    c.wait_active(&[&a, &b, &d]).await;

    let mut files = Vec::new();
    for (i, len) in [0usize, 1, 100, 4096, 64 * 1024, 64 * 1024 + 1, 300_000]
        .into_iter()
        .enumerate()
    {
        let data = payload(len, i as u64);
        files.push((a.upload(&data, "bin").await, data));
    }
    let master = files[2].0.clone();
    let slave_data = payload(777, 99);
    let mut s = a.client().await;
    let slave = s
        .upload_slave_buffer(&master, "_s", "bin", &slave_data)
        .await
        .unwrap()
        .filename;
    s.quit().await;
    files.push((slave, slave_data));

    for peer in [&b, &d] {
        for (name, data) in &files {
            wait_copy(peer, name, data).await;
        }
    }
    for peer in [&b, &d] {
        for (name, data) in &files {
            assert_eq!(&peer.download(name).await.unwrap(), data, "{name}");
            assert_eq!(copies_logged(peer, name), 1, "{name} on {}", peer.ip);
        }
    }
    c.shutdown(&mut [&mut a, &mut b, &mut d]).await;
}

/// A delete on the source removes the peer's copy; a delete made on the peer (any
/// member may take one) removes the source's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_reaches_peer() {
    let mut c = Cluster::start("delete").await;
    let mut a = c.add_storage().await;
    let mut b = c.add_storage().await;
    c.wait_active(&[&a, &b]).await;

    let x = payload(5000, 1);
    let y = payload(70_000, 2);
    let fx = a.upload(&x, "bin").await;
    let fy = a.upload(&y, "bin").await;
    wait_copy(&b, &fx, &x).await;
    wait_copy(&b, &fy, &y).await;

    let mut s = a.client().await;
    s.delete(GROUP, &fx).await.unwrap();
    s.quit().await;
    assert!(!a.has(&fx));
    wait_gone(&b, &fx).await;
    assert!(matches!(
        b.download(&fx).await,
        Err(Error::Status(errno::ENOENT))
    ));

    let mut s = b.client().await;
    s.delete(GROUP, &fy).await.unwrap();
    s.quit().await;
    wait_gone(&a, &fy).await;
    c.shutdown(&mut [&mut a, &mut b]).await;
}

/// Metadata set on the source (overwrite, merge, overwrite with nothing, which removes
/// it) reaches the peer; deleting the file takes the peer's metadata along.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metadata_reaches_peer() {
    let mut c = Cluster::start("metadata").await;
    let mut a = c.add_storage().await;
    let mut b = c.add_storage().await;
    c.wait_active(&[&a, &b]).await;

    let data = payload(1234, 3);
    let f = a.upload(&data, "jpg").await;
    let m = meta_of(&f);
    wait_copy(&b, &f, &data).await;

    let mut s = a.client().await;
    // Each step: the peer's metadata file becomes the source's, and reads the same.
    // The last step keeps the file's size: the copy must replace the peer's all the
    // same (an update, not a create the peer may take for a replay).
    let steps: [(u8, Pairs, Pairs); 4] = [
        (
            OP_OVERWRITE,
            pairs(&[("width", "160"), ("height", "80")]),
            pairs(&[("height", "80"), ("width", "160")]),
        ),
        (
            OP_MERGE,
            pairs(&[("height", "90"), ("color", "red")]),
            pairs(&[("color", "red"), ("height", "90"), ("width", "160")]),
        ),
        (OP_OVERWRITE, pairs(&[("a", "1")]), pairs(&[("a", "1")])),
        (OP_OVERWRITE, pairs(&[("a", "2")]), pairs(&[("a", "2")])),
    ];
    for (op, set, mut want) in steps {
        s.set_metadata(GROUP, &f, op, &set).await.unwrap();
        let on_source = a.read(&m).expect("metadata on the source");
        wait_copy(&b, &m, &on_source).await;
        let mut mb = b.client().await;
        let mut got = mb.get_metadata(GROUP, &f).await.unwrap();
        mb.quit().await;
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }
    // Overwriting with nothing removes the metadata, on both.
    s.set_metadata(GROUP, &f, OP_OVERWRITE, &[]).await.unwrap();
    assert!(!a.has(&m));
    wait_gone(&b, &m).await;
    s.set_metadata(GROUP, &f, OP_OVERWRITE, &pairs(&[("k", "v")]))
        .await
        .unwrap();
    wait_copy(&b, &m, &a.read(&m).unwrap()).await;
    s.delete(GROUP, &f).await.unwrap();
    s.quit().await;
    wait_gone(&b, &f).await;
    wait_gone(&b, &m).await;
    c.shutdown(&mut [&mut a, &mut b]).await;
}

/// Every change to an appender file (append, modify, truncate down and up, a burst of
/// appends, a streamed append over 64 KiB, a modify in the middle) leaves the peer's
/// copy byte-identical to the source's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appender_changes_reach_peer() {
    let mut c = Cluster::start("appender").await;
    let mut a = c.add_storage().await;
    let mut b = c.add_storage().await;
    c.wait_active(&[&a, &b]).await;

    let mut s = a.client().await;
    let f = s
        .upload_appender_buffer(b"hello", "log", 0)
        .await
        .unwrap()
        .filename;
    let mut want = b"hello".to_vec();
    wait_copy(&b, &f, &want).await;

    s.append_buffer(&f, b" world").await.unwrap();
    want.extend_from_slice(b" world");
    wait_copy(&b, &f, &want).await;

    s.modify_buffer(&f, 0, b"HELLO").await.unwrap();
    want[..5].copy_from_slice(b"HELLO");
    wait_copy(&b, &f, &want).await;

    s.truncate(&f, 7).await.unwrap();
    want.truncate(7);
    wait_copy(&b, &f, &want).await;

    s.truncate(&f, 20).await.unwrap();
    want.resize(20, 0);
    wait_copy(&b, &f, &want).await;

    // A burst, not waited for piece by piece: the records are replayed in order.
    for i in 0..20 {
        let piece = payload(1000, 100 + i);
        s.append_buffer(&f, &piece).await.unwrap();
        want.extend_from_slice(&piece);
    }
    let big = payload(100_000, 200);
    s.append_buffer(&f, &big).await.unwrap();
    want.extend_from_slice(&big);
    s.modify_buffer(&f, 10_000, b"in the middle").await.unwrap();
    want[10_000..10_013].copy_from_slice(b"in the middle");
    s.truncate(&f, 90_000).await.unwrap();
    want.truncate(90_000);
    s.append_buffer(&f, b"tail").await.unwrap();
    want.extend_from_slice(b"tail");
    s.quit().await;

    assert_eq!(a.read(&f).unwrap(), want, "the source's own copy");
    wait_copy(&b, &f, &want).await;
    c.shutdown(&mut [&mut a, &mut b]).await;
}

/// 38 REGENERATE_APPENDER_FILENAME (6.x's turning an appender into a normal file, the
/// only rename the protocol has) is replayed as a rename: the peer holds the new name
/// with the content and no longer the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn regenerate_reaches_peer() {
    let mut c = Cluster::start("regenerate").await;
    let mut a = c.add_storage().await;
    let mut b = c.add_storage().await;
    c.wait_active(&[&a, &b]).await;

    let mut s = a.client().await;
    let old = s
        .upload_appender_buffer(&payload(3000, 5), "log", 0)
        .await
        .unwrap()
        .filename;
    s.append_buffer(&old, &payload(2000, 6)).await.unwrap();
    let content = a.read(&old).unwrap();
    wait_copy(&b, &old, &content).await;
    let new = s.regenerate_appender_filename(&old).await.unwrap().filename;
    s.quit().await;
    assert_ne!(new, old);
    assert!(!a.has(&old));
    wait_copy(&b, &new, &content).await;
    wait_gone(&b, &old).await;
    assert_eq!(b.download(&new).await.unwrap(), content);
    c.shutdown(&mut [&mut a, &mut b]).await;
}

/// An appender created, changed and regenerated while the peer is down: when the peer
/// comes back, its create and changes can no longer be sent (the local file has its
/// new name), so the rename carries the whole content. The peer ends with the new name
/// only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn regenerate_while_peer_down_sends_the_file_whole() {
    let mut c = Cluster::start("regenerate-down").await;
    let mut a = c.add_storage().await;
    let mut b = c.add_storage().await;
    c.wait_active(&[&a, &b]).await;

    b.stop().await;
    let mut s = a.client().await;
    let old = s
        .upload_appender_buffer(&payload(3000, 7), "log", 0)
        .await
        .unwrap()
        .filename;
    s.append_buffer(&old, &payload(70_000, 8)).await.unwrap();
    s.modify_buffer(&old, 10, b"changed").await.unwrap();
    let content = a.read(&old).unwrap();
    let new = s.regenerate_appender_filename(&old).await.unwrap().filename;
    s.quit().await;

    b.start().await;
    wait_copy(&b, &new, &content).await;
    wait_mark_caught_up(&a, &b).await;
    assert!(!b.has(&old));
    c.shutdown(&mut [&mut a, &mut b]).await;
}

/// A storage that joins a group holding files gets all of them (the old files are
/// copied by its sync source) before the tracker lists it ACTIVE: files, metadata, an
/// appender with its changes, and not a file deleted before it joined. New uploads then
/// flow both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_member_catches_up() {
    const N: usize = 50;
    let mut c = Cluster::start("catch-up").await;
    let mut a = c.add_storage().await;
    c.wait_active(&[&a]).await;

    let mut files = Vec::new();
    let mut s = a.client().await;
    for i in 0..N {
        let data = payload(100 + i * 997, 1000 + i as u64);
        let f = s.upload_buffer(&data, "dat", 0).await.unwrap().filename;
        files.push((f, data));
    }
    let with_meta = files[0].0.clone();
    s.set_metadata(GROUP, &with_meta, OP_OVERWRITE, &pairs(&[("k", "v")]))
        .await
        .unwrap();
    let (deleted, _) = files.pop().unwrap();
    s.delete(GROUP, &deleted).await.unwrap();
    let app = s
        .upload_appender_buffer(b"appender", "log", 0)
        .await
        .unwrap()
        .filename;
    s.append_buffer(&app, b" grown").await.unwrap();
    s.quit().await;
    files.push((app, b"appender grown".to_vec()));
    files.push((meta_of(&with_meta), a.read(&meta_of(&with_meta)).unwrap()));

    let mut b = c.add_storage().await;
    c.wait_active(&[&a, &b]).await;
    // ACTIVE means caught up: every old file is there already.
    for (name, data) in &files {
        assert_eq!(
            b.read(name).as_ref(),
            Some(data),
            "{name} on the new member"
        );
    }
    assert!(!b.has(&deleted));
    let mark = a
        .mark_for(&b)
        .expect("the source's mark for the new member");
    assert_eq!(mark.get("need_sync_old"), Some(&1), "{mark:?}");
    assert_eq!(mark.get("sync_old_done"), Some(&1), "{mark:?}");

    let data = payload(4321, 77);
    let on_a = a.upload(&data, "dat").await;
    wait_copy(&b, &on_a, &data).await;
    let on_b = b.upload(&data, "dat").await;
    wait_copy(&a, &on_b, &data).await;
    c.shutdown(&mut [&mut a, &mut b]).await;
}

/// A peer stopped and started again on the same base path gets the files uploaded
/// while it was down, and the source goes on from its mark: the files the peer had
/// are not sent again (the mark's count of applied records is exact, the peer received
/// each file's bytes once and logged each copy once).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_peer_resumes_from_the_mark() {
    let mut c = Cluster::start("peer-restart").await;
    let mut a = c.add_storage().await;
    let mut b = c.add_storage().await;
    c.wait_active(&[&a, &b]).await;

    let mut files = Vec::new();
    for i in 0..10 {
        let data = payload(2000 + i * 100, 300 + i as u64);
        files.push((a.upload(&data, "dat").await, data));
    }
    for (name, data) in &files {
        wait_copy(&b, name, data).await;
    }
    let before = wait_mark_caught_up(&a, &b).await;
    assert_eq!(before["sync_row_count"], 10, "{before:?}");

    b.stop().await;
    for i in 0..20 {
        let data = payload(3000 + i * 100, 400 + i as u64);
        files.push((a.upload(&data, "dat").await, data));
    }
    // Nothing was confirmed while the peer was away.
    let during = a.mark_for(&b).unwrap();
    assert_eq!(during["binlog_offset"], before["binlog_offset"]);

    b.start().await;
    for (name, data) in &files {
        wait_copy(&b, name, data).await;
    }
    let after = wait_mark_caught_up(&a, &b).await;
    assert_eq!(after["sync_row_count"], 30, "resent records: {after:?}");
    for (name, _) in &files {
        assert_eq!(copies_logged(&b, name), 1, "{name}");
    }
    // The peer's count of bytes received (kept across its restart), not the source's
    // of bytes sent: a request written to the connection the stopped peer had closed
    // is counted as sent, and rightly sent again.
    let received: usize = files.iter().map(|(_, d)| d.len()).sum();
    c.expect_counter(&b, TOTAL_SYNC_IN_BYTES, received as i64)
        .await;
    c.shutdown(&mut [&mut a, &mut b]).await;
}

/// A source stopped and started again reads its mark and goes on from there: the peer
/// is not sent the files it already has (it received each file's bytes once).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_source_resumes_from_the_mark() {
    let mut c = Cluster::start("source-restart").await;
    let mut a = c.add_storage().await;
    let mut b = c.add_storage().await;
    c.wait_active(&[&a, &b]).await;

    let mut files = Vec::new();
    for i in 0..10 {
        let data = payload(1500 + i * 10, 500 + i as u64);
        files.push((a.upload(&data, "dat").await, data));
    }
    for (name, data) in &files {
        wait_copy(&b, name, data).await;
    }
    wait_mark_caught_up(&a, &b).await;

    a.stop().await;
    a.start().await;
    for i in 0..10 {
        let data = payload(1600 + i * 10, 600 + i as u64);
        files.push((a.upload(&data, "dat").await, data));
    }
    for (name, data) in &files {
        wait_copy(&b, name, data).await;
    }
    let after = wait_mark_caught_up(&a, &b).await;
    assert_eq!(after["sync_row_count"], 20, "resent records: {after:?}");
    for (name, _) in &files {
        assert_eq!(copies_logged(&b, name), 1, "{name}");
    }
    let received: usize = files.iter().map(|(_, d)| d.len()).sum();
    c.expect_counter(&b, TOTAL_SYNC_IN_BYTES, received as i64)
        .await;
    c.shutdown(&mut [&mut a, &mut b]).await;
}
