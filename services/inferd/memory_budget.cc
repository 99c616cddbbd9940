#include "memory_budget.h"

#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace bitloom::inferd {

uint64_t MemoryBudget::Resolve(uint64_t free_bytes) const {
  if (fraction > 0) return static_cast<uint64_t>(static_cast<double>(free_bytes) * fraction);
  return bytes;
}

absl::StatusOr<MemoryBudget> ParseMemoryBudget(const std::string& text) {
  const auto invalid = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "--vram_budget: '", text,
        "' is neither a fraction in (0, 1] of free memory nor a size like 24GiB or 512MiB"));
  };
  absl::string_view s = absl::StripAsciiWhitespace(text);
  double fraction = 0;
  if (s.find('.') != absl::string_view::npos && absl::SimpleAtod(s, &fraction)) {
    if (!std::isfinite(fraction) || fraction <= 0 || fraction > 1) return invalid();
    return MemoryBudget{.bytes = 0, .fraction = fraction};
  }
  static constexpr std::pair<absl::string_view, uint64_t> kSuffixes[] = {
      {"TiB", 1ull << 40}, {"GiB", 1ull << 30}, {"MiB", 1ull << 20}, {"KiB", 1ull << 10},
      {"TB", 1000000000000ull}, {"GB", 1000000000ull}, {"MB", 1000000ull}, {"KB", 1000ull},
      {"B", 1}};
  uint64_t multiplier = 1;
  for (const auto& [suffix, scale] : kSuffixes) {
    if (s.size() > suffix.size() && s.substr(s.size() - suffix.size()) == suffix) {
      s.remove_suffix(suffix.size());
      multiplier = scale;
      break;
    }
  }
  uint64_t count = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(s), &count) || count == 0 ||
      count > UINT64_MAX / multiplier) {
    return invalid();
  }
  return MemoryBudget{.bytes = count * multiplier, .fraction = 0};
}

}  // namespace bitloom::inferd
