#include "base/log.hpp"

#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace fltport::log {
namespace {

Level level_from_environment() noexcept {
  const char* value = std::getenv("FLTPORT_LOG");
  if (value == nullptr) return Level::warning;
  if (std::strcmp(value, "error") == 0) return Level::error;
  if (std::strcmp(value, "info") == 0) return Level::info;
  if (std::strcmp(value, "debug") == 0) return Level::debug;
  return Level::warning;
}

const char* level_name(Level level) noexcept {
  switch (level) {
    case Level::error:
      return "error";
    case Level::warning:
      return "warning";
    case Level::info:
      return "info";
    case Level::debug:
      return "debug";
  }
  return "?";
}

}  // namespace

bool enabled(Level level) noexcept {
  static const Level threshold = level_from_environment();
  return static_cast<int>(level) <= static_cast<int>(threshold);
}

void write(Level level, const char* component, const char* format, ...) noexcept {
  char line[1024];
  int used = std::snprintf(line, sizeof line, "fltport[%d] %s %s: ", static_cast<int>(getpid()),
                           level_name(level), component);
  if (used < 0) return;
  va_list args;
  va_start(args, format);
  std::vsnprintf(line + used, sizeof line - static_cast<size_t>(used), format, args);
  va_end(args);
  // One write(2) per line so that lines of concurrent threads and processes do not interleave.
  size_t length = std::strlen(line);
  if (length + 1 < sizeof line) line[length++] = '\n';
  [[maybe_unused]] ssize_t written = ::write(STDERR_FILENO, line, length);
}

}  // namespace fltport::log
