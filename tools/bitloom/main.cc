// bitloom: the command-line client of quantd and inferd. Prints responses as JSON (one object per
// line for streams) so that it composes with jq and scripts; errors go to stderr with the gRPC code
// and the exit status is non-zero.
//
//   bitloom [--quantd=ADDR] [--inferd=ADDR] COMMAND [ARGS]
//   health                              health of both daemons
//   artifacts list | describe NAME [--verify] | delete NAME
//   jobs list | get ID | cancel ID | watch ID
//   models list | load ARTIFACT [--model_id=ID] [--context_length=N] | unload ID
//   info                                inferd's server info
//   quantize SOURCE NAME --bits=B [--head_bits=B] [--calibration=FILE,...] [--rows=N]
//            [--tokens_per_row=N] [--seed=N] [--overwrite] [--method=variable|uniform-ldlq|rtn]
//            [--self_generated] [--random_rows=F]
//                                       a quantization job through quantd (quantize_command.h)
//   import SOURCE NAME [--store_path=DIR] [--overwrite]
//                                       writes a HF directory or GGUF file into the store as fp16
//   eval ARTIFACT [--reference=ARTIFACT] [--text=FILE] [--context=N] [--stride=N] [--max_tokens=N]
//                                       perplexity, KL divergence, top-1 (eval_command.h)
//   synth NAME --shape=SHAPE --bits=B [--head_bits=K] [--seed=N] [--store_path=DIR] [--overwrite]
//                                       random weights in a real model's shape (synth_command.h)
//   bench ARTIFACT [--store_path=DIR] [--json_out=F] [--inferd=ADDR --clients=N] [--skip_gpu]
//                                       GPU decode/prefill speed vs bandwidth, inferd latency (bench_command.h)
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"
#include "bitloom/v1/inference.grpc.pb.h"
#include "bitloom/v1/quantization.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "bitloom/modelstore/model_store.h"
#include "generate_command.h"
#include "health_client.h"
#include "import_checkpoint.h"
#include "quantize_command.h"
#include "eval_command.h"
#include "synth_command.h"
#include "bench_command.h"

ABSL_FLAG(std::string, quantd, "localhost:50052", "quantd address, host:port");
ABSL_FLAG(std::string, inferd, "localhost:50051", "inferd address, host:port");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(30), "Deadline of each unary call");
ABSL_FLAG(bool, verify, false, "artifacts describe: also verify every tensor checksum");
ABSL_FLAG(std::string, model_id, "", "models load: serve under this id (default: the artifact name)");
ABSL_FLAG(uint32_t, context_length, 0, "models load: context length (default: the model's)");
ABSL_FLAG(uint32_t, max_batch_size, 0, "models load: most sequences decoded together");
ABSL_FLAG(std::string, store_path, "./bitloom-store", "import: the model store directory");
ABSL_FLAG(uint32_t, max_new_tokens, 128, "generate/chat: most tokens to generate");
ABSL_FLAG(float, temperature, 0, "generate/chat: sampling temperature; 0 is greedy");
ABSL_FLAG(uint64_t, sampling_seed, 0, "generate/chat: sampling seed; 0 is random");
ABSL_FLAG(std::string, system, "", "chat: a system message");
ABSL_FLAG(bool, overwrite, false, "import: replace an existing artifact of the same name");
ABSL_FLAG(std::string, reference, "", "eval: reference artifact (or inferd model id) for KL and top-1 agreement");
ABSL_FLAG(std::string, text, "../shared/data/wikitext-2-raw-test.txt", "eval: UTF-8 text to evaluate on");
ABSL_FLAG(int, context, 2048, "eval: tokens per window (capped at the model's context)");
ABSL_FLAG(int, stride, 0, "eval: tokens between window starts; 0: the context (disjoint windows)");
ABSL_FLAG(int64_t, max_tokens, 0, "eval: evaluate only the first N tokens of the text; 0: all");
ABSL_FLAG(int, threads, 0, "eval: CPU engine threads; 0: all cores");
ABSL_FLAG(std::string, json_out, "", "eval: also write the JSON report to this file");
ABSL_FLAG(std::string, markdown_out, "", "eval: also write the markdown table to this file");
ABSL_FLAG(std::string, ids_out, "", "eval: also write the text's token ids (int32 LE) to this file");

