"""Malformed / hostile input over raw sockets to the storage and the tracker.

Every test ends with check_after(): the daemons still serve a normal
upload + download + delete, and the store path holds exactly the files it
held before (no partial upload, no foreign file, nothing deleted outside the
data tree).  Expected errnos follow the protocol reference §1.2: EINVAL 22 for
malformed requests, ENOENT 2 for unknown group/file.  The storage closes the
connection after an EINVAL reply.

These tests use their own cluster so a crash cannot take the other modules
down with it.
"""

import random
import socket
import struct
import threading
import time

import pytest

import fdfs_wire as wire
from conftest import start_cluster, stop_cluster
from fdfs_helpers import payload, snapshot_tree, wait_for

SENTINEL = b"SENTINEL-DO-NOT-SERVE\n"
KNOWN_STORAGE_CMDS = {9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
                      32, 33, 34, 35, 36, 37, 38, 40, 82, 111}
ERR_STATUSES = {wire.EINVAL, wire.ENOENT}


@pytest.fixture(scope="module")
def bc(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "badinput", ip_size="auto", store_paths=1)
    # files the storage must never serve, overwrite or delete
    for p in [c.root / "sentinel.txt", c.store_paths[0] / "sentinel.txt",
              c.store_paths[0] / "data" / "sentinel.txt", c.store_paths[0] / "data" / "00" / "sentinel.txt"]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(SENTINEL)
    # one real file to aim at
    st, fid = wire.upload(c.storage_addr, b"the real file\n", ext="txt")
    assert st == 0, "cannot upload the reference file (status %d)" % st
    c.real_fid = fid
    yield c
    stop_cluster(c)


def tree(c):
    """Everything under the cluster root except the daemons' own base paths
    (logs, binlogs and stat files change on their own)."""
    snap = snapshot_tree(c.root)
    return {k: v for k, v in snap.items()
            if not (k.startswith("tracker/") or k.startswith("storage/") or k.startswith("client/")
                    or k in ("tracker.conf", "storage.conf", "client.conf"))}


@pytest.fixture
def before(bc):
    return tree(bc)


def check_after(c, before_snap, timeout=15.0):
    """The daemons still work and the store holds exactly what it held."""
    c.check_alive()
    st, info = wire.query_store(c.tracker_addr)
    assert st == 0, "tracker no longer answers 101 (status %d)" % st
    data = payload(5000, random.randrange(1 << 30))
    st, fid = wire.upload((info["ip"], info["port"]), data, ext="chk")
    assert st == 0, "normal upload after bad input failed: status %d" % st
    assert wire.download(c.storage_addr, fid) == (0, data)
    assert wire.delete(c.storage_addr, fid) == 0
    assert wire.download(c.storage_addr, c.real_fid) == (0, b"the real file\n")

    def same():
        return tree(c) == before_snap
    try:
        wait_for(same, timeout, interval=0.1, what="store path to match its earlier snapshot")
    except TimeoutError:
        now = tree(c)
        added = sorted(set(now) - set(before_snap))
        removed = sorted(set(before_snap) - set(now))
        changed = sorted(k for k in now if k in before_snap and now[k] != before_snap[k])
        raise AssertionError("store path changed: added %s removed %s size-changed %s"
                             % (added, removed, changed))


def expect_error_and_close(conn, allowed=(wire.EINVAL,), timeout=15.0, must_close=True):
    """Reply must be nothing or one header-only error with an allowed status;
    the storage must then close the connection."""
    data, closed = conn.read_until_closed(timeout)
    if data:
        assert len(data) == 10, "expected a 10-byte header-only reply, got %d bytes: %r" % (len(data), data[:64])
        pkg_len, cmd, status = wire.HEADER.unpack(data)
        assert cmd == 100 and pkg_len == 0, "reply header %r" % ((pkg_len, cmd, status),)
        assert status in allowed, "status %d not in %s" % (status, allowed)
    if must_close:
        assert closed, "server kept the connection open %.0fs after a malformed request" % timeout
    return data


# ================================================================== storage

