// The current CUDA device's properties that launchers size their grids by, each queried once per
// device and cached (a launcher may run thousands of times a second; cudaDeviceGetAttribute is not
// free). Private to bitloom::kernels_cuda; thread-safe.
#pragma once

#include "absl/status/status.h"

namespace bitloom::kernels::cuda::detail {

// Compute capability as major·10 + minor (90 on H100/H200).
absl::Status CurrentDeviceSm(int* sm);
// Streaming multiprocessors of the current device.
absl::Status CurrentDeviceMultiprocessors(int* sms);

}  // namespace bitloom::kernels::cuda::detail
