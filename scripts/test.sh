#!/usr/bin/env bash
# Builds Bitloom and runs every test: the README's test command and what CI runs.
# The real fixture models and the Python peer libraries are fetched first (cached under ~/.cache);
# tests that need them skip with a message when that fails (offline).
# Env: BUILD_DIR (default build), BITLOOM_CUDA (AUTO), JOBS (nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir="${BUILD_DIR:-build}"
jobs="${JOBS:-$(nproc)}"

if models=$(bash scripts/fetch-models.sh); then
  export BITLOOM_MODEL_CACHE="$models"
else
  echo "test.sh: could not fetch the fixture models; tests that need them will skip" >&2
fi
if venv=$(bash scripts/python-env.sh); then
  export BITLOOM_VENV="$venv"
else
  echo "test.sh: could not create the Python environment; golden tests will skip" >&2
fi

cmake -S . -B "$build_dir" -G Ninja -DBITLOOM_CUDA="${BITLOOM_CUDA:-AUTO}" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build_dir" -j "$jobs"
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" --timeout 1200
