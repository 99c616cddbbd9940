#include "bitloom/quant/bit_allocation.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace bitloom::quant {

absl::StatusOr<AllocationResult> AllocateBits(const std::vector<AllocationItem>& items,
                                              const AllocationOptions& options) {
  if (items.empty()) return absl::InvalidArgumentError("AllocateBits: no tensors to allocate");
  if (!(options.tolerance >= 0.0) || !std::isfinite(options.target_bits_per_weight)) {
    return absl::InvalidArgumentError(
        "AllocateBits: target and tolerance must be finite, tolerance >= 0");
  }
  const int64_t t_count = static_cast<int64_t>(items.size());
  long double total_weights = 0;
  uint64_t base = 0, max_total = 0;  // Σ cheapest, Σ dearest stored bits
  std::vector<uint64_t> min_cost(items.size());
  for (size_t t = 0; t < items.size(); ++t) {
    const AllocationItem& it = items[t];
    if (it.candidates.empty() || it.num_weights == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("AllocateBits: tensor '", it.name, "' has no candidates or no weights"));
    }
    uint64_t lo = std::numeric_limits<uint64_t>::max(), hi = 0;
    for (const AllocationCandidate& c : it.candidates) {
      if (!std::isfinite(c.loss) || c.loss < 0.0) {
        return absl::InvalidArgumentError(absl::StrCat("AllocateBits: tensor '", it.name,
                                                       "' candidate of ", c.bits, " bits has loss ",
                                                       c.loss));
      }
      lo = std::min(lo, c.stored_bits);
      hi = std::max(hi, c.stored_bits);
    }
    min_cost[t] = lo;
    base += lo;
    max_total += hi;
    total_weights += it.num_weights;
  }
  const long double n = total_weights;
  // The accepted window of true total cost [lo_bits, hi_bits], inclusive, in whole bits.
  const long double lo_real = (options.target_bits_per_weight - options.tolerance) * n;
  const long double hi_real = (options.target_bits_per_weight + options.tolerance) * n;
  const auto reachable = [&]() {
    return absl::StrCat("reachable averages are ", static_cast<double>(base / n), " to ",
                        static_cast<double>(max_total / n), " bits per weight");
  };
  if (hi_real < static_cast<long double>(base) || lo_real > static_cast<long double>(max_total)) {
    return absl::InvalidArgumentError(
        absl::StrCat("AllocateBits: target ", options.target_bits_per_weight, " ± ",
                     options.tolerance, " is out of range: ", reachable()));
  }
  const uint64_t lo_bits = lo_real <= base ? base : static_cast<uint64_t>(std::ceil(lo_real));
  const uint64_t hi_bits =
      std::min<uint64_t>(max_total, static_cast<uint64_t>(std::floor(hi_real)));
  if (lo_bits > hi_bits) {
    return absl::InvalidArgumentError(
        absl::StrCat("AllocateBits: empty window for target ", options.target_bits_per_weight));
  }

  // Budget units: the DP state is Σ round((cost − min_cost)/u) over the tensors decided so far.
  const uint64_t span = hi_bits - base;  // extra bits we may spend above the cheapest choice
  // The DP rows themselves (two doubles per state) are capped too, at 4M states (64 MB).
  const uint64_t max_states = std::clamp<uint64_t>(
      options.max_table_cells / static_cast<uint64_t>(t_count), 16, uint64_t{1} << 22);
  uint64_t u = std::max<uint64_t>(1, (span + max_states - 1) / max_states);
  // Rounding each tensor's extra cost to units moves the true total by at most u/2 per tensor.
  auto window = [&](uint64_t unit, uint64_t* s_lo, uint64_t* s_hi) {
    const long double slack = unit == 1 ? 0.0L : 0.5L * unit * t_count;
    const long double a = static_cast<long double>(lo_bits) - base + slack;
    const long double b = static_cast<long double>(hi_bits) - base - slack;
    if (b < a || b < 0) return false;
    *s_lo = a <= 0 ? 0 : static_cast<uint64_t>(std::ceil(a / unit));
    *s_hi = static_cast<uint64_t>(std::floor(b / unit));
    return *s_lo <= *s_hi;
  };
  uint64_t s_lo = 0, s_hi = 0;
  if (!window(u, &s_lo, &s_hi)) {
    // The cap forced units so coarse that rounding could leave the window; a unit of
    // tolerance·N/(2T) keeps a window of width ≥ tolerance·N, whatever the table size.
    u = std::max<uint64_t>(
        1, static_cast<uint64_t>(std::floor(options.tolerance * n / (2.0L * t_count))));
    if (!window(u, &s_lo, &s_hi)) {
      return absl::InvalidArgumentError(
          absl::StrCat("AllocateBits: target ", options.target_bits_per_weight,
                       " cannot be met within ", options.tolerance, ": ", reachable()));
    }
  }
  const uint64_t states = s_hi + 1;

  constexpr double kInf = std::numeric_limits<double>::infinity();
  std::vector<double> dp(states, kInf), next(states);
  dp[0] = 0.0;
  std::vector<uint8_t> pick(static_cast<size_t>(t_count) * states, 0);
  std::vector<std::vector<uint64_t>> unit_cost(items.size());
  for (int64_t t = 0; t < t_count; ++t) {
    const auto& cands = items[t].candidates;
    if (cands.size() > 255)
      return absl::InvalidArgumentError("AllocateBits: more than 255 candidates for a tensor");
    unit_cost[t].resize(cands.size());
    for (size_t c = 0; c < cands.size(); ++c) {
      const uint64_t extra = cands[c].stored_bits - min_cost[t];
      unit_cost[t][c] = (extra + u / 2) / u;
    }
    std::fill(next.begin(), next.end(), kInf);
    uint8_t* row = pick.data() + static_cast<size_t>(t) * states;
    for (size_t c = 0; c < cands.size(); ++c) {
      const uint64_t k = unit_cost[t][c];
      if (k >= states) continue;
      const double loss = cands[c].loss;
      for (uint64_t s = k; s < states; ++s) {
        const double v = dp[s - k] + loss;
        if (v < next[s]) {  // strict: the first (lowest-index) candidate wins ties
          next[s] = v;
          row[s] = static_cast<uint8_t>(c);
        }
      }
    }
    dp.swap(next);
  }
  uint64_t best_s = states;
  for (uint64_t s = s_lo; s <= s_hi; ++s) {
    if (dp[s] < kInf && (best_s == states || dp[s] < dp[best_s])) best_s = s;
  }
  if (best_s == states) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AllocateBits: no combination of the candidates averages ", options.target_bits_per_weight,
        " ± ", options.tolerance, " bits per weight; ", reachable()));
  }
  AllocationResult result;
  result.choice.assign(items.size(), 0);
  result.budget_unit_bits = u;
  uint64_t s = best_s;
  for (int64_t t = t_count - 1; t >= 0; --t) {
    const int c = pick[static_cast<size_t>(t) * states + s];
    result.choice[t] = c;
    s -= unit_cost[t][c];
  }
  for (int64_t t = 0; t < t_count; ++t) {
    const AllocationCandidate& c = items[t].candidates[result.choice[t]];
    result.total_stored_bits += c.stored_bits;
    result.total_loss += c.loss;
  }
  result.bits_per_weight =
      static_cast<double>(static_cast<long double>(result.total_stored_bits) / n);
  return result;
}

}  // namespace bitloom::quant
