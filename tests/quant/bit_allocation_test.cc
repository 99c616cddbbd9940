#include "bitloom/quant/bit_allocation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "bitloom/kernels/scalar_codec.h"

namespace bitloom::quant {
namespace {

// Exhaustive optimum under the same constraint; -1 loss when infeasible.
double BruteForce(const std::vector<AllocationItem>& items, double target, double tol) {
  double n = 0;
  for (const auto& it : items) n += it.num_weights;
  double best = -1;
  std::vector<size_t> idx(items.size(), 0);
  while (true) {
    uint64_t bits = 0;
    double loss = 0;
    for (size_t t = 0; t < items.size(); ++t) {
      bits += items[t].candidates[idx[t]].stored_bits;
      loss += items[t].candidates[idx[t]].loss;
    }
    const long double lo = (target - tol) * n, hi = (target + tol) * n;
    if (bits >= lo && bits <= hi && (best < 0 || loss < best)) best = loss;
    size_t t = 0;
    while (t < items.size() && ++idx[t] == items[t].candidates.size()) idx[t++] = 0;
    if (t == items.size()) break;
  }
  return best;
}

TEST(AllocateBits, MatchesBruteForceOnSmallInstances) {
  std::mt19937_64 rng(7);
  int feasible = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const int t_count = 2 + static_cast<int>(rng() % 5);
    std::vector<AllocationItem> items(t_count);
    for (auto& it : items) {
      it.num_weights = 10 + rng() % 200;
      const int k = 2 + static_cast<int>(rng() % 4);
      double loss = std::uniform_real_distribution<double>(0.5, 10.0)(rng);
      for (int c = 0; c < k; ++c) {
        // Costs in stored bits near (c+2) bits per weight, losses decreasing but noisy.
        const uint64_t bits = it.num_weights * (c + 2) + rng() % (it.num_weights / 2 + 1);
        it.candidates.push_back({c + 2, 128, loss, bits});
        loss *= std::uniform_real_distribution<double>(0.2, 0.9)(rng);
      }
    }
    const double target = std::uniform_real_distribution<double>(2.0, 5.0)(rng);
    const double tol = trial % 2 ? 0.01 : 0.2;
    const double want = BruteForce(items, target, tol);
    auto got = AllocateBits(items, {target, tol});
    if (want < 0) {
      EXPECT_FALSE(got.ok()) << "trial " << trial;
      continue;
    }
    ++feasible;
    ASSERT_TRUE(got.ok()) << "trial " << trial << ": " << got.status();
    EXPECT_EQ(got->budget_unit_bits, 1u);
    EXPECT_NEAR(got->total_loss, want, 1e-9 * (1 + want)) << "trial " << trial;
    EXPECT_LE(std::abs(got->bits_per_weight - target), tol + 1e-12);
  }
  EXPECT_GT(feasible, 30);
}

// A SmolLM2-135M-shaped decoder: 30 layers of q, k, v, o, gate, up, down, with the codec's real
// stored sizes at K = 1..8, group 128, and a loss ∝ importance · 4^-K.
std::vector<AllocationItem> SmolLm2Items() {
  struct Shape {
    const char* name;
    int64_t rows, cols;
  };
  const Shape shapes[] = {{"q", 576, 576},    {"k", 192, 576},     {"v", 192, 576},
                          {"o", 576, 576},    {"gate", 1536, 576}, {"up", 1536, 576},
                          {"down", 576, 1536}};
  std::mt19937_64 rng(3);
  std::vector<AllocationItem> items;
  for (int layer = 0; layer < 30; ++layer) {
    for (const Shape& s : shapes) {
      AllocationItem it;
      it.name = "layers." + std::to_string(layer) + "." + s.name;
      it.num_weights = s.rows * s.cols;
      const double importance = std::exp(std::normal_distribution<double>(0, 1)(rng));
      for (int k = 1; k <= 8; ++k) {
        const auto l = *kernels::MakeScalarCodecLayout(s.rows, s.cols, k, 128);
        it.candidates.push_back(
            {k, 128, importance * std::pow(4.0, -k), static_cast<uint64_t>(l.total_bytes) * 8});
      }
      items.push_back(std::move(it));
    }
  }
  return items;
}

TEST(AllocateBits, HitsEveryTargetWithinTolerance) {
  const auto items = SmolLm2Items();
  double prev_loss = INFINITY;
  for (double target = 2.0; target <= 8.0; target += 0.25) {
    auto r = AllocateBits(items, {target, 0.01});
    ASSERT_TRUE(r.ok()) << target << ": " << r.status();
    EXPECT_LE(std::abs(r->bits_per_weight - target), 0.01) << target;
    EXPECT_LT(r->total_loss, prev_loss) << target;
    prev_loss = r->total_loss;
    // Check the reported totals against the choice.
    uint64_t bits = 0, n = 0;
    for (size_t t = 0; t < items.size(); ++t) {
      bits += items[t].candidates[r->choice[t]].stored_bits;
      n += items[t].num_weights;
    }
    EXPECT_EQ(bits, r->total_stored_bits);
    EXPECT_DOUBLE_EQ(r->bits_per_weight, double(bits) / double(n));
  }
}

TEST(AllocateBits, CoarseUnitsStayInsideTheWindow) {
  // A tiny table cap forces u > 1: the answer must still be inside ±tolerance, and near-optimal.
  const auto items = SmolLm2Items();
  AllocationOptions coarse{2.5, 0.01};
  coarse.max_table_cells = 210 * 2000;
  auto a = AllocateBits(items, coarse);
  auto exact = AllocateBits(items, {2.5, 0.01});
  ASSERT_TRUE(a.ok() && exact.ok());
  EXPECT_GT(a->budget_unit_bits, 1u);
  EXPECT_LE(std::abs(a->bits_per_weight - 2.5), 0.01);
  EXPECT_LE(a->total_loss, 1.05 * exact->total_loss);
  EXPECT_GE(a->total_loss, exact->total_loss * (1 - 1e-12));
}

TEST(AllocateBits, PrefersImportantTensors) {
  // Two equal tensors, one 100× more important: at 3 bits average it gets the higher width.
  std::vector<AllocationItem> items(2);
  for (int t = 0; t < 2; ++t) {
    items[t].name = t ? "important" : "unimportant";
    items[t].num_weights = 1000;
    for (int k = 2; k <= 4; ++k)
      items[t].candidates.push_back({k, 128, (t ? 100.0 : 1.0) * std::pow(4.0, -k), 1000u * k});
  }
  auto r = AllocateBits(items, {3.0, 0.01});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->choice[0], 0);  // 2 bits
  EXPECT_EQ(r->choice[1], 2);  // 4 bits
}

TEST(AllocateBits, RejectsImpossibleOrBadInput) {
  const auto items = SmolLm2Items();
  auto low = AllocateBits(items, {1.0, 0.01});
  EXPECT_FALSE(low.ok());
  EXPECT_NE(low.status().message().find("reachable"), std::string::npos) << low.status();
  EXPECT_FALSE(AllocateBits(items, {9.0, 0.01}).ok());
  EXPECT_FALSE(AllocateBits({}, {3.0, 0.01}).ok());
  std::vector<AllocationItem> bad(1);
  bad[0].num_weights = 10;
  EXPECT_FALSE(AllocateBits(bad, {3.0, 0.01}).ok());
  bad[0].candidates.push_back({3, 128, -1.0, 30});
  EXPECT_FALSE(AllocateBits(bad, {3.0, 0.01}).ok());
  // Feasible range but a gap: one tensor of 2 or 4 bits cannot average 3.
  std::vector<AllocationItem> gap(1);
  gap[0].num_weights = 100;
  gap[0].candidates = {{2, 128, 1.0, 200}, {4, 128, 0.1, 400}};
  EXPECT_FALSE(AllocateBits(gap, {3.0, 0.01}).ok());
}

}  // namespace
}  // namespace bitloom::quant
