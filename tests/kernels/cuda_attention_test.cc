// GPU vs CPU for attention over the paged fp16 KV cache: decode (split-K + combine) and prefill,
// against AttentionF32 run on the same fp16 values gathered into contiguous K/V. Pages are
// scattered (a random permutation of page ids), unused pages and slots hold NaN so a read past a
// sequence's length or through a wrong page shows, and the output buffers carry a NaN tail that
// must stay untouched. The split plan and the launchers' argument checks are host logic and run
// without a GPU; the rest skips when no GPU is present (CI).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "bitloom/core/dtype.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/kernels/attention.h"
#include "bitloom/kernels/cuda/hadamard_rotation.h"
#include "bitloom/kernels/cuda/paged_attention.h"
#include "bitloom/kernels/hadamard.h"
#include "test_util.h"

namespace bitloom::kernels::cuda {
namespace {

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define SKIP_WITHOUT_GPU() \
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount failed or returned 0)"

int DeviceSm() {
  int major = 0, minor = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
  return major * 10 + minor;
}

ThreadPool& Pool() {
  static ThreadPool* pool = new ThreadPool(0);
  return *pool;
}

// One device allocation, filled with 0xFF bytes (NaN in fp32 and fp16) so unwritten outputs show.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    EXPECT_EQ(cudaMalloc(&ptr_, bytes_ == 0 ? 16 : bytes_), cudaSuccess);
    EXPECT_EQ(cudaMemset(ptr_, 0xFF, bytes_ == 0 ? 16 : bytes_), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  template <typename T = void>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }
  template <typename T>
  void Upload(const std::vector<T>& v) {
    ASSERT_LE(v.size() * sizeof(T), bytes_);
    ASSERT_EQ(cudaMemcpy(ptr_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  std::vector<uint8_t> DownloadBytes() const {
    std::vector<uint8_t> v(bytes_);
    EXPECT_EQ(cudaMemcpy(v.data(), ptr_, bytes_, cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

struct Shape {
  const char* name;
  int num_heads;
  int num_kv_heads;
  int head_dim;
};

constexpr Shape kSmolLm2{"smollm2", 9, 3, 64};
constexpr Shape kGemma3{"gemma3-270m", 4, 1, 256};
constexpr Shape kLlama3{"llama3-8b", 32, 8, 128};

constexpr uint16_t kF16Nan = 0x7E00;

// A paged cache holding `lens[s]` tokens of each sequence s, on randomly permuted pages. The host
// copy keeps the fp16 bits; Gather() returns one sequence's K or V as contiguous fp32.
class PagedCacheFixture {
 public:
  // capacity: the fewest tokens each block-table row must be able to address (a launch's
  // max_seq_len may exceed every actual length).
  PagedCacheFixture(const Shape& shape, int page_size, const std::vector<int>& lens, uint64_t seed,
                    int capacity = 0)
      : shape_(shape), page_size_(page_size), lens_(lens) {
    std::mt19937_64 rng(seed);
    max_pages_per_seq_ = std::max(1, (capacity + page_size - 1) / page_size);
    int64_t used = 0;
    for (int len : lens) {
      const int pages = (len + page_size - 1) / page_size;
      max_pages_per_seq_ = std::max(max_pages_per_seq_, pages + 1);  // one spare entry per row
      used += pages;
    }
    num_pages_ = used + 5;  // free pages (NaN) in between; the last is the poison page
    const int64_t slot_elems = int64_t{shape.num_kv_heads} * shape.head_dim;
    k_.assign(num_pages_ * page_size * slot_elems, kF16Nan);
    v_.assign(k_.size(), kF16Nan);
    std::vector<int32_t> perm(num_pages_ - 1);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    const int32_t poison = static_cast<int32_t>(num_pages_ - 1);
    tables_.assign(lens.size() * max_pages_per_seq_, poison);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    size_t next = 0;
    for (size_t s = 0; s < lens.size(); ++s) {
      for (int t = 0; t < lens[s]; ++t) {
        if (t % page_size == 0) tables_[s * max_pages_per_seq_ + t / page_size] = perm[next++];
        const int64_t at = Slot(static_cast<int>(s), t);
        for (int64_t e = 0; e < slot_elems; ++e) {
          k_[at + e] = F32ToF16(dist(rng));
          v_[at + e] = F32ToF16(dist(rng));
        }
      }
    }
    d_k_ = std::make_unique<DeviceBuffer>(k_.size() * 2);
    d_v_ = std::make_unique<DeviceBuffer>(v_.size() * 2);
    d_tables_ = std::make_unique<DeviceBuffer>(tables_.size() * 4);
    d_k_->Upload(k_);
    d_v_->Upload(v_);
    d_tables_->Upload(tables_);
  }

  PagedKvCache Describe() const {
    PagedKvCache c;
    c.k = d_k_->as<uint16_t>();
    c.v = d_v_->as<uint16_t>();
    c.page_size = page_size_;
    c.num_kv_heads = shape_.num_kv_heads;
    c.head_dim = shape_.head_dim;
    c.block_tables = d_tables_->as<int32_t>();
    c.max_pages_per_seq = max_pages_per_seq_;
    return c;
  }

  // Positions [0, len) of sequence s as [len, num_kv_heads, head_dim] fp32.
  std::vector<float> Gather(int s, bool values, int len) const {
    const int64_t slot_elems = int64_t{shape_.num_kv_heads} * shape_.head_dim;
    std::vector<float> out(len * slot_elems);
    const std::vector<uint16_t>& src = values ? v_ : k_;
    for (int t = 0; t < len; ++t) {
      const int64_t at = Slot(s, t);
      for (int64_t e = 0; e < slot_elems; ++e) out[t * slot_elems + e] = F16ToF32(src[at + e]);
    }
    return out;
  }

 private:
  int64_t Slot(int s, int t) const {
    const int64_t page = tables_[s * max_pages_per_seq_ + t / page_size_];
    return (page * page_size_ + t % page_size_) * shape_.num_kv_heads * shape_.head_dim;
  }

  Shape shape_;
  int page_size_;
  std::vector<int> lens_;
  int max_pages_per_seq_ = 0;
  int64_t num_pages_ = 0;
  std::vector<uint16_t> k_, v_;
  std::vector<int32_t> tables_;
  std::unique_ptr<DeviceBuffer> d_k_, d_v_, d_tables_;
};

// q as the kernel reads it (fp16 bits or fp32) and as fp32 for the reference (same values).
struct Queries {
  std::vector<float> f32;
  std::vector<uint16_t> f16;
};

Queries MakeQueries(size_t n, uint64_t seed, ActivationType type) {
  Queries q;
  q.f32 = testing::RandomVector(n, seed, 2.0f);
  if (type == ActivationType::kF16) {
    q.f16.resize(n);
    for (size_t i = 0; i < n; ++i) {
      q.f16[i] = F32ToF16(q.f32[i]);
      q.f32[i] = F16ToF32(q.f16[i]);
    }
  }
  return q;
}

constexpr int kTail = 64;  // output elements past the end that must stay NaN

// Reads [n] outputs of `type` and checks the tail past n was not written.
std::vector<float> ReadOutput(const DeviceBuffer& out, size_t n, ActivationType type) {
  const std::vector<uint8_t> bytes = out.DownloadBytes();
  const size_t elem = type == ActivationType::kF16 ? 2 : 4;
  std::vector<float> got(n);
  for (size_t i = 0; i < n; ++i) {
    if (type == ActivationType::kF16) {
      uint16_t h;
      std::memcpy(&h, bytes.data() + i * 2, 2);
      got[i] = F16ToF32(h);
    } else {
      std::memcpy(&got[i], bytes.data() + i * 4, 4);
    }
  }
  for (size_t b = n * elem; b < bytes.size(); ++b) {
    EXPECT_EQ(bytes[b], 0xFF) << "output written past its end at byte " << b;
    if (bytes[b] != 0xFF) break;
  }
  return got;
}

void ExpectClose(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << "non-finite output at " << i;
  }
  const std::vector<double> want_d(want.begin(), want.end());
  // Relative to the output scale (max(1, max|want|)); fp16 K/V are exact in both, the difference is
  // fp32 summation order, the fast exponential and, for fp16 outputs, one rounding (≤ 4.9e-4).
  // Prefill's tensor-core kernel also rounds each probability p (≤ 1) to fp16 before P·V: the
  // output moves by at most 2^-11·Σp|v|/Σp ≤ 4.9e-4·max|v| if every rounding had the same sign,
  // and by far less for independent roundings; fp32 q rounded to fp16 moves a score by ≤ 2^-12 of
  // Σ|q·k|·scale. The same 2e-3 bound holds for both kernels.
  EXPECT_LE(testing::MaxNormalizedError(got, want_d), 2e-3);
}

// ---------------------------------------------------------------------------------------------
// Host logic: the split plan and the argument checks (no GPU needed).

PagedDecodeAttentionParams DecodeShape(const Shape& s, int batch, int max_seq_len, int window) {
  PagedDecodeAttentionParams p;
  p.cache.num_kv_heads = s.num_kv_heads;
  p.cache.head_dim = s.head_dim;
  p.num_heads = s.num_heads;
  p.batch = batch;
  p.max_seq_len = max_seq_len;
  p.sliding_window = window;
  return p;
}

TEST(PagedDecodeAttentionPlan, SplitsCoverTheVisibleRange) {
  const Shape shapes[] = {kSmolLm2,           kGemma3,           kLlama3,
                          {"mha", 8, 8, 128}, {"g8", 16, 2, 64}, {"g12", 24, 2, 128},
                          {"g64", 64, 1, 256}};
  for (const Shape& s : shapes) {
    for (int batch : {1, 2, 3, 16, 64, 256, 65535}) {
      for (int max_len : {1, 15, 16, 17, 63, 64, 65, 300, 4097, 16384, 131072, 1 << 30}) {
        for (int window : {0, 1, 512, 4096}) {
          SCOPED_TRACE(::testing::Message() << s.name << " batch=" << batch
                                            << " max_len=" << max_len << " window=" << window);
          const PagedDecodeAttentionParams p = DecodeShape(s, batch, max_len, window);
          const DecodeAttentionPlan plan = PlanDecodeAttention(p);
          const int group = s.num_heads / s.num_kv_heads;
          EXPECT_TRUE(plan.heads_per_block == 1 || plan.heads_per_block == 2 ||
                      plan.heads_per_block == 4 || plan.heads_per_block == 8);
          EXPECT_GE(plan.heads_per_block * plan.head_chunks, group);
          EXPECT_LT(plan.heads_per_block * (plan.head_chunks - 1), group);
          const int64_t range = window > 0 ? std::min(max_len, window) : max_len;
          ASSERT_GE(plan.num_splits, 1);
          EXPECT_LE(plan.num_splits, kDecodeMaxSplits);
          EXPECT_EQ(plan.split_len % 16, 0);
          EXPECT_GE(int64_t{plan.num_splits} * plan.split_len, range);      // covers
          EXPECT_LT(int64_t{plan.num_splits - 1} * plan.split_len, range);  // no empty tail split
          const size_t want_ws = plan.num_splits == 1 ? 0
                                                      : size_t{4} * batch * s.num_heads *
                                                            plan.num_splits * (s.head_dim + 2);
          EXPECT_EQ(DecodeAttentionWorkspaceBytes(p), want_ws);
          // Pointers and lengths do not change the plan (graph capture relies on it).
          PagedDecodeAttentionParams q = p;
          q.workspace = &q;
          q.scale = 0.3f;
          const DecodeAttentionPlan again = PlanDecodeAttention(q);
          EXPECT_EQ(again.num_splits, plan.num_splits);
          EXPECT_EQ(again.split_len, plan.split_len);
        }
      }
    }
  }
}

TEST(PagedDecodeAttentionPlan, SplitsFillTheDeviceOnlyWhenTheBatchDoesNot) {
  // Llama-3-8B, 8 kv heads × 1 block each: batch 1 at 4096 tokens splits 64 ways (64-token splits);
  // batch 256 already has 2048 blocks and does not split.
  DecodeAttentionPlan plan = PlanDecodeAttention(DecodeShape(kLlama3, 1, 4096, 0));
  EXPECT_EQ(plan.heads_per_block, 4);
  EXPECT_EQ(plan.head_chunks, 1);
  EXPECT_EQ(plan.num_splits, 64);
  EXPECT_EQ(plan.split_len, 64);
  plan = PlanDecodeAttention(DecodeShape(kLlama3, 256, 4096, 0));
  EXPECT_EQ(plan.num_splits, 1);
  EXPECT_EQ(DecodeAttentionWorkspaceBytes(DecodeShape(kLlama3, 256, 4096, 0)), 0u);
  // Splits hold at least 32 tokens for one sequence, 64 from two on: Llama-3-8B with a 657-token
  // bound splits 21 ways at batch 1 (32 tokens each) and 11 at batch 4 (64 each).
  plan = PlanDecodeAttention(DecodeShape(kLlama3, 1, 657, 0));
  EXPECT_EQ(plan.num_splits, 21);
  EXPECT_EQ(plan.split_len, 32);
  plan = PlanDecodeAttention(DecodeShape(kLlama3, 4, 657, 0));
  EXPECT_EQ(plan.num_splits, 11);
  EXPECT_EQ(plan.split_len, 64);
  // A sliding window bounds the range: 16384 tokens with window 512 plan like 512.
  plan = PlanDecodeAttention(DecodeShape(kGemma3, 1, 16384, 512));
  EXPECT_EQ(int64_t{plan.num_splits} * plan.split_len, 512);
}

// Where a deferred combine leaves the partials (host logic): the accumulators at the workspace's
// start, the (max, sum) pairs after them, the plan's splits, the layer's window and lengths.
TEST(PagedDecodeAttentionPlan, DeferredSplitsDescribeTheWorkspace) {
  alignas(16) static float workspace[4];  // never dereferenced
  static const int32_t lens[3] = {};
  PagedDecodeAttentionParams p = DecodeShape(kGemma3, 3, 4096, 512);
  p.workspace = workspace;
  p.seq_lens = lens;
  const DecodeAttentionPlan plan = PlanDecodeAttention(p);
  ASSERT_GT(plan.num_splits, 1);
  const DecodeAttentionSplits s = DeferredDecodeSplits(p);
  EXPECT_EQ(s.acc, workspace);
  EXPECT_EQ(s.ml, workspace + int64_t{3} * kGemma3.num_heads * plan.num_splits * kGemma3.head_dim);
  EXPECT_EQ(s.seq_lens, lens);
  EXPECT_EQ(s.num_heads, kGemma3.num_heads);
  EXPECT_EQ(s.head_dim, kGemma3.head_dim);
  EXPECT_EQ(s.num_splits, plan.num_splits);
  EXPECT_EQ(s.split_len, plan.split_len);
  EXPECT_EQ(s.window, 512);
  // The workspace holds exactly those two arrays.
  EXPECT_EQ(DecodeAttentionWorkspaceBytes(p),
            size_t{3} * kGemma3.num_heads * plan.num_splits * (kGemma3.head_dim + 2) * sizeof(float));
}

TEST(PagedAttentionArgs, RejectsBadParamsWithoutTouchingTheDevice) {
  alignas(16) static uint8_t fake[64];  // never dereferenced: every case below fails validation
  const PagedDecodeAttentionParams good = [&] {
    PagedDecodeAttentionParams p = DecodeShape(kLlama3, 2, 100, 0);
    p.cache.k = reinterpret_cast<const uint16_t*>(fake);
    p.cache.v = p.cache.k;
    p.cache.block_tables = reinterpret_cast<const int32_t*>(fake);
    p.cache.max_pages_per_seq = 8;
    p.cache.page_size = 16;
    p.q = fake;
    p.out = fake;
    p.seq_lens = reinterpret_cast<const int32_t*>(fake);
    p.scale = 0.1f;
    p.workspace = fake;
    p.workspace_bytes = 1 << 30;
    return p;
  }();
  auto expect_invalid = [](const PagedDecodeAttentionParams& p, const char* what) {
    const absl::Status s = LaunchPagedDecodeAttention(p, nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << what << ": " << s;
    EXPECT_FALSE(IsSupported(90, p)) << what;
  };
  PagedDecodeAttentionParams p = good;
  p.cache.head_dim = 96;
  expect_invalid(p, "head_dim 96");
  p = good;
  p.cache.page_size = 24;
  expect_invalid(p, "page_size 24");
  p = good;
  p.num_heads = 30;
  expect_invalid(p, "heads not a multiple of kv heads");
  p = good;
  p.max_seq_len = 8 * 16 + 1;
  expect_invalid(p, "max_seq_len past the block table");
  p = good;
  p.max_seq_len = 0;
  expect_invalid(p, "max_seq_len 0");
  p = good;
  p.batch = 0;
  expect_invalid(p, "batch 0");
  p = good;
  p.workspace_bytes = DecodeAttentionWorkspaceBytes(good) - 4;
  ASSERT_GT(DecodeAttentionWorkspaceBytes(good), 0u);
  expect_invalid(p, "short workspace");
  p = good;
  p.q = fake + 4;
  expect_invalid(p, "misaligned q");
  p = good;
  p.seq_lens = nullptr;
  expect_invalid(p, "null seq_lens");
  p = good;
  p.logit_softcap = -1.0f;
  expect_invalid(p, "negative softcap");
  p = good;
  p.sliding_window = -5;
  expect_invalid(p, "negative window");

  PagedPrefillAttentionParams f;
  f.cache = good.cache;
  f.q = fake;
  f.out = fake;
  f.token_seq = reinterpret_cast<const int32_t*>(fake);
  f.token_pos = f.token_seq;
  f.num_tokens = 5;
  f.num_heads = 32;
  f.scale = 0.1f;
  PagedPrefillAttentionParams g = f;
  g.cache.head_dim = 80;
  EXPECT_EQ(LaunchPagedPrefillAttention(g, nullptr).code(), absl::StatusCode::kInvalidArgument);
  g = f;
  g.token_pos = nullptr;
  EXPECT_EQ(LaunchPagedPrefillAttention(g, nullptr).code(), absl::StatusCode::kInvalidArgument);
  g = f;
  g.num_tokens = -1;
  EXPECT_EQ(LaunchPagedPrefillAttention(g, nullptr).code(), absl::StatusCode::kInvalidArgument);
  g = f;
  g.out = fake + 2;
  EXPECT_EQ(LaunchPagedPrefillAttention(g, nullptr).code(), absl::StatusCode::kInvalidArgument);
  g = f;
  g.num_tokens = 0;  // valid and empty: nothing is launched
  EXPECT_TRUE(LaunchPagedPrefillAttention(g, nullptr).ok());
}

// ---------------------------------------------------------------------------------------------
// Decode

struct DecodeCase {
  Shape shape;
  int page_size;
  int window;
  float softcap;
  std::vector<int> lens;  // one per sequence (batch = lens.size())
  int max_seq_len;        // >= every len
  ActivationType q_type;
  ActivationType out_type;
};

// The CPU reference: query b at position lens[b] − 1 over positions [0, lens[b]).
std::vector<float> DecodeReference(const DecodeCase& c, const PagedCacheFixture& cache,
                                   const std::vector<float>& q) {
  const int64_t hd = int64_t{c.shape.num_heads} * c.shape.head_dim;
  std::vector<float> want(c.lens.size() * hd);
  for (size_t b = 0; b < c.lens.size(); ++b) {
    const int len = c.lens[b];
    const std::vector<float> k = cache.Gather(static_cast<int>(b), false, len);
    const std::vector<float> v = cache.Gather(static_cast<int>(b), true, len);
    std::vector<int32_t> kv_pos(len);
    std::iota(kv_pos.begin(), kv_pos.end(), 0);
    const int32_t q_pos = len - 1;
    AttentionParams p;
    p.q = q.data() + b * hd;
    p.k = k.data();
    p.v = v.data();
    p.q_positions = &q_pos;
    p.kv_positions = kv_pos.data();
    p.out = want.data() + b * hd;
    p.num_tokens = 1;
    p.num_kv = len;
    p.num_heads = c.shape.num_heads;
    p.num_kv_heads = c.shape.num_kv_heads;
    p.head_dim = c.shape.head_dim;
    p.scale = 1.0f / std::sqrt(static_cast<float>(c.shape.head_dim));
    p.logit_softcap = c.softcap;
    p.sliding_window = c.window;
    EXPECT_TRUE(AttentionF32(p, &Pool()).ok());
  }
  return want;
}

// Launches decode for `c` on `stream` into `out` (sized for the case + kTail).
PagedDecodeAttentionParams DecodeParams(const DecodeCase& c, const PagedCacheFixture& cache,
                                        const DeviceBuffer& q, const DeviceBuffer& lens,
                                        const DeviceBuffer& out, const DeviceBuffer& ws) {
  PagedDecodeAttentionParams p;
  p.cache = cache.Describe();
  p.q = q.as();
  p.q_type = c.q_type;
  p.out = out.as();
  p.out_type = c.out_type;
  p.seq_lens = lens.as<int32_t>();
  p.batch = static_cast<int>(c.lens.size());
  p.num_heads = c.shape.num_heads;
  p.max_seq_len = c.max_seq_len;
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.shape.head_dim));
  p.logit_softcap = c.softcap;
  p.sliding_window = c.window;
  p.workspace = ws.as();
  p.workspace_bytes = ws.bytes();
  return p;
}

void CheckDecode(const DecodeCase& c, uint64_t seed) {
  const int batch = static_cast<int>(c.lens.size());
  SCOPED_TRACE(::testing::Message()
               << c.shape.name << " page=" << c.page_size << " window=" << c.window
               << " softcap=" << c.softcap << " batch=" << batch << " len[0]=" << c.lens[0]
               << " max_seq_len=" << c.max_seq_len << " q16=" << (c.q_type == ActivationType::kF16)
               << " out16=" << (c.out_type == ActivationType::kF16));
  PagedCacheFixture cache(c.shape, c.page_size, c.lens, seed, c.max_seq_len);
  const size_t n = size_t{static_cast<size_t>(batch)} * c.shape.num_heads * c.shape.head_dim;
  const Queries q = MakeQueries(n, seed + 1, c.q_type);
  DeviceBuffer d_q(n * 4), d_lens(c.lens.size() * 4);
  if (c.q_type == ActivationType::kF16) {
    d_q.Upload(q.f16);
  } else {
    d_q.Upload(q.f32);
  }
  d_lens.Upload(c.lens);
  const size_t out_elem = c.out_type == ActivationType::kF16 ? 2 : 4;
  DeviceBuffer d_out((n + kTail) * out_elem);
  PagedDecodeAttentionParams p = DecodeParams(c, cache, d_q, d_lens, d_out, d_out);
  DeviceBuffer d_ws(DecodeAttentionWorkspaceBytes(p));
  p.workspace = d_ws.as();
  p.workspace_bytes = d_ws.bytes();
  ASSERT_TRUE(IsSupported(DeviceSm(), p));
  const absl::Status s = LaunchPagedDecodeAttention(p, nullptr);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectClose(ReadOutput(d_out, n, c.out_type), DecodeReference(c, cache, q.f32));
}

constexpr int kLens[] = {1, 15, 16, 17, 300, 4097};

TEST(CudaPagedDecodeAttention, MatchesCpuOnModelShapes) {
  SKIP_WITHOUT_GPU();
  int i = 0;
  for (const Shape& shape : {kSmolLm2, kGemma3, kLlama3}) {
    for (int page_size : {16, 32}) {
      for (int window : {0, 512}) {
        for (float softcap : {0.0f, 50.0f}) {
          const int batch = std::array<int, 3>{1, 3, 16}[i % 3];
          DecodeCase c{shape,
                       page_size,
                       window,
                       softcap,
                       {},
                       0,
                       i % 2 ? ActivationType::kF32 : ActivationType::kF16,
                       (i / 2) % 2 ? ActivationType::kF16 : ActivationType::kF32};
          for (int b = 0; b < batch; ++b) c.lens.push_back(kLens[(i / 3 + b) % 6]);
          c.max_seq_len = *std::max_element(c.lens.begin(), c.lens.end()) + (i % 4 == 0 ? 1000 : 0);
          CheckDecode(c, 1000 + i);
          ++i;
        }
      }
    }
  }
}

TEST(CudaPagedDecodeAttention, MatchesCpuOnOtherGroupSizes) {
  SKIP_WITHOUT_GPU();
  // MHA (group 1), group 2, group 8 (one block of 8 heads) and group 12 (8 + 4 heads), a strong
  // soft-cap, a small window.
  const Shape shapes[] = {
      {"mha", 4, 4, 128}, {"g2", 8, 4, 64}, {"g8", 16, 2, 64}, {"g12", 24, 2, 256}};
  int i = 0;
  for (const Shape& shape : shapes) {
    DecodeCase c{shape,
                 16,
                 i % 2 ? 0 : 40,
                 i % 2 ? 3.0f : 0.0f,
                 {300, 17, 1, 4097},
                 4097,
                 ActivationType::kF16,
                 ActivationType::kF32};
    CheckDecode(c, 2000 + i);
    ++i;
  }
}

TEST(CudaPagedDecodeAttention, MatchesCpuAtBatch256) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(7);
  DecodeCase c{kSmolLm2, 16, 0, 0.0f, {}, 200, ActivationType::kF16, ActivationType::kF16};
  for (int b = 0; b < 256; ++b) c.lens.push_back(1 + static_cast<int>(rng() % 200));
  CheckDecode(c, 3000);
}

// The buffers and params of a decode launch for `c` (fp16 queries from `seed`): q, the lengths, an
// fp32 output with a NaN tail, and the workspace its plan needs.
struct DecodeLaunch {
  DecodeLaunch(const DecodeCase& c, const PagedCacheFixture& cache, uint64_t seed)
      : n(c.lens.size() * c.shape.num_heads * c.shape.head_dim),
        q(MakeQueries(n, seed, ActivationType::kF16)),
        d_q(n * 2),
        d_lens(c.lens.size() * 4),
        d_out((n + kTail) * 4) {
    d_q.Upload(q.f16);
    d_lens.Upload(c.lens);
    p = DecodeParams(c, cache, d_q, d_lens, d_out, d_out);
    d_ws = std::make_unique<DeviceBuffer>(DecodeAttentionWorkspaceBytes(p));
    p.workspace = d_ws->as();
    p.workspace_bytes = d_ws->bytes();
  }
  size_t n;
  Queries q;
  DeviceBuffer d_q, d_lens, d_out;
  std::unique_ptr<DeviceBuffer> d_ws;
  PagedDecodeAttentionParams p;
};

TEST(CudaPagedDecodeAttention, GraphReplayReadsNewLengths) {
  SKIP_WITHOUT_GPU();
  // One capture for a max_seq_len bound; replays after the lengths change on the device must
  // attend over the new lengths (nothing about them is baked into the graph).
  DecodeCase c{
      kLlama3, 16, 0, 0.0f, {4097, 300, 17}, 4097, ActivationType::kF16, ActivationType::kF32};
  PagedCacheFixture cache(c.shape, c.page_size, c.lens, 4000);
  DecodeLaunch launch(c, cache, 4001);
  const PagedDecodeAttentionParams& p = launch.p;
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const absl::Status launched = LaunchPagedDecodeAttention(p, stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_TRUE(launched.ok()) << launched;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (const std::vector<int>& lens :
       {std::vector<int>{4097, 300, 17}, std::vector<int>{5, 4000, 64}}) {
    DecodeCase now = c;
    now.lens = lens;
    launch.d_lens.Upload(lens);
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    ExpectClose(ReadOutput(launch.d_out, launch.n, c.out_type), DecodeReference(now, cache, launch.q.f32));
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// defer_combine: the split kernel alone leaves the partials, and the o_proj input rotation merging
// them as it loads (HadamardRotateParams::splits) writes exactly what combine-then-rotate writes:
// Llama-3 (4096 = 32 × 128, a cluster of two blocks per row) and Gemma 3 (1024 = 4 × 256), batch 1
// and 3 with lengths from one token to past a split, a sliding window, and a rotation forced to one
// block per row. With one split nothing is deferred (DeferredDecodeSplits is empty).
TEST(CudaPagedDecodeAttention, DeferredSplitsMergedByTheRotationBitForBit) {
  SKIP_WITHOUT_GPU();
  struct Case {
    Shape shape;
    int window;
    std::vector<int> lens;
    int cluster_blocks;
  };
  for (const Case& k : {Case{kLlama3, 0, {700}, 0}, Case{kLlama3, 0, {4097, 1, 300}, 0},
                        Case{kLlama3, 256, {4097, 17, 300}, 1}, Case{kGemma3, 0, {300, 4097, 2}, 0}}) {
    DecodeCase c{k.shape, 16, k.window, 0.0f, k.lens, 4097, ActivationType::kF16, ActivationType::kF32};
    SCOPED_TRACE(::testing::Message() << c.shape.name << " batch " << c.lens.size() << " window " << c.window);
    PagedCacheFixture cache(c.shape, c.page_size, c.lens, 5000, c.max_seq_len);
    const int batch = static_cast<int>(c.lens.size());
    const int64_t n = int64_t{c.shape.num_heads} * c.shape.head_dim;
    DecodeLaunch launch(c, cache, 5001);
    PagedDecodeAttentionParams& p = launch.p;
    const DeviceBuffer& d_attn = launch.d_out;
    auto rotation = HadamardRotation::Create(n, 77);
    ASSERT_TRUE(rotation.ok()) << rotation.status();
    const int64_t out_stride = n + 32;
    DeviceBuffer d_combined(batch * out_stride * 2), d_merged(batch * out_stride * 2);
    HadamardRotateParams rp;
    rp.rotation = DescribeRotation(*rotation, nullptr);
    rp.out_stride = out_stride;
    rp.batch = batch;
    rp.cluster_blocks = k.cluster_blocks;
    // Reference: attention with its combine kernel, then the rotation of its output.
    ASSERT_TRUE(LaunchPagedDecodeAttention(p, nullptr).ok());
    rp.x = d_attn.as();
    rp.x_stride = n;
    rp.out = d_combined.as();
    ASSERT_TRUE(LaunchHadamardRotate(rp, nullptr).ok());
    // Deferred: the split kernel only, the rotation merges.
    p.defer_combine = true;
    const DecodeAttentionSplits splits = DeferredDecodeSplits(p);
    ASSERT_GT(splits.num_splits, 1);
    ASSERT_TRUE(LaunchPagedDecodeAttention(p, nullptr).ok());
    rp.x = nullptr;
    rp.splits = splits;
    rp.out = d_merged.as();
    const absl::Status merged = LaunchHadamardRotate(rp, nullptr);
    ASSERT_TRUE(merged.ok()) << merged;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(d_merged.DownloadBytes(), d_combined.DownloadBytes());

    rp.x = d_attn.as();  // an attention input takes no other input
    EXPECT_EQ(LaunchHadamardRotate(rp, nullptr).code(), absl::StatusCode::kInvalidArgument);
    rp.x = nullptr;
    rp.schedule = RotateSchedule::kRowPerBlock;
    EXPECT_EQ(LaunchHadamardRotate(rp, nullptr).code(), absl::StatusCode::kInvalidArgument);
  }
  PagedDecodeAttentionParams one = DecodeShape(kLlama3, 64, 32, 0);  // 64 sequences of <= 32 tokens
  EXPECT_EQ(PlanDecodeAttention(one).num_splits, 1);
  EXPECT_EQ(DeferredDecodeSplits(one).num_splits, 0);
}

// ---------------------------------------------------------------------------------------------
// Prefill

struct PrefillSeq {
  int prefix;  // tokens already cached before this step
  int fresh;   // new tokens (their K/V are cached too, as the caller writes them first)
};

struct PrefillCase {
  Shape shape;
  int page_size;
  int window;
  float softcap;
  std::vector<PrefillSeq> seqs;
  bool shuffle;  // interleave the sequences' tokens in a random order
  ActivationType q_type;
  ActivationType out_type;
  bool exact_fp32 = false;  // the fp32 FMA kernel instead of the tensor-core one
};

void CheckPrefill(const PrefillCase& c, uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << c.shape.name << " page=" << c.page_size << " window=" << c.window
               << " softcap=" << c.softcap << " seqs=" << c.seqs.size()
               << " prefix[0]=" << c.seqs[0].prefix << " new[0]=" << c.seqs[0].fresh
               << " shuffle=" << c.shuffle << " exact_fp32=" << c.exact_fp32);
  std::vector<int> lens;
  std::vector<int32_t> token_seq, token_pos;
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    lens.push_back(c.seqs[s].prefix + c.seqs[s].fresh);
    for (int t = 0; t < c.seqs[s].fresh; ++t) {
      token_seq.push_back(static_cast<int32_t>(s));
      token_pos.push_back(c.seqs[s].prefix + t);
    }
  }
  const int num_tokens = static_cast<int>(token_seq.size());
  std::vector<int> order(num_tokens);
  std::iota(order.begin(), order.end(), 0);
  if (c.shuffle) std::shuffle(order.begin(), order.end(), std::mt19937_64(seed));
  std::vector<int32_t> seq_of(num_tokens), pos_of(num_tokens);
  for (int i = 0; i < num_tokens; ++i) {
    seq_of[i] = token_seq[order[i]];
    pos_of[i] = token_pos[order[i]];
  }
  PagedCacheFixture cache(c.shape, c.page_size, lens, seed);
  const int64_t hd = int64_t{c.shape.num_heads} * c.shape.head_dim;
  const size_t n = static_cast<size_t>(num_tokens * hd);
  const Queries q = MakeQueries(n, seed + 1, c.q_type);

  // Reference, per sequence: its new tokens (in flattened order) against positions [0, len).
  std::vector<float> want(n);
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    std::vector<int> rows;
    for (int i = 0; i < num_tokens; ++i) {
      if (seq_of[i] == static_cast<int32_t>(s)) rows.push_back(i);
    }
    std::vector<float> qs(rows.size() * hd), outs(rows.size() * hd);
    std::vector<int32_t> qpos(rows.size());
    for (size_t r = 0; r < rows.size(); ++r) {
      std::copy_n(q.f32.begin() + rows[r] * hd, hd, qs.begin() + r * hd);
      qpos[r] = pos_of[rows[r]];
    }
    const int len = lens[s];
    const std::vector<float> k = cache.Gather(static_cast<int>(s), false, len);
    const std::vector<float> v = cache.Gather(static_cast<int>(s), true, len);
    std::vector<int32_t> kv_pos(len);
    std::iota(kv_pos.begin(), kv_pos.end(), 0);
    AttentionParams p;
    p.q = qs.data();
    p.k = k.data();
    p.v = v.data();
    p.q_positions = qpos.data();
    p.kv_positions = kv_pos.data();
    p.out = outs.data();
    p.num_tokens = static_cast<int64_t>(rows.size());
    p.num_kv = len;
    p.num_heads = c.shape.num_heads;
    p.num_kv_heads = c.shape.num_kv_heads;
    p.head_dim = c.shape.head_dim;
    p.scale = 1.0f / std::sqrt(static_cast<float>(c.shape.head_dim));
    p.logit_softcap = c.softcap;
    p.sliding_window = c.window;
    ASSERT_TRUE(AttentionF32(p, &Pool()).ok());
    for (size_t r = 0; r < rows.size(); ++r) {
      std::copy_n(outs.begin() + r * hd, hd, want.begin() + rows[r] * hd);
    }
  }

  DeviceBuffer d_q(n * 4), d_seq(num_tokens * 4), d_pos(num_tokens * 4);
  if (c.q_type == ActivationType::kF16) {
    d_q.Upload(q.f16);
  } else {
    d_q.Upload(q.f32);
  }
  d_seq.Upload(seq_of);
  d_pos.Upload(pos_of);
  const size_t out_elem = c.out_type == ActivationType::kF16 ? 2 : 4;
  DeviceBuffer d_out((n + kTail) * out_elem);
  PagedPrefillAttentionParams p;
  p.cache = cache.Describe();
  p.q = d_q.as();
  p.q_type = c.q_type;
  p.out = d_out.as();
  p.out_type = c.out_type;
  p.token_seq = d_seq.as<int32_t>();
  p.token_pos = d_pos.as<int32_t>();
  p.num_tokens = num_tokens;
  p.num_heads = c.shape.num_heads;
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.shape.head_dim));
  p.logit_softcap = c.softcap;
  p.sliding_window = c.window;
  p.exact_fp32 = c.exact_fp32;
  ASSERT_TRUE(IsSupported(DeviceSm(), p));
  const absl::Status s = LaunchPagedPrefillAttention(p, nullptr);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectClose(ReadOutput(d_out, n, c.out_type), want);
}

TEST(CudaPagedPrefillAttention, MatchesCpuOnModelShapes) {
  SKIP_WITHOUT_GPU();
  // New tokens appended to existing prefixes: one sequence, several (some adjacent, some
  // interleaved), a long prefix past the window, and a whole prompt longer than the window.
  const std::vector<std::vector<PrefillSeq>> layouts = {
      {{300, 129}}, {{17, 1}, {300, 7}, {16, 129}}, {{4097, 7}}, {{15, 7}, {1, 1}}, {{0, 700}},
  };
  int i = 0;
  for (const Shape& shape : {kSmolLm2, kGemma3, kLlama3}) {
    for (int page_size : {16, 32}) {
      for (int window : {0, 512}) {
        for (float softcap : {0.0f, 50.0f}) {
          PrefillCase c{shape,
                        page_size,
                        window,
                        softcap,
                        layouts[i % layouts.size()],
                        i % 3 == 1,
                        i % 2 ? ActivationType::kF32 : ActivationType::kF16,
                        (i / 2) % 2 ? ActivationType::kF16 : ActivationType::kF32};
          for (bool exact : {true, false}) {
            c.exact_fp32 = exact;
            CheckPrefill(c, 5000 + i);
          }
          ++i;
        }
      }
    }
  }
}

TEST(CudaPagedPrefillAttention, MatchesCpuOnOtherGroupSizes) {
  SKIP_WITHOUT_GPU();
  const Shape shapes[] = {{"mha", 4, 4, 128}, {"g8", 16, 2, 64}, {"g12", 24, 2, 256}};
  int i = 0;
  for (const Shape& shape : shapes) {
    PrefillCase c{shape,
                  16,
                  i == 1 ? 40 : 0,
                  i == 2 ? 3.0f : 0.0f,
                  {{33, 45}, {0, 3}},
                  i == 0,
                  ActivationType::kF16,
                  ActivationType::kF32};
    for (bool exact : {true, false}) {
      c.exact_fp32 = exact;
      CheckPrefill(c, 6000 + i);
    }
    ++i;
  }
}

// The tensor-core kernel (the default) on long prompts: 64-row tiles over many 64- or 32-key
// tiles, the causal diagonal inside a tile, windows shorter than a tile, tiles whose rows end
// mid-tile (prompt lengths 1, 63, 65, ...), head_dim 64/128/256 and GQA groups 1, 4 and 8.
TEST(CudaPagedPrefillAttention, TensorCoreKernelOnLongPrompts) {
  SKIP_WITHOUT_GPU();
  const Shape shapes[] = {{"mha-d64", 4, 4, 64}, kLlama3, {"g8-d256", 8, 1, 256}};
  const PrefillSeq prompts[] = {{0, 1}, {300, 1}, {0, 63}, {17, 65}, {0, 700}, {300, 2049}};
  const int windows[] = {0, 512, 40};
  int i = 0;
  for (const Shape& shape : shapes) {
    for (const PrefillSeq& prompt : prompts) {
      PrefillCase c{shape,
                    i % 4 == 3 ? 64 : 16,
                    windows[i % 3],
                    i % 2 ? 50.0f : 0.0f,
                    {prompt},
                    false,
                    (i / 2) % 2 ? ActivationType::kF32 : ActivationType::kF16,
                    (i / 3) % 2 ? ActivationType::kF16 : ActivationType::kF32};
      CheckPrefill(c, 7000 + i);
      ++i;
    }
  }
  // 4097-token prompts (one per head_dim) on few heads, to keep the CPU reference short.
  const Shape narrow[] = {{"g1-d64", 1, 1, 64}, {"g4-d128", 4, 1, 128}, {"g8-d256", 8, 1, 256}};
  for (const Shape& shape : narrow) {
    PrefillCase c{shape,       16,    i % 2 ? 512 : 0,      0.0f,
                  {{0, 4097}}, false, ActivationType::kF16, ActivationType::kF32};
    CheckPrefill(c, 7000 + i);
    ++i;
  }
}

// Several sequences in one tile on the tensor-core kernel: short chunks of four sequences
// adjacent (a 64-row tile spans several) and shuffled (every tile mixes them).
TEST(CudaPagedPrefillAttention, TensorCoreKernelMixesSequencesInATile) {
  SKIP_WITHOUT_GPU();
  int i = 0;
  for (const Shape& shape : {kSmolLm2, kLlama3, kGemma3}) {
    for (bool shuffle : {false, true}) {
      PrefillCase c{shape,
                    16,
                    i % 3 == 2 ? 40 : 0,
                    i % 2 ? 50.0f : 0.0f,
                    {{0, 5}, {200, 19}, {3, 70}, {64, 1}},
                    shuffle,
                    ActivationType::kF16,
                    ActivationType::kF32};
      CheckPrefill(c, 8000 + i);
      ++i;
    }
  }
}

}  // namespace
}  // namespace bitloom::kernels::cuda
