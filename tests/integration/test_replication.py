"""Replication inside a group: every change made on one storage reaches the others
(reference §3.6, §5.1, §6).  Each test polls with a deadline, never sleeps blindly."""

import struct
import threading
import time

import pytest

import fdfs_wire as wire
from conftest import STATUS_ACTIVE, start_cluster, stop_cluster
from fdfs_helpers import crc32, payload, wait_for

SYNC_DEADLINE = 30.0


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A group of two storages."""
    c = start_cluster(tmp_path_factory, "pair", storages=2)
    yield c
    stop_cluster(c)


# ------------------------------------------------------------------ helpers

def node_of(cluster, file_id):
    """The storage a file was uploaded to (its source IP is in the name)."""
    src = wire.decode_file_id(file_id)["source_ip"]
    for n in cluster.nodes:
        if n.ip == src:
            return n
    raise AssertionError("no storage %s for %s" % (src, file_id))


def peers_of(cluster, file_id):
    src = node_of(cluster, file_id)
    return [n for n in cluster.nodes if n is not src and n.group == src.group]


def upload_via_tracker(cluster, data, ext="bin"):
    st, target = wire.query_store(cluster.tracker_addr)
    assert st == 0, "query store: %d" % st
    st, fid = wire.upload((target["ip"], target["port"]), data, ext=ext)
    assert st == 0, "upload: %d" % st
    return fid


def download_ok(addr, fid, data):
    st, body = wire.download(addr, fid)
    return st == 0 and body == data


def wait_everywhere(cluster, fid, data, timeout=SYNC_DEADLINE):
    for n in cluster.nodes:
        wait_for(lambda: download_ok(n.addr, fid, data), timeout,
                 what="%s on %s:%d" % (fid, n.ip, n.port))


def wait_gone_everywhere(cluster, fid, timeout=SYNC_DEADLINE):
    for n in cluster.nodes:
        wait_for(lambda: wire.download(n.addr, fid)[0] == wire.ENOENT, timeout,
                 what="%s deleted on %s:%d" % (fid, n.ip, n.port))


def storage_request(addr, cmd, body, status=0):
    with wire.Conn(addr, 10) as c:
        return c.request(cmd, body, status)


def remote_of(fid):
    return fid.partition("/")[2]


def append(addr, fid, data):
    r = remote_of(fid).encode()
    return storage_request(addr, wire.S_APPEND, struct.pack(">QQ", len(r), len(data)) + r + data)[0]


def modify(addr, fid, offset, data):
    r = remote_of(fid).encode()
    body = struct.pack(">QQQ", len(r), offset, len(data)) + r + data
    return storage_request(addr, wire.S_MODIFY, body)[0]


def truncate(addr, fid, size):
    r = remote_of(fid).encode()
    return storage_request(addr, wire.S_TRUNCATE, struct.pack(">QQ", len(r), size) + r)[0]


def regenerate(addr, fid):
    st, body = storage_request(addr, wire.S_REGENERATE, remote_of(fid).encode())
    assert st == 0, "regenerate: %d" % st
    return body[:16].rstrip(b"\0").decode() + "/" + body[16:].decode()


def binlog_lines(node):
    text = ""
    sync_dir = node.base / "data" / "sync"
    for p in sorted(sync_dir.glob("binlog.[0-9][0-9][0-9]")):
        text += p.read_text()
    return text.splitlines()


# ------------------------------------------------------------------ tests

def test_uploads_reach_every_storage(pair):
    files = {}
    for i in range(60):
        data = payload(100 + i * 37, seed=i)
        files[upload_via_tracker(pair, data)] = data
    # Large files are streamed, not sent inline with their request.
    for i, size in enumerate((64 * 1024 + 1, 1536 * 1024 + 7)):
        data = payload(size, seed=7000 + i)
        files[upload_via_tracker(pair, data)] = data
    sources = {node_of(pair, f).ip for f in files}
    assert len(sources) == 2, "uploads went to one storage only: %s" % sources
    for fid, data in files.items():
        wait_everywhere(pair, fid, data)
    # The copies are logged in lowercase with the source's timestamp.
    for fid in files:
        peer = peers_of(pair, fid)[0]
        remote = remote_of(fid)
        assert any(l.endswith(" c " + remote) for l in binlog_lines(peer)), remote


def read_mark(node, peer):
    p = node.base / "data" / "sync" / ("%s_%d.mark" % (peer.ip, peer.port))
    if not p.exists():
        return None
    kv = dict(l.split("=", 1) for l in p.read_text().splitlines() if "=" in l)
    return {k: int(v) for k, v in kv.items()}


def test_mark_files_follow_the_binlog(pair):
    """Once caught up, each storage's mark for its peer points at the end of its binlog
    and holds upstream's keys."""
    data = b"mark me"
    fid = upload_via_tracker(pair, data)
    wait_everywhere(pair, fid, data)
    for node in pair.nodes:
        peer = [n for n in pair.nodes if n is not node][0]
        size = (node.base / "data" / "sync" / "binlog.000").stat().st_size

        def caught_up():
            m = read_mark(node, peer)
            return m and m["binlog_index"] == 0 and m["binlog_offset"] == size
        wait_for(caught_up, SYNC_DEADLINE, what="mark of %s for %s" % (node.ip, peer.ip))
        m = read_mark(node, peer)
        assert set(m) >= {"binlog_index", "binlog_offset", "need_sync_old", "sync_old_done",
                          "until_timestamp", "scan_row_count", "sync_row_count"}
        assert m["sync_old_done"] == 1


