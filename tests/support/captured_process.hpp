// A program run by a test, with its stdout and stderr captured on pipes; bounded waits, killed by
// its pid when it overstays, always reaped. Used by the fltmgrd and fltmc tests.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <vector>

namespace fltport::test {

// A child process with its stdout and stderr on pipes.
class Proc {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Proc(const std::vector<std::string>& argv) {
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) return;
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(err[1], STDERR_FILENO);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    out_fd_ = out[0];
    err_fd_ = err[0];
    ::fcntl(out_fd_, F_SETFL, O_NONBLOCK);
    ::fcntl(err_fd_, F_SETFL, O_NONBLOCK);
  }
  ~Proc() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      int status;
      ::waitpid(pid_, &status, 0);
    }
    if (out_fd_ >= 0) ::close(out_fd_);
    if (err_fd_ >= 0) ::close(err_fd_);
  }
  Proc(const Proc&) = delete;
  Proc& operator=(const Proc&) = delete;

  pid_t pid() const { return pid_; }

  // Reads stdout until it holds `line` (a whole line), or the timeout.
  bool wait_for_line(const std::string& line, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    const auto deadline = Clock::now() + timeout;
    while (true) {
      if (out.find(line + "\n") != std::string::npos) return true;
      if (!pump(deadline)) return out.find(line + "\n") != std::string::npos;
    }
  }

  // Reads both pipes to the end and reaps the process: its exit code, 128+signal, or -1 when it
  // had to be killed after the timeout.
  int finish(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = Clock::now() + timeout;
    while (out_fd_ >= 0 || err_fd_ >= 0) {
      if (!pump(deadline)) break;
    }
    int status = 0;
    while (true) {
      const pid_t rc = ::waitpid(pid_, &status, WNOHANG);
      if (rc == pid_) break;
      if (Clock::now() >= deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        reaped_ = true;
        return -1;
      }
      ::usleep(5000);
    }
    reaped_ = true;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
  }

  void signal(int number) {
    if (pid_ > 0 && !reaped_) ::kill(pid_, number);
  }

  std::string out, err;

 private:
  // One poll round; false at the deadline or when both pipes are closed.
  bool pump(Clock::time_point deadline) {
    pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0 || (out_fd_ < 0 && err_fd_ < 0)) return false;
    if (::poll(fds, 2, static_cast<int>(left)) <= 0) return Clock::now() < deadline;
    for (int i = 0; i < 2; ++i) {
      int& fd = i == 0 ? out_fd_ : err_fd_;
      std::string& text = i == 0 ? out : err;
      if (fd < 0 || fds[i].revents == 0) continue;
      char buffer[4096];
      const ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n > 0) {
        text.append(buffer, static_cast<size_t>(n));
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        ::close(fd);
        fd = -1;
      }
    }
    return true;
  }

  pid_t pid_ = -1;
  bool reaped_ = false;
  int out_fd_ = -1;
  int err_fd_ = -1;
};

}  // namespace fltport::test
