"""Integrity under hostile or unlucky use of one storage: names that would collide with
metadata, concurrent changes to one appender, expensive requests that must not freeze
the daemon."""

import struct
import threading
import zlib

import pytest

import fdfs_wire as wire
from conftest import start_cluster, stop_cluster
from fdfs_helpers import crc32, payload, wait_for


def slave_request(master_id, prefix, ext, content):
    m = master_id.partition("/")[2].encode()
    return (struct.pack(">QQ", len(m), len(content)) + prefix.encode().ljust(16, b"\0")
            + ext.encode().ljust(6, b"\0") + m + content)


def upload_slave(addr, master_id, prefix, ext, content):
    """-> (status, slave file id or None)"""
    with wire.Conn(addr) as c:
        st, reply = c.request(wire.S_UPLOAD_SLAVE, slave_request(master_id, prefix, ext, content))
    if st != 0:
        return st, None
    return st, reply[:16].rstrip(b"\0").decode() + "/" + reply[16:].decode()


def test_slave_cannot_become_metadata(cluster):
    a = cluster.storage_addr
    st, master = wire.upload(a, b"the master", ext="txt")
    assert st == 0
    # `<stem>` + `.txt-m` is the master's metadata file; `_s.txt` + `-m` a slave's.
    st, slave = upload_slave(a, master, "_s", "txt", b"a slave")
    assert st == 0
    for prefix, ext in ((".txt-m", ""), ("-m", ""), ("_s", "txt-m"), ("x", "-m")):
        st, _ = upload_slave(a, master, prefix, ext, b"k\x02forged")
        assert st == wire.EINVAL, (prefix, ext, st)
    # Nothing was set: the master still has no metadata, and setting it is still ours.
    assert wire.get_meta(a, master)[0] == wire.ENOENT
    assert wire.get_meta(a, slave)[0] == wire.ENOENT
    assert wire.set_meta(a, master, {"owner": "me"}) == 0
    assert wire.get_meta(a, master) == (0, {"owner": "me"})
    assert wire.download(a, slave) == (0, b"a slave")


def test_upload_ext_cannot_end_like_metadata(cluster):
    for ext in ("-m", "tar-m"):
        st, _ = wire.upload(cluster.storage_addr, b"data", ext=ext)
        assert st == wire.EINVAL, ext
    st, fid = wire.upload(cluster.storage_addr, b"data", ext="m")
    assert st == 0 and fid.endswith(".m")


def test_metadata_of_metadata_and_slave_of_metadata_refused(cluster):
    a = cluster.storage_addr
    st, master = wire.upload(a, b"master", ext="jpg")
    assert st == 0
    assert wire.set_meta(a, master, {"w": "1"}) == 0
    meta_id = master + "-m"
    assert wire.set_meta(a, meta_id, {"k": "v"}) == wire.EINVAL
    assert wire.get_meta(a, meta_id)[0] == wire.EINVAL
    st, _ = upload_slave(a, meta_id, "_s", "jpg", b"x")
    assert st == wire.EINVAL
    assert wire.get_meta(a, master) == (0, {"w": "1"})


def test_metadata_temp_name_is_no_slave_name(cluster):
    """`<master>-m.tmp` is where upstream writes new metadata: no slave may have it."""
    a = cluster.storage_addr
    st, master = wire.upload(a, b"master", ext="txt")
    assert st == 0
    st, _ = upload_slave(a, master, ".txt-m", "tmp", b"slave content")
    assert st == wire.EINVAL
    assert wire.set_meta(a, master, {"k": "v"}) == 0
    assert wire.set_meta(a, master, {"k2": "v2"}, b"M") == 0
    assert wire.get_meta(a, master) == (0, {"k": "v", "k2": "v2"})


# ------------------------------------------------ concurrent changes to one appender

