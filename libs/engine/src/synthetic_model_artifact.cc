#include "bitloom/engine/synthetic_model_artifact.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "bitloom/core/dtype.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/engine/decoder_model.h"
#include "bitloom/formats/tensor_names.h"
#include "bitloom/kernels/hadamard.h"
#include "bitloom/kernels/scalar_codec.h"
#include "bitloom/modelstore/codec_layout.h"
#include "bitloom/modelstore/format.h"

namespace bitloom::engine {
namespace {

static_assert(std::endian::native == std::endian::little,
              "blobs are little-endian and written from the host's representation");

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
// Separate counter streams of one tensor: codes and dense values, and the scales' jitter.
constexpr uint64_t kScaleStream = 0x5CA1E5C0DEC0FFEEull;
// Scales vary by ±25% around the RMS-preserving value, so no two groups are alike.
constexpr float kScaleJitter = 0.5f;

uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Output i (0-based) of SplitMix64 started at `key`: random access into one stream.
uint64_t CounterRandom(uint64_t key, uint64_t i) { return Mix(key + (i + 1) * kGolden); }

// Uniform in [0, 1) from the top 24 bits.
float Unit(uint64_t r) { return static_cast<float>(r >> 40) * 0x1p-24f; }

uint64_t TensorKey(uint64_t seed, const std::string& name) {
  return Mix(seed ^ modelstore::Xxh3(absl::MakeConstSpan(
                        reinterpret_cast<const uint8_t*>(name.data()), name.size())));
}

// The rotation seed of a layer's input site, mixed as quantd mixes its sites.
uint64_t SiteSeed(uint64_t seed, int layer, int site) {
  return Mix(Mix(Mix(seed) ^ static_cast<uint64_t>(layer)) ^ static_cast<uint64_t>(site));
}

// RMS of the K-bit grid's levels q − (2^K − 1)/2 for uniform q: √((4^K − 1)/12).
double LevelRms(int bits) { return std::sqrt((std::ldexp(1.0, 2 * bits) - 1.0) / 12.0); }

// Fills bytes [offset, offset + out.size()) of an array of Elem whose element e is value_at(e).
template <typename Elem, typename ValueAt>
void FillElements(uint64_t offset, absl::Span<uint8_t> out, ValueAt value_at) {
  constexpr uint64_t kSize = sizeof(Elem);
  uint8_t* dst = out.data();
  uint64_t pos = offset;
  const uint64_t end = offset + out.size();
  auto partial = [&](uint64_t limit) {
    const Elem v = value_at(pos / kSize);
    const uint64_t skip = pos % kSize;
    const uint64_t n = std::min(kSize - skip, limit - pos);
    std::memcpy(dst, reinterpret_cast<const uint8_t*>(&v) + skip, n);
    dst += n;
    pos += n;
  };
  if (pos % kSize != 0 && pos < end) partial(end);
  for (uint64_t e = pos / kSize; pos + kSize <= end; ++e, pos += kSize, dst += kSize) {
    const Elem v = value_at(e);
    std::memcpy(dst, &v, kSize);
  }
  if (pos < end) partial(end);
}

absl::StatusOr<kernels::ScalarCodecLayout> LayoutOf(const v1::TensorEntry& entry) {
  if (entry.shape_size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", entry.name(), "' is not a matrix"));
  }
  return kernels::MakeScalarCodecLayout(
      static_cast<int64_t>(entry.shape(0)), static_cast<int64_t>(entry.shape(1)),
      static_cast<int>(entry.bits_per_weight()), static_cast<int>(entry.group_size()));
}

void FillScalarCodec(const kernels::ScalarCodecLayout& layout, uint64_t key, uint64_t offset,
                     absl::Span<uint8_t> out) {
  const uint64_t codes_bytes = static_cast<uint64_t>(layout.codes_bytes);
  const uint64_t end = offset + out.size();
  if (offset < codes_bytes) {
    const uint64_t n = std::min(end, codes_bytes) - offset;
    const int64_t stride = layout.row_stride_words;
    const int64_t data_words = layout.blocks_per_row * layout.bits;
    const int valid_codes = static_cast<int>(layout.cols % kernels::kScalarCodesPerBlock);
    if (stride == data_words && valid_codes == 0) {
      // Every word holds 32 whole codes, and every bit pattern is a valid code stream.
      FillElements<uint32_t>(offset, out.subspan(0, n), [key](uint64_t j) {
        return static_cast<uint32_t>(CounterRandom(key, j) >> 32);
      });
    } else {
      // Row-padding words are zero, and so are the codes past `cols` in a partial last block.
      const int bits = layout.bits;
      FillElements<uint32_t>(offset, out.subspan(0, n), [=](uint64_t j) -> uint32_t {
        const int64_t w = static_cast<int64_t>(j % static_cast<uint64_t>(stride));
        if (w >= data_words) return 0;
        uint32_t v = static_cast<uint32_t>(CounterRandom(key, j) >> 32);
        if (valid_codes != 0 && w >= data_words - bits) {
          const int64_t keep = int64_t{valid_codes} * bits - (w - (data_words - bits)) * 32;
          if (keep <= 0) return 0;
          if (keep < 32) v &= (uint32_t{1} << keep) - 1u;
        }
        return v;
      });
    }
    out = out.subspan(n);
    offset += n;
  }
  if (out.empty()) return;
  // Scales: each linear layer roughly keeps its input's RMS, whatever K and the width.
  const float base = static_cast<float>(
      1.0 / (std::sqrt(static_cast<double>(layout.cols)) * LevelRms(layout.bits)));
  const uint64_t scale_key = key ^ kScaleStream;
  FillElements<uint16_t>(offset - codes_bytes, out, [=](uint64_t g) {
    const float jitter =
        1.0f - 0.5f * kScaleJitter + kScaleJitter * Unit(CounterRandom(scale_key, g));
    return F32ToF16(base * jitter);
  });
}

// ---- Shapes.

v1::ModelConfig LlamaConfig(uint32_t vocab, uint32_t hidden, uint32_t intermediate, uint32_t layers,
                            uint32_t heads, uint32_t kv_heads, uint32_t head_dim,
                            uint32_t max_positions, float rope_theta, bool tied) {
  v1::ModelConfig c;
  c.set_architecture("llama");
  c.set_vocab_size(vocab);
  c.set_hidden_size(hidden);
  c.set_intermediate_size(intermediate);
  c.set_num_layers(layers);
  c.set_num_attention_heads(heads);
  c.set_num_key_value_heads(kv_heads);
  c.set_head_dim(head_dim);
  c.set_max_position_embeddings(max_positions);
  c.set_rms_norm_eps(1e-5f);
  c.set_rope_theta(rope_theta);
  c.set_tie_word_embeddings(tied);
  c.set_hidden_activation("silu");
  return c;
}

void SetLlama31RopeScaling(v1::ModelConfig& c) {
  c.set_rope_scaling_type("llama3");
  c.set_rope_scaling_factor(8.0f);
  c.set_rope_low_freq_factor(1.0f);
  c.set_rope_high_freq_factor(4.0f);
  c.set_rope_original_max_position_embeddings(8192);
}

// The decoder linears of one layer: (suffix, input site, rows, cols), in the order quantd writes
// them (site by site).
struct LinearShape {
  const char* suffix;
  int site;
  int64_t rows;
  int64_t cols;
};

std::vector<LinearShape> LayerLinears(const ResolvedConfig& r) {
  const int64_t hidden = r.hidden_size;
  const int64_t q = int64_t{r.num_heads} * r.head_dim;
  const int64_t kv = int64_t{r.num_kv_heads} * r.head_dim;
  const int64_t inter = r.intermediate_size;
  return {{"attn.q_proj.weight", 0, q, hidden},       {"attn.k_proj.weight", 0, kv, hidden},
          {"attn.v_proj.weight", 0, kv, hidden},      {"attn.o_proj.weight", 1, hidden, q},
          {"mlp.gate_proj.weight", 2, inter, hidden}, {"mlp.up_proj.weight", 2, inter, hidden},
          {"mlp.down_proj.weight", 3, hidden, inter}};
}

SyntheticTensor DenseTensor(const std::string& name, std::vector<uint64_t> shape, v1::Codec codec) {
  SyntheticTensor t;
  t.entry.set_name(name);
  t.entry.set_codec(codec);
  uint64_t count = 1;
  for (uint64_t d : shape) {
    t.entry.add_shape(d);
    count *= d;
  }
  t.entry.set_bits_per_weight(static_cast<float>(8 * modelstore::DenseElementSize(codec)));
  t.bytes = count * modelstore::DenseElementSize(codec);
  return t;
}

absl::StatusOr<SyntheticTensor> ScalarTensor(const std::string& name, int64_t rows, int64_t cols,
                                             int bits, int group_size,
                                             const kernels::HadamardRotation& rotation) {
  BITLOOM_ASSIGN_OR_RETURN(kernels::ScalarCodecLayout layout,
                           kernels::MakeScalarCodecLayout(rows, cols, bits, group_size));
  SyntheticTensor t;
  t.entry.set_name(name);
  t.entry.set_codec(v1::CODEC_HADAMARD_SCALAR);
  t.entry.add_shape(static_cast<uint64_t>(rows));
  t.entry.add_shape(static_cast<uint64_t>(cols));
  t.entry.set_bits_per_weight(static_cast<float>(bits));
  t.entry.set_group_size(static_cast<uint32_t>(group_size));
  (*t.entry.mutable_params())[kernels::kScalarParamRotation] = rotation.Describe();
  (*t.entry.mutable_params())[kernels::kScalarParamRotationSeed] = absl::StrCat(rotation.seed());
  t.bytes = static_cast<uint64_t>(layout.total_bytes);
  return t;
}

// Per decoder linear, K_lo or K_lo + 1 by error diffusion in file order (see the header).
absl::StatusOr<std::vector<int>> AssignBits(const std::vector<LinearShape>& linears, int layers,
                                            double target, int group_size, double* achieved) {
  const size_t n = linears.size() * static_cast<size_t>(layers);
  // stored[k][i]: bits of linear i (of one layer) at K = k + 1; every layer has the same linears.
  std::vector<std::vector<double>> stored(kernels::kScalarMaxBits);
  std::vector<double> total_bits(kernels::kScalarMaxBits, 0.0);
  double weights = 0;
  for (int k = 0; k < kernels::kScalarMaxBits; ++k) {
    for (const LinearShape& l : linears) {
      BITLOOM_ASSIGN_OR_RETURN(kernels::ScalarCodecLayout layout,
                               kernels::MakeScalarCodecLayout(l.rows, l.cols, k + 1, group_size));
      stored[k].push_back(8.0 * static_cast<double>(layout.total_bytes));
      total_bits[k] += stored[k].back() * layers;
    }
  }
  for (const LinearShape& l : linears) weights += static_cast<double>(l.rows * l.cols) * layers;
  const double lowest = total_bits.front() / weights;
  const double highest = total_bits.back() / weights;
  constexpr double kSlack = 1e-9;
  if (!(target >= lowest - kSlack && target <= highest + kSlack)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bits_per_weight: ", target, " is outside [", lowest, ", ", highest,
        "], the stored bits per weight of K = 1..8 at group ", group_size, " for this shape"));
  }
  int lo = 0;  // index into stored: K = lo + 1
  while (lo + 1 < kernels::kScalarMaxBits && total_bits[lo + 1] / weights <= target + kSlack) ++lo;
  const int hi = std::min(lo + 1, kernels::kScalarMaxBits - 1);
  std::vector<int> bits(n);
  double spent = 0, counted = 0;
  for (size_t i = 0; i < n; ++i) {
    const LinearShape& l = linears[i % linears.size()];
    const double w = static_cast<double>(l.rows * l.cols);
    const double want = target * (counted + w);
    const double low = stored[lo][i % linears.size()];
    const double high = stored[hi][i % linears.size()];
    const bool wide = std::abs(spent + high - want) < std::abs(spent + low - want);
    bits[i] = (wide ? hi : lo) + 1;
    spent += wide ? high : low;
    counted += w;
  }
  *achieved = spent / weights;
  return bits;
}

}  // namespace

