#!/usr/bin/env bash
# stress/nginx.sh: the stress scenarios through NGINX. Starts a private redis-server, wsredis
# (one worker per CPU) and NGINX with stress/nginx/stress.conf.in on free loopback ports, runs
# seed, seed-live, fanout and throughput against NGINX, writes the results under
# stress/results/nginx/, and stops everything it started.
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

RPORT=$(free_port); SPORT=$(free_port); NPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --loglevel warning \
    >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$RPORT"
"$BIN" serve --bind "127.0.0.1:$SPORT" --workers "$(nproc)" \
    --redis-url "redis://127.0.0.1:$RPORT" --metrics-bind off 2>"$WORK/wsredis.log" &
SERVER=$!
PIDS+=("$SERVER")
wait_port "$SPORT"
mkdir -p "$WORK"/{body,proxy,fastcgi,uwsgi,scgi}
sed -e "s|@WORK@|$WORK|g" -e "s|@SERVER_PORT@|$SPORT|g" -e "s|@NGINX_PORT@|$NPORT|g" \
    stress/nginx/stress.conf.in >"$WORK/nginx.conf"
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK" &
PIDS+=($!)
wait_port "$NPORT"

common=(--url "127.0.0.1:$NPORT" --server-pid "$SERVER" --redis-url "redis://127.0.0.1:$RPORT" --out "$OUT")
# The scenarios share this Redis: start each without the last one's stored message, which
# would otherwise be replayed to every new subscriber (ws4redis replay) and counted against it.
fresh() { redis-cli -p "$RPORT" flushall >/dev/null; }
fresh; "$TOOL" seed "${common[@]}"
fresh; "$TOOL" seed-live "${common[@]}"
fresh; "$TOOL" fanout "${common[@]}" -n 10000 -m 100 -r 10
fresh; "$TOOL" throughput "${common[@]}" --publisher redis -d 10
