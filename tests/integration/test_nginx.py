"""ngx_http_fastdfs_module in real nginx processes, in front of our tracker and storages.

Topology (all on loopback, every storage nginx on the same port P, as upstream):
  cluster "ngx1": tracker + storage A (group1, 2 store paths); nginx A on A_ip:P
  nginx B on B_ip:P: group1 with empty store paths (a storage the file has not reached)
  storage C (group1, joined to the same tracker) + nginx C: holds a copy of a file
  cluster "ngx2": tracker2 + storage (group2); nginx G2; tracker-tier nginx over both
"""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import fdfs_wire as wire
from conftest import Daemon, bindable, require_binary, start_cluster, stop_cluster
from fdfs_helpers import payload, wait_for
from nginx_fixtures import (CONF_DIR, DEBIAN_MODULE, Nginx, free_ip, free_port_on, http,
                            make_remote_name, mod_conf_text, raw_get, require_nginx,
                            start_storage_nginx, storage_nginx_conf)

SECRET = "FastDFS1234567890"


def upload(cluster, data, ext="txt"):
    st, fid = wire.upload(cluster.storage_addr, data, ext=ext)
    assert st == 0, "upload failed: %s" % st
    return fid


def local_path(cluster, fid):
    remote = fid.split("/", 1)[1]
    idx = int(remote[1:3], 16)
    return cluster.store_paths[idx] / "data" / remote[4:]



class Env:
    pass


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_nginx()
    e = Env()
    e.nginxes = []
    e.extra = []
    e.c1 = None
    try:
        e.c1 = start_cluster(tmp_path_factory, "ngx1", store_paths=2)
        e.port = free_port_on(e.c1.storage_ip)
        e.root = tmp_path_factory.mktemp("nginx")
        e.a = start_storage_nginx(e.root / "a", (e.c1.storage_ip, e.port), "group1", e.c1.store_paths,
                                  tracker=e.c1.tracker_server)
        e.nginxes.append(e.a)
        e.b_stores = [e.root / "b-store0", e.root / "b-store1"]
        for p in e.b_stores:
            p.mkdir()
        e.b = start_storage_nginx(e.root / "b", (free_ip(e.port), e.port), "group1", e.b_stores,
                                  tracker=e.c1.tracker_server)
        e.nginxes.append(e.b)
        e.data = payload(100_000, 1)
        e.fid = upload(e.c1, e.data)
        e.url = e.a.base + "/" + e.fid
        yield e
    finally:
        for n in e.nginxes:
            n.stop()
        for d in e.extra:
            d.stop()
        if e.c1 is not None:
            stop_cluster(e.c1)


# ------------------------------------------------------------------ local serving

def test_get_whole_file(env):
    st, h, body = http("GET", env.url)
    assert st == 200 and body == env.data
    assert h["content-type"] == "text/plain"
    assert h["accept-ranges"] == "bytes"
    assert "etag" in h and "last-modified" in h
    assert int(h["content-length"]) == len(env.data)


def test_single_range(env):
    st, h, body = http("GET", env.url, {"Range": "bytes=100-199"})
    assert st == 206 and body == env.data[100:200]
    assert h["content-range"] == "bytes 100-199/%d" % len(env.data)
    st, h, body = http("GET", env.url, {"Range": "bytes=-10"})
    assert st == 206 and body == env.data[-10:]


def test_multipart_range(env):
    st, h, body = http("GET", env.url, {"Range": "bytes=0-9,50-59"})
    assert st == 206
    assert h["content-type"].startswith("multipart/byteranges")
    assert env.data[0:10] in body and env.data[50:60] in body
    assert b"Content-Range: bytes 50-59/%d" % len(env.data) in body


def test_unsatisfiable_range(env):
    st, _, _ = http("GET", env.url, {"Range": "bytes=%d-" % (len(env.data) + 10)})
    assert st == 416


