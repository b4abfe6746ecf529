"""Mixed clusters of the real C FastDFS 6.16 daemons and ours, as during a rolling
migration (either way): one group with a C and a Rust storage under a C tracker, a C
storage joining next to a Rust one, each implementation started on the other's data, a
C and a Rust tracker in one cluster, and C -> Rust replication speed.

Every daemon runs on a random 127.0.0.x (conftest.pick_addr; in the two-tracker test a
storage shares its tracker's, as hosts usually do); the C ones through c_daemons.py.  Everything is polled with a deadline, never slept for; all daemons (C
ones too) are stopped at teardown, and a failing test's report has every log tail.
Files are checked on disk under each storage's store paths (reference §5.1) or
downloaded from one storage directly, so that no tracker routing hides a missing copy.
"""

import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import fdfs_wire as wire
from c_daemons import c_tracker, file_path
from conftest import STATUS_ACTIVE, Daemon, require_binary
from fdfs_helpers import payload, wait_for

THREADS = 24


@pytest.fixture
def report(capsys, record_property):
    """report(key, value, text): a measured number, kept in the junit properties and
    printed on the terminal even under -q."""
    def say(key, value, text):
        record_property(key, value)
        with capsys.disabled():
            print("\n[mixed-cluster] %s" % text)
    return say


# ------------------------------------------------------------------ helpers

def upload_via_tracker(tracker, data, ext="bin", meta=None):
    """101 on `tracker`, then 11 on the storage it names (+ 13 there when meta is given)
    -> (file_id, storage addr)."""
    st, info = wire.query_store(tracker, timeout=20)
    assert st == 0, "tracker %s:%d: query store -> status %d" % (tracker + (st,))
    addr = (info["ip"], info["port"])
    st, fid = wire.upload(addr, data, ext, spi=info["spi"], timeout=30)
    assert st == 0, "upload to %s:%d -> status %d" % (addr + (st,))
    if meta:
        st = wire.set_meta(addr, fid, meta, timeout=30)
        assert st == 0, "set metadata of %s on %s:%d -> status %d" % ((fid,) + addr + (st,))
    return fid, addr


def append(addr, fid, part):
    """24 APPEND_FILE on the storage at `addr`."""
    remote = fid.partition("/")[2].encode()
    body = struct.pack(">QQ", len(remote), len(part)) + remote + part
    with wire.Conn(addr, 30) as conn:
        st, _ = conn.request(wire.S_APPEND, body)
    assert st == 0, "append to %s on %s:%d -> %d" % ((fid,) + addr + (st,))


def appender_via_tracker(tracker, parts, ext="log"):
    """An appender file (23) made of parts[0], then each further part appended (24) ->
    (file_id, storage addr)."""
    st, info = wire.query_store(tracker, timeout=20)
    assert st == 0, "tracker %s:%d: query store -> status %d" % (tracker + (st,))
    addr = (info["ip"], info["port"])
    st, fid = wire.upload(addr, parts[0], ext, spi=info["spi"], cmd=wire.S_UPLOAD_APPENDER,
                          timeout=30)
    assert st == 0, "appender upload to %s:%d -> status %d" % (addr + (st,))
    for part in parts[1:]:
        append(addr, fid, part)
    return fid, addr


