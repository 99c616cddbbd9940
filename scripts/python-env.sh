#!/usr/bin/env bash
# Creates (once) the Python virtualenv used by golden tests and the Python client test, with the
# peer libraries pinned, and prints its path. Location: $BITLOOM_VENV, default ~/.cache/bitloom/venv.
set -euo pipefail

venv="${BITLOOM_VENV:-$HOME/.cache/bitloom/venv}"
requirements="$(cd "$(dirname "$0")" && pwd)/python-requirements.txt"
stamp="$venv/.requirements"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
if ! cmp -s "$requirements" "$stamp"; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi
echo "$venv"
