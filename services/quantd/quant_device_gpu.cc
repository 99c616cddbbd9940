// The GPU half of quant_device.h, in builds with the CUDA path (bitloom::quant_cuda).
#include <utility>

#include "bitloom/quant/cuda/gpu_quant_backend.h"
#include "quant_device.h"

namespace bitloom::quantd::internal {

bool GpuBuilt() { return true; }

bool GpuVisible() { return quant::cuda::GpuQuantBackend::DevicePresent(); }

absl::StatusOr<std::unique_ptr<quant::QuantBackend>> CreateGpuBackend(ThreadPool* pool) {
  auto backend = quant::cuda::GpuQuantBackend::Create(pool);
  if (!backend.ok()) return backend.status();
  return std::unique_ptr<quant::QuantBackend>(std::move(*backend));
}

}  // namespace bitloom::quantd::internal
