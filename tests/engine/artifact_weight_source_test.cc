// ArtifactWeightSource on CODEC_HADAMARD_SCALAR: weights packed by the quant library's RTN and LDLQ
// encoders, written with ArtifactWriter and read back, equal the dequantized weight rotated back to
// the model's basis (fp64 reference); the error against the original weight is what the codec's
// stored scales imply; malformed entries are DATA_LOSS; and a synthetic model whose linear weights
// are quantized loads and runs, with KL divergence from the fp model falling as bits rise.
#include "bitloom/engine/artifact_weight_source.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "bitloom/core/dtype.h"
#include "bitloom/engine/evaluation.h"
#include "bitloom/formats/tensor_names.h"
#include "bitloom/kernels/hadamard.h"
#include "bitloom/kernels/scalar_codec.h"
#include "bitloom/modelstore/artifact_reader.h"
#include "bitloom/modelstore/artifact_writer.h"
#include "bitloom/quant/hessian.h"
#include "bitloom/quant/scalar_quantizer.h"
#include "scratch_dir.h"
#include "synthetic_model.h"

namespace bitloom::engine {
namespace {

// Scratch directories named after this test.
class ScratchDir : public testing::ScratchDir {
 public:
  ScratchDir() : testing::ScratchDir("artifact_ws_test") {}
};

std::vector<float> Gaussian(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// One quantized tensor: the entry and blob to write, and the original weight it came from.
struct Packed {
  v1::TensorEntry entry;
  std::vector<uint8_t> blob;
  kernels::ScalarCodecLayout layout;
};

// W (model basis) -> W' = W·Rᵀ -> RTN (empty h) or LDLQ (h: Hessian in the model basis) at `bits`.
Packed Pack(const std::string& name, const std::vector<float>& w, int64_t rows, int64_t cols, int bits,
            int group, uint64_t seed, const std::vector<double>* h = nullptr) {
  Packed p;
  auto rotation = kernels::HadamardRotation::Create(cols, seed);
  EXPECT_TRUE(rotation.ok()) << rotation.status();
  std::vector<float> rotated = w;
  rotation->Apply(rotated.data(), rows, nullptr);  // each row r <- R·r
  quant::ScalarQuantizerOptions options;
  options.bits = bits;
  options.group_size = group;
  absl::StatusOr<quant::QuantizedWeight> q;
  if (h == nullptr) {
    q = quant::QuantizeRtn(rotated, rows, cols, {}, options, nullptr);
  } else {
    std::vector<double> hr = *h;
    EXPECT_TRUE(quant::RotateHessian(*rotation, &hr, nullptr).ok());
    auto factor = quant::FactorHessian(hr, cols, {}, nullptr);
    EXPECT_TRUE(factor.ok()) << factor.status();
    q = quant::QuantizeLdlq(rotated, rows, cols, hr, *factor, options, nullptr);
  }
  EXPECT_TRUE(q.ok()) << q.status();
  p.layout = q->layout;
  p.blob = std::move(q->blob);
  p.entry.set_name(name);
  p.entry.set_codec(v1::CODEC_HADAMARD_SCALAR);
  p.entry.add_shape(static_cast<uint64_t>(rows));
  p.entry.add_shape(static_cast<uint64_t>(cols));
  p.entry.set_bits_per_weight(static_cast<float>(bits));
  p.entry.set_group_size(static_cast<uint32_t>(group));
  (*p.entry.mutable_params())[kernels::kScalarParamRotation] = rotation->Describe();
  (*p.entry.mutable_params())[kernels::kScalarParamRotationSeed] = absl::StrCat(seed);
  return p;
}

void WriteArtifact(const std::string& path, const std::string& temp_dir, const std::vector<Packed>& tensors,
                   const std::map<std::string, WeightTensor>& dense = {},
                   const v1::ModelConfig& config = v1::ModelConfig()) {
  auto writer = modelstore::ArtifactWriter::Create(path, temp_dir);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (const Packed& p : tensors) ASSERT_TRUE((*writer)->AddTensor(p.entry, p.blob).ok()) << p.entry.name();
  for (const auto& [name, t] : dense) {
    v1::TensorEntry e;
    e.set_name(name);
    e.set_codec(v1::CODEC_F32);
    for (uint64_t d : t.shape) e.add_shape(d);
    e.set_bits_per_weight(32);
    const auto* bytes = reinterpret_cast<const uint8_t*>(t.data.data());
    ASSERT_TRUE((*writer)->AddTensor(e, absl::MakeConstSpan(bytes, t.data.size() * sizeof(float))).ok()) << name;
  }
  v1::ArtifactManifest manifest;
  *manifest.mutable_config() = config;
  manifest.set_quantizer_version("artifact_weight_source_test");
  ASSERT_TRUE((*writer)->Finish(manifest).ok());
}

// The fp64 reference: dequantize (exact in fp32), then Rᵀ in double.
std::vector<double> Reference(const Packed& p, uint64_t seed) {
  const int64_t rows = p.layout.rows, cols = p.layout.cols;
  std::vector<float> deq(rows * cols);
  EXPECT_TRUE(kernels::DequantizeScalarCodec(p.layout, p.blob, deq.data(), nullptr).ok());
  std::vector<double> ref(deq.begin(), deq.end());
  auto rotation = kernels::HadamardRotation::Create(cols, seed);
  rotation->ApplyTranspose(ref.data(), rows, nullptr);
  return ref;
}

// Mean squared quantization error the stored scales imply for weights spread evenly over each group's
// range: step²/12 with step = scale (levels are one scale apart), averaged over weights.
double ImpliedMse(const Packed& p) {
  std::vector<uint8_t> codes;
  std::vector<uint16_t> scales;
  EXPECT_TRUE(kernels::UnpackScalarCodec(p.layout, p.blob, &codes, &scales).ok());
  const int64_t rows = p.layout.rows, cols = p.layout.cols, g = p.layout.group_size;
  double sum = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < p.layout.groups_per_row; ++j) {
      const double s = F16ToF32(scales[r * p.layout.groups_per_row + j]);
      const int64_t width = std::min(g, cols - j * g);
      sum += width * s * s / 12.0;
    }
  }
  return sum / static_cast<double>(rows * cols);
}

TEST(ArtifactWeightSourceScalar, DecodesToTheUnrotatedDequantizedWeight) {
  ScratchDir dir;
  // 576: paley2(36) x 16 with a partial last group; 200: no Paley order (identity(25) x 8), a partial
  // last code block; 256: pure Sylvester. LDLQ on one of them with a correlated Hessian.
  struct Case {
    std::string name;
    int64_t rows, cols;
    uint64_t seed;
    bool ldlq;
  };
  const std::vector<Case> cases = {
      {"a.weight", 48, 576, 17, false}, {"b.weight", 33, 200, 5, false}, {"c.weight", 40, 256, 3, true}};
  std::vector<Packed> packed;
  std::vector<std::vector<float>> originals;
  for (const Case& c : cases) {
    std::vector<float> w = Gaussian(c.rows * c.cols, c.seed + 100);
    for (int64_t r = 0; r < c.rows; ++r) w[r * c.cols + 7] *= 20.0f;  // an outlier input channel
    std::vector<double> h;
    if (c.ldlq) {
      const int64_t n = 4 * c.cols;
      std::vector<float> x = Gaussian(n * c.cols, 9);
      for (int64_t i = 0; i < n; ++i) x[i * c.cols + 1] += 3.0f * x[i * c.cols];  // correlated inputs
      h.assign(c.cols * c.cols, 0.0);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t a = 0; a < c.cols; ++a)
          for (int64_t b = 0; b < c.cols; ++b) h[a * c.cols + b] += double(x[i * c.cols + a]) * x[i * c.cols + b] / n;
    }
    packed.push_back(Pack(c.name, w, c.rows, c.cols, 4, 128, c.seed, c.ldlq ? &h : nullptr));
    originals.push_back(std::move(w));
  }
  const std::string path = dir.Join("q.bitloom");
  WriteArtifact(path, dir.path(), packed);
  auto reader = modelstore::ArtifactReader::Open(path, {.verify_checksums = true});
  ASSERT_TRUE(reader.ok()) << reader.status();
  ThreadPool pool(2);
  ArtifactWeightSource source(**reader, &pool);