namespace {

using bitloom::v1::InferenceService;
using bitloom::v1::QuantizationService;

constexpr char kUsage[] =
    "bitloom [--quantd=ADDR] [--inferd=ADDR] COMMAND\n"
    "  health\n"
    "  artifacts list | describe NAME [--verify] | delete NAME\n"
    "  jobs list | get ID | cancel ID | watch ID\n"
    "  models list | load ARTIFACT [--model_id=ID] [--context_length=N] | unload ID\n"
    "  info\n"
    "  quantize SOURCE NAME --bits=B [--head_bits=B] [--calibration=FILE,...] [--rows=N]\n"
    "           [--tokens_per_row=N] [--seed=N] [--overwrite] [--method=variable|uniform-ldlq|rtn]\n"
    "           [--self_generated] [--random_rows=F]\n"
    "  generate MODEL PROMPT | chat MODEL MESSAGE [--max_new_tokens=N --temperature=T --system=S]\n"
    "  import SOURCE NAME [--store_path=DIR] [--overwrite]\n"
    "  eval ARTIFACT [--reference=ARTIFACT] [--text=FILE] [--context=N] [--stride=N] [--max_tokens=N]\n"
    "       [--store_path=DIR] [--json_out=F] [--markdown_out=F]; with --inferd=ADDR: model ids in inferd\n"
    "  synth NAME --shape=llama3-8b|llama3-70b|smollm2-135m|tiny --bits=B [--head_bits=K] [--seed=N]\n"
    "        [--store_path=DIR] [--overwrite] [--threads=N]; --format=hf_fp16: an unquantized HF\n"
    "        directory NAME instead (a quantd source; no --bits)\n"
    "  bench ARTIFACT [--store_path=DIR] [--json_out=F] [--batches=1,4,16] [--prefill=512,2048]\n"
    "        [--steps=N] [--decode_context=N] [--inferd=ADDR --clients=N [--skip_gpu]]";

int UsageError(const std::string& message) {
  std::cerr << "bitloom: " << message << "\nusage: " << kUsage << "\n";
  return 2;
}

void PrintJson(const google::protobuf::Message& message) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  std::cout << json << "\n";
}

int Report(const grpc::Status& status, const google::protobuf::Message& response) {
  if (!status.ok()) {
    std::cerr << "bitloom: " << bitloom::tools::CodeName(status.error_code()) << ": "
              << status.error_message() << "\n";
    return 1;
  }
  PrintJson(response);
  return 0;
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + absl::GetFlag(FLAGS_timeout)));
  return context;
}

std::shared_ptr<grpc::Channel> Channel(const std::string& address) {
  return grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
}

int Artifacts(const std::vector<std::string>& args) {
  auto stub = QuantizationService::NewStub(Channel(absl::GetFlag(FLAGS_quantd)));
  const std::string verb = args.size() > 2 ? args[2] : "";
  if (verb == "list") {
    bitloom::v1::ListArtifactsRequest request;
    bitloom::v1::ListArtifactsResponse all;
    do {
      bitloom::v1::ListArtifactsResponse page;
      grpc::Status status = stub->ListArtifacts(Context().get(), request, &page);
      if (!status.ok()) return Report(status, page);
      for (auto& a : *page.mutable_artifacts()) *all.add_artifacts() = std::move(a);
      request.set_page_token(page.next_page_token());
    } while (!request.page_token().empty());
    PrintJson(all);
    return 0;
  }
  if (args.size() != 4) return UsageError("artifacts: expected list, describe NAME or delete NAME");
  if (verb == "describe") {
    bitloom::v1::DescribeArtifactRequest request;
    request.set_name(args[3]);
    request.set_verify_checksums(absl::GetFlag(FLAGS_verify));
    bitloom::v1::DescribeArtifactResponse response;
    return Report(stub->DescribeArtifact(Context().get(), request, &response), response);
  }
  if (verb == "delete") {
    bitloom::v1::DeleteArtifactRequest request;
    request.set_name(args[3]);
    bitloom::v1::DeleteArtifactResponse response;
    return Report(stub->DeleteArtifact(Context().get(), request, &response), response);
  }
  return UsageError("artifacts: unknown verb '" + verb + "'");
}

