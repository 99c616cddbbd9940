// Sampler: turns one position's logits into the next token, under GenerationParams.
//
// Pipeline, in this order (it fixes the semantics the tests pin down):
//  1. Penalties on the raw logits. repetition_penalty (CTRL/transformers style) applies to every token
//     seen in the prompt or the output: a positive logit is divided by it, a negative one multiplied.
//     presence_penalty and frequency_penalty (OpenAI style) apply to output tokens only:
//     logit −= presence · [count > 0] + frequency · count.
//  2. temperature == 0: greedy, the argmax (lowest id on ties); nothing else applies.
//  3. Probabilities p = softmax(logits / temperature), in double.
//  4. top_k: keep the k most probable tokens (ties broken by lower id).
//  5. top_p: keep the smallest prefix of tokens, by descending probability, whose mass reaches top_p.
//  6. min_p: keep tokens with p ≥ min_p · max(p). (The max survives steps 4-5, so the threshold does
//     not depend on them.) At least one token always survives every step.
//  7. Draw from the renormalised survivors with a 64-bit Mersenne Twister seeded by `seed` (or by the
//     OS when seed == 0); the draw uses the generator's raw bits, so a seed gives the same tokens on
//     every platform and standard library.
// Not thread-safe (it owns the generator): one Sampler per sequence.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "absl/types/span.h"
#include "bitloom/engine/generation_params.h"

namespace bitloom::engine {

class Sampler {
 public:
  // `params` must have passed Validate().
  explicit Sampler(const GenerationParams& params);

  // Chooses the next token from `logits` [vocab]; `prompt` and `output` are the ids so far (penalties).
  int32_t Sample(absl::Span<const float> logits, absl::Span<const int32_t> prompt,
                 absl::Span<const int32_t> output);

  // Step 1 on a copy of `logits`.
  std::vector<float> ApplyPenalties(absl::Span<const float> logits, absl::Span<const int32_t> prompt,
                                    absl::Span<const int32_t> output) const;
  // Steps 3-6 on already-penalised logits: the distribution step 7 draws from (sums to 1, exact zeros
  // where masked). For temperature 0, a one-hot on the argmax.
  std::vector<double> Distribution(absl::Span<const float> logits) const;

  // The variate of step 7: 53 raw bits of the generator as u ∈ [0, 1). Sample() draws one per call
  // when temperature > 0 (none when greedy); a caller that samples elsewhere (the GPU sampler, which
  // takes u as an input) draws it here instead, so the sequence of draws, and the tokens, stay the same.
  double DrawUniform();

  const GenerationParams& params() const { return params_; }
  uint64_t seed() const { return seed_; }

 private:
  GenerationParams params_;
  uint64_t seed_;
  std::mt19937_64 rng_;
};

// Index of the largest value, lowest index on ties; -1 for an empty span.
int32_t ArgMax(absl::Span<const float> logits);

}  // namespace bitloom::engine
