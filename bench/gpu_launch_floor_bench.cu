// gpu_launch_floor_bench: what a decode step's small kernels cost before they do any work, on the
// device at hand. A graph of kLaunches copies of one kernel, chained like the decode step's
// (programmatic dependent launch on or off), is replayed; the figure is the median time per
// kernel. Rows:
//   - the bare floor (FloorKernel, no loads): 1 block of 32 threads up to 1024 blocks of 128, and
//     8-block clusters that meet at a cluster barrier (launch + wait release);
//   - serial round trips after the wait: each kernel continues a pointer chase where the one
//     ahead left it (one L2 hop for that word), over 1 MiB, which stays in L2, or over 1 GiB,
//     whose lines are new on every hop (DRAM); the slope over hops is one hop's latency;
//   - the same number of hops over the L2 buffer before the wait (constant data): they overlap
//     the kernel ahead when dependent launch is on;
//   - instruction fetch (CodeKernel): one warp runs N straight-line FMAs after the wait, the same
//     kernel every launch (its code stays cached) or eight copies of it in turn (8·N·16 bytes of
//     code, more than an SM's instruction caches hold at the larger N); and each of those after a
//     kernel that streams 96 MiB through L2 (as a decode step's GEMVs do between two launches of
//     the same small kernel), against that kernel followed by an empty one: the difference is the
//     code kernel's cost when its code has left L2 too. (The thrash kernel reads with evict-first
//     loads, __ldcs, which may leave more of L2 in place than a GEMV's loads do: a lower bound.)
// Prints JSON; no timing is asserted anywhere.

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "dependent_launch.cuh"  // libs/kernels/cuda/src: the decode kernels' own helpers
#include "gpu_bench_util.cuh"

namespace bitloom::bench {
namespace {

namespace detail = kernels::cuda::detail;

constexpr int kLaunches = 256;
constexpr int kLineInts = 32;  // one 128-byte line per hop
constexpr int64_t kThrashBytes = int64_t{96} << 20;

// The chain's dependent-launch instructions are the kernels' own (dependent_launch.cuh); the
// cluster barrier compiles to nothing below sm_90, where Run() refuses to start.
__device__ __forceinline__ void ClusterBarrier() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}

__device__ __forceinline__ int Chase(const int* next, int at, int hops) {
  for (int h = 0; h < hops; ++h) at = __ldcg(next + at);  // L2, never L1: each hop is a round trip
  return at;
}

// `before` hops from this block's line, the wait, then (when `after` > 0) `after` hops from where
// the kernel ahead left the chase in sink[0]. With `cluster`, the block meets its cluster's peers.
__global__ void FloorKernel(const int* next, int before, int after, bool cluster, int* sink) {
  detail::AllowDependentLaunch();
  const int at = Chase(next, static_cast<int>(blockIdx.x) * kLineInts, before);
  detail::WaitForPredecessorsAfter(static_cast<uint32_t>(at));  // keeps the wait below the chase
  if (cluster) ClusterBarrier();
  if (after > 0 && blockIdx.x == 0 && threadIdx.x == 0) sink[0] = Chase(next, __ldcg(sink), after);
  if (at == -7) sink[1] = at;  // keeps the pre-wait chase
}

// kOps dependent-free FMAs in straight-line code (8 accumulators, a distinct constant per
// instruction, so nothing folds), after the wait; kCopy makes distinct copies of the same code.
template <int kOps, int kCopy>
__global__ void CodeKernel(float seed, float* sink) {
  detail::AllowDependentLaunch();
  detail::WaitForPredecessors();
  float acc[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] = seed + static_cast<float>(i + kCopy);
#pragma unroll
  for (int i = 0; i < kOps; ++i) acc[i % 8] = fmaf(acc[i % 8], 1.0f + static_cast<float>(i + 1) * 1e-7f, 1e-3f);
  float total = 0.0f;
#pragma unroll
  for (int i = 0; i < 8; ++i) total += acc[i];
  if (total == -7.0f) sink[0] = total;
}

// Reads `words` 16-byte words once (grid-stride), so that L2 holds little else afterwards.
__global__ void ThrashKernel(const uint4* buf, int64_t words, uint4* sink) {
  detail::AllowDependentLaunch();
  detail::WaitForPredecessors();
  uint32_t x = 0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < words; i += int64_t{gridDim.x} * blockDim.x) {
    const uint4 v = __ldcs(buf + i);
    x ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (x == 0x9e3779b9u) sink[0] = make_uint4(x, x, x, x);
}

// A random cycle over the lines of `bytes` bytes: next[line·32] = the next line's first int.
absl::Status BuildChase(int64_t bytes, DeviceMemory* buffer) {
  const int64_t lines = bytes / (kLineInts * 4);
  std::vector<int> order(static_cast<size_t>(lines));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(12345));
  std::vector<int> next(static_cast<size_t>(lines * kLineInts), 0);
  for (int64_t i = 0; i < lines; ++i) {
    next[static_cast<size_t>(order[i]) * kLineInts] = order[(i + 1) % lines] * kLineInts;
  }
  if (absl::Status s = buffer->Allocate(bytes); !s.ok()) return s;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpy(buffer->get(), next.data(), next.size() * 4, cudaMemcpyHostToDevice));
  return absl::OkStatus();
}

