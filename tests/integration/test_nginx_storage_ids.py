"""ngx_http_fastdfs_module with storage ids: `use_storage_id = true` and
`storage_ids_filename` in mod_fastdfs.conf, on a cluster whose file ids carry the source
storage's numeric server id (tracker.conf `use_storage_id = true`,
`id_type_in_filename = id`). The module maps that id to the storage's IPv4 address through
storage_ids.conf, and uses it to tell "this node is the source, so the file is gone" (404,
nobody asked) from "not here yet" (fetched from, or redirected to, the source first).

Topology (loopback; every storage nginx on the same port P, as upstream):
  cluster "ngxids": tracker + storages 1, 2, 3 of group1, server ids 100001..100003
  nginx 1, 2, 3 on node k's IP:P over node k's store path (nginx 2 is the one tested:
  its mod_fastdfs.conf names storage_ids.conf relatively, copied next to it)
  nginx 2R on node 2's IP, another port: response_mode = redirect, storage_http_port = P,
  storage_ids_filename absolute (the cluster's own storage_ids.conf)

Three storages, not two: with two, the only storage a miss on node 2 can be sent to is
the other one, whatever the file id says, so "the source first" could not be observed.
Files tested come from node 3; nginx 1 must not be asked for them.

A file "not on node 2 yet" is held back by SIGSTOPping node 2's storaged (nginx 2 reads
node 2's disk itself); a file "gone from its source" is deleted on node 2 while nodes 1
and 3 are SIGSTOPped, so that their copies stay (a forward would have found one).
"""

import shutil
import signal
import socket
import struct

import re

import pytest

import fdfs_wire as wire
from conftest import FIRST_STORAGE_ID, start_cluster, stop_cluster
from fdfs_helpers import payload, wait_for
from nginx_fixtures import (CONF_DIR, Nginx, free_port_on, http, make_remote_name,
                            mod_conf_text, require_nginx, start_storage_nginx, storage_nginx_conf)

ENOENT = 2


class Env:
    pass


def packed_source(fid):
    """Bytes 0-3 of the 20 bytes behind a file id's 27 base64 characters."""
    import base64
    remote = fid.partition("/")[2]
    raw = base64.b64decode(remote[10:37].replace("-", "+").replace("_", "/") + "=")
    assert len(raw) == 20, fid
    return raw[:4]


def id_as_source(storage_id):
    """A server id as the 4 packed source bytes (little-endian u32, storage_func.c), given
    as the dotted quad make_remote_name packs back into those bytes."""
    return socket.inet_ntoa(struct.pack("<I", int(storage_id)))


def local_path(node, fid):
    remote = fid.split("/", 1)[1]
    return node.store_paths[int(remote[1:3], 16)] / "data" / remote[4:]


def access_lines(n, name, forwarded=None):
    """Lines of nginx n's access log naming `name` (forwarded=True: only those a storage
    nginx sent on, carrying redirect=1; False: only the others)."""
    path = n.root / "logs" / "access.log"
    lines = [l for l in (path.read_text(errors="replace").splitlines() if path.exists() else [])
             if name in l]
    if forwarded is None:
        return lines
    return [l for l in lines if ("redirect=1" in l) == forwarded]


def stop_daemon(node):
    node.daemon.proc.send_signal(signal.SIGSTOP)


def cont_daemon(node):
    if node.daemon.alive():
        node.daemon.proc.send_signal(signal.SIGCONT)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_nginx()
    e = Env()
    e.nginxes = []
    e.c = None
    try:
        e.c = c = start_cluster(tmp_path_factory, "ngxids", store_paths=1, storages=3,
                                use_storage_id=True, id_type_in_filename="id")
        e.n1, e.n2, e.n3 = c.nodes
        assert [n.storage_id for n in c.nodes] == [str(FIRST_STORAGE_ID + i) for i in range(3)]
        ids_text = c.storage_ids_file.read_text()
        for n in c.nodes:
            assert "%s group1 %s:%d" % (n.storage_id, n.ip, n.port) in ids_text, ids_text
        e.port = free_port_on(*(n.ip for n in c.nodes))
        e.root = tmp_path_factory.mktemp("nginx-ids")
        ids = dict(use_storage_id="true", storage_ids_filename=str(c.storage_ids_file),
                   tracker_refresh_interval=1)
        e.ngx1 = start_storage_nginx(e.root / "n1", (e.n1.ip, e.port), "group1", e.n1.store_paths,
                                     tracker=c.tracker_server, workers=1, **ids)
        e.nginxes.append(e.ngx1)
        e.ngx3 = start_storage_nginx(e.root / "n3", (e.n3.ip, e.port), "group1", e.n3.store_paths,
                                     tracker=c.tracker_server, workers=1, **ids)
        e.nginxes.append(e.ngx3)
        # nginx 2: storage_ids_filename relative to mod_fastdfs.conf's directory
        (e.root / "n2").mkdir()
        shutil.copy(c.storage_ids_file, e.root / "n2" / "ids-copy.conf")
        e.ngx2 = start_storage_nginx(e.root / "n2", (e.n2.ip, e.port), "group1", e.n2.store_paths,
                                     tracker=c.tracker_server, **dict(ids, storage_ids_filename="ids-copy.conf"))
        e.nginxes.append(e.ngx2)
        assert "storage_ids_filename = ids-copy.conf" in (e.root / "n2" / "mod_fastdfs.conf").read_text()
        # nginx 2R: redirect mode on node 2's address (so node 2 is "this node"), sending
        # clients to the other storages' nginx on port P
        e.ngx2r = start_storage_nginx(e.root / "n2r", (e.n2.ip, free_port_on(e.n2.ip)), "group1",
                                      e.n2.store_paths, tracker=c.tracker_server,
                                      response_mode="redirect", storage_http_port=e.port, **ids)
        e.nginxes.append(e.ngx2r)
        yield e
    finally:
        for n in e.nginxes:
            n.stop()
        if e.c is not None:
            for node in e.c.nodes:
                cont_daemon(node)
            stop_cluster(e.c)


