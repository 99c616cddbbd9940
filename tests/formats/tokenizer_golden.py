#!/usr/bin/env python3
"""Reference token ids from Hugging Face `tokenizers` for a GGUF model, for tokenizer_test.cc.

Usage: tokenizer_golden.py --gguf MODEL.gguf --out DIR --text FILE... [--hard]

Writes to DIR:
  spec.json        the model's GGUF tokenizer metadata as a bitloom.v1.GgufTokenizer in proto JSON, so
                   the C++ test builds its Tokenizer from exactly the metadata used here;
  tokenizer.json   the Hugging Face tokenizer built below (the C++ test also loads it, to check the
                   tokenizer.json path against the same references);
  cases.json       one entry per case: text file, flags, reference ids file (int32 little-endian) and
                   the reference decode.

Why the tokenizer built here equals the model's original tokenizer.json: GGUF stores the original
vocabulary verbatim (tokens, token types, scores, merges), and llama.cpp's converter records which
pre-tokenizer the original used as `tokenizer.ggml.pre`. The pipeline around the vocabulary is fixed
per family, and is written here the way those families' tokenizer.json files write it:

* model "gpt2" (byte-level BPE). The merges are the original merges in rank order. `pre` selects the
  pre-tokenizer: "smollm"/"starcoder" = Sequence[Digits(individual_digits), ByteLevel(use_regex)]
  (SmolLM2's tokenizer.json); "llama-bpe" = Split(Llama 3 regex, Isolated) + ByteLevel(use_regex=False)
  with ignore_merges (Llama 3's); "qwen2" = the same with single digits (Qwen2's); "default"/"gpt2" =
  ByteLevel(use_regex). Decoder ByteLevel; no normalizer.
* model "llama" (SentencePiece BPE, e.g. Gemma 3). The original tokenizer.json is the conversion of the
  SentencePiece model: normalizer Replace(" ", "▁") (Prepend("▁") too when add_space_prefix), BPE with
  byte_fallback and fuse_unk, merges = every split of a normal token into two vocabulary tokens ranked
  by the token's score (SentencePiece merges the pair whose result scores highest, so ranking merges by
  that score is the same algorithm); decoder Replace("▁", " ") + ByteFallback + Fuse (+ Strip). Gemma's
  Split(" ", MergedWithPrevious) pre-tokenizer is left out: it runs after the normalizer has replaced
  every space, so it never splits anything.
* Token types (llama.cpp): control (3) and unknown (2) tokens are special added tokens, user-defined (4)
  tokens (Gemma's whitespace runs, HTML tags) non-special added tokens, all with normalized=False.
* add_bos_token -> TemplateProcessing("<bos> $A").
"""
import argparse
import json
import os
import struct
import sys

import gguf
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import processors

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
         r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

HARD_STRINGS = [
    "Hello world",
    " Hello  world   ",
    "   leading spaces and trailing   ",
    "\n\n\nnewlines\n \n\t\ttabs\r\n",
    "a\u00a0b\u3000c\u0085d",  # no-break space, ideographic space, next line
    "The year 2024 had 366 days; π≈3.14159, 1,234,567.89 and ١٢٣ and ⅷ",
    "emoji: 😀😃🫠 👩‍👩‍👧‍👦 🇫🇷 ❤️ 🫩",
    "CJK: 日本語のテキスト、中文文本，한국어 텍스트",
    "combining: e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0353 \u0915\u094d\u0937",
    "Ελληνικά, русский текст, עברית, العربية, ไทย",
    "code:\n    def f(x):\n        return x ** 2  # square\n",
    "don't won't I'M we'LL they've it's 'quoted'",
    "special <|im_start|>user\nhi<|im_end|> and <start_of_turn>model<end_of_turn> <bos><eos>",
    "<|endoftext|><|endoftext|>",
    "almost special <|im_start and <start_of_turn <|im_end|x",
    "<table><tr><td>html</td></tr></table>",
    "x" * 300 + " " + "y z " * 50,
    "",
    " ",
    "\u2581 already a marker \u2581\u2581",
    "\ufeffbyte order mark and \u200b zero width",
    "mixed\tTabs\u000bVT\u000cFF",
]


def field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
        return [f.contents(i) for i in range(len(f.data))]
    return f.contents()


