// Leveled logging to stderr, one line per message: "2026-11-27T13:21:54.123Z I file.cc:42] text".
//
// BITLOOM_LOG(INFO) << "loaded " << name;   Levels: DEBUG, INFO, WARNING, ERROR.
// The threshold is process-wide (SetLogLevel) and thread-safe; a line is written with one write(2)
// so lines from different threads never interleave.
#pragma once

#include <sstream>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace bitloom {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// "debug", "info", "warning", "error" (case-insensitive); INVALID_ARGUMENT otherwise.
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);

namespace internal {

class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

// Swallows the stream expression when the level is below the threshold.
struct LogVoidify {
  void operator&(std::ostream&) {}
};

}  // namespace internal
}  // namespace bitloom

#define BITLOOM_LOG_LEVEL_DEBUG ::bitloom::LogLevel::kDebug
#define BITLOOM_LOG_LEVEL_INFO ::bitloom::LogLevel::kInfo
#define BITLOOM_LOG_LEVEL_WARNING ::bitloom::LogLevel::kWarning
#define BITLOOM_LOG_LEVEL_ERROR ::bitloom::LogLevel::kError

#define BITLOOM_LOG(severity)                                                     \
  (BITLOOM_LOG_LEVEL_##severity < ::bitloom::GetLogLevel())                       \
      ? (void)0                                                                   \
      : ::bitloom::internal::LogVoidify() &                                       \
            ::bitloom::internal::LogMessage(BITLOOM_LOG_LEVEL_##severity, __FILE__, \
                                            __LINE__)                             \
                .stream()
