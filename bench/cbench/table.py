#!/usr/bin/env python3
"""The "C client library, same run" section of the report, as Markdown, from the JSON rows
bench/cbench/compare.sh wrote (those with "section": "cclient"; other rows are ignored):
one table, a row per scenario and thread count, a column per cluster, and the ratio of
each of our clusters to FastDFS's, all from the same run.

    table.py RESULTS.jsonl
"""
import json
import sys

# (impl, column title, ratio column title)
IMPLS = (
    ("ours-nofsync", "ours, fsync off", "fsync off / C"),
    ("ours-fsync", "ours, default (fsync)", "default / C"),
    ("ours-trunk", "ours, trunk files, fsync", "trunk / C"),
    ("c", "FastDFS 6.16", None),
)
RATES = (
    ("upload-unpooled", "upload via tracker, no connection pool"),
    ("upload-pooled", "upload via tracker, connection pool"),
    ("upload-direct", "upload direct to one storage, pool"),
    ("download-direct", "download direct from one storage, pool"),
    ("download-tracker", "download via tracker, pool"),
)
DRAINS = (
    ("drain-unpooled", "replication drain after the uploads via tracker, no pool"),
    ("drain-pooled", "replication drain after the uploads via tracker, pool"),
    ("drain-direct", "replication drain after the direct uploads"),
)