def read_spec(path):
    r = gguf.GGUFReader(path)
    spec = {
        "model": field(r, "tokenizer.ggml.model"),
        "pre": field(r, "tokenizer.ggml.pre") or "",
        "tokens": field(r, "tokenizer.ggml.tokens"),
        "scores": field(r, "tokenizer.ggml.scores") or [],
        "token_types": field(r, "tokenizer.ggml.token_type") or [],
        "merges": field(r, "tokenizer.ggml.merges") or [],
    }
    for key, name in [("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                      ("unknown_token_id", "unknown_token_id"),
                      ("padding_token_id", "padding_token_id"),
                      ("add_bos_token", "add_bos_token"), ("add_eos_token", "add_eos_token"),
                      ("add_space_prefix", "add_space_prefix")]:
        v = field(r, "tokenizer.ggml." + key)
        if v is not None:
            spec[name] = v
    eot = field(r, "tokenizer.ggml.eot_token_id")
    if eot is not None:
        spec["eot_token_ids"] = [eot]
    return spec


def spm_merges(tokens, scores, types):
    index = {t: i for i, t in enumerate(tokens)}
    candidates = []
    for i, tok in enumerate(tokens):
        if types and types[i] != 1:
            continue
        for cut in range(1, len(tok)):
            left, right = index.get(tok[:cut]), index.get(tok[cut:])
            if left is not None and right is not None:
                candidates.append((-scores[i], left, right))
    candidates.sort()
    return [(tokens[l], tokens[r]) for _, l, r in candidates]


def build_tokenizer(spec):
    tokens, types = spec["tokens"], spec["token_types"]
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    model = spec["model"]
    if model == "gpt2":
        pre = spec["pre"] or "default"
        ignore_merges = pre in ("llama-bpe", "llama3", "smaug-bpe")
        merges = [tuple(m.split(" ", 1)) for m in spec["merges"]]
        tok = Tokenizer(models.BPE(vocab, merges, ignore_merges=ignore_merges))
        if pre in ("smollm", "starcoder", "refact"):
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        elif pre in ("llama-bpe", "llama3", "smaug-bpe", "qwen2", "deepseek-r1-qwen"):
            pattern = QWEN2 if pre.endswith("qwen2") else LLAMA3
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        elif pre in ("default", "gpt-2", "gpt2", "phi-2", "roberta-bpe"):
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        else:
            sys.exit(f"unsupported pre-tokenizer {pre!r}")
        tok.decoder = decoders.ByteLevel()
        default_add_bos = False
    elif model == "llama":
        merges = spm_merges(tokens, spec["scores"], types)
        unk = tokens[spec["unknown_token_id"]] if "unknown_token_id" in spec else None
        tok = Tokenizer(models.BPE(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
        prefix = spec.get("add_space_prefix", True)
        norm = [normalizers.Replace(" ", "\u2581")]
        if prefix:
            norm.insert(0, normalizers.Prepend("\u2581"))
        tok.normalizer = normalizers.Sequence(norm)
        dec = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
        if prefix:
            dec.append(decoders.Strip(" ", 1, 0))
        tok.decoder = decoders.Sequence(dec)
        default_add_bos = True
    else:
        sys.exit(f"unsupported tokenizer model {model!r}")
    added = []
    for i, t in enumerate(tokens):
        ty = types[i] if types else 1
        if ty in (2, 3, 4):
            added.append(AddedToken(t, special=ty != 4, normalized=False, lstrip=False, rstrip=False,
                                    single_word=False))
    # add_tokens keeps the given ids because every content is already in the vocabulary.
    tok.add_tokens(added)
    if spec.get("add_bos_token", default_add_bos) and "bos_token_id" in spec:
        bos = tokens[spec["bos_token_id"]]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, spec["bos_token_id"])])
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--text", action="append", default=[])
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    spec = read_spec(args.gguf)
    with open(os.path.join(args.out, "spec.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f, ensure_ascii=False)
    tok = build_tokenizer(spec)
    tok.save(os.path.join(args.out, "tokenizer.json"))

    cases = []

    def add_case(name, text, add_special, parse_special):
        n = len(cases)
        text_path = os.path.join(args.out, f"case{n}.txt")
        with open(text_path, "wb") as f:
            f.write(text.encode("utf-8"))
        tok.encode_special_tokens = not parse_special
        ids = tok.encode(text, add_special_tokens=add_special).ids
        tok.encode_special_tokens = False
        ids_path = os.path.join(args.out, f"case{n}.ids")
        with open(ids_path, "wb") as f:
            f.write(struct.pack(f"<{len(ids)}i", *ids))
        cases.append({"name": name, "text": text_path, "ids": ids_path, "add_special": add_special,
                      "parse_special": parse_special,
                      "decoded": tok.decode(ids, skip_special_tokens=False),
                      "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})

    for path in args.text:
        with open(path, encoding="utf-8") as f:
            add_case(os.path.basename(path), f.read(), False, False)
    for i, s in enumerate(HARD_STRINGS):
        add_case(f"hard{i}", s, False, True)
        add_case(f"hard{i}-plain", s, False, False)
        add_case(f"hard{i}-bos", s, True, True)
    with open(os.path.join(args.out, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
