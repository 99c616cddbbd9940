#include "gpu_model_weights.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bitloom/core/dtype.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/engine/pool_allocator.h"
#include "bitloom/engine/rope_tables.h"
#include "bitloom/engine/weight_upload.h"
#include "bitloom/formats/tensor_names.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/modelstore/codec_layout.h"

namespace bitloom::engine::gpu {
namespace {

using formats::LayerTensor;

uint64_t AlignUp(uint64_t v) { return (v + kPoolAlignment - 1) / kPoolAlignment * kPoolAlignment; }

float ReadDense(const uint8_t* bytes, uint64_t i, v1::Codec codec) {
  if (codec == v1::CODEC_F32) {
    float f;
    std::memcpy(&f, bytes + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, bytes + 2 * i, 2);
  return codec == v1::CODEC_F16 ? F16ToF32(h) : Bf16ToF32(h);
}

const char* const kLayerNorms[] = {"attn_norm.weight", "mlp_norm.weight"};
const char* const kSandwichNorms[] = {"post_attn_norm.weight", "post_mlp_norm.weight"};

// Copies `t` (fp16) into new pinned host memory that the device reads directly, hands the allocation
// to `w` and returns its device address.
absl::StatusOr<const uint16_t*> UploadToHost(const modelstore::ArtifactReader& reader, const PlannedTensor& t,
                                             GpuModelWeights* w) {
  void* host = nullptr;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaHostAlloc(&host, t.bytes, cudaHostAllocMapped));
  w->host_memory = std::shared_ptr<void>(host, [](void* p) { cudaFreeHost(p); });
  w->host_bytes = t.bytes;
  if (t.verbatim) {
    BITLOOM_ASSIGN_OR_RETURN(const absl::Span<const uint8_t> bytes, reader.TensorBytes(t.name));
    std::memcpy(host, bytes.data(), t.bytes);
  } else {
    std::memcpy(host, t.converted.data(), t.bytes);
  }
  void* device = nullptr;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaHostGetDevicePointer(&device, host, 0));
  return static_cast<const uint16_t*>(device);
}

}  // namespace

