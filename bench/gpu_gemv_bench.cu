// gpu_gemv_bench: the decode GEMV of CODEC_HADAMARD_SCALAR against the memory-bandwidth limit of the
// GPU it runs on, and cuBLAS fp16 on the same shapes as a reference. JSON on stdout, a short table
// on stderr.
//
//   gpu_gemv_bench [--iters N] [--groups_only] [--only "llama3-8b gate/up 4/4"] > gemv.json
//
// Shapes: the linear layers of Llama-3-8B and Llama-3-70B ([out, in]), K = 2, 3, 4, 5 bits,
// group 128, batch 1, 4, 8. Grouped launches (LaunchScalarCodecGemvGroup, batch 1): Llama-3-8B's
// q/k/v (4096, 1024, 1024 × 4096) and gate/up (2 × 14336 × 4096), at K = 4, 3 and mixed K, each
// also timed as separate single-matrix launches of the same weights, and the single o_proj and
// down_proj launches of both models; where the weights take the tiled layout, that launch too, at
// every warps-per-block, groups ahead, and the two combined. Plan sweep: those groups and
// single 8B/70B matrices at K = 2, 3 and 4, batch 1, with every warps-per-block of 1..8, beside the
// one PlanScalarCodecGemv picks (--groups_only: only the groups and the sweep).
// For each: the kernel's median time, the bytes it must read (packed codes + fp16 scales + fp16
// activations, once per launch; the fp32 output writes, rows·batch·4, are not counted),
// achieved GB/s = bytes / time, and that over the device-to-device copy bandwidth measured in the
// same run. Copy convention: cudaMemcpyAsync D2D of a 1 GiB buffer, GB/s = 2·bytes / time (bytes
// read + bytes written), median of 10 copies; 1 GB = 1e9 bytes.
//
// Timing: random weights (never zeros), several copies of each weight cycled so the working set is
// >= 256 MB (an L2-resident weight would measure the cache, not HBM; the groups' `l2_resident_us`
// does exactly that on purpose, on one copy, to show how much of a launch is waiting for DRAM);
// each measurement is a CUDA
// graph of kLaunchesPerGraph launches (as the engine will replay a decode step), replayed 3 times
// to warm up and then `iters` times, each replay timed with cudaEvents; time = median replay /
// kLaunchesPerGraph.
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "gpu_bench_util.cuh"
#include "bitloom/kernels/cuda/dependent_launch.h"
#include "bitloom/kernels/cuda/hadamard_rotation.h"
#include "bitloom/kernels/cuda/scalar_codec_gemv.h"
#include "bitloom/kernels/cuda/scalar_codec_tiled.h"
#include "bitloom/kernels/hadamard.h"
#include "bitloom/kernels/scalar_codec.h"