def read_disk(node, name):
    try:
        with open(file_path(node, name), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def disk_state(nodes, files, metas=()):
    """-> {node index: [file ids (or id-m) missing or different on that node's disk]}"""
    out = {}
    for i, n in enumerate(nodes):
        bad = [fid for fid, data in files.items() if read_disk(n, fid) != data]
        bad += [fid + "-m" for fid in metas if read_disk(n, fid + "-m") is None]
        if bad:
            out[i] = bad
    return out


def describe(cluster, nodes, bad, files):
    lines = []
    for i, missing in sorted(bad.items()):
        n = nodes[i]
        absent = [f for f in missing if read_disk(n, f) is None]
        lines.append("%s storage %s:%d: %d not identical (%d absent), e.g. %s" % (
            cluster.impl_of(n), n.ip, n.port, len(missing), len(absent), missing[:3]))
    return "\n".join(lines)


def wait_on_disk(cluster, nodes, files, deadline, metas=(), what="files"):
    """Polls until every file is byte-identical (and every metadata file of `metas`
    exists) on every node's disk -> seconds waited; fails with the count of what is
    missing where when `deadline` passes."""
    t0 = time.monotonic()
    state = {}

    def done():
        cluster.check_alive()
        state["bad"] = disk_state(nodes, files, metas)
        return not state["bad"]
    try:
        wait_for(done, deadline, interval=0.2, what=what)
    except TimeoutError:
        raise AssertionError("after %.0fs, %s not on every storage:\n%s" % (
            deadline, what, describe(cluster, nodes, state["bad"], files)))
    return time.monotonic() - t0


def parallel(fn, items, threads=THREADS):
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, items))


# ------------------------------------------------------------------ 1. one group, C + Rust

@pytest.mark.timeout(240)
def test_c_and_rust_storage_under_c_tracker(clusters, report):
    """2,000 concurrent 4 KiB uploads through a C tracker land on both members of a
    group (one C, one Rust storage) within 20 s of the last upload; deleting 100 files with metadata, half
    through each member, leaves neither the file nor its `-m` on either disk."""
    c = clusters.new("c-rust-group", c_trackers={0}, c_storages={0}, storages=2)
    nodes = c.nodes
    files = {}
    sources = {}
    metas = []
    lock = threading.Lock()

    def one(i):
        data = payload(4096, 1000 + i)
        meta = {"idx": str(i), "kind": "mixed"} if i % 20 == 0 else None
        fid, addr = upload_via_tracker(c.tracker_addr, data, "dat", meta)
        with lock:
            files[fid] = data
            sources[fid] = addr
            if meta:
                metas.append(fid)

    t0 = time.monotonic()
    parallel(one, range(2000))
    t_uploaded = time.monotonic() - t0
    assert len(files) == 2000 and len(metas) == 100
    per_source = {n.addr: sum(1 for a in sources.values() if a == n.addr) for n in nodes}
    assert all(v >= 200 for v in per_source.values()), \
        "the C tracker did not spread the uploads over both storages: %s" % per_source

    replicated = wait_on_disk(c, nodes, files, 20.0, metas=metas,
                              what="2,000 uploads (and 100 metadata files)")
    report("upload_replicate_s", t_uploaded + replicated,
           "test 1: 2,000 x 4 KiB uploaded through the C tracker in %.1fs "
           "(C storage source of %d, Rust of %d); on both disks %.1fs later"
           % (t_uploaded, per_source[nodes[0].addr], per_source[nodes[1].addr], replicated))
    # The metadata reached both members as it was set.
    for fid in metas:
        for n in nodes:
            st, meta = wire.get_meta(n.addr, fid)
            assert st == 0 and meta.get("kind") == "mixed", \
                "%s storage %s: metadata of %s -> %s %s" % (c.impl_of(n), n.ip, fid, st, meta)

    # Delete the 100 with metadata, half through each member (each half mixes sources).
    by = {fid: nodes[k % 2] for k, fid in enumerate(metas)}

    def delete(fid):
        st = wire.delete(by[fid].addr, fid, timeout=30)
        assert st == 0, "delete %s through %s storage -> status %d" % (
            fid, c.impl_of(by[fid]), st)
    parallel(delete, metas)

    state = {}

    def gone():
        c.check_alive()
        left = {}
        for i, n in enumerate(nodes):
            names = [f for fid in metas for f in (fid, fid + "-m") if read_disk(n, f) is not None]
            if names:
                left[i] = names
        state["left"] = left
        return not left
    try:
        wait_for(gone, 30.0, interval=0.2, what="deleted files and -m gone")
    except TimeoutError:
        lines = []
        for i, names in sorted(state["left"].items()):
            n = nodes[i]
            data = [f for f in names if not f.endswith("-m")]
            m = [f for f in names if f.endswith("-m")]
            via = {"C": 0, "Rust": 0}
            for f in names:
                via[c.impl_of(by[f[:-2] if f.endswith("-m") else f])] += 1
            lines.append("%s storage %s: %d files and %d -m files left (deleted through: "
                         "C %d, Rust %d), e.g. %s" % (c.impl_of(n), n.ip, len(data), len(m),
                                                      via["C"], via["Rust"], names[:3]))
        raise AssertionError("30s after deleting 100 files with metadata:\n" + "\n".join(lines))
    # The other 1,900 are untouched on both.
    rest = {f: d for f, d in files.items() if f not in by}
    bad = disk_state(nodes, rest)
    assert not bad, describe(c, nodes, bad, rest)


