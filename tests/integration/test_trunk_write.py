"""Our storages write trunk files (`use_trunk_file = true`), alone and beside C ones.

Small uploads go into slots of 4 MB trunk files (60-character file IDs); the group's
trunk server hands the slots out (27/28/29), writes the trunk binlog and sends it to its
peers (30); copies reach the other members by replication into the same slots.  The
tests mix our storage with the real C 6.16 one in a group, change the trunk server in
the middle of uploads, and start a C storage on the data ours wrote (a rollback).
"""

import re
from pathlib import Path

import pytest

import fdfs_wire as wire
from c_daemons import file_path
from fdfs_helpers import crc32, payload, wait_for
from interop import run_c
from trunk_helpers import (TRUNK_EXTRA, assert_apart, slot_of,  # noqa: F401
                           trunk_server_of, upload_many, upload_ok, uploading)


def trunk_file(node, fid):
    """Path of the trunk file holding `fid` on `node`."""
    _, trunk_id, _, _ = slot_of(fid)
    return file_path(node, fid).with_name("%06d" % trunk_id)


def slot_bytes(node, fid):
    _, _, offset, size = slot_of(fid)
    with open(trunk_file(node, fid), "rb") as f:
        f.seek(offset)
        return f.read(size)


def on_all(nodes, files):
    for node in nodes:
        for fid, data in files.items():
            if wire.download(node.addr, fid) != (0, data):
                return False
    return True


def wait_everywhere(nodes, files, what="every file on every storage"):
    wait_for(lambda: on_all(nodes, files), 90, interval=0.5, what=what)


