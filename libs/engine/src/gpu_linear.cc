#include "gpu_linear.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/kernels/cuda/scalar_codec_dequant.h"
#include "bitloom/kernels/cuda/scalar_codec_tiled.h"
#include "gpu_decoder_ops.h"

namespace bitloom::engine::gpu {

namespace cuda = kernels::cuda;

absl::Status CublasStatus(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " failed: cuBLAS status ", static_cast<int>(status)));
}

namespace {

// y [rows, y_stride] fp32 = x [rows, ldx] fp16 · W [m, k] fp16ᵀ (W row-major with leading dimension
// ldw). In cuBLAS's column-major view W is k×m (ld ldw), so op(A) = Aᵀ is m×k; x is k×rows; y is
// m×rows with ld y_stride, i.e. row-major [rows, m].
absl::Status GemmF16(cublasHandle_t cublas, const uint16_t* w, int64_t m, int64_t k, int64_t ldw,
                     const uint16_t* x, int64_t ldx, int64_t rows, float* y, int64_t y_stride) {
  const float alpha = 1.0f, beta = 0.0f;
  return CublasStatus(
      cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(m), static_cast<int>(rows), static_cast<int>(k),
                   &alpha, w, CUDA_R_16F, static_cast<int>(ldw), x, CUDA_R_16F, static_cast<int>(ldx), &beta, y,
                   CUDA_R_32F, static_cast<int>(y_stride), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      "cublasGemmEx");
}

// The decode path: the batch-≤8 GEMV over 8-row slices of the rotated input, every layer of `group`
// (they read the same rotated x) in one grouped launch per slice.
absl::Status RunGemv(absl::Span<const LinearOutput* const> group, int64_t rows, const LinearScratch& scratch,
                     bool offset_terms, cudaStream_t stream) {
  const int64_t stride = group.front()->linear->rotated_stride;
  for (int64_t r0 = 0; r0 < rows; r0 += cuda::kGemvMaxBatch) {
    cuda::ScalarCodecGemvParams params[cuda::kGemvMaxGroup];
    for (size_t i = 0; i < group.size(); ++i) {
      cuda::ScalarCodecGemvParams& gp = params[i];
      gp = group[i]->linear->gemv;
      gp.x = scratch.rotated + r0 * stride;
      gp.x_stride = stride;
      gp.y = group[i]->y + r0 * group[i]->y_stride;
      gp.y_stride = group[i]->y_stride;
      gp.batch = static_cast<int>(std::min<int64_t>(cuda::kGemvMaxBatch, rows - r0));
      if (offset_terms) {
        gp.offset_terms = scratch.offset_terms + r0;
        gp.offset_terms_stride = scratch.offset_term_rows;
      }
    }
    BITLOOM_RETURN_IF_ERROR(cuda::LaunchScalarCodecGemvGroup({params, group.size()}, stream));
  }
  return absl::OkStatus();
}

// The prefill path: W' expanded slice by slice (as many whole rows as the scratch holds), each
// slice multiplied by all `rows` rotated inputs into its columns of y.
absl::Status RunDequantGemm(const GpuLinear& w, const LinearOutput& out, int64_t rows, const LinearScratch& scratch,
                            cudaStream_t stream) {
  const int64_t slice_rows = std::max<int64_t>(1, std::min(w.rows, scratch.dequant_elems / w.rotated_stride));
  for (int64_t r0 = 0; r0 < w.rows; r0 += slice_rows) {
    cuda::ScalarCodecDequantParams dp;
    dp.weight = w.gemv;
    dp.row_begin = r0;
    dp.row_count = std::min(slice_rows, w.rows - r0);
    dp.out = scratch.dequant;
    dp.out_stride = w.rotated_stride;
    BITLOOM_RETURN_IF_ERROR(cuda::LaunchScalarCodecDequant(dp, stream));
    BITLOOM_RETURN_IF_ERROR(GemmF16(scratch.cublas, scratch.dequant, dp.row_count, w.rotated_stride, w.rotated_stride,
                                    scratch.rotated, w.rotated_stride, rows, out.y + r0, out.y_stride));
  }
  return absl::OkStatus();
}

absl::Status AddBiases(absl::Span<const LinearOutput> outputs, int64_t rows, cudaStream_t stream) {
  for (const LinearOutput& out : outputs) {
    if (out.linear->bias != nullptr) {
      BITLOOM_RETURN_IF_ERROR(LaunchAddBias({out.y, out.y_stride, out.linear->bias, rows, out.linear->rows}, stream));
    }
  }
  return absl::OkStatus();
}

// The rotating launch's input for `in`: the first layer's rotation (UsesRotatingGemv has checked
// that every layer shares it).
cuda::GemvRotatingInput RotatingInput(const GpuLinear& first, const LinearInput& in) {
  cuda::GemvRotatingInput r;
  r.rotation = first.rotation;
  if (in.norm.residual != nullptr) {
    r.norm = in.norm;
    r.residual_out = in.residual_out;
  } else {
    r.x = in.x;
  }
  return r;
}

// The group's GEMV entries for one row; x is not set (the rotating launch forms it).
size_t RotatingEntries(absl::Span<const LinearOutput> outputs,
                       cuda::ScalarCodecGemvParams (&params)[cuda::kGemvMaxGroup]) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    params[i] = outputs[i].linear->gemv;
    params[i].y = outputs[i].y;
    params[i].y_stride = outputs[i].y_stride;
    params[i].batch = 1;
  }
  return outputs.size();
}

}  // namespace

