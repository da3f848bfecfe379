#include "base/log.hpp"

#include <time.h>
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

namespace {

void write_line(uint64_t not_logged, Level level, const char* component, const char* format,
                va_list args) noexcept {
  char line[1024];
  int used = std::snprintf(line, sizeof line, "fltport[%d] %s %s: ", static_cast<int>(getpid()),
                           level_name(level), component);
  if (used < 0) return;
  std::vsnprintf(line + used, sizeof line - static_cast<size_t>(used), format, args);
  size_t length = std::strlen(line);
  if (not_logged != 0) {
    std::snprintf(line + length, sizeof line - length, " (and %llu more like this not logged)",
                  static_cast<unsigned long long>(not_logged));
    length = std::strlen(line);
  }
  // One write(2) per line so that lines of concurrent threads and processes do not interleave.
  if (length + 1 < sizeof line) line[length++] = '\n';
  [[maybe_unused]] ssize_t written = ::write(STDERR_FILENO, line, length);
}

}  // namespace

void write(Level level, const char* component, const char* format, ...) noexcept {
  va_list args;
  va_start(args, format);
  write_line(0, level, component, format, args);
  va_end(args);
}

void write_after(uint64_t not_logged, Level level, const char* component, const char* format, ...) noexcept {
  va_list args;
  va_start(args, format);
  write_line(not_logged, level, component, format, args);
  va_end(args);
}

bool RateLimit::admit(uint64_t& not_logged) noexcept {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
  std::lock_guard lock(mutex_);
  if (now.tv_sec != second_) {
    second_ = now.tv_sec;
    this_second_ = 0;
  }
  if (this_second_ >= per_second_) {
    ++not_logged_;
    return false;
  }
  ++this_second_;
  not_logged = not_logged_;
  not_logged_ = 0;
  return true;
}

}  // namespace fltport::log
