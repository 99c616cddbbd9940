#include "bitloom/engine/gpu_decoder_model.h"

#include <cublas_v2.h>

#include <algorithm>
#include <array>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/cuda/embedding_gather.h"
#include "bitloom/kernels/cuda/gated_activation.h"
#include "bitloom/kernels/cuda/paged_attention.h"
#include "bitloom/kernels/cuda/qkv_rope.h"
#include "bitloom/kernels/cuda/residual_rms_norm.h"
#include "gpu_decoder_ops.h"
#include "gpu_linear.h"
#include "gpu_model_weights.h"
#include "gpu_token_counts.h"

namespace bitloom::engine {

namespace kc = kernels::cuda;
using gpu::GpuLinear;
using gpu::LinearOutput;

namespace {

constexpr std::array<int, 7> kBuckets = {1, 2, 4, 8, 16, 32, 64};
// Decode batches from which o_proj's rotation merges the attention splits (fuse_attention_combine).
// H200, Llama-3-8B at 4.0 bits: batch 4 3.43-3.45 -> 3.39-3.41 ms, batch 16 7.08 -> 6.88 ms (session
// 11), and with the merge spread one element per thread (session 12) 3.09 -> 2.95 and 6.01 -> 5.78
// ms. Batch 1 still loses (2.49 ms with the combine kernel, 2.52-2.53 merged; session 13, with the
// rotation specialised to its input and shape: 2.12 against 2.14 ms, and the 70B 13.64 against
// 13.80): one row's merge has only the rotation's 8 blocks, where the combine kernel has a block
// per head. sm_90 only: without clusters every row would be merged by one block.
constexpr int kMergeSplitsMinRows = 4;
constexpr uint64_t kCublasWorkspaceBytes = uint64_t{8} << 20;

int BucketIndex(int batch) {
  for (int i = 0; i < static_cast<int>(kBuckets.size()); ++i) {
    if (kBuckets[i] >= batch) return i;
  }
  return static_cast<int>(kBuckets.size()) - 1;
}

uint64_t AlignUp(uint64_t v) { return (v + kPoolAlignment - 1) / kPoolAlignment * kPoolAlignment; }

bool GpuArchitecture(const std::string& a) {
  return a == "llama" || a == "mistral" || a == "qwen2" || a == "qwen3" || a == "gemma3" || a == "gemma3_text";
}

}  // namespace

// Device buffers of the forward pass, all inside the workspace region. rows = max(largest bucket,
// prefill_chunk): a decode step of the largest bucket or one prefill chunk.
struct Workspace {
  int32_t* ids = nullptr;        // [rows]
  int32_t* positions = nullptr;  // [rows]; -1 for a padding row (its K/V is not stored)
  int32_t* token_seq = nullptr;  // [rows]: block-table row of each token
  int32_t* seq_lens = nullptr;   // [bucket_max]: decode only; 0 for a padding row
  int32_t* block_tables = nullptr;  // [bucket_max, max_pages_per_seq]
  float* x = nullptr;            // residual stream [rows, hidden]
  float* x_spare = nullptr;      // [1, hidden]: the residual's second buffer for rotating GEMVs
  float* h = nullptr;            // normed [rows, hidden]
  float* q = nullptr;            // [rows, q_dim]
  float* k = nullptr;            // [rows, kv_dim]
  float* v = nullptr;            // [rows, kv_dim]
  float* q_rope = nullptr;       // [rows, q_dim]
  float* attn = nullptr;         // [rows, q_dim]
  float* o = nullptr;            // [rows, hidden]
  float* gate = nullptr;         // [rows, intermediate]
  float* up = nullptr;           // [rows, intermediate]
  float* act = nullptr;          // [rows, intermediate]
  float* logits = nullptr;       // [bucket_max, vocab]
  uint16_t* rotated = nullptr;   // [rows, max rotated stride]
  float* offset_terms = nullptr;  // [2][offset_term_groups][kGemvMaxBatch] (gpu_linear.h), or null
  int64_t offset_term_groups = 0;
  uint16_t* dense_in = nullptr;  // [rows, max dense cols] or null
  uint16_t* dequant = nullptr;   // prefill GEMM weight slices, dequant_elems fp16, or null
  int64_t dequant_elems = 0;
  void* attention_ws = nullptr;
  size_t attention_ws_bytes = 0;
  void* cublas_ws = nullptr;
  void* sampling_ws = nullptr;
  size_t sampling_ws_bytes = 0;
  kc::SamplingRowParams* sampling_rows = nullptr;  // [bucket_max]
  double* uniforms = nullptr;                       // [bucket_max]
  int32_t* sampled = nullptr;                       // [bucket_max]
  // Token counts for penalties (token_count_sequences > 0): a row per counted sequence, and the rows
  // of a batch's penalised sequences gathered in batch order for the sampler.
  int32_t* prompt_counts = nullptr;        // [token_count_sequences, vocab]
  int32_t* output_counts = nullptr;        // [token_count_sequences, vocab]
  int32_t* batch_prompt_counts = nullptr;  // [bucket_max, vocab]
  int32_t* batch_output_counts = nullptr;  // [bucket_max, vocab]
  int32_t* count_rows = nullptr;           // [bucket_max]: each decode row's counts row (-1: none)
  int32_t* gather_rows = nullptr;          // [bucket_max]: each penalised row's counts row (-1: skip)
};

struct GpuDecoderModel::Impl {
  GpuModelOptions options;
  v1::ModelConfig config;
  ResolvedConfig cfg;
  VramPool* pool = nullptr;
  std::vector<uint64_t> regions;  // pool region ids, freed at destruction
  uint64_t weights_bytes = 0, kv_bytes = 0, workspace_bytes = 0, tiled_bytes = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  gpu::GpuModelWeights weights;
  std::optional<PagedKvCache> kv;
  Workspace ws;
  int rows = 0;        // workspace rows
  int bucket_max = 0;  // largest bucket used
  int max_pages = 0;   // block-table row width
  int sm = 0;          // compute capability, 10·major + minor
  std::array<cudaGraphExec_t, kBuckets.size()> graphs{};
  SequenceId next_seq = 1;
  // Host staging of the per-step inputs (pageable: cudaMemcpyAsync has consumed them on return).
  std::vector<int32_t> h_ids, h_positions, h_token_seq, h_seq_lens, h_tables;
  // Token counts: the counts row of each counted open sequence, and the free rows (last taken next).
  absl::flat_hash_map<SequenceId, int32_t> count_row;
  std::vector<int32_t> free_count_rows;
  std::vector<int32_t> h_count_rows, h_gather_rows;  // [bucket_max] staging

