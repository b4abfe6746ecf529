"""The real C FastDFS 6.16 daemons next to ours, for mixed-cluster (rolling migration)
tests.

* `CDaemon` runs the C `fdfs_trackerd` / `fdfs_storaged` (built by build-c-fastdfs.sh,
  found through interop.c_bin) with the same config file, base path and address an
  ours would have.  It is started as `<daemon> <conf> start -N` (libserverframe's
  "no daemon" switch): the C program still writes `base_path/data/<daemon>.pid` and logs
  to `base_path/logs/trackerd.log` (`storaged.log`), but stays our child, so that a
  death is seen at once and teardown can always kill it.  Should a daemonized copy be
  left over (someone ran `start` by hand), `stop()` also kills the pid of the pid file.
* `MixedCluster` is conftest's `Cluster` (same addresses, configs, readiness polls, log
  tails on failure) with chosen trackers and storages swapped to the C daemons:
  `c_trackers={0}` (0 = the first tracker, i = extra tracker i), `c_storages={0, ...}`
  (node indices).  `set_impl(node, "c"|"rust")` swaps a stopped node, e.g. to start the
  other implementation on the data the first one wrote.  `colocated=True` is the
  classic layout: all trackers on one port, storage i on tracker i's address.
* `Clusters(tmp_path).new(name, ...)` starts one and registers it with conftest (log
  tails in a failing test's report); `stop_all()`, from a fixture's teardown, stops
  every daemon, C ones included, whatever happened.

The configs conftest writes (`key = value`, bind_addr + client_bind, heart_beat_interval
= 1 ...) are read by the C daemons as they are; the C-only needs are in C_STORAGE_EXTRA /
C_TRACKER_EXTRA.  C refuses a tracker_server on 127.0.0.1 (storage_func.c:
storage_check_tracker_ipaddr); conftest's pick_addr never hands that one out.
"""

import contextlib
import os
import random
import signal
import subprocess
from pathlib import Path

import conftest
from conftest import Cluster, Daemon, bindable, require_binary
from fdfs_helpers import listen_port
from interop import c_bin

C_STOP_GRACE = 30.0

# The C storage refuses to start with its built-in thread stack size (256 KB < its own
# minimum of 320 KB, storage_func.c); the sample storage.conf says 512KB.
C_STORAGE_EXTRA = "thread_stack_size = 512KB\n"
C_TRACKER_EXTRA = ""


