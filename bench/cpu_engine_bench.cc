// cpu_engine_bench: prefill and decode throughput of the CPU reference engine on a real model, as JSON.
//
//   cpu_engine_bench [--model PATH] [--prompt-tokens N] [--decode-tokens N] [--threads N] [--reps N]
//
// Default model: SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to fp32) from $BITLOOM_MODEL_CACHE or
// ~/.cache/bitloom/models. Prefill runs N prompt tokens in one Forward; decode runs the generated tokens
// one at a time after it (greedy), so decode tokens/s includes attention over the growing cache. The best
// of --reps repetitions is reported. Exit status 2 with an "error" JSON field when the model is absent.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <string>
#include <thread>

#include "bitloom/engine/decoder_model.h"
#include "bitloom/engine/sampler.h"
#include "bitloom/engine/weight_source.h"
#include "bitloom/formats/checkpoint.h"
#include "nlohmann/json.hpp"

namespace {

using bitloom::engine::DecoderModel;
using Clock = std::chrono::steady_clock;

int Fail(const std::string& message) {
  nlohmann::json j;
  j["benchmark"] = "cpu_engine";
  j["error"] = message;
  std::printf("%s\n", j.dump(2).c_str());
  return 2;
}

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

}  // namespace

int main(int argc, char** argv) {
  std::string cache = std::getenv("BITLOOM_MODEL_CACHE") ? std::getenv("BITLOOM_MODEL_CACHE")
                                                         : std::string(std::getenv("HOME") ? std::getenv("HOME") : "") +
                                                               "/.cache/bitloom/models";
  std::string model_path = cache + "/SmolLM2-135M-Instruct.Q4_1.gguf";
  int prompt_tokens = 128, decode_tokens = 32, reps = 3;
  size_t threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model") model_path = value;
    else if (flag == "--prompt-tokens") prompt_tokens = std::max(1, std::atoi(value.c_str()));
    else if (flag == "--decode-tokens") decode_tokens = std::max(1, std::atoi(value.c_str()));
    else if (flag == "--threads") threads = static_cast<size_t>(std::max(0, std::atoi(value.c_str())));
    else if (flag == "--reps") reps = std::max(1, std::atoi(value.c_str()));
    else return Fail("unknown flag " + flag);
  }
  if (!std::filesystem::exists(model_path)) {
    return Fail(model_path + " is absent; run scripts/fetch-models.sh");
  }
  auto checkpoint = bitloom::formats::OpenCheckpoint(model_path);
  if (!checkpoint.ok()) return Fail("OpenCheckpoint: " + checkpoint.status().ToString());
  // The pool's workers plus the calling thread do the work, so ask for one fewer than cores.
  const size_t cores = threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency());
  bitloom::ThreadPool pool(cores - 1);
  const auto load_start = Clock::now();
  bitloom::engine::CheckpointWeightSource weights(**checkpoint);
  auto model = DecoderModel::Load((*checkpoint)->config(), weights, &pool);
  if (!model.ok()) return Fail("Load: " + model.status().ToString());
  const double load_s = Seconds(load_start, Clock::now());

  const int vocab = (*model)->vocab_size();
  std::vector<int32_t> prompt(prompt_tokens);
  for (int i = 0; i < prompt_tokens; ++i) prompt[i] = static_cast<int32_t>((i * 7919 + 13) % vocab);
  std::vector<int32_t> positions(prompt_tokens);
  std::iota(positions.begin(), positions.end(), 0);

  double best_prefill = 1e30, best_decode = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto cache_kv = (*model)->NewKvCache(prompt_tokens + decode_tokens);
    const auto t0 = Clock::now();
    auto logits = (*model)->Forward(prompt, positions, cache_kv, DecoderModel::Logits::kLast);
    const auto t1 = Clock::now();
    if (!logits.ok()) return Fail("prefill: " + logits.status().ToString());
    int32_t next = bitloom::engine::ArgMax(*logits);
    for (int s = 0; s < decode_tokens; ++s) {
      const int32_t pos = prompt_tokens + s;
      logits = (*model)->Forward({&next, 1}, {&pos, 1}, cache_kv, DecoderModel::Logits::kLast);
      if (!logits.ok()) return Fail("decode: " + logits.status().ToString());
      next = bitloom::engine::ArgMax(*logits);
    }
    const auto t2 = Clock::now();
    best_prefill = std::min(best_prefill, Seconds(t0, t1));
    best_decode = std::min(best_decode, Seconds(t1, t2));
  }
  nlohmann::json j;
  j["benchmark"] = "cpu_engine";
  j["model"] = model_path;
  j["architecture"] = (*model)->resolved().architecture;
  j["threads"] = cores;
  j["load_seconds"] = load_s;
  j["prompt_tokens"] = prompt_tokens;
  j["decode_tokens"] = decode_tokens;
  j["repetitions"] = reps;
  j["prefill_seconds"] = best_prefill;
  j["prefill_tokens_per_second"] = prompt_tokens / best_prefill;
  j["decode_seconds"] = best_decode;
  j["decode_tokens_per_second"] = decode_tokens / best_decode;
  std::printf("%s\n", j.dump(2).c_str());
  return 0;
}
