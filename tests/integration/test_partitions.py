"""Trackers cut off from each other, and clocks that differ.

* Two trackers and a group of two storages; iptables drops everything between the two
  trackers' addresses (both directions) until each leads on its own side. Once the rules
  are removed, one leader must emerge within seconds and stay (the rules are removed in
  a `finally`, whatever happens).
* Trackers whose clock runs 400 s ahead of the storages' (libfaketime): files uploaded
  and at once looked up with 102 QUERY_FETCH_ONE must download from the storage the
  tracker names, every time. (A storage whose clock runs behind is not tested: the
  timestamp in its file names is the file's mtime, which libfaketime does not shift,
  so the skew would not reach what read routing compares.)

The DROP rules carry the comment `fdfs-test-partition`; rules with it that a killed run
left behind are removed when the fixture starts.

Needs root for iptables and Debian's `faketime` package; without them the tests skip
(`FDFS_REQUIRE_IPTABLES=1` / `FDFS_REQUIRE_FAKETIME=1` turn that into a failure)."""

import glob
import os
import shlex
import shutil
import subprocess
import time

import pytest

import fdfs_wire as wire
from conftest import STATUS_ACTIVE, start_cluster, stop_cluster
from fdfs_helpers import payload, wait_for
from fdfs_wire import leader_of

T_GET_STATUS = 64
T_CLUSTER_STAT = 96
RULE_TAG = "fdfs-test-partition"
DEADLINE = 60.0
SKEW = 400
FILES = 300


def leads(addr):
    """64 GET_STATUS: does this tracker say it leads?"""
    try:
        with wire.Conn(addr, 3) as c:
            st, body = c.request(T_GET_STATUS)
    except OSError:
        return None
    return st == 0 and len(body) == 17 and body[0] == 1


def host(addr):
    return "%s:%d" % addr


def one_leader(addrs):
    """The leader every tracker names, when exactly one of them says it leads."""
    named = {leader_of(a) for a in addrs}
    if len(named) != 1 or None in named:
        return None
    leader = named.pop()
    leading = [a for a in addrs if leads(a)]
    return leader if [host(a) for a in leading] == [leader] else None


def followers_active(leader, count):
    """96 on the leader: `count` trackers listed, all active (followers ping it)."""
    ip, port = leader.rsplit(":", 1)
    with wire.Conn((ip, int(port)), 3) as c:
        st, body = c.request(T_CLUSTER_STAT, b"\0\0\0")
    if st != 0 or not body:
        return False
    n = body[0]
    rows = [body[1 + i * 90:1 + (i + 1) * 90] for i in range(n)]
    return n == count and all(r[53] == 1 for r in rows) and sum(r[52] for r in rows) == 1


def iptables_usable():
    why = None
    if shutil.which("iptables") is None:
        why = "iptables not installed"
    elif os.geteuid() != 0:
        why = "iptables needs root"
    else:
        r = subprocess.run(["iptables", "-w", "-L", "OUTPUT", "-n"], capture_output=True,
                           text=True)
        if r.returncode != 0:
            why = "iptables does not work here: %s" % r.stderr.strip()
    if why:
        if os.environ.get("FDFS_REQUIRE_IPTABLES") == "1":
            pytest.fail(why)
        pytest.skip(why)


def shifted_clock(offset):
    """A wrapper command running a daemon with its clock shifted by `offset` ("+400s"):
    libfaketime preloaded through `env`, which execs, so the daemon keeps the pid the
    fixtures signal (the `faketime` tool would stay in between as its parent)."""
    libs = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not libs:
        if os.environ.get("FDFS_REQUIRE_FAKETIME") == "1":
            pytest.fail("libfaketime not installed")
        pytest.skip("libfaketime not installed (Debian package faketime)")
    return ["env", "LD_PRELOAD=%s" % libs[0], "FAKETIME=%s" % offset]


