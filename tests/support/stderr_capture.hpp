// What the library logs (to stderr) during a test, for tests that check a log line.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#include <sanitizer/common_interface_defs.h>
#define FLTPORT_TEST_SANITIZER_REPORTS 1
#endif

namespace fltport::test {

// Collects what the library writes to stderr (its log) while it lives.
class StderrCapture {
 public:
  StderrCapture() {
    char pattern[] = "/tmp/fltport-test-log-XXXXXX";
    file_ = ::mkostemp(pattern, O_CLOEXEC);
    if (file_ < 0) return;
    ::unlink(pattern);
    saved_ = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 0);
    ::dup2(file_, STDERR_FILENO);
    // A sanitizer's report aborts the process: it must reach the real stderr, not this file.
    report_to(saved_);
  }
  ~StderrCapture() { restore(); }
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;

  // Stops capturing and returns the text (also echoed to the real stderr).
  std::string text() {
    restore();
    return text_;
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    ::dup2(saved_, STDERR_FILENO);
    report_to(STDERR_FILENO);
    ::close(saved_);
    saved_ = -1;
    char buffer[4096];
    ssize_t n = 0;
    off_t offset = 0;
    while ((n = ::pread(file_, buffer, sizeof buffer, offset)) > 0) {
      text_.append(buffer, static_cast<size_t>(n));
      offset += n;
    }
    ::close(file_);
    [[maybe_unused]] const ssize_t echoed = ::write(STDERR_FILENO, text_.data(), text_.size());
  }

  static void report_to([[maybe_unused]] int fd) {
#ifdef FLTPORT_TEST_SANITIZER_REPORTS
    __sanitizer_set_report_fd(reinterpret_cast<void*>(static_cast<intptr_t>(fd)));
#endif
  }

  int file_ = -1;
  int saved_ = -1;
  std::string text_;
};

}  // namespace fltport::test
