"""The official FastDFS Java SDK (fastdfs-client-java 1.39) against OUR daemons, with its
connection pool ON (fastdfs.connection_pool.enabled = true).

drivers/java/FdfsJavaDriver.java is compiled against the SDK (interop.java_sdk_classes())
and run once per scenario with `java -cp`; it prints one JSON line per step. A scenario
uses one StorageClient1, so every call goes through the SDK's static pool of connections:

* basic: uploads (bytes, local file, callback; with metadata), slave uploads, appender
  upload + append / modify / truncate / regenerate, whole, ranged and callback downloads,
  metadata overwrite and merge, file info, delete, listGroups / listStorages;
* error scenarios: one error reply from the storage (slave of a missing master -> 2, an
  existing slave -> 17, append / modify / truncate of a missing appender -> 2, append of
  1 MiB to a deleted appender -> 2), then two rounds of six calls on the SAME pool, which
  must all succeed. The SDK writes the whole request before reading the reply and then
  returns the connection to its pool (FIFO, up to two storage connections here), so a
  storage that answers the errno and closes without reading the rest of the request
  fails one of the later calls (connection reset / broken pipe), typically in round 2.
  C 6.16's storage reads a request up to its buff_size (256 KiB) before handling it, so
  it keeps such connections usable for the small bodies; with the 1 MiB append it does
  not (the rest of the body is parsed as the next request): that scenario asks more of
  our storage than C gives.

The cluster is this module's own: one tracker, group1 and group2 with one storage each.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import fdfs_wire as wire
from conftest import start_cluster, stop_cluster
from fdfs_helpers import crc32
from interop import _missing, java_sdk_classes

HERE = Path(__file__).resolve().parent
DRIVER_SRC = HERE / "drivers" / "java" / "FdfsJavaDriver.java"
STEP_MARK = "@@FDFS_JAVA_STEP@@ "
DONE_MARK = "@@FDFS_JAVA_DONE@@"
GROUPS = ["group1", "group2"]
# No hsperfdata files under /tmp.
JVM_OPTS = ["-XX:-UsePerfData"]
DRIVER_TIMEOUT = 100  # below pytest.ini's 120 s per test

# scenario -> errno the storage must answer with (C 6.16's storage_service.c)
ERROR_SCENARIOS = {
    "slave_missing_master": 2,   # 21 UPLOAD_SLAVE_FILE, master deleted: ENOENT
    "slave_exists": 17,          # 21 again with the same prefix/ext: EEXIST
    "append_missing": 2,         # 24 APPEND_FILE, 8 KiB, appender never existed
    "append_deleted_1mib": 2,    # 24 APPEND_FILE, 1 MiB, appender deleted
    "modify_missing": 2,         # 34 MODIFY_FILE, 8 KiB, appender never existed
    "truncate_missing": 2,       # 36 TRUNCATE_FILE (no trailing body): control case
}


@pytest.fixture(scope="module")
def jc(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "javasdk", groups=GROUPS)
    yield c
    stop_cluster(c)


@pytest.fixture(scope="module")
def driver_cp(tmp_path_factory):
    """Classpath: the SDK's classes + the compiled driver."""
    java = shutil.which("java")
    javac = shutil.which("javac")
    if java is None or javac is None:
        _missing("java / javac not installed (Debian: default-jdk-headless)")
    sdk = java_sdk_classes()
    out = tmp_path_factory.mktemp("java-driver")
    p = subprocess.run([javac, "-J-XX:-UsePerfData", "-nowarn", "-encoding", "UTF-8",
                        "-cp", str(sdk), "-d", str(out), str(DRIVER_SRC)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, "javac %s failed:\n%s%s" % (DRIVER_SRC, p.stdout, p.stderr)
    return java, "%s:%s" % (sdk, out)


class Run:
    def __init__(self, scenario, steps, done, rc, stdout, stderr):
        self.scenario = scenario
        self.steps = steps
        self.done = done
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr

    def __getitem__(self, name):
        for s in self.steps:
            if s["step"] == name:
                return s
        raise AssertionError("step %r not reported by the driver (scenario %s)\n%s"
                             % (name, self.scenario, self.tail()))

    def tail(self):
        return "driver exit %s\n--- stdout (end) ---\n%s\n--- stderr (end) ---\n%s" % (
            self.rc, self.stdout[-3000:], self.stderr[-3000:])

    def describe(self, steps):
        return "\n".join("  %-40s errno=%-3s %s%s" % (
            s["step"], s.get("errno"), s.get("error"),
            "" if s.get("expected_errno") is None else " (expected errno %s)" % s["expected_errno"])
            for s in steps)

    def failed(self, prefix=""):
        return [s for s in self.steps if s["step"].startswith(prefix) and not s["ok"]]

    def assert_complete(self):
        assert self.done, "driver did not finish scenario %s\n%s" % (self.scenario, self.tail())


def run_driver(jc, driver_cp, tmp_path, scenario):
    java, cp = driver_cp
    props = tmp_path / "fastdfs-client.properties"
    props.write_text(
        "# generated by tests/integration/test_java_sdk.py\n"
        "fastdfs.tracker_servers = %s\n"
        "fastdfs.connect_timeout_in_seconds = 5\n"
        "fastdfs.network_timeout_in_seconds = 10\n"
        "fastdfs.charset = UTF-8\n"
        "fastdfs.connection_pool.enabled = true\n"
        "fastdfs.connection_pool.max_count_per_entry = 10\n"
        "fastdfs.connection_pool.max_idle_time = 3600\n"
        "fastdfs.connection_pool.max_wait_time_in_ms = 3000\n" % jc.tracker_server)
    work = tmp_path / "work"
    work.mkdir()
    cmd = [java, *JVM_OPTS, "-Djava.io.tmpdir=%s" % work, "-cp", cp, "FdfsJavaDriver",
           str(props), str(work), scenario]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=DRIVER_TIMEOUT, cwd=str(work))
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc = "timeout after %ds" % DRIVER_TIMEOUT
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    steps = [json.loads(line[len(STEP_MARK):]) for line in out.splitlines() if line.startswith(STEP_MARK)]
    return Run(scenario, steps, DONE_MARK in out.splitlines(), rc, out, err)


def node_of(cluster, group):
    nodes = [n for n in cluster.nodes if n.group == group]
    assert len(nodes) == 1, group
    return nodes[0]


def slave_name(master_fid, prefix, ext):
    group, _, remote = master_fid.partition("/")
    dot = remote.find(".", len(remote) - 7)
    return "%s/%s%s.%s" % (group, remote[:dot] if dot >= 0 else remote, prefix, ext)


# ------------------------------------------------------------------ basic operations

def test_java_sdk_operations_with_connection_pool(jc, driver_cp, tmp_path):
    r = run_driver(jc, driver_cp, tmp_path, "basic")
    assert r.steps and r["init"]["ok"], "SDK init failed:\n%s\n%s" % (r.describe(r.steps[:1]), r.tail())
    assert r["init"]["pool_enabled"] is True
    bad = r.failed()
    assert not bad, "Java SDK steps failed (pool on):\n%s\n%s" % (r.describe(bad), r.tail())
    r.assert_complete()

    # what the SDK says matches the cluster
    up = r["upload_bytes_with_meta"]
    fid = up["file_id"]
    group = fid.split("/")[0]
    node = node_of(jc, group)
    dec = wire.decode_file_id(fid)
    assert (dec["size"], dec["crc32"], dec["source_ip"]) == (up["size"], up["crc32"], node.ip), dec
    info = r["get_file_info"]["info"]
    assert (info["from_server"], info["source_ip"]) == (False, node.ip), info
    qinfo = r["query_file_info"]["info"]
    assert (qinfo["from_server"], qinfo["source_ip"], qinfo["crc32"]) == (True, node.ip, up["crc32"]), qinfo
    assert r["upload_slave"]["file_id"] == slave_name(fid, "_150x150", "png")
    sinfo = r["slave_file_info"]["info"]
    assert (sinfo["from_server"], sinfo["source_ip"]) == (True, node.ip), sinfo
    # and what the storages hold, read over raw sockets
    regen = r["regenerate_appender_filename"]
    rnode = node_of(jc, regen["file_id"].split("/")[0])
    st, data = wire.download(rnode.addr, regen["file_id"])
    assert st == 0 and crc32(data) == regen["info"]["crc32"], (st, len(data))
    assert wire.download(rnode.addr, regen["old_file_id"])[0] == wire.ENOENT
    lnode = node_of(jc, r["upload_local_file"]["file_id"].split("/")[0])
    assert wire.download(lnode.addr, r["upload_local_file"]["file_id"])[0] == wire.ENOENT

    groups = {g["name"]: g for g in r["list_groups"]["groups"]}
    assert sorted(groups) == GROUPS, groups
    for g in GROUPS:
        n = node_of(jc, g)
        assert (groups[g]["storage_count"], groups[g]["storage_port"], groups[g]["store_path_count"]) == \
            (1, n.port, jc.store_path_count), groups[g]
    storages = sorted((s["group"], s["ip"], s["port"], s["status"]) for s in r["list_storages"]["storages"])
    assert storages == sorted((n.group, n.ip, n.port, 7) for n in jc.nodes), storages

    pool = r["pool_state"]["pool"]
    for n in jc.nodes:
        assert "%s-%d" % n.addr in pool, "no pooled connection to %s:%d:\n%s" % (*n.addr, pool)


# ------------------------------------------------------------------ error replies on the pool

@pytest.mark.parametrize("scenario", list(ERROR_SCENARIOS))
def test_java_sdk_error_reply_then_same_pool(jc, driver_cp, tmp_path, scenario):
    r = run_driver(jc, driver_cp, tmp_path, scenario)
    assert r.steps and r["init"]["ok"], "SDK init failed:\n%s\n%s" % (r.describe(r.steps[:1]), r.tail())
    setup = r.failed("warmup:") + r.failed("setup:")
    assert not setup, "steps before the error failed:\n%s\n%s" % (r.describe(setup), r.tail())

    err = r["error:" + scenario]
    after = r.failed("after:")
    problems = []
    if not err["ok"]:
        problems.append("the error call itself: expected errno %d, got:\n%s"
                        % (ERROR_SCENARIOS[scenario], r.describe([err])))
    if after:
        problems.append("%d of %d later calls on the same connection pool failed:\n%s" % (
            len(after), len([s for s in r.steps if s["step"].startswith("after:")]), r.describe(after)))
    assert not problems, "scenario %s:\n%s\n%s" % (scenario, "\n".join(problems), r.tail())
    r.assert_complete()
