#!/usr/bin/env bash
# Install what the build and the tests need, where it is missing: on a fresh Debian machine
# (CI, a new developer box) this is the whole set-up. Safe to run again; does nothing when
# everything is present. Needs root (or sudo) only when something must be installed.
set -euo pipefail

want=()
command -v redis-server >/dev/null 2>&1 || want+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || want+=(redis-tools)
command -v cc >/dev/null 2>&1 || want+=(gcc)
command -v curl >/dev/null 2>&1 || want+=(curl)
for extra in "$@"; do
  case "$extra" in
    nginx) command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || want+=(nginx-light) ;;
    chromium) command -v chromium >/dev/null 2>&1 || want+=(chromium chromium-driver) ;;
    promtool) command -v promtool >/dev/null 2>&1 || want+=(prometheus) ;;
    wrk) command -v wrk >/dev/null 2>&1 || want+=(wrk) ;;
    *) command -v "$extra" >/dev/null 2>&1 || want+=("$extra") ;;
  esac
done

if [ ${#want[@]} -gt 0 ]; then
  echo "installing: ${want[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
