"""Storage ids (`use_storage_id`, storage_ids.conf, `id_type_in_filename`): our daemons
against the C FastDFS 6.16 ones, each scenario run on a C-only cluster too (parameter
`impl`: "c" = C tracker + C storages, the reference; "rust" = ours), so that the same
assertions are checked against what C does.

* the four combinations use_storage_id x id_type_in_filename: uploads and reads through
  the tracker, the file id's packed source (bytes 0-3: the server id as a little-endian
  u32 with use_storage_id + id, else the IPv4 octets), C's fdfs_file_info and fdfs_monitor;
* 69 FETCH_STORAGE_IDS, 70 GET_SERVER_ID, 109 GET_GROUP_NAME over a raw socket, on and off;
* a C storage with its id under our tracker, ours under our and a C tracker next to a C
  storage (its id found by address, or named by `server_id`): both replicate;
* two storages of group1 on one IP (6.16 multi-instance): both ACTIVE, replication,
  reads routed to the source's port, sync marks named <id>.mark;
* rw=none: replicated to, never chosen for an upload or a read, its lag in fdfs_monitor;
  promoted (rw= removed, trackers restarted) it is chosen and serves;
* a storage.conf without group_name learns it from the tracker (109);
* a storage whose ip:port is not in storage_ids.conf is refused, one naming an unknown
  server_id too, and a raw 81 JOIN from an unlisted address or naming an unknown id gets
  ENOENT; the tracker logs why.

Limits of the C reference here (so these cases run our storage only):
* the C storage sends 109 before it binds its client sockets to bind_addr, so from
  127.0.0.x it asks for 127.0.0.1's group and gets ENOENT (tracker log: "client ip:
  127.0.0.1, can't get group name for storage 127.0.0.1:<port>");
* C 6.16.1 reads storage.conf `server_id` after freeing the parsed config (storage_func.c)
  and exits with "server_id: 0 is invalid".

Storage ids are FIRST_STORAGE_ID (100001), 100002, ... in node order (conftest.Cluster).

Reads through a tracker follow the C rule (reference 6.4): a replica serves a file once
its last_synced_timestamp passes the file's timestamp, or equals it and
storage_sync_file_max_time has passed since; the clusters here set that to 1 s so that a
replica serves within seconds, without more uploads.
"""

import base64
import re
import socket
import struct
import subprocess
import time

import pytest

import fdfs_wire as wire
from c_daemons import file_path
from conftest import FIRST_STORAGE_ID, STATUS_ACTIVE, pick_addr
from fdfs_helpers import payload, wait_for
from interop import c_bin

T_FETCH_STORAGE_IDS = 69
T_GET_SERVER_ID = 70
T_GET_GROUP_NAME = 109
EOPNOTSUPP = 95
ENOENT = 2
EINVAL = 22

MODES = [(False, "ip"), (False, "id"), (True, "ip"), (True, "id")]
MODE_IDS = ["ids-off-ip", "ids-off-id", "ids-on-ip", "ids-on-id"]
IMPLS = ["c", "rust"]

# replicas readable 1 s after their synced timestamp reaches the file's (module doc)
SYNC_MAX_TIME = "storage_sync_file_max_time = 1\n"


def new_cluster(clusters, name, impl, storages=2, **kw):
    """A cluster of `storages` storages, all C (tracker included) or all ours."""
    if impl == "c":
        kw.setdefault("c_trackers", {0})
        kw.setdefault("c_storages", set(range(storages)))
    return clusters.new("%s-%s" % (name, impl), storages=storages, **kw)


# ------------------------------------------------------------------ helpers

def packed_source(fid):
    """Bytes 0-3 of the 20 bytes packed in a file id's 27 base64 chars (-_ alphabet)."""
    remote = fid.partition("/")[2]
    raw = base64.b64decode(remote[10:37].replace("-", "+").replace("_", "/") + "=")
    assert len(raw) == 20, fid
    return raw[:4]


def id_in_filename(c):
    return bool(c.use_storage_id) and c.id_type_in_filename == "id"


def expected_source(c, node):
    """What bytes 0-3 of a file id written by `node` hold (C: storage_func.c 393-486,
    int2buff(htonl(v)))."""
    if id_in_filename(c):
        return struct.pack("<I", int(node.storage_id))
    return socket.inet_aton(node.ip)


def describe_source(raw):
    v, = struct.unpack("<I", raw)
    return "%s (as id %d, as ip %s)" % (raw.hex(), v, socket.inet_ntoa(raw))


def node_at(c, addr):
    found = [n for n in c.nodes if n.addr == tuple(addr)]
    assert len(found) == 1, "no single storage of %s at %s:%d" % (c.name, *addr)
    return found[0]


def upload_via_tracker(c, data, ext="bin"):
    """101 on the tracker, then 11 on the storage it names -> (file id, node)."""
    st, info = wire.query_store(c.tracker_addr, timeout=20)
    assert st == 0, "%s: 101 QUERY_STORE -> status %d" % (c.name, st)
    node = node_at(c, (info["ip"], info["port"]))
    st, fid = wire.upload(node.addr, data, ext, spi=info["spi"], timeout=30)
    assert st == 0, "upload to %s:%d -> status %d" % (node.ip, node.port, st)
    return fid, node


