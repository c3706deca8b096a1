#!/usr/bin/env bash
# Smoke test of the README's first command on this clone: `make run` must bring deals in
# (/healthz answers 200, the deal count is positive) and Ctrl-C must stop every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
work=$(mktemp -d)
free_port() { "$py" -c 'from keepa_deals.redis_server import free_port; print(free_port())'; }
export VAR_DIR="$work/var" DATABASE_PATH="$work/var/deals.db"
DASHBOARD_PORT=$(free_port); KEEPA_SIM_PORT=$(free_port)
export DASHBOARD_PORT KEEPA_SIM_PORT
base="http://127.0.0.1:$DASHBOARD_PORT"
get() { "$py" -c 'import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
except Exception:
    sys.exit(1)' "$1"; }

setsid make run >"$work/run.log" 2>&1 </dev/null &
run_pid=$!
stop_all() { kill -INT -- "-$run_pid" 2>/dev/null || true; }
deadline=$((SECONDS + 240))
until get "$base/healthz" >/dev/null; do
  if ! kill -0 "$run_pid" 2>/dev/null || ((SECONDS > deadline)); then
    echo "smoke: make run never reported deals flowing; last log lines:" >&2
    tail -40 "$work/run.log" >&2
    stop_all
    exit 1
  fi
  sleep 2
done
echo "smoke: make run is healthy: $(get "$base/api/deal-count")"

stop_all
deadline=$((SECONDS + 60))
while kill -0 "$run_pid" 2>/dev/null || pgrep -s "$run_pid" >/dev/null; do
  if ((SECONDS > deadline)); then
    echo "smoke: processes of make run still alive 60 s after Ctrl-C:" >&2
    ps -o pid,cmd -s "$run_pid" >&2 || true
    kill -KILL -- "-$run_pid" 2>/dev/null || true
    exit 1
  fi
  sleep 1
done
echo "smoke: Ctrl-C stopped everything"