namespace bitloom::kernels::cuda {
namespace {

using bench::DeviceMemory;
using bench::MeasureCopyBandwidth;

constexpr int kLaunchesPerGraph = 32;
constexpr int64_t kWorkingSetBytes = 256ll << 20;

struct Shape {
  const char* model;
  const char* layer;
  int64_t rows;  // out_features
  int64_t cols;  // in_features
};

const Shape kShapes[] = {
    {"llama3-8b", "q_proj/o_proj", 4096, 4096},    {"llama3-8b", "k_proj/v_proj", 1024, 4096},
    {"llama3-8b", "gate_proj/up_proj", 14336, 4096}, {"llama3-8b", "down_proj", 4096, 14336},
    {"llama3-70b", "q_proj/o_proj", 8192, 8192},   {"llama3-70b", "k_proj/v_proj", 1024, 8192},
    {"llama3-70b", "gate_proj/up_proj", 28672, 8192}, {"llama3-70b", "down_proj", 8192, 28672},
};
const int kBits[] = {2, 3, 4, 5};
const int kBatches[] = {1, 4, 8};

// Matrices that read one activation, run as one grouped launch.
struct GroupShape {
  const char* model;
  const char* layer;
  int64_t cols;
  int count;
  int64_t rows[kGemvMaxGroup];
  int bits[kGemvMaxGroup];
};

const GroupShape kGroupShapes[] = {
    {"llama3-8b", "q/k/v", 4096, 3, {4096, 1024, 1024}, {4, 4, 4}},
    {"llama3-8b", "q/k/v", 4096, 3, {4096, 1024, 1024}, {3, 5, 6}},
    {"llama3-8b", "q/k/v", 4096, 3, {4096, 1024, 1024}, {3, 3, 3}},
    {"llama3-8b", "gate/up", 4096, 2, {14336, 14336}, {4, 4}},
    {"llama3-8b", "gate/up", 4096, 2, {14336, 14336}, {3, 4}},
    {"llama3-8b", "gate/up", 4096, 2, {14336, 14336}, {3, 3}},
    {"llama3-70b", "q/k/v", 8192, 3, {8192, 1024, 1024}, {2, 3, 3}},
    {"llama3-70b", "gate/up", 8192, 2, {28672, 28672}, {2, 3}},
    // Single launches of the decode step, for the tiled sweeps.
    {"llama3-8b", "o_proj", 4096, 1, {4096}, {4}},
    {"llama3-8b", "down_proj", 14336, 1, {4096}, {4}},
    {"llama3-8b", "down_proj", 14336, 1, {4096}, {3}},
    {"llama3-70b", "o_proj", 8192, 1, {8192}, {3}},
    {"llama3-70b", "down_proj", 28672, 1, {8192}, {2}},
};
const int kGroupBatches[] = {1};

// Single matrices whose launch plan (warps per block) is checked by a sweep, batch 1.
const GroupShape kPlanShapes[] = {
    {"llama3-8b", "q_proj/o_proj", 4096, 1, {4096}, {2}},
    {"llama3-8b", "q_proj/o_proj", 4096, 1, {4096}, {4}},
    {"llama3-8b", "k_proj/v_proj", 4096, 1, {1024}, {4}},
    {"llama3-8b", "gate_proj/up_proj", 4096, 1, {14336}, {2}},
    {"llama3-8b", "gate_proj/up_proj", 4096, 1, {14336}, {4}},
    {"llama3-8b", "down_proj", 14336, 1, {4096}, {4}},
    {"llama3-70b", "q_proj/o_proj", 8192, 1, {8192}, {4}},
    {"llama3-70b", "gate_proj/up_proj", 8192, 1, {28672}, {2}},
    {"llama3-70b", "gate_proj/up_proj", 8192, 1, {28672}, {4}},
    {"llama3-70b", "down_proj", 28672, 1, {8192}, {2}},
    {"llama3-8b", "q_proj/o_proj", 4096, 1, {4096}, {3}},
    {"llama3-8b", "down_proj", 14336, 1, {4096}, {3}},
    {"llama3-70b", "gate_proj/up_proj", 8192, 1, {28672}, {3}},
    {"llama3-70b", "down_proj", 28672, 1, {8192}, {3}},
};
const int kSweepWarps[] = {1, 2, 3, 4, 5, 6, 8};

// Deterministic pseudo-random fill: uint32 words, or fp16 values in [lo, hi).
__device__ uint32_t Hash(uint64_t i, uint32_t seed) {
  uint64_t z = i * 0x9e3779b97f4a7c15ull + seed;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return static_cast<uint32_t>(z ^ (z >> 31));
}
__global__ void FillWords(uint32_t* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    p[i] = Hash(i, seed);
}
__global__ void FillHalf(__half* p, int64_t n, uint32_t seed, float lo, float hi) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    p[i] = __float2half_rn(lo + (hi - lo) * (Hash(i, seed) >> 8) * (1.0f / 16777216.0f));
}

absl::Status Fill(void* p, int64_t bytes, uint32_t seed) {
  FillWords<<<1024, 256>>>(static_cast<uint32_t*>(p), bytes / 4, seed);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}
absl::Status FillH(void* p, int64_t n, uint32_t seed, float lo, float hi) {
  FillHalf<<<1024, 256>>>(static_cast<__half*>(p), n, seed, lo, hi);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

// Median seconds per call of `launch(i)` (i = launch index), timed as described atop the file.
// Falls back to plain stream launches if graph capture fails (reported in `how`).
absl::Status TimeLaunches(cudaStream_t stream, int iters,
                          const std::function<absl::Status(int)>& launch, double* seconds,
                          std::string* how) {
  return bench::TimeLaunches(stream, iters, kLaunchesPerGraph, launch,
                             bench::GraphFallback::kStream, seconds, how);
}

// One weight of a group: its layout and `copies` random blobs `stride` bytes apart.
struct GroupWeight {
  ScalarCodecLayout layout;
  int64_t stride = 0;
  DeviceMemory blobs;
};

absl::Status FillBlobs(GroupWeight& w, int copies, uint32_t seed) {
  if (absl::Status s = w.blobs.Allocate(w.stride * copies); !s.ok()) return s;
  if (absl::Status s = Fill(w.blobs.get(), w.stride * copies, seed); !s.ok()) return s;
  for (int c = 0; c < copies; ++c) {  // finite scales, like an encoder's
    if (absl::Status s = FillH(w.blobs.get<uint8_t>() + c * w.stride + w.layout.scales_offset,
                               w.layout.scales_bytes / 2, seed + 100 + c, 0.005f, 0.02f);
        !s.ok())
      return s;
  }
  return absl::OkStatus();
}

// The label --only matches: "model layer K/K/...".
std::string GroupLabel(const GroupShape& shape) {
  std::string label = absl::StrCat(shape.model, " ", shape.layer, " ");
  for (int e = 0; e < shape.count; ++e) absl::StrAppend(&label, e ? "/" : "", shape.bits[e]);
  return label;
}

// Grouped launches of `shapes` (those labelled `only`, when it is not empty): one JSON row per
// (group, batch). Time of the group launch (the plan's warps per block), of the same matrices as
// separate LaunchScalarCodecGemv calls (groups of two or more), and of the group launch with every
// warps-per-block of kSweepWarps up to the row's super-chunks ("time_us_by_warps", to check
// PlanScalarCodecGemv); bytes = every weight's codes and scales + the activations once.
absl::Status RunGroups(cudaStream_t stream, int sm, int multiprocessors, int iters,
                       double copy_gbps, absl::Span<const GroupShape> shapes, std::string_view only,
                       std::vector<std::string>* rows_json) {
  for (const GroupShape& shape : shapes) {
    if (!only.empty() && GroupLabel(shape) != only) continue;
    std::vector<GroupWeight> weights(shape.count);
    int64_t group_bytes = 0, total_rows = 0;
    for (int e = 0; e < shape.count; ++e) {
      absl::StatusOr<ScalarCodecLayout> layout = MakeScalarCodecLayout(
          shape.rows[e], shape.cols, shape.bits[e], kScalarDefaultGroupSize);
      if (!layout.ok()) return layout.status();
      weights[e].layout = *layout;
      weights[e].stride = (layout->total_bytes + 255) / 256 * 256;
      group_bytes += weights[e].stride;
      total_rows += shape.rows[e];
    }
    const int copies = static_cast<int>(
        std::clamp<int64_t>((kWorkingSetBytes + group_bytes - 1) / group_bytes, 2, 256));
    for (int e = 0; e < shape.count; ++e) {
      if (absl::Status s = FillBlobs(weights[e], copies, 17 + 7 * e + shape.bits[e]); !s.ok())
        return s;
    }
    // The same weights rewritten into the tiled layout (groups of at most two K that take it), for
    // the same-run comparison.
    std::vector<ScalarCodecGemvParams> group_weights;
    for (int e = 0; e < shape.count; ++e) group_weights.push_back(MakeGemvParams(weights[e].layout, weights[e].blobs.get()));
    const bool tiled = TiledGroupApplies(group_weights);
    std::vector<GroupWeight> tiled_weights(tiled ? shape.count : 0);
    for (int e = 0; e < static_cast<int>(tiled_weights.size()); ++e) {
      tiled_weights[e].layout = weights[e].layout;
      tiled_weights[e].stride = weights[e].stride;
      if (absl::Status s = FillBlobs(tiled_weights[e], copies, 17 + 7 * e + shape.bits[e]); !s.ok()) return s;
      for (int c = 0; c < copies; ++c) {
        const ScalarCodecGemvParams w =
            MakeGemvParams(weights[e].layout, tiled_weights[e].blobs.get<uint8_t>() + c * weights[e].stride);
        if (absl::Status s = LaunchScalarCodecRetile(w, stream); !s.ok()) return s;
      }
    }
    const int64_t x_stride = (shape.cols + 31) / 32 * 32;
    DeviceMemory x16, y32;
    if (absl::Status s = x16.Allocate(x_stride * kGemvMaxBatch * 2); !s.ok()) return s;
    if (absl::Status s = FillH(x16.get(), x_stride * kGemvMaxBatch, 11, -1.0f, 1.0f); !s.ok())
      return s;
    // One fused output [batch, total_rows], each matrix a row slice, as the engine's q/k/v.
    if (absl::Status s = y32.Allocate(total_rows * kGemvMaxBatch * 4); !s.ok()) return s;

    for (int batch : kGroupBatches) {
      auto params = [&](int i) {
        std::vector<ScalarCodecGemvParams> group;
        int64_t row0 = 0;
        for (int e = 0; e < shape.count; ++e) {
          const uint8_t* blob = weights[e].blobs.get<uint8_t>() + (i % copies) * weights[e].stride;
          ScalarCodecGemvParams p = MakeGemvParams(weights[e].layout, blob);
          p.x = x16.get<uint16_t>();
          p.x_stride = x_stride;
          p.y = y32.get<float>() + row0;
          p.y_stride = total_rows;
          p.batch = batch;
          group.push_back(p);
          row0 += shape.rows[e];
        }
        return group;
      };
      if (!IsSupported(sm, absl::MakeConstSpan(params(0))))
        return absl::FailedPreconditionError("grouped GEMV not supported");
      auto grouped = [&](int i) { return LaunchScalarCodecGemvGroup(params(i), stream); };
      auto separate = [&](int i) -> absl::Status {
        for (const ScalarCodecGemvParams& p : params(i)) {
          if (absl::Status s = LaunchScalarCodecGemv(p, stream); !s.ok()) return s;
        }
        return absl::OkStatus();
      };
      double group_s = 0.0, separate_s = 0.0;
      std::string how, how_separate;
      if (absl::Status s = TimeLaunches(stream, iters, grouped, &group_s, &how); !s.ok()) return s;
      if (shape.count > 1) {
        if (absl::Status s = TimeLaunches(stream, iters, separate, &separate_s, &how_separate);
            !s.ok())
          return s;
      }
      const int planned = PlanScalarCodecGemv(params(0), multiprocessors).warps;
      const int64_t super_chunks = (x_stride + 511) / 512;
      std::string by_warps;
      for (int w : kSweepWarps) {
        if (w > super_chunks) break;
        auto forced = [&](int i) {
          return LaunchScalarCodecGemvGroup(params(i), GemvTuning{.warps_per_block = w}, stream);
        };
        double secs = 0.0;
        std::string how_forced;
        if (absl::Status s = TimeLaunches(stream, iters, forced, &secs, &how_forced); !s.ok())
          return s;
        absl::StrAppend(&by_warps, by_warps.empty() ? "" : ",", "\"", w, "\":", secs * 1e6);
      }
      // Both pipelines forced (sm_90 for the streamed one), for the same-run comparison.
      double registers_s = 0.0, streamed_s = 0.0;
      for (GemvPipeline pipeline : {GemvPipeline::kRegisters, GemvPipeline::kStreamed}) {
        if (pipeline == GemvPipeline::kStreamed && sm < 90) continue;
        auto piped = [&](int i) {
          return LaunchScalarCodecGemvGroup(params(i), GemvTuning{.pipeline = pipeline}, stream);
        };
        std::string how_piped;
        if (absl::Status s = TimeLaunches(stream, iters, piped,
                                          pipeline == GemvPipeline::kStreamed ? &streamed_s
                                                                              : &registers_s,
                                          &how_piped);
            !s.ok())
          return s;
      }
      // The tiled layout: the plan's launch and every warps-per-block.
      double tiled_s = 0.0;
      std::string tiled_by_warps, tiled_by_ahead, tiled_by_both;
      if (tiled) {
        auto tiled_params = [&](int i) {
          std::vector<ScalarCodecGemvParams> group = params(i);
          for (int e = 0; e < shape.count; ++e) {
            group[e].codes = reinterpret_cast<const uint32_t*>(tiled_weights[e].blobs.get<uint8_t>() +
                                                               (i % copies) * tiled_weights[e].stride);
            group[e].scales = reinterpret_cast<const uint16_t*>(
                reinterpret_cast<const uint8_t*>(group[e].codes) + weights[e].layout.scales_offset);
            group[e].tiled = true;
          }
          return group;
        };
        const TiledGemvTuning tunings[] = {{},
                                           {.warps_per_block = 1}, {.warps_per_block = 2},
                                           {.warps_per_block = 4}, {.warps_per_block = 8},
                                           {.warps_per_block = 16}, {.groups_ahead = 1},
                                           {.groups_ahead = 2}, {.groups_ahead = 4}};
        for (const TiledGemvTuning& tt : tunings) {
          auto launch = [&](int i) { return LaunchScalarCodecGemvTiled(tiled_params(i), tt, stream); };
          double secs = 0.0;
          std::string how_tiled;
          if (absl::Status s = TimeLaunches(stream, iters, launch, &secs, &how_tiled); !s.ok()) return s;
          if (tt.warps_per_block == 0 && tt.groups_ahead == 0) {
            tiled_s = secs;
          } else if (tt.warps_per_block != 0) {
            absl::StrAppend(&tiled_by_warps, tiled_by_warps.empty() ? "" : ",", "\"", tt.warps_per_block,
                            "\":", secs * 1e6);
          } else {
            absl::StrAppend(&tiled_by_ahead, tiled_by_ahead.empty() ? "" : ",", "\"", tt.groups_ahead,
                            "\":", secs * 1e6);
          }
        }
        for (int w : {2, 4, 8, 16}) {
          for (int ahead : {1, 2, 4}) {
            const TiledGemvTuning tt{.warps_per_block = w, .groups_ahead = ahead};
            auto launch = [&](int i) { return LaunchScalarCodecGemvTiled(tiled_params(i), tt, stream); };
            double secs = 0.0;
            std::string how_tiled;
            if (absl::Status s = TimeLaunches(stream, iters, launch, &secs, &how_tiled); !s.ok()) return s;
            absl::StrAppend(&tiled_by_both, tiled_by_both.empty() ? "" : ",", "\"", w, "x", ahead, "\":",
                            secs * 1e6);
          }
        }
      }
      // The plan's launch on one copy of the weights every time: what it takes when the weights
      // (those that fit) are already in L2, the most an L2 prefetch ahead of it could buy.
      double l2_resident_s = 0.0;
      std::string how_resident;
      auto resident = [&](int) { return LaunchScalarCodecGemvGroup(params(0), stream); };
      if (absl::Status s = TimeLaunches(stream, iters, resident, &l2_resident_s, &how_resident); !s.ok())
        return s;
      // The plan's launch without dependent launch, for the same-run comparison.
      double serial_s = 0.0;
      std::string how_serial;
      const bool dependent = DependentLaunchEnabled();
      SetDependentLaunch(false);
      const absl::Status serial = TimeLaunches(stream, iters, grouped, &serial_s, &how_serial);
      SetDependentLaunch(dependent);
      if (!serial.ok()) return serial;
      double bytes = static_cast<double>(batch * x_stride * 2);
      std::string rows_list, bits_list, bits_label;
      for (int e = 0; e < shape.count; ++e) {
        const ScalarCodecLayout& l = weights[e].layout;
        bytes += static_cast<double>(l.codes_bytes + l.scales_bytes);
        absl::StrAppend(&rows_list, e ? "," : "", shape.rows[e]);
        absl::StrAppend(&bits_list, e ? "," : "", shape.bits[e]);
        absl::StrAppend(&bits_label, e ? "/" : "", shape.bits[e]);
      }
      const double gbps = bytes / group_s / 1e9;
      rows_json->push_back(absl::StrCat(
          "{\"kernel\":\"scalar_codec_gemv_group\",\"model\":\"", shape.model,
          "\",\"layer\":\"", shape.layer, "\",\"rows\":[", rows_list, "],\"cols\":", shape.cols,
          ",\"bits\":[", bits_list, "],\"group_size\":", kScalarDefaultGroupSize,
          ",\"batch\":", batch, ",\"time_us\":", group_s * 1e6,
          ",\"bytes_read\":", static_cast<int64_t>(bytes), ",\"gbps\":", gbps,
          ",\"fraction_of_copy_bw\":", gbps / copy_gbps,
          shape.count > 1 ? absl::StrCat(",\"separate_launches_us\":", separate_s * 1e6,
                                         ",\"speedup_vs_separate\":", separate_s / group_s)
                          : std::string(),
          ",\"planned_warps\":", planned, ",\"time_us_by_warps\":{", by_warps, "}",
          ",\"registers_us\":", registers_s * 1e6, ",\"streamed_us\":", streamed_s * 1e6,
          ",\"streamed_fraction_of_copy_bw\":",
          streamed_s > 0 ? bytes / streamed_s / 1e9 / copy_gbps : 0.0,
          ",\"time_us_without_dependent_launch\":", serial_s * 1e6,
          ",\"l2_resident_us\":", l2_resident_s * 1e6,
          tiled ? absl::StrCat(",\"tiled_us\":", tiled_s * 1e6, ",\"tiled_fraction_of_copy_bw\":",
                               bytes / tiled_s / 1e9 / copy_gbps, ",\"tiled_us_by_warps\":{", tiled_by_warps, "}",
                               ",\"tiled_us_by_groups_ahead\":{", tiled_by_ahead, "}",
                               ",\"tiled_us_by_warps_x_ahead\":{", tiled_by_both, "}")
                : std::string(),
          ",\"timing\":\"", how, "\"}"));
      std::fprintf(stderr,
                   "%-11s %-17s %13s %6ld %8s %5d %9.2f %8.0f %6.3f  W=%d  separate %.2f us"
                   "  no-PDL %.2f us  registers %.2f us  streamed %.2f us  L2-resident %.2f us"
                   "  tiled %.2f us\n",
                   shape.model, shape.layer, rows_list.c_str(), static_cast<long>(shape.cols),
                   bits_label.c_str(), batch, group_s * 1e6, gbps, gbps / copy_gbps, planned,
                   separate_s * 1e6, serial_s * 1e6, registers_s * 1e6, streamed_s * 1e6,
                   l2_resident_s * 1e6, tiled_s * 1e6);
    }
  }
  return absl::OkStatus();
}

absl::Status Run(int iters, bool groups_only, std::string_view only) {
  cudaStream_t stream;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaDeviceProp prop;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, 0));
  const int sm = prop.major * 10 + prop.minor;