  ~Impl() {
    for (cudaGraphExec_t& g : graphs) {
      if (g != nullptr) cudaGraphExecDestroy(g);
    }
    if (stream != nullptr) cudaStreamSynchronize(stream);
    if (cublas != nullptr) cublasDestroy(cublas);
    if (stream != nullptr) cudaStreamDestroy(stream);
    for (uint64_t id : regions) pool->Free(id).IgnoreError();
  }

  absl::StatusOr<uint8_t*> Allocate(RegionKind kind, uint64_t bytes) {
    BITLOOM_ASSIGN_OR_RETURN(const PoolRegion region, pool->Allocate(kind, options.model_id, bytes));
    regions.push_back(region.id);
    return pool->Data(region);
  }

  absl::Status LayoutWorkspace(uint8_t* base, uint64_t* bytes, const gpu::GpuWeightPlan& plan);
  absl::Status EnqueueForward(int n, bool decode, int head_row, bool head);
  absl::Status RunDecode(absl::Span<const SequenceId> seqs, absl::Span<const int32_t> tokens);
  absl::Status CheckTokens(absl::Span<const int32_t> tokens) const;
  bool counting() const { return ws.prompt_counts != nullptr; }
  // The counts row of `seq`, or -1.
  int32_t CountRow(SequenceId seq) const {
    const auto it = count_row.find(seq);
    return it == count_row.end() ? -1 : it->second;
  }
};

absl::Status GpuDecoderModel::Impl::LayoutWorkspace(uint8_t* base, uint64_t* bytes, const gpu::GpuWeightPlan& plan) {
  const ResolvedConfig& c = cfg;
  const uint64_t R = static_cast<uint64_t>(rows);
  const uint64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const uint64_t q_dim = uint64_t{static_cast<uint64_t>(c.num_heads)} * c.head_dim;
  const uint64_t kv_dim = uint64_t{static_cast<uint64_t>(c.num_kv_heads)} * c.head_dim;
  const uint64_t B = static_cast<uint64_t>(bucket_max);
  uint64_t end = 0;
  // With base == null only sizes are computed (the first pass).
  auto take = [&](uint64_t size) -> uint8_t* {
    const uint64_t at = end;
    end = AlignUp(end + std::max<uint64_t>(size, 1));
    return base == nullptr ? nullptr : base + at;
  };
  ws.ids = reinterpret_cast<int32_t*>(take(R * 4));
  ws.positions = reinterpret_cast<int32_t*>(take(R * 4));
  ws.token_seq = reinterpret_cast<int32_t*>(take(R * 4));
  ws.seq_lens = reinterpret_cast<int32_t*>(take(B * 4));
  ws.block_tables = reinterpret_cast<int32_t*>(take(B * static_cast<uint64_t>(max_pages) * 4));
  ws.x = reinterpret_cast<float*>(take(R * H * 4));
  ws.x_spare = reinterpret_cast<float*>(take(H * 4));
  ws.h = reinterpret_cast<float*>(take(R * H * 4));
  ws.q = reinterpret_cast<float*>(take(R * q_dim * 4));
  ws.k = reinterpret_cast<float*>(take(R * kv_dim * 4));
  ws.v = reinterpret_cast<float*>(take(R * kv_dim * 4));
  ws.q_rope = reinterpret_cast<float*>(take(R * q_dim * 4));
  ws.attn = reinterpret_cast<float*>(take(R * q_dim * 4));
  ws.o = reinterpret_cast<float*>(take(R * H * 4));
  ws.gate = reinterpret_cast<float*>(take(R * I * 4));
  ws.up = reinterpret_cast<float*>(take(R * I * 4));
  ws.act = reinterpret_cast<float*>(take(R * I * 4));
  ws.logits = reinterpret_cast<float*>(take(B * V * 4));
  ws.rotated = reinterpret_cast<uint16_t*>(take(R * static_cast<uint64_t>(plan.max_rotated_stride()) * 2));
  // The tiled GEMV's offset terms of a decode step's rotated rows (gpu_linear.h).
  ws.offset_term_groups = (plan.max_rotated_stride() + 127) / 128;
  ws.offset_terms = options.offset_terms ? reinterpret_cast<float*>(take(2 * static_cast<uint64_t>(ws.offset_term_groups) *
                                                                          kc::kGemvMaxBatch * 4))
                                         : nullptr;
  ws.dense_in = plan.has_dense_linear()
                    ? reinterpret_cast<uint16_t*>(take(R * static_cast<uint64_t>(plan.max_dense_cols()) * 2))
                    : nullptr;
  // The prefill GEMM's weight slices: the largest quantized weight, capped by the option (a slice
  // of at least one row of the widest), when a chunk or a bucket reaches the GEMM's row count.
  ws.dequant_elems = 0;
  if (R >= static_cast<uint64_t>(gpu::kGemmMinRows) && plan.max_expanded_elems() > 0) {
    ws.dequant_elems = std::max<int64_t>(
        plan.max_rotated_stride(),
        std::min<int64_t>(plan.max_expanded_elems(), static_cast<int64_t>(options.prefill_gemm_bytes / 2)));
  }
  ws.dequant = ws.dequant_elems > 0 ? reinterpret_cast<uint16_t*>(take(static_cast<uint64_t>(ws.dequant_elems) * 2))
                                    : nullptr;
  // Decode attention's split partials: the largest over the buckets and the two window kinds.
  size_t attention = 0;
  for (int b : kBuckets) {
    if (b > bucket_max) break;
    for (int window : {0, c.sliding_window}) {
      kc::PagedDecodeAttentionParams p;
      p.cache.num_kv_heads = c.num_kv_heads;
      p.cache.head_dim = c.head_dim;
      p.cache.page_size = options.page_size;
      p.cache.max_pages_per_seq = max_pages;
      p.batch = b;
      p.num_heads = c.num_heads;
      p.max_seq_len = options.max_seq_len;
      p.sliding_window = window;
      attention = std::max(attention, kc::DecodeAttentionWorkspaceBytes(p));
    }
  }
  ws.attention_ws_bytes = attention;
  ws.attention_ws = take(attention);
  ws.cublas_ws = plan.has_dense_linear() || ws.dequant != nullptr ? take(kCublasWorkspaceBytes) : nullptr;
  if (options.enable_sampling) {
    size_t sampling = 0;
    for (int b = 1; b <= bucket_max; ++b) {
      BITLOOM_ASSIGN_OR_RETURN(const size_t need, kc::SamplingWorkspaceBytes(b, c.vocab_size));
      sampling = std::max(sampling, need);
    }
    ws.sampling_ws_bytes = sampling;
    ws.sampling_ws = take(sampling);
    ws.sampling_rows = reinterpret_cast<kc::SamplingRowParams*>(take(B * sizeof(kc::SamplingRowParams)));
    ws.uniforms = reinterpret_cast<double*>(take(B * sizeof(double)));
    ws.sampled = reinterpret_cast<int32_t*>(take(B * 4));
    if (options.token_count_sequences > 0) {
      const uint64_t S = static_cast<uint64_t>(options.token_count_sequences);
      ws.prompt_counts = reinterpret_cast<int32_t*>(take(S * V * 4));
      ws.output_counts = reinterpret_cast<int32_t*>(take(S * V * 4));
      ws.batch_prompt_counts = reinterpret_cast<int32_t*>(take(B * V * 4));
      ws.batch_output_counts = reinterpret_cast<int32_t*>(take(B * V * 4));
      ws.count_rows = reinterpret_cast<int32_t*>(take(B * 4));
      ws.gather_rows = reinterpret_cast<int32_t*>(take(B * 4));
    }
  }
  *bytes = end;
  return absl::OkStatus();
}

// One forward pass over the n tokens whose ids, positions, token_seq (and, for decode, seq_lens)
// and block tables are already in the workspace. decode: each token is the next of its own
// sequence (block-table row = token index); else a prefill chunk of one sequence (row 0). With
// `head`, logits of token head_row (prefill) or of all n tokens (decode) go to ws.logits.
absl::Status GpuDecoderModel::Impl::EnqueueForward(int n, bool decode, int head_row, bool head) {
  const ResolvedConfig& c = cfg;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t q_dim = int64_t{c.num_heads} * hd, kv_dim = int64_t{c.num_kv_heads} * hd;
  const gpu::LinearScratch scratch{.rotated = ws.rotated,
                                   .dense_in = ws.dense_in,
                                   .dequant = ws.dequant,
                                   .dequant_elems = ws.dequant_elems,
                                   .offset_terms = ws.offset_terms,
                                   .offset_term_groups = ws.offset_term_groups,
                                   .offset_term_rows = kc::kGemvMaxBatch,
                                   .cublas = cublas};
  auto norm = [&](float* residual, const float* delta, const float* weight, float* out) {
    kc::ResidualRmsNormParams p;
    p.residual = residual;
    p.delta = delta;
    p.delta_stride = H;
    p.weight = weight;
    p.weight_offset = c.norm_weight_offset;
    p.eps = c.rms_norm_eps;
    p.out_f32 = out;
    p.tokens = n;
    p.hidden = H;
    return kc::LaunchResidualRmsNorm(p, stream);
  };
  // The residual stream: ws.x, or ws.x_spare after an odd number of rotating GEMVs with a norm
  // input (each writes the updated residual to the other buffer). Decided while enqueuing, so
  // every replay of a captured step takes the same buffers.
  float* residual = ws.x;
  float* residual_spare = ws.x_spare;
  // A group reading the residual stream (+ delta) RMS-normalised with `weight` (q/k/v, gate/up): a
  // quantized group normalises inside its rotation, so the norm is neither launched nor written;
  // otherwise the norm kernel writes ws.h first.
  auto normed_group = [&](absl::Span<const LinearOutput> group, const float* delta,
                          const float* weight) -> absl::Status {
    if (!gpu::AllQuantized(group)) {
      BITLOOM_RETURN_IF_ERROR(norm(residual, delta, weight, ws.h));
      return gpu::RunLinearGroup(group, {ws.h, H}, n, scratch, stream);
    }
    gpu::LinearInput in;
    in.norm.residual = residual;
    in.norm.residual_stride = H;
    in.norm.delta = delta;
    in.norm.delta_stride = H;
    in.norm.weight = weight;
    in.norm.weight_offset = c.norm_weight_offset;
    in.norm.eps = c.rms_norm_eps;
    in.allow_rotating_gemv = options.rotating_gemv;
    in.residual_out = residual_spare;
    if (!gpu::UsesRotatingGemv(group, in, n)) {
      in.residual_out = nullptr;
      return gpu::RunLinearGroup(group, in, n, scratch, stream);
    }
    BITLOOM_RETURN_IF_ERROR(gpu::RunRotatingGemv(group, in, stream));
    std::swap(residual, residual_spare);
    return absl::OkStatus();
  };

  BITLOOM_RETURN_IF_ERROR(kc::LaunchEmbeddingGather(
      {weights.embed, ws.ids, ws.x, c.vocab_size, H, n, c.embedding_scale, nullptr}, stream));
  for (int li = 0; li < c.num_layers; ++li) {
    const gpu::GpuLayerWeights& L = weights.layers[li];
    const bool sliding = c.layer_is_sliding[li];
    const LinearOutput qkv[] = {{&L.q_proj, ws.q, q_dim}, {&L.k_proj, ws.k, kv_dim}, {&L.v_proj, ws.v, kv_dim}};
    // The previous layer's residual add (its MLP output in ws.o) happens in this norm.
    BITLOOM_RETURN_IF_ERROR(normed_group(qkv, li == 0 ? nullptr : ws.o, L.attn_norm));

    uint16_t* k_cache = reinterpret_cast<uint16_t*>(kv->Keys(li));
    uint16_t* v_cache = reinterpret_cast<uint16_t*>(kv->Values(li));
    kc::QkvRopeParams rp;
    rp.q = ws.q;
    rp.q_stride = q_dim;
    rp.k = ws.k;
    rp.k_stride = kv_dim;
    rp.v = ws.v;
    rp.v_stride = kv_dim;
    rp.tokens = n;
    rp.num_heads = c.num_heads;
    rp.num_kv_heads = c.num_kv_heads;
    rp.head_dim = c.head_dim;
    rp.positions = ws.positions;
    rp.inv_freq = sliding ? weights.local_inv_freq : weights.global_inv_freq;
    rp.attention_scaling = sliding ? weights.local_attention_scaling : weights.global_attention_scaling;
    rp.q_norm = L.q_norm;
    rp.k_norm = L.k_norm;
    rp.norm_eps = c.rms_norm_eps;
    rp.norm_weight_offset = c.norm_weight_offset;
    rp.q_out_f32 = ws.q_rope;
    rp.k_cache = k_cache;
    rp.v_cache = v_cache;
    rp.num_pages = kv->num_pages();
    rp.page_size = options.page_size;
    rp.block_tables = ws.block_tables;
    rp.max_pages_per_seq = max_pages;
    rp.token_seq = ws.token_seq;
    BITLOOM_RETURN_IF_ERROR(kc::LaunchQkvRope(rp, stream));

    kc::PagedKvCache cache;
    cache.k = k_cache;
    cache.v = v_cache;
    cache.page_size = options.page_size;
    cache.num_kv_heads = c.num_kv_heads;
    cache.head_dim = c.head_dim;
    cache.block_tables = ws.block_tables;
    cache.max_pages_per_seq = max_pages;
    const int window = sliding ? c.sliding_window : 0;
    kc::DecodeAttentionSplits deferred;  // set when o_proj's rotation merges the attention splits
    if (decode) {
      kc::PagedDecodeAttentionParams ap;
      ap.cache = cache;
      ap.q = ws.q_rope;
      ap.q_type = kc::ActivationType::kF32;
      ap.out = ws.attn;
      ap.out_type = kc::ActivationType::kF32;
      ap.seq_lens = ws.seq_lens;
      ap.batch = n;
      ap.num_heads = c.num_heads;
      ap.max_seq_len = options.max_seq_len;
      ap.scale = c.attention_scale;
      ap.logit_softcap = c.attn_logit_softcap;
      ap.sliding_window = window;
      ap.workspace = ws.attention_ws;
      ap.workspace_bytes = ws.attention_ws_bytes;
      if (options.fuse_attention_combine && n >= kMergeSplitsMinRows && sm >= 90) {
        const kc::DecodeAttentionSplits splits = kc::DeferredDecodeSplits(ap);
        if (gpu::TakesAttentionSplits(L.o_proj, splits, n, sm)) deferred = splits;
      }
      ap.defer_combine = deferred.acc != nullptr;
      BITLOOM_RETURN_IF_ERROR(kc::LaunchPagedDecodeAttention(ap, stream));
    } else {
      kc::PagedPrefillAttentionParams ap;
      ap.cache = cache;
      ap.q = ws.q_rope;
      ap.q_type = kc::ActivationType::kF32;
      ap.out = ws.attn;
      ap.out_type = kc::ActivationType::kF32;
      ap.token_seq = ws.token_seq;
      ap.token_pos = ws.positions;
      ap.num_tokens = n;
      ap.num_heads = c.num_heads;
      ap.scale = c.attention_scale;
      ap.logit_softcap = c.attn_logit_softcap;
      ap.sliding_window = window;
      BITLOOM_RETURN_IF_ERROR(kc::LaunchPagedPrefillAttention(ap, stream));
    }
    const LinearOutput o_out[] = {{&L.o_proj, ws.o, H}};
    gpu::LinearInput attn_in{ws.attn, q_dim};
    attn_in.allow_rotating_gemv = options.rotating_gemv;
    attn_in.splits = deferred;
    BITLOOM_RETURN_IF_ERROR(gpu::RunLinearGroup(o_out, attn_in, n, scratch, stream));
    if (c.sandwich_norms) BITLOOM_RETURN_IF_ERROR(norm(ws.o, nullptr, L.post_attn_norm, ws.o));

    const LinearOutput gate_up[] = {{&L.gate_proj, ws.gate, I}, {&L.up_proj, ws.up, I}};
    BITLOOM_RETURN_IF_ERROR(normed_group(gate_up, ws.o, L.mlp_norm));
    const LinearOutput down[] = {{&L.down_proj, ws.o, H}};
    if (L.down_proj.quantized) {
      // The down projection's rotation forms act(gate) · up as it loads them.
      gpu::LinearInput in{ws.gate, I};
      in.gated = {ws.up, I, c.activation};
      BITLOOM_RETURN_IF_ERROR(gpu::RunLinearGroup(down, in, n, scratch, stream));
    } else {
      kc::GatedActivationParams gp;
      gp.gate = ws.gate;
      gp.gate_stride = I;
      gp.up = ws.up;
      gp.up_stride = I;
      gp.out_f32 = ws.act;
      gp.rows = n;
      gp.dim = I;
      gp.activation = c.activation;
      BITLOOM_RETURN_IF_ERROR(kc::LaunchGatedActivation(gp, stream));
      BITLOOM_RETURN_IF_ERROR(gpu::RunLinearGroup(down, {ws.act, I}, n, scratch, stream));
    }
    if (c.sandwich_norms) BITLOOM_RETURN_IF_ERROR(norm(ws.o, nullptr, L.post_mlp_norm, ws.o));
  }
  if (!head) return absl::OkStatus();
  // The last layer's residual add, fused with the final norm.
  BITLOOM_RETURN_IF_ERROR(norm(residual, ws.o, weights.final_norm, ws.h));
  const int first = decode ? 0 : head_row;
  const int head_rows = decode ? n : 1;
  const LinearOutput logits[] = {{&weights.head, ws.logits, c.vocab_size}};
  BITLOOM_RETURN_IF_ERROR(
      gpu::RunLinearGroup(logits, {ws.h + int64_t{first} * H, H}, head_rows, scratch, stream));
  if (c.final_logit_softcap > 0.0f) {
    BITLOOM_RETURN_IF_ERROR(
        gpu::LaunchSoftcap({ws.logits, c.vocab_size, head_rows, c.vocab_size, c.final_logit_softcap}, stream));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GpuDecoderModel>> GpuDecoderModel::Load(const modelstore::ArtifactReader& reader,
                                                                       VramPool* pool,
                                                                       const GpuModelOptions& options) {
  const v1::ModelConfig& config = reader.manifest().config();
  if (!GpuArchitecture(config.architecture())) {
    return absl::UnimplementedError(absl::StrCat("architecture \"", config.architecture(),
                                                 "\" is not run by the GPU engine (llama, mistral, qwen2, "
                                                 "qwen3, gemma3)"));
  }
  auto impl = std::make_unique<Impl>();
  impl->pool = pool;
  impl->options = options;
  impl->config = config;
  BITLOOM_ASSIGN_OR_RETURN(impl->cfg, ResolveConfig(config));
  const ResolvedConfig& c = impl->cfg;
  GpuModelOptions& o = impl->options;
  if (c.head_dim != 64 && c.head_dim != 128 && c.head_dim != 256) {
    return absl::UnimplementedError(absl::StrCat("head_dim ", c.head_dim,
                                                 " is not run by the GPU attention (64, 128 or 256)"));
  }
  if (o.max_batch < 1 || o.max_batch > kGpuMaxBatch) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch: ", o.max_batch, " is outside [1, ", kGpuMaxBatch, "]"));
  }
  if (o.max_seq_len == 0) o.max_seq_len = c.max_position_embeddings;
  if (o.max_seq_len <= 0) {
    return absl::InvalidArgumentError("max_seq_len: 0 and the model has no max_position_embeddings");
  }
  if (o.prefill_chunk < 8 || o.prefill_chunk % 8 != 0 || o.prefill_chunk > 65536) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill_chunk: ", o.prefill_chunk, " must be a multiple of 8 in [8, 65536]"));
  }
  if (o.token_count_sequences < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("token_count_sequences: ", o.token_count_sequences, " is negative"));
  }
  if ((o.kv_pages > 0) == (o.kv_bytes > 0)) {
    return absl::InvalidArgumentError("kv_pages / kv_bytes: set exactly one of the two");
  }
  if (pool == nullptr || !pool->on_device()) {
    return absl::FailedPreconditionError("GpuDecoderModel::Load needs a VRAM pool in device memory");
  }
  KvPageFormat format;
  format.num_layers = c.num_layers;
  format.num_kv_heads = c.num_kv_heads;
  format.head_dim = c.head_dim;
  format.page_size = o.page_size;
  BITLOOM_RETURN_IF_ERROR(format.Validate());

