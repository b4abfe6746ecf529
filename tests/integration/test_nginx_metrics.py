"""`fastdfs_metrics;`: ngx_fastdfs_module's counters in Prometheus' text format, shared by
all of nginx's workers (a shared memory zone), kept across `nginx -s reload`.

Topology (loopback, every storage nginx on the same port P, as upstream):
  cluster "ngxm": tracker + storage A (group1)
  nginx A on A_ip:P over A's store path, 2 workers, `listen ... reuseport` (the kernel
    spreads connections over both), anti-steal tokens on with a token_check_fail file
  nginx B on B_ip:P: group1 with an empty store path, tokens off: fetches from A

Each request is checked against the scrape exactly, and against nginx's access log
(which names the worker's $pid and $ngx_fastdfs_served): requests of both workers add up
in one set of counters.
"""

import hashlib
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from http.client import HTTPConnection

import pytest

import fdfs_wire as wire
from conftest import start_cluster, stop_cluster
from fdfs_helpers import payload, wait_for
from nginx_fixtures import (CONF_DIR, DEBIAN_MODULE, Nginx, free_ip, free_port_on, http,
                            make_remote_name, mod_conf_text, require_nginx, storage_nginx_conf)

SECRET = "FastDFS1234567890"           # http.conf's http.anti_steal.secret_key
METRICS = "/fastdfs-metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LOG_FORMAT = "log_format fdfs '$pid $status $ngx_fastdfs_served $body_bytes_sent \"$request\"';"


class Env:
    pass


def metrics_conf(root, addr, mod_conf, module=None):
    """storage-nginx.conf with 2 workers, reuseport, an access log naming the worker and
    how the module served each request, and the metrics location."""
    text = storage_nginx_conf(root, addr, mod_conf, module=module, workers=2)
    text = text.replace("listen %s:%d;" % addr, "listen %s:%d reuseport;" % addr)
    text, n = re.subn(r"access_log (/\S+);", LOG_FORMAT + r"\n    access_log \1 fdfs;", text)
    assert n == 1
    location = ("location = %s {\n            fastdfs_metrics;\n            allow 127.0.0.1;\n"
                "            deny all;\n        }\n\n        location = /healthz {" % METRICS)
    assert "location = /healthz {" in text
    return text.replace("location = /healthz {", location)


def start_nginx(root, addr, group, store_paths, tracker, tokens):
    root.mkdir(parents=True, exist_ok=True)
    text = (CONF_DIR / "http.conf").read_text()
    if tokens:
        (root / "fail.txt").write_text("token check failed\n")
        text = text.replace("http.anti_steal.check_token = false", "http.anti_steal.check_token = true")
        text = text.replace("http.anti_steal.token_check_fail =",
                            "http.anti_steal.token_check_fail = fail.txt")
    (root / "http.conf").write_text(text)
    shutil.copy(CONF_DIR / "mime.types", root / "mime.types")
    mod = root / "mod_fastdfs.conf"
    mod.write_text(mod_conf_text(group, store_paths, tracker,
                                 anti_steal_bypass_header_name="X-Fdfs-Bypass",
                                 anti_steal_bypass_header_value="letmein"))
    return Nginx(root, metrics_conf(root, addr, mod), addr).start()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_nginx()
    e = Env()
    e.nginxes = []
    e.c1 = None
    try:
        e.c1 = start_cluster(tmp_path_factory, "ngxm", store_paths=1)
        e.port = free_port_on(e.c1.storage_ip)
        e.root = tmp_path_factory.mktemp("nginx-metrics")
        e.a = start_nginx(e.root / "a", (e.c1.storage_ip, e.port), "group1", e.c1.store_paths,
                          e.c1.tracker_server, tokens=True)
        e.nginxes.append(e.a)
        e.b_store = e.root / "b-store0"
        e.b_store.mkdir()
        e.b = start_nginx(e.root / "b", (free_ip(e.port), e.port), "group1", [e.b_store],
                          e.c1.tracker_server, tokens=False)
        e.nginxes.append(e.b)
        e.data = payload(70_000, 11)
        st, e.fid = wire.upload(e.c1.storage_addr, e.data, ext="txt")
        assert st == 0
        yield e
    finally:
        for n in e.nginxes:
            n.stop()
        if e.c1 is not None:
            stop_cluster(e.c1)


def token_args(fid, ts=None, secret=SECRET):
    ts = int(time.time()) if ts is None else ts
    remote = fid.split("/", 1)[1]
    tok = hashlib.md5((remote + secret + str(ts)).encode()).hexdigest()
    return "token=%s&ts=%d" % (tok, ts)


def scrape(n):
    st, h, body = http("GET", n.base + METRICS)
    assert st == 200, (st, body)
    assert h["content-type"] == CONTENT_TYPE
    values = {}
    types = {}
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
        elif line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            values[series] = int(value)
    return values, types


def series(name, **labels):
    return "%s{%s}" % (name, ",".join('%s="%s"' % kv for kv in labels.items()))