struct Row {
  const char* memory;  // where the chase lives: "none", "l2" or "dram"
  int blocks, threads, before, after;
  bool cluster;
};

using CodeLaunch = void (*)(float, float*);

template <int kOps, int... kCopy>
std::vector<CodeLaunch> CodeCopies(std::integer_sequence<int, kCopy...>) {
  return {&CodeKernel<kOps, kCopy>...};
}

absl::Status Launch(cudaStream_t stream, int blocks, int threads, unsigned cluster, bool pdl, auto kernel,
                    auto... args) {
  cudaLaunchAttribute attrs[2];
  unsigned count = 0;
  if (pdl) {
    attrs[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[count].val.programmaticStreamSerializationAllowed = 1;
    ++count;
  }
  if (cluster > 1) {
    attrs[count].id = cudaLaunchAttributeClusterDimension;
    attrs[count].val.clusterDim.x = cluster;
    attrs[count].val.clusterDim.y = 1;
    attrs[count].val.clusterDim.z = 1;
    ++count;
  }
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>(blocks));
  config.blockDim = dim3(static_cast<unsigned>(threads));
  config.stream = stream;
  config.attrs = attrs;
  config.numAttrs = count;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaLaunchKernelEx(&config, kernel, args...));
  return absl::OkStatus();
}

