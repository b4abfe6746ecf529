#!/usr/bin/env bash
# Builds the nginx module (ngx-fastdfs-module) and an nginx to load it into.
#
#   scripts/build-nginx.sh            vendored: nginx 1.28 from the nginx-src crate, built
#                                     together with the module (for tests and the demo)
#   NGINX=debian scripts/build-nginx.sh
#                                     the module against Debian's packaged nginx (nginx +
#                                     nginx-dev), loadable into /usr/sbin/nginx
#   scripts/build-nginx.sh check      cargo fmt --check + clippy -D warnings for the module
#   scripts/build-nginx.sh test       the module's serving logic (serve/), without nginx
#
# Results (NGX_TARGET_DIR, default <repo>/target-ngx):
#   vendored: $NGX_TARGET_DIR/dist/sbin/nginx, $NGX_TARGET_DIR/dist/modules/ngx_http_fastdfs_module.so
#   debian:   $NGX_TARGET_DIR/dist-debian/modules/ngx_http_fastdfs_module.so
#             (install: cp it to /usr/lib/nginx/modules/ and add
#              `load_module modules/ngx_http_fastdfs_module.so;` to /etc/nginx/nginx.conf)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CRATE="$ROOT/ngx-fastdfs-module"
OUT=${NGX_TARGET_DIR:-$ROOT/target-ngx}
MODE=${NGINX:-vendored}
SO_NAME=libngx_http_fastdfs_module.so
. "$ROOT/scripts/common.sh"


export PATH="$HOME/.cargo/bin:$PATH"
# bindgen needs libclang; nginx needs pcre2, zlib and openssl headers
BUILD_PKGS=(build-essential pkg-config libclang-dev libpcre2-dev zlib1g-dev libssl-dev)

build_vendored() {
  install_packages "${BUILD_PKGS[@]}"
  log "building nginx (vendored) + ngx_http_fastdfs_module"
  (cd "$CRATE" && CARGO_TARGET_DIR="$OUT" cargo build --release --locked)
  local nginx
  nginx=$(ls -t "$OUT"/release/build/nginx-sys-*/out/objs/nginx 2>/dev/null | head -1)
  [ -x "$nginx" ] || die "vendored nginx binary not found under $OUT/release/build"
  mkdir -p "$OUT/dist/sbin" "$OUT/dist/modules"
  install -m 0755 "$nginx" "$OUT/dist/sbin/nginx"
  install -m 0755 "$OUT/release/$SO_NAME" "$OUT/dist/modules/ngx_http_fastdfs_module.so"
  "$OUT/dist/sbin/nginx" -v 2>&1 | sed 's/^/    /'
  echo "    $OUT/dist/sbin/nginx"
  echo "    $OUT/dist/modules/ngx_http_fastdfs_module.so"
}

build_debian() {
  install_packages "${BUILD_PKGS[@]}" nginx nginx-dev
  local src="$OUT/debian-nginx-src"
  log "configuring Debian's nginx source tree ($(dpkg-query -W -f='${Version}' nginx))"
  rm -rf "$src"
  mkdir -p "$OUT"
  cp -r /usr/share/nginx/src "$src"
  (
    cd "$src"
    # shellcheck disable=SC1091
    . ./conf_flags
    ./configure --with-cc-opt="-g -O2 -fPIC" --with-ld-opt="-fPIC" "${NGX_CONF_FLAGS[@]}" \
      --builddir="$src/objs" >"$OUT/debian-configure.log" 2>&1 ||
      { tail -20 "$OUT/debian-configure.log"; exit 1; }
  )
  log "building ngx_http_fastdfs_module against it"
  (cd "$CRATE" && NGINX_SOURCE_DIR="$src" NGINX_BUILD_DIR="$src/objs" \
    CARGO_TARGET_DIR="$OUT/debian" cargo build --release --locked --no-default-features)
  mkdir -p "$OUT/dist-debian/modules"
  install -m 0644 "$OUT/debian/release/$SO_NAME" "$OUT/dist-debian/modules/ngx_http_fastdfs_module.so"
  # prove it loads into the packaged binary
  local t
  t=$(mktemp -d)
  cat >"$t/nginx.conf" <<CONF
load_module $OUT/dist-debian/modules/ngx_http_fastdfs_module.so;
error_log $t/error.log;
pid $t/nginx.pid;
events {}
http { server { listen 127.0.0.1:1; location /x { return 204; } } }
CONF
  /usr/sbin/nginx -t -p "$t" -c "$t/nginx.conf" -e "$t/error.log"
  rm -rf "$t"
  echo "    $OUT/dist-debian/modules/ngx_http_fastdfs_module.so"
}

check() {
  install_packages "${BUILD_PKGS[@]}"
  cd "$CRATE"
  cargo fmt -- --check
  CARGO_TARGET_DIR="$OUT" cargo clippy --release --locked --all-targets -- -D warnings
}

# The serving logic lives in serve/ (no nginx symbols), where cargo test reaches it.
test_serve() {
  cd "$CRATE"
  CARGO_TARGET_DIR="$OUT" cargo test --locked -p ngx-fastdfs-serve
}

case "${1:-build}" in
  check) check ;;
  test) test_serve ;;
  build|nginx|"")
    case "$MODE" in
      vendored) build_vendored ;;
      debian) build_debian ;;
      *) die "NGINX must be vendored or debian (got $MODE)" ;;
    esac ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
