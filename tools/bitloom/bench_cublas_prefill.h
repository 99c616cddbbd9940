// The yardstick of `bitloom bench`'s prefill: the time cuBLAS takes for the decoder's linear layers
// of a prompt in fp16 (cublasGemmEx, fp16 in, fp32 accumulation and out, the default algorithm),
// on the same GPU in the same run. For a prompt of `tokens` tokens every layer runs
// q/k/v/o/gate/up/down as [tokens, in] × [out, in]ᵀ; each distinct shape is timed (median of
// `repeats` after one warm-up, CUDA events) and the sum over the layers gives the seconds and
// tokens/s an fp16 engine would spend on its GEMMs alone: attention, norms and the head are not
// counted, so the comparison flatters the baseline, not us.
//
// Allocates its own device buffers (the largest weight, input and output) and frees them before
// returning: run it before the VRAM pool takes the memory. CUDA builds only.
#pragma once

#include "absl/status/statusor.h"
#include "bitloom/engine/decoder_model.h"
#include "nlohmann/json.hpp"

namespace bitloom::tools {

// {"tokens", "seconds", "tokens_per_s", "tflops", "shapes": [{"out", "in", "per_layer", "ms"}]}.
absl::StatusOr<nlohmann::json> MeasureCublasPrefill(const engine::ResolvedConfig& config, int tokens,
                                                    int repeats);

}  // namespace bitloom::tools
