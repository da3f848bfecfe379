// What the library logs (to stderr) during a test, for tests that check a log line.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <string>

namespace fltport::test {

// Collects what the library writes to stderr (its log) while it lives.
class StderrCapture {
 public:
  StderrCapture() {
    char pattern[] = "/tmp/fltport-test-log-XXXXXX";
    file_ = ::mkstemp(pattern);
    if (file_ < 0) return;
    ::unlink(pattern);
    saved_ = ::dup(STDERR_FILENO);
    ::dup2(file_, STDERR_FILENO);
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

  int file_ = -1;
  int saved_ = -1;
  std::string text_;
};

}  // namespace fltport::test