absl::Status Run(int iters) {
  int device = 0;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  cudaDeviceProp prop{};
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device));
  if (prop.major < 9) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "needs sm_90 or newer (dependent launch, clusters); device 0 is sm_%d%d", prop.major, prop.minor));
  }
  DeviceMemory l2_chase, dram_chase, sink;
  if (absl::Status s = BuildChase(int64_t{1} << 20, &l2_chase); !s.ok()) return s;
  if (absl::Status s = BuildChase(int64_t{1} << 30, &dram_chase); !s.ok()) return s;
  if (absl::Status s = sink.Allocate(64); !s.ok()) return s;
  DeviceMemory thrash, thrash_sink;
  if (absl::Status s = thrash.Allocate(kThrashBytes); !s.ok()) return s;
  if (absl::Status s = thrash_sink.Allocate(16); !s.ok()) return s;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemset(thrash.get(), 1, kThrashBytes));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemset(sink.get(), 0, 64));
  cudaStream_t stream;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  std::vector<Row> rows;
  for (const auto& [blocks, threads] : {std::pair{1, 32}, {132, 128}, {264, 128}, {1024, 128}}) {
    rows.push_back({"none", blocks, threads, 0, 0, false});
  }
  rows.push_back({"none", 8, 32, 0, 0, true});
  rows.push_back({"none", 64, 128, 0, 0, true});
  for (const char* memory : {"l2", "dram"}) {
    for (int hops : {1, 2, 4, 8}) rows.push_back({memory, 1, 32, 0, hops, false});
  }
  for (int hops : {2, 8}) rows.push_back({"l2", 1, 32, hops, 0, false});

  std::vector<std::string> json;
  auto time = [&](const std::function<absl::Status(int)>& launch, double* us) -> absl::Status {
    double seconds = 0.0;
    std::string how;
    if (absl::Status s = TimeLaunches(stream, iters, kLaunches, launch, GraphFallback::kFail, &seconds, &how); !s.ok()) {
      return s;
    }
    *us = seconds * 1e6;
    return absl::OkStatus();
  };
  for (bool pdl : {true, false}) {
    for (const Row& r : rows) {
      const int* next = std::string(r.memory) == "dram" ? dram_chase.get<int>() : l2_chase.get<int>();
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(sink.get(), 0, 64, stream));  // the chase starts inside `next`
      double us = 0.0;
      if (absl::Status s = time([&](int) { return Launch(stream, r.blocks, r.threads, r.cluster ? 8u : 1u, pdl,
                                                         FloorKernel, next, r.before, r.after, r.cluster,
                                                         sink.get<int>()); },
                                &us);
          !s.ok()) {
        return s;
      }
      json.push_back(absl::StrFormat(
          "{\"kernel\": \"floor\", \"memory\": \"%s\", \"blocks\": %d, \"threads\": %d, \"cluster\": %d, "
          "\"hops_before_wait\": %d, \"hops_after_wait\": %d, \"dependent_launch\": %s, \"us_per_kernel\": %.3f}",
          r.memory, r.blocks, r.threads, r.cluster ? 8 : 1, r.before, r.after, pdl ? "true" : "false", us));
    }
    auto code_rows = [&](int ops, const std::vector<CodeLaunch>& copies) -> absl::Status {
      for (int distinct : {1, 8}) {
        double us = 0.0;
        if (absl::Status s = time([&](int i) { return Launch(stream, 1, 32, 1u, pdl, copies[i % distinct], 1.0f,
                                                             sink.get<float>()); },
                                  &us);
            !s.ok()) {
          return s;
        }
        json.push_back(absl::StrFormat(
            "{\"kernel\": \"code\", \"fmas\": %d, \"distinct_kernels\": %d, \"dependent_launch\": %s, "
            "\"us_per_kernel\": %.3f}",
            ops, distinct, pdl ? "true" : "false", us));
      }
      return absl::OkStatus();
    };
    const std::vector<CodeLaunch> c64 = CodeCopies<64>(std::make_integer_sequence<int, 8>{});
    const std::vector<CodeLaunch> c512 = CodeCopies<512>(std::make_integer_sequence<int, 8>{});
    const std::vector<CodeLaunch> c2048 = CodeCopies<2048>(std::make_integer_sequence<int, 8>{});
    if (absl::Status s = code_rows(64, c64); !s.ok()) return s;
    if (absl::Status s = code_rows(512, c512); !s.ok()) return s;
    if (absl::Status s = code_rows(2048, c2048); !s.ok()) return s;
    // Pairs (thrash, kernel): the kernel is empty (ops 0) or a code kernel. The thrash kernel
    // fills half of every SM's thread slots, or all of them (2 blocks of 1024 per SM), as a
    // decode GEMV that uses the whole register file does: then nothing of the next kernel is
    // resident before the thrash kernel's blocks leave.
    for (bool full : {false, true})
    for (int ops : {0, 512, 2048}) {
      const std::vector<CodeLaunch>& copies = ops == 512 ? c512 : c2048;
      for (int distinct : {1, 8}) {
        if (ops == 0 && distinct == 8) continue;
        double us = 0.0;
        auto launch = [&](int i) -> absl::Status {
          if (i % 2 == 0) {
            return Launch(stream, (full ? 2 : 4) * prop.multiProcessorCount, full ? 1024 : 256, 1u, pdl, ThrashKernel,
                          thrash.get<const uint4>(), kThrashBytes / 16, thrash_sink.get<uint4>());
          }
          if (ops == 0) return Launch(stream, 1, 32, 1u, pdl, FloorKernel, l2_chase.get<const int>(), 0, 0, false, sink.get<int>());
          return Launch(stream, 1, 32, 1u, pdl, copies[(i / 2) % distinct], 1.0f, sink.get<float>());
        };
        if (absl::Status s = time(launch, &us); !s.ok()) return s;
        json.push_back(absl::StrFormat(
            "{\"kernel\": \"thrash_then_code\", \"thrash_fills_sms\": %s, \"fmas\": %d, \"distinct_kernels\": %d, "
            "\"dependent_launch\": %s, \"us_per_pair\": %.3f}",
            full ? "true" : "false", ops, distinct, pdl ? "true" : "false", 2.0 * us));
      }
    }
  }
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamDestroy(stream));
  PrintDeviceJson(prop, prop.major * 10 + prop.minor);
  std::printf("  \"launches_per_graph\": %d,\n  \"rows\": [\n", kLaunches);
  PrintJsonRows(json);
  std::printf("  ]\n}\n");
  return absl::OkStatus();
}

}  // namespace
}  // namespace bitloom::bench

int main(int argc, char** argv) {
  return bitloom::bench::ExitCode("gpu_launch_floor_bench",
                                  bitloom::bench::Run(bitloom::bench::IterationsFlag(argc, argv, 20)));
}
