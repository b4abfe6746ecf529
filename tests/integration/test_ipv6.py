"""Trackers and storages on IPv6 (::1), with the official C tools and raw protocol.

A file ID has room for an IPv4 address or a server id only, so IPv6 storages need
`use_storage_id = true` and `id_type_in_filename = id` (as in FastDFS 6.16); with an IPv6
address in storage_ids.conf, `response_ip_addr_size = auto` answers with 46-byte address
fields.  All daemons share the one IPv6 loopback address, each on its own port (several
storages of one group on one host is what server ids allow).  The C daemons cannot take
part: C 6.16 refuses `::1` in storage_ids.conf and as a tracker address.
"""

import random
import socket
import struct
import subprocess

import pytest

import fdfs_wire as wire
from conftest import Daemon, READY_DEADLINE, require_binary
from fdfs_helpers import listen_port, payload, wait_for
from interop import c_bin

LOOPBACK6 = "::1"
FIRST_ID = 300001


def ipv6_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK6, 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")


def free_ports(n):
    """n distinct ports free on ::1, below the ephemeral range (fdfs_helpers.LISTEN_PORTS:
    a port the kernel hands out could be taken by an outgoing connection from ::1)."""
    rnd = random.SystemRandom()
    ports = []
    for _ in range(500):
        port = listen_port(rnd)
        if port in ports:
            continue
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                s.bind((LOOPBACK6, port))
        except OSError:
            continue
        ports.append(port)
        if len(ports) == n:
            return ports
    raise RuntimeError("no %d free ports on ::1" % n)


class V6Cluster:
    """One tracker and `storages` storages of group1, all on [::1]."""

    def __init__(self, root, storages=2, with_ids=True):
        self.root = root
        ports = free_ports(1 + storages)
        self.tracker_port, self.storage_ports = ports[0], ports[1:]
        self.ids = {port: str(FIRST_ID + i) for i, port in enumerate(self.storage_ports)}
        (root / "storage_ids.conf").write_text("".join(
            "%s group1 [%s]:%d\n" % (self.ids[p], LOOPBACK6, p) for p in self.storage_ports))
        tbase = root / "tracker"
        tbase.mkdir()
        ids_keys = ("use_storage_id = true\nstorage_ids_filename = %s\n"
                    "id_type_in_filename = id\n" % (root / "storage_ids.conf")) if with_ids else ""
        tconf = root / "tracker.conf"
        tconf.write_text(
            "bind_addr = %s\nport = %d\nbase_path = %s\nreserved_storage_space = 1%%\n"
            "check_active_interval = 30\nlog_level = info\n%s"
            % (LOOPBACK6, self.tracker_port, tbase, ids_keys))
        self.tracker = Daemon("trackerd@v6", require_binary("fdfs_trackerd"), tconf, tbase,
                              "trackerd.log")
        self.storages = []
        for port in self.storage_ports:
            base = root / ("storage%d" % port)
            base.mkdir()
            conf = root / ("storage%d.conf" % port)
            conf.write_text(
                "group_name = group1\nbind_addr = %s\nport = %d\nbase_path = %s\n"
                "store_path0 = %s\nsubdir_count_per_path = 4\nheart_beat_interval = 1\n"
                "stat_report_interval = 1\ntracker_server = [%s]:%d\nlog_level = info\n"
                % (LOOPBACK6, port, base, base, LOOPBACK6, self.tracker_port))
            self.storages.append(Daemon("storaged%d@v6" % port, require_binary("fdfs_storaged"),
                                        conf, base, "storaged.log"))
        self.client_conf = root / "client.conf"
        (root / "client").mkdir()
        self.client_conf.write_text(
            "base_path = %s\nconnect_timeout = 5\nnetwork_timeout = 20\n"
            "tracker_server = [%s]:%d\n" % (root / "client", LOOPBACK6, self.tracker_port))

    @property
    def tracker_addr(self):
        return (LOOPBACK6, self.tracker_port)

    def start(self):
        self.tracker.start()
        wait_for(lambda: self._connectable(self.tracker_addr), READY_DEADLINE,
                 what="tracker on [::1]")
        for s in self.storages:
            s.start()

    def stop(self):
        for d in [*self.storages, self.tracker]:
            d.stop()

    @staticmethod
    def _connectable(addr):
        try:
            socket.create_connection(addr, timeout=1).close()
            return True
        except OSError:
            return False

    def monitor(self):
        p = run_c("fdfs_monitor", self.client_conf)
        assert p.returncode == 0, show(p)
        return p.stdout


