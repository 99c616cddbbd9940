#include "bitloom/metrics/process_collector.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"

namespace bitloom::metrics {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

absl::StatusOr<std::string> ReadSmallFile(const char* path) {
  std::ifstream in(path);
  if (!in) return absl::InternalError(absl::StrCat("cannot open ", path));
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

// /proc/self/stat fields, numbered as in proc(5), that we use.
struct StatFields {
  double utime_ticks = 0;
  double stime_ticks = 0;
  double num_threads = 0;
  double starttime_ticks = 0;  // since boot
  double vsize_bytes = 0;
  double rss_pages = 0;
};

absl::StatusOr<StatFields> ReadStat() {
  BITLOOM_ASSIGN_OR_RETURN(const std::string stat, ReadSmallFile("/proc/self/stat"));
  // Field 2, the command name, is in parentheses and may itself contain spaces and ')', so parsing
  // starts after the last ')'; the next token is field 3.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return absl::InternalError("unparseable /proc/self/stat");
  std::istringstream fields(stat.substr(close + 1));
  std::vector<std::string> tokens;
  for (std::string token; fields >> token;) tokens.push_back(token);
  auto field = [&](int number, double* value) {
    const size_t index = static_cast<size_t>(number - 3);
    if (index >= tokens.size()) return false;
    const std::string& token = tokens[index];
    unsigned long long parsed = 0;
    const auto result = std::from_chars(token.data(), token.data() + token.size(), parsed);
    if (result.ec != std::errc() || result.ptr != token.data() + token.size()) return false;
    *value = static_cast<double>(parsed);
    return true;
  };
  StatFields out;
  if (!field(14, &out.utime_ticks) || !field(15, &out.stime_ticks) ||
      !field(20, &out.num_threads) || !field(22, &out.starttime_ticks) ||
      !field(23, &out.vsize_bytes) || !field(24, &out.rss_pages)) {
    return absl::InternalError("unparseable /proc/self/stat");
  }
  return out;
}

// Seconds since the epoch at boot: the "btime" line of /proc/stat.
absl::StatusOr<double> ReadBootTime() {
  BITLOOM_ASSIGN_OR_RETURN(const std::string stat, ReadSmallFile("/proc/stat"));
  std::istringstream lines(stat);
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with("btime ")) {
      unsigned long long seconds = 0;
      const char* begin = line.data() + 6;
      const auto result = std::from_chars(begin, line.data() + line.size(), seconds);
      if (result.ec == std::errc()) return static_cast<double>(seconds);
    }
  }
  return absl::InternalError("no btime in /proc/stat");
}

absl::StatusOr<double> CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return absl::InternalError("cannot open /proc/self/fd");
  // The directory stream holds a descriptor of its own while we count; it is not the process's.
  const int own_fd = dirfd(dir);
  double count = 0;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    if (std::to_string(own_fd) == entry->d_name) continue;
    ++count;
  }
  closedir(dir);
  return count;
}

// Callback value: one field of a fresh reading, NaN when /proc cannot be read.
template <typename Getter>
std::function<double()> StatsField(Getter getter) {
  return [getter] {
    absl::StatusOr<ProcessStats> stats = ReadProcessStats();
    return stats.ok() ? getter(*stats) : kNaN;
  };
}

}  // namespace

absl::StatusOr<ProcessStats> ReadProcessStats() {
  BITLOOM_ASSIGN_OR_RETURN(const StatFields stat, ReadStat());
  BITLOOM_ASSIGN_OR_RETURN(const double boot_time, ReadBootTime());
  BITLOOM_ASSIGN_OR_RETURN(const double open_fds, CountOpenFds());
  const double ticks_per_second = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page_size = static_cast<double>(sysconf(_SC_PAGESIZE));
  ProcessStats stats;
  stats.cpu_seconds = (stat.utime_ticks + stat.stime_ticks) / ticks_per_second;
  stats.resident_memory_bytes = stat.rss_pages * page_size;
  stats.virtual_memory_bytes = stat.vsize_bytes;
  stats.open_fds = open_fds;
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    stats.max_fds = limit.rlim_cur == RLIM_INFINITY ? std::numeric_limits<double>::infinity()
                                                    : static_cast<double>(limit.rlim_cur);
  } else {
    stats.max_fds = kNaN;
  }
  stats.start_time_seconds = boot_time + stat.starttime_ticks / ticks_per_second;
  stats.threads = stat.num_threads;
  return stats;
}

absl::Status ProcessCollector::Register(MetricsRegistry& registry, std::string_view prefix,
                                        std::string_view version) {
  const std::string p(prefix);
  BITLOOM_RETURN_IF_ERROR(registry.AddCounterCallback(
      p + "_process_cpu_seconds_total", "Total user and system CPU time spent, in seconds.",
      StatsField([](const ProcessStats& s) { return s.cpu_seconds; })));
  BITLOOM_RETURN_IF_ERROR(registry.AddGaugeCallback(
      p + "_process_resident_memory_bytes", "Resident memory size, in bytes.",
      StatsField([](const ProcessStats& s) { return s.resident_memory_bytes; })));
  BITLOOM_RETURN_IF_ERROR(registry.AddGaugeCallback(
      p + "_process_virtual_memory_bytes", "Virtual memory size, in bytes.",
      StatsField([](const ProcessStats& s) { return s.virtual_memory_bytes; })));
  BITLOOM_RETURN_IF_ERROR(registry.AddGaugeCallback(
      p + "_process_open_fds", "Number of open file descriptors.",
      StatsField([](const ProcessStats& s) { return s.open_fds; })));
  BITLOOM_RETURN_IF_ERROR(registry.AddGaugeCallback(
      p + "_process_max_fds", "Maximum number of open file descriptors (soft limit).",
      StatsField([](const ProcessStats& s) { return s.max_fds; })));
  // The start time never changes: read it once rather than on every scrape. If /proc is unreadable
  // now it is NaN for the life of the process, which is what a later read would give too.
  absl::StatusOr<ProcessStats> now = ReadProcessStats();
  const double start_time = now.ok() ? now->start_time_seconds : kNaN;
  BITLOOM_RETURN_IF_ERROR(registry.AddGaugeCallback(
      p + "_process_start_time_seconds", "Start time of the process since the Unix epoch, in seconds.",
      [start_time] { return start_time; }));
  BITLOOM_RETURN_IF_ERROR(registry.AddGaugeCallback(
      p + "_process_threads", "Number of OS threads in the process.",
      StatsField([](const ProcessStats& s) { return s.threads; })));
  BITLOOM_ASSIGN_OR_RETURN(GaugeFamily * build_info,
                           registry.AddGauge(p + "_build_info",
                                             "Always 1; the version label carries the build's version.",
                                             {"version"}));
  build_info->WithLabels({version}).Set(1);
  return absl::OkStatus();
}

}  // namespace bitloom::metrics
