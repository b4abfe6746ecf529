"""The official C FastDFS 6.16 client programs (target/c-fastdfs/usr/bin) against OUR
daemons: every program the C build installs, each checked for its exit code AND its
output (file IDs downloadable and byte-identical, sizes and CRC32 right, storages listed
ACTIVE under the right group...).

Several C programs exit 0 whatever happens (fdfs_monitor, fdfs_*_stat, fdfs_download_file,
fdfs_file_info, fdfs_test's download/getmeta/setmeta/delete) and report failures only in
their output or as "ERROR -" log lines on stderr: their output is what is checked.

The cluster is this module's own: one tracker, group1 and group2 with one storage each.
"""

import os
import re
import signal
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

import fdfs_wire as wire
from conftest import pick_addr, start_cluster, stop_cluster
from fdfs_helpers import crc32, payload, wait_for
from interop import C_DIR, c_bin

FILE_ID_RE = re.compile(r"^(group[12])/(M[0-9A-F]{2}/[0-9A-F]{2}/[0-9A-F]{2}/[A-Za-z0-9_-]{27}\S*)$")
GROUPS = ["group1", "group2"]

# Every program of the C build and the test(s) covering it (see test_every_tool_is_covered).
COVERED = {
    "fdfs_upload_file", "fdfs_download_file", "fdfs_delete_file", "fdfs_file_info",
    "fdfs_upload_appender", "fdfs_append_file", "fdfs_regenerate_filename", "fdfs_crc32",
    "fdfs_test", "fdfs_test1", "fdfs_appender_test", "fdfs_appender_test1",
    "fdfs_monitor", "fdfs_tracker_stat", "fdfs_storage_stat", "fdfs_volumn_stat",
    "fdfs_health_checker", "fdfs_exporter",
}
DAEMONS = {"fdfs_trackerd", "fdfs_storaged"}


@pytest.fixture(scope="module")
def cc(tmp_path_factory):
    """Our tracker + group1 and group2 (one storage each)."""
    c = start_cluster(tmp_path_factory, "ctools", groups=GROUPS)
    yield c
    stop_cluster(c)


# ------------------------------------------------------------------ helpers

