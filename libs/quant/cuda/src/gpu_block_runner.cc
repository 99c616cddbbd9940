#include "bitloom/quant/cuda/gpu_block_runner.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/engine/rope_tables.h"
#include "bitloom/formats/tensor_names.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/cuda/gated_activation.h"
#include "bitloom/kernels/cuda/hadamard_rotation.h"
#include "bitloom/kernels/cuda/paged_attention.h"
#include "bitloom/kernels/cuda/qkv_rope.h"
#include "bitloom/kernels/cuda/residual_rms_norm.h"
#include "device_array.h"
#include "library_status.h"
#include "row_bias.h"

namespace bitloom::quant::cuda {

namespace kc = kernels::cuda;
using internal::DeviceArray;

namespace {

// Tokens per page of the chunk's K/V cache. Any power of two works: each sequence owns a
// contiguous run of pages, so the page size only sets the rounding of a sequence's last page.
constexpr int kPageSize = 16;

// The seven linear weights of a block in Sites() order (attn_in: q, k, v; o_in: o; mlp_in: gate,
// up; down_in: down), as indices into Impl::weights.
enum Linear { kQ, kK, kV, kO, kGate, kUp, kDown, kNumLinears };

// An owned cudaHostAlloc'ed (pinned) array: DMA at full link speed and truly asynchronous copies.
class PinnedArray {
 public:
  PinnedArray() = default;
  ~PinnedArray() { Release(); }
  PinnedArray(const PinnedArray&) = delete;
  PinnedArray& operator=(const PinnedArray&) = delete;
  absl::Status Reserve(size_t n) {
    if (n <= size_) return absl::OkStatus();
    Release();
    void* p = nullptr;
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaHostAlloc(&p, n * sizeof(float), cudaHostAllocDefault));
    ptr_ = static_cast<float*>(p);
    size_ = n;
    return absl::OkStatus();
  }
  float* get() const { return ptr_; }

 private:
  void Release() {
    if (ptr_ != nullptr) cudaFreeHost(ptr_);
    ptr_ = nullptr;
    size_ = 0;
  }
  float* ptr_ = nullptr;
  size_t size_ = 0;
};

absl::Status Upload(DeviceArray<float>* dst, const std::vector<float>& src, cudaStream_t stream) {
  if (absl::Status s = dst->Reserve(static_cast<int64_t>(src.size())); !s.ok()) return s;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst->get(), src.data(), src.size() * sizeof(float),
                                               cudaMemcpyHostToDevice, stream));
  return absl::OkStatus();
}

}  // namespace

// Per-layer parameters other than the linear weights; empty arrays for what the model lacks.
struct LayerParams {
  DeviceArray<float> attn_norm, mlp_norm, post_attn_norm, post_mlp_norm, q_norm, k_norm;
  DeviceArray<float> q_bias, k_bias, v_bias, o_bias;
  bool sliding = false;
};

struct GpuBlockRunner::Impl {
  engine::ResolvedConfig cfg;
  GpuBlockRunnerOptions options;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  DeviceArray<float> global_inv_freq, local_inv_freq;
  float global_scaling = 1.0f, local_scaling = 1.0f;
  std::vector<LayerParams> layers;
  const engine::DecoderModel* model = nullptr;  // the stored weights (borrowed)
  DeviceArray<float> linear[kNumLinears];  // this call's substituted weights, fp32
  // The stored (source) weights of each block, fp32, once resident (options.resident_weights):
  // a forward with stored weights then uploads nothing. `refused`: there was no room for it.
  struct StoredBlock {
    DeviceArray<float> w[kNumLinears];
    bool resident = false, refused = false;
  };
  std::vector<StoredBlock> stored;
  int64_t resident_bytes = 0;
  const float* active[kNumLinears] = {};  // what this call's GEMMs read: linear[i] or stored
  // Substitutes in rotated space (RunBlockRotated): their GEMM reads R·x. rotate[i] null: x.
  const kernels::HadamardRotation* rotate[kNumLinears] = {};
  DeviceArray<int8_t> rotate_base[kNumLinears];  // R's base matrix, p > 1 only
  DeviceArray<float> rotated_x;                  // R·x of the current site, [rows, in]
  const float* rotated_from = nullptr;           // the x that rotated_x holds R·x of (else null)
  const kernels::HadamardRotation* rotated_by = nullptr;
  // One chunk's activations (rows = chunk tokens).
  DeviceArray<float> x, h, q, k, v, q_rope, attn, o, gate, up;
  DeviceArray<uint16_t> k_cache, v_cache;
  DeviceArray<int32_t> positions, token_seq, block_tables;
  std::vector<float> host_site;  // a site's inputs for a host CaptureFn
  // Pinned staging, two of each so that the host copies of one chunk overlap the device's work on
  // the next: chunk c uses slot c % 2, and its events say when the device is done with the slot.
  PinnedArray staged_in[2], staged_out[2];
  PinnedArray staged_weight;  // one linear weight at a time
  cudaEvent_t slot_free[2] = {nullptr, nullptr};   // chunk's work done: staged_in reusable
  cudaEvent_t out_ready[2] = {nullptr, nullptr};   // chunk's output in staged_out

