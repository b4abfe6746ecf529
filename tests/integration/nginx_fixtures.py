"""Real nginx processes with ngx_http_fastdfs_module loaded, configured from the files in
nginx-conf/ (addresses, ports and paths rewritten to the test's 127.0.0.x and tmp dirs).

Environment:
  NGINX_BIN            nginx binary (default <repo>/target-ngx/dist/sbin/nginx, built by
                       scripts/build-nginx.sh)
  NGX_FASTDFS_MODULE   the module .so (default <repo>/target-ngx/dist/modules/...)
  FDFS_REQUIRE_NGINX=1 fail instead of skip when they are missing
"""

import base64
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, pick_addr, tail  # noqa: F401
from fdfs_helpers import listen_port, wait_for

CONF_DIR = REPO / "nginx-conf"
NGX_DIST = REPO / "target-ngx" / "dist"
NGINX_BIN = Path(os.environ.get("NGINX_BIN") or NGX_DIST / "sbin" / "nginx")
MODULE = Path(os.environ.get("NGX_FASTDFS_MODULE") or NGX_DIST / "modules" / "ngx_http_fastdfs_module.so")
DEBIAN_MODULE = Path(os.environ.get("NGX_FASTDFS_DEBIAN_MODULE")
                     or REPO / "target-ngx" / "dist-debian" / "modules" / "ngx_http_fastdfs_module.so")


def require_nginx():
    if NGINX_BIN.is_file() and MODULE.is_file():
        return
    msg = "nginx or module not built (%s, %s): run scripts/build-nginx.sh" % (NGINX_BIN, MODULE)
    if os.environ.get("FDFS_REQUIRE_NGINX") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def free_port_on(*ips):
    """A port bindable on every ip (storage nginx all listen on one port, as upstream)."""
    rnd = random.SystemRandom()
    for _ in range(500):
        port = listen_port(rnd)
        ok = True
        for ip in ips:
            s = socket.socket()
            try:
                s.bind((ip, port))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return port
    raise RuntimeError("no common free port")


def free_ip(port):
    rnd = random.SystemRandom()
    for _ in range(500):
        ip = "127.0.0.%d" % rnd.randint(2, 254)
        s = socket.socket()
        try:
            s.bind((ip, port))
            return ip
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free ip for port %d" % port)


def set_keys(text, values):
    """Sets `key = value` lines of an ini text (replacing the first, dropping repeats,
    appending missing keys before any [section])."""
    lines = text.splitlines()
    for key, value in values.items():
        vals = value if isinstance(value, list) else [value]
        pat = re.compile(r"^\s*#?\s*%s\s*=" % re.escape(key))
        idx = [i for i, l in enumerate(lines) if pat.match(l) and not l.lstrip().startswith("#")]
        new = ["%s = %s" % (key, v) for v in vals]
        if idx:
            lines[idx[0]:idx[0] + 1] = new
            for i in reversed(idx[1:]):
                del lines[i + len(new) - 1]
        else:
            first_section = next((i for i, l in enumerate(lines) if l.startswith("[")), len(lines))
            lines[first_section:first_section] = new
    return "\n".join(lines) + "\n"


def mod_conf_text(group, store_paths, tracker=None, **extra):
    text = (CONF_DIR / "mod_fastdfs.conf").read_text()
    values = {
        "group_name": group,
        "base_path": str(store_paths[0]),
        "store_path_count": str(len(store_paths)),
        "url_have_group_name": "true",
        "tracker_server": [tracker] if tracker else [],
        "tracker_refresh_interval": "1",
        "connect_timeout": "2",
        "network_timeout": "5",
    }
    for i, p in enumerate(store_paths):
        values["store_path%d" % i] = str(p)
    values.update({k: str(v) for k, v in extra.items()})
    if not values["tracker_server"]:
        text = "\n".join(l for l in text.splitlines() if not l.startswith("tracker_server"))
        del values["tracker_server"]
    return set_keys(text, values)