  int device = 0;
  cudaDeviceProp prop;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device));
  if (prop.major < 8) {
    return absl::FailedPreconditionError(
        absl::StrCat("the GPU engine needs compute capability 8.0 or newer; device ", device, " is ", prop.major,
                     ".", prop.minor));
  }
  impl->sm = prop.major * 10 + prop.minor;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking));
  BITLOOM_RETURN_IF_ERROR(gpu::CublasStatus(cublasCreate(&impl->cublas), "cublasCreate"));
  BITLOOM_RETURN_IF_ERROR(gpu::CublasStatus(cublasSetStream(impl->cublas, impl->stream), "cublasSetStream"));

  // Weights.
  BITLOOM_ASSIGN_OR_RETURN(const gpu::GpuWeightPlan plan, gpu::GpuWeightPlan::Build(reader, config, c, o.embedding_in_host));
  impl->weights_bytes = plan.region_bytes();
  BITLOOM_ASSIGN_OR_RETURN(uint8_t* const weights_base, impl->Allocate(RegionKind::kWeights, plan.region_bytes()));
  // KV cache.
  uint64_t kv_bytes = o.kv_bytes;
  if (o.kv_pages > 0) {
    BITLOOM_ASSIGN_OR_RETURN(kv_bytes, KvRegionBytes(format, o.kv_pages));
  }
  BITLOOM_ASSIGN_OR_RETURN(uint8_t* const kv_base, impl->Allocate(RegionKind::kKvCache, kv_bytes));
  impl->kv_bytes = kv_bytes;
  BITLOOM_ASSIGN_OR_RETURN(PagedKvCache kv, PagedKvCache::Create(format, kv_base, kv_bytes, o.max_seq_len));
  impl->kv.emplace(std::move(kv));
  impl->max_pages = impl->kv->max_pages_per_seq();
  // Workspace: sized in a first pass, then laid out over the region.
  impl->bucket_max = kBuckets[BucketIndex(o.max_batch)];
  impl->rows = std::max(impl->bucket_max, o.prefill_chunk);
  uint64_t ws_bytes = 0;
  BITLOOM_RETURN_IF_ERROR(impl->LayoutWorkspace(nullptr, &ws_bytes, plan));
  BITLOOM_ASSIGN_OR_RETURN(uint8_t* const ws_base, impl->Allocate(RegionKind::kWorkspace, ws_bytes));
  BITLOOM_RETURN_IF_ERROR(impl->LayoutWorkspace(ws_base, &ws_bytes, plan));
  impl->workspace_bytes = ws_bytes;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(ws_base, 0, ws_bytes, impl->stream));
  if (impl->ws.cublas_ws != nullptr) {
    BITLOOM_RETURN_IF_ERROR(gpu::CublasStatus(
        cublasSetWorkspace(impl->cublas, impl->ws.cublas_ws, kCublasWorkspaceBytes), "cublasSetWorkspace"));
  }

  BITLOOM_ASSIGN_OR_RETURN(impl->weights, plan.Upload(reader, weights_base, impl->stream));
  if (o.tiled_gemv) {
    // The groups EnqueueForward launches together.
    auto retile = [&](std::initializer_list<gpu::GpuLinear*> group) -> absl::Status {
      BITLOOM_ASSIGN_OR_RETURN(const uint64_t bytes, gpu::RetileGroup({group.begin(), group.size()}, impl->stream));
      impl->tiled_bytes += bytes;
      return absl::OkStatus();
    };
    for (gpu::GpuLayerWeights& L : impl->weights.layers) {
      BITLOOM_RETURN_IF_ERROR(retile({&L.q_proj, &L.k_proj, &L.v_proj}));
      BITLOOM_RETURN_IF_ERROR(retile({&L.o_proj}));
      BITLOOM_RETURN_IF_ERROR(retile({&L.gate_proj, &L.up_proj}));
      BITLOOM_RETURN_IF_ERROR(retile({&L.down_proj}));
    }
    BITLOOM_RETURN_IF_ERROR(retile({&impl->weights.head}));
  }
  impl->h_ids.assign(impl->rows, 0);
  impl->h_positions.assign(impl->rows, 0);
  impl->h_token_seq.assign(impl->rows, 0);
  impl->h_seq_lens.assign(impl->bucket_max, 0);
  impl->h_tables.assign(static_cast<size_t>(impl->bucket_max) * impl->max_pages, 0);
  impl->h_count_rows.assign(impl->bucket_max, -1);
  impl->h_gather_rows.assign(impl->bucket_max, -1);
  if (impl->counting()) {
    for (int r = o.token_count_sequences - 1; r >= 0; --r) impl->free_count_rows.push_back(r);
  }

  // One graph per bucket, captured now so that serving never instantiates one. Capture only
  // records launches: the workspace's contents do not matter here.
  if (o.use_cuda_graphs) {
    // One eager pass per bucket first, so that lazy module loading and cuBLAS's first-call set-up
    // happen outside capture. The zeroed inputs make it harmless: every row has length 0 and stores
    // its K/V in slot 0 of page 0, which no sequence owns yet.
    for (int b = 0; b < static_cast<int>(kBuckets.size()) && kBuckets[b] <= impl->bucket_max; ++b) {
      BITLOOM_RETURN_IF_ERROR(impl->EnqueueForward(kBuckets[b], /*decode=*/true, 0, /*head=*/true));
    }
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(impl->stream));
    for (int b = 0; b < static_cast<int>(kBuckets.size()) && kBuckets[b] <= impl->bucket_max; ++b) {
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(impl->stream, cudaStreamCaptureModeThreadLocal));
      const absl::Status enqueued = impl->EnqueueForward(kBuckets[b], /*decode=*/true, 0, /*head=*/true);
      cudaGraph_t graph = nullptr;
      const cudaError_t ended = cudaStreamEndCapture(impl->stream, &graph);
      BITLOOM_RETURN_IF_ERROR(enqueued);
      BITLOOM_CUDA_RETURN_IF_ERROR(ended);
      const cudaError_t made = cudaGraphInstantiate(&impl->graphs[b], graph, 0);
      cudaGraphDestroy(graph);
      BITLOOM_CUDA_RETURN_IF_ERROR(made);
    }
  }
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(impl->stream));
  return std::unique_ptr<GpuDecoderModel>(new GpuDecoderModel(std::move(impl)));
}

