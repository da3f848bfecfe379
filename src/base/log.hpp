// Diagnostics on stderr. The level comes from $FLTPORT_LOG (error, warning, info, debug; default
// warning) so that a host's log says why a connection was dropped without being asked to.
#pragma once

namespace fltport::log {

enum class Level { error = 0, warning = 1, info = 2, debug = 3 };

bool enabled(Level level) noexcept;
void write(Level level, const char* component, const char* format, ...) noexcept
    __attribute__((format(printf, 3, 4)));

}  // namespace fltport::log

#define FLTPORT_LOG(level, component, ...)                                         \
  do {                                                                             \
    if (::fltport::log::enabled(::fltport::log::Level::level))                     \
      ::fltport::log::write(::fltport::log::Level::level, component, __VA_ARGS__); \
  } while (0)
