#!/usr/bin/env bash
# One entry point for building, running and testing the project.
#
#   ./build.sh demo    build, start a local cluster under ./run/, upload a sample file
#   ./build.sh stop    stop the demo cluster
#   ./build.sh test    install what is missing, build, run every test
#   ./build.sh build   release build only (binaries in target/release/)
#   ./build.sh check   cargo fmt --check and clippy
#   ./build.sh nginx   nginx with ngx_fastdfs_module (NGINX=debian: the module for Debian's nginx)
#   ./build.sh bench   the benchmark (bench/run.sh), results in bench/results/
#   ./build.sh deb     Debian packages in target/deb/ (daemons and tools, nginx module)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")" && pwd)
cd "$ROOT"
. "$ROOT/scripts/common.sh"
RUN_DIR="$ROOT/run"
# Demo addresses: loopback only, one IP per daemon (FastDFS tells storages apart by IP).
# The classic six nodes: two trackers, group1 and group2 with two storages each; nginx
# with ngx_fastdfs_module listens on port 8888 of every storage.
DEMO_TRACKERS=(127.0.0.11 127.0.0.12)
DEMO_STORAGES=(group1:127.0.0.21 group1:127.0.0.22 group2:127.0.0.23 group2:127.0.0.24)


ensure_toolchain() {
  command -v cargo >/dev/null || [ -x "$HOME/.cargo/bin/cargo" ] ||
    die "cargo not found: install Rust (rustup, stable >= 1.80) first"
  export PATH="$HOME/.cargo/bin:$PATH"
  install_packages build-essential pkg-config
}

build_release() {
  ensure_toolchain
  log "building (release)"
  cargo build --release --workspace
}

tracker_lines() {
  local t
  for t in "${DEMO_TRACKERS[@]}"; do echo "tracker_server = $t:22122"; done
}

