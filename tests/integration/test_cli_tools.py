"""Our Rust CLI tools (same names / arguments as upstream FastDFS) against the
real daemons, plus cross-checks with PyPI clients and raw sockets."""

import datetime
import os
import re
import stat
import subprocess

import pytest

import fdfs_wire as wire
from conftest import require_binary
from fdfs_helpers import crc32, payload

FILE_ID_RE = re.compile(r"^(group1/M[0-9A-F]{2}/[0-9A-F]{2}/[0-9A-F]{2}/[A-Za-z0-9_-]{27}.{7})$")


def run(tool, *args, check=None, timeout=60, cwd=None):
    exe = require_binary(tool)
    p = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, cwd=cwd)
    if check is True:
        assert p.returncode == 0, "%s %s -> exit %d\nstdout: %s\nstderr: %s" % (
            tool, " ".join(map(str, args)), p.returncode, p.stdout, p.stderr)
    return p


def file_id_from(out):
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    assert lines, "no output"
    assert FILE_ID_RE.match(lines[-1]), "not a file id: %r" % out
    return lines[-1]


def upload(cluster, path, *extra):
    p = run("fdfs_upload_file", cluster.client_conf, path, *extra, check=True)
    return file_id_from(p.stdout)


def download(cluster, fid, dest, *extra):
    return run("fdfs_download_file", cluster.client_conf, fid, dest, *extra)


# ------------------------------------------------------------------ basics

def test_upload_download_delete(cluster, tmp_path):
    data = payload(250_000, 1)
    src = tmp_path / "photo.jpg"
    src.write_bytes(data)
    fid = upload(cluster, src)
    assert fid.endswith(".jpg")
    dec = wire.decode_file_id(fid)
    assert dec["size"] == len(data) and dec["crc32"] == crc32(data)
    assert dec["source_ip"] == cluster.storage_ip

    out = tmp_path / "back.jpg"
    p = download(cluster, fid, out)
    assert p.returncode == 0, p.stdout + p.stderr
    assert out.read_bytes() == data

    p = run("fdfs_delete_file", cluster.client_conf, fid)
    assert p.returncode == 0, p.stdout + p.stderr
    assert wire.download(cluster.storage_addr, fid)[0] == wire.ENOENT

    out2 = tmp_path / "gone.jpg"
    p = download(cluster, fid, out2)
    assert p.returncode != 0, "downloading a deleted file must exit non-zero:\n%s%s" % (p.stdout, p.stderr)
    p = run("fdfs_delete_file", cluster.client_conf, fid)
    assert p.returncode != 0, "deleting a deleted file must exit non-zero"


def test_upload_ext_rules(cluster, tmp_path):
    cases = {"noext": "", "a.toolongext": "", "x.tar.gz": "gz", "y.abcdef": "abcdef"}
    for name, ext in cases.items():
        f = tmp_path / name
        f.write_bytes(name.encode())
        fid = upload(cluster, f)
        fext = fid[-7:]
        want = r"[0-9]{%d}\.%s" % (6 - len(ext), re.escape(ext)) if ext else r"[0-9]{7}"
        assert re.fullmatch(want, fext), (name, fid)
        assert wire.download(cluster.storage_addr, fid) == (0, name.encode())


def test_upload_to_explicit_storage_and_path(cluster, tmp_path):
    f = tmp_path / "p1.bin"
    f.write_bytes(b"store path one")
    fid = upload(cluster, f, "%s:%d" % cluster.storage_addr, 1)
    assert fid.split("/")[1] == "M01"
    assert wire.download(cluster.storage_addr, fid) == (0, b"store path one")


def test_ranged_download(cluster, tmp_path):
    data = payload(50_000, 2)
    src = tmp_path / "r.bin"
    src.write_bytes(data)
    fid = upload(cluster, src)
    for off, length in [(0, 10), (100, 0), (49_999, 1), (12_345, 6_789)]:
        out = tmp_path / ("r_%d_%d" % (off, length))
        p = download(cluster, fid, out, off, length)
        assert p.returncode == 0, p.stdout + p.stderr
        want = data[off:off + length] if length else data[off:]
        assert out.read_bytes() == want, (off, length)


