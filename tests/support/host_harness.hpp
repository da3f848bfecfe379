// What the tests that run fltmgrd, filter plugins and services as real processes share: programs
// started by fork/exec and killed by pid, opens made by forked children (so that the verdict
// reaches an ordinary process), and the scanner fixture (fltmgrd + scanner plugin + service on a
// mkdtemp directory, the only place marked, with an alarm as watchdog).
//
// The paths of fltmgrd, the scanner plugin directory and the scanner service come as compile
// definitions that examples/scanner/CMakeLists.txt adds to the integration test executable.
#pragma once

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/fanotify.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/prerequisites.hpp"
#include "support/runtime_dir.hpp"
#include "support/sanitized.hpp"

#ifndef FLTPORT_TEST_FLTMGRD
#define FLTPORT_TEST_FLTMGRD ""
#endif
#ifndef FLTPORT_TEST_SCANNER_PLUGIN_DIR
#define FLTPORT_TEST_SCANNER_PLUGIN_DIR ""
#endif
#ifndef FLTPORT_TEST_SCANNER_SERVICE
#define FLTPORT_TEST_SCANNER_SERVICE ""
#endif

namespace fltport::test {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kStartTimeout = 10s;  // fltmgrd ready, service connected
constexpr milliseconds kStopTimeout = 5s;    // fltmgrd's exit after SIGTERM
constexpr milliseconds kOpenTimeout = 15s;   // any one open, whatever happens
constexpr int kDeadlineMs = 500;             // --deadline-ms scanner=500 in the stall tests
// An open must complete within the deadline plus this (the bound): the event's way through
// the kernel and fltmgrd, and the fork of the opening child. Measured here: deadline + 2-3 ms; an
// ASan build beside another test, deadline + 14 ms: sanitizer builds get 300 ms.
constexpr milliseconds kDeadlineMargin = kSanitized ? 300ms : 100ms;

inline long long ms_since(Clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - start).count();
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

inline size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// Writes as an ordinary process (this one): the open is scanned, the close after write too.
inline void write_file(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::trunc | std::ios::binary) << content;
}

