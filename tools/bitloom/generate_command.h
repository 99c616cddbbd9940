// `bitloom generate MODEL PROMPT` and `bitloom chat MODEL MESSAGE`: stream text from inferd to stdout as
// it is generated, then print the finish reason and usage to stderr.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

namespace bitloom::tools {

struct GenerateCommandOptions {
  std::string model_id;
  std::string text;             // the prompt (generate) or the user message (chat)
  bool chat = false;            // render `text` as one user message with the model's chat template
  std::string system_prompt;    // chat only; empty for none
  uint32_t max_new_tokens = 0;  // 0: up to the context
  float temperature = 0;        // 0: greedy
  uint64_t seed = 0;
};

// Returns the process exit status: 0 on success, 1 on an RPC error (printed to stderr).
int RunGenerateCommand(const std::shared_ptr<grpc::Channel>& channel,
                       const GenerateCommandOptions& options);

}  // namespace bitloom::tools