  ~Impl() {
    if (stream != nullptr) cudaStreamSynchronize(stream);
    for (cudaEvent_t e : {slot_free[0], slot_free[1], out_ready[0], out_ready[1]}) {
      if (e != nullptr) cudaEventDestroy(e);
    }
    if (cublas != nullptr) cublasDestroy(cublas);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  // dst[0, n) = src[0, n) on the host, split over the pool's threads (pageable <-> pinned copies
  // run at one core's memcpy speed otherwise, slower than the link).
  void HostCopy(float* dst, const float* src, size_t n) const {
    constexpr size_t kPiece = size_t{4} << 20;  // floats per task
    const size_t pieces = (n + kPiece - 1) / kPiece;
    auto copy = [&](size_t begin, size_t end) {
      for (size_t p = begin; p < end; ++p) {
        const size_t at = p * kPiece;
        std::memcpy(dst + at, src + at, std::min(kPiece, n - at) * sizeof(float));
      }
    };
    if (options.pool != nullptr && pieces > 1) {
      options.pool->ParallelFor(0, pieces, copy);
    } else {
      copy(0, pieces);
    }
  }

  std::vector<LinearSite> sites_of(int layer) const { return EngineBlockRunner(*model).Sites(layer); }
  int64_t q_dim() const { return int64_t{cfg.num_heads} * cfg.head_dim; }
  int64_t kv_dim() const { return int64_t{cfg.num_kv_heads} * cfg.head_dim; }

  // y [rows, out] = x [rows, in] · Wᵀ (W [out, in] row-major), + bias when given.
  absl::Status Gemm(const float* x_in, int64_t rows, Linear which, int64_t out, int64_t in,
                    const DeviceArray<float>& bias, float* y) {
    const float one = 1.0f, zero = 0.0f;
    if (rotate[which] != nullptr) {
      BITLOOM_ASSIGN_OR_RETURN(x_in, RotatedInput(x_in, rows, in, which));
    }
    // Column-major view: Yᵀ [out, rows] = W [out, in] (Wᵀ stored, ld in) · Xᵀ [in, rows].
    BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
        cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out), static_cast<int>(rows),
        static_cast<int>(in), &one, active[which], CUDA_R_32F, static_cast<int>(in), x_in,
        CUDA_R_32F, static_cast<int>(in), &zero, y, CUDA_R_32F, static_cast<int>(out),
        options.exact_fp32 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32,
        CUBLAS_GEMM_DEFAULT));
    if (bias.get() != nullptr) return internal::LaunchAddRowBias(y, bias.get(), rows, out, stream);
    return absl::OkStatus();
  }

  // R·x [rows, in] for substitute `which`, in rotated_x; the q/k/v (gate/up) substitutes of one
  // site share R, so the second and third reuse the first's rotation of the same x.
  absl::StatusOr<const float*> RotatedInput(const float* x_in, int64_t rows, int64_t in,
                                            Linear which) {
    const kernels::HadamardRotation* r = rotate[which];
    if (r->size() != in) {
      return absl::InvalidArgumentError(absl::StrCat("RunBlockRotated: rotation of width ",
                                                     r->size(), " for an input of width ", in));
    }
    if (rotated_from == x_in && rotated_by == r) return rotated_x.get();
    BITLOOM_RETURN_IF_ERROR(rotated_x.Reserve(rows * in));
    kc::HadamardRotateParams p;
    p.rotation = kc::DescribeRotation(*r, rotate_base[which].get());
    p.x_type = kc::ActivationType::kF32;
    p.x_stride = in;
    p.out_type = kc::ActivationType::kF32;
    p.out_stride = in;
    for (int64_t r0 = 0; r0 < rows; r0 += kc::kMaxRotateBatch) {
      p.x = x_in + r0 * in;
      p.out = rotated_x.get() + r0 * in;
      p.batch = static_cast<int>(std::min<int64_t>(kc::kMaxRotateBatch, rows - r0));
      BITLOOM_RETURN_IF_ERROR(kc::LaunchHadamardRotate(p, stream));
    }
    rotated_from = x_in;
    rotated_by = r;
    return rotated_x.get();
  }

  // out = norm(residual (+= delta)) · (w + offset); out may be null when delta is given.
  absl::Status Norm(float* residual, const float* delta, const DeviceArray<float>& w, float* out,
                    int64_t rows) {
    rotated_from = nullptr;  // a site's input is rewritten only after a norm
    kc::ResidualRmsNormParams p;
    p.residual = residual;
    p.delta = delta;
    p.delta_stride = cfg.hidden_size;
    p.weight = w.get();
    p.weight_offset = cfg.norm_weight_offset;
    p.eps = cfg.rms_norm_eps;
    p.out_f32 = out;
    p.tokens = rows;
    p.hidden = cfg.hidden_size;
    return kc::LaunchResidualRmsNorm(p, stream);
  }

  absl::Status Reserve(int64_t rows, int64_t chunk_seqs, int64_t seq_len);
  // dst (device) = src[0, n) (host, pageable) through the pinned weight buffer, queued on the
  // stream once the buffer's previous DMA is done.
  absl::Status StageWeight(float* dst, const float* src, size_t n);
  // Points active[] at the block's weights: each tensor of `weights` uploaded into linear[]; a
  // missing one INVALID_ARGUMENT unless `stored_fallback`, then the stored weight (resident, made
  // resident now, or uploaded into linear[] when the device has no room to keep it).
  // `rotated` (may be null): substitutes in rotated space, taken before `weights`.
  absl::Status UploadWeights(int layer, const std::vector<LinearSite>& sites,
                             const WeightMap& weights, bool stored_fallback,
                             const RotatedWeightMap* rotated = nullptr);
  // Makes block `layer`'s stored weights resident when options and free memory allow.
  absl::Status MakeResident(int layer);
  // One chunk of `seqs` sequences: hidden rows [rows, hidden] from `in` (host; null: x already
  // holds them) through the block; `see(site index, device x, rows)` after each site's input is
  // ready; the output to `out` (host) unless null (then it stays in x).
  template <typename See>
  absl::Status Chunk(int layer, const float* in, int64_t seqs, int64_t seq_len, See&& see,
                     float* out);
  template <typename See>
  absl::Status Run(int layer, const std::vector<LinearSite>& sites, const WeightMap& weights,
                   absl::Span<const float> hidden, int64_t sequences, int64_t seq_len, See&& see,
                   float* out, bool stored_fallback, const RotatedWeightMap* rotated = nullptr);
  absl::Status CheckHidden(absl::Span<const float> hidden, int64_t sequences,
                           int64_t seq_len) const;
  // Blocks [first, end) with their stored weights; the last one's output to `out` (host,
  // hidden.size() values).
  absl::Status RunStored(int first, int end, absl::Span<const float> hidden, int64_t sequences,
                         int64_t seq_len, float* out);
};