def test_multi_range_disabled(env, tmp_path):
    # http.multi_range.enabled = false: more than one range is refused with 416, while a
    # single range and the whole file are still served.
    root = tmp_path / "single-range"
    root.mkdir()
    text = (CONF_DIR / "http.conf").read_text()
    assert "http.multi_range.enabled = true" in text
    (root / "http.conf").write_text(text.replace("http.multi_range.enabled = true",
                                                 "http.multi_range.enabled = false"))
    shutil.copy(CONF_DIR / "mime.types", root / "mime.types")
    mod = root / "mod_fastdfs.conf"
    mod.write_text(mod_conf_text("group1", env.c1.store_paths))
    addr = (free_ip(env.port), env.port)
    n = Nginx(root, storage_nginx_conf(root, addr, mod), addr)
    try:
        n.start()
        url = n.base + "/" + env.fid
        st, _, body = http("GET", url, {"Range": "bytes=0-9,50-59"})
        assert st == 416 and env.data[:10] not in body
        st, h, body = http("GET", url, {"Range": "bytes=100-199"})
        assert st == 206 and body == env.data[100:200]
        st, _, body = http("GET", url)
        assert st == 200 and body == env.data
    finally:
        n.stop()


def test_head(env):
    st, h, body = http("HEAD", env.url)
    assert st == 200 and body == b""
    assert int(h["content-length"]) == len(env.data)


def test_not_modified(env):
    _, h, _ = http("GET", env.url)
    st, _, body = http("GET", env.url, {"If-Modified-Since": h["last-modified"]})
    assert st == 304 and body == b""
    st, _, _ = http("GET", env.url, {"If-None-Match": h["etag"]})
    assert st == 304
    st, _, _ = http("GET", env.url, {"If-None-Match": '"other"'})
    assert st == 200


def test_content_disposition(env):
    st, h, _ = http("GET", env.url + "?filename=r%C3%A9sum%C3%A9%20final.txt")
    assert st == 200
    assert h["content-disposition"] == (
        "attachment; filename=\"r_sum_ final.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20final.txt")
    st, h, _ = http("GET", env.url + "?filename=a.txt")
    assert h["content-disposition"] == 'attachment; filename="a.txt"'


def test_method_not_allowed(env):
    st, _, _ = http("POST", env.url)
    assert st == 405


def test_bad_urls_400(env):
    remote = env.fid.split("/", 1)[1]
    for path in [
        "/group1/M00/00/00/short.txt",
        "/group1/M00/0G/00/" + remote[10:],
        "/group1/M00/00/0a/" + remote[10:],
        "/group1/M07/00/00/" + remote[10:],          # store path not configured
        "/group1/M00/00/00/" + remote[10:] + "/x",
        "/group1/M00/00/00/" + "." * 30 + "1234567",
    ]:
        st, _ = raw_get(env.a.addr, path)
        assert st == 400, path


def test_traversal_never_leaves_store(env):
    for path in [
        "/group1/M00/00/00/../../../../../../etc/passwd",
        "/group1/M00/00/00/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/group1/M00/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/group1/M00/00/00/%2e%2e",
    ]:
        st, body = raw_get(env.a.addr, path)
        assert st in (400, 404), (path, st)
        assert b"root:" not in body


def test_missing_file_404(env):
    # same group, source = this node: it should be here, so it is gone
    remote = make_remote_name(env.c1.storage_ip, 10, ext="txt")
    st, _, _ = http("GET", env.a.base + "/group1/" + remote)
    assert st == 404
    # old enough to have been replicated (older than storage_sync_file_max_delay)
    remote = make_remote_name("10.1.2.3", 10, ts=int(time.time()) - 200_000, ext="txt")
    st, _, _ = http("GET", env.a.base + "/group1/" + remote)
    assert st == 404


def test_flv_start(env):
    data = payload(5000, 3)
    fid = upload(env.c1, data, ext="flv")
    st, h, body = http("GET", env.a.base + "/" + fid + "?start=1000")
    assert st == 200 and body == b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00" + data[1000:]
    assert h["content-type"] == "video/x-flv" and "content-range" not in h
    st, _, body = http("GET", env.a.base + "/" + fid + "?start=1000&end=2000")
    assert st == 200 and body[13:] == data[1000:2000]
    st, _, body = http("GET", env.a.base + "/" + fid + "?start=0")
    assert st == 200 and body == data
    st, _, _ = http("GET", env.a.base + "/" + fid + "?start=99999")
    assert st == 400


