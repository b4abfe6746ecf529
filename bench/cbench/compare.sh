#!/usr/bin/env bash
# "C client library, same run": one load generator, fdfs_cbench (written against the
# official C client library, libfdfsclient of FastDFS 6.16), drives three clusters one
# after the other (never two at once), each a tracker and a group of two storages on
# loopback with fresh data dirs:
#   ours-nofsync  our daemons, fsync_before_reply = false (FastDFS's own durability)
#   ours-fsync    our daemons, the default fsync_before_reply = true
#   ours-trunk    our daemons, fsync_before_reply = true, with trunk files (the tracker's
#                 use_trunk_file = true, sample sizes: slots up to 1 MB in 64 MB trunk
#                 files); its rows also give the flushes to disk per upload, counted by
#                 both storages (their log line at exit), replication's included
#   c             C FastDFS 6.16 (never flushes before replying), on the sample configs it
#                 ships (target/c-fastdfs/etc/fdfs), changed only where the address, paths,
#                 log level, heartbeats and reserved space must be
# For each, 4 KiB files, at each thread count of CBENCH_THREADS (default 1, then 16):
# uploads through the tracker without connection pool, then with it, then straight to the
# first storage (pooled; no tracker asked); after each, the time until both storages hold
# every file just uploaded (drain.py: exact, file by file); then pooled downloads of every
# file the cluster took so far, straight from the first storage, then through the tracker,
# counting misses (ENOENT: a file not there; after the drains there should be none, and
# the figure is not inflated by cheap error replies). Before each upload run the disk is
# let settle. On the trunk cluster the direct uploads go to the trunk server (either
# storage), where the tracker sends its uploads too.
# Last, with both ours-trunk and c among the clusters, the trunk target in alternating
# rounds (CBENCH_ROUNDS, default 5, 1 in a smoke run, 0: none): both clusters up at once
# on fresh data, each round 16 threads of uploads via the tracker (unpooled, pooled) to
# one and then the other, the order swapped every round, each run followed by its
# replication drain; the medians are the figures to quote, as a slow minute of a shared
# machine falls on both alike.
# First, and again before the rounds, what one flush (4 KiB appended, fdatasync) costs on
# the disk at that moment: figures of different days differ with it.
# Before that, on the C cluster, the replication of a backlog from a C storage: its peer stopped,
# uploads for as long as one run, the peer started again, the time until it holds every
# file and the rate between the first and the last file arriving; the peer is first the C
# storage (C -> C), then ours on the same data (C -> ours, a rolling migration's step).
#
#   bench/cbench/compare.sh [DIR]   JSON lines (bench/run.sh's rows) on stdout, the table
#                                   (table.py) on stderr unless CBENCH_TABLE=0; DIR
#                                   (default: a new temporary one) is removed at the end
#
# Environment: BENCH_SMOKE=1 (0.5 s runs), BENCH_SECONDS (each run; default 5),
# CBENCH_THREADS (the thread counts, each run in turn; default "1 16"; the backlog's load
# and the rounds are always 16 threads), CBENCH_ROUNDS (above), CBENCH_CLUSTERS (which of the four to run; default all:
# "ours-nofsync ours-fsync ours-trunk c"), CBENCH_IP (the first of twelve consecutive 127.0.0.x it uses; default
# random),
# BIN (our release binaries; default target/release, built by bench/run.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${BIN:-$ROOT/target/release}
C_DIR=${FDFS_C_DIR:-$ROOT/target/c-fastdfs}
if [ "${BENCH_SMOKE:-0}" = 1 ]; then
  # 16 x 16 data subdirectories instead of 256 x 256: each storage starts in a moment;
  # no waiting for a quiet disk
  SECS=${BENCH_SECONDS:-0.5}; SETTLE_MAX=0; SUBDIRS=16
else
  SECS=${BENCH_SECONDS:-5}; SETTLE_MAX=120; SUBDIRS=256