def parse_fetch_all(body):
    """105 reply -> [(ip, port)]: group[16], then N x (ip[15 or 45] + port)."""
    rest = len(body) - 16
    ipw = 15 if rest % 23 == 0 else 45
    assert rest > 0 and rest % (ipw + 8) == 0, "105 body of %d bytes" % len(body)
    out = []
    for off in range(16, len(body), ipw + 8):
        ip = body[off:off + ipw].rstrip(b"\0").decode()
        port, = struct.unpack(">q", body[off + ipw:off + ipw + 8])
        out.append((ip, port))
    return out


def fetch_all(c, fid, tracker=None):
    group, _, remote = fid.partition("/")
    with wire.Conn(tracker or c.tracker_addr, 10) as conn:
        st, body = conn.request(wire.T_QUERY_FETCH_ALL, wire.group_field(group) + remote.encode())
    return st, (parse_fetch_all(body) if st == 0 else None)


def fetch_one(c, fid, tracker=None):
    group, _, remote = fid.partition("/")
    st, info = wire.query_fetch(tracker or c.tracker_addr, group, remote)
    return st, ((info["ip"], info["port"]) if st == 0 else None)


def wait_everywhere(c, files, nodes=None, deadline=60.0):
    """Every file downloadable, byte-identical, from every node directly."""
    nodes = nodes or c.nodes
    state = {}

    def done():
        c.check_alive()
        bad = []
        for n in nodes:
            got = wire.download_each(n.addr, list(files))
            bad += ["%s on %s %s:%d: %s" % (fid, c.impl_of(n), n.ip, n.port,
                                             r[0] if r[0] else "%d bytes" % len(r[1]))
                    for fid, r in got.items() if r != (0, files[fid])]
        state["bad"] = bad
        return not bad
    try:
        wait_for(done, deadline, interval=0.2, what="files on every storage")
    except TimeoutError:
        raise AssertionError("after %.0fs, %d file copies missing or wrong:\n%s" % (
            deadline, len(state["bad"]), "\n".join(state["bad"][:10])))