GpuDecoderModel::GpuDecoderModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GpuDecoderModel::~GpuDecoderModel() = default;

const ResolvedConfig& GpuDecoderModel::resolved() const { return impl_->cfg; }
const GpuModelOptions& GpuDecoderModel::options() const { return impl_->options; }
int GpuDecoderModel::vocab_size() const { return impl_->cfg.vocab_size; }
cudaStream_t GpuDecoderModel::stream() const { return impl_->stream; }
const PagedKvCache& GpuDecoderModel::kv_cache() const { return *impl_->kv; }
const float* GpuDecoderModel::device_logits() const { return impl_->ws.logits; }
uint64_t GpuDecoderModel::weights_bytes() const { return impl_->weights_bytes; }
uint64_t GpuDecoderModel::kv_bytes() const { return impl_->kv_bytes; }
uint64_t GpuDecoderModel::workspace_bytes() const { return impl_->workspace_bytes; }
uint64_t GpuDecoderModel::host_bytes() const { return impl_->weights.host_bytes; }
uint64_t GpuDecoderModel::tiled_bytes() const { return impl_->tiled_bytes; }

absl::StatusOr<SequenceId> GpuDecoderModel::AddSequence() {
  PagedKvCache& kv = *impl_->kv;
  if (kv.pages_free() == 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache exhausted: no page free for a new sequence (", kv.num_pages(), " pages in use)"));
  }
  const SequenceId seq = impl_->next_seq++;
  BITLOOM_RETURN_IF_ERROR(kv.Reserve(seq, 0));
  Impl& m = *impl_;
  if (m.counting() && !m.free_count_rows.empty()) {
    // Zeroed in stream order, before any kernel of this sequence counts into the row.
    const int32_t row = m.free_count_rows.back();
    const size_t row_bytes = static_cast<size_t>(m.cfg.vocab_size) * sizeof(int32_t);
    absl::Status zeroed = kc::CudaStatus(
        cudaMemsetAsync(m.ws.prompt_counts + static_cast<int64_t>(row) * m.cfg.vocab_size, 0, row_bytes, m.stream),
        "cudaMemsetAsync(prompt counts)", __FILE__, __LINE__);
    if (zeroed.ok()) {
      zeroed = kc::CudaStatus(
          cudaMemsetAsync(m.ws.output_counts + static_cast<int64_t>(row) * m.cfg.vocab_size, 0, row_bytes, m.stream),
          "cudaMemsetAsync(output counts)", __FILE__, __LINE__);
    }
    if (!zeroed.ok()) {
      kv.Release(seq).IgnoreError();
      return zeroed;
    }
    m.free_count_rows.pop_back();
    m.count_row[seq] = row;
  }
  return seq;
}

