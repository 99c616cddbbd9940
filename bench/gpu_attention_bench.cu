// gpu_attention_bench: paged attention over the fp16 KV cache against the memory-bandwidth limit of
// the GPU it runs on. JSON on stdout, a short table on stderr.
//
//   gpu_attention_bench [--iters N] > attention.json
//
// Decode: Llama-3-8B's attention (32 query heads, 8 kv heads, head_dim 128, page 16, fp16 q, fp32
// out), every sequence at context 512, 4096 or 16384, batch 1, 4 or 16. For each: the median time
// of LaunchPagedDecodeAttention (split kernel + combine), the bytes it must read (K and V of every
// cached token + fp16 q + block tables; output, workspace and the combine pass are not counted),
// achieved GB/s = bytes / time, and that over the device-to-device copy bandwidth measured in the
// same run (cudaMemcpyAsync D2D of 1 GiB, GB/s = 2·bytes / time, median of 10 copies;
// 1 GB = 1e9 B).
//
// Prefill (same shapes, batch 1, causal): a whole prompt of 512, 2048 or 4096 tokens, and 129 new
// tokens after a 4096-token prefix, each on the tensor-core kernel (the default) and on the fp32
// FMA kernel (exact_fp32); time and achieved TFLOP/s, counting 4·head_dim flops per visible
// (query head, key) pair.
//
// Timing: pages are a random permutation of a pool; each launch of a CUDA graph reads its own copy
// of the cache (own pages, own block tables), and a graph holds one launch per copy (32..256), so
// the working set is >= 256 MB or the whole cache and L2 does not hold it. The graph is replayed 3
// times to warm up and then `iters` times, each timed with cudaEvents; time = median replay /
// launches.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "gpu_bench_util.cuh"
#include "bitloom/kernels/cuda/paged_attention.h"

