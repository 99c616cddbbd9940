// The one way Bitloom's CUDA code checks a CUDA runtime call: BITLOOM_CUDA_RETURN_IF_ERROR(expr)
// returns an absl::Status (INTERNAL, naming the call, file, line and CUDA's own message) from the
// enclosing function when `expr` is not cudaSuccess. Header-only, includable by plain g++ (it needs
// only the CUDA runtime API declarations); safe to use from any thread.
#pragma once

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bitloom::kernels::cuda {

// OK for cudaSuccess, otherwise INTERNAL with `what` and the location. Out of line of the macro so
// the macro stays one statement.
inline absl::Status CudaStatus(cudaError_t err, const char* what, const char* file, int line) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " failed at ", file, ":", line, ": ",
                                          cudaGetErrorName(err), " (", cudaGetErrorString(err),
                                          ")"));
}

}  // namespace bitloom::kernels::cuda

#define BITLOOM_CUDA_RETURN_IF_ERROR(expr)                                                    \
  do {                                                                                        \
    if (const ::absl::Status bitloom_cuda_status_ =                                           \
            ::bitloom::kernels::cuda::CudaStatus((expr), #expr, __FILE__, __LINE__);          \
        !bitloom_cuda_status_.ok()) {                                                         \
      return bitloom_cuda_status_;                                                            \
    }                                                                                         \
  } while (false)
