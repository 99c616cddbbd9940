// QuantizationPipeline: a whole model, block by block, into CODEC_HADAMARD_SCALAR tensors at a
// target average bit width. The job service (services/quantd) drives it; the model is reached only
// through a BlockRunner, the artifact only through a TensorSink.
//
// Stages (docs/QUANTIZATION.md, section 1):
//   1. measure: blocks in order in full precision; per input site a fp64 Hessian of the block's
//   inputs,
//      rotated; every tensor LDLQ-quantized at every candidate width to measure its proxy loss;
//   2. allocate: AllocateBits over all tensors, loss = relative proxy loss × the tensor's measured
//      sensitivity (the relative change of the last block's output per unit of relative proxy
//      loss, probed with the tensor at each width below 3 bits and at 3 bits);
//   3. quantize: blocks in order, the inputs of block i being the outputs of the *quantized* blocks
//   < i;
//      Hessians re-accumulated from them; LDLQ at the allocated width; tensors go to the sink in a
//      fixed order (block, site, tensor).
//
// Checkpoints: with a checkpoint_dir, the state after every block of stages 1 and 3 is written
// there (atomically: temporary file, fsync, rename): the measured candidates (stage 1) or the
// emitted tensors (stage 3), never the hidden states (4 GB per block at Llama-3-8B shapes). Run()
// on the same directory with the same inputs skips the finished blocks, re-emits the finished
// tensors from the checkpoint in the original order, replays the finished blocks' forwards (with
// their full-precision or restored quantized weights) when a later block needs their outputs, and
// continues; with a deterministic runner the emitted bytes are identical to an uninterrupted run.
// Options
// and calibration are fingerprinted into the checkpoint, so a directory from a different job is
// rejected (FAILED_PRECONDITION) rather than mixed.
//
// Backend: the Hessians, their factorisation and LDLQ run on a QuantBackend (quant_backend.h): the
// CPU by default, the GPU when the caller passes one (quantd --device). Round-to-nearest, the
// rotation of the weights and the blocks' forwards stay with the caller's pool and runner. The
// checkpoints hold no backend state (candidates and blobs only), so a job may resume on another
// device; its finished blocks then keep the first device's numbers.
//
// Cancellation: the flag is checked between tensors and between blocks; Run() then returns
// CANCELLED, leaving the checkpoints of finished blocks. Progress is reported through the callback
// on the calling thread. Not thread-safe: one Run() at a time per object.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/quant/block_runner.h"
#include "bitloom/quant/hessian.h"
#include "bitloom/quant/quant_backend.h"
#include "bitloom/v1/manifest.pb.h"

namespace bitloom::quant {

struct PipelineOptions {
  // kVariableLdlq runs all three stages. The uniform methods skip measuring and allocating and
  // quantize every tensor at uniform_bits: kUniformLdlq still runs the blocks for Hessians,
  // kUniformRtn runs no forward at all (the baselines of docs/RESULTS.md).
  enum class Method { kVariableLdlq, kUniformLdlq, kUniformRtn };
  Method method = Method::kVariableLdlq;
  int uniform_bits = 4;  // K for the uniform methods, 1..8
  double target_bits_per_weight = 4.0;  // kVariableLdlq
  double tolerance = 0.01;
  std::vector<int> candidate_bits = {1, 2, 3, 4, 5, 6, 7, 8};
  int group_size = 128;
  // kVariableLdlq: further group sizes (multiples of 32) the allocator may choose per tensor, each
  // measured at every candidate width.
  std::vector<int> extra_group_sizes;
  uint64_t seed = 0;  // rotation seeds derive from (seed, layer, site)
  DampingOptions damping;
  std::string checkpoint_dir;  // empty: no checkpoints
};

struct PipelineProgress {
  enum class Stage { kMeasure, kAllocate, kQuantize, kDone };
  Stage stage = Stage::kMeasure;
  int layer = 0;  // block being processed
  int num_layers = 0;
  std::string tensor;     // tensor being processed, empty between tensors
  double fraction = 0.0;  // of the whole job, 0..1
};

// Receives each finished tensor (entry without offset/size/xxh3, which the artifact writer fills
// in).
using TensorSink =
    std::function<absl::Status(const v1::TensorEntry& entry, absl::Span<const uint8_t> bytes)>;
using ProgressFn = std::function<void(const PipelineProgress&)>;

// Wall-clock seconds of one Run() by activity, summed over blocks and stages (what the job log and
// docs/QUANTIZATION.md's conversion-time figures report).
struct PipelineTimings {
  double embed = 0.0;            // Embed() of the calibration
  double capture_forward = 0.0;  // block forwards that feed the Hessians, with the accumulation
                                 // (queued on the forward's stream on the GPU path)
  double factor = 0.0;           // the backend's Factor: mean, rotation, damped factorisation
  double measure_ldlq = 0.0;     // the backend's Measure at every candidate width
  double probe = 0.0;            // sensitivity probes: the probed block's forwards on a prefix
                                 // (their substitutes' dequantization counts as weights_host)
  double probe_rest = 0.0;       // the rest of the model on every probe's output
  double output_fisher = 0.0;    // the output's Fisher information and the probes' divergences
  double allocate = 0.0;
  double quantize_ldlq = 0.0;    // the backend's Quantize (or RTN)
  double forward = 0.0;          // quantized-path outputs, and replays after a resume
  double weights_host = 0.0;     // read, rotate and dequantize weights on the host
  double checkpoints = 0.0;      // serialising and writing checkpoint files
};

struct PipelineResult {
  double bits_per_weight = 0.0;    // achieved average over the quantized tensors (stored bits)
  uint64_t stored_bytes = 0;       // Σ blob bytes of the quantized tensors
  int resumed_measure_blocks = 0;  // blocks restored from checkpoints
  int resumed_quantize_blocks = 0;
  PipelineTimings timings;
};

class QuantizationPipeline {
 public:
  // `backend` null: a CpuQuantBackend on `pool`. A given backend must outlive the pipeline.
  QuantizationPipeline(const BlockRunner& runner, PipelineOptions options, ThreadPool* pool,
                       QuantBackend* backend = nullptr);

  // calibration: [sequences · seq_len] token ids, sequence-major.
  absl::StatusOr<PipelineResult> Run(absl::Span<const int32_t> calibration, int64_t sequences,
                                     int64_t seq_len, const TensorSink& sink,
                                     const ProgressFn& progress, const std::atomic<bool>* cancel);

  // The rotation seed of an input site: a SplitMix64 mix of (seed, layer, site index).
  static uint64_t SiteSeed(uint64_t seed, int layer, int site_index);

 private:
  const BlockRunner& runner_;
  PipelineOptions options_;
  ThreadPool* pool_;
  std::unique_ptr<QuantBackend> own_backend_;  // the CPU default
  QuantBackend* backend_;
};

}  // namespace bitloom::quant
