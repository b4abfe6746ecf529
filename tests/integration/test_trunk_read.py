"""Files a C storage packed into trunk files (`use_trunk_file = true`), read by ours.

A C tracker and storage with trunk files on store small files; then our storage starts
on the C storage's data (the C tracker still leading, trunk files still on) and serves
every one of them byte for byte from its trunk slot (whole, ranged, file info,
metadata), a file C deleted (its slot zeroed) is ENOENT, and nginx with our module
serves them too.  A delete through our storage zeroes the slot and the space is handed
out again.
"""

import pytest

import fdfs_wire as wire
from fdfs_helpers import crc32, payload, wait_for
from interop import run_c
from nginx_fixtures import free_port_on, http, require_nginx, start_storage_nginx

TRUNK_EXTRA = ("use_trunk_file = true\nslot_min_size = 256\nslot_max_size = 1MB\n"
               "trunk_file_size = 4MB\nstore_server = 1\n")


@pytest.mark.timeout(300)
def test_rust_storage_serves_c_trunk_files(clusters, tmp_path):
    c = clusters.new("trunk-read", storages=1, c_trackers={0}, c_storages={0},
                     tracker_extra=TRUNK_EXTRA)
    node = c.nodes[0]
    files = {}
    sizes = [0, 1, 15, 233, 256, 1000, 4096, 10_000, 65_536, 300_000]
    for i, size in enumerate(sizes * 3):
        data = payload(size, 700 + i)
        local = tmp_path / ("f%d.bin" % i)
        local.write_bytes(data)
        result = {}

        def uploaded():
            # EAGAIN until the tracker has made the storage its group's trunk server.
            p = run_c("fdfs_upload_file", c.client_conf, local)
            result["p"] = p
            return p.returncode == 0
        wait_for(uploaded, 60, interval=0.5, what="an upload into a trunk file")
        fid = result["p"].stdout.strip()
        files[fid] = data
    trunked = [f for f in files if wire.decode_file_id(f)["trunk"]]
    # Every one went into a trunk file: 60-character names, bit 59 of the size field.
    assert len(trunked) == len(files), [f for f in files if f not in trunked]
    assert all(len(f.partition("/")[2]) == 60 for f in files)
    with_meta = trunked[5]
    meta = {"width": "640", "author": "c-storage"}
    assert wire.set_meta(node.addr, with_meta, meta) == 0
    gone = trunked[3]
    p = run_c("fdfs_delete_file", c.client_conf, gone)
    assert p.returncode == 0, p.stderr
    del files[gone]

    # Our storage on the same data, under the same C tracker.
    c.stop_daemon(node.daemon)
    c.set_impl(node, "rust")
    c.start_daemon(node.daemon)
    c.wait_active(node)

    for fid, data in files.items():
        assert wire.download(node.addr, fid) == (0, data), fid
        if len(data) > 100:
            assert wire.download(node.addr, fid, 17, 50) == (0, data[17:67]), fid
            assert wire.download(node.addr, fid, len(data) - 5) == (0, data[-5:]), fid
        st, info = wire.query_file_info(node.addr, fid)
        assert st == 0, fid
        assert info["size"] == len(data) and info["crc32"] == crc32(data), (fid, info)
        assert info["timestamp"] == wire.decode_file_id(fid)["timestamp"], (fid, info)
    assert wire.get_meta(node.addr, with_meta) == (0, meta)
    # The deleted one: its slot was zeroed.
    st, _ = wire.download(node.addr, gone)
    assert st == 2
    st, _ = wire.query_file_info(node.addr, gone)
    assert st == 2

    # The same files over HTTP, from nginx with our module on the store path: sendfile
    # from the slot, ranges within it, 404 for the freed slot.
    require_nginx()
    addr = (node.ip, free_port_on(node.ip))
    n = start_storage_nginx(tmp_path / "nginx", addr, "group1", node.store_paths,
                            tracker=c.tracker_server, workers=1)
    try:
        base = "http://%s:%d/" % addr
        for fid, data in files.items():
            status, headers, body = http("GET", base + fid)
            assert (status, body) == (200, data), (fid, status, len(body))
            if len(data) > 100:
                status, _, body = http("GET", base + fid, {"Range": "bytes=10-59"})
                assert (status, body) == (206, data[10:60]), (fid, status)
        status, _, _ = http("GET", base + gone)
        assert status == 404
    finally:
        n.stop()

    # A name pointing at a live slot but claiming other content is not served from it.
    fid = next(f for f, d in files.items() if len(d) > 100)
    group, _, remote = fid.partition("/")
    forged = remote[:10 + 27] + remote[10 + 27:10 + 43] + "000.bin"
    forged_id = "%s/%s" % (group, forged)
    if forged != remote:
        st, _ = wire.download(node.addr, forged_id)
        assert st == 2, forged_id

    # Deleting through our storage zeroes the slot; the C tracker's trunk server (ours
    # now) hands the space out again.
    victim = next(f for f, d in files.items() if len(d) == 1000)
    p = run_c("fdfs_delete_file", c.client_conf, victim)
    assert p.returncode == 0, p.stderr
    assert wire.download(node.addr, victim)[0] == 2
    _, _, remote = victim.partition("/")
    import base64
    loc = base64.urlsafe_b64decode(remote[37:53])
    trunk_id, offset, size = (int.from_bytes(loc[i:i + 4], "big") for i in (0, 4, 8))
    parts = remote.split("/")
    trunk = "%s/data/%s/%s/%06d" % (node.store_paths[0], parts[1], parts[2], trunk_id)
    with open(trunk, "rb") as f:
        f.seek(offset)
        assert not any(f.read(size)), "the deleted file's slot is not zeroed"

    def reused():
        local = tmp_path / "again.bin"
        local.write_bytes(payload(1000, 99))
        p = run_c("fdfs_upload_file", c.client_conf, local)
        if p.returncode != 0:
            return False
        again = p.stdout.strip().partition("/")[2]
        got = base64.urlsafe_b64decode(again[37:53])
        return (int.from_bytes(got[0:4], "big"), int.from_bytes(got[4:8], "big")) == \
            (trunk_id, offset)
    wait_for(reused, 60, interval=0.5, what="the freed slot handed out again")
