"""Metrics served by the daemons themselves (`metrics_listen`).

- After a known sequence of uploads, downloads, deletes and their replication, the
  request counters and latency histograms of both storages hold exactly those counts,
  and the tracker's storage counters (from the heartbeats) agree.
- The stock `fdfs_exporter` of C FastDFS 6.16, run against our tracker, emits no metric
  name that our tracker's own /metrics lacks, with the same labels and values.
- A scrape during heavy load answers within 100 ms; /healthz and /readyz; an address
  outside allow_hosts gets nothing.
"""

import os
import subprocess
import threading

import pytest

import fdfs_wire as wire
from conftest import BIN_DIR, pick_addr, stop_cluster
from fdfs_helpers import wait_for
from interop import c_bin
from metrics_helpers import Metrics, get, scrape, with_metrics

UPLOADS, DOWNLOADS, DELETES = 5, 3, 2


@pytest.fixture(scope="module")
def metered(tmp_path_factory):
    c, web = with_metrics(tmp_path_factory, "metrics", storages=2, store_paths=1)
    yield c, web
    stop_cluster(c)


def requests(m, command, result="ok"):
    return m.value("fastdfs_requests_total", command=command, result=result)


def latency_count(m, command):
    return m.value("fastdfs_request_duration_seconds_count", command=command)


def test_known_sequence_counted_exactly(metered):
    c, web = metered
    a, b = c.nodes
    a_web, b_web = web["storage0"], web["storage1"]
    a0, b0 = scrape(a_web), scrape(b_web)

    blobs = [os.urandom(1000 + i) for i in range(UPLOADS)]
    ids = []
    for data in blobs:
        st, fid = wire.upload(a.addr, data)
        assert st == 0
        ids.append(fid)
    # Every copy reached the peer before anything is deleted (a copy of a file already
    # gone would be skipped, not sent).
    wait_for(lambda: requests(scrape(b_web), "sync_create_file") - requests(b0, "sync_create_file")
             == UPLOADS, 30, what="the copies at the peer")
    for fid in ids[:DOWNLOADS]:
        st, body = wire.download(a.addr, fid)
        assert st == 0
    missing = ids[0].rsplit("/", 1)[0] + "/" + "A" * 27 + ".bin"
    assert wire.download(a.addr, missing)[0] == 2
    for fid in ids[:DELETES]:
        assert wire.delete(a.addr, fid) == 0
    wait_for(lambda: requests(scrape(b_web), "sync_delete_file") - requests(b0, "sync_delete_file")
             == DELETES, 30, what="the deletes at the peer")

    a1, b1 = scrape(a_web), scrape(b_web)
    assert a1.types["fastdfs_requests_total"] == "counter"
    assert a1.types["fastdfs_request_duration_seconds"] == "histogram"
    delta = {
        ("upload_file", "ok"): UPLOADS,
        ("download_file", "ok"): DOWNLOADS,
        ("download_file", "ENOENT"): 1,
        ("delete_file", "ok"): DELETES,
    }
    for (command, result), n in delta.items():
        assert requests(a1, command, result) - requests(a0, command, result) == n, (command, result)
    for command, n in [("upload_file", UPLOADS), ("download_file", DOWNLOADS + 1),
                       ("delete_file", DELETES)]:
        assert latency_count(a1, command) - latency_count(a0, command) == n, command
        inf = a1.value("fastdfs_request_duration_seconds_bucket", command=command, le="+Inf")
        assert inf == latency_count(a1, command)
    # Nothing of it was done at the peer but the copies.
    for command in ["upload_file", "download_file", "delete_file"]:
        assert latency_count(b1, command) == latency_count(b0, command)
    assert requests(b1, "sync_create_file") - requests(b0, "sync_create_file") == UPLOADS
    assert requests(b1, "sync_delete_file") - requests(b0, "sync_delete_file") == DELETES
    assert latency_count(b1, "sync_create_file") - latency_count(b0, "sync_create_file") == UPLOADS

    # Bytes moved, both ways, and the replication caught up.
    sizes = sum(len(x) for x in blobs)
    kind = "fastdfs_transfer_bytes_total"
    assert a1.value(kind, kind="upload") - a0.value(kind, kind="upload") == sizes
    assert a1.value(kind, kind="download") - a0.value(kind, kind="download") == \
        sum(len(x) for x in blobs[:DOWNLOADS])
    assert b1.value(kind, kind="sync_in") - b0.value(kind, kind="sync_in") == sizes

    def caught_up():
        m = scrape(a_web)
        peer = dict(peer_id=b.ip)
        return (m.value("fastdfs_replication_backlog_bytes", **peer) == 0
                and m.value("fastdfs_replication_lag_seconds", **peer) == 0
                and m.value("fastdfs_replication_peer_status", **peer) == 7)
    wait_for(caught_up, 30, what="no replication backlog towards the peer")
    assert a1.value("fastdfs_store_path_failed", path="0") == 0
    assert a1.value("fastdfs_store_path_total_bytes", path="0") > 0

    # The tracker's view, from the heartbeats (stat_report_interval = 1).
    t_web = web["tracker"]

    def tracker_counts():
        m = scrape(t_web)
        s = dict(storage_id=a.ip)
        return (m.value("fastdfs_storage_upload_success", **s) == UPLOADS
                and m.value("fastdfs_storage_download_success", **s) == DOWNLOADS
                and m.value("fastdfs_storage_delete_success", **s) == DELETES
                and m.value("fastdfs_storage_upload_bytes_total", **s) == sizes
                and m)
    t = wait_for(tracker_counts, 30, what="the tracker's counters of the storage")
    assert t.types["fastdfs_storage_upload_total"] == "counter"
    assert t.types["fastdfs_storage_upload_success"] == "counter"
    assert t.types["fastdfs_storage_free_mb"] == "gauge"
    assert t.value("fastdfs_group_active_count", group=c.group) == 2
    assert t.value("fastdfs_tracker_is_leader", host="%s:%d" % c.tracker_addr) == 1