const PlannedTensor* GpuWeightPlan::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::Status GpuWeightPlan::Add(const modelstore::ArtifactReader& reader, const std::string& name,
                                DeviceForm want, std::vector<uint64_t> shape, bool linear) {
  const v1::TensorEntry* entry = reader.FindTensor(name);
  if (entry == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " not found in artifact ", reader.path()));
  }
  const std::vector<uint64_t> stored(entry->shape().begin(), entry->shape().end());
  if (stored != shape) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has shape [", absl::StrJoin(stored, ", "),
                                                   "], the config implies [", absl::StrJoin(shape, ", "), "]"));
  }
  BITLOOM_ASSIGN_OR_RETURN(const absl::Span<const uint8_t> bytes, reader.TensorBytes(name));
  PlannedTensor t;
  t.name = name;
  t.shape = shape;
  const v1::Codec codec = entry->codec();
  if (codec == v1::CODEC_HADAMARD_SCALAR) {
    if (!linear) {
      return absl::UnimplementedError(
          absl::StrCat("tensor ", name, ": hadamard_scalar is only run for linear layers on the GPU"));
    }
    const float bits_field = entry->bits_per_weight();
    const int bits = static_cast<int>(bits_field);
    if (static_cast<float>(bits) != bits_field) {
      return absl::DataLossError(absl::StrCat("tensor ", name, ": bits_per_weight ", bits_field,
                                              " is not an integer code width"));
    }
    auto layout = kernels::MakeScalarCodecLayout(static_cast<int64_t>(shape[0]), static_cast<int64_t>(shape[1]),
                                                 bits, static_cast<int>(entry->group_size()));
    if (!layout.ok()) return absl::DataLossError(absl::StrCat("tensor ", name, ": ", layout.status().message()));
    if (bytes.size() != static_cast<uint64_t>(layout->total_bytes)) {
      return absl::DataLossError(absl::StrCat("tensor ", name, ": blob of ", bytes.size(), " bytes, the layout needs ",
                                              layout->total_bytes));
    }
    const auto seed_it = entry->params().find(kernels::kScalarParamRotationSeed);
    const auto desc_it = entry->params().find(kernels::kScalarParamRotation);
    if (seed_it == entry->params().end() || desc_it == entry->params().end() ||
        !absl::SimpleAtoi(seed_it->second, &t.rotation_seed)) {
      return absl::DataLossError(absl::StrCat("tensor ", name, ": hadamard_scalar needs params '",
                                              kernels::kScalarParamRotation, "' and a decimal '",
                                              kernels::kScalarParamRotationSeed, "'"));
    }
    const std::pair<int64_t, uint64_t> key(static_cast<int64_t>(shape[1]), t.rotation_seed);
    if (!rotations_.contains(key)) {
      BITLOOM_ASSIGN_OR_RETURN(kernels::HadamardRotation rotation,
                               kernels::HadamardRotation::Create(key.first, key.second));
      rotations_.emplace(key, std::make_pair(std::move(rotation), uint64_t{0}));
    }
    const std::string built = rotations_.at(key).first.Describe();
    if (built != desc_it->second) {
      return absl::DataLossError(absl::StrCat("tensor ", name, ": rotation '", desc_it->second, "' but seed ",
                                              t.rotation_seed, " of size ", shape[1], " builds '", built, "'"));
    }
    t.form = DeviceForm::kQuantized;
    t.layout = *layout;
    t.bytes = bytes.size();
    max_rotated_stride_ = std::max(max_rotated_stride_, layout->blocks_per_row * 32);
    max_expanded_elems_ = std::max(max_expanded_elems_, layout->rows * layout->blocks_per_row * 32);
  } else if (codec == v1::CODEC_F32 || codec == v1::CODEC_F16 || codec == v1::CODEC_BF16) {
    BITLOOM_ASSIGN_OR_RETURN(const uint64_t count, modelstore::ElementCount(shape));
    if (bytes.size() != count * modelstore::DenseElementSize(codec)) {
      return absl::DataLossError(absl::StrCat("tensor ", name, ": blob of ", bytes.size(), " bytes for ", count,
                                              " elements of ", modelstore::CodecName(codec)));
    }
    t.form = want;
    const v1::Codec device_codec = want == DeviceForm::kF16 ? v1::CODEC_F16 : v1::CODEC_F32;
    t.verbatim = codec == device_codec;
    t.bytes = count * modelstore::DenseElementSize(device_codec);
    if (!t.verbatim) {
      t.converted.resize(t.bytes);
      for (uint64_t i = 0; i < count; ++i) {
        const float f = ReadDense(bytes.data(), i, codec);
        if (want == DeviceForm::kF16) {
          const uint16_t h = F32ToF16(f);
          std::memcpy(t.converted.data() + 2 * i, &h, 2);
        } else {
          std::memcpy(t.converted.data() + 4 * i, &f, 4);
        }
      }
    }
    if (linear) max_dense_cols_ = std::max(max_dense_cols_, static_cast<int64_t>(shape[1]));
  } else {
    return absl::UnimplementedError(absl::StrCat("tensor ", name, ": codec ", modelstore::CodecName(codec),
                                                 " is not run by the GPU engine (f32, f16, bf16 and "
                                                 "hadamard_scalar are)"));
  }
  index_[name] = static_cast<int>(tensors_.size());
  tensors_.push_back(std::move(t));
  return absl::OkStatus();
}

