#!/usr/bin/env python3
"""Waits until every storage holds every file of some upload runs, and says when.

    drain.py --since EPOCH --timeout SECONDS --ids FILE [--ids FILE ...] --store PATH [...]

FILE: file ids as fdfs_cbench writes them (group1/M00/XX/YY/name, one a line); PATH: a
storage's store_path0, where the file of such an id is PATH/data/XX/YY/name (ours and C
FastDFS alike; both write a replicated file under a temporary name and rename it, so a
file that is there is whole). Exact: each id is looked for on each storage until seen
(files do not go away); the ids are walked in upload order, which is roughly the order the
binlog replays them, so each poll looks again only at the first file still missing.

Prints one JSON object: files (ids), drain_seconds (from EPOCH, the moment the load
stopped, until the last file was there; null on timeout), first_seconds (from EPOCH
until the first file not there at the start appeared anywhere, null if none was missing),
missing (files still absent at the end, on the storage lacking the most).
"""
import argparse
import json
import os
import sys
import time


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
            while j < len(rel) and os.path.exists(os.path.join(store, rel[j])):
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
                                   if not os.path.exists(os.path.join(store, r))))
    print(json.dumps({
        "files": len(rel),
        "drain_seconds": None if done is None else round(max(0.0, done - a.since), 3),
        "first_seconds": None if first is None else round(max(0.0, first - a.since), 3),
        "missing": missing,
    }))


if __name__ == "__main__":
    main()
