// AllocateBits: choose one quantization setting per tensor so the average stored bits per weight
// hits a target while the summed estimated loss is minimal.
//
// This is a multiple-choice knapsack: every tensor must take exactly one of its candidates, each
// with a cost (stored bits: codes + scales + padding, an exact integer) and a loss (proxy loss ×
// importance, chosen by the caller). AllocateBits solves it by dynamic programming over the budget:
// costs are measured relative to each tensor's cheapest candidate and discretised in units of `u`
// bits; u = 1 (exact) whenever the table fits, otherwise the smallest u that fits, with the
// accepted window shrunk by the worst-case rounding (tensors · u / 2) on each side so the *true*
// average of the answer is always inside [target − tolerance, target + tolerance]. With u = 1 the
// answer is the exact optimum (the tests check it against brute force). Ties are broken towards the
// lower candidate index, so the result is deterministic. Pure function; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace bitloom::quant {

struct AllocationCandidate {
  int bits = 0;              // K of the codec (informational; the cost is stored_bits)
  int group_size = 0;        // informational
  double loss = 0.0;         // estimated loss if chosen; must be finite and ≥ 0
  uint64_t stored_bits = 0;  // 8 × blob bytes
};

struct AllocationItem {
  std::string name;
  uint64_t num_weights = 0;  // logical weights (rows × cols): the denominator of bits per weight
  std::vector<AllocationCandidate> candidates;
};

struct AllocationOptions {
  double target_bits_per_weight = 4.0;
  double tolerance = 0.01;  // the answer's average is within ±tolerance of the target
  // Cap on DP table cells (tensors × budget units), bounding memory (1 byte each) and time.
  uint64_t max_table_cells = uint64_t{1} << 24;
};

struct AllocationResult {
  std::vector<int> choice;       // candidate index per item
  double bits_per_weight = 0.0;  // Σ stored_bits / Σ num_weights of the choice
  uint64_t total_stored_bits = 0;
  double total_loss = 0.0;
  uint64_t budget_unit_bits = 1;  // u: 1 means the optimum is exact
};

// INVALID_ARGUMENT for an item without candidates or weights, a negative/non-finite loss, or a
// target that no choice can reach within the tolerance (the message gives the reachable range).
absl::StatusOr<AllocationResult> AllocateBits(const std::vector<AllocationItem>& items,
                                              const AllocationOptions& options);

}  // namespace bitloom::quant
