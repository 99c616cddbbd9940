// Kernel timelines for `bitloom bench --kernel_timeline_steps=N`: when each kernel of a few decode
// steps started and ended on the GPU, from CUPTI's activity records (CUDA builds). That is what
// dependent launch and persistent kernels change, and what a per-kernel profiler cannot show,
// since it runs kernels one at a time. SummarizeTimeline is plain arithmetic over the records
// (any build); KernelTimelineRecorder needs CUPTI (kernel_timeline_cupti.cc).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace bitloom::tools {

// One kernel execution: its (demangled) name and GPU timestamps in ns.
struct KernelSpan {
  std::string name;
  uint64_t start_ns = 0;
  uint64_t end_ns = 0;
};

// The kernel's name without return type, namespaces, template arguments' namespaces and
// parameter list: "void a::b::(anonymous namespace)::K<4, 4, false>(a::Args)" → "K<4, 4, false>".
std::string ShortKernelName(const std::string& demangled);

// The last of `steps` equal steps in `spans` (sorted by start; spans.size() must be a multiple of
// steps): per kernel in launch order its name, start (µs from the step's first start), duration
// and gap (start minus the latest end before it: negative when it overlaps), and per step the span
// (first start to last end), the kernels' summed time, the summed positive gaps and the summed
// overlaps. INVALID_ARGUMENT when the spans do not split into `steps` equal steps.
absl::StatusOr<nlohmann::json> SummarizeTimeline(std::vector<KernelSpan> spans, int steps);

// Records every kernel that runs between Start and Stop on any stream of this process (CUPTI's
// concurrent-kernel activity, which does not serialise kernels). One recorder at a time.
class KernelTimelineRecorder {
 public:
  static absl::StatusOr<std::unique_ptr<KernelTimelineRecorder>> Start();
  ~KernelTimelineRecorder();
  KernelTimelineRecorder(const KernelTimelineRecorder&) = delete;
  KernelTimelineRecorder& operator=(const KernelTimelineRecorder&) = delete;

  // Flushes and returns the spans recorded so far, sorted by start; recording stops.
  absl::StatusOr<std::vector<KernelSpan>> Stop();

 private:
  KernelTimelineRecorder() = default;
  bool stopped_ = false;
};

}  // namespace bitloom::tools
