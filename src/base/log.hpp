// Diagnostics on stderr. The level comes from $FLTPORT_LOG (error, warning, info, debug; default
// warning) so that a host's log says why a connection was dropped without being asked to.
#pragma once

#include <cstdint>
#include <mutex>

namespace fltport::log {

enum class Level { error = 0, warning = 1, info = 2, debug = 3 };

bool enabled(Level level) noexcept;
void write(Level level, const char* component, const char* format, ...) noexcept
    __attribute__((format(printf, 3, 4)));
// As write(), then " (and N more like this not logged)" when `not_logged` is not zero.
void write_after(uint64_t not_logged, Level level, const char* component, const char* format, ...) noexcept
    __attribute__((format(printf, 4, 5)));

// At most `lines_per_second` lines a second from one source (a call site, a filter). A line
// caused by another process (a connection dropped, an event left without a verdict) can come in
// a loop as fast as that process likes, and must not fill the host's log or slow it with writes.
class RateLimit {
 public:
  explicit constexpr RateLimit(unsigned lines_per_second) noexcept : per_second_(lines_per_second) {}
  RateLimit(const RateLimit&) = delete;
  RateLimit& operator=(const RateLimit&) = delete;

  // True when a line may go out now; `not_logged` is then how many were left out before it.
  bool admit(uint64_t& not_logged) noexcept;

 private:
  std::mutex mutex_;
  int64_t second_ = 0;
  unsigned this_second_ = 0;
  uint64_t not_logged_ = 0;
  const unsigned per_second_;
};

inline constexpr unsigned kLinesPerSecondPerSite = 10;

}  // namespace fltport::log

#define FLTPORT_LOG(level, component, ...)                                         \
  do {                                                                             \
    if (::fltport::log::enabled(::fltport::log::Level::level))                     \
      ::fltport::log::write(::fltport::log::Level::level, component, __VA_ARGS__); \
  } while (0)

// FLTPORT_LOG for lines another process can cause at will: at most kLinesPerSecondPerSite a
// second from this call site, the next one saying how many were left out.
#define FLTPORT_LOG_LIMITED(level, component, ...)                                                \
  do {                                                                                            \
    if (::fltport::log::enabled(::fltport::log::Level::level)) {                                  \
      static ::fltport::log::RateLimit fltport_log_limit(::fltport::log::kLinesPerSecondPerSite); \
      uint64_t fltport_not_logged = 0;                                                            \
      if (fltport_log_limit.admit(fltport_not_logged))                                            \
        ::fltport::log::write_after(fltport_not_logged, ::fltport::log::Level::level, component,  \
                                    __VA_ARGS__);                                                 \
    }                                                                                             \
  } while (0)
