#!/usr/bin/env bash
# Create (idempotently) the Python virtualenvs used by tests/integration:
#   .venv-tests/runner           pytest + pytest-timeout
#   .venv-tests/<client>         one venv per PyPI FastDFS client
# Pins live in tests/requirements.txt ("<venv>: <requirement>" lines).
# Re-running is cheap: a venv whose stamp matches its pins is left alone.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
venvs="$root/.venv-tests"
reqs="$here/requirements.txt"
mkdir -p "$venvs"

pick_python() {
    # $1 = minimum minor version (3.x)
    local min="$1" c
    for c in "${PYTHON:-}" /root/.pyenv/versions/3.11.7/bin/python3 python3.11 python3.12 python3 ; do
        [ -n "$c" ] || continue
        command -v "$c" >/dev/null 2>&1 || continue
        if "$c" -c "import sys; sys.exit(0 if sys.version_info >= (3,$min) else 1)" 2>/dev/null; then
            command -v "$c"; return 0
        fi
    done
    return 1
}

pick_python312() {
    local c
    for c in "${PYTHON312:-}" /root/.pyenv/versions/3.12.1/bin/python3 python3.12 python3.13 python3 ; do
        [ -n "$c" ] || continue
        command -v "$c" >/dev/null 2>&1 || continue
        if "$c" -c "import sys; sys.exit(0 if sys.version_info >= (3,12) else 1)" 2>/dev/null; then
            command -v "$c"; return 0
        fi
    done
    return 1
}

py_default="$(pick_python 9)" || { echo "setup-python: no python3 >= 3.9 found" >&2; exit 1; }
py312="$(pick_python312 || true)"

names="$(grep -v '^\s*#' "$reqs" | sed -n 's/^\s*\([A-Za-z0-9_]*\)\s*:.*/\1/p' | sort -u)"

for name in $names; do
    pins="$(grep -v '^\s*#' "$reqs" | sed -n "s/^\s*$name\s*:\s*//p")"
    py="$py_default"
    extra=()
    if [ "$name" = "aiofdfs" ]; then
        if [ -n "$py312" ]; then
            py="$py312"
        else
            # aiofdfs declares python>=3.12 but works on 3.11 for our usage.
            extra=(--ignore-requires-python)
        fi
    fi
    dir="$venvs/$name"
    stamp="$dir/.pins"
    want="$(printf '%s\n%s\n' "$py" "$pins")"
    if [ -x "$dir/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "setup-python: $name up to date"
        continue
    fi
    echo "setup-python: building venv $name with $py"
    rm -rf "$dir"
    "$py" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --disable-pip-version-check "${extra[@]}" $pins
    printf '%s' "$want" > "$stamp"
done
echo "setup-python: venvs ready under $venvs"
