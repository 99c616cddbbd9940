// The rotation's fused input prologues against the kernels they replace:
//  - a gated MLP's halves (HadamardRotateParams::up): R·(act(gate) · up) formed while loading must
//    equal LaunchGatedActivation followed by the plain rotation bit for bit, for SwiGLU and GeGLU;
//  - a residual RMSNorm (HadamardRotateParams::norm): the residual update must equal
//    LaunchResidualRmsNorm's bit for bit, and the rotated row norm-then-rotate's within a few fp32
//    ulps (1/rms is applied after the transform);
// for both schedules, every cluster split the launcher accepts, fp32 and fp16 output, aligned and
// unaligned rows. Skips when no GPU is present (CI), except the argument checks, which never
// reach the device.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "bitloom/kernels/activations.h"
#include "bitloom/kernels/cuda/gated_activation.h"
#include "bitloom/kernels/cuda/hadamard_rotation.h"
#include "bitloom/kernels/cuda/residual_rms_norm.h"
#include "bitloom/kernels/hadamard.h"
#include "cuda_test_util.h"
#include "test_util.h"

namespace bitloom::kernels::cuda {
namespace {

using testing::DeviceBuffer;

// The plain rotation of fp32 rows x into out: the reference the fused inputs are compared with
// (the launcher's choice of schedule), and the starting point of the fused launch's params.
HadamardRotateParams PlainRotation(const HadamardRotation& rot, const DeviceBuffer& base,
                                   const void* x, int64_t x_stride, void* out,
                                   ActivationType out_type, int64_t out_stride, int batch) {
  HadamardRotateParams p;
  p.rotation = DescribeRotation(rot, base.as<int8_t>());
  p.x = x;
  p.x_type = ActivationType::kF32;
  p.x_stride = x_stride;
  p.out = out;
  p.out_type = out_type;
  p.out_stride = out_stride;
  p.batch = batch;
  return p;
}

struct GatedCase {
  int64_t n;
  int batch;
  Activation activation;
  ActivationType out_type;
  RotateSchedule schedule = RotateSchedule::kAuto;
  int cluster_blocks = 0;
  int64_t pad = 0;  // gate_up row = [gate (n) | pad | up (n) | pad]: odd pads misalign up's rows
};

void CheckGatedRotation(const GatedCase& c) {
  SCOPED_TRACE(::testing::Message()
               << "n=" << c.n << " batch=" << c.batch
               << " gelu=" << (c.activation == Activation::kGeluTanh)
               << " out16=" << (c.out_type == ActivationType::kF16)
               << " schedule=" << static_cast<int>(c.schedule) << " cluster=" << c.cluster_blocks
               << " pad=" << c.pad);
  absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(c.n, 0x9a7edu + c.n);
  ASSERT_TRUE(rot.ok()) << rot.status();
  // One fused gate_up output per token, as the engine's grouped GEMV writes it.
  const int64_t stride = 2 * (c.n + c.pad);
  const std::vector<float> gate_up =
      kernels::testing::RandomVector(stride * c.batch, c.n * 7 + c.batch, 4.0f);
  const int64_t out_stride = (c.n + 31) / 32 * 32 + 32;
  const size_t out_elem = c.out_type == ActivationType::kF16 ? 2 : 4;
  DeviceBuffer d_gate_up(gate_up.size() * 4), d_act(c.n * c.batch * 4),
      d_base(rot->base_matrix().size() + 1), d_want(out_stride * c.batch * out_elem),
      d_got(out_stride * c.batch * out_elem);
  d_gate_up.Upload(gate_up);
  if (!rot->base_matrix().empty()) d_base.Upload(rot->base_matrix());
  const float* gate = d_gate_up.as<float>();
  const float* up = d_gate_up.as<float>() + c.n + c.pad;

  // Reference: the activation through memory, then the plain rotation (launcher's choice).
  GatedActivationParams gp;
  gp.gate = gate;
  gp.gate_stride = stride;
  gp.up = up;
  gp.up_stride = stride;
  gp.out_f32 = d_act.as<float>();
  gp.rows = c.batch;
  gp.dim = c.n;
  gp.activation = c.activation;
  ASSERT_TRUE(LaunchGatedActivation(gp, nullptr).ok());
  HadamardRotateParams rp = PlainRotation(*rot, d_base, d_act.as<void>(), c.n, d_want.as<void>(),
                                          c.out_type, out_stride, c.batch);
  ASSERT_TRUE(LaunchHadamardRotate(rp, nullptr).ok());

  // Fused: the rotation reads gate and up.
  rp.x = gate;
  rp.x_stride = stride;
  rp.up = up;
  rp.up_stride = stride;
  rp.activation = c.activation;
  rp.out = d_got.as<void>();
  rp.schedule = c.schedule;
  rp.cluster_blocks = c.cluster_blocks;
  const absl::Status launched = LaunchHadamardRotate(rp, nullptr);
  ASSERT_TRUE(launched.ok()) << launched;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  const size_t bytes = out_stride * c.batch * out_elem;
  const std::vector<uint8_t> want = d_want.Download<uint8_t>(bytes);
  const std::vector<uint8_t> got = d_got.Download<uint8_t>(bytes);
  int64_t mismatches = 0;
  for (size_t e = 0; e < bytes / out_elem; ++e) {
    if (std::memcmp(&got[e * out_elem], &want[e * out_elem], out_elem) != 0 && ++mismatches <= 3) {
      ADD_FAILURE() << "element " << e << " (row " << e / out_stride << ", column "
                    << e % out_stride << ") differs from the unfused result";
    }
  }
  EXPECT_EQ(mismatches, 0);
}

// The intermediate sizes of SmolLM2 (1536), Gemma 3 270M (2048) and Llama-3 8B / 70B (14336,
// 28672), and a Paley width (576) the tiled kernel mixes.
constexpr int64_t kWidths[] = {576, 1536, 2048, 4096, 14336, 28672};

TEST(CudaGatedRotation, EqualsActivationThenRotation) {
  BITLOOM_SKIP_WITHOUT_GPU();
  for (int64_t n : kWidths) {
    for (int batch : {1, 8}) {
      for (Activation act : {Activation::kSilu, Activation::kGeluTanh}) {
        for (ActivationType out : {ActivationType::kF16, ActivationType::kF32}) {
          CheckGatedRotation({n, batch, act, out});
        }
      }
    }
  }
}

TEST(CudaGatedRotation, EveryScheduleClusterAndAlignment) {
  BITLOOM_SKIP_WITHOUT_GPU();
  int major = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  for (int64_t n : {int64_t{4096}, int64_t{14336}}) {
    for (int cluster = 1; cluster <= 8; ++cluster) {
      if (cluster > 1 && major < 9) break;
      absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(n, 1);
      ASSERT_TRUE(rot.ok());
      HadamardRotateParams probe;
      probe.rotation = DescribeRotation(*rot, reinterpret_cast<const int8_t*>(16));
      probe.x = probe.out = reinterpret_cast<void*>(16);
      probe.x_stride = probe.out_stride = n;
      probe.batch = 3;
      probe.schedule = RotateSchedule::kRegisterTiled;
      probe.cluster_blocks = cluster;
      if (!PlanHadamardRotate(major * 10, probe).ok()) continue;
      CheckGatedRotation({n, 3, Activation::kSilu, ActivationType::kF16,
                          RotateSchedule::kRegisterTiled, cluster});
    }
    CheckGatedRotation({n, 2, Activation::kGeluTanh, ActivationType::kF32,
                        RotateSchedule::kRowPerBlock});
    for (int64_t pad : {1, 3}) {
      CheckGatedRotation({n, 3, Activation::kSilu, ActivationType::kF16, RotateSchedule::kAuto, 0,
                          pad});
    }
  }
}

TEST(CudaGatedRotation, RejectsHalfGateAndShortUpStride) {
  absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(2048, 1);
  ASSERT_TRUE(rot.ok());
  HadamardRotateParams p;
  p.rotation = DescribeRotation(*rot, nullptr);
  p.x = p.out = reinterpret_cast<void*>(16);
  p.x_stride = p.out_stride = 2048;
  p.batch = 1;
  p.up = reinterpret_cast<const float*>(16);
  p.up_stride = 2048;
  p.x_type = ActivationType::kF16;
  absl::Status s = LaunchHadamardRotate(p, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("x_type"), std::string::npos) << s;
  p.x_type = ActivationType::kF32;
  p.up_stride = 2047;
  s = LaunchHadamardRotate(p, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("up_stride"), std::string::npos) << s;
}

// ---------------------------------------------------------------------------------------------
// Residual RMSNorm input

struct NormCase {
  int64_t n;
  int batch;
  ActivationType out_type;
  bool with_delta = true;
  float weight_offset = 0.0f;
  RotateSchedule schedule = RotateSchedule::kAuto;
  int cluster_blocks = 0;
  bool misalign = false;  // residual and delta start one element past a 16-byte boundary
};

bool SupportedHere(const HadamardRotateParams& p) {
  int major = 0, minor = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
  return PlanHadamardRotate(major * 10 + minor, p).ok();
}

void CheckNormRotation(const NormCase& c) {
  SCOPED_TRACE(::testing::Message()
               << "n=" << c.n << " batch=" << c.batch
               << " out16=" << (c.out_type == ActivationType::kF16) << " delta=" << c.with_delta
               << " offset=" << c.weight_offset << " schedule=" << static_cast<int>(c.schedule)
               << " cluster=" << c.cluster_blocks << " misalign=" << c.misalign);
  absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(c.n, 0x2a5u + c.n);
  ASSERT_TRUE(rot.ok()) << rot.status();
  const int64_t stride = c.n;  // LaunchResidualRmsNorm's residual rows are contiguous
  const int64_t off = c.misalign ? 1 : 0;
  const std::vector<float> residual =
      kernels::testing::RandomVector(stride * c.batch, c.n * 5 + c.batch, 2.0f);
  const std::vector<float> delta =
      kernels::testing::RandomVector(stride * c.batch, c.n * 5 + c.batch + 1, 0.5f);
  const std::vector<float> weight = kernels::testing::RandomVector(c.n, c.n + 3, 1.0f);
  const int64_t out_stride = (c.n + 31) / 32 * 32 + 32;
  const size_t out_elem = c.out_type == ActivationType::kF16 ? 2 : 4;
  DeviceBuffer d_res_want((residual.size() + 1) * 4), d_res_got((residual.size() + 1) * 4),
      d_delta((delta.size() + 1) * 4), d_weight(weight.size() * 4), d_h(c.n * c.batch * 4),
      d_base(rot->base_matrix().size() + 1), d_want(out_stride * c.batch * out_elem),
      d_got(out_stride * c.batch * out_elem);
  std::vector<float> shifted(off, 0.0f);
  shifted.insert(shifted.end(), residual.begin(), residual.end());
  d_res_want.Upload(shifted);
  d_res_got.Upload(shifted);
  shifted.assign(off, 0.0f);
  shifted.insert(shifted.end(), delta.begin(), delta.end());
  d_delta.Upload(shifted);
  float* res_want_rows = d_res_want.as<float>() + off;
  float* res_got_rows = d_res_got.as<float>() + off;
  const float* delta_rows = c.with_delta ? d_delta.as<float>() + off : nullptr;
  d_weight.Upload(weight);
  if (!rot->base_matrix().empty()) d_base.Upload(rot->base_matrix());

  // Reference: the norm kernel (residual updated, fp32 h), then the plain rotation.
  ResidualRmsNormParams np;
  np.residual = res_want_rows;
  np.delta = delta_rows;
  np.delta_stride = stride;
  np.weight = d_weight.as<float>();
  np.weight_offset = c.weight_offset;
  np.eps = 1e-6f;
  np.out_f32 = d_h.as<float>();
  np.tokens = c.batch;
  np.hidden = c.n;
  ASSERT_TRUE(LaunchResidualRmsNorm(np, nullptr).ok());
  HadamardRotateParams rp = PlainRotation(*rot, d_base, d_h.as<void>(), c.n, d_want.as<void>(),
                                          c.out_type, out_stride, c.batch);
  ASSERT_TRUE(LaunchHadamardRotate(rp, nullptr).ok());

  // Fused.
  rp.x = nullptr;
  rp.x_stride = 0;
  rp.norm.residual = res_got_rows;
  rp.norm.residual_stride = stride;
  rp.norm.delta = delta_rows;
  rp.norm.delta_stride = stride;
  rp.norm.weight = d_weight.as<float>();
  rp.norm.weight_offset = c.weight_offset;
  rp.norm.eps = 1e-6f;
  rp.out = d_got.as<void>();
  rp.schedule = c.schedule;
  rp.cluster_blocks = c.cluster_blocks;
  const absl::Status launched = LaunchHadamardRotate(rp, nullptr);
  ASSERT_TRUE(launched.ok()) << launched;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  const std::vector<float> res_want = d_res_want.Download<float>(residual.size() + off);
  const std::vector<float> res_got = d_res_got.Download<float>(residual.size() + off);
  ASSERT_EQ(std::memcmp(res_want.data(), res_got.data(), res_want.size() * 4), 0)
      << "the residual update differs from LaunchResidualRmsNorm's";
  std::vector<float> want(out_stride * c.batch), got(out_stride * c.batch);
  if (c.out_type == ActivationType::kF16) {
    want = testing::FromF16(d_want.Download<uint16_t>(want.size()));
    got = testing::FromF16(d_got.Download<uint16_t>(got.size()));
  } else {
    want = d_want.Download<float>(want.size());
    got = d_got.Download<float>(got.size());
  }
  for (int b = 0; b < c.batch; ++b) {
    float row_max = 0.0f;
    for (int64_t i = 0; i < c.n; ++i) row_max = std::max(row_max, std::abs(want[b * out_stride + i]));
    for (int64_t i = 0; i < out_stride; ++i) {
      const float w = want[b * out_stride + i];
      const float g = got[b * out_stride + i];
      ASSERT_TRUE(std::isfinite(g)) << "[" << b << ", " << i << "] = " << g;
      // The transform's rounding, relative to the row, plus one fp16 rounding of the output.
      const float tol = 1e-5f * row_max +
                        (c.out_type == ActivationType::kF16 ? std::abs(w) / 1024.0f + 6e-8f : 0.0f);
      ASSERT_LE(std::abs(g - w), tol) << "[" << b << ", " << i << "] got " << g << " want " << w;
    }
  }
}

// The hidden sizes of SmolLM2-135M (576), Gemma 3 270M (640), 1B-class models (2048), Llama-3 8B
// (4096) and 70B (8192), and a Paley width with one 16-element segment per base row (960).
constexpr int64_t kHiddenWidths[] = {576, 640, 960, 2048, 4096, 8192};

TEST(CudaNormRotation, MatchesNormThenRotation) {
  BITLOOM_SKIP_WITHOUT_GPU();
  for (int64_t n : kHiddenWidths) {
    for (int batch : {1, 8}) {
      for (ActivationType out : {ActivationType::kF16, ActivationType::kF32}) {
        CheckNormRotation({n, batch, out});
      }
    }
    CheckNormRotation({n, 3, ActivationType::kF16, /*with_delta=*/false, /*weight_offset=*/1.0f});
    // A prefill chunk: rows kept whole (one block per row).
    CheckNormRotation({n, kWholeRowBatch + 5, ActivationType::kF16});
  }
}

TEST(CudaNormRotation, EveryScheduleAndCluster) {
  BITLOOM_SKIP_WITHOUT_GPU();
  for (int64_t n : {int64_t{576}, int64_t{2048}, int64_t{4096}, int64_t{8192}}) {
    absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(n, 1);
    ASSERT_TRUE(rot.ok());
    for (int cluster = 1; cluster <= 8; ++cluster) {
      HadamardRotateParams probe;
      probe.rotation = DescribeRotation(*rot, reinterpret_cast<const int8_t*>(16));
      probe.out = reinterpret_cast<void*>(16);
      probe.out_stride = n;
      probe.norm.residual = reinterpret_cast<float*>(16);
      probe.norm.residual_stride = n;
      probe.norm.weight = reinterpret_cast<const float*>(16);
      probe.batch = 2;
      probe.schedule = RotateSchedule::kRegisterTiled;
      probe.cluster_blocks = cluster;
      if (!SupportedHere(probe)) continue;
      CheckNormRotation({n, 2, ActivationType::kF32, true, 0.0f, RotateSchedule::kRegisterTiled,
                         cluster});
    }
    CheckNormRotation({n, 2, ActivationType::kF32, true, 1.0f, RotateSchedule::kRowPerBlock});
    CheckNormRotation({n, 3, ActivationType::kF16, true, 0.0f, RotateSchedule::kAuto, 0, true});
  }
}

TEST(CudaNormRotation, RejectsConflictingOrIncompleteInputs) {
  absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(2048, 1);
  ASSERT_TRUE(rot.ok());
  HadamardRotateParams p;
  p.rotation = DescribeRotation(*rot, nullptr);
  p.out = reinterpret_cast<void*>(16);
  p.out_stride = 2048;
  p.batch = 1;
  p.norm.residual = reinterpret_cast<float*>(16);
  p.norm.residual_stride = 2048;
  p.norm.weight = reinterpret_cast<const float*>(16);
  p.x = reinterpret_cast<const void*>(16);
  p.x_stride = 2048;
  absl::Status s = LaunchHadamardRotate(p, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("no x"), std::string::npos) << s;
  p.x = nullptr;
  p.norm.weight = nullptr;
  s = LaunchHadamardRotate(p, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("norm.weight"), std::string::npos) << s;
  p.norm.weight = reinterpret_cast<const float*>(16);
  p.norm.delta = reinterpret_cast<const float*>(16);
  p.norm.delta_stride = 100;
  s = LaunchHadamardRotate(p, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("delta_stride"), std::string::npos) << s;
}

}  // namespace
}  // namespace bitloom::kernels::cuda
