"""Daemon life cycle: graceful SIGTERM, restart with data kept, storage
re-joining a restarted tracker."""

import signal
import subprocess

import fdfs_wire as wire
from conftest import start_cluster, stop_cluster
from fdfs_helpers import payload, wait_for


def test_sigterm_restart_keeps_files(tmp_path_factory):
    c = start_cluster(tmp_path_factory, "lifecycle", store_paths=1)
    try:
        data = payload(100_000, 1)
        st, fid = wire.upload(c.storage_addr, data, ext="keep")
        assert st == 0
        assert wire.set_meta(c.storage_addr, fid, {"k": "v"}) == 0

        # graceful stop: SIGTERM => exit 0 well within the grace period
        for d in (c.storage, c.tracker):
            d.proc.send_signal(signal.SIGTERM)
            try:
                rc = d.proc.wait(10)
            except subprocess.TimeoutExpired:
                raise AssertionError("%s ignored SIGTERM for 10s\n%s" % (d.name, d.logs()))
            assert rc == 0, "%s exited %d on SIGTERM\n%s" % (d.name, rc, d.logs())
            d.stderr_fh.close()

        # restart both (same addresses, same base paths)
        c.tracker.start()
        wait_for(lambda: c._connectable(c.tracker_addr), 15, what="tracker port")
        # tracker alone: no writable storage => 101 answers ENOENT, never a dead address
        st, _ = wire.query_store(c.tracker_addr)
        assert st == wire.ENOENT, "101 with no storage: want ENOENT, got %d" % st
        c.tracker.proc.send_signal(signal.SIGTERM)
        assert c.tracker.proc.wait(10) == 0
        c.tracker.stderr_fh.close()
        c.tracker.start()
        c.storage.start()
        c.wait_ready()
        assert wire.download(c.storage_addr, fid) == (0, data)
        assert wire.get_meta(c.storage_addr, fid) == (0, {"k": "v"})
        st, fid2 = wire.upload(c.storage_addr, b"after restart", ext="txt")
        assert st == 0 and fid2 != fid

        # tracker restart alone: the storage must re-join by itself
        c.tracker.proc.send_signal(signal.SIGTERM)
        assert c.tracker.proc.wait(10) == 0
        c.tracker.stderr_fh.close()
        c.tracker.start()
        c.wait_ready()
        st, info = wire.query_fetch(c.tracker_addr, "group1", fid.partition("/")[2])
        assert st == 0 and (info["ip"], info["port"]) == c.storage_addr
        # storage stops: the tracker marks it OFFLINE (5) and stops handing it out
        c.storage.proc.send_signal(signal.SIGTERM)
        assert c.storage.proc.wait(10) == 0
        c.storage.stderr_fh.close()
        wait_for(lambda: wire.query_store(c.tracker_addr)[0] == wire.ENOENT, 15,
                 what="101 -> ENOENT after the only storage stopped")
        st, body = wire.Conn(c.tracker_addr).request(wire.T_LIST_STORAGE, wire.group_field("group1"))
        assert st == 0 and body[0] == 5, "storage status after stop: %r" % (body[:1],)
    finally:
        stop_cluster(c)


def test_storage_waits_for_tracker(tmp_path_factory):
    """Storage started while its tracker is down joins once the tracker appears."""
    c = start_cluster(tmp_path_factory, "latejoin", store_paths=1)
    try:
        c.tracker.proc.send_signal(signal.SIGTERM)
        c.tracker.proc.wait(10)
        c.tracker.stderr_fh.close()
        c.storage.proc.send_signal(signal.SIGTERM)
        c.storage.proc.wait(10)
        c.storage.stderr_fh.close()
        c.storage.start()
        wait_for(lambda: c._connectable(c.storage_addr), 15, what="storage port")
        c.tracker.start()
        c.wait_ready()
    finally:
        stop_cluster(c)