absl::Status GpuBlockRunner::Impl::Reserve(int64_t rows, int64_t chunk_seqs, int64_t seq_len) {
  const int64_t H = cfg.hidden_size, I = cfg.intermediate_size;
  for (DeviceArray<float>* a : {&x, &h, &o}) {
    if (absl::Status s = a->Reserve(rows * H); !s.ok()) return s;
  }
  for (DeviceArray<float>* a : {&q, &q_rope, &attn}) {
    if (absl::Status s = a->Reserve(rows * q_dim()); !s.ok()) return s;
  }
  for (DeviceArray<float>* a : {&k, &v}) {
    if (absl::Status s = a->Reserve(rows * kv_dim()); !s.ok()) return s;
  }
  for (DeviceArray<float>* a : {&gate, &up}) {
    if (absl::Status s = a->Reserve(rows * I); !s.ok()) return s;
  }
  const int64_t pages_per_seq = (seq_len + kPageSize - 1) / kPageSize;
  const int64_t pages = chunk_seqs * pages_per_seq;
  for (DeviceArray<uint16_t>* a : {&k_cache, &v_cache}) {
    if (absl::Status s = a->Reserve(pages * kPageSize * kv_dim()); !s.ok()) return s;
  }
  // The chunk's token table: sequence s, position p at row s·seq_len + p, its pages
  // s·pages_per_seq .. in order. The same for every chunk (a short last chunk uses a prefix).
  std::vector<int32_t> pos(rows), seq(rows), tables(pages);
  for (int64_t r = 0; r < rows; ++r) {
    pos[r] = static_cast<int32_t>(r % seq_len);
    seq[r] = static_cast<int32_t>(r / seq_len);
  }
  for (int64_t p = 0; p < pages; ++p) tables[p] = static_cast<int32_t>(p);
  const std::pair<DeviceArray<int32_t>*, const std::vector<int32_t>*> uploads[] = {
      {&positions, &pos}, {&token_seq, &seq}, {&block_tables, &tables}};
  for (const auto& [dst, src] : uploads) {
    if (absl::Status s = dst->Reserve(static_cast<int64_t>(src->size())); !s.ok()) return s;
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst->get(), src->data(),
                                                 src->size() * sizeof(int32_t),
                                                 cudaMemcpyHostToDevice, stream));
  }
  // The host tables are pageable: the copies have read them when they return.
  return absl::OkStatus();
}

absl::Status GpuBlockRunner::Impl::StageWeight(float* dst, const float* src, size_t n) {
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  BITLOOM_RETURN_IF_ERROR(staged_weight.Reserve(n));
  HostCopy(staged_weight.get(), src, n);
  BITLOOM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dst, staged_weight.get(), n * sizeof(float), cudaMemcpyHostToDevice, stream));
  return absl::OkStatus();
}

absl::Status GpuBlockRunner::Impl::MakeResident(int layer) {
  StoredBlock& b = stored[layer];
  if (b.resident || b.refused) return absl::OkStatus();
  const engine::LayerLinearWeights own = model->linear_weights(layer);
  const absl::Span<const float> spans[kNumLinears] = {own.q_proj,    own.k_proj,  own.v_proj,
                                                      own.o_proj,    own.gate_proj, own.up_proj,
                                                      own.down_proj};
  int64_t bytes = 0;
  for (const auto& w : spans) bytes += static_cast<int64_t>(w.size() * sizeof(float));
  size_t free_bytes = 0, total_bytes = 0;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
  if (!options.resident_weights ||
      static_cast<int64_t>(free_bytes) < bytes + options.resident_reserve_bytes) {
    b.refused = true;
    return absl::OkStatus();
  }
  for (int i = 0; i < kNumLinears; ++i) {
    BITLOOM_RETURN_IF_ERROR(b.w[i].Reserve(static_cast<int64_t>(spans[i].size())));
    BITLOOM_RETURN_IF_ERROR(StageWeight(b.w[i].get(), spans[i].data(), spans[i].size()));
  }
  b.resident = true;
  resident_bytes += bytes;
  return absl::OkStatus();
}