# ------------------------------------------------------------------ 2. C storage joins

@pytest.mark.timeout(300)
def test_empty_c_storage_joins_rust_group(clusters, report):
    """An empty C storage joins a Rust tracker next to a Rust storage holding 200 files
    (10 of them appender files with two appends each, 20 with metadata): ACTIVE within
    120 s, holding all 200 byte-identical (and the metadata files)."""
    c = clusters.new("c-joins", storages=1)
    rust = c.nodes[0]
    files = {}
    metas = []
    for i in range(200):
        data = payload(1 + (i * 7919) % 65536, 2000 + i)
        if i % 20 == 5:
            # appender files grown by appends: binlog records C, then A, A
            fid, _ = appender_via_tracker(c.tracker_addr, [data[:100], data[100:300], data[300:]])
        else:
            meta = {"n": str(i)} if i % 10 == 0 else None
            fid, _ = upload_via_tracker(c.tracker_addr, data, "bin", meta)
            if meta:
                metas.append(fid)
        files[fid] = data

    t0 = time.monotonic()
    new = c.add_storage(impl="c")
    seen = []

    def active():
        c.check_alive()
        st = c.storage_status(new)
        if not seen or seen[-1] != st:
            seen.append(st)
        return st == STATUS_ACTIVE
    try:
        wait_for(active, 120.0, interval=0.2, what="C storage ACTIVE")
    except TimeoutError:
        have = len(files) - len(disk_state([new], files).get(0, []))
        raise AssertionError("C storage %s not ACTIVE after 120s: statuses seen %s, "
                             "holds %d of 200 files" % (new.ip, seen, have))
    took = time.monotonic() - t0
    report("c_join_active_s", took, "test 2: empty C storage ACTIVE after %.1fs (statuses %s)"
           % (took, seen))
    bad = disk_state([new], files, metas)
    assert not bad, "C storage ACTIVE but:\n" + describe(c, [new], bad, files)
    for fid in metas:
        assert read_disk(new, fid + "-m") == read_disk(rust, fid + "-m"), fid


# ------------------------------------------------------------------ 3. data both ways

def write_sample(c, node):
    """Through `node` directly: normal files on both store paths (sizes 1 B .. 300 KB),
    files with metadata, an appender file with appends -> (files, metas).  No empty
    file: C 6.16 answers EINVAL to any download of one (offset 0 >= size 0)."""
    files, metas = {}, {}
    sizes = [1, 100, 4096, 65535, 65536, 300_000]
    for spi in range(len(node.store_paths)):
        for i, size in enumerate(sizes):
            data = payload(size, 3000 + spi * 100 + i)
            st, fid = wire.upload(node.addr, data, ["jpg", "", "txt"][i % 3], spi=spi)
            assert st == 0, "upload -> %d" % st
            files[fid] = data
    for i in range(10):
        data = payload(5000 + i, 3500 + i)
        st, fid = wire.upload(node.addr, data, "png")
        assert st == 0
        meta = {"width": str(100 + i), "author": "c-%d" % i}
        assert wire.set_meta(node.addr, fid, meta) == 0
        files[fid] = data
        metas[fid] = meta
    data = payload(7000, 3900)
    fid, _ = appender_via_tracker(c.tracker_addr, [data[:1000], data[1000:4000], data[4000:]])
    files[fid] = data
    return files, metas


