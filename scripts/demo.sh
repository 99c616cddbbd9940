#!/usr/bin/env bash
# The main job on the embedded defaults: build Bitloom, fetch SmolLM2-135M-Instruct, put it into the
# local model store (./bitloom-store) as an unquantized artifact, start quantd and inferd on their
# default ports over that store, and drive them with the CLI: health, the store, loading the model,
# generation, metrics; then stop both with SIGTERM.
# Env: BUILD_DIR (default build), STORE (default ./bitloom-store), PROMPT.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir="${BUILD_DIR:-build}"
store="${STORE:-./bitloom-store}"
prompt="${PROMPT:-What is the capital of France?}"
artifact=smollm2-135m-instruct

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "build"
cmake -S . -B "$build_dir" -G Ninja -DBITLOOM_CUDA="${BITLOOM_CUDA:-AUTO}" >/dev/null
cmake --build "$build_dir" -j "$(nproc)" --target quantd inferd bitloom
bitloom="$build_dir/tools/bitloom/bitloom"

step "fetch the model"
models=$(bash scripts/fetch-models.sh)
echo "cached in $models"

if [[ ! -f "$store/$artifact.bitloom" ]]; then
  step "import SmolLM2-135M-Instruct into $store"
  "$bitloom" import "$models/SmolLM2-135M-Instruct.Q4_1.gguf" "$artifact" --store_path="$store"
fi

step "start quantd and inferd"
log_dir=$(mktemp -d)
"$build_dir/services/quantd/quantd" --store_path="$store" --ready_file="$log_dir/quantd.ready" \
  2>"$log_dir/quantd.log" &
quantd_pid=$!
"$build_dir/services/inferd/inferd" --store_path="$store" --vram_budget=4GiB \
  --ready_file="$log_dir/inferd.ready" 2>"$log_dir/inferd.log" &
inferd_pid=$!
trap 'kill $quantd_pid $inferd_pid 2>/dev/null || true' EXIT
for f in quantd inferd; do
  for _ in $(seq 200); do [[ -s "$log_dir/$f.ready" ]] && break; sleep 0.05; done
  [[ -s "$log_dir/$f.ready" ]] || { cat "$log_dir/$f.log"; exit 1; }
done
echo "logs in $log_dir"

step "bitloom health"
"$bitloom" health

step "bitloom artifacts list"
"$bitloom" artifacts list

step "bitloom models load $artifact --context_length=2048"
"$bitloom" models load "$artifact" --context_length=2048 --max_batch_size=4

step "bitloom info"
"$bitloom" info

step "bitloom chat $artifact \"$prompt\""
"$bitloom" chat "$artifact" "$prompt" --max_new_tokens=48

step "metrics (inferd pool)"
curl -s localhost:9091/metrics | grep -E '^bitloom_inferd_(pool|models)' || true

step "SIGTERM both daemons"
kill -TERM "$quantd_pid" "$inferd_pid"
wait "$quantd_pid"; echo "quantd exited with $?"
wait "$inferd_pid"; echo "inferd exited with $?"
trap - EXIT