absl::StatusOr<v1::ModelConfig> SyntheticModelConfig(absl::string_view shape) {
  v1::ModelConfig c;
  if (shape == "llama3-8b") {
    c = LlamaConfig(128256, 4096, 14336, 32, 32, 8, 128, 131072, 500000.0f, false);
    SetLlama31RopeScaling(c);
  } else if (shape == "llama3-70b") {
    c = LlamaConfig(128256, 8192, 28672, 80, 64, 8, 128, 131072, 500000.0f, false);
    SetLlama31RopeScaling(c);
  } else if (shape == "smollm2-135m") {
    c = LlamaConfig(49152, 576, 1536, 30, 9, 3, 64, 8192, 100000.0f, true);
  } else if (shape == "tiny") {
    // Widths that are not multiples of 32 or 128: partial code blocks, partial groups, row padding.
    c = LlamaConfig(512, 144, 200, 2, 4, 2, 32, 512, 10000.0f, false);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("shape: '", shape, "' is not one of ", kSyntheticShapeNames));
  }
  SyntheticSpecialTokens special;
  BITLOOM_RETURN_IF_ERROR(SyntheticTokenizer(c.vocab_size(), &special).status());
  c.add_bos_token_ids(special.bos);
  c.add_eos_token_ids(special.eos);
  c.add_eos_token_ids(special.eot);
  return c;
}