absl::StatusOr<GpuWeightPlan> GpuWeightPlan::Build(const modelstore::ArtifactReader& reader,
                                                   const v1::ModelConfig& config, const ResolvedConfig& c,
                                                   bool embedding_in_host) {
  GpuWeightPlan plan;
  plan.cfg_ = c;
  const uint64_t hidden = c.hidden_size, inter = c.intermediate_size, vocab = c.vocab_size;
  const uint64_t hd = c.head_dim;
  const uint64_t q_dim = c.num_heads * hd, kv_dim = c.num_kv_heads * hd;
  BITLOOM_RETURN_IF_ERROR(plan.Add(reader, formats::kEmbedTokens, DeviceForm::kF16, {vocab, hidden}, false));
  BITLOOM_RETURN_IF_ERROR(plan.Add(reader, formats::kFinalNorm, DeviceForm::kF32, {hidden}, false));
  // As the CPU engine: a present lm_head wins, else the embedding when tied.
  if (reader.FindTensor(formats::kLmHead) != nullptr) {
    BITLOOM_RETURN_IF_ERROR(plan.Add(reader, formats::kLmHead, DeviceForm::kF16, {vocab, hidden}, true));
  } else if (c.tie_word_embeddings) {
    plan.tied_head_ = true;
    plan.max_dense_cols_ = std::max<int64_t>(plan.max_dense_cols_, c.hidden_size);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", formats::kLmHead, " not found and tie_word_embeddings is false"));
  }
  if (embedding_in_host) {
    if (plan.tied_head_) {
      return absl::InvalidArgumentError(
          "embedding_in_host: the output head is tied to the embedding and reads all of it every step; it "
          "must stay in device memory");
    }
    plan.tensors_[plan.index_.at(formats::kEmbedTokens)].in_host = true;
  }
  for (int i = 0; i < c.num_layers; ++i) {
    auto add = [&](const char* suffix, DeviceForm form, std::vector<uint64_t> shape, bool linear) {
      return plan.Add(reader, LayerTensor(i, suffix), form, std::move(shape), linear);
    };
    for (const char* n : kLayerNorms) BITLOOM_RETURN_IF_ERROR(add(n, DeviceForm::kF32, {hidden}, false));
    if (c.sandwich_norms) {
      for (const char* n : kSandwichNorms) BITLOOM_RETURN_IF_ERROR(add(n, DeviceForm::kF32, {hidden}, false));
    }
    if (c.qk_norm) {
      BITLOOM_RETURN_IF_ERROR(add("attn.q_norm.weight", DeviceForm::kF32, {hd}, false));
      BITLOOM_RETURN_IF_ERROR(add("attn.k_norm.weight", DeviceForm::kF32, {hd}, false));
    }
    if (c.attention_bias) {
      BITLOOM_RETURN_IF_ERROR(add("attn.q_proj.bias", DeviceForm::kF32, {q_dim}, false));
      BITLOOM_RETURN_IF_ERROR(add("attn.k_proj.bias", DeviceForm::kF32, {kv_dim}, false));
      BITLOOM_RETURN_IF_ERROR(add("attn.v_proj.bias", DeviceForm::kF32, {kv_dim}, false));
    }
    if (reader.FindTensor(LayerTensor(i, "attn.o_proj.bias")) != nullptr) {
      BITLOOM_RETURN_IF_ERROR(add("attn.o_proj.bias", DeviceForm::kF32, {hidden}, false));
    }
    BITLOOM_RETURN_IF_ERROR(add("attn.q_proj.weight", DeviceForm::kF16, {q_dim, hidden}, true));
    BITLOOM_RETURN_IF_ERROR(add("attn.k_proj.weight", DeviceForm::kF16, {kv_dim, hidden}, true));
    BITLOOM_RETURN_IF_ERROR(add("attn.v_proj.weight", DeviceForm::kF16, {kv_dim, hidden}, true));
    BITLOOM_RETURN_IF_ERROR(add("attn.o_proj.weight", DeviceForm::kF16, {hidden, q_dim}, true));
    BITLOOM_RETURN_IF_ERROR(add("mlp.gate_proj.weight", DeviceForm::kF16, {inter, hidden}, true));
    BITLOOM_RETURN_IF_ERROR(add("mlp.up_proj.weight", DeviceForm::kF16, {inter, hidden}, true));
    BITLOOM_RETURN_IF_ERROR(add("mlp.down_proj.weight", DeviceForm::kF16, {hidden, inter}, true));
  }

  // RoPE tables exactly as DecoderModel::Load builds them.
  BITLOOM_ASSIGN_OR_RETURN(ModelRopeTables rope, BuildRopeTables(config, c.head_dim));
  plan.global_rope_ = std::move(rope.global);
  plan.local_rope_ = std::move(rope.local);

  // Region: the verbatim blobs as WeightUploadPlan places them, then everything built here.
  v1::ArtifactManifest verbatim_manifest;
  for (const PlannedTensor& t : plan.tensors_) {
    if (t.verbatim && !t.in_host) *verbatim_manifest.add_tensors() = *reader.FindTensor(t.name);
  }
  BITLOOM_ASSIGN_OR_RETURN(plan.verbatim_, WeightUploadPlan::Build(verbatim_manifest));
  uint64_t end = plan.verbatim_.region_bytes();
  for (PlannedTensor& t : plan.tensors_) {
    if (t.in_host) {
      continue;
    } else if (t.verbatim) {
      t.offset = plan.verbatim_.Find(t.name)->offset;
    } else {
      t.offset = end;
      end = AlignUp(end + t.bytes);
    }
  }
  for (auto& [key, value] : plan.rotations_) {
    if (value.first.base_order() > 1) {
      value.second = end;
      end = AlignUp(end + value.first.base_matrix().size());
    }
  }
  plan.global_rope_offset_ = end;
  end = AlignUp(end + plan.global_rope_.inv_freq.size() * sizeof(float));
  plan.local_rope_offset_ = end;
  end = AlignUp(end + plan.local_rope_.inv_freq.size() * sizeof(float));
  plan.region_bytes_ = end;
  return plan;
}

