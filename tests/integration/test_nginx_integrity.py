"""ngx_http_fastdfs_module serves only what a storage holds, as it is now.

* Files missing here are fetched only from storages the tracker lists for the file's group:
  a file name can claim any source address, and such an address is never contacted.
* Each worker lists the storages once at start, then only when a miss needs it: serving
  local files never talks to a tracker, misses within `tracker_refresh_interval` share one
  listing, made-up sources and groups cost a bounded number of tracker requests, a group
  whose list a tracker failed to send keeps its previous one, and no request makes the
  worker wait for a tracker (a miss before the first listing is parked, not the worker).
* Metadata files (`<file>-m`, `<file>-m.tmp`) are not served and not fetched.
* Appender files are served with their current size and content right after an append
  or a truncate, through the shipped storage-nginx.conf (which has open_file_cache on).

Topology (loopback, every storage nginx on the same port P, as upstream):
  cluster "ngxi": tracker + storage A (group1); nginx A on A_ip:P over A's store paths
  nginx B on B_ip:P: group1 with empty store paths (a storage files have not reached)
"""

import os
import re
import socket
import struct
import threading
import time
from http.client import HTTPConnection, IncompleteRead

import pytest

import fdfs_wire as wire
from conftest import start_cluster, stop_cluster
from fdfs_helpers import payload, wait_for
from nginx_fixtures import (CONF_DIR, free_ip, free_port_on, http, make_remote_name,
                            require_nginx, start_storage_nginx)


class Env:
    pass


def local_path(cluster, fid):
    remote = fid.split("/", 1)[1]
    return cluster.store_paths[int(remote[1:3], 16)] / "data" / remote[4:]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_nginx()
    e = Env()
    e.nginxes = []
    e.c1 = None
    try:
        e.c1 = start_cluster(tmp_path_factory, "ngxi", store_paths=1)
        e.port = free_port_on(e.c1.storage_ip)
        e.root = tmp_path_factory.mktemp("nginx-integrity")
        e.a = start_storage_nginx(e.root / "a", (e.c1.storage_ip, e.port), "group1", e.c1.store_paths,
                                  tracker=e.c1.tracker_server)
        e.nginxes.append(e.a)
        e.b_store = e.root / "b-store0"
        e.b_store.mkdir()
        e.b = start_storage_nginx(e.root / "b", (free_ip(e.port), e.port), "group1", [e.b_store],
                                  tracker=e.c1.tracker_server)
        e.nginxes.append(e.b)
        e.data = payload(20_000, 11)
        st, e.fid = wire.upload(e.c1.storage_addr, e.data, ext="txt")
        assert st == 0
        yield e
    finally:
        for n in e.nginxes:
            n.stop()
        if e.c1 is not None:
            stop_cluster(e.c1)


# ------------------------------------------------------------------ helpers