@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_storage_garbage_header(bc, before, seed):
    r = random.Random(seed)
    while True:
        hdr = bytearray(r.randbytes(10))
        if seed % 2:
            hdr[0] |= 0x80                       # negative pkg_len
        else:
            hdr[0] = (hdr[0] & 0x3F) | 0x10      # huge positive pkg_len (>= 2^60)
        if hdr[8] not in KNOWN_STORAGE_CMDS:
            break
    with wire.Conn(bc.storage_addr) as c:
        c.send(bytes(hdr))
        expect_error_and_close(c)
    check_after(bc, before)


@pytest.mark.parametrize("cmd", [wire.S_UPLOAD, wire.S_DOWNLOAD, wire.S_DELETE, wire.S_SET_META,
                                 wire.S_APPEND, 99])
@pytest.mark.parametrize("pkg_len", [-1, -(1 << 63), -15])
def test_storage_negative_pkg_len(bc, before, cmd, pkg_len):
    with wire.Conn(bc.storage_addr) as c:
        c.send(wire.header(pkg_len, cmd) + b"\0" * 15)
        expect_error_and_close(c)
    check_after(bc, before)


def test_storage_huge_pkg_len_download(bc, before):
    with wire.Conn(bc.storage_addr) as c:
        c.send(wire.header(1 << 62, wire.S_DOWNLOAD) + wire.download_body("group1", bc.real_fid.split("/", 1)[1]))
        data = expect_error_and_close(c)
        assert b"the real file" not in data
    check_after(bc, before)


def test_storage_huge_upload(bc, before):
    size = (1 << 62) - 15
    with wire.Conn(bc.storage_addr) as c:
        c.send(wire.header(1 << 62, wire.S_UPLOAD) + struct.pack(">BQ", 0xFF, size) + b"bin\0\0\0" + b"x" * 4096)
        expect_error_and_close(c, allowed=(wire.EINVAL, 28))
    check_after(bc, before)


@pytest.mark.parametrize("declared,actual", [(100, 50), (50, 100), (0, 10)])
def test_storage_upload_size_mismatch(bc, before, declared, actual):
    """pkg_len must equal 15 + file_size."""
    content = b"y" * actual
    body = struct.pack(">BQ", 0xFF, declared) + b"txt\0\0\0" + content
    with wire.Conn(bc.storage_addr) as c:
        c.send(wire.header(len(body), wire.S_UPLOAD) + body)
        expect_error_and_close(c)
    check_after(bc, before)


@pytest.mark.parametrize("ext", [b"a/b\0\0\0", b"../\0\0\0", b"x y\0\0\0", b"\xff\xfe\0\0\0\0"])
def test_storage_upload_bad_ext(bc, before, ext):
    body = struct.pack(">BQ", 0xFF, 4) + ext + b"data"
    with wire.Conn(bc.storage_addr) as c:
        st, reply = c.request(wire.S_UPLOAD, body)
    assert st == wire.EINVAL, "ext %r accepted (status %d, reply %r)" % (ext, st, reply)
    check_after(bc, before)


