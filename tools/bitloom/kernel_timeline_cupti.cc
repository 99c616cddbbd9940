// KernelTimelineRecorder over CUPTI's activity API (kernel_timeline.h): CUPTI hands filled
// buffers of activity records to a process-wide callback, which keeps the kernel records.
#include <cupti.h>
#include <cxxabi.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "kernel_timeline.h"

namespace bitloom::tools {
namespace {

constexpr size_t kBufferBytes = size_t{8} << 20;
constexpr size_t kBufferAlign = 8;

std::mutex spans_mutex;
std::vector<KernelSpan>& Spans() {
  static std::vector<KernelSpan> spans;
  return spans;
}
std::atomic<bool> recorder_active{false};

std::string Demangle(const char* name) {
  if (name == nullptr) return "?";
  int status = 0;
  char* out = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string result = status == 0 && out != nullptr ? out : name;
  std::free(out);
  return result;
}

void CUPTIAPI BufferRequested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(kBufferAlign, kBufferBytes));
  *size = *buffer == nullptr ? 0 : kBufferBytes;
  *max_records = 0;
}

void CUPTIAPI BufferCompleted(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* record = nullptr;
  std::vector<KernelSpan> kernels;
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
    kernels.push_back(KernelSpan{ShortKernelName(Demangle(k->name)), k->start, k->end});
  }
  std::free(buffer);
  std::lock_guard<std::mutex> lock(spans_mutex);
  Spans().insert(Spans().end(), kernels.begin(), kernels.end());
}

absl::Status CuptiStatus(CUptiResult r, const char* what) {
  if (r == CUPTI_SUCCESS) return absl::OkStatus();
  const char* text = nullptr;
  cuptiGetResultString(r, &text);
  return absl::FailedPreconditionError(
      absl::StrCat("kernel timeline: ", what, " failed: ", text != nullptr ? text : "?"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<KernelTimelineRecorder>> KernelTimelineRecorder::Start() {
  if (recorder_active.exchange(true)) {
    return absl::FailedPreconditionError("kernel timeline: a recorder is already running");
  }
  {
    std::lock_guard<std::mutex> lock(spans_mutex);
    Spans().clear();
  }
  absl::Status s = CuptiStatus(cuptiActivityRegisterCallbacks(BufferRequested, BufferCompleted),
                               "cuptiActivityRegisterCallbacks");
  if (s.ok()) {
    s = CuptiStatus(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL),
                    "cuptiActivityEnable");
  }
  if (!s.ok()) {
    recorder_active = false;
    return s;
  }
  return std::unique_ptr<KernelTimelineRecorder>(new KernelTimelineRecorder());
}

absl::StatusOr<std::vector<KernelSpan>> KernelTimelineRecorder::Stop() {
  if (stopped_) return absl::FailedPreconditionError("kernel timeline: already stopped");
  stopped_ = true;
  const absl::Status flushed = CuptiStatus(cuptiActivityFlushAll(1), "cuptiActivityFlushAll");
  cuptiActivityDisable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  recorder_active = false;
  if (!flushed.ok()) return flushed;
  std::lock_guard<std::mutex> lock(spans_mutex);
  std::vector<KernelSpan> spans = std::move(Spans());
  Spans().clear();
  std::stable_sort(spans.begin(), spans.end(),
                   [](const KernelSpan& a, const KernelSpan& b) { return a.start_ns < b.start_ns; });
  return spans;
}

KernelTimelineRecorder::~KernelTimelineRecorder() {
  if (!stopped_) (void)Stop();
}

}  // namespace bitloom::tools
