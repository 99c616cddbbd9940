#include "bitloom/quant/quantization_pipeline.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "bitloom/kernels/hadamard.h"
#include "bitloom/kernels/scalar_codec.h"
#include "bitloom/quant/scalar_quantizer.h"
#include "google/protobuf/util/message_differencer.h"
#include "test_util.h"
#include "toy_block_runner.h"

namespace bitloom::quant {
namespace {

// The shared toy decoder (toy_block_runner.h) at hidden 64, inner 96, vocabulary 50, counting its
// block forwards so a test can see which stages ran one.
class ToyRunner : public testing::ToyBlockRunner {
 public:
  static constexpr int64_t kVocab = 50;
  explicit ToyRunner(int layers) : ToyBlockRunner(layers, 64, 96, kVocab) {}
  int blocks_run() const { return blocks_run_; }
  absl::StatusOr<std::vector<float>> RunBlock(int l, const WeightMap& w,
                                              absl::Span<const float> hidden, int64_t sequences,
                                              int64_t seq_len,
                                              const CaptureFn& capture) const override {
    ++blocks_run_;
    return ToyBlockRunner::RunBlock(l, w, hidden, sequences, seq_len, capture);
  }

 private:
  mutable int blocks_run_ = 0;
};

struct Emitted {
  std::vector<v1::TensorEntry> entries;
  std::vector<std::vector<uint8_t>> blobs;
};

std::vector<int32_t> Calibration(int64_t n) {
  std::vector<int32_t> t(n);
  for (int64_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 7 + i / 3) % ToyRunner::kVocab);
  return t;
}

PipelineOptions Options(double target, const std::string& dir = "") {
  PipelineOptions o;
  o.target_bits_per_weight = target;
  // The toy has 3 tensors per block, so few combinations of widths exist: a wider window than the
  // production 0.01 (which the allocator tests check on a real model's 210 tensors).
  o.tolerance = 0.05;
  o.group_size = 32;
  o.extra_group_sizes = {64};  // the allocator may also pick group 64 per tensor
  o.seed = 42;
  o.checkpoint_dir = dir;
  return o;
}

absl::StatusOr<PipelineResult> RunToy(const ToyRunner& runner, const PipelineOptions& o,
                                      Emitted* out, const ProgressFn& progress = {},
                                      const std::atomic<bool>* cancel = nullptr) {
  ThreadPool pool(2);
  QuantizationPipeline p(runner, o, &pool);
  const auto cal = Calibration(4 * 32);
  return p.Run(
      cal, 4, 32,
      [&](const v1::TensorEntry& e, absl::Span<const uint8_t> b) {
        out->entries.push_back(e);
        out->blobs.emplace_back(b.begin(), b.end());
        return absl::OkStatus();
      },
      progress, cancel);
}

std::string TempDir(const char* name) {
  const auto dir = std::filesystem::temp_directory_path() /
                   (std::string("bitloom_quant_") + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  return dir.string();
}

TEST(QuantizationPipeline, HitsTargetAndEmitsEveryTensorInOrder) {
  const ToyRunner runner(3);
  for (double target : {2.5, 3.0, 4.5}) {
    Emitted out;
    std::vector<PipelineProgress> seen;
    auto r = RunToy(runner, Options(target), &out,
                    [&](const PipelineProgress& p) { seen.push_back(p); });
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_LE(std::abs(r->bits_per_weight - target), 0.05) << target;
    ASSERT_EQ(out.entries.size(), 9u);
    uint64_t bits = 0, weights = 0;
    for (size_t i = 0; i < out.entries.size(); ++i) {
      const auto& e = out.entries[i];
      EXPECT_EQ(e.name(), ToyRunner::Name(static_cast<int>(i / 3), i % 3 == 0   ? "a"
                                                                   : i % 3 == 1 ? "b"
                                                                                : "c"));
      EXPECT_EQ(e.codec(), v1::CODEC_HADAMARD_SCALAR);
      // Group 32 (Options) or one of the extra candidate group sizes the allocator may pick.
      EXPECT_TRUE(e.group_size() == 32 || e.group_size() == 64) << e.group_size();
      auto l = kernels::MakeScalarCodecLayout(e.shape(0), e.shape(1),
                                              static_cast<int>(e.bits_per_weight()),
                                              static_cast<int>(e.group_size()));
      ASSERT_TRUE(l.ok());
      EXPECT_EQ(static_cast<int64_t>(out.blobs[i].size()), l->total_bytes);
      EXPECT_GT(e.measured_error(), 0.0);
      EXPECT_EQ(e.params().count("rotation_seed"), 1u);
      bits += 8 * out.blobs[i].size();
      weights += e.shape(0) * e.shape(1);
    }
    EXPECT_DOUBLE_EQ(r->bits_per_weight, double(bits) / double(weights));
    // The two tensors of a site share a rotation; the sites differ.
    EXPECT_EQ(out.entries[0].params().at("rotation_seed"),
              out.entries[1].params().at("rotation_seed"));
    EXPECT_NE(out.entries[0].params().at("rotation_seed"),
              out.entries[2].params().at("rotation_seed"));
    ASSERT_FALSE(seen.empty());
    EXPECT_EQ(seen.back().stage, PipelineProgress::Stage::kDone);
    for (size_t i = 1; i < seen.size(); ++i) EXPECT_GE(seen[i].fraction, seen[i - 1].fraction);
  }
}

TEST(QuantizationPipeline, UniformMethodsUseOneWidthAndRtnRunsNoForward) {
  for (auto method : {PipelineOptions::Method::kUniformLdlq, PipelineOptions::Method::kUniformRtn}) {
    const bool rtn = method == PipelineOptions::Method::kUniformRtn;
    const ToyRunner runner(3);
    PipelineOptions o = Options(0.0);  // the target is ignored by the uniform methods
    o.method = method;
    o.uniform_bits = 3;
    Emitted out;
    auto r = RunToy(runner, o, &out);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(out.entries.size(), 9u);
    uint64_t bits = 0, weights = 0;
    for (size_t i = 0; i < out.entries.size(); ++i) {
      const auto& e = out.entries[i];
      EXPECT_EQ(e.bits_per_weight(), 3.0f) << e.name();
      EXPECT_EQ(e.group_size(), 32u) << e.name();  // uniform: the one group size, no extras
      // LDLQ measures its proxy loss on the quantized path's Hessian; RTN has no Hessian.
      if (rtn) {
        EXPECT_EQ(e.measured_error(), 0.0) << e.name();
      } else {
        EXPECT_GT(e.measured_error(), 0.0) << e.name();
      }
      bits += 8 * out.blobs[i].size();
      weights += e.shape(0) * e.shape(1);
    }
    EXPECT_DOUBLE_EQ(r->bits_per_weight, double(bits) / double(weights));
    // Uniform LDLQ: one forward per block for the Hessians and one for the next block's input.
    EXPECT_EQ(runner.blocks_run(), rtn ? 0 : 6);
    if (rtn) {
      // Exactly QuantizeRtn of the rotated weight, with the site's seeded rotation.
      int64_t rows = 0, cols = 0;
      auto w = runner.ReadWeight(ToyRunner::Name(0, "a"), &rows, &cols);
      ASSERT_TRUE(w.ok());
      auto rot = kernels::HadamardRotation::Create(cols, QuantizationPipeline::SiteSeed(42, 0, 0));
      ASSERT_TRUE(rot.ok());
      rot->Apply(w->data(), rows, nullptr);
      ScalarQuantizerOptions qo;
      qo.bits = 3;
      qo.group_size = 32;
      auto q = QuantizeRtn(*w, rows, cols, {}, qo, nullptr);
      ASSERT_TRUE(q.ok());
      EXPECT_EQ(out.blobs[0], q->blob);
    }
  }
  PipelineOptions bad = Options(3.0);
  bad.method = PipelineOptions::Method::kUniformLdlq;
  bad.uniform_bits = 9;
  Emitted out;
  EXPECT_EQ(RunToy(ToyRunner(1), bad, &out).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(QuantizationPipeline, MoreBitsLessError) {
  const ToyRunner runner(3);
  Emitted lo, hi;
  auto a = RunToy(runner, Options(2.5), &lo);
  auto b = RunToy(runner, Options(4.5), &hi);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  double e_lo = 0, e_hi = 0;
  for (const auto& e : lo.entries) e_lo += e.measured_error();
  for (const auto& e : hi.entries) e_hi += e.measured_error();
  EXPECT_LT(e_hi, e_lo);
}

TEST(QuantizationPipeline, DeterministicAndResumesBitIdentically) {
  const ToyRunner runner(4);
  Emitted reference, again;
  ASSERT_TRUE(RunToy(runner, Options(3.0), &reference).ok());
  ASSERT_TRUE(RunToy(runner, Options(3.0), &again).ok());
  EXPECT_EQ(reference.blobs, again.blobs);

  // Cancel once in each stage, resume each time from the checkpoints.
  for (auto stop_stage : {PipelineProgress::Stage::kMeasure, PipelineProgress::Stage::kQuantize}) {
    const std::string dir = TempDir(stop_stage == PipelineProgress::Stage::kMeasure ? "m" : "q");
    std::atomic<bool> cancel{false};
    Emitted partial;
    auto first = RunToy(
        runner, Options(3.0, dir), &partial,
        [&](const PipelineProgress& p) {
          if (p.stage == stop_stage && p.layer == 2) cancel = true;
        },
        &cancel);
    ASSERT_EQ(first.status().code(), absl::StatusCode::kCancelled) << first.status();
    Emitted resumed;
    auto second = RunToy(runner, Options(3.0, dir), &resumed);
    ASSERT_TRUE(second.ok()) << second.status();
    if (stop_stage == PipelineProgress::Stage::kMeasure) {
      EXPECT_EQ(second->resumed_measure_blocks, 2);
    } else {
      EXPECT_EQ(second->resumed_measure_blocks, 4);
      EXPECT_EQ(second->resumed_quantize_blocks, 2);
    }
    ASSERT_EQ(resumed.entries.size(), reference.entries.size());
    EXPECT_EQ(resumed.blobs, reference.blobs);
    for (size_t i = 0; i < resumed.entries.size(); ++i) {
      // Field-wise: proto map fields serialize in no fixed order.
      EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(resumed.entries[i],
                                                                     reference.entries[i]))
          << resumed.entries[i].DebugString() << " vs " << reference.entries[i].DebugString();
    }
    // A different job must not pick these checkpoints up.
    Emitted other;
    auto mixed = RunToy(runner, Options(3.5, dir), &other);
    EXPECT_EQ(mixed.status().code(), absl::StatusCode::kFailedPrecondition) << mixed.status();
    std::filesystem::remove_all(dir);
  }
}

TEST(QuantizationPipeline, DamagedCheckpointIsRecomputed) {
  const ToyRunner runner(3);
  const std::string dir = TempDir("damaged");
  Emitted first, second;
  auto initial = RunToy(runner, Options(3.0, dir), &first);
  ASSERT_TRUE(initial.ok()) << initial.status();
  {
    std::FILE* f = std::fopen((dir + "/quantize_1.ckpt").c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fseek(f, 40, SEEK_SET);
    std::fputc(0x5a, f);
    std::fclose(f);
  }
  auto r = RunToy(runner, Options(3.0, dir), &second);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->resumed_quantize_blocks, 1);  // block 0 restored; 1 damaged, so 1 and 2 recomputed
  EXPECT_EQ(second.blobs, first.blobs);
  std::filesystem::remove_all(dir);
}

TEST(QuantizationPipeline, RejectsBadSettings) {
  const ToyRunner runner(1);
  Emitted out;
  auto o = Options(3.0);
  o.candidate_bits = {2, 9};
  EXPECT_EQ(RunToy(runner, o, &out).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RunToy(runner, Options(0.5), &out).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bitloom::quant
