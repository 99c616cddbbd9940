// gpu_rotation_bench: the randomized Hadamard rotation of decode activations (LaunchHadamardRotate)
// at the widths of real models, batch 1 and 8 (decode) and 2048 (a prefill chunk). JSON on stdout,
// a short table on stderr.
//
//   gpu_rotation_bench [--iters N] > rotation.json
//
// For each width: fp16 -> fp16 and fp32 -> fp16 (the residual stream is fp32), under the
// launcher's own choice ("auto"), the one-block-per-row schedule (the previous kernel, as a
// same-run baseline), and the register-tiled schedule at every cluster size it accepts for the
// width (1..8 blocks per row), each with its launch plan (blocks per row, threads, shared bytes).
//
// Timing: each measurement is a CUDA graph of kLaunchesPerGraph launches on the same buffers (a
// decode step's activations are L2-resident, as here), replayed 3 times to warm up and then
// `iters` times, each replay timed with cudaEvents; time = median replay / kLaunchesPerGraph. This
// includes the per-kernel launch gap inside a graph, which is what a decode step pays.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "gpu_bench_util.cuh"
#include "bitloom/kernels/cuda/hadamard_rotation.h"
#include "bitloom/kernels/hadamard.h"

namespace bitloom::kernels::cuda {
namespace {

using bench::DeviceMemory;

constexpr int kLaunchesPerGraph = 32;
constexpr int64_t kWidths[] = {576, 960, 1536, 2048, 4096, 8192, 14336, 28672};
constexpr int kBatches[] = {1, 8, 2048};  // decode, decode bucket, prefill chunk

// Values in [-1, 1) from a hash of the index, as fp32 or fp16.
__global__ void FillActivations(void* p, int64_t n, bool f16) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    uint64_t z = static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ull + 17;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z ^= z >> 27;
    const float v = static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
    if (f16) {
      static_cast<__half*>(p)[i] = __float2half_rn(v);
    } else {
      static_cast<float*>(p)[i] = v;
    }
  }
}

// Median seconds per launch, timed as described atop the file (a failed capture is an error).
absl::Status TimeLaunches(cudaStream_t stream, int iters,
                          const std::function<absl::Status()>& launch, double* seconds) {
  return bench::TimeLaunches(
      stream, iters, kLaunchesPerGraph, [&](int) { return launch(); },
      bench::GraphFallback::kFail, seconds, nullptr);
}

const char* ScheduleName(RotateSchedule s) {
  switch (s) {
    case RotateSchedule::kAuto:
      return "auto";
    case RotateSchedule::kRowPerBlock:
      return "row_per_block";
    case RotateSchedule::kRegisterTiled:
      return "register_tiled";
  }
  return "?";
}

absl::Status Run(int iters) {
  cudaStream_t stream;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaDeviceProp prop;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, 0));
  const int sm = prop.major * 10 + prop.minor;
  std::fprintf(stderr, "device %s (sm_%d, %d SMs)\n", prop.name, sm, prop.multiProcessorCount);
  std::fprintf(stderr, "%-26s %-5s %5s %-15s %7s %7s %7s %9s\n", "rotation", "in", "batch",
               "schedule", "blocks", "threads", "smem", "time_us");

  std::vector<std::string> rows;
  for (int64_t n : kWidths) {
    absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(n, 42);
    if (!rot.ok()) return rot.status();
    DeviceMemory base, xin, xout;
    if (absl::Status s = base.Allocate(rot->base_matrix().size() + 16); !s.ok()) return s;
    if (!rot->base_matrix().empty()) {
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpy(base.get(), rot->base_matrix().data(),
                                              rot->base_matrix().size(), cudaMemcpyHostToDevice));
    }
    const int64_t max_batch = kBatches[std::size(kBatches) - 1];
    if (absl::Status s = xin.Allocate(n * max_batch * 4); !s.ok()) return s;
    if (absl::Status s = xout.Allocate(n * max_batch * 2); !s.ok()) return s;
    for (ActivationType in : {ActivationType::kF16, ActivationType::kF32}) {
      const bool in16 = in == ActivationType::kF16;
      FillActivations<<<256, 256, 0, stream>>>(xin.get(), n * max_batch, in16);
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
      for (int batch : kBatches) {
        HadamardRotateParams p;
        p.rotation = DescribeRotation(*rot, base.get<int8_t>());
        p.x = xin.get();
        p.x_type = in;
        p.x_stride = n;
        p.out = xout.get();
        p.out_type = ActivationType::kF16;
        p.out_stride = n;
        p.batch = batch;
        // (schedule, cluster_blocks): the launcher's choice, the baseline, every tiled split.
        std::vector<std::pair<RotateSchedule, int>> variants = {{RotateSchedule::kAuto, 0},
                                                                {RotateSchedule::kRowPerBlock, 0}};
        for (int c = 1; c <= 8; ++c) variants.push_back({RotateSchedule::kRegisterTiled, c});
        for (const auto& [schedule, cluster] : variants) {
          p.schedule = schedule;
          p.cluster_blocks = cluster;
          absl::StatusOr<RotateLaunchInfo> plan = PlanHadamardRotate(sm, p);
          if (!plan.ok() || !IsSupported(sm, p)) continue;  // this split does not fit the width
          double secs = 0.0;
          if (absl::Status s = TimeLaunches(
                  stream, iters, [&] { return LaunchHadamardRotate(p, stream); }, &secs);
              !s.ok())
            return s;
          rows.push_back(absl::StrCat(
              "{\"n\":", n, ",\"rotation\":\"", rot->Describe(), "\",\"in\":\"",
              in16 ? "f16" : "f32", "\",\"out\":\"f16\",\"batch\":", batch, ",\"schedule\":\"",
              ScheduleName(schedule), "\",\"ran\":\"", ScheduleName(plan->schedule),
              "\",\"cluster_blocks\":", plan->cluster_blocks, ",\"threads\":", plan->threads,
              ",\"shared_bytes\":", plan->shared_bytes, ",\"time_us\":", secs * 1e6, "}"));
          std::fprintf(stderr, "%-26s %-5s %5d %-15s %7d %7d %7lld %9.2f\n",
                       rot->Describe().c_str(), in16 ? "f16" : "f32", batch,
                       schedule == RotateSchedule::kAuto ? "auto" : ScheduleName(plan->schedule),
                       plan->cluster_blocks, plan->threads,
                       static_cast<long long>(plan->shared_bytes), secs * 1e6);
        }
      }
    }
  }
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamDestroy(stream));

  bench::PrintDeviceJson(prop, sm);
  std::printf(
      "  \"timing\": \"median over %d replays of a CUDA graph of %d launches (3 warm-up replays), "
      "same L2-resident buffers\",\n",
      iters, kLaunchesPerGraph);
  std::printf("  \"rotation\": [\n");
  bench::PrintJsonRows(rows);
  std::printf("  ]\n}\n");
  return absl::OkStatus();
}

}  // namespace
}  // namespace bitloom::kernels::cuda

int main(int argc, char** argv) {
  return bitloom::bench::ExitCode(
      "gpu_rotation_bench",
      bitloom::kernels::cuda::Run(bitloom::bench::IterationsFlag(argc, argv, 50)));
}
