#include "quantize_command.h"

#include <grpcpp/grpcpp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <thread>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "bitloom/v1/quantization.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "health_client.h"

ABSL_FLAG(double, bits, 0, "quantize: target average bits per weight of the decoder, 1.5..8.0");
ABSL_FLAG(double, head_bits, 0, "quantize: bits of the output head (default 6)");
ABSL_FLAG(std::vector<std::string>, calibration, {},
          "quantize: calibration corpus files, comma-separated (default: built-in calibration)");
ABSL_FLAG(uint32_t, rows, 0,
          "quantize: calibration rows (default: enough for 262,144 tokens, 32,768 self-generated)");
ABSL_FLAG(uint32_t, tokens_per_row, 0,
          "quantize: tokens per calibration row (default 2048, 512 self-generated)");
ABSL_FLAG(uint64_t, seed, 0, "quantize: seed of calibration sampling and rotations");
ABSL_FLAG(bool, self_generated, false,
          "quantize: calibrate on rows the model samples itself (no --calibration files)");
ABSL_FLAG(double, random_rows, 0,
          "quantize: share of calibration rows made of uniformly random tokens, 0..1");
ABSL_FLAG(std::string, method, "variable",
          "quantize: variable (measured bit allocation, LDLQ), uniform-ldlq or rtn (every tensor "
          "at --bits, a whole code width 2..8)");
ABSL_DECLARE_FLAG(bool, overwrite);

namespace bitloom::tools {
namespace {

using v1::QuantizationService;

std::string Absolute(const std::string& path) {
  std::error_code ec;
  const auto absolute = std::filesystem::absolute(path, ec);
  return ec ? path : absolute.lexically_normal().string();
}

std::string Duration(double seconds) {
  if (seconds < 0) return "?";
  const auto s = static_cast<long>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%ldh%02ldm", s / 3600, (s / 60) % 60);
  return absl::StrFormat("%ldm%02lds", s / 60, s % 60);
}

std::string StageName(v1::JobStage stage) {
  std::string name = v1::JobStage_Name(stage);
  absl::string_view view(name);
  if (absl::ConsumePrefix(&view, "JOB_STAGE_")) name = std::string(view);
  return absl::AsciiStrToLower(name);
}

std::string ProgressLine(const v1::Job& job) {
  const v1::JobProgress& p = job.progress();
  if (job.state() == v1::JOB_STATE_QUEUED) return "queued";
  if (p.stage() == v1::JOB_STAGE_UNSPECIFIED) return "starting";
  std::string layer;
  if (p.num_layers() > 0) {
    layer = absl::StrFormat("  layer %u/%u", std::min(p.current_layer() + 1, p.num_layers()),
                            p.num_layers());
  }
  return absl::StrFormat("%-12s%s  %5.1f%%  elapsed %s  remaining %s", StageName(p.stage()), layer,
                         100.0 * p.fraction_done(), Duration(p.elapsed_seconds()),
                         Duration(p.remaining_seconds()));
}

void PrintJson(const google::protobuf::Message& message) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  std::cout << json << "\n";
}

int RpcError(const grpc::Status& status) {
  std::cerr << "bitloom: " << CodeName(status.error_code()) << ": " << status.error_message()
            << "\n";
  return 1;
}

// Turns SIGINT into a cancelled watch: a thread waits for the (blocked) signal and cancels the
// stream's context, so the main thread leaves its blocking Read and can ask what to do. Blocking
// the signal before any gRPC thread exists makes every thread inherit the mask, so the signal is
// only ever consumed here.
class InterruptWatcher {
 public:
  InterruptWatcher() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    std::thread([this] {
      int signal = 0;
      while (sigwait(&set_, &signal) == 0) {
        interrupted_.store(true);
        std::lock_guard<std::mutex> lock(mu_);
        if (context_ != nullptr) context_->TryCancel();
      }
    }).detach();  // lives until the process exits; it owns nothing
  }
  void Arm(grpc::ClientContext* context) {
    std::lock_guard<std::mutex> lock(mu_);
    context_ = context;
    if (interrupted_.load() && context_ != nullptr) context_->TryCancel();
  }
  bool interrupted() const { return interrupted_.load(); }
  void Reset() { interrupted_.store(false); }

 private:
  sigset_t set_;
  std::atomic<bool> interrupted_{false};
  std::mutex mu_;
  grpc::ClientContext* context_ = nullptr;
};

enum class Choice { kCancel, kDetach, kContinue };

Choice AskWhatToDo(const std::string& id) {
  if (!::isatty(STDIN_FILENO)) return Choice::kDetach;
  std::cerr << "\nCancel job " << id << " [c], detach from it [d], or keep watching [w]? "
            << std::flush;
  std::string line;
  if (!std::getline(std::cin, line)) return Choice::kDetach;
  line = absl::AsciiStrToLower(absl::StripAsciiWhitespace(line));
  if (line == "c" || line == "cancel") return Choice::kCancel;
  if (line == "w" || line == "watch") return Choice::kContinue;
  return Choice::kDetach;
}

}  // namespace