def test_stock_exporter_names_all_present(metered, tmp_path):
    """The real fdfs_exporter against our tracker: every name it emits, ours has, with
    the same label names and, for what cannot move meanwhile, the same values."""
    c, web = metered
    exporter = c_bin("fdfs_exporter")
    ip, port = pick_addr()
    # Its -B option frees memory it does not own (6.16 aborts); the config file works.
    conf = tmp_path / "exporter.conf"
    conf.write_text("bind_addr = %s\nport = %d\nfdfs_client_cfg = %s\ndaemon = false\n"
                    "[auth]\nmethod = none\n" % (ip, port, c.client_conf))
    proc = subprocess.Popen([str(exporter), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=str(tmp_path))
    try:
        def exported():
            status, body, _ = get((ip, port))
            return status == 200 and "fastdfs_storage_upload_total" in body and body
        stock = Metrics(wait_for(exported, 30, what="fdfs_exporter's first scrape"))
    finally:
        proc.terminate()
        proc.wait(10)
    ours = scrape(web["tracker"])
    assert len(stock.names()) >= 30
    missing = stock.names() - ours.names()
    assert not missing, "names fdfs_exporter has and we lack: %s" % sorted(missing)
    for (name, labels), value in stock.samples.items():
        same = ours.all(name)
        assert {k for k, _ in labels} in [{k for k, _ in ls} for ls in same], name
        if name.endswith(("_mb", "_count")) or "success" in name or "is_leader" in name:
            assert same.get(labels) == value, (name, labels, value, same)


def test_scrape_under_load_is_fast(metered):
    c, web = metered
    bench = BIN_DIR / "fdfs_bench"
    if not bench.exists():
        pytest.skip("fdfs_bench not built")
    load = subprocess.Popen([str(bench), "--tracker", "%s:%d" % c.tracker_addr, "--mode", "mixed",
                             "--threads", "16", "--seconds", "120", "--size", "4096"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        a_web = web["storage0"]
        wait_for(lambda: requests(scrape(a_web), "download_file") > 50, 20,
                 what="the load to reach the storage")
        times = []
        for _ in range(10):
            for addr in (web["storage0"], web["storage1"], web["tracker"]):
                status, _, took = get(addr)
                assert status == 200
                times.append(took)
        assert load.poll() is None, "the load ended before the scrapes did"
        assert max(times) < 0.1, "slowest scrape %.3f s of %s" % (max(times), sorted(times))
    finally:
        load.kill()
        load.wait(10)


def test_health_readiness_and_allow_list(tmp_path_factory):
    c, web = with_metrics(tmp_path_factory, "health")
    try:
        outsider, _ = pick_addr()
        for name in ("tracker", "storage0"):
            assert get(web[name], "/healthz")[0] == 200
            wait_for(lambda n=name: get(web[n], "/readyz")[0] == 200, 30, what=name + " ready")
            assert get(web[name], "/nope")[0] == 404
        # Only the cluster's addresses and 127.0.0.1 may connect from now on.
        allowed = "allow_hosts = 127.0.0.1\n" + "".join(
            "allow_hosts = %s\n" % ip for ip in [c.tracker_ip] + [n.ip for n in c.nodes])
        with open(c.tracker_conf, "a") as f:
            f.write(allowed)
        c.tracker.stop()
        c.tracker.start()
        wait_for(lambda: get(web["tracker"], "/healthz")[0] == 200, 30, what="tracker back")
        status, body, _ = get(web["tracker"], "/metrics", source=outsider)
        assert (status, body) == (403, "")
        assert get(web["tracker"], "/", source=outsider)[:2] == (403, "")
        assert get(web["tracker"], "/metrics")[0] == 200
    finally:
        stop_cluster(c)


def test_taken_metrics_address_stops_the_start(tmp_path):
    """A metrics address that cannot be bound is a start-up error, not a silent gap."""
    import socket
    ip, port = pick_addr()
    holder = socket.socket()
    holder.bind((ip, port))
    holder.listen()
    try:
        base = tmp_path / "t"
        base.mkdir()
        t_ip, t_port = pick_addr()
        conf = tmp_path / "tracker.conf"
        conf.write_text("bind_addr = %s\nport = %d\nbase_path = %s\nmetrics_listen = %s:%d\n"
                        % (t_ip, t_port, base, ip, port))
        r = subprocess.run([str(BIN_DIR / "fdfs_trackerd"), str(conf), "start", "--foreground"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0
        assert "metrics_listen = %s:%d" % (ip, port) in r.stdout + r.stderr
    finally:
        holder.close()


def test_concurrent_scrapes(metered):
    """Many scrapers at once (Prometheus, the console, an exporter) all get answers."""
    _, web = metered
    results = []

    def one():
        for _ in range(5):
            results.append(get(web["tracker"], "/api/cluster")[0])
            results.append(get(web["storage0"])[0])
    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 80