class CDaemon(Daemon):
    """A C FastDFS daemon, run in the foreground (`-N`) as our child."""

    def __init__(self, name, program, conf, base_path, log_name):
        super().__init__(name, c_bin(program), conf, base_path, log_name)
        self.program = program

    @property
    def pid_file(self):
        return self.base_path / "data" / ("%s.pid" % self.program)

    def start(self):
        self._kill_stale()
        self.stderr_fh = open(self.stderr_file, "ab")
        self.proc = subprocess.Popen(
            [str(self.exe), str(self.conf), "start", "-N"],
            stdin=subprocess.DEVNULL, stdout=self.stderr_fh, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(self.base_path))

    stop_grace = C_STOP_GRACE

    def stop(self):
        code = super().stop()
        self._kill_stale()
        return code

    def kill(self):
        """SIGKILL, no goodbye."""
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)
        self.stderr_fh.close()

    def _kill_stale(self):
        """A daemonized copy named by the pid file (not our child) is killed, if it
        still runs this program."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        if self.proc is not None and pid == self.proc.pid:
            return
        try:
            exe = os.readlink("/proc/%d/exe" % pid)
        except OSError:
            return
        if os.path.basename(exe) == self.program:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def logs(self):
        return super().logs().replace("--- %s " % self.name, "--- %s [C] " % self.name, 1)



def c_tracker(name, conf, base_path):
    return CDaemon(name, "fdfs_trackerd", conf, base_path, "trackerd.log")


def c_storage(name, conf, base_path):
    return CDaemon(name, "fdfs_storaged", conf, base_path, "storaged.log")


def rust_storage(name, conf, base_path):
    return Daemon(name, require_binary("fdfs_storaged"), conf, base_path, "storaged.log")


def is_c(daemon):
    return isinstance(daemon, CDaemon)


class MixedCluster(Cluster):
    """conftest.Cluster with some daemons replaced by the C ones (see module doc)."""

    def __init__(self, root, name, c_trackers=(), c_storages=(), colocated=False, **kw):
        super().__init__(root, name, **kw)
        self.stopped = set()
        if colocated:
            self._colocate()
        c_trackers = set(c_trackers)
        if 0 in c_trackers:
            self.tracker = c_tracker(self.tracker.name, self.tracker_conf, self.tracker_base)
            self._append_conf(self.tracker_conf, C_TRACKER_EXTRA)
        for i, (ip, port, d) in enumerate(self.extra_trackers, start=1):
            if i in c_trackers:
                self.extra_trackers[i - 1] = (ip, port, c_tracker(d.name, d.conf, d.base_path))
                self._append_conf(d.conf, C_TRACKER_EXTRA)
        for i in set(c_storages):
            self.set_impl(self.nodes[i], "c")

    def _colocate(self):
        """The classic layout: every tracker listens on one port (as on 22122), each on
        its own host (127.0.0.x), and storage i runs on tracker i's host."""
        hosts = [self.tracker_ip] + [ip for ip, _, _ in self.extra_trackers]
        assert len(self.nodes) <= len(hosts), "colocated: more storages than trackers"
        port = self.tracker_port
        for _ in range(500):
            if all(bindable(h, port) for h in hosts):
                break
            port = listen_port(random.SystemRandom())
        else:
            raise RuntimeError("no port free on every tracker address %s" % hosts)
        self.tracker_port = port
        self.tracker_conf.write_text(self.tracker_conf_text(self.tracker_ip, port,
                                                            self.tracker_base))
        for i, (ip, _, d) in enumerate(self.extra_trackers):
            self.extra_trackers[i] = (ip, port, d)
            d.conf.write_text(self.tracker_conf_text(ip, port, d.base_path))
        for i, n in enumerate(self.nodes):
            assert n.port != port and bindable(hosts[i], n.port), \
                "storage port %d not free on %s" % (n.port, hosts[i])
            n.ip = hosts[i]
            self.write_node_conf(n)
        self.storage_ip = self.nodes[0].ip
        lines = [ln for ln in self.client_conf.read_text().splitlines(True)
                 if not ln.startswith("tracker_server")]
        self.client_conf.write_text("".join(lines) + self.tracker_lines())

    @staticmethod
    def _append_conf(path, extra):
        if extra:
            with open(path, "a") as f:
                f.write(extra)

    def set_impl(self, node, impl):
        """Makes `node` (stopped) run the C (`"c"`) or our (`"rust"`) storage daemon on
        the same config, base path and store paths."""
        assert not node.daemon.alive(), "stop %s before swapping it" % node.daemon.name
        old = node.daemon
        if getattr(old, "stderr_fh", None) is not None and not old.stderr_fh.closed:
            old.stderr_fh.close()
        make = c_storage if impl == "c" else rust_storage
        node.daemon = make(old.name, node.conf, node.base)
        if impl == "c" and C_STORAGE_EXTRA and C_STORAGE_EXTRA not in node.conf.read_text():
            self._append_conf(node.conf, C_STORAGE_EXTRA)
        if impl == "c" and C_STORAGE_EXTRA not in node.extra:
            # kept by write_node_conf
            node.extra += C_STORAGE_EXTRA
        if node is self.nodes[0]:
            self.storage = node.daemon
        return node

    def add_storage(self, group=None, extra="", start=True, impl="rust", listed=True,
                    omit_group_name=None, server_id=None):
        node = self._new_node(group or self.group, extra, listed=listed,
                              omit_group_name=omit_group_name, server_id=server_id)
        if impl == "c":
            self.set_impl(node, "c")
        if start:
            node.daemon.start()
        return node

    def stop_daemon(self, daemon):
        """Stops one daemon on purpose: the liveness checks leave it out from then on
        (until it is started again)."""
        daemon.stop()
        self.stopped.add(id(daemon))

    def start_daemon(self, daemon):
        self.stopped.discard(id(daemon))
        daemon.start()

    def check_alive(self):
        dead = [d.name for d in self.daemons()
                if d.proc is not None and not d.alive() and id(d) not in self.stopped]
        if dead:
            raise AssertionError("daemon(s) died: %s\n%s" % (", ".join(dead), self.logs()))

    def impl_of(self, node):
        return "C" if is_c(node.daemon) else "Rust"

    def all_trackers(self):
        """[(addr, daemon)] of every tracker."""
        return [(self.tracker_addr, self.tracker)] + [((ip, port), d)
                                                      for ip, port, d in self.extra_trackers]

    def storage_status_on(self, node, tracker):
        for s in self.list_storages(node.group, tracker=tracker):
            if self.matches(node, s):
                return s["status"]
        return None


def file_path(node, file_id):
    """Where `file_id` (group/Mxx/XX/YY/name) is on `node`'s disk."""
    _, _, remote = file_id.partition("/")
    parts = remote.split("/")
    assert len(parts) == 4 and parts[0][0] == "M", "unexpected file id %r" % file_id
    return Path(node.store_paths[int(parts[0][1:], 16)]) / "data" / parts[1] / parts[2] / parts[3]


class Clusters:
    """The mixed clusters of one test.  Use from a fixture whose teardown calls
    stop_all(): the clusters stay registered with conftest until then, so a failing
    test's report carries every daemon's log tail (C ones marked [C])."""

    def __init__(self, root):
        self.root = Path(root)
        self.live = []

    def new(self, name, start=True, **kw):
        """A MixedCluster under root/name (started unless start=False)."""
        root = self.root / name
        root.mkdir(parents=True, exist_ok=True)
        c = MixedCluster(root, name, **kw)
        self.live.append(c)
        conftest._live_clusters.append(c)
        if start:
            c.start()
        return c

    def stop_all(self):
        """Stops every daemon of every cluster, C ones included; goes on past errors
        and raises the first one at the end."""
        first = None
        for c in reversed(self.live):
            for d in reversed(c.daemons()):
                try:
                    d.stop()
                except BaseException as e:  # noqa: BLE001
                    first = first or e
            if c in conftest._live_clusters:
                conftest._live_clusters.remove(c)
            conftest.release_addrs(c.claimed_ips)
        self.live.clear()
        if first is not None:
            raise first
