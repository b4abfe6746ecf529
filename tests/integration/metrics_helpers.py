"""The daemons' HTTP side in tests: turning `metrics_listen` on for a cluster, scraping,
and reading the Prometheus text format."""

import http.client
import re
import time

from conftest import bindable, pick_port, start_cluster

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def with_metrics(tmp_path_factory, name, **kw):
    """A started cluster (conftest.start_cluster) whose every daemon serves HTTP on its
    own 127.0.0.x: returns (cluster, {"tracker": addr, "tracker1": addr, ...,
    "storage0": addr, ...})."""
    web = {}

    def enable(c):
        trackers = [(c.tracker_ip, c.tracker_conf)] + [
            (ip, d.conf) for ip, _, d in c.extra_trackers]
        for i, (ip, conf) in enumerate(trackers):
            addr = (ip, pick_port(ip))
            web["tracker" if i == 0 else "tracker%d" % i] = addr
            with open(conf, "a") as f:
                f.write("metrics_listen = %s:%d\n" % addr)
        # One port on every storage's address, which the trackers are told (the
        # console reads the storages' latency there).
        port = common_port([n.ip for n in c.nodes], {n.port for n in c.nodes})
        for i, node in enumerate(c.nodes):
            web["storage%d" % i] = (node.ip, port)
            node.extra += "metrics_listen = %s:%d\n" % (node.ip, port)
            c.write_node_conf(node)
        for conf in [c.tracker_conf] + [d.conf for _, _, d in c.extra_trackers]:
            with open(conf, "a") as f:
                f.write("storage_metrics_port = %d\n" % port)
    return start_cluster(tmp_path_factory, name, prepare=enable, **kw), web


def common_port(ips, taken):
    """A port free on every one of `ips` (not one of `taken`)."""
    for _ in range(100):
        port = pick_port(ips[0], taken)
        if all(bindable(ip, port) for ip in ips[1:]):
            return port
    raise RuntimeError("no port free on all of %s" % ips)



def get(addr, path="/metrics", source=None, timeout=10):
    """-> (status, body text, seconds taken)."""
    started = time.monotonic()
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read().decode()
        return resp.status, body, time.monotonic() - started
    finally:
        conn.close()


class Metrics:
    """One scrape: samples by (name, labels) and the declared types."""

    def __init__(self, text):
        self.text = text
        self.types = {}
        self.samples = {}
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                self.types[name] = kind
            elif line and not line.startswith("#"):
                m = SAMPLE.match(line)
                assert m, "not a sample line: %r" % line
                labels = frozenset(LABEL.findall(m.group(2) or ""))
                self.samples[(m.group(1), labels)] = float(m.group(3))

    def names(self):
        return {name for name, _ in self.samples}

    def value(self, name, **labels):
        """The one sample of `name` whose labels include `labels` (0 if none)."""
        want = set(labels.items())
        found = [v for (n, ls), v in self.samples.items() if n == name and want <= ls]
        assert len(found) <= 1, "%s%s matches %d samples" % (name, labels, len(found))
        return found[0] if found else 0.0

    def all(self, name):
        return {ls: v for (n, ls), v in self.samples.items() if n == name}


def scrape(addr):
    status, body, _ = get(addr)
    assert status == 200, (status, body)
    return Metrics(body)