def run(tool, *args, cwd=None, timeout=60):
    return subprocess.run([str(c_bin(tool)), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def show(p):
    return "%s -> exit %d\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        " ".join(map(str, p.args)), p.returncode, p.stdout[-6000:], p.stderr[-4000:])


def ok(p, code=0):
    """Exit code as expected and no error logged by libfastcommon."""
    assert p.returncode == code, show(p)
    assert "ERROR -" not in p.stderr, "error logged:\n" + show(p)
    return p


def node_of(cluster, group):
    nodes = [n for n in cluster.nodes if n.group == group]
    assert len(nodes) == 1, (group, [(n.group, n.ip) for n in cluster.nodes])
    return nodes[0]


def split_fid(fid):
    m = FILE_ID_RE.match(fid)
    assert m, "not a file id of this cluster: %r" % fid
    return m.group(1), m.group(2)


def wire_download(cluster, fid, *args):
    """Our storage, read over a raw socket: (status, bytes)."""
    group, _ = split_fid(fid)
    return wire.download(node_of(cluster, group).addr, fid, *args)


def assert_stored(cluster, fid, data, what="file"):
    st, got = wire_download(cluster, fid)
    assert st == 0, "%s %s: download status %d" % (what, fid, st)
    assert got == data, "%s %s: %d bytes stored, expected %d (crc %08x vs %08x)" % (
        what, fid, len(got), len(data), crc32(got), crc32(data))


def assert_gone(cluster, fid):
    st, _ = wire_download(cluster, fid)
    assert st == wire.ENOENT, "%s: download status %d, expected ENOENT (2)" % (fid, st)


def slave_name(master_remote, prefix, ext):
    """fdfs_gen_slave_filename: master name up to its ext dot + prefix + .ext"""
    dot = master_remote.find(".", len(master_remote) - 7)
    base = master_remote[:dot] if dot >= 0 else master_remote
    return base + prefix + ("." + ext if ext else "")


def lines(out, pattern):
    return re.findall(pattern, out, re.M)


def upload(cluster, path, *extra):
    p = ok(run("fdfs_upload_file", cluster.client_conf, path, *extra))
    fid = p.stdout.strip()
    split_fid(fid)
    return fid


def file_info(cluster, fid, *flags):
    """fdfs_file_info -> dict of its output lines (it exits 0 even on failure)."""
    p = run("fdfs_file_info", *flags, cluster.client_conf, fid)
    assert p.returncode == 0, show(p)
    info = dict(lines(p.stdout, r"^([a-zA-Z0-9 ]+): (.*)$"))
    return p, info


# ------------------------------------------------------------------ inventory

def test_every_tool_is_covered():
    bindir = C_DIR / "usr" / "bin"
    c_bin("fdfs_test")  # skips / fails when the C build is missing
    installed = {f for f in os.listdir(bindir) if os.access(bindir / f, os.X_OK)}
    tools = {f for f in installed if f.startswith("fdfs_")} - DAEMONS
    assert tools - COVERED == set(), "C programs without a test here: %s" % sorted(tools - COVERED)
    assert COVERED - tools == set(), "tested but not installed: %s" % sorted(COVERED - tools)


# ------------------------------------------------------------------ upload / download / delete

def test_upload_download_delete_tools(cc, tmp_path):
    data = payload(300_001, 1)
    src = tmp_path / "photo.jpg"
    src.write_bytes(data)

    fid = upload(cc, src)
    group, remote = split_fid(fid)
    assert remote.endswith(".jpg"), fid
    dec = wire.decode_file_id(fid)
    node = node_of(cc, group)
    assert (dec["size"], dec["crc32"], dec["source_ip"]) == (len(data), crc32(data), node.ip), (fid, dec)
    assert_stored(cc, fid, data)

    # whole file to a named local file
    out = tmp_path / "back.jpg"
    p = ok(run("fdfs_download_file", cc.client_conf, fid, out))
    assert "fail" not in p.stdout, show(p)
    assert out.read_bytes() == data

    # no local name: saved under the remote file name in the current directory
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    p = ok(run("fdfs_download_file", cc.client_conf, fid, cwd=cwd))
    assert (cwd / os.path.basename(remote)).read_bytes() == data, show(p)

    # ranges
    for off, length in [(0, 1), (1, 10), (123_456, 0), (len(data) - 1, 1), (65_536, 131_072)]:
        part = tmp_path / ("part_%d_%d" % (off, length))
        p = ok(run("fdfs_download_file", cc.client_conf, fid, part, off, length))
        want = data[off:off + length] if length else data[off:]
        assert part.read_bytes() == want, "range %d+%d\n%s" % (off, length, show(p))

    # explicit storage and store path
    p1 = upload(cc, src, "%s:%d" % node.addr, 1)
    assert split_fid(p1)[0] == group and p1.split("/")[1] == "M01", p1
    assert_stored(cc, p1, data)

    # delete, then everything about it fails
    ok(run("fdfs_delete_file", cc.client_conf, fid))
    assert_gone(cc, fid)
    gone = tmp_path / "gone.jpg"
    p = run("fdfs_download_file", cc.client_conf, fid, gone)
    assert "download file fail, error no: 2" in p.stdout, show(p)
    p = run("fdfs_delete_file", cc.client_conf, fid)
    assert p.returncode == 2 and "delete file fail, error no: 2" in p.stdout, show(p)
    ok(run("fdfs_delete_file", cc.client_conf, p1))
    assert_gone(cc, p1)


def test_file_info_tool(cc, tmp_path):
    data = payload(77_777, 2)
    src = tmp_path / "info.bin"
    src.write_bytes(data)
    fid = upload(cc, src)
    group, _ = split_fid(fid)
    node = node_of(cc, group)

    p, info = file_info(cc, fid)
    assert "ERROR -" not in p.stderr, show(p)
    assert info.get("GET FROM SERVER") == "false", show(p)
    assert info.get("file type") == "normal", show(p)
    assert info.get("source ip address") == node.ip, show(p)
    assert info.get("file size") == str(len(data)), show(p)
    m = re.search(r"\(0x([0-9a-f]{8})\)", info.get("file crc32", ""))
    assert m and int(m.group(1), 16) == crc32(data), show(p)

    # an appender: asked from the storage (22 QUERY_FILE_INFO)
    afid = ok(run("fdfs_upload_appender", cc.client_conf, src)).stdout.strip()
    more = payload(1234, 3)
    extra = tmp_path / "more.bin"
    extra.write_bytes(more)
    ok(run("fdfs_append_file", cc.client_conf, afid, extra))
    p, info = file_info(cc, afid)
    assert "ERROR -" not in p.stderr, show(p)
    assert info.get("GET FROM SERVER") == "true", show(p)
    assert info.get("file type") == "appender", show(p)
    assert info.get("source ip address") == node_of(cc, split_fid(afid)[0]).ip, show(p)
    assert info.get("file size") == str(len(data) + len(more)), show(p)
    m = re.search(r"\(0x([0-9a-f]{8})\)", info.get("file crc32", ""))
    assert m and int(m.group(1), 16) == crc32(data + more), show(p)

    # gone from the server: the query fails with ENOENT
    ok(run("fdfs_delete_file", cc.client_conf, afid))
    p, info = file_info(cc, afid, "-s")
    assert "query file info fail, error no: 2" in p.stderr, show(p)
    ok(run("fdfs_delete_file", cc.client_conf, fid))


def test_upload_appender_append_regenerate_tools(cc, tmp_path):
    part1, part2, part3 = payload(100_000, 4), payload(333_333, 5), payload(1, 6)
    files = []
    for i, d in enumerate([part1, part2, part3]):
        f = tmp_path / ("part%d.log" % i)
        f.write_bytes(d)
        files.append(f)
    p = ok(run("fdfs_upload_appender", cc.client_conf, files[0]))
    afid = p.stdout.strip()
    _, remote = split_fid(afid)
    assert remote.endswith(".log") and wire.decode_file_id(afid)["appender"], afid
    assert_stored(cc, afid, part1, "appender")
    ok(run("fdfs_append_file", cc.client_conf, afid, files[1]))
    ok(run("fdfs_append_file", cc.client_conf, afid, files[2]))
    assert_stored(cc, afid, part1 + part2 + part3, "appender after two appends")

    p = ok(run("fdfs_regenerate_filename", cc.client_conf, afid))
    new = p.stdout.strip()
    assert split_fid(new)[0] == split_fid(afid)[0] and new != afid, show(p)
    assert not wire.decode_file_id(new)["appender"], new
    assert_stored(cc, new, part1 + part2 + part3, "regenerated file")
    assert_gone(cc, afid)

    # appending to the old (now missing) name fails with ENOENT
    p = run("fdfs_append_file", cc.client_conf, afid, files[2])
    assert p.returncode == 2 and "append file fail, error no: 2" in p.stdout, show(p)
    ok(run("fdfs_delete_file", cc.client_conf, new))


def test_crc32_tool(tmp_path):
    for n, seed in [(0, 7), (1, 8), (1_000_003, 9)]:
        f = tmp_path / ("c%d" % n)
        data = payload(n, seed)
        f.write_bytes(data)
        p = ok(run("fdfs_crc32", f))
        assert int(p.stdout.strip(), 16) == crc32(data), show(p)


# ------------------------------------------------------------------ fdfs_test / fdfs_test1

PREFIX = {"fdfs_test": {"FILE": "_big", "BUFF": "1024x1024", "CALLBACK": "-small"},
          "fdfs_test1": {"FILE": "_big", "BUFF": "1024x1024", "CALLBACK": "_small"}}
UPLOAD_META = {"ext_name": "jpg", "width": "160", "height": "80", "file_size": "115120"}


def c_test_upload(cc, tmp_path, tool, mode, data):
    """`<tool> conf upload file MODE`: master + slave -> (master fid, slave fid, output)."""
    src = tmp_path / ("upload-%s.jpg" % mode.lower())
    src.write_bytes(data)
    p = ok(run(tool, cc.client_conf, "upload", src, mode))
    out = p.stdout
    assert "not equal!" not in out, "slave name differs from fdfs_gen_slave_filename:\n" + show(p)
    assert "active_test" not in out, show(p)
    # the storage list of 106 / 107 (store query, all servers of the group)
    listed = lines(out, r"^\tserver \d+\. group_name=(\S*), ip_addr=(\S+), port=(\d+)$")
    if tool == "fdfs_test":
        fids = ["%s/%s" % gr for gr in lines(out, r"^group_name=(\S+), remote_filename=(\S+)$")]
        # 106: any group (store_lookup = round robin); the C client never copies the
        # group name it receives to the caller, so it prints an empty one
        assert len(listed) == 1 and (listed[0][1], int(listed[0][2])) in [n.addr for n in cc.nodes], \
            "106 must list the one storage of a group:\n" + show(p)
    else:
        fids = [u.split("/", 3)[3] for u in lines(out, r"^example file url: (\S+)$")]
        g1 = node_of(cc, "group1")
        assert listed == [("group1", g1.ip, str(g1.port))], "107 for group1:\n" + show(p)
    assert len(fids) == 2, "expected a master and a slave file id:\n" + show(p)
    master, slave = fids
    group, mremote = split_fid(master)
    node = node_of(cc, group)
    assert split_fid(slave) == (group, slave_name(mremote, PREFIX[tool][mode], "jpg")), show(p)
    # file info printed for both: master decoded from its name, slave asked from the storage
    assert lines(out, r"^source ip address: (\S*)$") == [node.ip, node.ip], show(p)
    assert lines(out, r"^file size=(-?\d+)$") == [str(len(data))] * 2, show(p)
    assert lines(out, r"^file crc32=(\d+)$") == [str(crc32(data))] * 2, show(p)
    assert_stored(cc, master, data, "master")
    assert_stored(cc, slave, data, "slave")
    for fid in (master, slave):
        st, meta = wire.get_meta(node.addr, fid)
        assert (st, meta) == (0, UPLOAD_META), "metadata of %s" % fid
    return master, slave, p


@pytest.mark.parametrize("tool", ["fdfs_test", "fdfs_test1"])
@pytest.mark.parametrize("mode", ["FILE", "BUFF", "CALLBACK"])
def test_c_test_program_upload(cc, tmp_path, tool, mode):
    data = payload(150_000 + len(mode), {"FILE": 11, "BUFF": 12, "CALLBACK": 13}[mode])
    master, slave, _ = c_test_upload(cc, tmp_path, tool, mode, data)
    # the slave's file info from fdfs_file_info too
    p, info = file_info(cc, slave)
    assert (info.get("file type"), info.get("GET FROM SERVER"), info.get("file size")) == \
        ("slave", "true", str(len(data))), show(p)
    for fid in (slave, master):
        ok(run("fdfs_delete_file", cc.client_conf, fid))
        assert_gone(cc, fid)


@pytest.mark.parametrize("tool", ["fdfs_test", "fdfs_test1"])
def test_c_test_program_file_operations(cc, tmp_path, tool):
    data = payload(222_222, 10)
    master, slave, _ = c_test_upload(cc, tmp_path, tool, "FILE", data)
    group, remote = split_fid(master)
    node = node_of(cc, group)
    target = [group, remote] if tool == "fdfs_test" else [master]

    def op(*args, cwd=None):
        p = ok(run(tool, cc.client_conf, *args, cwd=cwd))
        assert "active_test" not in p.stdout, show(p)
        return p

    def getmeta():
        p = op("getmeta", *target)
        m = re.search(r"^get meta data success, meta count=(\d+)$", p.stdout, re.M)
        assert m, show(p)
        meta = dict(lines(p.stdout.split(m.group(0), 1)[1], r"^([^=\n]+)=(.*)$"))
        assert len(meta) == int(m.group(1)), show(p)
        return meta

    assert getmeta() == UPLOAD_META
    p = op("setmeta", *target, "M", "color=red,width=200")
    assert "set meta data success" in p.stdout, show(p)
    assert getmeta() == dict(UPLOAD_META, color="red", width="200")
    p = op("setmeta", *target, "O", "a=1,b=two")
    assert "set meta data success" in p.stdout, show(p)
    assert getmeta() == {"a": "1", "b": "two"}

    p = op("query_servers", *target)
    assert lines(p.stdout, r"^server list \((\d+)\):$") == ["1"], show(p)
    assert lines(p.stdout, r"^\t(\S+:\d+)$") == ["%s:%d" % node.addr], show(p)

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    p = op("download", *target, cwd=cwd)
    name = os.path.basename(remote)
    assert "download file success, file size=%d, file save to %s" % (len(data), name) in p.stdout, show(p)
    assert lines(p.stdout, r"^storage=(\S+)$") == ["%s:%d" % node.addr], show(p)
    assert (cwd / name).read_bytes() == data
    local = tmp_path / "local.jpg"
    p = op("download", *target, local)
    assert "download file success, file size=%d" % len(data) in p.stdout, show(p)
    assert local.read_bytes() == data
    p = op("download", *target, "CALLBACK", cwd=cwd)
    assert "download file success, file size=%d" % len(data) in p.stdout, show(p)
    assert (cwd / "CALLBACK").read_bytes() == data

    p = op("delete", *target)
    assert "delete file success" in p.stdout, show(p)
    assert_gone(cc, master)
    p = run(tool, cc.client_conf, "download", *target, tmp_path / "gone.jpg")
    assert "download file fail, error no: 2" in p.stdout, show(p)
    p = run(tool, cc.client_conf, "delete", *target)
    assert "delete file fail, error no: 2" in p.stdout, show(p)
    # the slave outlives its master
    assert_stored(cc, slave, data, "slave")
    ok(run("fdfs_delete_file", cc.client_conf, slave))


# ------------------------------------------------------------------ appender tests

@pytest.mark.parametrize("tool", ["fdfs_appender_test", "fdfs_appender_test1"])
@pytest.mark.parametrize("mode", ["FILE", "BUFF", "CALLBACK"])
def test_c_appender_test_program(cc, tmp_path, tool, mode):
    n = 100_001 + len(mode)
    data = payload(n, 20 + len(mode))
    src = tmp_path / "appender.txt"
    src.write_bytes(data)
    p = ok(run(tool, cc.client_conf, src, mode))
    assert "!!!" not in p.stdout + p.stderr, "size mismatch seen by the program:\n" + show(p)
    assert "append file successfully." in p.stdout and "modify file successfully." in p.stdout, show(p)
    if tool == "fdfs_appender_test":
        fids = ["%s/%s" % gr for gr in lines(p.stdout, r"^group_name=(\S+), remote_filename=(\S+)$")]
        # upload n, truncate to n/2, append n, modify n at the end
        sizes = [n, n // 2, n + n // 2, 2 * n + n // 2]
        final = data[:n // 2] + data + data
    else:
        fids = lines(p.stdout, r"^fild_id=(\S+)$")  # sic
        # upload n, truncate to 0, append n, modify n at offset n
        sizes = [n, 0, n, 2 * n]
        final = data + data
    assert len(fids) == 1, show(p)
    fid = fids[0]
    group, remote = split_fid(fid)
    assert wire.decode_file_id(fid)["appender"] and remote.endswith(".txt"), fid
    assert lines(p.stdout, r"^file size=(-?\d+)$") == [str(s) for s in sizes], show(p)
    assert set(lines(p.stdout, r"^source ip address: (\S*)$")) == {node_of(cc, group).ip}, show(p)
    assert_stored(cc, fid, final, "appender")
    st, meta = wire.get_meta(node_of(cc, group).addr, fid)
    assert (st, meta) == (0, UPLOAD_META)
    ok(run("fdfs_delete_file", cc.client_conf, fid))


# ------------------------------------------------------------------ monitoring tools

def monitor_blocks(out):
    """fdfs_monitor list -> {group: [(ip, port, status caption), ...]}"""
    blocks = {}
    for block in re.split(r"^Group \d+:$", out, flags=re.M)[1:] or [out]:
        names = lines(block, r"^group name = (\S+)$")
        assert len(names) == 1, block
        blocks[names[0]] = {
            "hosts": lines(block, r"^\t\thost = (\S+):(\d+)  (\S+)$"),
            "storage_count": lines(block, r"^storage server count = (\d+)$"),
            "port": lines(block, r"^storage server port = (\d+)$"),
            "store_path_count": lines(block, r"^store path count = (\d+)$"),
            "subdir_count": lines(block, r"^subdir count per path = (\d+)$"),
        }
    return blocks


def expected_block(cc, group):
    node = node_of(cc, group)
    return {"hosts": [(node.ip, str(node.port), "ACTIVE")], "storage_count": ["1"],
            "port": [str(node.port)], "store_path_count": [str(cc.store_path_count)],
            "subdir_count": [str(cc.subdirs)]}


def test_fdfs_monitor(cc):
    p = ok(run("fdfs_monitor", cc.client_conf))
    assert "tracker server is %s\n" % cc.tracker_server in p.stdout, show(p)
    assert lines(p.stdout, r"^group count: (\d+)$") == ["2"], show(p)
    blocks = monitor_blocks(p.stdout)
    assert blocks == {g: expected_block(cc, g) for g in GROUPS}, show(p)

    p = ok(run("fdfs_monitor", cc.client_conf, "list", "group2"))
    assert monitor_blocks(p.stdout) == {"group2": expected_block(cc, "group2")}, show(p)

    p = ok(run("fdfs_monitor", cc.client_conf, "-h", cc.tracker_server, "list"))
    assert "tracker server is %s\n" % cc.tracker_server in p.stdout, show(p)
    assert set(monitor_blocks(p.stdout)) == set(GROUPS), show(p)


STAT_LINE = r"connections \{alloc: \d+, current: \d+, max: \d+\}"


def test_fdfs_tracker_stat(cc):
    """95 GET_LEADER + 96 TRACKER_CLUSTER_STAT."""
    p = ok(run("fdfs_tracker_stat", "-c", cc.client_conf, "-d"))
    rows = lines(p.stdout, r"^(\S+), is_leader: (\d), is_active: (\d), " + STAT_LINE + "$")
    assert rows == [(cc.tracker_server, "1", "1")], show(p)
    assert lines(p.stdout, r"^tracker server count: (\d+)$") == ["1"], show(p)
    assert lines(p.stdout, r"^  version: (\S+), up_time: ") != [], show(p)
    p = ok(run("fdfs_tracker_stat", "-c", cc.client_conf, "-L"))
    assert lines(p.stdout, r"^(\S+), is_leader: 1") == [cc.tracker_server], show(p)
    p = ok(run("fdfs_tracker_stat", "-c", cc.client_conf, "-F"))
    assert "tracker server count" not in p.stdout and "is_leader" not in p.stdout, show(p)


def test_fdfs_storage_stat(cc):
    """97 STORAGE_CLUSTER_STAT (not implemented by our tracker yet: expected to fail)."""
    want = sorted(("%s:%d" % n.addr, "ACTIVE") for n in cc.nodes)
    p = ok(run("fdfs_storage_stat", "-c", cc.client_conf))
    rows = sorted(lines(p.stdout, r"^(\S+) (\S+), " + STAT_LINE + "$"))
    assert rows == want, "storages listed by 97:\n" + show(p)
    assert lines(p.stdout, r"^storage server count: (\d+)$") == [str(len(cc.nodes))], show(p)
    p = ok(run("fdfs_storage_stat", "-c", cc.client_conf, "-A", "-d"))
    assert sorted(lines(p.stdout, r"^(\S+) (\S+), " + STAT_LINE + "$")) == want, show(p)
    assert len(lines(p.stdout, r"^  version: \S+, up_time: .*, last_heartbeat_time: ")) == len(want), show(p)
    p = ok(run("fdfs_storage_stat", "-c", cc.client_conf, "-N"))
    assert "storage server count" not in p.stdout, "no storage is not ACTIVE:\n" + show(p)


def test_fdfs_volumn_stat(cc):
    """98 STORAGE_VOLUMN_STAT (not implemented by our tracker yet: expected to fail)."""
    group_re = (r"^(\S*) ?disk_available: (\d), disk space \{total: ([^,]+), free: ([^,]+), "
                r"reserved: ([^,]+), avail: ([^,]+), util: ([\d.]+)%\}$")
    p = ok(run("fdfs_volumn_stat", "-c", cc.client_conf))
    rows = lines(p.stdout, group_re)
    assert [(r[0], r[1]) for r in rows] == [("group1", "1"), ("group2", "1"), ("", "1")], \
        "two groups with disk space available, then the summary:\n" + show(p)
    assert "VOLUMNS SUMMARY" in p.stdout, show(p)
    counts = lines(p.stdout, r"^volumn / group counts \{total: (\d+), available: (\d+)\}$")
    assert counts == [("2", "2")], show(p)
    p = ok(run("fdfs_volumn_stat", "-c", cc.client_conf, "-A"))
    assert [r[0] for r in lines(p.stdout, group_re)] == ["group1", "group2", ""], show(p)
    p = ok(run("fdfs_volumn_stat", "-c", cc.client_conf, "-N"))
    assert "disk_available" not in p.stdout, "every group has space:\n" + show(p)


def start_logged(cmd, out_path, cwd):
    """A long-running C program, line-buffered into out_path."""
    stdbuf = ["stdbuf", "-oL", "-eL"] if os.path.exists("/usr/bin/stdbuf") else []
    fh = open(out_path, "wb")
    try:
        proc = subprocess.Popen(stdbuf + [str(c) for c in cmd], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=str(cwd), start_new_session=True)
    finally:
        fh.close()
    return proc


def stop_logged(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def test_fdfs_health_checker(cc, tmp_path):
    out = tmp_path / "health.out"
    proc = start_logged([c_bin("fdfs_health_checker"), cc.client_conf], out, tmp_path)
    try:
        def report():
            assert proc.poll() is None, "exited %s:\n%s" % (proc.returncode, out.read_text())
            text = out.read_text(errors="replace")
            return text if re.search(r"^Storage Servers: .*\n.*\n=+\n", text, re.M) else None
        text = wait_for(report, 60, interval=0.1, what="first health report")
    finally:
        rc = stop_logged(proc)
    text = out.read_text(errors="replace")
    assert rc == 0 and "Health check service exited" in text, "exit %s:\n%s" % (rc, text)
    assert "Tracker server count: 1" in text, text
    assert lines(text, r"^Groups: (\d+) total, (\d+) healthy$") == [("2", "2")], text
    total, healthy, warning, critical = lines(
        text, r"^Storage Servers: (\d+) total, (\d+) healthy, (\d+) warning, (\d+) critical$")[0]
    assert (total, critical) == ("2", "0"), text
    # WARNING only for a disk less than 20% free (the checker's threshold)
    st = os.statvfs(cc.store_paths[0])
    free_pct = st.f_bavail * 100 // max(st.f_blocks, 1)
    if free_pct >= 25:
        assert (healthy, warning) == ("2", "0") and "Overall Status: OK" in text, text
    else:
        assert int(healthy) + int(warning) == 2, text


def test_fdfs_exporter(cc, tmp_path):
    ip, port = pick_addr()
    # Its own config file, not -f: with -f, 6.16's fdfs_exporter free()s the string
    # literal it holds as the default client config name and aborts.
    conf = tmp_path / "exporter.conf"
    conf.write_text("bind_addr = %s\nport = %d\nfdfs_client_cfg = %s\ndaemon = false\n"
                    "[auth]\nmethod = none\n" % (ip, port, cc.client_conf))
    out = tmp_path / "exporter.out"
    proc = start_logged([c_bin("fdfs_exporter"), "-c", conf], out, tmp_path)
    try:
        def up():
            assert proc.poll() is None, "exited %s:\n%s" % (proc.returncode, out.read_text())
            socket.create_connection((ip, port), timeout=1).close()
            return True
        wait_for(up, 30, interval=0.1, what="fdfs_exporter listening on %s:%d" % (ip, port))
        try:
            with urllib.request.urlopen("http://%s:%d/metrics" % (ip, port), timeout=30) as r:
                status, body = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read().decode(errors="replace")
        with pytest.raises(urllib.error.HTTPError) as nf:
            urllib.request.urlopen("http://%s:%d/other" % (ip, port), timeout=30)
    finally:
        rc = stop_logged(proc)
    log = out.read_text(errors="replace")
    assert status == 200, "GET /metrics -> %d %s\n%s" % (status, body, log)
    assert nf.value.code == 404
    assert 'fastdfs_tracker_is_leader{host="%s"} 1\n' % cc.tracker_server in body, body
    assert 'fastdfs_tracker_is_active{host="%s"} 1\n' % cc.tracker_server in body, body
    for g in GROUPS:
        node = node_of(cc, g)
        assert 'fastdfs_group_storage_count{group="%s"} 1\n' % g in body, body
        labels = re.findall(r'^fastdfs_storage_total_mb\{group="%s",storage_id="[^"]*",ip="([^"]*)",'
                            r'status="(\d+)"\} (\d+)$' % g, body, re.M)
        assert len(labels) == 1 and labels[0][:2] == (node.ip, "7") and int(labels[0][2]) > 0, body
    assert rc == 0 and "Prometheus exporter service exited" in log, "exit %s\n%s" % (rc, log)
