"""Well-formed requests over raw sockets (no client library): the reply
layouts and semantics from the protocol reference, including the operations
that no PyPI client can perform correctly (slave upload, metadata merge,
regenerate, tracker listings)."""

import os
import struct
import time

import pytest

import fdfs_wire as wire
from fdfs_helpers import crc32, payload


def test_query_store_reply_auto(cluster):
    with wire.Conn(cluster.tracker_addr) as c:
        c.send(wire.header(0, wire.T_QUERY_STORE_WITHOUT_GROUP_ONE))
        pkg_len, cmd, st = c.recv_header()
        assert (cmd, st, pkg_len) == (100, 0, 40)
        info = wire.parse_store_reply(c.recv_exact(40))
    assert info["group"] == "group1"
    assert (info["ip"], info["port"]) == cluster.storage_addr
    assert info["spi"] in (0, 1)


def test_query_store_reply_ipv6_size(cluster_v6):
    st, body = wire.Conn(cluster_v6.tracker_addr).request(wire.T_QUERY_STORE_WITHOUT_GROUP_ONE)
    assert st == 0 and len(body) == 70
    info = wire.parse_store_reply(body)
    assert (info["ip"], info["port"]) == cluster_v6.storage_addr


def test_query_store_with_group(cluster):
    with wire.Conn(cluster.tracker_addr) as c:
        st, body = c.request(wire.T_QUERY_STORE_WITH_GROUP_ONE, wire.group_field("group1"))
        assert st == 0 and len(body) == 40
        st, body = c.request(wire.T_QUERY_STORE_WITH_GROUP_ONE, wire.group_field("nosuchgroup"))
        assert st == wire.ENOENT and body == b""


def test_query_fetch_and_update(cluster):
    st, fid = wire.upload(cluster.storage_addr, b"fetch me", ext="txt")
    assert st == 0
    group, _, remote = fid.partition("/")
    for cmd in (wire.T_QUERY_FETCH_ONE, wire.T_QUERY_UPDATE):
        st, info = wire.query_fetch(cluster.tracker_addr, group, remote, cmd=cmd)
        assert st == 0, "cmd %d status %d" % (cmd, st)
        assert (info["group"], info["ip"], info["port"]) == ("group1", *cluster.storage_addr)
    with wire.Conn(cluster.tracker_addr) as c:
        st, body = c.request(wire.T_QUERY_FETCH_ONE, wire.group_field("group1") + remote.encode())
        assert len(body) == 39
        # one connection, several requests (no pipelining, strictly sequential)
        st2, body2 = c.request(wire.ACTIVE_TEST)
        assert (st2, body2) == (0, b"")


def test_query_fetch_ipv6_size(cluster_v6):
    st, fid = wire.upload(cluster_v6.storage_addr, b"v6 sized", ext="txt")
    assert st == 0
    group, _, remote = fid.partition("/")
    with wire.Conn(cluster_v6.tracker_addr) as c:
        st, body = c.request(wire.T_QUERY_FETCH_ONE, wire.group_field(group) + remote.encode())
    assert st == 0 and len(body) == 69


def test_list_groups_and_storages(cluster):
    with wire.Conn(cluster.tracker_addr) as c:
        st, body = c.request(wire.T_LIST_ALL_GROUPS)
        assert st == 0 and len(body) == 113, "TrackerGroupStat must be 113 bytes, got %d" % len(body)
        assert body[:17].rstrip(b"\0") == b"group1"
        storage_count, storage_port = struct.unpack(">qq", body[49:65])
        assert storage_count == 1 and storage_port == cluster.storage_port
        store_path_count, = struct.unpack(">q", body[89:97])
        assert store_path_count == len(cluster.store_paths)

        st, body1 = c.request(wire.T_LIST_ONE_GROUP, wire.group_field("group1"))
        assert st == 0 and len(body1) == 113

        st, body = c.request(wire.T_LIST_STORAGE, wire.group_field("group1"))
        assert st == 0 and len(body) == 487, "TrackerStorageStat (R=16) must be 487 bytes, got %d" % len(body)
        assert body[0] == 7, "storage status %d != ACTIVE(7)" % body[0]
        assert body[18:34].rstrip(b"\0").decode() == cluster.storage_ip

        st, body = c.request(wire.T_LIST_STORAGE, wire.group_field("nosuchgroup"))
        assert st != 0


