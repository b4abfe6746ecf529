#!/usr/bin/env bash
# wrk-json.sh LABEL URL CONNECTIONS SECONDS: one wrk run, printed as a JSON line.
set -euo pipefail
out=$(wrk -t2 -c"$3" -d"${4}s" --latency "$2")
python3 - "$1" "$out" <<'PY'
import json, re, sys
label, text = sys.argv[1], sys.argv[2]
def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
def mb(v):
    n, unit = re.match(r"([\d.]+)(B|KB|MB|GB)", v).groups()
    return float(n) * {"B": 1e-6, "KB": 1.024e-3, "MB": 1.048576, "GB": 1073.741824}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
tps = mb(re.search(r"Transfer/sec:\s+(\S+)", text).group(1))
lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.M))
errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
print(json.dumps({"label": label, "ops_per_sec": rps, "mb_per_sec": round(tps, 1),
                  "p50_ms": ms(lat["50"]) if "50" in lat else None,
                  "p99_ms": ms(lat["99"]) if "99" in lat else None,
                  "errors": int(errors.group(1)) if errors else 0}))
PY
