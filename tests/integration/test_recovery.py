"""A storage that lost part of its state gets it back from its peer, by itself:

(a) its store path emptied (a replaced disk, base_path kept): it recovers the path's
    files from the peer (26 FETCH_ONE_PATH_BINLOG, then downloads) before it serves;
(b) store path and base_path emptied: it joins as new and the peer copies it everything
    (the peer's old mark for it is dropped);
(c) its binlog lost under its marks: the binlog is rebuilt from the store paths and the
    peer gets what it lacks;
(d) its mark file for the peer lost: replication to the peer starts over;
(e) killed in the middle of a recovery: it goes on where it stopped when restarted;
(f) a store path this storage initialised is missing (an unmounted disk): it refuses
    to start, and recovers onto the disk underneath once the directory is created.
26 FETCH_ONE_PATH_BINLOG is also checked over a raw socket: the reply layout, EINVAL,
and its refusal without the cluster_secret handshake.

Each test uploads files (normal, appenders with appends, metadata), makes the fault,
restarts the storage and, while it comes back, keeps reading every file through the
tracker (query 102, then download from the storage named): no read routed by the
tracker may fail. Then the storage must be ACTIVE, both members must hold the same
files byte for byte, and new uploads must reach both. Polls with deadlines, no sleeps.
"""

import os
import shutil
import struct
import threading
import zlib


import fdfs_wire as wire
from conftest import STATUS_ACTIVE, start_cluster, stop_cluster
from fdfs_helpers import payload, wait_for

DEADLINE = 90.0


# ------------------------------------------------------------------ helpers

def remote_of(fid):
    return fid.partition("/")[2]


def upload(node, data, ext="bin", appender=False):
    cmd = wire.S_UPLOAD_APPENDER if appender else wire.S_UPLOAD
    st, fid = wire.upload(node.addr, data, ext=ext, cmd=cmd)
    assert st == 0, "upload to %s:%d: %d" % (node.ip, node.port, st)
    return fid


def append(node, fid, data):
    r = remote_of(fid).encode()
    with wire.Conn(node.addr, 10) as c:
        st, _ = c.request(wire.S_APPEND, struct.pack(">QQ", len(r), len(data)) + r + data)
    assert st == 0, "append: %d" % st


class Files:
    """What the group must hold: file id -> content."""

    def __init__(self):
        self.data = {}
        self.meta = {}
        self.appenders = set()

    def put(self, node, n, tag, appenders=2, meta=1):
        for i in range(n):
            data = payload(300 + 997 * i + (70_000 if i == 0 else 0), "%s-%d" % (tag, i))
            fid = upload(node, data)
            self.data[fid] = data
            if i < meta:
                assert wire.set_meta(node.addr, fid, {"tag": tag, "i": str(i)}) == 0
                self.meta[fid] = {"tag": tag, "i": str(i)}
        for i in range(appenders):
            first = payload(1000 + i, "%s-app-%d" % (tag, i))
            fid = upload(node, first, appender=True)
            more = payload(500 + i, "%s-app-more-%d" % (tag, i))
            append(node, fid, more)
            self.data[fid] = first + more
            self.appenders.add(fid)


def tree(node):
    """{store path index:relative path: crc32} of every daemon-made file (no dot files)."""
    out = {}
    for i, root in enumerate(node.store_paths):
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                if f.startswith("."):
                    continue
                p = os.path.join(dirpath, f)
                try:
                    with open(p, "rb") as fh:
                        out["%d:%s" % (i, os.path.relpath(p, root))] = zlib.crc32(fh.read())
                except FileNotFoundError:
                    pass
    return out


def local_path(node, fid):
    r = remote_of(fid)
    return os.path.join(node.store_paths[int(r[1:3], 16)], "data", r[4:])


def holds_all(node, files):
    for fid, data in files.data.items():
        try:
            with open(local_path(node, fid), "rb") as fh:
                if fh.read() != data:
                    return False
        except FileNotFoundError:
            return False
    return True


