"""monitoring/: the Grafana dashboard, the alert rules and the scrape configuration,
loaded by the real Prometheus (Debian's `prometheus` package) scraping a running cluster:
every query of the dashboard runs and names only series the daemons export, every
alert rule loads and evaluates, and a stopped storage raises its alert.

  FDFS_REQUIRE_PROMETHEUS=1   fail instead of skip without promtool/prometheus
"""

import json
import os
import re
import shutil
import subprocess
import urllib.parse
import urllib.request

import pytest

from conftest import REPO, pick_addr, stop_cluster
from fdfs_helpers import wait_for
import fdfs_wire as wire
from metrics_helpers import with_metrics

MONITORING = REPO / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RULES = MONITORING / "fastdfs-alerts.yml"
NAME = re.compile(r"\bfastdfs_[a-z0-9_]+")


def tool(name):
    exe = shutil.which(name)
    if not exe:
        if os.environ.get("FDFS_REQUIRE_PROMETHEUS") == "1":
            pytest.fail("%s not found (apt-get install prometheus)" % name)
        pytest.skip("%s not installed" % name)
    return exe


def dashboard_queries():
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            out.append(("variable " + v["name"], v["query"]["query"]))
    return out


def test_promtool_accepts_rules_and_config():
    promtool = tool("promtool")
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=str(MONITORING),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboard_shape():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    # Panels do not overlap on Grafana's 24-column grid.
    taken = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, "%s overlaps another panel" % p["title"]
                taken.add((x, y))


class Prometheus:
    def __init__(self, root, web):
        self.ip, self.port = pick_addr()
        trackers = [web[k] for k in web if k.startswith("tracker")]
        storages = [web[k] for k in web if k.startswith("storage")]
        conf = root / "prometheus.yml"
        conf.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "rule_files:\n  - %s\n"
            "scrape_configs:\n"
            "  - job_name: fastdfs-tracker\n    static_configs:\n      - targets: %s\n"
            "  - job_name: fastdfs-storage\n    static_configs:\n      - targets: %s\n"
            % (RULES, json.dumps(["%s:%d" % a for a in trackers]),
               json.dumps(["%s:%d" % a for a in storages])))
        self.proc = subprocess.Popen(
            [tool("prometheus"), "--config.file=%s" % conf,
             "--storage.tsdb.path=%s" % (root / "tsdb"),
             "--web.listen-address=%s:%d" % (self.ip, self.port)],
            stdout=subprocess.DEVNULL, stderr=open(root / "prometheus.log", "wb"))

    def api(self, path, **params):
        url = "http://%s:%d/api/v1/%s" % (self.ip, self.port, path)
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(20)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    tool("prometheus")
    c, web = with_metrics(tmp_path_factory, "prom", storages=2, store_paths=1,
                          tracker_extra="use_trunk_file = true\n")
    root = tmp_path_factory.mktemp("prometheus-")
    prom = Prometheus(root, web)
    try:
        for i in range(5):
            st, fid = wire.upload(c.nodes[0].addr, b"x" * (100 + i))
            assert st == 0
            assert wire.download(c.nodes[0].addr, fid)[0] == 0
        wait_for(lambda: all(t["health"] == "up" for t in prom.api("targets")["activeTargets"])
                 and len(prom.api("targets")["activeTargets"]) == 3, 60,
                 what="prometheus scraping all three daemons")
        yield c, prom
    finally:
        prom.stop()
        stop_cluster(c)


def test_every_dashboard_query_runs_on_exported_series(scraped):
    _, prom = scraped
    wait_for(lambda: "fastdfs_group_trunk_free_mb" in prom.api("label/__name__/values"), 60,
             what="the trunk series (trunk files on)")
    exported = set(prom.api("label/__name__/values"))
    queries = dashboard_queries()
    assert len(queries) >= 30
    for title, expr in queries:
        names = set(NAME.findall(expr))
        assert names, "%s: %s names no metric" % (title, expr)
        missing = names - exported
        assert not missing, "%s: %s not exported" % (title, sorted(missing))
        if expr.startswith("label_values("):
            continue
        q = expr.replace("$__rate_interval", "30s").replace("$group", ".*")
        prom.api("query", query=q)  # asserts status success (the query parses and runs)


def test_alert_rules_load_and_fire(scraped):
    c, prom = scraped
    exported = set(prom.api("label/__name__/values"))

    def rules():
        return [r for g in prom.api("rules")["groups"] for r in g["rules"]]
    wait_for(lambda: all(r.get("lastEvaluation", "").startswith("20") for r in rules()), 30,
             what="every rule evaluated once")
    for r in rules():
        assert r["health"] == "ok", r
        missing = set(NAME.findall(r["query"])) - exported
        assert not missing, "%s: %s not exported" % (r["name"], sorted(missing))
    assert not [r["name"] for r in rules() if r["state"] != "inactive"], \
        "alerts of a healthy cluster"
    c.nodes[1].kill()
    wait_for(lambda: any(r["name"] == "FastDFSStorageNotActive" and r["state"] in ("pending", "firing")
                         for r in rules()), 60, what="the alert of a stopped storage")
    down = [r for r in rules() if r["name"] == "FastDFSDaemonDown"][0]
    wait_for(lambda: [r for r in rules() if r["name"] == "FastDFSDaemonDown"][0]["state"]
             in ("pending", "firing"), 60, what="the stopped storage's scrape failing")
    assert down["health"] == "ok"
    c.nodes[1].daemon.start()
    c.wait_active(c.nodes[1])
