"""The classic deployment: two trackers, group1 and group2 with two storages each, every
daemon on its own 127.0.0.x."""

import signal
import subprocess

import pytest

import fdfs_wire as wire
from fdfs_wire import leader_of
from conftest import require_binary, start_cluster, stop_cluster
from fdfs_helpers import payload, wait_for



def agreed_leader(addrs):
    seen = {leader_of(a) for a in addrs}
    return seen.pop() if len(seen) == 1 and None not in seen else None


@pytest.fixture(scope="module")
def six(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "six", trackers=2, groups=["group1", "group2"],
                      storages=2, store_paths=1)
    yield c
    stop_cluster(c)


def upload_via(tracker, data, ext="bin"):
    st, target = wire.query_store(tracker)
    assert st == 0, "query store: errno %d" % st
    st, fid = wire.upload((target["ip"], target["port"]), data, ext=ext, spi=target["spi"])
    assert st == 0, "upload: errno %d" % st
    return fid


def test_uploads_alternate_groups_and_reach_both_members(six):
    wait_for(lambda: agreed_leader(six.tracker_addrs), 30, what="one agreed tracker leader")
    files = {}
    for i in range(20):
        data = payload(1000 + i * 37, i)
        files[upload_via(six.tracker_addr, data)] = data
    groups = [fid.split("/", 1)[0] for fid in files]
    assert groups.count("group1") == groups.count("group2") == 10, groups
    assert all(groups[i] != groups[i + 1] for i in range(len(groups) - 1)), groups
    for fid, data in files.items():
        members = [n for n in six.nodes if n.group == fid.split("/", 1)[0]]
        assert len(members) == 2
        for n in members:
            wait_for(lambda: wire.download(n.addr, fid) == (0, data), 15,
                     what="%s on %s:%d" % (fid, n.ip, n.port))


def test_leader_tracker_stops_and_returns(six, tmp_path):
    leader = wait_for(lambda: agreed_leader(six.tracker_addrs), 30, what="one agreed leader")
    daemons = {"%s:%d" % a: d for a, d in zip(six.tracker_addrs,
                                              [six.tracker] + [d for _, _, d in six.extra_trackers])}
    survivor = next(a for a in six.tracker_addrs if "%s:%d" % a != leader)
    gone = daemons[leader]
    gone.proc.send_signal(signal.SIGTERM)
    assert gone.proc.wait(20) == 0
    gone.stderr_fh.close()
    wait_for(lambda: leader_of(survivor) == "%s:%d" % survivor, 30,
             what="the surviving tracker to lead")

    # Our tools fail over to the surviving tracker listed in client.conf.
    src = tmp_path / "after.txt"
    src.write_bytes(b"uploaded while the old leader is down\n")
    up = subprocess.run([str(require_binary("fdfs_upload_file")), str(six.client_conf), str(src)],
                        capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    fid = up.stdout.strip()
    dst = tmp_path / "back.txt"
    down = subprocess.run([str(require_binary("fdfs_download_file")), str(six.client_conf), fid,
                           str(dst)], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert dst.read_bytes() == src.read_bytes()

    # It comes back as a follower: still exactly one leader, the survivor.
    gone.start()
    wait_for(lambda: agreed_leader(six.tracker_addrs) == "%s:%d" % survivor, 30,
             what="both trackers to agree on the survivor")
    # And it serves clients again once the storages have rejoined it.
    ip, port = leader.rsplit(":", 1)
    wait_for(lambda: wire.query_store((ip, int(port)))[0] == 0, 30,
             what="the returned tracker to answer store queries")