@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A group of two storages. No scrub: the tests that damage files on purpose see
    what a download does before anything else notices."""
    c = start_cluster(tmp_path_factory, "integrity-pair", storages=2,
                      storage_extra="scrub_bytes_per_second = 0\n")
    yield c
    stop_cluster(c)


def appender_request(cmd, fid, data=b"", offset=None):
    r = fid.partition("/")[2].encode()
    if cmd == wire.S_APPEND:
        return struct.pack(">QQ", len(r), len(data)) + r + data
    return struct.pack(">QQQ", len(r), offset, len(data)) + r + data


def storage_call(addr, cmd, body):
    with wire.Conn(addr, 30) as c:
        return c.request(cmd, body)


def same_on_every_member(cluster, fid, timeout=60):
    """Waits until every storage of the group holds the same bytes as the source."""
    src = cluster.nodes[0]
    def same():
        st, want = wire.download(src.addr, fid)
        assert st == 0, "source download: %d" % st
        return all(wire.download(n.addr, fid) == (0, want) for n in cluster.nodes[1:])
    wait_for(same, timeout, what="%s identical on every member" % fid)
    return wire.download(src.addr, fid)[1]


def test_concurrent_appends_are_whole_and_replicated(pair):
    a = pair.nodes[0].addr
    st, fid = wire.upload(a, b"", ext="log", cmd=wire.S_UPLOAD_APPENDER)
    assert st == 0
    chunks = [bytes([65 + w]) * (48 * 1024 + w) for w in range(6)]
    errors = []

    def writer(w):
        try:
            for _ in range(8):
                st, _ = storage_call(a, wire.S_APPEND, appender_request(wire.S_APPEND, fid, chunks[w]))
                if st != 0:
                    errors.append(st)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(len(chunks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    content = same_on_every_member(pair, fid)
    assert len(content) == 8 * sum(len(c) for c in chunks)
    # Every append is one contiguous run of its writer's bytes: nothing interleaved.
    pos = 0
    while pos < len(content):
        w = content[pos] - 65
        assert content[pos:pos + len(chunks[w])] == chunks[w], "append torn at %d" % pos
        pos += len(chunks[w])
    st, info = wire.query_file_info(a, fid)
    assert st == 0 and info["crc32"] == crc32(content) and info["size"] == len(content)


def test_appends_modifies_truncates_and_regenerate_race(pair):
    a = pair.nodes[0].addr
    base = payload(256 * 1024, 3)
    st, fid = wire.upload(a, base, ext="bin", cmd=wire.S_UPLOAD_APPENDER)
    assert st == 0
    errors = []
    stop = threading.Event()
    done = {"append": 0, "modify": 0, "truncate": 0}

    r = fid.partition("/")[2].encode()
    changes = {
        "append": lambda i: (wire.S_APPEND, appender_request(wire.S_APPEND, fid,
                                                             payload(20000, 100 + i))),
        "modify": lambda i: (wire.S_MODIFY, struct.pack(">QQQ", len(r), (i * 4096) % 200000, 3000)
                             + r + payload(3000, 300 + i)),
        "truncate": lambda i: (wire.S_TRUNCATE, struct.pack(">QQ", len(r), 300000 + i) + r),
    }

    def change_loop(kind):
        i = 0
        while not stop.is_set():
            st, _ = storage_call(a, *changes[kind](i))
            if st == wire.ENOENT:      # renamed by the regenerate: the end of the race
                return
            if st != 0:
                errors.append((kind, st))
            done[kind] += 1
            i += 1

    threads = [threading.Thread(target=change_loop, args=(k,))
               for k in ("append", "append", "modify", "truncate")]
    for t in threads:
        t.start()
    # Let every writer get some changes in, then turn the appender into a normal file
    # while they are still going.
    wait_for(lambda: min(done.values()) >= 10, 60, what="every kind of change under way")
    try:
        st, reply = storage_call(a, wire.S_REGENERATE, r)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert st == 0 and errors == []
    new = reply[:16].rstrip(b"\0").decode() + "/" + reply[16:].decode()
    content = same_on_every_member(pair, new)
    dec = wire.decode_file_id(new)
    assert dec["size"] == len(content)
    assert dec["crc32"] == crc32(content), "the new name's CRC32 is the content's"
    for n in pair.nodes:
        assert wire.download(n.addr, fid)[0] == wire.ENOENT


# ------------------------------------------------ expensive requests off the workers

def test_file_info_of_huge_sparse_appender_does_not_stall(cluster):
    # A storage without peers: the file is grown behind its back, and must not be
    # replicated as such.
    node = cluster.nodes[0]
    a = node.addr
    st, fid = wire.upload(a, b"start", ext="img", cmd=wire.S_UPLOAD_APPENDER)
    assert st == 0
    remote = fid.partition("/")[2]
    path = node.store_paths[int(remote[1:3], 16)] / "data" / remote[4:]
    # 64 GiB of holes, then data: what a sparse disk image looks like.
    size = 64 << 30
    with open(path, "r+b") as f:
        f.truncate(size)
        f.seek(size - 4)
        f.write(b"tail")
    st, info = wire.query_file_info(a, fid)
    assert st == 0 and info["size"] == size
    # The CRC of 64 GiB of zeros plus the data, folded without reading the holes.
    h = zlib.crc32(b"start")
    h = crc32_of_zeros_after(h, size - 9)
    assert info["crc32"] == zlib.crc32(b"tail", h)

    # Two file infos at once while other clients upload and download.
    results = []
    infos = [threading.Thread(target=lambda: results.append(wire.query_file_info(a, fid)[0]))
             for _ in range(2)]
    for t in infos:
        t.start()
    for i in range(50):
        data = payload(1000, i)
        st, small = wire.upload(a, data, ext="txt", timeout=5)
        assert st == 0
        assert wire.download(a, small, timeout=5) == (0, data)
    for t in infos:
        t.join(120)
    assert results == [0, 0]


POLY = 0xEDB88320


def _multiply(a, b):
    """a(x) * b(x) modulo the CRC polynomial, reflected (as zlib's crc32_combine)."""
    p = 0
    for i in range(32):
        if (a >> (31 - i)) & 1:
            p ^= b
        b = (b >> 1) ^ (POLY if b & 1 else 0)
    return p


def crc32_of_zeros_after(crc, n):
    """zlib.crc32 continued over `n` zero bytes, without feeding them."""
    p, sq = 0x80000000, 0x00800000      # x^0 and x^8, reflected
    while n:
        if n & 1:
            p = _multiply(sq, p)
        sq = _multiply(sq, sq)
        n >>= 1
    return _multiply(p, crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def test_zero_folding_matches_zlib():
    for n in (0, 1, 7, 1000, 70000):
        assert crc32_of_zeros_after(zlib.crc32(b"abc"), n) == zlib.crc32(b"abc" + bytes(n))


# ------------------------------------------------ damaged content is refused and healed

EIO = 5


def disk_path(node, fid):
    remote = fid.partition("/")[2]
    return node.store_paths[int(remote[1:3], 16)] / "data" / remote[4:]


def flip_byte(path, at):
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0xFF]))


