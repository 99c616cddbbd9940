// The tiled layout of 2-, 3-, 4- and 8-bit scalar codes (scalar_codec_tiled.h): which weights take it and the
// arguments the launchers refuse (checked without a GPU); on a GPU, the prefill expansion of a
// retiled weight equals the expansion of the original bit for bit, the rewrite keeps every byte of
// the blob past the codes, and the register GEMV refuses tiled weights in its rotating launch. The
// tiled GEMV itself is checked against the CPU in cuda_scalar_codec_test.cc (TiledLayoutMatchesCpu).
#include "bitloom/kernels/cuda/scalar_codec_tiled.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bitloom/kernels/cuda/scalar_codec_dequant.h"
#include "bitloom/kernels/scalar_codec.h"
#include "cuda_test_util.h"

namespace bitloom::kernels::cuda {
namespace {

using testing::DeviceBuffer;
using testing::RandomPackedMatrix;

// Weight fields of a [rows, cols] K-bit matrix at a fake, aligned device address.
ScalarCodecGemvParams Weight(int64_t rows, int64_t cols, int bits, int group_size) {
  absl::StatusOr<ScalarCodecLayout> layout = MakeScalarCodecLayout(rows, cols, bits, group_size);
  EXPECT_TRUE(layout.ok()) << layout.status();
  return MakeGemvParams(*layout, reinterpret_cast<const void*>(uintptr_t{1} << 20));
}

TEST(CudaScalarCodecTiled, AppliesToTwoThreeFourAndEightBitsOnWholeTilesAndGroups) {
  EXPECT_TRUE(TiledLayoutApplies(Weight(4096, 4096, 4, 128)));
  EXPECT_TRUE(TiledLayoutApplies(Weight(4096, 4096, 2, 128)));
  EXPECT_TRUE(TiledLayoutApplies(Weight(4096, 4096, 3, 128)));
  EXPECT_TRUE(TiledLayoutApplies(Weight(8192, 28672, 3, 128)));
  EXPECT_TRUE(TiledLayoutApplies(Weight(4096, 14336, 8, 128)));
  EXPECT_TRUE(TiledLayoutApplies(Weight(8192, 28672, 2, 256)));
  EXPECT_FALSE(TiledLayoutApplies(Weight(8192, 28672, 8, 128)));  // 448 KiB tiles
  EXPECT_FALSE(TiledLayoutApplies(Weight(4096, 4096, 5, 128)));
  EXPECT_TRUE(TiledLayoutApplies(Weight(4096, 14336, 4, 256)));
  EXPECT_TRUE(TiledLayoutApplies(Weight(16, 128, 4, 128)));
  EXPECT_TRUE(TiledLayoutApplies(Weight(8192, 28672, 4, 128)));  // 224 KiB tiles: the widest real rows
  EXPECT_FALSE(TiledLayoutApplies(Weight(4096, 4096, 6, 128)));  // K
  EXPECT_FALSE(TiledLayoutApplies(Weight(4096, 4096, 1, 128)));  // K
  EXPECT_FALSE(TiledLayoutApplies(Weight(4100, 4096, 4, 128)));  // rows % 16
  EXPECT_FALSE(TiledLayoutApplies(Weight(4096, 4000, 4, 32)));   // cols % 128
  EXPECT_FALSE(TiledLayoutApplies(Weight(4096, 4096, 4, 64)));   // group size % 128
  EXPECT_EQ(TiledMaxCols(4), 29056);
  EXPECT_EQ(TiledMaxCols(3), 38656);
  EXPECT_FALSE(TiledLayoutApplies(Weight(64, TiledMaxCols(4) + 128, 4, 128)));  // tile > shared memory
  EXPECT_TRUE(TiledLayoutApplies(Weight(64, TiledMaxCols(3), 3, 128)));
  EXPECT_FALSE(TiledLayoutApplies(Weight(64, TiledMaxCols(3) + 128, 3, 128)));
  // A group launches tiled when every weight takes the layout and there are at most two K.
  EXPECT_TRUE(TiledGroupApplies({Weight(4096, 4096, 2, 128), Weight(1024, 4096, 3, 128), Weight(1024, 4096, 3, 128)}));
  EXPECT_FALSE(TiledGroupApplies({Weight(4096, 4096, 2, 128), Weight(1024, 4096, 3, 128), Weight(1024, 4096, 4, 128)}));
  EXPECT_FALSE(TiledGroupApplies({Weight(4096, 4096, 4, 128), Weight(1024, 4096, 5, 128)}));
  EXPECT_FALSE(TiledGroupApplies({}));
  ScalarCodecGemvParams unaligned = Weight(64, 256, 4, 128);
  unaligned.codes = reinterpret_cast<const uint32_t*>(uintptr_t{(1u << 20) + 4});
  EXPECT_FALSE(TiledLayoutApplies(unaligned));
}

TEST(CudaScalarCodecTiled, PlanGivesEachSmEnoughWarps) {
  // The H200 sweep's best (or within 2% of it) for Llama-3's shapes.
  EXPECT_EQ(PlanTiledGemv(1792, 32, 132, 4), 4);   // 8B gate/up
  EXPECT_EQ(PlanTiledGemv(896, 32, 132, 4), 4);    // 8B gate_proj alone
  EXPECT_EQ(PlanTiledGemv(384, 32, 132, 4), 8);    // 8B q/k/v
  EXPECT_EQ(PlanTiledGemv(256, 32, 132, 4), 16);   // 8B o_proj
  EXPECT_EQ(PlanTiledGemv(256, 32, 132, 2), 16);   // ... at 2 bits: a short row keeps them
  EXPECT_EQ(PlanTiledGemv(64, 32, 132, 4), 16);    // 8B k_proj alone
  EXPECT_EQ(PlanTiledGemv(256, 112, 132, 4), 16);  // 8B down_proj
  EXPECT_EQ(PlanTiledGemv(512, 64, 132, 3), 8);    // 70B q_proj/o_proj
  EXPECT_EQ(PlanTiledGemv(1792, 64, 132, 4), 8);   // 70B gate_proj alone
  EXPECT_EQ(PlanTiledGemv(3584, 64, 132, 2), 4);   // 70B gate/up at 2/3: 108 warps per SM, never one wave
  EXPECT_EQ(PlanTiledGemv(640, 64, 132, 3), 8);    // 70B q/k/v at 3 bits
  EXPECT_EQ(PlanTiledGemv(640, 64, 132, 2), 4);    // ... at 2/3/3: half, 19 warps per SM
  EXPECT_EQ(PlanTiledGemv(512, 224, 132, 3), 16);  // 70B down_proj at 3 bits
  EXPECT_EQ(PlanTiledGemv(512, 224, 132, 2), 8);   // ... at 2: half, 31 warps per SM
  EXPECT_EQ(PlanTiledGemv(256, 112, 132, 2), 16);  // 8B down_proj at 2: half would leave 15.5
  EXPECT_EQ(PlanTiledGemv(1, 2, 132, 4), 2);       // never more warps than groups
  EXPECT_EQ(PlanTiledGemv(1, 1, 132, 4), 1);
  EXPECT_EQ(PlanTiledGroupsAhead(64, 32, 16, 132, 4), 2);   // 8B k_proj alone: 7.8 warps per SM
  EXPECT_EQ(PlanTiledGroupsAhead(256, 112, 8, 132, 4), 2);  // 8B down_proj forced to 8 warps: 15.5
  EXPECT_EQ(PlanTiledGroupsAhead(256, 112, 16, 132, 4), 1); // ... at the plan's 16: 31
  EXPECT_EQ(PlanTiledGroupsAhead(384, 32, 8, 132, 4), 1);   // 8B q/k/v: 23 warps per SM
  EXPECT_EQ(PlanTiledGroupsAhead(384, 32, 8, 132, 3), 1);   // ... at 3/3/3
  EXPECT_EQ(PlanTiledGroupsAhead(256, 112, 16, 132, 3), 1); // 8B down_proj at 3 bits: 31
  EXPECT_EQ(PlanTiledGroupsAhead(1792, 32, 4, 132, 3), 1);  // 8B gate/up at 3/4
  EXPECT_EQ(PlanTiledGroupsAhead(512, 64, 8, 132, 3), 1);   // 70B q/o
  EXPECT_EQ(PlanTiledGroupsAhead(640, 64, 4, 132, 2), 4);   // 70B q/k/v at 2/3/3: 19 warps per SM
  EXPECT_EQ(PlanTiledGroupsAhead(512, 224, 8, 132, 2), 2);  // 70B down_proj at 2: 31
  EXPECT_EQ(PlanTiledGroupsAhead(3584, 64, 4, 132, 2), 1);  // 70B gate/up at 2/3: 108
  EXPECT_EQ(PlanTiledGroupsAhead(16, 1, 1, 132, 2), 1);     // one group per warp
}

TEST(CudaScalarCodecTiled, RejectsBadArgumentsNamingTheProblem) {
  ScalarCodecGemvParams w = Weight(64, 256, 5, 128);
  absl::Status s = LaunchScalarCodecRetile(w, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("no tiled layout"), std::string::npos) << s;
  w = Weight(64, 256, 4, 128);
  w.tiled = true;
  EXPECT_EQ(LaunchScalarCodecRetile(w, nullptr).code(), absl::StatusCode::kInvalidArgument);

  std::vector<ScalarCodecGemvParams> mixed = {Weight(64, 256, 4, 128), Weight(64, 256, 2, 128),
                                              Weight(32, 256, 4, 128), Weight(64, 256, 3, 128)};
  for (ScalarCodecGemvParams& p : mixed) {
    p.x = reinterpret_cast<const uint16_t*>(uintptr_t{1} << 24);
    p.y = reinterpret_cast<float*>(uintptr_t{1} << 25);
    p.batch = 1;
    p.tiled = true;
  }
  EXPECT_TRUE(CheckScalarCodecGemvTiled(absl::MakeConstSpan(mixed).first(3)).ok()) << "two K in one launch";
  s = CheckScalarCodecGemvTiled(mixed);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << "one launch reads at most two K";
  EXPECT_NE(s.message().find("entry 3: bits 3 is a third K"), std::string::npos) << s;

  std::vector<ScalarCodecGemvParams> group(2, Weight(64, 256, 4, 128));
  for (ScalarCodecGemvParams& p : group) {
    p.x = reinterpret_cast<const uint16_t*>(uintptr_t{1} << 24);
    p.y = reinterpret_cast<float*>(uintptr_t{1} << 25);
    p.batch = 1;
  }
  group[0].tiled = true;  // entry 1 is not
  s = CheckScalarCodecGemvTiled(group);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("entry 1"), std::string::npos) << s;
  group[1].tiled = true;
  EXPECT_TRUE(CheckScalarCodecGemvTiled(group).ok());
  group[1].batch = 2;
  EXPECT_EQ(CheckScalarCodecGemvTiled(group).code(), absl::StatusCode::kInvalidArgument);
  group[1].batch = 1;
  group[0].batch = group[1].batch = kGemvMaxBatch + 1;
  EXPECT_EQ(CheckScalarCodecGemvTiled(group).code(), absl::StatusCode::kInvalidArgument);
  group[0].batch = group[1].batch = 1;
  // Offset terms: the same for every entry, 8-byte aligned, an even stride of at least kGemvMaxBatch.
  for (ScalarCodecGemvParams& p : group) {
    p.offset_terms = reinterpret_cast<const float*>(uintptr_t{1} << 26);
    p.offset_terms_stride = kGemvMaxBatch;
  }
  EXPECT_TRUE(CheckScalarCodecGemvTiled(group).ok());
  group[1].offset_terms_stride = kGemvMaxBatch + 2;
  s = CheckScalarCodecGemvTiled(group);
  EXPECT_NE(s.message().find("entry 1: cols, batch, x, x_stride and offset_terms"), std::string::npos) << s;
  for (const int64_t stride : {int64_t{kGemvMaxBatch} + 1, int64_t{kGemvMaxBatch} - 2}) {
    group[0].offset_terms_stride = group[1].offset_terms_stride = stride;
    s = CheckScalarCodecGemvTiled(group);
    EXPECT_NE(s.message().find("offset_terms_stride (" + std::to_string(stride) + ")"), std::string::npos) << s;
  }
  for (ScalarCodecGemvParams& p : group) {
    p.offset_terms = reinterpret_cast<const float*>((uintptr_t{1} << 26) + 4);
    p.offset_terms_stride = kGemvMaxBatch;
  }
  s = CheckScalarCodecGemvTiled(group);
  EXPECT_NE(s.message().find("offset_terms must be 8-byte aligned"), std::string::npos) << s;
  for (ScalarCodecGemvParams& p : group) p.offset_terms = nullptr;
  EXPECT_EQ(LaunchScalarCodecGemvTiled(group, {.warps_per_block = 3}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchScalarCodecGemvTiled(group, {.warps_per_block = 32}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchScalarCodecGemvTiled(group, {.groups_ahead = 3}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  // The rotating launch has no tiled form.
  GemvRotatingInput in;
  EXPECT_EQ(LaunchScalarCodecGemvGroupRotating(group, in, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(PreferRotatingGemv(group, in));
}

TEST(CudaScalarCodecTiled, RetiledExpansionEqualsTheOriginalsBitForBit) {
  BITLOOM_SKIP_WITHOUT_GPU();
  struct Case {
    int64_t rows, cols;
    int bits, group_size;
  };
  for (const Case& c : {Case{16, 128, 4, 128}, Case{48, 1536, 4, 256}, Case{64, 4096, 4, 128}, Case{32, 14336, 4, 512},
                        Case{16, 128, 2, 128}, Case{48, 14336, 2, 256}, Case{32, 384, 8, 128}, Case{16, 14336, 8, 128},
                        Case{16, 128, 3, 128}, Case{48, 4096, 3, 256}, Case{32, 14336, 3, 128}}) {
    SCOPED_TRACE(::testing::Message() << "[" << c.rows << ", " << c.cols << "] K " << c.bits << " group "
                                      << c.group_size);
    const testing::PackedMatrix m = RandomPackedMatrix(c.rows, c.cols, c.bits, c.group_size, c.rows * 7 + c.cols);
    DeviceBuffer plain(m.blob.size()), tiled(m.blob.size());
    plain.Upload(m.blob);
    tiled.Upload(m.blob);
    ScalarCodecGemvParams wp = MakeGemvParams(m.layout, plain.as<void>());
    ScalarCodecGemvParams wt = MakeGemvParams(m.layout, tiled.as<void>());
    ASSERT_TRUE(LaunchScalarCodecRetile(wt, nullptr).ok());
    wt.tiled = true;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<uint8_t> after = tiled.Download<uint8_t>(m.blob.size());
    EXPECT_NE(std::vector<uint8_t>(after.begin(), after.begin() + m.layout.codes_bytes),
              std::vector<uint8_t>(m.blob.begin(), m.blob.begin() + m.layout.codes_bytes))
        << "the codes were not rewritten";
    EXPECT_EQ(std::vector<uint8_t>(after.begin() + m.layout.codes_bytes, after.end()),
              std::vector<uint8_t>(m.blob.begin() + m.layout.codes_bytes, m.blob.end()))
        << "the scales moved";
    const int64_t stride = c.cols + 8;
    DeviceBuffer out_plain(c.rows * stride * 2), out_tiled(c.rows * stride * 2);
    // A slice that starts mid-tile and one that covers everything.
    for (const auto& [begin, count] : {std::pair<int64_t, int64_t>{0, c.rows}, {5, c.rows - 5}}) {
      ScalarCodecDequantParams dp{wp, begin, count, out_plain.as<uint16_t>(), stride};
      ASSERT_TRUE(LaunchScalarCodecDequant(dp, nullptr).ok());
      dp.weight = wt;
      dp.out = out_tiled.as<uint16_t>();
      ASSERT_TRUE(LaunchScalarCodecDequant(dp, nullptr).ok());
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      EXPECT_EQ(out_tiled.Download<uint16_t>(count * stride), out_plain.Download<uint16_t>(count * stride))
          << "rows from " << begin;
    }
  }
}

}  // namespace
}  // namespace bitloom::kernels::cuda
