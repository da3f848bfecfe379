#include "support/process.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <thread>

namespace fltport::test {
namespace {

using Clock = std::chrono::steady_clock;

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

}  // namespace

// ---- Signal ----

Signal::Signal() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  read_fd_ = fds[0];
  write_fd_ = fds[1];
}

Signal::~Signal() {
  ::close(read_fd_);
  ::close(write_fd_);
}

void Signal::notify(uint64_t value) {
  // 8 bytes < PIPE_BUF: the write is atomic.
  for (;;) {
    const ssize_t n = ::write(write_fd_, &value, sizeof value);
    if (n == static_cast<ssize_t>(sizeof value)) return;
    if (n < 0 && errno == EINTR) continue;
    std::fprintf(stderr, "Signal::notify: write failed: %s\n", std::strerror(errno));
    return;
  }
}

bool Signal::wait(std::chrono::milliseconds timeout) { return wait_value(timeout).has_value(); }

std::optional<uint64_t> Signal::wait_value(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  unsigned char bytes[sizeof(uint64_t)];
  size_t got = 0;
  while (got < sizeof bytes) {
    pollfd pfd{read_fd_, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, got == 0 ? remaining_ms(deadline) : 1000);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return std::nullopt;
    const ssize_t n = ::read(read_fd_, bytes + got, sizeof bytes - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    got += static_cast<size_t>(n);
  }
  uint64_t value;
  std::memcpy(&value, bytes, sizeof value);
  return value;
}

// ---- ExitStatus ----

std::string ExitStatus::describe() const {
  switch (kind) {
    case Kind::exited:
      return "exited with code " + std::to_string(value);
    case Kind::signaled:
      return std::string("killed by signal ") + std::to_string(value) + " (" + ::strsignal(value) + ")";
    case Kind::timed_out:
      return "did not end in time (killed)";
    case Kind::not_started:
      return "was not started";
  }
  return "?";
}

// ---- ChildProcess ----

ChildProcess::ChildProcess(std::function<int()> body) {
  // Nothing buffered in the parent may be written twice.
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::fprintf(stderr, "fork: %s\n", std::strerror(errno));
    return;
  }
  if (pid == 0) {
    // The child never returns into the test framework.
    int code = 99;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child %d: exception: %s\n", static_cast<int>(::getpid()), e.what());
      code = 98;
    } catch (...) {
      std::fprintf(stderr, "child %d: unknown exception\n", static_cast<int>(::getpid()));
      code = 98;
    }
    std::fflush(nullptr);
    ::_exit(code);
  }
  pid_ = pid;
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(other.pid_), reaped_(other.reaped_), status_(other.status_) {
  other.pid_ = -1;
  other.reaped_ = true;
}

ChildProcess::~ChildProcess() {
  if (running()) kill();
}

ExitStatus ChildProcess::reap_blocking() {
  int raw = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &raw, 0);
  } while (r < 0 && errno == EINTR);
  reaped_ = true;
  if (r == pid_) {
    if (WIFEXITED(raw)) {
      status_ = {ExitStatus::Kind::exited, WEXITSTATUS(raw)};
    } else if (WIFSIGNALED(raw)) {
      status_ = {ExitStatus::Kind::signaled, WTERMSIG(raw)};
    }
  }
  return status_;
}

ExitStatus ChildProcess::wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return {};
  if (reaped_) return status_;
  const auto deadline = Clock::now() + timeout;
  // A pidfd becomes readable when the child ends; fall back to polling waitpid without it.
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
  for (;;) {
    int raw = 0;
    const pid_t r = ::waitpid(pid_, &raw, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      if (WIFEXITED(raw)) {
        status_ = {ExitStatus::Kind::exited, WEXITSTATUS(raw)};
      } else {
        status_ = {ExitStatus::Kind::signaled, WTERMSIG(raw)};
      }
      break;
    }
    if (r < 0 && errno != EINTR) {
      reaped_ = true;
      break;
    }
    if (Clock::now() >= deadline) {
      ::kill(pid_, SIGKILL);
      reap_blocking();
      status_ = {ExitStatus::Kind::timed_out, 0};
      break;
    }
    if (pidfd >= 0) {
      pollfd pfd{pidfd, POLLIN, 0};
      ::poll(&pfd, 1, std::min(remaining_ms(deadline), 1000));
    } else {
      std::this_thread::sleep_for(2ms);  // polling waitpid, not synchronisation
    }
  }
  if (pidfd >= 0) ::close(pidfd);
  return status_;
}

ExitStatus ChildProcess::kill() {
  if (pid_ <= 0) return {};
  if (reaped_) return status_;
  ::kill(pid_, SIGKILL);
  return reap_blocking();
}

::testing::AssertionResult ExitsCleanly(ChildProcess& child, std::chrono::milliseconds timeout) {
  const ExitStatus status = child.wait(timeout);
  if (status.exited_with(0)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "child " << child.pid() << " " << status.describe()
                                       << " (see its stderr above)";
}

bool drop_privileges(uid_t uid, gid_t gid, const std::vector<gid_t>& groups) {
  if (::setgroups(groups.size(), groups.empty() ? nullptr : groups.data()) != 0) return false;
  if (::setgid(gid) != 0) return false;
  if (::setuid(uid) != 0) return false;
  return ::geteuid() == uid && ::getegid() == gid;
}

void child_failure(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "[child %d] %s:%d: failed: %s\n", static_cast<int>(::getpid()), file, line, what.c_str());
  std::fflush(stderr);
}

}  // namespace fltport::test