def wait_same(cluster, files, what):
    a, b = cluster.nodes[:2]

    def same():
        ta, tb = tree(a), tree(b)
        return ta == tb and holds_all(a, files) and holds_all(b, files)
    try:
        wait_for(same, DEADLINE, interval=0.2, what=what)
    except TimeoutError:
        ta, tb = tree(a), tree(b)
        only_a = sorted(set(ta) - set(tb))[:10]
        only_b = sorted(set(tb) - set(ta))[:10]
        differ = sorted(k for k in set(ta) & set(tb) if ta[k] != tb[k])[:10]
        raise AssertionError("%s: only on %s %s, only on %s %s, differ %s\n%s" % (
            what, a.ip, only_a, b.ip, only_b, differ, cluster.logs()))
    for fid, meta in files.meta.items():
        for n in (a, b):
            assert wire.get_meta(n.addr, fid) == (0, meta), "metadata of %s on %s" % (fid, n.ip)


def status_of(cluster, node):
    return cluster.storage_status(node)


def wait_not_active(cluster, node):
    wait_for(lambda: status_of(cluster, node) != STATUS_ACTIVE, 30, interval=0.1,
             what="%s:%d no longer ACTIVE" % node.addr)


def wait_active(cluster, node):
    def active():
        if not node.daemon.alive():
            raise AssertionError("storage %s:%d died\n%s" % (node.ip, node.port, cluster.logs()))
        return status_of(cluster, node) == STATUS_ACTIVE
    wait_for(active, DEADLINE, interval=0.1, what="%s:%d ACTIVE" % node.addr)


class Reader(threading.Thread):
    """Reads every file of `files` through the tracker, over and over, until stopped.
    A read the tracker routes must succeed with the right content. The tracker may
    refuse to route (no storage can serve it) an appender whose source is down."""

    def __init__(self, cluster, files, down):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.items = sorted(files.data.items())
        self.appenders = set(files.appenders)
        self.down_ip = down.ip
        self.stop = threading.Event()
        self.passes = 0
        self.reads = 0
        self.failures = []

    def run(self):
        while not self.stop.is_set():
            for fid, data in self.items:
                if self.stop.is_set():
                    break
                self.read(fid, data)
            self.passes += 1

    def read(self, fid, data):
        group, remote = fid.split("/", 1)
        try:
            st, where = wire.query_fetch(self.cluster.tracker_addr, group, remote)
        except OSError as e:
            self.failures.append((fid, "tracker", repr(e)))
            return
        if st != 0:
            src = wire.decode_file_id(fid)["source_ip"]
            if not (fid in self.appenders and src == self.down_ip):
                self.failures.append((fid, "query", st))
            return
        try:
            st, body = wire.download((where["ip"], where["port"]), fid)
        except OSError as e:
            self.failures.append((fid, "%s:%d" % (where["ip"], where["port"]), repr(e)))
            return
        self.reads += 1
        if st != 0 or body != data:
            self.failures.append((fid, "%s:%d" % (where["ip"], where["port"]), st,
                                  len(body or b""), len(data)))

    def finish(self):
        # At least one whole pass after the storage came back.
        seen = self.passes
        wait_for(lambda: self.passes >= seen + 1 or not self.is_alive(), DEADLINE,
                 what="a read pass")
        self.stop.set()
        self.join(30)


def setup_group(tmp_path_factory, name):
    c = start_cluster(tmp_path_factory, name, storages=2)
    files = Files()
    a, b = c.nodes[:2]
    files.put(a, 6, "a")
    files.put(b, 6, "b")
    wait_same(c, files, "initial files on both storages")
    return c, files


def after_recovery(c, files, node, peer, reader):
    wait_active(c, node)
    reader.finish()
    assert not reader.failures, "reads routed by the tracker failed: %s" % reader.failures[:10]
    assert reader.reads > 0
    wait_same(c, files, "every file on both storages after recovery")
    # New uploads reach both.
    files.put(node, 3, "new-on-recovered", appenders=1)
    files.put(peer, 3, "new-on-peer", appenders=1)
    wait_same(c, files, "new uploads on both storages")


def empty_dir(path):
    for entry in os.listdir(path):
        p = os.path.join(path, entry)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.remove(p)


def log_text(node):
    p = node.base / "logs" / "storaged.log"
    out = p.read_text(errors="replace") if p.exists() else ""
    return out + node.daemon.stderr_file.read_text(errors="replace")


# ------------------------------------------------------------------ tests

