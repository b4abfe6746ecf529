#!/usr/bin/env python3
"""Waits until every storage holds every file of some upload runs, and says when.

    drain.py --since EPOCH --timeout SECONDS --ids FILE [--ids FILE ...] --store PATH [...]

FILE: file ids as fdfs_cbench writes them (group1/M00/XX/YY/name, one a line); PATH: a
storage's store_path0, where the file of such an id is PATH/data/XX/YY/name (ours and C
FastDFS alike; both write a replicated file under a temporary name and rename it, so a
file that is there is whole). Exact: each id is looked for on each storage until seen
(files do not go away); the ids are walked in upload order, which is roughly the order the
binlog replays them, so each poll looks again only at the first file still missing.
A file packed into a trunk file (60 characters after the group) is there once its slot's header
names it (the header is written after the content, by uploader and replica alike).

Prints one JSON object: files (ids), drain_seconds (from EPOCH, the moment the load
stopped, until the last file was there; null on timeout), first_seconds (from EPOCH
until the first file not there at the start appeared anywhere, null if none was missing),
missing (files still absent at the end, on the storage lacking the most).
"""
import argparse
import base64
import json
import os
import sys
import time


class Trunked:
    """Where a trunk-stored file is: its trunk file and slot, and the header a slot
    holding it carries (its CRC32, time and extension, from the name)."""

    def __init__(self, dirs, name):
        loc = base64.urlsafe_b64decode(name[27:43])
        raw = base64.urlsafe_b64decode(name[:27] + "=")
        self.trunk = os.path.join(*dirs, "%06d" % int.from_bytes(loc[0:4], "big"))
        self.offset = int.from_bytes(loc[4:8], "big")
        self.tail = raw[16:20] + raw[4:8] + name[-7:].encode()

    def there(self, store):
        try:
            with open(os.path.join(store, self.trunk), "rb") as f:
                f.seek(self.offset)
                head = f.read(24)
        except OSError:
            return False
        return head[:1] == b"F" and head[9:] == self.tail


def exists(store, r):
    if isinstance(r, Trunked):
        return r.there(store)
    return os.path.exists(os.path.join(store, r))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--since", type=float, required=True)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--ids", action="append", required=True)
    ap.add_argument("--store", action="append", required=True)
    a = ap.parse_args()
    rel = []
    for f in a.ids:
        for line in open(f):
            fid = line.strip()
            if fid:
                parts = fid.split("/")
                if len(parts) != 5 or not parts[1].startswith("M"):
                    sys.exit("drain.py: unexpected file id %r" % fid)
                if len(parts[4]) == 50:
                    rel.append(Trunked(["data", parts[2], parts[3]], parts[4]))
                else:
                    rel.append(os.path.join("data", *parts[2:]))
    stores = a.store
    frontier = [0] * len(stores)
    first = None
    initial = True  # the first pass finds what was there already
    deadline = time.time() + a.timeout
    done = None
    while True:
        for i, store in enumerate(stores):
            j = frontier[i]
            while j < len(rel) and exists(store, rel[j]):
                j += 1
            if j > frontier[i] and not initial and first is None:
                first = time.time()
            frontier[i] = j
        initial = False
        if all(j == len(rel) for j in frontier):
            done = time.time()
            break
        if time.time() > deadline:
            break
        time.sleep(0.01)
    missing = 0
    for i, store in enumerate(stores):
        missing = max(missing, sum(1 for r in rel[frontier[i]:]
                                   if not exists(store, r)))
    print(json.dumps({
        "files": len(rel),
        "drain_seconds": None if done is None else round(max(0.0, done - a.since), 3),
        "first_seconds": None if first is None else round(max(0.0, first - a.since), 3),
        "missing": missing,
    }))


if __name__ == "__main__":
    main()
