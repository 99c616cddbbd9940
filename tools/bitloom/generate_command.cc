#include "generate_command.h"

#include <iostream>

#include "bitloom/v1/inference.grpc.pb.h"
#include "health_client.h"

namespace bitloom::tools {

int RunGenerateCommand(const std::shared_ptr<grpc::Channel>& channel,
                       const GenerateCommandOptions& options) {
  auto stub = v1::InferenceService::NewStub(channel);
  v1::SamplingParams sampling;
  sampling.set_max_new_tokens(options.max_new_tokens);
  sampling.set_temperature(options.temperature);
  sampling.set_seed(options.seed);

  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> stream;
  if (options.chat) {
    v1::ChatRequest request;
    request.set_model_id(options.model_id);
    if (!options.system_prompt.empty()) {
      v1::ChatMessage* system = request.add_messages();
      system->set_role("system");
      system->set_content(options.system_prompt);
    }
    v1::ChatMessage* user = request.add_messages();
    user->set_role("user");
    user->set_content(options.text);
    *request.mutable_sampling() = sampling;
    stream = stub->Chat(&context, request);
  } else {
    v1::GenerateRequest request;
    request.set_model_id(options.model_id);
    request.set_text(options.text);
    *request.mutable_sampling() = sampling;
    stream = stub->Generate(&context, request);
  }

  v1::GenerateResponse response;
  v1::GenerateResponse last;
  while (stream->Read(&response)) {
    std::cout << response.text_delta() << std::flush;
    last = response;
  }
  std::cout << "\n";
  grpc::Status status = stream->Finish();
  if (!status.ok()) {
    std::cerr << "bitloom: " << CodeName(status.error_code()) << ": " << status.error_message()
              << "\n";
    return 1;
  }
  const v1::Usage& usage = last.usage();
  std::cerr << "[" << v1::FinishReason_Name(last.finish_reason()) << "; " << usage.prompt_tokens()
            << " prompt tokens, " << usage.completion_tokens() << " generated; first token after "
            << usage.time_to_first_token_seconds() << " s, then "
            << usage.seconds_per_output_token() << " s/token]\n";
  return 0;
}

}  // namespace bitloom::tools
