// GpuBlockRunner: the BlockRunner (quant/block_runner.h) whose block forwards run on one GPU, so a
// conversion on the GPU backend pushes its calibration tokens through the blocks at GPU speed and
// hands every site's inputs to the GPU Hessian accumulator without leaving the device
// (RunBlockOnDevice).
//
// What is whose. Sites(), ReadWeight(), Embed(), num_layers() and hidden_size() are the CPU
// engine's EngineBlockRunner over the same DecoderModel (the same names, order, shapes and bits);
// only RunBlock runs elsewhere. The forward is the GPU decoder's sequence of shared kernels
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
// 7.4 GB at Llama-3-8B shapes and 32768 tokens) and one block's fp32 weights, allocated on first
// use and kept. Hidden states stay in host memory between calls, as the interface has them: each
// chunk goes through pinned staging buffers, two of each direction, so that the host copies of one
// chunk (spread over the pool) overlap the device's work on the next, and the link runs at DMA
// speed (pageable copies ran at ~3 GB/s on the H100 machine, most of a Llama-3-8B forward); the
// weights go through one pinned buffer too. Pinned: 4 chunks of hidden states (2 GB at 8B and
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
  // `capture` sees each site's inputs once per chunk, copied to the host. INVALID_ARGUMENT as
  // EngineBlockRunner::RunBlock.
  absl::StatusOr<std::vector<float>> RunBlock(int layer, const WeightMap& weights,
                                              absl::Span<const float> hidden, int64_t sequences,
                                              int64_t seq_len,
                                              const CaptureFn& capture) const override;
  bool CapturesOnDevice() const override { return true; }
  absl::Status RunBlockOnDevice(int layer, const WeightMap& weights,
                                absl::Span<const float> hidden, int64_t sequences, int64_t seq_len,
                                const DeviceCaptureFn& capture,
                                std::vector<float>* out) const override;

 private:
  struct Impl;
  GpuBlockRunner(const engine::DecoderModel& model, GpuBlockRunnerOptions options,
                 std::unique_ptr<Impl> impl);

  const EngineBlockRunner host_;
  const std::unique_ptr<Impl> impl_;
};

}  // namespace bitloom::quant::cuda