@pytest.mark.timeout(300)
def test_our_storages_write_trunk_files(clusters, tmp_path):
    c = clusters.new("trunk-write", storages=2, tracker_extra=TRUNK_EXTRA)
    a, b = c.nodes
    wait_for(lambda: trunk_server_of(c) in (a.ip, b.ip), 60, interval=0.5,
             what="a trunk server picked among our storages")
    wait_for(lambda: upload_ok(c), 60, interval=0.5, what="uploads into trunk files")
    sizes = [0, 1, 15, 233, 256, 1000, 4096, 10_000, 65_536, 300_000]
    files = upload_many(c, tmp_path, "one", 120, sizes=sizes)
    assert all(len(f.partition("/")[2]) == 60 for f in files), "not in trunk files"
    assert all(wire.decode_file_id(f)["trunk"] for f in files)
    # No two files share a slot, and slots do not overlap.
    assert_apart(files)
    wait_everywhere(c.nodes, files)

    # The slot holds the 24-byte header, then the content, on both storages alike.
    some = sorted(files)[:10]
    for fid in some:
        raw = slot_bytes(a, fid)
        data = files[fid]
        _, _, _, size = slot_of(fid)
        assert raw[0:1] == b"F"
        assert int.from_bytes(raw[1:5], "big") == size
        assert int.from_bytes(raw[5:9], "big") == len(data)
        assert int.from_bytes(raw[9:13], "big") == crc32(data)
        assert raw[17:24] == fid[-7:].encode()
        assert raw[24:24 + len(data)] == data
        assert slot_bytes(b, fid)[:24 + len(data)] == raw[:24 + len(data)]

    # Ranged reads and C's own tools read them from either storage.
    fid = next(f for f in files if len(files[f]) == 10_000)
    for node in c.nodes:
        assert wire.download(node.addr, fid, 100, 50) == (0, files[fid][100:150])
    p = run_c("fdfs_file_info", c.client_conf, fid)
    assert p.returncode == 0, p.stderr
    assert "file size: 10000" in p.stdout, p.stdout
    p = run_c("fdfs_download_file", c.client_conf, fid, tmp_path / "dl.bin")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "dl.bin").read_bytes() == files[fid]

    # Metadata of a trunk-stored file is a file of its own beside the trunk file, and
    # reaches the peer too.
    server_node = a
    assert wire.set_meta(server_node.addr, fid, {"width": "640"}) == 0
    assert wire.get_meta(server_node.addr, fid) == (0, {"width": "640"})
    wait_for(lambda: wire.get_meta(b.addr, fid) == (0, {"width": "640"}), 30, interval=0.5,
             what="the metadata on the peer")

    # A file too big for a slot is stored on its own.
    big = tmp_path / "big.bin"
    big.write_bytes(payload(2 << 20, 5))
    p = run_c("fdfs_upload_file", c.client_conf, big)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.strip().partition("/")[2]) == 44

    # Deletes zero the slot on both storages and give it back to the trunk server.
    gone = sorted(files)[::3]
    for fid in gone:
        p = run_c("fdfs_delete_file", c.client_conf, fid)
        assert p.returncode == 0, (fid, p.stderr)
    kept = {f: d for f, d in files.items() if f not in gone}

    def deleted_everywhere():
        return all(wire.download(n.addr, f)[0] == 2 and not any(slot_bytes(n, f))
                   for n in c.nodes for f in gone)
    wait_for(deleted_everywhere, 60, interval=0.5, what="deleted slots zeroed on both")
    wait_everywhere(c.nodes, kept, what="the other files untouched")

    # The trunk server logged the freed slots, and sent its binlog to the other one.
    server = a if trunk_server_of(c) == a.ip else b
    peer = b if server is a else a
    binlog = Path(server.base) / "data" / "trunk" / "binlog"
    freed = {(o, s) for _, _, o, s in map(slot_of, gone)}
    logged = set()
    for line in binlog.read_text().splitlines():
        f = line.split()
        if f[1] == "A":
            logged.add((int(f[6]), int(f[7])))
    assert freed <= logged, freed - logged
    peer_log = Path(peer.base) / "data" / "trunk" / "binlog"
    wait_for(lambda: peer_log.exists() and peer_log.read_text() == binlog.read_text(), 30,
             interval=0.5, what="the trunk binlog copied to the peer (30)")

    # Freed slots are handed out again.
    more = upload_many(c, tmp_path, "two", 60, sizes=[100])
    reused = {(o, s) for _, _, o, s in map(slot_of, more)} & freed
    assert reused, "no freed slot was used again"
    wait_everywhere(c.nodes, {**kept, **more})

    # fdfs_monitor shows the trunk server's free trunk space (74) as C's tracker does.
    def free_shown():
        p = run_c("fdfs_monitor", c.client_conf)
        m = re.search(r"trunk free space = +(\d+)", p.stdout)
        return m is not None and int(m.group(1)) > 0
    wait_for(free_shown, 30, interval=0.5, what="the free trunk space in fdfs_monitor")

    # A new member catches up: every trunk-stored file into its own trunk files, and
    # the trunk binlog from the trunk server.
    new = c.add_storage()
    c.wait_active(new)
    wait_everywhere([new], {**kept, **more}, what="every file on the new member")
    new_log = Path(new.base) / "data" / "trunk" / "binlog"
    wait_for(lambda: new_log.exists() and new_log.read_text() == binlog.read_text(), 30,
             interval=0.5, what="the trunk binlog on the new member")


