#include "bitloom/quant/scalar_quantizer.h"

#include <gtest/gtest.h>

#include <cmath>

#include "bitloom/kernels/hadamard.h"
#include "test_util.h"

namespace bitloom::quant {
namespace {

struct Problem {
  int64_t rows, cols;
  std::vector<float> w;   // rotated space
  std::vector<double> h;  // rotated space, undamped
  HessianFactor factor;
};

// A layer with correlated inputs, in rotated space, as the pipeline hands it to the encoders.
Problem MakeProblem(int64_t rows, int64_t cols, uint64_t seed, int64_t calib_rows = 512) {
  Problem p{rows, cols, testing::Gaussian(rows * cols, seed, 0.02f), {}, {}};
  const auto x = testing::CorrelatedInputs(calib_rows, cols, seed + 1);
  HessianAccumulator acc(cols);
  EXPECT_TRUE(acc.Add(x, calib_rows, nullptr).ok());
  p.h = acc.Mean();
  const auto rot = *kernels::HadamardRotation::Create(cols, seed + 2);
  EXPECT_TRUE(RotateHessian(rot, &p.h, nullptr).ok());
  rot.Apply(p.w.data(), rows, nullptr);
  p.factor = *FactorHessian(p.h, cols, {}, nullptr);
  return p;
}

std::vector<float> Decode(const QuantizedWeight& q) {
  std::vector<float> w(q.layout.rows * q.layout.cols);
  EXPECT_TRUE(kernels::DequantizeScalarCodec(q.layout, q.blob, w.data(), nullptr).ok());
  return w;
}

TEST(ScalarQuantizer, LdlqBeatsRtnAndErrorFallsWithBits) {
  const Problem p = MakeProblem(48, 256, 10);
  ThreadPool pool(2);
  double prev_ldlq = INFINITY, prev_rtn = INFINITY;
  for (int bits = 1; bits <= 8; ++bits) {
    ScalarQuantizerOptions o;
    o.bits = bits;
    auto rtn = QuantizeRtn(p.w, p.rows, p.cols, p.h, o, &pool);
    auto ldlq = QuantizeLdlq(p.w, p.rows, p.cols, p.h, p.factor, o, &pool);
    ASSERT_TRUE(rtn.ok()) << rtn.status();
    ASSERT_TRUE(ldlq.ok()) << ldlq.status();
    EXPECT_LE(ldlq->proxy_loss, rtn->proxy_loss) << bits << " bits";
    if (bits <= 4) {
      EXPECT_LT(ldlq->proxy_loss, 0.9 * rtn->proxy_loss) << bits << " bits";
    }
    EXPECT_LT(ldlq->proxy_loss, prev_ldlq) << bits << " bits";
    EXPECT_LT(rtn->proxy_loss, prev_rtn) << bits << " bits";
    prev_ldlq = ldlq->proxy_loss;
    prev_rtn = rtn->proxy_loss;
    // The reported loss is the loss of what was packed: recompute from the decoded blob. LDLQ
    // derives it from its scaled errors (‖E‖² minus the damping's share), exact up to fp32
    // rounding of the error feedback.
    EXPECT_NEAR(ProxyLoss(p.w, Decode(*ldlq), p.rows, p.cols, p.h, nullptr), ldlq->proxy_loss,
                1e-5 * ldlq->proxy_loss);
    ::testing::Test::RecordProperty(
        ("loss_k" + std::to_string(bits)).c_str(),
        std::to_string(rtn->proxy_loss) + " rtn / " + std::to_string(ldlq->proxy_loss) + " ldlq");
  }
  // Roughly 4× less error per extra bit at high K (uniform quantizer, error ∝ 2^-2K).
  EXPECT_LT(prev_ldlq, 1e-3);
}

TEST(ScalarQuantizer, DeterministicAcrossRunsAndThreadCounts) {
  const Problem p = MakeProblem(37, 200, 20);  // odd rows, partial last group and partial tile
  ScalarQuantizerOptions o;
  o.bits = 3;
  ThreadPool pool(3);
  auto a = QuantizeLdlq(p.w, p.rows, p.cols, p.h, p.factor, o, nullptr);
  auto b = QuantizeLdlq(p.w, p.rows, p.cols, p.h, p.factor, o, &pool);
  auto c = QuantizeLdlq(p.w, p.rows, p.cols, p.h, p.factor, o, &pool);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->blob, b->blob);
  EXPECT_EQ(b->blob, c->blob);
  EXPECT_EQ(a->proxy_loss, b->proxy_loss);
}

TEST(ScalarQuantizer, IdentityHessianMakesLdlqEqualRtn) {
  // With H = I there is nothing to feed back (U is diagonal): LDLQ must round exactly like RTN.
  const int64_t rows = 8, cols = 96;
  const auto w = testing::Gaussian(rows * cols, 30);
  std::vector<double> h(cols * cols, 0.0);
  for (int64_t i = 0; i < cols; ++i) h[i * cols + i] = 1.0;
  const auto f = *FactorHessian(h, cols, {}, nullptr);
  for (int bits : {2, 5}) {
    ScalarQuantizerOptions o;
    o.bits = bits;
    o.group_size = 32;
    auto rtn = QuantizeRtn(w, rows, cols, h, o, nullptr);
    auto ldlq = QuantizeLdlq(w, rows, cols, h, f, o, nullptr);
    ASSERT_TRUE(rtn.ok() && ldlq.ok());
    EXPECT_EQ(rtn->blob, ldlq->blob) << bits;
  }
}

TEST(ScalarQuantizer, RotationTamesOutlierColumns) {
  // Weights with a few huge input channels (as after norms in real models): per-group scales waste
  // their range on them unless the rotation spreads them out. Error measured in the original space,
  // H = I.
  const int64_t rows = 16, cols = 512;
  auto w = testing::Gaussian(rows * cols, 40, 0.02f);
  for (int64_t r = 0; r < rows; ++r) {
    w[r * cols + 7] *= 50.0f;
    w[r * cols + 300] *= 30.0f;
  }
  ScalarQuantizerOptions o;
  o.bits = 3;
  auto plain = QuantizeRtn(w, rows, cols, {}, o, nullptr);
  ASSERT_TRUE(plain.ok());
  const auto plain_q = Decode(*plain);
  const auto rot = *kernels::HadamardRotation::Create(cols, 41);
  std::vector<float> wr = w;
  rot.Apply(wr.data(), rows, nullptr);
  auto rotated = QuantizeRtn(wr, rows, cols, {}, o, nullptr);
  ASSERT_TRUE(rotated.ok());
  auto back = Decode(*rotated);
  rot.ApplyTranspose(back.data(), rows, nullptr);
  double e_plain = 0, e_rot = 0, energy = 0;
  for (int64_t i = 0; i < rows * cols; ++i) {
    e_plain += std::pow(double(w[i]) - plain_q[i], 2);
    e_rot += std::pow(double(w[i]) - back[i], 2);
    energy += double(w[i]) * w[i];
  }
  EXPECT_LT(e_rot, 0.5 * e_plain) << "relative error plain " << e_plain / energy << " rotated "
                                  << e_rot / energy;
}

TEST(ScalarQuantizer, OddShapesAndGroupSizes) {
  for (auto [rows, cols, group] : {std::tuple<int64_t, int64_t, int>{1, 1, 32},
                                   {3, 33, 32},
                                   {5, 130, 64},
                                   {17, 576, 128},
                                   {2, 300, 256}}) {
    const Problem p = MakeProblem(rows, cols, 50 + cols, 256);
    ScalarQuantizerOptions o;
    o.bits = 4;
    o.group_size = group;
    auto q = QuantizeLdlq(p.w, rows, cols, p.h, p.factor, o, nullptr);
    ASSERT_TRUE(q.ok()) << q.status();
    EXPECT_EQ(static_cast<int64_t>(q->blob.size()), q->layout.total_bytes);
    EXPECT_GE(q->proxy_loss, 0.0);
    EXPECT_LT(q->proxy_loss, 0.05) << rows << "x" << cols;
  }
}

TEST(ScalarQuantizer, RejectsBadInput) {
  const Problem p = MakeProblem(4, 64, 60);
  ScalarQuantizerOptions o;
  EXPECT_FALSE(QuantizeLdlq(p.w, 4, 63, p.h, p.factor, o, nullptr).ok());
  EXPECT_FALSE(QuantizeLdlq(p.w, 4, 64, {}, p.factor, o, nullptr).ok());
  HessianFactor wrong = p.factor;
  wrong.dim = 32;
  EXPECT_FALSE(QuantizeLdlq(p.w, 4, 64, p.h, wrong, o, nullptr).ok());
  o.bits = 9;
  EXPECT_FALSE(QuantizeRtn(p.w, 4, 64, p.h, o, nullptr).ok());
  o.bits = 4;
  auto w = p.w;
  w[3] = NAN;
  EXPECT_FALSE(QuantizeRtn(w, 4, 64, p.h, o, nullptr).ok());
  // An all-zero weight is fine: zero scales, zero loss.
  std::vector<float> zeros(4 * 64, 0.0f);
  auto z = QuantizeLdlq(zeros, 4, 64, p.h, p.factor, o, nullptr);
  ASSERT_TRUE(z.ok());
  EXPECT_EQ(z->proxy_loss, 0.0);
}

}  // namespace
}  // namespace bitloom::quant
