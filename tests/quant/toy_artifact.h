// Runs QuantizationPipeline on a toy runner and keeps what an engine would multiply by: every
// tensor dequantized and rotated back, with its artifact entry. Shared by the pricing tests.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/kernels/hadamard.h"
#include "bitloom/kernels/scalar_codec.h"
#include "bitloom/quant/quantization_pipeline.h"

namespace bitloom::quant::testing {

struct ToyArtifact {
  std::vector<v1::TensorEntry> entries;
  WeightMap weights;  // dequantized and rotated back
};

// Calibration: `sequences` rows of `seq_len` tokens, token i = (7i + i/3) mod vocab.
inline absl::StatusOr<ToyArtifact> QuantizeToy(const BlockRunner& runner, const PipelineOptions& o,
                                               int64_t sequences, int64_t seq_len, int64_t vocab) {
  ThreadPool pool(2);
  QuantizationPipeline pipeline(runner, o, &pool);
  std::vector<int32_t> calibration(sequences * seq_len);
  for (size_t i = 0; i < calibration.size(); ++i) {
    calibration[i] = static_cast<int32_t>((i * 7 + i / 3) % vocab);
  }
  ToyArtifact art;
  auto r = pipeline.Run(
      calibration, sequences, seq_len,
      [&](const v1::TensorEntry& e, absl::Span<const uint8_t> blob) -> absl::Status {
        auto layout = kernels::MakeScalarCodecLayout(e.shape(0), e.shape(1),
                                                     static_cast<int>(e.bits_per_weight()),
                                                     static_cast<int>(e.group_size()));
        if (!layout.ok()) return layout.status();
        uint64_t seed = 0;
        if (!absl::SimpleAtoi(e.params().at(kernels::kScalarParamRotationSeed), &seed)) {
          return absl::DataLossError("rotation seed");
        }
        auto rotation = kernels::HadamardRotation::Create(static_cast<int64_t>(e.shape(1)), seed);
        if (!rotation.ok()) return rotation.status();
        std::vector<float> w(e.shape(0) * e.shape(1));
        if (absl::Status s = kernels::DequantizeScalarCodec(*layout, blob, w.data(), nullptr);
            !s.ok()) {
          return s;
        }
        rotation->ApplyTranspose(w.data(), static_cast<int64_t>(e.shape(0)), nullptr);
        art.weights[e.name()] = std::move(w);
        art.entries.push_back(e);
        return absl::OkStatus();
      },
      {}, nullptr);
  if (!r.ok()) return r.status();
  return art;
}

}  // namespace bitloom::quant::testing