def test_download_spanning_buffers_and_write_errors(cluster, tmp_path):
    # More than the tool's receive buffers (1 MiB each, three of them), not a multiple.
    data = payload(3 * 1024 * 1024 + 777, 4)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    fid = upload(cluster, src)
    out = tmp_path / "big.back"
    p = download(cluster, fid, out)
    assert p.returncode == 0, p.stdout + p.stderr
    assert out.read_bytes() == data
    # A write error while the content streams in: a readable message, a non-zero exit,
    # and the device itself left alone.
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    p = download(cluster, fid, "/dev/full")
    assert p.returncode != 0
    msg = (p.stdout + p.stderr).lower()
    assert "error no: 28" in msg and "no space left on device" in msg, msg
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_download_bad_ids_exit_nonzero(cluster, tmp_path):
    for bad in ["group1/M00/00/00/doesnotexistAAAAAAAAAAAAAAAAAA1234567.txt", "nosuchgroup/M00/00/00/x.txt",
                "garbage"]:
        p = download(cluster, bad, tmp_path / "x")
        assert p.returncode != 0, "download %r exited 0" % bad


def test_file_info(cluster, tmp_path):
    data = payload(77_777, 3)
    src = tmp_path / "i.dat"
    src.write_bytes(data)
    fid = upload(cluster, src)
    p = run("fdfs_file_info", cluster.client_conf, fid, check=True)
    out = p.stdout
    assert re.search(r"source ip address:\s*%s\s*$" % re.escape(cluster.storage_ip), out, re.M), out
    assert re.search(r"file size:\s*%d\s*$" % len(data), out, re.M), out
    m = re.search(r"file crc32:\s*(-?\d+)\s*\(0x([0-9A-Fa-f]{8})\)", out)
    assert m, out
    assert int(m.group(2), 16) == crc32(data)
    assert int(m.group(1)) & 0xFFFFFFFF == crc32(data)
    ts = wire.decode_file_id(fid)["timestamp"]
    m = re.search(r"file create timestamp:\s*(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", out)
    assert m, out
    allowed = {datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S"),
               datetime.datetime.utcfromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")}
    assert m.group(1) in allowed


def test_file_info_appender_asks_server(cluster, tmp_path):
    src = tmp_path / "a.log"
    src.write_bytes(b"0123456789")
    p = run("fdfs_upload_appender", cluster.client_conf, src, check=True)
    fid = file_id_from(p.stdout)
    more = tmp_path / "more.log"
    more.write_bytes(b"abc")
    run("fdfs_append_file", cluster.client_conf, fid, more, check=True)
    p = run("fdfs_file_info", cluster.client_conf, fid, check=True)
    assert re.search(r"file size:\s*13\s*$", p.stdout, re.M), p.stdout
    m = re.search(r"file crc32:\s*(-?\d+)\s*\(0x([0-9A-Fa-f]{8})\)", p.stdout)
    assert m and int(m.group(2), 16) == crc32(b"0123456789abc"), p.stdout


def test_appender_append_regenerate(cluster, tmp_path):
    parts = [payload(1000, 10), payload(2500, 11), payload(1, 12)]
    src = tmp_path / "app.txt"
    src.write_bytes(parts[0])
    p = run("fdfs_upload_appender", cluster.client_conf, src, check=True)
    fid = file_id_from(p.stdout)
    assert wire.decode_file_id(fid)["appender"]
    for i, part in enumerate(parts[1:]):
        f = tmp_path / ("part%d" % i)
        f.write_bytes(part)
        run("fdfs_append_file", cluster.client_conf, fid, f, check=True)
    content = b"".join(parts)
    assert wire.download(cluster.storage_addr, fid) == (0, content)

    p = run("fdfs_regenerate_filename", cluster.client_conf, fid, check=True)
    new = file_id_from(p.stdout)
    assert new != fid
    dec = wire.decode_file_id(new)
    assert not dec["appender"] and dec["size"] == len(content) and dec["crc32"] == crc32(content)
    out = tmp_path / "regen.out"
    assert download(cluster, new, out).returncode == 0
    assert out.read_bytes() == content
    assert download(cluster, fid, tmp_path / "old.out").returncode != 0
    # a normal file cannot be appended to / regenerated
    f = tmp_path / "x"
    f.write_bytes(b"x")
    assert run("fdfs_append_file", cluster.client_conf, new, f).returncode != 0
    assert run("fdfs_regenerate_filename", cluster.client_conf, new).returncode != 0


def test_crc32_tool(tmp_path):
    for n, seed in [(0, 0), (1, 1), (1_000_003, 2)]:
        f = tmp_path / ("c%d" % n)
        data = payload(n, seed)
        f.write_bytes(data)
        p = run("fdfs_crc32", f, check=True)
        out = p.stdout.strip()
        # upstream prints printf("%x\n", (int)crc32)
        assert int(out, 16) & 0xFFFFFFFF == crc32(data), (n, out)
    assert run("fdfs_crc32", tmp_path / "missing").returncode != 0


def test_monitor(cluster):
    p = run("fdfs_monitor", cluster.client_conf, check=True)
    out = p.stdout
    assert re.search(r"group name\s*=\s*group1", out), out
    # As FastDFS 6.16 prints it: host = ip:port  STATUS.
    host = r"host = %s:%d  ACTIVE\n" % (re.escape(cluster.storage_ip), cluster.storage_port)
    assert re.search(host, out), out
    p = run("fdfs_monitor", cluster.client_conf, "list", "group1", check=True)
    assert re.search(host, p.stdout), p.stdout


def test_a_missing_local_file_is_named(cluster, tmp_path):
    missing = tmp_path / "missing.jpg"
    for tool, args in [("fdfs_upload_file", [missing]), ("fdfs_upload_appender", [missing]),
                       ("fdfs_append_file", ["group1/M00/00/00/x.txt", missing])]:
        p = run(tool, cluster.client_conf, *args)
        assert p.returncode == 2, (tool, p.stderr)
        assert "cannot read the local file %s: No such file or directory" % missing in p.stderr, \
            (tool, p.stderr)


def test_tools_fail_without_tracker(tmp_path):
    import conftest
    ip, port = conftest.pick_addr()     # nothing listens there
    conf = tmp_path / "dead.conf"
    conf.write_text("connect_timeout = 2\nnetwork_timeout = 5\nbase_path = %s\ntracker_server = %s:%d\n"
                    % (tmp_path, ip, port))
    f = tmp_path / "f.txt"
    f.write_bytes(b"x")
    assert run("fdfs_upload_file", conf, f).returncode != 0
    assert run("fdfs_download_file", conf, "group1/M00/00/00/x.txt", tmp_path / "o").returncode != 0


# ------------------------------------------------------------------ cross-checks

@pytest.mark.parametrize("client", ["aiofdfs", "py3fdfs", "fastdfs_client"])
def test_cli_upload_client_download(cluster_for, driver, client, tmp_path):
    c = driver(client)
    cl = cluster_for(client)
    data = payload(123_456, 20)
    src = tmp_path / "cross.bin"
    src.write_bytes(data)
    fid = upload(cl, src)
    assert c.download(fid) == data
    assert c.download(fid, offset=1000, length=100) == data[1000:1100]


@pytest.mark.parametrize("client", ["aiofdfs", "fdfs_client_py3", "fastdfs_client"])
def test_client_upload_cli_download_delete(cluster_for, driver, client, tmp_path):
    c = driver(client)
    cl = cluster_for(client)
    data = payload(65_537, 21)
    fid = c.upload(data, ext="cli")
    out = tmp_path / "o.cli"
    assert download(cl, fid, out).returncode == 0
    assert out.read_bytes() == data
    p = run("fdfs_file_info", cl.client_conf, fid, check=True)
    assert re.search(r"file size:\s*%d\s*$" % len(data), p.stdout, re.M)
    run("fdfs_delete_file", cl.client_conf, fid, check=True)
    c.fails("download", file_id=fid)


def test_cli_against_ipv6_sized_tracker(cluster_v6, tmp_path):
    """The tools must accept 46-byte IP fields (tracker response_ip_addr_size = IPv6)."""
    src = tmp_path / "v6.txt"
    src.write_bytes(b"v6 sized replies")
    fid = upload(cluster_v6, src)
    out = tmp_path / "v6.out"
    assert download(cluster_v6, fid, out).returncode == 0
    assert out.read_bytes() == b"v6 sized replies"
    p = run("fdfs_monitor", cluster_v6.client_conf, check=True)
    assert cluster_v6.storage_ip in p.stdout
