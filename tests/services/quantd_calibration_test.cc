// quantd's calibration rows without a daemon: self-generated rows sampled from tiny synthetic models
// (determinism across seeds and thread counts, the model's own distribution, shape, cancellation,
// progress), random-row mixing, the default shapes, and the request validation of the calibration
// fields.
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <set>
#include <vector>

#include "bitloom/core/thread_pool.h"
#include "bitloom/engine/decoder_model.h"
#include "bitloom/formats/tensor_names.h"
#include "calibration.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "job_validation.h"
#include "self_generated_calibration.h"
#include "synthetic_model.h"

namespace bitloom::quantd {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<engine::DecoderModel> LoadModel(const v1::ModelConfig& config,
                                                const engine::InMemoryWeightSource& weights) {
  auto model = engine::DecoderModel::Load(config, weights, /*pool=*/nullptr);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

std::unique_ptr<engine::DecoderModel> SyntheticLlama(int bos = -1) {
  v1::ModelConfig config = engine::testing::SyntheticConfig("llama");
  if (bos >= 0) config.add_bos_token_ids(static_cast<uint32_t>(bos));
  return LoadModel(config, engine::testing::SyntheticWeights(config, 11));
}

SelfGeneratedRowsOptions Rows(int64_t rows, int64_t tokens_per_row, uint64_t seed) {
  SelfGeneratedRowsOptions options;
  options.rows = rows;
  options.tokens_per_row = tokens_per_row;
  options.seed = seed;
  return options;
}

TEST(SelfGeneratedCalibration, SameSeedSameRowsOnAnyPoolAndOtherSeedsOtherRows) {
  auto model = SyntheticLlama(/*bos=*/5);
  ASSERT_NE(model, nullptr);
  auto serial = SampleCalibrationRows(*model, Rows(6, 24, 7));
  ASSERT_TRUE(serial.ok()) << serial.status();
  ThreadPool pool(3);
  SelfGeneratedRowsOptions parallel_options = Rows(6, 24, 7);
  parallel_options.pool = &pool;
  auto parallel = SampleCalibrationRows(*model, parallel_options);
  ASSERT_TRUE(parallel.ok()) << parallel.status();
  EXPECT_EQ(*serial, *parallel);
  auto again = SampleCalibrationRows(*model, Rows(6, 24, 7));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*serial, *again);

  auto other = SampleCalibrationRows(*model, Rows(6, 24, 8));
  ASSERT_TRUE(other.ok());
  EXPECT_NE(*serial, *other);
  // Rows of one job differ from each other too (each has its own sampler seed).
  EXPECT_FALSE(std::equal(serial->begin() + 1, serial->begin() + 24, serial->begin() + 25));
  EXPECT_NE(SelfGeneratedRowSeed(7, 0), SelfGeneratedRowSeed(7, 1));
  EXPECT_NE(SelfGeneratedRowSeed(7, 0), SelfGeneratedRowSeed(8, 0));
}

TEST(SelfGeneratedCalibration, RowsHaveTheShapeAndStartWithBos) {
  auto model = SyntheticLlama(/*bos=*/5);
  ASSERT_NE(model, nullptr);
  auto rows = SampleCalibrationRows(*model, Rows(5, 17, 3));
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 5u * 17u);
  for (int r = 0; r < 5; ++r) EXPECT_EQ((*rows)[r * 17], 5) << "row " << r;
  for (int32_t id : *rows) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, model->vocab_size());
  }
  // A row of one token is its BOS alone.
  auto single = SampleCalibrationRows(*model, Rows(2, 1, 3));
  ASSERT_TRUE(single.ok());
  EXPECT_THAT(*single, ::testing::ElementsAre(5, 5));
}

TEST(SelfGeneratedCalibration, WithoutBosEachRowStartsFromASeedChosenToken) {
  auto model = SyntheticLlama();
  ASSERT_NE(model, nullptr);
  auto rows = SampleCalibrationRows(*model, Rows(8, 4, 21));
  ASSERT_TRUE(rows.ok()) << rows.status();
  std::set<int32_t> firsts;
  for (int r = 0; r < 8; ++r) firsts.insert((*rows)[r * 4]);
  EXPECT_GT(firsts.size(), 1u);
  auto again = SampleCalibrationRows(*model, Rows(8, 4, 21));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*rows, *again);
}

