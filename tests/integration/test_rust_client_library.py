"""Our client library (fdfs-client) against the real daemons: slave upload, metadata
overwrite and merge, modify, truncate, regenerate, store/fetch-all queries and listings,
through `cargo test -p fdfs-client --test live_cluster` pointed at a live cluster."""

import os
import subprocess

from conftest import REPO


def test_client_library_against_live_cluster(cluster):
    env = dict(os.environ, FDFS_CLIENT_LIVE_CONF=str(cluster.client_conf))
    run = subprocess.run(
        ["cargo", "test", "-q", "-p", "fdfs-client", "--test", "live_cluster", "--",
         "--nocapture"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "skipped" not in out, out
    assert "1 passed" in out, out
