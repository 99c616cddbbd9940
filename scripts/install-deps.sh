#!/usr/bin/env bash
# Installs everything Bitloom builds and tests with on Debian 12, from Debian's packages.
# The CUDA toolkit is not installed here: when nvcc is on the machine the CUDA code is built too.
# Used by the README, .ci/run and the Dockerfiles. Idempotent; needs root (or sudo).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libssl-dev
  libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  libcpp-httplib-dev libpcre2-dev libxxhash-dev nlohmann-json3-dev
  prometheus
  python3 python3-grpcio python3-protobuf python3-numpy python3-venv python3-pip
  python3-yaml
)

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