absl::StatusOr<GpuModelWeights> GpuWeightPlan::Upload(const modelstore::ArtifactReader& reader, uint8_t* region,
                                                      cudaStream_t stream) const {
  if (verbatim_.region_bytes() > 0) {
    BITLOOM_RETURN_IF_ERROR(UploadWeights(reader, verbatim_, region, verbatim_.region_bytes(), stream).status());
  }
  GpuModelWeights w;
  for (const PlannedTensor& t : tensors_) {
    if (t.in_host) {
      BITLOOM_ASSIGN_OR_RETURN(w.embed, UploadToHost(reader, t, &w));
    } else if (!t.verbatim) {
      BITLOOM_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(region + t.offset, t.converted.data(), t.bytes, cudaMemcpyHostToDevice, stream));
    }
  }
  for (const auto& [key, value] : rotations_) {
    if (value.first.base_order() > 1) {
      const std::vector<int8_t>& base = value.first.base_matrix();
      BITLOOM_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(region + value.second, base.data(), base.size(), cudaMemcpyHostToDevice, stream));
    }
  }
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(region + global_rope_offset_, global_rope_.inv_freq.data(),
                                               global_rope_.inv_freq.size() * sizeof(float),
                                               cudaMemcpyHostToDevice, stream));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(region + local_rope_offset_, local_rope_.inv_freq.data(),
                                               local_rope_.inv_freq.size() * sizeof(float),
                                               cudaMemcpyHostToDevice, stream));
  // The host copies above are pageable: wait for them before the plan (and its buffers) may go.
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));

  auto f32 = [&](const std::string& name) -> const float* {
    const PlannedTensor* t = Find(name);
    return t == nullptr ? nullptr : reinterpret_cast<const float*>(region + t->offset);
  };
  auto linear = [&](const std::string& name) {
    const PlannedTensor& t = *Find(name);
    GpuLinear l;
    l.name = name;
    l.rows = static_cast<int64_t>(t.shape[0]);
    l.cols = static_cast<int64_t>(t.shape[1]);
    if (t.form == DeviceForm::kQuantized) {
      l.quantized = true;
      l.gemv = kernels::cuda::MakeGemvParams(t.layout, region + t.offset);
      const auto& [rotation, base_offset] = rotations_.at({l.cols, t.rotation_seed});
      l.rotation = kernels::cuda::DescribeRotation(
          rotation, rotation.base_order() > 1 ? reinterpret_cast<const int8_t*>(region + base_offset) : nullptr);
      l.rotated_stride = t.layout.blocks_per_row * 32;
    } else {
      l.weight_f16 = reinterpret_cast<const uint16_t*>(region + t.offset);
    }
    return l;
  };
  if (!Find(formats::kEmbedTokens)->in_host) {
    w.embed = reinterpret_cast<const uint16_t*>(region + Find(formats::kEmbedTokens)->offset);
  }
  w.final_norm = f32(formats::kFinalNorm);
  if (tied_head_) {
    w.head.name = formats::kEmbedTokens;
    w.head.rows = cfg_.vocab_size;
    w.head.cols = cfg_.hidden_size;
    w.head.weight_f16 = w.embed;
  } else {
    w.head = linear(formats::kLmHead);
  }
  w.global_inv_freq = reinterpret_cast<const float*>(region + global_rope_offset_);
  w.global_attention_scaling = global_rope_.attention_scaling;
  w.local_inv_freq = reinterpret_cast<const float*>(region + local_rope_offset_);
  w.local_attention_scaling = local_rope_.attention_scaling;
  w.layers.resize(cfg_.num_layers);
  for (int i = 0; i < cfg_.num_layers; ++i) {
    GpuLayerWeights& L = w.layers[i];
    L.attn_norm = f32(LayerTensor(i, "attn_norm.weight"));
    L.mlp_norm = f32(LayerTensor(i, "mlp_norm.weight"));
    L.post_attn_norm = f32(LayerTensor(i, "post_attn_norm.weight"));
    L.post_mlp_norm = f32(LayerTensor(i, "post_mlp_norm.weight"));
    L.q_norm = f32(LayerTensor(i, "attn.q_norm.weight"));
    L.k_norm = f32(LayerTensor(i, "attn.k_norm.weight"));
    L.q_proj = linear(LayerTensor(i, "attn.q_proj.weight"));
    L.k_proj = linear(LayerTensor(i, "attn.k_proj.weight"));
    L.v_proj = linear(LayerTensor(i, "attn.v_proj.weight"));
    L.o_proj = linear(LayerTensor(i, "attn.o_proj.weight"));
    L.gate_proj = linear(LayerTensor(i, "mlp.gate_proj.weight"));
    L.up_proj = linear(LayerTensor(i, "mlp.up_proj.weight"));
    L.down_proj = linear(LayerTensor(i, "mlp.down_proj.weight"));
    L.q_proj.bias = f32(LayerTensor(i, "attn.q_proj.bias"));
    L.k_proj.bias = f32(LayerTensor(i, "attn.k_proj.bias"));
    L.v_proj.bias = f32(LayerTensor(i, "attn.v_proj.bias"));
    L.o_proj.bias = f32(LayerTensor(i, "attn.o_proj.bias"));
  }
  return w;
}

}  // namespace bitloom::engine::gpu