absl::StatusOr<SyntheticArtifactPlan> PlanSyntheticArtifact(
    const v1::ModelConfig& config, const SyntheticArtifactOptions& options) {
  if (options.group_size <= 0 || options.group_size % kernels::kScalarCodesPerBlock != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("group_size: ", options.group_size, " is not a positive multiple of 32"));
  }
  const bool head_dense = options.head_bits == 16;
  if (!head_dense && (options.head_bits < kernels::kScalarMinBits ||
                      options.head_bits > kernels::kScalarMaxBits)) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_bits: ", options.head_bits, " is neither 1..8 nor 16"));
  }
  BITLOOM_ASSIGN_OR_RETURN(const ResolvedConfig r, ResolveConfig(config));
  const std::vector<LinearShape> linears = LayerLinears(r);
  SyntheticArtifactPlan plan;
  plan.config = config;
  BITLOOM_ASSIGN_OR_RETURN(std::vector<int> bits,
                           AssignBits(linears, r.num_layers, options.bits_per_weight,
                                      options.group_size, &plan.bits_per_weight));

  const uint64_t vocab = static_cast<uint64_t>(r.vocab_size);
  const uint64_t hidden = static_cast<uint64_t>(r.hidden_size);
  plan.tensors.push_back(DenseTensor(formats::kEmbedTokens, {vocab, hidden}, v1::CODEC_F16));
  for (int layer = 0; layer < r.num_layers; ++layer) {
    std::vector<kernels::HadamardRotation> rotations;
    for (int site = 0; site < 4; ++site) {
      const int64_t dim = site == 0 || site == 2 ? r.hidden_size
                          : site == 1            ? int64_t{r.num_heads} * r.head_dim
                                                 : r.intermediate_size;
      BITLOOM_ASSIGN_OR_RETURN(
          kernels::HadamardRotation rotation,
          kernels::HadamardRotation::Create(dim, SiteSeed(options.seed, layer, site)));
      rotations.push_back(std::move(rotation));
    }
    for (size_t i = 0; i < linears.size(); ++i) {
      const LinearShape& l = linears[i];
      if (i == 0) {
        plan.tensors.push_back(
            DenseTensor(formats::LayerTensor(layer, "attn_norm.weight"), {hidden}, v1::CODEC_F32));
      }
      if (l.site == 2 && linears[i - 1].site != 2) {
        plan.tensors.push_back(
            DenseTensor(formats::LayerTensor(layer, "mlp_norm.weight"), {hidden}, v1::CODEC_F32));
      }
      BITLOOM_ASSIGN_OR_RETURN(
          SyntheticTensor t,
          ScalarTensor(formats::LayerTensor(layer, l.suffix), l.rows, l.cols,
                       bits[static_cast<size_t>(layer) * linears.size() + i], options.group_size,
                       rotations[static_cast<size_t>(l.site)]));
      t.decoder_linear = true;
      plan.decoder_linear_bytes += t.bytes;
      plan.tensors.push_back(std::move(t));
    }
  }
  plan.tensors.push_back(DenseTensor(formats::kFinalNorm, {hidden}, v1::CODEC_F32));
  plan.head_bits_per_weight = 16.0;
  if (!r.tie_word_embeddings) {
    if (head_dense) {
      plan.tensors.push_back(DenseTensor(formats::kLmHead, {vocab, hidden}, v1::CODEC_F16));
    } else {
      // Seeded as a site one past the last block, as quantd seeds the head's rotation.
      BITLOOM_ASSIGN_OR_RETURN(kernels::HadamardRotation rotation,
                               kernels::HadamardRotation::Create(
                                   r.hidden_size, SiteSeed(options.seed, r.num_layers, 0)));
      BITLOOM_ASSIGN_OR_RETURN(SyntheticTensor t,
                               ScalarTensor(formats::kLmHead, r.vocab_size, r.hidden_size,
                                            options.head_bits, options.group_size, rotation));
      plan.head_bits_per_weight =
          8.0 * static_cast<double>(t.bytes) / static_cast<double>(vocab * hidden);
      plan.tensors.push_back(std::move(t));
    }
  }
  for (const SyntheticTensor& t : plan.tensors) plan.total_bytes += t.bytes;
  return plan;
}

