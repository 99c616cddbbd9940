#include "bitloom/kernels/embedding.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace bitloom::kernels {
namespace {

TEST(EmbeddingF32, GathersAndScales) {
  const int vocab = 11, dim = 5;
  const auto table = testing::RandomVector(vocab * dim, 41);
  const std::vector<int32_t> ids = {10, 0, 3, 3};
  std::vector<float> out(ids.size() * dim);
  ASSERT_TRUE(EmbeddingF32({table.data(), ids.data(), out.data(), vocab, dim, 4, 2.5f}).ok());
  for (size_t t = 0; t < ids.size(); ++t) {
    for (int i = 0; i < dim; ++i) EXPECT_EQ(out[t * dim + i], table[ids[t] * dim + i] * 2.5f);
  }
}

TEST(EmbeddingF32, OutOfRangeIdIsInvalidArgumentNamingIt) {
  const std::vector<float> table(6);
  std::vector<float> out(6);
  const std::vector<int32_t> ids = {0, 3};
  const absl::Status s = EmbeddingF32({table.data(), ids.data(), out.data(), 3, 2, 2, 1.0f});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("token id 3"), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace bitloom::kernels
