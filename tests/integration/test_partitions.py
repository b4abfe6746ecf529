"""Partitions (iptables DROP rules between 127.0.0.x addresses) and clocks that differ.

* Two trackers and a group of two storages; iptables drops everything between the two
  trackers' addresses (both directions) until each leads on its own side. Once the rules
  are removed, one leader must emerge within seconds and stay (the rules are removed in
  a `finally`, whatever happens).
* Trackers whose clock runs 400 s ahead of the storages' (libfaketime): files uploaded
  and at once looked up with 102 QUERY_FETCH_ONE must download from the storage the
  tracker names, every time. (A storage whose clock runs behind is not tested: the
  timestamp in its file names is the file's mtime, which libfaketime does not shift,
  so the skew would not reach what read routing compares.)
* The two storages of a group cut off from each other (both directions; then one
  direction at a time, and one tracker's packets to the other) while clients keep
  uploading to both and downloading through the trackers: no acknowledged file is lost
  or served wrong, and once the partition heals every file is on both members, byte for
  byte, and the trackers agree on one leader.
* A partition while a new member copies the files it missed: the copy stops, resumes
  after the partition, and the member becomes ACTIVE with every file; reads are never
  routed to it for a file it lacks.
* A new member that reaches one tracker before the other: no tracker takes it for ACTIVE
  before its copy is done.

The DROP rules carry the comment `fdfs-test-partition:<pid of the test run>`; rules that
a killed run left behind are removed when the fixture starts (those of a run still going
are left alone).

Needs root for iptables and Debian's `faketime` package; without them the tests skip
(`FDFS_REQUIRE_IPTABLES=1` / `FDFS_REQUIRE_FAKETIME=1` turn that into a failure)."""

import collections
import contextlib
import glob
import os
import random
import shlex
import shutil
import struct
import subprocess
import threading
import time

import pytest

import fdfs_wire as wire
from conftest import STATUS_ACTIVE, start_cluster, stop_cluster
from fdfs_helpers import payload, pid_alive, wait_for
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


def rule_tag():
    """This process's tag: a run that was killed is told apart from one still going."""
    return "%s:%d" % (RULE_TAG, os.getpid())


def clear_tagged_rules():
    """Removes the rules a killed run left (tagged RULE_TAG, or RULE_TAG:<pid> of a
    process that is gone); those of test runs still going stay."""
    for line in iptables("-S", "OUTPUT").splitlines():
        words = shlex.split(line)
        if words[:1] != ["-A"]:
            continue
        for w in words:
            tag, _, pid = w.partition(":")
            if tag == RULE_TAG and (not pid or (pid.isdigit() and not pid_alive(int(pid)))):
                iptables("-D", *words[1:])
                break


class Partition:
    """Tagged DROP rules between addresses; `heal` removes exactly those (all of them, or
    the ones a cut returned), and fails if one cannot be removed."""

    def __init__(self):
        self.rules = []

    def one_way(self, src, dst):
        """Packets from src to dst are dropped, those from dst to src pass. -> the rules"""
        rule = ["OUTPUT", "-s", src, "-d", dst, "-m", "comment", "--comment", rule_tag(),
                "-j", "DROP"]
        iptables("-I", *rule)
        self.rules.append(rule)
        return [rule]

    def cut(self, a, b):
        """Nothing passes between a and b. -> the rules"""
        return self.one_way(a, b) + self.one_way(b, a)

    def heal(self, rules=None):
        errors = []
        for rule in list(reversed(self.rules) if rules is None else rules):
            if rule not in self.rules:
                continue
            self.rules.remove(rule)
            try:
                iptables("-D", *rule)
            except AssertionError as e:
                errors.append(str(e))
        assert not errors, "rules left in place: %s" % errors


@contextlib.contextmanager
def healed_partition():
    """A Partition whose rules are all removed afterwards, whatever happens (and the
    rules of earlier runs that died, first)."""
    clear_tagged_rules()
    p = Partition()
    try:
        yield p
    finally:
        p.heal()


