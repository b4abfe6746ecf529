"""fdfs_monitor against the real daemons: two trackers, group1 with two storages.

* `list`, the default mode, `list <group> [<storage id>]` print what C's fdfs_monitor
  6.16 prints for the same cluster at the same moment, byte for byte but for the values
  that move between two runs (masked, their shape kept: `2.5 GB` is not `2 GB`); with
  our trackers, and with C's tracker and trunk files (the trunk lines). The failure
  lines of `delete` and `set_trunk_server` are C's too.
* `--json` parses, and its groups, storages, statuses and counters are the cluster's:
  the upload and download counts equal what the test did once the heartbeats have
  reported them (waited for, with a deadline).
* The leader (95 GET_LEADER) is the tracker both trackers name, asked through either;
  a configured tracker that is down is shown unreachable.
* `summary` shows a stopped storage OFFLINE, first and marked.
* Errors: a readable line and a non-zero exit; no arguments print the new modes.

One cluster for the module (its directory removed when every test passed); the test
that stops a storage starts it again."""

import difflib
import json
import re
import shutil
import subprocess
import time

import pytest

import interop
from conftest import pick_addr, release_addrs, require_binary, start_cluster, stop_cluster
from fdfs_helpers import payload, wait_for
from fdfs_wire import leader_of
from trunk_helpers import TRUNK_EXTRA

DEADLINE = 60.0
UPLOADS = 5
DOWNLOADS = 3


def run(exe, *args, check=True):
    p = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=60)
    if check:
        assert p.returncode == 0, "%s %s -> exit %d\nstdout: %s\nstderr: %s" % (
            exe, " ".join(map(str, args)), p.returncode, p.stdout, p.stderr)
    return p


def monitor(conf, *args, check=True):
    return run(require_binary("fdfs_monitor"), conf, *args, check=check)


def monitor_json(conf, *args):
    return json.loads(monitor(conf, "--json", *args).stdout)


def addr_text(addr):
    return "%s:%d" % addr


def storages_of(report):
    return [s for g in report["groups"] for s in g["storages"]]


def counter_sum(report, name):
    return sum(s["counters"][name] for s in storages_of(report))


@pytest.fixture(scope="module")
def mon(request, tmp_path_factory):
    failed_before = request.session.testsfailed
    c = start_cluster(tmp_path_factory, "monitor", trackers=2, storages=2, store_paths=1)
    try:
        work = c.root / "files"
        work.mkdir()
        c.file_ids = []
        for i in range(UPLOADS):
            src = work / ("m%d.bin" % i)
            src.write_bytes(payload(1000 + i, 40 + i))
            p = run(require_binary("fdfs_upload_file"), c.client_conf, src)
            c.file_ids.append(p.stdout.strip().splitlines()[-1])
        yield c
    finally:
        stop_cluster(c)
        # Kept for a look when a test failed, else gone.
        if request.session.testsfailed == failed_before:
            shutil.rmtree(c.root, ignore_errors=True)


def agreed_leader(c):
    def agreed():
        seen = [leader_of(a) for a in c.tracker_addrs]
        return seen[0] if seen[0] and all(s == seen[0] for s in seen) else None
    return wait_for(agreed, DEADLINE, 0.1, "the trackers to agree on a leader")


# ------------------------------------------------------------------ list

# The lines whose values may move between two runs a moment apart (heartbeats bring new
# counters, times and free space): their digits are masked, their shape kept, so that
# `2.5 GB` and `2 GB`, or `16 minutes 40 seconds` and `16m:40s`, still differ.
VOLATILE_KEYS = ("disk free space", "disk available space", "trunk free space",
                 "connection.", "total_", "success_", "stotal_", "last_")


def masked(text, many_trackers=False):
    """`text` (a `list` output) with the digits of VOLATILE_KEYS lines masked; with
    `many_trackers` (no -h, a random tracker asked) also the tracker index and address."""
    out = []
    for i, ln in enumerate(text.splitlines(True)):
        key = ln.strip().split(" = ", 1)[0]
        if key.startswith(VOLATILE_KEYS) or (many_trackers and i in (0, 2)):
            ln = re.sub(r"\d+", "N", ln)
        out.append(ln)
    return "".join(out)


def ours_and_cs(conf, *args, many_trackers=False, attempts=6):
    """Our fdfs_monitor and C's, run one right after the other with the same arguments,
    until their outputs agree but for the volatile values (a heartbeat may land between
    them) -> (ours, C's) CompletedProcess, masked stdout of each compared by the caller."""
    for _ in range(attempts):
        ours = monitor(conf, *args, check=False)
        cs = interop.run_c("fdfs_monitor", conf, *args)
        if masked(ours.stdout, many_trackers) == masked(cs.stdout, many_trackers):
            break
        time.sleep(0.3)
    return ours, cs