absl::Status FillSyntheticBlob(const SyntheticTensor& tensor, uint64_t seed, uint64_t offset,
                               absl::Span<uint8_t> out) {
  if (offset > tensor.bytes || out.size() > tensor.bytes - offset) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor.entry.name(), "': bytes [",
                                                   offset, ", +", out.size(),
                                                   ") are outside its blob of ", tensor.bytes));
  }
  const uint64_t key = TensorKey(seed, tensor.entry.name());
  switch (tensor.entry.codec()) {
    case v1::CODEC_F32: {
      // Norm weights: 1, so each norm only normalises.
      const uint32_t one = std::bit_cast<uint32_t>(1.0f);
      FillElements<uint32_t>(offset, out, [one](uint64_t) { return one; });
      return absl::OkStatus();
    }
    case v1::CODEC_F16: {
      // Uniform with RMS 1/√hidden: a dense head then keeps the RMS of the normed hidden state,
      // and so does a tied embedding used as the head (the embedding's own scale does not matter
      // otherwise: every layer norms its input).
      const uint64_t cols =
          tensor.entry.shape_size() == 0 ? 1 : tensor.entry.shape(tensor.entry.shape_size() - 1);
      const float amplitude = std::sqrt(3.0f / static_cast<float>(cols));
      FillElements<uint16_t>(offset, out, [=](uint64_t e) {
        return F32ToF16(amplitude * (2.0f * Unit(CounterRandom(key, e)) - 1.0f));
      });
      return absl::OkStatus();
    }
    case v1::CODEC_HADAMARD_SCALAR: {
      BITLOOM_ASSIGN_OR_RETURN(const kernels::ScalarCodecLayout layout, LayoutOf(tensor.entry));
      FillScalarCodec(layout, key, offset, out);
      return absl::OkStatus();
    }
    default:
      return absl::UnimplementedError(
          absl::StrCat("tensor '", tensor.entry.name(), "': no synthetic bytes for its codec"));
  }
}

