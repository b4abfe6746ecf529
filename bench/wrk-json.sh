#!/usr/bin/env bash
# wrk-json.sh LABEL URL CONNECTIONS SECONDS [PID]: one wrk run, printed as a JSON line.
# With PID (an nginx worker), also the CPU time that process spent per request
# (from /proc/PID/schedstat): the cost of one request, whatever share of the CPU the
# process got from the scheduler during the run.
# WRK_CPUS (a taskset list) keeps wrk on those CPUs; WRK_THREADS is its thread count.
set -euo pipefail
oncpu_ns() { [ -n "${1:-}" ] && awk '{print $1}' "/proc/$1/schedstat" 2>/dev/null || echo ""; }
before=$(oncpu_ns "${5:-}")
wrk=(wrk -t"${WRK_THREADS:-2}" -c"$3" -d"${4}s" --latency "$2")
[ -n "${WRK_CPUS:-}" ] && wrk=(taskset -c "$WRK_CPUS" "${wrk[@]}")
out=$("${wrk[@]}")
after=$(oncpu_ns "${5:-}")
python3 - "$1" "$out" "$before" "$after" <<'PY'
import json, re, sys
label, text, before, after = sys.argv[1:5]
def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
def mb(v):
    n, unit = re.match(r"([\d.]+)(B|KB|MB|GB)", v).groups()
    return float(n) * {"B": 1e-6, "KB": 1.024e-3, "MB": 1.048576, "GB": 1073.741824}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
requests = int(re.search(r"(\d+) requests in", text).group(1))
tps = mb(re.search(r"Transfer/sec:\s+(\S+)", text).group(1))
lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.M))
errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
row = {"label": label, "ops_per_sec": rps, "requests": requests, "mb_per_sec": round(tps, 1),
       "p50_ms": ms(lat["50"]) if "50" in lat else None,
       "p99_ms": ms(lat["99"]) if "99" in lat else None,
       "errors": int(errors.group(1)) if errors else 0}
if before and after and requests:
    row["worker_cpu_ns"] = int(after) - int(before)
print(json.dumps(row))
PY
