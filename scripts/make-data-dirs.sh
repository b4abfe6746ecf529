#!/bin/sh
# Makes every data directory of a store path (data/00/00 ... data/FF/FF for
# subdir_count_per_path = 256) that is missing, the last one last, as C FastDFS makes
# them. Run it before starting a C storage on a store path our storage wrote (a
# rollback): our storage makes a directory only when a file first goes into it, and a C
# storage that finds the last one missing makes them all itself but then, once it has
# synced its group's files, also takes the path for a replaced disk and downloads every
# file of it again from a peer (storage_func.c, storage_check_and_make_data_dirs).
#
#   scripts/make-data-dirs.sh STORE_PATH [SUBDIR_COUNT_PER_PATH]    (default 256)
#
# Run it as the user the storage runs as. It never makes STORE_PATH/data itself.
set -eu

[ $# -ge 1 ] && [ $# -le 2 ] || {
  echo "usage: $0 STORE_PATH [SUBDIR_COUNT_PER_PATH]" >&2
  exit 2
}
data=$1/data
n=${2:-256}
case $n in '' | *[!0-9]*) echo "$0: bad subdir count: $n" >&2; exit 2 ;; esac
[ "$n" -ge 1 ] && [ "$n" -le 256 ] || { echo "$0: subdir count $n not in 1..256" >&2; exit 2; }
[ -d "$data" ] || { echo "$0: $data is no directory (is the disk mounted?)" >&2; exit 1; }

last=$(printf %02X $((n - 1)))
if [ -d "$data/$last/$last" ]; then
  exit 0
fi
cd "$data"
# The level names 00 .. last, split on spaces below (they hold nothing else).
names=
i=0
while [ $i -lt "$n" ]; do
  names="$names $(printf %02X $i)"
  i=$((i + 1))
done
for hh in $names; do
  mkdir -p -m 0755 "$hh"
  if [ "$hh" = "$last" ]; then
    # The last one last.
    others=
    for ll in $names; do [ "$ll" = "$last" ] || others="$others $ll"; done
    [ -z "$others" ] || (cd "$hh" && mkdir -p -m 0755 $others)
  else
    (cd "$hh" && mkdir -p -m 0755 $names)
  fi
done
mkdir -p -m 0755 "$last/$last"
