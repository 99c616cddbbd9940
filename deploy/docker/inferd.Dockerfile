# syntax=docker/dockerfile:1
# inferd: the Bitloom inferd daemon (bitloom.v1.InferenceService). Build from the repository root:
#   docker build -f deploy/docker/inferd.Dockerfile -t bitloom/inferd:dev .
# Stage 1 builds exactly as CI does (scripts/install-deps.sh, then CMake + Ninja), with nvcc present so
# the CUDA kernels are compiled too. Stage 2 is the CUDA runtime image plus only the shared libraries the
# binaries link against, found with ldd in stage 1. See docs/OPERATIONS.md.
ARG CUDA_VERSION=12.6.3
ARG UBUNTU_VERSION=24.04

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
ARG CUDA_ARCHITECTURES="80;86;89;90a"
RUN cmake -S . -B build -G Ninja -DBITLOOM_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
      -DBITLOOM_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES}" \
 && cmake --build build --target inferd bitloom \
 && mkdir -p /out/bin \
 && cp build/services/inferd/inferd build/tools/bitloom/bitloom /out/bin/ \
 && ldd /out/bin/* | awk '/=> \// { print $3 }' | sort -u \
      | xargs -r dpkg -S 2>/dev/null | cut -d: -f1 | sort -u > /out/runtime-packages.txt \
 && cat /out/runtime-packages.txt

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=build /out/runtime-packages.txt /tmp/runtime-packages.txt
# The package list is the set of Debian/Ubuntu packages owning the libraries the binaries link against
# (written by the build stage from the same distribution release), so versions are pinned by the release.
# hadolint ignore=DL3008
RUN apt-get update \
 && xargs -a /tmp/runtime-packages.txt apt-get install -y --no-install-recommends curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
 && groupadd --gid 10001 bitloom \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin bitloom \
 && mkdir -p /var/lib/bitloom/store \
 && chown 10001:10001 /var/lib/bitloom/store
COPY --from=build /out/bin/ /usr/local/bin/
ENV BITLOOM_INFERD_LISTEN_ADDRESS=0.0.0.0:50051 \
    BITLOOM_INFERD_METRICS_ADDRESS=0.0.0.0:9091 \
    BITLOOM_INFERD_STORE_PATH=/var/lib/bitloom/store
USER 10001:10001
VOLUME ["/var/lib/bitloom/store"]
EXPOSE 50051 9091
# /readyz answers 200 once the daemon serves and 503 from the moment it receives SIGTERM (it then drains
# for --shutdown_grace). Override --health-cmd if you move the metrics port.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9091/readyz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/inferd"]