@pytest.fixture
def partition():
    iptables_usable()
    with healed_partition() as p:
        yield p


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


@pytest.mark.parametrize("skewed", ["trackers-ahead", "storage-ahead", "storage-behind"])
def test_reads_right_after_upload_with_skewed_clocks(tmp_path_factory, skewed):
    """Reads routed by the trackers right after each upload all find the file, whether
    the trackers' clock is ahead of the storages', or one storage's clock is ahead of
    (or behind) everyone else's: its file names and sync progress carry its own time."""
    # Answers as soon as the file is stored (FastDFS's own durability), so reads come
    # right on the heels of the upload, before the peer has its copy.
    shift = ("-%ds" if skewed.endswith("behind") else "+%ds") % SKEW
    on_trackers = skewed.startswith("trackers")
    c = start_cluster(tmp_path_factory, "skew-%s" % skewed, trackers=2, storages=2,
                      store_paths=1, storage_extra="fsync_before_reply = false\n",
                      tracker_wrapper=shifted_clock(shift) if on_trackers else None,
                      storage_wrappers=None if on_trackers else {1: shifted_clock(shift)})
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

        # The clocks really differ (faketime works on our binaries).
        if on_trackers:
            # The tracker set the second storage's initial copy up to its own "now".
            until = int(init_flag(nodes[1])["sync_until_timestamp"])
            assert until - time.time() > SKEW - 60, "tracker clock not ahead: %d" % until
        else:
            # The shifted storage names its files by its own clock.
            st, fid = wire.upload(nodes[1].addr, b"clock", ext="txt")
            assert st == 0
            off = wire.decode_file_id(fid)["timestamp"] - time.time()
            assert abs(abs(off) - SKEW) < 60 and (off > 0) == (shift[0] == "+"), \
                "storage clock not shifted: its file is named %+d s from now" % off

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


# ------------------------------------------------ storages of a group cut off under load

SYNC_DEADLINE = 90.0
OP_TIMEOUT = 10.0
# Between two uploads of one client: a few thousand files per test, which the members
# exchange in seconds once a partition heals.
UPLOAD_PAUSE = 0.02
STORAGE_TIMEOUTS = "fsync_before_reply = false\nconnect_timeout = 2\nnetwork_timeout = 5\n"