absl::Status GpuDecoderModel::Release(SequenceId seq) {
  Impl& m = *impl_;
  if (const auto it = m.count_row.find(seq); it != m.count_row.end()) {
    m.free_count_rows.push_back(it->second);
    m.count_row.erase(it);
  }
  return m.kv->Release(seq);
}

bool GpuDecoderModel::HasTokenCounts(SequenceId seq) const { return impl_->CountRow(seq) >= 0; }

int GpuDecoderModel::Length(SequenceId seq) const { return impl_->kv->Length(seq); }

absl::Status GpuDecoderModel::Impl::CheckTokens(absl::Span<const int32_t> tokens) const {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= cfg.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token ", i, ": id ", tokens[i], " is outside [0, vocab_size = ", cfg.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> GpuDecoderModel::Prefill(SequenceId seq, absl::Span<const int32_t> tokens) {
  Impl& m = *impl_;
  PagedKvCache& kv = *m.kv;
  if (tokens.empty()) return absl::InvalidArgumentError("Prefill: no tokens");
  if (!kv.Contains(seq)) return absl::NotFoundError(absl::StrCat("Prefill: unknown sequence ", seq));
  BITLOOM_RETURN_IF_ERROR(m.CheckTokens(tokens));
  const int start = kv.Length(seq);
  const int n = static_cast<int>(tokens.size());
  if (static_cast<int64_t>(start) + n > kv.max_seq_len()) {
    return absl::InvalidArgumentError(absl::StrCat("Prefill: sequence ", seq, " of ", start, " tokens plus ", n,
                                                   " exceeds max_seq_len ", kv.max_seq_len()));
  }
  BITLOOM_RETURN_IF_ERROR(kv.Reserve(seq, start + n));
  auto run = [&]() -> absl::Status {
    const cudaStream_t stream = m.stream;
    BITLOOM_RETURN_IF_ERROR(kv.FillBlockTable(seq, absl::MakeSpan(m.h_tables.data(), m.max_pages)));
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(m.ws.block_tables, m.h_tables.data(), m.max_pages * sizeof(int32_t),
                                                 cudaMemcpyHostToDevice, stream));
    const int chunk = m.options.prefill_chunk;
    for (int c0 = 0; c0 < n; c0 += chunk) {
      const int len = std::min(chunk, n - c0);
      for (int i = 0; i < len; ++i) {
        m.h_ids[i] = tokens[c0 + i];
        m.h_positions[i] = start + c0 + i;
        m.h_token_seq[i] = 0;
      }
      BITLOOM_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(m.ws.ids, m.h_ids.data(), len * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(m.ws.positions, m.h_positions.data(), len * sizeof(int32_t),
                                                   cudaMemcpyHostToDevice, stream));
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(m.ws.token_seq, m.h_token_seq.data(), len * sizeof(int32_t),
                                                   cudaMemcpyHostToDevice, stream));
      if (const int32_t row = m.CountRow(seq); row >= 0) {
        BITLOOM_RETURN_IF_ERROR(gpu::LaunchCountTokens(
            {.counts = m.ws.prompt_counts, .vocab = m.cfg.vocab_size, .ids = m.ws.ids, .row = row, .n = len},
            stream));
      }
      const bool last = c0 + len == n;
      BITLOOM_RETURN_IF_ERROR(m.EnqueueForward(len, /*decode=*/false, len - 1, /*head=*/last));
    }
    return absl::OkStatus();
  };
  std::vector<float> logits(m.cfg.vocab_size);
  absl::Status status = run();
  if (status.ok()) {
    status = kc::CudaStatus(cudaMemcpyAsync(logits.data(), m.ws.logits, logits.size() * sizeof(float),
                                            cudaMemcpyDeviceToHost, m.stream),
                            "cudaMemcpyAsync(logits)", __FILE__, __LINE__);
  }
  const absl::Status synced =
      kc::CudaStatus(cudaStreamSynchronize(m.stream), "cudaStreamSynchronize", __FILE__, __LINE__);
  if (status.ok()) status = synced;
  if (!status.ok()) {
    kv.Truncate(seq, start).IgnoreError();
    return status;
  }
  return logits;
}

