#!/usr/bin/env python3
"""Reference logits from Hugging Face transformers for the CPU engine's golden test.

For each fixture GGUF model this loads the same file the engine reads, dequantized to fp32 by
transformers' GGUF loader (AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)), tokenizes the
start of the WikiText-2 test split with the model's own GGUF tokenizer, runs one fp32 forward pass over
the first 320 tokens (640 for Gemma 3, past its 512-token window), and writes a compact sample of the logits to tests/engine/golden/<model>.json:

  token_ids            the input ids (the C++ test feeds exactly these; tokenization is tested elsewhere)
  top1, top1_margin    argmax and (best − second best) logit at every position
  max_logit, logsumexp per position
  topk_ids/topk_logits the 16 largest logits at every position
  sample_positions     8 positions, with sample_logits: the logits of the fixed ids sample_vocab_ids there

Every file stays well under 1 MB. Optionally --dump-ids DIR writes the whole WikiText-2 test split's ids
(<model>.wikitext.i32, little-endian int32, not for the repository) for the perplexity tool.

Run on a machine with torch + transformers (+ gguf):
  python3 scripts/reference_logits.py [--cache ~/.cache/bitloom/models] [--device cuda|cpu]
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {
    "smollm2-135m-instruct": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma-3-270m": "gemma-3-270m-q4_k_m.gguf",
}
# Tokens per model: Gemma 3 270M's local layers have a 512-token window, so its sample runs past 512 to
# exercise the sliding-window mask against the reference.
DEFAULT_TOKENS = {"smollm2-135m-instruct": 320, "gemma-3-270m": 640}
TOP_K = 16
NUM_SAMPLE_POSITIONS = 8
NUM_SAMPLE_IDS = 1024


def f32(x):
    # 9 significant digits round-trip any float32 exactly and keep the JSON short.
    return float(f"{float(x):.9g}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(name, cache, text, args):
    gguf = MODELS[name]
    path = os.path.join(cache, gguf)
    if not os.path.exists(path):
        sys.exit(f"{path} is missing: run scripts/fetch-models.sh first")
    tok = AutoTokenizer.from_pretrained(cache, gguf_file=gguf)
    # add_special_tokens=True: the tokenizer prepends BOS where the model expects it (Gemma), as a
    # user of the model would.
    n = args.tokens or DEFAULT_TOKENS[name]
    ids = tok(text[: 40 * n], add_special_tokens=True).input_ids[:n]
    if len(ids) < n:
        sys.exit(f"{name}: only {len(ids)} tokens of text")
    model = AutoModelForCausalLM.from_pretrained(
        cache, gguf_file=gguf, torch_dtype=torch.float32, attn_implementation="eager"
    ).to(args.device)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=args.device)).logits[0].float().cpu().numpy()
    vocab = logits.shape[1]
    order = np.argsort(-logits, axis=1, kind="stable")[:, :TOP_K]
    top = np.take_along_axis(logits, order, axis=1)
    lse = torch.logsumexp(torch.from_numpy(logits).double(), dim=1).numpy()
    rng = np.random.default_rng(20240601)
    sample_ids = np.sort(rng.choice(vocab, size=min(NUM_SAMPLE_IDS, vocab), replace=False))
    positions = np.linspace(0, len(ids) - 1, NUM_SAMPLE_POSITIONS).round().astype(int)
    out = {
        "model": name,
        "gguf": gguf,
        "gguf_sha256": sha256(path),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "device": args.device,
        "dtype": "float32",
        "vocab_size": int(vocab),
        "token_ids": [int(i) for i in ids],
        "top1": [int(i) for i in order[:, 0]],
        "top1_margin": [f32(m) for m in (top[:, 0] - top[:, 1])],
        "max_logit": [f32(m) for m in top[:, 0]],
        "logsumexp": [f32(m) for m in lse],
        "topk_ids": [[int(i) for i in row] for row in order],
        "topk_logits": [[f32(v) for v in row] for row in top],
        "sample_positions": [int(p) for p in positions],
        "sample_vocab_ids": [int(i) for i in sample_ids],
        "sample_logits": [[f32(v) for v in logits[p, sample_ids]] for p in positions],
    }
    os.makedirs(args.out, exist_ok=True)
    dest = os.path.join(args.out, f"{name}.json")
    with open(dest, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print(f"{dest}: {len(ids)} tokens, {os.path.getsize(dest)} bytes")
    if args.dump_ids:
        all_ids = np.asarray(tok(text, add_special_tokens=True).input_ids, dtype="<i4")
        os.makedirs(args.dump_ids, exist_ok=True)
        ids_path = os.path.join(args.dump_ids, f"{name}.wikitext.i32")
        all_ids.tofile(ids_path)
        print(f"{ids_path}: {len(all_ids)} tokens")
    del model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=os.environ.get("BITLOOM_MODEL_CACHE",
                                                      os.path.expanduser("~/.cache/bitloom/models")))
    ap.add_argument("--wikitext", default=os.path.join(REPO, "..", "shared", "data", "wikitext-2-raw-test.txt"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "engine", "golden"))
    ap.add_argument("--tokens", type=int, default=0, help="tokens per model (default 320 / 640 for Gemma)")
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dump-ids", default="", help="also write whole-split token ids here")
    args = ap.parse_args()
    # Plain fp32 everywhere: no TF32 tensor-core matmuls, which would cost ~3 decimal digits.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with open(args.wikitext, encoding="utf-8") as f:
        text = f.read()
    for name in args.models:
        run(name, args.cache, text, args)


if __name__ == "__main__":
    main()
