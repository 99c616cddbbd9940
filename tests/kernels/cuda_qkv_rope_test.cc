// GPU vs CPU for the fused q/k norm + RoPE + paged KV-cache store: the CPU composes RmsNormF32 per
// head (qk_norm models) and RopeF32 exactly as DecoderModel::RunLayer does, and the test checks q,
// every written cache slot, and that no other cache entry was touched. Skips when no GPU is present
// (CI).
#include "bitloom/kernels/cuda/qkv_rope.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "bitloom/kernels/rms_norm.h"
#include "bitloom/kernels/rope.h"
#include "cuda_test_util.h"
#include "test_util.h"

namespace bitloom::kernels::cuda {
namespace {

using testing::DeviceBuffer;

// RoPE and the norm are the CPU's fp32 operations in the CPU's order (cos/sin in double, rounded):
// equal up to a last-bit difference of the device's double cos/sin or of the norm's double sum, i.e.
// a few 1e-7 of the tensor's scale.
constexpr double kF32Tolerance = 5e-7;

struct RopeCase {
  int head_dim;
  int num_heads;
  int num_kv_heads;
  int tokens;
  bool qk_norm;
  float norm_offset;
  const char* scaling;  // "", "llama3", "yarn"
};

RopeScaling Scaling(const std::string& type) {
  RopeScaling s;
  s.type = type;
  if (type == "llama3") {
    s.factor = 8.0f;
    s.original_max_position_embeddings = 8192;
  } else if (type == "yarn") {
    s.factor = 4.0f;  // attention_scaling = 0.1·ln 4 + 1
    s.original_max_position_embeddings = 4096;
  }
  return s;
}

void CheckRope(const RopeCase& c) {
  SCOPED_TRACE(::testing::Message() << "head_dim=" << c.head_dim << " heads=" << c.num_heads << "/"
                                    << c.num_kv_heads << " tokens=" << c.tokens << " qk_norm="
                                    << c.qk_norm << " offset=" << c.norm_offset << " scaling="
                                    << c.scaling);
  const int hd = c.head_dim, H = c.num_heads, KV = c.num_kv_heads;
  const int64_t T = c.tokens;
  absl::StatusOr<RopeTable> table = RopeInvFreq(hd, 1000000.0, Scaling(c.scaling));
  ASSERT_TRUE(table.ok()) << table.status();

  // Three sequences; token t belongs to sequence t % 3 and takes that sequence's next position.
  // Sequence 2 starts near 8000 so large angles are covered.
  constexpr int kSeqs = 3, kPageSize = 16;
  const int32_t starts[kSeqs] = {0, 37, 7990};
  std::vector<int32_t> token_seq(T), positions(T);
  int32_t next[kSeqs] = {starts[0], starts[1], starts[2]};
  for (int64_t t = 0; t < T; ++t) {
    token_seq[t] = static_cast<int32_t>(t % kSeqs);
    positions[t] = next[token_seq[t]]++;
  }
  // Block tables: each page a sequence touches gets a distinct physical page, in shuffled order;
  // untouched entries are −1 (the kernel must never follow them).
  const int max_pages = (8100 + kPageSize - 1) / kPageSize;
  std::vector<int32_t> block_tables(kSeqs * max_pages, -1);
  std::vector<std::pair<int, int>> needed;  // (seq, page index)
  for (int s = 0; s < kSeqs; ++s) {
    for (int32_t pi = starts[s] / kPageSize; pi <= (next[s] - 1) / kPageSize && next[s] > starts[s];
         ++pi) {
      needed.emplace_back(s, pi);
    }
  }
  const int64_t num_pages = static_cast<int64_t>(needed.size()) + 2;  // 2 never used
  std::vector<int32_t> page_ids(num_pages);
  std::iota(page_ids.begin(), page_ids.end(), 0);
  std::shuffle(page_ids.begin(), page_ids.end(), std::mt19937(hd + T));
  for (size_t n = 0; n < needed.size(); ++n) {
    block_tables[needed[n].first * max_pages + needed[n].second] = page_ids[n];
  }

  // Projections: q, k, v as slices of one fused [T, (H + 2KV)·hd + 4] output.
  const int64_t q_dim = int64_t{H} * hd, kv_dim = int64_t{KV} * hd;
  const int64_t stride = q_dim + 2 * kv_dim + 4;
  const std::vector<float> qkv = kernels::testing::RandomVector(T * stride, hd * 100 + T * 3 + H);
  const std::vector<float> q_norm = kernels::testing::RandomVector(hd, 11, 0.2f);
  const std::vector<float> k_norm = kernels::testing::RandomVector(hd, 12, 0.2f);
  const float eps = 1e-6f;

  // CPU: exactly RunLayer's order: [norm per head] then RoPE.
  std::vector<float> q(T * q_dim), k(T * kv_dim), v(T * kv_dim);
  for (int64_t t = 0; t < T; ++t) {
    std::copy_n(qkv.begin() + t * stride, q_dim, q.begin() + t * q_dim);
    std::copy_n(qkv.begin() + t * stride + q_dim, kv_dim, k.begin() + t * kv_dim);
    std::copy_n(qkv.begin() + t * stride + q_dim + kv_dim, kv_dim, v.begin() + t * kv_dim);
  }
  if (c.qk_norm) {
    ASSERT_TRUE(RmsNormF32({q.data(), q_norm.data(), q.data(), T * H, hd, eps, c.norm_offset}, nullptr).ok());
    ASSERT_TRUE(RmsNormF32({k.data(), k_norm.data(), k.data(), T * KV, hd, eps, c.norm_offset}, nullptr).ok());
  }
  ASSERT_TRUE(RopeF32({q.data(), positions.data(), &*table, T, H, hd}, nullptr).ok());
  ASSERT_TRUE(RopeF32({k.data(), positions.data(), &*table, T, KV, hd}, nullptr).ok());

  const int64_t cache_elems = num_pages * kPageSize * kv_dim;
  DeviceBuffer d_qkv(qkv.size() * 4), d_pos(T * 4), d_seq(T * 4), d_bt(block_tables.size() * 4),
      d_freq(table->inv_freq.size() * 4), d_qn(hd * 4), d_kn(hd * 4), d_q32(T * q_dim * 4),
      d_q16(T * q_dim * 2), d_kc(cache_elems * 2), d_vc(cache_elems * 2);
  d_qkv.Upload(qkv);
  d_pos.Upload(positions);
  d_seq.Upload(token_seq);
  d_bt.Upload(block_tables);
  d_freq.Upload(table->inv_freq);
  d_qn.Upload(q_norm);
  d_kn.Upload(k_norm);

  QkvRopeParams p;
  p.q = d_qkv.as<float>();
  p.k = d_qkv.as<float>() + q_dim;
  p.v = d_qkv.as<float>() + q_dim + kv_dim;
  p.q_stride = p.k_stride = p.v_stride = stride;
  p.tokens = T;
  p.num_heads = H;
  p.num_kv_heads = KV;
  p.head_dim = hd;
  p.positions = d_pos.as<int32_t>();
  p.inv_freq = d_freq.as<float>();
  p.attention_scaling = table->attention_scaling;
  if (c.qk_norm) {
    p.q_norm = d_qn.as<float>();
    p.k_norm = d_kn.as<float>();
  }
  p.norm_eps = eps;
  p.norm_weight_offset = c.norm_offset;
  p.q_out_f32 = d_q32.as<float>();
  p.q_out_f16 = d_q16.as<uint16_t>();
  p.k_cache = d_kc.as<uint16_t>();
  p.v_cache = d_vc.as<uint16_t>();
  p.num_pages = num_pages;
  p.page_size = kPageSize;
  p.block_tables = d_bt.as<int32_t>();
  p.max_pages_per_seq = max_pages;
  p.token_seq = d_seq.as<int32_t>();
  const absl::Status st = LaunchQkvRope(p, nullptr);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  const std::vector<float> got_q = d_q32.Download<float>(T * q_dim);
  EXPECT_LE(kernels::testing::MaxNormalizedError(got_q, std::vector<double>(q.begin(), q.end())),
            kF32Tolerance);
  const std::vector<float> got_q16 = testing::FromF16(d_q16.Download<uint16_t>(T * q_dim));
  for (size_t i = 0; i < q.size(); ++i) {
    ASSERT_TRUE(testing::WithinF16Rounding(got_q16[i], q[i])) << "q_f16[" << i << "]";
  }

  // Expected cache: 0xFFFF everywhere except the written slots.
  std::vector<int64_t> slot_token(num_pages * kPageSize, -1);
  for (int64_t t = 0; t < T; ++t) {
    const int32_t page = block_tables[token_seq[t] * max_pages + positions[t] / kPageSize];
    slot_token[int64_t{page} * kPageSize + positions[t] % kPageSize] = t;
  }
  const std::vector<uint16_t> kc = d_kc.Download<uint16_t>(cache_elems);
  const std::vector<uint16_t> vc = d_vc.Download<uint16_t>(cache_elems);
  for (int64_t slot = 0; slot < num_pages * kPageSize; ++slot) {
    const int64_t t = slot_token[slot];
    for (int64_t e = 0; e < kv_dim; ++e) {
      const uint16_t gk = kc[slot * kv_dim + e], gv = vc[slot * kv_dim + e];
      if (t < 0) {
        ASSERT_EQ(gk, 0xFFFF) << "K written at unused slot " << slot;
        ASSERT_EQ(gv, 0xFFFF) << "V written at unused slot " << slot;
        continue;
      }
      ASSERT_TRUE(testing::WithinF16Rounding(F16ToF32(gk), k[t * kv_dim + e]))
          << "K of token " << t << " element " << e << ": " << F16ToF32(gk) << " vs "
          << k[t * kv_dim + e];
      ASSERT_EQ(gv, F32ToF16(v[t * kv_dim + e])) << "V of token " << t << " element " << e;
    }
  }
}

TEST(CudaQkvRope, MatchesCpu) {
  BITLOOM_SKIP_WITHOUT_GPU();
  for (int hd : {64, 128, 256}) {
    for (auto [h, kv] : {std::pair{9, 3}, std::pair{4, 1}}) {
      for (int tokens : {1, 7, 33}) {
        CheckRope({hd, h, kv, tokens, false, 0.0f, ""});
        CheckRope({hd, h, kv, tokens, true, 0.0f, "yarn"});     // Qwen3-style q/k norm
        CheckRope({hd, h, kv, tokens, true, 1.0f, "llama3"});   // Gemma 3's (1 + w)
      }
    }
  }
  CheckRope({80, 8, 8, 5, false, 0.0f, ""});  // head_dim/2 = 40: a partial second pair per lane
}

TEST(CudaQkvRope, SkipsUnaddressableSlots) {
  BITLOOM_SKIP_WITHOUT_GPU();
  // Token 0: a valid slot. Token 1: block-table entry −1. Token 2: page index past the table.
  const int hd = 64, H = 2, KV = 1, T = 3, kPageSize = 16, kMaxPages = 2, kPages = 2;
  const std::vector<float> qkv = kernels::testing::RandomVector(T * (H + 2 * KV) * hd, 1);
  const std::vector<int32_t> positions = {3, 20, 40};
  const std::vector<int32_t> token_seq = {0, 0, 0};
  const std::vector<int32_t> block_tables = {1, -1};
  const std::vector<float> inv_freq(hd / 2, 0.01f);
  const int64_t cache_elems = int64_t{kPages} * kPageSize * KV * hd;
  DeviceBuffer d_qkv(qkv.size() * 4), d_pos(12), d_seq(12), d_bt(8), d_freq(hd * 2),
      d_q(T * H * hd * 4), d_kc(cache_elems * 2), d_vc(cache_elems * 2);
  d_qkv.Upload(qkv);
  d_pos.Upload(positions);
  d_seq.Upload(token_seq);
  d_bt.Upload(block_tables);
  d_freq.Upload(inv_freq);
  QkvRopeParams p;
  const int64_t stride = (H + 2 * KV) * hd;
  p.q = d_qkv.as<float>();
  p.k = p.q + H * hd;
  p.v = p.k + KV * hd;
  p.q_stride = p.k_stride = p.v_stride = stride;
  p.tokens = T;
  p.num_heads = H;
  p.num_kv_heads = KV;
  p.head_dim = hd;
  p.positions = d_pos.as<int32_t>();
  p.inv_freq = d_freq.as<float>();
  p.q_out_f32 = d_q.as<float>();
  p.k_cache = d_kc.as<uint16_t>();
  p.v_cache = d_vc.as<uint16_t>();
  p.num_pages = kPages;
  p.page_size = kPageSize;
  p.block_tables = d_bt.as<int32_t>();
  p.max_pages_per_seq = kMaxPages;
  p.token_seq = d_seq.as<int32_t>();
  ASSERT_TRUE(LaunchQkvRope(p, nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<uint16_t> vc = d_vc.Download<uint16_t>(cache_elems);
  for (int64_t slot = 0; slot < kPages * kPageSize; ++slot) {
    for (int e = 0; e < hd; ++e) {
      const uint16_t g = vc[slot * hd + e];
      if (slot == 1 * kPageSize + 3) {
        ASSERT_EQ(g, F32ToF16(qkv[0 * stride + (H + KV) * hd + e]));
      } else {
        ASSERT_EQ(g, 0xFFFF) << "slot " << slot;
      }
    }
  }
  const std::vector<float> q = d_q.Download<float>(T * H * hd);
  for (float x : q) ASSERT_TRUE(std::isfinite(x));  // q is produced for every token
}

TEST(CudaQkvRope, RejectsBadParams) {
  float f = 0.0f;
  int32_t i = 0;
  uint16_t h = 0;
  QkvRopeParams p;
  p.q = p.k = p.v = &f;
  p.q_stride = 9 * 64;
  p.k_stride = p.v_stride = 3 * 64;
  p.tokens = 1;
  p.num_heads = 9;
  p.num_kv_heads = 3;
  p.head_dim = 64;
  p.positions = p.block_tables = p.token_seq = &i;
  p.inv_freq = &f;
  p.q_out_f32 = &f;
  p.k_cache = p.v_cache = &h;
  p.num_pages = 1;
  p.page_size = 16;
  p.max_pages_per_seq = 1;
  QkvRopeParams bad = p;
  bad.head_dim = 63;
  EXPECT_EQ(LaunchQkvRope(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bad = p;
  bad.head_dim = 1024;
  EXPECT_EQ(LaunchQkvRope(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bad = p;
  bad.num_kv_heads = 2;  // 9 % 2 != 0
  EXPECT_EQ(LaunchQkvRope(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bad = p;
  bad.page_size = 12;
  EXPECT_EQ(LaunchQkvRope(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bad = p;
  bad.q_norm = &f;  // without k_norm
  EXPECT_EQ(LaunchQkvRope(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bad = p;
  bad.q_out_f32 = nullptr;
  EXPECT_EQ(LaunchQkvRope(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bad = p;
  bad.k_stride = 100;
  EXPECT_EQ(LaunchQkvRope(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bad = p;
  bad.tokens = 0;
  EXPECT_TRUE(LaunchQkvRope(bad, nullptr).ok());
}

}  // namespace
}  // namespace bitloom::kernels::cuda