@pytest.mark.timeout(400)
@pytest.mark.parametrize("c_side", [0, 1], ids=["c-first", "rust-first"])
def test_c_and_rust_storage_share_a_trunk_group(clusters, tmp_path, c_side):
    """One C and one Rust storage in a group with trunk files, concurrent uploads
    through the tracker: every file on both; then the trunk server stops in the middle
    of uploads, the other one takes over, and no two files share a slot."""
    c = clusters.new("trunk-mixed-%d" % c_side, storages=2, c_storages={c_side},
                     tracker_extra=TRUNK_EXTRA)
    wait_for(lambda: trunk_server_of(c) is not None, 60, interval=0.5,
             what="a trunk server")
    wait_for(lambda: upload_ok(c), 60, interval=0.5, what="uploads into trunk files")
    files = upload_many(c, tmp_path, "mix", 150)
    assert all(len(f.partition("/")[2]) == 60 for f in files)
    wait_everywhere(c.nodes, files)

    first = trunk_server_of(c)
    gone = next(n for n in c.nodes if n.ip == first)
    kept = next(n for n in c.nodes if n is not gone)

    def upload_one(i):
        data = payload(200 + i, 9000 + i)
        local = tmp_path / ("during-%d.bin" % i)
        local.write_bytes(data)
        p = run_c("fdfs_upload_file", c.client_conf, local)
        return (p.stdout.strip(), data) if p.returncode == 0 else None
    with uploading(upload_one) as during:
        wait_for(lambda: len(during) >= 20, 60, interval=0.2, what="uploads under way")
        c.stop_daemon(gone.daemon)
        wait_for(lambda: trunk_server_of(c) == kept.ip, 60, interval=0.5,
                 what="the remaining storage as trunk server")
        before = len(during)
        wait_for(lambda: len(during) >= before + 20, 60, interval=0.2,
                 what="uploads after the trunk server change")
    # Every acknowledged file is readable, and none shares a slot with another.
    everything = {**files, **dict(during)}
    assert_apart(everything)

    def kept_has(fid, data):
        return wire.download(kept.addr, fid) == (0, data)
    # Files acknowledged by the stopped storage reach the kept one once it is back.
    c.start_daemon(gone.daemon)
    wait_everywhere(c.nodes, everything, what="every acknowledged file on both")
    assert all(kept_has(f, d) for f, d in everything.items())

    # The kept trunk server (C in one run of this test, ours in the other) keeps how far
    # it sent its binlog to the restarted storage in a mark file named and written as C
    # 6.16 does: data/trunk/<peer ip>_<own port>.mark, a line binlog_offset=N. So either
    # kind taking over the other's data directory finds its marks. (The first trunk
    # server's marks are not looked at: C removes them all when it compacts its trunk
    # binlog, as it does on stopping.)
    def mark_of(server, peer):
        mark = server.base / "data" / "trunk" / ("%s_%d.mark" % (peer.ip, server.port))
        text = mark.read_text() if mark.is_file() else ""
        m = re.search(r"^binlog_offset=(\d+)$", text, re.M)
        return int(m.group(1)) if m else 0
    wait_for(lambda: mark_of(kept, gone) > 0, 60, interval=0.5,
             what="the kept trunk server's mark for the restarted storage")


@pytest.mark.timeout(300)
def test_a_stopping_trunk_server_sends_its_last_binlog_lines(clusters):
    """Our trunk server, stopped (SIGTERM) in the middle of uploads, sends its peer every
    trunk binlog line before it exits: the peer, trunk server next, must not hand out
    the slots of the last uploads again. (Pushes gather lines for up to 250 ms, and the
    last ones were lost at a stop: a C storage taking over handed them out again.)"""
    c = clusters.new("trunk-stop", storages=2, tracker_extra=TRUNK_EXTRA)
    wait_for(lambda: trunk_server_of(c) in [n.ip for n in c.nodes], 60, interval=0.5,
             what="a trunk server picked among our storages")
    server = next(n for n in c.nodes if n.ip == trunk_server_of(c))
    peer = next(n for n in c.nodes if n is not server)
    wait_for(lambda: wire.upload(server.addr, b"first")[0] == 0, 60, interval=0.5,
             what="uploads into trunk files")

    def trunk_binlog(node):
        path = node.base / "data" / "trunk" / "binlog"
        return path.read_bytes() if path.is_file() else b""
    wait_for(lambda: trunk_binlog(peer) == trunk_binlog(server) != b"", 60, interval=0.2,
             what="the trunk binlog pushed to the peer")

    def upload_one(i):
        try:
            st, fid = wire.upload(server.addr, payload(300 + i % 50, i), "bin")
        except OSError:
            return None  # the server stopped listening
        return fid if st == 0 else None
    with uploading(upload_one) as done:
        wait_for(lambda: len(done) >= 50, 60, interval=0.1, what="uploads under way")
        c.stop_daemon(server.daemon)
    assert all(len(f.partition("/")[2]) == 60 for f in done)
    ours = trunk_binlog(server)
    lines = ours.splitlines()
    # The slot of the last upload acknowledged is in the binlog, and the peer's copy
    # has every line.
    remote = done[-1].partition("/")[2]
    where = [int(remote[k:k + 2], 16) for k in (1, 4, 7)] + list(slot_of(done[-1])[1:3])
    assert any(re.match(rb"\d+ D %d %d %d %d %d " % tuple(where), line) for line in lines), \
        "the last upload's slot is not in the trunk binlog"
    theirs = trunk_binlog(peer)
    missing = len(lines) - len(theirs.splitlines())
    assert theirs == ours, "the peer's trunk binlog lacks %d of %d lines" % (
        missing, len(lines))


