// RunGpuBench in a build without CUDA: the GPU engine is not there to measure.
#include "bench_gpu.h"

namespace bitloom::tools {

absl::Status CheckGpuBenchAvailable() {
  return absl::FailedPreconditionError(
      "bitloom bench measures the GPU engine: it needs a CUDA build of bitloom "
      "(-DBITLOOM_CUDA=ON) and a GPU; this bitloom was built without CUDA. Without a GPU, "
      "--inferd=ADDR --clients=N --skip_gpu measures the latency of a running inferd only.");
}

absl::StatusOr<nlohmann::json> RunGpuBench(const modelstore::ArtifactReader&,
                                           const GpuBenchOptions&) {
  return CheckGpuBenchAvailable();
}

}  // namespace bitloom::tools
