"""Fixtures that run the real fdfs_trackerd / fdfs_storaged on loopback.

* Each daemon gets its own random 127.0.0.x (x in 2..254) and random port,
  checked bindable first, so several suites can run side by side.
* Readiness is polled (tracker cmd 101 answers status 0 => an ACTIVE,
  writable storage), never slept for.
* Teardown: SIGTERM, wait, SIGKILL if needed.  When a test fails, the tail of
  every daemon log is attached to the report.

Environment:
  FDFS_BIN_DIR            where the binaries are (default <repo>/target/debug)
  FDFS_TESTS_VENVS        venv root (default <repo>/.venv-tests)
  FDFS_REQUIRE_BINARIES=1 fail instead of skip when the daemons are missing
"""

import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fdfs_wire as wire  # noqa: E402
from fdfs_helpers import b64, listen_port, snapshot_tree, unb64, wait_for  # noqa: E402

REPO = HERE.parent.parent
BIN_DIR = Path(os.environ.get("FDFS_BIN_DIR") or REPO / "target" / "debug")
VENVS = Path(os.environ.get("FDFS_TESTS_VENVS") or REPO / ".venv-tests")
DRIVERS = HERE / "drivers"
RESULT_MARKER = "@@FDFS_DRIVER_RESULT@@ "

READY_DEADLINE = 30.0
STOP_GRACE = 10.0

# clients -> which cluster flavour they need (see drivers/*.py)
CLIENTS = {
    "py3fdfs": "auto",
    "fdfs_client_py3": "auto",
    "aiofdfs": "auto",
    "fastdfs_client": "ipv6",   # hard-codes 46-byte IP fields
}


# ------------------------------------------------------------------ helpers



_claimed = set()


def pick_addr():
    """A random free (127.0.0.x, port) pair, x in 2..254."""
    rnd = random.SystemRandom()
    for _ in range(500):
        ip = "127.0.0.%d" % rnd.randint(2, 254)
        port = listen_port(rnd)
        # One address per daemon, as in a real cluster (FastDFS tells storages apart
        # by IP); the loopback range has room for every daemon of a session.
        if any(ip == claimed_ip for claimed_ip, _ in _claimed):
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((ip, port))
        except OSError:
            continue
        finally:
            s.close()
        _claimed.add((ip, port))
        return ip, port
    raise RuntimeError("no bindable loopback address found")


def release_addrs(ips):
    """Lets later clusters of the session use `ips` again (their daemons are stopped for
    good): a session's clusters need more addresses than 127.0.0.x has."""
    _claimed.difference_update({(ip, port) for ip, port in _claimed if ip in ips})


def binary(name):
    p = BIN_DIR / name
    return p if p.is_file() and os.access(p, os.X_OK) else None


