// The self-rotating GEMV (LaunchScalarCodecGemvGroupRotating) against the two launches it replaces:
// LaunchHadamardRotate into an fp16 row, then LaunchScalarCodecGemvGroup on it.
//  - plain input: the same fp32 operations in the same order, so y equals the reference bit for bit;
//  - residual-norm input: residual_out equals the in-place update bit for bit, and y agrees within
//    the one-ulp 1/rms difference the order of the Σr² sum may make;
// for the widths the engine fuses (Llama's 4096 and 8192) and the smallest, mixed and equal K, and
// whatever warps per block the plan picks. The argument checks run without a GPU (CI).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bitloom/core/dtype.h"
#include "bitloom/kernels/cuda/hadamard_rotation.h"
#include "bitloom/kernels/cuda/scalar_codec_gemv.h"
#include "bitloom/kernels/hadamard.h"
#include "bitloom/kernels/scalar_codec.h"
#include "cuda_test_util.h"
#include "test_util.h"

namespace bitloom::kernels::cuda {
namespace {

using testing::DeviceBuffer;

struct Entry {
  int64_t rows;
  int bits;
};

// A random packed weight of [rows, cols] at `bits`, group size 128, on the device.
struct DeviceWeight {
  ScalarCodecLayout layout;
  std::unique_ptr<DeviceBuffer> blob;
};

DeviceWeight RandomWeight(int64_t rows, int64_t cols, int bits, uint64_t seed) {
  testing::PackedMatrix m = testing::RandomPackedMatrix(rows, cols, bits, 128, seed);
  DeviceWeight w{m.layout, std::make_unique<DeviceBuffer>(m.blob.size())};
  w.blob->Upload(m.blob);
  return w;
}

float AsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

enum class Input { kPlain, kNorm, kNormNoDelta };

void CheckRotatingGemv(int64_t n, const std::vector<Entry>& entries, Input input,
                       float weight_offset = 0.0f) {
  SCOPED_TRACE(::testing::Message() << "n=" << n << " entries=" << entries.size()
                                    << " input=" << static_cast<int>(input)
                                    << " weight_offset=" << weight_offset);
  absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(n, 0xabc0u + n);
  ASSERT_TRUE(rot.ok()) << rot.status();
  ASSERT_EQ(rot->base_order(), 1);
  std::vector<DeviceWeight> weights;
  std::vector<std::unique_ptr<DeviceBuffer>> y_want, y_got;
  for (size_t i = 0; i < entries.size(); ++i) {
    weights.push_back(RandomWeight(entries[i].rows, n, entries[i].bits, n * 31 + i));
    y_want.push_back(std::make_unique<DeviceBuffer>(entries[i].rows * 4));
    y_got.push_back(std::make_unique<DeviceBuffer>(entries[i].rows * 4));
  }
  const std::vector<float> x = kernels::testing::RandomVector(n, n + 1, 3.0f);
  const std::vector<float> delta = kernels::testing::RandomVector(n, n + 2, 1.0f);
  const std::vector<float> norm_weight = kernels::testing::RandomVector(n, n + 3, 1.0f);
  DeviceBuffer d_x(n * 4), d_residual_ref(n * 4), d_residual_in(n * 4), d_residual_out(n * 4),
      d_delta(n * 4), d_weight(n * 4), d_rotated(n * 2);
  d_x.Upload(x);
  d_residual_ref.Upload(x);
  d_residual_in.Upload(x);
  d_delta.Upload(delta);
  d_weight.Upload(norm_weight);
  const bool norm = input != Input::kPlain;
  RotateNormInput norm_in;
  norm_in.residual = d_residual_ref.as<float>();
  norm_in.residual_stride = n;
  norm_in.delta = input == Input::kNorm ? d_delta.as<float>() : nullptr;
  norm_in.delta_stride = n;
  norm_in.weight = d_weight.as<float>();
  norm_in.weight_offset = weight_offset;
  norm_in.eps = 1e-5f;

  // Reference: the rotation kernel into an fp16 row (the residual updated in place), then the GEMV.
  HadamardRotateParams rp;
  rp.rotation = DescribeRotation(*rot, nullptr);
  rp.x = norm ? nullptr : d_x.as<void>();
  rp.x_type = ActivationType::kF32;
  rp.x_stride = n;
  rp.out = d_rotated.as<void>();
  rp.out_type = ActivationType::kF16;
  rp.out_stride = n;
  rp.batch = 1;
  if (norm) rp.norm = norm_in;
  ASSERT_TRUE(LaunchHadamardRotate(rp, nullptr).ok());
  std::vector<ScalarCodecGemvParams> group;
  for (size_t i = 0; i < entries.size(); ++i) {
    ScalarCodecGemvParams gp = MakeGemvParams(weights[i].layout, weights[i].blob->as<void>());
    gp.x = d_rotated.as<uint16_t>();
    gp.x_stride = n;
    gp.y = y_want[i]->as<float>();
    gp.batch = 1;
    group.push_back(gp);
  }
  ASSERT_TRUE(LaunchScalarCodecGemvGroup(group, nullptr).ok());

  // Rotating: the entries' x is not read; y into separate buffers.
  for (size_t i = 0; i < entries.size(); ++i) {
    group[i].x = nullptr;
    group[i].y = y_got[i]->as<float>();
  }
  GemvRotatingInput in;
  in.rotation = rp.rotation;
  if (norm) {
    in.norm = norm_in;
    in.norm.residual = d_residual_in.as<float>();
    in.residual_out = d_residual_out.as<float>();
  } else {
    in.x = d_x.as<float>();
  }
  const absl::Status launched = LaunchScalarCodecGemvGroupRotating(group, in, nullptr);
  ASSERT_TRUE(launched.ok()) << launched;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  if (norm) {
    const std::vector<uint32_t> want = d_residual_ref.Download<uint32_t>(n);
    const std::vector<uint32_t> got = d_residual_out.Download<uint32_t>(n);
    EXPECT_EQ(got, want) << "residual_out differs from the in-place update";
    EXPECT_EQ(d_residual_in.Download<float>(n), x) << "the residual input was written";
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "entry " << i << ": rows=" << entries[i].rows
                                      << " K=" << entries[i].bits);
    const std::vector<uint32_t> want = y_want[i]->Download<uint32_t>(entries[i].rows);
    const std::vector<uint32_t> got = y_got[i]->Download<uint32_t>(entries[i].rows);
    if (!norm) {
      int64_t differ = 0;
      for (int64_t r = 0; r < entries[i].rows; ++r) differ += got[r] != want[r];
      EXPECT_EQ(differ, 0) << "rows differing from rotate-then-GEMV";
      continue;
    }
    // One ulp of 1/rms moves x' by ≤ 2^-23 relative before its fp16 rounding, which then flips
    // at most a few elements by one fp16 ulp (2^-11): y moves by far less than 1e-3 of its scale.
    double scale = 0.0;
    for (int64_t r = 0; r < entries[i].rows; ++r) scale = std::max(scale, std::fabs(double(AsFloat(want[r]))));
    for (int64_t r = 0; r < entries[i].rows; ++r) {
      ASSERT_TRUE(std::isfinite(AsFloat(got[r]))) << "row " << r;
      ASSERT_NEAR(AsFloat(got[r]), AsFloat(want[r]), 1e-3 * scale) << "row " << r;
    }
  }
}

// Both pipelines (with SetStreamedGemv on, sm_90 streams the K >= 3 groups of width <= 4096
// through shared memory, PreferStreamedGemv; with it off every launch uses registers).
TEST(CudaRotatingGemv, PlainInputEqualsRotateThenGemv) {
  BITLOOM_SKIP_WITHOUT_GPU();
  const bool was_streamed = StreamedGemvEnabled();
  for (bool streamed : {true, false}) {
    SCOPED_TRACE(::testing::Message() << "streamed_gemv=" << streamed);
    SetStreamedGemv(streamed);
    CheckRotatingGemv(4096, {{4096, 4}}, Input::kPlain);                        // o_proj
    CheckRotatingGemv(4096, {{4096, 3}, {1024, 4}, {1024, 5}}, Input::kPlain);  // mixed-K q/k/v
    CheckRotatingGemv(8192, {{8192, 2}}, Input::kPlain);                        // 70B o_proj
    CheckRotatingGemv(512, {{37, 8}, {100, 1}}, Input::kPlain);                 // smallest width
    CheckRotatingGemv(1024, {{14336, 4}}, Input::kPlain);  // several tiles per streamed block
  }
  SetStreamedGemv(was_streamed);
}

TEST(CudaRotatingGemv, NormInputMatchesTheRotationKernel) {
  BITLOOM_SKIP_WITHOUT_GPU();
  const bool was_streamed = StreamedGemvEnabled();
  for (bool streamed : {true, false}) {
    SCOPED_TRACE(::testing::Message() << "streamed_gemv=" << streamed);
    SetStreamedGemv(streamed);
    CheckRotatingGemv(4096, {{4096, 4}, {1024, 4}, {1024, 4}}, Input::kNorm);
    CheckRotatingGemv(4096, {{4096, 3}, {1024, 6}}, Input::kNormNoDelta);  // layer 0: no add
    CheckRotatingGemv(8192, {{8192, 2}, {1024, 3}}, Input::kNorm, 1.0f);   // Gemma's (1 + w)
    CheckRotatingGemv(1024, {{300, 5}}, Input::kNorm);
    CheckRotatingGemv(2048, {{14336, 4}}, Input::kNorm);  // 896 tiles: the residual once
  }
  SetStreamedGemv(was_streamed);
}

TEST(CudaRotatingGemv, PreferredForDecodeGroupsThatFitOneWave) {
  BITLOOM_SKIP_WITHOUT_GPU();
  auto shaped = [](int64_t rows, int64_t cols, int bits) {
    absl::StatusOr<ScalarCodecLayout> layout = MakeScalarCodecLayout(rows, cols, bits, 128);
    EXPECT_TRUE(layout.ok());
    ScalarCodecGemvParams p = MakeGemvParams(*layout, reinterpret_cast<const void*>(256));
    p.y = reinterpret_cast<float*>(256);
    p.batch = 1;
    return p;
  };
  GemvRotatingInput in;
  in.x = reinterpret_cast<const float*>(256);
  in.rotation.n = in.rotation.pow2_order = 4096;
  in.rotation.base_order = 1;
  // Llama-3-8B's q/k/v and o_proj fit one wave on any GPU with ≥ 100 SMs; 70B's gate/up never do.
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  const std::vector<ScalarCodecGemvParams> qkv = {shaped(4096, 4096, 4), shaped(1024, 4096, 4),
                                                  shaped(1024, 4096, 4)};
  if (sms >= 100) {
    EXPECT_TRUE(PreferRotatingGemv(qkv, in));
  }
  // A mixed group that needs the [1, 8] kernel is valid but not preferred.
  EXPECT_FALSE(PreferRotatingGemv({shaped(4096, 4096, 3), shaped(1024, 4096, 6)}, in));
  in.rotation.n = in.rotation.pow2_order = 8192;
  EXPECT_FALSE(PreferRotatingGemv({shaped(28672, 8192, 2), shaped(28672, 8192, 2)}, in));
  // 70B's o_proj fits one wave, but 8192 is wider than the transform pays for.
  EXPECT_FALSE(PreferRotatingGemv({shaped(8192, 8192, 2)}, in));
  // Not a valid rotating launch: never preferred.
  in.rotation.n = in.rotation.pow2_order = 4096;
  std::vector<ScalarCodecGemvParams> batch2 = qkv;
  for (ScalarCodecGemvParams& p : batch2) p.batch = 2;
  EXPECT_FALSE(PreferRotatingGemv(batch2, in));
}

// ---------------------------------------------------------------------------------------------
// Argument checks (no device needed: they fail before any CUDA call).

class RotatingGemvArgs : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<ScalarCodecLayout> layout = MakeScalarCodecLayout(64, 4096, 4, 128);
    ASSERT_TRUE(layout.ok());
    entry_ = MakeGemvParams(*layout, reinterpret_cast<const void*>(256));
    entry_.y = reinterpret_cast<float*>(256);
    entry_.batch = 1;
    in_.rotation.n = in_.rotation.pow2_order = 4096;
    in_.rotation.base_order = 1;
    in_.norm.residual = reinterpret_cast<float*>(4096);
    in_.norm.weight = reinterpret_cast<const float*>(8192);
    in_.residual_out = reinterpret_cast<float*>(4096 + 4 * 4096);
  }

  void ExpectRejected(const std::string& field) {
    const absl::Status s = LaunchScalarCodecGemvGroupRotating({&entry_, 1}, in_, nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(field), std::string::npos) << s;
    EXPECT_NE(s.message().find("LaunchScalarCodecGemvGroupRotating"), std::string::npos) << s;
  }

  ScalarCodecGemvParams entry_;
  GemvRotatingInput in_;
};

