// GPU vs CPU for the token-embedding gather: fp16 table widened to fp32 times the scale, bit for bit
// against EmbeddingF32 over the widened table; out-of-range ids give zero rows and are counted.
// Skips when no GPU is present (CI).
#include "bitloom/kernels/cuda/embedding_gather.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "bitloom/kernels/embedding.h"
#include "cuda_test_util.h"
#include "test_util.h"

namespace bitloom::kernels::cuda {
namespace {

using testing::DeviceBuffer;

void CheckGather(int64_t vocab, int64_t hidden, int64_t tokens, float scale) {
  SCOPED_TRACE(::testing::Message() << "vocab=" << vocab << " hidden=" << hidden
                                    << " tokens=" << tokens << " scale=" << scale);
  const std::vector<uint16_t> table16 =
      testing::ToF16(kernels::testing::RandomVector(vocab * hidden, vocab + hidden, 0.05f));
  const std::vector<float> table = testing::FromF16(table16);
  std::vector<int32_t> ids(tokens);
  for (int64_t t = 0; t < tokens; ++t) ids[t] = static_cast<int32_t>((t * 7919 + 13) % vocab);
  ids[0] = static_cast<int32_t>(vocab - 1);
  std::vector<float> want(tokens * hidden);
  ASSERT_TRUE(EmbeddingF32({table.data(), ids.data(), want.data(), vocab, hidden, tokens, scale}).ok());

  DeviceBuffer d_table(table16.size() * 2), d_ids(tokens * 4), d_out(tokens * hidden * 4),
      d_bad(4);
  d_table.Upload(table16);
  d_ids.Upload(ids);
  ASSERT_EQ(cudaMemset(d_bad.as<void>(), 0, 4), cudaSuccess);
  EmbeddingGatherParams p;
  p.table = d_table.as<uint16_t>();
  p.ids = d_ids.as<int32_t>();
  p.out = d_out.as<float>();
  p.vocab = vocab;
  p.hidden = hidden;
  p.tokens = tokens;
  p.scale = scale;
  p.bad_id_count = d_bad.as<int32_t>();
  const absl::Status st = LaunchEmbeddingGather(p, nullptr);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> got = d_out.Download<float>(want.size());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << "out[" << i << "]";
  EXPECT_EQ(d_bad.Download<int32_t>(1)[0], 0);
}

TEST(CudaEmbeddingGather, MatchesCpuBitForBit) {
  BITLOOM_SKIP_WITHOUT_GPU();
  const float gemma_scale = static_cast<float>(std::sqrt(640.0));
  for (int64_t tokens : {1, 7, 33}) {
    CheckGather(49152, 576, tokens, 1.0f);      // SmolLM2-135M (vector path)
    CheckGather(1000, 640, tokens, gemma_scale);  // Gemma-style scale
    CheckGather(1000, 1000, tokens, 1.0f);     // hidden % 8 == 0 but 1000·2 B rows: vector path
    CheckGather(300, 4095, tokens, 1.5f);      // odd hidden: scalar path
  }
}

TEST(CudaEmbeddingGather, BadIdsWriteZerosAndAreCounted) {
  BITLOOM_SKIP_WITHOUT_GPU();
  const int64_t vocab = 100, hidden = 64;
  const std::vector<uint16_t> table16 =
      testing::ToF16(kernels::testing::RandomVector(vocab * hidden, 3));
  const std::vector<int32_t> ids = {5, -1, 100, 99, 1 << 30};
  DeviceBuffer d_table(table16.size() * 2), d_ids(ids.size() * 4),
      d_out(ids.size() * hidden * 4), d_bad(4);
  d_table.Upload(table16);
  d_ids.Upload(ids);
  ASSERT_EQ(cudaMemset(d_bad.as<void>(), 0, 4), cudaSuccess);
  EmbeddingGatherParams p;
  p.table = d_table.as<uint16_t>();
  p.ids = d_ids.as<int32_t>();
  p.out = d_out.as<float>();
  p.vocab = vocab;
  p.hidden = hidden;
  p.tokens = static_cast<int64_t>(ids.size());
  p.bad_id_count = d_bad.as<int32_t>();
  ASSERT_TRUE(LaunchEmbeddingGather(p, nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> got = d_out.Download<float>(ids.size() * hidden);
  for (size_t t = 0; t < ids.size(); ++t) {
    const bool bad = ids[t] < 0 || ids[t] >= vocab;
    for (int64_t i = 0; i < hidden; ++i) {
      const float want = bad ? 0.0f : F16ToF32(table16[ids[t] * hidden + i]);
      ASSERT_EQ(got[t * hidden + i], want) << "token " << t << " element " << i;
    }
  }
  EXPECT_EQ(d_bad.Download<int32_t>(1)[0], 3);
}

TEST(CudaEmbeddingGather, RejectsBadParams) {
  uint16_t table = 0;
  int32_t id = 0;
  float out = 0.0f;
  EmbeddingGatherParams p;
  p.table = &table;
  p.ids = &id;
  p.out = &out;
  p.vocab = 0;
  p.hidden = 1;
  p.tokens = 1;
  EXPECT_EQ(LaunchEmbeddingGather(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
  p.vocab = 1;
  p.ids = nullptr;
  EXPECT_EQ(LaunchEmbeddingGather(p, nullptr).code(), absl::StatusCode::kInvalidArgument);
  p.ids = &id;
  p.tokens = 0;
  EXPECT_TRUE(LaunchEmbeddingGather(p, nullptr).ok());
}

}  // namespace
}  // namespace bitloom::kernels::cuda