class Expect:
    """What nginx should have counted, kept as the requests are made."""

    def __init__(self):
        self.requests = Counter()      # (status, served) -> n
        self.bytes = Counter()         # served -> body bytes
        self.ranges = Counter()        # whole/single/multi -> n
        self.tokens = Counter()        # result -> n

    def add(self, status, served, body, range_="whole", token=None):
        self.requests[(status, served)] += 1
        self.bytes[served] += len(body)
        self.ranges[range_] += 1
        if token:
            self.tokens[token] += 1

    def check(self, values):
        requests = {k: v for k, v in values.items() if k.startswith("fastdfs_http_requests_total{")}
        want = {series("fastdfs_http_requests_total", status=str(s), served=sv): n
                for (s, sv), n in self.requests.items()}
        assert requests == want
        for served in ("none", "local", "trunk", "fail_file", "redirect", "proxy"):
            assert values[series("fastdfs_http_body_bytes_total", served=served)] == self.bytes[served], served
        for r in ("whole", "single", "multi"):
            assert values[series("fastdfs_http_requests_by_range_total", range=r)] == self.ranges[r], r
        for t in ("ok", "expired", "bad", "missing", "bypass"):
            assert values[series("fastdfs_http_token_checks_total", result=t)] == self.tokens[t], t


def access_log(n):
    """[(pid, status, served)] of the module's requests in n's access log."""
    out = []
    for line in (n.root / "logs" / "access.log").read_text().splitlines():
        pid, status, served, _ = line.split(" ", 3)
        if served != "-":
            out.append((int(pid), int(status), served))
    return out


def test_counters_shared_by_workers(env):
    a, b = env.a, env.b
    url = a.base + "/" + env.fid
    values, types = scrape(a)
    assert not any(v for k, v in values.items()), "counters start at zero"
    assert types == {
        "fastdfs_http_requests_total": "counter",
        "fastdfs_http_body_bytes_total": "counter",
        "fastdfs_http_requests_by_range_total": "counter",
        "fastdfs_http_token_checks_total": "counter",
    }
    ea, eb = Expect(), Expect()

    # whole downloads, each on its own connection, until both workers have served some
    def get_whole():
        st, _, body = http("GET", url + "?" + token_args(env.fid))
        assert st == 200 and body == env.data
        ea.add(200, "local", body, token="ok")
    for i in range(200):
        get_whole()
        if i >= 5 and len({pid for pid, _, _ in access_log(a)}) == 2:
            break
    workers = {pid for pid, _, _ in access_log(a)}
    assert len(workers) == 2 and workers <= set(a.workers()), (workers, a.workers())

    # single ranges, several ranges, a range past the end
    for _ in range(3):
        st, _, body = http("GET", url + "?" + token_args(env.fid), {"Range": "bytes=100-199"})
        assert st == 206 and body == env.data[100:200]
        ea.add(206, "local", body, "single", "ok")
    st, h, body = http("GET", url + "?" + token_args(env.fid), {"Range": "bytes=0-9,50-59"})
    assert st == 206 and h["content-type"].startswith("multipart/byteranges")
    ea.add(206, "local", body, "multi", "ok")
    st, _, body = http("GET", url + "?" + token_args(env.fid), {"Range": "bytes=%d-" % (len(env.data) + 5)})
    assert st == 416
    ea.add(416, "local", body, "single", "ok")
    # HEAD, and a 304
    st, h, body = http("HEAD", url + "?" + token_args(env.fid))
    assert st == 200 and body == b""
    ea.add(200, "local", body, token="ok")
    st, _, body = http("GET", url + "?" + token_args(env.fid), {"If-None-Match": h["etag"]})
    assert st == 304 and body == b""
    ea.add(304, "local", body, token="ok")
    # a file that is not anywhere (its source is this storage): 404
    missing = "group1/" + make_remote_name(env.c1.storage_ip, 10, ext="txt")
    st, _, body = http("GET", a.base + "/" + missing + "?" + token_args(missing))
    assert st == 404
    ea.add(404, "none", body, token="ok")
    # tokens: expired and wrong ones get the token_check_fail file, none at all 400
    st, _, body = http("GET", url + "?" + token_args(env.fid, ts=int(time.time()) - 10_000))
    assert st == 200 and body == b"token check failed\n"
    ea.add(200, "fail_file", body, token="expired")
    st, _, body = http("GET", url + "?" + token_args(env.fid, secret="wrong"))
    assert st == 200 and body == b"token check failed\n"
    ea.add(200, "fail_file", body, token="bad")
    st, _, body = http("GET", url)
    assert st == 400
    ea.add(400, "none", body, token="missing")
    st, _, body = http("GET", url, {"X-Fdfs-Bypass": "letmein"})
    assert st == 200 and body == env.data
    ea.add(200, "local", body, token="bypass")
    # not GET or HEAD: 405 (before any token check)
    st, _, body = http("POST", url)
    assert st == 405
    ea.add(405, "none", body)

    # nginx B has no copy: it fetches the file from A (a request A counts too)
    b_url = b.base + "/" + env.fid + "?" + token_args(env.fid)
    st, _, body = http("GET", b_url)
    assert st == 200 and body == env.data
    eb.add(200, "proxy", body)
    ea.add(200, "local", body, token="ok")
    st, _, body = http("GET", b_url, {"Range": "bytes=10-19"})
    assert st == 206 and body == env.data[10:20]
    eb.add(206, "proxy", body, "single")
    ea.add(206, "local", body, "single", "ok")

    values, _ = scrape(a)
    ea.check(values)
    values, _ = scrape(b)
    eb.check(values)
    # scrapes themselves are not the module's requests
    ea.check(scrape(a)[0])

    # the access log agrees, request by request, and both workers counted into one table
    logged = access_log(a)
    assert len(logged) == sum(ea.requests.values())
    assert Counter((s, sv) for _, s, sv in logged) == ea.requests
    per_worker = Counter(pid for pid, _, _ in logged)
    assert len(per_worker) == 2 and min(per_worker.values()) >= 1, per_worker