// A model whose every position predicts token 7 with probability 3/4 and token 9 with 1/4: the
// blocks add nothing to the residual stream (o_proj and down_proj are zero), every embedding is the
// all-ones vector, so the final hidden state is all ones and the logits are the head rows' sums.
TEST(SelfGeneratedCalibration, RowsAreSamplesOfTheModelAtTemperatureOne) {
  v1::ModelConfig config = engine::testing::SyntheticConfig("llama");
  config.add_bos_token_ids(0);
  engine::InMemoryWeightSource weights = engine::testing::SyntheticWeights(config, 5);
  const auto hidden = static_cast<size_t>(config.hidden_size());
  const auto vocab = static_cast<size_t>(config.vocab_size());
  for (int l = 0; l < static_cast<int>(config.num_layers()); ++l) {
    for (const char* name : {"attn.o_proj.weight", "mlp.down_proj.weight"}) {
      engine::WeightTensor* t = weights.Find(formats::LayerTensor(l, name));
      ASSERT_NE(t, nullptr) << name;
      std::fill(t->data.begin(), t->data.end(), 0.0f);
    }
  }
  std::fill(weights.Find(formats::kEmbedTokens)->data.begin(),
            weights.Find(formats::kEmbedTokens)->data.end(), 1.0f);
  std::fill(weights.Find(formats::kFinalNorm)->data.begin(),
            weights.Find(formats::kFinalNorm)->data.end(), 1.0f);
  engine::WeightTensor* head = weights.Find(formats::kLmHead);
  ASSERT_NE(head, nullptr);
  ASSERT_EQ(head->data.size(), vocab * hidden);
  for (size_t v = 0; v < vocab; ++v) {
    const double logit = v == 7 ? std::log(3.0) : v == 9 ? 0.0 : -30.0;
    std::fill_n(head->data.begin() + v * hidden, hidden, static_cast<float>(logit / hidden));
  }
  auto model = LoadModel(config, weights);
  ASSERT_NE(model, nullptr);
  ThreadPool pool(2);
  SelfGeneratedRowsOptions options = Rows(16, 64, 99);
  options.pool = &pool;
  auto rows = SampleCalibrationRows(*model, options);
  ASSERT_TRUE(rows.ok()) << rows.status();
  int sevens = 0, nines = 0;
  for (int r = 0; r < 16; ++r) {
    EXPECT_EQ((*rows)[r * 64], 0);
    for (int j = 1; j < 64; ++j) {
      const int32_t id = (*rows)[r * 64 + j];
      sevens += id == 7;
      nines += id == 9;
    }
  }
  EXPECT_EQ(sevens + nines, 16 * 63);  // everything else has probability ~e^-30
  // 1008 draws of p = 3/4: the share is 0.75 ± 0.014 (one sigma). Greedy decoding would give 1.
  EXPECT_NEAR(static_cast<double>(sevens) / (16 * 63), 0.75, 0.06);
}

TEST(SelfGeneratedCalibration, ReportsProgressAndStopsWhenAsked) {
  auto model = SyntheticLlama(/*bos=*/1);
  ASSERT_NE(model, nullptr);
  ThreadPool pool(2);
  SelfGeneratedRowsOptions options = Rows(4, 150, 5);
  options.pool = &pool;
  std::vector<int64_t> reports;
  options.on_tokens = [&](int64_t done) { reports.push_back(done); };
  ASSERT_TRUE(SampleCalibrationRows(*model, options).ok());
  ASSERT_FALSE(reports.empty());
  EXPECT_TRUE(std::is_sorted(reports.begin(), reports.end()));
  EXPECT_EQ(reports.back(), 4 * 150);
  EXPECT_GT(reports.size(), 4u);  // more often than once a row

  std::atomic<bool> stop{true};
  options.on_tokens = nullptr;
  options.stop = &stop;
  EXPECT_EQ(SampleCalibrationRows(*model, options).status().code(), absl::StatusCode::kCancelled);
  // Mid-way: the first progress report raises the flag.
  stop = false;
  options.on_tokens = [&](int64_t) { stop = true; };
  EXPECT_EQ(SampleCalibrationRows(*model, options).status().code(), absl::StatusCode::kCancelled);
}

