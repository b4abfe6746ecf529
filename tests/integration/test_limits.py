"""Resource limits: thousands of idle connections never lock new clients out, and a
client that stalls mid-request is dropped after `network_timeout`."""

import resource
import socket
import time

import fdfs_wire as wire
from conftest import start_cluster, stop_cluster
from fdfs_helpers import payload, snapshot_tree

IDLE = 5000


def open_idle(addr, n):
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(addr)
        socks.append(s)
    return socks


def test_idle_connections_do_not_stop_new_clients(tmp_path_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * IDLE + 500
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    c = start_cluster(tmp_path_factory, "idle", store_paths=1,
                      storage_extra="max_connections = 256\n",
                      tracker_extra="max_connections = 256\n")
    idle = []
    try:
        idle += open_idle(c.storage_addr, IDLE)
        idle += open_idle(c.tracker_addr, IDLE)
        # Every one of them was accepted (none is refused), and new clients are served.
        for i in range(20):
            data = payload(1000 + i, i)
            st, target = wire.query_store(c.tracker_addr, timeout=30)
            assert st == 0, "query store: errno %d" % st
            st, fid = wire.upload((target["ip"], target["port"]), data, ext="bin",
                                  spi=target["spi"], timeout=30)
            assert st == 0, "upload: errno %d" % st
            assert wire.download(c.storage_addr, fid, timeout=30) == (0, data)
        assert "closing idle connections" in c.storage.logs()
        assert "closing idle connections" in c.tracker.logs()
        # The storage's own link to the tracker was never taken for an idle client.
        assert "disconnected" not in c.tracker.logs()
        assert c.storage_status(c.nodes[0]) == 7
        c.check_alive()
    finally:
        for s in idle:
            s.close()
        stop_cluster(c)


def stalled_dropped(addr, first_bytes, timeout):
    """Sends `first_bytes` and stalls: -> seconds until the server hung up."""
    with wire.Conn(addr, 10) as conn:
        start = time.monotonic()
        conn.send(first_bytes)
        data, closed = conn.read_until_closed(timeout)
        assert closed, "still connected after %d s" % timeout
        return time.monotonic() - start, data


def test_stalled_clients_are_dropped_after_network_timeout(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "stall", store_paths=1,
                      storage_extra="network_timeout = 2\n",
                      tracker_extra="network_timeout = 2\n")
    try:
        for addr in (c.storage_addr, c.tracker_addr):
            took, data = stalled_dropped(addr, wire.header(0, 111)[:5], 30)
            assert 1.5 <= took < 20, took
            assert data == b""
        # An upload that stops after its first bytes: dropped, nothing left behind.
        before = snapshot_tree(c.store_paths[0] / "data")
        body = wire.upload_body(b"x" * (1 << 20), "bin")
        took, _ = stalled_dropped(c.storage_addr,
                                  wire.header(len(body), wire.S_UPLOAD) + body[:4096], 30)
        assert 1.5 <= took < 20, took
        assert snapshot_tree(c.store_paths[0] / "data") == before
        # The daemons serve on.
        st, fid = wire.upload(c.storage_addr, b"after the stall", ext="txt")
        assert st == 0 and wire.download(c.storage_addr, fid) == (0, b"after the stall")
        assert wire.query_store(c.tracker_addr)[0] == 0
        c.check_alive()
    finally:
        stop_cluster(c)
