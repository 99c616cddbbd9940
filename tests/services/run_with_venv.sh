#!/usr/bin/env bash
# Runs a Python test script with the project's virtualenv (scripts/python-env.sh), or exits 77 (CTest's
# "skipped") with a message when the environment cannot be made (offline).
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${BITLOOM_VENV:-}"
if [[ -z "$venv" || ! -x "$venv/bin/python" ]]; then
  if ! venv=$(bash "$root/scripts/python-env.sh" 2>&1 | tail -n 1) || [[ ! -x "$venv/bin/python" ]]; then
    echo "skipping: the Python environment could not be created ($venv)"
    exit 77
  fi
fi
exec "$venv/bin/python" "$@"