absl::Status GpuBlockRunner::Impl::UploadWeights(int layer, const std::vector<LinearSite>& sites,
                                                 const WeightMap& weights, bool stored_fallback,
                                                 const RotatedWeightMap* rotated) {
  rotated_from = nullptr;
  const int64_t H = cfg.hidden_size, I = cfg.intermediate_size;
  const int64_t expected[kNumLinears] = {q_dim() * H, kv_dim() * H, kv_dim() * H, H * q_dim(),
                                         I * H,       I * H,        H * I};
  int index = 0;
  for (const LinearSite& site : sites) {
    for (const std::string& name : site.tensors) {
      if (index >= kNumLinears) return absl::InternalError("GpuBlockRunner: more than 7 linears");
      rotate[index] = nullptr;
      if (rotated != nullptr) {
        auto rt = rotated->find(name);
        if (rt != rotated->end()) {
          const std::vector<float>& w = rt->second.rotated;
          const kernels::HadamardRotation* r = rt->second.rotation;
          if (r == nullptr || static_cast<int64_t>(w.size()) != expected[index]) {
            return absl::InvalidArgumentError(absl::StrCat(
                "RunBlockRotated: ", name, ": ", w.size(), " values (the config implies ",
                expected[index], ")", r == nullptr ? " and no rotation" : ""));
          }
          BITLOOM_RETURN_IF_ERROR(linear[index].Reserve(static_cast<int64_t>(w.size())));
          BITLOOM_RETURN_IF_ERROR(StageWeight(linear[index].get(), w.data(), w.size()));
          if (r->base_order() > 1) {
            const std::vector<int8_t>& base = r->base_matrix();
            BITLOOM_RETURN_IF_ERROR(
                rotate_base[index].Reserve(static_cast<int64_t>(base.size())));
            // Pageable and tiny: the copy has read it when it returns.
            BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(rotate_base[index].get(), base.data(),
                                                         base.size(), cudaMemcpyHostToDevice,
                                                         stream));
          }
          rotate[index] = r;
          active[index] = linear[index].get();
          ++index;
          continue;
        }
      }
      auto it = weights.find(name);
      if (it == weights.end() && !stored_fallback) {
        return absl::InvalidArgumentError(absl::StrCat("RunBlock: no weight for ", name));
      }
      if (it == weights.end()) {
        BITLOOM_RETURN_IF_ERROR(MakeResident(layer));
        StoredBlock& b = stored[layer];
        if (b.resident) {
          active[index] = b.w[index].get();
        } else {
          // No room to keep it: this call's copy, as for a substitute.
          const engine::LayerLinearWeights own = model->linear_weights(layer);
          const absl::Span<const float> spans[kNumLinears] = {
              own.q_proj, own.k_proj, own.v_proj, own.o_proj, own.gate_proj, own.up_proj,
              own.down_proj};
          const absl::Span<const float> w = spans[index];
          BITLOOM_RETURN_IF_ERROR(linear[index].Reserve(static_cast<int64_t>(w.size())));
          BITLOOM_RETURN_IF_ERROR(StageWeight(linear[index].get(), w.data(), w.size()));
          active[index] = linear[index].get();
        }
        ++index;
        continue;
      }
      if (static_cast<int64_t>(it->second.size()) != expected[index]) {
        return absl::InvalidArgumentError(absl::StrCat("RunBlock: ", name, ": ", it->second.size(),
                                                       " values, the config implies ",
                                                       expected[index]));
      }
      const std::vector<float>& w = it->second;
      BITLOOM_RETURN_IF_ERROR(linear[index].Reserve(static_cast<int64_t>(w.size())));
      BITLOOM_RETURN_IF_ERROR(StageWeight(linear[index].get(), w.data(), w.size()));
      active[index] = linear[index].get();
      ++index;
    }
  }
  if (index != kNumLinears) return absl::InternalError("GpuBlockRunner: fewer than 7 linears");
  return absl::OkStatus();
}