@pytest.mark.timeout(300)
def test_c_storage_serves_trunk_files_ours_wrote(clusters, tmp_path):
    """Rollback: a C storage started on our storage's data serves the files ours
    packed into trunk files."""
    c = clusters.new("trunk-rollback", storages=1, tracker_extra=TRUNK_EXTRA)
    node = c.nodes[0]
    wait_for(lambda: upload_ok(c), 60, interval=0.5, what="uploads into trunk files")
    files = upload_many(c, tmp_path, "ours", 60)
    assert all(len(f.partition("/")[2]) == 60 for f in files)
    c.stop_daemon(node.daemon)
    c.set_impl(node, "c")
    c.start_daemon(node.daemon)
    c.wait_active(node)

    def served():
        return all(wire.download(node.addr, f) == (0, d) for f, d in files.items())
    wait_for(served, 60, interval=0.5, what="the C storage serving our trunk files")
    # And C goes on writing into the trunk files ours created.
    wait_for(lambda: upload_ok(c), 60, interval=0.5, what="C uploads after the rollback")
    more = upload_many(c, tmp_path, "theirs", 30)
    assert all(wire.download(node.addr, f) == (0, d) for f, d in {**files, **more}.items())
    assert_apart({**files, **more})


@pytest.mark.timeout(300)
def test_trunk_server_housekeeping(clusters, tmp_path):
    """trunk_create_file_advance makes trunk files ahead of need; a compressed trunk
    binlog (trunk_compress_binlog_interval) holds just the free regions, merged
    (trunk_free_space_merge), and reaches the peer whole; nothing stored is touched."""
    extra = TRUNK_EXTRA + ("trunk_create_file_advance = true\ntrunk_create_file_interval = 1\n"
                           "trunk_create_file_space_threshold = 12MB\n"
                           "trunk_compress_binlog_interval = 2\ntrunk_free_space_merge = true\n")
    c = clusters.new("trunk-housekeeping", storages=2, tracker_extra=extra)
    wait_for(lambda: trunk_server_of(c) in [n.ip for n in c.nodes], 60, interval=0.5,
             what="a trunk server")
    server = next(n for n in c.nodes if n.ip == trunk_server_of(c))
    peer = next(n for n in c.nodes if n is not server)

    def trunk_files(node):
        return sorted(p for sp in node.store_paths for p in (Path(sp) / "data").glob("*/*/*")
                      if re.fullmatch(r"\d{6,}", p.name))
    # 12 MB free wanted, 4 MB trunk files: three made ahead, before any upload.
    wait_for(lambda: len(trunk_files(server)) >= 3, 60, interval=0.5,
             what="trunk files created ahead")
    assert all(p.stat().st_size == 4 << 20 for p in trunk_files(server))

    wait_for(lambda: upload_ok(c), 60, interval=0.5, what="uploads into trunk files")
    files = upload_many(c, tmp_path, "hk", 60)
    gone = sorted(files)[::2]
    for fid in gone:
        assert run_c("fdfs_delete_file", c.client_conf, fid).returncode == 0
    kept = {f: d for f, d in files.items() if f not in gone}

    binlog = Path(server.base) / "data" / "trunk" / "binlog"

    def compressed():
        lines = binlog.read_text().splitlines()
        return lines and all(ln.split()[1] == "A" for ln in lines)
    wait_for(compressed, 60, interval=0.5, what="the trunk binlog compressed to free regions")
    # Merged: no two free regions of one trunk file touch.
    regions = sorted((tuple(ln.split()[2:6]), int(ln.split()[6]), int(ln.split()[7]))
                     for ln in binlog.read_text().splitlines())
    for (f1, o1, s1), (f2, o2, _) in zip(regions, regions[1:]):
        assert f1 != f2 or o1 + s1 < o2, regions
    peer_log = Path(peer.base) / "data" / "trunk" / "binlog"
    wait_for(lambda: peer_log.exists() and peer_log.read_text() == binlog.read_text(), 30,
             interval=0.5, what="the compressed binlog on the peer")
    wait_everywhere(c.nodes, kept)
    more = upload_many(c, tmp_path, "hk2", 30)
    assert_apart({**kept, **more})
    wait_everywhere(c.nodes, {**kept, **more})