def test_delete_reaches_peer(pair):
    data = b"to be deleted"
    fid = upload_via_tracker(pair, data)
    wait_everywhere(pair, fid, data)
    assert wire.delete(node_of(pair, fid).addr, fid) == 0
    wait_gone_everywhere(pair, fid)


def test_replayed_copy_does_not_bring_a_delete_back(pair):
    """The source restarts and resends a create its mark had not saved, after the file
    was deleted through the other member: the copy is ignored, the file stays deleted."""
    data = b"deleted through the peer"
    fid = upload_via_tracker(pair, data)
    wait_everywhere(pair, fid, data)
    src = node_of(pair, fid)
    peer = next(n for n in pair.nodes if n is not src)
    assert wire.delete(peer.addr, fid) == 0
    remote = remote_of(fid)
    created = next(int(l.split()[0]) for l in binlog_lines(src)
                   if l.split()[1:3] == ["C", remote])
    head = struct.pack(">qqi", len(remote), len(data), created) + wire.group_field(pair.group)
    with wire.Conn(peer.addr, 10) as c:
        # As the source's replication stream does: identify, then copy.
        assert c.request(9, src.ip.encode().ljust(16, b"\0"))[0] == 0
        assert c.request(16, head + remote.encode() + data)[0] == 0
    assert wire.download(peer.addr, fid)[0] == 2, "the replayed copy brought the file back"
    wait_gone_everywhere(pair, fid)
    # A copy made after the delete (a name used again) is still accepted.
    with wire.Conn(peer.addr, 10) as c:
        assert c.request(9, src.ip.encode().ljust(16, b"\0"))[0] == 0
        later = struct.pack(">qqi", len(remote), len(data), created + 3600) + \
            wire.group_field(pair.group)
        assert c.request(16, later + remote.encode() + data)[0] == 0
    assert wire.download(peer.addr, fid) == (0, data)


def test_metadata_reaches_peer(pair):
    data = b"with metadata"
    fid = upload_via_tracker(pair, data)
    src = node_of(pair, fid)
    peer = peers_of(pair, fid)[0]
    wait_everywhere(pair, fid, data)
    assert wire.set_meta(src.addr, fid, {"width": "160", "height": "80"}) == 0
    wait_for(lambda: wire.get_meta(peer.addr, fid) == (0, {"width": "160", "height": "80"}),
             SYNC_DEADLINE, what="metadata on the peer")
    assert wire.set_meta(src.addr, fid, {"height": "90", "color": "red"}, flag=b"M") == 0
    want = {"width": "160", "height": "90", "color": "red"}
    wait_for(lambda: wire.get_meta(peer.addr, fid) == (0, want), SYNC_DEADLINE,
             what="merged metadata on the peer")
    assert wire.set_meta(src.addr, fid, {}, flag=b"O") == 0
    wait_for(lambda: wire.get_meta(peer.addr, fid)[0] == wire.ENOENT, SYNC_DEADLINE,
             what="metadata removed on the peer")
    assert wire.set_meta(src.addr, fid, {"a": "1"}) == 0
    wait_for(lambda: wire.get_meta(peer.addr, fid) == (0, {"a": "1"}), SYNC_DEADLINE,
             what="metadata again on the peer")
    # Deleting the file takes its metadata along, on both.
    assert wire.delete(src.addr, fid) == 0
    wait_gone_everywhere(pair, fid)
    wait_for(lambda: wire.get_meta(peer.addr, fid)[0] == wire.ENOENT, SYNC_DEADLINE,
             what="metadata gone on the peer")