  double copy_gbps = 0.0;
  if (absl::Status s = MeasureCopyBandwidth(
          stream, [](void* p, int64_t bytes) { return Fill(p, bytes, 1); }, &copy_gbps);
      !s.ok())
    return s;
  std::fprintf(stderr, "device %s (sm_%d, %d SMs), D2D copy %.0f GB/s (2*bytes/time)\n", prop.name,
               sm, prop.multiProcessorCount, copy_gbps);

  cublasHandle_t cublas;
  if (cublasCreate(&cublas) != CUBLAS_STATUS_SUCCESS)
    return absl::InternalError("cublasCreate failed");
  cublasSetStream(cublas, stream);
  DeviceMemory cublas_ws;
  if (absl::Status s = cublas_ws.Allocate(64 << 20); !s.ok()) return s;
  cublasSetWorkspace(cublas, cublas_ws.get(), 64 << 20);  // lets cuBLAS run inside graph capture

  std::vector<std::string> rows_json, group_json, plan_json;
  std::fprintf(stderr, "%-11s %-17s %13s %6s %8s %5s %9s %8s %6s\n", "model", "group", "out",
               "in", "K", "batch", "time_us", "GB/s", "frac");
  if (absl::Status s = RunGroups(stream, sm, prop.multiProcessorCount, iters, copy_gbps,
                                 kGroupShapes, only, &group_json);
      !s.ok())
    return s;
  if (absl::Status s = RunGroups(stream, sm, prop.multiProcessorCount, iters, copy_gbps,
                                 kPlanShapes, only, &plan_json);
      !s.ok())
    return s;