def wait_replicated(env, fid, data, nodes, deadline=60.0):
    def there():
        env.c.check_alive()
        return all(wire.download(n.addr, fid) == (0, data) for n in nodes)
    wait_for(there, deadline, interval=0.2,
             what="%s on %s" % (fid, ", ".join("%s:%d" % n.addr for n in nodes)))


def wait_deleted(env, fid, nodes, deadline=60.0):
    def gone():
        env.c.check_alive()
        return all(wire.download(n.addr, fid)[0] == ENOENT for n in nodes)
    wait_for(gone, deadline, interval=0.2, what="%s deleted everywhere" % fid)


# ------------------------------------------------------------------ not on node 2 yet

def test_file_not_yet_on_node2_fetched_from_its_source(env):
    """A file uploaded to node 3 (its id carries 100003) while node 2's storaged is
    stopped: nginx 2 sends the request to node 3 (proxy: the bytes; redirect: a 302 to
    node 3), never to node 1, which is listed first and holds a copy too."""
    data = payload(70_000, 21)
    stop_daemon(env.n2)
    try:
        st, fid = wire.upload(env.n3.addr, data, ext="txt")
        assert st == 0, "upload to node 3: status %d" % st
        assert packed_source(fid) == struct.pack("<I", int(env.n3.storage_id)), (
            fid, packed_source(fid).hex())
        name = fid.rsplit("/", 1)[1]
        # node 1 gets its copy (node 3 replicates to it); node 2 cannot
        wait_replicated(env, fid, data, [env.n1])
        assert local_path(env.n3, fid).is_file() and local_path(env.n1, fid).is_file()
        assert not local_path(env.n2, fid).exists()

        st, h, body = http("GET", env.ngx2.base + "/" + fid)
        assert st == 200 and body == data, (st, len(body), env.ngx2.logs())
        st, h, body = http("GET", env.ngx2.base + "/" + fid, {"Range": "bytes=1000-1099"})
        assert st == 206 and body == data[1000:1100], (st, body[:200])
        assert h["content-range"] == "bytes 1000-1099/%d" % len(data)
        wait_for(lambda: len(access_lines(env.ngx3, name, forwarded=True)) >= 2, 10,
                 what="both requests in nginx 3's access log")
        assert access_lines(env.ngx1, name) == [], access_lines(env.ngx1, name)

        # redirect mode: 302 to the source's nginx on port P, which serves it
        st, h, _ = http("GET", env.ngx2r.base + "/" + fid + "?filename=x.txt")
        assert st == 302, (st, env.ngx2r.logs())
        assert h["location"] == "http://%s:%d/%s?filename=x.txt&redirect=1" % (
            env.n3.ip, env.port, fid), h["location"]
        st, h, body = http("GET", h["location"])
        assert st == 200 and body == data
        assert h["content-disposition"] == 'attachment; filename="x.txt"'
        assert not local_path(env.n2, fid).exists()
        assert access_lines(env.ngx1, name) == [], access_lines(env.ngx1, name)
    finally:
        cont_daemon(env.n2)

    # once replicated, nginx 2 serves it from node 2's disk: nothing more forwarded
    wait_replicated(env, fid, data, [env.n2])
    forwarded = len(access_lines(env.ngx3, name, forwarded=True))
    st, _, body = http("GET", env.ngx2.base + "/" + fid)
    assert st == 200 and body == data
    assert len(access_lines(env.ngx3, name, forwarded=True)) == forwarded


# ------------------------------------------------------------------ node 2 is the source

