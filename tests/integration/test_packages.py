"""The Debian packages of `./build.sh deb`: installed with dpkg, the daemons and tools run
from the installed files (as the packages' user, with configs made from the installed
samples), a file served by Debian's nginx through the installed module, then both
packages purged without a trace.

As root only (the packages go into the running system, and are purged again).

Environment:
  FDFS_DEB_DIR             where the .debs are (default <repo>/target/deb)
  FDFS_REQUIRE_PACKAGES=1  fail instead of skip when they cannot be tested
"""

import grp
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import fdfs_wire as wire
from conftest import REPO, Daemon, pick_addr, release_addrs
from fdfs_helpers import payload, wait_for
from nginx_fixtures import Nginx, http, set_keys, storage_nginx_conf

DEB_DIR = Path(os.environ.get("FDFS_DEB_DIR") or REPO / "target" / "deb")
PACKAGES = ("fastdfs-rs", "libnginx-mod-http-fastdfs")
USER = "fdfs"
MODULE = Path("/usr/lib/nginx/modules/ngx_http_fastdfs_module.so")
MODULE_SNIPPET = Path("/usr/share/nginx/modules-available/mod-http-fastdfs.conf")
ENABLED_LINK = Path("/etc/nginx/modules-enabled/50-mod-http-fastdfs.conf")
UNITS = ("fdfs_trackerd.service", "fdfs_storaged.service")
TOOLS = ("fdfs_upload_file", "fdfs_download_file", "fdfs_delete_file", "fdfs_file_info",
         "fdfs_monitor", "fdfs_upload_appender", "fdfs_append_file",
         "fdfs_regenerate_filename", "fdfs_crc32")
# Another dpkg run (a parallel apt-get) holds the lock at most this long.
DPKG_LOCK_DEADLINE = 300

pytestmark = pytest.mark.timeout(900)


def unavailable(msg):
    if os.environ.get("FDFS_REQUIRE_PACKAGES") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def installed(pkg):
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return p.returncode == 0 and p.stdout.endswith(" installed")


def known_to_dpkg(pkg):
    """Installed, or its conffiles still there (removed, not purged)."""
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return p.returncode == 0 and not p.stdout.endswith(" not-installed")


def dpkg(*args):
    """dpkg ARGS, waiting for the dpkg lock while another run holds it."""
    deadline = time.monotonic() + DPKG_LOCK_DEADLINE
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    while True:
        p = subprocess.run(["dpkg", *args], capture_output=True, text=True, timeout=600, env=env)
        if p.returncode == 0:
            return p
        if "lock" not in p.stderr or time.monotonic() >= deadline:
            raise AssertionError("dpkg %s failed (exit %d):\n%s\n%s"
                                 % (" ".join(args), p.returncode, p.stdout, p.stderr))
        time.sleep(0.5)


def deb_paths(deb):
    """The paths a .deb installs (without the trailing / of directories)."""
    out = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True)
    names = subprocess.run(["tar", "-t"], input=out.stdout, capture_output=True, check=True)
    paths = []
    for line in names.stdout.decode().splitlines():
        p = "/" + line.lstrip("./").rstrip("/")
        if p != "/":
            paths.append(p)
    return paths


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def unit_state_files():
    """Whatever systemd or deb-systemd-helper keeps about our units."""
    found = []
    for base in ("/etc/systemd/system", "/var/lib/systemd/deb-systemd-helper-enabled",
                 "/var/lib/systemd/deb-systemd-helper-masked"):
        for dirpath, dirs, files in os.walk(base):
            found += [os.path.join(dirpath, n) for n in dirs + files if n.startswith("fdfs_")]
    return found


class Installed:
    def __init__(self, debs):
        self.debs = debs
        self.paths = {pkg: deb_paths(deb) for pkg, deb in debs.items()}
        # what was there before: only what the packages brought must go with the purge
        self.existed = {p for paths in self.paths.values() for p in paths if os.path.lexists(p)}
        self.user_existed = user_exists(USER)
        self.group_existed = group_exists(USER)
        self.purged = False


@pytest.fixture(scope="module")
def pkgs():
    if os.geteuid() != 0:
        unavailable("installing Debian packages needs root")
    debs = {}
    for pkg in PACKAGES:
        found = sorted(DEB_DIR.glob("%s_*.deb" % pkg))
        if len(found) != 1:
            unavailable("want one %s_*.deb in %s (./build.sh deb), found %d"
                        % (pkg, DEB_DIR, len(found)))
        debs[pkg] = found[0]
    if not os.path.exists("/usr/sbin/nginx"):
        unavailable("Debian's nginx is not installed (apt-get install nginx)")
    for pkg in PACKAGES:
        if known_to_dpkg(pkg):
            unavailable("%s is already on this system: the test would purge it" % pkg)
    st = Installed(debs)
    try:
        dpkg("-i", *[str(d) for d in debs.values()])
        yield st
    finally:
        if not st.purged:
            left = [p for p in PACKAGES if known_to_dpkg(p)]
            if left:
                dpkg("--purge", *left)