def check_serves(c, node, files, metas):
    """`node` serves every file by its ID (bytes), its metadata, and takes new uploads."""
    wrong = []
    for fid, data in files.items():
        st, got = wire.download(node.addr, fid, timeout=30)
        if st != 0 or got != data:
            wrong.append("%s: status %d, %d of %d bytes%s" % (
                fid, st, len(got), len(data), "" if st or got == data else " (differ)"))
    assert not wrong, "%s storage does not serve %d of %d files:\n%s" % (
        c.impl_of(node), len(wrong), len(files), "\n".join(wrong[:10]))
    for fid, meta in metas.items():
        st, got = wire.get_meta(node.addr, fid)
        assert st == 0 and got == meta, "%s storage: metadata of %s -> %s %s" % (
            c.impl_of(node), fid, st, got)
    for fid in files:
        st, info = wire.query_file_info(node.addr, fid)
        assert st == 0 and info["size"] == len(files[fid]), \
            "%s storage: file info of %s -> %s %s" % (c.impl_of(node), fid, st, info)
    data = payload(12345, 3999)
    fid, addr = upload_via_tracker(c.tracker_addr, data, "new")
    assert addr == node.addr
    st, got = wire.download(node.addr, fid)
    assert st == 0 and got == data
    return fid, data


def switch_storage(c, node, impl, deadline=60.0):
    c.stop_daemon(node.daemon)
    # The tracker has seen it go (so that the ACTIVE waited for below is the new one's).
    wait_for(lambda: c.storage_status(node) != STATUS_ACTIVE, 60.0, 0.1,
             "tracker to see storage %s stopped" % node.ip)
    c.set_impl(node, impl)
    node.daemon.start()
    c.wait_active(node, timeout=deadline)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("first,then", [("c", "rust"), ("rust", "c")],
                         ids=["rust-on-c-data", "c-on-rust-data-rollback"])
def test_storage_started_on_other_implementations_data(clusters, report, first, then):
    """A storage written by one implementation, stopped, and started as the other on
    the same address, base_path and store paths serves every file by its ID."""
    # Upgrade under the C tracker; the rollback under ours.
    c = clusters.new("data-%s-then-%s" % (first, then), storages=1,
                     c_trackers={0} if first == "c" else (),
                     c_storages={0} if first == "c" else ())
    node = c.nodes[0]
    files, metas = write_sample(c, node)
    t0 = time.monotonic()
    switch_storage(c, node, then)
    report("restart_%s_on_%s_s" % (then, first), time.monotonic() - t0,
           "test 3: %s storage ACTIVE on %s data %.1fs after the stop"
           % (then, first, time.monotonic() - t0))
    fid, data = check_serves(c, node, files, metas)
    files[fid] = data
    # And back: the first implementation serves everything, the new file included.
    switch_storage(c, node, first)
    check_serves(c, node, files, metas)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("first,then", [("c", "rust"), ("rust", "c")],
                         ids=["rust-on-c-state", "c-on-rust-state-rollback"])