def test_file_gone_from_its_source_is_404(env):
    """A file uploaded to node 2 (its id carries 100002), replicated to nodes 1 and 3,
    then deleted on node 2 while their storaged are stopped (so their copies stay): nginx
    2 answers 404 without asking anyone (a forward would have found a copy), in proxy and
    in redirect mode; nginx 1 still serves its copy."""
    data = payload(30_000, 22)
    st, fid = wire.upload(env.n2.addr, data, ext="txt")
    assert st == 0, "upload to node 2: status %d" % st
    assert packed_source(fid) == struct.pack("<I", int(env.n2.storage_id)), (fid, packed_source(fid).hex())
    name = fid.rsplit("/", 1)[1]
    wait_replicated(env, fid, data, [env.n1, env.n3])
    stop_daemon(env.n1)
    stop_daemon(env.n3)
    try:
        assert wire.delete(env.n2.addr, fid) == 0
        assert not local_path(env.n2, fid).exists()
        assert local_path(env.n1, fid).is_file() and local_path(env.n3, fid).is_file()

        st, _, body = http("GET", env.ngx2.base + "/" + fid)
        assert st == 404 and body != data, (st, env.ngx2.logs())
        st, _, _ = http("GET", env.ngx2.base + "/" + fid, {"Range": "bytes=0-9"})
        assert st == 404
        st, h, _ = http("GET", env.ngx2r.base + "/" + fid)
        assert st == 404, (st, h.get("location"))
        # a copy was there to be found: nginx 1 serves it when asked directly
        st, _, body = http("GET", env.ngx1.base + "/" + fid)
        assert st == 200 and body == data

        # made-up names (created now, so within storage_sync_file_max_delay): node 2's id
        # -> 404 from nginx 2 alone; node 3's id -> sent to nginx 3 (which answers 404)
        mine = make_remote_name(id_as_source(env.n2.storage_id), 10, ext="txt")
        theirs = make_remote_name(id_as_source(env.n3.storage_id), 10, ext="txt")
        for n in (env.ngx2, env.ngx2r):
            st, h, _ = http("GET", n.base + "/group1/" + mine)
            assert st == 404, (n.base, st, h.get("location"))
        st, _, _ = http("GET", env.ngx2.base + "/group1/" + theirs)
        assert st == 404
        st, h, _ = http("GET", env.ngx2r.base + "/group1/" + theirs)
        assert st == 302 and h["location"] == "http://%s:%d/group1/%s?redirect=1" % (
            env.n3.ip, env.port, theirs), (st, h.get("location"))
        # nginx 3 logged the request nginx 2 sent it; by then any earlier one is logged too
        theirs_name = theirs.rsplit("/", 1)[1]
        wait_for(lambda: access_lines(env.ngx3, theirs_name, forwarded=True), 10,
                 what="the forwarded made-up name in nginx 3's access log")
        assert access_lines(env.ngx1, theirs_name) == []
        mine_name = mine.rsplit("/", 1)[1]
        for n in (env.ngx1, env.ngx3):
            assert access_lines(n, name, forwarded=True) == [], access_lines(n, name)
            assert access_lines(n, mine_name) == [], access_lines(n, mine_name)
    finally:
        cont_daemon(env.n1)
        cont_daemon(env.n3)
    # the delete reaches nodes 1 and 3
    wait_deleted(env, fid, [env.n1, env.n2, env.n3])


# ------------------------------------------------------------------ config checking

def test_use_storage_id_needs_the_storage_ids_file(tmp_path):
    """use_storage_id = true with storage_ids_filename naming a missing file, or with no
    storage_ids_filename: `nginx -t` fails naming storage_ids_filename, and nginx does not
    start; once the file exists the same config passes."""
    require_nginx()
    store = tmp_path / "store0"
    store.mkdir()
    for f in ("http.conf", "mime.types"):
        shutil.copy(CONF_DIR / f, tmp_path / f)
    mod = tmp_path / "mod_fastdfs.conf"
    addr = ("127.0.0.1", free_port_on("127.0.0.1"))
    n = Nginx(tmp_path, storage_nginx_conf(tmp_path, addr, mod), addr)

    text = mod_conf_text("group1", [store], use_storage_id="true",
                         storage_ids_filename="missing-ids.conf")
    mod.write_text(text)
    line = text.splitlines().index("storage_ids_filename = missing-ids.conf") + 1
    r = n.test_config()
    assert r.returncode != 0, r.stderr
    assert "storage_ids_filename" in r.stderr and "%s:%d" % (mod, line) in r.stderr, r.stderr
    with pytest.raises(AssertionError, match="storage_ids_filename"):
        n.start()
    assert n.proc.poll() is not None

    mod.write_text(mod_conf_text("group1", [store], use_storage_id="true"))
    assert not re.search(r"^\s*storage_ids_filename", mod.read_text(), re.M)
    r = n.test_config()
    assert r.returncode != 0 and "storage_ids_filename" in r.stderr, r.stderr

    # the same config with the file there: accepted
    (tmp_path / "missing-ids.conf").write_text("100001 group1 127.0.0.1:23000\n")
    mod.write_text(text)
    r = n.test_config()
    assert r.returncode == 0, r.stderr