def test_mime_type_from_nginx_types(env):
    fid = upload(env.c1, b"\xff\xd8\xff\xe0 fake jpeg", ext="jpg")
    st, h, _ = http("GET", env.a.base + "/" + fid)
    assert st == 200 and h["content-type"] == "image/jpeg"


# ------------------------------------------------------------------ files not here yet

def test_proxy_to_source(env):
    """The file is only on storage A: nginx B fetches it from A (redirect=1 added)."""
    assert not any(list(p.rglob("*.txt")) for p in env.b_stores)
    st, h, body = http("GET", env.b.base + "/" + env.fid)
    assert st == 200 and body == env.data
    st, h, body = http("GET", env.b.base + "/" + env.fid, {"Range": "bytes=10-19"})
    assert st == 206 and body == env.data[10:20]
    access = (env.a.root / "logs" / "access.log").read_text()
    assert "redirect=1" in access


def test_proxy_missing_everywhere_404(env):
    remote = make_remote_name(env.c1.storage_ip, 10, ext="txt")
    st, _, _ = http("GET", env.b.base + "/group1/" + remote)
    assert st == 404


def test_redirect_mode(env, tmp_path):
    # redirected only to a storage the tracker lists for the group
    n = start_storage_nginx(tmp_path / "r", (free_ip(env.port), env.port), "group1", env.b_stores,
                            tracker=env.c1.tracker_server, response_mode="redirect")
    try:
        st, h, _ = http("GET", n.base + "/" + env.fid + "?filename=x.txt")
        assert st == 302
        assert h["location"] == "http://%s:%d/%s?filename=x.txt&redirect=1" % (
            env.c1.storage_ip, env.port, env.fid)
        st, _, body = http("GET", h["location"])
        assert st == 200 and body == env.data
    finally:
        n.stop()


def test_failover_to_group_member(env, tmp_path_factory):
    """Source nginx down: nginx B asks the tracker for group1's storages and gets the
    file from storage C, which holds a copy."""
    c = env.c1
    # storages of a group share one port (the tracker refuses others)
    c_ip = next(ip for ip in (free_ip(env.port) for _ in range(50))
                if free_port_on(ip) and bindable(ip, c.storage_port))
    base = tmp_path_factory.mktemp("storage-c")
    stores = [base / "store0", base / "store1"]
    for p in stores:
        p.mkdir()
    # a second storage of group1, joined to the same tracker
    s_ip, s_port = c_ip, c.storage_port
    conf = base / "storage.conf"
    text = c.storage_conf.read_text()
    text = text.replace("bind_addr = %s" % c.storage_ip, "bind_addr = %s" % s_ip)
    text = text.replace("port = %d" % c.storage_port, "port = %d" % s_port)
    text = text.replace("base_path = %s" % c.storage_base, "base_path = %s" % base)
    for i, p in enumerate(c.store_paths):
        text = text.replace("store_path%d = %s" % (i, p), "store_path%d = %s" % (i, stores[i]))
    conf.write_text(text)
    d = Daemon("storaged@C", require_binary("fdfs_storaged"), conf, base, "storaged.log")
    env.extra.append(d)                                       # stopped by the fixture
    d.start()
    data = payload(50_000, 7)
    fid = upload(c, data)
    # the copy on C (by hand: replication may not have happened yet)
    dst = stores[int(fid.split("/")[1][1:3], 16)] / "data" / fid.split("/", 1)[1][4:]
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(local_path(c, fid), dst)
    env.nginxes.append(start_storage_nginx(env.root / "c", (c_ip, env.port), "group1", stores,
                                           tracker=c.tracker_server))

    def c_listed():
        with wire.Conn(c.tracker_addr, 5) as conn:
            st, body = conn.request(92, wire.group_field("group1"))
        return st == 0 and s_ip.encode() in body
    try:
        wait_for(c_listed, 30, what="storage C listed by the tracker")
    except TimeoutError:
        raise AssertionError("storage C did not join group1:\n" + d.logs())
    env.a.stop()
    try:
        # nginx B's workers learn storage C once a miss finds their list over 1 s old
        # (tracker_refresh_interval); meanwhile a miss may still get 502 (only A listed)
        def served():
            st, _, body = http("GET", env.b.base + "/" + fid)
            assert st in (200, 502), st
            return st == 200 and body == data
        wait_for(served, 20, interval=0.2, what="the file served by storage C")
        assert "trying storage %s" % c_ip in env.b.logs()
    finally:
        env.a.start()