def test_appender_changes_reach_peer(pair):
    st, target = wire.query_store(pair.tracker_addr)
    assert st == 0
    src_addr = (target["ip"], target["port"])
    st, fid = wire.upload(src_addr, b"hello", ext="log", cmd=wire.S_UPLOAD_APPENDER)
    assert st == 0
    content = b"hello"
    wait_everywhere(pair, fid, content)
    assert append(src_addr, fid, b" world") == 0
    content += b" world"
    wait_everywhere(pair, fid, content)
    assert modify(src_addr, fid, 0, b"HELLO") == 0
    content = b"HELLO" + content[5:]
    wait_everywhere(pair, fid, content)
    assert truncate(src_addr, fid, 7) == 0
    content = content[:7]
    wait_everywhere(pair, fid, content)
    for i in range(20):
        piece = payload(1000, seed=500 + i)
        assert append(src_addr, fid, piece) == 0
        content += piece
    wait_everywhere(pair, fid, content)
    new_fid = regenerate(src_addr, fid)
    assert new_fid != fid
    wait_everywhere(pair, new_fid, content)
    wait_gone_everywhere(pair, fid)


def test_slave_file_reaches_peer(pair):
    master = upload_via_tracker(pair, b"master", ext="jpg")
    src = node_of(pair, master)
    r = remote_of(master).encode()
    data = b"slave content"
    body = (struct.pack(">QQ", len(r), len(data)) + b"_s".ljust(16, b"\0")
            + b"jpg".ljust(6, b"\0") + r + data)
    st, reply = storage_request(src.addr, wire.S_UPLOAD_SLAVE, body)
    assert st == 0
    slave = reply[:16].rstrip(b"\0").decode() + "/" + reply[16:].decode()
    wait_everywhere(pair, slave, data)


def test_kill_9_during_uploads_then_catch_up(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "kill9", storages=2)
    try:
        a, b = c.nodes
        acked = {}
        lock = threading.Lock()
        stop = threading.Event()
        errors = []

        def uploader(node, seed0):
            i = 0
            while not stop.is_set():
                data = payload(2000 + (i % 50) * 100, seed=seed0 + i)
                i += 1
                try:
                    st, fid = wire.upload(node.addr, data, ext="dat", timeout=5)
                except (OSError, wire.ProtoError):
                    time.sleep(0.01)
                    continue
                if st == 0:
                    with lock:
                        acked[fid] = data
                else:
                    errors.append(st)

        threads = [threading.Thread(target=uploader, args=(n, k * 100000))
                   for k, n in enumerate((a, b, a))]
        for t in threads:
            t.start()
        wait_for(lambda: len(acked) >= 300, 30, what="300 uploads")
        b.kill()
        n_at_kill = len(acked)
        wait_for(lambda: len(acked) >= n_at_kill + 300, 30, what="uploads while b is down")
        b.daemon.start()
        c.wait_active(b, timeout=60)
        wait_for(lambda: len(acked) >= n_at_kill + 600, 30, what="uploads after restart")
        stop.set()
        for t in threads:
            t.join(30)
        assert not errors, "upload errors: %s" % errors[:10]
        files = dict(acked)
        assert any(node_of(c, f) is b for f in files)

        def all_on(node):
            missing = 0
            for fid, data in files.items():
                st, body = wire.download(node.addr, fid)
                if st != 0 or crc32(body) != crc32(data):
                    missing += 1
            return missing == 0 or None
        for n in (a, b):
            wait_for(lambda: all_on(n), 60, interval=0.5,
                     what="all %d acknowledged files on %s" % (len(files), n.ip))
        # The CRC32 in each name matches the content on both storages.
        for fid, data in files.items():
            assert wire.decode_file_id(fid)["crc32"] == crc32(data)
    finally:
        stop_cluster(c)


