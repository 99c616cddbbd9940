// GpuBlockRunner: the BlockRunner (quant/block_runner.h) whose block forwards run on one GPU, so a
// conversion on the GPU backend pushes its calibration tokens through the blocks at GPU speed and
// hands every site's inputs to the GPU Hessian accumulator without leaving the device
// (RunBlockOnDevice).
//
// What is whose. Sites(), ReadWeight(), Embed(), output_layer(), num_layers() and hidden_size()
// are the CPU engine's EngineBlockRunner over the same DecoderModel (the same names, order, shapes
// and bits); only the forwards run elsewhere. The forward is the GPU decoder's sequence of shared kernels
// (libs/kernels/cuda; engine's gpu_decoder_model.cc EnqueueForward combines them the same way):
// ResidualRmsNorm, the linears as cuBLAS GEMMs over the pipeline's substituted fp32 weights,
// QkvRope into a paged fp16 K/V cache with a trivial contiguous page table (one run of pages per
// sequence), PagedPrefillAttention, GatedActivation. Every architecture DecoderModel runs is
// supported (Llama, Mistral, Qwen2/3, Gemma 3: biases, q/k norms, sandwich norms, soft-caps,
// sliding windows, GeGLU) provided head_dim is 64, 128 or 256 (the attention kernels'); Supports()
// says so before anything is loaded.
//
// Numerics. The residual stream, norms, captured site inputs and GEMM outputs are fp32. GEMMs are
// TF32 tensor-core products with fp32 accumulation (CUBLAS_COMPUTE_32F_FAST_TF32): the inputs are
// rounded to a 10-bit mantissa, fp16's precision with fp32's range (no overflow on large
// activations, no conversion passes over weights or activations), at half of fp16's peak rate,
// which the block forwards can afford (docs/QUANTIZATION.md, "GPU path"). Keys and values are
// stored in fp16 (the cache format) and attention runs on the tensor cores (fp16 queries and
// probabilities, fp32 softmax and accumulation). exact_fp32 swaps in fp32 GEMMs and the fp32
// attention kernel, for tests. Against the CPU engine the output differs by these roundings only
// (the test states the tolerance); repeated runs on one GPU give identical bits.
//
// Memory. Calibration rows go through in chunks of whole sequences (chunk_tokens); the device holds
// one chunk's activations (about 4·chunk·(3·hidden + 3·q_dim + 2·kv_dim + 2·intermediate) bytes:
// 7.4 GB at Llama-3-8B shapes and 32768 tokens) and one block's fp32 substituted weights, allocated
// on first use and kept, and, with resident_weights, every block's stored fp32 weights from their
// first use on (0.87 GB per block at 8B, 27.9 GB for the model), so forwards with stored weights
// (RunBlockSubstituted, RunStoredBlocks, RunBlockOnDevice) upload only what the caller substitutes.
// Hidden states stay in host memory between calls, as the interface has them (RunStoredBlocks keeps
// a batch of at most one chunk on the device from its first block to its last): each chunk goes
// through pinned staging buffers, two of each direction, so that the host copies of one chunk
// (spread over the pool) overlap the device's work on the next, and the link runs at DMA speed
// (pageable copies ran at ~3 GB/s on the H100 machine, most of a Llama-3-8B forward); the weights
// go through one pinned buffer too. Pinned: 4 chunks of hidden states (2 GB at 8B and
// 32768 tokens) plus the largest weight.
//
// Ownership and threading: borrows the model, which must outlive the runner; owns a CUDA stream
// (blocking, so the legacy default stream the GPU backend uses waits for it), a cuBLAS handle and
// the buffers. The current device at Create() is used. Unlike EngineBlockRunner, calls must not
// overlap (one thread at a time: the pipeline's use). Plain C++ header.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/engine/decoder_model.h"
#include "bitloom/engine/weight_source.h"
#include "bitloom/quant/block_runner.h"
#include "bitloom/quant/engine_block_runner.h"

