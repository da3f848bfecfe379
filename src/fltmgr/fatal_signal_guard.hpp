// Closes this process's fanotify groups when it dies of a fatal signal, before the kernel dumps
// its core (fapolicyd #273: a daemon dumping core still held its group, so the core-dump helper,
// and every other process opening a marked file, waited for verdicts nobody would ever give).
//
// Groups register their fds; the handler, on SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE, SIGSYS,
// SIGTRAP, SIGQUIT, SIGXCPU or SIGXFSZ, flushes each group's marks (no new event waits on it) and
// closes it (the kernel allows every event still waiting once the last reference goes, which is
// when the other threads are stopped, before the core is written), then lets the signal do what it
// did before: the previous handler runs, or the default action kills the process with its core.
// Only system calls run in the handler. A signal that was ignored stays ignored and untouched.
#pragma once

namespace fltport::fanotify {

// Removes every mark of the group `fd`, of every scope (inode, mount, filesystem); 0, or the first
// errno. Only system calls: the signal handler uses it, and so do the groups' flush_marks().
int flush_group_marks(int fd) noexcept;

// Idempotent; called by the filter manager when it opens its groups.
void install_fatal_signal_guard() noexcept;
// A group's fd, to flush and close on a fatal signal; forget it before closing it normally.
void guard_group_fd(int fd) noexcept;
void forget_group_fd(int fd) noexcept;
// An eventfd that wakes a thread polling a group: a poll in progress holds the group open, so the
// handler wakes it (the kernel allows what the group held only once the last reference goes, and a
// previous handler, a sanitizer's or a crash reporter's, may take a while before the process dies).
void guard_wake_fd(int fd) noexcept;
void forget_wake_fd(int fd) noexcept;
// True once the handler closed the groups: a woken reader must not poll them again.
bool groups_closed_by_fatal_signal() noexcept;

}  // namespace fltport::fanotify