absl::StatusOr<SyntheticArtifactPlan> WriteSyntheticArtifact(
    const v1::ModelConfig& config, const SyntheticArtifactOptions& options,
    modelstore::ArtifactWriter& writer, ThreadPool* pool) {
  auto failed = [&writer](absl::Status status) {
    writer.Abort();
    return status;
  };
  if (options.chunk_bytes == 0)
    return failed(absl::InvalidArgumentError("chunk_bytes: must be > 0"));
  absl::StatusOr<SyntheticArtifactPlan> plan = PlanSyntheticArtifact(config, options);
  if (!plan.ok()) return failed(plan.status());
  absl::StatusOr<v1::TokenizerSpec> tokenizer = SyntheticTokenizer(config.vocab_size(), nullptr);
  if (!tokenizer.ok()) return failed(tokenizer.status());

  // Every chunk of every tensor, in file order; a tensor has at least one (possibly empty) chunk.
  struct Chunk {
    size_t tensor = 0;
    uint64_t offset = 0;
    uint64_t size = 0;
    std::unique_ptr<uint8_t[]> data;
    absl::Status status;
    bool done = false;
  };
  std::vector<Chunk> chunks;
  for (size_t t = 0; t < plan->tensors.size(); ++t) {
    const uint64_t bytes = plan->tensors[t].bytes;
    uint64_t offset = 0;
    do {
      Chunk c;
      c.tensor = t;
      c.offset = offset;
      c.size = std::min(options.chunk_bytes, bytes - offset);
      chunks.push_back(std::move(c));
      offset += chunks.back().size;
    } while (offset < bytes);
  }

  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::unique_ptr<uint8_t[]>> free_buffers;  // the writing thread's only
  const size_t window = pool == nullptr ? 1 : 2 * pool->num_threads() + 2;
  size_t scheduled = 0;
  auto produce = [&](size_t i) {
    Chunk& c = chunks[i];
    absl::Status s = FillSyntheticBlob(plan->tensors[c.tensor], options.seed, c.offset,
                                       absl::MakeSpan(c.data.get(), c.size));
    std::lock_guard<std::mutex> lock(mu);
    c.status = std::move(s);
    c.done = true;
    cv.notify_all();
  };
  auto wait_done = [&](size_t i) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return chunks[i].done; });
  };
  // Tasks reference this frame: every scheduled chunk must finish before it is left.
  auto drain = [&] {
    for (size_t i = 0; i < scheduled; ++i) wait_done(i);
  };

  uint64_t written = 0;
  int tensors_done = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    for (; scheduled < chunks.size() && scheduled < i + window; ++scheduled) {
      Chunk& c = chunks[scheduled];
      if (!free_buffers.empty()) {
        c.data = std::move(free_buffers.back());
        free_buffers.pop_back();
      } else {
        c.data.reset(new uint8_t[options.chunk_bytes]);
      }
      if (pool == nullptr) {
        produce(scheduled);
      } else {
        pool->Schedule([&produce, index = scheduled] { produce(index); });
      }
    }
    wait_done(i);
    Chunk& c = chunks[i];
    const SyntheticTensor& tensor = plan->tensors[c.tensor];
    absl::Status s = c.status;
    if (s.ok() && c.offset == 0) s = writer.BeginTensor(tensor.entry);
    if (s.ok()) s = writer.AppendTensorData(absl::MakeConstSpan(c.data.get(), c.size));
    if (s.ok() && c.offset + c.size == tensor.bytes) {
      s = writer.EndTensor();
      ++tensors_done;
      if (options.on_progress) {
        options.on_progress(tensors_done, static_cast<int>(plan->tensors.size()),
                            writer.bytes_written());
      }
    }
    if (!s.ok()) {
      drain();
      return failed(s);
    }
    written += c.size;
    free_buffers.push_back(std::move(c.data));
  }

  v1::ArtifactManifest manifest;
  *manifest.mutable_config() = config;
  *manifest.mutable_tokenizer() = *std::move(tokenizer);
  manifest.mutable_source()->set_location(options.source_location);
  manifest.mutable_source()->set_kind("synthetic");
  manifest.set_quantizer_version("bitloom synth (random weights)");
  manifest.set_bits_per_weight(plan->bits_per_weight);
  manifest.set_head_bits_per_weight(plan->head_bits_per_weight);
  if (written != plan->total_bytes) {
    return failed(absl::InternalError(
        absl::StrCat("wrote ", written, " blob bytes, planned ", plan->total_bytes)));
  }
  BITLOOM_RETURN_IF_ERROR(writer.Finish(std::move(manifest)));
  return *std::move(plan);
}

}  // namespace bitloom::engine