absl::Status GpuDecoderModel::Impl::RunDecode(absl::Span<const SequenceId> seqs, absl::Span<const int32_t> tokens) {
  PagedKvCache& cache = *kv;
  const int b = static_cast<int>(seqs.size());
  if (b < 1 || b > options.max_batch) {
    return absl::InvalidArgumentError(absl::StrCat("DecodeStep: ", b, " sequences, expected 1..max_batch = ",
                                                   options.max_batch));
  }
  if (tokens.size() != seqs.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("DecodeStep: ", seqs.size(), " sequences but ", tokens.size(), " tokens"));
  }
  BITLOOM_RETURN_IF_ERROR(CheckTokens(tokens));
  absl::flat_hash_set<SequenceId> seen;
  for (SequenceId s : seqs) {
    if (!cache.Contains(s)) return absl::NotFoundError(absl::StrCat("DecodeStep: unknown sequence ", s));
    if (!seen.insert(s).second) {
      return absl::InvalidArgumentError(absl::StrCat("DecodeStep: sequence ", s, " appears twice"));
    }
    if (cache.Length(s) + 1 > cache.max_seq_len()) {
      return absl::InvalidArgumentError(absl::StrCat("DecodeStep: sequence ", s, " is at max_seq_len ",
                                                     cache.max_seq_len()));
    }
  }
  // Grow every sequence by one token; on failure undo the ones already grown.
  std::vector<int> lengths(b);
  for (int i = 0; i < b; ++i) lengths[i] = cache.Length(seqs[i]);
  for (int i = 0; i < b; ++i) {
    if (absl::Status s = cache.Reserve(seqs[i], lengths[i] + 1); !s.ok()) {
      for (int j = 0; j < i; ++j) cache.Truncate(seqs[j], lengths[j]).IgnoreError();
      return s;
    }
  }
  const int bucket = BucketIndex(b);
  const int B = kBuckets[bucket];
  for (int i = 0; i < B; ++i) {
    const bool real = i < b;
    h_ids[i] = real ? tokens[i] : 0;
    h_positions[i] = real ? lengths[i] : -1;  // a padding row stores nothing and sees nothing
    h_token_seq[i] = i;
    h_seq_lens[i] = real ? lengths[i] + 1 : 0;
    h_count_rows[i] = real ? CountRow(seqs[i]) : -1;
    absl::Span<int32_t> row(h_tables.data() + static_cast<size_t>(i) * max_pages, max_pages);
    if (real) {
      if (absl::Status s = cache.FillBlockTable(seqs[i], row); !s.ok()) return s;
    } else {
      std::fill(row.begin(), row.end(), 0);
    }
  }
  auto run = [&]() -> absl::Status {
    BITLOOM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(ws.ids, h_ids.data(), B * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
    BITLOOM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(ws.positions, h_positions.data(), B * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
    BITLOOM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(ws.token_seq, h_token_seq.data(), B * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
    BITLOOM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(ws.seq_lens, h_seq_lens.data(), B * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ws.block_tables, h_tables.data(),
                                                 static_cast<size_t>(B) * max_pages * sizeof(int32_t),
                                                 cudaMemcpyHostToDevice, stream));
    if (counting()) {
      // This step's tokens join their sequences' output counts (before the sampler reads them).
      BITLOOM_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(ws.count_rows, h_count_rows.data(), B * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
      BITLOOM_RETURN_IF_ERROR(gpu::LaunchCountTokens(
          {.counts = ws.output_counts, .vocab = cfg.vocab_size, .ids = ws.ids, .rows = ws.count_rows, .n = B}, stream));
    }
    if (options.use_cuda_graphs) {
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(graphs[bucket], stream));
      return absl::OkStatus();
    }
    return EnqueueForward(B, /*decode=*/true, 0, /*head=*/true);
  };
  if (absl::Status s = run(); !s.ok()) {
    cudaStreamSynchronize(stream);
    for (int i = 0; i < b; ++i) cache.Truncate(seqs[i], lengths[i]).IgnoreError();
    return s;
  }
  return absl::OkStatus();
}

absl::Status GpuDecoderModel::DecodeStepOnDevice(absl::Span<const SequenceId> seqs,
                                                 absl::Span<const int32_t> tokens) {
  BITLOOM_RETURN_IF_ERROR(impl_->RunDecode(seqs, tokens));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(impl_->stream));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> GpuDecoderModel::DecodeStep(absl::Span<const SequenceId> seqs,
                                                               absl::Span<const int32_t> tokens) {
  Impl& m = *impl_;
  BITLOOM_RETURN_IF_ERROR(m.RunDecode(seqs, tokens));
  std::vector<float> logits(seqs.size() * static_cast<size_t>(m.cfg.vocab_size));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits.data(), m.ws.logits, logits.size() * sizeof(float),
                                               cudaMemcpyDeviceToHost, m.stream));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(m.stream));
  return logits;
}