template <typename See>
absl::Status GpuBlockRunner::Impl::Chunk(int layer, const float* in, int64_t seqs, int64_t seq_len,
                                         See&& see, float* out) {
  const engine::ResolvedConfig& c = cfg;
  const LayerParams& L = layers[layer];
  const int64_t n = seqs * seq_len, H = c.hidden_size, I = c.intermediate_size;
  if (in != nullptr) {
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(x.get(), in,
                                                 static_cast<size_t>(n * H) * sizeof(float),
                                                 cudaMemcpyHostToDevice, stream));
  }
  // Attention: h = norm(x); q, k, v (+ bias); q/k norm, RoPE, K/V to the cache; attend; o_proj.
  BITLOOM_RETURN_IF_ERROR(Norm(x.get(), nullptr, L.attn_norm, h.get(), n));
  BITLOOM_RETURN_IF_ERROR(see(0, h.get(), n));
  BITLOOM_RETURN_IF_ERROR(Gemm(h.get(), n, kQ, q_dim(), H, L.q_bias, q.get()));
  BITLOOM_RETURN_IF_ERROR(Gemm(h.get(), n, kK, kv_dim(), H, L.k_bias, k.get()));
  BITLOOM_RETURN_IF_ERROR(Gemm(h.get(), n, kV, kv_dim(), H, L.v_bias, v.get()));
  const int64_t pages_per_seq = (seq_len + kPageSize - 1) / kPageSize;
  kc::QkvRopeParams rp;
  rp.q = q.get();
  rp.q_stride = q_dim();
  rp.k = k.get();
  rp.k_stride = kv_dim();
  rp.v = v.get();
  rp.v_stride = kv_dim();
  rp.tokens = n;
  rp.num_heads = c.num_heads;
  rp.num_kv_heads = c.num_kv_heads;
  rp.head_dim = c.head_dim;
  rp.positions = positions.get();
  rp.inv_freq = L.sliding ? local_inv_freq.get() : global_inv_freq.get();
  rp.attention_scaling = L.sliding ? local_scaling : global_scaling;
  rp.q_norm = L.q_norm.get();
  rp.k_norm = L.k_norm.get();
  rp.norm_eps = c.rms_norm_eps;
  rp.norm_weight_offset = c.norm_weight_offset;
  rp.q_out_f32 = q_rope.get();
  rp.k_cache = k_cache.get();
  rp.v_cache = v_cache.get();
  rp.num_pages = seqs * pages_per_seq;
  rp.page_size = kPageSize;
  rp.block_tables = block_tables.get();
  rp.max_pages_per_seq = static_cast<int>(pages_per_seq);
  rp.token_seq = token_seq.get();
  BITLOOM_RETURN_IF_ERROR(kc::LaunchQkvRope(rp, stream));
  kc::PagedPrefillAttentionParams ap;
  ap.cache.k = k_cache.get();
  ap.cache.v = v_cache.get();
  ap.cache.page_size = kPageSize;
  ap.cache.num_kv_heads = c.num_kv_heads;
  ap.cache.head_dim = c.head_dim;
  ap.cache.block_tables = block_tables.get();
  ap.cache.max_pages_per_seq = static_cast<int>(pages_per_seq);
  ap.q = q_rope.get();
  ap.q_type = kc::ActivationType::kF32;
  ap.out = attn.get();
  ap.out_type = kc::ActivationType::kF32;
  ap.token_seq = token_seq.get();
  ap.token_pos = positions.get();
  ap.num_tokens = static_cast<int>(n);
  ap.num_heads = c.num_heads;
  ap.scale = c.attention_scale;
  ap.logit_softcap = c.attn_logit_softcap;
  ap.sliding_window = L.sliding ? c.sliding_window : 0;
  ap.exact_fp32 = options.exact_fp32;
  BITLOOM_RETURN_IF_ERROR(kc::LaunchPagedPrefillAttention(ap, stream));
  BITLOOM_RETURN_IF_ERROR(see(1, attn.get(), n));
  BITLOOM_RETURN_IF_ERROR(Gemm(attn.get(), n, kO, H, q_dim(), L.o_bias, o.get()));
  if (c.sandwich_norms) BITLOOM_RETURN_IF_ERROR(Norm(o.get(), nullptr, L.post_attn_norm, o.get(), n));
  // MLP: x += o; h = norm(x); down(act(gate(h)) · up(h)); [post norm]; x += that.
  BITLOOM_RETURN_IF_ERROR(Norm(x.get(), o.get(), L.mlp_norm, h.get(), n));
  BITLOOM_RETURN_IF_ERROR(see(2, h.get(), n));
  const DeviceArray<float> no_bias;
  BITLOOM_RETURN_IF_ERROR(Gemm(h.get(), n, kGate, I, H, no_bias, gate.get()));
  BITLOOM_RETURN_IF_ERROR(Gemm(h.get(), n, kUp, I, H, no_bias, up.get()));
  kc::GatedActivationParams gp;
  gp.gate = gate.get();
  gp.gate_stride = I;
  gp.up = up.get();
  gp.up_stride = I;
  gp.out_f32 = gate.get();
  gp.rows = n;
  gp.dim = I;
  gp.activation = c.activation;
  BITLOOM_RETURN_IF_ERROR(kc::LaunchGatedActivation(gp, stream));
  BITLOOM_RETURN_IF_ERROR(see(3, gate.get(), n));
  BITLOOM_RETURN_IF_ERROR(Gemm(gate.get(), n, kDown, H, I, no_bias, o.get()));
  if (c.sandwich_norms) BITLOOM_RETURN_IF_ERROR(Norm(o.get(), nullptr, L.post_mlp_norm, o.get(), n));
  // The residual add alone (no output; the weight is only read by a norm that is not written).
  BITLOOM_RETURN_IF_ERROR(Norm(x.get(), o.get(), L.mlp_norm, nullptr, n));
  if (out != nullptr) {
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out, x.get(), static_cast<size_t>(n * H) * sizeof(float),
                                                 cudaMemcpyDeviceToHost, stream));
  }
  return absl::OkStatus();
}

absl::Status GpuBlockRunner::Impl::CheckHidden(absl::Span<const float> hidden, int64_t sequences,
                                               int64_t seq_len) const {
  if (sequences <= 0 || seq_len <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("RunBlock: ", sequences, " sequences of ", seq_len));
  }
  const int64_t H = cfg.hidden_size;
  if (static_cast<int64_t>(hidden.size()) != sequences * seq_len * H) {
    return absl::InvalidArgumentError(absl::StrCat("RunBlock: hidden has ", hidden.size(), " values, ",
                                                   sequences, " × ", seq_len, " × hidden_size ", H,
                                                   " expected"));
  }
  if (seq_len > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("RunBlock: seq_len ", seq_len, " too long"));
  }
  return absl::OkStatus();
}