namespace bitloom::kernels::cuda {
namespace {

using bench::DeviceMemory;
using bench::MeasureCopyBandwidth;

constexpr int64_t kWorkingSetBytes = 256ll << 20;
constexpr int kMinLaunches = 32;
constexpr int kMaxLaunches = 256;

constexpr int kHeads = 32;
constexpr int kKvHeads = 8;
constexpr int kHeadDim = 128;
constexpr int kPageSize = 16;
const int kContexts[] = {512, 4096, 16384};
const int kBatches[] = {1, 4, 16};

__device__ uint32_t Hash(uint64_t i, uint32_t seed) {
  uint64_t z = i * 0x9e3779b97f4a7c15ull + seed;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return static_cast<uint32_t>(z ^ (z >> 31));
}
__global__ void FillHalf(__half* p, int64_t n, uint32_t seed, float lo, float hi) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    p[i] = __float2half_rn(lo + (hi - lo) * (Hash(i, seed) >> 8) * (1.0f / 16777216.0f));
}

absl::Status FillH(void* p, int64_t n, uint32_t seed, float lo, float hi) {
  FillHalf<<<1024, 256>>>(static_cast<__half*>(p), n, seed, lo, hi);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

// Median seconds per launch of a graph of `launches` calls of `launch(i)`; plain stream launches
// if capture fails (reported in `how`).
absl::Status TimeLaunches(cudaStream_t stream, int iters, int launches,
                          const std::function<absl::Status(int)>& launch, double* seconds,
                          std::string* how) {
  return bench::TimeLaunches(stream, iters, launches, launch, bench::GraphFallback::kStream,
                             seconds, how);
}

// `copies` independent caches of `batch` sequences of `len` tokens on one pool of scattered pages.
struct CachePool {
  DeviceMemory k, v, tables;
  int pages_per_seq = 0;
  int copies = 0;
  int batch = 0;

  absl::Status Build(int batch_in, int len, int64_t bytes_per_copy) {
    batch = batch_in;
    pages_per_seq = (len + kPageSize - 1) / kPageSize;
    copies = static_cast<int>(std::clamp<int64_t>(
        (kWorkingSetBytes + bytes_per_copy - 1) / bytes_per_copy, 1, kMaxLaunches));
    const int64_t pages = int64_t{copies} * batch * pages_per_seq;
    const int64_t elems = pages * kPageSize * kKvHeads * kHeadDim;
    if (absl::Status s = k.Allocate(elems * 2); !s.ok()) return s;
    if (absl::Status s = v.Allocate(elems * 2); !s.ok()) return s;
    if (absl::Status s = FillH(k.get(), elems, 3, -1.0f, 1.0f); !s.ok()) return s;
    if (absl::Status s = FillH(v.get(), elems, 4, -1.0f, 1.0f); !s.ok()) return s;
    std::vector<int32_t> ids(static_cast<size_t>(pages));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937_64(99));
    if (absl::Status s = tables.Allocate(pages * 4); !s.ok()) return s;
    BITLOOM_CUDA_RETURN_IF_ERROR(
        cudaMemcpy(tables.get(), ids.data(), ids.size() * 4, cudaMemcpyHostToDevice));
    return absl::OkStatus();
  }

  PagedKvCache Describe(int copy) const {
    PagedKvCache c;
    c.k = k.get<uint16_t>();
    c.v = v.get<uint16_t>();
    c.page_size = kPageSize;
    c.num_kv_heads = kKvHeads;
    c.head_dim = kHeadDim;
    c.block_tables = tables.get<int32_t>() + int64_t{copy} * batch * pages_per_seq;
    c.max_pages_per_seq = pages_per_seq;
    return c;
  }
};

absl::Status Run(int iters) {
  cudaStream_t stream;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaDeviceProp prop;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, 0));
  const int sm = prop.major * 10 + prop.minor;

  double copy_gbps = 0.0;
  if (absl::Status s = MeasureCopyBandwidth(
          stream,
          [](void* p, int64_t bytes) { return FillH(p, bytes / 2, 1, -1.0f, 1.0f); },
          &copy_gbps);
      !s.ok())
    return s;
  std::fprintf(stderr, "device %s (sm_%d, %d SMs), D2D copy %.0f GB/s (2*bytes/time)\n", prop.name,
               sm, prop.multiProcessorCount, copy_gbps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));

  std::vector<std::string> decode_json;
  std::fprintf(stderr, "%-7s %5s %6s %7s %9s %8s %6s\n", "context", "batch", "splits", "launches",
               "time_us", "GB/s", "frac");
  for (int ctx : kContexts) {
    for (int batch : kBatches) {
      const int64_t kv_bytes = int64_t{batch} * ctx * kKvHeads * kHeadDim * 2 * 2;
      CachePool pool;
      if (absl::Status s = pool.Build(batch, ctx, kv_bytes); !s.ok()) return s;
      const int launches = std::clamp(pool.copies, kMinLaunches, kMaxLaunches);
      DeviceMemory q, out, lens;
      const int64_t qn = int64_t{batch} * kHeads * kHeadDim;
      if (absl::Status s = q.Allocate(qn * 2); !s.ok()) return s;
      if (absl::Status s = FillH(q.get(), qn, 5, -1.0f, 1.0f); !s.ok()) return s;
      if (absl::Status s = out.Allocate(qn * 4); !s.ok()) return s;
      if (absl::Status s = lens.Allocate(batch * 4); !s.ok()) return s;
      const std::vector<int32_t> host_lens(batch, ctx);
      BITLOOM_CUDA_RETURN_IF_ERROR(
          cudaMemcpy(lens.get(), host_lens.data(), batch * 4, cudaMemcpyHostToDevice));
      PagedDecodeAttentionParams p;
      p.cache = pool.Describe(0);
      p.q = q.get();
      p.q_type = ActivationType::kF16;
      p.out = out.get();
      p.out_type = ActivationType::kF32;
      p.seq_lens = lens.get<int32_t>();
      p.batch = batch;
      p.num_heads = kHeads;
      p.max_seq_len = ctx;
      p.scale = scale;
      const DecodeAttentionPlan plan = PlanDecodeAttention(p);
      DeviceMemory ws;
      p.workspace_bytes = DecodeAttentionWorkspaceBytes(p);
      if (absl::Status s = ws.Allocate(static_cast<int64_t>(p.workspace_bytes)); !s.ok()) return s;
      p.workspace = ws.get();
      if (!IsSupported(sm, p))
        return absl::FailedPreconditionError("decode attention not supported");
      auto launch = [&](int i) {
        PagedDecodeAttentionParams pi = p;
        pi.cache = pool.Describe(i % pool.copies);
        return LaunchPagedDecodeAttention(pi, stream);
      };
      double secs = 0.0;
      std::string how;
      if (absl::Status s = TimeLaunches(stream, iters, launches, launch, &secs, &how); !s.ok())
        return s;
      const double bytes =
          static_cast<double>(kv_bytes + qn * 2 + int64_t{batch} * pool.pages_per_seq * 4);
      const double gbps = bytes / secs / 1e9;
      decode_json.push_back(absl::StrCat(
          "{\"model\":\"llama3-8b\",\"heads\":", kHeads, ",\"kv_heads\":", kKvHeads,
          ",\"head_dim\":", kHeadDim, ",\"page_size\":", kPageSize, ",\"context\":", ctx,
          ",\"batch\":", batch, ",\"num_splits\":", plan.num_splits,
          ",\"split_len\":", plan.split_len, ",\"time_us\":", secs * 1e6,
          ",\"bytes_read\":", static_cast<int64_t>(bytes), ",\"gbps\":", gbps,
          ",\"fraction_of_copy_bw\":", gbps / copy_gbps, ",\"working_set_mb\":",
          std::min(launches, pool.copies) * kv_bytes / 1e6, ",\"timing\":\"", how, "\"}"));
      std::fprintf(stderr, "%-7d %5d %6d %7d %9.2f %8.0f %6.3f\n", ctx, batch, plan.num_splits,
                   launches, secs * 1e6, gbps, gbps / copy_gbps);
    }
  }

  // Prefill, batch 1: {prefix, new tokens}.
  std::vector<std::string> prefill_json;
  const int kPrefill[][2] = {{0, 512}, {0, 2048}, {0, 4096}, {4096, 129}};
  for (const auto& pf : kPrefill) {
    const int prefix = pf[0], fresh = pf[1], len = prefix + fresh;
    CachePool pool;
    if (absl::Status s = pool.Build(1, len, kWorkingSetBytes); !s.ok()) return s;  // one copy
    DeviceMemory q, out, seq, pos;
    const int64_t qn = int64_t{fresh} * kHeads * kHeadDim;
    if (absl::Status s = q.Allocate(qn * 2); !s.ok()) return s;
    if (absl::Status s = FillH(q.get(), qn, 6, -1.0f, 1.0f); !s.ok()) return s;
    if (absl::Status s = out.Allocate(qn * 4); !s.ok()) return s;
    if (absl::Status s = seq.Allocate(fresh * 4); !s.ok()) return s;
    if (absl::Status s = pos.Allocate(fresh * 4); !s.ok()) return s;
    std::vector<int32_t> host_pos(fresh);
    std::iota(host_pos.begin(), host_pos.end(), prefix);
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemset(seq.get(), 0, fresh * 4));
    BITLOOM_CUDA_RETURN_IF_ERROR(
        cudaMemcpy(pos.get(), host_pos.data(), fresh * 4, cudaMemcpyHostToDevice));
    PagedPrefillAttentionParams p;
    p.cache = pool.Describe(0);
    p.q = q.get();
    p.q_type = ActivationType::kF16;
    p.out = out.get();
    p.out_type = ActivationType::kF32;
    p.token_seq = seq.get<int32_t>();
    p.token_pos = pos.get<int32_t>();
    p.num_tokens = fresh;
    p.num_heads = kHeads;
    p.scale = scale;
    double pairs = 0.0;  // visible (query token, key) pairs
    for (int t = 0; t < fresh; ++t) pairs += prefix + t + 1;
    const double flops = pairs * kHeads * 4.0 * kHeadDim;
    for (const bool exact : {false, true}) {
      p.exact_fp32 = exact;
      const char* kernel = exact ? "fp32" : "tensor_core";
      if (!IsSupported(sm, p))
        return absl::FailedPreconditionError("prefill attention not supported");
      auto launch = [&](int) { return LaunchPagedPrefillAttention(p, stream); };
      double secs = 0.0;
      std::string how;
      if (absl::Status s = TimeLaunches(stream, iters, kMinLaunches, launch, &secs, &how); !s.ok())
        return s;
      prefill_json.push_back(
          absl::StrCat("{\"model\":\"llama3-8b\",\"kernel\":\"", kernel, "\",\"prefix\":", prefix,
                       ",\"new_tokens\":", fresh, ",\"time_us\":", secs * 1e6,
                       ",\"tflops\":", flops / secs / 1e12, ",\"timing\":\"", how, "\"}"));
      std::fprintf(stderr, "prefill %-11s prefix %5d + %4d new: %9.1f us, %.2f TFLOP/s\n", kernel,
                   prefix, fresh, secs * 1e6, flops / secs / 1e12);
    }
  }
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamDestroy(stream));

  bench::PrintDeviceJson(prop, sm);
  bench::PrintCopyBandwidthJson(copy_gbps);
  std::printf(
      "  \"timing\": \"median over %d replays of a CUDA graph of 32..256 launches (3 warm-up "
      "replays), each launch on its own cache copy, working set >= %lld MB or the whole cache\",\n",
      iters, static_cast<long long>(kWorkingSetBytes >> 20));
  std::printf(
      "  \"bytes_read\": \"fp16 K and V of every cached token + fp16 q + block tables; output, "
      "split workspace and combine pass not counted\",\n");
  std::printf("  \"decode\": [\n");
  bench::PrintJsonRows(decode_json);
  std::printf("  ],\n  \"prefill\": [\n");
  bench::PrintJsonRows(prefill_json);
  std::printf("  ]\n}\n");
  return absl::OkStatus();
}

}  // namespace
}  // namespace bitloom::kernels::cuda

int main(int argc, char** argv) {
  return bitloom::bench::ExitCode(
      "gpu_attention_bench",
      bitloom::kernels::cuda::Run(bitloom::bench::IterationsFlag(argc, argv, 20)));
}