def test_tracker_started_on_other_implementations_state(clusters, first, then):
    """A tracker written by one implementation, stopped, and started as the other on the
    same config and base_path knows the groups and storages the first one saved, before
    any storage joins again; then the cluster works as before."""
    c = clusters.new("tstate-%s-then-%s" % (first, then), storages=2,
                     c_trackers={0} if first == "c" else ())
    for node in c.nodes:
        c.wait_active(node)
    fid, addr = upload_via_tracker(c.tracker_addr, b"saved state", "txt")
    want = sorted(n.ip for n in c.nodes)
    for node in c.nodes:
        c.stop_daemon(node.daemon)
    # The first tracker has seen them go (and saved its state as it does).
    wait_for(lambda: all(c.storage_status(n) not in (STATUS_ACTIVE, None) for n in c.nodes),
             60.0, 0.1, "tracker to see the storages stopped")
    c.stop_daemon(c.tracker)
    old = c.tracker
    if getattr(old, "stderr_fh", None) is not None and not old.stderr_fh.closed:
        old.stderr_fh.close()
    c.tracker = c_tracker(old.name, old.conf, old.base_path) if then == "c" else \
        Daemon(old.name, require_binary("fdfs_trackerd"), old.conf, old.base_path, "trackerd.log")
    c.start_daemon(c.tracker)
    # No storage is running: what the tracker lists, it loaded from the first one's files.
    listed = wait_for(lambda: sorted(s["ip"] for s in c.list_storages(c.group)), 30.0, 0.1,
                      "%s tracker to list %s from the saved state" % (then, c.group))
    assert listed == want, "%s tracker on %s state lists %s, expected %s" % (
        then, first, listed, want)
    for node in c.nodes:
        c.start_daemon(node.daemon)
    for node in c.nodes:
        c.wait_active(node)
    assert wire.download(addr, fid) == (0, b"saved state")
    fid2, addr2 = upload_via_tracker(c.tracker_addr, b"after the swap", "txt")
    assert wire.download(addr2, fid2) == (0, b"after the swap")


# ------------------------------------------------------------------ 4. C + Rust trackers

T_GET_STATUS = 64


def tracker_is_leader(addr):
    """64 TRACKER_GET_STATUS -> if_leader byte (None: no answer)."""
    try:
        with wire.Conn(addr, 5) as conn:
            st, body = conn.request(T_GET_STATUS)
    except (OSError, wire.ProtoError):
        return None
    return body[0] if st == 0 and len(body) == 17 else None


def name(addr):
    return "%s:%d" % addr


def tuple_of(text):
    host, _, port = text.rpartition(":")
    return (host, int(port))


def upload_via(tracker, n, seed):
    """n uploads (101 on `tracker`, then 11) -> {file id: data}"""
    out = {}
    for i in range(n):
        data = payload(2000 + i, seed + i)
        fid, _ = upload_via_tracker(tracker, data, "txt")
        out[fid] = data
    return out


def downloads_via(tracker, files):
    """Every file through `tracker` alone (102, then 14 on the storage it names) ->
    [file ids not served right]."""
    bad = []
    for fid, data in files.items():
        group, _, remote = fid.partition("/")
        st, info = wire.query_fetch(tracker, group, remote)
        if st != 0:
            bad.append("%s: query fetch -> %d" % (fid, st))
            continue
        st, got = wire.download((info["ip"], info["port"]), fid)
        if st != 0 or got != data:
            bad.append("%s: download from %s -> %d, %d bytes" % (fid, info["ip"], st, len(got)))
    return bad