absl::Status GpuBlockRunner::Impl::RunStored(int first, int end, absl::Span<const float> hidden,
                                             int64_t sequences, int64_t seq_len, float* out) {
  BITLOOM_RETURN_IF_ERROR(CheckHidden(hidden, sequences, seq_len));
  const int64_t chunk_seqs = std::clamp<int64_t>(options.chunk_tokens / seq_len, 1, sequences);
  const auto no_capture = [](int, const float*, int64_t) { return absl::OkStatus(); };
  if (chunk_seqs < sequences) {
    // More than one device pass: block by block through host memory, as RunBlockSubstituted.
    std::vector<float> cur(hidden.begin(), hidden.end());
    for (int layer = first; layer < end; ++layer) {
      float* to = layer + 1 == end ? out : nullptr;
      std::vector<float> next;
      if (to == nullptr) next.resize(cur.size());
      BITLOOM_RETURN_IF_ERROR(Run(layer, sites_of(layer), {}, cur, sequences, seq_len, no_capture,
                                  to != nullptr ? to : next.data(), /*stored_fallback=*/true));
      if (to == nullptr) cur = std::move(next);
    }
    return absl::OkStatus();
  }
  // One pass holds the batch: in once, through every block on the device, out once.
  BITLOOM_RETURN_IF_ERROR(Reserve(sequences * seq_len, sequences, seq_len));
  const size_t elems = hidden.size();
  BITLOOM_RETURN_IF_ERROR(staged_in[0].Reserve(elems));
  BITLOOM_RETURN_IF_ERROR(staged_out[0].Reserve(elems));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  HostCopy(staged_in[0].get(), hidden.data(), elems);
  absl::Status status;
  for (int layer = first; layer < end && status.ok(); ++layer) {
    status = UploadWeights(layer, sites_of(layer), {}, /*stored_fallback=*/true);
    if (!status.ok()) break;
    status = Chunk(layer, layer == first ? staged_in[0].get() : nullptr, sequences, seq_len,
                   no_capture, layer + 1 == end ? staged_out[0].get() : nullptr);
  }
  const absl::Status synced = kc::CudaStatus(cudaStreamSynchronize(stream),
                                             "cudaStreamSynchronize", __FILE__, __LINE__);
  if (!status.ok()) return status;
  if (!synced.ok()) return synced;
  HostCopy(out, staged_out[0].get(), elems);
  return absl::OkStatus();
}

template <typename See>
absl::Status GpuBlockRunner::Impl::Run(int layer, const std::vector<LinearSite>& sites,
                                       const WeightMap& weights, absl::Span<const float> hidden,
                                       int64_t sequences, int64_t seq_len, See&& see, float* out,
                                       bool stored_fallback, const RotatedWeightMap* rotated) {
  BITLOOM_RETURN_IF_ERROR(CheckHidden(hidden, sequences, seq_len));
  const int64_t H = cfg.hidden_size;
  const int64_t chunk_seqs = std::clamp<int64_t>(options.chunk_tokens / seq_len, 1, sequences);
  BITLOOM_RETURN_IF_ERROR(Reserve(chunk_seqs * seq_len, chunk_seqs, seq_len));
  BITLOOM_RETURN_IF_ERROR(UploadWeights(layer, sites, weights, stored_fallback, rotated));
  const size_t chunk_elems = static_cast<size_t>(chunk_seqs * seq_len * H);
  for (int b = 0; b < 2; ++b) {
    BITLOOM_RETURN_IF_ERROR(staged_in[b].Reserve(chunk_elems));
    if (out != nullptr) BITLOOM_RETURN_IF_ERROR(staged_out[b].Reserve(chunk_elems));
  }
  // Chunk c: wait until chunk c − 2 has left slot c % 2, stage its input (host copy), queue its
  // forward and output copy, then, while the device works on it, move chunk c − 1's output from
  // its slot to `out`.
  absl::Status status;
  int64_t pending_row0 = -1, pending_elems = 0;  // chunk c − 1's output, still in its slot
  int pending_slot = 0;
  auto drain = [&]() -> absl::Status {
    if (pending_row0 < 0) return absl::OkStatus();
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(out_ready[pending_slot]));
    HostCopy(out + pending_row0 * H, staged_out[pending_slot].get(), static_cast<size_t>(pending_elems));
    pending_row0 = -1;
    return absl::OkStatus();
  };
  int c = 0;
  for (int64_t s0 = 0; s0 < sequences && status.ok(); s0 += chunk_seqs, ++c) {
    const int slot = c % 2;
    const int64_t seqs = std::min(chunk_seqs, sequences - s0);
    const int64_t row0 = s0 * seq_len;
    const size_t elems = static_cast<size_t>(seqs * seq_len * H);
    status = kc::CudaStatus(cudaEventSynchronize(slot_free[slot]), "cudaEventSynchronize",
                            __FILE__, __LINE__);
    if (!status.ok()) break;
    HostCopy(staged_in[slot].get(), hidden.data() + row0 * H, elems);
    status = Chunk(layer, staged_in[slot].get(), seqs, seq_len, see,
                   out == nullptr ? nullptr : staged_out[slot].get());
    if (!status.ok()) break;
    status = kc::CudaStatus(cudaEventRecord(slot_free[slot], stream), "cudaEventRecord", __FILE__,
                            __LINE__);
    if (!status.ok()) break;
    if (out != nullptr) {
      status = kc::CudaStatus(cudaEventRecord(out_ready[slot], stream), "cudaEventRecord",
                              __FILE__, __LINE__);
      if (status.ok()) status = drain();
      pending_row0 = row0;
      pending_elems = static_cast<int64_t>(elems);
      pending_slot = slot;
    }
  }
  if (status.ok()) status = drain();
  // Always drain the stream: queued work may still read a staging or a captured buffer.
  const absl::Status synced = kc::CudaStatus(cudaStreamSynchronize(stream),
                                             "cudaStreamSynchronize", __FILE__, __LINE__);
  return status.ok() ? synced : status;
}