namespace bitloom::quant::cuda {

struct GpuBlockRunnerOptions {
  // Quantize only the first `num_layers` blocks (0: all), as EngineBlockRunnerOptions.
  int num_layers = 0;
  // Calibration tokens per device pass, rounded down to whole sequences (at least one sequence).
  int64_t chunk_tokens = 32768;
  // fp32 GEMMs (no TF32) and the fp32 attention kernel: slower, closer to the CPU.
  bool exact_fp32 = false;
  // Splits the host copies between the caller's memory and the pinned staging buffers over its
  // threads; null: one thread. Must outlive the runner.
  ThreadPool* pool = nullptr;
  // Keep each block's stored weights on the device (fp32) from their first use on, so forwards
  // with stored weights (RunBlockSubstituted, RunStoredBlocks, RunBlockOnDevice) upload only the
  // substitutes. A block stays on the host, uploaded per call, when fewer than
  // resident_reserve_bytes of device memory would be left free after it (room for the chunk's
  // activations, which are allocated first, and the GPU backend's Hessians and LDLQ buffers).
  bool resident_weights = true;
  int64_t resident_reserve_bytes = int64_t{16} << 30;
  // Take substitutes in rotated space (AcceptsRotatedWeights), rotating the sites' inputs on the
  // device; false: the pipeline rotates them back on the host.
  bool rotate_substitutes = true;
};

class GpuBlockRunner final : public BlockRunner {
 public:
  // OK when the GPU forward runs `config`; INVALID_ARGUMENT naming the field otherwise.
  static absl::Status Supports(const engine::ResolvedConfig& config);

  // `model` is the CPU engine's model of the source and `weights` the source it was loaded from
  // (read here once, for the norms and biases; not kept). FAILED_PRECONDITION without a CUDA
  // device of compute capability 8.0 or newer; INVALID_ARGUMENT as Supports().
  static absl::StatusOr<std::unique_ptr<GpuBlockRunner>> Create(
      const engine::DecoderModel& model, const engine::WeightSource& weights,
      GpuBlockRunnerOptions options = {});
  ~GpuBlockRunner() override;

  int num_layers() const override { return host_.num_layers(); }
  int64_t hidden_size() const override { return host_.hidden_size(); }
  std::vector<LinearSite> Sites(int layer) const override { return host_.Sites(layer); }
  absl::StatusOr<std::vector<float>> ReadWeight(const std::string& name, int64_t* rows,
                                                int64_t* cols) const override {
    return host_.ReadWeight(name, rows, cols);
  }
  absl::StatusOr<std::vector<float>> Embed(absl::Span<const int32_t> tokens) const override {
    return host_.Embed(tokens);
  }
  std::optional<OutputLayer> output_layer() const override { return host_.output_layer(); }
  // `capture` sees each site's inputs once per chunk, copied to the host. INVALID_ARGUMENT as
  // EngineBlockRunner::RunBlock.
  absl::StatusOr<std::vector<float>> RunBlock(int layer, const WeightMap& weights,
                                              absl::Span<const float> hidden, int64_t sequences,
                                              int64_t seq_len,
                                              const CaptureFn& capture) const override;
  // Stored weights as the options say (resident or uploaded from the model); a host `capture`
  // goes through RunBlock with the full map.
  absl::StatusOr<std::vector<float>> RunBlockSubstituted(int layer, const WeightMap& substitutes,
                                                         absl::Span<const float> hidden,
                                                         int64_t sequences, int64_t seq_len,
                                                         const CaptureFn& capture) const override;
  // A batch of at most chunk_tokens (whole sequences) goes to the device once and back once.
  absl::StatusOr<std::vector<float>> RunStoredBlocks(int first, int end,
                                                     absl::Span<const float> hidden,
                                                     int64_t sequences,
                                                     int64_t seq_len) const override;
  // Each rotated substitute's GEMM reads R·x, rotated by the inference kernel
  // (kernels/cuda/hadamard_rotation.h, fp32, the CPU's Apply to the bit) into a scratch buffer of
  // [chunk rows, in] fp32; stored weights for the rest.
  bool AcceptsRotatedWeights() const override { return rotate_substitutes_; }
absl::Status RunBlockRotated(int layer, const RotatedWeightMap& substitutes,
                               absl::Span<const float> hidden, int64_t sequences, int64_t seq_len,
                               std::vector<float>* out) const override;
  bool CapturesOnDevice() const override { return true; }
  absl::Status RunBlockOnDevice(int layer, const WeightMap& weights,
                                absl::Span<const float> hidden, int64_t sequences, int64_t seq_len,
                                const DeviceCaptureFn& capture,
                                std::vector<float>* out) const override;
  // Device memory the resident stored weights hold now (bytes).
  int64_t resident_weight_bytes() const;

 private:
  struct Impl;
  GpuBlockRunner(const engine::DecoderModel& model, GpuBlockRunnerOptions options,
                 std::unique_ptr<Impl> impl);

  const EngineBlockRunner host_;
  const bool rotate_substitutes_;
  const std::unique_ptr<Impl> impl_;
};

}  // namespace bitloom::quant::cuda