def test_list_storage_ipv6_size(cluster_v6):
    st, body = wire.Conn(cluster_v6.tracker_addr).request(wire.T_LIST_STORAGE, wire.group_field("group1"))
    assert st == 0 and len(body) == 517


def test_upload_to_each_store_path(cluster):
    for spi in range(len(cluster.store_paths)):
        data = payload(2048, 100 + spi)
        st, fid = wire.upload(cluster.storage_addr, data, ext="sp", spi=spi)
        assert st == 0
        assert fid.split("/")[1] == "M%02X" % spi
        st, got = wire.download(cluster.storage_addr, fid)
        assert st == 0 and got == data
    st, fid = wire.upload(cluster.storage_addr, b"bad path", spi=len(cluster.store_paths) + 3)
    assert st == wire.EINVAL, "store_path_index out of range must be EINVAL, got %d (%s)" % (st, fid)


def test_download_offset_rules(cluster):
    data = payload(1000, 7)
    st, fid = wire.upload(cluster.storage_addr, data, ext="off")
    assert st == 0
    assert wire.download(cluster.storage_addr, fid, 999, 0) == (0, data[999:])
    assert wire.download(cluster.storage_addr, fid, 500, 10_000) == (0, data[500:])
    st, body = wire.download(cluster.storage_addr, fid, 1000, 0)
    assert st == wire.EINVAL and body == b"", "offset == size must be EINVAL (6.15.4+), got %d" % st
    st, body = wire.download(cluster.storage_addr, fid, 5000, 1)
    assert st == wire.EINVAL and body == b""


def test_download_zero_byte_file(cluster):
    """A 0-byte file reads back as empty (6.16.1 refuses it with EINVAL; we do not, see
    README). Any offset past the end is still EINVAL, as in 6.16."""
    st, fid = wire.upload(cluster.storage_addr, b"", ext="nul")
    assert st == 0
    assert wire.decode_file_id(fid)["size"] == 0
    st, body = wire.download(cluster.storage_addr, fid)
    assert (st, body) == (0, b"")
    group, _, remote = fid.partition("/")
    with wire.Conn(cluster.storage_addr) as c:
        st, body = c.request(wire.S_DOWNLOAD, wire.download_body(group, remote, offset=1))
    assert (st, body) == (wire.EINVAL, b"")


def test_connection_reuse_upload_download(cluster):
    with wire.Conn(cluster.storage_addr) as c:
        ids = []
        for i in range(5):
            st, body = c.request(wire.S_UPLOAD, wire.upload_body(b"reuse %d" % i, "txt"))
            assert st == 0
            ids.append(body[:16].rstrip(b"\0").decode() + "/" + body[16:].decode())
        for i, fid in enumerate(ids):
            g, _, r = fid.partition("/")
            st, got = c.request(wire.S_DOWNLOAD, wire.download_body(g, r))
            assert st == 0 and got == b"reuse %d" % i


def test_metadata_semantics(cluster):
    st, fid = wire.upload(cluster.storage_addr, b"meta", ext="txt")
    assert st == 0
    a = cluster.storage_addr
    assert wire.get_meta(a, fid) == (wire.ENOENT, None)
    assert wire.set_meta(a, fid, {"b": "2", "a": "1"}, b"O") == 0
    assert wire.get_meta(a, fid) == (0, {"a": "1", "b": "2"})
    # reply is sorted by name
    g, _, r = fid.partition("/")
    st, raw = wire.Conn(a).request(wire.S_GET_META, wire.group_field(g) + r.encode())
    assert raw == b"a\x021\x01b\x022"
    assert wire.set_meta(a, fid, {"b": "3", "c": "4"}, b"M") == 0
    assert wire.get_meta(a, fid) == (0, {"a": "1", "b": "3", "c": "4"})
    assert wire.set_meta(a, fid, {}, b"M") == 0
    assert wire.get_meta(a, fid) == (0, {"a": "1", "b": "3", "c": "4"})
    assert wire.set_meta(a, fid, {}, b"O") == 0          # O with no items deletes
    assert wire.get_meta(a, fid)[0] == wire.ENOENT
    assert wire.set_meta(a, fid + "x", {"k": "v"}, b"O") != 0


