// Whether this process may take fanotify permission events, for the tests that need them (the
// filter manager, fltmgrd): where it may not, they skip with the reason instead of failing.
#pragma once

#include <fcntl.h>
#include <sys/fanotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace fltport::test {

// Empty when permission events can be had; else why not.
inline std::string fanotify_permission_events_unavailable() {
  const int probe = ::fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, O_RDONLY);
  if (probe >= 0) {
    ::close(probe);
    return {};
  }
  return std::string("fanotify permission events are not permitted here (fanotify_init: ") + std::strerror(errno) +
         "): fltmgrd and its filters need root (CAP_SYS_ADMIN) and a kernel with "
         "CONFIG_FANOTIFY_ACCESS_PERMISSIONS";
}

}  // namespace fltport::test

// In a test body or SetUp: skips the test, with the reason, where permission events cannot be had.
#define FLTPORT_SKIP_WITHOUT_FANOTIFY()                                                                  \
  do {                                                                                                  \
    if (const std::string fltport_why = ::fltport::test::fanotify_permission_events_unavailable();    \
        !fltport_why.empty())                                                                           \
      GTEST_SKIP() << fltport_why;                                                                      \
  } while (0)