  for (size_t k = 0; k < cases.size(); ++k) {
    const Case& c = cases[k];
    SCOPED_TRACE(c.name);
    ASSERT_TRUE(source.Contains(c.name));
    auto t = source.Read(c.name);
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_EQ(t->shape, (std::vector<uint64_t>{uint64_t(c.rows), uint64_t(c.cols)}));
    const std::vector<double> ref = Reference(packed[k], c.seed);
    double max_diff = 0, max_ref = 0, err2 = 0, norm2 = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      max_diff = std::max(max_diff, std::abs(t->data[i] - ref[i]));
      max_ref = std::max(max_ref, std::abs(ref[i]));
      err2 += (t->data[i] - double(originals[k][i])) * (t->data[i] - double(originals[k][i]));
      norm2 += double(originals[k][i]) * originals[k][i];
    }
    // fp32 rotation: about log2(n) + p roundings of values of size max|W'|.
    EXPECT_LT(max_diff, 2e-6 * max_ref) << "max |decoded − reference| " << max_diff;
    // The rotation is orthogonal, so the error in the model basis is the codec's error in rotated
    // space, which the stored scales predict: ~step²/12 per weight, less where a group's largest
    // values are clipped into the outer levels, more for LDLQ (it trades per-weight error for
    // output error under H).
    const double mse = err2 / static_cast<double>(ref.size());
    const double implied = ImpliedMse(packed[k]);
    const double relative = std::sqrt(err2 / norm2);
    std::cout << c.name << ": relative error " << relative << ", MSE " << mse << ", implied by scales "
              << implied << "\n";
    EXPECT_GT(mse, (c.ldlq ? 0.9 : 0.7) * implied);
    EXPECT_LT(mse, (c.ldlq ? 2.0 : 1.15) * implied);
    // 4 bits on rotated (near-Gaussian) rows: ~0.1 relative RMS error.
    EXPECT_GT(relative, 0.06);
    EXPECT_LT(relative, c.ldlq ? 0.2 : 0.13);
  }
}