absl::StatusOr<std::vector<int32_t>> GpuDecoderModel::DecodeAndSample(
    absl::Span<const SequenceId> seqs, absl::Span<const int32_t> tokens,
    absl::Span<const kc::SamplingRowParams> rows, absl::Span<const double> uniforms) {
  Impl& m = *impl_;
  if (!m.options.enable_sampling) {
    return absl::FailedPreconditionError("DecodeAndSample: the model was loaded with enable_sampling = false");
  }
  const size_t b = seqs.size();
  if (rows.size() != b) {
    return absl::InvalidArgumentError(absl::StrCat("DecodeAndSample: ", b, " sequences but ", rows.size(), " rows"));
  }
  if (b < 1 || b > static_cast<size_t>(m.options.max_batch)) {
    return absl::InvalidArgumentError(absl::StrCat("DecodeAndSample: ", b, " sequences, expected 1..max_batch = ",
                                                   m.options.max_batch));
  }
  bool greedy_only = true;
  bool penalised = false;
  for (size_t i = 0; i < b; ++i) {
    const kc::SamplingRowParams& r = rows[i];
    const bool penalty = (r.repetition_penalty != 0.0f && r.repetition_penalty != 1.0f) ||
                         r.presence_penalty != 0.0f || r.frequency_penalty != 0.0f;
    const int32_t count_row = m.CountRow(seqs[i]);
    if (penalty && count_row < 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "DecodeAndSample: row ", i, " has a penalty but sequence ", seqs[i],
          " has no token counts on the device (token_count_sequences = ", m.options.token_count_sequences, ")"));
    }
    m.h_gather_rows[i] = penalty ? count_row : -1;
    penalised = penalised || penalty;
    if (r.temperature != 0.0f) greedy_only = false;
  }
  if (!greedy_only && uniforms.size() != b) {
    return absl::InvalidArgumentError(
        absl::StrCat("DecodeAndSample: ", b, " sequences but ", uniforms.size(), " uniforms"));
  }
  BITLOOM_RETURN_IF_ERROR(m.RunDecode(seqs, tokens));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(m.ws.sampling_rows, rows.data(), b * sizeof(kc::SamplingRowParams),
                                               cudaMemcpyHostToDevice, m.stream));
  if (!greedy_only) {
    BITLOOM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(m.ws.uniforms, uniforms.data(), b * sizeof(double), cudaMemcpyHostToDevice, m.stream));
  }
  if (penalised) {
    // The penalised rows' counts in batch order; the sampler reads no counts of the other rows.
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(m.ws.gather_rows, m.h_gather_rows.data(), b * sizeof(int32_t),
                                                 cudaMemcpyHostToDevice, m.stream));
    const int batch = static_cast<int>(b);
    const int64_t vocab = m.cfg.vocab_size;
    BITLOOM_RETURN_IF_ERROR(gpu::LaunchGatherCountRows(
        {m.ws.prompt_counts, m.ws.batch_prompt_counts, m.ws.gather_rows, batch, vocab}, m.stream));
    BITLOOM_RETURN_IF_ERROR(gpu::LaunchGatherCountRows(
        {m.ws.output_counts, m.ws.batch_output_counts, m.ws.gather_rows, batch, vocab}, m.stream));
  }
  kc::SamplingParams sp;
  sp.logits = m.ws.logits;
  sp.logits_stride = m.cfg.vocab_size;
  sp.rows = m.ws.sampling_rows;
  sp.prompt_counts = penalised ? m.ws.batch_prompt_counts : nullptr;
  sp.output_counts = penalised ? m.ws.batch_output_counts : nullptr;
  sp.uniforms = greedy_only ? nullptr : m.ws.uniforms;
  sp.tokens = m.ws.sampled;
  sp.batch = static_cast<int>(b);
  sp.vocab = m.cfg.vocab_size;
  sp.greedy_only = greedy_only;
  sp.workspace = m.ws.sampling_ws;
  sp.workspace_bytes = m.ws.sampling_ws_bytes;
  BITLOOM_RETURN_IF_ERROR(kc::LaunchSampling(sp, m.stream));
  std::vector<int32_t> out(b);
  BITLOOM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(out.data(), m.ws.sampled, b * sizeof(int32_t), cudaMemcpyDeviceToHost, m.stream));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(m.stream));
  return out;
}

absl::StatusOr<std::vector<float>> GpuDecoderModel::ReadLogits(int row) {
  Impl& m = *impl_;
  if (row < 0 || row >= m.options.max_batch) {
    return absl::InvalidArgumentError(absl::StrCat("ReadLogits: row ", row, " is outside [0, max_batch = ",
                                                   m.options.max_batch, ")"));
  }
  std::vector<float> logits(m.cfg.vocab_size);
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits.data(), m.ws.logits + static_cast<int64_t>(row) * m.cfg.vocab_size,
                                               logits.size() * sizeof(float), cudaMemcpyDeviceToHost, m.stream));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(m.stream));
  return logits;
}

}  // namespace bitloom::engine
