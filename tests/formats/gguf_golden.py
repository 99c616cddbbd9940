#!/usr/bin/env python3
"""Reference values for the GGUF golden tests, computed with the `gguf` Python package.

Run by tests/formats/gguf_golden_test.cc with the pinned venv (scripts/python-env.sh). Writes a
binary stream to stdout so nothing large touches the disk; the C++ test compares as it reads.

  gguf_golden.py tensors MODEL   every tensor, dequantized by gguf.quants.dequantize, in file order:
                                 "T <gguf name> <rows> <row length>\\n" then rows*row_length float32.
  gguf_golden.py hf MODEL        the Hugging Face view of the tensors our reader transforms:
                                 Llama-family attn_q/attn_k with the converter's row permutation
                                 inverted here, Gemma 3 norms minus one; same records, internal names.
  gguf_golden.py blocks SEED     random blocks of every type the C++ decoder supports:
                                 "B <ggml type id> <values> <bytes>\\n", the bytes, then float32s.
The stream ends with "E\\n". Exit status 3 means the gguf package is missing (the test skips).
"""
import sys

try:
    import numpy as np
    import gguf
    from gguf.quants import dequantize
except ImportError as e:  # the test reports this as a skip
    print(f"gguf_golden.py: {e}", file=sys.stderr)
    sys.exit(3)

CHUNK_ROWS = 4096
out = sys.stdout.buffer


def emit(name, values):
    values = np.ascontiguousarray(values, dtype=np.float32)
    rows, cols = values.shape
    out.write(f"T {name} {rows} {cols}\n".encode())
    out.write(values.tobytes())


def rows_of(t):
    """The tensor's raw data viewed as [rows, bytes or values per row]."""
    row_len = int(t.shape[0])
    n = int(np.prod(t.shape))
    return t.data.reshape(n // row_len, -1), row_len


def tensors_mode(path):
    reader = gguf.GGUFReader(path)
    for t in reader.tensors:
        data, row_len = rows_of(t)
        rows = data.shape[0]
        out.write(f"T {t.name} {rows} {row_len}\n".encode())
        for r in range(0, rows, CHUNK_ROWS):
            values = dequantize(data[r:r + CHUNK_ROWS], t.tensor_type)
            out.write(np.ascontiguousarray(values, dtype=np.float32).reshape(-1).tobytes())


def field(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def hf_mode(path):
    reader = gguf.GGUFReader(path)
    arch = field(reader, "general.architecture")
    heads = field(reader, f"{arch}.attention.head_count")
    kv_heads = field(reader, f"{arch}.attention.head_count_kv") or heads
    for t in reader.tensors:
        parts = t.name.split(".", 2)
        data, row_len = rows_of(t)
        if arch == "llama" and parts[0] == "blk" and parts[2] in ("attn_q.weight", "attn_k.weight"):
            w = dequantize(data, t.tensor_type).reshape(-1, row_len)
            n = heads if parts[2].startswith("attn_q") else kv_heads
            # The converter did w.reshape(n, 2, half, cols).swapaxes(1, 2); invert it.
            w = w.reshape(n, w.shape[0] // n // 2, 2, row_len).swapaxes(1, 2).reshape(w.shape)
            proj = "q_proj" if parts[2].startswith("attn_q") else "k_proj"
            emit(f"layers.{parts[1]}.attn.{proj}.weight", w)
        elif arch == "gemma3" and t.name.endswith("norm.weight") and parts[0] == "blk":
            names = {"attn_norm.weight": "attn_norm.weight", "ffn_norm.weight": "mlp_norm.weight",
                     "post_attention_norm.weight": "post_attn_norm.weight",
                     "post_ffw_norm.weight": "post_mlp_norm.weight",
                     "attn_q_norm.weight": "attn.q_norm.weight", "attn_k_norm.weight": "attn.k_norm.weight"}
            w = dequantize(data, t.tensor_type).reshape(1, -1) - np.float32(1)
            emit(f"layers.{parts[1]}.{names[parts[2]]}", w)
        elif arch == "gemma3" and t.name == "output_norm.weight":
            emit("norm.weight", dequantize(data, t.tensor_type).reshape(1, -1) - np.float32(1))


# Byte offsets of the fp16 scale fields in each block, overwritten with finite values so that the
# random blocks decode to finite numbers (NaN never compares equal).
T = gguf.GGMLQuantizationType
SCALE_OFFSETS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def blocks_mode(seed):
    rng = np.random.default_rng(seed)
    for qtype in [T.F32, T.F16, T.BF16, *SCALE_OFFSETS]:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        n_blocks = 257
        if qtype == T.F32:
            raw = rng.standard_normal(n_blocks, dtype=np.float32).view(np.uint8)
        elif qtype == T.F16:
            raw = rng.standard_normal(n_blocks).astype(np.float16).view(np.uint8)
        elif qtype == T.BF16:
            bits = (rng.standard_normal(n_blocks).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
            raw = bits.view(np.uint8)
        else:
            raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
            for off in SCALE_OFFSETS[qtype]:
                scales = (rng.standard_normal(n_blocks) * 0.01).astype(np.float16)
                raw[:, off:off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
            raw = raw.reshape(-1)
        values = dequantize(raw.reshape(1, -1), qtype).reshape(-1).astype(np.float32)
        assert values.size == n_blocks * block
        out.write(f"B {int(qtype)} {values.size} {raw.size}\n".encode())
        out.write(raw.tobytes())
        out.write(values.tobytes())


def main():
    mode, arg = sys.argv[1], sys.argv[2]
    if mode == "tensors":
        tensors_mode(arg)
    elif mode == "hf":
        hf_mode(arg)
    elif mode == "blocks":
        blocks_mode(int(arg))
    else:
        sys.exit(f"unknown mode {mode}")
    out.write(b"E\n")
    out.flush()


if __name__ == "__main__":
    main()
