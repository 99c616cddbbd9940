// GpuDecoderModel: the decoder forward pass on one GPU, over a model's regions of the VRAM pool —
// the serving twin of the CPU DecoderModel (same families, same math, fp16 activations where the
// kernels take them; docs/ENGINE.md, "The GPU forward").
//
// Load() resolves the artifact's config exactly as the CPU engine does (ResolveConfig), refuses
// families it does not run with UNIMPLEMENTED naming the architecture, and takes three regions of
// the pool under options.model_id: `weights` (the artifact's blobs copied verbatim by UploadWeights,
// plus fp16 copies of the dense tensors the kernels read as fp16), `kv_cache` (the paged fp16 cache
// of the shared layout) and `workspace` (every activation buffer of a decode step of max_batch
// sequences and of a prefill chunk, the logits, the sampler's scratch and token counts, and the
// per-step inputs).
// Nothing is allocated on the device after Load(): the pool's memory is the only cudaMalloc.
// Linear layers run as CODEC_HADAMARD_SCALAR GEMVs on the rotated fp16 activation (decode), as
// fp16-expanded weight slices times cuBLAS (prefill), or, for an unquantized (F16/BF16/F32) tensor,
// as a cuBLAS fp16 GEMM, so an fp16 import artifact runs too.
//
// Sequences: AddSequence() opens one in the paged KV cache, Prefill() appends a prompt (in chunks)
// and returns the logits of its last token, DecodeStep() advances a batch of sequences by one token
// each. DecodeStep() is captured as a CUDA graph per batch-size bucket (1, 2, 4, 8, 16, 32, 64: a
// batch runs in the smallest bucket that holds it, padding rows are computed and dropped) and
// replayed; everything that varies per step (tokens, positions, block tables, lengths) is copied
// into fixed device buffers before the replay. options.use_cuda_graphs = false launches the same
// kernels directly (the results are bit-identical).
//
// Ownership and threading: the model owns its CUDA stream, cuBLAS handle, graphs and pool regions
// (freed at destruction); `pool` must outlive it. Not thread-safe: one scheduler thread drives it.
// Every call returns when its results are on the host (it synchronises its own stream).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/engine/decoder_model.h"
#include "bitloom/engine/paged_kv_cache.h"
#include "bitloom/engine/vram_pool.h"
#include "bitloom/kernels/cuda/sampling.h"
#include "bitloom/modelstore/artifact_reader.h"

