// GPU vs CPU for the gated MLP activation (SwiGLU, GeGLU-tanh): fp32 math on the GPU against
// GatedActivationF32's double evaluation. Skips when no GPU is present (CI).
#include "bitloom/kernels/cuda/gated_activation.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "bitloom/kernels/activations.h"
#include "cuda_test_util.h"
#include "test_util.h"

namespace bitloom::kernels::cuda {
namespace {

using testing::DeviceBuffer;

// x·σ(a) with expf, one division and one multiply by up: a few fp32 ulps where the result is
// O(1). GELU's argument a = 2·√(2/π)(x + 0.044715x³) is itself rounded, and exp(−a) turns its
// relative error into |a|·2⁻²⁴ of the result, so the bound is relative to max(|want|, 1e-3) (below
// 1e-3 the function is in its exponentially small tail, where absolute error ~1e-9 is what matters).
constexpr double kRelTolerance = 2e-5;

void CheckGlu(int64_t rows, int64_t dim, Activation act) {
  SCOPED_TRACE(::testing::Message() << "rows=" << rows << " dim=" << dim
                                    << " gelu=" << (act == Activation::kGeluTanh));
  // A fused gate_up output: row r is [gate (dim) | up (dim) | 3 padding].
  const int64_t stride = 2 * dim + 3;
  std::vector<float> gate_up = kernels::testing::RandomVector(rows * stride, rows * 31 + dim, 3.0f);
  gate_up[0] = -120.0f;  // exp overflow: the result is −0 against the CPU's ~−1e-50 (0 in fp32)
  if (gate_up.size() > 1) gate_up[1] = 90.0f;
  std::vector<float> gate(rows * dim), up(rows * dim), want(rows * dim);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < dim; ++i) {
      gate[r * dim + i] = gate_up[r * stride + i];
      up[r * dim + i] = gate_up[r * stride + dim + i];
    }
  }
  ASSERT_TRUE(GatedActivationF32({gate.data(), up.data(), want.data(), rows, dim, act}, nullptr).ok());

  DeviceBuffer d_in(gate_up.size() * 4), d_out32(rows * dim * 4), d_out16(rows * dim * 2);
  d_in.Upload(gate_up);
  GatedActivationParams p;
  p.gate = d_in.as<float>();
  p.gate_stride = stride;
  p.up = d_in.as<float>() + dim;
  p.up_stride = stride;
  p.out_f32 = d_out32.as<float>();
  p.out_f16 = d_out16.as<uint16_t>();
  p.rows = rows;
  p.dim = dim;
  p.activation = act;
  const absl::Status st = LaunchGatedActivation(p, nullptr);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> got = d_out32.Download<float>(rows * dim);
  const std::vector<float> got16 = testing::FromF16(d_out16.Download<uint16_t>(rows * dim));
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << "out[" << i << "] = " << got[i];
    const double err = std::abs(static_cast<double>(got[i]) - want[i]) /
                       std::max(std::abs(static_cast<double>(want[i])), 1e-3);
    worst = std::max(worst, err);
    ASSERT_TRUE(testing::WithinF16Rounding(got16[i], want[i]))
        << "out_f16[" << i << "] = " << got16[i] << ", want " << want[i];
  }
  EXPECT_LE(worst, kRelTolerance);
}

TEST(CudaGatedActivation, MatchesCpu) {
  BITLOOM_SKIP_WITHOUT_GPU();
  for (Activation act : {Activation::kSilu, Activation::kGeluTanh}) {
    for (int64_t dim : {1, 1000, 1536, 14336}) {
      for (int64_t rows : {1, 7, 33}) CheckGlu(rows, dim, act);
    }
  }
}

TEST(CudaGatedActivation, RejectsBadParams) {
  float dummy = 0.0f;
  GatedActivationParams p;
  p.gate = p.up = &dummy;
  p.gate_stride = p.up_stride = 4;
  p.out_f32 = &dummy;
  p.rows = 1;
  p.dim = 8;  // > strides
  EXPECT_EQ(LaunchGatedActivation(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
  p.dim = 4;
  p.out_f32 = nullptr;
  EXPECT_EQ(LaunchGatedActivation(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
  p.out_f32 = &dummy;
  p.up = nullptr;
  EXPECT_EQ(LaunchGatedActivation(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
  p.up = &dummy;
  p.rows = 0;
  EXPECT_TRUE(LaunchGatedActivation(p, nullptr).ok());
}

}  // namespace
}  // namespace bitloom::kernels::cuda
