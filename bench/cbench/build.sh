#!/usr/bin/env bash
# Builds fdfs_cbench against the official C client library: builds C FastDFS 6.16 from
# ../shared/interop into target/c-fastdfs first if needed (once per checkout), then
# compiles fdfs_cbench.c into target/c-fastdfs/fdfs_cbench. Prints the binary's path.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
C=${FDFS_C_DIR:-$ROOT/target/c-fastdfs}
INTEROP=${FDFS_INTEROP:-$ROOT/../shared/interop}
bash "$INTEROP/build-c-fastdfs.sh" "$C" >&2
OUT="$C/fdfs_cbench"
if [ ! -x "$OUT" ] || [ "$HERE/fdfs_cbench.c" -nt "$OUT" ]; then
  gcc -O2 -Wall -Werror -D_GNU_SOURCE -o "$OUT" "$HERE/fdfs_cbench.c" \
    -I"$C/usr/include" -I"$C/usr/include/fastcommon" -I"$C/usr/include/fastdfs" \
    -L"$C/usr/lib" -L"$C/usr/lib64" -Wl,-rpath,"$C/usr/lib:$C/usr/lib64" \
    -lfdfsclient -lfastcommon -lpthread
fi
echo "$OUT"