int Jobs(const std::vector<std::string>& args) {
  auto stub = QuantizationService::NewStub(Channel(absl::GetFlag(FLAGS_quantd)));
  const std::string verb = args.size() > 2 ? args[2] : "";
  if (verb == "list") {
    bitloom::v1::ListJobsResponse response;
    return Report(stub->ListJobs(Context().get(), {}, &response), response);
  }
  if (args.size() != 4) return UsageError("jobs: expected list, get ID, cancel ID or watch ID");
  if (verb == "get") {
    bitloom::v1::GetJobRequest request;
    request.set_id(args[3]);
    bitloom::v1::Job response;
    return Report(stub->GetJob(Context().get(), request, &response), response);
  }
  if (verb == "cancel") {
    bitloom::v1::CancelJobRequest request;
    request.set_id(args[3]);
    bitloom::v1::Job response;
    return Report(stub->CancelJob(Context().get(), request, &response), response);
  }
  if (verb == "watch") {
    bitloom::v1::WatchJobRequest request;
    request.set_id(args[3]);
    grpc::ClientContext context;  // no deadline: a job can run for hours
    auto reader = stub->WatchJob(&context, request);
    bitloom::v1::JobEvent event;
    while (reader->Read(&event)) PrintJson(event);
    return Report(reader->Finish(), event);
  }
  return UsageError("jobs: unknown verb '" + verb + "'");
}

int Models(const std::vector<std::string>& args) {
  auto stub = InferenceService::NewStub(Channel(absl::GetFlag(FLAGS_inferd)));
  const std::string verb = args.size() > 2 ? args[2] : "";
  if (verb == "list") {
    bitloom::v1::ListModelsResponse response;
    return Report(stub->ListModels(Context().get(), {}, &response), response);
  }
  if (args.size() != 4) return UsageError("models: expected list, load ARTIFACT or unload ID");
  if (verb == "load") {
    bitloom::v1::LoadModelRequest request;
    request.set_artifact_name(args[3]);
    request.set_model_id(absl::GetFlag(FLAGS_model_id));
    request.set_context_length(absl::GetFlag(FLAGS_context_length));
    request.set_max_batch_size(absl::GetFlag(FLAGS_max_batch_size));
    bitloom::v1::LoadModelResponse response;
    return Report(stub->LoadModel(Context().get(), request, &response), response);
  }
  if (verb == "unload") {
    bitloom::v1::UnloadModelRequest request;
    request.set_model_id(args[3]);
    bitloom::v1::UnloadModelResponse response;
    return Report(stub->UnloadModel(Context().get(), request, &response), response);
  }
  return UsageError("models: unknown verb '" + verb + "'");
}

int Info() {
  auto stub = InferenceService::NewStub(Channel(absl::GetFlag(FLAGS_inferd)));
  bitloom::v1::ServerInfo response;
  return Report(stub->GetServerInfo(Context().get(), {}, &response), response);
}

int Health() {
  int failures = 0;
  for (const auto& [name, address, service] :
       {std::tuple<std::string, std::string, std::string>{
            "quantd", absl::GetFlag(FLAGS_quantd), "bitloom.v1.QuantizationService"},
        {"inferd", absl::GetFlag(FLAGS_inferd), "bitloom.v1.InferenceService"}}) {
    auto serving = bitloom::tools::CheckHealth(Channel(address), service,
                                               absl::GetFlag(FLAGS_timeout));
    std::cout << "{\"daemon\": \"" << name << "\", \"address\": \"" << address
              << "\", \"status\": \"" << serving << "\"}\n";
    if (serving != "SERVING") ++failures;
  }
  return failures == 0 ? 0 : 1;
}

