// The --vram_budget flag: how much memory inferd's pool takes at start. Either an absolute size
// ("24GiB", "512MiB", "1000000000") or a fraction of the device's free memory ("0.9").
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace bitloom::inferd {

struct MemoryBudget {
  uint64_t bytes = 0;      // used when fraction == 0
  double fraction = 0.0;   // (0, 1]: share of free device memory
  // The budget in bytes given the device's free memory.
  uint64_t Resolve(uint64_t free_bytes) const;
};

absl::StatusOr<MemoryBudget> ParseMemoryBudget(const std::string& text);

}  // namespace bitloom::inferd