def upload_replicated(cluster, data, ext):
    """Uploads to the first storage; returns the file id once the second has it."""
    src, peer = cluster.nodes[0], cluster.nodes[1]
    st, fid = wire.upload(src.addr, data, ext=ext)
    assert st == 0
    wait_for(lambda: wire.download(peer.addr, fid) == (0, data), 30, what="replicated")
    return fid


def test_flipped_byte_is_refused_then_healed_from_peer(pair):
    src = pair.nodes[0]
    data = payload(4000, 77)
    fid = upload_replicated(pair, data, "jpg")
    flip_byte(disk_path(src, fid), 1234)
    st, body = wire.download(src.addr, fid)
    assert st == EIO, "damaged content must not be served as success"
    wait_for(lambda: wire.download(src.addr, fid) == (0, data), 30, what="healed from the peer")
    assert "damaged" in src.daemon.logs() and "healed" in src.daemon.logs()


def test_truncated_large_file_is_refused_then_healed(pair):
    peer = pair.nodes[1]
    data = payload(300_000, 78)
    fid = upload_replicated(pair, data, "bin")
    with open(disk_path(peer, fid), "r+b") as f:
        f.truncate(100_000)
    assert wire.download(peer.addr, fid)[0] == EIO
    wait_for(lambda: wire.download(peer.addr, fid) == (0, data), 30, what="healed from the source")


def test_scrub_finds_and_heals_damage_nobody_read(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "integrity-scrub", storages=2, store_paths=1)
    try:
        c.wait_active(c.nodes[1])
        data = payload(200_000, 79)
        fid = upload_replicated(c, data, "bin")
        path = disk_path(c.nodes[1], fid)
        flip_byte(path, 150_000)
        # Not downloaded: the scrub (8 MB/s by default) must find it by itself.
        wait_for(lambda: open(path, "rb").read() == data, 120, what="scrub healed the copy")
        assert "healed" in c.nodes[1].daemon.logs()
    finally:
        stop_cluster(c)


def test_damaged_copy_is_not_replicated(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "integrity-spread", storages=2, store_paths=1)
    try:
        src, peer = c.nodes
        c.wait_active(peer)
        peer.kill()
        data = payload(5000, 80)
        st, fid = wire.upload(src.addr, data, ext="txt")
        assert st == 0
        flip_byte(disk_path(src, fid), 10)
        st, good = wire.upload(src.addr, b"a good file", ext="txt")
        assert st == 0
        peer.restart()
        c.wait_active(peer)
        wait_for(lambda: wire.download(peer.addr, good) == (0, b"a good file"), 60,
                 what="the good file replicated")
        assert wire.download(peer.addr, fid)[0] == wire.ENOENT, "damaged bytes were copied"
        assert "damaged" in src.daemon.logs()
    finally:
        stop_cluster(c)


def test_short_slave_is_served_as_itself(cluster):
    """A slave without ext is shorter than a normal name; its 27 characters are its
    master's, so neither the integrity check nor file info may take them for its own."""
    a = cluster.storage_addr
    st, master = wire.upload(a, b"the master file", ext="jpg")
    assert st == 0
    st, slave = upload_slave(a, master, "_s", "", b"sl")
    assert st == 0 and len(slave.partition("/")[2]) < 44
    assert wire.download(a, slave) == (0, b"sl")
    st, info = wire.query_file_info(a, slave)
    assert st == 0 and info["size"] == 2 and info["crc32"] == crc32(b"sl")
    # A slave named exactly like a normal file would promise the master's size and CRC.
    st, _ = upload_slave(a, master, "4", "jp", b"x")
    assert st == wire.EINVAL
