"""Crash safety: what an acknowledged upload leaves on disk, and how a storage recovers
after `kill -9` (no partial files, a torn binlog tail repaired, replication resumed)."""

import os
import re
import struct
import threading
import zlib

import fdfs_wire as wire
from conftest import start_cluster, stop_cluster
from fdfs_helpers import payload, snapshot_tree, wait_for
from trunk_helpers import TRUNK_EXTRA, slot_of

GIB = 1 << 30
CHUNK = 1 << 20


def data_files(node):
    return {p: size for path in node.store_paths
            for p, size in snapshot_tree(path / "data").items()
            if not os.path.basename(p).startswith(".")}


def blocks_used(node):
    return sum(os.lstat(os.path.join(dp, f)).st_blocks
               for path in node.store_paths for dp, _, fs in os.walk(path) for f in fs)


class BigUpload:
    """Streams a 1 GiB upload (a repeated 1 MiB pattern) on a raw connection."""

    def __init__(self, addr, seed):
        self.addr = addr
        self.chunk = payload(CHUNK, seed)
        self.sent = 0
        self.result = None  # ("ok", file_id) | ("error", text)

    def crc(self):
        c = 0
        for _ in range(GIB // CHUNK):
            c = zlib.crc32(self.chunk, c)
        return c

    def run(self):
        try:
            with wire.Conn(self.addr, 120) as conn:
                body_len = 15 + GIB
                conn.send(wire.header(body_len, wire.S_UPLOAD) +
                          struct.pack(">BQ", 0xFF, GIB) + b"bin".ljust(6, b"\0"))
                for _ in range(GIB // CHUNK):
                    conn.send(self.chunk)
                    self.sent += CHUNK
                st, body = conn.response()
                if st != 0:
                    self.result = ("error", "errno %d" % st)
                else:
                    fid = body[:16].rstrip(b"\0").decode() + "/" + body[16:].decode()
                    self.result = ("ok", fid)
        except (OSError, wire.ProtoError) as e:
            self.result = ("error", repr(e))


def test_kill_9_during_a_1_gib_upload(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "kill9big", store_paths=1)
    try:
        node = c.nodes[0]
        before_files = data_files(node)
        before_blocks = blocks_used(node)
        up = BigUpload(node.addr, 1)
        t = threading.Thread(target=up.run)
        t.start()
        wait_for(lambda: up.sent >= 256 * CHUNK, 120, what="256 MiB of the upload sent")
        node.kill()
        t.join(120)
        assert up.result is not None and up.result[0] == "error", up.result
        # Nothing of the broken upload is visible or takes space, before or after restart.
        assert data_files(node) == before_files
        assert blocks_used(node) < before_blocks + 64 * 2048, "partial upload kept on disk"
        node.daemon.start()
        c.wait_ready()
        assert data_files(node) == before_files
        # The retry succeeds, whole.
        again = BigUpload(node.addr, 1)
        again.run()
        assert again.result[0] == "ok", again.result
        fid = again.result[1]
        st, info = wire.query_file_info(node.addr, fid)
        assert st == 0 and info["size"] == GIB
        assert info["crc32"] == again.crc()
        assert wire.download(node.addr, fid, offset=GIB - 10, count=10) == \
            (0, again.chunk[-10:])
        assert len(data_files(node)) == len(before_files) + 1
    finally:
        stop_cluster(c)


def binlog_path(node):
    sync = node.base / "data" / "sync"
    index = 0
    idx = sync / "binlog_index.dat"
    if idx.exists():
        for line in idx.read_text().splitlines():
            if line.startswith("current_write="):
                index = int(line.split("=", 1)[1])
    return sync / ("binlog.%03d" % index)


def replicated_uploads(src, dst, n, seed):
    """Uploads `n` files to `src` and waits until `dst` has each: -> {file id: data}."""
    files = {}
    for i in range(n):
        data = payload(500 + i, seed + i)
        st, fid = wire.upload(src.addr, data, ext="txt")
        assert st == 0
        files[fid] = data
    for fid, data in files.items():
        wait_for(lambda: wire.download(dst.addr, fid) == (0, data), 30,
                 what="%s on %s" % (fid, dst.ip))
    return files


def test_torn_binlog_tail_is_repaired_and_replication_resumes(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "torn", storages=2, store_paths=1)
    try:
        a, b = c.nodes
        c.wait_active(b)
        files = replicated_uploads(a, b, 20, 100)
        a.kill()
        # A crash in the middle of a record: half a line at the end of the binlog.
        log = binlog_path(a)
        good = log.read_bytes()
        assert good.endswith(b"\n")
        with open(log, "ab") as f:
            f.write(b"1795475304 C M00/00/00/half-a-rec")
        a.daemon.start()
        c.wait_active(a)
        wait_for(lambda: log.read_bytes()[:len(good)] == good and
                 b"half-a-rec" not in log.read_bytes(), 30, what="the torn record removed")
        assert "torn last record" in a.daemon.logs()
        # New changes are logged after the repaired tail and reach the peer.
        replicated_uploads(a, b, 10, 200)
        gone = next(iter(files))
        assert wire.delete(a.addr, gone) == 0
        wait_for(lambda: wire.download(b.addr, gone)[0] == 2, 30, what="delete reached b")
        lines = log.read_bytes().splitlines()
        assert all(len(line.split(b" ")) >= 3 for line in lines), lines[-5:]
        for fid, data in files.items():
            if fid != gone:
                assert wire.download(b.addr, fid) == (0, data)
    finally:
        stop_cluster(c)


def traced(node, action, syscalls, options=()):
    """Runs `action` with strace on the storage, every thread followed: -> the lines it
    wrote (`strace -f`: each starts with the thread's id)."""
    import shutil
    import subprocess

    strace = shutil.which("strace")
    if strace is None:
        if os.environ.get("FDFS_REQUIRE_BINARIES"):
            raise AssertionError("strace is not installed")
        import pytest
        pytest.skip("strace is not installed")
    out = node.base / "calls.strace"
    tracer = subprocess.Popen([strace, "-f", "-qq", *options, "-e", "trace=" + ",".join(syscalls),
                               "-o", str(out), "-p", str(node.daemon.proc.pid)],
                              stderr=subprocess.PIPE, text=True)
    try:
        # strace says nothing with -qq: it is attached once the daemon's threads name it
        # as their tracer.
        def attached():
            tasks = "/proc/%d/task" % node.daemon.proc.pid
            return all("TracerPid:\t%d\n" % tracer.pid in open("%s/%s/status" % (tasks, t)).read()
                       for t in os.listdir(tasks))
        wait_for(attached, 15, what="strace attached to every thread")
        action()
    finally:
        tracer.terminate()
        tracer.wait(15)
    return out.read_text().splitlines()


def flushes_during(node, action, calls=("fsync(", "fdatasync(")):
    """Runs `action` with strace on the storage: -> how many of `calls` it made."""
    lines = traced(node, action, ("fsync", "fdatasync"))
    return sum(1 for line in lines
               if any(line.startswith(c) or (" " + c) in line for c in calls))


def uploads(node, n, size=1000, seed=300, fids=None):
    """-> a function making `n` uploads to `node`, one after the other (their file IDs
    appended to `fids`, when given)."""
    def run():
        for i in range(n):
            st, fid = wire.upload(node.addr, payload(size + i, seed + i), ext="bin")
            assert st == 0
            if fids is not None:
                fids.append(fid)
    return run


def test_fsync_before_reply_flushes_each_upload(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "flush_on", store_paths=1)
    try:
        # Content, directory and binlog: at least two flushes for every upload.
        n = flushes_during(c.nodes[0], uploads(c.nodes[0], 10))
        assert n >= 20, n
    finally:
        stop_cluster(c)


def test_fsync_before_reply_off_flushes_nothing(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "flush_off", store_paths=1,
                      storage_extra="fsync_before_reply = false\n")
    try:
        assert flushes_during(c.nodes[0], uploads(c.nodes[0], 10)) == 0
    finally:
        stop_cluster(c)


def test_fsync_before_reply_flushes_each_replica(tmp_path_factory):
    """A peer flushes every copy it receives (a burst's copies in one task), then the
    directories and its binlog, before it confirms them."""
    c = start_cluster(tmp_path_factory, "flush_replica", store_paths=1, storages=2)
    try:
        source, peer = c.nodes[0], c.nodes[1]
        fids = []

        def upload_and_wait():
            uploads(source, 10, 2000, 400, fids)()
            wait_for(lambda: all(wire.download(peer.addr, f)[0] == 0 for f in fids), 30,
                     what="every file on the peer")

        # One content flush (fdatasync) per copy, and the binlog's; the directories are
        # flushed with fsync.
        n = flushes_during(peer, upload_and_wait, calls=("fdatasync(",))
        assert n >= 11, n
    finally:
        stop_cluster(c)


def completed_flushes(lines):
    """-> [(line index, path)] for every fsync or fdatasync that returned 0 (`strace
    -yy` names the file; a call another thread interrupted ends on its "resumed" line)."""
    started, done = {}, []
    for i, line in enumerate(lines):
        # (strace pads the thread id to the width of the widest seen so far.)
        tid, _, call = line.partition(" ")
        call = call.lstrip()
        m = re.match(r"f(?:data)?sync\(\d+<([^>]*)>", call)
        if m and call.endswith("<unfinished ...>"):
            started[tid] = m.group(1)
        elif m and re.search(r"\)\s*= 0$", call):
            done.append((i, m.group(1)))
        elif re.match(r"<\.\.\. f(?:data)?sync resumed>.*\)\s*= 0$", call) and tid in started:
            done.append((i, started.pop(tid)))
    return done


def test_trunk_uploads_are_flushed_before_their_reply(tmp_path_factory):
    """An upload into a trunk file is answered only once its slot and its binlog record
    are flushed: in the storage's system calls, a flush of its trunk file after the
    slot's header was written and one of the binlog after the record was, both done
    before the file ID goes to the client (the group commit's threads make them)."""
    c = start_cluster(tmp_path_factory, "flush_trunk", store_paths=1,
                      tracker_extra=TRUNK_EXTRA)
    try:
        node = c.nodes[0]

        def into_trunk():
            st, fid = wire.upload(node.addr, payload(300, 1), ext="bin")
            return st == 0 and len(fid.partition("/")[2]) == 60
        wait_for(into_trunk, 60, interval=0.5, what="uploads into trunk files")
        fids = []
        lines = traced(node, uploads(node, 10, 700, 600, fids),
                       ("fsync", "fdatasync", "write", "writev", "pwrite64", "pwritev",
                        "sendto", "sendmsg"),
                       ("-yy", "-s", "256"))
        flushes = completed_flushes(lines)
        binlog = os.path.realpath(binlog_path(node))

        def first(pattern):
            found = [i for i, line in enumerate(lines) if re.match(pattern, line)]
            assert found, ("no system call matches", pattern, lines[-40:])
            return found[0]
        for fid in fids:
            remote = fid.partition("/")[2]
            assert len(remote) == 60, fid
            _, trunk_id, offset, _ = slot_of(fid)
            trunk = os.path.realpath(node.store_paths[0] / "data" / remote[4:6] / remote[7:9]
                                     / ("%06d" % trunk_id))
            # The slot's header (24 bytes at its offset), the record naming the file,
            # and the reply: the file ID written to the client's socket.
            # (A call another thread interrupted ends its line with "<unfinished ...>".)
            header = first(r"\d+\s+pwrite64\(\d+<%s>, .*, 24, %d(\)| <unfinished)"
                           % (re.escape(trunk), offset))
            record = first(r"\d+\s+write\(\d+<%s>, .*%s" % (re.escape(binlog), re.escape(remote)))
            reply = first(r"\d+\s+(write|writev|sendto|sendmsg)\(\d+<(TCP|socket):.*%s"
                          % re.escape(remote))
            assert any(header < i < reply for i, path in flushes if path == trunk), \
                ("no flush of the slot before the reply", fid)
            assert any(record < i < reply for i, path in flushes if path == binlog), \
                ("no flush of the record before the reply", fid)
    finally:
        stop_cluster(c)