TEST(SelfGeneratedCalibration, RefusesARowLongerThanTheContext) {
  auto model = SyntheticLlama(/*bos=*/1);  // context 256
  ASSERT_NE(model, nullptr);
  auto rows = SampleCalibrationRows(*model, Rows(1, 257, 5));
  EXPECT_EQ(rows.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rows.status().message(), HasSubstr("calibration.tokens_per_row"));
  EXPECT_THAT(rows.status().message(), HasSubstr("256"));
}

TEST(RandomRows, CountIsTheRoundedShare) {
  EXPECT_EQ(RandomRowCount(10, 0.0), 0);
  EXPECT_EQ(RandomRowCount(10, 0.25), 3);  // 2.5 rounds away from zero
  EXPECT_EQ(RandomRowCount(10, 0.24), 2);
  EXPECT_EQ(RandomRowCount(10, 1.0), 10);
  EXPECT_EQ(RandomRowCount(3, 0.1), 0);
  EXPECT_EQ(RandomRowCount(128, 0.1), 13);
}

TEST(RandomRows, PositionsAreSeedChosen) {
  const std::vector<bool> a = RandomRowPositions(64, 0.5, 7);
  EXPECT_EQ(std::count(a.begin(), a.end(), true), 32);
  EXPECT_EQ(a, RandomRowPositions(64, 0.5, 7));
  EXPECT_NE(a, RandomRowPositions(64, 0.5, 8));
  // Not simply the first or last rows.
  EXPECT_NE(std::count(a.begin(), a.begin() + 32, true), 32);
  EXPECT_NE(std::count(a.begin(), a.begin() + 32, true), 0);
  const std::vector<bool> all = RandomRowPositions(5, 1.0, 7);
  EXPECT_EQ(std::count(all.begin(), all.end(), true), 5);
}

TEST(RandomRows, MixKeepsTheSourceRowsInOrderAndFillsTheRestUniformly) {
  const CalibrationShape shape{20, 32};
  const double fraction = 0.3;
  const int64_t random_rows = RandomRowCount(shape.rows, fraction);
  ASSERT_EQ(random_rows, 6);
  // Source row k holds 1000 + k everywhere: ids no random row can have (vocab 50).
  std::vector<int32_t> source;
  for (int64_t k = 0; k < shape.rows - random_rows; ++k) {
    source.insert(source.end(), static_cast<size_t>(shape.tokens_per_row),
                  static_cast<int32_t>(1000 + k));
  }
  const std::vector<int32_t> mixed = MixRandomRows(source, shape, fraction, 50, 42);
  ASSERT_EQ(mixed.size(), static_cast<size_t>(shape.tokens()));
  const std::vector<bool> positions = RandomRowPositions(shape.rows, fraction, 42);
  int64_t next_source = 0;
  std::set<int32_t> random_ids;
  for (int64_t r = 0; r < shape.rows; ++r) {
    for (int64_t j = 0; j < shape.tokens_per_row; ++j) {
      const int32_t id = mixed[r * shape.tokens_per_row + j];
      if (positions[r]) {
        EXPECT_GE(id, 0);
        EXPECT_LT(id, 50);
        random_ids.insert(id);
      } else {
        EXPECT_EQ(id, 1000 + next_source) << "row " << r;
      }
    }
    next_source += positions[r] ? 0 : 1;
  }
  EXPECT_EQ(next_source, shape.rows - random_rows);
  EXPECT_GT(random_ids.size(), 40u);  // 192 uniform draws over 50 ids
  EXPECT_EQ(mixed, MixRandomRows(source, shape, fraction, 50, 42));
}

