"""What the trunk file tests share: the tracker keys, C's view of the trunk
server, concurrent uploads with C's tool, and where a trunk-stored file's slot is."""

import base64
import contextlib
import re
import threading

from fdfs_helpers import payload
from interop import run_c

# Small trunk files (4 MB) so that a few hundred uploads fill several; quick failover.
TRUNK_EXTRA = ("use_trunk_file = true\nslot_min_size = 256\nslot_max_size = 1MB\n"
               "trunk_file_size = 4MB\ncheck_active_interval = 4\n"
               "storage_sync_file_max_time = 1\n")


def monitor(c):
    p = run_c("fdfs_monitor", c.client_conf)
    assert p.returncode == 0, p.stderr
    return p.stdout


def trunk_server_of(c):
    """The address C's fdfs_monitor names as the group's trunk server, or None."""
    m = re.search(r"current trunk server = (\S+)", monitor(c))
    return m.group(1) if m else None


def upload_ok(c):
    return run_c("fdfs_upload_file", c.client_conf, c.client_conf).returncode == 0


def upload_many(c, tmp_path, tag, count, threads=8, sizes=None):
    """Uploads `count` small files through the tracker with C's tool, `threads` at a
    time -> {file id: content}; every upload must succeed."""
    files, errors, lock = {}, [], threading.Lock()

    def work(k):
        for i in range(k, count, threads):
            size = sizes[i % len(sizes)] if sizes else 100 + 37 * i
            data = payload(size, hash((tag, i)) & 0xFFFF)
            local = tmp_path / ("%s-%d.bin" % (tag, i))
            local.write_bytes(data)
            p = run_c("fdfs_upload_file", c.client_conf, local)
            with lock:
                if p.returncode == 0:
                    files[p.stdout.strip()] = data
                else:
                    errors.append(p.stderr.strip()[-300:])
    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:3]
    return files


def slot_of(fid):
    """(store path, trunk id, offset, alloc size) from a trunk file ID."""
    remote = fid.partition("/")[2]
    loc = base64.urlsafe_b64decode(remote[37:53])
    return (remote[:3], int.from_bytes(loc[0:4], "big"), int.from_bytes(loc[4:8], "big"),
            int.from_bytes(loc[8:12], "big"))


def assert_apart(fids):
    """No two of the trunk-stored files `fids` share or overlap a slot."""
    slots = sorted(slot_of(f) for f in fids if len(f.partition("/")[2]) == 60)
    for (p1, t1, o1, s1), (p2, t2, o2, _) in zip(slots, slots[1:]):
        assert (p1, t1) != (p2, t2) or o1 + s1 <= o2, "overlapping slots"


@contextlib.contextmanager
def uploading(upload_one):
    """Calls `upload_one(i)` for i = 0, 1, ... in a thread while the block runs; yields
    the list of what it returned other than None (what was acknowledged), growing."""
    done, stop = [], threading.Event()

    def run():
        i = 0
        while not stop.is_set():
            got = upload_one(i)
            if got is not None:
                done.append(got)
            i += 1
    t = threading.Thread(target=run)
    t.start()
    try:
        yield done
    finally:
        stop.set()
        t.join()
