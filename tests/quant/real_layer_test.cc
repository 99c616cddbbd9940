// RTN vs LDLQ, with and without the Hadamard rotation, on the first attention block of the real
// SmolLM2-135M-Instruct (the GGUF fixture), with the real calibration inputs of q/k/v: the
// RMSNorm'd embeddings of a calibration text. Prints the proxy losses (the numbers quoted in
// docs/QUANTIZATION.md) and checks the orderings the algorithm promises. Skips when the fixture
// model is absent.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "bitloom/formats/checkpoint.h"
#include "bitloom/formats/tensor_names.h"
#include "bitloom/formats/tokenizer.h"
#include "bitloom/kernels/hadamard.h"
#include "bitloom/quant/hessian.h"
#include "bitloom/quant/scalar_quantizer.h"

namespace bitloom::quant {
namespace {

std::string ModelPath() {
  const char* env = std::getenv("BITLOOM_MODEL_CACHE");
  const char* home = std::getenv("HOME");
  const std::string dir =
      (env && *env) ? env : std::string(home ? home : "") + "/.cache/bitloom/models";
  return dir + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

TEST(RealLayer, SmolLm2Layer0Attention) {
  const std::string path = ModelPath();
  if (!std::filesystem::exists(path))
    GTEST_SKIP() << path << " is absent; run scripts/fetch-models.sh";
  const std::string corpus =
      std::string(BITLOOM_SOURCE_DIR) + "/../shared/data/calibration/wiki.utf8";
  if (!std::filesystem::exists(corpus)) GTEST_SKIP() << corpus << " is absent";
  auto ckpt = formats::OpenCheckpoint(path);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const auto& cfg = (*ckpt)->config();
  const int64_t hidden = cfg.hidden_size();
  auto tok = formats::Tokenizer::FromSpec((*ckpt)->tokenizer());
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::ifstream in(corpus);
  std::stringstream ss;
  ss << in.rdbuf();
  auto ids = (*tok)->Encode(ss.str().substr(0, 200000));
  ASSERT_TRUE(ids.ok()) << ids.status();
  const int64_t tokens = std::min<int64_t>(static_cast<int64_t>(ids->size()), 8192);
  ASSERT_GT(tokens, 1000);

  // Layer 0's q/k/v input: RMSNorm(embedding) · attn_norm.
  auto embed = (*ckpt)->ReadF32(formats::kEmbedTokens);
  auto norm = (*ckpt)->ReadF32(formats::LayerTensor(0, "attn_norm.weight"));
  ASSERT_TRUE(embed.ok() && norm.ok());
  std::vector<float> x(tokens * hidden);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* e = embed->data() + static_cast<int64_t>((*ids)[t]) * hidden;
    double ms = 0;
    for (int64_t i = 0; i < hidden; ++i) ms += double(e[i]) * e[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ms / hidden + cfg.rms_norm_eps()));
    for (int64_t i = 0; i < hidden; ++i) x[t * hidden + i] = e[i] * inv * (*norm)[i];
  }
  ThreadPool pool(2);
  HessianAccumulator acc(hidden);
  ASSERT_TRUE(acc.Add(x, tokens, &pool).ok());
  const std::vector<double> h = acc.Mean();
  const auto rot = *kernels::HadamardRotation::Create(hidden, 2026);
  std::vector<double> hr = h;
  ASSERT_TRUE(RotateHessian(rot, &hr, &pool).ok());
  const auto factor_plain = *FactorHessian(h, hidden, {}, &pool);
  const auto factor_rot = *FactorHessian(hr, hidden, {}, &pool);

  std::printf("SmolLM2-135M layer 0, %lld calibration tokens, group 128, rotation %s\n",
              static_cast<long long>(tokens), rot.Describe().c_str());
  std::printf("%-18s %4s %12s %12s %12s %12s\n", "tensor", "bits", "rtn", "rtn+rot", "ldlq",
              "ldlq+rot");
  for (const char* name : {"attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight"}) {
    auto w = (*ckpt)->ReadF32(formats::LayerTensor(0, name));
    ASSERT_TRUE(w.ok());
    const int64_t rows = static_cast<int64_t>(w->size()) / hidden;
    std::vector<float> wr = *w;
    rot.Apply(wr.data(), rows, &pool);
    for (int bits : {2, 3, 4, 6}) {
      ScalarQuantizerOptions o;
      o.bits = bits;
      const double rtn = QuantizeRtn(*w, rows, hidden, h, o, &pool)->proxy_loss;
      const double rtn_rot = QuantizeRtn(wr, rows, hidden, hr, o, &pool)->proxy_loss;
      const double ldlq = QuantizeLdlq(*w, rows, hidden, h, factor_plain, o, &pool)->proxy_loss;
      const double ldlq_rot = QuantizeLdlq(wr, rows, hidden, hr, factor_rot, o, &pool)->proxy_loss;
      std::printf("%-18s %4d %12.3e %12.3e %12.3e %12.3e\n", name, bits, rtn, rtn_rot, ldlq,
                  ldlq_rot);
      EXPECT_LT(ldlq_rot, rtn_rot) << name << " " << bits;
      EXPECT_LT(ldlq_rot, rtn) << name << " " << bits;
    }
  }
}

}  // namespace
}  // namespace bitloom::quant
