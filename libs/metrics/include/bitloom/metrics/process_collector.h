// ProcessCollector: the standard process metrics of a Linux daemon, read from /proc/self at scrape.
//
// Register() adds, under `prefix` (bitloom_quantd, bitloom_inferd):
//   <prefix>_process_cpu_seconds_total        counter  user + system CPU time, seconds
//   <prefix>_process_resident_memory_bytes    gauge    resident set size
//   <prefix>_process_virtual_memory_bytes     gauge    virtual address space size
//   <prefix>_process_open_fds                 gauge    open file descriptors
//   <prefix>_process_max_fds                  gauge    RLIMIT_NOFILE soft limit
//   <prefix>_process_start_time_seconds       gauge    start time, seconds since the Unix epoch
//   <prefix>_process_threads                  gauge    threads in the process
//   <prefix>_build_info{version}              gauge    always 1; the version travels as a label
// The registry owns the callbacks, which capture only values, so nothing here needs to outlive the
// call. Stateless and thread-safe. Where /proc cannot be read a value is exported as NaN rather than
// failing the whole scrape.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bitloom/metrics/metrics_registry.h"

namespace bitloom::metrics {

// One reading of /proc/self/stat, /proc/self/fd and getrlimit.
struct ProcessStats {
  double cpu_seconds = 0;           // utime + stime
  double resident_memory_bytes = 0;
  double virtual_memory_bytes = 0;
  double open_fds = 0;
  double max_fds = 0;               // +Inf when unlimited
  double start_time_seconds = 0;    // Unix time
  double threads = 0;
};

// INTERNAL naming the file when /proc is missing or unparseable (not Linux, a hardened sandbox).
absl::StatusOr<ProcessStats> ReadProcessStats();

class ProcessCollector {
 public:
  // Registers the metrics above. `version` is the daemon's version string (for example
  // PROJECT_VERSION). Fails as MetricsRegistry::Add* do, e.g. when called twice with one prefix.
  static absl::Status Register(MetricsRegistry& registry, std::string_view prefix,
                               std::string_view version);
};

}  // namespace bitloom::metrics