def rate(v):
    return "–" if v is None else "{:,.0f}/s".format(v)


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return None if n == 0 else xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def rounds_table(rows):
    """The trunk target's alternating rounds: every round, then the medians."""
    got = {}
    for r in rows:
        if str(r.get("case", "")).startswith("round-") and "round" in r:
            got[(r["impl"], r["case"][len("round-"):], r["round"])] = r.get("ops_per_sec")
    numbers = sorted({k[2] for k in got})
    if not numbers:
        return []
    out = ["", "### Trunk target: alternating rounds", "",
           "Ours with trunk files and `fsync_before_reply = true`, FastDFS 6.16 without trunk "
           "files and without flushes; both clusters up side by side on fresh data, 16 threads "
           "of 4 KiB uploads via the tracker to one and then the other (ours first in odd "
           "rounds); after each run its replication finishes, and the disk is let settle "
           "before the next.", "",
           "| round | unpooled: ours | FastDFS | ours / C | pooled: ours | FastDFS | ours / C |",
           "|---|---|---|---|---|---|---|"]

    def ratio(a, b):
        return "%.2f ×" % (a / b) if a and b else "–"

    per = {"unpooled": [], "pooled": []}
    for n in numbers:
        cells = []
        for mode in ("unpooled", "pooled"):
            a, b = got.get(("ours-trunk", mode, n)), got.get(("c", mode, n))
            cells += [rate(a), rate(b), ratio(a, b)]
            if a and b:
                per[mode].append((a, b))
        out.append("| %d | %s |" % (n, " | ".join(cells)))
    cells = []
    for mode in ("unpooled", "pooled"):
        a = median([x for x, _ in per[mode]])
        b = median([y for _, y in per[mode]])
        m = median([x / y for x, y in per[mode]])
        cells += [rate(a), rate(b), "%s (median of the rounds' ratios: %s)" % (
            ratio(a, b), "%.2f ×" % m if m else "–")]
    out.append("| median | %s |" % " | ".join(cells))
    extra = []
    for impl, who in (("ours-trunk", "ours"), ("c", "FastDFS")):
        drains = [r for r in rows if r.get("impl") == impl
                  and str(r.get("case", "")).startswith("round-drain-")]
        if drains:
            late = [r for r in drains if r.get("drain_seconds") is None]
            extra.append("%s: replication of each run done %s before the next run" % (
                who, "within %.2f s" % max(r["drain_seconds"] for r in drains) if not late
                else "not within 60 s after %d run(s)" % len(late)))
    for r in rows:
        if r.get("case") == "round-drain":
            extra.append("%s: %s" % (
                "ours" if r["impl"] == "ours-trunk" else "FastDFS",
                "every file of the rounds on both storages (%s files)" % format(r.get("files"), ",")
                if not r.get("missing") else "%s of %s files missing on a storage after 60 s" % (
                    r["missing"], r.get("files"))))
        if r.get("case") == "round-flushes" and r.get("flushes_per_upload") is not None:
            extra.append("our flushes to disk per upload, both storages, replication "
                         "included: %s" % r["flushes_per_upload"])
    if extra:
        out += ["", "; ".join(extra) + "."]
    return out


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
    present = {r.get("impl") for r in rows}
    impls = [i for i in IMPLS if i[0] in present]
    ours = [i for i in impls if i[2] is not None]
    have_c = "c" in present
    threads = sorted({r.get("threads", 16) for r in rows if r.get("case") in dict(RATES)})
    cell = {(r.get("impl"), r.get("case"), r.get("threads", 16)): r for r in rows}

    def get(impl, case, t):
        return cell.get((impl, case, t))

    def ops(impl, case, t):
        r = get(impl, case, t)
        return None if r is None else r.get("ops_per_sec")

    out += [
        "One load generator for every column: `fdfs_cbench` (bench/cbench), written against "
        "the official C client library (libfdfsclient, FastDFS 6.16). 4 KiB files; each column "
        "its own tracker and group of two storages on loopback, fresh data dirs, run one after "
        "the other; each row's figures, and so its ratios, come from this one run. FastDFS 6.16 "
        "runs on its sample configs and never flushes before replying. Uploads through the "
        "tracker without and with the library's connection pool, then straight to one storage "
        "(the trunk server with trunk files); after each, the drain: from the end of the "
        "uploads until both storages hold every file (looked for one by one). Downloads come "
        "after the drains, of every file uploaded so far, from one storage or where the tracker "
        "says: a miss (ENOENT) would be a file not there.",
        "",
        "| 4 KiB files | threads | %s |%s" % (
            " | ".join(i[1] for i in impls),
            "".join(" %s |" % i[2] for i in ours) if have_c else ""),
        "|---|---|%s" % ("---|" * (len(impls) + (len(ours) if have_c else 0))),
    ]

    def line(title, t, cells, ratios):
        out.append("| %s | %s | %s |%s" % (
            title, t, " | ".join(cells), "".join(" %s |" % x for x in ratios) if have_c else ""))

    fails = []
    for case, title in RATES:
        for t in threads:
            vals = [ops(i[0], case, t) for i in impls]
            if all(v is None for v in vals):
                continue
            c = ops("c", case, t)
            line(title, t, [rate(v) for v in vals],
                 ["%.2f ×" % (ops(i[0], case, t) / c) if ops(i[0], case, t) is not None and c
                  else "–" for i in ours])
            for i in impls:
                r = get(i[0], case, t) or {}
                if r.get("failed"):
                    fails.append("%s, %s, %d threads: %s failed (first error %s)" % (
                        i[1], title, t, r["failed"], r.get("first_error")))
    for case, title in DRAINS:
        for t in threads:
            cells = []
            for i in impls:
                r = get(i[0], case, t)
                if r is None:
                    cells.append("–")
                elif r.get("drain_seconds") is None:
                    cells.append("not within 60 s (%s of %s missing)" % (
                        r.get("missing"), r.get("files")))
                else:
                    cells.append("%.2f s ({:,} files)".format(r.get("files") or 0) % r["drain_seconds"])
            if any(x != "–" for x in cells):
                line(title, t, cells, [""] * len(ours))
    for case, title in (("download-direct", "direct downloads: misses (ENOENT) / failures"),
                        ("download-tracker", "downloads via tracker: misses (ENOENT) / failures")):
        for t in threads:
            cells = []
            for i in impls:
                r = get(i[0], case, t)
                cells.append("–" if r is None else "%s / %s" % (r.get("misses", 0), r.get("failed", 0)))
            if any(x != "–" for x in cells):
                line(title, t, cells, [""] * len(ours))
    f = get("ours-trunk", "flushes", 16)
    if f is not None:
        cells = ["%s" % f.get("flushes_per_upload", "–") if i[0] == "ours-trunk" else
                 "0" if i[0] == "c" else "" for i in impls]
        line("flushes to disk per upload, both storages (replication included)", "all",
             cells, [""] * len(ours))

    # The backlog from a C storage: the C -> C figure in FastDFS's column, C -> ours in
    # our fsync-off column (the peer that took it over runs with fsync_before_reply=false).
    backlog = {r["impl"]: r for r in rows if r.get("case") == "backlog"}
    if backlog:
        t = 16
        cells = [rate(backlog[i[0]].get("ops_per_sec")) if i[0] in backlog else "–" for i in impls]
        a, b = backlog.get("ours-nofsync", {}), backlog.get("c", {})
        ratios = ["%.2f ×" % (a["ops_per_sec"] / b["ops_per_sec"])
                  if i[0] == "ours-nofsync" and a.get("ops_per_sec") and b.get("ops_per_sec")
                  else "" for i in ours]
        line("backlog from a C storage, replicated into this peer", t, cells, ratios)
        cells = []
        for i in impls:
            r = backlog.get(i[0])
            if r is None:
                cells.append("–")
            elif r.get("catchup_seconds") is None:
                cells.append("not within 120 s (%s missing)" % r.get("missing"))
            else:
                cells.append("%.2f s ({:,} files)".format(r.get("files") or 0) % r["catchup_seconds"])
        line("backlog: catch-up from the peer's start", t, cells, [""] * len(ours))

    out += rounds_table(rows)
    out.append("")
    disk = ["a median of %.2f ms (99th percentile %.2f ms) %s" % (r["p50_ms"], r["p99_ms"], r["when"])
            for r in rows if r.get("case") == "disk-flush"]
    if disk:
        out += ["The disk: one flush (4 KiB appended, then fdatasync) took " + ", ".join(disk) +
                ". FastDFS never waits for one; ours with `fsync_before_reply` waits for a flush "
                "of the trunk file and one of the binlog per batch of uploads.", ""]
    if "ours-trunk" in present:
        out.append("Trunk files: the tracker's `use_trunk_file = true` with FastDFS's sample "
                   "trunk sizes (slots up to 1 MB in 64 MB trunk files); FastDFS 6.16 runs "
                   "without trunk files (and without flushes, its fastest). Flushes per upload: "
                   "both storages' flushes before replies (each logs its count at exit) over "
                   "the uploads.")
    if backlog:
        if out[-1]:
            out.append("")
        out.append("Backlog: on the C cluster, one storage's peer stopped, 16 threads of "
                   "uploads for one run's time to the C storage alone, the peer started again "
                   "(FastDFS's column: the C storage; fsync-off column: our storage on the same "
                   "data). Rate: files over the time from the first to the last arriving; "
                   "catch-up: from the peer's start until it held every file.")
    if fails:
        out += ["", "Failures: " + "; ".join(fails) + "."]
    print("\n".join(out))


if __name__ == "__main__":
    main()
