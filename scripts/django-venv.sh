#!/usr/bin/env bash
# Create (once) the private virtualenv with the real Django stack of the Django integration
# tests (fixtures/django/requirements.txt) and print the path of its python. Idempotent and
# cached: the venv under target/django-venv is rebuilt only when requirements.txt changes.
# Needs python3 with venv and access to PyPI on the first run; prints nothing and fails
# otherwise, so the tests can say why they skip.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
req="$root/fixtures/django/requirements.txt"
venv="${WSREDIS_DJANGO_VENV:-$root/target/django-venv}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # Concurrent test binaries may call this at once: one builds, the others wait.
  mkdir -p "$(dirname "$venv")"
  exec 9>"$venv.lock"
  flock 9
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
    echo "$want" > "$stamp"
  fi
fi
echo "$venv/bin/python"
