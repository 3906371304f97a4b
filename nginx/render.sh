#!/usr/bin/env bash
# Render the nginx templates beside this script to stdout.
#   nginx/render.sh site   the server block to include in an http { } (wsredis.conf.in)
#   nginx/render.sh main   a complete nginx.conf for an ordinary user (nginx.conf.in); it
#                          includes $PREFIX/wsredis.conf, so render the site there too.
# Values come from the environment; the defaults match the units in systemd/.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LISTEN=${LISTEN:-80}
SERVER_NAME=${SERVER_NAME:-_}
HTTP_SERVERS=${HTTP_SERVERS:-unix:/run/wsredis/http.sock}
WS_SERVERS=${WS_SERVERS:-unix:/run/wsredis/websocket.sock}
STATIC_ROOT=${STATIC_ROOT:-/usr/share/wsredis/static}
WS_PREFIX=${WS_PREFIX:-/ws/}
MIME_TYPES=${MIME_TYPES:-/etc/nginx/mime.types}
# `main` only: nginx worker processes, connections per worker (clients and upstreams both
# count), and open files per worker (unset: nginx's default, the inherited limit).
NGINX_WORKERS=${NGINX_WORKERS:-1}
NGINX_CONNECTIONS=${NGINX_CONNECTIONS:-1024}
NGINX_RLIMIT=""
if [ -n "${NGINX_NOFILE:-}" ]; then NGINX_RLIMIT="worker_rlimit_nofile $NGINX_NOFILE;"; fi
USER_LINE=""
if [ "$(id -u)" -eq 0 ]; then USER_LINE="user $(id -un) $(id -gn);"; fi

# One `server ADDR;` line per space-separated member.
servers() {
  local out="" s
  for s in $1; do out+="    server $s;"$'\n'; done
  printf '%s' "${out%$'\n'}"
}

render() {
  local t
  t=$(<"$1")
  t=${t//@LISTEN@/$LISTEN}
  t=${t//@SERVER_NAME@/$SERVER_NAME}
  t=${t//@HTTP_UPSTREAM@/$(servers "$HTTP_SERVERS")}
  t=${t//@WS_UPSTREAM@/$(servers "$WS_SERVERS")}
  t=${t//@STATIC_ROOT@/${STATIC_ROOT%/}}
  t=${t//@WS_PREFIX@/$WS_PREFIX}
  t=${t//@MIME_TYPES@/$MIME_TYPES}
  t=${t//@PREFIX@/${PREFIX:-}}
  t=${t//@USER@/$USER_LINE}
  t=${t//@NGINX_WORKERS@/$NGINX_WORKERS}
  t=${t//@NGINX_CONNECTIONS@/$NGINX_CONNECTIONS}
  t=${t//@NGINX_RLIMIT@/$NGINX_RLIMIT}
  printf '%s\n' "$t"
}

case "${1:-}" in
  site) render "$here/wsredis.conf.in" ;;
  main)
    : "${PREFIX:?set PREFIX to the directory that holds pid, logs and wsredis.conf}"
    render "$here/nginx.conf.in" ;;
  *) echo "usage: $0 site|main" >&2; exit 2 ;;
esac
