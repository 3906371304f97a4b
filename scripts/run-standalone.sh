#!/usr/bin/env bash
# `make run-standalone`: set up and serve the demo on http://127.0.0.1:$PORT.
# - the database (var/wsredis.sqlite3 unless WSREDIS_DATABASE_URL is set) is migrated;
# - fixtures/data.json (admin, john, mary; password "secret") is loaded on the first run
#   (loaddata is idempotent, the marker only saves the time);
# - if no Redis answers at WSREDIS_REDIS_URL (default redis://127.0.0.1:6379), a private
#   redis-server is started under var/ on REDIS_PORT (default 6399) and stopped on exit.
# Ctrl-C stops the server (gracefully) and the private Redis.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/wsredis}
PORT=${PORT:-8000}
WORKERS=${WORKERS:-$(nproc)}
REDIS_PORT=${REDIS_PORT:-6399}
HEARTBEAT=${WSREDIS_HEARTBEAT:---heartbeat--}
export WSREDIS_DATABASE_URL=${WSREDIS_DATABASE_URL:-sqlite://var/wsredis.sqlite3}
# The chat pages recover what they missed while disconnected (docs/protocol.md); empty = off.
export WSREDIS_HISTORY=${WSREDIS_HISTORY-chat=100:3600}
[ -n "$WSREDIS_HISTORY" ] || unset WSREDIS_HISTORY
mkdir -p var

redis_pid=""
server_pid=""
cleanup() {
  trap - INT TERM EXIT
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ -n "$redis_pid" ]; then
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    echo "stopped the private redis-server" >&2
  fi
}
trap cleanup INT TERM EXIT

redis_url=${WSREDIS_REDIS_URL:-redis://127.0.0.1:6379}
answers() { # host port
  [ "$(redis-cli -h "$1" -p "$2" ping 2>/dev/null)" = "PONG" ]
}
hostport=${redis_url#redis://}
hostport=${hostport%%/*}
hostport=${hostport##*@}
if [[ "$redis_url" == redis://* ]] && ! answers "${hostport%%:*}" "${hostport##*:}"; then
  if ! answers 127.0.0.1 "$REDIS_PORT"; then
    echo "no Redis at $redis_url: starting a private redis-server on 127.0.0.1:$REDIS_PORT (var/)" >&2
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir var --save "" --appendonly no \
      --logfile redis.log &
    redis_pid=$!
    for _ in $(seq 100); do answers 127.0.0.1 "$REDIS_PORT" && break; sleep 0.1; done
    answers 127.0.0.1 "$REDIS_PORT" || { echo "redis-server did not start (see var/redis.log)" >&2; exit 1; }
  fi
  redis_url="redis://127.0.0.1:$REDIS_PORT"
fi
export WSREDIS_REDIS_URL=$redis_url

"$BIN" migrate
if [ ! -e var/.fixtures-loaded ] || [ "${LOAD_FIXTURES:-}" = 1 ]; then
  "$BIN" loaddata fixtures/data.json
  touch var/.fixtures-loaded
fi

echo "serving on http://127.0.0.1:$PORT/ (log in as admin, john or mary; password: secret)" >&2
"$BIN" serve --bind "127.0.0.1:$PORT" --workers "$WORKERS" --heartbeat="$HEARTBEAT" &
server_pid=$!
wait "$server_pid"
