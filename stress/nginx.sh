#!/usr/bin/env bash
# stress/nginx.sh: the stress scenarios through NGINX, as deployed by `make run-behind-nginx`.
# Starts a private redis-server, then scripts/run-behind-nginx.sh (the deployment kit's nginx
# config in front of an HTTP pool and a websocket pool of one worker per CPU, on unix sockets)
# on free loopback ports in a temporary directory, runs seed, seed-live, fanout, throughput
# and recovery against NGINX, writes the results under stress/results/nginx/, and stops
# everything it started. The kit's nginx is given as many workers as CPUs and enough
# connections for 10,000 websockets (each is a client and an upstream connection).
# Usage: stress/nginx.sh [wsredis binary] [wsredis-stress binary]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/wsredis}
TOOL=${2:-target/release/wsredis-stress}
OUT=${STRESS_OUT:-stress/results}/nginx
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[ -x "$NGINX" ] || { echo "stress/nginx.sh: nginx not found (apt-get install nginx-light)" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "stress/nginx.sh: nothing listens on port $1" >&2
    return 1
}

WORK=$(mktemp -d /tmp/wsredis-stress-nginx.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n 300000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

RPORT=$(free_port); NPORT=$(free_port); M1=$(free_port); M2=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --loglevel warning \
    >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$RPORT"
VAR="$WORK/var" WSREDIS_BIN="$BIN" NGINX="$NGINX" NGINX_LISTEN="127.0.0.1:$NPORT" \
    HTTP_METRICS_BIND="127.0.0.1:$M1" WS_METRICS_BIND="127.0.0.1:$M2" \
    HTTP_WORKERS=1 WS_WORKERS="$(nproc)" WSREDIS_REDIS_URL="redis://127.0.0.1:$RPORT" \
    NGINX_WORKERS="$(nproc)" NGINX_CONNECTIONS=40000 NGINX_NOFILE="$(ulimit -n)" \
    WSREDIS_HISTORY="chat=100:3600,recovery=10000:600" \
    scripts/run-behind-nginx.sh 2>"$WORK/run-behind-nginx.log" &
PIDS+=($!)
for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$NPORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$NPORT/healthz" >/dev/null || {
    cat "$WORK/run-behind-nginx.log" >&2
    echo "stress/nginx.sh: run-behind-nginx did not come up" >&2
    exit 1
}
# Memory and CPU are the websocket pool's (its master and workers).
SERVER=$(cat "$WORK/var/run/ws.pid")

common=(--url "127.0.0.1:$NPORT" --server-pid "$SERVER" --redis-url "redis://127.0.0.1:$RPORT" --out "$OUT")
# The scenarios share this Redis: start each without the last one's stored message, which
# would otherwise be replayed to every new subscriber (ws4redis replay) and counted against it.
fresh() { redis-cli -p "$RPORT" flushall >/dev/null; }
fresh; "$TOOL" seed "${common[@]}"
fresh; "$TOOL" seed-live "${common[@]}"
fresh; "$TOOL" fanout "${common[@]}" -n 10000 -m 100 -r 10
fresh; "$TOOL" throughput "${common[@]}" --publisher redis -d 10
# Recovery needs a facility with history (given to the pools above).
fresh; "$TOOL" recovery "${common[@]}" --facility recovery -n 5000 -d 10 -r 20