namespace bitloom::engine {

inline constexpr int kGpuMaxBatch = 64;

struct GpuModelOptions {
  // Owner name of the model's pool regions (VramPool::FreeOwner frees them all).
  std::string model_id = "model";
  // Sequences per DecodeStep(), 1..kGpuMaxBatch; the workspace is sized for it.
  int max_batch = 8;
  // Longest sequence in tokens; 0: the model's max_position_embeddings.
  int max_seq_len = 0;
  // KV cache size: exactly kv_pages pages when > 0, else the most pages kv_bytes hold. One of the two
  // must be set.
  int kv_pages = 0;
  uint64_t kv_bytes = 0;
  // Tokens per KV page, a power of two.
  int page_size = 16;
  // Tokens per prefill chunk (a multiple of 8; the workspace holds one chunk's activations).
  int prefill_chunk = 256;
  // Workspace for the prefill GEMM's fp16 weight slices (a quantized layer of a chunk of
  // gpu::kGemmMinRows or more tokens is expanded slice by slice and multiplied by cuBLAS): larger
  // means fewer, bigger GEMMs, never more than the largest layer needs. 128 MiB holds every
  // Llama-3-8B layer whole: for the two 2048-row halves of down_proj that 64 MiB gave, cuBLAS picked
  // an sm_80 kernel at a third of the throughput of the whole layer's (docs/ENGINE.md).
  uint64_t prefill_gemm_bytes = uint64_t{128} << 20;
  // Capture DecodeStep() once per batch bucket and replay it; false launches the kernels directly.
  bool use_cuda_graphs = true;
  // One-row steps: a group of GEMVs whose launch kernels::cuda::PreferRotatingGemv recommends (a
  // power-of-two width up to 4096 that fits the GPU in one wave: Llama-3-8B's q/k/v and o_proj)
  // rotates its own input instead of following a rotation kernel (gpu_linear.h). false always
  // launches the rotation kernel (A/B benchmarks); results agree to the last bit of 1/rms.
  bool rotating_gemv = true;
  // Rewrite every quantized group with at most two K, all in {2, 3, 4, 8}, whose shapes allow it
  // (kernels/cuda/scalar_codec_tiled.h: rows a multiple of 16, cols and group size multiples of 128)
  // into the tiled layout at load, in place, so that its decode GEMV needs about half the
  // instructions (H200, Llama-3-8B shapes: docs/KERNELS.md "Tiled layout"). Results agree with the
  // artifact layout's within the GEMV tolerance. A tiled group has no rotating launch (rotating_gemv
  // does not apply to it). false keeps the artifact layout everywhere (A/B benchmarks).
  bool tiled_gemv = true;
  // At decode batches of 4 or more on sm_90, a quantized o_proj's input rotation merges split attention's
  // partials as it loads them (kernels/cuda/hadamard_rotation.h, attention input) instead of after a
  // combine kernel: one launch per layer less, the same result bit for bit. Batches below 4 (where it
  // measured slower), and widths the rotation cannot take this way (no register-tiled schedule), run
  // the combine kernel. false: always the combine kernel.
  bool fuse_attention_combine = true;
  // Batch-1 decode GEMVs whose layers are all tiled at K = 2 (Llama-3-70B's down_proj at 2.5 bits)
  // take the offset terms of their input from the rotation that writes it
  // (kernels/cuda/hadamard_rotation.h, offset_terms) instead of half of their mma; results agree
  // within the GEMV tolerance. false: the mma everywhere (A/B benchmarks).
  bool offset_terms = true;
  // Reserve the on-GPU sampler's workspace for max_batch rows (DecodeAndSample()).
  bool enable_sampling = true;
  // Sequences (open at once) whose token counts the device keeps for the sampler's penalties, with
  // enable_sampling: a prompt and an output row of vocab int32 each per sequence, plus both rows
  // for every batch slot (the penalised rows gathered in batch order), so the workspace grows by
  // 8·vocab·(token_count_sequences + bucket) bytes (1 MiB per sequence for Llama-3's 128256 ids). 0:
  // no counts, and DecodeAndSample() refuses rows with penalties.
  int token_count_sequences = 0;
  // Keep the token-embedding table in pinned host memory that the GPU reads directly (one row of
  // hidden·2 bytes per token over PCIe) instead of the weights region: saves vocab·hidden·2 bytes of
  // VRAM (2.1 GB on Llama-3-70B) for a few microseconds per step. INVALID_ARGUMENT for a model whose
  // head is tied to the embedding.
  bool embedding_in_host = false;
};

class GpuDecoderModel {
 public:
  // Uploads `reader`'s artifact into `pool` (which must be on the device; its device is made
  // current). INVALID_ARGUMENT for bad options (naming the field), UNIMPLEMENTED for an architecture
  // or a tensor codec the GPU engine does not run, RESOURCE_EXHAUSTED when a region does not fit
  // the pool (nothing stays allocated then), FAILED_PRECONDITION without a device pool, INTERNAL for
  // CUDA/cuBLAS failures. The reader is needed only during Load().
  static absl::StatusOr<std::unique_ptr<GpuDecoderModel>> Load(
      const modelstore::ArtifactReader& reader, VramPool* pool, const GpuModelOptions& options);
  ~GpuDecoderModel();

  GpuDecoderModel(const GpuDecoderModel&) = delete;
  GpuDecoderModel& operator=(const GpuDecoderModel&) = delete;

  const ResolvedConfig& resolved() const;
  const GpuModelOptions& options() const;
  int vocab_size() const;
  cudaStream_t stream() const;
  // The KV cache manager (pages used/free, sequence lengths) for metrics and admission checks.
  const PagedKvCache& kv_cache() const;

  // ---- Sequences.

