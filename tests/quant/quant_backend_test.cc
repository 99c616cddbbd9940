// CpuQuantBackend: the pipeline's CPU backend is exactly the functions of hessian.h and
// scalar_quantizer.h (bit for bit), Measure keeps only the probe width's blob, and a pipeline given
// the backend explicitly emits what the default one does.
#include "bitloom/quant/quant_backend.h"

#include <gtest/gtest.h>

#include "bitloom/quant/quantization_pipeline.h"
#include "test_util.h"
#include "toy_block_runner.h"

namespace bitloom::quant {
namespace {

TEST(CpuQuantBackend, MatchesTheCpuFunctionsBitForBit) {
  ThreadPool pool(2);
  CpuQuantBackend backend(&pool);
  EXPECT_EQ(backend.Describe(), "cpu");
  constexpr int64_t kRows = 24, kCols = 160, kTokens = 300;
  const std::vector<float> x = testing::CorrelatedInputs(kTokens, kCols, 5);
  auto hessian = backend.NewHessian(kCols);
  ASSERT_TRUE(hessian.ok());
  ASSERT_TRUE((*hessian)->Add(absl::MakeConstSpan(x).subspan(0, 100 * kCols), 100).ok());
  ASSERT_TRUE((*hessian)->Add(absl::MakeConstSpan(x).subspan(100 * kCols), kTokens - 100).ok());
  EXPECT_EQ((*hessian)->rows(), kTokens);
  EXPECT_FALSE((*hessian)->Add(x, kTokens + 1).ok());

  HessianAccumulator acc(kCols);
  ASSERT_TRUE(acc.Add(absl::MakeConstSpan(x).subspan(0, 100 * kCols), 100, &pool).ok());
  ASSERT_TRUE(acc.Add(absl::MakeConstSpan(x).subspan(100 * kCols), kTokens - 100, &pool).ok());
  auto host = (*hessian)->ToHost();
  ASSERT_TRUE(host.ok());
  EXPECT_EQ(host->sum(), acc.sum());
  EXPECT_EQ(host->rows(), acc.rows());

  auto rotation = kernels::HadamardRotation::Create(kCols, 77);
  ASSERT_TRUE(rotation.ok());
  auto factor = backend.Factor(**hessian, *rotation, {});
  ASSERT_TRUE(factor.ok()) << factor.status();
  EXPECT_EQ((*factor)->dim(), kCols);
  std::vector<double> h = acc.Mean();
  ASSERT_TRUE(RotateHessian(*rotation, &h, &pool).ok());
  auto want_factor = FactorHessian(h, kCols, {}, &pool);
  ASSERT_TRUE(want_factor.ok());

  std::vector<float> w = testing::Gaussian(kRows * kCols, 9, 0.05f);
  rotation->Apply(w.data(), kRows, &pool);
  ScalarQuantizerOptions o;
  o.group_size = 32;
  o.bits = 3;
  auto q = backend.Quantize(w, kRows, kCols, **factor, o);
  auto want = QuantizeLdlq(w, kRows, kCols, h, *want_factor, o, &pool);
  ASSERT_TRUE(q.ok() && want.ok());
  EXPECT_EQ(q->blob, want->blob);
  EXPECT_EQ(q->proxy_loss, want->proxy_loss);

  // Measure: the energy once for every width (as the pipeline always did); the blob of the first
  // width-3 result only.
  const std::vector<int> widths = {2, 3, 4, 3};
  auto m = backend.Measure(w, kRows, kCols, **factor, widths, o, 3);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->size(), widths.size());
  ScalarQuantizerOptions qo = o;
  qo.output_energy = OutputEnergy(w, kRows, kCols, h, &pool);
  for (size_t i = 0; i < widths.size(); ++i) {
    qo.bits = widths[i];
    auto one = QuantizeLdlq(w, kRows, kCols, h, *want_factor, qo, &pool);
    ASSERT_TRUE(one.ok());
    EXPECT_EQ((*m)[i].proxy_loss, one->proxy_loss) << widths[i];
    EXPECT_EQ((*m)[i].layout.total_bytes, one->layout.total_bytes);
    if (i == 1) {
      EXPECT_EQ((*m)[i].blob, one->blob);
    } else {
      EXPECT_TRUE((*m)[i].blob.empty()) << i;
    }
  }
  auto none = backend.Measure(w, kRows, kCols, **factor, widths, o, 8);
  ASSERT_TRUE(none.ok());
  for (const QuantizedWeight& r : *none) EXPECT_TRUE(r.blob.empty());
  EXPECT_FALSE(backend.Measure(w, kRows, kCols + 1, **factor, widths, o, 3).ok());
}

TEST(CpuQuantBackend, PipelineWithTheBackendEqualsTheDefault) {
  const testing::ToyBlockRunner runner(2, 64, 96, 40);
  std::vector<int32_t> calibration(4 * 32);
  for (size_t i = 0; i < calibration.size(); ++i) calibration[i] = static_cast<int32_t>(i * 7 % 40);
  PipelineOptions o;
  o.target_bits_per_weight = 3.5;
  o.tolerance = 0.05;
  o.group_size = 32;
  o.candidate_bits = {2, 4, 5};  // the probe width (3) is not a candidate
  ThreadPool pool(2);
  CpuQuantBackend backend(&pool);
  std::vector<std::vector<uint8_t>> blobs[2];
  std::vector<double> errors[2];
  for (int run = 0; run < 2; ++run) {
    QuantizationPipeline p(runner, o, &pool, run == 0 ? nullptr : &backend);
    auto r = p.Run(
        calibration, 4, 32,
        [&](const v1::TensorEntry& e, absl::Span<const uint8_t> b) {
          blobs[run].emplace_back(b.begin(), b.end());
          errors[run].push_back(e.measured_error());
          return absl::OkStatus();
        },
        {}, nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
  }
  EXPECT_EQ(blobs[0].size(), 6u);
  EXPECT_EQ(blobs[0], blobs[1]);
  EXPECT_EQ(errors[0], errors[1]);
}

}  // namespace
}  // namespace bitloom::quant