def test_slave_upload(cluster):
    a = cluster.storage_addr
    st, master = wire.upload(a, b"the master", ext="jpg")
    assert st == 0
    g, _, mremote = master.partition("/")
    content = b"thumbnail bytes"
    m = mremote.encode()
    body = (struct.pack(">QQ", len(m), len(content)) + b"_150x150".ljust(16, b"\0")
            + b"jpg".ljust(6, b"\0") + m + content)
    with wire.Conn(a) as c:
        st, reply = c.request(wire.S_UPLOAD_SLAVE, body)
    assert st == 0
    slave = reply[:16].rstrip(b"\0").decode() + "/" + reply[16:].decode()
    assert slave == master[:-4] + "_150x150.jpg"
    assert wire.download(a, slave) == (0, content)
    st, info = wire.query_file_info(a, slave)
    assert st == 0 and info["size"] == len(content) and info["crc32"] == crc32(content)
    with wire.Conn(a) as c:   # same slave again => EEXIST
        st, _ = c.request(wire.S_UPLOAD_SLAVE, body)
    assert st == 17


def test_query_file_info(cluster):
    data = payload(31337, 8)
    st, fid = wire.upload(cluster.storage_addr, data, ext="qi")
    assert st == 0
    st, info = wire.query_file_info(cluster.storage_addr, fid)
    assert st == 0
    dec = wire.decode_file_id(fid)
    assert info == {"size": len(data), "timestamp": dec["timestamp"], "crc32": crc32(data),
                    "source_ip": cluster.storage_ip}
    g, _, r = fid.partition("/")
    flipped = r[:30] + ("A" if r[30] != "A" else "B") + r[31:]     # inside the 27 base64 chars
    st, _ = wire.query_file_info(cluster.storage_addr, g + "/" + flipped)
    assert st == wire.ENOENT


def test_appender_regenerate(cluster):
    a = cluster.storage_addr
    st, fid = wire.upload(a, b"part1-", ext="txt", cmd=wire.S_UPLOAD_APPENDER)
    assert st == 0 and wire.decode_file_id(fid)["appender"]
    g, _, r = fid.partition("/")
    rb = r.encode()
    with wire.Conn(a) as c:
        st, _ = c.request(wire.S_APPEND, struct.pack(">QQ", len(rb), 6) + rb + b"part2-")
        assert st == 0
        st, _ = c.request(wire.S_MODIFY, struct.pack(">QQQ", len(rb), 0, 4) + rb + b"PART")
        assert st == 0
        st, _ = c.request(wire.S_MODIFY, struct.pack(">QQQ", len(rb), 100, 1) + rb + b"X")
        assert st == wire.EINVAL, "modify beyond EOF must be EINVAL"
    assert wire.download(a, fid) == (0, b"PART1-part2-")
    with wire.Conn(a) as c:
        st, body = c.request(wire.S_REGENERATE, rb)
    assert st == 0
    new = body[:16].rstrip(b"\0").decode() + "/" + body[16:].decode()
    assert new != fid and len(new.partition("/")[2]) == 44
    assert new[-7:] == fid[-7:], "regenerated name keeps the FEXT7"
    dec = wire.decode_file_id(new)
    assert not dec["appender"] and dec["size"] == 12 and dec["crc32"] == crc32(b"PART1-part2-")
    assert wire.download(a, new) == (0, b"PART1-part2-")
    assert wire.download(a, fid)[0] == wire.ENOENT


def test_quit_and_active_test(cluster):
    for addr in (cluster.tracker_addr, cluster.storage_addr):
        with wire.Conn(addr) as c:
            assert c.request(wire.ACTIVE_TEST) == (0, b"")
            c.send(wire.header(0, wire.QUIT))
            data, closed = c.read_until_closed(10)
            assert data == b"" and closed, "QUIT: no reply expected and the server closes"


@pytest.mark.parametrize("n", [8])
def test_concurrent_uploads(cluster, n):
    import threading
    results = {}

    def worker(i):
        data = payload(200_000 + i, 300 + i)
        st, fid = wire.upload(cluster.storage_addr, data, ext="cc")
        results[i] = (st, fid, data)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert time.monotonic() - t0 < 60
    assert len(results) == n
    ids = set()
    for st, fid, data in results.values():
        assert st == 0
        ids.add(fid)
        assert wire.download(cluster.storage_addr, fid) == (0, data)
    assert len(ids) == n


