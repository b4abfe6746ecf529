"""The top tier for real: two nginx proxies (nginx-conf/top-nginx.conf) in front of the
storages' nginx with ngx_fastdfs_module, each in a network namespace of its own playing a
host, with keepalived (nginx-conf/keepalived.conf) holding one virtual IP between them.
A client keeps downloading a file through the VIP while the MASTER goes away:

* the MASTER host dies (keepalived and nginx SIGKILLed, its link down): the BACKUP
  takes the VIP over;
* nginx dies on the MASTER: keepalived's chk_nginx fails, the MASTER's priority drops
  below the BACKUP's, which takes the VIP over.

Either way the VIP is on the other host within a deadline, the client's downloads resume
(requests sent while the VIP moves may fail: the client retries), and every byte it got is
right.

Topology, made and removed by the tests: a bridge in the root namespace carrying two
addresses on which the two storage nginx listen; per host a namespace with a veth on the
bridge, nginx listening on port 80 as in top-nginx.conf and keepalived (VRRP multicast
over the bridge).  Interfaces are named fk<pid of the test run>..., namespaces
fdfs-ka-<pid>-N; what a killed run left behind is removed by the next one.

Needs root, iproute2, keepalived and the nginx build: without them the tests skip
(FDFS_REQUIRE_IPTABLES=1, which requires the root-only network tests, or
FDFS_REQUIRE_KEEPALIVED=1 turn that into a failure)."""

import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import fdfs_wire as wire
from conftest import tail, start_cluster, stop_cluster
from fdfs_helpers import payload, pid_alive, wait_for
from nginx_fixtures import (CONF_DIR, NGINX_BIN, Nginx, free_port_on, http, mod_conf_text,
                            require_nginx, storage_nginx_conf)

KEEPALIVED = shutil.which("keepalived") or "/usr/sbin/keepalived"
DEADLINE = 30.0
# After the switch: this many downloads in a row must succeed.
STEADY = 20
REQUEST_TIMEOUT = 2.0

pytestmark = pytest.mark.timeout(240)


def require_network_tests():
    why = None
    if os.geteuid() != 0:
        why = "namespaces, bridges and keepalived need root"
    elif shutil.which("ip") is None:
        why = "iproute2 (ip) not installed"
    elif not os.access(KEEPALIVED, os.X_OK):
        why = "keepalived not installed"
    elif shutil.which("curl") is None:
        why = "curl not installed (keepalived's chk_nginx uses it)"
    if why:
        if "1" in (os.environ.get("FDFS_REQUIRE_IPTABLES"),
                   os.environ.get("FDFS_REQUIRE_KEEPALIVED")):
            pytest.fail(why)
        pytest.skip(why)


def ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError("ip %s: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout


def ns_pids(ns):
    out = ip("netns", "pids", ns, check=False)
    return [int(p) for p in out.split()]


def kill_namespace_processes(ns):
    """SIGKILL to every process in ns (all of them started by these tests), reaped by
    whoever started them."""
    for pid in ns_pids(ns):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def tag_of_pid(pid):
    return "%06x" % (pid & 0xFFFFFF)


def remove_leftovers():
    """Namespaces and interfaces of test runs that are gone."""
    for line in ip("netns", "list", check=False).splitlines():
        m = re.match(r"(fdfs-ka-(\d+)-\d+)", line)
        if m and not pid_alive(int(m.group(2))):
            kill_namespace_processes(m.group(1))
            ip("netns", "del", m.group(1), check=False)
    for line in ip("-o", "link", "show", check=False).splitlines():
        m = re.match(r"\d+: (fk([0-9a-f]{6})\w*)[@:]", line)
        if m and not any(tag_of_pid(p) == m.group(2) for p in live_pids()):
            ip("link", "del", m.group(1), check=False)


def live_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def free_subnet():
    """A /24 of 198.18.0.0/15 (set aside for benchmarks) no interface or route uses."""
    used = ip("-4", "-o", "addr", "show") + ip("-4", "route", "show", "table", "all")
    rnd = random.SystemRandom()
    for _ in range(200):
        prefix = "198.%d.%d" % (rnd.choice((18, 19)), rnd.randint(0, 255))
        if prefix + "." not in used:
            return prefix
    raise RuntimeError("no free /24 in 198.18.0.0/15")


class Net:
    """The bridge (root namespace) and, per host, a namespace with a veth on it."""

    def __init__(self):
        self.tag = tag_of_pid(os.getpid())
        self.prefix = free_subnet()
        self.bridge = "fk%sbr" % self.tag
        self.hosts = []
        self.vip = self.prefix + ".100"
        ip("link", "add", self.bridge, "type", "bridge")
        try:
            ip("addr", "add", self.prefix + ".1/24", "dev", self.bridge)
            ip("addr", "add", self.prefix + ".2/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
        except BaseException:
            ip("link", "del", self.bridge, check=False)
            raise

    @property
    def storage_ips(self):
        return [self.prefix + ".1", self.prefix + ".2"]

    def add_host(self):
        i = len(self.hosts) + 1
        ns = "fdfs-ka-%d-%d" % (os.getpid(), i)
        outer, inner = "fk%s%dr" % (self.tag, i), "fk%s%dn" % (self.tag, i)
        ip("netns", "add", ns)
        host = {"ns": ns, "dev": inner, "outer": outer, "ip": "%s.%d" % (self.prefix, 10 + i)}
        self.hosts.append(host)
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", ns)
        ip("link", "set", outer, "master", self.bridge)
        ip("link", "set", outer, "up")
        ip("-n", ns, "addr", "add", host["ip"] + "/24", "dev", inner)
        ip("-n", ns, "link", "set", inner, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        return host

    def remove_hosts(self):
        for h in self.hosts:
            kill_namespace_processes(h["ns"])
            wait_for(lambda h=h: not ns_pids(h["ns"]), 10, 0.05, "processes of %s gone" % h["ns"])
            ip("netns", "del", h["ns"], check=False)
            ip("link", "del", h["outer"], check=False)
        self.hosts = []

    def remove(self):
        self.remove_hosts()
        ip("link", "del", self.bridge, check=False)

    def holds_vip(self, host):
        """Does `host` (a Host) have the VIP on its interface?"""
        return (self.vip + "/") in ip("-n", host.ns, "-4", "-o", "addr", "show", "dev",
                                      host.dev, check=False)


def top_nginx_conf(root, name, upstreams):
    """nginx-conf/top-nginx.conf with the test's paths and upstream servers; each host
    names itself in a response header so the client sees who served it."""
    text = (CONF_DIR / "top-nginx.conf").read_text()
    text = text.replace("user www-data;", "user root;")
    text = text.replace("worker_processes auto;", "worker_processes 1;")
    text = re.sub(r"error_log \S+", "error_log %s/logs/error.log" % root, text)
    text = re.sub(r"access_log /\S+;", "access_log %s/logs/access.log;" % root, text)
    text = re.sub(r"^pid \S+;", "pid %s/nginx.pid;" % root, text, flags=re.M)
    servers = re.findall(r"^\s*server \d+\.\d+\.\d+\.\d+:\d+ .*;$", text, flags=re.M)
    assert len(servers) == 2, "top-nginx.conf: two upstream servers expected"
    for line, addr in zip(servers, upstreams):
        text = text.replace(line, re.sub(r"\d+\.\d+\.\d+\.\d+:\d+", "%s:%d" % addr, line))
    assert "listen 80;" in text
    text = text.replace("listen 80;", "listen 80;\n        add_header X-Fdfs-Top %s always;" % name)
    return text


def keepalived_conf(name, state, priority, dev, vip):
    """nginx-conf/keepalived.conf for one host of the test."""
    text = (CONF_DIR / "keepalived.conf").read_text()
    text = text.replace("router_id fdfs_top_1", "router_id %s" % name)
    text = text.replace("state MASTER", "state %s" % state)
    text = re.sub(r"priority \d+", "priority %d" % priority, text)
    text = text.replace("192.168.1.100/24 dev eth0", "%s/24 dev %s" % (vip, dev))
    text = text.replace("interface eth0", "interface %s" % dev)
    assert "eth0" not in text and "192.168." not in text, text
    return text


class Host:
    """One host of the top tier: nginx and keepalived in its namespace."""

    def __init__(self, net, host, root, name, state, priority, upstreams):
        self.net = net
        self.ns = host["ns"]
        self.dev = host["dev"]
        self.ip = host["ip"]
        self.name = name
        self.root = Path(root)
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.nginx_conf = self.root / "nginx.conf"
        self.nginx_conf.write_text(top_nginx_conf(self.root, name, upstreams))
        self.ka_conf = self.root / "keepalived.conf"
        self.ka_conf.write_text(keepalived_conf(name, state, priority, self.dev, net.vip))
        self.procs = []
        self.nginx = None
        self.keepalived = None

    def run(self, *cmd, log):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns, *cmd], stdin=subprocess.DEVNULL,
                             stdout=open(self.root / log, "ab"), stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def start_nginx(self):
        nginx = [str(NGINX_BIN), "-p", str(self.root), "-c", str(self.nginx_conf),
                 "-e", str(self.root / "logs" / "error.log")]
        t = subprocess.run(["ip", "netns", "exec", self.ns, *nginx, "-t"], capture_output=True,
                           text=True, timeout=30)
        assert t.returncode == 0, "top nginx config refused:\n%s" % t.stderr
        self.nginx = self.run(*nginx, "-g", "daemon off;", log="nginx.stderr")

        def up():
            assert self.nginx.poll() is None, "nginx of %s exited:\n%s" % (self.name, self.logs())
            st, _, body = http("GET", "http://%s/healthz" % self.ip, timeout=1)
            return st == 200
        wait_for(up, 20, 0.1, "nginx of %s" % self.name)

    def start_keepalived(self):
        t = subprocess.run(["ip", "netns", "exec", self.ns, KEEPALIVED, "-t", "-f",
                            str(self.ka_conf)], capture_output=True, text=True, timeout=30)
        assert t.returncode == 0, "keepalived config refused:\n%s%s" % (t.stdout, t.stderr)
        self.keepalived = self.run(
            KEEPALIVED, "-n", "-l", "-D", "-G", "-P", "-f", str(self.ka_conf),
            "-p", str(self.root / "keepalived.pid"), "-r", str(self.root / "vrrp.pid"),
            "-c", str(self.root / "checkers.pid"), log="keepalived.log")

    def kill_nginx(self):
        """nginx's master and workers, SIGKILL."""
        for pid in ns_pids(self.ns):
            try:
                if Path("/proc/%d/exe" % pid).resolve() == NGINX_BIN.resolve():
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, FileNotFoundError):
                pass
        self.nginx.wait(10)

    def die(self):
        """The host goes away: every process SIGKILLed (no VRRP goodbye), its link down."""
        kill_namespace_processes(self.ns)
        for p in self.procs:
            p.wait(10)
        ip("-n", self.ns, "link", "set", self.dev, "down")

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def logs(self):
        return "--- %s (%s) keepalived ---\n%s\n--- nginx ---\n%s\n%s" % (
            self.name, self.ns, tail(self.root / "keepalived.log"),
            tail(self.root / "nginx.stderr"), tail(self.root / "logs" / "error.log"))


class Client:
    """Downloads the file through the VIP over and over, one request per connection, and
    keeps what happened: (monotonic time, who served or None, error or None)."""

    def __init__(self, url, want):
        self.url = url
        self.want = want
        self.results = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop_event.is_set():
            t = time.monotonic()
            try:
                st, headers, body = http("GET", self.url, timeout=REQUEST_TIMEOUT)
            except Exception as e:  # noqa: BLE001 - every failure is kept
                res = (t, None, repr(e))
            else:
                if st != 200:
                    res = (t, headers.get("x-fdfs-top"), "HTTP %d" % st)
                elif body != self.want:
                    res = (t, headers.get("x-fdfs-top"),
                           "WRONG BYTES: %d bytes, want %d" % (len(body), len(self.want)))
                else:
                    res = (t, headers.get("x-fdfs-top"), None)
            with self.lock:
                self.results.append(res)
            if res[2] is not None:
                # A failed request is retried after a short pause.
                self.stop_event.wait(0.1)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(3 * REQUEST_TIMEOUT)

    def since(self, t0):
        with self.lock:
            return [r for r in self.results if r[0] >= t0]

    def ok_in_a_row(self, t0, who):
        """The number of successes served by `who` since t0, counted from the last failure."""
        n = 0
        for _, served, err in self.since(t0):
            n = 0 if err is not None else n + (served == who)
        return n


def storage_nginx_on(root, addr, bridge_addr, node, tracker):
    """nginx-conf/storage-nginx.conf for `node`, listening on addr and bridge_addr."""
    root.mkdir(parents=True)
    for f in ("http.conf", "mime.types"):
        shutil.copy(CONF_DIR / f, root / f)
    mod_conf = root / "mod_fastdfs.conf"
    mod_conf.write_text(mod_conf_text(node.group, node.store_paths, tracker))
    text = storage_nginx_conf(root, addr, mod_conf)
    one = "listen %s:%d;" % addr
    assert one in text
    text = text.replace(one, "%s\n        listen %s:%d;" % (one, *bridge_addr))
    n = Nginx(root, text, bridge_addr)
    return n.start()


@pytest.fixture(scope="module")
def tier(tmp_path_factory):
    """A tracker and a group of two storages, each storage with nginx and the module
    listening on an address of the bridge; a file uploaded."""
    require_network_tests()
    require_nginx()
    remove_leftovers()
    net = Net()
    c = None
    storage_nginx = []
    try:
        c = start_cluster(tmp_path_factory, "keepalived", storages=2, store_paths=1)
        # Each storage's nginx on the storage's address (where the module of another
        # member fetches a file not replicated yet) and on one of the bridge's.
        port = free_port_on(*net.storage_ips, *[n.ip for n in c.nodes])
        root = tmp_path_factory.mktemp("storage-nginx")
        for i, (node, sip) in enumerate(zip(c.nodes, net.storage_ips)):
            storage_nginx.append(storage_nginx_on(root / str(i), (node.ip, port), (sip, port),
                                                  node, c.tracker_server))
        data = payload(300_000, 77)
        st, fid = wire.upload(c.nodes[0].addr, data, ext="bin")
        assert st == 0, "upload: errno %d" % st
        for n in storage_nginx:
            st, _, body = http("GET", "%s/%s" % (n.base, fid))
            assert st == 200 and body == data, "storage nginx %s: HTTP %d" % (n.base, st)
        net.cluster, net.fid, net.data = c, fid, data
        net.upstreams = [n.addr for n in storage_nginx]
        yield net
    finally:
        for n in storage_nginx:
            n.stop()
        if c is not None:
            stop_cluster(c)
        net.remove()


@pytest.fixture
def pair(tier, tmp_path):
    """Two hosts: top1 the MASTER (priority 110), top2 the BACKUP (100), top1 holding
    the VIP and serving through it."""
    hosts = []
    try:
        for name, state, prio in (("top1", "MASTER", 110), ("top2", "BACKUP", 100)):
            hosts.append(Host(tier, tier.add_host(), tmp_path / name, name, state, prio,
                              tier.upstreams))
        for h in hosts:
            h.start_nginx()
            # Each host serves the file by itself (through the storages' nginx).
            st, headers, body = http("GET", "http://%s/%s" % (h.ip, tier.fid))
            assert st == 200 and body == tier.data, "%s: HTTP %d" % (h.name, st)
        for h in hosts:
            h.start_keepalived()
        master, backup = hosts
        wait_for(lambda: tier.holds_vip(master) and not tier.holds_vip(backup), DEADLINE, 0.1,
                 "the VIP on %s only" % master.name)
        yield hosts
    except BaseException:
        print("\n".join(h.logs() for h in hosts))
        raise
    finally:
        for h in hosts:
            h.stop()
        tier.remove_hosts()


def failover(tier, pair, request, how):
    master, backup = pair
    url = "http://%s/%s" % (tier.vip, tier.fid)
    with Client(url, tier.data) as client:
        t0 = time.monotonic()
        wait_for(lambda: client.ok_in_a_row(t0, master.name) >= STEADY, DEADLINE, 0.1,
                 "downloads through the VIP served by %s" % master.name)
        before = client.since(t0)
        how(master)
        t_kill = time.monotonic()
        wait_for(lambda: tier.holds_vip(backup), DEADLINE, 0.1,
                 "the VIP on %s" % backup.name)
        t_vip = time.monotonic()
        wait_for(lambda: client.ok_in_a_row(t_kill, backup.name) >= STEADY, DEADLINE, 0.1,
                 "downloads through the VIP served by %s again" % backup.name)
    after = client.since(t_kill)
    wrong = [r for r in before + after if r[2] and r[2].startswith("WRONG")]
    assert not wrong, "wrong bytes served: %s" % wrong[:5]
    assert all(err is None for _, _, err in before), "failures before the switch: %s" % before
    assert all(served == master.name for _, served, _ in before), before
    failed = [r for r in after if r[2] is not None]
    resumed = next(r[0] for r in after if r[2] is None and r[1] == backup.name)
    # Once the backup serves, it keeps serving: no failures after the first success there.
    late = [r for r in failed if r[0] > resumed]
    assert not late, "failures after %s took over: %s" % (backup.name, late[:5])
    print("%s: VIP on %s %.1fs after, downloads resumed %.1fs after (%d requests failed "
          "meanwhile, e.g. %s); %d downloads, every byte right"
          % (request.node.name, backup.name, t_vip - t_kill, resumed - t_kill, len(failed),
             failed[0][2] if failed else None, len(before) + len(after) - len(failed)))


def with_logs(pair, check):
    """Runs check(); a failure carries the hosts' keepalived and nginx logs."""
    try:
        check()
    except (AssertionError, TimeoutError) as e:
        raise AssertionError("%s\n%s" % (e, "\n".join(h.logs() for h in pair))) from e


def test_vip_moves_when_the_master_dies(tier, pair, request):
    with_logs(pair, lambda: failover(tier, pair, request, lambda master: master.die()))


def test_vip_moves_when_nginx_dies_on_the_master(tier, pair, request):
    master, backup = pair

    def check():
        failover(tier, pair, request, lambda m: m.kill_nginx())
        # keepalived on the old master saw its nginx fail and gave the VIP up.
        assert master.keepalived.poll() is None, "keepalived of %s exited" % master.name
        wait_for(lambda: not tier.holds_vip(master), DEADLINE, 0.1,
                 "the VIP gone from %s" % master.name)
    with_logs(pair, check)