@pytest.mark.timeout(300)
def test_replaced_disk_of_a_trunk_group(clusters, tmp_path):
    """A storage of a trunk group comes back with empty store paths: it gets every
    trunk-stored file back into slots of its own trunk files, from its peer."""
    c = clusters.new("trunk-recovery", storages=2, tracker_extra=TRUNK_EXTRA)
    wait_for(lambda: upload_ok(c), 60, interval=0.5, what="uploads into trunk files")
    files = upload_many(c, tmp_path, "rec", 60)
    wait_everywhere(c.nodes, files)
    # The one that is not the trunk server loses its disks.
    server_ip = trunk_server_of(c)
    node = next(n for n in c.nodes if n.ip != server_ip)
    c.stop_daemon(node.daemon)
    for sp in node.store_paths:
        for entry in Path(sp).iterdir():
            if entry.is_dir():
                import shutil
                shutil.rmtree(entry)
            else:
                entry.unlink()
    c.start_daemon(node.daemon)
    c.wait_active(node)
    wait_everywhere([node], files, what="every trunk-stored file on the recovered storage")
    for fid in sorted(files)[:5]:
        assert slot_bytes(node, fid)[24:24 + len(files[fid])] == files[fid]


@pytest.mark.timeout(300)
def test_trunk_files_with_storage_ids(clusters, tmp_path):
    """Trunk files in a cluster named by storage ids (`use_storage_id`, ids in file
    names): a C and a Rust storage share the group; the trunk server is named by id,
    file IDs carry the uploader's id, every file reaches both."""
    c = clusters.new("trunk-ids", storages=2, c_storages={0}, use_storage_id=True,
                     id_type_in_filename="id", tracker_extra=TRUNK_EXTRA)
    wait_for(lambda: trunk_server_of(c) is not None, 60, interval=0.5, what="a trunk server")
    wait_for(lambda: upload_ok(c), 60, interval=0.5, what="uploads into trunk files")
    files = upload_many(c, tmp_path, "ids", 80)
    assert all(len(f.partition("/")[2]) == 60 for f in files)
    # The source field holds a server id (ids start at 100001 here; in the byte order
    # C writes it), not an address.
    sources = {int.from_bytes(bytes(int(b) for b in wire.decode_file_id(f)["source_ip"]
                                    .split(".")), "little") for f in files}
    assert sources and all(100001 <= s < 100010 for s in sources), sources
    wait_everywhere(c.nodes, files)