TEST(ArtifactWeightSourceScalar, MalformedEntriesAreDataLoss) {
  ScratchDir dir;
  const std::vector<float> w = Gaussian(8 * 64, 1);
  const Packed good = Pack("good", w, 8, 64, 2, 32, 4);
  std::vector<Packed> bad;
  Packed p = good;
  p.entry.set_name("no_seed");
  p.entry.mutable_params()->erase(kernels::kScalarParamRotationSeed);
  bad.push_back(p);
  p = good;
  p.entry.set_name("bad_seed");
  (*p.entry.mutable_params())[kernels::kScalarParamRotationSeed] = "12x";
  bad.push_back(p);
  p = good;
  p.entry.set_name("other_rotation");
  (*p.entry.mutable_params())[kernels::kScalarParamRotation] = "rht:sylvester(32)";
  bad.push_back(p);
  p = good;
  p.entry.set_name("wrong_bits");  // the blob is 2-bit: 4 code words a row, 3 bits needs 8
  p.entry.set_bits_per_weight(3);
  bad.push_back(p);
  p = good;
  p.entry.set_name("fractional_bits");
  p.entry.set_bits_per_weight(3.5f);
  bad.push_back(p);
  p = good;
  p.entry.set_name("three_d");
  p.entry.add_shape(1);
  bad.push_back(p);
  p = good;
  p.entry.set_name("trellis");
  p.entry.set_codec(v1::CODEC_TRELLIS);
  bad.push_back(p);
  std::vector<Packed> all = bad;
  all.push_back(good);
  WriteArtifact(dir.Join("bad.bitloom"), dir.path(), all);
  auto reader = modelstore::ArtifactReader::Open(dir.Join("bad.bitloom"));
  ASSERT_TRUE(reader.ok()) << reader.status();
  ArtifactWeightSource source(**reader);
  EXPECT_TRUE(source.Read("good").ok());
  for (const Packed& b : bad) {
    auto t = source.Read(b.entry.name());
    if (b.entry.name() == "trellis") {
      EXPECT_TRUE(absl::IsUnimplemented(t.status())) << t.status();
    } else {
      EXPECT_TRUE(absl::IsDataLoss(t.status())) << b.entry.name() << ": " << t.status();
    }
    EXPECT_NE(t.status().message().find(b.entry.name()), std::string::npos) << t.status();
  }
}