def test_scrape_only_from_allowed_addresses_and_get(env):
    conn = HTTPConnection(env.a.addr[0], env.a.addr[1], timeout=10, source_address=("127.0.0.77", 0))
    try:
        conn.request("GET", METRICS)
        r = conn.getresponse()
        r.read()
        assert r.status == 403
    finally:
        conn.close()
    st, _, _ = http("POST", env.a.base + METRICS)
    assert st == 405
    st, h, body = http("HEAD", env.a.base + METRICS)
    assert st == 200 and body == b"" and h["content-type"] == CONTENT_TYPE


def test_promtool_accepts_the_text(env):
    promtool = shutil.which("promtool")
    if not promtool:
        if os.environ.get("FDFS_REQUIRE_PROMETHEUS") == "1":
            pytest.fail("promtool not found (apt-get install prometheus)")
        pytest.skip("promtool not installed")
    st, _, body = http("GET", env.a.base + METRICS)
    assert st == 200 and b'fastdfs_http_requests_total{status="200",served="local"}' in body
    r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_counts_survive_reload(env):
    a = env.a
    before, _ = scrape(a)
    old_workers = set(a.workers())
    r = subprocess.run(a.cmd("-s", "reload"), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr

    def new_workers():
        w = set(a.workers())
        return len(w) == 2 and not (w & old_workers)
    wait_for(new_workers, 20, what="new nginx workers after reload")
    after, _ = scrape(a)
    assert after == before
    st, _, body = http("GET", a.base + "/" + env.fid + "?" + token_args(env.fid))
    assert st == 200
    after, _ = scrape(a)
    key = series("fastdfs_http_requests_total", status="200", served="local")
    assert after[key] == before[key] + 1
    key = series("fastdfs_http_token_checks_total", result="ok")
    assert after[key] == before[key] + 1


def test_without_the_module_counters_are_zero(env, tmp_path):
    """`fastdfs_metrics;` alone (no ngx_fastdfs_module location): zeros, no error."""
    root = tmp_path / "only-metrics"
    root.mkdir()
    ip = free_ip(env.port)
    addr = (ip, free_port_on(ip))
    text = metrics_conf(root, addr, root / "unused.conf")
    text = re.sub(r"\n\s*location ~/group\S+ \{\s*ngx_fastdfs_module;\s*\}", "", text)
    text = re.sub(r"\n\s*fastdfs_conf \S+;", "", text)
    assert "ngx_fastdfs_module;" not in text
    for f in ("http.conf", "mime.types"):
        shutil.copy(CONF_DIR / f, root / f)
    n = Nginx(root, text, addr).start()
    try:
        values, _ = scrape(n)
        assert values and not any(values.values())
    finally:
        n.stop()



def test_debian_nginx_counts_across_workers(env, tmp_path):
    """The module built with NGINX=debian scripts/build-nginx.sh, in /usr/sbin/nginx."""
    if not (DEBIAN_MODULE.is_file() and os.path.exists("/usr/sbin/nginx")):
        if os.environ.get("FDFS_REQUIRE_DEBIAN_NGINX") == "1":
            pytest.fail("Debian nginx or module missing (%s)" % DEBIAN_MODULE)
        pytest.skip("Debian nginx module not built: NGINX=debian scripts/build-nginx.sh")
    root = tmp_path / "debian"
    root.mkdir()
    for f in ("http.conf", "mime.types"):
        shutil.copy(CONF_DIR / f, root / f)
    mod = root / "mod_fastdfs.conf"
    mod.write_text(mod_conf_text("group1", env.c1.store_paths))
    ip = free_ip(env.port)
    addr = (ip, free_port_on(ip))
    n = Nginx(root, metrics_conf(root, addr, mod, module=DEBIAN_MODULE), addr,
              binary="/usr/sbin/nginx").start()
    try:
        e = Expect()
        for i in range(200):
            st, _, body = http("GET", n.base + "/" + env.fid)
            assert st == 200 and body == env.data
            e.add(200, "local", body)
            if i >= 3 and len({pid for pid, _, _ in access_log(n)}) == 2:
                break
        st, _, body = http("GET", n.base + "/" + env.fid, {"Range": "bytes=0-9"})
        assert st == 206
        e.add(206, "local", body, "single")
        assert len({pid for pid, _, _ in access_log(n)}) == 2
        e.check(scrape(n)[0])
    finally:
        n.stop()