def test_on_disk_layout_and_binlog(cluster):
    """§5.1: data file at <store_path>/data/XX/YY/<name>, metadata beside it as
    <name>-m, binlog lines '<ts> <op> <remote filename>[ extra]' in
    <base_path>/data/sync/binlog.NNN (flushed every sync_binlog_buff_interval=1 s)."""
    import os
    import re
    a = cluster.storage_addr
    data = payload(4567, 9)
    st, fid = wire.upload(a, data, ext="lay")
    assert st == 0
    remote = fid.partition("/")[2]
    spi = int(remote[1:3], 16)
    path = cluster.store_paths[spi] / "data" / remote[4:6] / remote[7:9] / remote[10:]
    assert path.is_file(), "data file not at %s" % path
    assert path.read_bytes() == data
    assert wire.set_meta(a, fid, {"x": "1"}) == 0
    assert (path.parent / (path.name + "-m")).read_bytes() == b"x\x021"
    st, app = wire.upload(a, b"abc", ext="lay", cmd=wire.S_UPLOAD_APPENDER)
    assert st == 0
    arem = app.partition("/")[2].encode()
    with wire.Conn(a) as c:
        assert c.request(wire.S_APPEND, struct.pack(">QQ", len(arem), 2) + arem + b"de")[0] == 0
    assert wire.delete(a, fid) == 0
    assert not path.exists() and not (path.parent / (path.name + "-m")).exists()

    sync_dir = cluster.storage_base / "data" / "sync"
    want = [r"^\d+ C %s$" % re.escape(remote),
            r"^\d+ C %s-m$" % re.escape(remote),
            r"^\d+ C %s$" % re.escape(arem.decode()),
            r"^\d+ A %s 3 2$" % re.escape(arem.decode()),
            # as upstream: the file's delete record, then its metadata's (upstream
            # peers delete only what a record names)
            r"^\d+ D %s$" % re.escape(remote),
            r"^\d+ D %s-m$" % re.escape(remote)]

    def binlog_lines():
        text = ""
        for f in sorted(os.listdir(sync_dir)):
            if re.fullmatch(r"binlog\.\d{3}", f):
                text += (sync_dir / f).read_text()
        lines = text.splitlines()
        found = [next((i for i, ln in enumerate(lines) if re.match(w, ln)), None) for w in want]
        return found if None not in found else None
    from fdfs_helpers import wait_for
    found = wait_for(binlog_lines, 10, interval=0.2, what="binlog records %s in %s" % (want, sync_dir))
    assert found[-2] < found[-1], "D <file> must come before D <file>-m"


def test_truncate_extends_and_file_info_flags(cluster):
    a = cluster.storage_addr
    st, app = wire.upload(a, b"0123456789", ext="t", cmd=wire.S_UPLOAD_APPENDER)
    assert st == 0
    r = app.partition("/")[2].encode()
    with wire.Conn(a) as c:
        assert c.request(wire.S_TRUNCATE, struct.pack(">QQ", len(r), 15) + r) == (0, b"")
        assert c.request(wire.S_TRUNCATE, struct.pack(">QQ", len(r), 15) + r) == (0, b"")   # same size: no-op
    assert wire.download(a, app) == (0, b"0123456789" + b"\0" * 5)
    st, info = wire.query_file_info(a, app, flags=1)          # bit0: do not compute CRC
    assert st == 0 and info["size"] == 15 and info["crc32"] == 0
    st, info = wire.query_file_info(a, app, flags=0)
    assert st == 0 and info["crc32"] == crc32(b"0123456789" + b"\0" * 5)


def test_slave_without_ext(cluster):
    a = cluster.storage_addr
    st, master = wire.upload(a, b"master", ext="jpg")
    assert st == 0
    mr = master.partition("/")[2].encode()
    body = struct.pack(">QQ", len(mr), 2) + b"_s".ljust(16, b"\0") + b"\0" * 6 + mr + b"sl"
    with wire.Conn(a) as c:
        st, reply = c.request(wire.S_UPLOAD_SLAVE, body)
    assert st == 0
    assert reply[16:].decode() == mr.decode()[:-4] + "_s", "empty ext => slave has no extension"


