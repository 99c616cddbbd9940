// Status checks for the CUDA math libraries quant_cuda calls (cuBLAS, cuSOLVER), the counterparts of
// BITLOOM_CUDA_RETURN_IF_ERROR (kernels/cuda/cuda_status.h) for their own status enums: INTERNAL,
// naming the call, file and line. Private to libs/quant/cuda; plain C++.
#pragma once

#include <cublas_v2.h>
#include <cusolverDn.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bitloom::quant::cuda::internal {

inline absl::Status CublasStatus(cublasStatus_t st, const char* what, const char* file, int line) {
  if (st == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " failed at ", file, ":", line, ": ",
                                          cublasGetStatusString(st)));
}

inline absl::Status CusolverStatus(cusolverStatus_t st, const char* what, const char* file,
                                   int line) {
  if (st == CUSOLVER_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " failed at ", file, ":", line,
                                          ": cusolverStatus ", static_cast<int>(st)));
}

}  // namespace bitloom::quant::cuda::internal

#define BITLOOM_CUBLAS_RETURN_IF_ERROR(expr)                                                   \
  do {                                                                                         \
    if (const ::absl::Status bitloom_cublas_status_ =                                          \
            ::bitloom::quant::cuda::internal::CublasStatus((expr), #expr, __FILE__, __LINE__); \
        !bitloom_cublas_status_.ok()) {                                                        \
      return bitloom_cublas_status_;                                                           \
    }                                                                                          \
  } while (false)

#define BITLOOM_CUSOLVER_RETURN_IF_ERROR(expr)                                                   \
  do {                                                                                           \
    if (const ::absl::Status bitloom_cusolver_status_ =                                          \
            ::bitloom::quant::cuda::internal::CusolverStatus((expr), #expr, __FILE__, __LINE__); \
        !bitloom_cusolver_status_.ok()) {                                                        \
      return bitloom_cusolver_status_;                                                           \
    }                                                                                            \
  } while (false)
