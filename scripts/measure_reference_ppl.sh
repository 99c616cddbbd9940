#!/usr/bin/env bash
# Perplexity of the fp reference models (issue 3) on the WikiText-2 raw test split, measured by the CPU
# engine through `bitloom eval`, optionally cross-checked by Hugging Face transformers on the very same
# token ids and windows.
#
#   scripts/measure_reference_ppl.sh [--context N] [--stride N] [--max_tokens N] [--build DIR]
#                                    [--store DIR] [--out DIR] [--python PY] [--models "smollm2 gemma3"]
#
# Defaults: the full protocol of `bitloom eval` (whole split, 2048-token disjoint windows: context 2048,
# stride 2048), the fixture GGUFs of scripts/fetch-models.sh (~/.cache/bitloom/models, or
# $BITLOOM_MODEL_CACHE), dequantized and imported as fp16 artifacts (the "16 bits" reference every
# quantized artifact is judged against). The full split is ~300k tokens per model: hours on 2 cores,
# well under an hour on 16 (set --threads via BITLOOM_EVAL_THREADS). For a quick run use a prefix, e.g.
# `--context 512 --max_tokens 8192` (the first 16 windows of 512 tokens).
#
# With --python PY (an interpreter with torch, transformers and accelerate) each model is also scored by
# transformers (fp32, CPU, GGUF weights dequantized by transformers itself) on the ids bitloom produced,
# with the same windows; both numbers are printed and written to OUT/reference_ppl.json.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
context=2048
stride=0
max_tokens=0
build="$here/build"
store="${TMPDIR:-/tmp}/bitloom-reference-store"
out="$here/build/reference_ppl"
python=""
models="smollm2 gemma3"
cache="${BITLOOM_MODEL_CACHE:-$HOME/.cache/bitloom/models}"
text="$here/../shared/data/wikitext-2-raw-test.txt"
threads="${BITLOOM_EVAL_THREADS:-0}"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --context) context="$2"; shift 2 ;;
    --stride) stride="$2"; shift 2 ;;
    --max_tokens) max_tokens="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --store) store="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --models) models="$2"; shift 2 ;;
    --text) text="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

bitloom="$build/tools/bitloom/bitloom"
if [[ ! -x "$bitloom" ]]; then
  echo "building bitloom in $build" >&2
  cmake -S "$here" -B "$build" -G Ninja -DBITLOOM_CUDA=OFF -DCMAKE_BUILD_TYPE=Release >&2
  ninja -C "$build" bitloom >&2
fi
mkdir -p "$out" "$store"

gguf_of() {
  case "$1" in
    smollm2) echo "SmolLM2-135M-Instruct.Q4_1.gguf" ;;
    gemma3) echo "gemma-3-270m-q4_k_m.gguf" ;;
    *) echo "unknown model $1 (smollm2, gemma3)" >&2; exit 2 ;;
  esac
}

for m in $models; do
  gguf="$(gguf_of "$m")"
  name="$m-fp16"
  if [[ ! -f "$cache/$gguf" ]]; then
    echo "$cache/$gguf is missing: run scripts/fetch-models.sh" >&2
    exit 1
  fi
  if [[ ! -f "$store/$name.bitloom" ]]; then
    "$bitloom" import "$cache/$gguf" "$name" --store_path="$store" --overwrite >&2
  fi
  echo "== $m: bitloom eval (context $context, stride $stride (0: = context), max_tokens $max_tokens (0: all))" >&2
  "$bitloom" eval "$name" --store_path="$store" --text="$text" --context="$context" --stride="$stride" \
    --max_tokens="$max_tokens" --threads="$threads" --json_out="$out/$m.bitloom.json" \
    --markdown_out="$out/$m.bitloom.md" --ids_out="$out/$m.ids.i32" >/dev/null

  if [[ -n "$python" ]]; then
    echo "== $m: transformers on the same ids and windows" >&2
    PYTHONUNBUFFERED=1 "$python" - "$cache" "$gguf" "$out/$m.ids.i32" "$out/$m.bitloom.json" \
      "$out/$m.transformers.json" <<'EOF'
import json, math, sys, time
import numpy as np
import torch
from transformers import AutoModelForCausalLM

cache, gguf, ids_path, bitloom_json, out_path = sys.argv[1:6]
report = json.load(open(bitloom_json))
proto = report["protocol"]
ctx, stride, max_tokens = proto["context_length"], proto["stride"], proto["max_tokens"]
ids = np.fromfile(ids_path, dtype="<i4")
if max_tokens and max_tokens < len(ids):
    ids = ids[:max_tokens]
torch.set_grad_enabled(False)
model = AutoModelForCausalLM.from_pretrained(cache, gguf_file=gguf, torch_dtype=torch.float32,
                                             attn_implementation="eager")
model.eval()
n = len(ids)
nll, targets, correct, prev_end, start = 0.0, 0, 0, 0, time.time()
begin = 0
# The windows of engine::MakeEvaluationWindows: each scores targets no earlier window scored, never its
# own first token.
while begin < n:
    end = min(n, begin + ctx)
    first = max(prev_end, begin + 1)
    if first < end:
        x = torch.tensor(ids[begin:end], dtype=torch.long)[None]
        logits = model(x).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        rel = torch.arange(first - begin, end - begin)
        tgt = x[0, rel]
        nll -= logp[rel - 1, tgt].sum().item()
        correct += (logits[rel - 1].argmax(-1) == tgt).sum().item()
        targets += len(rel)
    prev_end = end
    if end == n:
        break
    begin += stride
ppl = math.exp(nll / targets)
res = {"gguf": gguf, "perplexity": ppl, "top1_accuracy": correct / targets, "tokens_scored": targets,
       "protocol": proto["description"], "seconds": time.time() - start,
       "transformers": __import__("transformers").__version__, "torch": torch.__version__}
json.dump(res, open(out_path, "w"), indent=2)
print(json.dumps(res))
EOF
  fi
done

# One summary: bitloom (and transformers) per model.
python3 - "$out" $models <<'EOF'
import json, os, sys
out, models = sys.argv[1], sys.argv[2:]
summary = {}
for m in models:
    b = json.load(open(os.path.join(out, f"{m}.bitloom.json")))
    row = {"protocol": b["protocol"]["description"], "tokens_scored": b["tokens_scored"],
           "bitloom_perplexity": b["model"]["perplexity"], "bitloom_top1": b["model"]["top1_accuracy"],
           "bitloom_seconds": b["seconds"]}
    t = os.path.join(out, f"{m}.transformers.json")
    if os.path.exists(t):
        tj = json.load(open(t))
        row["transformers_perplexity"] = tj["perplexity"]
        row["transformers_top1"] = tj["top1_accuracy"]
    summary[m] = row
json.dump(summary, open(os.path.join(out, "reference_ppl.json"), "w"), indent=2)
print(json.dumps(summary, indent=2))
EOF