def test_refusals_keep_the_connection(cluster):
    """An errno reply other than EINVAL leaves the connection usable, as upstream's does:
    the rest of the refused request is read first (pooled clients, like the Java SDK's,
    send their next request on the same connection)."""
    a = cluster.storage_addr
    st, master = wire.upload(a, b"the master", ext="jpg")
    assert st == 0
    st, appender = wire.upload(a, b"app", ext="txt", cmd=wire.S_UPLOAD_APPENDER)
    assert st == 0
    g, _, mremote = master.partition("/")
    missing = mremote[:-5] + ("A" if mremote[-5] != "A" else "B") + mremote[-4:]
    big = os.urandom(3 << 20)

    def slave_body(master_remote, content):
        m = master_remote.encode()
        return (struct.pack(">QQ", len(m), len(content)) + b"_s".ljust(16, b"\0")
                + b"jpg".ljust(6, b"\0") + m + content)

    def file_body(remote, content, offset=None):
        r = remote.encode()
        head = struct.pack(">QQ", len(r), len(content)) if offset is None else \
            struct.pack(">QQQ", len(r), offset, len(content))
        return head + r + content

    ar = appender.partition("/")[2]
    assert wire.delete(a, appender) == 0
    with wire.Conn(a, timeout=30) as c:
        # a slave of a missing master, small and large
        assert c.request(wire.S_UPLOAD_SLAVE, slave_body(missing, b"x" * 100))[0] == wire.ENOENT
        assert c.request(wire.S_UPLOAD_SLAVE, slave_body(missing, big))[0] == wire.ENOENT
        # the same slave twice
        assert c.request(wire.S_UPLOAD_SLAVE, slave_body(mremote, b"thumb"))[0] == 0
        assert c.request(wire.S_UPLOAD_SLAVE, slave_body(mremote, big))[0] == 17          # EEXIST
        # append to and modify a deleted appender, small and large
        assert c.request(wire.S_APPEND, file_body(ar, b"more"))[0] == wire.ENOENT
        assert c.request(wire.S_APPEND, file_body(ar, big))[0] == wire.ENOENT
        assert c.request(wire.S_MODIFY, file_body(ar, big, offset=0))[0] == wire.ENOENT
        # the connection still serves
        assert c.request(wire.S_DOWNLOAD, wire.download_body(g, mremote)) == (0, b"the master")
        st, body = c.request(wire.S_UPLOAD, wire.upload_body(b"after", "txt"))
        assert st == 0
    # nothing of the refused content was stored
    fid = body[:16].rstrip(b"\0").decode() + "/" + body[16:].decode()
    assert wire.download(a, fid) == (0, b"after")
    assert wire.download(a, g + "/" + missing)[0] == wire.ENOENT


def test_pipelined_copies_keep_their_order(cluster):
    """A peer's pipelined burst (as our senders send it): with fsync_before_reply the
    whole-file copies of a burst are flushed together before they are named, and every
    reply still comes in request order; a request on a held name sees it named first."""
    a = cluster.storage_addr
    st, fid = wire.upload(a, b"x", ext="bin")
    assert st == 0
    group, _, remote = fid.partition("/")
    # other names in the same directory: the random base64 part changed
    names = [remote[:12] + c + remote[13:] for c in "QRS" if c != remote[12]][:2]
    names.append(remote[:13] + ("Z" if remote[13] != "Z" else "Y") + remote[14:])
    a_name, b_name, c_name = names

    def create(name, content, grp=group):
        n = name.encode()
        body = (struct.pack(">qqi", len(n), len(content), int(time.time()))
                + grp.encode().ljust(16, b"\0") + n + content)
        return wire.header(len(body), 16) + body

    def delete(name):
        body = struct.pack(">i", int(time.time())) + group.encode().ljust(16, b"\0") + name.encode()
        return wire.header(len(body), 17) + body

    # The names carry the size and CRC32 of b"x" (served only if the content matches).
    burst = (create(a_name, b"x") + create(b_name, b"x") + delete(a_name)
             + create(b_name, b"x") + create(c_name, b"x")
             + create(c_name, b"x", grp="nogroup"))
    with wire.Conn(a, timeout=20) as c:
        assert c.request(9, b"127.0.0.250".ljust(16, b"\0")) == (0, b"")
        c.send(burst)
        got = [c.response()[0] for _ in range(6)]
        data, closed = c.read_until_closed(10)
    # create a, create b, delete a (a named first), b again (already here), create c,
    # then the invalid one (c named before its EINVAL, which ends the connection)
    assert got == [0, 0, 0, 17, 0, wire.EINVAL], got
    assert closed and data == b""
    assert wire.download(a, group + "/" + a_name)[0] == wire.ENOENT
    assert wire.download(a, group + "/" + b_name) == (0, b"x")
    assert wire.download(a, group + "/" + c_name) == (0, b"x")
