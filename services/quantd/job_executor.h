// ExecuteJob: one run of one quantization job, from the source model to a published artifact.
//
//   LOADING      open the source (formats::OpenCheckpoint); its weight files are hashed on a
//                thread of their own while calibration and the model load run
//   CALIBRATING  build the calibration tokens (calibration.h)
//   MEASURING / ALLOCATING / QUANTIZING   quant::QuantizationPipeline over the factory's BlockRunner,
//                with per-block checkpoints in the job's checkpoint directory; the quantized decoder
//                tensors stream straight into the artifact writer
//   WRITING      the tensors the pipeline does not own (embeddings and norms as the fp16/fp32
//                reference stores them; an untied output head at head_bits_per_weight), the manifest,
//                then the atomic publish
//
// Resuming is simply running again: the pipeline skips the blocks its checkpoints cover and re-emits
// their tensors in the original order, the rest of the artifact is a pure function of the request,
// and the manifest's created_unix_ms is the job's creation time, so a resumed run publishes the same
// bytes as an uninterrupted one. `stop` (the user's cancel or quantd's drain) makes the run return
// CANCELLED between two tensors; the writer's temporary file is then deleted, the checkpoints stay
// for the caller to keep (drain) or delete (cancel). Runs on the caller's thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/formats/checkpoint.h"
#include "bitloom/modelstore/model_store.h"
#include "bitloom/v1/quantization.pb.h"
#include "block_runner_factory.h"
#include "calibration.h"
#include "job_store.h"
#include "quant_device.h"

namespace bitloom::quantd {

struct JobEnvironment {
  modelstore::ModelStore* store = nullptr;
  const JobStore* jobs = nullptr;
  const BlockRunnerFactory* runners = nullptr;
  ThreadPool* pool = nullptr;  // may be null: one thread
  QuantDevice device = QuantDevice::kCpu;  // each run makes its QuantBackend on it
};

struct JobHooks {
  // Every change of the job's progress (stage, layer, tensor, fraction), on the running thread.
  std::function<void(const v1::JobProgress&)> on_progress;
  // Calibration tokens run through one decoder block, each time a block finishes.
  std::function<void(int64_t tokens)> on_calibration_tokens;
};

struct JobOutcome {
  double achieved_bits_per_weight = 0.0;
  double head_bits_per_weight = 0.0;
  uint64_t artifact_bytes = 0;
  int resumed_blocks = 0;  // measurement + quantization blocks restored from checkpoints
};

absl::StatusOr<JobOutcome> ExecuteJob(const v1::Job& job, const JobEnvironment& env,
                                      const std::atomic<bool>* stop, const JobHooks& hooks);

// Bytes a job needs on the store's filesystem at its peak: the artifact (at the target bits for
// the decoder, 16-bit embeddings, the head at its bits) plus its checkpoints (the quantized blobs;
// the measurement's are small, and no checkpoint holds hidden states). An estimate that errs high;
// CreateJob compares it with the free space. `shape` is unused since checkpoints stopped holding
// hidden states.
uint64_t EstimateJobDiskBytes(const formats::Checkpoint& checkpoint,
                              const v1::CreateJobRequest& request, const CalibrationShape& shape);

// The source path of a request: the Hugging Face directory or the GGUF file.
const std::string& SourcePath(const v1::CreateJobRequest& request);

// The head's width: head_bits_per_weight, 0 meaning the documented default of 6.
double HeadBits(const v1::CreateJobRequest& request);

}  // namespace bitloom::quantd