def run_c(tool, *args, timeout=60):
    return subprocess.run([str(c_bin(tool)), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def run_ours(tool, *args, timeout=60):
    return subprocess.run([str(require_binary(tool)), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def show(p):
    return "%s -> exit %d\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        " ".join(map(str, p.args)), p.returncode, p.stdout[-4000:], p.stderr[-3000:])


@pytest.fixture
def v6(tmp_path):
    clusters = []

    def make(**kw):
        c = V6Cluster(tmp_path, **kw)
        clusters.append(c)
        c.start()
        return c
    yield make
    for c in clusters:
        c.stop()


def test_tracker_and_storages_on_ipv6(v6, tmp_path):
    c = v6()
    hosts = ["host = [::1]:%d  ACTIVE" % p for p in c.storage_ports]
    wait_for(lambda: all(h in c.monitor() for h in hosts), READY_DEADLINE,
             what="both IPv6 storages ACTIVE")
    out = c.monitor()
    for port in c.storage_ports:
        assert "id = %s" % c.ids[port] in out, out

    # 46-byte address fields: the store query names an IPv6 storage.
    st, target = wire.query_store(c.tracker_addr)
    assert st == 0
    assert target["ip"] == LOOPBACK6 and target["port"] in c.storage_ports
    with wire.Conn(c.tracker_addr) as conn:
        st, body = conn.request(wire.T_QUERY_STORE_WITHOUT_GROUP_ONE)
    assert (st, len(body)) == (0, 70)

    # Upload with the C tool; the file ID carries the uploader's server id.
    data = payload(20000, 61)
    local = tmp_path / "up.bin"
    local.write_bytes(data)
    p = run_c("fdfs_upload_file", c.client_conf, local)
    assert p.returncode == 0, show(p)
    fid = p.stdout.strip()
    remote = fid.partition("/")[2]
    source = wire.decode_file_id(fid)["source_ip"]
    src_id = struct.unpack("<I", bytes(int(x) for x in source.split(".")))[0]
    assert str(src_id) in c.ids.values(), (fid, src_id)

    # Every storage has it (replicated between the two ports of ::1).
    def on_both():
        return all(wire.download((LOOPBACK6, port), fid) == (0, data)
                   for port in c.storage_ports)
    wait_for(on_both, 60, interval=0.2, what="the file on both IPv6 storages")

    # Reads through the tracker, with the C tools and ours.
    got = tmp_path / "c.bin"
    p = run_c("fdfs_download_file", c.client_conf, fid, got)
    assert p.returncode == 0 and got.read_bytes() == data, show(p)
    got = tmp_path / "ours.bin"
    p = run_ours("fdfs_download_file", c.client_conf, fid, got)
    assert p.returncode == 0 and got.read_bytes() == data, show(p)
    p = run_c("fdfs_file_info", c.client_conf, fid)
    assert p.returncode == 0, show(p)
    assert "source storage id: %d" % src_id in p.stdout, p.stdout
    assert "source ip address: ::1" in p.stdout, p.stdout
    assert "file size: %d" % len(data) in p.stdout, p.stdout

    # The fetch query routes the read to the source's port.
    src_port = next(port for port, i in c.ids.items() if i == str(src_id))
    with wire.Conn(c.tracker_addr) as conn:
        st, body = conn.request(wire.T_QUERY_FETCH_ONE,
                                wire.group_field("group1") + remote.encode())
    assert (st, len(body)) == (0, 69)
    assert wire.parse_fetch_reply(body)["ip"] == LOOPBACK6


def test_ipv6_storage_needs_server_ids(v6):
    c = v6(storages=1, with_ids=False)
    log = c.tracker.log_file

    def refused():
        return log.exists() and "connects over IPv6" in log.read_text(errors="replace")
    wait_for(refused, READY_DEADLINE, what="the tracker refusing an IPv6 storage")
    st, _ = wire.query_store(c.tracker_addr)
    assert st != 0, "an IPv6 storage without server ids must not take uploads"
