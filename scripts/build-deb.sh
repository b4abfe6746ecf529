#!/usr/bin/env bash
# Debian packages, staged under target/deb-stage/ and built with dpkg-deb into target/deb/:
#
#   fastdfs-rs_<version>-1_<arch>.deb
#       /usr/bin/fdfs_trackerd, fdfs_storaged and every fdfs_* tool (not the benchmark);
#       systemd units running them as user fdfs; /etc/fdfs/{tracker,storage,client}.conf;
#       /var/lib/fdfs/{tracker,storage,store0} (made by postinst)
#   libnginx-mod-http-fastdfs_<version>-1_<arch>.deb
#       ngx_http_fastdfs_module.so for Debian's nginx, enabled through
#       /etc/nginx/modules-enabled/50-mod-http-fastdfs.conf; /etc/fdfs/mod_fastdfs.conf,
#       http.conf and mime.types
#
# Needs the release build (target/release) and the module built for Debian's nginx
# (NGINX=debian scripts/build-nginx.sh): `./build.sh deb` makes both first.
# Environment: DEB_REVISION (default 1), DEB_MAINTAINER.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/common.sh"
PKG_SRC="$ROOT/packaging/deb"
STAGE="$ROOT/target/deb-stage"
OUT="$ROOT/target/deb"
RELEASE="$ROOT/target/release"
NGX_DIST="${NGX_TARGET_DIR:-$ROOT/target-ngx}/dist-debian"
MAINTAINER=${DEB_MAINTAINER:-"fastdfs-rs maintainers <fastdfs-rs@localhost>"}
umask 022

export PATH="$HOME/.cargo/bin:$PATH"
install_packages dpkg-dev python3

