"""The tracker's web console in a real browser (headless chromium): a six-node cluster
(two trackers, two groups of two storages) seen at a glance, a stopped storage shown
OFFLINE within seconds without a reload, the page of one storage. A screenshot of each
page is kept in target/test-artifacts/."""

import json
import subprocess
import threading
import time

import pytest

import fdfs_wire as wire

from browser import Browser
from conftest import REPO, require_binary, stop_cluster
from fdfs_helpers import wait_for
from metrics_helpers import with_metrics

ARTIFACTS = REPO / "target" / "test-artifacts"
ROWS = ("JSON.stringify([...document.querySelectorAll('tr[data-storage-id]')]"
        ".map(r => [r.dataset.storageId, r.dataset.status]))")


@pytest.fixture(scope="module")
def six(tmp_path_factory):
    c, web = with_metrics(tmp_path_factory, "console", trackers=2, groups=["group1", "group2"],
                          storages=2, store_paths=1)
    yield c, web
    stop_cluster(c)


@pytest.fixture
def browser():
    b = Browser()
    yield b
    b.close()


def run_tool(name, *args):
    subprocess.run([str(require_binary(name)), *args], check=True, capture_output=True,
                   timeout=30)


def rows(browser):
    return dict(json.loads(browser.eval(ROWS)))


def test_cluster_at_a_glance_and_a_storage_going_offline(six, browser):
    c, web = six
    url = "http://%s:%d/" % web["tracker"]
    browser.goto(url)
    ids = {n.ip for n in c.nodes}
    wait_for(lambda: rows(browser) == {i: "ACTIVE" for i in ids}, 30,
             what="every storage ACTIVE on the page")
    trackers = browser.eval("[...document.querySelectorAll('#trackers li')].map(l => l.textContent)")
    assert len(trackers) == 2
    assert sum("(leader)" in t for t in trackers) == 1, trackers
    assert browser.eval("document.querySelector('#problems .problem').textContent") == "No problems."
    assert browser.eval("document.getElementById('storage-count').textContent") == "4 of 4 active"
    groups = browser.eval("[...document.querySelectorAll('h2[data-group]')].map(h => h.dataset.group)")
    assert groups == ["group1", "group2"]
    # The charts follow the traffic: uploads through the tracker show up as store
    # queries per second at this tracker, then as uploads in the storages' reports.
    def last(chart):
        text = browser.eval("document.getElementById('%s').dataset.last || '{}'" % chart)
        return json.loads(text)
    client = c.client_conf
    stop = threading.Event()

    def upload_loop():
        while not stop.is_set():
            # A client of this tracker asks it where to store, then uploads there.
            st, info = wire.query_store(c.tracker_addr)
            assert st == 0
            run_tool("fdfs_upload_file", client, str(c.client_conf))
    uploader = threading.Thread(target=upload_loop)
    uploader.start()
    try:
        wait_for(lambda: (last("chart-requests").get("store queries") or 0) > 0, 30,
                 what="store queries charted")
        wait_for(lambda: (last("chart-ops").get("uploads") or 0) > 0, 30,
                 what="uploads charted")
        wait_for(lambda: (last("chart-latency").get("p99") or 0) > 0, 30,
                 what="latency charted")
        wait_for(lambda: (last("chart-storage-latency").get("upload p99") or 0) > 0, 30,
                 what="the storages' upload latency charted")
    finally:
        stop.set()
        uploader.join(60)
    browser.screenshot(ARTIFACTS / "console-cluster.png")

    # The page keeps this marker for as long as it is not reloaded.
    browser.eval("window.__same_page = 42")
    victim = c.nodes[3]
    victim.kill()
    stopped = time.monotonic()
    wait_for(lambda: rows(browser).get(victim.ip) == "OFFLINE", 15,
             what="the stopped storage OFFLINE on the page")
    took = time.monotonic() - stopped
    assert browser.eval("window.__same_page") == 42, "the page was reloaded"
    assert took < 10, "OFFLINE shown after %.1f s" % took
    first_problem = browser.eval("document.querySelector('#problems .problem').textContent")
    assert victim.ip in first_problem and "OFFLINE" in first_problem, first_problem
    assert browser.eval("document.getElementById('storage-count').textContent") == "3 of 4 active"
    # Problems first: in its group's table the stopped storage is the first row.
    first_row = browser.eval(
        "document.querySelector('h2[data-group=\"group2\"] + table tbody tr').dataset.storageId")
    assert first_row == victim.ip
    browser.screenshot(ARTIFACTS / "console-offline.png")
    victim.daemon.start()
    wait_for(lambda: rows(browser).get(victim.ip) == "ACTIVE", 60, what="the storage back")


def test_storage_page(six, browser):
    c, web = six
    node = c.nodes[0]
    browser.goto("http://%s:%d/storage/%s" % (*web["tracker"], node.ip))
    wait_for(lambda: browser.eval(
        "document.getElementById('storage-title').dataset.status") == "ACTIVE", 30,
        what="the storage page")
    assert node.ip in browser.eval("document.getElementById('storage-title').textContent")
    facts = browser.eval("""Object.fromEntries([...document.querySelectorAll('#storage-facts dt')]
        .map(dt => [dt.textContent, dt.nextElementSibling.textContent]))""")
    assert facts["Status"] == "ACTIVE"
    assert facts["Address"] == "%s:%d" % node.addr
    assert browser.eval("document.getElementById('cluster-view').hidden") is True
    wait_for(lambda: browser.eval("document.getElementById('one-storage-latency').hidden")
             is False, 30, what="the storage's latency chart")
    browser.screenshot(ARTIFACTS / "console-storage.png")


def test_follower_console_shows_the_same_cluster(six, browser):
    c, web = six
    browser.goto("http://%s:%d/" % web["tracker1"])
    ids = {n.ip for n in c.nodes}
    wait_for(lambda: set(rows(browser)) == ids, 30, what="every storage on the follower's page")
    leader = browser.eval("document.getElementById('where').textContent")
    assert "leader 127.0.0." in leader, leader
