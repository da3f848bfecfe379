#include "fltmgr/fatal_signal_guard.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/fanotify.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <mutex>

namespace fltport::fanotify {
namespace {

// A fixed table: the handler may not allocate or lock. A host has two groups per filter manager.
// Slots hold fd + 1, so that zero (a static's initial value) is an empty slot.
std::array<std::atomic<int>, 32> guarded_fds{};
std::array<std::atomic<int>, 16> wake_fds{};  // the same, for eventfds
std::atomic<bool> closed_by_signal{false};

void add_fd(std::atomic<int>* slots, size_t count, int fd) noexcept {
  if (fd < 0) return;
  for (size_t i = 0; i < count; ++i) {
    int empty = 0;
    if (slots[i].compare_exchange_strong(empty, fd + 1)) return;
  }
  // Full: not guarded; still closed when the process exits.
}

void remove_fd(std::atomic<int>* slots, size_t count, int fd) noexcept {
  if (fd < 0) return;
  for (size_t i = 0; i < count; ++i) {
    int expected = fd + 1;
    if (slots[i].compare_exchange_strong(expected, 0)) return;
  }
}

constexpr std::array kFatalSignals = {SIGSEGV, SIGBUS,  SIGABRT, SIGILL,  SIGFPE,
                                      SIGSYS,  SIGTRAP, SIGQUIT, SIGXCPU, SIGXFSZ};
std::array<struct sigaction, NSIG> previous_actions{};

// Raw system calls: the process is dying, so closing a group under a reader blocked on it is the
// point, and sanitizer runtimes (which intercept close and write) would report it as a race and
// end the process before it releases anything.
void close_guarded_groups() noexcept {
  for (auto& slot : guarded_fds) {
    const int fd = slot.exchange(0) - 1;
    if (fd < 0) continue;
    flush_group_marks(fd);
    ::syscall(SYS_close, fd);
  }
  closed_by_signal.store(true);
  const uint64_t one = 1;
  for (auto& slot : wake_fds) {
    const int fd = slot.load() - 1;
    if (fd >= 0) {
      ::syscall(SYS_write, fd, &one, sizeof one);
    }
  }
}

void on_fatal_signal(int signal_number, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  close_guarded_groups();
  const struct sigaction& previous = previous_actions[static_cast<size_t>(signal_number)];
  if ((previous.sa_flags & SA_SIGINFO) != 0 && previous.sa_sigaction != nullptr) {
    errno = saved_errno;
    previous.sa_sigaction(signal_number, info, context);
    return;
  }
  if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
    errno = saved_errno;
    previous.sa_handler(signal_number);
    return;
  }
  // The default action, now: the signal is blocked while this handler runs, so it is delivered
  // (and kills, with a core where the signal makes one) as soon as the handler returns, whether
  // it came from a fault, abort() or kill().
  ::sigaction(signal_number, &previous, nullptr);
  ::raise(signal_number);
  errno = saved_errno;
}

}  // namespace

int flush_group_marks(int fd) noexcept {
  int first_error = 0;
  for (const unsigned type : {FAN_MARK_INODE, FAN_MARK_MOUNT, FAN_MARK_FILESYSTEM}) {
    if (::fanotify_mark(fd, FAN_MARK_FLUSH | type, 0, AT_FDCWD, nullptr) != 0 && first_error == 0) {
      first_error = errno;
    }
  }
  return first_error;
}

void install_fatal_signal_guard() noexcept {
  static std::once_flag once;
  std::call_once(once, [] {
    for (const int signal_number : kFatalSignals) {
      struct sigaction current {};
      if (::sigaction(signal_number, nullptr, &current) != 0) continue;
      if ((current.sa_flags & SA_SIGINFO) == 0 && current.sa_handler == SIG_IGN) continue;
      previous_actions[static_cast<size_t>(signal_number)] = current;
      struct sigaction guard {};
      guard.sa_sigaction = on_fatal_signal;
      guard.sa_flags = SA_SIGINFO | SA_ONSTACK;
      sigemptyset(&guard.sa_mask);
      ::sigaction(signal_number, &guard, nullptr);
    }
  });
}

void guard_group_fd(int fd) noexcept {
  add_fd(guarded_fds.data(), guarded_fds.size(), fd);
}
void forget_group_fd(int fd) noexcept {
  remove_fd(guarded_fds.data(), guarded_fds.size(), fd);
}
void guard_wake_fd(int fd) noexcept {
  add_fd(wake_fds.data(), wake_fds.size(), fd);
}
void forget_wake_fd(int fd) noexcept {
  remove_fd(wake_fds.data(), wake_fds.size(), fd);
}
bool groups_closed_by_fatal_signal() noexcept {
  return closed_by_signal.load(std::memory_order_relaxed);
}

}  // namespace fltport::fanotify
