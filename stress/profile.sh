#!/usr/bin/env bash
# stress/profile.sh: where a fan-out's time goes. Runs the `fanout` scenario (10,000
# subscribers at 10 msg/s by default), samples every CPU with `perf record -a -g` for a few
# seconds in its middle, and writes under stress/results/profile/:
#   flamegraph.svg  the server's workers and the load tool (inferno), the kernel included
#   summary.txt     time per process, the kernel's share, and the top functions
#   fanout.*        the scenario's own report
# Needs perf (Debian: linux-perf) and inferno (cargo install inferno); installs them if missing.
# Usage: stress/profile.sh [wsredis binary] [wsredis-stress binary] [extra fanout args...]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/wsredis}
TOOL=${2:-target/release/wsredis-stress}
shift $(( $# < 2 ? $# : 2 ))
OUT=${STRESS_OUT:-stress/results}/profile
SECONDS_SAMPLED=${PROFILE_SECONDS:-5}
command -v perf >/dev/null 2>&1 || scripts/ensure-deps.sh linux-perf
command -v perf >/dev/null 2>&1 || { echo "stress/profile.sh: perf not found" >&2; exit 2; }
command -v inferno-flamegraph >/dev/null 2>&1 || cargo install --locked --quiet inferno
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/wsredis-profile.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

args=(-n 10000 -m 100 -r 10)
[ $# -gt 0 ] && args=("$@")
"$TOOL" fanout --server-bin "$BIN" --out "$OUT" --quiet "${args[@]}" > "$WORK/run.txt" 2>&1 &
run=$!
# Connecting 10,000 sockets and the warm-up take ~2 s; sample while messages flow.
sleep 4
perf record -F 1999 -e cpu-clock -a -g -o "$WORK/perf.data" sleep "$SECONDS_SAMPLED" 2>/dev/null
wait "$run" || { cat "$WORK/run.txt"; echo "stress/profile.sh: the fanout run failed" >&2; exit 1; }

# Fold the stacks; the load tool's threads are named tokio-rt-worker: call them load-tool.
perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf > "$WORK/all.folded"
grep -E '^(wsredis|tokio-rt-worker|wsredis-stress|redis-server);' "$WORK/all.folded" \
    | sed 's/^tokio-rt-worker;/load-tool;/' > "$WORK/ours.folded"
inferno-flamegraph --width 1400 --minwidth 2 \
    --title "fanout ${args[*]}: wsredis workers and the load tool on $(nproc) CPUs (perf -a, ${SECONDS_SAMPLED} s)" \
    < "$WORK/ours.folded" > "$OUT/flamegraph.svg"

# Reports are cut with head (perf then dies of SIGPIPE): no pipefail from here on.
set +o pipefail
{
    echo "fanout ${args[*]}, perf record -a -g for ${SECONDS_SAMPLED} s on $(nproc) CPUs"
    grep -E 'latency, last|throughput|cpu' "$WORK/run.txt"
    echo
    echo "share of all samples by process (swapper = idle):"
    perf report -i "$WORK/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null \
        | grep -E '^ +[0-9]' | head -8
    echo
    echo "share of all samples by process and where it ran (kernel or which binary):"
    perf report -i "$WORK/perf.data" --no-children --sort comm,dso --stdio -g none 2>/dev/null \
        | grep -E '^ +[0-9]' | head -8
    echo
    echo "wsredis workers: system calls and what they include (children):"
    perf report -i "$WORK/perf.data" --children --comm wsredis --sort sym --stdio -g none 2>/dev/null \
        | grep -E '__x64_sys_|tcp_sendmsg$|tcp_v4_rcv$|net_rx_action$|tcp_write_xmit$' | head -10 || true
    echo
    echo "top functions, every process (self time):"
    perf report -i "$WORK/perf.data" --no-children --sort comm,sym --stdio -g none 2>/dev/null \
        | grep -E '^ +[0-9]' | grep -v swapper | head -25
} > "$OUT/summary.txt"
cat "$OUT/summary.txt"
