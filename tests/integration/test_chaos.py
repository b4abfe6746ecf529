"""Chaos, bounded in time and on loopback only: the six-node cluster (two trackers,
group1 and group2 with two storages each) under continuous upload / download / delete
load and appender traffic (upload appender, append, modify, truncate) while trackers and
storages are killed with SIGKILL, paused with SIGSTOP and brought back, and cut off by
iptables (the two storages of a group from each other, a storage from a tracker; both
ways or one way), at random.  Afterwards every acknowledged, undeleted file is on every
member of its group byte for byte, every replica of every appender holds exactly the
content its acknowledged changes made, and no acknowledged delete is undone.

The partitions need root and iptables (see test_partitions.py); without them the chaos
runs with kills and pauses only, unless FDFS_REQUIRE_IPTABLES=1 makes that a failure.

Environment:
  FDFS_CHAOS_SEED     seed of the chaos schedule and of the load (default a fixed one;
                      `random` for a new one; printed, and a failure prints it too, so
                      the same schedule can be replayed)
  FDFS_CHAOS_SECONDS  length of the chaos phase (default 45)
"""

import collections
import os
import random
import signal
import struct
import threading
import time

import pytest

import fdfs_wire as wire
from fdfs_wire import leader_of
from conftest import STATUS_ACTIVE, start_cluster, stop_cluster
from fdfs_helpers import crc32, wait_for
from test_partitions import healed_partition, iptables_usable

CHAOS_SECONDS = float(os.environ.get("FDFS_CHAOS_SECONDS") or 45)
# Client operations: short, so the load threads keep going while a daemon is paused.
OP_TIMEOUT = 5.0
# After the chaos: generous, the condition is polled.
RECOVER_DEADLINE = 90.0
SYNC_DEADLINE = 90.0
SETTLE_DEADLINE = 30.0
# At most this many daemons are down or paused at the same time.
MAX_DISRUPTED = 2

STATUS_NAMES = {0: "INIT", 1: "WAIT_SYNC", 2: "SYNCING", 3: "IP_CHANGED", 4: "DELETED",
                5: "OFFLINE", 6: "ONLINE", 7: "ACTIVE", 9: "RECOVERY", None: "unknown"}

# Every deadline of the test may run out once (it then fails with a report).
pytestmark = pytest.mark.timeout(int(CHAOS_SECONDS + 2 * RECOVER_DEADLINE + 4 * SYNC_DEADLINE)
                                 + 240)


# The test suite runs one fixed schedule; FDFS_CHAOS_SEED=random explores new ones.
DEFAULT_SEED = 20261124


def chaos_seed():
    text = os.environ.get("FDFS_CHAOS_SEED")
    if text == "random":
        return random.SystemRandom().randrange(1 << 31)
    return int(text) if text else DEFAULT_SEED


@pytest.fixture
def six(tmp_path_factory):
    # Storages give up on a silent peer or tracker after 5 s (instead of 20): the longer
    # partitions break connections, the shorter ones only stall them.
    c = start_cluster(tmp_path_factory, "chaos", trackers=2, groups=["group1", "group2"],
                      storages=2, store_paths=1,
                      storage_extra="connect_timeout = 2\nnetwork_timeout = 5\n")
    yield c
    stop_cluster(c)


@pytest.fixture
def links():
    """A Partition when iptables can be used (None otherwise); every rule it made is
    removed afterwards, whatever happens."""
    try:
        iptables_usable()
    except pytest.skip.Exception as e:
        print("no partitions in this chaos: %s" % e, flush=True)
        yield None
        return
    with healed_partition() as p:
        yield p


# ------------------------------------------------------------------ bookkeeping

class LiveSet:
    """Acknowledged files not (possibly) deleted: O(1) add, remove and random pick."""

    def __init__(self):
        self.items = []
        self.index = {}

    def add(self, fid):
        if fid not in self.index:
            self.index[fid] = len(self.items)
            self.items.append(fid)

    def discard(self, fid):
        i = self.index.pop(fid, None)
        if i is None:
            return
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self.index[last] = i

    def choice(self, rnd):
        return rnd.choice(self.items) if self.items else None

    def __contains__(self, fid):
        return fid in self.index

    def __len__(self):
        return len(self.items)


