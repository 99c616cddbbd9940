#include "kernel_timeline.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace bitloom::tools {

std::string ShortKernelName(const std::string& demangled) {
  // Cut the parameter list: the '(' that closes the name at template depth 0, from the end.
  std::string name = demangled;
  int depth = 0;
  for (size_t i = name.size(); i-- > 0;) {
    const char c = name[i];
    if (c == ')') ++depth;
    if (c == '(' && --depth == 0) {
      // "(anonymous namespace)" is part of the name, not a parameter list.
      if (name.compare(i, 21, "(anonymous namespace)") != 0) {
        name.resize(i);
        break;
      }
    }
  }
  // Drop the return type ("void ") and every qualifier before the last "::" outside templates.
  size_t begin = 0;
  depth = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (c == '<') ++depth;
    if (c == '>') --depth;
    if (depth == 0 && c == ' ' && name.compare(0, i, "void") == 0) begin = i + 1;
    if (depth == 0 && c == ':' && i + 1 < name.size() && name[i + 1] == ':') begin = i + 2;
  }
  return name.substr(begin);
}

absl::StatusOr<nlohmann::json> SummarizeTimeline(std::vector<KernelSpan> spans, int steps) {
  if (steps < 1 || spans.empty() || spans.size() % static_cast<size_t>(steps) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("kernel timeline: ", spans.size(),
                                                   " kernels do not split into ", steps,
                                                   " equal steps"));
  }
  std::stable_sort(spans.begin(), spans.end(),
                   [](const KernelSpan& a, const KernelSpan& b) { return a.start_ns < b.start_ns; });
  const size_t per_step = spans.size() / static_cast<size_t>(steps);
  const std::vector<KernelSpan> step(spans.end() - static_cast<std::ptrdiff_t>(per_step), spans.end());
  const uint64_t first = step.front().start_ns;
  uint64_t latest_end = first;
  double busy_us = 0.0, gaps_us = 0.0, overlap_us = 0.0;
  nlohmann::json kernels = nlohmann::json::array();
  for (size_t i = 0; i < step.size(); ++i) {
    const KernelSpan& k = step[i];
    const double duration_us = 1e-3 * static_cast<double>(k.end_ns - k.start_ns);
    const double gap_us =
        i == 0 ? 0.0 : 1e-3 * (static_cast<double>(k.start_ns) - static_cast<double>(latest_end));
    busy_us += duration_us;
    (gap_us > 0 ? gaps_us : overlap_us) += gap_us;
    kernels.push_back({{"name", k.name},
                       {"start_us", 1e-3 * static_cast<double>(k.start_ns - first)},
                       {"duration_us", duration_us},
                       {"gap_us", gap_us}});
    latest_end = std::max(latest_end, k.end_ns);
  }
  nlohmann::json j;
  j["steps_recorded"] = steps;
  j["kernels_per_step"] = per_step;
  j["step_span_us"] = 1e-3 * static_cast<double>(latest_end - first);
  j["kernel_time_us"] = busy_us;
  j["gaps_us"] = gaps_us;
  j["overlap_us"] = -overlap_us;
  j["kernels"] = std::move(kernels);
  return j;
}

}  // namespace bitloom::tools