absl::StatusOr<uint64_t> RetileGroup(absl::Span<GpuLinear* const> group, cudaStream_t stream) {
  std::vector<cuda::ScalarCodecGemvParams> weights;
  for (const GpuLinear* l : group) {
    if (!l->quantized || l->gemv.tiled) return uint64_t{0};
    weights.push_back(l->gemv);
  }
  if (!cuda::TiledGroupApplies(weights)) return uint64_t{0};
  uint64_t bytes = 0;
  for (GpuLinear* l : group) {
    BITLOOM_RETURN_IF_ERROR(cuda::LaunchScalarCodecRetile(l->gemv, stream));
    l->gemv.tiled = true;
    bytes += static_cast<uint64_t>(l->gemv.rows) * static_cast<uint64_t>(l->gemv.row_stride_words) * 4;
  }
  return bytes;
}

bool TakesAttentionSplits(const GpuLinear& w, const cuda::DecodeAttentionSplits& splits, int64_t rows, int sm) {
  if (!w.quantized || splits.num_splits < 2 || rows < 1 || rows > cuda::kMaxRotateBatch) return false;
  cuda::HadamardRotateParams p;
  p.rotation = w.rotation;
  p.splits = splits;
  p.out = &p;  // any non-null address: planning launches nothing
  p.out_stride = w.rotated_stride;
  p.batch = static_cast<int>(rows);
  return cuda::PlanHadamardRotate(sm, p).ok();
}

bool UsesRotatingGemv(absl::Span<const LinearOutput> outputs, const LinearInput& in, int64_t rows) {
  if (!in.allow_rotating_gemv || rows != 1 || in.gated.up != nullptr || in.splits.acc != nullptr || outputs.empty() ||
      outputs.size() > static_cast<size_t>(cuda::kGemvMaxGroup) || !AllQuantized(outputs)) {
    return false;
  }
  const GpuLinear& first = *outputs.front().linear;
  for (const LinearOutput& out : outputs) {
    if (out.linear->rotation.n != first.rotation.n || out.linear->rotation.seed != first.rotation.seed) return false;
  }
  cuda::ScalarCodecGemvParams params[cuda::kGemvMaxGroup];
  const size_t count = RotatingEntries(outputs, params);
  return cuda::PreferRotatingGemv({params, count}, RotatingInput(first, in));
}

absl::Status RunRotatingGemv(absl::Span<const LinearOutput> outputs, const LinearInput& in, cudaStream_t stream) {
  cuda::ScalarCodecGemvParams params[cuda::kGemvMaxGroup];
  const size_t count = RotatingEntries(outputs, params);
  BITLOOM_RETURN_IF_ERROR(cuda::LaunchScalarCodecGemvGroupRotating(
      {params, count}, RotatingInput(*outputs.front().linear, in), stream));
  return AddBiases(outputs, 1, stream);
}

// Whether the rotation of a group's input writes the tiled GEMV's offset terms: one row, every layer
// tiled at K = 2 on one rotation, and the scratch for them. The GEMV loses half its mma and the
// rotation gains a read-back of its row; H200, Llama-3-70B at 2.5 bits, per layer: the 2-bit down_proj
// 37.0 -> 29.7 µs for 1.8 µs more rotation, while the 3-bit o_proj (12.5 -> 10.5 µs) and the mixed
// 2/3-bit q/k/v and gate/up (-0.4 to +0.2 µs) paid 1.5-2.3 µs more rotation each, and a batch of 4
// lost 0.85 ms per step with every K <= 3 group taking them (docs/KERNELS.md, "Session 15").
bool TakesOffsetTerms(absl::Span<const LinearOutput> outputs, int64_t rows, bool gemm, const LinearScratch& scratch) {
  if (scratch.offset_terms == nullptr || gemm || rows != 1 || rows > scratch.offset_term_rows) return false;
  const GpuLinear& first = *outputs.front().linear;
  for (const LinearOutput& out : outputs) {
    const GpuLinear& w = *out.linear;
    if (!w.quantized || !w.gemv.tiled || w.gemv.bits != 2 || w.rotation.n != first.rotation.n ||
        w.rotation.seed != first.rotation.seed || w.rotation.n % 128 != 0 ||
        w.rotation.n / 128 > scratch.offset_term_groups) {
      return false;
    }
  }
  return true;
}

bool AllQuantized(absl::Span<const LinearOutput> outputs) {
  for (const LinearOutput& out : outputs) {
    if (!out.linear->quantized) return false;
  }
  return true;
}