class Load:
    """Clients uploading through the trackers (to whichever storage they name) and
    downloading acknowledged files through them, in threads.  Every answer is checked:
    a failed upload or download, or bytes other than those uploaded, is a violation
    (nothing here is cut off from the clients, so none is expected)."""

    def __init__(self, trackers, seed, uploaders=2, downloaders=2, pause=UPLOAD_PAUSE):
        self.trackers = list(trackers)
        self.pause = pause
        self.lock = threading.Lock()
        self.acked = {}            # fid -> bytes
        self.log = []              # (monotonic time of the ack, fid, source ip)
        self.routed = collections.Counter()
        self.downloads = 0
        self.violations = []
        self.stop_event = threading.Event()
        master = random.Random(seed)
        self.threads = (
            [threading.Thread(target=self._uploader, args=(random.Random(master.random()),),
                              daemon=True) for _ in range(uploaders)]
            + [threading.Thread(target=self._downloader, args=(random.Random(master.random()),),
                                daemon=True) for _ in range(downloaders)])

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(4 * OP_TIMEOUT)
        assert not any(t.is_alive() for t in self.threads), "load threads stuck"

    def violation(self, text):
        with self.lock:
            self.violations.append("%.2f %s" % (time.monotonic(), text))

    def _uploader(self, rnd):
        while not self.stop_event.wait(self.pause):
            tracker = rnd.choice(self.trackers)
            size = rnd.randint(1, 48 * 1024) if rnd.random() < 0.9 else rnd.randint(1, 300_000)
            data = rnd.randbytes(size)
            try:
                st, target = wire.query_store(tracker, timeout=OP_TIMEOUT)
                if st != 0:
                    self.violation("store query on %s: errno %d" % (host(tracker), st))
                    self.stop_event.wait(0.2)
                    continue
                st, fid = wire.upload((target["ip"], target["port"]), data, ext="bin",
                                      spi=target["spi"], timeout=OP_TIMEOUT)
            except (OSError, wire.ProtoError) as e:
                self.violation("upload via %s: %r" % (host(tracker), e))
                self.stop_event.wait(0.2)
                continue
            if st != 0:
                self.violation("upload to %s:%d: errno %d" % (target["ip"], target["port"], st))
                self.stop_event.wait(0.2)
                continue
            with self.lock:
                self.acked[fid] = data
                self.log.append((time.monotonic(), fid, target["ip"]))

    def _downloader(self, rnd):
        while not self.stop_event.wait(0.005):
            with self.lock:
                if not self.log:
                    continue
                # Half of the reads are of the newest files (their copies are in flight).
                pool = self.log[-50:] if rnd.random() < 0.5 else self.log
                _, fid, _ = rnd.choice(pool)
                want = self.acked[fid]
            self.check_read(fid, want, rnd.choice(self.trackers))

    def check_read(self, fid, want, tracker):
        """102 on `tracker`, then a download from the storage it names: must be `want`."""
        group, _, remote = fid.partition("/")
        try:
            st, where = wire.query_fetch(tracker, group, remote, timeout=OP_TIMEOUT)
            if st != 0:
                self.violation("fetch query of %s on %s: errno %d" % (fid, host(tracker), st))
                return False
            addr = (where["ip"], where["port"])
            st, body = wire.download(addr, fid, timeout=OP_TIMEOUT)
        except (OSError, wire.ProtoError) as e:
            self.violation("read of %s via %s: %r" % (fid, host(tracker), e))
            return False
        with self.lock:
            self.downloads += 1
            self.routed[addr[0]] += 1
        if st != 0:
            self.violation("%s routed %s to %s:%d, which answered errno %d"
                           % (host(tracker), fid, *addr, st))
            return False
        if body != want:
            self.violation("%s routed %s to %s:%d, which served %d wrong bytes (want %d)"
                           % (host(tracker), fid, *addr, len(body), len(want)))
            return False
        return True

    def since(self, t0):
        """{source ip: [fid]} acknowledged after t0."""
        out = collections.defaultdict(list)
        with self.lock:
            for t, fid, ip in self.log:
                if t >= t0:
                    out[ip].append(fid)
        return out

    def snapshot(self):
        with self.lock:
            return dict(self.acked)

    def report(self):
        with self.lock:
            return ("%d uploads acknowledged, %d downloads through the trackers (served by %s), "
                    "%d violations%s" % (len(self.acked), self.downloads, dict(self.routed),
                                         len(self.violations),
                                         "".join("\n  " + v for v in self.violations[:20])))


def lacking(node, fids):
    """How many of fids `node` answers ENOENT for."""
    return sum(1 for st, _ in wire.download_each(node.addr, fids, OP_TIMEOUT).values() if st == wire.ENOENT)


def wait_everywhere(c, nodes, files, deadline=SYNC_DEADLINE):
    """Waits until every node serves every file of `files` ({fid: bytes}) byte for byte;
    fails naming what is missing or wrong."""
    pending = {(fid, i) for fid in files for i in range(len(nodes))}
    last = {}

    def done():
        c.check_alive()
        by_node = collections.defaultdict(list)
        for fid, i in pending:
            by_node[i].append(fid)
        for i, fids in by_node.items():
            for fid, got in wire.download_each(nodes[i].addr, fids, OP_TIMEOUT).items():
                if got == (0, files[fid]):
                    pending.discard((fid, i))
                else:
                    last[(fid, i)] = got
        return not pending
    try:
        wait_for(done, deadline, 0.5, "%d files on all %d members" % (len(files), len(nodes)))
    except TimeoutError as e:
        lines = []
        for fid, i in sorted(pending)[:15]:
            got = last.get((fid, i), ("?", b""))
            seen = ("errno %s" % got[0] if got[0] != 0
                    else "%d wrong bytes (want %d)" % (len(got[1]), len(files[fid])))
            lines.append("  %s on %s:%d: %s (uploaded to %s)"
                         % (fid, *nodes[i].addr, seen, wire.decode_file_id(fid)["source_ip"]))
        raise AssertionError("%s\n%d (file, member) pairs missing or wrong:\n%s"
                             % (e, len(pending), "\n".join(lines)))