  std::fprintf(stderr, "%-11s %-17s %6s %6s %4s %5s %9s %8s %6s %6s\n", "model", "layer", "out",
               "in", "K", "batch", "time_us", "GB/s", "frac", "cublas");
  const absl::Span<const Shape> shapes =
      groups_only ? absl::Span<const Shape>() : absl::MakeConstSpan(kShapes);
  for (const Shape& shape : shapes) {
    // cuBLAS fp16 reference for this shape, at each batch.
    const int64_t w16_bytes = shape.rows * shape.cols * 2;
    const int w16_copies =
        static_cast<int>(std::max<int64_t>(2, (kWorkingSetBytes + w16_bytes - 1) / w16_bytes));
    DeviceMemory w16, x16, y32;
    if (absl::Status s = w16.Allocate(w16_bytes * w16_copies); !s.ok()) return s;
    if (absl::Status s = FillH(w16.get(), shape.rows * shape.cols * w16_copies, 7, -0.05f, 0.05f);
        !s.ok())
      return s;
    const int64_t x_stride = (shape.cols + 31) / 32 * 32;
    if (absl::Status s = x16.Allocate(x_stride * kGemvMaxBatch * 2); !s.ok()) return s;
    if (absl::Status s = FillH(x16.get(), x_stride * kGemvMaxBatch, 11, -1.0f, 1.0f); !s.ok())
      return s;
    if (absl::Status s = y32.Allocate(shape.rows * kGemvMaxBatch * 4); !s.ok()) return s;
    double cublas_s[kGemvMaxBatch + 1] = {};
    for (int batch : kBatches) {
      const float alpha = 1.0f, beta = 0.0f;
      auto launch = [&](int i) -> absl::Status {
        // y (rows×batch, col-major) = Wᵀ' · X: W row-major [rows, cols] is col-major [cols, rows].
        const __half* w = w16.get<__half>() + (i % w16_copies) * shape.rows * shape.cols;
        const cublasStatus_t st = cublasGemmEx(
            cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(shape.rows), batch,
            static_cast<int>(shape.cols), &alpha, w, CUDA_R_16F, static_cast<int>(shape.cols),
            x16.get(), CUDA_R_16F, static_cast<int>(x_stride), &beta, y32.get(), CUDA_R_32F,
            static_cast<int>(shape.rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (st != CUBLAS_STATUS_SUCCESS)
          return absl::InternalError(absl::StrCat("cublasGemmEx: status ", static_cast<int>(st)));
        return absl::OkStatus();
      };
      std::string how;
      if (absl::Status s = TimeLaunches(stream, iters, launch, &cublas_s[batch], &how); !s.ok())
        return s;
      const double bytes = static_cast<double>(w16_bytes + batch * shape.cols * 2);
      const double gbps = bytes / cublas_s[batch] / 1e9;
      rows_json.push_back(absl::StrCat(
          "{\"kernel\":\"cublas_gemm_f16\",\"model\":\"", shape.model, "\",\"layer\":\"",
          shape.layer, "\",\"rows\":", shape.rows, ",\"cols\":", shape.cols,
          ",\"bits\":16,\"batch\":", batch, ",\"time_us\":", cublas_s[batch] * 1e6,
          ",\"bytes_read\":", static_cast<int64_t>(bytes), ",\"gbps\":", gbps,
          ",\"fraction_of_copy_bw\":", gbps / copy_gbps, ",\"timing\":\"", how, "\"}"));
      std::fprintf(stderr, "%-11s %-17s %6ld %6ld %4s %5d %9.2f %8.0f %6.3f\n", shape.model,
                   shape.layer, static_cast<long>(shape.rows), static_cast<long>(shape.cols),
                   "f16", batch, cublas_s[batch] * 1e6, gbps, gbps / copy_gbps);
    }

    for (int bits : kBits) {
      absl::StatusOr<ScalarCodecLayout> layout =
          MakeScalarCodecLayout(shape.rows, shape.cols, bits, kScalarDefaultGroupSize);
      if (!layout.ok()) return layout.status();
      const int64_t stride = (layout->total_bytes + 255) / 256 * 256;
      const int copies =
          static_cast<int>(std::clamp<int64_t>((kWorkingSetBytes + stride - 1) / stride, 2, 256));
      DeviceMemory blobs;
      if (absl::Status s = blobs.Allocate(stride * copies); !s.ok()) return s;
      if (absl::Status s = Fill(blobs.get(), stride * copies, 3 + bits); !s.ok()) return s;
      for (int c = 0; c < copies; ++c) {  // finite scales, like an encoder's
        if (absl::Status s = FillH(blobs.get<uint8_t>() + c * stride + layout->scales_offset,
                                   layout->scales_bytes / 2, 5 + c, 0.005f, 0.02f);
            !s.ok())
          return s;
      }
      for (int batch : kBatches) {
        auto launch = [&](int i) -> absl::Status {
          ScalarCodecGemvParams p =
              MakeGemvParams(*layout, blobs.get<uint8_t>() + (i % copies) * stride);
          p.x = x16.get<uint16_t>();
          p.x_stride = x_stride;
          p.y = y32.get<float>();
          p.batch = batch;
          return LaunchScalarCodecGemv(p, stream);
        };
        ScalarCodecGemvParams check = MakeGemvParams(*layout, blobs.get());
        check.x = x16.get<uint16_t>();
        check.x_stride = x_stride;
        check.y = y32.get<float>();
        check.batch = batch;
        if (!IsSupported(sm, check)) return absl::FailedPreconditionError("GEMV not supported");
        double secs = 0.0;
        std::string how;
        if (absl::Status s = TimeLaunches(stream, iters, launch, &secs, &how); !s.ok()) return s;
        const double bytes =
            static_cast<double>(layout->codes_bytes + layout->scales_bytes + batch * x_stride * 2);
        const double gbps = bytes / secs / 1e9;
        rows_json.push_back(absl::StrCat(
            "{\"kernel\":\"scalar_codec_gemv\",\"model\":\"", shape.model, "\",\"layer\":\"",
            shape.layer, "\",\"rows\":", shape.rows, ",\"cols\":", shape.cols, ",\"bits\":", bits,
            ",\"group_size\":", layout->group_size, ",\"batch\":", batch,
            ",\"time_us\":", secs * 1e6, ",\"bytes_read\":", static_cast<int64_t>(bytes),
            ",\"gbps\":", gbps, ",\"fraction_of_copy_bw\":", gbps / copy_gbps,
            ",\"speedup_vs_cublas_f16\":", cublas_s[batch] / secs, ",\"timing\":\"", how, "\"}"));
        std::fprintf(stderr, "%-11s %-17s %6ld %6ld %4d %5d %9.2f %8.0f %6.3f %6.2fx\n",
                     shape.model, shape.layer, static_cast<long>(shape.rows),
                     static_cast<long>(shape.cols), bits, batch, secs * 1e6, gbps, gbps / copy_gbps,
                     cublas_s[batch] / secs);
      }
    }
  }

  // The rotation of the activations (fp16 in, fp16 out), per distinct input width.
  std::vector<std::string> rot_json;
  const std::vector<int64_t> widths =
      groups_only ? std::vector<int64_t>() : std::vector<int64_t>{4096, 14336, 8192, 28672};
  for (int64_t n : widths) {
    absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(n, 42);
    if (!rot.ok()) return rot.status();
    DeviceMemory base, xin, xout;
    if (absl::Status s = base.Allocate(rot->base_matrix().size() + 16); !s.ok()) return s;
    if (!rot->base_matrix().empty()) {
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpy(base.get(), rot->base_matrix().data(),
                                              rot->base_matrix().size(), cudaMemcpyHostToDevice));
    }
    if (absl::Status s = xin.Allocate(n * kGemvMaxBatch * 2); !s.ok()) return s;
    if (absl::Status s = xout.Allocate(n * kGemvMaxBatch * 2); !s.ok()) return s;
    if (absl::Status s = FillH(xin.get(), n * kGemvMaxBatch, 13, -1.0f, 1.0f); !s.ok()) return s;
    for (int batch : {1, 8}) {
      HadamardRotateParams p;
      p.rotation = DescribeRotation(*rot, base.get<int8_t>());
      p.x = xin.get();
      p.x_type = ActivationType::kF16;
      p.x_stride = n;
      p.out = xout.get();
      p.out_type = ActivationType::kF16;
      p.out_stride = n;
      p.batch = batch;
      if (!IsSupported(sm, p)) continue;
      auto launch = [&](int) { return LaunchHadamardRotate(p, stream); };
      double secs = 0.0;
      std::string how;
      if (absl::Status s = TimeLaunches(stream, iters, launch, &secs, &how); !s.ok()) return s;
      rot_json.push_back(absl::StrCat("{\"n\":", n, ",\"rotation\":\"", rot->Describe(),
                                      "\",\"batch\":", batch, ",\"time_us\":", secs * 1e6,
                                      ",\"timing\":\"", how, "\"}"));
      std::fprintf(stderr, "rotation %-22s batch %d: %.2f us\n", rot->Describe().c_str(), batch,
                   secs * 1e6);
    }
  }
  cublasDestroy(cublas);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamDestroy(stream));

