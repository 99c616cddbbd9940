// The rotation of a gated MLP's halves (HadamardRotateParams::up): R·(act(gate) · up) formed while
// loading must equal LaunchGatedActivation followed by the plain rotation bit for bit, for SwiGLU
// and GeGLU, both schedules, every cluster split the launcher accepts, fp32 and fp16 output,
// aligned and unaligned rows. Skips when no GPU is present (CI), except the argument checks, which
// never reach the device.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "bitloom/kernels/activations.h"
#include "bitloom/kernels/cuda/gated_activation.h"
#include "bitloom/kernels/cuda/hadamard_rotation.h"
#include "bitloom/kernels/hadamard.h"
#include "cuda_test_util.h"
#include "test_util.h"

namespace bitloom::kernels::cuda {
namespace {

using testing::DeviceBuffer;

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
  HadamardRotateParams rp;
  rp.rotation = DescribeRotation(*rot, d_base.as<int8_t>());
  rp.x = d_act.as<void>();
  rp.x_type = ActivationType::kF32;
  rp.x_stride = c.n;
  rp.out = d_want.as<void>();
  rp.out_type = c.out_type;
  rp.out_stride = out_stride;
  rp.batch = c.batch;
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

}  // namespace
}  // namespace bitloom::kernels::cuda
