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
set -euo pipefail

ROOT=$(cd "$(dirname "$0")" && pwd)
cd "$ROOT"
RUN_DIR="$ROOT/run"
# Demo addresses: loopback only, one IP per daemon (FastDFS tells storages apart by IP).
DEMO_TRACKER_IP=127.0.0.11
DEMO_STORAGE_IP=127.0.0.12

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $*"; fi
}

# Debian packages the build and the tests need; installed only when missing.
install_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

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

write_demo_configs() {
  mkdir -p "$RUN_DIR"/{tracker,storage,client,store0}
  cat >"$RUN_DIR/tracker.conf" <<CONF
# Demo tracker: same keys as FastDFS's tracker.conf.
bind_addr = $DEMO_TRACKER_IP
port = 22122
base_path = $RUN_DIR/tracker
store_lookup = 0
reserved_storage_space = 1%
check_active_interval = 30
log_level = info
CONF
  cat >"$RUN_DIR/storage.conf" <<CONF
# Demo storage of group1.
group_name = group1
bind_addr = $DEMO_STORAGE_IP
port = 23000
base_path = $RUN_DIR/storage
store_path_count = 1
store_path0 = $RUN_DIR/store0
subdir_count_per_path = 256
tracker_server = $DEMO_TRACKER_IP:22122
heart_beat_interval = 2
stat_report_interval = 10
log_level = info
CONF
  cat >"$RUN_DIR/client.conf" <<CONF
base_path = $RUN_DIR/client
tracker_server = $DEMO_TRACKER_IP:22122
connect_timeout = 5
network_timeout = 30
CONF
}

wait_for_upload_target() {
  local deadline=$((SECONDS + 60))
  until "$ROOT/target/release/fdfs_monitor" "$RUN_DIR/client.conf" list 2>/dev/null | grep -q ACTIVE; do
    [ $SECONDS -lt $deadline ] || die "storage did not become ACTIVE; see $RUN_DIR/*/logs/"
    sleep 0.2
  done
}

cmd_demo() {
  build_release
  cmd_nginx
  cmd_stop >/dev/null 2>&1 || true
  write_demo_configs
  local bin="$ROOT/target/release"
  log "starting tracker on $DEMO_TRACKER_IP:22122 and storage on $DEMO_STORAGE_IP:23000"
  "$bin/fdfs_trackerd" "$RUN_DIR/tracker.conf" start
  "$bin/fdfs_storaged" "$RUN_DIR/storage.conf" start
  wait_for_upload_target
  local sample="$RUN_DIR/hello.txt"
  echo "Hello FastDFS, from $(hostname) at $(date -u +%FT%TZ)" >"$sample"
  local file_id
  file_id=$("$bin/fdfs_upload_file" "$RUN_DIR/client.conf" "$sample")
  start_demo_nginx
  cat <<TXT

Cluster is running (data and logs under $RUN_DIR).
Uploaded $sample as:

  $file_id

Fetch it back over HTTP (nginx with ngx_fastdfs_module on the storage):
  curl http://$DEMO_STORAGE_IP:8888/$file_id

or with the tools:
  $bin/fdfs_download_file $RUN_DIR/client.conf $file_id /tmp/hello.txt
  $bin/fdfs_file_info $RUN_DIR/client.conf $file_id
  $bin/fdfs_monitor $RUN_DIR/client.conf list

Stop it with: ./build.sh stop
TXT
}

cmd_stop() {
  local bin="$ROOT/target/release"
  stop_demo_nginx
  [ -f "$RUN_DIR/storage.conf" ] && "$bin/fdfs_storaged" "$RUN_DIR/storage.conf" stop || true
  [ -f "$RUN_DIR/tracker.conf" ] && "$bin/fdfs_trackerd" "$RUN_DIR/tracker.conf" stop || true
}

cmd_test() {
  ensure_toolchain
  install_packages python3 python3-venv python3-pip
  log "building (debug)"
  cargo build --workspace --all-targets
  log "unit and crate tests"
  cargo test --workspace
  log "nginx + ngx_fastdfs_module (vendored nginx, and for Debian's nginx)"
  install_packages keepalived
  cmd_nginx
  NGINX=debian cmd_nginx
  log "python clients (venvs under .venv-tests/)"
  bash "$ROOT/tests/setup-python.sh"
  log "integration tests: real daemons and nginx on loopback, PyPI clients, our tools"
  FDFS_REQUIRE_NGINX=1 FDFS_REQUIRE_BINARIES=1 FDFS_BIN_DIR="$ROOT/target/debug" "$ROOT/.venv-tests/runner/bin/python" -m pytest "$ROOT/tests/integration" -q
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

# The demo storage's nginx on $DEMO_STORAGE_IP:8888, from nginx-conf/ (needs `cmd_nginx`).
start_demo_nginx() {
  local dir="$RUN_DIR/nginx" dist="$ROOT/target-ngx/dist"
  mkdir -p "$dir/logs"
  cp "$ROOT"/nginx-conf/{http.conf,mime.types,mime.types.nginx} "$dir/"
  sed -e "s|^base_path = .*|base_path = $RUN_DIR/storage|" \
      -e "s|^store_path0 = .*|store_path0 = $RUN_DIR/store0|" \
      -e "/^tracker_server = /d" -e "s|^#include http.conf|tracker_server = $DEMO_TRACKER_IP:22122\n#include http.conf|" \
      "$ROOT/nginx-conf/mod_fastdfs.conf" >"$dir/mod_fastdfs.conf"
  sed -e "s|^load_module .*|load_module $dist/modules/ngx_http_fastdfs_module.so;|" \
      -e "s|^user www-data;|user root;|" -e "s|^pid .*|pid $dir/nginx.pid;|" \
      -e "s|error_log /[^ ]*|error_log $dir/logs/error.log|" \
      -e "s|access_log /[^ ;]*;|access_log $dir/logs/access.log;|" \
      -e "s|listen 8888;|listen $DEMO_STORAGE_IP:8888;|" \
      -e "s|fastdfs_conf [^;]*;|fastdfs_conf $dir/mod_fastdfs.conf;|" \
      "$ROOT/nginx-conf/storage-nginx.conf" >"$dir/nginx.conf"
  "$dist/sbin/nginx" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log"
}

stop_demo_nginx() {
  local dir="$RUN_DIR/nginx"
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
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
