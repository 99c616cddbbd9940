// GPU vs CPU for the CODEC_HADAMARD_SCALAR decode path: the Hadamard rotation (bit-exact in fp32)
// and the tensor-core GEMV (against ScalarCodecGemv, fp32 reference) for every K, batch 1..8 and
// shapes that are not multiples of the tiles, alone and grouped (several matrices, mixed K, one
// launch). Skips when no GPU is present (CI), except the group's argument checks, which never
// reach the device.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/types/span.h"
#include "bitloom/core/dtype.h"
#include "bitloom/kernels/cuda/dependent_launch.h"
#include "bitloom/kernels/cuda/hadamard_rotation.h"
#include "bitloom/kernels/cuda/scalar_codec_gemv.h"
#include "bitloom/kernels/cuda/scalar_codec_tiled.h"
#include "bitloom/kernels/hadamard.h"
#include "bitloom/kernels/scalar_codec.h"
#include "cuda_test_util.h"
#include "test_util.h"

namespace bitloom::kernels::cuda {
namespace {

int DeviceSm() {
  int major = 0, minor = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
  return major * 10 + minor;
}

using testing::DeviceBuffer;

int64_t RoundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// ---------------------------------------------------------------------------------------------
// Rotation

struct RotationCase {
  int64_t n;
  int batch;
  RotateSchedule schedule = RotateSchedule::kAuto;
  int cluster_blocks = 0;  // 0: the launcher's choice
  int64_t x_pad = 0;       // x_stride = n + x_pad: odd pads misalign rows (no vector loads)
};

void CheckRotation(const RotationCase& c, ActivationType in_type, ActivationType out_type) {
  SCOPED_TRACE(::testing::Message() << "n=" << c.n << " batch=" << c.batch
                                    << " in16=" << (in_type == ActivationType::kF16)
                                    << " out16=" << (out_type == ActivationType::kF16)
                                    << " schedule=" << static_cast<int>(c.schedule)
                                    << " cluster=" << c.cluster_blocks << " x_pad=" << c.x_pad);
  const uint64_t seed = 0x5eed0000u + static_cast<uint64_t>(c.n);
  absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(c.n, seed);
  ASSERT_TRUE(rot.ok()) << rot.status();
  const int64_t x_stride = c.n + c.x_pad;
  std::vector<float> x = kernels::testing::RandomVector(c.n * c.batch, c.n * 31 + c.batch);
  if (in_type == ActivationType::kF16) {
    for (float& v : x) v = F16ToF32(F32ToF16(v));  // the CPU rotates exactly what the GPU reads
  }
  std::vector<float> want = x;
  rot->Apply(want.data(), c.batch, nullptr);

  // x laid out with its own row stride; the pad columns hold garbage the kernel must not read.
  std::vector<float> x_rows(x_stride * c.batch, 1e30f);
  for (int b = 0; b < c.batch; ++b) {
    std::copy(x.begin() + b * c.n, x.begin() + (b + 1) * c.n, x_rows.begin() + b * x_stride);
  }
  const int64_t out_stride = RoundUp(c.n, 32) + 32;  // some padding to zero-fill
  const size_t out_elem = out_type == ActivationType::kF16 ? 2 : 4;
  DeviceBuffer d_x(x_rows.size() * 4), d_out(out_stride * c.batch * out_elem),
      d_base(rot->base_matrix().size() + 1);
  if (in_type == ActivationType::kF16) {
    d_x.Upload(testing::ToF16(x_rows));
  } else {
    d_x.Upload(x_rows);
  }
  if (!rot->base_matrix().empty()) d_base.Upload(rot->base_matrix());

  HadamardRotateParams p;
  p.rotation = DescribeRotation(*rot, d_base.as<int8_t>());
  p.x = d_x.as<void>();
  p.x_type = in_type;
  p.x_stride = x_stride;
  p.out = d_out.as<void>();
  p.out_type = out_type;
  p.out_stride = out_stride;
  p.batch = c.batch;
  p.schedule = c.schedule;
  p.cluster_blocks = c.cluster_blocks;
  ASSERT_TRUE(IsSupported(DeviceSm(), p));
  const absl::Status launched = LaunchHadamardRotate(p, nullptr);
  ASSERT_TRUE(launched.ok()) << launched;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  std::vector<float> got(out_stride * c.batch);
  if (out_type == ActivationType::kF16) {
    std::vector<uint16_t> h = d_out.Download<uint16_t>(got.size());
    for (size_t i = 0; i < h.size(); ++i) got[i] = F16ToF32(h[i]);
  } else {
    got = d_out.Download<float>(got.size());
  }
  int64_t mismatches = 0;
  for (int b = 0; b < c.batch; ++b) {
    for (int64_t i = 0; i < out_stride; ++i) {
      const float g = got[b * out_stride + i];
      ASSERT_FALSE(std::isnan(g)) << "unwritten output at [" << b << ", " << i << "]";
      if (i >= c.n) {
        ASSERT_EQ(g, 0.0f) << "padding not zeroed at [" << b << ", " << i << "]";
        continue;
      }
      const float w = want[b * c.n + i];
      const float expect = out_type == ActivationType::kF16 ? F16ToF32(F32ToF16(w)) : w;
      // The fp32 path is the CPU's arithmetic in the CPU's order: it must agree to the bit; the
      // fp16 output is that value rounded once (same round-to-nearest-even as F32ToF16).
      uint32_t gb, eb;
      std::memcpy(&gb, &g, 4);
      std::memcpy(&eb, &expect, 4);
      if (gb != eb && ++mismatches <= 3) {
        ADD_FAILURE() << "[" << b << ", " << i << "] got " << g << " want " << expect;
      }
    }
  }
  EXPECT_EQ(mismatches, 0);
}

void CheckRotationAllTypes(const RotationCase& c) {
  for (ActivationType in : {ActivationType::kF32, ActivationType::kF16}) {
    for (ActivationType out : {ActivationType::kF32, ActivationType::kF16})
      CheckRotation(c, in, out);
  }
}

// The widths of real models (Llama, Qwen, SmolLM, Mistral) and what R is for each: Sylvester
// 2048/4096/8192, paley2(36)x16 (576), paley1(60)x16 (960), paley1(12)x128 (1536),
// paley2(28)x512 (14336) and paley2(28)x1024 (28672).
constexpr int64_t kRealWidths[] = {576, 960, 1536, 2048, 4096, 8192, 14336, 28672};

TEST(CudaHadamardRotation, MatchesCpuBitForBit) {
  BITLOOM_SKIP_WITHOUT_GPU();
  // Powers of two, Paley I (1536 = 12·128) and II (576 = 36·16, 14336 = 28·512), the identity
  // fallback (7, 96 = 3·32), and n = 1.
  for (int64_t n : {1, 7, 16, 96, 576, 1536, 4096, 14336, 28672}) {
    for (int batch : {1, 3, 8}) CheckRotationAllTypes({n, batch});
  }
}

TEST(CudaHadamardRotation, RealWidthsBatch1And8) {
  BITLOOM_SKIP_WITHOUT_GPU();
  for (int64_t n : kRealWidths) {
    for (int batch : {1, 8}) CheckRotationAllTypes({n, batch});
  }
}

// A prefill chunk is rotated in one launch: hundreds of rows (both schedules: 96 is the fallback).
TEST(CudaHadamardRotation, PrefillChunkInOneLaunch) {
  BITLOOM_SKIP_WITHOUT_GPU();
  for (int64_t n : {96, 576, 4096, 14336, 28672}) CheckRotationAllTypes({n, 300});
}

// Every cluster size the register-tiled schedule accepts for a width (1..8 blocks per row), and
// the one-block-per-row schedule, give the same bits.
TEST(CudaHadamardRotation, EveryScheduleAndClusterSizeMatchesCpu) {
  BITLOOM_SKIP_WITHOUT_GPU();
  const int sm = DeviceSm();
  for (int64_t n : {64, 256, 768, 2560, 576, 960, 1536, 2048, 4096, 8192, 14336, 28672}) {
    absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(n, 1);
    ASSERT_TRUE(rot.ok());
    HadamardRotateParams probe;
    probe.rotation = DescribeRotation(*rot, reinterpret_cast<const int8_t*>(&probe));
    probe.x = probe.out = &probe;  // never launched: only planned
    probe.x_stride = probe.out_stride = n;
    probe.batch = 1;
    probe.schedule = RotateSchedule::kRegisterTiled;
    int sizes_run = 0;
    for (int cluster = 1; cluster <= 8; ++cluster) {
      probe.cluster_blocks = cluster;
      if (!PlanHadamardRotate(sm, probe).ok()) continue;
      ++sizes_run;
      for (int batch : {1, 3}) {
        const RotationCase c{n, batch, RotateSchedule::kRegisterTiled, cluster};
        CheckRotation(c, ActivationType::kF32, ActivationType::kF32);
        CheckRotation(c, ActivationType::kF16, ActivationType::kF16);
      }
    }
    EXPECT_GE(sizes_run, 1) << "n=" << n << ": the tiled schedule should cover it";
    CheckRotation({n, 2, RotateSchedule::kRowPerBlock}, ActivationType::kF32, ActivationType::kF32);
  }
}

// Rows that are not 16-byte aligned take the scalar loads of the tiled kernel's first pass.
TEST(CudaHadamardRotation, UnalignedRowsMatchCpu) {
  BITLOOM_SKIP_WITHOUT_GPU();
  for (int64_t n : {576, 4096, 14336}) {
    for (int64_t pad : {1, 3}) CheckRotationAllTypes({n, 3, RotateSchedule::kAuto, 0, pad});
  }
}

TEST(CudaHadamardRotation, RejectsBadParams) {
  BITLOOM_SKIP_WITHOUT_GPU();
  absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(576, 1);
  ASSERT_TRUE(rot.ok());
  DeviceBuffer buf(1 << 16);
  HadamardRotateParams p;
  p.rotation = DescribeRotation(*rot, nullptr);  // p = 36 needs the base matrix
  p.x = buf.as<void>();
  p.out = buf.as<char>() + 8192;
  p.x_stride = p.out_stride = 576;
  p.batch = 1;
  EXPECT_EQ(LaunchHadamardRotate(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
  p.rotation.base = buf.as<int8_t>();
  p.batch = 0;
  EXPECT_EQ(LaunchHadamardRotate(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
  p.batch = 1;
  p.cluster_blocks = 5;  // 5 does not divide p = 36
  EXPECT_EQ(LaunchHadamardRotate(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
  p.cluster_blocks = 0;
  p.out_stride = 100;
  EXPECT_EQ(LaunchHadamardRotate(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(IsSupported(DeviceSm(), p));
}

// The launch plan is host logic: checked without a GPU.
HadamardRotateParams PlanProbe(const HadamardRotation& rot) {
  alignas(16) static const char kFake[16] = {};  // non-null, never dereferenced
  HadamardRotateParams p;
  p.rotation = DescribeRotation(rot, reinterpret_cast<const int8_t*>(kFake));
  p.x = p.out = const_cast<char*>(kFake);
  p.x_stride = p.out_stride = rot.size();
  p.batch = 8;
  return p;
}

// Offset terms need an fp16 row of whole 128-column groups, read back 8 bytes at a time, and room
// for every row (host logic, no GPU).
TEST(CudaHadamardRotationPlan, OffsetTermsNeedAnFp16RowOfWholeGroups) {
  static float terms[2 * 32 * 8];
  absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(4096, 3);
  ASSERT_TRUE(rot.ok());
  HadamardRotateParams p = PlanProbe(*rot);
  p.out_type = ActivationType::kF16;
  p.offset_terms = terms;
  p.offset_terms_stride = 8;
  EXPECT_TRUE(PlanHadamardRotate(90, p).ok());
  auto expect_bad = [](const HadamardRotateParams& bad, const std::string& what) {
    const absl::StatusOr<RotateLaunchInfo> plan = PlanHadamardRotate(90, bad);
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_NE(plan.status().message().find(what), std::string::npos) << plan.status();
  };
  HadamardRotateParams bad = p;
  bad.out_type = ActivationType::kF32;
  expect_bad(bad, "offset_terms need out_type kF16");
  bad = p;
  bad.offset_terms_stride = 7;  // batch 8
  expect_bad(bad, "offset_terms_stride >= batch (7 against 8)");
  bad = p;
  bad.out_stride = 4098;
  expect_bad(bad, "out_stride a multiple of 4 (4098)");
  bad = p;
  bad.out = static_cast<char*>(bad.out) + 2;
  expect_bad(bad, "out 8-byte aligned");
  absl::StatusOr<HadamardRotation> narrow = HadamardRotation::Create(576, 3);  // 4.5 groups
  ASSERT_TRUE(narrow.ok());
  bad = PlanProbe(*narrow);
  bad.out_type = ActivationType::kF16;
  bad.offset_terms = terms;
  bad.offset_terms_stride = 8;
  expect_bad(bad, "n a multiple of 128 (n = 576)");
}

TEST(CudaHadamardRotationPlan, TiledScheduleCoversTheRealWidths) {
  struct Want {
    int64_t n;
    int cluster_sm90;  // about 2048 elements per block (512 from 4096 wide), within the shape's constraints
  };
  for (const Want w : {Want{576, 1}, Want{960, 1}, Want{1536, 1}, Want{2048, 1}, Want{4096, 8},
                       Want{8192, 8}, Want{14336, 7}, Want{28672, 7}}) {
    SCOPED_TRACE(::testing::Message() << "n=" << w.n);
    absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(w.n, 3);
    ASSERT_TRUE(rot.ok());
    const HadamardRotateParams p = PlanProbe(*rot);
    absl::StatusOr<RotateLaunchInfo> h100 = PlanHadamardRotate(90, p);
    ASSERT_TRUE(h100.ok()) << h100.status();
    EXPECT_EQ(h100->schedule, RotateSchedule::kRegisterTiled);
    EXPECT_EQ(h100->cluster_blocks, w.cluster_sm90);
    EXPECT_GE(h100->threads, 32);
    EXPECT_LE(h100->threads, 512);
    EXPECT_EQ(h100->threads % 32, 0);
    EXPECT_LE(h100->shared_bytes, 48 * 1024);
    EXPECT_TRUE(IsSupported(90, p));
    // No clusters before sm_90: one block per row, still tiled.
    absl::StatusOr<RotateLaunchInfo> a100 = PlanHadamardRotate(80, p);
    ASSERT_TRUE(a100.ok()) << a100.status();
    EXPECT_EQ(a100->cluster_blocks, 1);
    EXPECT_TRUE(IsSupported(80, p));
  }
}

// A prefill chunk's rows fill the GPU on their own: from kWholeRowBatch rows the launcher takes the
// fewest blocks per row whose shared memory fits (one, up to 28672 on sm_90), below it the decode
// split.
TEST(CudaHadamardRotationPlan, ManyRowsKeepRowsWhole) {
  struct Want {
    int64_t n;
    int cluster_many_rows;
    int cluster_decode;
  };
  for (const Want w : {Want{4096, 1, 8}, Want{8192, 1, 8}, Want{14336, 1, 7}, Want{28672, 1, 7}}) {
    SCOPED_TRACE(::testing::Message() << "n=" << w.n);
    absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(w.n, 3);
    ASSERT_TRUE(rot.ok());
    HadamardRotateParams p = PlanProbe(*rot);
    p.batch = kWholeRowBatch;
    absl::StatusOr<RotateLaunchInfo> many = PlanHadamardRotate(90, p);
    ASSERT_TRUE(many.ok()) << many.status();
    EXPECT_EQ(many->schedule, RotateSchedule::kRegisterTiled);
    EXPECT_EQ(many->cluster_blocks, w.cluster_many_rows);
    p.batch = kWholeRowBatch - 1;
    absl::StatusOr<RotateLaunchInfo> few = PlanHadamardRotate(90, p);
    ASSERT_TRUE(few.ok()) << few.status();
    EXPECT_EQ(few->cluster_blocks, w.cluster_decode);
  }
}

// An attention input (decode attention's split partials) runs only on the register-tiled schedule,
// spread over the largest cluster that splits the row (576 = Paley 36 × 16: 6 blocks of 6
// segments), and needs num_heads·head_dim = n.
TEST(CudaHadamardRotationPlan, AttentionInputTakesTheWidestClusterOrNothing) {
  alignas(16) static const float kFakeF[8] = {};  // never dereferenced
  static const int32_t kFakeLens[1] = {};
  DecodeAttentionSplits splits;
  splits.acc = splits.ml = kFakeF;
  splits.seq_lens = kFakeLens;
  splits.num_splits = 64;
  splits.split_len = 64;
  struct Want {
    int64_t n;
    int heads, head_dim, cluster;
  };
  for (const Want w : {Want{4096, 32, 128, 8}, Want{8192, 64, 128, 8}, Want{1024, 4, 256, 8}, Want{576, 9, 64, 6}}) {
    SCOPED_TRACE(::testing::Message() << "n=" << w.n);
    absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(w.n, 3);
    ASSERT_TRUE(rot.ok());
    HadamardRotateParams p = PlanProbe(*rot);
    p.x = nullptr;
    p.splits = splits;
    p.splits.num_heads = w.heads;
    p.splits.head_dim = w.head_dim;
    absl::StatusOr<RotateLaunchInfo> plan = PlanHadamardRotate(90, p);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->schedule, RotateSchedule::kRegisterTiled);
    EXPECT_EQ(plan->cluster_blocks, w.cluster);
    // The merged chunk (n / cluster fp32) after the transform's own buffers, and a thread per element
    // to merge it (up to 512).
    HadamardRotateParams plain = PlanProbe(*rot);
    plain.cluster_blocks = w.cluster;
    const absl::StatusOr<RotateLaunchInfo> alone = PlanHadamardRotate(90, plain);
    ASSERT_TRUE(alone.ok()) << alone.status();
    const int64_t chunk = w.n / w.cluster;
    EXPECT_EQ(plan->shared_bytes, alone->shared_bytes + 4 * chunk);
    EXPECT_EQ(plan->threads, std::max<int64_t>(alone->threads, std::min<int64_t>(512, (chunk + 31) / 32 * 32)));
    p.splits.num_heads = w.heads + 1;  // n mismatch
    EXPECT_EQ(PlanHadamardRotate(90, p).status().code(), absl::StatusCode::kInvalidArgument);
    p.splits.num_heads = w.heads;
    p.schedule = RotateSchedule::kRowPerBlock;
    EXPECT_EQ(PlanHadamardRotate(90, p).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(CudaHadamardRotationPlan, FallsBackAndRejectsImpossibleForcing) {
  // The identity base (96 = 3·32) and L < 16 (n = 7) run one block per row.
  for (int64_t n : {7, 96, 1}) {
    absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(n, 3);
    ASSERT_TRUE(rot.ok());
    HadamardRotateParams p = PlanProbe(*rot);
    absl::StatusOr<RotateLaunchInfo> info = PlanHadamardRotate(90, p);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->schedule, RotateSchedule::kRowPerBlock) << "n=" << n;
    p.schedule = RotateSchedule::kRegisterTiled;
    EXPECT_EQ(PlanHadamardRotate(90, p).status().code(), absl::StatusCode::kInvalidArgument);
  }
  absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(4096, 3);
  ASSERT_TRUE(rot.ok());
  HadamardRotateParams p = PlanProbe(*rot);
  p.cluster_blocks = 3;  // p = 1 splits only into powers of two
  EXPECT_FALSE(PlanHadamardRotate(90, p).ok());
  p.cluster_blocks = 2;  // clusters need sm_90
  EXPECT_TRUE(PlanHadamardRotate(90, p).ok());
  EXPECT_FALSE(PlanHadamardRotate(80, p).ok());
  p.cluster_blocks = 9;
  EXPECT_FALSE(PlanHadamardRotate(90, p).ok());
  p.cluster_blocks = 2;
  p.schedule = RotateSchedule::kRowPerBlock;  // cluster_blocks is the tiled schedule's
  EXPECT_FALSE(PlanHadamardRotate(90, p).ok());
  p.cluster_blocks = 0;
  absl::StatusOr<RotateLaunchInfo> row = PlanHadamardRotate(90, p);
  ASSERT_TRUE(row.ok());
  EXPECT_EQ(row->schedule, RotateSchedule::kRowPerBlock);
  EXPECT_EQ(row->shared_bytes, 4096 * 4);
}

// ---------------------------------------------------------------------------------------------
// GEMV

struct GemvShape {
  int64_t rows;
  int64_t cols;
  int group_size;
};

// fp16 activations and fp16 weights (q·s − c·s rounded once), fp32 accumulation: the relative
// L2 error against the fp32 reference is ~5e-4; 3e-3 leaves room without hiding a wrong element
// (one wrong code or missing block is > 1e-2 on these sizes).
constexpr double kGemvRelL2Tolerance = 3e-3;

void CheckGemv(const GemvShape& s, int bits) {
  SCOPED_TRACE(::testing::Message() << "shape=[" << s.rows << ", " << s.cols << "] group="
                                    << s.group_size << " K=" << bits);
  absl::StatusOr<ScalarCodecLayout> layout =
      MakeScalarCodecLayout(s.rows, s.cols, bits, s.group_size);
  ASSERT_TRUE(layout.ok()) << layout.status();
  std::mt19937_64 rng(s.rows * 1000003 + s.cols * 101 + bits);
  std::vector<uint8_t> codes(s.rows * s.cols);
  std::uniform_int_distribution<int> code_dist(0, (1 << bits) - 1);
  for (uint8_t& q : codes) q = static_cast<uint8_t>(code_dist(rng));
  std::vector<uint16_t> scales(s.rows * layout->groups_per_row);
  std::uniform_real_distribution<float> scale_dist(0.5f, 2.0f);
  for (uint16_t& h : scales) h = F32ToF16(scale_dist(rng) * 0.02f);
  absl::StatusOr<std::vector<uint8_t>> blob = PackScalarCodec(*layout, codes, scales);
  ASSERT_TRUE(blob.ok()) << blob.status();

  const int kBatch = kGemvMaxBatch;
  absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(s.cols, 77 + s.cols);
  ASSERT_TRUE(rot.ok());
  const std::vector<float> x = kernels::testing::RandomVector(s.cols * kBatch, s.rows + 7 * s.cols);
  std::vector<float> want(s.rows * kBatch);
  kernels::ScalarCodecGemvParams cpu;  // the CPU reference's params (not the CUDA ones)
  cpu.layout = &*layout;
  cpu.blob = *blob;
  cpu.rotation = &*rot;
  cpu.x = x.data();
  cpu.y = want.data();
  cpu.batch = kBatch;
  ASSERT_TRUE(ScalarCodecGemv(cpu, nullptr).ok());

  const int64_t x_stride = layout->blocks_per_row * 32;
  const int64_t y_stride = s.rows + 3;  // a tail the kernel must not touch
  DeviceBuffer d_blob(blob->size()), d_x(x.size() * 4), d_xr(x_stride * kBatch * 2),
      d_y(y_stride * kBatch * 4), d_base(rot->base_matrix().size() + 1);
  d_blob.Upload(*blob);
  d_x.Upload(x);
  if (!rot->base_matrix().empty()) d_base.Upload(rot->base_matrix());

  for (int batch = 1; batch <= kBatch; ++batch) {
    SCOPED_TRACE(::testing::Message() << "batch=" << batch);
    ASSERT_EQ(cudaMemset(d_y.as<void>(), 0xFF, y_stride * kBatch * 4), cudaSuccess);
    HadamardRotateParams rp;
    rp.rotation = DescribeRotation(*rot, d_base.as<int8_t>());
    rp.x = d_x.as<void>();
    rp.x_type = ActivationType::kF32;
    rp.x_stride = s.cols;
    rp.out = d_xr.as<void>();
    rp.out_type = ActivationType::kF16;
    rp.out_stride = x_stride;
    rp.batch = batch;
    ASSERT_TRUE(LaunchHadamardRotate(rp, nullptr).ok());

    ScalarCodecGemvParams gp = MakeGemvParams(*layout, d_blob.as<void>());
    gp.x = d_xr.as<uint16_t>();
    gp.x_stride = x_stride;
    gp.y = d_y.as<float>();
    gp.y_stride = y_stride;
    gp.batch = batch;
    ASSERT_TRUE(IsSupported(DeviceSm(), gp));
    const absl::Status st = LaunchScalarCodecGemv(gp, nullptr);
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

    const std::vector<uint32_t> bits_out = d_y.Download<uint32_t>(y_stride * kBatch);
    double err2 = 0.0, ref2 = 0.0;
    for (int b = 0; b < kBatch; ++b) {
      for (int64_t r = 0; r < y_stride; ++r) {
        const uint32_t u = bits_out[b * y_stride + r];
        if (b >= batch || r >= s.rows) {
          ASSERT_EQ(u, 0xFFFFFFFFu) << "wrote outside y at [" << b << ", " << r << "]";
          continue;
        }
        float g;
        std::memcpy(&g, &u, 4);
        ASSERT_TRUE(std::isfinite(g)) << "y[" << b << ", " << r << "] = " << g;
        const double w = want[b * s.rows + r];
        err2 += (g - w) * (g - w);
        ref2 += w * w;
      }
    }
    const double rel = std::sqrt(err2 / std::max(ref2, 1e-30));
    EXPECT_LE(rel, kGemvRelL2Tolerance);
  }
}

TEST(CudaScalarCodecGemv, MatchesCpuEveryBitWidthAndBatch) {
  BITLOOM_SKIP_WITHOUT_GPU();
  const GemvShape shapes[] = {
      {1, 32, 32},      // a single code block
      {16, 128, 128},   // exactly one tile and one chunk
      {37, 576, 128},   // rows not a multiple of 16; 576 = 36·16 (Paley II), partial chunk
      {100, 1536, 128}, // Paley I width
      {53, 200, 64},    // cols not a multiple of 32; per-block scales (group 64)
      {24, 1000, 256},  // group larger than a chunk
      {70, 96, 32},     // group of one block; identity-fallback rotation (96 = 3·32)
      {33, 4096, 128},  // a full super-chunk per warp, several warps
      {300, 14336, 128},// a wide row: many super-chunks per warp (Paley II 28·512)
  };
  for (int bits = kScalarMinBits; bits <= kScalarMaxBits; ++bits) {
    for (const GemvShape& s : shapes) CheckGemv(s, bits);
  }
}

TEST(CudaScalarCodecGemv, RejectsBadParams) {
  BITLOOM_SKIP_WITHOUT_GPU();
  absl::StatusOr<ScalarCodecLayout> layout = MakeScalarCodecLayout(64, 256, 4);
  ASSERT_TRUE(layout.ok());
  DeviceBuffer blob(layout->total_bytes), x(256 * 8 * 2 + 16), y(64 * 8 * 4);
  ScalarCodecGemvParams p = MakeGemvParams(*layout, blob.as<void>());
  p.x = x.as<uint16_t>();
  p.y = y.as<float>();
  p.batch = 1;
  EXPECT_TRUE(LaunchScalarCodecGemv(p, nullptr).ok());
  EXPECT_FALSE(IsSupported(75, p));  // no mma.m16n8k16 with fp32 accumulation before sm_80

  ScalarCodecGemvParams bad = p;
  bad.batch = kGemvMaxBatch + 1;
  EXPECT_EQ(LaunchScalarCodecGemv(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bad = p;
  bad.x = x.as<uint16_t>() + 1;  // not 16-byte aligned
  EXPECT_EQ(LaunchScalarCodecGemv(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bad = p;
  bad.row_stride_words = 3;
  EXPECT_EQ(LaunchScalarCodecGemv(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bad = p;
  bad.bits = 9;
  EXPECT_EQ(LaunchScalarCodecGemv(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(IsSupported(DeviceSm(), bad));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

// ---------------------------------------------------------------------------------------------
// Grouped GEMV: several matrices over one rotated activation in one launch

// One matrix of a group: its shape and codec, and outputs either in its own buffer or as a row
// slice of one fused buffer shared with the other `fused` entries (as a q/k/v projection is).
struct GroupEntry {
  int64_t rows;
  int bits;
  int group_size;
  bool fused;
};

using testing::PackedMatrix;
using testing::RandomPackedMatrix;

// Every entry of one LaunchScalarCodecGemvGroup against ScalarCodecGemv, batches 1, 3 and 8;
// outputs carry a NaN tail (and NaN gaps between fused slices) that must stay unwritten.
// `tuning`: the launcher's plan unless forced. `tiled`: every weight is rewritten into the tiled
// layout on the device first (LaunchScalarCodecRetile) and launched as such.
// offset_terms (tiled, every K <= 3): the rotation writes its offset terms, checked against the
// stored fp16 row, and the GEMV takes them instead of its activation-sum mma; `schedule` forces the
// rotation's.
void CheckGemvGroup(int64_t cols, const std::vector<GroupEntry>& entries,
                    const GemvTuning& tuning = {}, bool tiled = false, bool offset_terms = false,
                    RotateSchedule schedule = RotateSchedule::kAuto) {
  SCOPED_TRACE(::testing::Message() << "cols=" << cols << " entries=" << entries.size() << " tiled=" << tiled
                                    << " warps=" << tuning.warps_per_block
                                    << " pipeline=" << static_cast<int>(tuning.pipeline)
                                    << " dependent_launch=" << DependentLaunchEnabled());
  const int kBatch = kGemvMaxBatch;
  absl::StatusOr<HadamardRotation> rot = HadamardRotation::Create(cols, 91 + cols);
  ASSERT_TRUE(rot.ok());
  const std::vector<float> x = kernels::testing::RandomVector(cols * kBatch, 5 * cols + 1);
  const int64_t x_stride = (cols + 31) / 32 * 32;
  DeviceBuffer d_x(x.size() * 4), d_xr(x_stride * kBatch * 2),
      d_base(rot->base_matrix().size() + 1);
  d_x.Upload(x);
  if (!rot->base_matrix().empty()) d_base.Upload(rot->base_matrix());
  const int64_t groups = cols / 128;
  DeviceBuffer d_terms(2 * std::max<int64_t>(groups, 1) * kBatch * 4);

  // Fused entries share one [batch, fused_stride] buffer, each at a row offset with a 5-row gap.
  int64_t fused_stride = 0;
  std::vector<int64_t> offset(entries.size(), 0);
  for (size_t i = 0; i < entries.size(); ++i) {
    if (!entries[i].fused) continue;
    offset[i] = fused_stride;
    fused_stride += entries[i].rows + 5;
  }
  std::vector<PackedMatrix> mats;
  std::vector<std::vector<float>> want(entries.size());
  std::vector<std::unique_ptr<DeviceBuffer>> d_blob, d_y;
  DeviceBuffer d_fused(std::max<int64_t>(fused_stride, 1) * kBatch * 4);
  for (size_t i = 0; i < entries.size(); ++i) {
    const GroupEntry& e = entries[i];
    mats.push_back(RandomPackedMatrix(e.rows, cols, e.bits, e.group_size, 1000 * i + e.rows));
    ASSERT_FALSE(mats.back().blob.empty());
    want[i].resize(e.rows * kBatch);
    kernels::ScalarCodecGemvParams cpu;
    cpu.layout = &mats.back().layout;
    cpu.blob = mats.back().blob;
    cpu.rotation = &*rot;
    cpu.x = x.data();
    cpu.y = want[i].data();
    cpu.batch = kBatch;
    ASSERT_TRUE(ScalarCodecGemv(cpu, nullptr).ok());
    d_blob.push_back(std::make_unique<DeviceBuffer>(mats.back().blob.size()));
    d_blob.back()->Upload(mats.back().blob);
    if (tiled) {
      const ScalarCodecGemvParams w = MakeGemvParams(mats.back().layout, d_blob.back()->as<void>());
      ASSERT_TRUE(TiledLayoutApplies(w));
      const absl::Status retiled = LaunchScalarCodecRetile(w, nullptr);
      ASSERT_TRUE(retiled.ok()) << retiled;
    }
    d_y.push_back(std::make_unique<DeviceBuffer>((e.rows + 3) * kBatch * 4));
  }

  for (int batch : {1, 3, 8}) {
    SCOPED_TRACE(::testing::Message() << "batch=" << batch);
    HadamardRotateParams rp;
    rp.rotation = DescribeRotation(*rot, d_base.as<int8_t>());
    rp.x = d_x.as<void>();
    rp.x_type = ActivationType::kF32;
    rp.x_stride = cols;
    rp.out = d_xr.as<void>();
    rp.out_type = ActivationType::kF16;
    rp.out_stride = x_stride;
    rp.batch = batch;
    rp.schedule = schedule;
    if (offset_terms) {
      ASSERT_EQ(cudaMemset(d_terms.as<void>(), 0xFF, d_terms.bytes()), cudaSuccess);
      rp.offset_terms = d_terms.as<float>();
      rp.offset_terms_stride = kBatch;
    }
    const absl::Status rotated = LaunchHadamardRotate(rp, nullptr);
    ASSERT_TRUE(rotated.ok()) << rotated;
    if (offset_terms) {
      // Σ over each group's columns of (1024·2^(−K·c) + centre)·x, from the fp16 row, in double.
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const std::vector<uint16_t> xr = d_xr.Download<uint16_t>(x_stride * batch);
      const std::vector<float> terms = d_terms.Download<float>(2 * groups * kBatch);
      for (int k = 0; k < 2; ++k) {
        const int kbits = k == 0 ? 2 : 3;
        for (int b = 0; b < batch; ++b) {
          for (int64_t g = 0; g < groups; ++g) {
            double want_term = 0.0, scale = 0.0;
            for (int col = 0; col < 128; ++col) {
              const double v = F16ToF32(xr[b * x_stride + g * 128 + col]);
              const int u = (col >> 2) & 7;
              const int c = kbits == 3 ? (u >= 6 ? 2 : u & 1) : u & 3;
              want_term += (1024.0 / (1 << (kbits * c)) + ScalarGridCenter(kbits)) * v;
              scale += 1024.0 * std::abs(v);
            }
            const float got_term = terms[(k * groups + g) * kBatch + b];
            ASSERT_NEAR(got_term, want_term, 1e-6 * scale + 1e-6)
                << "offset term K=" << kbits << " row " << b << " group " << g;
          }
        }
      }
    }

    std::vector<ScalarCodecGemvParams> group;
    for (size_t i = 0; i < entries.size(); ++i) {
      ScalarCodecGemvParams gp = MakeGemvParams(mats[i].layout, d_blob[i]->as<void>());
      gp.tiled = tiled;
      gp.x = d_xr.as<uint16_t>();
      gp.x_stride = x_stride;
      if (entries[i].fused) {
        gp.y = d_fused.as<float>() + offset[i];
        gp.y_stride = fused_stride;
      } else {
        ASSERT_EQ(cudaMemset(d_y[i]->as<void>(), 0xFF, d_y[i]->bytes()), cudaSuccess);
        gp.y = d_y[i]->as<float>();
        gp.y_stride = entries[i].rows + 3;
      }
      gp.batch = batch;
      if (offset_terms) {
        gp.offset_terms = d_terms.as<float>();
        gp.offset_terms_stride = kBatch;
      }
      group.push_back(gp);
    }
    ASSERT_EQ(cudaMemset(d_fused.as<void>(), 0xFF, d_fused.bytes()), cudaSuccess);
    ASSERT_TRUE(IsSupported(DeviceSm(), absl::MakeConstSpan(group)));
    const absl::Status st = LaunchScalarCodecGemvGroup(group, tuning, nullptr);
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

    const std::vector<uint32_t> fused = d_fused.Download<uint32_t>(d_fused.bytes() / 4);
    std::vector<bool> fused_written(fused.size(), false);
    for (size_t i = 0; i < entries.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << "entry " << i << ": rows=" << entries[i].rows
                                        << " K=" << entries[i].bits
                                        << " group=" << entries[i].group_size);
      const int64_t rows = entries[i].rows;
      const int64_t stride = group[i].y_stride;
      const std::vector<uint32_t> own =
          entries[i].fused ? std::vector<uint32_t>() : d_y[i]->Download<uint32_t>(stride * kBatch);
      double err2 = 0.0, ref2 = 0.0;
      for (int b = 0; b < kBatch; ++b) {
        for (int64_t r = 0; r < (entries[i].fused ? rows : stride); ++r) {
          const size_t at = entries[i].fused ? b * stride + offset[i] + r : b * stride + r;
          const uint32_t u = entries[i].fused ? fused[at] : own[at];
          if (b >= batch || r >= rows) {
            ASSERT_EQ(u, 0xFFFFFFFFu) << "wrote outside y at [" << b << ", " << r << "]";
            continue;
          }
          if (entries[i].fused) fused_written[at] = true;
          float g;
          std::memcpy(&g, &u, 4);
          ASSERT_TRUE(std::isfinite(g)) << "y[" << b << ", " << r << "] = " << g;
          const double w = want[i][b * rows + r];
          err2 += (g - w) * (g - w);
          ref2 += w * w;
        }
      }
      EXPECT_LE(std::sqrt(err2 / std::max(ref2, 1e-30)), kGemvRelL2Tolerance);
    }
    for (size_t at = 0; at < fused.size(); ++at) {
      if (!fused_written[at]) {
        ASSERT_EQ(fused[at], 0xFFFFFFFFu) << "wrote a gap of the fused output at " << at;
      }
    }
  }
}

TEST(CudaScalarCodecGemvGroup, MatchesCpuWithMixedBitsAndRows) {
  BITLOOM_SKIP_WITHOUT_GPU();
  // Mixed K across both mixed-K kernels ([1, 8] and [1, 4]) and odd row counts; q/k/v-like fused
  // slices beside separate outputs.
  CheckGemvGroup(4096, {{37, 2, 128, true}, {1024, 5, 128, true}, {300, 8, 128, true}});
  CheckGemvGroup(4096, {{1024, 4, 128, false}, {37, 3, 64, false}});
  // A wide row: several super-chunks per warp, so the next-chunk prefetch runs.
  CheckGemvGroup(14336, {{300, 3, 128, false}, {53, 6, 256, true}, {16, 2, 128, true}});
  // Equal K (the single-K kernel through the group path), partial chunks, per-block scales.
  CheckGemvGroup(576, {{300, 4, 128, false}, {37, 4, 64, true}, {1024, 4, 32, true}});
  // The largest group, every K of the wide kernel range, cols not a multiple of 32.
  CheckGemvGroup(1000, {{16, 1, 256, false}, {53, 7, 64, true}, {33, 6, 128, false},
                        {100, 8, 32, true}});
  // Any warps per block is correct, including more warps than super-chunks (idle warps).
  for (int warps : {1, 3, 8}) {
    CheckGemvGroup(14336, {{300, 3, 128, false}, {53, 6, 256, true}}, {.warps_per_block = warps});
    CheckGemvGroup(576, {{37, 2, 128, false}, {100, 5, 64, true}}, {.warps_per_block = warps});
  }
}

// The streamed pipeline (sm_90) computes what the register pipeline does: the same shapes, plus
// enough tiles that every persistent block walks several tiles of different matrices and K
// (the ring's stages are reused across tiles and its producer runs ahead across them).
// The tiled layout (K = 2, 3, 4 and 8, rewritten on the device) against the CPU reference of the
// artifact's: one to three matrices of one K or of two, 16 to 4096 rows, 128 to 14336 columns, scale groups of 128, 256
// and 512 columns, fused and separate outputs, batch 1, 3 and 8, with and without dependent launch;
// and every warps-per-block the tiled launch takes (which also moves the groups in flight).
TEST(CudaScalarCodecGemvGroup, TiledLayoutMatchesCpu) {
  BITLOOM_SKIP_WITHOUT_GPU();
  CheckGemvGroup(128, {{16, 4, 128, false}}, {}, true);
  CheckGemvGroup(384, {{48, 4, 128, true}, {32, 4, 128, true}}, {}, true);
  CheckGemvGroup(4096, {{4096, 4, 128, true}, {1024, 4, 256, true}, {1024, 4, 128, true}}, {}, true);
  CheckGemvGroup(14336, {{4096, 4, 128, false}}, {}, true);
  CheckGemvGroup(1536, {{64, 4, 512, false}, {80, 4, 128, false}}, {}, true);
  CheckGemvGroup(4096, {{256, 2, 128, true}, {64, 2, 256, true}}, {}, true);
  CheckGemvGroup(14336, {{64, 2, 128, false}}, {}, true);
  CheckGemvGroup(384, {{48, 8, 128, false}, {16, 8, 128, true}}, {}, true);
  CheckGemvGroup(14336, {{32, 8, 128, false}}, {}, true);
  CheckGemvGroup(128, {{16, 3, 128, false}}, {}, true);
  CheckGemvGroup(4096, {{4096, 3, 128, true}, {1024, 3, 256, true}, {1024, 3, 128, true}}, {}, true);
  CheckGemvGroup(14336, {{48, 3, 512, false}}, {}, true);
  // Two K in one launch: q at 2 bits and k/v at 3, gate at 3 and up at 4, 4 and 8, 8 first.
  CheckGemvGroup(4096, {{4096, 2, 128, true}, {1024, 3, 128, true}, {1024, 3, 128, true}}, {}, true);
  CheckGemvGroup(4096, {{14336, 3, 128, true}, {14336, 4, 128, true}}, {}, true);
  CheckGemvGroup(1536, {{64, 4, 512, false}, {80, 8, 128, false}}, {}, true);
  CheckGemvGroup(384, {{48, 8, 128, true}, {32, 2, 128, false}, {16, 8, 128, true}}, {}, true);
  const bool dependent = DependentLaunchEnabled();
  SetDependentLaunch(!dependent);
  CheckGemvGroup(4096, {{256, 4, 128, true}, {512, 4, 128, true}}, {}, true);
  SetDependentLaunch(dependent);
  for (int warps : {1, 2, 4, 8, 16}) {
    for (int bits : {2, 3, 4, 8}) {
      CheckGemvGroup(2048, {{32, bits, 128, false}, {16, bits, 256, true}}, GemvTuning{.warps_per_block = warps},
                     true);
    }
    CheckGemvGroup(2048, {{32, 3, 128, false}, {16, 2, 256, true}}, GemvTuning{.warps_per_block = warps}, true);
  }
}

// The offset terms written by the rotation (HadamardRotateParams::offset_terms) in place of the tiled
// GEMV's activation-sum mma, at K = 2 and 3: the terms against the fp16 row, the GEMV against the
// CPU, on the rotation's register-tiled form (4096, 8192: p = 1; 1536, 14336, 28672: Paley 12 and
// 28) and its one-block-per-row fallback, and every warps-per-block.
TEST(CudaScalarCodecGemvGroup, TiledOffsetTermsFromTheRotationMatchCpu) {
  BITLOOM_SKIP_WITHOUT_GPU();
  CheckGemvGroup(4096, {{4096, 2, 128, true}, {1024, 3, 128, true}, {1024, 3, 128, true}}, {}, true, true);
  CheckGemvGroup(8192, {{512, 3, 128, false}}, {}, true, true);
  CheckGemvGroup(14336, {{256, 2, 128, false}}, {}, true, true);
  CheckGemvGroup(28672, {{128, 2, 128, false}}, {}, true, true);
  CheckGemvGroup(1536, {{64, 3, 512, false}, {80, 2, 128, true}}, {}, true, true);
  CheckGemvGroup(4096, {{256, 3, 128, false}}, {}, true, true, RotateSchedule::kRowPerBlock);
  CheckGemvGroup(14336, {{64, 2, 256, false}}, {}, true, true, RotateSchedule::kRowPerBlock);
  // Llama-3-70B's q/k/v (4 warps, 4 groups ahead) and every warps-per-block.
  CheckGemvGroup(8192, {{8192, 2, 128, true}, {1024, 3, 128, true}, {1024, 3, 128, true}}, {}, true, true);
  for (int warps : {1, 2, 4, 8, 16}) {
    CheckGemvGroup(2048, {{32, 3, 128, false}, {16, 2, 256, true}}, GemvTuning{.warps_per_block = warps}, true, true);
  }
  // A launch with K = 4 takes the mma whatever the rotation wrote.
  CheckGemvGroup(4096, {{256, 3, 128, false}, {64, 4, 128, false}}, {}, true, true);
}

TEST(CudaScalarCodecGemvGroup, StreamedPipelineMatchesCpu) {
  BITLOOM_SKIP_WITHOUT_GPU();
  if (DeviceSm() < 90) GTEST_SKIP() << "the streamed pipeline needs sm_90, device is sm_" << DeviceSm();
  const GemvTuning streamed{.pipeline = GemvPipeline::kStreamed};
  const bool dependent = DependentLaunchEnabled();
  for (bool on : {true, false}) {
    SetDependentLaunch(on);
    CheckGemvGroup(4096, {{37, 2, 128, true}, {1024, 5, 128, true}, {300, 8, 128, true}}, streamed);
    CheckGemvGroup(14336, {{300, 3, 128, false}, {53, 6, 256, true}, {16, 2, 128, true}}, streamed);
    CheckGemvGroup(576, {{300, 4, 128, false}, {37, 4, 64, true}, {1024, 4, 32, true}}, streamed);
    CheckGemvGroup(1000, {{16, 1, 256, false}, {53, 7, 64, true}, {33, 6, 128, false},
                          {100, 8, 32, true}},
                   streamed);
  }
  SetDependentLaunch(dependent);
  // ~1800 tiles: several per block, crossing from a K = 3 matrix into a K = 5 one; and one K.
  CheckGemvGroup(4096, {{14336, 3, 128, true}, {14336, 5, 128, true}}, streamed);
  CheckGemvGroup(2560, {{20000, 4, 128, false}}, streamed);
  // Several tiles per block whose rows end in a short unit (5000 columns = 8 + 2 super-chunks):
  // the warps idle in it must still carry the next tile's activations.
  CheckGemvGroup(5000, {{6000, 4, 128, false}, {37, 3, 64, true}}, streamed);
}

// kAuto's choice (host arithmetic, no GPU): stream groups of at most 8192 rows of at most 4096
// columns at K >= 3 and batch 1 (8B q/k/v and o_proj); keep registers for K = 2, gate/up-sized
// groups, longer rows and batches.
TEST(CudaScalarCodecGemvGroup, StreamedPreferredForSmallGroupsFromThreeBits) {
  auto shape = [](int64_t rows, int64_t cols, int bits, int batch = 1) {
    ScalarCodecGemvParams p;
    p.rows = rows;
    p.cols = cols;
    p.bits = bits;
    p.blocks_per_row = (cols + 31) / 32;
    p.batch = batch;
    return p;
  };
  EXPECT_TRUE(PreferStreamedGemv({shape(4096, 4096, 4), shape(1024, 4096, 4), shape(1024, 4096, 4)}));
  EXPECT_TRUE(PreferStreamedGemv({shape(4096, 4096, 3)}));
  EXPECT_FALSE(PreferStreamedGemv({shape(14336, 4096, 3), shape(14336, 4096, 5)}));
  EXPECT_FALSE(PreferStreamedGemv({shape(4096, 4096, 2)}));
  EXPECT_FALSE(PreferStreamedGemv({shape(4096, 4096, 4), shape(1024, 4096, 2)}));
  EXPECT_FALSE(PreferStreamedGemv({shape(4096, 14336, 4)}));
  EXPECT_FALSE(PreferStreamedGemv({shape(8192, 8192, 4)}));
  EXPECT_FALSE(PreferStreamedGemv({shape(4096, 4096, 4, 4)}));
  EXPECT_FALSE(PreferStreamedGemv({}));
}

// Dependent launch changes only the speed: with it on and off, the GEMV (which loads its first
// codes before waiting for the kernel ahead) matches the CPU, and the rotation ahead of it is
// always complete before it reads x.
TEST(CudaScalarCodecGemvGroup, DependentLaunchKeepsResults) {
  BITLOOM_SKIP_WITHOUT_GPU();
  const bool dependent = DependentLaunchEnabled();
  for (bool on : {true, false}) {
    SetDependentLaunch(on);
    CheckGemvGroup(14336, {{300, 3, 128, false}, {53, 4, 128, true}}, {.warps_per_block = 1});
    CheckGemvGroup(1000, {{37, 2, 64, false}, {100, 8, 128, true}});
  }
  SetDependentLaunch(dependent);
}

// The launch plan is host arithmetic: one wave on the device, as many warps per block as fit, or
// 4-warp blocks in several waves when even 2-warp blocks do not fit one wave.
TEST(CudaScalarCodecGemvGroup, PlanKeepsEveryBlockResident) {
  auto shape = [](int64_t rows, int64_t cols, int batch = 1) {
    ScalarCodecGemvParams p;
    p.rows = rows;
    p.cols = cols;
    p.blocks_per_row = (cols + 31) / 32;
    p.batch = batch;
    return p;
  };
  struct Case {
    std::vector<ScalarCodecGemvParams> group;
    int64_t tiles;
    int warps;
  };
  const Case cases[] = {
      {{shape(4096, 4096)}, 256, 8},                                      // 2 blocks of 8 per SM
      {{shape(1024, 4096)}, 64, 8},                                       // 8 super-chunks
      {{shape(37, 576)}, 3, 2},                                           // 2 super-chunks
      {{shape(4096, 4096), shape(1024, 4096), shape(1024, 4096)}, 384, 5},  // 3 blocks of 5 per SM
      {{shape(8192, 8192)}, 512, 4},
      {{shape(14336, 4096), shape(14336, 4096)}, 1792, 4},                // waves of 4-warp blocks
      {{shape(57344, 8192)}, 3584, 4},
      {{shape(14336, 4096)}, 896, 2},                                     // one wave of 2-warp blocks
      {{shape(5000, 256)}, 313, 1},                                       // one super-chunk
      {{shape(14336, 4096, 8), shape(14336, 4096, 8)}, 1792, 1},          // batch 8: one wave
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "tiles " << c.tiles);
    const GemvLaunchPlan plan = PlanScalarCodecGemv(c.group, 132);
    EXPECT_EQ(plan.tiles, c.tiles);
    EXPECT_EQ(plan.warps, c.warps);
    EXPECT_TRUE(plan.warps == 1 || plan.warps == 4 || plan.tiles <= 132 * (16 / plan.warps));
  }
  // Fewer SMs, fewer warps per block: 384 tiles on 78 SMs fit as 5 blocks of 3 warps per SM.
  EXPECT_EQ(PlanScalarCodecGemv(cases[3].group, 78).warps, 3);
}

// Argument checks run before any CUDA call, so they need no GPU: fake, aligned device pointers.
TEST(CudaScalarCodecGemvGroup, RejectsBadParamsNamingEntryAndField) {
  absl::StatusOr<ScalarCodecLayout> big = MakeScalarCodecLayout(4096, 4096, 4);
  absl::StatusOr<ScalarCodecLayout> small = MakeScalarCodecLayout(1024, 4096, 2, 64);
  ASSERT_TRUE(big.ok() && small.ok());
  const uintptr_t kBlob = uintptr_t{1} << 32, kX = uintptr_t{2} << 32, kY = uintptr_t{3} << 32;
  auto entry = [&](const ScalarCodecLayout& l, int64_t y_offset) {
    ScalarCodecGemvParams p = MakeGemvParams(l, reinterpret_cast<const void*>(kBlob));
    p.x = reinterpret_cast<const uint16_t*>(kX);
    p.y = reinterpret_cast<float*>(kY + 4 * y_offset);
    p.y_stride = 6144;
    p.batch = 2;
    return p;
  };
  const std::vector<ScalarCodecGemvParams> good = {entry(*big, 0), entry(*small, 4096),
                                                   entry(*small, 5120)};
  EXPECT_TRUE(IsSupported(90, absl::MakeConstSpan(good)));
  EXPECT_FALSE(IsSupported(75, absl::MakeConstSpan(good)));

  auto expect_bad = [&](std::vector<ScalarCodecGemvParams> group, const std::string& what1,
                        const std::string& what2) {
    SCOPED_TRACE(::testing::Message() << "expect '" << what1 << "' and '" << what2 << "'");
    const absl::Status st = LaunchScalarCodecGemvGroup(group, nullptr);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_NE(st.message().find("LaunchScalarCodecGemvGroup"), std::string::npos) << st;
    EXPECT_NE(st.message().find(what1), std::string::npos) << st;
    EXPECT_NE(st.message().find(what2), std::string::npos) << st;
    EXPECT_FALSE(IsSupported(90, absl::MakeConstSpan(group)));
  };
  expect_bad({}, "group size 0", "[1, 4]");
  expect_bad({good[0], good[1], good[2], good[1], good[2]}, "group size 5", "[1, 4]");
  std::vector<ScalarCodecGemvParams> g = good;
  g[1].bits = 9;
  expect_bad(g, "entry 1: ", "bits 9");
  g = good;
  g[2].cols = 2048;
  g[2].blocks_per_row = 64;
  g[2].groups_per_row = 32;
  expect_bad(g, "entry 2: ", "cols 2048");
  g = good;
  g[1].batch = 3;
  expect_bad(g, "entry 1: ", "batch 3");
  g = good;
  g[2].batch = 0;
  expect_bad(g, "entry 2: ", "batch 0");
  g = good;
  g[1].x = reinterpret_cast<const uint16_t*>(kX + 4096);
  expect_bad(g, "entry 1: ", "x differs");
  g = good;
  g[2].x_stride = 4096 + 64;
  expect_bad(g, "entry 2: ", "x_stride");
  g = good;
  g[0].y_stride = 100;
  expect_bad(g, "entry 0: ", "y_stride 100");
  g = good;
  g[1].codes = reinterpret_cast<const uint32_t*>(kBlob + 4);
  expect_bad(g, "entry 1: ", "16-byte aligned");
  g = good;
  g[2].scales = nullptr;
  expect_bad(g, "entry 2: ", "non-null");
  g = good;
  g[0].row_stride_words = 3;
  expect_bad(g, "entry 0: ", "row_stride_words");
  g = good;
  g[1].group_size = 48;
  expect_bad(g, "entry 1: ", "group_size 48");
  const absl::Status forced =
      LaunchScalarCodecGemvGroup(good, GemvTuning{.warps_per_block = 9}, nullptr);
  EXPECT_EQ(forced.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(forced.message().find("warps_per_block 9"), std::string::npos) << forced;
  const absl::Status streamed_warps = LaunchScalarCodecGemvGroup(
      good, GemvTuning{.warps_per_block = 2, .pipeline = GemvPipeline::kStreamed}, nullptr);
  EXPECT_EQ(streamed_warps.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(streamed_warps.message().find("kStreamed takes no warps_per_block (2)"),
            std::string::npos)
      << streamed_warps;

  // The single-matrix launcher names no entry.
  ScalarCodecGemvParams one = good[0];
  one.bits = 0;
  const absl::Status st = LaunchScalarCodecGemv(one, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(st.message(), "LaunchScalarCodecGemv: bits 0")) << st;
  EXPECT_FALSE(IsSupported(90, one));
  EXPECT_TRUE(IsSupported(90, good[0]));
}

}  // namespace
}  // namespace bitloom::kernels::cuda
