// cpu_perplexity: perplexity of a model on a token stream with the CPU reference engine, as JSON.
//
//   cpu_perplexity --model PATH.gguf --ids FILE.i32 [--context 512] [--stride 256] [--max-tokens N]
//
// FILE.i32 holds little-endian int32 token ids (scripts/reference_logits.py --dump-ids writes the
// WikiText-2 test split's). The protocol is EvaluatePerplexity's (docs/ENGINE.md): sliding windows of
// --context tokens every --stride tokens, each token scored once. Progress goes to stderr.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "bitloom/engine/decoder_model.h"
#include "bitloom/engine/scoring.h"
#include "bitloom/engine/weight_source.h"
#include "bitloom/formats/checkpoint.h"
#include "nlohmann/json.hpp"

namespace {

int Fail(const std::string& message) {
  nlohmann::json j;
  j["benchmark"] = "cpu_perplexity";
  j["error"] = message;
  std::printf("%s\n", j.dump(2).c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, ids_path;
  bitloom::engine::PerplexityOptions options;
  long long max_tokens = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model") model_path = value;
    else if (flag == "--ids") ids_path = value;
    else if (flag == "--context") options.context_length = std::atoi(value.c_str());
    else if (flag == "--stride") options.stride = std::atoi(value.c_str());
    else if (flag == "--max-tokens") max_tokens = std::atoll(value.c_str());
    else return Fail("unknown flag " + flag);
  }
  if (model_path.empty() || ids_path.empty()) return Fail("--model and --ids are required");
  std::ifstream in(ids_path, std::ios::binary);
  if (!in) return Fail("cannot read " + ids_path);
  std::vector<int32_t> ids;
  int32_t id;
  while (in.read(reinterpret_cast<char*>(&id), sizeof(id))) ids.push_back(id);
  if (max_tokens > 0 && static_cast<long long>(ids.size()) > max_tokens) ids.resize(max_tokens);

  auto checkpoint = bitloom::formats::OpenCheckpoint(model_path);
  if (!checkpoint.ok()) return Fail("OpenCheckpoint: " + checkpoint.status().ToString());
  bitloom::ThreadPool pool(std::max(1u, std::thread::hardware_concurrency()) - 1);
  bitloom::engine::CheckpointWeightSource weights(**checkpoint);
  auto model = bitloom::engine::DecoderModel::Load((*checkpoint)->config(), weights, &pool);
  if (!model.ok()) return Fail("Load: " + model.status().ToString());
  const auto start = std::chrono::steady_clock::now();
  options.progress = [start](int64_t done, int64_t total) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "\r%lld/%lld tokens scored, %.0f s", static_cast<long long>(done),
                 static_cast<long long>(total), s);
  };
  auto result = bitloom::engine::EvaluatePerplexity(**model, ids, options);
  std::fprintf(stderr, "\n");
  if (!result.ok()) return Fail(result.status().ToString());
  nlohmann::json j;
  j["benchmark"] = "cpu_perplexity";
  j["model"] = model_path;
  j["ids"] = ids_path;
  j["tokens"] = ids.size();
  j["context_length"] = options.context_length;
  j["stride"] = options.stride;
  j["windows"] = result->windows;
  j["tokens_scored"] = result->tokens_scored;
  j["nll_mean"] = result->nll_sum / static_cast<double>(result->tokens_scored);
  j["perplexity"] = result->perplexity;
  j["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s\n", j.dump(2).c_str());
  return 0;
}