  bench::PrintDeviceJson(prop, sm);
  bench::PrintCopyBandwidthJson(copy_gbps);
  std::printf(
      "  \"timing\": \"median over %d replays of a CUDA graph of %d launches (3 warm-up replays), "
      "weights cycled over >= %lld MB\",\n",
      iters, kLaunchesPerGraph, static_cast<long long>(kWorkingSetBytes >> 20));
  std::printf(
      "  \"bytes_read\": \"codes + fp16 scales + fp16 activations (cuBLAS: fp16 weight + "
      "activations); fp32 output writes not counted\",\n");
  std::printf("  \"gemv\": [\n");
  bench::PrintJsonRows(rows_json);
  std::printf("  ],\n  \"gemv_group\": [\n");
  bench::PrintJsonRows(group_json);
  std::printf("  ],\n  \"gemv_plan_sweep\": [\n");
  bench::PrintJsonRows(plan_json);
  std::printf("  ],\n  \"rotation\": [\n");
  bench::PrintJsonRows(rot_json);
  std::printf("  ]\n}\n");
  return absl::OkStatus();
}

}  // namespace
}  // namespace bitloom::kernels::cuda

int main(int argc, char** argv) {
  return bitloom::bench::ExitCode(
      "gpu_gemv_bench",
      bitloom::kernels::cuda::Run(bitloom::bench::IterationsFlag(argc, argv, 20),
                                  bitloom::bench::HasFlag(argc, argv, "--groups_only"),
                                  bitloom::bench::StringFlag(argc, argv, "--only")));
}
