"""Two real fdfs_trackerd + one fdfs_storaged listing both trackers: one leader, and
uploads keep working with our fdfs_upload_file when the first tracker is down.

Own small fixture (conftest.py's clusters have one tracker): every daemon on its own
random 127.0.0.x; readiness and elections are polled, never slept for."""

import signal
import struct
import subprocess
from pathlib import Path

import pytest

import fdfs_wire as wire
from fdfs_wire import leader_of
from conftest import pick_addr, require_binary
from fdfs_helpers import payload, wait_for


T_GET_STATUS = 64
DEADLINE = 30.0

# Addresses and binaries come from conftest, so every daemon of the session gets its own
# 127.0.0.x across all test modules.
free_addr = pick_addr
exe = require_binary


class Proc:
    def __init__(self, name, conf, base):
        self.exe = exe(name)
        self.conf = conf
        self.base = Path(base)
        self.proc = None
        self.out = None

    def start(self):
        self.out = open(self.base / "stderr.log", "ab")
        self.proc = subprocess.Popen([str(self.exe), str(self.conf), "start", "--foreground"],
                                     stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     cwd=str(self.base))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.out:
            self.out.close()
            self.out = None


class TwoTrackers:
    def __init__(self, root):
        root = Path(root)
        self.trackers = sorted([free_addr(), free_addr()])   # clients try them in this order
        self.storage_addr = free_addr()
        lines = "".join("tracker_server = %s:%d\n" % t for t in self.trackers)
        self.tracker_procs = []
        for i, (ip, port) in enumerate(self.trackers):
            base = root / ("tracker%d" % i)
            base.mkdir(parents=True)
            conf = root / ("tracker%d.conf" % i)
            conf.write_text("bind_addr = %s\nport = %d\nbase_path = %s\n"
                            "reserved_storage_space = 1%%\ncheck_active_interval = 30\n"
                            "connect_timeout = 2\nnetwork_timeout = 20\nlog_level = info\n"
                            % (ip, port, base))
            self.tracker_procs.append(Proc("fdfs_trackerd", conf, base))
        sbase = root / "storage"
        store = root / "store0"
        sbase.mkdir()
        store.mkdir()
        sconf = root / "storage.conf"
        sconf.write_text("group_name = group1\nbind_addr = %s\nclient_bind = true\nport = %d\n"
                         "base_path = %s\nstore_path_count = 1\nstore_path0 = %s\n"
                         "subdir_count_per_path = 4\n%sheart_beat_interval = 1\n"
                         "stat_report_interval = 1\nconnect_timeout = 2\nnetwork_timeout = 20\n"
                         "log_level = info\n"
                         % (self.storage_addr[0], self.storage_addr[1], sbase, store, lines))
        self.storage = Proc("fdfs_storaged", sconf, sbase)
        cbase = root / "client"
        cbase.mkdir()
        self.client_conf = root / "client.conf"
        self.client_conf.write_text("connect_timeout = 2\nnetwork_timeout = 20\n"
                                    "base_path = %s\n%s" % (cbase, lines))

    def stop(self):
        self.storage.stop()
        for t in self.tracker_procs:
            t.stop()


def request(addr, cmd, body=b""):
    with wire.Conn(addr, 5) as c:
        return c.request(cmd, body)


def storage_ready(addr):
    st, _ = request(addr, wire.T_QUERY_STORE_WITHOUT_GROUP_ONE)
    return st == 0


def agreed_leader(addrs, not_=None):
    def agreed():
        seen = [leader_of(a) for a in addrs]
        if seen[0] and seen[0] != not_ and all(s == seen[0] for s in seen):
            return seen[0]
        return None
    return wait_for(agreed, DEADLINE, 0.1, "trackers %s to agree on a leader" % (addrs,))


def run(tool, *args):
    p = subprocess.run([str(exe(tool)), *map(str, args)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, "%s %s -> exit %d\n%s\n%s" % (
        tool, args, p.returncode, p.stdout, p.stderr)
    return p.stdout


@pytest.fixture
def two_trackers(tmp_path):
    c = TwoTrackers(tmp_path)
    try:
        for t in c.tracker_procs:
            t.start()
        c.storage.start()
        yield c
    finally:
        c.stop()


def test_first_tracker_down_upload_still_works(two_trackers, tmp_path):
    c = two_trackers
    first, second = c.trackers
    for t in c.trackers:
        wait_for(lambda t=t: storage_ready(t), DEADLINE, what="storage ACTIVE on %s:%d" % t)
    leader = agreed_leader(c.trackers)
    assert leader in ["%s:%d" % t for t in c.trackers]
    host, port = leader.rsplit(":", 1)
    st, body = request((host, int(port)), T_GET_STATUS)
    assert st == 0 and len(body) == 17 and body[0] == 1

    src = tmp_path / "hello.txt"
    data = payload(5000, 7)
    src.write_bytes(data)
    fid = run("fdfs_upload_file", c.client_conf, src).strip().splitlines()[-1]

    # Stop the tracker the tools try first: uploads and downloads go through the other.
    c.tracker_procs[0].stop()
    fid2 = run("fdfs_upload_file", c.client_conf, src).strip().splitlines()[-1]
    for f in (fid, fid2):
        out = tmp_path / ("back-%s" % f.replace("/", "_"))
        run("fdfs_download_file", c.client_conf, f, out)
        assert out.read_bytes() == data
    # The survivor leads (it was the leader, or took over).
    assert agreed_leader([second]) == "%s:%d" % second
    monitor = run("fdfs_monitor", c.client_conf, "-h", "%s:%d" % second, "list")
    assert "ACTIVE" in monitor

    # The first tracker comes back as a follower: still one leader.
    c.tracker_procs[0].start()
    wait_for(lambda: storage_ready(first), DEADLINE, what="storage back on the first tracker")
    assert agreed_leader(c.trackers) == "%s:%d" % second
    st, body = request(first, T_GET_STATUS)
    assert st == 0 and body[0] == 0, "restarted tracker is not a leader"
    _, running, restart = struct.unpack(">Bqq", body)
    assert running % 300 == 0 and restart % 300 == 0
