// Real processes for the integration tests: a forked child that runs a function and _exit()s with
// its result, waits that always have a timeout, and a pipe-based Signal that carries "port created",
// "connected", "go" (and small values such as an HRESULT) between processes without sleeps.
//
// Fork before the library starts threads in the parent: each test forks its children first, and
// only then creates ports or connections. A child starts its own ports and connections.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace fltport::test {

using namespace std::chrono_literals;

// Generous bounds: how long a test waits for the other process before it declares a failure.
inline constexpr std::chrono::milliseconds kWaitTimeout = 5s;
inline constexpr std::chrono::milliseconds kExitTimeout = 10s;

// One direction of a pipe carrying 64-bit values. Created before fork, it is shared by parent and
// child: any process may notify(), any process may wait(). Every value is read exactly once.
class Signal {
 public:
  Signal();
  ~Signal();
  Signal(const Signal&) = delete;
  Signal& operator=(const Signal&) = delete;

  void notify(uint64_t value = 0);
  // True when a notification arrived within the timeout (it is consumed).
  bool wait(std::chrono::milliseconds timeout = kWaitTimeout);
  // The value of the next notification, or nullopt when none arrived within the timeout.
  std::optional<uint64_t> wait_value(std::chrono::milliseconds timeout = kWaitTimeout);

 private:
  int read_fd_ = -1;
  int write_fd_ = -1;
};

// How a child ended.
struct ExitStatus {
  enum class Kind { exited, signaled, timed_out, not_started };
  Kind kind = Kind::not_started;
  int value = 0;  // exit code, or the signal number

  bool exited_with(int code) const noexcept { return kind == Kind::exited && value == code; }
  std::string describe() const;
};

// A forked child running `body`; it ends with _exit(body()) (an exception or a crash is a failure).
// Destroying a child that is still running kills it (SIGKILL) and reaps it.
class ChildProcess {
 public:
  explicit ChildProcess(std::function<int()> body);
  ~ChildProcess();
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&&) = delete;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const noexcept { return pid_; }
  bool running() const noexcept { return pid_ > 0 && !reaped_; }
  // Waits for the child to end. On timeout the child is killed with SIGKILL and reaped, and the
  // result says timed_out.
  ExitStatus wait(std::chrono::milliseconds timeout = kExitTimeout);
  // SIGKILL by pid, then reap.
  ExitStatus kill();

 private:
  ExitStatus reap_blocking();
  pid_t pid_ = -1;
  bool reaped_ = false;
  ExitStatus status_;
};

// gtest predicate: the child exits with code 0 within the timeout.
::testing::AssertionResult ExitsCleanly(ChildProcess& child, std::chrono::milliseconds timeout = kExitTimeout);

// Drops the calling (child) process to an unprivileged uid/gid with these supplementary groups.
// Returns false when it could not.
bool drop_privileges(uid_t uid, gid_t gid, const std::vector<gid_t>& groups = {});

void child_failure(const char* file, int line, const std::string& what);

}  // namespace fltport::test

// Checks inside a child body: print what failed to stderr and return a failure exit code from the
// enclosing function (the child body, or a function returning int).
#define CHILD_CHECK(cond)                                                   \
  do {                                                                      \
    if (!(cond)) {                                                          \
      ::fltport::test::child_failure(__FILE__, __LINE__, "CHECK(" #cond ")"); \
      return 1;                                                             \
    }                                                                       \
  } while (0)

#define CHILD_CHECK_EQ(actual, expected)                                                           \
  do {                                                                                             \
    const long long child_check_a_ = static_cast<long long>(actual);                              \
    const long long child_check_e_ = static_cast<long long>(expected);                            \
    if (child_check_a_ != child_check_e_) {                                                        \
      char child_check_buf_[256];                                                                  \
      std::snprintf(child_check_buf_, sizeof child_check_buf_, "%s == %s: actual %lld (0x%llx), expected %lld (0x%llx)", \
                    #actual, #expected, child_check_a_, static_cast<unsigned long long>(child_check_a_) & 0xFFFFFFFFull, \
                    child_check_e_, static_cast<unsigned long long>(child_check_e_) & 0xFFFFFFFFull); \
      ::fltport::test::child_failure(__FILE__, __LINE__, child_check_buf_);                       \
      return 1;                                                                                    \
    }                                                                                              \
  } while (0)