class Listener:
    """A TCP listener on (ip, port) whose thread hands each accepted connection to
    `serve` until `close`."""

    def __init__(self, ip, port, backlog=16):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(backlog)
        self.sock.settimeout(0.2)
        self.addr = self.sock.getsockname()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def server(self):
        return "%s:%d" % self.addr

    def _run(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.serve(conn)

    def serve(self, conn):
        raise NotImplementedError

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


class Catcher(Listener):
    """A plain HTTP listener on ip:port that records every request line it gets and
    answers 200 (what an unrelated web server reachable from the storage would do)."""

    BODY = b"answer of a host outside the cluster"

    def __init__(self, ip, port):
        self.requests = []
        super().__init__(ip, port)

    def serve(self, conn):
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            self.requests.append(data.split(b"\r\n", 1)[0].decode("latin-1"))
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" % (len(self.BODY), self.BODY))
            except OSError:
                pass


class TrackerTap(Listener):
    """A relay in front of a tracker that records the command of every request (FastDFS
    header: 8-byte body length, command, status), request by request. `fail` holds
    commands it answers itself with status 2 (ENOENT) instead of relaying them;
    `delay` holds back the first reply of each connection."""

    def __init__(self, target, delay=0.0):
        self.target = target
        self.delay = delay
        self.commands = []
        self.failed = []
        self.fail = set()
        super().__init__(free_ip(0), 0)

    def serve(self, conn):
        threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    @staticmethod
    def _read(sock, n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _message(self, sock):
        head = self._read(sock, 10)
        return head, self._read(sock, struct.unpack(">Q", head[:8])[0])

    def _relay(self, conn):
        try:
            with conn, socket.create_connection(self.target, timeout=5) as up:
                conn.settimeout(30)
                first = True
                while True:
                    head, body = self._message(conn)
                    cmd = head[8]
                    self.commands.append(cmd)
                    if cmd in self.fail:
                        self.failed.append(cmd)
                        conn.sendall(struct.pack(">QBB", 0, 100, 2))
                        continue
                    up.sendall(head + body)
                    head, body = self._message(up)
                    if first and self.delay:
                        time.sleep(self.delay)
                    first = False
                    conn.sendall(head + body)
        except (OSError, EOFError):
            pass

    def count(self, cmd):
        return self.commands.count(cmd)

    def listings(self):
        """How many whole storage listings were fetched (each starts with cmd 91)."""
        return self.count(wire.T_LIST_ALL_GROUPS)


class SilentTracker(Listener):
    """Accepts connections and never answers (a tracker hung, or a wrong address that
    happens to listen)."""

    def __init__(self):
        self.conns = []
        super().__init__(free_ip(0), 0, backlog=64)

    def serve(self, conn):
        self.conns.append(conn)

    def close(self):
        super().close()
        for c in self.conns:
            c.close()


def error_log_count(n, text):
    """How many times `text` is in nginx n's whole error log."""
    path = n.root / "logs" / "error.log"
    return path.read_text(errors="replace").count(text) if path.exists() else 0


def free_ip_for(port, avoid=()):
    for _ in range(50):
        ip = free_ip(port)
        if ip not in avoid:
            return ip
    raise RuntimeError("no free address")


class KeepAlive:
    """Requests on one persistent connection (so one nginx worker answers them all)."""

    def __init__(self, addr):
        self.conn = HTTPConnection(*addr, timeout=20)

    def request(self, method, path, headers=None):
        self.conn.request(method, path, headers=headers or {})
        r = self.conn.getresponse()
        try:
            body = r.read()
        except IncompleteRead as e:
            raise AssertionError("%s %s: Content-Length %s but only %d bytes came" % (
                method, path, r.getheader("Content-Length"), len(e.partial)))
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body

    def close(self):
        self.conn.close()


# ------------------------------------------------------------------ sources outside the group

def test_source_outside_the_group_is_never_contacted(env):
    """A name packing the address of a host that is no storage of group1: neither nginx
    asks that host (it is not in the tracker's list), the answer is 404."""
    ip = free_ip_for(env.port, avoid={env.c1.storage_ip, env.b.addr[0]})
    catcher = None
    note = "is not a storage of group1"
    noted = error_log_count(env.b, note)
    try:
        catcher = Catcher(ip, env.port)
        remote = make_remote_name(ip, 10, ext="txt")          # created just now: forwarded
        for n in (env.b, env.a):
            st, _, body = http("GET", n.base + "/group1/" + remote)
            assert st == 404, (n.base, st, body)
            assert Catcher.BODY not in body
            st, _, _ = http("GET", n.base + "/group1/" + remote, {"Range": "bytes=0-3"})
            assert st == 404
        # another group the tracker does not know: nobody to ask
        st, _, body = http("GET", env.b.base + "/group7/" + remote)
        assert st == 404 and Catcher.BODY not in body
        assert catcher.requests == [], catcher.requests

        # logged (at most once per tracker_refresh_interval, 1 s here, per worker and group)
        def logged():
            if error_log_count(env.b, note) > noted:
                return True
            assert http("GET", env.b.base + "/group1/" + make_remote_name(ip, 10, ext="txt"))[0] == 404
            return False
        wait_for(logged, 10, interval=0.3, what="the made-up source logged")
        assert catcher.requests == [], catcher.requests
    finally:
        if catcher is not None:
            catcher.close()


def test_redirect_mode_points_only_at_members(env, tmp_path):
    ip = free_ip_for(env.port, avoid={env.c1.storage_ip, env.b.addr[0]})
    catcher = n = None
    try:
        catcher = Catcher(ip, env.port)
        n = start_storage_nginx(tmp_path / "r", (free_ip_for(env.port, avoid={ip}), env.port), "group1",
                                [env.b_store], tracker=env.c1.tracker_server, response_mode="redirect")
        remote = make_remote_name(ip, 10, ext="txt")
        st, h, _ = http("GET", n.base + "/group1/" + remote)
        # the group's one storage, never the address in the name
        assert st == 302, st
        assert h["location"].startswith("http://%s:%d/" % (env.c1.storage_ip, env.port)), h["location"]
        # a real file of that storage: redirected there, and served from there
        st, h, _ = http("GET", n.base + "/" + env.fid)
        assert st == 302 and h["location"] == "http://%s:%d/%s?redirect=1" % (
            env.c1.storage_ip, env.port, env.fid)
        st, _, body = http("GET", h["location"])
        assert st == 200 and body == env.data
        assert catcher.requests == []
    finally:
        if n is not None:
            n.stop()
        if catcher is not None:
            catcher.close()


def test_member_source_still_fetched(env):
    """The file is only on storage A, a member of group1: nginx B fetches it from A."""
    st, _, body = http("GET", env.b.base + "/" + env.fid)
    assert st == 200 and body == env.data


def test_no_listing_no_fetch(env, tmp_path):
    """With no tracker answering, the module cannot tell a member from any other address:
    a file missing here is 404, even one its (real) source holds, and the answer does not
    hang."""
    dead_ip = free_ip(0)
    dead = (dead_ip, free_port_on(dead_ip))                  # nothing listens there
    a_access = env.a.root / "logs" / "access.log"
    before = a_access.read_text().count(env.fid.split("/")[-1])
    n = None
    try:
        n = start_storage_nginx(tmp_path / "d", (free_ip(env.port), env.port), "group1", [env.b_store],
                                tracker="%s:%d" % dead)
        for _ in range(3):
            t0 = time.monotonic()
            st, _, body = http("GET", n.base + "/" + env.fid, timeout=20)
            assert st == 404 and body != env.data
            assert time.monotonic() - t0 < 10
        assert a_access.read_text().count(env.fid.split("/")[-1]) == before
    finally:
        if n is not None:
            n.stop()


def wait_for_startup_listings(tap, workers, groups=1):
    """Every worker lists the storages once at start: cmd 91, then 92 per group."""
    wait_for(lambda: tap.listings() >= workers and tap.count(wire.T_LIST_STORAGE) >= workers * groups,
             15, what="each worker's first listing")
    time.sleep(0.3)
    assert tap.listings() == workers, tap.commands


def first_listing(n, tap, member_ip):
    """nginx n (one worker) has its storage list: a miss of a file of storage member_ip
    needs it (the worker took it at start, or takes it now)."""
    st, _, _ = http("GET", n.base + "/group1/" + make_remote_name(member_ip, 10, ext="txt"))
    assert st == 404
    wait_for(lambda: tap.listings() >= 1 and tap.count(wire.T_LIST_STORAGE) >= 1, 15,
             what="the worker's listing")
    time.sleep(0.3)


def test_tracker_asked_only_for_missing_files(env, tmp_path):
    """Local files never cause tracker traffic; misses within tracker_refresh_interval
    share the listing each worker took at start."""
    tap = n = None
    try:
        tap = TrackerTap(env.c1.tracker_addr)
        n = start_storage_nginx(tmp_path / "t", (free_ip(env.port), env.port), "group1", env.c1.store_paths,
                                tracker=tap.server, tracker_refresh_interval=3600)
        wait_for_startup_listings(tap, 2)
        at_start = list(tap.commands)
        url = n.base + "/" + env.fid
        for _ in range(20):                                   # new connections: any worker
            st, _, body = http("GET", url)
            assert st == 200 and body == env.data
        ka = KeepAlive(n.addr)
        for _ in range(20):
            st, _, body = ka.request("GET", "/" + env.fid, {"Range": "bytes=0-99"})
            assert st == 206 and body == env.data[:100]
        assert tap.commands == at_start
        # missing here, from storage A (a member): the listing taken at start serves
        for _ in range(10):
            remote = make_remote_name(env.c1.storage_ip, 10, ext="txt")
            st, _, _ = ka.request("GET", "/group1/" + remote)
            assert st == 404
        ka.close()
        assert tap.commands == at_start, tap.commands
    finally:
        if n is not None:
            n.stop()
        if tap is not None:
            tap.close()


def test_made_up_names_cost_the_tracker_little(env, tmp_path):
    """Many misses naming made-up sources, and a group no tracker knows, over several
    seconds: at most one relisting of group1 (cmd 92: a source may have joined since the
    listing) and one whole listing (91 + 92: a group may have been created), none at all
    for names older than the listing, and each kind of warning logged at most once per
    group."""
    tap = n = None
    try:
        tap = TrackerTap(env.c1.tracker_addr)
        n = start_storage_nginx(tmp_path / "m", (free_ip(env.port), env.port), "group1", [env.b_store],
                                tracker=tap.server, tracker_refresh_interval=3600, workers=1)
        first_listing(n, tap, env.c1.storage_ip)
        at_start = len(tap.commands)
        noted = (error_log_count(n, "is not a storage of"), error_log_count(n, "no storage to fetch"))
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < 4:
            i += 1
            fake = "10.%d.%d.%d" % (i % 250 + 1, (i * 7) % 250 + 1, (i * 13) % 250 + 1)
            for url in ("/group1/" + make_remote_name(fake, 10, ext="txt"),                 # new
                        "/group1/" + make_remote_name(fake, 10, ts=int(time.time()) - 3600),  # old
                        "/group7/" + make_remote_name(fake, 10, ext="txt")):                # no such group
                st, _, _ = http("GET", n.base + url)
                assert st == 404, (url, st)
            time.sleep(0.05)
        time.sleep(1.5)                                       # fetches asked for are done
        new = tap.commands[at_start:]
        assert i > 30
        assert new.count(wire.T_LIST_ALL_GROUPS) <= 1, new
        assert len(new) <= 3, new
        assert error_log_count(n, "is not a storage of") - noted[0] <= 2       # group1, group7
        assert error_log_count(n, "no storage to fetch") - noted[1] <= 1       # group7
    finally:
        if n is not None:
            n.stop()
        if tap is not None:
            tap.close()


def test_a_failed_group_listing_keeps_the_last_one(env, tmp_path):
    """The trackers answer the list of groups but not group1's storages: nginx keeps
    group1's previous list and still fetches from storage A."""
    tap = n = None
    try:
        tap = TrackerTap(env.c1.tracker_addr)
        n = start_storage_nginx(tmp_path / "f", (free_ip(env.port), env.port), "group1", [env.b_store],
                                tracker=tap.server, tracker_refresh_interval=1, workers=1)
        first_listing(n, tap, env.c1.storage_ip)
        tap.fail.add(wire.T_LIST_STORAGE)
        time.sleep(1.2)                                       # the listing is out of date
        st, _, body = http("GET", n.base + "/" + env.fid)     # served from it, a new one asked for
        assert st == 200 and body == env.data
        wait_for(lambda: tap.failed, 10, what="a refused group listing")
        time.sleep(0.3)
        for _ in range(3):
            st, _, body = http("GET", n.base + "/" + env.fid)
            assert st == 200 and body == env.data
    finally:
        if n is not None:
            n.stop()
        if tap is not None:
            tap.close()


def test_a_miss_before_the_first_listing_does_not_block_the_worker(env, tmp_path):
    """The tracker accepts connections and never answers. A file missing here waits (at
    most 3 s) for the worker's first listing, then is 404; meanwhile the one worker serves
    local files at once."""
    silent = n = None
    try:
        silent = SilentTracker()
        n = start_storage_nginx(tmp_path / "s", (free_ip(env.port), env.port), "group1", env.c1.store_paths,
                                tracker=silent.server, workers=1, network_timeout=30)
        miss = {}

        def get_missing():
            t = time.monotonic()
            miss["status"] = http("GET", n.base + "/group1/" + make_remote_name(env.c1.storage_ip, 10),
                                  timeout=30)[0]
            miss["took"] = time.monotonic() - t
        th = threading.Thread(target=get_missing)
        th.start()
        time.sleep(0.3)
        assert th.is_alive(), miss                            # parked
        for _ in range(3):
            t = time.monotonic()
            st, _, body = http("GET", n.base + "/" + env.fid, timeout=30)
            took = time.monotonic() - t
            assert st == 200 and body == env.data
            assert took < 0.5, "a local file took %.2f s while a miss waited" % took
        th.join(30)
        assert miss["status"] == 404 and 2 < miss["took"] < 10, miss
    finally:
        if n is not None:
            n.stop()
        if silent is not None:
            silent.close()


def test_a_miss_before_the_first_listing_is_served_once_it_comes(env, tmp_path):
    """The first listing comes late (the tracker's first reply is held back 1 s): a
    request for a file of storage A that arrived before it is served from A."""
    tap = n = None
    try:
        tap = TrackerTap(env.c1.tracker_addr, delay=1.0)
        n = start_storage_nginx(tmp_path / "l", (free_ip(env.port), env.port), "group1", [env.b_store],
                                tracker=tap.server, workers=1)
        assert tap.listings() <= 1
        st, _, body = http("GET", n.base + "/" + env.fid)
        assert st == 200 and body == env.data
        st, _, body = http("GET", n.base + "/" + env.fid, {"Range": "bytes=10-19"})
        assert st == 206 and body == env.data[10:20]
    finally:
        if n is not None:
            n.stop()
        if tap is not None:
            tap.close()


# ------------------------------------------------------------------ metadata files

def test_metadata_file_is_not_served(env):
    data = payload(3000, 12)
    st, fid = wire.upload(env.c1.storage_addr, data, ext="jpg")
    assert st == 0
    assert wire.set_meta(env.c1.storage_addr, fid, {"owner": "secret-owner", "width": "640"}) == 0
    path = local_path(env.c1, fid)
    meta = path.parent / (path.name + "-m")
    assert b"secret-owner" in meta.read_bytes()
    # a metadata rewrite in progress leaves <file>-m.tmp for a moment
    meta_tmp = path.parent / (path.name + "-m.tmp")
    meta_tmp.write_bytes(meta.read_bytes())
    a_access = env.a.root / "logs" / "access.log"
    try:
        for suffix in ("-m", "-m.tmp"):
            for n in (env.a, env.b):                          # local, and fetched from A
                for method in ("GET", "HEAD"):
                    st, _, body = http(method, n.base + "/" + fid + suffix)
                    assert st == 404, (n.base, suffix, method, st)
                    assert b"secret-owner" not in body
        # nginx B did not even ask A for them
        assert not re.search(r"-m(\.tmp)?\?redirect=1", a_access.read_text())
        # the file itself is served
        st, _, body = http("GET", env.a.base + "/" + fid)
        assert st == 200 and body == data
    finally:
        meta_tmp.unlink()


def test_names_merely_ending_in_m_are_files(env):
    """Exact check: a file with the extension `-m` is a data file. Our storage refuses
    that extension, FastDFS 6.16 does not: such a file, written by a C storage before a
    migration, is made here by linking an upload under that name."""
    data = b"a file whose extension is -m\n"
    st, fid = wire.upload(env.c1.storage_addr, data, ext="xm")
    assert st == 0 and fid.endswith(".xm"), fid
    remote = fid.partition("/")[2]
    on_disk = env.c1.store_paths[int(remote[1:3], 16)] / "data" / remote[4:]
    c_named = on_disk.with_name(on_disk.name[:-2] + "-m")
    os.link(on_disk, c_named)
    c_meta = c_named.with_name(c_named.name + "-m")
    try:
        st, _, body = http("GET", env.a.base + "/" + fid[:-2] + "-m")
        assert st == 200 and body == data
        # the storage takes it for a data file too: it can have metadata of its own
        assert wire.set_meta(env.c1.storage_addr, fid[:-2] + "-m", {"kind": "c-written"}) == 0
        assert b"c-written" in c_meta.read_bytes()
        st, _, _ = http("GET", env.a.base + "/" + fid[:-2] + "-m-m")
        assert st == 404
    finally:
        c_named.unlink()
        if c_meta.exists():
            c_meta.unlink()


def test_temporary_files_are_not_served(env):
    """The storage receives content in `.tmp-…` files: no URL reaches them."""
    d = env.c1.store_paths[0] / "data" / "00" / "00"
    d.mkdir(parents=True, exist_ok=True)
    tmps = [d / (".tmp-" + "0123456789abcdef" * 2), d / (".tmp-" + "0123456789abcdef" * 2 + "1234567")]
    try:
        for tmp in tmps:
            tmp.write_bytes(b"half an upload")
        for tmp in tmps:
            st, _, body = http("GET", env.a.base + "/group1/M00/00/00/" + tmp.name)
            assert st in (400, 404) and b"half an upload" not in body, (tmp.name, st)
    finally:
        for tmp in tmps:
            if tmp.exists():
                tmp.unlink()


# ------------------------------------------------------------------ appender files

def append(addr, fid, data):
    r = fid.partition("/")[2].encode()
    with wire.Conn(addr) as c:
        return c.request(wire.S_APPEND, struct.pack(">QQ", len(r), len(data)) + r + data)[0]


def truncate(addr, fid, size):
    r = fid.partition("/")[2].encode()
    with wire.Conn(addr) as c:
        return c.request(wire.S_TRUNCATE, struct.pack(">QQ", len(r), size) + r)[0]


def test_shipped_config_caches_open_files(env):
    """The appender tests run with the storage node's shipped nginx.conf directives."""
    shipped = (CONF_DIR / "storage-nginx.conf").read_text()
    running = env.a.conf.read_text()
    for line in shipped.splitlines():
        if line.strip().startswith(("open_file_cache", "sendfile", "location")):
            assert line in running, line


def test_appender_served_as_it_is_now(env):
    first = payload(10_000, 21)
    st, fid = wire.upload(env.c1.storage_addr, first, ext="log", cmd=wire.S_UPLOAD_APPENDER)
    assert st == 0 and wire.decode_file_id(fid)["appender"]
    path = "/" + fid
    ka = KeepAlive(env.a.addr)                                # one worker: its open file cache
    try:
        def check(want):
            st, h, body = ka.request("GET", path)
            assert st == 200 and int(h["content-length"]) == len(want) and body == want, (
                st, h.get("content-length"), len(body), len(want))
            st, h2, body = ka.request("HEAD", path)
            assert st == 200 and int(h2["content-length"]) == len(want) and body == b""
            st, _, body = http("GET", env.a.base + path)      # a new connection
            assert st == 200 and body == want
            return h

        h = check(first)
        old_etag = h["etag"]
        more = payload(5_000, 22)
        assert append(env.c1.storage_addr, fid, more) == 0
        h = check(first + more)
        # the old ETag no longer matches: a client holding the old content gets the new
        st, _, body = ka.request("GET", path, {"If-None-Match": old_etag})
        assert st == 200 and body == first + more
        st, _, body = ka.request("GET", path, {"Range": "bytes=9990-10009"})
        assert st == 206 and body == (first + more)[9990:10010]

        assert truncate(env.c1.storage_addr, fid, 3_000) == 0
        check(first[:3_000])
        st, h, body = ka.request("GET", path, {"Range": "bytes=2990-"})
        assert st == 206 and body == first[2990:3000]
        assert h["content-range"] == "bytes 2990-2999/3000"

        assert append(env.c1.storage_addr, fid, b"tail\n") == 0
        check(first[:3_000] + b"tail\n")

        assert truncate(env.c1.storage_addr, fid, 0) == 0
        check(b"")
    finally:
        ka.close()


def test_appender_changes_seen_by_every_worker(env):
    """Each worker has its own cache: new connections (any worker) see the change too."""
    st, fid = wire.upload(env.c1.storage_addr, b"v1", ext="txt", cmd=wire.S_UPLOAD_APPENDER)
    assert st == 0
    conns = [KeepAlive(env.a.addr) for _ in range(8)]
    try:
        for c in conns:
            assert c.request("GET", "/" + fid)[2] == b"v1"
        assert append(env.c1.storage_addr, fid, b"-v2") == 0
        for c in conns:
            st, h, body = c.request("GET", "/" + fid)
            assert st == 200 and body == b"v1-v2" and h["content-length"] == "5"
        assert truncate(env.c1.storage_addr, fid, 1) == 0
        for c in conns:
            st, h, body = c.request("GET", "/" + fid)
            assert st == 200 and body == b"v" and h["content-length"] == "1"
    finally:
        for c in conns:
            c.close()

