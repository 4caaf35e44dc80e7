// One-line structured logging to stderr. Thread-safe; each call writes one whole line.
#pragma once

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace switchyard {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// Accepts "debug", "info", "warning", "error".
bool ParseLogLevel(absl::string_view name, LogLevel* level);
void LogLine(LogLevel level, absl::string_view message);

}  // namespace switchyard

#define SY_LOG(level, ...)                                                                \
  do {                                                                                    \
    if (::switchyard::LogLevel::level >= ::switchyard::GetLogLevel())                     \
      ::switchyard::LogLine(::switchyard::LogLevel::level, absl::StrFormat(__VA_ARGS__)); \
  } while (0)
