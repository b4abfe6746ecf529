"""Data directories made when first needed, and a C 6.16 storage started on such a tree.

A storage used to make all subdir_count_per_path² directories (data/00/00 .. data/FF/FF,
257 MB per store path with 256) when a store path was first used, as C does.  Ours makes
a directory when a file first goes into it (an upload, a copy from a peer), and the last
one (FF/FF) only after all the others.  C checks, on every start, only whether 00/00 and
the last one are there (storage_func.c, storage_make_data_dirs); when the last one is
missing it makes every directory (those there are fine: EEXIST), and then, since the
storage had synced its group's files, recovers the store path from a peer as a replaced
disk (every file downloaded again).  scripts/make-data-dirs.sh, run before the rollback,
makes the tree complete and C starts as on its own data.

The test: two of our storages in one group on empty store paths (subdir_count_per_path
256, every upload into the next directory); no directory at start and little disk
used; files of every kind uploaded, downloaded, replicated (the peer makes its
directories too); then the first storage rolled back to C 6.16, with the script run
first or not, serves every file.
"""

import os
import struct
import subprocess
import time
from pathlib import Path

import pytest

import fdfs_wire as wire
from c_daemons import file_path
from conftest import REPO, STATUS_ACTIVE
from fdfs_helpers import payload, wait_for

SUBDIRS = 256
MAKE_DATA_DIRS = REPO / "scripts" / "make-data-dirs.sh"
# Every upload into the next directory (C's keys; C defaults to 100 per directory).
LAZY_EXTRA = "file_distribute_path_mode = 0\nfile_distribute_rotate_count = 1\n"


@pytest.fixture
def report(capsys, record_property):
    def say(key, value, text):
        record_property(key, value)
        with capsys.disabled():
            print("\n[lazy-dirs] %s" % text)
    return say


def data_dirs(store):
    """The data directories ("XX/YY") under a store path."""
    data = Path(store) / "data"
    out = set()
    for h in os.listdir(data):
        if len(h) == 2 and (data / h).is_dir():
            out.update("%s/%s" % (h, low) for low in os.listdir(data / h)
                       if len(low) == 2 and (data / h / low).is_dir())
    return out


def disk_use(path):
    """Bytes of disk the files and directories under `path` take."""
    total = 0
    for dirpath, dirs, files in os.walk(path):
        for name in dirs + files:
            total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def dir_of(fid):
    """"XX/YY" of a file ID group/Mxx/XX/YY/name."""
    parts = fid.partition("/")[2].split("/")
    return "%s/%s" % (parts[1], parts[2])


def upload_slave(addr, master, prefix, ext, content):
    """21 UPLOAD_SLAVE -> (status, slave file ID or None)."""
    m = master.partition("/")[2].encode()
    body = (struct.pack(">QQ", len(m), len(content)) + prefix.encode().ljust(16, b"\0")
            + ext.encode().ljust(6, b"\0") + m + content)
    with wire.Conn(addr, 30) as conn:
        st, reply = conn.request(wire.S_UPLOAD_SLAVE, body)
    if st != 0:
        return st, None
    return st, reply[:16].rstrip(b"\0").decode() + "/" + reply[16:].decode()


def append(addr, fid, part):
    """24 APPEND_FILE."""
    remote = fid.partition("/")[2].encode()
    body = struct.pack(">QQ", len(remote), len(part)) + remote + part
    with wire.Conn(addr, 30) as conn:
        st, _ = conn.request(wire.S_APPEND, body)
    assert st == 0, "append to %s -> %d" % (fid, st)


def on_disk(node, files, metas):
    for fid, data in files.items():
        try:
            if file_path(node, fid).read_bytes() != data:
                return False
        except FileNotFoundError:
            return False
    return all(file_path(node, fid + "-m").is_file() for fid in metas)


def serves(node, files, metas):
    """-> what `node` does not serve as it should (empty when all is well)."""
    wrong = []
    for fid, data in files.items():
        st, got = wire.download(node.addr, fid, timeout=30)
        if st != 0 or got != data:
            wrong.append("%s: status %d, %d of %d bytes" % (fid, st, len(got), len(data)))
    for fid, meta in metas.items():
        st, got = wire.get_meta(node.addr, fid, timeout=30)
        if st != 0 or got != meta:
            wrong.append("metadata of %s: status %d, %r" % (fid, st, got))
    return wrong