int RunQuantize(const std::string& source, const std::string& artifact_name,
                const std::string& quantd_address) {
  if (absl::GetFlag(FLAGS_bits) == 0) {
    std::cerr << "bitloom: quantize: --bits is required (for example --bits=2.5)\n";
    return 2;
  }
  v1::CreateJobRequest request;
  const std::string method = absl::GetFlag(FLAGS_method);
  if (method == "variable") {
    request.set_method(v1::QUANTIZATION_METHOD_VARIABLE_LDLQ);
  } else if (method == "uniform-ldlq") {
    request.set_method(v1::QUANTIZATION_METHOD_UNIFORM_LDLQ);
  } else if (method == "rtn") {
    request.set_method(v1::QUANTIZATION_METHOD_UNIFORM_RTN);
  } else {
    std::cerr << "bitloom: quantize: --method=" << method
              << " is not one of variable, uniform-ldlq, rtn\n";
    return 2;
  }
  InterruptWatcher interrupts;  // before the channel creates its threads
  const std::string path = Absolute(source);
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    request.mutable_hugging_face()->set_directory(path);
  } else {
    request.mutable_gguf()->set_path(path);
  }
  request.set_artifact_name(artifact_name);
  request.set_target_bits_per_weight(absl::GetFlag(FLAGS_bits));
  request.set_head_bits_per_weight(absl::GetFlag(FLAGS_head_bits));
  for (const std::string& file : absl::GetFlag(FLAGS_calibration)) {
    if (!file.empty()) request.mutable_calibration()->add_corpus_files(Absolute(file));
  }
  request.mutable_calibration()->set_rows(absl::GetFlag(FLAGS_rows));
  request.mutable_calibration()->set_tokens_per_row(absl::GetFlag(FLAGS_tokens_per_row));
  request.mutable_calibration()->set_self_generated(absl::GetFlag(FLAGS_self_generated));
  request.mutable_calibration()->set_random_rows_fraction(absl::GetFlag(FLAGS_random_rows));
  request.set_seed(absl::GetFlag(FLAGS_seed));
  request.set_overwrite(absl::GetFlag(FLAGS_overwrite));

  auto stub = QuantizationService::NewStub(
      grpc::CreateChannel(quantd_address, grpc::InsecureChannelCredentials()));
  v1::Job job;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    grpc::Status status = stub->CreateJob(&context, request, &job);
    if (!status.ok()) return RpcError(status);
  }
  std::cerr << "job " << job.id() << ": " << path << " -> " << artifact_name << " at "
            << request.target_bits_per_weight() << " bits\n";

  const bool tty = ::isatty(STDERR_FILENO);
  while (true) {
    grpc::ClientContext context;  // no deadline: a job can run for hours
    interrupts.Arm(&context);
    v1::WatchJobRequest watch;
    watch.set_id(job.id());
    auto reader = stub->WatchJob(&context, watch);
    v1::JobEvent event;
    std::string last;
    while (reader->Read(&event)) {
      job = event.job();
      const std::string line = ProgressLine(job);
      // On a terminal the line redraws in place; in a log, one line per change of stage or layer.
      if (tty) {
        std::cerr << "\r\033[K" << line << std::flush;
      } else if (line.substr(0, 30) != last.substr(0, 30)) {
        std::cerr << line << "\n";
      }
      last = line;
    }
    grpc::Status status = reader->Finish();
    interrupts.Arm(nullptr);
    if (tty) std::cerr << "\n";
    if (!interrupts.interrupted()) {
      if (!status.ok()) return RpcError(status);
      break;
    }
    interrupts.Reset();
    const Choice choice = AskWhatToDo(job.id());
    if (choice == Choice::kContinue) continue;
    if (choice == Choice::kDetach) {
      std::cerr << "detached; the job keeps running. Follow it with: bitloom jobs watch " << job.id()
                << "\n";
      return 0;
    }
    grpc::ClientContext cancel_context;
    cancel_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::CancelJobRequest cancel;
    cancel.set_id(job.id());
    grpc::Status cancelled = stub->CancelJob(&cancel_context, cancel, &job);
    if (!cancelled.ok()) return RpcError(cancelled);
    break;
  }
  PrintJson(job);
  if (job.state() != v1::JOB_STATE_SUCCEEDED) {
    std::cerr << "bitloom: job " << job.id() << " "
              << (job.state() == v1::JOB_STATE_CANCELLED ? "was cancelled" : "failed: " + job.error())
              << "\n";
    return 1;
  }
  std::cerr << absl::StrFormat("done: %s at %.3f bits per weight\n", artifact_name,
                               job.achieved_bits_per_weight());
  return 0;
}

}  // namespace bitloom::tools
