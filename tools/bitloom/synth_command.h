// `bitloom synth NAME --shape=SHAPE --bits=B [--head_bits=K] [--seed=N] [--store_path=DIR]
// [--overwrite] [--threads=N]`: writes a synthetic artifact (random weights in the real shapes of
// Llama-3-8B/70B or SmolLM2-135M; engine/synthetic_model_artifact.h) straight into the model store,
// with no source model and no calibration, for `bitloom bench`. --bits is the target average of
// stored bits per weight of the decoder's linear layers as quantd counts it (codes + fp16 scales:
// 2.5 mixes K = 2 and K = 3 tensors), --head_bits the head's K (default 6; 16 for fp16). Progress
// goes to stderr, a JSON summary (sizes, achieved bits, seconds, GB/s) to stdout.
// `--format=hf_fp16` writes instead an unquantized Hugging Face directory NAME (F16 safetensors,
// config.json, tokenizer.json; synth_hf_source.h) for quantd to convert; --bits is not needed.
#pragma once

#include <string>

namespace bitloom::tools {

// Returns the process exit status: 0 on success, 1 on an error, 2 on a usage error.
int RunSynth(const std::string& artifact_name);

}  // namespace bitloom::tools