VERSION=$(awk '/^\[workspace\.package\]/ { p = 1; next } /^\[/ { p = 0 }
               p && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' "$ROOT/Cargo.toml")
[ -n "$VERSION" ] || die "no version in [workspace.package] of Cargo.toml"
DEB_VERSION="$VERSION-${DEB_REVISION:-1}"
ARCH=$(dpkg --print-architecture)
# The changelog's date: the commit's, so that a rebuild of one commit gives the same files.
DATE=$(date -R -d "@$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)")

# The programs of the workspace but the benchmark's (bench/).
programs() {
  (cd "$ROOT" && cargo metadata --no-deps --format-version 1 --offline) | python3 -c '
import json, sys
meta = json.load(sys.stdin)
for pkg in meta["packages"]:
    if "/bench/" in pkg["manifest_path"]:
        continue
    for target in pkg["targets"]:
        if "bin" in target["kind"]:
            print(target["name"])
' | sort
}

# Start of a package: an empty staging tree with its doc directory.
stage_package() {
  local pkg=$1 dir="$STAGE/$1"
  rm -rf "$dir"
  mkdir -p "$dir/DEBIAN" "$dir/usr/share/doc/$pkg"
  cat >"$dir/usr/share/doc/$pkg/copyright" <<TXT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fastdfs-rs

Files: *
Copyright: the fastdfs-rs authors
License: GPL-3+
 This program is free software: you can redistribute it and/or modify it under the
 terms of the GNU General Public License as published by the Free Software Foundation,
 either version 3 of the License, or (at your option) any later version.
 .
 On Debian systems, the full text of the GNU General Public License version 3 can be
 found in /usr/share/common-licenses/GPL-3.
TXT
  printf '%s (%s) unstable; urgency=medium\n\n  * Built from commit %s.\n\n -- %s  %s\n' \
    "$pkg" "$DEB_VERSION" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$MAINTAINER" "$DATE" | gzip -9n >"$dir/usr/share/doc/$pkg/changelog.Debian.gz"
  install -m 0755 "$PKG_SRC/$pkg"/{postinst,prerm,postrm} "$dir/DEBIAN/"
}

# The shared libraries files need, as a Depends list (dpkg-shlibdeps wants a debian/control).
shlib_depends() {
  local t
  t=$(mktemp -d)
  mkdir "$t/debian"
  printf 'Source: fastdfs-rs\n\nPackage: fastdfs-rs\nArchitecture: any\n' >"$t/debian/control"
  (cd "$t" && dpkg-shlibdeps -O --warnings=0 "$@") | sed -n 's/^shlibs:Depends=//p'
  rm -rf "$t"
}

# End of a package: control file, conffiles, md5sums, then the .deb.
finish_package() {
  local pkg=$1 control=$2 dir="$STAGE/$1"
  find "$dir/etc" -type f -printf '/etc/%P\n' 2>/dev/null | sort >"$dir/DEBIAN/conffiles"
  [ -s "$dir/DEBIAN/conffiles" ] || rm "$dir/DEBIAN/conffiles"
  {
    printf 'Package: %s\nVersion: %s\nArchitecture: %s\nMaintainer: %s\n' \
      "$pkg" "$DEB_VERSION" "$ARCH" "$MAINTAINER"
    printf 'Installed-Size: %s\n' "$(du -sk --exclude=DEBIAN "$dir" | cut -f1)"
    printf '%s\n' "$control"
  } >"$dir/DEBIAN/control"
  (cd "$dir" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
    xargs -d '\n' md5sum >DEBIAN/md5sums)
  mkdir -p "$OUT"
  rm -f "$OUT/${pkg}_"*.deb
  local deb="$OUT/${pkg}_${DEB_VERSION}_${ARCH}.deb"
  dpkg-deb --root-owner-group -Zxz --build "$dir" "$deb" >/dev/null
  echo "    $deb"
}

build_fastdfs_rs() {
  local pkg=fastdfs-rs dir="$STAGE/fastdfs-rs" name unit bins=()
  stage_package "$pkg"
  mkdir -p "$dir/usr/bin" "$dir/lib/systemd/system" "$dir/etc/fdfs"
  mapfile -t bins < <(programs)
  [ ${#bins[@]} -gt 0 ] || die "no programs found in the workspace"
  for name in "${bins[@]}"; do
    [ -x "$RELEASE/$name" ] || die "$RELEASE/$name missing: cargo build --release --workspace"
    install -m 0755 "$RELEASE/$name" "$dir/usr/bin/$name"
    strip --remove-section=.comment --remove-section=.note --strip-unneeded "$dir/usr/bin/$name"
  done
  # The units of systemd/, run as the package's user, with its paths.
  local exec_start='s|^ExecStart=[^ ]*/(fdfs_[a-z_]+) [^ ]*/([a-z_]+\.conf)|ExecStart=/usr/bin/\1 /etc/fdfs/\2|'
  for unit in "$ROOT"/systemd/*.service; do
    local staged="$dir/lib/systemd/system/${unit##*/}"
    sed -E -e "$exec_start" -e 's|^Type=simple$|&\nUser=fdfs\nGroup=fdfs|' "$unit" >"$staged"
    grep -q '^User=fdfs$' "$staged" || die "$unit: no Type=simple line"
    chmod 0644 "$staged"
  done
  install -m 0644 "$PKG_SRC"/conf/{tracker,storage,client}.conf "$dir/etc/fdfs/"
  gzip -9n <"$ROOT/README.md" >"$dir/usr/share/doc/$pkg/README.md.gz"
  local libs
  libs=$(shlib_depends "$dir"/usr/bin/*)
  finish_package "$pkg" "Depends: adduser, $libs
Section: net
Priority: optional
Description: FastDFS tracker, storage server and client tools (Rust)
 fdfs_trackerd and fdfs_storaged speak FastDFS 6.16's wire protocol and read
 its tracker.conf and storage.conf; existing FastDFS clients work with them
 unchanged. The fdfs_* tools upload, download, append to, delete and inspect
 files and list the cluster.
 .
 The systemd units run the daemons as user fdfs with /etc/fdfs/tracker.conf
 and /etc/fdfs/storage.conf; they are not enabled on installation."
}

build_nginx_module() {
  local pkg=libnginx-mod-http-fastdfs dir="$STAGE/libnginx-mod-http-fastdfs" so abi nginx_version
  so="$NGX_DIST/modules/ngx_http_fastdfs_module.so"
  [ -f "$so" ] && [ -f "$NGX_DIST/nginx-built-against" ] ||
    die "$so missing: NGINX=debian scripts/build-nginx.sh"
  abi=$(sed -n 's/^abi=//p' "$NGX_DIST/nginx-built-against")
  nginx_version=$(sed -n 's/^version=//p' "$NGX_DIST/nginx-built-against")
  # Debian's modules depend on the ABI their nginx provides (nginx-abi-X); without one,
  # on the very nginx the module was built against.
  local nginx_dep=${abi:-"nginx (= $nginx_version)"}
  stage_package "$pkg"
  mkdir -p "$dir/usr/lib/nginx/modules" "$dir/usr/share/nginx/modules-available" "$dir/etc/fdfs" \
    "$dir/usr/share/doc/$pkg/examples"
  install -m 0644 "$so" "$dir/usr/lib/nginx/modules/"
  strip --remove-section=.comment --remove-section=.note --strip-unneeded \
    "$dir/usr/lib/nginx/modules/ngx_http_fastdfs_module.so"
  # An absolute path: the snippet also works for an nginx started with another prefix (-p).
  echo "load_module /usr/lib/nginx/modules/ngx_http_fastdfs_module.so;" \
    >"$dir/usr/share/nginx/modules-available/mod-http-fastdfs.conf"
  # mod_fastdfs.conf for a storage installed by fastdfs-rs with its defaults.
  sed -e 's|^base_path = .*|base_path = /var/lib/fdfs/storage|' \
      -e 's|^store_path0 = .*|store_path0 = /var/lib/fdfs/store0|' \
      -e '0,/^tracker_server = /s|^tracker_server = .*|tracker_server = 127.0.0.1:22122|' \
      -e '/^tracker_server = 192\./d' \
      "$ROOT/nginx-conf/mod_fastdfs.conf" >"$dir/etc/fdfs/mod_fastdfs.conf"
  install -m 0644 "$ROOT"/nginx-conf/{http.conf,mime.types} "$dir/etc/fdfs/"
  chmod 0644 "$dir/etc/fdfs/mod_fastdfs.conf"
  install -m 0644 "$ROOT"/nginx-conf/storage-nginx.conf "$dir/usr/share/doc/$pkg/examples/"
  gzip -9n <"$ROOT/ngx-fastdfs-module/README.md" >"$dir/usr/share/doc/$pkg/README.md.gz"
  local libs
  libs=$(shlib_depends "$dir/usr/lib/nginx/modules/ngx_http_fastdfs_module.so")
  finish_package "$pkg" "Depends: $nginx_dep, $libs
Recommends: nginx, fastdfs-rs
Section: httpd
Priority: optional
Description: nginx module serving FastDFS files (ngx_fastdfs_module, Rust)
 Serves the files of the FastDFS storage on the same host over HTTP, with
 ranges, conditional requests, anti-steal tokens and FLV; fetches a file that
 has not been replicated here yet from another storage of its group.
 .
 Built against Debian's nginx $nginx_version; enabled through
 /etc/nginx/modules-enabled, configured in /etc/fdfs/mod_fastdfs.conf."
}

log "Debian packages $DEB_VERSION ($ARCH)"
build_fastdfs_rs
build_nginx_module