absl::Status GpuBlockRunner::Supports(const engine::ResolvedConfig& c) {
  if (c.head_dim != 64 && c.head_dim != 128 && c.head_dim != 256) {
    return absl::InvalidArgumentError(absl::StrCat(
        "head_dim: ", c.head_dim, " is not run by the GPU block forward (64, 128 or 256; the "
        "paged attention kernels'); use --device=cpu"));
  }
  if (c.hidden_size > kc::kMaxNormHidden) {
    return absl::InvalidArgumentError(absl::StrCat("hidden_size: ", c.hidden_size, " exceeds ",
                                                   kc::kMaxNormHidden));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GpuBlockRunner>> GpuBlockRunner::Create(
    const engine::DecoderModel& model, const engine::WeightSource& weights,
    GpuBlockRunnerOptions options) {
  const engine::ResolvedConfig& c = model.resolved();
  if (absl::Status s = Supports(c); !s.ok()) return s;
  int device = 0, count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    return absl::FailedPreconditionError("GpuBlockRunner: no CUDA device is visible");
  }
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  cudaDeviceProp props{};
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&props, device));
  if (props.major < 8) {
    return absl::FailedPreconditionError(absl::StrCat("GpuBlockRunner: ", props.name, " is sm_",
                                                      props.major, props.minor,
                                                      "; the attention kernels need sm_80 or newer"));
  }
  auto impl = std::make_unique<Impl>();
  impl->cfg = c;
  impl->options = options;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamCreate(&impl->stream));
  for (int b = 0; b < 2; ++b) {
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&impl->slot_free[b], cudaEventDisableTiming));
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&impl->out_ready[b], cudaEventDisableTiming));
  }
  BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasCreate(&impl->cublas));
  BITLOOM_CUBLAS_RETURN_IF_ERROR(cublasSetStream(impl->cublas, impl->stream));

  BITLOOM_ASSIGN_OR_RETURN(const engine::ModelRopeTables rope,
                           engine::BuildRopeTables(model.config(), c.head_dim));
  BITLOOM_RETURN_IF_ERROR(Upload(&impl->global_inv_freq, rope.global.inv_freq, impl->stream));
  BITLOOM_RETURN_IF_ERROR(Upload(&impl->local_inv_freq, rope.local.inv_freq, impl->stream));
  impl->global_scaling = rope.global.attention_scaling;
  impl->local_scaling = rope.local.attention_scaling;

  // Norms and biases of the covered blocks, by the names and presence rules DecoderModel::Load
  // applies (the model checked their shapes when it loaded them).
  const int layers =
      options.num_layers > 0 && options.num_layers < c.num_layers ? options.num_layers : c.num_layers;
  impl->layers.resize(layers);
  impl->stored.resize(layers);
  impl->model = &model;
  for (int i = 0; i < layers; ++i) {
    LayerParams& L = impl->layers[i];
    L.sliding = c.layer_is_sliding[i];
    auto load = [&](const char* suffix, bool wanted, DeviceArray<float>* dst) -> absl::Status {
      const std::string name = formats::LayerTensor(i, suffix);
      if (!wanted) return absl::OkStatus();
      auto t = weights.Read(name);
      if (!t.ok()) return t.status();
      return Upload(dst, t->data, impl->stream);
    };
    BITLOOM_RETURN_IF_ERROR(load("attn_norm.weight", true, &L.attn_norm));
    BITLOOM_RETURN_IF_ERROR(load("mlp_norm.weight", true, &L.mlp_norm));
    BITLOOM_RETURN_IF_ERROR(load("post_attn_norm.weight", c.sandwich_norms, &L.post_attn_norm));
    BITLOOM_RETURN_IF_ERROR(load("post_mlp_norm.weight", c.sandwich_norms, &L.post_mlp_norm));
    BITLOOM_RETURN_IF_ERROR(load("attn.q_norm.weight", c.qk_norm, &L.q_norm));
    BITLOOM_RETURN_IF_ERROR(load("attn.k_norm.weight", c.qk_norm, &L.k_norm));
    BITLOOM_RETURN_IF_ERROR(load("attn.q_proj.bias", c.attention_bias, &L.q_bias));
    BITLOOM_RETURN_IF_ERROR(load("attn.k_proj.bias", c.attention_bias, &L.k_bias));
    BITLOOM_RETURN_IF_ERROR(load("attn.v_proj.bias", c.attention_bias, &L.v_bias));
    BITLOOM_RETURN_IF_ERROR(load("attn.o_proj.bias",
                                 weights.Contains(formats::LayerTensor(i, "attn.o_proj.bias")),
                                 &L.o_bias));
  }
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(impl->stream));
  return std::unique_ptr<GpuBlockRunner>(new GpuBlockRunner(model, options, std::move(impl)));
}

