#!/usr/bin/env bash
# Bounded fuzzing of fdfs-proto's decoders and parsers (the cargo-fuzz project in fuzz/).
#
#   scripts/fuzz.sh [seconds] [target...]
#
# Runs every target (or the ones named) for `seconds` each (default 10) and fails if any
# of them crashes, printing where the reproducer was written. Installs cargo-fuzz when it is
# missing. libFuzzer needs nightly-only rustc flags: on the stable toolchain they are allowed
# with RUSTC_BOOTSTRAP=1, set here for the cargo-fuzz commands only.
#
# Seeds are read from fuzz/corpus/<target>/ (committed); inputs the fuzzer adds go to
# fuzz/target/corpus-work/<target>/ (kept between runs, not committed). FUZZ_SANITIZER
# picks a sanitizer (default none: the crate is safe Rust; e.g. FUZZ_SANITIZER=address).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FUZZ="$ROOT/fuzz"
SECONDS_EACH=${1:-10}
shift || true
SANITIZER=${FUZZ_SANITIZER:-none}

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

case $SECONDS_EACH in '' | *[!0-9]*) die "usage: scripts/fuzz.sh [seconds] [target...]" ;; esac

export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || die "cargo not found: install Rust (rustup, stable >= 1.80) first"
command -v c++ >/dev/null || die "no C++ compiler (libFuzzer is C++): apt-get install build-essential"
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
cd "$FUZZ"
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi
[ ${#targets[@]} -gt 0 ] || die "no fuzz targets found in $FUZZ"

log "building ${#targets[@]} fuzz targets (sanitizer: $SANITIZER)"
if [ $# -gt 0 ]; then
  for t in "${targets[@]}"; do cargo fuzz build -s "$SANITIZER" "$t"; done
else
  cargo fuzz build -s "$SANITIZER"
fi

logs="$FUZZ/target/fuzz-logs"
mkdir -p "$logs"
# The config targets make scratch directories under the temp dir: keep them in fuzz/target.
export TMPDIR="$FUZZ/target/fuzz-tmp"
rm -rf "$TMPDIR" && mkdir -p "$TMPDIR"
failed=()
start=$(date +%s)
for t in "${targets[@]}"; do
  [ -d "$FUZZ/corpus/$t" ] || die "no seed corpus fuzz/corpus/$t"
  work="$FUZZ/target/corpus-work/$t"
  mkdir -p "$work" "$FUZZ/artifacts/$t"
  if cargo fuzz run -s "$SANITIZER" "$t" "$work" "$FUZZ/corpus/$t" -- \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$logs/$t.log" 2>&1; then
    stats=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$logs/$t.log" | tail -1 |
      sed -E 's/^#([0-9]+).*cov: ([0-9]+).*exec\/s: ([0-9]+).*/\1 runs, cov \2, \3 exec\/s/')
    printf '  %-14s ok   %s s, %s\n' "$t" "$SECONDS_EACH" "${stats:-?}"
  else
    failed+=("$t")
    printf '  %-14s FAILED\n' "$t"
    grep -E "panicked at|assertion|ERROR: libFuzzer|SUMMARY" "$logs/$t.log" | head -5 | sed 's/^/      /'
    repro=$(grep -oE "Test unit written to [^ ]+" "$logs/$t.log" | tail -1 | sed 's/Test unit written to //')
    if [ -n "$repro" ]; then
      case $repro in /*) ;; *) repro="$FUZZ/$repro" ;; esac
      printf '      reproducer: %s\n' "$repro"
      printf '      replay:     (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s %s %s %s)\n' \
        "$SANITIZER" "$t" "$repro"
    fi
    printf '      full log:   %s\n' "$logs/$t.log"
  fi
done
log "fuzzing took $(($(date +%s) - start)) s for ${#targets[@]} targets"
if [ ${#failed[@]} -gt 0 ]; then
  die "fuzz targets failed: ${failed[*]} (add each crash as a regression test in fdfs-proto)"
fi
