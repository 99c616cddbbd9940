#include "synth_command.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <memory>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/engine/synthetic_model_artifact.h"
#include "bitloom/modelstore/model_store.h"
#include "nlohmann/json.hpp"
#include "synth_hf_source.h"

ABSL_FLAG(std::string, shape, "", "synth: llama3-8b, llama3-70b, smollm2-135m or tiny");
ABSL_FLAG(std::string, format, "artifact",
          "synth: artifact (a quantized artifact in the store) or hf_fp16 (an unquantized Hugging "
          "Face directory NAME of F16 safetensors, a source for quantd)");
ABSL_DECLARE_FLAG(double, bits);
ABSL_DECLARE_FLAG(double, head_bits);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(bool, overwrite);
ABSL_DECLARE_FLAG(std::string, store_path);
ABSL_DECLARE_FLAG(int, threads);

namespace bitloom::tools {
namespace {

constexpr int kDefaultHeadBits = 6;

int Fail(const absl::Status& status) {
  std::cerr << "\nbitloom: " << status << "\n";
  return 1;
}


// `--format=hf_fp16`: the unquantized source directory (synth_hf_source.h).
int RunSynthHfSource(const std::string& dir, const std::string& shape) {
  absl::StatusOr<v1::ModelConfig> config = engine::SyntheticModelConfig(shape);
  if (!config.ok()) return Fail(config.status());
  const int threads = absl::GetFlag(FLAGS_threads);
  ThreadPool pool(threads > 0 ? static_cast<size_t>(threads) : 0);
  const absl::Time start = absl::Now();
  absl::Time last_line = absl::InfinitePast();
  auto progress = [&](uint64_t bytes, uint64_t total) {
    const absl::Time now = absl::Now();
    if (bytes != total && now - last_line < absl::Milliseconds(250)) return;
    last_line = now;
    std::cerr << absl::StrFormat("\rwriting %.2f of %.2f GB  %.1f s", static_cast<double>(bytes) / 1e9,
                                 static_cast<double>(total) / 1e9,
                                 absl::ToDoubleSeconds(now - start))
              << std::flush;
  };
  absl::StatusOr<SyntheticHfSummary> written =
      WriteSyntheticHfSource(*config, dir, absl::GetFlag(FLAGS_seed), &pool, progress);
  if (!written.ok()) return Fail(written.status());
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::cerr << "\n";
  nlohmann::json out;
  out["directory"] = dir;
  out["shape"] = shape;
  out["format"] = "hf_fp16";
  out["tensors"] = written->tensors;
  out["file_bytes"] = written->safetensors_bytes;
  out["seconds"] = seconds;
  out["threads"] = pool.num_threads();
  std::cout << out.dump() << "\n";
  return 0;
}

}  // namespace

int RunSynth(const std::string& artifact_name) {
  const std::string shape = absl::GetFlag(FLAGS_shape);
  const std::string format = absl::GetFlag(FLAGS_format);
  if (format == "hf_fp16") {
    if (shape.empty()) {
      std::cerr << "bitloom: synth: --shape (" << engine::kSyntheticShapeNames << ") is required\n";
      return 2;
    }
    return RunSynthHfSource(artifact_name, shape);
  }
  if (format != "artifact") {
    std::cerr << "bitloom: synth: --format must be artifact or hf_fp16\n";
    return 2;
  }
  const double bits = absl::GetFlag(FLAGS_bits);
  if (shape.empty() || bits <= 0) {
    std::cerr << "bitloom: synth: --shape (" << engine::kSyntheticShapeNames
              << ") and --bits are required\n";
    return 2;
  }
  const double head_bits = absl::GetFlag(FLAGS_head_bits);
  if (head_bits != 0 && head_bits != 16 && head_bits != std::floor(head_bits)) {
    std::cerr << "bitloom: synth: --head_bits must be a whole K (1..8) or 16\n";
    return 2;
  }
  absl::StatusOr<v1::ModelConfig> config = engine::SyntheticModelConfig(shape);
  if (!config.ok()) return Fail(config.status());

  engine::SyntheticArtifactOptions options;
  options.bits_per_weight = bits;
  options.head_bits = head_bits == 0 ? kDefaultHeadBits : static_cast<int>(head_bits);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.source_location = "synthetic:" + shape;
  // Plan first: a bad target fails before any file is created.
  absl::StatusOr<engine::SyntheticArtifactPlan> plan =
      engine::PlanSyntheticArtifact(*config, options);
  if (!plan.ok()) return Fail(plan.status());

  absl::StatusOr<std::unique_ptr<modelstore::ModelStore>> store =
      modelstore::ModelStore::Open(absl::GetFlag(FLAGS_store_path));
  if (!store.ok()) return Fail(store.status());
  absl::StatusOr<std::unique_ptr<modelstore::ArtifactWriter>> writer =
      (*store)->NewWriter(artifact_name, absl::GetFlag(FLAGS_overwrite));
  if (!writer.ok()) return Fail(writer.status());

  const int threads = absl::GetFlag(FLAGS_threads);
  ThreadPool pool(threads > 0 ? static_cast<size_t>(threads) : 0);
  const uint64_t total = plan->total_bytes;
  const absl::Time start = absl::Now();
  absl::Time last_line = absl::InfinitePast();
  options.on_progress = [&](int done, int count, uint64_t bytes) {
    const absl::Time now = absl::Now();
    if (done != count && now - last_line < absl::Milliseconds(250)) return;
    last_line = now;
    const double seconds = absl::ToDoubleSeconds(now - start);
    std::cerr << absl::StrFormat("\rwriting tensor %d/%d  %.2f of %.2f GB  %.1f s", done, count,
                                 static_cast<double>(bytes) / 1e9, static_cast<double>(total) / 1e9,
                                 seconds)
              << std::flush;
  };
  absl::StatusOr<engine::SyntheticArtifactPlan> written =
      engine::WriteSyntheticArtifact(*config, options, **writer, &pool);
  if (!written.ok()) return Fail(written.status());
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::cerr << "\n";

  std::error_code ec;
  const uint64_t file_bytes = std::filesystem::file_size((*writer)->final_path(), ec);
  nlohmann::json out;
  out["artifact"] = artifact_name;
  out["path"] = (*writer)->final_path();
  out["shape"] = shape;
  out["bits_per_weight"] = written->bits_per_weight;
  out["head_bits_per_weight"] = written->head_bits_per_weight;
  out["tensors"] = written->tensors.size();
  out["decoder_linear_bytes"] = written->decoder_linear_bytes;
  out["file_bytes"] = file_bytes;
  out["seconds"] = seconds;
  out["gb_per_second"] = seconds > 0 ? static_cast<double>(file_bytes) / 1e9 / seconds : 0.0;
  out["threads"] = pool.num_threads();
  std::cout << out.dump() << "\n";
  return 0;
}

}  // namespace bitloom::tools
