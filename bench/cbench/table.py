#!/usr/bin/env python3
"""The "C client library, same run" section of the report, as Markdown, from the JSON rows
bench/cbench/compare.sh wrote (those with "section": "cclient"; other rows are ignored).

    table.py RESULTS.jsonl
"""
import json
import sys

IMPLS = ("ours-nofsync", "ours-fsync", "c")


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    rows = [r for r in rows if r.get("section") == "cclient"]
    if not rows:
        return
    out = ["", "## C client library, same run", ""]
    skipped = [r for r in rows if r.get("case") == "skipped"]
    if skipped:
        out.append(skipped[0]["label"])
        print("\n".join(out))
        return
    cell = {(r.get("impl"), r.get("case")): r for r in rows if r.get("case") != "backlog"}
    out += [
        "One load generator for every column: `fdfs_cbench` (bench/cbench), written against "
        "the official C client library (libfdfsclient, FastDFS 6.16). 4 KiB files, 16 threads; "
        "each column its own tracker and group of two storages on loopback, fresh data dirs, "
        "run one after the other. FastDFS 6.16 runs on its sample configs and never flushes "
        "before replying. Drain: from the end of the uploads until both storages hold every "
        "file (looked for one by one). The downloads come after the drain, from one storage, "
        "of the pooled run's files: a miss (ENOENT) would be a file not there.",
        "",
        "| 4 KiB, 16 threads | ours, fsync off | ours, default (fsync) | FastDFS 6.16 "
        "| ours fsync off / C | ours default / C |",
        "|---|---|---|---|---|---|",
    ]

    def ops(impl, case):
        r = cell.get((impl, case))
        return None if r is None else r.get("ops_per_sec")

    def rate_row(title, case):
        vals = [ops(i, case) for i in IMPLS]
        cells = ["%.0f/s" % v if v is not None else "–" for v in vals]
        c = vals[2]
        ratios = ["%.2f ×" % (v / c) if v is not None and c else "–" for v in vals[:2]]
        fails = []
        for i in IMPLS:
            r = cell.get((i, case)) or {}
            if r.get("failed"):
                fails.append("%s: %s failed (first error %s)" % (i, r["failed"], r.get("first_error")))
        out.append("| %s | %s | %s |" % (title, " | ".join(cells), " | ".join(ratios)))
        return fails

    fails = rate_row("upload via tracker, no connection pool", "upload-unpooled")
    fails += rate_row("upload via tracker, connection pool", "upload-pooled")
    fails += rate_row("download direct from one storage, pool", "download-direct")
    for pool in ("unpooled", "pooled"):
        cells = []
        for i in IMPLS:
            r = cell.get((i, "drain-" + pool))
            if r is None:
                cells.append("–")
            elif r.get("drain_seconds") is None:
                cells.append("not within 60 s (%s of %s missing)" % (r.get("missing"), r.get("files")))
            else:
                cells.append("%.2f s (%s files)" % (r["drain_seconds"], r.get("files")))
        out.append("| replication drain after the %s uploads | %s | | |" % (
            "unpooled" if pool == "unpooled" else "pooled", " | ".join(cells)))
    cells = []
    for i in IMPLS:
        r = cell.get((i, "download-direct"))
        cells.append("–" if r is None else "%s / %s" % (r.get("misses", 0), r.get("failed", 0)))
    out.append("| download misses (ENOENT) / failures | %s | | |" % " | ".join(cells))
    if fails:
        out += ["", "Failures: " + "; ".join(fails) + "."]

    trunk = [r for r in rows if r.get("impl") == "ours-trunk"]
    if trunk:
        out += ["", "Trunk files (the tracker's `use_trunk_file = true`, FastDFS's sample trunk "
                "sizes): our cluster with `fsync_before_reply = true`, next to FastDFS 6.16 "
                "without trunk files and without flushes (its fastest), same run, same load.",
                "", "| 4 KiB, 16 threads | ours, trunk files, fsync | FastDFS 6.16 | ours / C |",
                "|---|---|---|---|"]
        for title, case in (("upload via tracker, no connection pool", "upload-unpooled"),
                            ("upload via tracker, connection pool", "upload-pooled"),
                            ("download direct from one storage, pool", "download-direct")):
            a, b = ops("ours-trunk", case), ops("c", case)
            out.append("| %s | %s | %s | %s |" % (
                title, "%.0f/s" % a if a is not None else "–",
                "%.0f/s" % b if b is not None else "–",
                "%.2f ×" % (a / b) if a is not None and b else "–"))
        for pool in ("unpooled", "pooled"):
            r = cell.get(("ours-trunk", "drain-" + pool))
            if r is not None:
                out.append("| replication drain after the %s uploads | %s | | |" % (
                    pool, "%.2f s (%s files)" % (r["drain_seconds"], r.get("files"))
                    if r.get("drain_seconds") is not None else "not within 60 s"))
        f = cell.get(("ours-trunk", "flushes"))
        if f is not None:
            out.append("| flushes to disk per upload, both storages | %s | 0 | |" % (
                f.get("flushes_per_upload", "–")))

    backlog = [r for r in rows if r.get("case") == "backlog"]
    if backlog:
        out += ["", "Replication of a backlog from a C storage (same C cluster): its peer stopped, "
                "uploads for one run's time to the C storage alone, the peer started again. "
                "Rate: files over the time from the first to the last arriving; catch-up: from "
                "the peer's start until it held every file.", "",
                "| source → peer | files | files/s | catch-up s |", "|---|---|---|---|"]
        by = {}
        for r in backlog:
            name = "C → C" if r["impl"] == "c" else "C → ours (fsync off)"
            by[r["impl"]] = r
            out.append("| %s | %s | %s | %s |" % (
                name, r.get("files"),
                "%.0f" % r["ops_per_sec"] if r.get("ops_per_sec") is not None else "–",
                "%.2f" % r["catchup_seconds"] if r.get("catchup_seconds") is not None else
                "not within 120 s (%s missing)" % r.get("missing")))
        a, b = by.get("ours-nofsync", {}), by.get("c", {})
        if a.get("ops_per_sec") and b.get("ops_per_sec"):
            out.append("| C → ours / C → C | | %.2f × | |" % (a["ops_per_sec"] / b["ops_per_sec"]))
    print("\n".join(out))


if __name__ == "__main__":
    main()