def iptables(*args):
    r = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError("iptables %s: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout


def clear_tagged_rules():
    """Removes the rules tagged RULE_TAG (left by a run that was killed)."""
    for line in iptables("-S", "OUTPUT").splitlines():
        words = shlex.split(line)
        if words[:1] == ["-A"] and RULE_TAG in words:
            iptables("-D", *words[1:])


class Partition:
    """Tagged DROP rules between addresses, in both directions; `heal` removes exactly
    those, and fails if one cannot be removed."""

    def __init__(self):
        self.rules = []

    def cut(self, a, b):
        for src, dst in ((a, b), (b, a)):
            rule = ["OUTPUT", "-s", src, "-d", dst, "-m", "comment", "--comment", RULE_TAG,
                    "-j", "DROP"]
            iptables("-I", *rule)
            self.rules.append(rule)

    def heal(self):
        errors = []
        while self.rules:
            rule = self.rules.pop()
            try:
                iptables("-D", *rule)
            except AssertionError as e:
                errors.append(str(e))
        assert not errors, "rules left in place: %s" % errors


@pytest.fixture
def partition():
    iptables_usable()
    clear_tagged_rules()
    p = Partition()
    try:
        yield p
    finally:
        p.heal()


def test_one_leader_after_a_partition_heals(tmp_path_factory, partition):
    c = start_cluster(tmp_path_factory, "partition", trackers=2, storages=2, store_paths=1)
    try:
        trackers = c.tracker_addrs
        leader = wait_for(lambda: one_leader(trackers), DEADLINE, 0.1, "one tracker leader")
        wait_for(lambda: followers_active(leader, 2), DEADLINE, 0.2,
                 "the follower pinging the leader")

        # Cut the trackers off from each other (storages still reach both): each side
        # ends up leading by itself.
        partition.cut(trackers[0][0], trackers[1][0])
        seen_leading = set()

        def both_led():
            for a in trackers:
                if leader_of(a) == host(a):
                    seen_leading.add(a)
            return len(seen_leading) == 2
        wait_for(both_led, DEADLINE, 0.1, "each tracker leading its side of the partition")

        # Heal: one leader within seconds, followed by the other tracker.
        partition.heal()
        healed = time.monotonic()
        leader = wait_for(lambda: one_leader(trackers), DEADLINE, 0.1,
                          "one leader after the partition healed")
        settled = time.monotonic() - healed
        wait_for(lambda: followers_active(leader, 2), DEADLINE, 0.2,
                 "the other tracker following %s" % leader)
        assert one_leader(trackers) == leader, "still one leader"
        assert settled < 30, "took %.1f s to settle on one leader" % settled

        # Uploads and reads go on through both trackers.
        for i, t in enumerate(trackers):
            data = payload(1000 + i, i)
            st, target = wire.query_store(t)
            assert st == 0, "query store on %s: errno %d" % (host(t), st)
            st, fid = wire.upload((target["ip"], target["port"]), data, spi=target["spi"])
            assert st == 0, "upload: errno %d" % st
            group, _, remote = fid.partition("/")
            st, where = wire.query_fetch(t, group, remote)
            assert st == 0
            assert wire.download((where["ip"], where["port"]), fid) == (0, data)
    finally:
        stop_cluster(c)


def upload_via(tracker, data):
    st, target = wire.query_store(tracker)
    assert st == 0, "query store: errno %d" % st
    st, fid = wire.upload((target["ip"], target["port"]), data, spi=target["spi"])
    assert st == 0, "upload: errno %d" % st
    return fid, target["ip"]


def init_flag(node):
    text = (node.base / "data" / ".data_init_flag").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_reads_right_after_upload_with_skewed_clocks(tmp_path_factory):
    # Answers as soon as the file is stored (FastDFS's own durability), so reads come
    # right on the heels of the upload, before the peer has its copy.
    c = start_cluster(tmp_path_factory, "skew-trackers-ahead", trackers=2, storages=2,
                      store_paths=1, storage_extra="fsync_before_reply = false\n",
                      tracker_wrapper=shifted_clock("+%ds" % SKEW))
    try:
        trackers = c.tracker_addrs
        nodes = c.nodes

        def listed(t):
            return {s["ip"]: s for s in c.list_storages(tracker=t)}

        def all_active(t):
            found = listed(t)
            return len(found) == 2 and all(s["status"] == STATUS_ACTIVE
                                           for s in found.values())
        for t in trackers:
            wait_for(lambda t=t: all_active(t), DEADLINE, 0.1,
                     "both storages ACTIVE on %s" % host(t))

        # The clocks really differ (faketime works on our binaries): the tracker set the
        # second storage's initial copy up to its own "now".
        until = int(init_flag(nodes[1])["sync_until_timestamp"])
        assert until - time.time() > SKEW - 60, "tracker clock not ahead: %d" % until

        # Both storages take uploads and report their sync progress to every tracker.
        for i in range(4):
            upload_via(trackers[0], payload(32, 10_000 + i))

        def progress_reported(t):
            return all(s["last_synced_timestamp"] > 0 for s in listed(t).values())
        for t in trackers:
            wait_for(lambda t=t: progress_reported(t), DEADLINE, 0.1,
                     "sync progress of both storages on %s" % host(t))

        files = []
        failures = []
        reads = 0
        for i in range(FILES):
            t = trackers[i % len(trackers)]
            data = payload(64 + i % 200, i)
            fid, source = upload_via(t, data)
            files.append((fid, data, source))
            group, _, remote = fid.partition("/")
            # Ask every tracker (each turns its own read round robin).
            for q in trackers:
                st, where = wire.query_fetch(q, group, remote)
                if st != 0:
                    failures.append((fid, "query fetch errno %d" % st))
                    continue
                reads += 1
                got = wire.download((where["ip"], where["port"]), fid)
                if got != (0, data):
                    failures.append((fid, "%s said %s:%d, which answered errno %d" % (
                        host(q), where["ip"], where["port"], got[0])))
        sources = {ip for _, _, ip in files}
        assert sources == {n.ip for n in nodes}, "uploads went to both storages"
        assert not failures, "%d of %d reads failed, e.g. %s" % (len(failures), reads,
                                                                  failures[:5])

        # Replication is not held up, and once a peer reports having synced past a file
        # the tracker sends reads of it there too (not only to the source).
        for fid, data, _ in files:
            for n in nodes:
                wait_for(lambda n=n, fid=fid, data=data: wire.download(n.addr, fid) == (0, data),
                         DEADLINE, 0.1, "%s on %s:%d" % (fid, n.ip, n.port))

        def reads_spread():
            served_by_peer = 0
            for fid, _, src in files[:FILES // 2]:
                group, _, remote = fid.partition("/")
                for t in trackers:
                    st, where = wire.query_fetch(t, group, remote)
                    assert st == 0
                    served_by_peer += where["ip"] != src
            return served_by_peer > 0
        wait_for(reads_spread, DEADLINE, 0.5, "reads of synced files reaching a non-source")
    finally:
        stop_cluster(c)