def test_store_path_emptied(tmp_path_factory):
    """(a) A replaced disk: the store paths are empty, base_path is kept."""
    c, files = setup_group(tmp_path_factory, "rec-disk")
    try:
        peer, node = c.nodes[:2]
        node.daemon.stop()
        wait_not_active(c, node)
        for p in node.store_paths:
            empty_dir(p)
        reader = Reader(c, files, node)
        reader.start()
        node.daemon.start()
        after_recovery(c, files, node, peer, reader)
        text = log_text(node)
        assert "as RECOVERY to tracker" in text, "RECOVERY was not reported"
        assert "recovered from" in text
        for p in node.store_paths:
            left = [f for f in os.listdir(os.path.join(p, "data")) if "recovery" in f]
            assert not left, "recovery files left: %s" % left
    finally:
        stop_cluster(c)


def test_store_path_and_base_path_emptied(tmp_path_factory):
    """(b) Store paths and base_path lost: the storage joins as new and gets everything."""
    c, files = setup_group(tmp_path_factory, "rec-base")
    try:
        peer, node = c.nodes[:2]
        node.daemon.stop()
        wait_not_active(c, node)
        for p in node.store_paths:
            empty_dir(p)
        for entry in os.listdir(node.base):
            if entry.endswith(".stderr"):
                continue
            p = os.path.join(node.base, entry)
            if os.path.isdir(p):
                shutil.rmtree(p)
            else:
                os.remove(p)
        reader = Reader(c, files, node)
        reader.start()
        node.daemon.start()
        after_recovery(c, files, node, peer, reader)
        assert "its replication starts over" in log_text(peer)
    finally:
        stop_cluster(c)


def lose_while_peer_down(tmp_path_factory, name, fault):
    """Files reach the storage while its peer is down; then `fault` hits the stopped
    storage; both come back and the peer must get everything."""
    c, files = setup_group(tmp_path_factory, name)
    try:
        peer, node = c.nodes[:2]
        peer.daemon.stop()
        wait_not_active(c, peer)
        lonely = Files()
        lonely.put(node, 4, "lonely", appenders=1)
        # An appender the peer has already grows while the peer is down: the peer must
        # end with all of it.
        mine = sorted(f for f in files.appenders
                      if wire.decode_file_id(f)["source_ip"] == node.ip)
        assert mine
        more = payload(4321, "grown-while-peer-down")
        append(node, mine[0], more)
        files.data[mine[0]] += more
        node.daemon.stop()
        wait_not_active(c, node)
        fault(node, peer)
        peer.daemon.start()
        wait_active(c, peer)
        reader = Reader(c, files, node)
        reader.start()
        node.daemon.start()
        files.data.update(lonely.data)
        files.meta.update(lonely.meta)
        files.appenders |= lonely.appenders
        after_recovery(c, files, node, peer, reader)
        return node
    finally:
        stop_cluster(c)


def test_binlog_lost(tmp_path_factory):
    """(c) base_path/data/sync/binlog.* removed, marks kept."""
    def fault(node, peer):
        sync = node.base / "data" / "sync"
        gone = [f for f in os.listdir(sync) if f.startswith("binlog.")]
        assert gone
        for f in gone:
            os.remove(sync / f)
        assert (sync / ("%s_%d.mark" % (peer.ip, peer.port))).exists()
    node = lose_while_peer_down(tmp_path_factory, "rec-binlog", fault)
    text = log_text(node)
    assert "past the binlog's end" in text, "no warning about the lost binlog"
    assert "binlog rebuilt" in text


def test_mark_file_lost(tmp_path_factory):
    """(d) base_path/data/sync/<peer>_<port>.mark removed."""
    def fault(node, peer):
        mark = node.base / "data" / "sync" / ("%s_%d.mark" % (peer.ip, peer.port))
        assert mark.exists()
        os.remove(mark)
    lose_while_peer_down(tmp_path_factory, "rec-mark", fault)


def test_killed_during_recovery_resumes(tmp_path_factory):
    """(e) kill -9 while the files come back; the restart goes on from the saved mark."""
    c = start_cluster(tmp_path_factory, "rec-kill", storages=2)
    try:
        peer, node = c.nodes[:2]
        files = Files()
        files.put(peer, 2, "many", appenders=2, meta=2)
        for i in range(600):
            data = payload(100 + i, "small-%d" % i)
            files.data[upload(peer, data)] = data
        wait_same(c, files, "initial files on both storages")
        node.daemon.stop()
        wait_not_active(c, node)
        for p in node.store_paths:
            empty_dir(p)
        node.daemon.start()
        marks = [os.path.join(p, "data", ".recovery.mark.0") for p in node.store_paths]
        wait_for(lambda: any(os.path.exists(m) for m in marks), DEADLINE, interval=0.005,
                 what="a recovery under way")
        node.kill()
        flags = [os.path.join(p, "data", ".recovery.flag") for p in node.store_paths]
        cut_short = any(os.path.exists(f) for f in flags)
        reader = Reader(c, files, node)
        reader.start()
        node.daemon.start()
        after_recovery(c, files, node, peer, reader)
        if cut_short:
            assert "store path" in log_text(node)
        for p in node.store_paths:
            left = [f for f in os.listdir(os.path.join(p, "data")) if "recovery" in f]
            assert not left, "recovery files left: %s" % left
    finally:
        stop_cluster(c)