def assert_same_text(conf, *args, many_trackers=False, exit_code=0):
    """Our stdout is C's, line for line (volatile values masked); returns it."""
    ours, cs = ours_and_cs(conf, *args, many_trackers=many_trackers)
    what = "fdfs_monitor %s" % " ".join(map(str, args))
    assert cs.returncode == 0, "C %s: %s%s" % (what, cs.stdout, cs.stderr)
    assert ours.returncode == exit_code, "%s -> %d: %s%s" % (what, ours.returncode,
                                                            ours.stdout, ours.stderr)
    a, b = masked(ours.stdout, many_trackers), masked(cs.stdout, many_trackers)
    diff = "".join(difflib.unified_diff(b.splitlines(True), a.splitlines(True),
                                        "C", "ours", n=2))
    assert a == b, "%s differs from C's:\n%s\nours:\n%s\nC:\n%s" % (
        what, diff, ours.stdout, cs.stdout)
    return ours.stdout


def assert_lists_like_c(c, tracker, storage_ids):
    """Every listing mode prints C's text: the default mode with and without -h,
    `list`, `list <group>`, `list <group> <storage id>` (C ignores the id), and an
    unknown group (nothing listed; ours exits 2 where C exits 0)."""
    h = ("-h", addr_text(tracker))
    out = assert_same_text(c.client_conf, *h)
    assert out.startswith("tracker server count=%d, current server index=" %
                          len(c.tracker_addrs)), out
    assert "\ntracker server is %s\n\ngroup count: 1\n" % addr_text(tracker) in out, out
    for sid in storage_ids:
        assert "\t\tid = %s\n" % sid in out, out
    assert out.count("\tStorage ") == len(storage_ids), out
    assert "leader" not in out and "replication" not in out, out
    assert_same_text(c.client_conf, *h, "list")
    assert_same_text(c.client_conf, *h, "list", "group1")
    assert_same_text(c.client_conf, *h, "list", "group1", storage_ids[0])
    assert_same_text(c.client_conf, *h, "list", "nosuchgroup", exit_code=2)
    assert_same_text(c.client_conf, many_trackers=len(c.tracker_addrs) > 1)
    return out


def assert_failures_like_c(c, tracker, storage_id):
    """delete and set_trunk_server print C's line when the tracker refuses (ours exits
    with the errno, C with 0). Only requests a tracker turns down: nothing changes."""
    h = ("-h", addr_text(tracker))
    for args in [("delete", "group1"), ("delete", "group1", storage_id),
                 ("delete", "nosuchgroup", "nosuchid"),
                 ("set_trunk_server", "nosuchgroup", "nosuchid")]:
        ours, cs = ours_and_cs(c.client_conf, *h, *args)
        assert cs.returncode == 0, cs.stdout + cs.stderr
        assert " fail, error no: " in cs.stdout, (args, cs.stdout)
        assert ours.stdout == cs.stdout, (args, ours.stdout, ours.stderr, cs.stdout)
        code = int(re.search(r"error no: (\d+)", cs.stdout).group(1))
        assert ours.returncode == code, (args, ours.returncode, ours.stderr)


def test_list_is_cs_text(mon):
    """Our two trackers and storages: our fdfs_monitor prints what C's does."""
    out = assert_lists_like_c(mon, mon.tracker_addrs[0], [n.ip for n in mon.nodes])
    for n in mon.nodes:
        assert "\t\thost = %s:%d  ACTIVE\n" % n.addr in out, out
    # C's units: a decimal under 10 (`5.0 MB`, `2.5 GB`), bytes as `N  B`.
    assert re.search(r"^disk total space     = +(\d\.\d|\d{2,}) [KMGTP]B$", out, re.M), out
    assert_failures_like_c(mon, mon.tracker_addrs[0], mon.nodes[0].ip)