def write_files(node):
    """Normal files, a slave, an appender (appended to) and metadata, uploaded to `node`
    -> (files {id: bytes}, metas {id: dict})."""
    files, metas = {}, {}
    for i in range(12):
        data = payload(100 + 997 * i, 7100 + i)
        st, fid = wire.upload(node.addr, data, "txt", spi=0)
        assert st == 0, "upload -> %d" % st
        files[fid] = data
    master = next(iter(files))
    slave = payload(333, 7200)
    st, sid = upload_slave(node.addr, master, "_s", "txt", slave)
    assert st == 0, "slave upload -> %d" % st
    files[sid] = slave
    first, rest = payload(700, 7300), payload(1300, 7301)
    st, aid = wire.upload(node.addr, first, "log", spi=0, cmd=wire.S_UPLOAD_APPENDER)
    assert st == 0, "appender upload -> %d" % st
    append(node.addr, aid, rest)
    files[aid] = first + rest
    meta = {"width": "640", "kind": "lazy"}
    assert wire.set_meta(node.addr, master, meta) == 0
    metas[master] = meta
    return files, metas


@pytest.mark.timeout(420)
@pytest.mark.parametrize("made_first", [True, False], ids=["script-first", "as-left"])
def test_directories_made_when_needed_and_c_rollback(clusters, report, made_first):
    c = clusters.new("lazy-%s" % ("script" if made_first else "as-left"), storages=2,
                     store_paths=1, subdirs=SUBDIRS, storage_extra=LAZY_EXTRA)
    a, b = c.nodes
    # Started on empty store paths: no data directory, next to no disk.
    for n in (a, b):
        assert data_dirs(n.store_paths[0]) == set()
        used = disk_use(n.store_paths[0])
        assert used < 1 << 20, "%d bytes used by a fresh store path" % used
    report("fresh_store_path_bytes", used,
           "fresh store path: 0 data directories, %d KB (was 65,536 and about 257 MB)"
           % (used >> 10))

    files, metas = write_files(a)
    wanted = {dir_of(f) for f in files}
    assert len(wanted) >= 12, "uploads not spread over directories: %s" % sorted(wanted)
    # Exactly the directories that hold files, the last one not among them.
    assert data_dirs(a.store_paths[0]) == wanted
    assert not serves(a, files, metas)

    # Replication: the peer makes the directories of the copies it gets.
    wait_for(lambda: on_disk(b, files, metas), 60, interval=0.2,
             what="every file replicated to the second storage")
    assert data_dirs(b.store_paths[0]) == wanted
    assert not serves(b, files, metas)
    used = disk_use(a.store_paths[0])
    report("store_path_bytes_after_uploads", used,
           "%d files in %d directories: %d KB on the store path"
           % (len(files), len(wanted), used >> 10))

    # Rollback of the first storage to C 6.16 on the same tree.
    c.stop_daemon(a.daemon)
    wait_for(lambda: c.storage_status(a) != STATUS_ACTIVE, 60, 0.1,
             "tracker to see storage %s stopped" % a.ip)
    store = Path(a.store_paths[0])
    last = store / "data" / "FF" / "FF"
    assert not last.exists()
    if made_first:
        t0 = time.monotonic()
        subprocess.run([str(MAKE_DATA_DIRS), str(store), str(SUBDIRS)], check=True,
                       capture_output=True, timeout=300)
        report("make_data_dirs_s", time.monotonic() - t0,
               "make-data-dirs.sh: %.1fs" % (time.monotonic() - t0))
        assert len(data_dirs(store)) == SUBDIRS * SUBDIRS
    c.set_impl(a, "c")
    a.daemon.start()
    c.wait_active(a, timeout=240)
    # C finds (or makes) the whole tree and serves every file.
    assert last.is_dir() and len(data_dirs(store)) == SUBDIRS * SUBDIRS
    wrong = serves(a, files, metas)
    assert not wrong, "C storage on the lazily made tree:\n%s\n%s" % (
        "\n".join(wrong[:10]), c.logs())
    # C made the directories itself only when the script had not, and then took the
    # path for a replaced disk: a recovery from the peer (C's stderr goes to its log).
    log = a.daemon.log_file.read_text(errors="replace")
    assert ("mkdir sub dir done" in log) == (not made_first), log[-3000:]
    assert ("try to fetch binlog from" in log) == (not made_first), log[-3000:]
    # And it takes new files, anywhere in the tree.
    data = payload(4321, 7400)
    st, fid = wire.upload(a.addr, data, "new", spi=0)
    assert st == 0, "upload to the C storage -> %d" % st
    assert wire.download(a.addr, fid) == (0, data)