def test_sigterm_lets_upload_in_flight_finish(tmp_path_factory):
    """A graceful stop accepts no new connection but finishes the request it is serving."""
    c = start_cluster(tmp_path_factory, "drain", store_paths=1)
    try:
        data = payload(2_000_000, 7)
        body = wire.upload_body(data, "bin")
        conn = wire.Conn(c.storage_addr, timeout=30)
        # The connection is being served (accepted, its handler running).
        assert conn.request(111) == (0, b"")
        conn.send(wire.header(len(body), wire.S_UPLOAD) + body[: len(body) // 2])
        # The storage is now inside the upload; ask it to stop.
        c.storage.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: not c._connectable(c.storage_addr), 15,
                 what="storage to stop accepting connections")
        assert c.storage.alive(), "storage exited with an upload in flight"
        conn.send(body[len(body) // 2:])
        st, reply = conn.response()
        conn.close()
        assert st == 0, "upload in flight answered %d during shutdown" % st
        fid = reply[:16].rstrip(b"\0").decode() + "/" + reply[16:].decode()
        assert c.storage.proc.wait(20) == 0
        c.storage.stderr_fh.close()
        c.storage.start()
        c.wait_ready()
        assert wire.download(c.storage_addr, fid) == (0, data)
    finally:
        stop_cluster(c)


def _peak_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM for pid %d" % pid)


def test_large_file_streams_with_flat_memory(tmp_path_factory, tmp_path):
    """A 256 MiB upload and download through our tools: the storage never holds the file,
    its peak RSS stays far below the file size."""
    import zlib
    from conftest import require_binary

    c = start_cluster(tmp_path_factory, "bigfile", store_paths=1)
    try:
        src = tmp_path / "big.bin"
        crc = 0
        chunk = payload(1 << 20, 11)
        with open(src, "wb") as f:
            for i in range(256):
                block = chunk[i:] + chunk[:i]
                crc = zlib.crc32(block, crc)
                f.write(block)
        up = subprocess.run([str(require_binary("fdfs_upload_file")), str(c.client_conf), str(src)],
                            capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stderr
        fid = up.stdout.strip()
        st, info = wire.query_file_info(c.storage_addr, fid)
        assert st == 0 and info["size"] == 256 << 20 and info["crc32"] == crc, info
        dst = tmp_path / "back.bin"
        down = subprocess.run([str(require_binary("fdfs_download_file")), str(c.client_conf), fid,
                               str(dst)], capture_output=True, text=True, timeout=300)
        assert down.returncode == 0, down.stderr
        got = 0
        with open(dst, "rb") as f:
            while True:
                block = f.read(1 << 20)
                if not block:
                    break
                got = zlib.crc32(block, got)
        assert got == crc and dst.stat().st_size == 256 << 20
        peak = _peak_rss_kib(c.storage.proc.pid)
        print("storage peak RSS %d KiB after a 256 MiB upload and download" % peak)
        assert peak < 64 * 1024, "storage peak RSS %d KiB for a 256 MiB file" % peak
    finally:
        stop_cluster(c)


def _is_zombie(pid):
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


def test_killed_daemon_restarts_while_still_a_zombie(tmp_path_factory):
    """A daemon killed with -9 and not reaped (no init that reaps, as in some
    containers) must not block `start`: the pid file is trusted only while locked."""
    c = start_cluster(tmp_path_factory, "zombie", store_paths=1)
    try:
        old = c.tracker.proc
        old.send_signal(signal.SIGKILL)
        wait_for(lambda: _is_zombie(old.pid), 10, what="killed tracker is a zombie")
        pid_file = c.tracker_base / "data" / "fdfs_trackerd.pid"
        assert pid_file.read_text().strip() == str(old.pid), "the stale pid file is still there"
        c.tracker.stderr_fh.close()
        c.tracker.start()          # while the old process is still unreaped
        c.wait_ready()
        assert _is_zombie(old.pid)
        assert pid_file.read_text().strip() == str(c.tracker.proc.pid)
        # `stop` finds the new instance and waits for it, not for the zombie.
        r = subprocess.run([str(c.tracker.exe), str(c.tracker_conf), "stop"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert c.tracker.proc.wait(10) == 0
        c.tracker.stderr_fh.close()
        old.wait()
        c.tracker.start()
        c.wait_ready()
    finally:
        stop_cluster(c)
