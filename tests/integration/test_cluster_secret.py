"""The optional `cluster_secret`: trackers and storages prove it to each other before a
storage may join, report or replicate. A storage without it, or with another one, is
refused and receives nothing; clients need no secret."""

import hashlib
import hmac
import os
import struct

import fdfs_wire as wire
from fdfs_wire import leader_of
from conftest import refused_startup, start_cluster, stop_cluster
from fdfs_helpers import payload, snapshot_tree, wait_for

SECRET = "correct horse battery staple 42"
CLUSTER_AUTH = 200
SYNC_CREATE_FILE = 16
REPORT_SERVER_ID = 9
EACCES = 13
ACTIVE_TEST = 111


def stored_files(node):
    return [p for path in node.store_paths for p in snapshot_tree(path / "data")
            if not os.path.basename(p).startswith(".")]


def test_only_storages_that_know_the_secret_join_and_replicate(tmp_path_factory):
    line = "cluster_secret = %s\n" % SECRET
    c = start_cluster(tmp_path_factory, "secret", storages=2, store_paths=1, trackers=2,
                      storage_extra=line, tracker_extra=line)
    try:
        good, peer = c.nodes
        c.wait_active(peer)
        # The two trackers prove the secret to each other and agree on a leader.
        wait_for(lambda: len({leader_of(a) for a in c.tracker_addrs} - {None}) == 1
                 and None not in {leader_of(a) for a in c.tracker_addrs}, 30,
                 what="one agreed tracker leader")
        rogue = c.add_storage(extra="cluster_secret = a different secret of length\n")
        stranger = c.add_storage(extra="cluster_secret =\n")
        wait_for(lambda: "does not know our cluster_secret" in rogue.daemon.logs(), 30,
                 what="the rogue storage noticing the tracker does not share its secret")
        wait_for(lambda: "cluster_secret not proven" in c.tracker.logs(), 30,
                 what="the tracker refusing a storage without a secret")

        # Clients need no secret; replication between the two members works.
        files = {}
        for i in range(10):
            data = payload(3000 + i, i)
            st, fid = wire.upload(good.addr, data, ext="bin")
            assert st == 0
            files[fid] = data
        for fid, data in files.items():
            wait_for(lambda: wire.download(peer.addr, fid) == (0, data), 30,
                     what="%s replicated to the peer" % fid)

        listed = {s["ip"] for s in c.list_storages()}
        assert good.ip in listed and peer.ip in listed
        assert rogue.ip not in listed and stranger.ip not in listed, listed
        for outsider in (rogue, stranger):
            assert outsider.daemon.alive(), outsider.daemon.logs()
            assert stored_files(outsider) == [], outsider.daemon.logs()
    finally:
        stop_cluster(c)


def test_replication_commands_need_the_handshake(tmp_path_factory):
    line = "cluster_secret = %s\n" % SECRET
    c = start_cluster(tmp_path_factory, "secret_raw", store_paths=1,
                      storage_extra=line, tracker_extra=line)
    try:
        before = stored_files(c.nodes[0])
        # A sync create without the handshake: refused, connection closed, nothing stored.
        name = b"M00/00/00/fwAAAWdJ9n-ARxyzAAAABQAAAAA123.txt"
        body = struct.pack(">qq", len(name), 5) + struct.pack(">i", 0) + \
            wire.group_field("group1") + name + b"hello"
        with wire.Conn(c.storage_addr, 10) as conn:
            assert conn.request(SYNC_CREATE_FILE, body)[0] == EACCES
            _, closed = conn.read_until_closed(10)
            assert closed
        with wire.Conn(c.storage_addr, 10) as conn:
            assert conn.request(REPORT_SERVER_ID, b"127.0.0.9".ljust(16, b"\0"))[0] == EACCES
        # A forged proof is refused too.
        with wire.Conn(c.storage_addr, 10) as conn:
            a = os.urandom(16)
            st, challenge = conn.request(CLUSTER_AUTH, a, status=0)
            assert st == 0 and len(challenge) == 48
            b = challenge[:16]
            want = hmac.new(SECRET.encode(), b"fdfs-cluster-responder" + a + b,
                            hashlib.sha256).digest()
            assert challenge[16:] == want, "the storage proves it knows the secret"
            forged = hmac.new(b"guess", b"fdfs-cluster-initiator" + a + b,
                              hashlib.sha256).digest()
            assert conn.request(CLUSTER_AUTH, forged, status=1)[0] == EACCES
        # With the right proof, the same connection may replicate.
        with wire.Conn(c.storage_addr, 10) as conn:
            a = os.urandom(16)
            st, challenge = conn.request(CLUSTER_AUTH, a, status=0)
            b = challenge[:16]
            proof = hmac.new(SECRET.encode(), b"fdfs-cluster-initiator" + a + b,
                             hashlib.sha256).digest()
            assert conn.request(CLUSTER_AUTH, proof, status=1) == (0, b"")
            assert conn.request(ACTIVE_TEST)[0] == 0
        assert stored_files(c.nodes[0]) == before
        # Tracker: a storage command without the handshake is refused.
        with wire.Conn(c.tracker_addr, 10) as conn:
            assert conn.request(wire.T_STORAGE_BEAT)[0] == EACCES
        # Clients are unaffected.
        st, fid = wire.upload(c.storage_addr, b"client data", ext="txt")
        assert st == 0 and wire.download(c.storage_addr, fid) == (0, b"client data")
        assert wire.query_store(c.tracker_addr)[0] == 0
    finally:
        stop_cluster(c)


def test_a_short_secret_stops_startup(tmp_path):
    err = refused_startup("fdfs_trackerd", "base_path = %s\ncluster_secret = short\n" % tmp_path,
                          tmp_path)
    assert "cluster_secret" in err and ":2" in err, err