GpuBlockRunner::GpuBlockRunner(const engine::DecoderModel& model, GpuBlockRunnerOptions options,
                               std::unique_ptr<Impl> impl)
    : host_(model, {.num_layers = options.num_layers}),
      rotate_substitutes_(options.rotate_substitutes),
      impl_(std::move(impl)) {}

GpuBlockRunner::~GpuBlockRunner() = default;

absl::StatusOr<std::vector<float>> GpuBlockRunner::RunBlock(int layer, const WeightMap& weights,
                                                            absl::Span<const float> hidden,
                                                            int64_t sequences, int64_t seq_len,
                                                            const CaptureFn& capture) const {
  if (layer < 0 || layer >= num_layers()) {
    return absl::InvalidArgumentError(
        absl::StrCat("RunBlock: layer ", layer, " outside [0, ", num_layers(), ")"));
  }
  Impl& m = *impl_;
  const std::vector<LinearSite> sites = Sites(layer);
  auto see = [&](int site, const float* x, int64_t rows) -> absl::Status {
    if (!capture) return absl::OkStatus();
    const int64_t dim = sites[site].dim;
    m.host_site.resize(static_cast<size_t>(rows * dim));
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(m.host_site.data(), x,
                                                 m.host_site.size() * sizeof(float),
                                                 cudaMemcpyDeviceToHost, m.stream));
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(m.stream));
    return capture(sites[site], m.host_site, rows);
  };
  std::vector<float> out(hidden.size());
  BITLOOM_RETURN_IF_ERROR(m.Run(layer, sites, weights, hidden, sequences, seq_len, see, out.data(),
                                /*stored_fallback=*/false));
  return out;
}

absl::StatusOr<std::vector<float>> GpuBlockRunner::RunBlockSubstituted(
    int layer, const WeightMap& substitutes, absl::Span<const float> hidden, int64_t sequences,
    int64_t seq_len, const CaptureFn& capture) const {
  if (capture) {
    // Host captures are for tests and the CPU backend: the full map, through RunBlock.
    return BlockRunner::RunBlockSubstituted(layer, substitutes, hidden, sequences, seq_len,
                                            capture);
  }
  if (layer < 0 || layer >= num_layers()) {
    return absl::InvalidArgumentError(
        absl::StrCat("RunBlock: layer ", layer, " outside [0, ", num_layers(), ")"));
  }
  const auto no_capture = [](int, const float*, int64_t) { return absl::OkStatus(); };
  std::vector<float> out(hidden.size());
  BITLOOM_RETURN_IF_ERROR(impl_->Run(layer, Sites(layer), substitutes, hidden, sequences, seq_len,
                                     no_capture, out.data(), /*stored_fallback=*/true));
  return out;
}

absl::StatusOr<std::vector<float>> GpuBlockRunner::RunStoredBlocks(int first, int end,
                                                                   absl::Span<const float> hidden,
                                                                   int64_t sequences,
                                                                   int64_t seq_len) const {
  if (first < 0 || end > num_layers() || first > end) {
    return absl::InvalidArgumentError(absl::StrCat("RunStoredBlocks: blocks [", first, ", ", end,
                                                   ") outside [0, ", num_layers(), ")"));
  }
  if (first == end) return std::vector<float>(hidden.begin(), hidden.end());
  std::vector<float> out(hidden.size());
  BITLOOM_RETURN_IF_ERROR(impl_->RunStored(first, end, hidden, sequences, seq_len, out.data()));
  return out;
}

absl::Status GpuBlockRunner::RunBlockRotated(int layer, const RotatedWeightMap& substitutes,
                                             absl::Span<const float> hidden, int64_t sequences,
                                             int64_t seq_len, std::vector<float>* out) const {
  if (layer < 0 || layer >= num_layers()) {
    return absl::InvalidArgumentError(
        absl::StrCat("RunBlock: layer ", layer, " outside [0, ", num_layers(), ")"));
  }
  if (out == nullptr) return absl::InvalidArgumentError("RunBlockRotated: null out");
  const auto no_capture = [](int, const float*, int64_t) { return absl::OkStatus(); };
  out->resize(hidden.size());
  return impl_->Run(layer, Sites(layer), {}, hidden, sequences, seq_len, no_capture, out->data(),
                    /*stored_fallback=*/true, &substitutes);
}

int64_t GpuBlockRunner::resident_weight_bytes() const { return impl_->resident_bytes; }

absl::Status GpuBlockRunner::RunBlockOnDevice(int layer, const WeightMap& weights,
                                              absl::Span<const float> hidden, int64_t sequences,
                                              int64_t seq_len, const DeviceCaptureFn& capture,
                                              std::vector<float>* out) const {
  if (layer < 0 || layer >= num_layers()) {
    return absl::InvalidArgumentError(
        absl::StrCat("RunBlock: layer ", layer, " outside [0, ", num_layers(), ")"));
  }
  Impl& m = *impl_;
  const std::vector<LinearSite> sites = Sites(layer);
  auto see = [&](int site, const float* x, int64_t rows) -> absl::Status {
    if (!capture) return absl::OkStatus();
    return capture(sites[site], x, rows, m.stream);
  };
  if (out != nullptr) out->resize(hidden.size());
  return m.Run(layer, sites, weights, hidden, sequences, seq_len, see,
               out == nullptr ? nullptr : out->data(), /*stored_fallback=*/true);
}

}  // namespace bitloom::quant::cuda