def test_new_storage_catches_up(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "catchup", storages=1)
    try:
        files = {}
        with wire.Conn(c.storage_addr, 10) as conn:
            for i in range(2000):
                data = payload(64 + i % 500, seed=i)
                st, body = conn.request(wire.S_UPLOAD, wire.upload_body(data, "txt"))
                assert st == 0
                fid = body[:16].rstrip(b"\0").decode() + "/" + body[16:].decode()
                files[fid] = data
        # A metadata file and a delete are part of the old data too.
        some = sorted(files)[:2]
        assert wire.set_meta(c.storage_addr, some[0], {"k": "v"}) == 0
        assert wire.delete(c.storage_addr, some[1]) == 0
        del files[some[1]]

        new = c.add_storage()
        seen = set()

        def active():
            c.check_alive()
            s = c.storage_status(new)
            seen.add(s)
            return s == STATUS_ACTIVE
        wait_for(active, 90, interval=0.05, what="new storage ACTIVE")
        # Every old file is there when it turns ACTIVE.
        for fid, data in files.items():
            st, body = wire.download(new.addr, fid)
            assert st == 0 and body == data, fid
        assert wire.download(new.addr, some[1])[0] == wire.ENOENT
        assert wire.get_meta(new.addr, some[0]) == (0, {"k": "v"})
        # And new uploads keep flowing both ways.
        data = b"after catch-up"
        st, fid = wire.upload(c.storage_addr, data)
        assert st == 0
        wait_for(lambda: download_ok(new.addr, fid, data), SYNC_DEADLINE, what="new file on new")
        st, fid = wire.upload(new.addr, data)
        assert st == 0
        wait_for(lambda: download_ok(c.storage_addr, fid, data), SYNC_DEADLINE,
                 what="new file on old")
    finally:
        stop_cluster(c)


def test_sync_wait_replicas_read_your_writes(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "waitrepl", storages=2,
                      storage_extra="sync_wait_replicas = 1\nsync_wait_timeout_ms = 10000\n")
    try:
        a, b = c.nodes
        for i in range(30):
            src, dst = (a, b) if i % 2 == 0 else (b, a)
            data = payload(3000 + i, seed=900 + i)
            st, fid = wire.upload(src.addr, data)
            assert st == 0
            st, body = wire.download(dst.addr, fid)
            assert (st, body == data) == (0, True), "upload %d not on the peer at once" % i
    finally:
        stop_cluster(c)


def test_burst_drains_quickly(pair):
    """A burst of small uploads on one storage reaches the other soon after the last
    upload is acknowledged (reports the drain time)."""
    a, b = pair.nodes
    n_threads, per_thread = 8, 250
    fids = []
    lock = threading.Lock()

    def burst(seed):
        out = []
        with wire.Conn(a.addr, 10) as conn:
            for i in range(per_thread):
                st, body = conn.request(wire.S_UPLOAD,
                                        wire.upload_body(payload(4096, seed + i), "bin"))
                assert st == 0
                out.append(body[16:].decode())
        with lock:
            fids.extend(out)

    before = sum(1 for l in binlog_lines(b) if " c " in l)
    threads = [threading.Thread(target=burst, args=(k * 10000,)) for k in range(n_threads)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t1 = time.monotonic()
    total = n_threads * per_thread
    assert len(fids) == total
    wait_for(lambda: sum(1 for l in binlog_lines(b) if " c " in l) >= before + total, 60,
             interval=0.01, what="%d copies on the peer" % total)
    t2 = time.monotonic()
    print("\nburst: %d uploads in %.2fs (%.0f/s), drained %.3fs after the last ack"
          % (total, t1 - t0, total / (t1 - t0), t2 - t1))
    assert t2 - t1 < 10