@pytest.mark.timeout(300)
def test_list_is_cs_text_on_cs_tracker_with_trunk_files(clusters, tmp_path):
    """C's tracker, our storages in trunk mode (the trunk lines, a trunk server picked):
    the same text from both tools, set_trunk_server's answer included."""
    c = clusters.new("monitor-c", storages=2, store_paths=1, c_trackers={0},
                     tracker_extra=TRUNK_EXTRA)
    c.wait_active(c.nodes[1])
    for i in range(3):
        src = tmp_path / ("t%d.bin" % i)
        src.write_bytes(payload(500 + i, i))
        run(require_binary("fdfs_upload_file"), c.client_conf, src)

    def trunk_server():
        m = re.search(r"current trunk server = (\S+)",
                      interop.run_c("fdfs_monitor", c.client_conf).stdout)
        return m.group(1) if m else None
    trunk = wait_for(trunk_server, DEADLINE, 0.5, "a trunk server in C's fdfs_monitor")
    out = assert_lists_like_c(c, c.tracker_addr, [n.ip for n in c.nodes])
    assert re.search(r"^trunk free space = +\S+ [KMGTP ]?B$", out, re.M), out
    assert "current trunk server = %s (%s)\n" % (trunk, trunk) in out, out
    assert out.count("if_trunk_server = 1\n") == 1, out
    assert_failures_like_c(c, c.tracker_addr, c.nodes[0].ip)
    # set_trunk_server answers that change nothing: the trunk server kept (no id), the
    # trunk server again (EALREADY), the other storage (EEXIST while it is active).
    other = next(n.ip for n in c.nodes if n.ip != trunk)
    h = ("-h", addr_text(c.tracker_addr))
    for args in [("group1",), ("group1", trunk), ("group1", other)]:
        ours, cs = ours_and_cs(c.client_conf, *h, "set_trunk_server", *args)
        assert ours.stdout == cs.stdout, (args, ours.stdout, ours.stderr, cs.stdout)
        m = re.search(r"error no: (\d+)", cs.stdout)
        assert ours.returncode == (int(m.group(1)) if m else 0), (args, ours.stderr)
    assert "set trunk server group1:: success, new trunk server: %s\n" % trunk in \
        monitor(c.client_conf, *h, "set_trunk_server", "group1").stdout


# ------------------------------------------------------------------ --json

def test_json_matches_the_cluster(mon, tmp_path):
    for i in range(DOWNLOADS):
        run(require_binary("fdfs_download_file"), mon.client_conf, mon.file_ids[i],
            tmp_path / ("d%d" % i))

    def reported():
        r = monitor_json(mon.client_conf)
        done = (counter_sum(r, "success_upload_count") == UPLOADS
                and counter_sum(r, "success_download_count") == DOWNLOADS)
        return r if done else None
    r = wait_for(reported, DEADLINE, 0.5, "the upload and download counts in --json")

    assert set(r) == {"time", "tracker_server", "leader", "trackers", "groups"}, r.keys()
    assert r["tracker_server"] in [addr_text(a) for a in mon.tracker_addrs]
    assert sorted(t["address"] for t in r["trackers"]) == sorted(
        addr_text(a) for a in mon.tracker_addrs)
    assert [g["name"] for g in r["groups"]] == ["group1"]
    g = r["groups"][0]
    assert (g["storage_count"], g["active_count"], len(g["storages"])) == (2, 2, 2)
    assert g["trunk_server"] is None and g["current_trunk_file_id"] == -1
    assert 0 <= g["free_mb"] <= g["total_mb"]
    assert {(s["ip"], s["port"]) for s in g["storages"]} == {n.addr for n in mon.nodes}
    # The statuses and ids are the tracker's (92 read by hand).
    wire = {s["ip"]: s for s in mon.list_storages("group1")}
    for s in g["storages"]:
        assert (s["status"], s["status_code"]) == ("ACTIVE", 7)
        assert wire[s["ip"]]["status"] == 7 and wire[s["ip"]]["id"] == s["id"]
        assert s["rw_mode_name"] == "both (normal)"
        assert len(s["counters"]) == 38
        assert s["counters"]["total_upload_count"] >= s["counters"]["success_upload_count"]
        assert s["last_heart_beat_time"] > 0 and s["join_time"] > 0
        assert 0 <= s["free_mb"] <= s["total_mb"]
        assert s["available_mb"] == max(s["free_mb"] - s["reserved_mb"], 0)
    # The same as the list output says for the same storages.
    text = monitor(mon.client_conf, "list").stdout
    for s in g["storages"]:
        block = text.split("\t\tid = %s\n" % s["id"], 1)[1].split("\tStorage ", 1)[0]
        listed = int(re.search(r"\t\tsuccess_upload_count = (\d+)\n", block).group(1))
        assert listed >= s["counters"]["success_upload_count"], block

    one = monitor_json(mon.client_conf, "list", "group1")
    assert [g["name"] for g in one["groups"]] == ["group1"]


# ------------------------------------------------------------------ leader

