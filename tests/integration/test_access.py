"""Access control: `allow_hosts` as upstream."""

import signal
import socket
import struct

import fdfs_wire as wire
from conftest import pick_addr, refused_startup, start_cluster, stop_cluster


def stranger(c):
    """A loopback address that is none of the cluster's, nor 127.0.0.1."""
    return next(ip for ip in (pick_addr()[0] for _ in range(100))
                if ip not in (c.storage_ip, c.tracker_ip, "127.0.0.1"))


def answered(addr, source_ip):
    """Sends an active test from `source_ip`: True if answered, False if hung up on."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.bind((source_ip, 0))
        s.connect(addr)
        try:
            s.sendall(wire.header(0, 111))
            return len(s.recv(10)) == 10
        except (ConnectionResetError, BrokenPipeError):
            return False
    finally:
        s.close()


def test_tracker_allow_hosts(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "allow", store_paths=1)
    try:
        # Any loopback address that is none of the allowed ones below.
        stranger_ip = stranger(c)
        assert answered(c.tracker_addr, stranger_ip)
        # Only the storage and this test's own 127.0.0.1 may talk to the tracker now.
        with open(c.tracker_conf, "a") as f:
            f.write("allow_hosts = %s\nallow_hosts = 127.0.0.1/32\n" % c.storage_ip)
        c.tracker.proc.send_signal(signal.SIGTERM)
        assert c.tracker.proc.wait(10) == 0
        c.tracker.stderr_fh.close()
        c.tracker.start()
        c.wait_ready()  # the storage re-joined from its allowed address
        assert answered(c.tracker_addr, "127.0.0.1")
        assert not answered(c.tracker_addr, stranger_ip)
        assert "not in allow_hosts" in c.tracker.logs()
    finally:
        stop_cluster(c)


def test_bad_allow_hosts_stops_startup(tmp_path):
    err = refused_startup("fdfs_trackerd", "base_path = %s\nallow_hosts = 10.0.0.[9-1]\n" % tmp_path,
                          tmp_path)
    assert "allow_hosts" in err and ":2" in err, err


def test_bad_storage_access_settings_stop_startup(tmp_path):
    base = "group_name = group1\nbase_path = %s\ntracker_server = 127.0.0.1:22122\n" % tmp_path
    for line in ("modify_allow_hosts = 10.0.0.[9-1]", "allow_hosts = not-an-address",
                 "cluster_secret = short"):
        err = refused_startup("fdfs_storaged", base + line + "\n", tmp_path)
        assert line.split()[0] in err and ":4" in err, err


def request_from(addr, source_ip, cmd, body):
    """One request sent from `source_ip` -> status, or None if the server hung up."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.bind((source_ip, 0))
        s.connect(addr)
        s.sendall(wire.header(len(body), cmd) + body)
        reply = b""
        while len(reply) < 10:
            chunk = s.recv(10 - len(reply))
            if not chunk:
                return None
            reply += chunk
        return reply[9]
    except (ConnectionResetError, BrokenPipeError):
        return None
    finally:
        s.close()


def test_storage_allow_hosts(tmp_path_factory):
    # Set before the cluster starts: the tracker and this test's 127.0.0.1 are allowed.
    c = start_cluster(tmp_path_factory, "st_allow", store_paths=1,
                      storage_extra="allow_hosts = 127.0.0.1\n")
    try:
        stranger_ip = stranger(c)
        assert answered(c.storage_addr, "127.0.0.1")
        assert not answered(c.storage_addr, stranger_ip)
        st, fid = wire.upload(c.storage_addr, b"allowed", ext="txt")
        assert st == 0
        assert "not in allow_hosts" in c.storage.logs()
    finally:
        stop_cluster(c)


def test_modify_allow_hosts_guards_delete_and_changes(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "modify_allow", store_paths=1,
                      storage_extra="modify_allow_hosts = 127.0.0.1\n")
    try:
        stranger_ip = stranger(c)
        data = b"keep me"
        st, fid = wire.upload(c.storage_addr, data, ext="txt")
        assert st == 0
        group, _, remote = fid.partition("/")
        target = wire.group_field(group) + remote.encode()
        # Uploads and reads stay open to everyone; delete and metadata changes do not.
        body = wire.upload_body(b"from a stranger", "txt")
        assert request_from(c.storage_addr, stranger_ip, wire.S_UPLOAD, body) == 0
        assert request_from(c.storage_addr, stranger_ip, wire.S_DELETE, target) == 13
        meta = b"k\x02v"
        set_meta = struct.pack(">QQ", len(remote), len(meta)) + b"O" + target + meta
        assert request_from(c.storage_addr, stranger_ip, wire.S_SET_META, set_meta) == 13
        assert wire.download(c.storage_addr, fid) == (0, data)
        assert "modify_allow_hosts" in c.storage.logs()
        # From an allowed address the delete goes through.
        assert request_from(c.storage_addr, "127.0.0.1", wire.S_DELETE, target) == 0
        assert wire.download(c.storage_addr, fid)[0] == 2
    finally:
        stop_cluster(c)
