#!/usr/bin/env bash
# `make run-behind-nginx`: the production layout on one machine, as an ordinary user.
#
#   Redis       the configured one (WSREDIS_REDIS_URL), else 127.0.0.1:6379 if it answers,
#               else a private redis-server on var/run/redis.sock (RUN_REDIS=private forces it)
#   HTTP pool   wsredis serve --mode http       on unix:var/run/http.sock (metrics :9101)
#   WS pool     wsredis serve --mode websocket  on unix:var/run/ws.sock   (metrics :9102)
#   nginx       on 127.0.0.1:8080, config rendered from nginx/ into var/nginx/
#
# The database is migrated on every start and the fixtures are loaded on the first one (when
# the binary has `migrate` / `loaddata`). Ctrl-C (or TERM) stops everything gracefully; if one
# part dies, the rest is stopped and the script exits 1. Every path and port can be overridden
# (the tests run this script on free ports in a temporary VAR), and nginx's size with
# NGINX_WORKERS, NGINX_CONNECTIONS and NGINX_NOFILE (nginx/render.sh; `make stress-nginx`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VAR=${VAR:-$ROOT/var}
BIN=${WSREDIS_BIN:-$ROOT/target/release/wsredis}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
NGINX_LISTEN=${NGINX_LISTEN:-127.0.0.1:8080}
HTTP_METRICS_BIND=${HTTP_METRICS_BIND:-127.0.0.1:9101}
WS_METRICS_BIND=${WS_METRICS_BIND:-127.0.0.1:9102}
HTTP_WORKERS=${HTTP_WORKERS:-2}
WS_WORKERS=${WS_WORKERS:-2}
FIXTURES=${FIXTURES:-$ROOT/fixtures/data.json}
STATIC_ROOT=${STATIC_ROOT:-$ROOT/server/static}
# History of the chat facility, for both pools: the HTTP pool publishes (user and group chat)
# through it, the websocket pool recovers from it (docs/protocol.md); empty = off.
export WSREDIS_HISTORY=${WSREDIS_HISTORY-chat=100:3600}
[ -n "$WSREDIS_HISTORY" ] || unset WSREDIS_HISTORY
RUN="$VAR/run"
NG="$VAR/nginx"

log() { printf 'run-behind-nginx: %s\n' "$*" >&2; }

mkdir -p "$RUN" "$NG/tmp" "$VAR/log"
export WSREDIS_DATABASE_URL=${WSREDIS_DATABASE_URL:-sqlite://$VAR/wsredis.sqlite3}

pids=()
stopping=0
stop_all() {
  stopping=1
  trap '' INT TERM
  local p
  # Newest first: nginx, then the pools (graceful: websockets get 1001), then Redis.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    p=${pids[i]}
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -f "$RUN"/*.sock
}
on_signal() {
  log "stopping"
  stop_all
  exit 0
}
trap on_signal INT TERM
trap 'if [ "$stopping" = 0 ]; then stop_all; fi' EXIT

# Wait up to 20 s for a command to succeed.
await() {
  local what=$1
  shift
  for _ in $(seq 200); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  log "$what did not come up; see $VAR/log"
  exit 1
}

# --- Redis -----------------------------------------------------------------------------------
if [ -n "${WSREDIS_REDIS_URL:-}" ]; then
  log "Redis: $WSREDIS_REDIS_URL (configured)"
elif [ "${RUN_REDIS:-auto}" != private ] && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  export WSREDIS_REDIS_URL=redis://127.0.0.1:6379
  log "Redis: $WSREDIS_REDIS_URL (already running)"
else
  mkdir -p "$VAR/redis"
  redis-server --port 0 --unixsocket "$RUN/redis.sock" --unixsocketperm 700 \
    --dir "$VAR/redis" --save 60 1 --appendonly no --logfile "$VAR/log/redis.log" &
  pids+=($!)
  await "redis-server" redis-cli -s "$RUN/redis.sock" ping
  export WSREDIS_REDIS_URL="redis+unix://$RUN/redis.sock"
  log "Redis: private, $RUN/redis.sock"
fi

# --- database: migrate always, fixtures once -------------------------------------------------
if "$BIN" migrate --help >/dev/null 2>&1; then
  "$BIN" migrate
  if [ ! -e "$VAR/.fixtures-loaded" ] && [ -f "$FIXTURES" ] && "$BIN" loaddata --help >/dev/null 2>&1; then
    "$BIN" loaddata "$FIXTURES" && touch "$VAR/.fixtures-loaded"
  fi
else
  log "this wsredis has no migrate/loaddata subcommands yet: skipping the database set-up"
fi

# --- the two pools ---------------------------------------------------------------------------
pool() {
  local name=$1 mode=$2 workers=$3 metrics=$4
  rm -f "$RUN/$name.sock"
  "$BIN" serve --mode "$mode" --workers "$workers" --bind "unix:$RUN/$name.sock" \
    --socket-mode 600 --metrics-bind "$metrics" --pid-file "$RUN/$name.pid" \
    --log-file "$VAR/log/$name.log" &
  pids+=($!)
}
healthy() { curl -sf --unix-socket "$1" http://pool/healthz; }
pool http http "$HTTP_WORKERS" "$HTTP_METRICS_BIND"
pool ws websocket "$WS_WORKERS" "$WS_METRICS_BIND"
await "HTTP pool" healthy "$RUN/http.sock"
await "websocket pool" healthy "$RUN/ws.sock"

# --- nginx -----------------------------------------------------------------------------------
export LISTEN=$NGINX_LISTEN PREFIX=$NG STATIC_ROOT
export HTTP_SERVERS="unix:$RUN/http.sock" WS_SERVERS="unix:$RUN/ws.sock"
"$ROOT/nginx/render.sh" site >"$NG/wsredis.conf"
"$ROOT/nginx/render.sh" main >"$NG/nginx.conf"
"$NGINX" -q -t -e "$NG/error.log" -p "$NG" -c "$NG/nginx.conf"
"$NGINX" -e "$NG/error.log" -p "$NG" -c "$NG/nginx.conf" &
pids+=($!)
await "nginx" curl -sf "http://$NGINX_LISTEN/healthz"

log "ready: http://$NGINX_LISTEN/ (logs in $VAR/log and $NG; Ctrl-C stops everything)"
set +e
wait -n
status=$?
if [ "$stopping" = 0 ]; then
  log "a process exited (status $status): stopping the rest"
  stop_all
  exit 1
fi