int Generate(const std::vector<std::string>& args) {
  if (args.size() != 4) return UsageError(args[1] + ": expected MODEL TEXT");
  bitloom::tools::GenerateCommandOptions options;
  options.chat = args[1] == "chat";
  options.model_id = args[2];
  options.text = args[3];
  options.system_prompt = absl::GetFlag(FLAGS_system);
  options.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  options.temperature = absl::GetFlag(FLAGS_temperature);
  options.seed = absl::GetFlag(FLAGS_sampling_seed);
  return bitloom::tools::RunGenerateCommand(Channel(absl::GetFlag(FLAGS_inferd)), options);
}

int Import(const std::vector<std::string>& args) {
  if (args.size() != 4) return UsageError("import: expected SOURCE NAME");
  auto store = bitloom::modelstore::ModelStore::Open(absl::GetFlag(FLAGS_store_path));
  if (!store.ok()) {
    std::cerr << "bitloom: " << store.status() << "\n";
    return 1;
  }
  bitloom::tools::ImportOptions options;
  options.artifact_name = args[3];
  options.overwrite = absl::GetFlag(FLAGS_overwrite);
  options.on_progress = [](size_t done, size_t total) {
    std::cerr << "\rimporting tensor " << done << "/" << total << std::flush;
    if (done == total) std::cerr << "\n";
  };
  auto summary = bitloom::tools::ImportCheckpoint(args[2], **store, options);
  if (!summary.ok()) {
    std::cerr << "\nbitloom: " << summary.status() << "\n";
    return 1;
  }
  PrintJson(*summary);
  return 0;
}

// Whether --NAME was written on the command line (abseil 20220623 keeps IsSpecifiedOnCommandLine
// private); eval runs in-process unless --inferd is given, since its default serves the other commands.
bool FlagWritten(int argc, char** argv, const std::string& name) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") break;
    for (const std::string& prefix : {"--" + name, "-" + name}) {
      if (a == prefix || a.rfind(prefix + "=", 0) == 0) return true;
    }
  }
  return false;
}

int Eval(const std::vector<std::string>& args, bool inferd_given) {
  if (args.size() != 3) return UsageError("eval: expected ARTIFACT");
  bitloom::tools::EvalOptions options;
  options.model = args[2];
  options.reference = absl::GetFlag(FLAGS_reference);
  options.store_path = absl::GetFlag(FLAGS_store_path);
  options.text_path = absl::GetFlag(FLAGS_text);
  options.context_length = absl::GetFlag(FLAGS_context);
  options.stride = absl::GetFlag(FLAGS_stride);
  options.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.json_out = absl::GetFlag(FLAGS_json_out);
  options.markdown_out = absl::GetFlag(FLAGS_markdown_out);
  options.ids_out = absl::GetFlag(FLAGS_ids_out);
  if (inferd_given) options.inferd_address = absl::GetFlag(FLAGS_inferd);
  if (absl::Status s = bitloom::tools::RunEval(options); !s.ok()) {
    std::cerr << "bitloom: " << s << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> args(positional.begin(), positional.end());
  if (args.size() < 2) return UsageError("missing command");
  const std::string& command = args[1];
  if (command == "health") return Health();
  if (command == "artifacts") return Artifacts(args);
  if (command == "jobs") return Jobs(args);
  if (command == "models") return Models(args);
  if (command == "info") return Info();
  if (command == "import") return Import(args);
  if (command == "generate" || command == "chat") return Generate(args);
  if (command == "quantize") {
    if (args.size() != 4) return UsageError("quantize: expected SOURCE NAME");
    return bitloom::tools::RunQuantize(args[2], args[3], absl::GetFlag(FLAGS_quantd));
  }
  if (command == "eval") return Eval(args, FlagWritten(argc, argv, "inferd"));
  if (command == "synth") {
    if (args.size() != 3) return UsageError("synth: expected NAME");
    return bitloom::tools::RunSynth(args[2]);
  }
  if (command == "bench") {
    if (args.size() != 3) return UsageError("bench: expected ARTIFACT");
    return bitloom::tools::RunBench(args[2], FlagWritten(argc, argv, "inferd") ? absl::GetFlag(FLAGS_inferd) : "");
  }
  return UsageError("unknown command '" + command + "'");
}