# ------------------------------------------------------------------ anti-steal token

@pytest.fixture(scope="module")
def token_nginx(env, tmp_path_factory):
    root = tmp_path_factory.mktemp("nginx-token")
    (root / "fail.txt").write_text("token check failed\n")
    shutil.copy(CONF_DIR / "http.conf", root / "http.conf")
    text = (CONF_DIR / "http.conf").read_text()
    text = text.replace("http.anti_steal.check_token = false", "http.anti_steal.check_token = true")
    text = text.replace("http.anti_steal.token_check_fail =", "http.anti_steal.token_check_fail = fail.txt")
    (root / "http.conf").write_text(text)
    shutil.copy(CONF_DIR / "mime.types", root / "mime.types")
    mod = root / "mod_fastdfs.conf"
    mod.write_text(mod_conf_text("group1", env.c1.store_paths,
                                 anti_steal_bypass_header_name="X-Fdfs-Bypass",
                                 anti_steal_bypass_header_value="letmein"))
    addr = (free_ip(env.port), env.port)
    n = Nginx(root, storage_nginx_conf(root, addr, mod), addr).start()
    yield n
    n.stop()


def token_url(n, fid, ts, secret=SECRET):
    import hashlib
    remote = fid.split("/", 1)[1]
    tok = hashlib.md5((remote + secret + str(ts)).encode()).hexdigest()
    return "%s/%s?token=%s&ts=%d" % (n.base, fid, tok, ts)


def test_token_accepted(env, token_nginx):
    st, _, body = http("GET", token_url(token_nginx, env.fid, int(time.time())))
    assert st == 200 and body == env.data


def test_token_expired_or_wrong_gets_fail_file(env, token_nginx):
    st, h, body = http("GET", token_url(token_nginx, env.fid, int(time.time()) - 10_000))
    assert st == 200 and body == b"token check failed\n"
    assert h["content-type"] == "text/plain"
    st, _, body = http("GET", token_url(token_nginx, env.fid, int(time.time()), secret="wrong"))
    assert st == 200 and body == b"token check failed\n"


def test_token_missing_400_and_bypass(env, token_nginx):
    st, _, _ = http("GET", token_nginx.base + "/" + env.fid)
    assert st == 400
    st, _, body = http("GET", token_nginx.base + "/" + env.fid, {"X-Fdfs-Bypass": "letmein"})
    assert st == 200 and body == env.data


# ------------------------------------------------------------------ config checking

def test_nginx_t_reports_bad_mod_conf(env, tmp_path):
    mod = tmp_path / "mod_fastdfs.conf"
    text = mod_conf_text("group1", env.c1.store_paths)
    text = text.replace("url_have_group_name = true", "url_have_group_name = maybe")
    mod.write_text(text)
    line = text.splitlines().index("url_have_group_name = maybe") + 1
    addr = (free_ip(env.port), env.port)
    n = Nginx(tmp_path, storage_nginx_conf(tmp_path, addr, mod), addr)
    r = n.test_config()
    assert r.returncode != 0
    assert "%s:%d" % (mod, line) in r.stderr and "url_have_group_name" in r.stderr, r.stderr
    mod.write_text(mod_conf_text("group1", [tmp_path / "nonexistent"]))
    r = n.test_config()
    assert r.returncode != 0 and "store_path0" in r.stderr, r.stderr