def replication_failures(node, peer):
    """How many times node logged its replication to peer failing."""
    needle = "replication to %s:%d: " % (peer.ip, peer.port)
    try:
        text = node.daemon.log_file.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if needle in line and "retrying" in line)


def hold_until_both_behind(load, a, b, t_cut, enough=20, deadline=DEADLINE):
    """Holds the partition until each storage acknowledged `enough` uploads since t_cut
    that the other one verifiably lacks, and each noticed its replication to the other
    failing (the partition bites both ways, for longer than a blip) -> seconds held."""
    failures = {(x.ip, y.ip): replication_failures(x, y) for x, y in ((a, b), (b, a))}

    def behind():
        new = load.since(t_cut)
        return (len(new[a.ip]) >= enough and len(new[b.ip]) >= enough
                and lacking(b, new[a.ip]) >= enough and lacking(a, new[b.ip]) >= enough
                and all(replication_failures(x, y) > failures[(x.ip, y.ip)]
                        for x, y in ((a, b), (b, a))))
    wait_for(behind, deadline, 0.2,
             "%d uploads on each side the other one lacks, and both storages' replication "
             "to the other failing" % enough)
    return time.monotonic() - t_cut


def storages_on(c, tracker):
    """92 on `tracker` -> {ip: record} of the storages of c's group; each record has
    "status" and "last_heart_beat_time" (the tracker's clock)."""
    with wire.Conn(tracker, 5) as conn:
        st, body = conn.request(wire.T_LIST_STORAGE, wire.group_field(c.group))
    if st != 0:
        return {}
    size = 487 if len(body) % 487 == 0 else 517
    ipw = size - 471
    out = {}
    for off in range(0, len(body), size):
        rec = body[off:off + size]
        beat, = struct.unpack(">q", rec[size - 9:size - 1])
        out[rec[18:18 + ipw].rstrip(b"\0").decode()] = {"status": rec[0],
                                                         "last_heart_beat_time": beat}
    return out


def active_everywhere(c, nodes):
    """Every tracker lists every one of nodes ACTIVE."""
    return all(all(storages_on(c, t).get(n.ip, {}).get("status") == STATUS_ACTIVE for n in nodes)
               for t in c.tracker_addrs)


def group_pair(tmp_path_factory, name, trackers=1):
    # A short network_timeout: a stalled replication is noticed within the partition.
    c = start_cluster(tmp_path_factory, name, trackers=trackers, storages=2, store_paths=1,
                      storage_extra=STORAGE_TIMEOUTS)
    # The start: both members ACTIVE on every tracker (a new member is briefly ACTIVE on
    # one tracker and still waiting for its copy on another, see
    # test_new_member_joining_one_tracker_at_a_time; not what these tests are about).
    try:
        wait_for(lambda: active_everywhere(c, c.nodes), DEADLINE, 0.1,
                 "both storages ACTIVE on every tracker")
    except BaseException:
        stop_cluster(c)
        raise
    return c