def test_leader_with_two_trackers(mon, tmp_path):
    leader = agreed_leader(mon)
    assert leader in [addr_text(a) for a in mon.tracker_addrs]
    for addr in mon.tracker_addrs:
        r = monitor_json(mon.client_conf, "-h", addr_text(addr))
        assert r["leader"] == leader
        assert r["tracker_server"] == addr_text(addr)
        assert [t["address"] for t in r["trackers"] if t["is_leader"]] == [leader]
        assert [t["address"] for t in r["trackers"] if t["queried"]] == [addr_text(addr)]
        assert all(t["reachable"] and t["leader_seen"] == leader for t in r["trackers"])

        out = monitor(mon.client_conf, "-h", addr_text(addr), "summary").stdout
        assert "\nleader: %s\n" % leader in out, out
        assert re.search(r"^\* %s\s+leader(, queried)?$" % re.escape(leader), out, re.M), out
        for other in mon.tracker_addrs:
            if addr_text(other) != leader:
                assert re.search(r"^  %s\s+follower(, queried)?$" % re.escape(addr_text(other)),
                                 out, re.M), out

    # A configured tracker that is down: unreachable, the leader still found.
    ip, port = pick_addr()
    try:
        conf = tmp_path / "with-dead.conf"
        conf.write_text(mon.client_conf.read_text() + "tracker_server = %s:%d\n" % (ip, port))
        r = monitor_json(conf, "-h", leader)
        assert r["leader"] == leader
        dead = [t for t in r["trackers"] if t["address"] == "%s:%d" % (ip, port)]
        assert dead == [{"address": "%s:%d" % (ip, port), "reachable": False,
                         "is_leader": False, "queried": False, "leader_seen": None}]
        out = monitor(conf, "-h", leader, "-s").stdout
        assert re.search(r"^  %s:%d\s+unreachable$" % (re.escape(ip), port), out, re.M), out
        assert "trackers: 3, reachable: 2\n" in out, out
    finally:
        release_addrs([ip])


# ------------------------------------------------------------------ errors

def test_usage_and_errors(mon, tmp_path):
    p = run(require_binary("fdfs_monitor"), check=False)
    assert p.returncode == 2
    assert "summary" in p.stderr and "--json" in p.stderr and "Usage:" in p.stderr, p.stderr

    p = monitor(mon.client_conf, "--json", "summary", check=False)
    assert p.returncode == 2 and "--json and summary exclude each other" in p.stderr, p.stderr
    p = monitor(mon.client_conf, "--json", "delete", "group1", check=False)
    assert p.returncode == 2 and "go with list only" in p.stderr, p.stderr

    for mode in ["--json", "-s"]:
        p = monitor(mon.client_conf, mode, "list", "nosuchgroup", check=False)
        assert p.returncode == 2 and p.stdout == "", (p.stdout, p.stderr)
        assert "list group nosuchgroup failed, error no: 2" in p.stderr, p.stderr

    ip, port = pick_addr()      # nothing listens there
    try:
        dead = tmp_path / "dead.conf"
        dead.write_text("connect_timeout = 2\nnetwork_timeout = 5\nbase_path = %s\n"
                        "tracker_server = %s:%d\n" % (tmp_path, ip, port))
        p = monitor(dead, "--json", check=False)
        assert p.returncode != 0 and p.stdout == "", (p.stdout, p.stderr)
        assert "connect to tracker server failed, error no: 111" in p.stderr, p.stderr
    finally:
        release_addrs([ip])


# ------------------------------------------------------------------ summary

def summary_rows(out):
    """The storage lines of a summary, after its header line."""
    lines = out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("GROUP "))
    return lines[head + 1:]


def test_summary_shows_a_stopped_storage_offline_first(mon):
    out = monitor(mon.client_conf, "summary").stdout
    assert "group1: storages 2, active 2;" in out, out
    rows = summary_rows(out)
    assert len(rows) == 2 and all(" ACTIVE " in r for r in rows), out

    # Stop the storage listed last, so that first place is earned.
    last = rows[-1].split()[2]
    node = next(n for n in mon.nodes if addr_text(n.addr) == last)
    node.daemon.stop()
    try:
        def offline():
            s = [s for s in storages_of(monitor_json(mon.client_conf))
                 if (s["ip"], s["port"]) == node.addr]
            return s and s[0]["status"] == "OFFLINE"
        wait_for(offline, DEADLINE, 0.5, "the stopped storage OFFLINE")
        out = monitor(mon.client_conf, "-s").stdout
        assert "group1: storages 2, active 1;" in out, out
        rows = summary_rows(out)
        assert len(rows) == 2, out
        assert re.match(r"^! group1\s+\S+\s+%s\s+OFFLINE\s" % re.escape(last), rows[0]), out
        assert rows[0].endswith("OFFLINE") or "OFFLINE," in rows[0], out
        assert " ACTIVE " in rows[1], out
        m = re.search(r"^storages: 2, with problems: (\d+)$", out, re.M)
        assert m and int(m.group(1)) >= 1, out
    finally:
        node.daemon.start()
        mon.wait_active(node)