def test_storage_truncated_upload_then_close(bc, before):
    total = 200_000
    with wire.Conn(bc.storage_addr) as c:
        c.send(wire.header(15 + total, wire.S_UPLOAD) + struct.pack(">BQ", 0xFF, total) + b"bin\0\0\0")
        c.send(payload(total // 2, 9))
    check_after(bc, before)


def _append_counts(bc):
    """(total, success) append counters the storage last reported to the tracker."""
    with wire.Conn(bc.tracker_addr) as c:
        st, body = c.request(wire.T_LIST_STORAGE, wire.group_field("group1"))
    assert st == 0 and len(body) == 487, (st, len(body))
    # status, rw_mode, id[16], ip[16], src[16], version[8], 10 x i64, then 3 x u32
    # connection counters and the i64 counters; total_append_count is the third.
    off = 2 + 16 + 16 + 16 + 8 + 80 + 12 + 2 * 8
    return struct.unpack(">qq", body[off:off + 16])


def test_storage_truncated_appender_append_then_close(bc, before):
    st, fid = wire.upload(bc.storage_addr, b"appender base", ext="log", cmd=wire.S_UPLOAD_APPENDER)
    assert st == 0
    remote = fid.split("/", 1)[1].encode()
    total0, ok0 = _append_counts(bc)
    with wire.Conn(bc.storage_addr) as c:
        c.send(wire.header(16 + len(remote) + 10_000, wire.S_APPEND)
               + struct.pack(">QQ", len(remote), 10_000) + remote + b"z" * 3000)
    # The storage counts the append as failed once it has seen the connection end;
    # its next heartbeat carries the counters to the tracker.
    wait_for(lambda: _append_counts(bc)[0] > total0, 15, what="failed append to be counted")
    assert _append_counts(bc)[1] == ok0
    st, got = wire.download(bc.storage_addr, fid)
    assert st == 0
    assert got == b"appender base", "partial append left %d extra bytes" % (len(got) - 13)
    assert wire.delete(bc.storage_addr, fid) == 0
    check_after(bc, before)


def test_storage_truncated_request_body(bc, before):
    body = wire.download_body("group1", bc.real_fid.split("/", 1)[1])
    with wire.Conn(bc.storage_addr) as c:
        c.send(wire.header(len(body), wire.S_DOWNLOAD) + body[:20])
    with wire.Conn(bc.storage_addr) as c:
        c.send(wire.header(100, wire.S_DELETE) + b"group1")
    check_after(bc, before)


@pytest.mark.parametrize("cmd", [0, 1, 10, 39, 99, 100, 150, 255])
def test_storage_unknown_command(bc, before, cmd):
    with wire.Conn(bc.storage_addr) as c:
        c.send(wire.header(0, cmd))
        data, closed = c.read_until_closed(15)
    assert data == wire.header(0, 100, wire.EINVAL), "unknown cmd %d: reply %r (want 10-byte EINVAL)" % (cmd, data)
    assert closed, "storage must close the connection after EINVAL"
    check_after(bc, before)


def test_storage_unknown_command_with_body(bc, before):
    with wire.Conn(bc.storage_addr) as c:
        c.send(wire.header(32, 99) + b"\x01" * 32)
        data, closed = c.read_until_closed(15)
    assert data == wire.header(0, 100, wire.EINVAL) and closed, data
    check_after(bc, before)


@pytest.mark.parametrize("group", [b"nosuchgroup", b"A" * 16, b"\xff" * 16, b"", b"group12"])
def test_storage_bad_group(bc, before, group):
    remote = bc.real_fid.split("/", 1)[1].encode()
    g = group[:16].ljust(16, b"\0")
    with wire.Conn(bc.storage_addr) as c:
        st, body = c.request(wire.S_DOWNLOAD, struct.pack(">QQ", 0, 0) + g + remote)
    assert st in ERR_STATUSES and body == b"", "download with group %r: status %d" % (group, st)
    with wire.Conn(bc.storage_addr) as c:
        st, _ = c.request(wire.S_DELETE, g + remote)
    assert st in ERR_STATUSES, "delete with group %r: status %d" % (group, st)
    with wire.Conn(bc.storage_addr) as c:
        st, _ = c.request(wire.S_GET_META, g + remote)
    assert st in ERR_STATUSES
    with wire.Conn(bc.storage_addr) as c:
        st, _ = c.request(wire.S_QUERY_FILE_INFO, g + remote)
    assert st in ERR_STATUSES
    check_after(bc, before)   # includes: the real file is still there


def _pad(name, length=44):
    """Pad a traversal name to the length a real file name has, with './'
    segments right after the first '/' (keeps the path meaning)."""
    head, _, rest = name.partition("/")
    while len(head) + 1 + len(rest) < length:
        rest = "./" + rest
    return head + "/" + rest


TRAVERSAL = [
    "M00/../../etc/passwd",
    _pad("M00/../../etc/passwd"),
    "M00/../../etc/passwd".ljust(44, "\0"),
    "M00/../../../../../../../../../../../../etc/passwd",
    "/etc/passwd",
    _pad("/etc/passwd"),
    "M00//etc/passwd".ljust(44, "\0"),
    "M00/00/00//etc/passwd".ljust(44, "/"),
    "M00/00/00/../../../../../../../../../../../etc/passwd",
    "M00/00/00/../../sentinel.txt",
    _pad("M00/00/00/../../sentinel.txt"),
    "M00/00/00/../../../sentinel.txt",
    _pad("M00/00/00/../../../sentinel.txt"),
    "M00/00/00/../../../../sentinel.txt",
    "M00/00/../sentinel.txt".ljust(44, "\0"),
    "M00/../sentinel.txt",
    _pad("M00/00/00/%2e%2e/%2e%2e/sentinel.txt"),
    "M00\\..\\..\\sentinel.txt".ljust(44, "x"),
    "M00/00/00/....//....//etc/passwd".ljust(44, "/"),
    "../../../../../../etc/passwd",
    "M00/0G/00/" + "A" * 34,
    "M00/00/00/\0/../../../etc/passwd",
    "MFF/00/00/" + "A" * 34,
    "M0/00/00/" + "A" * 35,
]


@pytest.mark.parametrize("name", TRAVERSAL, ids=lambda s: repr(s)[1:-1][:60])
def test_storage_path_traversal(bc, before, name):
    nb = name.encode("latin-1")
    g = wire.group_field("group1")
    # download
    with wire.Conn(bc.storage_addr) as c:
        c.send(wire.header(32 + len(nb), wire.S_DOWNLOAD) + struct.pack(">QQ", 0, 0) + g + nb)
        data, _ = c.read_until_closed(10)
    assert SENTINEL not in data and b"root:" not in data, "storage served %r for %r" % (data[:80], name)
    assert len(data) == 10, "expected a header-only error reply for %r, got %d bytes" % (name, len(data))
    pkg_len, cmd, st = wire.HEADER.unpack(data)
    assert st != 0 and pkg_len == 0, "download %r: status %d pkg_len %d" % (name, st, pkg_len)
    # delete / get meta / file info / set meta must fail and touch nothing
    for cmd_, body in [(wire.S_DELETE, g + nb), (wire.S_GET_META, g + nb), (wire.S_QUERY_FILE_INFO, g + nb),
                       (wire.S_SET_META, struct.pack(">QQ", len(nb), 3) + b"O" + g + nb + b"a\x02b")]:
        with wire.Conn(bc.storage_addr) as c:
            try:
                st, reply = c.request(cmd_, body)
            except wire.ProtoError as e:
                pytest.fail("cmd %d on %r: bad reply framing: %s" % (cmd_, name, e))
        assert st != 0, "cmd %d on %r succeeded (reply %r)" % (cmd_, name, reply[:80])
    # appender ops on traversal names (no group field)
    for cmd_, body in [(wire.S_APPEND, struct.pack(">QQ", len(nb), 4) + nb + b"evil"),
                       (wire.S_TRUNCATE, struct.pack(">QQ", len(nb), 0) + nb),
                       (wire.S_MODIFY, struct.pack(">QQQ", len(nb), 0, 4) + nb + b"evil")]:
        with wire.Conn(bc.storage_addr) as c:
            st, _ = c.request(cmd_, body)
        assert st != 0, "cmd %d on %r succeeded" % (cmd_, name)
    check_after(bc, before)


@pytest.mark.parametrize("prefix,master", [
    (b"/../../../x", None),
    (b"../../x", None),
    (b"_ok", "M00/00/00/../../../sentinel.txt"),
    (b"", None),
])
def test_storage_slave_upload_tricks(bc, before, prefix, master):
    m = (master or bc.real_fid.split("/", 1)[1]).encode()
    content = b"slave!"
    body = (struct.pack(">QQ", len(m), len(content)) + prefix[:16].ljust(16, b"\0") + b"txt\0\0\0" + m + content)
    with wire.Conn(bc.storage_addr) as c:
        st, reply = c.request(wire.S_UPLOAD_SLAVE, body)
    assert st != 0, "slave upload prefix=%r master=%r accepted: %r" % (prefix, master, reply)
    check_after(bc, before)


def test_storage_abandoned_download(bc, before):
    data = payload(8 * 1024 * 1024, 33)
    st, fid = wire.upload(bc.storage_addr, data, ext="big")
    assert st == 0
    remote = fid.split("/", 1)[1]
    for _ in range(3):
        with wire.Conn(bc.storage_addr) as c:
            c.send(wire.header(32 + len(remote), wire.S_DOWNLOAD) + wire.download_body("group1", remote))
            c.recv_exact(10 + 1000)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    assert wire.download(bc.storage_addr, fid) == (0, data)
    assert wire.delete(bc.storage_addr, fid) == 0
    check_after(bc, before)


def test_storage_slow_client(bc, before):
    """A client sends half an upload and stalls: others are served meanwhile;
    after it disconnects no partial file remains."""
    total = 4 * 1024 * 1024
    slow = wire.Conn(bc.storage_addr, timeout=60)
    lazies = []
    try:
        slow.send(wire.header(15 + total, wire.S_UPLOAD) + struct.pack(">BQ", 0xFF, total) + b"bin\0\0\0")
        slow.send(payload(total // 2, 44))
        # a handful of slowloris connections that never finish their header
        for _ in range(8):
            lc = wire.Conn(bc.storage_addr, timeout=30)
            lc.send(b"\0\0\0")
            lazies.append(lc)
        # meanwhile: normal traffic must be served promptly
        for i in range(5):
            t0 = time.monotonic()
            d = payload(100_000, 500 + i)
            st, fid = wire.upload(bc.storage_addr, d, ext="ok", timeout=10)
            assert st == 0
            assert wire.download(bc.storage_addr, fid, timeout=10) == (0, d)
            assert wire.delete(bc.storage_addr, fid, timeout=10) == 0
            assert time.monotonic() - t0 < 10, "storage stalled by a slow client"
        st, _ = wire.query_store(bc.tracker_addr)
        assert st == 0
    finally:
        slow.close()
        for lc in lazies:
            lc.close()
    check_after(bc, before)


def test_storage_many_parallel_bad_clients(bc, before):
    """Bursts of malformed requests from many threads while normal uploads run."""
    errors = []

    def bad(i):
        try:
            with wire.Conn(bc.storage_addr, timeout=15) as c:
                c.send(random.Random(i).randbytes(10 + i % 50))
                c.read_until_closed(10)
        except OSError:
            pass
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=bad, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    d = payload(50_000, 71)
    st, fid = wire.upload(bc.storage_addr, d, ext="par")
    assert st == 0 and wire.download(bc.storage_addr, fid) == (0, d)
    assert wire.delete(bc.storage_addr, fid) == 0
    for t in threads:
        t.join(30)
    assert not errors, errors
    check_after(bc, before)


# ================================================================== tracker

def tracker_still_ok(c):
    st, info = wire.query_store(c.tracker_addr)
    assert st == 0 and info["ip"] == c.storage_ip


def tracker_expect_error(conn, allowed=(wire.EINVAL,), timeout=15.0):
    """Tracker: a header-only error reply, or a close.  (It need not close.)"""
    conn.sock.settimeout(timeout)
    try:
        data = conn.sock.recv(10)
    except socket.timeout:
        pytest.fail("tracker neither answered nor closed within %.0fs" % timeout)
    except ConnectionResetError:
        return None
    if data == b"":
        return None
    while len(data) < 10:
        more = conn.sock.recv(10 - len(data))
        assert more, "short reply %r" % data
        data += more
    pkg_len, cmd, st = wire.HEADER.unpack(data)
    assert cmd == 100 and pkg_len == 0 and st in allowed, (pkg_len, cmd, st)
    return st


@pytest.mark.parametrize("seed", [5, 6])
def test_tracker_garbage_header(bc, before, seed):
    r = random.Random(seed)
    hdr = bytearray(r.randbytes(10))
    hdr[0] |= 0x80
    with wire.Conn(bc.tracker_addr) as c:
        c.send(bytes(hdr))
        tracker_expect_error(c)
    tracker_still_ok(bc)
    check_after(bc, before)


@pytest.mark.parametrize("cmd,pkg_len", [(wire.T_QUERY_FETCH_ONE, -1), (wire.T_QUERY_STORE_WITHOUT_GROUP_ONE, -100),
                                         (wire.T_LIST_STORAGE, -(1 << 63)),
                                         (wire.T_QUERY_FETCH_ONE, 1 << 62), (wire.T_LIST_ALL_GROUPS, 1 << 40)])
def test_tracker_bad_pkg_len(bc, before, cmd, pkg_len):
    with wire.Conn(bc.tracker_addr) as c:
        c.send(wire.header(pkg_len, cmd) + b"group1".ljust(16, b"\0"))
        tracker_expect_error(c)
    tracker_still_ok(bc)
    check_after(bc, before)


def test_tracker_truncated_body_then_close(bc, before):
    for _ in range(5):
        with wire.Conn(bc.tracker_addr) as c:
            c.send(wire.header(60, wire.T_QUERY_FETCH_ONE) + b"group1\0\0")
    with wire.Conn(bc.tracker_addr) as c:
        c.send(wire.header(10, 81) + b"abc")     # half a storage JOIN
    tracker_still_ok(bc)
    check_after(bc, before)


@pytest.mark.parametrize("cmd", [0, 1, 50, 99, 100, 200, 255])
def test_tracker_unknown_command(bc, before, cmd):
    with wire.Conn(bc.tracker_addr) as c:
        c.send(wire.header(0, cmd))
        pkg_len, rcmd, st = c.recv_header()
        assert (pkg_len, rcmd, st) == (0, 100, wire.EINVAL), "unknown cmd %d -> %r" % (cmd, (pkg_len, rcmd, st))
    tracker_still_ok(bc)
    check_after(bc, before)


@pytest.mark.parametrize("cmd", [wire.T_STORAGE_BEAT, 84, 89, 87])
def test_tracker_storage_cmds_without_join(bc, before, cmd):
    """Storage-only commands on a connection that never joined: EACCES (13)."""
    with wire.Conn(bc.tracker_addr) as c:
        c.send(wire.header(0, cmd))
        st = tracker_expect_error(c, allowed=(13, wire.EINVAL))
    assert st in (None, 13, wire.EINVAL)
    tracker_still_ok(bc)
    check_after(bc, before)


@pytest.mark.parametrize("cmd", [wire.T_QUERY_FETCH_ONE, wire.T_QUERY_UPDATE, wire.T_QUERY_FETCH_ALL])
@pytest.mark.parametrize("group", [b"nosuchgroup", b"\xff" * 16])
def test_tracker_bad_group(bc, before, cmd, group):
    remote = bc.real_fid.split("/", 1)[1].encode()
    with wire.Conn(bc.tracker_addr) as c:
        st, body = c.request(cmd, group[:16].ljust(16, b"\0") + remote)
    assert st in ERR_STATUSES and body == b"", "cmd %d group %r -> %d" % (cmd, group, st)
    with wire.Conn(bc.tracker_addr) as c:
        st, body = c.request(wire.T_QUERY_STORE_WITH_GROUP_ONE, group[:16].ljust(16, b"\0"))
    assert st in ERR_STATUSES and body == b""
    tracker_still_ok(bc)
    check_after(bc, before)


@pytest.mark.parametrize("name", [b"short", b"x" * 200, b"M00/../../../../../../../../etc/passwd"])
def test_tracker_bad_filename(bc, before, name):
    with wire.Conn(bc.tracker_addr) as c:
        c.send(wire.header(16 + len(name), wire.T_QUERY_FETCH_ONE) + wire.group_field("group1") + name)
        try:
            pkg_len, cmd, st = c.recv_header()
        except (wire.ProtoError, ConnectionResetError):
            cmd = None            # closing on a bad request is acceptable
    if cmd is not None:
        # a bad name may be rejected (EINVAL/ENOENT) or answered with the
        # group's storage -- never anything else
        assert cmd == 100 and (st in ERR_STATUSES or (st == 0 and pkg_len in (39, 69))), (pkg_len, cmd, st)
    tracker_still_ok(bc)
    check_after(bc, before)


def test_tracker_slow_client(bc, before):
    slow = []
    try:
        for _ in range(10):
            c = wire.Conn(bc.tracker_addr, timeout=30)
            c.send(wire.header(16 + 44, wire.T_QUERY_FETCH_ONE)[:7])
            slow.append(c)
        t0 = time.monotonic()
        for _ in range(5):
            tracker_still_ok(bc)
        assert time.monotonic() - t0 < 10
    finally:
        for c in slow:
            c.close()
    check_after(bc, before)