@pytest.mark.timeout(300)
def test_storages_cut_off_under_load(tmp_path_factory, partition):
    """The two storages of a group cannot reach each other (both ways) while clients
    upload to both through the tracker and read through it: every read is right, and
    once healed both members hold every acknowledged file."""
    c = group_pair(tmp_path_factory, "storage-split")
    a, b = c.nodes
    try:
        with Load(c.tracker_addrs, seed=1) as load:
            wait_for(lambda: len(load.since(0)[a.ip]) >= 10 and len(load.since(0)[b.ip]) >= 10,
                     DEADLINE, 0.1, "uploads to both storages before the partition")
            partition.cut(a.ip, b.ip)
            t_cut = time.monotonic()
            held = hold_until_both_behind(load, a, b, t_cut)
            partition.heal()
            t_heal = time.monotonic()
            # Uploads and reads go on while the members catch up with each other.
            wait_everywhere(c, c.nodes, load.snapshot())
            caught_up = time.monotonic() - t_heal
        files = load.snapshot()
        assert not load.violations, load.report()
        # What was acknowledged at the end is everywhere too (the last uploads included).
        wait_everywhere(c, c.nodes, files)
        for fid, data in files.items():
            assert load.check_read(fid, data, c.tracker_addr), load.report()
        during = load.since(t_cut)
        print("partition held %.1fs, members identical %.1fs after healing; %s"
              % (held, caught_up, load.report()))
        assert len(during[a.ip]) >= 20 and len(during[b.ip]) >= 20
    finally:
        stop_cluster(c)


def settle_one_leader(trackers):
    leader = wait_for(lambda: one_leader(trackers), DEADLINE, 0.1, "one tracker leader")
    wait_for(lambda: followers_active(leader, len(trackers)), DEADLINE, 0.2,
             "the followers pinging the leader %s" % leader)
    return leader


@pytest.mark.timeout(400)
def test_one_way_partitions(tmp_path_factory, partition):
    """One direction dropped at a time, under load: storage B's packets to A, then A's to
    B, then a tracker's to the other (both ways round). Every acknowledged file is served
    right all along and ends up on both members; the trackers agree on one leader."""
    c = group_pair(tmp_path_factory, "one-way", trackers=2)
    a, b = c.nodes
    t1, t2 = c.tracker_addrs
    phases = []
    try:
        settle_one_leader(c.tracker_addrs)
        with Load(c.tracker_addrs, seed=2) as load:
            wait_for(lambda: len(load.since(0)[a.ip]) >= 10 and len(load.since(0)[b.ip]) >= 10,
                     DEADLINE, 0.1, "uploads to both storages before the partitions")
            for src, dst in ((b, a), (a, b)):
                # dst hears nothing from src, src still reaches dst: neither can finish a
                # TCP handshake with the other, but each sees its own packets leave.
                partition.one_way(src.ip, dst.ip)
                t_cut = time.monotonic()
                held = hold_until_both_behind(load, a, b, t_cut)
                assert not load.violations, "%s -> %s dropped: %s" % (src.ip, dst.ip,
                                                                      load.report())
                partition.heal()
                t_heal = time.monotonic()
                wait_everywhere(c, c.nodes, load.snapshot())
                phases.append("%s -> %s dropped %.1fs, identical %.1fs after"
                              % (src.ip, dst.ip, held, time.monotonic() - t_heal))

            # One tracker's packets to the other dropped: first the follower's to the
            # leader, then the leader's to the follower. Each side ends up leading.
            for follower_speaks in (True, False):
                leader = settle_one_leader(c.tracker_addrs)
                led = t1 if leader == host(t1) else t2
                follower = t2 if led == t1 else t1
                src, dst = (follower, led) if follower_speaks else (led, follower)
                partition.one_way(src[0], dst[0])
                t_cut = time.monotonic()
                seen_leading = set()

                def both_led():
                    for t in c.tracker_addrs:
                        if leader_of(t) == host(t):
                            seen_leading.add(t)
                    return len(seen_leading) == 2
                wait_for(both_led, DEADLINE, 0.1,
                         "each tracker leading with %s -> %s dropped" % (host(src), host(dst)))
                held = time.monotonic() - t_cut
                partition.heal()
                t_heal = time.monotonic()
                settle_one_leader(c.tracker_addrs)
                phases.append("tracker %s -> %s dropped %.1fs, one leader %.1fs after"
                              % (host(src), host(dst), held, time.monotonic() - t_heal))
        files = load.snapshot()
        assert not load.violations, load.report()
        wait_everywhere(c, c.nodes, files)
        for k, (fid, data) in enumerate(files.items()):
            assert load.check_read(fid, data, c.tracker_addrs[k % 2]), load.report()
        print("; ".join(phases) + "; " + load.report())
    finally:
        stop_cluster(c)