// What each thread of a process waits for (for a failure message); for a thread in openat, the path.
inline std::string describe_tasks(pid_t pid) {
  std::string text;
  const std::string proc = "/proc/" + std::to_string(pid);
  std::error_code error;
  for (const auto& task : std::filesystem::directory_iterator(proc + "/task", error)) {
    const std::string syscall = read_file(task.path() / "syscall");
    text += "  task " + task.path().filename().string() + ": " + read_file(task.path() / "wchan") + " | " +
            syscall;
    unsigned long number = 0, dirfd = 0, address = 0;
    if (std::sscanf(syscall.c_str(), "%lu %lx %lx", &number, &dirfd, &address) == 3 && number == 257) {
      char path[256] = {};
      const int mem = ::open((proc + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
      if (mem >= 0 && ::pread(mem, path, sizeof path - 1, static_cast<off_t>(address)) > 0) {
        text += "    openat path: " + std::string(path) + "\n";
      }
      if (mem >= 0) ::close(mem);
    }
    text += read_file(task.path() / "stack");
  }
  return text;
}

// Calls visit(pid, fd, fdinfo text) for every fanotify group open in any process on the machine.
template <class Visit>
void for_each_fanotify_group(Visit visit) {
  std::error_code error;
  for (const auto& process : std::filesystem::directory_iterator("/proc", error)) {
    const std::string pid = process.path().filename().string();
    if (pid.empty() || pid[0] < '0' || pid[0] > '9') continue;
    std::error_code fd_error;
    for (const auto& fd : std::filesystem::directory_iterator(process.path() / "fd", fd_error)) {
      char link[64] = {};
      if (::readlink(fd.path().c_str(), link, sizeof link - 1) <= 0) continue;
      if (std::string(link).find("fanotify") == std::string::npos) continue;
      visit(pid, fd.path().filename().string(), read_file(process.path() / "fdinfo" / fd.path().filename()));
    }
  }
}

// Every fanotify inode mark on this path's inode, in any process on the machine (their fdinfo
// lines "fanotify ino:<hex> sdev:<hex> ..."): "pid <p> fd <f>" for each. When a host dies, the
// kernel must have dropped its marks with its groups.
inline std::vector<std::string> fanotify_marks_on(const std::string& path) {
  std::vector<std::string> holders;
  struct stat target {};
  if (::stat(path.c_str(), &target) != 0) return holders;
  // fdinfo prints the kernel's dev_t: major << 20 | minor.
  const unsigned long kernel_dev =
      (static_cast<unsigned long>(major(target.st_dev)) << 20) | minor(target.st_dev);
  for_each_fanotify_group([&](const std::string& pid, const std::string& fd, const std::string& info) {
    for (size_t at = info.find("fanotify ino:"); at != std::string::npos;
         at = info.find("fanotify ino:", at + 1)) {
      unsigned long inode = 0, dev = 0;
      if (std::sscanf(info.c_str() + at, "fanotify ino:%lx sdev:%lx", &inode, &dev) == 2 &&
          inode == target.st_ino && dev == kernel_dev) {
        holders.push_back("pid " + pid + " fd " + fd);
      }
    }
  });
  return holders;
}

// Every fanotify group on the machine: its process and its marks (for a failure message).
inline std::string describe_fanotify_groups() {
  std::string text;
  for_each_fanotify_group([&](const std::string& pid, const std::string& fd, const std::string& info) {
    std::string cmdline = read_file("/proc/" + pid + "/cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    text += "  pid " + pid + " fd " + fd + " (" + cmdline.substr(0, 160) +
            "): " + std::to_string(count(info, "fanotify ino:")) + " inode marks, " +
            std::to_string(count(info, "fanotify mnt_id:")) + " mount marks, " +
            std::to_string(count(info, "fanotify sdev:")) + " filesystem marks\n";
  });
  return text;
}

// ---- child processes ----

// A program run by fork/exec: stdout to a pipe the test reads (optional), stdout and stderr to a
// log file otherwise. Destroying it kills it with SIGKILL and reaps it.
class Program {
 public:
  Program(const std::vector<std::string>& argv, const std::string& log_path, bool pipe_stdout) {
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int out[2] = {-1, -1};
    if (log < 0 || (pipe_stdout && ::pipe2(out, O_CLOEXEC) != 0)) {
      if (log >= 0) ::close(log);
      return;
    }
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid == 0) {
      // Dies with the test process (the watchdog's SIGALRM included): the kernel then drops
      // fltmgrd's fanotify groups and nothing stays blocked.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(pipe_stdout ? out[1] : log, STDOUT_FILENO);
      ::dup2(log, STDERR_FILENO);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(log);
    if (pipe_stdout) {
      ::close(out[1]);
      stdout_fd_ = out[0];
    }
    pid_ = pid;
  }
  ~Program() {
    kill();
    if (stdout_fd_ >= 0) ::close(stdout_fd_);
  }
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;

  pid_t pid() const { return pid_; }

  // SIGSTOP, and wait (bounded) until the kernel shows every thread stopped: the signal is
  // asynchronous, and a test that relies on "nobody answers" must not race a last answer.
  bool stop() {
    signal(SIGSTOP);
    const auto until = Clock::now() + std::chrono::seconds(5);
    while (Clock::now() < until) {
      if (all_threads_stopped()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return false;
  }

  bool all_threads_stopped() const {
    const std::string tasks = "/proc/" + std::to_string(pid_) + "/task";
    std::error_code error;
    for (const auto& task : std::filesystem::directory_iterator(tasks, error)) {
      std::ifstream stat(task.path() / "stat");
      std::string line;
      std::getline(stat, line);
      const auto close = line.rfind(')');
      if (close == std::string::npos || close + 2 >= line.size() || line[close + 2] != 'T') return false;
    }
    return !error;
  }
  // The wait status once it ended (reaped here), within `timeout`; nullopt while it runs.
  std::optional<int> wait_exit(milliseconds timeout) {
    const auto until = Clock::now() + timeout;
    while (alive() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (alive()) return std::nullopt;
    return reaped_ ? std::optional<int>(status_) : std::nullopt;
  }
  bool alive() {
    if (pid_ <= 0 || reaped_) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      reaped_ = true;
      status_ = status;
      return false;
    }
    return true;
  }
  void signal(int number) {
    if (alive()) ::kill(pid_, number);
  }
  // Reads stdout until a line equal to `line`, within `timeout`.
  bool wait_for_stdout_line(const std::string& line, milliseconds timeout) {
    const auto until = Clock::now() + timeout;
    std::string buffer;
    while (stdout_fd_ >= 0 && Clock::now() < until) {
      pollfd p{stdout_fd_, POLLIN, 0};
      const int left =
          static_cast<int>(std::chrono::duration_cast<milliseconds>(until - Clock::now()).count());
      if (::poll(&p, 1, std::max(left, 1)) <= 0) continue;
      char chunk[256];
      const ssize_t n = ::read(stdout_fd_, chunk, sizeof chunk);
      if (n <= 0) return false;  // closed: the program ended
      buffer.append(chunk, static_cast<size_t>(n));
      for (size_t end; (end = buffer.find('\n')) != std::string::npos; buffer.erase(0, end + 1)) {
        if (buffer.compare(0, end, line) == 0) return true;
      }
    }
    return false;
  }
  // SIGTERM, then up to `timeout` to exit, then SIGKILL. The wait status, or nullopt if it had
  // to be killed.
  std::optional<int> terminate(milliseconds timeout) {
    signal(SIGTERM);
    const auto until = Clock::now() + timeout;
    while (alive() && Clock::now() < until) std::this_thread::sleep_for(10ms);
    if (alive()) {
      kill();
      return std::nullopt;
    }
    return reaped_ ? std::optional<int>(status_) : std::nullopt;
  }
  void kill() {
    if (pid_ <= 0 || reaped_) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
    status_ = status;
  }

 private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

// An open(2) made by a forked child, so that it is an ordinary process the filter sees. start()
// returns at once; result() waits (bounded) for the outcome.
class OpenProbe {
 public:
  struct Outcome {
    int error = -1;  // 0: opened; else the errno; -1: no answer at all
    long long elapsed_ms = 0;
  };
  explicit OpenProbe(const std::string& path) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return;
    start_ = Clock::now();
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::alarm(20);  // its own watchdog
      const int fd = ::open(path.c_str(), O_RDONLY);
      // The open's own latency, on the monotonic clock the parent started from.
      const long long result[2] = {fd >= 0 ? 0 : errno, ms_since(start_)};
      if (fd >= 0) ::close(fd);
      [[maybe_unused]] ssize_t written = ::write(fds[1], result, sizeof result);
      ::_exit(0);
    }
    ::close(fds[1]);
    read_fd_ = fds[0];
    pid_ = pid;
  }
  ~OpenProbe() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (read_fd_ >= 0) ::close(read_fd_);
  }
  OpenProbe(const OpenProbe&) = delete;
  OpenProbe& operator=(const OpenProbe&) = delete;
  // When the probe began (before its fork): with an Outcome's elapsed_ms, when its open returned.
  Clock::time_point started_at() const { return start_; }

  Outcome result(milliseconds timeout = kOpenTimeout) {
    Outcome outcome;
    outcome.elapsed_ms = -1;
    pollfd p{read_fd_, POLLIN, 0};
    if (read_fd_ >= 0 && ::poll(&p, 1, static_cast<int>(timeout.count())) == 1) {
      long long value[2] = {-1, -1};
      if (::read(read_fd_, value, sizeof value) == sizeof value) {
        outcome.error = static_cast<int>(value[0]);
        outcome.elapsed_ms = value[1];
      }
    }
    if (outcome.elapsed_ms < 0) outcome.elapsed_ms = ms_since(start_);
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);  // harmless when it has exited; ends it when it has not
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
    return outcome;
  }

 private:
  pid_t pid_ = -1;
  int read_fd_ = -1;
  Clock::time_point start_;
};

// A process that keeps opening (and closing) `paths` in turn, until stop() or `duration`, and
// reports how many opens it made, the slowest, and how many failed. Its own alarm bounds it.
// With `threads` > 1, that many threads open at once, each its own share of `paths`.
class Loader {
 public:
  struct Report {
    uint64_t opens = 0;
    uint64_t failures = 0;
    uint64_t worst_us = 0;
    bool received = false;
  };
  Loader(const std::vector<std::string>& paths, milliseconds duration, size_t threads = 1) {
    int results[2], control[2];
    if (::pipe2(results, O_CLOEXEC) != 0) return;
    if (::pipe2(control, O_CLOEXEC) != 0) {
      ::close(results[0]);
      ::close(results[1]);
      return;
    }
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::alarm(static_cast<unsigned>(duration.count() / 1000 + 30));
      ::close(control[1]);
      Report report;
      std::mutex report_mutex;
      std::atomic<bool> stop{false};
      const auto until = Clock::now() + duration;
      auto open_loop = [&](size_t first) {
        Report mine;
        for (size_t i = first; Clock::now() < until && !stop.load(); i += threads) {
          const auto start = Clock::now();
          const int fd = ::open(paths[i % paths.size()].c_str(), O_RDONLY);
          const auto us = static_cast<uint64_t>(
              std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count());
          if (fd >= 0) {
            ::close(fd);
          } else {
            ++mine.failures;
          }
          ++mine.opens;
          mine.worst_us = std::max(mine.worst_us, us);
        }
        std::lock_guard lock(report_mutex);
        report.opens += mine.opens;
        report.failures += mine.failures;
        report.worst_us = std::max(report.worst_us, mine.worst_us);
      };
      std::vector<std::thread> workers;
      for (size_t t = 1; t < threads; ++t) workers.emplace_back(open_loop, t);
      std::thread watcher([&] {  // the test closes its end: stop
        pollfd p{control[0], POLLIN, 0};
        while (!stop.load() && Clock::now() < until) {
          if (::poll(&p, 1, 10) != 0) stop.store(true);
        }
      });
      open_loop(0);
      stop.store(true);
      watcher.join();
      for (auto& worker : workers) worker.join();
      report.received = true;
      [[maybe_unused]] ssize_t written = ::write(results[1], &report, sizeof report);
      ::_exit(0);
    }
    ::close(results[1]);
    ::close(control[0]);
    results_fd_ = results[0];
    control_fd_ = control[1];
    pid_ = pid;
  }
  ~Loader() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (results_fd_ >= 0) ::close(results_fd_);
    if (control_fd_ >= 0) ::close(control_fd_);
  }
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Stops it (if still running) and collects its report, waiting at most `timeout`.
  Report stop(milliseconds timeout = kOpenTimeout) {
    Report report;
    if (control_fd_ >= 0) {
      ::close(control_fd_);
      control_fd_ = -1;
    }
    pollfd p{results_fd_, POLLIN, 0};
    if (results_fd_ >= 0 && ::poll(&p, 1, static_cast<int>(timeout.count())) == 1 &&
        ::read(results_fd_, &report, sizeof report) != sizeof report) {
      report = Report{};
    }
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
    return report;
  }

 private:
  pid_t pid_ = -1;
  int results_fd_ = -1;
  int control_fd_ = -1;
};

inline OpenProbe::Outcome open_in_child(const std::string& path) {
  return OpenProbe(path).result();
}

inline bool is_denial(int error) {
  return error == EPERM || error == EACCES;
}

// ---- the fixture ----

class ScannerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::alarm(90);  // watchdog: a hung test dies, its children with it (PR_SET_PDEATHSIG)
    for (const std::string& file :
         {std::string(FLTPORT_TEST_FLTMGRD),
          std::string(FLTPORT_TEST_SCANNER_PLUGIN_DIR) + "/fltport-filter-scanner.so",
          std::string(FLTPORT_TEST_SCANNER_SERVICE)}) {
      if (file.empty() || file[0] != '/' || ::access(file.c_str(), R_OK) != 0) {
        GTEST_SKIP() << "not built: " << (file.empty() ? std::string("(no path configured)") : file)
                     << " (the scanner test runs fltmgrd, the scanner plugin and the scanner service)";
      }
    }
    FLTPORT_SKIP_WITHOUT_FANOTIFY();
    runtime_ = std::make_unique<ScopedRuntimeDir>();
    char pattern[] = "/tmp/fltport-scanner-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr) << std::strerror(errno);
    watched_ = pattern;
    fltmgrd_log_ = runtime_->path() + "/fltmgrd.log";
    service_log_ = runtime_->path() + "/service.log";
  }

  void TearDown() override {
    service_.reset();  // SIGKILL, reaped
    if (fltmgrd_) {
      fltmgrd_->terminate(kStopTimeout);  // SIGKILL after the timeout; reaped either way
      fltmgrd_.reset();
    }
    if (HasFailure() && runtime_) {
      std::fprintf(stderr, "---- fltmgrd log ----\n%s---- service log ----\n%s----\n",
                   read_file(fltmgrd_log_).c_str(), read_file(service_log_).c_str());
    }
    if (!watched_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(watched_, ignored);
    }
    runtime_.reset();
    ::alarm(0);
  }

  std::string path(const std::string& name) const { return watched_ + "/" + name; }

  // fltmgrd with the scanner on the test's directory; returns when it printed "fltmgrd: ready".
  ::testing::AssertionResult start_fltmgrd(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {FLTPORT_TEST_FLTMGRD,
                                     "--foreground",
                                     "--plugin-dir",
                                     FLTPORT_TEST_SCANNER_PLUGIN_DIR,
                                     "--load",
                                     "scanner",
                                     "--attach",
                                     "scanner=" + watched_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    fltmgrd_ = std::make_unique<Program>(argv, fltmgrd_log_, true);
    if (fltmgrd_->pid() <= 0) return ::testing::AssertionFailure() << "could not start fltmgrd";
    if (!fltmgrd_->wait_for_stdout_line("fltmgrd: ready", kStartTimeout)) {
      return ::testing::AssertionFailure()
             << "fltmgrd did not print \"fltmgrd: ready\" within " << kStartTimeout.count() << " ms";
    }
    return ::testing::AssertionSuccess();
  }

  // The scanner service; returns when it says it is connected to \ScannerPort.
  // `argv`: another service program (the classic one) or other options.
  ::testing::AssertionResult start_service(std::vector<std::string> argv = {}) {
    if (argv.empty()) argv = {FLTPORT_TEST_SCANNER_SERVICE, "-t", "2"};
    const size_t before = count(read_file(service_log_), "connected to \\ScannerPort");
    service_ = std::make_unique<Program>(argv, service_log_, false);
    if (service_->pid() <= 0) return ::testing::AssertionFailure() << "could not start the service";
    const auto until = Clock::now() + kStartTimeout;
    while (Clock::now() < until) {
      if (count(read_file(service_log_), "connected to \\ScannerPort") > before)
        return ::testing::AssertionSuccess();
      if (!service_->alive()) return ::testing::AssertionFailure() << "the service ended before connecting";
      std::this_thread::sleep_for(10ms);
    }
    return ::testing::AssertionFailure()
           << "the service did not connect within " << kStartTimeout.count() << " ms";
  }

  // The scanner's verdicts as any service gives them: clean opens, foul is denied, and only the
  // first SCANNER_READ_BUFFER_SIZE bytes count (the classic rule). Needs scanner.h.
  template <size_t kReadBufferSize>
  void expect_the_classic_verdicts() {
    write_file(path("clean.txt"), "nothing wrong in here\n");
    write_file(path("foul.txt"), "this one is foul\n");
    EXPECT_EQ(open_in_child(path("clean.txt")).error, 0);
    const int denied = open_in_child(path("foul.txt")).error;
    EXPECT_TRUE(is_denial(denied)) << "open of foul.txt: " << (denied > 0 ? std::strerror(denied) : "opened");
    EXPECT_TRUE(wait_for_service_lines("FOUL", 1)) << "the service printed no FOUL verdict";
    write_file(path("late.txt"), std::string(kReadBufferSize, 'a') + "foul");
    EXPECT_EQ(open_in_child(path("late.txt")).error, 0);
    write_file(path("early.txt"), std::string(kReadBufferSize - 4, 'a') + "foul");
    EXPECT_TRUE(is_denial(open_in_child(path("early.txt")).error));
  }

  // Waits until the service log holds at least `n` occurrences of `needle`.
  bool wait_for_service_lines(const std::string& needle, size_t n, milliseconds timeout = 5s) {
    const auto until = Clock::now() + timeout;
    while (Clock::now() < until) {
      if (count(read_file(service_log_), needle) >= n) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  std::unique_ptr<ScopedRuntimeDir> runtime_;
  std::string watched_, fltmgrd_log_, service_log_;
  std::unique_ptr<Program> fltmgrd_, service_;
};

}  // namespace fltport::test