@pytest.fixture
def work_dir():
    """A directory the packages' user and nginx's (www-data) can reach, unlike pytest's
    (mode 0700 under /tmp/pytest-of-root); removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="fdfs-deb-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_files_in_place(pkgs):
    for pkg in PACKAGES:
        assert installed(pkg), pkg
    for name in ("fdfs_trackerd", "fdfs_storaged") + TOOLS:
        p = Path("/usr/bin") / name
        assert p.is_file() and os.access(p, os.X_OK), p
    assert not Path("/usr/bin/fdfs_bench").exists(), "the benchmark is not packaged"
    for conf in ("tracker.conf", "storage.conf", "client.conf", "mod_fastdfs.conf", "http.conf",
                 "mime.types"):
        assert (Path("/etc/fdfs") / conf).is_file(), conf
    conffiles = subprocess.run(["dpkg-query", "-W", "-f=${Conffiles}\n", *PACKAGES],
                               capture_output=True, text=True, check=True).stdout
    for conf in ("tracker.conf", "storage.conf", "client.conf", "mod_fastdfs.conf"):
        assert " /etc/fdfs/%s " % conf in conffiles, conffiles
    # the user and the base paths of the sample configs
    user = pwd.getpwnam(USER)
    assert user.pw_shell == "/usr/sbin/nologin" and user.pw_uid < 1000
    for d in ("/var/lib/fdfs/tracker", "/var/lib/fdfs/storage", "/var/lib/fdfs/store0"):
        assert Path(d).is_dir() and Path(d).stat().st_uid == user.pw_uid, d
    assert "base_path = /var/lib/fdfs/tracker" in Path("/etc/fdfs/tracker.conf").read_text()
    storage_conf = Path("/etc/fdfs/storage.conf").read_text()
    assert "store_path0 = /var/lib/fdfs/store0" in storage_conf
    assert "store_path0 = /var/lib/fdfs/store0" in Path("/etc/fdfs/mod_fastdfs.conf").read_text()
    # the module, enabled the Debian way
    assert MODULE.is_file()
    assert MODULE_SNIPPET.read_text().strip() == "load_module %s;" % MODULE
    assert ENABLED_LINK.is_symlink() and Path(os.readlink(ENABLED_LINK)) == MODULE_SNIPPET
    depends = subprocess.run(["dpkg-query", "-W", "-f=${Depends}", PACKAGES[1]],
                             capture_output=True, text=True, check=True).stdout
    abi = subprocess.run(["dpkg-query", "-W", "-f=${Provides}", "nginx"],
                         capture_output=True, text=True).stdout
    want = re.search(r"nginx-abi-[^,\s]+", abi)
    if want:
        assert want.group(0) in depends.split(", "), (depends, abi)


def test_units(pkgs):
    for unit in UNITS:
        text = (Path("/lib/systemd/system") / unit).read_text()
        execs = re.findall(r"^ExecStart=(\S+) (\S+)", text, re.M)
        assert len(execs) == 1, text
        exe, conf = execs[0]
        assert os.access(exe, os.X_OK) and Path(conf).is_file(), (exe, conf)
        assert re.search(r"^User=%s$" % USER, text, re.M), text
    if shutil.which("systemd-analyze"):
        p = subprocess.run(["systemd-analyze", "verify",
                            *["/lib/systemd/system/%s" % u for u in UNITS]],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and "fdfs" not in p.stderr + p.stdout, p.stdout + p.stderr


def installed_conf(name, **values):
    """/etc/fdfs/NAME with VALUES set (a list for a repeated key)."""
    return set_keys(Path("/etc/fdfs", name).read_text(), values)


def run_tool(*args, timeout=60):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, "%s: exit %d\n%s%s" % (args, p.returncode, p.stdout, p.stderr)
    return p.stdout


def test_cluster_from_installed_files(pkgs, work_dir):
    """fdfs_trackerd and fdfs_storaged from /usr/bin as the packages' user, configs from
    /etc/fdfs pointed at free 127.0.0.x addresses and work_dir; the installed tools
    upload and download; Debian's nginx serves the file through the installed module."""
    user = pwd.getpwnam(USER)
    as_user = ["setpriv", "--reuid=%d" % user.pw_uid, "--regid=%d" % user.pw_gid,
               "--clear-groups"]
    tracker_addr, storage_addr = pick_addr(), pick_addr()
    nginx_addr = pick_addr()
    tracker_server = "%s:%d" % tracker_addr
    tracker_base, storage_base = work_dir / "tracker", work_dir / "storage"
    store = work_dir / "store0"
    client_base = work_dir / "client"
    for d in (tracker_base, storage_base, store, client_base):
        d.mkdir()
        os.chown(d, user.pw_uid, user.pw_gid)
    tracker_conf, storage_conf = work_dir / "tracker.conf", work_dir / "storage.conf"
    client_conf = work_dir / "client.conf"
    tracker_conf.write_text(installed_conf(
        "tracker.conf", bind_addr=tracker_addr[0], port=str(tracker_addr[1]),
        base_path=str(tracker_base)))
    storage_conf.write_text(installed_conf(
        "storage.conf", bind_addr=storage_addr[0], port=str(storage_addr[1]),
        base_path=str(storage_base), store_path0=str(store), tracker_server=[tracker_server],
        subdir_count_per_path="16", heart_beat_interval="1", stat_report_interval="1"))
    client_conf.write_text(installed_conf(
        "client.conf", base_path=str(client_base), tracker_server=[tracker_server]))
    tracker = Daemon("trackerd@deb", "/usr/bin/fdfs_trackerd", tracker_conf, tracker_base,
                     "trackerd.log", wrapper=as_user)
    storage = Daemon("storaged@deb", "/usr/bin/fdfs_storaged", storage_conf, storage_base,
                     "storaged.log", wrapper=as_user)
    nginx = None
    try:
        tracker.start()
        storage.start()

        def ready():
            for d in (tracker, storage):
                assert d.alive(), d.logs()
            st, info = wire.query_store(tracker_addr, timeout=2)
            return st == 0 and info
        wait_for(ready, 60, interval=0.1, what="a writable storage behind the tracker")

        data = payload(200_000, "deb")
        src = work_dir / "sample.bin"
        src.write_bytes(data)
        file_id = run_tool("/usr/bin/fdfs_upload_file", client_conf, src).strip()
        assert re.fullmatch(r"group1/M00/[0-9A-F]{2}/[0-9A-F]{2}/\S+\.bin", file_id), file_id
        out = work_dir / "downloaded.bin"
        run_tool("/usr/bin/fdfs_download_file", client_conf, file_id, out)
        assert out.read_bytes() == data
        # the daemons ran as the packages' user
        stored = store / "data" / file_id.split("/M00/", 1)[1]
        assert stored.stat().st_uid == user.pw_uid

        # nginx: the module loaded through /etc/nginx/modules-enabled, as Debian's nginx.conf
        # does, its workers as www-data; mod_fastdfs.conf from the installed one
        http_dir = work_dir / "fdfs-http"
        http_dir.mkdir()
        for f in ("http.conf", "mime.types"):
            shutil.copy(Path("/etc/fdfs") / f, http_dir / f)
        mod_conf = http_dir / "mod_fastdfs.conf"
        mod_conf.write_text(installed_conf(
            "mod_fastdfs.conf", base_path=str(storage_base), store_path0=str(store),
            tracker_server=[tracker_server], storage_server_port=str(storage_addr[1])))
        nginx_root = work_dir / "nginx"
        conf = storage_nginx_conf(nginx_root, nginx_addr, mod_conf, user="www-data")
        conf = re.sub(r"^load_module .*;$", "include /etc/nginx/modules-enabled/*.conf;", conf,
                      flags=re.M)
        nginx = Nginx(nginx_root, conf, nginx_addr, binary="/usr/sbin/nginx")
        t = nginx.test_config()
        assert t.returncode == 0 and "test is successful" in t.stderr, t.stderr
        nginx.start()
        st, _, body = http("GET", "%s/%s" % (nginx.base, file_id))
        assert st == 200 and body == data, (st, nginx.logs())
        st, _, body = http("GET", "%s/%s" % (nginx.base, file_id), {"Range": "bytes=10-19"})
        assert st == 206 and body == data[10:20]
    finally:
        if nginx is not None:
            nginx.stop()
        storage.stop()
        tracker.stop()
        release_addrs({tracker_addr[0], storage_addr[0], nginx_addr[0]})
    assert storage.proc.returncode == 0, storage.logs()
    assert tracker.proc.returncode == 0, tracker.logs()


def test_purge_leaves_nothing(pkgs):
    pkgs.purged = True
    dpkg("--purge", *PACKAGES)
    for pkg in PACKAGES:
        assert not known_to_dpkg(pkg), pkg
    brought = [p for paths in pkgs.paths.values() for p in paths if p not in pkgs.existed]
    left = [p for p in brought if os.path.lexists(p)]
    assert not left, "left behind: %s" % left
    for p in ("/etc/fdfs", "/var/lib/fdfs", ENABLED_LINK, Path("%s.removed" % ENABLED_LINK),
              MODULE, MODULE_SNIPPET, "/usr/bin/fdfs_trackerd"):
        assert not os.path.lexists(p), p
    assert not unit_state_files(), unit_state_files()
    if not pkgs.user_existed:
        assert not user_exists(USER)
    if not pkgs.group_existed:
        assert not group_exists(USER)