# ------------------------------------------------ a partition while a new member catches up

CATCH_UP_FILES = 300


def present_on(node, files):
    """How many of files ({fid: bytes}) are complete in node's store paths (by size; the
    bytes are compared at the end)."""
    n = 0
    for fid, data in files.items():
        remote = fid.partition("/")[2]
        path = node.store_paths[int(remote[1:3], 16)] / "data" / remote[4:]
        try:
            n += path.stat().st_size == len(data)
        except OSError:
            pass
    return n


def stopped_advancing(node, files, quiet=2.0):
    """A predicate: true once the count of node's complete files has stood still for
    `quiet` seconds (polled)."""
    state = {"count": -1, "since": time.monotonic()}

    def check():
        n = present_on(node, files)
        now = time.monotonic()
        if n != state["count"]:
            state.update(count=n, since=now)
        return now - state["since"] >= quiet and (n,)
    return check


@pytest.mark.timeout(300)
def test_partition_while_new_member_catches_up(tmp_path_factory, partition):
    """A new member copies the source's files; the two are cut apart midway, until the
    copy stands still and the source gave up its connection. Healed, the member becomes
    ACTIVE with every file; reads through the tracker are right all along."""
    c = start_cluster(tmp_path_factory, "catch-up-split", storages=1, store_paths=1,
                      storage_extra=STORAGE_TIMEOUTS)
    try:
        a = c.nodes[0]
        rnd = random.Random(3)
        files = {}
        for i in range(CATCH_UP_FILES):
            data = rnd.randbytes(rnd.randint(64 * 1024, 256 * 1024))
            st, fid = wire.upload(a.addr, data, ext="bin")
            assert st == 0, "upload %d: errno %d" % (i, st)
            files[fid] = data
        fids = list(files)

        # Reads through the tracker all along, each checked.
        load = Load(c.tracker_addrs, seed=4, uploaders=0, downloaders=0)
        stop = threading.Event()

        def reader():
            k = 0
            while not stop.is_set():
                fid = fids[k % len(fids)]
                load.check_read(fid, files[fid], c.tracker_addr)
                k += 1
        readers = [threading.Thread(target=reader, daemon=True) for _ in range(2)]
        for t in readers:
            t.start()
        try:
            b = c.add_storage()
            wait_for(lambda: present_on(b, files) >= 10, DEADLINE, 0.01,
                     "the new member copying")
            failures = replication_failures(a, b)
            partition.cut(a.ip, b.ip)
            t_cut = time.monotonic()
            at_cut = present_on(b, files)
            # Held until the copy stands still and the source gave up on its connection.
            still = stopped_advancing(b, files)
            (stalled,) = wait_for(lambda: replication_failures(a, b) > failures and still(),
                                  DEADLINE, 0.1, "the copy to the new member standing still, "
                                  "the source's replication to it failing")
            held = time.monotonic() - t_cut
            assert stalled < CATCH_UP_FILES, \
                "the new member had every file when cut off (%d at the cut)" % at_cut
            status_cut = c.storage_status(b)
            partition.heal()
            t_heal = time.monotonic()
            c.wait_active(b, timeout=SYNC_DEADLINE)
            t_active = time.monotonic()
            wait_everywhere(c, [b], files)
            # Reads reach it too once it is ACTIVE, and are right. A peer serves a file
            # once it got a change the source made after the file's second: the copied
            # files may all share one second, so the source gets newer ones now and then.
            def routed_to_b():
                if load.routed[b.ip] >= 20:
                    return True
                st, _ = wire.upload(a.addr, b"later", ext="txt")
                assert st == 0, "upload: errno %d" % st
                return False
            wait_for(routed_to_b, DEADLINE, 0.5, "reads routed to the new member")
        finally:
            stop.set()
            for t in readers:
                t.join(4 * OP_TIMEOUT)
        assert not load.violations, load.report()
        print("%d files; cut with %d on the new member, stood still at %d after %.1fs "
              "(status %s); ACTIVE %.1fs after healing; %s"
              % (CATCH_UP_FILES, at_cut, stalled, held, status_cut, t_active - t_heal,
                 load.report()))
    finally:
        stop_cluster(c)


