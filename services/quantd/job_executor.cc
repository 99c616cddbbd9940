#include "job_executor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "bitloom/core/logging.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/formats/tensor_names.h"
#include "bitloom/kernels/hadamard.h"
#include "bitloom/kernels/scalar_codec.h"
#include "bitloom/modelstore/reference_tensor.h"
#include "bitloom/quant/quantization_pipeline.h"
#include "bitloom/quant/scalar_quantizer.h"
#include "bitloom/service/version.h"

namespace bitloom::quantd {
namespace {

constexpr double kDefaultHeadBits = 6.0;
// The share of the progress bar before (loading, calibration) and after (writing) the pipeline.
constexpr double kPipelineStart = 0.02;
// With self-generated calibration the model samples every row first: a real share of the job.
constexpr double kSelfGeneratedPipelineStart = 0.25;
constexpr double kPipelineEnd = 0.98;

uint64_t ElementCount(const std::vector<uint64_t>& shape) {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

v1::JobStage ToJobStage(quant::PipelineProgress::Stage stage) {
  switch (stage) {
    case quant::PipelineProgress::Stage::kMeasure:
      return v1::JOB_STAGE_MEASURING;
    case quant::PipelineProgress::Stage::kAllocate:
      return v1::JOB_STAGE_ALLOCATING;
    case quant::PipelineProgress::Stage::kQuantize:
      return v1::JOB_STAGE_QUANTIZING;
    case quant::PipelineProgress::Stage::kDone:
      return v1::JOB_STAGE_WRITING;
  }
  return v1::JOB_STAGE_UNSPECIFIED;
}

// Elapsed time and a linear estimate of what remains, from this run's own rate: a resumed run
// starts at a fraction > 0, and the time before the restart says nothing about this machine now.
class ProgressClock {
 public:
  explicit ProgressClock(double earlier_seconds)
      : earlier_(earlier_seconds), start_(std::chrono::steady_clock::now()) {}

  void Stamp(v1::JobProgress* progress) {
    const double run =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (first_fraction_ < 0) first_fraction_ = progress->fraction_done();
    progress->set_elapsed_seconds(earlier_ + run);
    const double done = progress->fraction_done() - first_fraction_;
    progress->set_remaining_seconds(done > 0.005 ? run / done * (1.0 - progress->fraction_done())
                                                 : -1.0);
  }

 private:
  const double earlier_;
  const std::chrono::steady_clock::time_point start_;
  double first_fraction_ = -1.0;
};

// An untied output head at `bits` < 16: the scalar codec with an input-side rotation (seeded apart
// from every decoder site) and round-to-nearest, since no Hessian of the final hidden states is
// collected. Returns the entry and blob.
absl::Status QuantizeHead(const std::string& name, std::vector<float> w, int64_t rows, int64_t cols,
                          int bits, uint64_t seed, ThreadPool* pool, v1::TensorEntry* entry,
                          std::vector<uint8_t>* blob) {
  BITLOOM_ASSIGN_OR_RETURN(kernels::HadamardRotation rotation,
                           kernels::HadamardRotation::Create(cols, seed));
  rotation.Apply(w.data(), rows, pool);
  quant::ScalarQuantizerOptions options;
  options.bits = bits;
  BITLOOM_ASSIGN_OR_RETURN(quant::QuantizedWeight q,
                           quant::QuantizeRtn(w, rows, cols, {}, options, pool));
  entry->set_name(name);
  entry->set_codec(v1::CODEC_HADAMARD_SCALAR);
  entry->add_shape(static_cast<uint64_t>(rows));
  entry->add_shape(static_cast<uint64_t>(cols));
  entry->set_bits_per_weight(static_cast<float>(bits));
  entry->set_group_size(static_cast<uint32_t>(options.group_size));
  (*entry->mutable_params())[kernels::kScalarParamRotation] = rotation.Describe();
  (*entry->mutable_params())[kernels::kScalarParamRotationSeed] = absl::StrCat(rotation.seed());
  *blob = std::move(q.blob);
  return absl::OkStatus();
}

quant::PipelineOptions::Method PipelineMethod(v1::QuantizationMethod method) {
  switch (method) {
    case v1::QUANTIZATION_METHOD_UNIFORM_LDLQ:
      return quant::PipelineOptions::Method::kUniformLdlq;
    case v1::QUANTIZATION_METHOD_UNIFORM_RTN:
      return quant::PipelineOptions::Method::kUniformRtn;
    default:  // validated before queueing: UNSPECIFIED or VARIABLE_LDLQ
      return quant::PipelineOptions::Method::kVariableLdlq;
  }
}

// The head's code width: the requested bits rounded to the codec's integer K, or 16 (fp16) when
// the request asks for more than the codec's 8.
int HeadCodeBits(double head_bits) {
  if (head_bits > 8.0) return 16;
  return std::clamp(static_cast<int>(std::lround(head_bits)), 1, 8);
}

}  // namespace

const std::string& SourcePath(const v1::CreateJobRequest& request) {
  return request.has_gguf() ? request.gguf().path() : request.hugging_face().directory();
}

double HeadBits(const v1::CreateJobRequest& request) {
  return request.head_bits_per_weight() != 0 ? request.head_bits_per_weight() : kDefaultHeadBits;
}

uint64_t EstimateJobDiskBytes(const formats::Checkpoint& checkpoint,
                              const v1::CreateJobRequest& request, const CalibrationShape& /*shape*/) {
  double artifact = 0, quantized = 0;
  for (const formats::CheckpointTensor& t : checkpoint.tensors()) {
    const double n = static_cast<double>(ElementCount(t.shape));
    if (t.shape.size() == 1) {
      artifact += 4 * n;
    } else if (t.name == formats::kEmbedTokens) {
      artifact += 2 * n;
    } else if (t.name == formats::kLmHead) {
      artifact += n * HeadCodeBits(HeadBits(request)) / 8.0 + 4096;
    } else {
      // +0.5 bit of slack for a partial last group and row padding; +4096 for blob alignment.
      const double bytes = n * (request.target_bits_per_weight() + 0.5) / 8.0 + 4096;
      artifact += bytes;
      quantized += bytes;
    }
  }
  // The checkpoints hold candidates and blobs, no hidden states (the pipeline replays forwards).
  return static_cast<uint64_t>(artifact + quantized) + (1u << 20);
}

absl::StatusOr<JobOutcome> ExecuteJob(const v1::Job& job, const JobEnvironment& env,
                                      const std::atomic<bool>* stop, const JobHooks& hooks) {
  const v1::CreateJobRequest& request = job.request();
  ProgressClock clock(job.progress().elapsed_seconds());
  v1::JobProgress progress;
  auto report = [&](v1::JobStage stage, double fraction) {
    progress.set_stage(stage);
    progress.set_fraction_done(fraction);
    clock.Stamp(&progress);
    if (hooks.on_progress) hooks.on_progress(progress);
  };
  auto stopped = [&] { return stop != nullptr && stop->load(); };
  // Wall-clock seconds of each part of the run, logged when it publishes (the conversion-time
  // shares of docs/QUANTIZATION.md "GPU path").
  using Clock = std::chrono::steady_clock;
  const Clock::time_point run_start = Clock::now();
  Clock::time_point mark = run_start;
  auto lap = [&mark]() {
    const Clock::time_point now = Clock::now();
    const double s = std::chrono::duration<double>(now - mark).count();
    mark = now;
    return s;
  };

  report(v1::JOB_STAGE_LOADING, 0.0);
  BITLOOM_ASSIGN_OR_RETURN(std::unique_ptr<formats::Checkpoint> checkpoint,
                           formats::OpenCheckpoint(SourcePath(request)));
  // The source digest (SHA-256 of every weight file: 90 s for a 16 GB Llama-3-8B source on the GPU
  // machine, one core) is computed beside calibration and the model load, which read the same
  // files; the digest is joined before the pipeline starts, so a stop waits for it as before.
  absl::StatusOr<std::string> digest_or = absl::UnknownError("digest not computed");
  std::thread hasher([&digest_or, &checkpoint] { digest_or = checkpoint->ComputeDigest(); });
  struct Joiner {
    std::thread& t;
    ~Joiner() {
      if (t.joinable()) t.join();
    }
  } join_hasher{hasher};
  const double open_s = lap();

  report(v1::JOB_STAGE_CALIBRATING, 0.01);
  const double pipeline_start =
      request.calibration().self_generated() ? kSelfGeneratedPipelineStart : kPipelineStart;
  const CalibrationShape shape =
      ResolveCalibrationShape(request.calibration(), checkpoint->config());
  BITLOOM_ASSIGN_OR_RETURN(std::vector<int32_t> tokens,
                           BuildCalibrationTokens(request, *checkpoint, shape,
                                                  {env.pool, stop, [&](double f) {
                                                     report(v1::JOB_STAGE_CALIBRATING,
                                                            0.01 + (pipeline_start - 0.01) * f);
                                                   }}));
  const double calibrate_s = lap();
  BITLOOM_ASSIGN_OR_RETURN(std::unique_ptr<quant::BlockRunner> runner,
                           env.runners->create(*checkpoint, env.pool));
  const double runner_s = lap();
  hasher.join();
  const double digest_wait_s = lap();
  BITLOOM_RETURN_IF_ERROR(digest_or.status());
  const std::string digest = *std::move(digest_or);
  if (stopped()) return absl::CancelledError("stopped while loading");
  progress.set_num_layers(static_cast<uint32_t>(runner->num_layers()));
  BITLOOM_ASSIGN_OR_RETURN(std::unique_ptr<quant::QuantBackend> backend,
                           CreateQuantBackend(env.device, env.pool));
  BITLOOM_LOG(INFO) << "job " << job.id() << " quantizing on " << backend->Describe();
  if (stopped()) return absl::CancelledError("stopped while calibrating");

  // A temp file of an earlier, killed run of this job is garbage now: the new writer starts over.
  BITLOOM_RETURN_IF_ERROR(env.jobs->RemoveTempArtifact(job.id()));
  BITLOOM_ASSIGN_OR_RETURN(std::unique_ptr<modelstore::ArtifactWriter> writer,
                           env.store->NewWriter(request.artifact_name(), request.overwrite()));
  BITLOOM_RETURN_IF_ERROR(env.jobs->RecordTempArtifact(job.id(), writer->temp_path()));

  quant::PipelineOptions options;
  options.method = PipelineMethod(request.method());
  options.uniform_bits = static_cast<int>(std::lround(request.target_bits_per_weight()));
  options.target_bits_per_weight = request.target_bits_per_weight();
  options.seed = request.seed();
  options.checkpoint_dir = env.jobs->CheckpointDir(job.id());
  quant::QuantizationPipeline pipeline(*runner, options, env.pool, backend.get());

  std::set<std::string> quantized;
  auto sink = [&](const v1::TensorEntry& entry, absl::Span<const uint8_t> bytes) {
    quantized.insert(entry.name());
    return writer->AddTensor(entry, bytes);
  };
  quant::PipelineProgress::Stage last_stage = quant::PipelineProgress::Stage::kMeasure;
  int last_layer = -1;
  auto on_pipeline = [&](const quant::PipelineProgress& p) {
    const bool block_pass = p.stage == quant::PipelineProgress::Stage::kMeasure ||
                            p.stage == quant::PipelineProgress::Stage::kQuantize;
    // A block of a pass is done when the pass moves to the next block or the next stage.
    if (last_layer >= 0 && (p.layer != last_layer || p.stage != last_stage) &&
        hooks.on_calibration_tokens) {
      hooks.on_calibration_tokens(shape.tokens());
    }
    last_layer = block_pass ? p.layer : -1;
    last_stage = p.stage;
    progress.set_current_layer(static_cast<uint32_t>(std::max(p.layer, 0)));
    progress.set_current_tensor(p.tensor);
    report(ToJobStage(p.stage), pipeline_start + (kPipelineEnd - pipeline_start) * p.fraction);
  };
  lap();
  auto result = pipeline.Run(tokens, shape.rows, shape.tokens_per_row, sink, on_pipeline, stop);
  const double pipeline_s = lap();
  if (!result.ok()) {
    writer->Abort();
    env.jobs->ForgetTempArtifact(job.id());
    return result.status();
  }

  // The tensors the pipeline does not quantize, in the source's order.
  progress.set_current_tensor("");
  report(v1::JOB_STAGE_WRITING, kPipelineEnd);
  const double head_request = HeadBits(request);
  double head_bits = 16.0;
  std::vector<float> values;
  std::vector<uint8_t> bytes;
  for (const formats::CheckpointTensor& tensor : checkpoint->tensors()) {
    if (quantized.count(tensor.name) != 0) continue;
    if (stopped()) {
      writer->Abort();
      env.jobs->ForgetTempArtifact(job.id());
      return absl::CancelledError("stopped while writing");
    }
    values.resize(ElementCount(tensor.shape));
    BITLOOM_RETURN_IF_ERROR(checkpoint->ReadF32Into(tensor.name, absl::MakeSpan(values)));
    v1::TensorEntry entry;
    const bool is_head = tensor.name == formats::kLmHead && tensor.shape.size() == 2;
    if (is_head && HeadCodeBits(head_request) < 16) {
      const auto rows = static_cast<int64_t>(tensor.shape[0]);
      const auto cols = static_cast<int64_t>(tensor.shape[1]);
      // Seeded as a site one past the last block, so it never shares a decoder site's rotation.
      const uint64_t seed = quant::QuantizationPipeline::SiteSeed(
          request.seed(), static_cast<int>(runner->num_layers()), 0);
      BITLOOM_RETURN_IF_ERROR(QuantizeHead(tensor.name, values, rows, cols,
                                           HeadCodeBits(head_request), seed, env.pool, &entry,
                                           &bytes));
      head_bits = 8.0 * static_cast<double>(bytes.size()) / static_cast<double>(rows * cols);
    } else {
      modelstore::EncodeReferenceTensor(tensor.name, tensor.shape, values, &entry, &bytes);
    }
    BITLOOM_RETURN_IF_ERROR(writer->AddTensor(std::move(entry), bytes));
  }

  v1::ArtifactManifest manifest;
  *manifest.mutable_config() = checkpoint->config();
  *manifest.mutable_tokenizer() = checkpoint->tokenizer();
  manifest.set_chat_template(checkpoint->chat_template());
  *manifest.mutable_source() = checkpoint->source();
  manifest.mutable_source()->set_digest(digest);
  v1::CalibrationSettings* calibration = manifest.mutable_calibration();
  *calibration->mutable_corpus_files() = request.calibration().corpus_files();
  calibration->set_self_generated(request.calibration().self_generated());
  calibration->set_rows(static_cast<uint32_t>(shape.rows));
  calibration->set_tokens_per_row(static_cast<uint32_t>(shape.tokens_per_row));
  calibration->set_seed(request.seed());
  calibration->set_random_rows_fraction(request.calibration().random_rows_fraction());
  calibration->set_method(v1::QuantizationMethod_Name(
      request.method() == v1::QUANTIZATION_METHOD_UNSPECIFIED
          ? v1::QUANTIZATION_METHOD_VARIABLE_LDLQ
          : request.method()));
  // The CPU's string is the one quantd always wrote; a GPU run names its device
  // (docs/QUANTIZATION.md, "GPU path").
  manifest.set_quantizer_version(
      env.device == QuantDevice::kCpu
          ? absl::StrCat("bitloom ", service::kVersion, " quantd")
          : absl::StrCat("bitloom ", service::kVersion, " quantd (", backend->Describe(), ")"));
  manifest.set_bits_per_weight(result->bits_per_weight);
  manifest.set_head_bits_per_weight(head_bits);
  // The job's creation time, not now: a resumed job must publish the same bytes.
  manifest.set_created_unix_ms(job.created_unix_ms());
  BITLOOM_RETURN_IF_ERROR(writer->Finish(std::move(manifest)));
  env.jobs->ForgetTempArtifact(job.id());
  const double write_s = lap();
  const quant::PipelineTimings& t = result->timings;
  BITLOOM_LOG(INFO) << "job " << job.id() << " timings (s): total "
                    << std::chrono::duration<double>(Clock::now() - run_start).count()
                    << "; open " << open_s << ", calibration " << calibrate_s
                    << ", model load " << runner_s << ", digest (beyond the load) " << digest_wait_s
                    << ", pipeline " << pipeline_s << " [embed "
                    << t.embed << ", capture forwards+Hessians " << t.capture_forward
                    << ", factor " << t.factor << ", measure LDLQ " << t.measure_ldlq << ", probes "
                    << t.probe << ", probes' rest of the model " << t.probe_rest << ", output Fisher "
                    << t.output_fisher << ", allocate " << t.allocate << ", quantize LDLQ "
                    << t.quantize_ldlq << ", forwards " << t.forward << ", host weights "
                    << t.weights_host << ", checkpoints " << t.checkpoints << "], write "
                    << write_s;

  JobOutcome outcome;
  outcome.achieved_bits_per_weight = result->bits_per_weight;
  outcome.head_bits_per_weight = head_bits;
  outcome.artifact_bytes = writer->bytes_written();
  outcome.resumed_blocks = result->resumed_measure_blocks + result->resumed_quantize_blocks;
  progress.set_current_layer(progress.num_layers());
  report(v1::JOB_STAGE_DONE, 1.0);
  return outcome;
}

}  // namespace bitloom::quantd
