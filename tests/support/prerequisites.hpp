// What the tests that run fltmgrd need: fanotify permission events (root, CAP_SYS_ADMIN, a kernel
// with them) and, for some, the scanner plugin. Where one is missing they skip with the reason
// instead of failing.
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

// Empty when `directory` holds the scanner plugin; else why the test cannot run.
inline std::string scanner_plugin_unavailable(const std::string& directory) {
  if (::access((directory + "/fltport-filter-scanner.so").c_str(), R_OK) == 0) return {};
  return "the scanner plugin is not built (" + directory + ")";
}

}  // namespace fltport::test

// In a test body or SetUp: skips the test, with the reason, where permission events cannot be had.
#define FLTPORT_SKIP_WITHOUT_FANOTIFY()                                                                  \
  do {                                                                                                  \
    if (const std::string fltport_why = ::fltport::test::fanotify_permission_events_unavailable();    \
        !fltport_why.empty())                                                                           \
      GTEST_SKIP() << fltport_why;                                                                      \
  } while (0)

#define FLTPORT_SKIP_WITHOUT_SCANNER_PLUGIN(directory)                                          \
  do {                                                                                          \
    if (const std::string fltport_why = ::fltport::test::scanner_plugin_unavailable(directory); \
        !fltport_why.empty())                                                                   \
      GTEST_SKIP() << fltport_why;                                                              \
  } while (0)
