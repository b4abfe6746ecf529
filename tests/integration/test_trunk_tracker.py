"""Our tracker leads a cluster of C storages with trunk files on (`use_trunk_file`).

A tracker is the first node an operator replaces; in a trunk cluster it must pick each
group's trunk server (31, 32), announce it (beat reply flag 0x02), take the trunk
server's reports (72, 73, 74) and pick another when it goes, as the C tracker does. The
storages here are the real C 6.16 ones (our storages with trunk files, alone and beside
C ones: test_trunk_write.py).
"""

import re

import pytest

import fdfs_wire as wire
from fdfs_helpers import wait_for
from interop import run_c
from trunk_helpers import (TRUNK_EXTRA, monitor, slot_of,  # noqa: F401
                           trunk_server_of, upload_many)


def assert_on(node, files):
    for fid, data in files.items():
        assert wire.download(node.addr, fid) == (0, data), (fid, node.ip)


@pytest.mark.timeout(300)
def test_our_tracker_leads_c_storages_with_trunk_files(clusters, tmp_path):
    c = clusters.new("trunk-tracker", storages=2, c_storages={0, 1},
                     tracker_extra=TRUNK_EXTRA)
    a, b = c.nodes
    wait_for(lambda: trunk_server_of(c) is not None, 60, interval=0.5,
             what="a trunk server picked and shown by fdfs_monitor")
    first = trunk_server_of(c)
    assert first in (a.ip, b.ip)
    out = monitor(c)
    assert out.count("if_trunk_server = 1") == 1, out
    assert re.search(r"current trunk file id = \d+", out), out

    # Small uploads go into trunk files, several at once, and reach both storages.
    def upload_when_ready():
        p = run_c("fdfs_upload_file", c.client_conf, c.client_conf)
        return p.returncode == 0
    wait_for(upload_when_ready, 60, interval=0.5,
             what="the storages to take uploads into trunk files")
    files = upload_many(c, tmp_path, "one", 120)
    assert all(len(f.partition("/")[2]) == 60 for f in files), "not in trunk files"

    def everywhere():
        try:
            assert_on(a, files)
            assert_on(b, files)
            return True
        except AssertionError:
            return False
    wait_for(everywhere, 90, interval=0.5, what="every file on both storages")

    # The trunk server stops: the other one takes over, and uploads go on.
    gone = a if first == a.ip else b
    kept = b if gone is a else a
    c.stop_daemon(gone.daemon)
    wait_for(lambda: trunk_server_of(c) == kept.ip, 60, interval=0.5,
             what="the remaining storage as trunk server")
    wait_for(upload_when_ready, 60, interval=0.5,
             what="uploads after the trunk server change")
    more = upload_many(c, tmp_path, "two", 60)
    assert_on(kept, files)
    assert_on(kept, more)
    # No two files share a slot.
    slots = [slot_of(f) for f in list(files) + list(more)]
    assert len(set(slots)) == len(slots)

    log = (c.tracker_base / "logs" / "trunk_server_change.log").read_text()
    lines = log.strip().splitlines()
    assert re.search(r"group1  -  =>  %s:%d$" % (re.escape(first), gone.port), lines[0]), log
    assert re.search(r"%s:%d  =>  %s:%d$" % (re.escape(gone.ip), gone.port,
                                             re.escape(kept.ip), kept.port), lines[-1]), log
    saved = c.tracker_base / "data" / "storage_groups_new.dat"
    wait_for(lambda: "trunk_server=%s\n" % kept.ip in saved.read_text(), 30,
             what="the trunk server saved with the groups")

    # A restarted tracker keeps it (from its saved state) and tells the storages again.
    c.tracker.stop()
    c.tracker.start()
    c.wait_active(kept)
    assert trunk_server_of(c) == kept.ip
    wait_for(upload_when_ready, 60, interval=0.5, what="uploads after a tracker restart")


def monitor_on(c, addr):
    p = run_c("fdfs_monitor", c.client_conf, "-h", "%s:%d" % addr)
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.mark.timeout(300)
def test_two_of_our_trackers_agree_on_the_trunk_server(clusters, tmp_path):
    """The follower learns the trunk server from the leader (65), so it accepts the
    trunk server's reports (73, 74) and, leading after the leader stops, keeps it and
    tells the storages again."""
    c = clusters.new("trunk-trackers", trackers=2, storages=2, c_storages={0, 1},
                     tracker_extra=TRUNK_EXTRA)
    (addr0, t0), (addr1, t1) = c.all_trackers()

    def trunk_on(addr):
        m = re.search(r"current trunk server = (\S+)", monitor_on(c, addr))
        return m.group(1) if m else None
    wait_for(lambda: trunk_on(addr0) is not None and trunk_on(addr0) == trunk_on(addr1), 60,
             interval=0.5, what="both trackers naming the same trunk server")
    trunk = trunk_on(addr0)

    def upload_ok():
        return run_c("fdfs_upload_file", c.client_conf, c.client_conf).returncode == 0
    wait_for(upload_ok, 60, interval=0.5, what="uploads into trunk files")
    files = upload_many(c, tmp_path, "pair", 40)

    # Neither tracker refused the trunk server's reports (a refusal makes the storage
    # drop that tracker and join again, once a second).
    for d in (t0, t1):
        log = d.log_file.read_text(errors="replace")
        assert "is not the trunk server" not in log, d.name

    # The leader stops; the other one leads with the same trunk server.
    def host(addr):
        return "%s:%d" % addr
    wait_for(lambda: wire.leader_of(addr0) in (host(addr0), host(addr1)), 30,
             what="a leader")
    leader = wire.leader_of(addr0)
    stopping, other = (t0, addr1) if leader == host(addr0) else (t1, addr0)
    stopping.stop()
    wait_for(lambda: wire.leader_of(other) == host(other), 60, interval=0.5,
             what="the other tracker leading")
    assert trunk_on(other) == trunk
    wait_for(upload_ok, 60, interval=0.5, what="uploads under the new leader")
    more = upload_many(c, tmp_path, "after", 20)
    for node in c.nodes:
        def has_all(node=node):
            return all(wire.download(node.addr, f) == (0, d)
                       for f, d in {**files, **more}.items())
        wait_for(has_all, 90, interval=0.5, what="every file on %s" % node.ip)