def log_has(node, text):
    try:
        return text in node.daemon.log_file.read_text(errors="replace")
    except OSError:
        return False


@pytest.mark.timeout(300)
def test_new_member_joining_one_tracker_at_a_time(tmp_path_factory, partition):
    """A new member reaches one tracker (which arranges its initial copy) before the
    other: no tracker may take it for ACTIVE, send it uploads or route reads to it before
    it holds the group's files."""
    c = start_cluster(tmp_path_factory, "join-one-tracker", trackers=2, storages=1,
                      store_paths=1, storage_extra=STORAGE_TIMEOUTS)
    try:
        a = c.nodes[0]
        t1, t2 = c.tracker_addrs
        settle_one_leader(c.tracker_addrs)
        rnd = random.Random(5)
        files = {}
        for i in range(50):
            data = rnd.randbytes(rnd.randint(1, 64 * 1024))
            st, fid = wire.upload(a.addr, data, ext="bin")
            assert st == 0, "upload %d: errno %d" % (i, st)
            files[fid] = data

        b = c.add_storage(start=False)
        # The copy waits until the end, and b reaches only t1 at first.
        to_a = partition.cut(a.ip, b.ip)
        to_t2 = partition.cut(b.ip, t2[0])
        early = []
        stop = threading.Event()

        def watch():
            while not stop.wait(0.05):
                for t in c.tracker_addrs:
                    try:
                        status = storages_on(c, t).get(b.ip, {}).get("status")
                    except (OSError, wire.ProtoError):
                        continue
                    # Files are only added: fewer now means fewer when the status was read.
                    if status == STATUS_ACTIVE and present_on(b, files) < len(files):
                        early.append("%.2f %s lists the new member ACTIVE with %d of %d files"
                                     % (time.monotonic(), host(t), present_on(b, files),
                                        len(files)))
        watcher = threading.Thread(target=watch, daemon=True)
        with Load(c.tracker_addrs, seed=6) as load:
            watcher.start()
            try:
                b.daemon.start()
                wait_for(lambda: b.ip in storages_on(c, t1) and log_has(b, "initial copy source"),
                         DEADLINE, 0.05, "the new member known to %s, its copy arranged"
                         % host(t1))
                partition.heal(to_t2)
                # t2 hears of it now: two beats after its join, whatever t2 makes of it
                # shows.
                first = wait_for(lambda: storages_on(c, t2).get(b.ip), DEADLINE, 0.05,
                                 "the new member known to %s" % host(t2))
                wait_for(lambda: storages_on(c, t2)[b.ip]["last_heart_beat_time"]
                         >= first["last_heart_beat_time"] + 2, DEADLINE, 0.1,
                         "two beats of the new member on %s" % host(t2))
                held_back = {host(t): storages_on(c, t)[b.ip]["status"]
                             for t in c.tracker_addrs}
                partition.heal(to_a)
                wait_for(lambda: active_everywhere(c, [b]), SYNC_DEADLINE, 0.1,
                         "the new member ACTIVE on every tracker")
            finally:
                stop.set()
                watcher.join(10)
        assert not early and not load.violations, (
            "while its copy waited, the new member was listed %s; %s\n%s"
            % (held_back, "\n".join(early[:5]), load.report()))
        wait_everywhere(c, c.nodes, {**files, **load.snapshot()})
        print("held back: %s; %s" % (held_back, load.report()))
    finally:
        stop_cluster(c)