def test_keepalived_conf_checks():
    exe = shutil.which("keepalived") or "/usr/sbin/keepalived"
    if not os.path.exists(exe):
        if os.environ.get("FDFS_REQUIRE_NGINX") == "1":
            pytest.fail("keepalived not installed")
        pytest.skip("keepalived not installed")
    r = subprocess.run([exe, "-t", "-f", str(CONF_DIR / "keepalived.conf")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------ large file

def test_large_file_flat_worker_memory(env):
    size = 1 << 30
    remote = make_remote_name(env.c1.storage_ip, size, ext="bin")
    path = env.c1.store_paths[0] / "data" / remote[4:]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:            # sparse but for marks every 64 MiB
        for i in range(0, size, 64 << 20):
            f.seek(i)
            f.write(b"MARK%010d" % i)
        f.truncate(size)
    try:
        def hwm(pid):
            for line in open("/proc/%d/status" % pid):
                if line.startswith("VmHWM"):
                    return int(line.split()[1])
            return 0
        workers = env.a.workers()
        before = {p: hwm(p) for p in workers}
        import urllib.request
        got = 0
        marks = 0
        with urllib.request.urlopen(env.a.base + "/group1/" + remote, timeout=120) as r:
            assert r.status == 200 and int(r.headers["Content-Length"]) == size
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                if got % (64 << 20) == 0:
                    marks += chunk.startswith(b"MARK%010d" % got)
                got += len(chunk)
        assert got == size and marks == 16
        after = {p: hwm(p) for p in workers}
        growth = max(after[p] - before[p] for p in workers)
        assert growth < 32 * 1024, "worker VmHWM grew by %d KiB" % growth
    finally:
        path.unlink()


# ------------------------------------------------------------------ several groups, tiers

@pytest.fixture(scope="module")
def group2(env, tmp_path_factory):
    g = Env()
    g.c2 = None
    try:
        g.c2 = c2 = start_cluster(tmp_path_factory, "ngx2", group="group2", store_paths=1)
        port = free_port_on(c2.storage_ip)
        g.nginx = start_storage_nginx(env.root / "g2", (c2.storage_ip, port), "group2", c2.store_paths,
                                      tracker=c2.tracker_server)
        g.data = payload(30_000, 2)
        g.fid = upload(c2, g.data)
        yield g
    finally:
        if getattr(g, "nginx", None):
            g.nginx.stop()
        if g.c2 is not None:
            stop_cluster(g.c2)


def test_multi_group_node(env, group2, tmp_path):
    """One nginx serving two groups (group_count = 2, [group1]/[group2] sections)."""
    mod = tmp_path / "mod_fastdfs.conf"
    text = mod_conf_text("group1", env.c1.store_paths, group_count="2")
    text += "\n[group1]\ngroup_name = group1\nstore_path_count = 2\n"
    text += "".join("store_path%d = %s\n" % (i, p) for i, p in enumerate(env.c1.store_paths))
    text += "[group2]\ngroup_name = group2\nstore_path_count = 1\nstore_path0 = %s\n" % group2.c2.store_paths[0]
    mod.write_text(text)
    shutil.copy(CONF_DIR / "http.conf", tmp_path / "http.conf")
    shutil.copy(CONF_DIR / "mime.types", tmp_path / "mime.types")
    addr = (free_ip(env.port), env.port)
    n = Nginx(tmp_path, storage_nginx_conf(tmp_path, addr, mod), addr).start()
    try:
        st, _, body = http("GET", n.base + "/" + env.fid)
        assert st == 200 and body == env.data
        st, _, body = http("GET", n.base + "/" + group2.fid)
        assert st == 200 and body == group2.data
    finally:
        n.stop()


def render_tier(name, root, listen, servers):
    text = (CONF_DIR / name).read_text()
    root = Path(root)
    text = text.replace("user www-data;", "user root;").replace("worker_processes auto;", "worker_processes 2;")
    text = re.sub(r"error_log \S+", "error_log %s/logs/error.log" % root, text)
    text = re.sub(r"access_log /\S+;", "access_log %s/logs/access.log;" % root, text)
    text = re.sub(r"^pid \S+;", "pid %s/nginx.pid;" % root, text, flags=re.M)
    text = text.replace("/var/cache/nginx/fastdfs-tmp", str(root / "cache-tmp"))
    text = text.replace("/var/cache/nginx/fastdfs", str(root / "cache"))
    text = re.sub(r"listen (8000|80);", "listen %s:%d;" % listen, text)
    for old, new in servers.items():
        text = text.replace(old, "%s:%d" % new)
    return text


def dead_addr():
    ip = free_ip(free_port_on("127.0.0.1"))
    return (ip, free_port_on(ip))


def test_tracker_tier_and_top_tier(env, group2, tmp_path):
    """Caching tier over both groups (one dead member per group), then the top tier."""
    import re as _re  # noqa: F401
    root = tmp_path / "tier"
    root.mkdir()
    listen = (free_ip(8000 if bindable("127.0.0.1", 8000) else free_port_on("127.0.0.1")), 0)
    listen = (listen[0], free_port_on(listen[0]))
    t = top = None
    try:
        t = Nginx(root, render_tier("tracker-nginx.conf", root, listen, {
            "192.168.1.21:8888": env.a.addr,
            "192.168.1.22:8888": dead_addr(),
            "192.168.1.31:8888": group2.nginx.addr,
            "192.168.1.32:8888": dead_addr(),
        }), listen).start()
        top_root = tmp_path / "top"
        top_root.mkdir()
        top_listen = (free_ip(env.port), env.port)
        top = Nginx(top_root, render_tier("top-nginx.conf", top_root, top_listen, {
            "192.168.1.11:8000": listen,
            "192.168.1.12:8000": dead_addr(),
        }), top_listen).start()
        for fid, data in [(env.fid, env.data), (group2.fid, group2.data)]:
            statuses = []
            for _ in range(3):
                st, h, body = http("GET", t.base + "/" + fid)
                assert st == 200 and body == data
                statuses.append(h.get("x-cache-status"))
            assert statuses[0] == "MISS" and statuses[-1] == "HIT", statuses
            st, h, body = http("GET", t.base + "/" + fid, {"X-Fdfs-Purge": "1"})
            assert st == 200 and body == data and h.get("x-cache-status") == "BYPASS"
            st, h, body = http("GET", top.base + "/" + fid)
            assert st == 200 and body == data
            st, h, body = http("GET", top.base + "/" + fid, {"Range": "bytes=5-14"})
            assert st == 206 and body == data[5:15]
        # a repeat is answered from the cache even with group1's storage nginx gone
        env.a.stop()
        try:
            st, h, body = http("GET", t.base + "/" + env.fid)
            assert st == 200 and body == env.data and h.get("x-cache-status") == "HIT"
        finally:
            env.a.start()
    finally:
        for n in (top, t):
            if n is not None:
                n.stop()


def test_debian_nginx_loads_module(env, tmp_path):
    """The module built with NGINX=debian scripts/build-nginx.sh in /usr/sbin/nginx."""
    if not (DEBIAN_MODULE.is_file() and os.path.exists("/usr/sbin/nginx")):
        if os.environ.get("FDFS_REQUIRE_DEBIAN_NGINX") == "1":
            pytest.fail("Debian nginx or module missing (%s)" % DEBIAN_MODULE)
        pytest.skip("Debian nginx module not built: NGINX=debian scripts/build-nginx.sh")
    mod = tmp_path / "mod_fastdfs.conf"
    mod.write_text(mod_conf_text("group1", env.c1.store_paths))
    shutil.copy(CONF_DIR / "http.conf", tmp_path / "http.conf")
    shutil.copy(CONF_DIR / "mime.types", tmp_path / "mime.types")
    addr = (free_ip(env.port), env.port)
    n = Nginx(tmp_path, storage_nginx_conf(tmp_path, addr, mod, module=DEBIAN_MODULE), addr,
              binary="/usr/sbin/nginx").start()
    try:
        st, h, body = http("GET", n.base + "/" + env.fid)
        assert st == 200 and body == env.data
        st, _, body = http("GET", n.base + "/" + env.fid, {"Range": "bytes=0-9,20-29"})
        assert st == 206 and env.data[20:30] in body
        st, _, body = http("GET", n.base + "/" + env.fid + "/x")
        assert st == 400
    finally:
        n.stop()
