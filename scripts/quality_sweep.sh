#!/usr/bin/env bash
# quality_sweep.sh: the quality table of docs/RESULTS.md in one command.
#
# For each model: import the GGUF as the fp16 reference, quantize it through quantd with every
# method at every width, evaluate each artifact against the reference with `bitloom eval` (perplexity,
# KL divergence, top-1 agreement), and collect the reports into one RESULTS.json
# (scripts/quality_results.py). Work is spread over --instances quantd processes, each with its own
# store (the reference is hard-linked into each), so jobs and evaluations run side by side.
#
#   scripts/quality_sweep.sh --bin build/bin-dir --out /tmp/sweep \
#       --model smollm2=~/.cache/bitloom/models/SmolLM2-135M-Instruct.Q4_1.gguf \
#       [--model gemma3=...gguf] [--variable "2.0 2.5 3.0 3.5 4.0 5.0 6.0"] [--uniform "2 3 4 5 6"] \
#       [--rtn "2 3 4 5 6"] \
#       [--instances 4] [--threads 4] [--rows 16] [--tokens_per_row 512] \
#       [--calibration FILE,FILE] [--text FILE] [--context 512] [--eval_tokens 4096] [--port_base 50300]
#
# --uniform lists the widths of uniform LDLQ, and of round-to-nearest too unless --rtn gives its own
# list ("" for none). Artifacts are named <model>--<method>--<bits> (methods: ldlq-var, ldlq, rtn), which
# is what quality_results.py reads. Needs quantd and bitloom in --bin (a build's bin dirs or a runtime bundle).
set -euo pipefail

bin="" out="" instances=4 threads=4 rows=16 tokens_per_row=512 context=512 eval_tokens=4096
variable="2.0 2.5 3.0 3.5 4.0 5.0 6.0" uniform="2 3 4 5 6" rtn="" rtn_given=0 seed=1 port_base=50300
here=$(cd "$(dirname "$0")" && pwd)
calibration="$here/../../shared/data/calibration/wiki.utf8,$here/../../shared/data/calibration/c4.utf8"
text="$here/../../shared/data/wikitext-2-raw-test.txt"
models=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --bin) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --model) models+=("$2"); shift 2 ;;
    --variable) variable=$2; shift 2 ;;
    --uniform) uniform=$2; shift 2 ;;
    --rtn) rtn=$2; rtn_given=1; shift 2 ;;
    --instances) instances=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --tokens_per_row) tokens_per_row=$2; shift 2 ;;
    --calibration) calibration=$2; shift 2 ;;
    --text) text=$2; shift 2 ;;
    --context) context=$2; shift 2 ;;
    --eval_tokens) eval_tokens=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --port_base) port_base=$2; shift 2 ;;
    *) echo "quality_sweep.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $bin && -n $out && ${#models[@]} -gt 0 ]] || {
  echo "usage: $0 --bin DIR --out DIR --model NAME=FILE.gguf [...]" >&2; exit 2; }
bin=$(cd "$bin" && pwd)
((rtn_given)) || rtn=$uniform
mkdir -p "$out/reports" "$out/logs" "$out/manifests"
out=$(cd "$out" && pwd)
quantd="$bin/quantd" bitloom="$bin/bitloom"

# One quantd per instance, each on its own store and port.
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
for ((i = 0; i < instances; ++i)); do
  mkdir -p "$out/store$i"
  "$quantd" --store_path="$out/store$i" --listen_address="127.0.0.1:$((port_base + i))" \
    --metrics_address=127.0.0.1:0 --threads="$threads" --log_level=warning \
    > "$out/logs/quantd$i.log" 2>&1 &
  pids+=($!)
done

# The fp16 references, imported once and hard-linked into every store.
for spec in "${models[@]}"; do
  name=${spec%%=*} path=${spec#*=}
  "$bitloom" import "$path" "$name--fp16" --store_path="$out/store0" --overwrite >/dev/null
  for ((i = 1; i < instances; ++i)); do
    ln -f "$out/store0/$name--fp16.bitloom" "$out/store$i/$name--fp16.bitloom"
  done
done

# The job list, dealt round-robin to the instances; each instance runs its jobs in order.
jobs=()
for spec in "${models[@]}"; do
  name=${spec%%=*} path=${spec#*=}
  for b in $variable; do jobs+=("$name ldlq-var variable $b $path"); done
  for b in $uniform; do jobs+=("$name ldlq uniform-ldlq $b $path"); done
  for b in $rtn; do jobs+=("$name rtn rtn $b $path"); done
done
run_instance() {
  local i=$1; shift
  local job name label method bits path artifact
  for job in "$@"; do
    read -r name label method bits path <<< "$job"
    artifact="$name--$label--$bits"
    local start=$SECONDS
    if "$bitloom" --quantd="127.0.0.1:$((port_base + i))" quantize "$path" "$artifact" --bits="$bits" \
        --method="$method" --calibration="$calibration" --rows="$rows" \
        --tokens_per_row="$tokens_per_row" --seed="$seed" --overwrite \
        > "$out/logs/$artifact.quantize.log" 2>&1; then
      echo "quantized $artifact in $((SECONDS - start)) s"
      "$bitloom" --quantd="127.0.0.1:$((port_base + i))" artifacts describe "$artifact" \
        > "$out/manifests/$artifact.json" 2>&1 || true
      start=$SECONDS
      "$bitloom" eval "$artifact" --store_path="$out/store$i" --reference="$name--fp16" \
        --text="$text" --context="$context" --max_tokens="$eval_tokens" --threads="$threads" \
        --json_out="$out/reports/$artifact.json" > "$out/logs/$artifact.eval.log" 2>&1 &&
        echo "evaluated $artifact in $((SECONDS - start)) s" || echo "EVAL FAILED $artifact"
    else
      echo "QUANTIZE FAILED $artifact: $(tail -n 1 "$out/logs/$artifact.quantize.log")"
    fi
  done
}
sleep 1
workers=()
for ((i = 0; i < instances; ++i)); do
  mine=()
  for ((j = i; j < ${#jobs[@]}; j += instances)); do mine+=("${jobs[$j]}"); done
  run_instance "$i" "${mine[@]}" | sed "s/^/[$i] /" &
  workers+=($!)
done
for w in "${workers[@]}"; do wait "$w"; done

python3 "$here/quality_results.py" collect "$out/RESULTS.json" "$out"/reports/*.json
