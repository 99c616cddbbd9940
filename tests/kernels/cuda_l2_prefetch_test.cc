// The L2 prefetch launcher: bad ranges are INVALID_ARGUMENT naming the range (checked without a
// GPU); on a GPU, prefetching ranges with unaligned ends, an empty range and the whole buffer
// succeeds and leaves every byte as it was.
#include "bitloom/kernels/cuda/l2_prefetch.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "cuda_test_util.h"

namespace bitloom::kernels::cuda {
namespace {

using testing::DeviceBuffer;

TEST(CudaL2Prefetch, RejectsBadRanges) {
  static const int kWord = 0;
  const std::vector<L2PrefetchRange> too_many(kMaxL2PrefetchRanges + 1, {&kWord, 4});
  absl::Status s = LaunchL2Prefetch(too_many, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("kMaxL2PrefetchRanges"), std::string::npos) << s;
  const L2PrefetchRange negative[] = {{&kWord, 4}, {&kWord, -1}};
  s = LaunchL2Prefetch(negative, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("range 1"), std::string::npos) << s;
  const L2PrefetchRange null_with_bytes[] = {{nullptr, 16}};
  s = LaunchL2Prefetch(null_with_bytes, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("range 0"), std::string::npos) << s;
  // Nothing to fetch launches nothing, so it needs no GPU either.
  const L2PrefetchRange empty[] = {{nullptr, 0}};
  EXPECT_TRUE(LaunchL2Prefetch(empty, nullptr).ok());
  EXPECT_TRUE(LaunchL2Prefetch({}, nullptr).ok());
}

TEST(CudaL2Prefetch, LeavesMemoryUnchanged) {
  BITLOOM_SKIP_WITHOUT_GPU();
  const int64_t bytes = (int64_t{3} << 20) + 37;
  std::vector<uint8_t> data(bytes);
  for (int64_t i = 0; i < bytes; ++i) data[i] = static_cast<uint8_t>(i * 131 + 7);
  DeviceBuffer d(bytes);
  d.Upload(data);
  const uint8_t* base = d.as<uint8_t>();
  const L2PrefetchRange ranges[] = {
      {base + 5, 1000},          // starts and ends inside a line
      {base + 4096, 0},          // empty: skipped
      {base, bytes},             // the whole buffer, more lines than threads in the grid
      {base + bytes - 1, 1}};    // the last byte
  ASSERT_TRUE(LaunchL2Prefetch(ranges, nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(d.Download<uint8_t>(bytes), data);
}

}  // namespace
}  // namespace bitloom::kernels::cuda