def run_c(tool, *args, timeout=60):
    return subprocess.run([str(c_bin(tool)), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def show(p):
    return "%s -> exit %d\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        " ".join(map(str, p.args)), p.returncode, p.stdout[-6000:], p.stderr[-3000:])


def file_info(conf, fid):
    """fdfs_file_info -> (process, {caption: value})."""
    p = run_c("fdfs_file_info", conf, fid)
    assert p.returncode == 0, show(p)
    return p, dict(re.findall(r"^([a-zA-Z0-9 ]+): (.*)$", p.stdout, re.M))


def monitor(c, *args):
    """fdfs_monitor -> (output, {group: {"group": {caption: value}, "storages": [{...}]}})."""
    p = run_c("fdfs_monitor", c.client_conf, *args)
    assert p.returncode == 0 and "ERROR -" not in p.stderr, show(p)
    groups = {}
    for block in re.split(r"^Group \d+:$", p.stdout, flags=re.M)[1:]:
        head, *storages = re.split(r"^\tStorage \d+:$", block, flags=re.M)
        info = dict(re.findall(r"^([a-z ]+?) += (.*)$", head, re.M))
        groups[info["group name"]] = {"group": info, "storages": [
            dict(re.findall(r"^\t\t(\S[^=\n]*?) = (.*)$", s, re.M)) for s in storages]}
    return p.stdout, groups


def monitor_storage(groups, c, node):
    """The fdfs_monitor block of `node` (by host ip:port)."""
    blocks = [s for s in groups[node.group]["storages"]
              if s.get("host", "").split()[0] == "%s:%d" % node.addr]
    assert len(blocks) == 1, "fdfs_monitor: %d blocks for %s:%d" % (len(blocks), *node.addr)
    return blocks[0]


def tracker_log(c, tracker=None):
    d = tracker or c.tracker
    text = ""
    for f in (d.log_file, d.stderr_file):
        try:
            text += f.read_text(errors="replace")
        except OSError:
            pass
    return text


def storage_log(node):
    return tracker_log(None, node.daemon)


def wait_all_active(c, nodes=None, tracker=None, deadline=60.0):
    for n in nodes or c.nodes:
        def active(n=n):
            c.check_alive()
            return c.storage_status_on(n, tracker or c.tracker_addr) == STATUS_ACTIVE
        try:
            wait_for(active, deadline, 0.2, "storage %s ACTIVE" % n.storage_id)
        except TimeoutError:
            raise AssertionError("%s storage %s:%d (id %s) not ACTIVE after %.0fs: 92 lists %s"
                                 % (c.impl_of(n), n.ip, n.port, n.storage_id, deadline,
                                    c.list_storages(n.group, tracker=tracker)))


def restart_tracker(c):
    c.stop_daemon(c.tracker)
    c.start_daemon(c.tracker)
    wait_for(lambda: c.check_alive() or c._connectable(c.tracker_addr), 30, 0.1,
             "tracker %s back" % c.tracker_server)


# ------------------------------------------------------------------ raw 69 / 70 / 109

def fetch_storage_ids(addr, start=0, allow_empty=0):
    """69: u32 start_index + u8 allow_empty -> (status, total, count, [lines])."""
    with wire.Conn(addr, 10) as conn:
        st, body = conn.request(T_FETCH_STORAGE_IDS, struct.pack(">IB", start, allow_empty))
    if st != 0:
        return st, None, None, body
    total, count = struct.unpack(">II", body[:8])
    text = body[8:].decode()
    return st, total, count, text.splitlines(True)


def get_server_id(addr, group, ip, port):
    """70 (6.16): group[16] + "ip:port" -> (status, id text)."""
    with wire.Conn(addr, 10) as conn:
        st, body = conn.request(T_GET_SERVER_ID, wire.group_field(group)
                                + ("%s:%d" % (ip, port)).encode())
    return st, body.decode()


def get_group_name(addr, port, ip=None, bind_ip=None):
    """109: [ip text] + u32 port -> (status, group).  Without `ip` the tracker takes the
    peer's address: bind_ip chooses it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        if bind_ip:
            sock.bind((bind_ip, 0))
        sock.connect(addr)
        body = (ip.encode() if ip else b"") + struct.pack(">I", port)
        sock.sendall(wire.header(len(body), T_GET_GROUP_NAME) + body)
        hdr = b""
        while len(hdr) < 10:
            chunk = sock.recv(10 - len(hdr))
            assert chunk, "109: connection closed"
            hdr += chunk
        pkg_len, cmd, st = wire.HEADER.unpack(hdr)
        data = b""
        while len(data) < pkg_len:
            chunk = sock.recv(pkg_len - len(data))
            assert chunk, "109: connection closed in the body"
            data += chunk
    finally:
        sock.close()
    assert cmd == wire.RESP
    return st, data


def ids_lines(c):
    """What 69 must list: storage_ids.conf's entries, one `id group ip:port[ rw=x]\\n` each,
    in id order (C: tracker_service.c tracker_deal_fetch_storage_ids)."""
    return [ln for ln in c.storage_ids_file.read_text().splitlines(True)
            if ln.strip() and not ln.startswith("#")]


# ------------------------------------------------------------------ 1. the four modes

def check_file_ids(c, files):
    """Every file id's packed source is its writer's id (LE u32) or IPv4 octets."""
    bad = []
    for fid, (node, _) in files.items():
        got = packed_source(fid)
        want = expected_source(c, node)
        if got != want:
            bad.append("%s by %s %s:%d (id %s): packed source %s, expected %s" % (
                fid, c.impl_of(node), node.ip, node.port, node.storage_id,
                describe_source(got), describe_source(want)))
    assert not bad, "\n".join(bad)


def check_reads_through_tracker(c, files, deadline=60.0):
    """105 names every member for every file and each serves it; 102 names a member
    that serves it."""
    want = sorted(n.addr for n in c.nodes)
    state = {}

    def listed():
        c.check_alive()
        state["seen"] = {fid: fetch_all(c, fid) for fid in files}
        return all(st == 0 and sorted(a) == want for st, a in state["seen"].values())
    try:
        wait_for(listed, deadline, 0.3, "105 to name both members")
    except TimeoutError:
        raise AssertionError("after %.0fs, 105 FETCH_ALL does not name %s for every file:\n%s"
                             % (deadline, want, "\n".join("%s -> %s" % (f, r) for f, r in
                                                          state["seen"].items())))
    for fid, (_, data) in files.items():
        for addr in want:
            assert wire.download(addr, fid) == (0, data), "%s from %s:%d" % ((fid,) + addr)
        for _ in range(4):
            st, addr = fetch_one(c, fid)
            assert st == 0 and addr in want, "102 for %s -> %s %s" % (fid, st, addr)
            assert wire.download(addr, fid) == (0, data), "%s from %s:%d" % ((fid,) + addr)


def check_file_info(c, fid, node, data, tmp_path):
    """fdfs_file_info, with a client.conf without storage ids (id mode: asked from the
    server, 102 + 22) and with one naming storage_ids.conf (decoded locally)."""
    p, info = file_info(c.client_conf, fid)
    assert "ERROR -" not in p.stderr, show(p)
    assert info.get("file type") == "normal" and info.get("file size") == str(len(data)), show(p)
    assert info.get("source ip address") == node.ip, show(p)
    if id_in_filename(c):
        # a server id the client cannot resolve: asked from the storage (22)
        assert info.get("GET FROM SERVER") == "true", show(p)
        assert info.get("source storage id") == node.storage_id, show(p)
    else:
        assert info.get("GET FROM SERVER") == "false", show(p)
        assert info.get("source storage id") == "0", show(p)
    if c.use_storage_id is not None:
        conf = tmp_path / ("client-ids-%s.conf" % c.name)
        conf.write_text(c.client_conf.read_text() + "use_storage_id = true\n"
                        "storage_ids_filename = %s\n" % c.storage_ids_file)
        p, info = file_info(conf, fid)
        assert "ERROR -" not in p.stderr, show(p)
        assert info.get("GET FROM SERVER") == "false", show(p)
        assert info.get("source ip address") == node.ip, show(p)
        assert info.get("source storage id") == (node.storage_id if id_in_filename(c) else "0"), \
            show(p)


def check_monitor(c):
    """fdfs_monitor: each storage ACTIVE under its ip:port, `id` its storage id (the
    numeric one with use_storage_id, else its IP)."""
    out, groups = monitor(c)
    assert set(groups) == {c.group}, out
    g = groups[c.group]
    assert g["group"]["storage server count"] == str(len(c.nodes)), out
    for n in c.nodes:
        s = monitor_storage(groups, c, n)
        assert s["host"] == "%s:%d  ACTIVE" % n.addr, out
        assert s["id"] == (n.storage_id if c.use_storage_id else n.ip), out
        assert s["read write mode"] == "both (normal)", out
    return out, groups


@pytest.mark.timeout(300)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("use_ids,id_type", MODES, ids=MODE_IDS)
def test_storage_id_modes(clusters, tmp_path, impl, use_ids, id_type):
    """Two storages of group1: 8 uploads through the tracker (both members are sources),
    each file id's packed source per the mode, every file on both members and read
    through the tracker from both, fdfs_file_info and fdfs_monitor right."""
    c = new_cluster(clusters, "mode", impl, use_storage_id=use_ids,
                    id_type_in_filename=id_type, tracker_extra=SYNC_MAX_TIME)
    if use_ids:
        # 92 names each by its storage id
        recs = {r["id"]: r for r in c.list_storages()}
        assert set(recs) == {n.storage_id for n in c.nodes}, recs
        for n in c.nodes:
            assert (recs[n.storage_id]["ip"], recs[n.storage_id]["port"]) == n.addr, recs
    else:
        assert sorted(r["id"] for r in c.list_storages()) == sorted(n.ip for n in c.nodes)
    files = {}
    for i in range(8):
        data = payload(1000 + i * 77, 100 + i)
        fid, node = upload_via_tracker(c, data, "txt")
        files[fid] = (node, data)
    sources = {n.addr for n, _ in files.values()}
    assert sources == {n.addr for n in c.nodes}, \
        "round robin did not pick both members: %s" % sources
    check_file_ids(c, files)
    wait_everywhere(c, {f: d for f, (_, d) in files.items()})
    check_reads_through_tracker(c, files)
    for n in c.nodes:
        fid = next(f for f, (src, _) in files.items() if src is n)
        check_file_info(c, fid, n, files[fid][1], tmp_path)
    check_monitor(c)
    # sync marks: <peer id>.mark with use_storage_id, else <peer ip>_<port>.mark (the
    # port is the writer's own in C; one port per group here)
    for n in c.nodes:
        peer = next(p for p in c.nodes if p is not n)
        want = "%s.mark" % (peer.storage_id if use_ids else "%s_%d" % (peer.ip, n.port))
        sync = n.base / "data" / "sync"
        wait_for(lambda: (sync / want).exists(), 30, 0.2, "%s on %s" % (want, n.storage_id))
        marks = sorted(p.name for p in sync.glob("*.mark"))
        assert marks == [want], "%s storage %s:%d sync marks %s, expected [%s]" % (
            c.impl_of(n), n.ip, n.port, marks, want)


# ------------------------------------------------------------------ 2. 69 / 70 / 109

@pytest.mark.timeout(180)
@pytest.mark.parametrize("impl", IMPLS)
def test_fetch_storage_ids_and_server_id(clusters, tmp_path, impl):
    """69 lists storage_ids.conf (paged by start_index, EINVAL past the end), 70 maps
    group + ip:port to the id (ENOENT for an unknown one), 109 names the group (by the
    given ip, or the peer's); a C client with load_fdfs_parameters_from_tracker (75 + 69)
    then resolves ids locally."""
    c = new_cluster(clusters, "ids", impl, use_storage_id=True, id_type_in_filename="id",
                    storage_ids_rw={2: "none"}, storage_ids_spare=1,
                    client_extra="load_fdfs_parameters_from_tracker = true\n")
    lines = ids_lines(c)
    assert len(lines) == 3 and lines[2].endswith(" rw=none\n"), lines
    st, total, count, got = fetch_storage_ids(c.tracker_addr)
    assert (st, total, count) == (0, 3, 3), (st, total, count, got)
    assert got == lines, "69 from 0: %s, storage_ids.conf has %s" % (got, lines)
    st, total, count, got = fetch_storage_ids(c.tracker_addr, start=1, allow_empty=1)
    assert (st, total, count, got) == (0, 3, 2, lines[1:]), (st, total, count, got)
    st, *_ = fetch_storage_ids(c.tracker_addr, start=3)
    assert st == EINVAL, "69 start_index 3 of 3 -> %d, C answers EINVAL" % st
    with wire.Conn(c.tracker_addr) as conn:
        st, _ = conn.request(T_FETCH_STORAGE_IDS, struct.pack(">I", 0))
    assert st == EINVAL, "69 with a 4-byte body (<= 6.10) -> %d, C 6.16 answers EINVAL" % st

    for n in c.nodes:
        assert get_server_id(c.tracker_addr, "group1", n.ip, n.port) == (0, n.storage_id), n.addr
        assert get_group_name(c.tracker_addr, n.port, ip=n.ip) == (0, wire.group_field("group1"))
        assert get_group_name(c.tracker_addr, n.port, bind_ip=n.ip) == \
            (0, wire.group_field("group1")), "109 with the port only, from %s" % n.ip
    n = c.nodes[0]
    assert get_server_id(c.tracker_addr, "group1", n.ip, n.port + 1)[0] == ENOENT
    assert get_server_id(c.tracker_addr, "group2", n.ip, n.port)[0] == ENOENT
    assert get_group_name(c.tracker_addr, n.port + 1, ip=n.ip)[0] == ENOENT

    # a C client that takes use_storage_id and the ids from the tracker (75 + 69)
    st, fid = wire.upload(n.addr, b"resolved locally", "txt")
    assert st == 0
    p, info = file_info(c.client_conf, fid)
    assert "ERROR -" not in p.stderr, show(p)
    assert (info.get("GET FROM SERVER"), info.get("source storage id"),
            info.get("source ip address")) == ("false", n.storage_id, n.ip), show(p)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("impl", IMPLS)
def test_storage_id_commands_when_off(clusters, impl):
    """use_storage_id = false: 69 EOPNOTSUPP (8 zero bytes with allow_empty), 109
    EOPNOTSUPP, 70 answers the IP itself."""
    c = new_cluster(clusters, "idsoff", impl, storages=1, use_storage_id=False)
    n = c.nodes[0]
    st, *_ = fetch_storage_ids(c.tracker_addr)
    assert st == EOPNOTSUPP, "69 with storage ids off -> %d" % st
    with wire.Conn(c.tracker_addr) as conn:
        assert conn.request(T_FETCH_STORAGE_IDS, struct.pack(">IB", 0, 1)) == (0, b"\0" * 8)
    assert get_group_name(c.tracker_addr, n.port, ip=n.ip)[0] == EOPNOTSUPP
    assert get_server_id(c.tracker_addr, "group1", n.ip, n.port) == (0, n.ip)


# ------------------------------------------------------------------ 3. C and ours, one group

# (tracker, first storage, joining storage, joiner's storage.conf names its server_id)
JOIN_LAYOUTS = {
    "rust-tracker-c-joins": ("rust", "rust", "c", False),
    "rust-tracker-c-first-rust-joins-server_id": ("rust", "c", "rust", True),
    "c-tracker-rust-joins": ("c", "c", "rust", False),
    "c-tracker-rust-joins-server_id": ("c", "c", "rust", True),
}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("layout", list(JOIN_LAYOUTS))
def test_c_and_rust_storage_with_ids(clusters, layout):
    """ID mode, one group of a C and one of our storages: a C storage joins our tracker
    next to ours, ours joins next to a C one under our tracker and under a C tracker;
    with `server_id` the joining storage names its id in storage.conf
    (trust_storage_server_id), else it finds it by its address (C: storage_ids by
    local IP; or 70).  Only our storage is given `server_id`: C 6.16.1 reads that key
    after freeing the config (storage_func.c: iniFreeContext, then
    tracker_get_my_server_id(filename, server_id_in_conf)) and exits with "server_id: 0
    is invalid".  Both ACTIVE by id; files uploaded to either are on both and readable
    through the tracker from both, their ids carry the writer's id; marks <id>.mark."""
    tracker, first_impl, joiner, server_id_in_conf = JOIN_LAYOUTS[layout]
    c = clusters.new("join-%s" % layout, storages=1,
                     c_trackers={0} if tracker == "c" else (),
                     c_storages={0} if first_impl == "c" else (),
                     use_storage_id=True, id_type_in_filename="id", storage_ids_spare=1,
                     tracker_extra=SYNC_MAX_TIME)
    first = c.nodes[0]
    new = c.add_storage(impl=joiner, server_id=True if server_id_in_conf else None)
    assert new.storage_id == str(FIRST_STORAGE_ID + 1)
    assert ("server_id = %s" % new.storage_id in new.conf.read_text()) == server_id_in_conf
    wait_all_active(c)
    recs = {r["id"]: r for r in c.list_storages()}
    assert set(recs) == {first.storage_id, new.storage_id}, recs
    assert (recs[new.storage_id]["ip"], recs[new.storage_id]["port"]) == new.addr

    files = {}
    for n in (first, new):
        for i in range(3):
            data = payload(3000 + i, int(n.storage_id) * 10 + i)
            st, fid = wire.upload(n.addr, data, "dat")
            assert st == 0, "upload to %s storage -> %d" % (c.impl_of(n), st)
            files[fid] = (n, data)
    check_file_ids(c, files)
    wait_everywhere(c, {f: d for f, (_, d) in files.items()})
    check_reads_through_tracker(c, files)
    # each one's mark for the other is <id>.mark
    for n, peer in ((first, new), (new, first)):
        sync = n.base / "data" / "sync"
        wait_for(lambda: (sync / ("%s.mark" % peer.storage_id)).exists(), 30, 0.2,
                 "%s storage: %s.mark" % (c.impl_of(n), peer.storage_id))


# ------------------------------------------------------------------ 4. two instances, one IP

@pytest.mark.timeout(240)
@pytest.mark.parametrize("impl", IMPLS)
def test_two_instances_on_one_ip(clusters, impl):
    """group1 = two storages on one 127.0.0.x, different ports (use_storage_id, id in
    file names, download_server = 1 source first): both ACTIVE, uploads through the
    tracker land on both, 102 names the source instance's port, each one's sync mark
    for the other is <id>.mark (no <ip>_<port>.mark)."""
    c = new_cluster(clusters, "multi", impl, use_storage_id=True, id_type_in_filename="id",
                    one_ip=True, tracker_extra="download_server = 1\n" + SYNC_MAX_TIME)
    a, b = c.nodes
    assert a.ip == b.ip and a.port != b.port
    wait_all_active(c)
    recs = sorted((r["id"], r["ip"], r["port"], r["status"]) for r in c.list_storages())
    assert recs == [(a.storage_id, a.ip, a.port, STATUS_ACTIVE),
                    (b.storage_id, b.ip, b.port, STATUS_ACTIVE)], recs

    files = {}
    for i in range(8):
        data = payload(2000 + i, 200 + i)
        fid, node = upload_via_tracker(c, data, "jpg")
        files[fid] = (node, data)
    assert {n.addr for n, _ in files.values()} == {a.addr, b.addr}, \
        "the tracker did not choose both instances"
    check_file_ids(c, files)
    wait_everywhere(c, {f: d for f, (_, d) in files.items()})
    for fid, (node, data) in files.items():
        for n in (a, b):
            with open(file_path(n, fid), "rb") as f:
                assert f.read() == data, "%s not on %s's disk" % (fid, n.storage_id)
        # source first: 102 names the instance that wrote it, by id, not the other port
        for _ in range(3):
            st, addr = fetch_one(c, fid)
            assert (st, addr) == (0, node.addr), \
                "102 for %s (source %s, port %d) -> %s %s" % (fid, node.storage_id, node.port,
                                                             st, addr)
        assert wire.download(addr, fid) == (0, data)
    for n, peer in ((a, b), (b, a)):
        sync = n.base / "data" / "sync"
        wait_for(lambda: (sync / ("%s.mark" % peer.storage_id)).exists(), 30, 0.2,
                 "instance %s: %s.mark" % (n.storage_id, peer.storage_id))
        marks = sorted(p.name for p in sync.glob("*.mark"))
        assert marks == ["%s.mark" % peer.storage_id], \
            "instance %s's sync marks: %s" % (n.storage_id, marks)


# ------------------------------------------------------------------ 5. rw=none, promoted

@pytest.mark.timeout(300)
@pytest.mark.parametrize("impl", IMPLS)
def test_rw_none_storage_then_promoted(clusters, impl):
    """Storage 100002 listed rw=none: ACTIVE, rw_mode 0 in 92, gets every file, is never
    named by 101, 102 or 105; fdfs_monitor shows it `none (disabled)` with its sync lag.
    Its rw= removed and the tracker restarted: 101 and 102 name it, it serves."""
    c = new_cluster(clusters, "rwnone", impl, use_storage_id=True, id_type_in_filename="id",
                    storage_ids_rw={1: "none"}, tracker_extra=SYNC_MAX_TIME)
    rw, none = c.nodes
    assert none.rw == "none" and " rw=none\n" in c.storage_ids_file.read_text()
    wait_all_active(c)
    recs = {r["id"]: r for r in c.list_storages()}
    assert (recs[rw.storage_id]["rw_mode"], recs[none.storage_id]["rw_mode"]) == (6, 0), recs

    for _ in range(12):
        st, info = wire.query_store(c.tracker_addr)
        assert st == 0 and (info["ip"], info["port"]) == rw.addr, \
            "101 named %s, only %s:%d is writable" % (info, *rw.addr)
    files = {}
    for i in range(6):
        data = payload(4000 + i, 300 + i)
        fid, node = upload_via_tracker(c, data, "txt")
        assert node is rw
        files[fid] = (node, data)
    wait_everywhere(c, {f: d for f, (_, d) in files.items()})
    # replicated, synced, yet never named for a read: wait until the rw=none one reports
    # a synced timestamp that reaches the files' and storage_sync_file_max_time (1 s) has
    # passed, so that only its rw=none keeps it from serving them
    newest = max(wire.decode_file_id(f)["timestamp"] for f in files)
    wait_for(lambda: c.check_alive() or time.time() > newest + 2 and next(
        r for r in c.list_storages() if r["id"] == none.storage_id)
        ["last_synced_timestamp"] >= newest, 60, 0.3,
        "rw=none storage's last_synced_timestamp to reach %d" % newest)
    for fid in files:
        for _ in range(4):
            st, addr = fetch_one(c, fid)
            assert (st, addr) == (0, rw.addr), "102 for %s -> %s %s" % (fid, st, addr)
        st, addrs = fetch_all(c, fid)
        assert (st, addrs) == (0, [rw.addr]), "105 for %s -> %s %s" % (fid, st, addrs)

    out, groups = monitor(c)
    g = groups[c.group]["group"]
    assert (g["readable server count"], g["writable server count"]) == ("1", "1"), out
    s = monitor_storage(groups, c, none)
    assert s["id"] == none.storage_id and s["host"] == "%s:%d  ACTIVE" % none.addr, out
    assert s["read write mode"] == "none (disabled)", out
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(.+ delay\)$",
                    s["last_synced_timestamp"]), \
        "fdfs_monitor shows no sync delay for the rw=none storage:\n" + out
    assert monitor_storage(groups, c, rw)["read write mode"] == "both (normal)", out

    # promoted: no rw= any more, the tracker restarted
    none.rw = None
    c.write_storage_ids()
    assert "rw=" not in c.storage_ids_file.read_text()
    restart_tracker(c)
    wait_all_active(c)
    wait_for(lambda: {r["id"]: r["rw_mode"] for r in c.list_storages()}.get(none.storage_id) == 6,
             30, 0.2, "promoted storage's rw_mode 6")
    named = set()
    for _ in range(12):
        st, info = wire.query_store(c.tracker_addr)
        assert st == 0, st
        named.add((info["ip"], info["port"]))
    assert none.addr in named, "101 never names the promoted storage: %s" % named
    extra = {}

    def upload_to_promoted():
        data = b"to the promoted one %d" % len(extra)
        fid, node = upload_via_tracker(c, data, "txt")
        extra[fid] = (node, data)
        return node is none
    wait_for(upload_to_promoted, 30, 0.1, "an upload through the tracker to the promoted one")
    files.update(extra)
    check_file_ids(c, files)
    check_reads_through_tracker(c, files)
    out, groups = monitor(c)
    assert monitor_storage(groups, c, none)["read write mode"] == "both (normal)", out


# ------------------------------------------------------------------ 6. no group_name

@pytest.mark.timeout(180)
@pytest.mark.parametrize("tracker", ["rust", "c"])
def test_storage_without_group_name(clusters, tracker):
    """Our storage, its storage.conf without group_name, in ID mode: it asks the tracker
    (109), joins group1 and goes ACTIVE; its uploads are group1 files."""
    c = clusters.new("nogroup-%s" % tracker, storages=1, use_storage_id=True,
                     id_type_in_filename="id", storage_ids_spare=1,
                     c_trackers={0} if tracker == "c" else (),
                     c_storages={0} if tracker == "c" else ())
    node = c.add_storage(omit_group_name=True)
    assert not re.search(r"^group_name", node.conf.read_text(), re.M)
    wait_all_active(c, [node])
    st, fid = wire.upload(node.addr, b"no group_name in my conf", "txt")
    assert st == 0 and fid.startswith("group1/"), (st, fid)
    assert packed_source(fid) == expected_source(c, node)
    wait_everywhere(c, {fid: b"no group_name in my conf"})


# ------------------------------------------------------------------ 7. not in storage_ids

REFUSAL = re.compile(r"storage.?id|storage_ids|not exist|not found|unknown|refus|not listed",
                     re.I)


def refused_unless_listed(c, rogue, listed, tracker_reason):
    """`rogue` (started, not in storage_ids.conf) is refused: a tracker log line matching
    tracker_reason(line) when given; the storage gives up (exits non-zero, saying why in
    its log) or keeps being refused; never listed ACTIVE nor named by 101; `listed`
    serves on."""
    def refusal_lines():
        c.check_alive()
        return [ln for ln in tracker_log(c).splitlines() if tracker_reason(ln)]
    first = []
    if tracker_reason is not None:
        try:
            first = wait_for(refusal_lines, 60, 0.2, "tracker log line refusing %s" % rogue.ip)
        except TimeoutError:
            raise AssertionError("no tracker log line says why %s:%d is refused:\n%s\n%s" % (
                rogue.ip, rogue.port, tracker_log(c)[-4000:], rogue.daemon.logs()))
        # it gives up, or tries again and is refused again
        wait_for(lambda: not rogue.daemon.alive() or len(refusal_lines()) >= len(first) + 2,
                 60, 0.2, "storage %s to exit or be refused again" % rogue.ip)
    else:
        wait_for(lambda: not rogue.daemon.alive(), 60, 0.2, "storage %s to exit" % rogue.ip)
    if not rogue.daemon.alive():
        assert rogue.daemon.proc.returncode != 0, "refused storage exited 0"
        assert REFUSAL.search(storage_log(rogue)), \
            "the refused storage exited without saying why:\n" + rogue.daemon.logs()
    recs = c.list_storages()
    assert all(not (r["ip"] == rogue.ip and r["port"] == rogue.port
                    and r["status"] == STATUS_ACTIVE) for r in recs), recs
    assert [r["id"] for r in recs if r["status"] == STATUS_ACTIVE] == [listed.storage_id], recs
    for _ in range(6):
        st, info = wire.query_store(c.tracker_addr)
        assert st == 0 and (info["ip"], info["port"]) == listed.addr, info
    st, fid = wire.upload(listed.addr, b"still served", "txt")
    assert st == 0 and wire.download(listed.addr, fid) == (0, b"still served")


def unlisted_cluster(clusters, tracker, name):
    return clusters.new("%s-%s" % (name, tracker), storages=1, use_storage_id=True,
                        id_type_in_filename="id",
                        c_trackers={0} if tracker == "c" else (),
                        c_storages={0} if tracker == "c" else ())


@pytest.mark.timeout(180)
@pytest.mark.parametrize("tracker", ["rust", "c"])
def test_storage_not_in_storage_ids_refused(clusters, tracker):
    """Our storage whose ip:port is not in storage_ids.conf: the tracker logs why (C 6.16:
    a WARNING at 60 GET_MY_IP "client ip addr: X, port: P, group_name: group1, storage
    ip not exist in storage_ids.conf", an ERROR at 70 or JOIN naming the ip); the
    storage gives up (exits non-zero, as the C storage does when no id is found: "can't
    find my server id") or keeps being refused; never ACTIVE."""
    c = unlisted_cluster(clusters, tracker, "unlisted")
    rogue = c.add_storage(listed=False, start=False)
    listed = re.findall(r"[\d.]+(?=:\d+)", c.storage_ids_file.read_text())
    assert rogue.storage_id is None and rogue.ip not in listed
    c.stopped.add(id(rogue.daemon))     # it may exit: left out of the liveness checks
    rogue.daemon.start()
    refused_unless_listed(c, rogue, c.nodes[0],
                          lambda ln: rogue.ip in ln and REFUSAL.search(ln))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("tracker", ["rust", "c"])
def test_storage_with_unknown_server_id_refused(clusters, tracker):
    """Our storage whose storage.conf names `server_id = 100099`, an id storage_ids.conf
    does not have: it never goes ACTIVE; it gives up saying why (the C storage exits:
    "server_id ... is invalid") or the tracker logs a refusal naming 100099."""
    c = unlisted_cluster(clusters, tracker, "bogus-id")
    bogus = str(FIRST_STORAGE_ID + 98)
    rogue = c.add_storage(listed=False, start=False, server_id=bogus)
    assert "server_id = %s" % bogus in rogue.conf.read_text()
    assert bogus not in c.storage_ids_file.read_text()
    c.stopped.add(id(rogue.daemon))
    rogue.daemon.start()
    wait_for(lambda: c.check_alive() or not rogue.daemon.alive() or any(
        bogus in ln and REFUSAL.search(ln) for ln in tracker_log(c).splitlines()),
        60, 0.2, "storage with server_id %s to exit or be refused" % bogus)
    if not rogue.daemon.alive():
        assert bogus in storage_log(rogue) or REFUSAL.search(storage_log(rogue)), \
            rogue.daemon.logs()
    refused_unless_listed(c, rogue, c.nodes[0],
                          None if not rogue.daemon.alive()
                          else (lambda ln: bogus in ln and REFUSAL.search(ln)))


def raw_join(tracker_addr, bind_ip, group, port, storage_id=""):
    """81 STORAGE_JOIN (6.13+ fixed part, 145 bytes, + one tracker line) from a socket
    bound to bind_ip -> status."""
    tracker_line = ("%s:%d\n" % tracker_addr).encode()
    now = int(time.time())
    body = (group.encode().ljust(17, b"\0")
            + struct.pack(">qqqqqq", port, 1, 16, 10, now, now)
            + b"6.16.1".ljust(8, b"\0")
            + bytes([1, 0])                              # init_flag, status INIT
            + storage_id.encode().ljust(16, b"\0")
            + bind_ip.encode().ljust(46, b"\0")
            + struct.pack(">q", 1) + tracker_line)
    assert len(body) == 145 + len(tracker_line)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        sock.bind((bind_ip, 0))
        sock.connect(tracker_addr)
        sock.sendall(wire.header(len(body), 81) + body)
        hdr = b""
        while len(hdr) < 10:
            chunk = sock.recv(10 - len(hdr))
            if not chunk:
                return "closed"
            hdr += chunk
        _, cmd, st = wire.HEADER.unpack(hdr)
    finally:
        sock.close()
    return st


@pytest.mark.timeout(120)
@pytest.mark.parametrize("tracker", ["rust", "c"])
def test_join_refused_for_unknown_ip_or_id(clusters, tracker):
    """81 JOIN over a raw socket: from an ip:port not in storage_ids.conf, ENOENT and a
    log line naming the ip (C: "get storage id info fail, group_name: group1, storage
    ip: X"); naming an id not in it (trust_storage_server_id), ENOENT and a line naming
    the id (C: "get storage id info fail, storage id: 100099").  Neither is listed."""
    c = unlisted_cluster(clusters, tracker, "rawjoin")
    listed = c.nodes[0]
    ip, port = pick_addr()
    assert ip not in c.storage_ids_file.read_text()
    st = raw_join(c.tracker_addr, ip, "group1", listed.port)
    assert st == ENOENT, "JOIN from unlisted %s:%d -> %s, C answers ENOENT" % (ip, listed.port, st)
    wait_for(lambda: [ln for ln in tracker_log(c).splitlines()
                      if ip in ln and REFUSAL.search(ln)], 30, 0.2,
             "tracker log line naming %s" % ip)
    bogus = str(FIRST_STORAGE_ID + 98)
    st = raw_join(c.tracker_addr, ip, "group1", listed.port, storage_id=bogus)
    assert st == ENOENT, "JOIN with unknown id %s -> %s, C answers ENOENT" % (bogus, st)
    wait_for(lambda: [ln for ln in tracker_log(c).splitlines()
                      if bogus in ln and REFUSAL.search(ln)], 30, 0.2,
             "tracker log line naming id %s" % bogus)
    recs = c.list_storages()
    assert [(r["id"], r["status"]) for r in recs] == [(listed.storage_id, STATUS_ACTIVE)], recs