class Ledger:
    """What the clients were told.  An operation whose outcome is unknown (the
    connection broke or timed out after the request went out) is kept apart and
    excluded from the final checks."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}                 # fid -> (size, crc32)
        self.seeds = {}                 # fid -> seed of its bytes (content_of)
        self.recent = collections.deque(maxlen=40)
        self.live = LiveSet()
        self.deleted = {}               # fid -> address the delete was acknowledged by
        self.uncertain_deletes = set()
        self.deleting = set()
        self.counts = collections.Counter()
        self.violations = []
        self.t0 = time.monotonic()

    def count(self, what, n=1):
        with self.lock:
            self.counts[what] += n

    def violation(self, text):
        with self.lock:
            self.violations.append("%.2fs %s" % (time.monotonic() - self.t0, text))

    def add_upload(self, fid, size, crc, seed):
        with self.lock:
            self.acked[fid] = (size, crc)
            self.seeds[fid] = seed
            self.live.add(fid)
            self.recent.append(fid)
            self.counts["upload ok"] += 1

    def claim_for_delete(self, rnd):
        """A live file to delete: often one just uploaded (its copy may be in flight)."""
        with self.lock:
            for _ in range(8):
                if self.recent and rnd.random() < 0.5:
                    fid = rnd.choice(self.recent)
                else:
                    fid = self.live.choice(rnd)
                if fid is not None and fid in self.live and fid not in self.deleting:
                    self.deleting.add(fid)
                    return fid
        return None

    def delete_done(self, fid, outcome, addr=None):
        """outcome: "ok" (acknowledged), "no" (surely not done), "uncertain"."""
        with self.lock:
            self.deleting.discard(fid)
            if outcome == "ok":
                self.deleted[fid] = addr
                self.live.discard(fid)
            elif outcome == "uncertain":
                self.uncertain_deletes.add(fid)
                self.live.discard(fid)

    def pick_live(self, rnd):
        with self.lock:
            fid = self.live.choice(rnd)
            return (fid, self.acked[fid]) if fid else (None, None)

    def final(self):
        with self.lock:
            keep = {f: v for f, v in self.acked.items()
                    if f not in self.deleted and f not in self.uncertain_deletes}
            return keep, dict(self.deleted), set(self.uncertain_deletes)

    def content_of(self, fid):
        """The bytes uploaded as fid (made again from their seed)."""
        with self.lock:
            size, _ = self.acked[fid]
            seed = self.seeds[fid]
        return content(seed, size)


def content(seed, size):
    return random.Random(seed).randbytes(size)


class Appenders:
    """What the clients were told about each appender file: its content after the last
    acknowledged change.  A change whose outcome is unknown leaves two possible contents
    (before and after); such an appender is changed no more."""

    def __init__(self):
        self.lock = threading.Lock()
        self.content = {}               # fid -> bytes
        self.possible = {}              # fid -> [bytes, bytes] (outcome unknown)
        self.history = collections.defaultdict(lambda: collections.deque(maxlen=12))
        self.changed_on = collections.defaultdict(set)     # fid -> ips that acked changes
        self.t0 = time.monotonic()

    def note(self, fid, text):
        """Keeps the last changes of each appender, for reports."""
        with self.lock:
            self.history[fid].append("%.2fs %s" % (time.monotonic() - self.t0, text))

    def story(self, fid):
        with self.lock:
            return "\n".join("      " + line for line in self.history[fid])

    def created(self, fid, data):
        with self.lock:
            self.content[fid] = data

    def changed(self, fid, data, ip):
        with self.lock:
            self.content[fid] = data
            self.changed_on[fid].add(ip)

    def changed_elsewhere(self, fid):
        """Did a member other than the source acknowledge a change of fid (the trackers
        name another member for updates while the source is not ACTIVE)?"""
        source = wire.decode_file_id(fid)["source_ip"]
        with self.lock:
            return bool(self.changed_on[fid] - {source})

    def unknown(self, fid, before, after):
        with self.lock:
            del self.content[fid]
            self.possible[fid] = [before, after]

    def get(self, fid):
        with self.lock:
            return self.content[fid]

    def final(self):
        with self.lock:
            return dict(self.content), dict(self.possible)


class NotSent(Exception):
    """The connection could not be made: the request never left."""


def storage_call(addr, cmd, body, timeout=OP_TIMEOUT):
    """One request on a new connection.  NotSent if connecting failed; OSError /
    ProtoError afterwards mean the outcome is unknown."""
    try:
        conn = wire.Conn(addr, timeout)
    except OSError as e:
        raise NotSent(e) from e
    with conn:
        return conn.request(cmd, body)


def fid_of(body):
    return body[:16].rstrip(b"\0").decode() + "/" + body[16:].decode()


def members_of(cluster, fid):
    group = fid.partition("/")[0]
    return [n for n in cluster.nodes if n.group == group]


def node_label(node):
    return "%s %s:%d" % (node.group, node.ip, node.port)


def random_size(rnd):
    r = rnd.random()
    if r < 0.70:
        return rnd.randint(1, 8 * 1024)
    if r < 0.95:
        return rnd.randint(8 * 1024, 64 * 1024)
    return rnd.randint(64 * 1024 + 1, 400 * 1024)   # streamed, not inline


# ------------------------------------------------------------------ load

def uploader(cluster, ledger, rnd, stop):
    while not stop.is_set():
        tracker = rnd.choice(cluster.tracker_addrs)
        try:
            st, target = wire.query_store(tracker, timeout=OP_TIMEOUT)
        except (OSError, wire.ProtoError):
            ledger.count("store query failed")
            stop.wait(0.05)
            continue
        if st != 0:
            ledger.count("store query errno %d" % st)
            stop.wait(0.05)
            continue
        seed = rnd.getrandbits(63)
        data = content(seed, random_size(rnd))
        addr = (target["ip"], target["port"])
        try:
            st, body = storage_call(addr, wire.S_UPLOAD,
                                    wire.upload_body(data, "bin", target["spi"]))
        except NotSent:
            ledger.count("upload not sent")
            stop.wait(0.05)
            continue
        except (OSError, wire.ProtoError):
            ledger.count("upload uncertain")
            continue
        if st != 0:
            ledger.count("upload errno %d" % st)
            stop.wait(0.05)
            continue
        fid = fid_of(body)
        crc = crc32(data)
        info = wire.decode_file_id(fid)
        if fid.partition("/")[0] != target["group"] or info["crc32"] != crc \
                or info["size"] != len(data) or info["source_ip"] != target["ip"]:
            ledger.violation("upload of %d bytes (crc %08x) to %s %s:%d acknowledged as %s "
                             "(id says %r)" % (len(data), crc, target["group"], *addr, fid, info))
            continue
        ledger.add_upload(fid, len(data), crc, seed)


def update_target(tracker, fid, ledger, what):
    """103 QUERY_UPDATE on `tracker`: the storage to change `fid` on, or None (counted
    in the ledger under `what`)."""
    group, _, remote = fid.partition("/")
    try:
        st, info = wire.query_fetch(tracker, group, remote, cmd=wire.T_QUERY_UPDATE,
                                    timeout=OP_TIMEOUT)
    except (OSError, wire.ProtoError):
        ledger.count("%s query failed" % what)
        return None
    if st != 0:
        ledger.count("%s query errno %d" % (what, st))
        return None
    return (info["ip"], info["port"])


def deleter(cluster, ledger, rnd, stop):
    while not stop.wait(rnd.uniform(0.0, 0.03)):
        fid = ledger.claim_for_delete(rnd)
        if fid is None:
            continue
        group, _, remote = fid.partition("/")
        outcome, addr = "no", None
        try:
            if rnd.random() < 0.5:
                # Where a client library deletes: the storage the tracker names.
                addr = update_target(rnd.choice(cluster.tracker_addrs), fid, ledger, "update")
                if addr is None:
                    continue
            else:
                # Any member, source or not.
                addr = rnd.choice(members_of(cluster, fid)).addr
            try:
                st, _ = storage_call(addr, wire.S_DELETE, wire.group_field(group) + remote.encode())
            except NotSent:
                ledger.count("delete not sent")
                continue
            except (OSError, wire.ProtoError):
                ledger.count("delete uncertain")
                outcome = "uncertain"
                continue
            if st == 0:
                ledger.count("delete ok")
                outcome = "ok"
            elif st == wire.ENOENT:
                # Not on that member yet: nothing was done.
                ledger.count("delete ENOENT (copy not there yet)")
            else:
                ledger.count("delete errno %d" % st)
                outcome = "uncertain"
        finally:
            ledger.delete_done(fid, outcome, addr)


def downloader(cluster, ledger, rnd, stop):
    while not stop.wait(0.01):
        fid, want = ledger.pick_live(rnd)
        if fid is None:
            continue
        group, _, remote = fid.partition("/")
        if rnd.random() < 0.5:
            tracker = rnd.choice(cluster.tracker_addrs)
            try:
                st, info = wire.query_fetch(tracker, group, remote, timeout=OP_TIMEOUT)
            except (OSError, wire.ProtoError):
                ledger.count("fetch query failed")
                continue
            if st != 0:
                ledger.count("fetch query errno %d" % st)
                continue
            addr = (info["ip"], info["port"])
        else:
            addr = rnd.choice(members_of(cluster, fid)).addr
        try:
            st, body = wire.download(addr, fid, timeout=OP_TIMEOUT)
        except (OSError, wire.ProtoError):
            ledger.count("download failed")
            continue
        if st != 0:
            ledger.count("download errno %d" % st)
            continue
        got = (len(body), crc32(body))
        if got != want or body != ledger.content_of(fid):
            ledger.violation("download of %s from %s:%d: %d bytes crc %08x, want %d bytes "
                             "crc %08x" % (fid, *addr, got[0], got[1], want[0], want[1]))
        else:
            ledger.count("download ok")


APPENDERS_PER_CLIENT = 4


def appender_request(cmd, fid, data=b"", offset=0):
    r = fid.partition("/")[2].encode()
    if cmd == wire.S_APPEND:
        return struct.pack(">QQ", len(r), len(data)) + r + data
    if cmd == wire.S_MODIFY:
        return struct.pack(">QQQ", len(r), offset, len(data)) + r + data
    return struct.pack(">QQ", len(r), offset) + r           # truncate to `offset` bytes


def appender_client(cluster, ledger, book, rnd, stop):
    """Creates appender files and changes them as a client library does (the storage
    the trackers name for an update); one client owns its files, so the content each
    acknowledged change leaves is known."""
    mine = []
    while not stop.wait(rnd.uniform(0.0, 0.02)):
        tracker = rnd.choice(cluster.tracker_addrs)
        if len(mine) < APPENDERS_PER_CLIENT or rnd.random() < 0.03:
            create_appender(ledger, book, rnd, tracker, mine)
            continue
        fid = rnd.choice(mine)
        before = book.get(fid)
        kind = rnd.choice(["append", "append", "modify", "truncate"])
        if kind == "modify" and before:
            offset = rnd.randint(0, len(before))
            data = rnd.randbytes(rnd.randint(1, 8 * 1024))
            after = before[:offset] + data + before[offset + len(data):]
            cmd, body = wire.S_MODIFY, appender_request(wire.S_MODIFY, fid, data, offset)
        elif kind == "truncate" and before:
            size = rnd.randint(0, len(before))
            after = before[:size]
            cmd, body = wire.S_TRUNCATE, appender_request(wire.S_TRUNCATE, fid, offset=size)
        else:
            kind = "append"
            data = rnd.randbytes(rnd.randint(1, 16 * 1024))
            after = before + data
            cmd, body = wire.S_APPEND, appender_request(wire.S_APPEND, fid, data)
        addr = update_target(tracker, fid, ledger, "appender update")
        if addr is None:
            continue
        what = "%s on %s:%d (%d -> %d bytes)" % (kind, *addr, len(before), len(after))
        try:
            st, _ = storage_call(addr, cmd, body)
        except NotSent:
            ledger.count("%s not sent" % kind)
            continue
        except (OSError, wire.ProtoError) as e:
            ledger.count("%s uncertain" % kind)
            book.note(fid, "%s: outcome unknown (%r)" % (what, e))
            book.unknown(fid, before, after)
            mine.remove(fid)
            continue
        if st != 0:
            ledger.count("%s errno %d" % (kind, st))
            book.note(fid, "%s: errno %d" % (what, st))
            continue
        ledger.count("%s ok" % kind)
        book.note(fid, "%s: ok, crc %08x" % (what, crc32(after)))
        book.changed(fid, after, addr[0])
        if rnd.random() < 0.3:
            check_appender_read(cluster, ledger, book, rnd, fid)


def create_appender(ledger, book, rnd, tracker, mine):
    try:
        st, target = wire.query_store(tracker, timeout=OP_TIMEOUT)
    except (OSError, wire.ProtoError):
        ledger.count("store query failed")
        return
    if st != 0:
        ledger.count("store query errno %d" % st)
        return
    data = rnd.randbytes(rnd.randint(0, 16 * 1024))
    addr = (target["ip"], target["port"])
    try:
        st, body = storage_call(addr, wire.S_UPLOAD_APPENDER,
                                wire.upload_body(data, "log", target["spi"]))
    except NotSent:
        ledger.count("appender upload not sent")
        return
    except (OSError, wire.ProtoError):
        ledger.count("appender upload uncertain")
        return
    if st != 0:
        ledger.count("appender upload errno %d" % st)
        return
    fid = fid_of(body)
    info = wire.decode_file_id(fid)
    if not info["appender"] or fid.partition("/")[0] != target["group"] \
            or info["source_ip"] != target["ip"]:
        ledger.violation("appender upload to %s %s:%d acknowledged as %s (id says %r)"
                         % (target["group"], *addr, fid, info))
        return
    ledger.count("appender upload ok")
    book.note(fid, "created on %s:%d with %d bytes" % (*addr, len(data)))
    book.created(fid, data)
    mine.append(fid)


def check_appender_read(cluster, ledger, book, rnd, fid):
    """A read through a tracker right after a change: the storage it names serves the
    content the change left (appenders are read from their source)."""
    group, _, remote = fid.partition("/")
    want = book.get(fid)
    try:
        st, info = wire.query_fetch(rnd.choice(cluster.tracker_addrs), group, remote,
                                    timeout=OP_TIMEOUT)
        if st != 0:
            ledger.count("appender fetch query errno %d" % st)
            return
        addr = (info["ip"], info["port"])
        st, body = wire.download(addr, fid, timeout=OP_TIMEOUT)
    except (OSError, wire.ProtoError):
        ledger.count("appender download failed")
        return
    if st != 0:
        ledger.count("appender download errno %d" % st)
    elif body != want:
        ledger.violation("appender %s read from %s:%d right after a change: %d bytes crc "
                         "%08x, want %d bytes crc %08x; its last changes:\n%s"
                         % (fid, *addr, len(body), crc32(body), len(want), crc32(want),
                            book.story(fid)))
    else:
        ledger.count("appender download ok")


# ------------------------------------------------------------------ chaos

class Victim:
    """One daemon the chaos may kill (SIGKILL, then start) or pause (SIGSTOP, SIGCONT)."""

    def __init__(self, label, daemon):
        self.label = label
        self.daemon = daemon
        self.state = "up"          # "up" | "killed" | "stopped"
        self.back_at = None

    def kill(self):
        self.daemon.proc.kill()
        self.daemon.proc.wait(10)
        self.daemon.stderr_fh.close()
        self.state = "killed"

    def pause(self):
        self.daemon.proc.send_signal(signal.SIGSTOP)
        self.state = "stopped"

    def recover(self):
        if self.state == "killed":
            self.daemon.start()
        elif self.state == "stopped":
            self.daemon.proc.send_signal(signal.SIGCONT)
        self.state = "up"
        self.back_at = None


def victims_of(cluster):
    out = [Victim("tracker %s:%d" % a, d) for a, d in zip(
        cluster.tracker_addrs, [cluster.tracker] + [d for _, _, d in cluster.extra_trackers])]
    out += [Victim("storage " + node_label(n), n.daemon) for n in cluster.nodes]
    return out


class Link:
    """Two addresses the chaos may cut apart with iptables: both ways, or one way (the
    packets of one side dropped, the other's passing), until healed."""

    def __init__(self, label, a, b, partition):
        self.label = label
        self.a = a
        self.b = b
        self.partition = partition
        self.state = "up"          # "up" | "cut"
        self.rules = []
        self.back_at = None

    def cut(self, rnd):
        r = rnd.random()
        if r < 0.5:
            self.rules = self.partition.cut(self.a, self.b)
            how = "%s cut (both ways)" % self.label
        else:
            src, dst = (self.a, self.b) if r < 0.75 else (self.b, self.a)
            self.rules = self.partition.one_way(src, dst)
            how = "%s cut one way (%s -> %s dropped)" % (self.label, src, dst)
        self.state = "cut"
        return how

    def recover(self):
        self.partition.heal(self.rules)
        self.rules = []
        self.state = "up"
        self.back_at = None


def links_of(cluster, partition):
    """The two storages of each group; each storage and each tracker."""
    if partition is None:
        return []
    out = []
    for g in cluster.groups:
        members = [n for n in cluster.nodes if n.group == g]
        for i, x in enumerate(members):
            for y in members[i + 1:]:
                out.append(Link("%s %s <-> %s" % (g, x.ip, y.ip), x.ip, y.ip, partition))
    for n in cluster.nodes:
        for ip, port in cluster.tracker_addrs:
            out.append(Link("storage %s <-> tracker %s:%d" % (node_label(n), ip, port), n.ip, ip,
                            partition))
    return out


class Chaos:
    def __init__(self, cluster, rnd, seconds, ledger, partition=None):
        self.cluster = cluster
        self.rnd = rnd
        self.seconds = seconds
        self.ledger = ledger
        self.victims = victims_of(cluster)
        self.links = links_of(cluster, partition)
        self.events = []
        self.t0 = time.monotonic()
        self.error = None

    def log(self, text):
        line = "[chaos %6.2fs] %s" % (time.monotonic() - self.t0, text)
        self.events.append(line)
        print(line, flush=True)

    def check_unexpected_exits(self):
        for v in self.victims:
            if v.state != "killed" and not v.daemon.alive():
                raise AssertionError("%s exited on its own (status %s) during the chaos"
                                     % (v.label, v.daemon.proc.poll()))

    def run(self):
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            self.recover_all()

    def _run(self):
        rnd = self.rnd
        end = self.t0 + self.seconds
        next_action = self.t0 + rnd.uniform(0.5, 2.0)
        while time.monotonic() < end:
            now = time.monotonic()
            for v in self.victims:
                if v.back_at is not None and now >= v.back_at:
                    was = v.state
                    v.recover()
                    self.log("%s %s" % ("restart" if was == "killed" else "SIGCONT", v.label))
            for link in self.links:
                if link.back_at is not None and now >= link.back_at:
                    link.recover()
                    self.log("heal %s" % link.label)
            self.check_unexpected_exits()
            down = [v for v in self.victims + self.links if v.state != "up"]
            if now >= next_action and len(down) < MAX_DISRUPTED:
                if self.links and rnd.random() < 0.35:
                    link = rnd.choice([x for x in self.links if x.state == "up"])
                    delay = rnd.uniform(1.0, 8.0)
                    self.log("%s (heal in %.1fs)" % (link.cut(rnd), delay))
                    self.ledger.count("chaos partition")
                    link.back_at = time.monotonic() + delay
                    next_action = time.monotonic() + rnd.uniform(0.3, 2.5)
                    time.sleep(0.05)
                    continue
                v = rnd.choice([v for v in self.victims if v.state == "up"])
                delay = rnd.uniform(0.2, 3.5)
                if rnd.random() < 0.5:
                    v.kill()
                    self.ledger.count("chaos SIGKILL")
                    self.log("SIGKILL %s (restart in %.1fs)" % (v.label, delay))
                else:
                    v.pause()
                    self.ledger.count("chaos SIGSTOP")
                    self.log("SIGSTOP %s (SIGCONT in %.1fs)" % (v.label, delay))
                v.back_at = time.monotonic() + delay
                next_action = time.monotonic() + rnd.uniform(0.3, 2.5)
            time.sleep(0.05)

    def recover_all(self):
        for link in self.links:
            if link.state != "up":
                link.recover()
                self.log("heal %s (end of chaos)" % link.label)
        for v in self.victims:
            if v.state != "up":
                was = v.state
                v.recover()
                self.log("%s %s (end of chaos)" % ("restart" if was == "killed" else "SIGCONT",
                                                  v.label))


# ------------------------------------------------------------------ convergence

def storage_statuses(c, tracker_addr, group):
    """92 LIST_STORAGE on one tracker -> {ip: status}."""
    return {s["ip"]: s["status"] for s in c.list_storages(group, tracker=tracker_addr)}


def status_name(code):
    return STATUS_NAMES.get(code, str(code))


def binlog_end(node):
    sync = node.base / "data" / "sync"
    index = 0
    try:
        for line in (sync / "binlog_index.dat").read_text().splitlines():
            if line.startswith("current_write="):
                index = int(line.split("=", 1)[1])
    except OSError:
        pass
    path = sync / ("binlog.%03d" % index)
    return index, (path.stat().st_size if path.exists() else 0)


def mark_pos(node, peer):
    p = node.base / "data" / "sync" / ("%s_%d.mark" % (peer.ip, peer.port))
    try:
        kv = dict(l.split("=", 1) for l in p.read_text().splitlines() if "=" in l)
        return int(kv["binlog_index"]), int(kv["binlog_offset"])
    except (OSError, KeyError, ValueError):
        return None


def replication_lag(cluster):
    """[(node, peer, mark, binlog end)] for every peer not caught up with a binlog."""
    lag = []
    for node in cluster.nodes:
        end = binlog_end(node)
        for peer in cluster.nodes:
            if peer is not node and peer.group == node.group:
                m = mark_pos(node, peer)
                if m != end:
                    lag.append((node_label(node), node_label(peer), m, end))
    return lag


def binlog_history(cluster, fid):
    """Every binlog line naming fid, per member of its group."""
    remote = fid.partition("/")[2]
    out = []
    for n in members_of(cluster, fid):
        lines = []
        for p in sorted((n.base / "data" / "sync").glob("binlog.[0-9][0-9][0-9]")):
            try:
                lines += [l for l in p.read_text().splitlines() if (" " + remote) in l]
            except OSError:
                pass
        out.append("    binlog of %s: %s" % (node_label(n), lines or "(nothing)"))
    return "\n".join(out)


def probe(node, fids, want=None):
    """Downloads fids from node -> {fid: (status, size, crc32) or ("error", repr)}; with
    `want` (fid -> the bytes it should hold), (status, size, crc32, bytes equal)."""
    def keep(fid, st, body):
        seen = (st, len(body), crc32(body))
        return seen if want is None else seen + (st == 0 and body == want(fid),)
    return wire.download_each(node.addr, fids, OP_TIMEOUT, keep)


def describe(seen):
    if seen[0] == "error":
        return "error %s" % seen[1]
    if seen[0] != 0:
        return "errno %d" % seen[0]
    return "%d bytes crc %08x%s" % (seen[1], seen[2],
                                    " (other bytes)" if seen[3:] == (False,) else "")


# ------------------------------------------------------------------ the test

def cluster_view(c):
    """Leader and storage statuses as each tracker sees them (for messages)."""
    out = {}
    for t in c.tracker_addrs:
        view = {"leader": leader_of(t)}
        for g in c.groups:
            try:
                view[g] = {ip: status_name(v) for ip, v in storage_statuses(c, t, g).items()}
            except (OSError, wire.ProtoError) as e:
                view[g] = repr(e)
        out["%s:%d" % t] = view
    return out


def one_leader(c):
    c.check_alive()
    seen = {leader_of(a) for a in c.tracker_addrs}
    return len(seen) == 1 and None not in seen


def not_active(c):
    """{"tracker -> storage": status} for every storage some tracker does not see ACTIVE
    (every tracker counts, not only the one clients ask first)."""
    c.check_alive()
    out = {}
    for t in c.tracker_addrs:
        for group in c.groups:
            st = storage_statuses(c, t, group)
            for n in c.nodes:
                if n.group == group and st.get(n.ip) != STATUS_ACTIVE:
                    out["%s:%d -> %s" % (t[0], t[1], node_label(n))] = status_name(st.get(n.ip))
    return out


def test_chaos_keeps_acknowledged_files_and_deletes(six, links):
    c = six
    seed = chaos_seed()
    print("\nchaos seed %d (replay: FDFS_CHAOS_SEED=%d), %.0fs of chaos%s"
          % (seed, seed, CHAOS_SECONDS, "" if links else " (no partitions)"), flush=True)

    problems = []
    # The starting point: one leader, every storage ACTIVE on it.
    leader_view = {}

    def started():
        if not one_leader(c):
            return False
        leader = leader_of(c.tracker_addrs[0])
        leader_view.clear()
        leader_view.update({k: v for k, v in not_active(c).items() if k.startswith(leader + " ")})
        return not leader_view
    try:
        wait_for(started, RECOVER_DEADLINE, interval=0.2,
                 what="one leader and every storage ACTIVE on it")
    except TimeoutError as e:
        raise AssertionError("before any chaos: %s\nnot ACTIVE: %s\nview: %s\n%s"
                             % (e, leader_view, cluster_view(c), c.logs()))
    # Every tracker should agree.  A disagreement left over from the start is a fault
    # of its own: reported at the end, and not blamed on the chaos.
    stuck_before = {}
    try:
        wait_for(lambda: not not_active(c), 30, interval=0.2,
                 what="every storage ACTIVE on every tracker")
    except TimeoutError as e:
        stuck_before = not_active(c)
        problems.append("before any chaos: %s\n  not ACTIVE (tracker -> storage: status "
                        "there): %s\n  view: %s" % (e, stuck_before, cluster_view(c)))
        print("WARNING " + problems[-1], flush=True)

    master = random.Random(seed)
    ledger = Ledger()
    book = Appenders()
    stop = threading.Event()
    workers = []
    for k in range(3):
        workers.append(threading.Thread(target=uploader, name="upload%d" % k, daemon=True,
                                        args=(c, ledger, random.Random(master.random()), stop)))
    for k in range(2):
        workers.append(threading.Thread(target=deleter, name="delete%d" % k, daemon=True,
                                        args=(c, ledger, random.Random(master.random()), stop)))
    for k in range(2):
        workers.append(threading.Thread(target=downloader, name="download%d" % k, daemon=True,
                                        args=(c, ledger, random.Random(master.random()), stop)))
    for k in range(3):
        workers.append(threading.Thread(target=appender_client, name="appender%d" % k,
                                        daemon=True, args=(c, ledger, book,
                                                           random.Random(master.random()), stop)))
    chaos = Chaos(c, random.Random(master.random()), CHAOS_SECONDS, ledger, links)
    chaos_thread = threading.Thread(target=chaos.run, name="chaos", daemon=True)

    def context():
        with ledger.lock:
            counts = dict(sorted(ledger.counts.items()))
        return ("seed %d (FDFS_CHAOS_SEED=%d to replay)\ncounts: %s\nchaos schedule:\n%s\n"
                % (seed, seed, counts, "\n".join(chaos.events)))

    t_start = time.monotonic()
    try:
        for w in workers:
            w.start()
        # Some files exist before the first blow.
        wait_for(lambda: len(ledger.acked) >= 20, 30, what="20 uploads before the chaos")
        chaos.t0 = ledger.t0 = book.t0 = time.monotonic()
        chaos_thread.start()
        chaos_thread.join(CHAOS_SECONDS + 60)
        assert not chaos_thread.is_alive(), "chaos thread stuck\n" + context()
    finally:
        stop.set()
        for w in workers:
            w.join(OP_TIMEOUT * 4)
        if chaos_thread.is_alive():
            chaos_thread.join(30)
        # Never leave a daemon paused or dead, whatever happened.
        chaos.recover_all()
    t_chaos_end = time.monotonic()
    assert not any(w.is_alive() for w in workers), "load threads stuck\n" + context()
    if chaos.error is not None:
        raise AssertionError("chaos: %s\n%s\n%s" % (chaos.error, context(), c.logs()))
    if ledger.violations:
        # Reported with what the convergence checks find.
        problems.append("%d wrong answers during the load, first ones:\n  %s" % (
            len(ledger.violations), "\n  ".join(ledger.violations[:12])))

    keep, deleted, uncertain = ledger.final()
    print("load: %d uploads acknowledged, %d deletes acknowledged, %d deletes uncertain; %s"
          % (len(ledger.acked), len(deleted), len(uncertain), dict(sorted(ledger.counts.items()))),
          flush=True)
    assert ledger.counts["upload ok"] >= 100, "too little load got through\n" + context()
    assert ledger.counts["delete ok"] >= 10, "too few deletes got through\n" + context()
    assert ledger.counts["chaos SIGKILL"] + ledger.counts["chaos SIGSTOP"] >= 5, context()
    assert ledger.counts["append ok"] >= 50, "too few appends got through\n" + context()
    assert not links or ledger.counts["chaos partition"] >= 3, context()

    # ---- everything back: one leader, every storage ACTIVE on every tracker
    left = {}

    def recovered():
        left.clear()
        left.update({k: v for k, v in not_active(c).items() if k not in stuck_before})
        return one_leader(c) and not left
    try:
        wait_for(recovered, RECOVER_DEADLINE, interval=0.2,
                 what="one leader and every storage ACTIVE on every tracker")
    except TimeoutError as e:
        problems.append("after the chaos: %s\n  not ACTIVE (tracker -> storage: status "
                        "there): %s\n  view: %s" % (e, left, cluster_view(c)))
        raise AssertionError("%s\n%s\n%s" % ("\n\n".join(problems), context(), c.logs()))
    t_recovered = time.monotonic()

    # ---- replication drains: every mark reaches the end of its binlog
    try:
        wait_for(lambda: not replication_lag(c), SYNC_DEADLINE, interval=0.5,
                 what="every storage's marks at the end of its binlog")
        # Drained: what is missing or left over now will not change any more; the
        # deadlines below only cover the last marks being saved ahead of their copies.
        settle = SETTLE_DEADLINE
    except TimeoutError as e:
        problems.append("%s\n  lagging (node, peer, mark, binlog end): %s"
                        % (e, replication_lag(c)))
        settle = SYNC_DEADLINE

    # ---- every kept file on every member, right content
    pending = {(fid, i) for fid in keep for i, n in enumerate(c.nodes)
               if n.group == fid.partition("/")[0]}
    last_seen = {}

    def all_present():
        by_node = collections.defaultdict(list)
        for fid, i in pending:
            by_node[i].append(fid)
        for i, fids in by_node.items():
            for fid, seen in probe(c.nodes[i], fids, ledger.content_of).items():
                if seen[0] == 0 and seen[1:] == keep[fid] + (True,):
                    pending.discard((fid, i))
                else:
                    last_seen[(fid, i)] = seen
        return not pending

    try:
        wait_for(all_present, settle, interval=1.0,
                 what="%d acknowledged files on every member of their group" % len(keep))
    except TimeoutError as e:
        problems.append(missing_report(c, e, pending, last_seen, keep))

    # ---- every replica of every appender holds what its acknowledged changes left
    appenders, unknown = book.final()
    wrong = {}

    def appenders_right():
        wrong.clear()
        wrong.update(appender_mismatches(c, appenders, unknown))
        return not wrong

    try:
        wait_for(appenders_right, settle, interval=1.0,
                 what="%d appenders (and %d whose last change is unknown) identical on every "
                      "member" % (len(appenders), len(unknown)))
    except TimeoutError as e:
        problems.append(appender_report(c, e, wrong, appenders, unknown, book))

    # ---- every acknowledged delete holds on every member, and stays so
    found = []

    def none_left():
        found[:] = deleted_but_present(c, deleted)
        return not found

    try:
        wait_for(none_left, settle, interval=1.0,
                 what="%d deleted files gone from every member" % len(deleted))
    except TimeoutError:
        problems.append(resurrected_report(c, found, deleted,
                                           "still there after waiting %.0fs "
                                           "more" % settle))
    else:
        # Once the replication is quiet again, nothing may come back.
        wait_for(lambda: not replication_lag(c), SYNC_DEADLINE, interval=0.5,
                 what="replication quiet after the checks")
        again = deleted_but_present(c, deleted)
        if again:
            problems.append(resurrected_report(c, again, deleted, "came back"))
    if not pending:
        pending = {(fid, i) for fid in keep for i, n in enumerate(c.nodes)
                   if n.group == fid.partition("/")[0]}
        all_present()
        if pending:
            problems.append(missing_report(c, "kept files lost after convergence", pending,
                                           last_seen, keep))

    if problems:
        raise AssertionError("%s\n%s\n%s" % ("\n\n".join(problems), context(), c.logs()))

    t_end = time.monotonic()
    print("load and chaos %.1fs, recovered in %.1fs, converged and checked in %.1fs: "
          "%d files on every member, %d deletes held, %d uncertain deletes ignored, "
          "%d appenders (%d with an unknown last change) identical everywhere"
          % (t_chaos_end - t_start, t_recovered - t_chaos_end, t_end - t_recovered,
             len(keep), len(deleted), len(uncertain), len(appenders), len(unknown)),
          flush=True)


def appender_mismatches(c, appenders, unknown):
    """{(fid, node index): what it holds} for every replica that differs from what was
    acknowledged (for an appender whose last change is unknown: from either possible
    content, or from the other replicas)."""
    wrong = {}
    by_node = collections.defaultdict(list)
    for fid in list(appenders) + list(unknown):
        for i, n in enumerate(c.nodes):
            if n.group == fid.partition("/")[0]:
                by_node[i].append(fid)
    held = collections.defaultdict(dict)
    for i, fids in by_node.items():
        for fid, seen in wire.download_each(c.nodes[i].addr, fids, OP_TIMEOUT).items():
            held[fid][i] = seen
    for fid, replicas in held.items():
        allowed = [appenders[fid]] if fid in appenders else unknown[fid]
        bodies = {seen for seen in replicas.values()}
        for i, seen in replicas.items():
            if seen[0] != 0 or seen[1] not in allowed or len(bodies) != 1:
                wrong[(fid, i)] = seen
    return wrong


def appender_report(c, why, wrong, appenders, unknown, book):
    lines = []
    # Appenders changed only on their source first: what is wrong with them has nothing
    # to do with changes made on two members.
    order = sorted(wrong.items(), key=lambda kv: (book.changed_elsewhere(kv[0][0]), kv[0]))
    for (fid, i), seen in order[:20]:
        if seen[0] == 0:
            body = seen[1]
            what = "%d bytes crc %08x" % (len(body), crc32(body))
        else:
            what = "errno %s" % (seen[0],) if seen[0] != "error" else "error %s" % seen[1]
        if fid in appenders:
            want = "want %d bytes crc %08x" % (len(appenders[fid]), crc32(appenders[fid]))
        else:
            want = "want one of %s" % ", ".join("%d bytes crc %08x" % (len(b), crc32(b))
                                                 for b in unknown[fid])
        lines.append("  %s on %s: %s, %s (source %s%s)\n%s\n    its last changes:\n%s"
                     % (fid, node_label(c.nodes[i]), what, want,
                        wire.decode_file_id(fid)["source_ip"],
                        "" if book.changed_elsewhere(fid) else ", changed only there",
                        binlog_history(c, fid), book.story(fid)))
    fids = {fid for fid, _ in wrong}
    elsewhere = sum(1 for fid in fids if book.changed_elsewhere(fid))
    return ("%s\n%d replicas of %d appenders wrong (%d of these appenders had changes "
            "acknowledged by a member other than their source), first ones:\n%s"
            % (why, len(wrong), len(fids), elsewhere, "\n".join(lines)))


def deleted_but_present(c, deleted):
    """[(fid, node index, what was seen)] for deleted files some member still answers
    with anything but ENOENT."""
    found = []
    by_node = collections.defaultdict(list)
    for fid in deleted:
        for i, n in enumerate(c.nodes):
            if n.group == fid.partition("/")[0]:
                by_node[i].append(fid)
    for i, fids in by_node.items():
        for fid, seen in probe(c.nodes[i], fids).items():
            if seen[0] != wire.ENOENT:
                found.append((fid, i, seen))
    return sorted(found)


def resurrected_report(c, found, deleted, when):
    lines = []
    for fid, i, seen in found[:20]:
        lines.append("  %s on %s: saw %s (delete acknowledged by %s:%d; uploaded to %s)\n%s"
                     % (fid, node_label(c.nodes[i]), describe(seen), *deleted[fid],
                        wire.decode_file_id(fid)["source_ip"], binlog_history(c, fid)))
    return "%d copies of deleted files %s, first ones:\n%s" % (len(found), when, "\n".join(lines))


def missing_report(c, why, pending, last_seen, keep):
    lines = []
    for fid, i in sorted(pending)[:20]:
        lines.append("  %s on %s: saw %s, want %d bytes crc %08x (uploaded to %s)\n%s" % (
            fid, node_label(c.nodes[i]), describe(last_seen.get((fid, i), ("error", "?"))),
            keep[fid][0], keep[fid][1], wire.decode_file_id(fid)["source_ip"],
            binlog_history(c, fid)))
    return "%s\n%d (file, member) pairs missing or wrong, first ones:\n%s" % (
        why, len(pending), "\n".join(lines))