TEST_F(RotatingGemvArgs, RejectsBatchAboveOne) {
  entry_.batch = 2;
  ExpectRejected("batch 2");
}

TEST_F(RotatingGemvArgs, RejectsRotationsItCannotForm) {
  in_.rotation.n = in_.rotation.pow2_order = 2048;  // not the group's cols
  ExpectRejected("cols 4096");
  absl::StatusOr<ScalarCodecLayout> paley = MakeScalarCodecLayout(64, 576, 4, 64);  // p = 9·64
  ASSERT_TRUE(paley.ok());
  entry_ = MakeGemvParams(*paley, reinterpret_cast<const void*>(256));
  entry_.y = reinterpret_cast<float*>(256);
  entry_.batch = 1;
  in_.rotation.n = 576;
  in_.rotation.base_order = 9;
  in_.rotation.pow2_order = 64;
  ExpectRejected("power of two");
}

TEST_F(RotatingGemvArgs, RejectsAmbiguousOrMisplacedInputs) {
  in_.x = reinterpret_cast<const float*>(256);
  ExpectRejected("exactly one of x and norm.residual");
  in_.x = nullptr;
  in_.residual_out = nullptr;
  ExpectRejected("residual_out");
  in_.residual_out = reinterpret_cast<float*>(4096 + 16);  // inside the residual it reads
  ExpectRejected("overlaps");
  in_.residual_out = reinterpret_cast<float*>(1 << 20);
  in_.norm.weight = reinterpret_cast<const float*>(8194);
  ExpectRejected("16-byte aligned");
}

}  // namespace
}  // namespace bitloom::kernels::cuda