  // A new empty sequence. RESOURCE_EXHAUSTED when no page is free for its first token.
  absl::StatusOr<SequenceId> AddSequence();
  // Frees the sequence's pages. NOT_FOUND for an unknown id.
  absl::Status Release(SequenceId seq);
  // Tokens cached for `seq` (0 for an unknown id).
  int Length(SequenceId seq) const;

  // ---- Forward.

  // Appends `tokens` (>= 1) to `seq` at positions Length(seq).. and returns the logits [vocab] of
  // the last one. Runs in chunks of options.prefill_chunk tokens (quantized linears of a chunk of
  // 24+ tokens are dequantized slices and cuBLAS GEMMs, shorter ones GEMVs). INVALID_ARGUMENT for an empty prompt, a token
  // out of range or a length past max_seq_len, NOT_FOUND for an unknown sequence,
  // RESOURCE_EXHAUSTED when its pages cannot be reserved; the sequence is unchanged on error.
  absl::StatusOr<std::vector<float>> Prefill(SequenceId seq, absl::Span<const int32_t> tokens);

  // Runs tokens[i] as the next token of seqs[i] (distinct sequences, 1..max_batch of them) and
  // returns logits [batch, vocab] (row i for seqs[i]). Errors as Prefill() (and INVALID_ARGUMENT
  // for a repeated sequence or a batch outside 1..max_batch); on error no sequence has grown.
  absl::StatusOr<std::vector<float>> DecodeStep(absl::Span<const SequenceId> seqs,
                                                absl::Span<const int32_t> tokens);
  // DecodeStep() without the host copy: the logits stay in device_logits() (valid until the next
  // forward call).
  absl::Status DecodeStepOnDevice(absl::Span<const SequenceId> seqs, absl::Span<const int32_t> tokens);
  // Device fp32 [max_batch, vocab] (row stride vocab): the last DecodeStep's logits.
  const float* device_logits() const;

  // DecodeStepOnDevice() then the on-GPU sampler (kernels/cuda/sampling.h) on its logits: one
  // token per sequence. rows[i] are seqs[i]'s sampling parameters and uniforms[i] its variate in
  // [0, 1) (drawn on the host as Sampler does; ignored for temperature 0; `uniforms` may be empty
  // when every row is greedy). The logits stay in device_logits() (ReadLogits()).
  //
  // Penalties use the sequence's token counts on the device (options.token_count_sequences): its
  // prompt counts are every token Prefill() appended to it, its output counts every token a decode
  // step (DecodeStep, DecodeStepOnDevice, DecodeAndSample) ran for it, this step's included, which
  // is what Sampler::Sample is given as prompt and output when generation prefills the prompt and
  // then feeds each sampled token back. Counts start at zero in AddSequence(); after a failed call
  // they may include that call's tokens (the caller releases such a sequence). A penalised row whose
  // sequence has no counts (token_count_sequences were all taken, or 0) is FAILED_PRECONDITION, as is
  // any call when options.enable_sampling was false.
  absl::StatusOr<std::vector<int32_t>> DecodeAndSample(
      absl::Span<const SequenceId> seqs, absl::Span<const int32_t> tokens,
      absl::Span<const kernels::cuda::SamplingRowParams> rows, absl::Span<const double> uniforms);
  // Row `row` [vocab] of the last decode step's logits, copied to the host. INVALID_ARGUMENT outside
  // [0, max_batch).
  absl::StatusOr<std::vector<float>> ReadLogits(int row);
  // Whether `seq` has token counts on the device (penalties can be sampled on the GPU).
  bool HasTokenCounts(SequenceId seq) const;

  // Bytes of the three pool regions (weights, kv_cache, workspace).
  uint64_t weights_bytes() const;
  uint64_t kv_bytes() const;
  uint64_t workspace_bytes() const;
  // Bytes of pinned host memory the model reads from (the embedding with embedding_in_host, else 0).
  uint64_t host_bytes() const;
  // Bytes of quantized codes rewritten into the tiled layout at load (tiled_gemv).
  uint64_t tiled_bytes() const;

 private:
  struct Impl;
  explicit GpuDecoderModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace bitloom::engine