def test_missing_store_path_is_refused(tmp_path_factory):
    """(f) A store path directory that is gone (its disk not mounted) stops the start;
    created again (empty), the storage recovers onto it."""
    c, files = setup_group(tmp_path_factory, "rec-unmounted")
    try:
        peer, node = c.nodes[:2]
        node.daemon.stop()
        wait_not_active(c, node)
        gone = node.store_paths[1]
        shutil.rmtree(gone)
        node.daemon.start()
        wait_for(lambda: not node.daemon.alive(), 30, what="the storage refusing to start")
        assert node.daemon.proc.returncode != 0
        assert "is missing" in log_text(node) and "mounted" in log_text(node)
        assert not os.path.exists(gone), "the missing store path was created"
        node.daemon.stderr_fh.close()
        os.mkdir(gone)
        reader = Reader(c, files, node)
        reader.start()
        node.daemon.start()
        after_recovery(c, files, node, peer, reader)
    finally:
        stop_cluster(c)


FETCH_ONE_PATH_BINLOG = 26
INFINITE = 1 << 58


def fetch_list(addr, group, index):
    """-> (status, lines, trailer ok, closed)"""
    body = wire.group_field(group) + bytes([index])
    with wire.Conn(addr, 10) as conn:
        conn.send(wire.header(len(body), FETCH_ONE_PATH_BINLOG) + body)
        pkg_len, cmd, st = conn.recv_header()
        assert cmd == 100
        if st != 0:
            assert pkg_len == 0
            return st, None, None, None
        assert pkg_len == INFINITE, pkg_len
        data, closed = conn.read_until_closed(30)
    assert len(data) >= 8
    lines, trailer = data[:-8], data[-8:]
    return 0, lines, struct.unpack(">Q", trailer)[0] == len(lines), closed


def test_fetch_one_path_binlog_raw(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "rec-raw26")
    try:
        node = c.nodes[0]
        fids = [upload(node, payload(100 + i, "raw26-%d" % i)) for i in range(6)]
        gone = fids.pop()
        assert wire.delete(node.addr, gone) == 0
        by_path = {}
        for f in fids:
            r = remote_of(f)
            by_path.setdefault(int(r[1:3], 16), set()).add(r)
        for index in range(len(node.store_paths)):
            st, lines, trailer_ok, closed = fetch_list(node.addr, "group1", index)
            assert st == 0 and trailer_ok and closed
            names = set()
            for line in lines.decode().splitlines():
                ts, op, name = line.split(" ")[:3]
                assert int(ts) > 0 and op in "CcLl", line
                names.add(name)
            # Every file of the path that exists, no deleted one, none of another path.
            assert names == by_path.get(index, set()), (index, names)
        # A store path it does not have, another group, a short body: EINVAL.
        assert fetch_list(node.addr, "group1", len(node.store_paths))[0] == 22
        assert fetch_list(node.addr, "group9", 0)[0] == 22
        with wire.Conn(node.addr, 10) as conn:
            assert conn.request(FETCH_ONE_PATH_BINLOG, wire.group_field("group1"))[0] == 22
    finally:
        stop_cluster(c)


def test_fetch_one_path_binlog_needs_the_secret(tmp_path_factory):
    line = "cluster_secret = %s\n" % ("s" * 32)
    c = start_cluster(tmp_path_factory, "rec-raw26-secret", store_paths=1,
                      storage_extra=line, tracker_extra=line)
    try:
        node = c.nodes[0]
        upload(node, b"secret list")
        with wire.Conn(node.addr, 10) as conn:
            body = wire.group_field("group1") + b"\0"
            st, _ = conn.request(FETCH_ONE_PATH_BINLOG, body)
            assert st == 13
            data, closed = conn.read_until_closed(10)
            assert closed and data == b""
    finally:
        stop_cluster(c)