class Nginx:
    """One nginx master (+ workers) under root/, started with -g 'daemon off;'."""

    def __init__(self, root, conf_text, addr, binary=None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        self.conf = self.root / "nginx.conf"
        self.conf.write_text(conf_text)
        for f in ("mime.types", "mime.types.nginx", "http.conf"):
            if not (self.root / f).exists():
                shutil.copy(CONF_DIR / f, self.root / f)
        self.addr = addr
        self.binary = str(binary or NGINX_BIN)
        self.proc = None

    @property
    def base(self):
        return "http://%s:%d" % self.addr

    def cmd(self, *extra):
        return [self.binary, "-p", str(self.root), "-c", str(self.conf),
                "-e", str(self.root / "logs" / "error.log"), *extra]

    def test_config(self):
        return subprocess.run(self.cmd("-t"), capture_output=True, text=True, timeout=30)

    def start(self):
        self.proc = subprocess.Popen(self.cmd("-g", "daemon off;"), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(self.root / "stderr", "ab"),
                                     start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited %s:\n%s\n%s" % (
                    self.proc.returncode, tail(self.root / "stderr"), tail(self.root / "logs" / "error.log")))
            try:
                socket.create_connection(self.addr, timeout=1).close()
                return True
            except OSError:
                return False
        try:
            wait_for(up, 20, what="nginx on %s:%d" % self.addr)
        except BaseException:
            self.stop()
            raise
        return self

    def workers(self):
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def logs(self):
        return tail(self.root / "logs" / "error.log")


def storage_nginx_conf(root, addr, mod_conf_path, module=None, user="root", workers=2):
    """nginx-conf/storage-nginx.conf for a test: module path, listen address, paths."""
    text = (CONF_DIR / "storage-nginx.conf").read_text()
    root = Path(root)
    text = re.sub(r"^load_module .*;$", "load_module %s;" % (module or MODULE), text, flags=re.M)
    text = text.replace("user www-data;", "user %s;" % user)
    text = text.replace("worker_processes auto;", "worker_processes %d;" % workers)
    text = re.sub(r"error_log \S+", "error_log %s/logs/error.log" % root, text)
    text = re.sub(r"access_log /\S+;", "access_log %s/logs/access.log;" % root, text)
    text = re.sub(r"^pid \S+;", "pid %s/nginx.pid;" % root, text, flags=re.M)
    text = text.replace("listen 8888;", "listen %s:%d;" % addr)
    text = re.sub(r"fastdfs_conf \S+;", "fastdfs_conf %s;" % mod_conf_path, text)
    return text


def start_storage_nginx(root, addr, group, store_paths, tracker=None, module=None, binary=None, workers=2,
                        **extra):
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(CONF_DIR / "http.conf", root / "http.conf")
    shutil.copy(CONF_DIR / "mime.types", root / "mime.types")
    mod_conf = root / "mod_fastdfs.conf"
    mod_conf.write_text(mod_conf_text(group, store_paths, tracker, **extra))
    n = Nginx(root, storage_nginx_conf(root, addr, mod_conf, module, workers=workers), addr, binary)
    return n.start()


def fdfs_b64(raw):
    return base64.b64encode(raw).decode().replace("+", "-").replace("/", "_").rstrip("=")


def make_remote_name(source_ip, size, ts=None, ext="bin", store_path=0, high=0, low=0, crc=0):
    """A valid remote filename (as a storage would build it) for a file placed by hand."""
    ts = int(time.time()) if ts is None else ts
    size_field = (1 << 63) | (random.randint(0, 0x7FFFFF) << 32) | size if size < (1 << 32) else size
    raw = socket.inet_aton(source_ip) + struct.pack(">IQI", ts, size_field, crc)
    fext = "".join(random.choice("0123456789") for _ in range(6 - len(ext))) + "." + ext
    return "M%02X/%02X/%02X/%s%s" % (store_path, high, low, fdfs_b64(raw), fext)


def http(method, url, headers=None, timeout=30):
    """-> (status, headers dict (lower-case keys), body bytes); no redirects followed."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None
    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def raw_get(addr, path, timeout=10):
    """A request line sent as is (no client-side normalisation) -> (status, body)."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(("GET %s HTTP/1.0\r\nHost: x\r\n\r\n" % path).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body