absl::Status RunLinearGroup(absl::Span<const LinearOutput> outputs, const LinearInput& in, int64_t rows,
                            const LinearScratch& scratch, cudaStream_t stream) {
  if (rows <= 0) return absl::OkStatus();
  if (UsesRotatingGemv(outputs, in, rows)) return RunRotatingGemv(outputs, in, stream);
  if (in.residual_out != nullptr) {
    return absl::InvalidArgumentError(
        "RunLinearGroup: residual_out is only for a group that UsesRotatingGemv (the update is in place otherwise)");
  }
  const float* x = in.x;
  const int64_t x_stride = in.x_stride;
  const bool fused = in.gated.up != nullptr || in.norm.residual != nullptr || in.splits.acc != nullptr;
  // The norm input's residual update: applied by the group's first rotation only.
  kernels::cuda::RotateNormInput norm = in.norm;
  // What the scratch holds for this x: the rotation last applied (width, seed), and whether the fp16
  // copy exists. Decided on the host while enqueuing, so the sequence is the same at every replay.
  bool have_rotated = false;
  int64_t rotated_n = 0;
  uint64_t rotated_seed = 0;
  bool have_dense = false;
  const bool gemm = rows >= kGemmMinRows && scratch.dequant != nullptr;
  const bool offset_terms = TakesOffsetTerms(outputs, rows, gemm, scratch);
  // Consecutive quantized layers on the same rotated input wait here for one grouped GEMV.
  std::vector<const LinearOutput*> pending;
  auto flush = [&]() -> absl::Status {
    if (pending.empty()) return absl::OkStatus();
    BITLOOM_RETURN_IF_ERROR(RunGemv(pending, rows, scratch, offset_terms, stream));
    pending.clear();
    return absl::OkStatus();
  };
  for (const LinearOutput& out : outputs) {
    const GpuLinear& w = *out.linear;
    if (w.quantized) {
      if (!have_rotated || rotated_n != w.rotation.n || rotated_seed != w.rotation.seed) {
        BITLOOM_RETURN_IF_ERROR(flush());
        for (int64_t r0 = 0; r0 < rows; r0 += cuda::kMaxRotateBatch) {
          cuda::HadamardRotateParams rp;
          rp.rotation = w.rotation;
          rp.x = norm.residual != nullptr || in.splits.acc != nullptr ? nullptr : x + r0 * x_stride;
          rp.x_type = cuda::ActivationType::kF32;
          rp.x_stride = x_stride;
          rp.out = scratch.rotated + r0 * w.rotated_stride;
          rp.out_type = cuda::ActivationType::kF16;
          rp.out_stride = w.rotated_stride;
          rp.batch = static_cast<int>(std::min<int64_t>(cuda::kMaxRotateBatch, rows - r0));
          if (in.gated.up != nullptr) {
            rp.up = in.gated.up + r0 * in.gated.up_stride;
            rp.up_stride = in.gated.up_stride;
            rp.activation = in.gated.activation;
          }
          if (in.splits.acc != nullptr) {
            const int64_t heads = int64_t{in.splits.num_heads} * in.splits.num_splits;
            rp.splits = in.splits;
            rp.splits.acc += r0 * heads * in.splits.head_dim;
            rp.splits.ml += r0 * heads * 2;
            rp.splits.seq_lens += r0;
          }
          if (offset_terms) {
            rp.offset_terms = scratch.offset_terms + r0;
            rp.offset_terms_stride = scratch.offset_term_rows;
          }
          if (norm.residual != nullptr) {
            rp.norm = norm;
            rp.norm.residual += r0 * norm.residual_stride;
            if (norm.delta != nullptr) rp.norm.delta += r0 * norm.delta_stride;
          }
          BITLOOM_RETURN_IF_ERROR(cuda::LaunchHadamardRotate(rp, stream));
        }
        norm.delta = nullptr;  // the residual now holds the sum
        have_rotated = true;
        rotated_n = w.rotation.n;
        rotated_seed = w.rotation.seed;
      }
      if (gemm) {
        BITLOOM_RETURN_IF_ERROR(RunDequantGemm(w, out, rows, scratch, stream));
      } else {
        if (pending.size() == static_cast<size_t>(cuda::kGemvMaxGroup)) BITLOOM_RETURN_IF_ERROR(flush());
        pending.push_back(&out);
      }
    } else {
      if (fused) {
        return absl::InvalidArgumentError(absl::StrCat(
            "RunLinearGroup: ", w.name, " is dense; a gated or norm input needs every layer quantized"));
      }
      BITLOOM_RETURN_IF_ERROR(flush());
      if (!have_dense) {
        BITLOOM_RETURN_IF_ERROR(LaunchRowsToF16({x, x_stride, scratch.dense_in, w.cols, rows, w.cols}, stream));
        have_dense = true;
      }
      BITLOOM_RETURN_IF_ERROR(
          GemmF16(scratch.cublas, w.weight_f16, w.rows, w.cols, w.cols, scratch.dense_in, w.cols, rows, out.y,
                  out.y_stride));
    }
  }
  BITLOOM_RETURN_IF_ERROR(flush());
  // Biases last: every layer's output is complete once the grouped launches are enqueued.
  return AddBiases(outputs, rows, stream);
}

}  // namespace bitloom::engine::gpu
