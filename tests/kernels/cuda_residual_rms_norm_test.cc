// GPU vs CPU for the fused residual add + RMSNorm: the residual update must equal the CPU's fp32
// add bit for bit, and the norm RmsNormF32 (Σx² in double on both sides, so the fp32 outputs agree to
// a last-bit difference at most). Skips when no GPU is present (CI).
#include "bitloom/kernels/cuda/residual_rms_norm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "bitloom/kernels/rms_norm.h"
#include "cuda_test_util.h"
#include "test_util.h"

namespace bitloom::kernels::cuda {
namespace {

using testing::DeviceBuffer;

struct NormCase {
  int64_t tokens;
  int64_t hidden;
  float weight_offset;
  bool with_delta;
  bool want_f32;
  bool want_f16;
};

void CheckNorm(const NormCase& c) {
  SCOPED_TRACE(::testing::Message() << "tokens=" << c.tokens << " hidden=" << c.hidden
                                    << " offset=" << c.weight_offset << " delta=" << c.with_delta
                                    << " f32=" << c.want_f32 << " f16=" << c.want_f16);
  const int64_t n = c.tokens * c.hidden;
  const int64_t delta_stride = c.hidden + 5;  // a GEMV output with a padded row
  std::vector<float> residual = kernels::testing::RandomVector(n, c.hidden * 7 + c.tokens, 2.0f);
  std::vector<float> delta_rows = kernels::testing::RandomVector(c.tokens * delta_stride, 99 + n);
  std::vector<float> weight = kernels::testing::RandomVector(c.hidden, c.hidden, 0.3f);
  const float eps = 1e-6f;

  // CPU: x += delta (fp32), then RmsNormF32.
  std::vector<float> want_residual = residual;
  if (c.with_delta) {
    for (int64_t t = 0; t < c.tokens; ++t) {
      for (int64_t i = 0; i < c.hidden; ++i) {
        want_residual[t * c.hidden + i] += delta_rows[t * delta_stride + i];
      }
    }
  }
  std::vector<float> want(n);
  ASSERT_TRUE(RmsNormF32({want_residual.data(), weight.data(), want.data(), c.tokens, c.hidden,
                          eps, c.weight_offset},
                         nullptr)
                  .ok());

  DeviceBuffer d_res(n * 4), d_delta(delta_rows.size() * 4), d_w(c.hidden * 4), d_out32(n * 4),
      d_out16(n * 2);
  d_res.Upload(residual);
  d_delta.Upload(delta_rows);
  d_w.Upload(weight);
  ResidualRmsNormParams p;
  p.residual = d_res.as<float>();
  p.delta = c.with_delta ? d_delta.as<float>() : nullptr;
  p.delta_stride = delta_stride;
  p.weight = d_w.as<float>();
  p.weight_offset = c.weight_offset;
  p.eps = eps;
  p.out_f32 = c.want_f32 ? d_out32.as<float>() : nullptr;
  p.out_f16 = c.want_f16 ? d_out16.as<uint16_t>() : nullptr;
  p.tokens = c.tokens;
  p.hidden = c.hidden;
  const absl::Status st = LaunchResidualRmsNorm(p, nullptr);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  // The residual update is one fp32 add per element on both sides: exact.
  const std::vector<float> got_res = d_res.Download<float>(n);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got_res[i], want_residual[i]) << "residual[" << i << "]";
  if (c.want_f32) {
    // Σx² is double on both sides and only summed in another order, so inv_rms is the same fp32
    // value except when the double lands within ~1e-16 of an fp32 rounding boundary: allow 2 ulps.
    const std::vector<float> got = d_out32.Download<float>(n);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_NEAR(got[i], want[i], std::abs(want[i]) * 2.4e-7f + 1e-30f) << "out_f32[" << i << "]";
    }
  }
  if (c.want_f16) {
    const std::vector<float> got = testing::FromF16(d_out16.Download<uint16_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_TRUE(testing::WithinF16Rounding(got[i], want[i]))
          << "out_f16[" << i << "] = " << got[i] << ", want " << want[i];
    }
  }
}

TEST(CudaResidualRmsNorm, MatchesCpu) {
  BITLOOM_SKIP_WITHOUT_GPU();
  // 2048 / 3072: the last 256-thread width and the first 1024-thread one below 4096; 8192: the
  // widest row held in registers (8 per thread); 16384: the loop form.
  for (int64_t hidden : {576, 640, 1000, 2048, 3072, 4096, 8192, 16384, 7}) {
    for (int64_t tokens : {1, 7, 33}) {
      CheckNorm({tokens, hidden, 0.0f, true, true, true});
      CheckNorm({tokens, hidden, 1.0f, true, false, true});  // Gemma's (1 + w)
      CheckNorm({tokens, hidden, 0.0f, false, true, false});  // norm only (final norm)
    }
  }
}

TEST(CudaResidualRmsNorm, InPlaceOutput) {
  BITLOOM_SKIP_WITHOUT_GPU();
  // out_f32 == residual: the normalised row replaces the residual (Gemma's post-norm of a delta).
  const int64_t tokens = 3, hidden = 1000;
  std::vector<float> x = kernels::testing::RandomVector(tokens * hidden, 5);
  std::vector<float> w = kernels::testing::RandomVector(hidden, 6);
  std::vector<float> want(x.size());
  ASSERT_TRUE(RmsNormF32({x.data(), w.data(), want.data(), tokens, hidden, 1e-5f, 1.0f}, nullptr).ok());
  DeviceBuffer d_x(x.size() * 4), d_w(hidden * 4);
  d_x.Upload(x);
  d_w.Upload(w);
  ResidualRmsNormParams p;
  p.residual = d_x.as<float>();
  p.weight = d_w.as<float>();
  p.weight_offset = 1.0f;
  p.eps = 1e-5f;
  p.out_f32 = d_x.as<float>();
  p.tokens = tokens;
  p.hidden = hidden;
  ASSERT_TRUE(LaunchResidualRmsNorm(p, nullptr).ok());
  const std::vector<float> got = d_x.Download<float>(x.size());
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(got[i], want[i], std::abs(want[i]) * 2.4e-7f);
}

TEST(CudaResidualRmsNorm, RejectsBadParams) {
  // Validation happens before any CUDA call, so this runs without a GPU too.
  float dummy = 0.0f;
  ResidualRmsNormParams p;
  p.residual = &dummy;
  p.weight = &dummy;
  p.out_f32 = &dummy;
  p.tokens = 1;
  p.hidden = 0;
  EXPECT_EQ(LaunchResidualRmsNorm(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
  p.hidden = 8;
  p.weight = nullptr;
  EXPECT_EQ(LaunchResidualRmsNorm(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
  p.weight = &dummy;
  p.delta = &dummy;
  p.delta_stride = 4;
  EXPECT_EQ(LaunchResidualRmsNorm(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
  p.delta = nullptr;
  p.out_f32 = nullptr;
  EXPECT_EQ(LaunchResidualRmsNorm(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
  p.out_f32 = &dummy;
  p.tokens = 0;
  EXPECT_TRUE(LaunchResidualRmsNorm(p, nullptr).ok());  // nothing to launch
}

}  // namespace
}  // namespace bitloom::kernels::cuda
