"""Full and failing disks: store paths on small tmpfs mounts. `reserved_storage_space`
is honoured exactly, a full disk answers ENOSPC and leaves nothing behind, a read-only
store path is taken out of service while the others go on."""

import os
import struct
import subprocess
import zlib

import pytest

import fdfs_wire as wire
from conftest import Cluster, _live_clusters, stop_cluster
from fdfs_helpers import payload, snapshot_tree, wait_for

MIB = 1 << 20
TMPFS_MB = 24
RESERVED_PER_PATH = 2 * MIB  # reserved_storage_space = 4MB, shared by two store paths
ENOSPC = 28


def mount_tmpfs(path, mb):
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % mb, "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        if os.environ.get("FDFS_REQUIRE_TMPFS"):
            raise AssertionError("cannot mount tmpfs: %s" % r.stderr)
        pytest.skip("cannot mount tmpfs here (%s)" % r.stderr.strip())


def umount(path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def data_files(path):
    return {p: size for p, size in snapshot_tree(path / "data").items()
            if not os.path.basename(p).startswith(".")}


@pytest.fixture
def small_disks(tmp_path_factory):
    """One storage, both store paths on their own 24 MiB tmpfs."""
    root = tmp_path_factory.mktemp("fdfs-diskfull-")
    c = Cluster(root, "diskfull", store_paths=2,
                tracker_extra="reserved_storage_space = 4MB\n",
                storage_extra="network_timeout = 10\n")
    mounted = []
    try:
        for p in c.store_paths:
            mount_tmpfs(p, TMPFS_MB)
            mounted.append(p)
        _live_clusters.append(c)
        c.start()
        yield c
    finally:
        stop_cluster(c)
        for p in mounted:
            umount(p)


def upload_to(c, data, spi):
    st, fid = wire.upload(c.storage_addr, data, ext="bin", spi=spi, timeout=30)
    return st, fid


def path_of(fid):
    return int(fid.split("/")[1][1:3], 16)


def test_reserve_is_exact_then_other_path_then_enospc(small_disks):
    c = small_disks
    p0, p1 = c.store_paths
    files = {}
    landed = []
    # 1 MiB uploads asking for store path 0: it takes them while one more fits above the
    # reserve, then path 1 does, then nobody: ENOSPC.
    for i in range(2 * TMPFS_MB + 4):
        free0_before = free_bytes(p0)
        data = payload(MIB, i)
        st, fid = upload_to(c, data, 0)
        if st == ENOSPC:
            break
        assert st == 0, "upload %d: errno %d" % (i, st)
        files[fid] = data
        landed.append(path_of(fid))
        if path_of(fid) == 1 and landed.count(1) == 1:
            # Path 0 was passed over only because this file would have crossed the reserve.
            assert free0_before - RESERVED_PER_PATH < MIB + 4096 + 4096, free0_before
        assert free_bytes(p0) >= RESERVED_PER_PATH
        assert free_bytes(p1) >= RESERVED_PER_PATH
    else:
        pytest.fail("never answered ENOSPC; landed on %s" % landed)
    assert landed.count(0) >= TMPFS_MB - 4 and landed.count(1) >= TMPFS_MB - 4, landed
    assert landed == sorted(landed), "path 0 filled first: %s" % landed
    # Refusals leave nothing behind; everything stored reads back intact.
    snap = (data_files(p0), data_files(p1))
    assert upload_to(c, payload(MIB, 999), 0)[0] == ENOSPC
    assert upload_to(c, payload(MIB, 998), 0xFF)[0] == ENOSPC
    assert (data_files(p0), data_files(p1)) == snap
    for fid, data in files.items():
        assert wire.download(c.storage_addr, fid) == (0, data)
    # Deleting makes room again.
    victim = next(f for f in files if path_of(f) == 0)
    assert wire.delete(c.storage_addr, victim) == 0
    st, fid = upload_to(c, payload(MIB, 997), 0)
    assert st == 0 and path_of(fid) == 0
    c.check_alive()


def test_disk_filling_up_during_an_upload(small_disks):
    """Another process fills the disk while an upload streams: ENOSPC for that upload,
    nothing partial kept, earlier files intact, and the next upload works once space is
    back."""
    c = small_disks
    p0 = c.store_paths[0]
    keep = {}
    for i in range(4):
        data = payload(MIB, 50 + i)
        st, fid = upload_to(c, data, 0)
        assert st == 0 and path_of(fid) == 0
        keep[fid] = data
    before = data_files(p0)
    size = 8 * MIB
    chunk = payload(MIB, 7)
    filler = p0 / "filler"
    with wire.Conn(c.storage_addr, 30) as conn:
        conn.send(wire.header(15 + size, wire.S_UPLOAD) + struct.pack(">BQ", 0, size) +
                  b"bin".ljust(6, b"\0") + chunk)
        # Once the storage has written the first MiB, the disk fills up under it.
        wait_for(lambda: free_bytes(p0) <= (TMPFS_MB - 4 - 1) * MIB + 64 * 1024, 30,
                 what="first MiB written")
        subprocess.run(["dd", "if=/dev/zero", "of=%s" % filler, "bs=1M", "count=64"],
                       capture_output=True)
        assert free_bytes(p0) < MIB
        for _ in range(7):
            conn.send(chunk)
        st, body = conn.response()
        assert st == ENOSPC, "status %d" % st
        # The connection goes on: the client got the errno, not a reset.
        assert conn.request(111) == (0, b"")
    assert data_files(p0) == before
    for fid, data in keep.items():
        st, body = wire.download(c.storage_addr, fid)
        assert st == 0 and zlib.crc32(body) == zlib.crc32(data)
    assert "No space left" in c.storage.logs()
    os.unlink(filler)
    st, fid = upload_to(c, payload(size, 8), 0)
    assert st == 0 and path_of(fid) == 0
    c.check_alive()


def test_read_only_store_path_is_taken_out_of_service(small_disks):
    c = small_disks
    p0, _ = c.store_paths
    st, old = upload_to(c, b"written before", 0)
    assert st == 0 and path_of(old) == 0
    subprocess.run(["mount", "-o", "remount,ro", str(p0)], check=True)
    try:
        # Uploads asking for path 0 go to path 1, without a single failure.
        for i in range(5):
            st, fid = upload_to(c, payload(1000, i), 0)
            assert st == 0, "errno %d" % st
            assert path_of(fid) == 1
        assert "failed" in c.storage.logs() and "Read-only" in c.storage.logs()
        # Files on the read-only path are still served.
        assert wire.download(c.storage_addr, old) == (0, b"written before")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(p0)], check=True)

    def back():
        st, fid = upload_to(c, b"back", 0)
        assert st == 0
        return path_of(fid) == 0
    wait_for(back, 30, interval=0.5, what="store path 0 back in service")
    assert "back in service" in c.storage.logs()
    c.check_alive()
