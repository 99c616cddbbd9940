// `bitloom eval`: the quality of an artifact on a text file (perplexity, top-1 accuracy) and against a
// reference artifact (KL divergence, top-1 agreement), printed as one JSON object on stdout and a
// markdown table on stderr, each stating the protocol.
//
// In-process by default: the artifacts are opened from the model store, decoded by
// ArtifactWeightSource (quantized codecs included) and run by the CPU engine through
// engine::EvaluateModels. With an inferd address the model and the reference are model ids loaded in
// inferd, the text is tokenized by its Tokenize RPC and every window is scored by ScoreTokens; that
// RPC returns only the target's log-probability and whether it was the argmax, so over gRPC the
// report has perplexity and top-1 accuracy but no KL divergence or top-1 agreement (it says so).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace bitloom::tools {

struct EvalOptions {
  std::string model;      // artifact name in the store, or a model id loaded in inferd
  std::string reference;  // the same for the reference (the fp16 import); empty: none
  std::string store_path;
  std::string text_path;      // UTF-8 text, evaluated as one string
  int context_length = 2048;  // capped at the model's max_position_embeddings
  int stride = 0;             // 0: equal to the context (disjoint windows)
  int64_t max_tokens = 0;     // 0: the whole text
  int threads = 0;            // in-process engine threads; 0: all cores
  std::string inferd_address;  // non-empty: score through this inferd
  absl::Duration rpc_timeout = absl::Minutes(30);  // per Tokenize / ScoreTokens call
  std::string json_out;      // also write the JSON here when non-empty
  std::string markdown_out;  // also write the markdown table here when non-empty
  std::string ids_out;       // also write the text's token ids here (int32 little-endian), for cross-checks
};

// Runs the evaluation, printing progress to stderr. The error names what failed (an unknown
// artifact, a text that does not tokenize, a model that does not match the reference, an RPC error).
absl::Status RunEval(const EvalOptions& options);

}  // namespace bitloom::tools