fi
THREADS_LIST=${CBENCH_THREADS:-1 16}; SIZE=4096
ROUNDS=${CBENCH_ROUNDS:-$([ "${BENCH_SMOKE:-0}" = 1 ] && echo 1 || echo 5)}
DIR=${1:-$(mktemp -d /tmp/fdfs-cbench.XXXXXX)}
mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd)
IP0=${CBENCH_IP:-127.0.0.$((RANDOM % 140 + 60))}
IP_PREFIX=${IP0%.*}; IP_LAST=${IP0##*.}
[ $((IP_LAST + 11)) -le 254 ] || { echo "compare.sh: CBENCH_IP $IP0: needs twelve addresses" >&2; exit 1; }

declare -A PID=()
stop() { # name...: SIGTERM, then SIGKILL after 30 s (C storages may take a while)
  local n p i
  for n in "$@"; do [ -n "${PID[$n]:-}" ] && kill "${PID[$n]}" 2>/dev/null || true; done
  for n in "$@"; do
    p=${PID[$n]:-}; [ -n "$p" ] || continue
    for i in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    unset "PID[$n]"
  done
}
CHILD=""
cleanup() {
  [ -z "$CHILD" ] || kill "$CHILD" 2>/dev/null || true
  stop "${!PID[@]}"
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 143' TERM INT
note() { printf '%s\n' "$*" >&2; }
# child cmd...: runs cmd in the background and waits for it, so that a TERM is handled at
# once (not after cmd); its stdout goes to $DIR/child.out.
child() {
  "$@" >"$DIR/child.out" &
  CHILD=$!
  local rc=0
  wait "$CHILD" || rc=$?
  CHILD=""
  return $rc
}

CBENCH=$(bash "$HERE/build.sh") || {
  note "compare.sh: cannot build fdfs_cbench and C FastDFS 6.16 (bench/cbench/build.sh): skipped"
  echo '{"label":"C client library, same run: skipped (bench/cbench/build.sh failed)","section":"cclient","case":"skipped"}'
  exit 0
}
C_BIN="$C_DIR/usr/bin"; SAMPLES="$C_DIR/etc/fdfs"

# settle: waits (up to SETTLE_MAX s) until the disk is quiet (io pressure under 5 %), so
# that the writeback of one cluster's files does not fall on the next one's figures.
settle() {
  [ "$SETTLE_MAX" -gt 0 ] || return 0
  sync
  [ -r /proc/pressure/io ] || return 0
  local i p
  for i in $(seq "$SETTLE_MAX"); do
    p=$(awk '/^some/ { sub("avg10=", "", $2); print $2 }' /proc/pressure/io)
    awk -v p="$p" 'BEGIN { exit !(p < 5) }' && return 0
    sleep 1
  done
  note "the disk is still busy (io pressure ${p}%): the next figures will be low"
}

start() { # name program conf [args...]: a daemon in the foreground, our child
  local name=$1; shift
  "$@" >>"$DIR/$name.out" 2>&1 &
  PID[$name]=$!
}
alive_or_die() { # name
  kill -0 "${PID[$1]}" 2>/dev/null && return 0
  note "compare.sh: $1 exited:"; tail -20 "$DIR/$1.out" >&2 || true
  tail -20 "$DIR/$1"/logs/*.log >&2 2>/dev/null || true
  exit 1
}
wait_port() { # name ip port
  local deadline=$((SECONDS + 60))
  until (echo >/dev/tcp/"$2"/"$3") 2>/dev/null; do
    alive_or_die "$1"
    [ $SECONDS -lt $deadline ] || { note "compare.sh: $1 not listening on $2:$3"; exit 1; }
    sleep 0.05
  done
}
active_count() { # client.conf
  "$BIN/fdfs_monitor" "$1" list 2>/dev/null | grep -c ' ACTIVE$' || true
}
wait_active() { # client.conf count names...: until exactly count storages are ACTIVE
  local conf=$1 want=$2 n; shift 2
  local deadline=$((SECONDS + 180))
  until [ "$(active_count "$conf")" -eq "$want" ]; do
    for n in "$@"; do alive_or_die "$n"; done
    [ $SECONDS -lt $deadline ] || { note "compare.sh: not $want storages ACTIVE"; exit 1; }
    sleep 0.1
  done
}

# Our configs, as bench/run.sh writes them.
ours_tracker_conf() { # base ip
  printf 'bind_addr = %s\nport = 22122\nbase_path = %s\nstore_lookup = 0\nreserved_storage_space = 1%%\nlog_level = warn\n' "$2" "$1"
}
ours_storage_conf() { # base ip tracker_ip fsync_before_reply [log_level]
  printf 'group_name = group1\nbind_addr = %s\nport = 23000\nbase_path = %s\nstore_path0 = %s\ntracker_server = %s:22122\nheart_beat_interval = 1\nstat_report_interval = 5\nmax_connections = 1024\nfsync_before_reply = %s\nsubdir_count_per_path = %s\nlog_level = %s\n' \
    "$2" "$1" "$1" "$3" "$4" "$SUBDIRS" "${5:-warn}"
}
# The trunk keys of FastDFS's sample tracker.conf.
TRUNK_KEYS='use_trunk_file = true\nslot_min_size = 256\nslot_max_size = 1MB\ntrunk_alloc_alignment_size = 256\ntrunk_file_size = 64MB\n'
# C's: its sample file with some keys set (each must be in the sample; its first line for
# the key takes the value, further lines for it, e.g. a second tracker_server, go).
from_sample() { # sample key=value...
  local sample=$1; shift
  python3 - "$sample" "$@" <<'PY'
import re, sys
sample, pairs = sys.argv[1], sys.argv[2:]
want = dict(p.split("=", 1) for p in pairs)
done, out = set(), []
for line in open(sample):
    m = re.match(r"\s*([A-Za-z0-9_]+)\s*=", line)
    if m and m.group(1) in want:
        k = m.group(1)
        if k not in done:
            out.append("%s = %s\n" % (k, want[k]))
            done.add(k)
        continue
    out.append(line)
missing = set(want) - done
if missing:
    sys.exit("from_sample: %s not in %s" % (", ".join(sorted(missing)), sample))
sys.stdout.write("".join(out))
PY
}
c_tracker_conf() { # base ip
  from_sample "$SAMPLES/tracker.conf" bind_addr="$2" port=22122 base_path="$1" store_lookup=0 \
    reserved_storage_space=1% log_level=warn
}
c_storage_conf() { # base ip tracker_ip
  from_sample "$SAMPLES/storage.conf" group_name=group1 bind_addr="$2" port=23000 base_path="$1" \
    store_path0="$1" tracker_server="$3:22122" heart_beat_interval=1 stat_report_interval=5 \
    subdir_count_per_path="$SUBDIRS" log_level=warn
}
client_conf() { # base tracker_ip pool(true|false): the C library's sample client.conf
  from_sample "$SAMPLES/client.conf" base_path="$1" tracker_server="$2:22122" \
    use_connection_pool="$3" log_level=warn
}

emit() { # impl case label cbench-json [key=value...]: one row, bench/run.sh's fields
  python3 - "$@" <<'PY'
import json, sys
impl, case, label, line = sys.argv[1:5]
try:
    r = json.loads(line)
except ValueError:
    r = {"failed": None, "note": "fdfs_cbench printed no result: %r" % line[-200:]}
row = {"label": label, "section": "cclient", "impl": impl, "case": case}
if "per_second" in r:
    row["ops_per_sec"] = r["per_second"]
for k in ("threads", "direct", "ok", "failed", "first_error", "seconds", "pool", "note"):
    if k in r:
        row[k] = r[k]
for kv in sys.argv[5:]:
    k, v = kv.split("=", 1)
    row[k] = json.loads(v)
print(json.dumps(row))
PY
}
drain() { # since timeout ids store...: drain.py's JSON in $line
  local since=$1 timeout=$2 ids=$3; shift 3
  local args=()
  for s in "$@"; do args+=(--store "$s"); done
  child python3 "$HERE/drain.py" --since "$since" --timeout "$timeout" --ids "$ids" "${args[@]}"
  line=$(<"$DIR/child.out")
}
cbench() { # fdfs_cbench's arguments: its JSON line in $line (fdfs_cbench exits 1 when
           # every request failed: the row says so), in $misses the requests that got
           # ENOENT (the C library logs each failure, with its errno, on stderr)
  child "$CBENCH" "$@" 2>"$DIR/cbench.err" || true
  line=$(<"$DIR/child.out")
  misses=$(grep -c 'fdfs_recv_response fail, errno: 2,' "$DIR/cbench.err" || true)
  grep -v 'errno: 2,\|response status 2 != 0' "$DIR/cbench.err" | tail -5 >&2 || true
}
drain_row() { # impl case threads label drain-json
  python3 - "$@" <<'PY'
import json, sys
impl, case, threads, label = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
d = json.loads(sys.argv[5])
row = {"label": label, "section": "cclient", "impl": impl, "case": case, "threads": threads,
       "files": d["files"], "drain_seconds": d["drain_seconds"]}
if d["missing"]:
    row["missing"] = d["missing"]
    row["note"] = "%d files still missing on a storage after the timeout" % d["missing"]
print(json.dumps(row))
PY
}

declare -A IMPL_NAME=([ours-nofsync]="ours, fsync_before_reply=false" [ours-fsync]="ours, fsync_before_reply=true (default)" [ours-trunk]="ours, trunk files, fsync_before_reply=true (default)" [c]="FastDFS 6.16")

declare -A S1_IP=() S2_IP=() T_IP=() DIRECT_IP=()
up() { # impl index(0..3): its tracker and two storages on fresh data dirs, ready (warm-up
       # files replicated both ways); the addresses in T_IP, S1_IP, S2_IP, DIRECT_IP
  local impl=$1 i=$2
  local t_ip=$IP_PREFIX.$((IP_LAST + 3 * i)) s1_ip=$IP_PREFIX.$((IP_LAST + 3 * i + 1)) s2_ip=$IP_PREFIX.$((IP_LAST + 3 * i + 2))
  local d="$DIR/$impl" name=${IMPL_NAME[$impl]} line misses
  T_IP[$impl]=$t_ip; S1_IP[$impl]=$s1_ip; S2_IP[$impl]=$s2_ip
  mkdir -p "$d"/{tracker,st1,st2,client}
  if [ "$impl" = c ]; then
    c_tracker_conf "$d/tracker" "$t_ip" >"$d/tracker.conf"
    c_storage_conf "$d/st1" "$s1_ip" "$t_ip" >"$d/st1.conf"
    c_storage_conf "$d/st2" "$s2_ip" "$t_ip" >"$d/st2.conf"
    start "$impl/tracker" "$C_BIN/fdfs_trackerd" "$d/tracker.conf" start -N
  else
    local flag=false level=warn; [ "$impl" = ours-nofsync ] || flag=true
    ours_tracker_conf "$d/tracker" "$t_ip" >"$d/tracker.conf"
    if [ "$impl" = ours-trunk ]; then
      printf "$TRUNK_KEYS" >>"$d/tracker.conf"
      level=info  # the storages' flush count at exit
    fi
    ours_storage_conf "$d/st1" "$s1_ip" "$t_ip" $flag $level >"$d/st1.conf"
    ours_storage_conf "$d/st2" "$s2_ip" "$t_ip" $flag $level >"$d/st2.conf"
    start "$impl/tracker" "$BIN/fdfs_trackerd" "$d/tracker.conf" start --foreground
  fi
  client_conf "$d/client" "$t_ip" false >"$d/client-unpooled.conf"
  client_conf "$d/client" "$t_ip" true >"$d/client-pooled.conf"
  wait_port "$impl/tracker" "$t_ip" 22122
  for s in st1 st2; do
    if [ "$impl" = c ]; then start "$impl/$s" "$C_BIN/fdfs_storaged" "$d/$s.conf" start -N
    else start "$impl/$s" "$BIN/fdfs_storaged" "$d/$s.conf" start --foreground; fi
  done
  wait_active "$d/client-pooled.conf" 2 "$impl/tracker" "$impl/st1" "$impl/st2"
  # Ready once replication works both ways: a few files up, until both storages hold them
  # (a C storage starts pushing to its peer only seconds after both are ACTIVE).
  # (With trunk files, uploads wait for the tracker to pick the trunk server.)
  local tries=0
  until cbench "$d/client-pooled.conf" upload 2 0.1 $SIZE "$d/ids-warmup" warmup; [ -s "$d/ids-warmup" ]; do
    tries=$((tries + 1))
    [ $tries -lt 60 ] || { note "compare.sh: $impl: no upload went through: $(<"$DIR/child.out")"; exit 1; }
    sleep 1
  done
  drain "$(date +%s.%N)" 60 "$d/ids-warmup" "$d/st1" "$d/st2"
  case $line in *'"drain_seconds": null'*) note "compare.sh: $impl: no replication: $line"; exit 1 ;; esac
  note "cbench: $name: tracker $t_ip, storages $s1_ip $s2_ip (ready at ${SECONDS}s)"

  # Direct uploads go to the first storage; with trunk files to the trunk server, where
  # the tracker sends its uploads too (fdfs_monitor set_trunk_server without an id names
  # it; the storage ids are the addresses).
  local direct_ip=$s1_ip
  if [ "$impl" = ours-trunk ]; then
    direct_ip=$("$BIN/fdfs_monitor" "$d/client-pooled.conf" set_trunk_server group1 |
      sed -n 's/.*new trunk server: //p')
    case " $s1_ip $s2_ip " in *" $direct_ip "*) ;; *)
      note "compare.sh: $impl: no trunk server named: '$direct_ip'"; exit 1 ;; esac
  fi
  DIRECT_IP[$impl]=$direct_ip
}

cluster() { # impl index(0..3): the cluster up, every scenario, the cluster down
  local impl=$1 i=$2
  up "$impl" "$i"
  local d="$DIR/$impl" name=${IMPL_NAME[$impl]} line misses
  local t_ip=${T_IP[$impl]} s1_ip=${S1_IP[$impl]} s2_ip=${S2_IP[$impl]} direct_ip=${DIRECT_IP[$impl]}
  local t up what ids t_end
  for t in $THREADS_LIST; do
    what="fdfs_cbench ${SIZE}B c$t"
    for up in unpooled pooled direct; do
      # The start-up's data directories (and the run before) written back first.
      settle
      ids="$d/ids-c$t-$up"
      if [ $up = direct ]; then
        cbench "$d/client-pooled.conf" upload "$t" "$SECS" $SIZE "$ids" "$direct_ip:23000" "upload"
        emit "$impl" "upload-direct" "$what upload direct to one storage, pooled: $name" "$line" \
          storage="\"$direct_ip\""
      else
        cbench "$d/client-$up.conf" upload "$t" "$SECS" $SIZE "$ids" "upload"
        emit "$impl" "upload-$up" "$what upload via tracker, $up: $name" "$line"
      fi
      t_end=$(date +%s.%N)
      drain "$t_end" 60 "$ids" "$d/st1" "$d/st2"
      drain_row "$impl" "drain-$up" "$t" "$what replication drain after the uploads ($up): $name" "$line"
    done
    # Every file the cluster holds so far (both storages hold them all after the drains).
    cat "$d"/ids-c* >"$d/download-ids"
    cbench "$d/client-pooled.conf" download "$t" "$SECS" "$d/download-ids" "$s1_ip:23000" "download"
    emit "$impl" "download-direct" "$what download direct from one storage, pooled: $name" "$line" misses="$misses"
    cbench "$d/client-pooled.conf" download "$t" "$SECS" "$d/download-ids" "download"
    emit "$impl" "download-tracker" "$what download via tracker, pooled: $name" "$line" misses="$misses"
  done

  if [ "$impl" = c ]; then
    # A backlog on the C storage st1 for its stopped peer st2, then st2 started again:
    # first the C storage (C -> C), then ours on the same data (C -> ours).
    local peer since
    for peer in c ours; do
      stop "$impl/st2"
      wait_active "$d/client-pooled.conf" 1 "$impl/tracker" "$impl/st1"
      cbench "$d/client-pooled.conf" upload 16 "$SECS" $SIZE "$d/ids-backlog-$peer" "backlog"
      since=$(date +%s.%N)
      if [ $peer = c ]; then start "$impl/st2" "$C_BIN/fdfs_storaged" "$d/st2.conf" start -N
      else
        ours_storage_conf "$d/st2" "$s2_ip" "$t_ip" false >"$d/st2-ours.conf"
        start "$impl/st2" "$BIN/fdfs_storaged" "$d/st2-ours.conf" start --foreground
      fi
      drain "$since" 120 "$d/ids-backlog-$peer" "$d/st2"
      python3 - "$peer" "$line" <<'PY'
import json, sys
peer, d = sys.argv[1], json.loads(sys.argv[2])
span = None
if d["drain_seconds"] is not None and d["first_seconds"] is not None:
    span = d["drain_seconds"] - d["first_seconds"]
rate = round((d["files"] - 1) / span, 1) if span and d["files"] > 1 else None
row = {"label": "replication of a backlog from a C storage to %s (peer restarted)" % (
           "a C storage" if peer == "c" else "our storage, fsync_before_reply=false"),
       "section": "cclient", "impl": "c" if peer == "c" else "ours-nofsync",
       "case": "backlog", "threads": 16, "files": d["files"], "ops_per_sec": rate,
       "catchup_seconds": d["drain_seconds"], "first_file_seconds": d["first_seconds"]}
if d["missing"]:
    row["missing"] = d["missing"]
print(json.dumps(row))
PY
    done
  fi
  down "$impl" flushes
}

down() { # impl flushes-case: stops the cluster (ours-trunk: then the row of its flushes per
         # upload, case flushes-case) and removes its files
  local impl=$1 case=$2 d="$DIR/$1"
  stop "$impl/st1" "$impl/st2" "$impl/tracker"
  if [ "$impl" = ours-trunk ]; then
    # Flushes per upload: both storages' flushes (each logs its count at exit) over the
    # files uploaded (warm-up included).
    python3 - "$DIR/$impl" "$d" "$case" <<'PY'
import json, re, sys
from pathlib import Path
logs, d = Path(sys.argv[1]), Path(sys.argv[2])
flushes = []
for st in ("st1", "st2"):
    text = (logs / (st + ".out")).read_text(errors="replace")
    m = re.findall(r"(\d+) flush\(es\) to disk before replies", text)
    flushes.append(int(m[-1]) if m else None)
uploads = sum(len([l for l in open(p) if l.strip()]) for p in d.glob("ids-*"))
row = {"label": "flushes to disk per upload (both storages, replication included), trunk files",
       "section": "cclient", "impl": "ours-trunk", "case": sys.argv[3], "uploads": uploads,
       "flushes": flushes}
if None not in flushes and uploads:
    row["flushes_per_upload"] = round(sum(flushes) / uploads, 3)
print(json.dumps(row))
PY
  fi
  rm -rf "$d"  # its files' deletion goes before the next settle, not into its figures
}

# disk_flush WHEN: what one flush costs on this disk now (a row), so that the figures of
# runs on other days can be read side by side: 200 times, 4 KiB appended to a file in
# DIR, then fdatasync; the median and the 99th percentile.
disk_flush() {
  python3 - "$DIR" "$1" <<'PY'
import json, os, sys, time
path = os.path.join(sys.argv[1], "flush-probe")
fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
took = []
try:
    for _ in range(200):
        os.write(fd, bytes(4096))
        t = time.perf_counter()
        os.fdatasync(fd)
        took.append((time.perf_counter() - t) * 1000)
finally:
    os.close(fd)
    os.unlink(path)
took.sort()
print(json.dumps({"label": "the disk: one flush of 4 KiB appended (fdatasync), " + sys.argv[2],
                  "section": "cclient", "case": "disk-flush", "when": sys.argv[2],
                  "p50_ms": round(took[len(took) // 2], 3),
                  "p99_ms": round(took[len(took) * 99 // 100], 3)}))
PY
}

# (not in a pipe: a subshell would keep the daemons' pids from cleanup)
i=0
settle
disk_flush "before the clusters" >>"$DIR/rows.jsonl"
for impl in ours-nofsync ours-fsync ours-trunk c; do
  case " ${CBENCH_CLUSTERS:-ours-nofsync ours-fsync ours-trunk c} " in *" $impl "*) ;; *) i=$((i + 1)); continue ;; esac
  settle
  cluster $impl $i >>"$DIR/rows.jsonl"
  i=$((i + 1))
done

# The trunk target, in alternating rounds: ours with trunk files and flushes and FastDFS
# without either, both clusters up (fresh) side by side, only one loaded at a time. Each
# round runs 16 threads of 4 KiB uploads via the tracker, unpooled then pooled, against
# each cluster in turn (ours first in odd rounds, FastDFS first in even ones); after each
# run, until both storages of its cluster hold its files (no replication left to fall in
# the next run), then the disk let settle. A load that changes over minutes on a shared machine falls on
# both columns alike; the rows give every round and the medians. Then every file of the
# rounds is looked for on both storages of its cluster, and our flushes per upload.
rounds() {
  local r impl order up ids line misses what="fdfs_cbench ${SIZE}B c16"
  up ours-trunk 2; up c 3
  for r in $(seq "$ROUNDS"); do
    order="ours-trunk c"; [ $((r % 2)) = 1 ] || order="c ours-trunk"
    for up in unpooled pooled; do
      for impl in $order; do
        settle
        ids="$DIR/$impl/ids-round$r-$up"
        cbench "$DIR/$impl/client-$up.conf" upload 16 "$SECS" $SIZE "$ids" "upload"
        emit "$impl" "round-$up" "$what upload via tracker, $up, round $r: ${IMPL_NAME[$impl]}" "$line" \
          round="$r"
        # Replication of the run finishes within its cluster before the next run starts:
        # a backlog left behind would run in the next run's time, maybe the other's.
        drain "$(date +%s.%N)" 60 "$ids" "$DIR/$impl/st1" "$DIR/$impl/st2"
        drain_row "$impl" "round-drain-$up" 16 \
          "$what replication drain after the uploads ($up), round $r: ${IMPL_NAME[$impl]}" "$line"
      done
    done
  done
  for impl in ours-trunk c; do
    cat "$DIR/$impl"/ids-round* >"$DIR/$impl/round-ids"
    drain "$(date +%s.%N)" 60 "$DIR/$impl/round-ids" "$DIR/$impl/st1" "$DIR/$impl/st2"
    drain_row "$impl" "round-drain" 16 "$what every file of the rounds on both storages: ${IMPL_NAME[$impl]}" "$line"
  done
  down ours-trunk round-flushes; down c round-flushes
}
CLUSTERS=" ${CBENCH_CLUSTERS:-ours-nofsync ours-fsync ours-trunk c} "
if [[ $CLUSTERS == *" ours-trunk "* && $CLUSTERS == *" c "* && $ROUNDS -gt 0 ]]; then
  settle
  disk_flush "before the rounds" >>"$DIR/rows.jsonl"
  rounds >>"$DIR/rows.jsonl"
fi

cat "$DIR/rows.jsonl"
[ "${CBENCH_TABLE:-1}" = 0 ] || python3 "$HERE/table.py" "$DIR/rows.jsonl" >&2