write_demo_configs() {
  local t n=0 entry group ip
  mkdir -p "$RUN_DIR/client"
  for t in "${DEMO_TRACKERS[@]}"; do
    n=$((n + 1))
    mkdir -p "$RUN_DIR/tracker$n"
    cat >"$RUN_DIR/tracker$n.conf" <<CONF
# Demo tracker $n: same keys as FastDFS's tracker.conf.
bind_addr = $t
port = 22122
base_path = $RUN_DIR/tracker$n
store_lookup = 0
reserved_storage_space = 1%
check_active_interval = 30
metrics_listen = $t:9101
storage_metrics_port = 9102
log_level = info
CONF
  done
  n=0
  for entry in "${DEMO_STORAGES[@]}"; do
    n=$((n + 1)); group=${entry%%:*}; ip=${entry#*:}
    mkdir -p "$RUN_DIR/storage$n/store0"
    cat >"$RUN_DIR/storage$n.conf" <<CONF
# Demo storage $n of $group.
group_name = $group
bind_addr = $ip
port = 23000
base_path = $RUN_DIR/storage$n
store_path_count = 1
store_path0 = $RUN_DIR/storage$n/store0
subdir_count_per_path = 256
$(tracker_lines)
heart_beat_interval = 2
stat_report_interval = 10
metrics_listen = $ip:9102
log_level = info
CONF
  done
  cat >"$RUN_DIR/client.conf" <<CONF
base_path = $RUN_DIR/client
$(tracker_lines)
connect_timeout = 5
network_timeout = 30
CONF
}

wait_all_active() {
  local want=${#DEMO_STORAGES[@]} deadline=$((SECONDS + 120))
  until [ "$("$ROOT/target/release/fdfs_monitor" "$RUN_DIR/client.conf" list 2>/dev/null |
            grep -c ' ACTIVE$' || true)" -ge "$want" ]; do
    [ $SECONDS -lt $deadline ] || die "storages did not all become ACTIVE; see $RUN_DIR/*/logs/"
    sleep 0.2
  done
}

# Runs each daemon of the demo with `start` (detached) or `stop`.
demo_daemons() {
  local action=$1 bin="$ROOT/target/release" n
  for n in $(seq 1 ${#DEMO_TRACKERS[@]}); do
    [ -f "$RUN_DIR/tracker$n.conf" ] && "$bin/fdfs_trackerd" "$RUN_DIR/tracker$n.conf" "$action" || true
  done
  for n in $(seq 1 ${#DEMO_STORAGES[@]}); do
    [ -f "$RUN_DIR/storage$n.conf" ] && "$bin/fdfs_storaged" "$RUN_DIR/storage$n.conf" "$action" || true
  done
}

cmd_demo() {
  build_release
  cmd_nginx
  cmd_stop >/dev/null 2>&1 || true
  write_demo_configs
  local bin="$ROOT/target/release" n entry
  local trackers="" storages=""
  for entry in "${DEMO_TRACKERS[@]}"; do trackers="$trackers $entry:22122"; done
  for entry in "${DEMO_STORAGES[@]}"; do storages="$storages ${entry#*:}:23000 (${entry%%:*})"; done
  log "starting trackers$trackers"
  log "starting storages$storages"
  for n in $(seq 1 ${#DEMO_TRACKERS[@]}); do "$bin/fdfs_trackerd" "$RUN_DIR/tracker$n.conf" start; done
  # The first storage of each group starts alone, so the second one joins it as a new
  # member and copies what it already holds.
  for n in $(seq 1 ${#DEMO_STORAGES[@]}); do "$bin/fdfs_storaged" "$RUN_DIR/storage$n.conf" start; done
  wait_all_active
  n=0
  for entry in "${DEMO_STORAGES[@]}"; do
    n=$((n + 1))
    start_demo_nginx "$n" "${entry#*:}" "${entry%%:*}"
  done
  local sample="$RUN_DIR/hello.txt"
  echo "Hello FastDFS, from $(hostname) at $(date -u +%FT%TZ)" >"$sample"
  local file_id group urls=""
  file_id=$("$bin/fdfs_upload_file" "$RUN_DIR/client.conf" "$sample")
  group=${file_id%%/*}
  for entry in "${DEMO_STORAGES[@]}"; do
    [ "${entry%%:*}" = "$group" ] && urls="$urls  curl http://${entry#*:}:8888/$file_id"$'\n'
  done
  cat <<TXT

Six-node cluster is running (data and logs under $RUN_DIR):
  trackers$trackers
  storages$storages
  nginx with ngx_fastdfs_module on every storage at port 8888.
  console: http://${DEMO_TRACKERS[0]}:9101/ (metrics: /metrics on port 9101 of the
  trackers and 9102 of the storages)
Uploaded $sample as:

  $file_id

Fetch it over HTTP from either storage of $group (the module fetches it from the other
one if replication has not delivered it yet):
$urls
or with the tools:
  $bin/fdfs_download_file $RUN_DIR/client.conf $file_id $RUN_DIR/downloaded.txt
  $bin/fdfs_file_info $RUN_DIR/client.conf $file_id
  $bin/fdfs_monitor $RUN_DIR/client.conf list

Stop it with: ./build.sh stop
TXT
}

cmd_stop() {
  local n
  for n in $(seq 1 ${#DEMO_STORAGES[@]}); do stop_demo_nginx "$n"; done
  demo_daemons stop
}

cmd_test() {
  ensure_toolchain
  install_packages python3 python3-venv python3-pip strace procps iptables faketime
  log "building (debug)"
  cargo build --workspace --all-targets
  log "unit and crate tests"
  cargo test --workspace
  log "fuzzing fdfs-proto's decoders and parsers (10 s per target)"
  bash "$ROOT/scripts/fuzz.sh" 10
  log "nginx + ngx_fastdfs_module (vendored nginx, and for Debian's nginx)"
  install_packages keepalived
  cmd_nginx
  NGINX=debian cmd_nginx
  bash "$ROOT/scripts/build-nginx.sh" test
  log "benchmark smoke run (tiny counts, so that bench/run.sh keeps working)"
  BENCH_SMOKE=1 bash "$ROOT/bench/run.sh" >/dev/null
  # every HTTP scenario compared, with the worker's CPU per request measured on both sides
  [ "$(grep -c 'module / static .*throughput_ratio=.*cpu_per_request_ratio=' "$ROOT/bench/results/latest.md")" = 4 ] ||
    die "bench smoke run: the report lacks the HTTP module/static ratios"
  log "Debian packages (installed, run and purged by tests/integration/test_packages.py)"
  cmd_deb
  log "python clients (venvs under .venv-tests/)"
  bash "$ROOT/tests/setup-python.sh"
  log "C FastDFS 6.16 daemons and tools, as peers and clients (built once, in target/c-fastdfs)"
  install_packages default-jdk-headless perl
  log "a browser for the console tests, Prometheus for the dashboard and alert rules"
  install_packages chromium prometheus
  local interop="$ROOT/../shared/interop"
  [ -d "$interop" ] || die "the C FastDFS sources are expected in $interop"
  bash "$interop/build-c-fastdfs.sh" "$ROOT/target/c-fastdfs"
  log "integration tests: real daemons and nginx on loopback, PyPI clients, our tools"
  # The partition tests need root for iptables, and non-root users may not have been
  # able to install faketime: both required only as root, skipped otherwise.
  local root_only=0
  if [ "$(id -u)" = 0 ]; then root_only=1; fi
  FDFS_REQUIRE_NGINX=1 FDFS_REQUIRE_BINARIES=1 FDFS_REQUIRE_TMPFS=1 FDFS_REQUIRE_C=1 FDFS_REQUIRE_BROWSER=1 FDFS_REQUIRE_PROMETHEUS=1 FDFS_C_DIR="$ROOT/target/c-fastdfs" FDFS_JAVA_SDK="$interop/fastdfs-client-java.tar.gz" FDFS_REQUIRE_IPTABLES=$root_only FDFS_REQUIRE_FAKETIME=$root_only FDFS_REQUIRE_PACKAGES=$root_only FDFS_BIN_DIR="$ROOT/target/debug" "$ROOT/.venv-tests/runner/bin/python" -m pytest "$ROOT/tests/integration" -q
}

cmd_check() {
  ensure_toolchain
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets -- -D warnings
}

# nginx + ngx_fastdfs_module: `./build.sh nginx` builds nginx from the vendored source with
# the module (target-ngx/dist/); `NGINX=debian ./build.sh nginx` builds the module for
# Debian's packaged nginx (target-ngx/dist-debian/). `./build.sh nginx check`: fmt+clippy.
cmd_nginx() {
  ensure_toolchain
  bash "$ROOT/scripts/build-nginx.sh" "$@"
}

# Debian packages (scripts/build-deb.sh): fastdfs-rs (daemons, tools, units, configs) and
# libnginx-mod-http-fastdfs (the module for Debian's nginx), into target/deb/.
cmd_deb() {
  build_release
  NGINX=debian cmd_nginx
  log "Debian packages"
  bash "$ROOT/scripts/build-deb.sh"
}

# nginx for demo storage N (ip, group) on port 8888, from nginx-conf/ (needs `cmd_nginx`).
start_demo_nginx() {
  local n=$1 ip=$2 group=$3 dir="$RUN_DIR/nginx$1" dist="$ROOT/target-ngx/dist"
  mkdir -p "$dir/logs"
  cp "$ROOT"/nginx-conf/{http.conf,mime.types,mime.types.nginx} "$dir/"
  sed -e "s|^base_path = .*|base_path = $RUN_DIR/storage$n|" \
      -e "s|^store_path0 = .*|store_path0 = $RUN_DIR/storage$n/store0|" \
      -e "s|^group_name = .*|group_name = $group|" \
      -e "/^tracker_server = /d" \
      "$ROOT/nginx-conf/mod_fastdfs.conf" >"$dir/mod_fastdfs.conf"
  # No [group] sections in the sample: keys appended at the end are global.
  tracker_lines >>"$dir/mod_fastdfs.conf"
  sed -e "s|^load_module .*|load_module $dist/modules/ngx_http_fastdfs_module.so;|" \
      -e "s|^user www-data;|user root;|" -e "s|^pid .*|pid $dir/nginx.pid;|" \
      -e "s|error_log /[^ ]*|error_log $dir/logs/error.log|" \
      -e "s|access_log /[^ ;]*;|access_log $dir/logs/access.log;|" \
      -e "s|listen 8888;|listen $ip:8888;|" \
      -e "s|fastdfs_conf [^;]*;|fastdfs_conf $dir/mod_fastdfs.conf;|" \
      "$ROOT/nginx-conf/storage-nginx.conf" >"$dir/nginx.conf"
  "$dist/sbin/nginx" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log"
}

stop_demo_nginx() {
  local dir="$RUN_DIR/nginx$1"
  [ -f "$dir/nginx.pid" ] && "$ROOT/target-ngx/dist/sbin/nginx" -p "$dir" -c "$dir/nginx.conf" \
    -e "$dir/logs/error.log" -s quit 2>/dev/null || true
}

case "${1:-}" in
  demo) cmd_demo ;;
  stop) cmd_stop ;;
  test) cmd_test ;;
  build) build_release ;;
  check) cmd_check ;;
  nginx) shift; cmd_nginx "$@" ;;
  bench) ensure_toolchain; bash "$ROOT/bench/run.sh" ;;
  deb) cmd_deb ;;
  *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