v1::ModelConfig ConfigWithContext(uint32_t context) {
  v1::ModelConfig config;
  config.set_max_position_embeddings(context);
  return config;
}

TEST(CalibrationShape, DefaultsScaleToTheContextAndExplicitValuesWin) {
  v1::CalibrationOptions options;
  auto shape = ResolveCalibrationShape(options, ConfigWithContext(8192));
  EXPECT_EQ(shape.rows, 128);
  EXPECT_EQ(shape.tokens_per_row, 2048);
  shape = ResolveCalibrationShape(options, ConfigWithContext(512));
  EXPECT_EQ(shape.tokens_per_row, 512);
  EXPECT_EQ(shape.rows, 512);  // the same 262144 tokens
  shape = ResolveCalibrationShape(options, ConfigWithContext(0));  // unknown: no cap
  EXPECT_EQ(shape.tokens_per_row, 2048);
  shape = ResolveCalibrationShape(options, ConfigWithContext(16));
  EXPECT_EQ(shape.rows, kMaxCalibrationRows);

  options.set_self_generated(true);
  shape = ResolveCalibrationShape(options, ConfigWithContext(8192));
  EXPECT_EQ(shape.rows, 64);
  EXPECT_EQ(shape.tokens_per_row, 512);
  shape = ResolveCalibrationShape(options, ConfigWithContext(128));
  EXPECT_EQ(shape.rows, 256);
  EXPECT_EQ(shape.tokens_per_row, 128);

  options.set_rows(10);
  options.set_tokens_per_row(4096);
  shape = ResolveCalibrationShape(options, ConfigWithContext(8192));
  EXPECT_EQ(shape.rows, 10);
  EXPECT_EQ(shape.tokens_per_row, 4096);
  shape = ResolveCalibrationShape(options, ConfigWithContext(1024));
  EXPECT_EQ(shape.tokens_per_row, 1024);
  options.set_rows(0);
  options.set_tokens_per_row(100);
  EXPECT_EQ(ResolveCalibrationShape(options, ConfigWithContext(8192)).rows, 328);  // ⌈32768/100⌉
}

v1::CreateJobRequest ValidRequest() {
  v1::CreateJobRequest r;
  r.mutable_hugging_face()->set_directory("/models/x");
  r.set_artifact_name("x");
  r.set_target_bits_per_weight(2.5);
  return r;
}

TEST(CalibrationValidation, RandomRowsFractionIsAShare) {
  for (double ok : {0.0, 0.25, 1.0}) {
    v1::CreateJobRequest r = ValidRequest();
    r.mutable_calibration()->set_random_rows_fraction(ok);
    EXPECT_TRUE(ValidateCreateJobRequest(r).ok()) << ok;
  }
  for (double bad : {-0.1, 1.5, std::numeric_limits<double>::quiet_NaN(),
                     std::numeric_limits<double>::infinity()}) {
    v1::CreateJobRequest r = ValidRequest();
    r.mutable_calibration()->set_random_rows_fraction(bad);
    const absl::Status s = ValidateCreateJobRequest(r);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("calibration.random_rows_fraction"));
    EXPECT_THAT(s.message(), HasSubstr("[0, 1]"));
  }
}

TEST(CalibrationValidation, SelfGeneratedIsAcceptedAloneButNotWithACorpus) {
  v1::CreateJobRequest r = ValidRequest();
  r.mutable_calibration()->set_self_generated(true);
  EXPECT_TRUE(ValidateCreateJobRequest(r).ok());
  EXPECT_TRUE(ValidateCalibrationSupported(r.calibration()).ok());
  r.mutable_calibration()->set_random_rows_fraction(0.5);
  EXPECT_TRUE(ValidateCreateJobRequest(r).ok());

  r.mutable_calibration()->add_corpus_files("/corpus.txt");
  const absl::Status s = ValidateCreateJobRequest(r);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("calibration.self_generated"));
  EXPECT_THAT(s.message(), HasSubstr("calibration.corpus_files"));
}

}  // namespace
}  // namespace bitloom::quantd
