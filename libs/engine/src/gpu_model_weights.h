// GpuWeightPlan: which tensors of an artifact the GPU decoder reads, in which device form, and where
// they lie in the model's weights region; Upload() puts them there and returns GpuModelWeights, the
// device pointers the forward pass launches with. Private to bitloom::engine_cuda.
//
// Device forms: quantized linears (CODEC_HADAMARD_SCALAR) stay as their blobs; dense linears and the
// embedding are fp16 (the cuBLAS and gather inputs); norms, q/k norms and biases are fp32 (what the
// element-wise kernels read). A tensor already stored in its device form is copied verbatim through
// WeightUploadPlan/UploadWeights; any other (an fp32 embedding, an fp16 norm, a bf16 linear) is
// converted on the host at Build() time and copied after them. The region ends with each distinct
// rotation's p×p base matrix and the two RoPE inverse-frequency tables:
//
//   [ verbatim blobs (WeightUploadPlan) | converted tensors | rotation bases | RoPE tables ]
//
// On request the token embedding lives in pinned, device-mapped host memory instead: the gather
// reads one row per token over PCIe (hidden·2 bytes), and the region is smaller by vocab·hidden·2
// bytes (2.1 GB for Llama-3-70B).
//
// Build() is host-only (it runs in the CPU tests); Upload() needs the device.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "bitloom/engine/decoder_model.h"
#include "bitloom/engine/weight_upload_plan.h"
#include "bitloom/kernels/hadamard.h"
#include "bitloom/kernels/rope.h"
#include "bitloom/kernels/scalar_codec.h"
#include "bitloom/modelstore/artifact_reader.h"
#include "gpu_linear.h"

namespace bitloom::engine::gpu {

enum class DeviceForm { kQuantized, kF16, kF32 };

struct PlannedTensor {
  std::string name;
  DeviceForm form = DeviceForm::kF32;
  std::vector<uint64_t> shape;
  bool verbatim = true;            // copied as stored; else `converted` holds the device bytes
  bool in_host = false;            // pinned host memory mapped into the device, outside the region
  std::vector<uint8_t> converted;  // host copy in the device form (not verbatim)
  uint64_t offset = 0;             // in the weights region
  uint64_t bytes = 0;
  // Quantized only.
  kernels::ScalarCodecLayout layout;
  uint64_t rotation_seed = 0;
};

struct GpuLayerWeights {
  const float* attn_norm = nullptr;
  const float* mlp_norm = nullptr;
  const float* post_attn_norm = nullptr;  // sandwich norms only
  const float* post_mlp_norm = nullptr;
  const float* q_norm = nullptr;  // qk_norm only
  const float* k_norm = nullptr;
  GpuLinear q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;
};

struct GpuModelWeights {
  const uint16_t* embed = nullptr;  // fp16 [vocab, hidden]; a mapped host address when in host memory
  // The pinned host allocation behind the tensors kept in host memory (freed with the last copy).
  std::shared_ptr<void> host_memory;
  uint64_t host_bytes = 0;
  const float* final_norm = nullptr;
  GpuLinear head;  // lm_head, or the embedding when tied
  const float* global_inv_freq = nullptr;  // [head_dim / 2]
  float global_attention_scaling = 1.0f;
  const float* local_inv_freq = nullptr;  // sliding layers (the global table when no local theta)
  float local_attention_scaling = 1.0f;
  std::vector<GpuLayerWeights> layers;
};

class GpuWeightPlan {
 public:
  // INVALID_ARGUMENT for a missing tensor or a shape the config does not imply (naming it),
  // UNIMPLEMENTED for a codec the GPU engine does not run (naming tensor and codec), DATA_LOSS for
  // a blob whose size does not match, or a quantized tensor with missing or inconsistent rotation
  // params.
  // With embedding_in_host the token embedding is planned for pinned host memory instead of the
  // region (INVALID_ARGUMENT when the head is tied to it: every step would read it whole).
  static absl::StatusOr<GpuWeightPlan> Build(const modelstore::ArtifactReader& reader,
                                             const v1::ModelConfig& config, const ResolvedConfig& cfg,
                                             bool embedding_in_host = false);

  uint64_t region_bytes() const { return region_bytes_; }
  const std::vector<PlannedTensor>& tensors() const { return tensors_; }
  const PlannedTensor* Find(const std::string& name) const;
  // Widest quantized input (fp16 elements per rotated row) and widest dense input (0: none).
  int64_t max_rotated_stride() const { return max_rotated_stride_; }
  int64_t max_dense_cols() const { return max_dense_cols_; }
  // Elements of the largest quantized weight expanded to fp16 (rows · blocks_per_row·32; 0: none).
  int64_t max_expanded_elems() const { return max_expanded_elems_; }
  bool has_dense_linear() const { return max_dense_cols_ > 0; }

  // Copies everything into `region` (device, region_bytes() long) on `stream` and returns the
  // pointers. Synchronises the stream (load time).
  absl::StatusOr<GpuModelWeights> Upload(const modelstore::ArtifactReader& reader, uint8_t* region,
                                         cudaStream_t stream) const;

 private:
  absl::Status Add(const modelstore::ArtifactReader& reader, const std::string& name, DeviceForm want,
                   std::vector<uint64_t> shape, bool linear);

  ResolvedConfig cfg_;
  std::vector<PlannedTensor> tensors_;
  std::map<std::string, int> index_;
  WeightUploadPlan verbatim_;
  uint64_t verbatim_bytes_ = 0;
  // (width, seed) -> (rotation, offset of its base matrix; unused when p == 1).
  std::map<std::pair<int64_t, uint64_t>, std::pair<kernels::HadamardRotation, uint64_t>> rotations_;
  kernels::RopeTable global_rope_, local_rope_;
  uint64_t global_rope_offset_ = 0, local_rope_offset_ = 0;
  bool tied_head_ = false;
  int64_t max_rotated_stride_ = 0;
  int64_t max_dense_cols_ = 0;
  int64_t max_expanded_elems_ = 0;
  uint64_t region_bytes_ = 0;
};

}  // namespace bitloom::engine::gpu