@pytest.mark.timeout(400)
def test_c_and_rust_tracker_one_cluster(clusters, report):
    """A C and a Rust tracker in one cluster, laid out as usual: both trackers on one
    port, a storage next to each (the C storage on the C tracker's host, the Rust one on
    the Rust tracker's), every storage listing both trackers.  Exactly one leader, named
    alike by both; stopping the leader leaves the other serving uploads and downloads and
    leading.  The stopped one comes back as a follower and then the other is stopped, so
    that each implementation is stopped while it leads and each takes over."""
    c = clusters.new("c-rust-trackers", trackers=2, c_trackers={0}, storages=2, c_storages={0},
                     colocated=True)
    trackers = c.all_trackers()            # [(addr, daemon)], the C one first
    addrs = [a for a, _ in trackers]
    impl = {addrs[0]: "C", addrs[1]: "Rust"}
    files = {}

    def storages_active(on):
        for n in c.nodes:
            wait_for(lambda: c.check_alive() or c.storage_status_on(n, on) == STATUS_ACTIVE,
                     60.0, 0.2, "%s storage %s ACTIVE on the %s tracker %s"
                     % (c.impl_of(n), n.ip, impl[on], name(on)))

    def one_leader(among, deadline=60.0):
        """Waits until the trackers `among` name one leader (95) and exactly that one
        says it leads (64) -> its address."""
        state = {}

        def agreed():
            c.check_alive()
            state["named"] = [wire.leader_of(a) for a in among]
            state["flags"] = [tracker_is_leader(a) for a in among]
            named = state["named"]
            if not named[0] or any(x != named[0] for x in named):
                return None
            if state["flags"].count(1) != 1 or tuple_of(named[0]) != among[state["flags"].index(1)]:
                return None
            return tuple_of(named[0])
        try:
            return wait_for(agreed, deadline, 0.2, "one leader")
        except TimeoutError:
            raise AssertionError("no single agreed leader among %s after %.0fs: cmd 95 -> %s, "
                                 "cmd 64 if_leader -> %s" % (
                                     ["%s %s" % (impl[a], name(a)) for a in among], deadline,
                                     state.get("named"), state.get("flags")))

    def leader_down(leader, seed):
        """Stops `leader`: the other serves uploads and downloads, and leads."""
        survivor = addrs[1 - addrs.index(leader)]
        t0 = time.monotonic()
        c.stop_daemon(trackers[addrs.index(leader)][1])
        files.update(upload_via(survivor, 20, seed))
        state = {}

        def served():
            state["bad"] = downloads_via(survivor, files)
            return not state["bad"]
        try:
            wait_for(served, 30.0, 0.2, "downloads through the survivor")
        except TimeoutError:
            raise AssertionError("the %s tracker %s does not serve %d of %d files 30s after "
                                 "the %s one stopped: %s" % (
                                     impl[survivor], name(survivor), len(state["bad"]),
                                     len(files), impl[leader], state["bad"][:5]))
        # A C follower re-elects after 3 failed pings, sleeping 1 s after a good one but
        # doubling its last sleep after each failure; that sleep can still be the random
        # 1..10 s back-off of the election it lost if the leader goes before its first
        # good ping (tracker_relationship.c): up to ~10 + 20 + 40 s.
        assert one_leader([survivor], deadline=120.0) == survivor
        report("takeover_by_%s" % impl[survivor], time.monotonic() - t0,
               "test 4: %s tracker (leader) stopped; the %s one served %d files and led "
               "%.1fs later" % (impl[leader], impl[survivor], len(files),
                                time.monotonic() - t0))
        return survivor

    for a in addrs:
        storages_active(a)
    first = one_leader(addrs)
    files.update(upload_via(addrs[0], 5, 4000))
    files.update(upload_via(addrs[1], 5, 4050))
    for a in addrs:
        assert not downloads_via(a, files)

    second = leader_down(first, 4100)
    # The first comes back: it follows the standing leader.
    c.start_daemon(trackers[addrs.index(first)][1])
    wait_for(lambda: c._connectable(first), 30.0, 0.1, "tracker %s back" % name(first))
    storages_active(first)
    assert one_leader(addrs) == second, "the restarted tracker took the lead back"
    leader_down(second, 4200)


# ------------------------------------------------------------------ 5. C -> Rust speed

@pytest.mark.timeout(240)
def test_c_storage_replicates_to_rust_storage(clusters, report):
    """300 small files uploaded to the C storage all reach the Rust one (byte-identical)
    within 120 s; the rate is reported."""
    c = clusters.new("c-to-rust", c_trackers={0}, storages=2, c_storages={0})
    csto, rsto = c.nodes
    files = {}
    lock = threading.Lock()

    def one(i):
        data = payload(1024 + i, 5000 + i)
        st, fid = wire.upload(csto.addr, data, "txt", timeout=30)
        assert st == 0, "upload to the C storage -> %d" % st
        with lock:
            files[fid] = data

    t0 = time.monotonic()
    parallel(one, range(300), threads=16)
    t_up = time.monotonic() - t0
    arrived = wait_on_disk(c, [rsto], files, 120.0, what="300 files on the Rust storage")
    total = t_up + arrived
    rate = 300 / total
    report("c_to_rust_files_per_s", round(rate, 1),
           "test 5: 300 files uploaded to the C storage in %.2fs, all on the Rust storage "
           "%.2fs after the first upload: %.0f files/s" % (t_up, total, rate))