def require_binary(name):
    p = binary(name)
    if p is None:
        msg = "%s not built (looked in %s; set FDFS_BIN_DIR)" % (name, BIN_DIR)
        if os.environ.get("FDFS_REQUIRE_BINARIES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return p


def refused_startup(daemon, conf_text, tmp_path):
    """Starts `daemon` in the foreground with a config that must be refused: -> stderr
    (the daemon must have exited non-zero)."""
    conf = tmp_path / "refused.conf"
    conf.write_text(conf_text)
    run = subprocess.run([str(require_binary(daemon)), str(conf), "start", "--foreground"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode != 0, "%s accepted:\n%s" % (daemon, conf_text)
    return run.stderr


def tail(path, max_bytes=6000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        return "<%s>" % e






# ------------------------------------------------------------------ daemons

class Daemon:
    # How long a stop waits after SIGTERM before SIGKILL.
    stop_grace = STOP_GRACE

    def __init__(self, name, exe, conf, base_path, log_name, wrapper=None):
        self.name = name
        # A command the daemon runs under, e.g. ["env", "LD_PRELOAD=...", "FAKETIME=+400s"];
        # it must exec the daemon, so that signals reach it.
        self.wrapper = list(wrapper or [])
        self.exe = exe
        self.conf = conf
        self.base_path = Path(base_path)
        self.log_file = self.base_path / "logs" / log_name
        self.stderr_file = self.base_path / ("%s.stderr" % name)
        self.proc = None

    def start(self):
        self.stderr_fh = open(self.stderr_file, "ab")
        self.proc = subprocess.Popen(
            [*self.wrapper, str(self.exe), str(self.conf), "start", "--foreground"],
            stdin=subprocess.DEVNULL, stdout=self.stderr_fh, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(self.base_path))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.stderr_fh.close()
        return self.proc.returncode

    def logs(self):
        if self.proc is None:
            return "--- %s: not started ---" % self.name
        parts = ["--- %s (pid %s, exit %s) stderr %s ---\n%s" % (
            self.name, self.proc.pid if self.proc else None,
            self.proc.poll() if self.proc else None, self.stderr_file, tail(self.stderr_file))]
        if self.log_file.exists():
            parts.append("--- %s log %s ---\n%s" % (self.name, self.log_file, tail(self.log_file)))
        return "\n".join(parts)


STATUS_ACTIVE = 7

# storage_ids.conf: the first storage node gets this id, the next ones the following.
FIRST_STORAGE_ID = 100001


def pick_port(ip, taken=()):
    """A random free port on `ip` (not one of `taken`): several daemons on one address
    (storage instances of one host, 6.16 multi-instance)."""
    rnd = random.SystemRandom()
    for _ in range(500):
        port = listen_port(rnd)
        if port in taken or (ip, port) in _claimed:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((ip, port))
        except OSError:
            continue
        finally:
            s.close()
        _claimed.add((ip, port))
        return port
    raise RuntimeError("no bindable port on %s" % ip)


class StorageNode:
    """One storage daemon of a cluster.  With storage ids (Cluster(use_storage_id=...)),
    `storage_id` is its id in storage_ids.conf (None: not listed there) and `rw` its
    `rw=` option there (None: none written, i.e. both)."""

    def __init__(self, group, ip, port, base, store_paths, conf, daemon, storage_id=None,
                 rw=None, extra="", omit_group_name=False, server_id=None):
        self.group = group
        self.ip = ip
        self.port = port
        self.base = Path(base)
        self.store_paths = store_paths
        self.conf = conf
        self.daemon = daemon
        self.storage_id = storage_id
        self.rw = rw
        # what storage_conf_text was given for it (write_node_conf writes it again)
        self.extra = extra
        self.omit_group_name = omit_group_name
        self.server_id = server_id

    @property
    def addr(self):
        return (self.ip, self.port)

    def kill(self):
        """SIGKILL, no goodbye."""
        if self.daemon.alive():
            self.daemon.proc.kill()
            self.daemon.proc.wait(10)
        self.daemon.stderr_fh.close()

    def restart(self):
        self.daemon.stop()
        self.daemon.start()


class Cluster:
    """One tracker + one storage (group1), each on its own 127.0.0.x.
    With storages=N (per group) and groups=[...], more storages; `nodes` lists
    them all, `self.storage` is the first.  tracker_wrapper / storage_wrappers
    ({node index: command}) run daemons under a command that execs them, such as
    `env LD_PRELOAD=... FAKETIME=...`.

    Storage ids (all off unless use_storage_id is given):
      use_storage_id=True|False  tracker.conf `use_storage_id`, with `storage_ids_filename`
                                 naming root/storage_ids.conf (absolute) and
      id_type_in_filename="ip"|"id" (tracker.conf; written when given).
      storage_ids.conf lists every node (`<id> <group> <ip>:<port>[ rw=...]`), ids
      FIRST_STORAGE_ID, +1, ... in creation order; it is written at construction and
      again by start() (write_storage_ids() after a change, e.g. node.rw = None).
      storage_ids_rw={node index: "none"|"read"|"write"|"both"} the `rw=` options.
      storage_ids_spare=N        N more entries (group `group`, the group's port) for
                                 storages added later: add_storage takes them in order.
      client_storage_ids=True    client.conf gets use_storage_id + storage_ids_filename.
      client_extra               more client.conf lines.
      no_group_name={indices}    these nodes' storage.conf has no group_name (109).
      server_ids=True | {index: id or True}  storage.conf `server_id` (True: its own id).
      one_ip=True                every storage on the first storage's 127.0.0.x, each on
                                 its own port (6.16 multi-instance; needs ID mode).
    """

    def __init__(self, root, name, ip_size="auto", store_paths=2, subdirs=16, group="group1",
                 storages=1, groups=None, storage_extra="", trackers=1, tracker_extra="",
                 tracker_wrapper=None, storage_wrappers=None, use_storage_id=None,
                 id_type_in_filename=None, storage_ids_rw=None, storage_ids_spare=0,
                 client_storage_ids=False, client_extra="", no_group_name=(), server_ids=None,
                 one_ip=False):
        self.root = Path(root)
        self.name = name
        self.use_storage_id = use_storage_id
        self.id_type_in_filename = id_type_in_filename
        self.storage_ids_file = self.root / "storage_ids.conf"
        self.storage_ids_rw = dict(storage_ids_rw or {})
        self.no_group_name = set(no_group_name)
        self.server_ids = server_ids
        self.one_ip = one_ip
        self._next_storage_id = FIRST_STORAGE_ID
        # [(id, group, ip, port)] entries waiting for add_storage
        self.spare_ids = []
        self.ip_size = ip_size
        self.group = group
        self.groups = list(groups) if groups else [group]
        self.storages_per_group = storages
        self.store_path_count = store_paths
        self.subdirs = subdirs
        self.storage_extra = storage_extra
        self.tracker_extra = tracker_extra
        # Node index -> wrapper command, given to each storage when it is created (those
        # of add_storage too, by the index they get).
        self.storage_wrappers = dict(storage_wrappers or {})
        bad = [i for i in self.storage_wrappers if not isinstance(i, int) or i < 0]
        if bad:
            raise ValueError("storage_wrappers: bad node index %s" % bad)
        # Every address this cluster claims, given back when it is stopped for good.
        self.claimed_ips = []
        self.tracker_ip, self.tracker_port = self._pick()
        self.storage_ip, self.storage_port = self._pick()
        first_id = self._take_storage_id() if use_storage_id is not None else None
        self.tracker_base = self.root / "tracker"
        self.storage_base = self.root / "storage"
        self.store_paths = [self.root / ("store%d" % i) for i in range(store_paths)]
        self.client_base = self.root / "client"
        for d in [self.tracker_base, self.storage_base, self.client_base, *self.store_paths]:
            d.mkdir(parents=True, exist_ok=True)
        self.tracker_conf = self.root / "tracker.conf"
        self.storage_conf = self.root / "storage.conf"
        self.client_conf = self.root / "client.conf"
        self.tracker_conf.write_text(self.tracker_conf_text(
            self.tracker_ip, self.tracker_port, self.tracker_base))
        # More trackers (trackers=N): each its own 127.0.0.x; every storage and client
        # lists all of them.
        self.extra_trackers = []
        for i in range(1, trackers):
            ip, port = self._pick()
            base = self.root / ("tracker%d" % i)
            base.mkdir(parents=True, exist_ok=True)
            conf = self.root / ("tracker%d.conf" % i)
            conf.write_text(self.tracker_conf_text(ip, port, base))
            self.extra_trackers.append((ip, port, Daemon(
                "trackerd%d@%s" % (i, name), require_binary("fdfs_trackerd"), conf, base,
                "trackerd.log", wrapper=tracker_wrapper)))
        self.client_storage_ids = client_storage_ids
        self.client_extra = client_extra
        self.write_client_conf()
        self.tracker = Daemon("trackerd@%s" % name, require_binary("fdfs_trackerd"), self.tracker_conf,
                              self.tracker_base, "trackerd.log", wrapper=tracker_wrapper)
        self.storage = Daemon("storaged@%s" % name, require_binary("fdfs_storaged"), self.storage_conf,
                              self.storage_base, "storaged.log",
                              wrapper=self.storage_wrappers.get(0))
        # Every storage of the cluster; the first is `self.storage` (group `group`).
        first = StorageNode(self.group, self.storage_ip, self.storage_port, self.storage_base,
                            self.store_paths, self.storage_conf, self.storage,
                            storage_id=first_id, rw=self.storage_ids_rw.get(0),
                            omit_group_name=0 in self.no_group_name,
                            server_id=self._server_id_for(0, first_id))
        self.nodes = [first]
        self.write_node_conf(first)
        for g in self.groups:
            have = sum(1 for n in self.nodes if n.group == g)
            for _ in range(self.storages_per_group - have):
                self._new_node(g)
        if use_storage_id is not None:
            for _ in range(storage_ids_spare):
                if self.one_ip:
                    ip = self.storage_ip
                    port = pick_port(ip, {n.port for n in self.nodes}
                                     | {s[3] for s in self.spare_ids})
                else:
                    ip = self._free_ip_for_port(self.storage_port)
                    port = self.storage_port
                self.spare_ids.append((self._take_storage_id(), self.group, ip, port))
            self.write_storage_ids()

    # ---------------------------------------------------------------- storage ids

    def _take_storage_id(self):
        sid = str(self._next_storage_id)
        self._next_storage_id += 1
        return sid

    def _server_id_for(self, idx, storage_id):
        """storage.conf `server_id` of node `idx` (None: no such line)."""
        if self.server_ids is True:
            return storage_id
        if isinstance(self.server_ids, dict) and idx in self.server_ids:
            v = self.server_ids[idx]
            return storage_id if v is True else v
        return None

    def storage_ids_lines(self):
        """The lines of storage_ids.conf: every listed node, then the spare entries."""
        out = []
        for n in self.nodes:
            if n.storage_id is not None:
                out.append((int(n.storage_id), "%s %s %s:%d%s\n" % (
                    n.storage_id, n.group, n.ip, n.port, " rw=%s" % n.rw if n.rw else "")))
        for k, (sid, group, ip, port) in enumerate(self.spare_ids):
            rw = self.storage_ids_rw.get(len(self.nodes) + k)
            out.append((int(sid), "%s %s %s:%d%s\n" % (sid, group, ip, port,
                                                     " rw=%s" % rw if rw else "")))
        return [line for _, line in sorted(out)]

    def write_storage_ids(self):
        """(Re)writes storage_ids.conf from the nodes (their storage_id, rw) and spares.
        Daemons read it when they start: restart the trackers to apply a change."""
        if self.use_storage_id is None:
            return
        self.storage_ids_file.write_text(
            "# generated by tests/integration/conftest.py\n" + "".join(self.storage_ids_lines()))

    def storage_ids_conf_lines(self):
        """tracker.conf / client.conf lines naming the storage ids settings."""
        if self.use_storage_id is None:
            return ""
        text = "use_storage_id = %s\nstorage_ids_filename = %s\n" % (
            "true" if self.use_storage_id else "false", self.storage_ids_file)
        return text

    def write_client_conf(self):
        ids = ""
        if self.client_storage_ids:
            ids = "use_storage_id = true\nstorage_ids_filename = %s\n" % self.storage_ids_file
        self.client_conf.write_text(
            "# generated by tests/integration/conftest.py\n"
            "connect_timeout = 5\n"
            "network_timeout = 20\n"
            "base_path = %s\n"
            "%s"
            "log_level = info\n"
            "%s%s"
            % (self.client_base, self.tracker_lines(), ids, self.client_extra))

    def write_node_conf(self, node):
        """Writes `node`'s storage.conf from what the node holds (group, address,
        paths, extra, omit_group_name, server_id)."""
        extra = node.extra
        if node.server_id is not None:
            extra = "server_id = %s\n" % node.server_id + extra
        node.conf.write_text(self.storage_conf_text(
            None if node.omit_group_name else node.group, node.ip, node.port, node.base,
            node.store_paths, extra))

    def _free_ip_for_port(self, port):
        for _ in range(500):
            ip, _ = self._pick()
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((ip, port))
            except OSError:
                continue
            finally:
                s.close()
            return ip
        raise RuntimeError("no 127.0.0.x with port %d free" % port)

    def _pick(self):
        ip, port = pick_addr()
        self.claimed_ips.append(ip)
        return ip, port

    def tracker_conf_text(self, ip, port, base):
        return (
            "# generated by tests/integration/conftest.py\n"
            "disabled = false\n"
            "bind_addr = %s\n"
            "port = %d\n"
            "base_path = %s\n"
            "store_lookup = 0\n"
            "reserved_storage_space = 1%%\n"
            "response_ip_addr_size = %s\n"
            "check_active_interval = 30\n"
            "connect_timeout = 5\n"
            "network_timeout = 20\n"
            "log_level = info\n"
            "%s%s%s"
            % (ip, port, base, self.ip_size, self.storage_ids_conf_lines(),
               "id_type_in_filename = %s\n" % self.id_type_in_filename
               if self.id_type_in_filename else "", self.tracker_extra))

    @property
    def tracker_addrs(self):
        return [self.tracker_addr] + [(ip, port) for ip, port, _ in self.extra_trackers]

    def tracker_lines(self):
        return "".join("tracker_server = %s:%d\n" % a for a in self.tracker_addrs)

    def storage_conf_text(self, group, ip, port, base, store_paths, extra=""):
        paths = "".join("store_path%d = %s\n" % (i, p) for i, p in enumerate(store_paths))
        return (
            "# generated by tests/integration/conftest.py\n"
            "disabled = false\n"
            "%s"
            "bind_addr = %s\n"
            "client_bind = true\n"
            "port = %d\n"
            "base_path = %s\n"
            "store_path_count = %d\n"
            "%s"
            "subdir_count_per_path = %d\n"
            "%s"
            "heart_beat_interval = 1\n"
            "stat_report_interval = 1\n"
            "sync_binlog_buff_interval = 1\n"
            "connect_timeout = 5\n"
            "network_timeout = 20\n"
            "log_level = info\n"
            "%s%s"
            % ("group_name = %s\n" % group if group else "", ip, port, base,
               len(store_paths), paths, self.subdirs, self.tracker_lines(),
               self.storage_extra, extra))

    def _new_node(self, group, extra="", listed=True, omit_group_name=None, server_id=None):
        """Creates (does not start) one more storage of `group`, with its own
        127.0.0.x: all storages of a group share the group's port (one_ip: one
        127.0.0.x, a port each).  With storage ids, a listed node takes the next spare
        entry of its group if there is one, else a new id."""
        idx = len(self.nodes)
        sid = None
        spare = None
        if self.use_storage_id is not None and listed:
            spare = next((s for s in self.spare_ids if s[1] == group), None)
        if spare is not None:
            self.spare_ids.remove(spare)
            sid, _, ip, port = spare
        elif self.one_ip:
            ip = self.storage_ip
            port = pick_port(ip, {n.port for n in self.nodes} | {s[3] for s in self.spare_ids})
        else:
            same = [n for n in self.nodes if n.group == group]
            if same:
                port = same[0].port
                ip = self._free_ip_for_port(port)
            else:
                ip, port = self._pick()
        if self.use_storage_id is not None and listed and sid is None:
            sid = self._take_storage_id()
        base = self.root / ("storage%d" % idx)
        paths = [self.root / ("store%d_%d" % (idx, i)) for i in range(self.store_path_count)]
        for d in [base, *paths]:
            d.mkdir(parents=True, exist_ok=True)
        conf = self.root / ("storage%d.conf" % idx)
        daemon = Daemon("storaged%d@%s" % (idx, self.name), require_binary("fdfs_storaged"), conf,
                        base, "storaged.log", wrapper=self.storage_wrappers.get(idx))
        if omit_group_name is None:
            omit_group_name = idx in self.no_group_name
        if server_id is None:
            server_id = self._server_id_for(idx, sid)
        elif server_id is True:
            server_id = sid
        node = StorageNode(group, ip, port, base, paths, conf, daemon, storage_id=sid,
                           rw=self.storage_ids_rw.get(idx), extra=extra,
                           omit_group_name=omit_group_name, server_id=server_id)
        self.write_node_conf(node)
        self.nodes.append(node)
        return node

    def add_storage(self, group=None, extra="", start=True, listed=True, omit_group_name=None,
                    server_id=None):
        """A new, empty storage joins `group` (default: the first group).  With storage
        ids: listed=False leaves it out of storage_ids.conf (else it takes a spare entry,
        or a new one that only trackers started later read); omit_group_name, server_id
        (an id, or True for its own) as for the nodes of the constructor."""
        node = self._new_node(group or self.group, extra, listed=listed,
                              omit_group_name=omit_group_name, server_id=server_id)
        if start:
            node.daemon.start()
        return node

    def node_by_id(self, storage_id):
        return next(n for n in self.nodes if n.storage_id == storage_id)

    def list_storages(self, group=None, tracker=None):
        """92 LIST_STORAGE on `tracker` (default: the first) -> [{"status", "rw_mode", "id",
        "ip", "port", "last_synced_timestamp"}] of `group`."""
        with wire.Conn(tracker or self.tracker_addr, 5) as c:
            st, body = c.request(wire.T_LIST_STORAGE, wire.group_field(group or self.group))
        if st != 0:
            return []
        size = 487 if len(body) % 487 == 0 else 517
        ipw = size - 471
        out = []
        for off in range(0, len(body), size):
            rec = body[off:off + size]
            # The record ends with last_synced_timestamp, last_heart_beat_time, is_trunk.
            synced, = struct.unpack(">q", rec[size - 17:size - 9])
            # 18 + ip, then sync src id[16], version[8], 9 x i64, storage_port
            port, = struct.unpack(">q", rec[114 + ipw:122 + ipw])
            out.append({"status": rec[0],
                        "rw_mode": rec[1],
                        "id": rec[2:18].rstrip(b"\0").decode(),
                        "ip": rec[18:18 + ipw].rstrip(b"\0").decode(),
                        "port": port,
                        "last_synced_timestamp": synced})
        return out

    def matches(self, node, record):
        """Whether a 92 record is `node`'s: by id in storage id mode, else by IP."""
        if self.use_storage_id and node.storage_id is not None:
            return record["id"] == node.storage_id
        return record["ip"] == node.ip

    def storage_status(self, node):
        for s in self.list_storages(node.group):
            if self.matches(node, s):
                return s["status"]
        return None

    def wait_active(self, node, timeout=READY_DEADLINE):
        def ready():
            self.check_alive()
            return self.storage_status(node) == STATUS_ACTIVE
        try:
            wait_for(ready, timeout, interval=0.1,
                     what="storage %s:%d ACTIVE" % (node.ip, node.port))
        except TimeoutError as e:
            raise RuntimeError("%s: %s\n%s" % (self.name, e, self.logs()))
        wait_for(lambda: self._connectable(node.addr), 10, what="storage port %s:%d" % node.addr)

    # addresses
    @property
    def tracker_addr(self):
        return (self.tracker_ip, self.tracker_port)

    @property
    def storage_addr(self):
        return (self.storage_ip, self.storage_port)

    @property
    def tracker_server(self):
        return "%s:%d" % self.tracker_addr

    def daemons(self):
        return ([self.tracker] + [d for _, _, d in self.extra_trackers]
                + [n.daemon for n in self.nodes])

    def logs(self):
        return "\n".join(d.logs() for d in self.daemons())

    def check_alive(self):
        dead = [d.name for d in self.daemons() if d.proc is not None and not d.alive()]
        if dead:
            raise AssertionError("daemon(s) died: %s\n%s" % (", ".join(dead), self.logs()))

    def start(self):
        self.write_storage_ids()
        self.tracker.start()
        for _, _, d in self.extra_trackers:
            d.start()
        for addr in self.tracker_addrs:
            wait_for(lambda: self._connectable(addr) or self._dead_check(),
                     READY_DEADLINE, what="tracker %s:%d to accept connections" % addr)
        self.storage.start()
        self.wait_ready()
        if len(self.nodes) > 1:
            self.wait_active(self.nodes[0])
            for n in self.nodes[1:]:
                n.daemon.start()
            for n in self.nodes[1:]:
                self.wait_active(n)

    def _dead_check(self):
        self.check_alive()
        return False

    @staticmethod
    def _connectable(addr):
        try:
            socket.create_connection(addr, timeout=1).close()
            return True
        except OSError:
            return False

    def wait_ready(self, timeout=READY_DEADLINE):
        def ready():
            self.check_alive()
            st, info = wire.query_store(self.tracker_addr, timeout=2)
            return st == 0 and info
        try:
            info = wait_for(ready, timeout, interval=0.1, what="tracker cmd 101 status 0 (storage ACTIVE)")
        except TimeoutError as e:
            raise RuntimeError("%s: %s\n%s" % (self.name, e, self.logs()))
        wait_for(lambda: self._connectable(self.storage_addr), 10,
                 what="storage port %s:%d" % self.storage_addr)
        return info

    def stop(self):
        for d in reversed(self.daemons()):
            d.stop()

    def store_snapshot(self):
        snap = {}
        for i, p in enumerate(self.store_paths):
            for k, v in snapshot_tree(p).items():
                snap["%d:%s" % (i, k)] = v
        return snap


_live_clusters = []


def start_cluster(tmp_path_factory, name, prepare=None, **kw):
    """A started Cluster(**kw); prepare(cluster), when given, runs before the start (to
    change its config files)."""
    root = tmp_path_factory.mktemp("fdfs-%s-" % name)
    c = Cluster(root, name, **kw)
    if prepare is not None:
        prepare(c)
    _live_clusters.append(c)
    try:
        c.start()
    except BaseException:
        c.stop()
        _live_clusters.remove(c)
        raise
    return c


def stop_cluster(c):
    c.stop()
    if c in _live_clusters:
        _live_clusters.remove(c)
    release_addrs(c.claimed_ips)


@pytest.fixture
def clusters(tmp_path):
    """c_daemons.Clusters: C and Rust daemons side by side, all stopped at the end."""
    from c_daemons import Clusters  # c_daemons imports this module
    cs = Clusters(tmp_path)
    yield cs
    cs.stop_all()


def bindable(ip, port):
    """Whether `ip:port` can be bound now."""
    s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((ip, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """Main cluster: response_ip_addr_size = auto (16-byte IP fields)."""
    c = start_cluster(tmp_path_factory, "auto", ip_size="auto")
    yield c
    stop_cluster(c)


@pytest.fixture(scope="session")
def cluster_v6(tmp_path_factory):
    """Cluster whose tracker answers with 46-byte IP fields (for fastdfs-client)."""
    c = start_cluster(tmp_path_factory, "ipv6", ip_size="IPv6")
    yield c
    stop_cluster(c)


@pytest.fixture
def cluster_for(request):
    """cluster_for(client_name) -> the cluster that client can talk to."""
    def get(client):
        flavour = CLIENTS[client]
        return request.getfixturevalue("cluster_v6" if flavour == "ipv6" else "cluster")
    return get


@pytest.fixture(autouse=True)
def _daemons_still_alive():
    yield
    for c in list(_live_clusters):
        c.check_alive()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and _live_clusters:
        for c in _live_clusters:
            rep.sections.append(("daemon logs: cluster %s (tracker %s, storage %s:%d)"
                                 % (c.name, c.tracker_server, *c.storage_addr), c.logs()))


def pytest_sessionfinish(session, exitstatus):
    """A run that passed leaves nothing under the temporary directory: the clusters'
    data (gigabytes) lives in directories of tmp_path_factory, which pytest's retention
    policy (pytest.ini) keeps. A failed run keeps them for a look."""
    if exitstatus != 0:
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None and factory._basetemp is not None:
        shutil.rmtree(factory._basetemp, ignore_errors=True)
        # pytest's per-user parent (/tmp/pytest-of-$USER) too, once nothing but its
        # "current" link to the directory just removed is left in it.
        parent = factory._basetemp.parent
        try:
            for entry in parent.iterdir():
                if entry.is_symlink() and not entry.exists():
                    entry.unlink()
            parent.rmdir()
        except OSError:
            pass


# ------------------------------------------------------------------ clients

class DriverError(AssertionError):
    pass


class ClientDriver:
    """Runs drivers/<name>.py in that client's venv, one JSON command per call."""

    def __init__(self, name, cluster):
        self.name = name
        self.cluster = cluster
        self.python = VENVS / name / "bin" / "python"
        self.script = DRIVERS / ("%s.py" % name)
        if not self.python.exists():
            pytest.skip("venv for %s missing: run tests/setup-python.sh" % name)

    def raw(self, op, **kw):
        cmd = {"op": op, "tracker": self.cluster.tracker_server,
               "client_conf": str(self.cluster.client_conf), "timeout": 10}
        cmd.update(kw)
        try:
            p = subprocess.run([str(self.python), str(self.script)], input=json.dumps(cmd),
                               capture_output=True, text=True, timeout=60,
                               cwd=str(self.cluster.client_base))
        except subprocess.TimeoutExpired as e:
            raise DriverError("%s %s: driver timed out after 60s\nstdout: %s\nstderr: %s"
                              % (self.name, op, e.stdout, e.stderr))
        for line in reversed(p.stdout.splitlines()):
            if line.startswith(RESULT_MARKER):
                return json.loads(line[len(RESULT_MARKER):])
        raise DriverError("%s %s: no result (exit %d)\nstdout: %s\nstderr: %s"
                          % (self.name, op, p.returncode, p.stdout[-3000:], p.stderr[-3000:]))

    def call(self, op, **kw):
        """Run op; skip the test if the client cannot do it; raise on error."""
        r = self.raw(op, **kw)
        if r.get("unsupported"):
            pytest.skip("%s cannot %s: %s" % (self.name, op, r["unsupported"]))
        if not r["ok"]:
            raise DriverError("%s %s failed: %s\n%s" % (self.name, op, r.get("error"), r.get("traceback", "")))
        return r

    def fails(self, op, **kw):
        """Run op expecting a failure; returns the error text."""
        r = self.raw(op, **kw)
        if r.get("unsupported"):
            pytest.skip("%s cannot %s: %s" % (self.name, op, r["unsupported"]))
        assert not r["ok"], "%s %s unexpectedly succeeded: %r" % (self.name, op, r)
        return r["error"]

    # conveniences
    def upload(self, data, ext=""):
        return self.call("upload_buffer", data_b64=b64(data), ext=ext)["file_id"]

    def download(self, file_id, offset=0, length=0):
        return unb64(self.call("download", file_id=file_id, offset=offset, length=length)["data_b64"])


@pytest.fixture
def driver(cluster_for):
    def make(name):
        return ClientDriver(name, cluster_for(name))
    return make

