// LaunchKernel: how the decode-path launchers enqueue a kernel, with a thread-block cluster when
// asked and with programmatic dependent launch where it is on (bitloom/kernels/cuda/dependent_launch.h).
// A kernel launched here must call detail::AllowDependentLaunch and detail::WaitForPredecessors
// (dependent_launch.cuh) as that header describes. Private to bitloom::kernels_cuda.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "absl/status/status.h"
#include "bitloom/kernels/cuda/cuda_status.h"

namespace bitloom::kernels::cuda::detail {

struct KernelShape {
  dim3 grid;
  dim3 block;
  size_t shared_bytes = 0;
  unsigned cluster = 1;  // blocks per cluster along x; 1 = no cluster
};

// Whether launches on the current device get the programmatic-serialization attribute now.
absl::Status DependentLaunchActive(bool* active);

template <typename... Params, typename... Args>
absl::Status LaunchKernel(const KernelShape& shape, cudaStream_t stream, void (*kernel)(Params...),
                          Args&&... args) {
  bool dependent = false;
  if (absl::Status s = DependentLaunchActive(&dependent); !s.ok()) return s;
  cudaLaunchAttribute attrs[2];
  unsigned count = 0;
  if (shape.cluster > 1) {
    attrs[count].id = cudaLaunchAttributeClusterDimension;
    attrs[count].val.clusterDim.x = shape.cluster;
    attrs[count].val.clusterDim.y = 1;
    attrs[count].val.clusterDim.z = 1;
    ++count;
  }
  if (dependent) {
    attrs[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[count].val.programmaticStreamSerializationAllowed = 1;
    ++count;
  }
  cudaLaunchConfig_t config{};
  config.gridDim = shape.grid;
  config.blockDim = shape.block;
  config.dynamicSmemBytes = shape.shared_bytes;
  config.stream = stream;
  config.attrs = attrs;
  config.numAttrs = count;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
  return absl::OkStatus();
}

}  // namespace bitloom::kernels::cuda::detail