// A synthetic model with every linear weight of its blocks quantized: it loads through the artifact,
// runs exactly like the fp model given the decoded weights, and its KL from the fp model falls with
// the bit width.
TEST(ArtifactWeightSourceScalar, QuantizedSyntheticModelRunsAndImprovesWithBits) {
  const v1::ModelConfig config = testing::SyntheticConfig("llama");
  const InMemoryWeightSource fp = testing::SyntheticWeights(config, 7);
  auto fp_model = DecoderModel::Load(config, fp, nullptr);
  ASSERT_TRUE(fp_model.ok()) << fp_model.status();
  std::vector<int32_t> ids(120);
  std::mt19937_64 rng(3);
  for (int32_t& t : ids) t = static_cast<int32_t>(rng() % config.vocab_size());
  EvaluationProtocol protocol;
  protocol.context_length = 60;
  protocol.stride = 60;

  const char* kLinear[] = {"attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight",
                           "attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
                           "mlp.down_proj.weight"};
  const char* kDense[] = {"attn_norm.weight", "mlp_norm.weight"};
  double previous_kl = 1e30;
  for (int bits : {2, 4, 8}) {
    SCOPED_TRACE(absl::StrCat(bits, " bits"));
    ScratchDir dir;
    std::vector<Packed> packed;
    std::map<std::string, WeightTensor> dense;
    for (const char* top : {formats::kEmbedTokens, formats::kFinalNorm, formats::kLmHead}) {
      if (fp.Contains(top)) dense[top] = *fp.Read(top);
    }
    for (int l = 0; l < static_cast<int>(config.num_layers()); ++l) {
      for (const char* s : kDense) dense[formats::LayerTensor(l, s)] = *fp.Read(formats::LayerTensor(l, s));
      for (const char* s : kLinear) {
        const std::string name = formats::LayerTensor(l, s);
        const WeightTensor t = *fp.Read(name);
        packed.push_back(Pack(name, t.data, int64_t(t.shape[0]), int64_t(t.shape[1]), bits, 32, 1000 + l));
      }
    }
    WriteArtifact(dir.Join("m.bitloom"), dir.path(), packed, dense, config);
    auto reader = modelstore::ArtifactReader::Open(dir.Join("m.bitloom"));
    ASSERT_TRUE(reader.ok()) << reader.status();
    ArtifactWeightSource source(**reader);
    auto q_model = DecoderModel::Load(config, source, nullptr);
    ASSERT_TRUE(q_model.ok()) << q_model.status();

    // The same weights handed over in memory give the same logits: the engine sees only fp32.
    InMemoryWeightSource decoded;
    for (const auto& [name, t] : dense) ASSERT_TRUE(decoded.Add(name, t.shape, t.data).ok());
    for (const Packed& p : packed) {
      const WeightTensor t = *source.Read(p.entry.name());
      ASSERT_TRUE(decoded.Add(p.entry.name(), t.shape, t.data).ok());
    }
    auto mem_model = DecoderModel::Load(config, decoded, nullptr);
    ASSERT_TRUE(mem_model.ok());
    auto a = EvaluateModels(**q_model, mem_model->get(), ids, protocol);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(a->kl_sum, 0.0);

    auto result = EvaluateModels(**q_model, fp_model->get(), ids, protocol);
    ASSERT_TRUE(result.ok()) << result.status();
    std::cout << bits << " bits: mean KL " << result->MeanKl() << ", top-1 agreement " << result->Top1Agreement()
              << ", PPL " << result->model.Perplexity() << " (fp " << result->reference.Perplexity() << ")\n";
    EXPECT_LT(result->MeanKl(), previous_kl);
    previous_kl = result->MeanKl();
    if (bits == 8) {
      EXPECT_LT(result->MeanKl(), 1e-4);
      EXPECT_GT(result->Top1Agreement(), 0.95);
    }
  }
}

}  // namespace
}  // namespace bitloom::engine
