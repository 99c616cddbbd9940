// The device a quantization job's Hessians and LDLQ run on: quantd's --device flag
// (BITLOOM_QUANTD_DEVICE), resolved once at start-up, and the QuantBackend each job makes from it.
//
//   auto  the GPU when this build has the CUDA path and a GPU is visible, else the CPU
//   cpu   the CPU (quant::CpuQuantBackend)
//   gpu   the GPU (quant::cuda::GpuQuantBackend); quantd refuses to start without one
//
// The device also picks the jobs' BlockRunnerFactory: on the GPU the blocks' forwards run there too
// (quant::cuda::GpuBlockRunner over the CPU engine's model, its sites' inputs going straight to the
// GPU backend's Hessians); on the CPU they are EngineRunnerFactory()'s.
//
// The GPU backend exists only in builds with CUDA (quant_device_gpu.cc; quant_device_cpu_only.cc
// otherwise). Thread-safe (no state).
#pragma once

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/quant/quant_backend.h"
#include "block_runner_factory.h"

namespace bitloom::quantd {

enum class QuantDevice { kCpu, kGpu };

// INVALID_ARGUMENT for a value other than auto, cpu or gpu; FAILED_PRECONDITION for gpu when the
// build has no CUDA path or no GPU is visible.
absl::StatusOr<QuantDevice> ResolveQuantDevice(std::string_view flag);

// A backend on `device` for one job; `pool` (may be null) is the CPU backend's, and the GPU
// backend's for rotating Hessians. FAILED_PRECONDITION when the GPU has gone away since start-up.
absl::StatusOr<std::unique_ptr<quant::QuantBackend>> CreateQuantBackend(QuantDevice device,
                                                                        ThreadPool* pool);

// The runners of jobs on `device`.
BlockRunnerFactory RunnerFactoryFor(QuantDevice device);

namespace internal {
// Defined by quant_device_gpu.cc or quant_device_cpu_only.cc.
bool GpuBuilt();
bool GpuVisible();
absl::StatusOr<std::unique_ptr<quant::QuantBackend>> CreateGpuBackend(ThreadPool* pool);
// The GPU block forwards; without CUDA, a factory that refuses every model.
BlockRunnerFactory GpuRunnerFactory();
}  // namespace internal

}  // namespace bitloom::quantd
