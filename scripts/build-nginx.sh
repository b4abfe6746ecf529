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
#             ($NGX_TARGET_DIR/dist-debian/nginx-built-against: nginx-dev version, ABI)
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

# nginx-sys's build script configures the vendored nginx and asks cargo to run it again
# when objs/Makefile or objs/ngx_auto_config.h change. Configure writes them during that
# very run, after the time cargo keeps as the run's reference (the date it gives the
# script's `output`), so the next build would run it again and rebuild nginx-sys, ngx and
# the module for nothing. They are the files that run read: date them back to it. A later
# configure (new nginx-src, other flags) writes them anew and still triggers a rebuild.
settle_vendored_configure() {
  local output f
  for output in "$OUT"/release/build/nginx-sys-*/output; do
    [ -f "$output" ] || continue
    for f in "${output%/output}"/out/objs/{Makefile,ngx_auto_config.h}; do
      if [ -f "$f" ] && [ "$f" -nt "$output" ]; then touch -m -r "$output" "$f"; fi
    done
  done
}

build_vendored() {
  install_packages "${BUILD_PKGS[@]}"
  log "building nginx (vendored) + ngx_http_fastdfs_module"
  (cd "$CRATE" && CARGO_TARGET_DIR="$OUT" cargo build --release --locked)
  settle_vendored_configure
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
  local src="$OUT/debian-nginx-src" version abi
  version=$(dpkg-query -W -f='${Version}' nginx-dev)
  # the ABI Debian's module packages depend on (libnginx-mod-*: nginx-abi-X)
  abi=$(sed -n 's/^nginx:abi=//p' /usr/share/nginx/src/debian/libnginx-mod.abisubstvars 2>/dev/null || true)
  local flags=(--with-cc-opt="-g -O2 -fPIC" --with-ld-opt="-fPIC")
  # Configured again only when nginx-dev or these flags change: a new objs/Makefile makes
  # cargo rebuild the bindings and the module.
  local stamp="nginx-dev $version ${flags[*]}"
  if [ -f "$src/objs/Makefile" ] && [ "$(cat "$src/.configured" 2>/dev/null)" = "$stamp" ]; then
    log "Debian's nginx source tree is configured ($version)"
  else
    log "configuring Debian's nginx source tree ($version)"
    rm -rf "$src"
    mkdir -p "$OUT"
    cp -r /usr/share/nginx/src "$src"
    (
      cd "$src"
      # shellcheck disable=SC1091
      . ./conf_flags
      ./configure "${flags[@]}" "${NGX_CONF_FLAGS[@]}" \
        --builddir="$src/objs" >"$OUT/debian-configure.log" 2>&1 ||
        { tail -20 "$OUT/debian-configure.log"; exit 1; }
    )
    echo "$stamp" >"$src/.configured"
  fi
  log "building ngx_http_fastdfs_module against it"
  (cd "$CRATE" && NGINX_SOURCE_DIR="$src" NGINX_BUILD_DIR="$src/objs" \
    CARGO_TARGET_DIR="$OUT/debian" cargo build --release --locked --no-default-features)
  mkdir -p "$OUT/dist-debian/modules"
  install -m 0644 "$OUT/debian/release/$SO_NAME" "$OUT/dist-debian/modules/ngx_http_fastdfs_module.so"
  # what it was built against, for its Debian package (scripts/build-deb.sh)
  printf 'version=%s\nabi=%s\n' "$version" "$abi" >"$OUT/dist-debian/nginx-built-against"
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
  # (NGINX is also the variable nginx takes inherited sockets from)
  env -u NGINX /usr/sbin/nginx -t -p "$t" -c "$t/nginx.conf" -e "$t/error.log"
  rm -rf "$t"
  echo "    $OUT/dist-debian/modules/ngx_http_fastdfs_module.so"
}

check() {
  install_packages "${BUILD_PKGS[@]}"
  cd "$CRATE"
  cargo fmt -- --check
  CARGO_TARGET_DIR="$OUT" cargo clippy --release --locked --all-targets -- -D warnings
  settle_vendored_configure
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
