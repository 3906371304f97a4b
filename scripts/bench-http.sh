#!/usr/bin/env bash
# Benchmark: wrk against /healthz with 1 worker and with one per CPU, then the time from a
# worker's death (kill -9) to its replacement answering. Prints a small markdown table.
# Loopback only; each run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/wsredis}
PORT=${PORT:-18080}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
N=$(nproc)

run_wrk() {
  local workers=$1
  "$BIN" serve --bind "127.0.0.1:$PORT" --workers "$workers" --metrics-bind off --log warn &
  local master=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.05; done
  local out
  out=$(wrk -t2 -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$PORT/healthz")
  kill -TERM "$master"; wait "$master" || true
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  echo "| $workers | $CONNS | $rps | $p50 | $p99 |"
}

echo "wrk -t2 -c$CONNS -d$DURATION /healthz on $(nproc) CPUs ($(uname -r)):"
echo
echo "| workers | connections | requests/s | p50 | p99 |"
echo "|---|---|---|---|---|"
run_wrk 1
run_wrk "$N"
echo
python3 scripts/bench-respawn.py "$BIN"
