#include "harness.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <exception>
#include <numeric>
#include <new>
#include <stdexcept>
#include <system_error>
#include <thread>

namespace fltport::bench {
namespace {

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

double rusage_self_cpu_seconds() {
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) != 0) throw_errno("getrusage(RUSAGE_SELF)");
  auto seconds = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec * 1e-6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

double percentile_us(const std::vector<uint64_t>& sorted_ns, double quantile) {
  // Nearest rank: the smallest sample with at least `quantile` of all samples at or below it.
  const auto rank = static_cast<size_t>(std::ceil(quantile * static_cast<double>(sorted_ns.size())));
  const size_t index = std::min(sorted_ns.size() - 1, rank == 0 ? 0 : rank - 1);
  return static_cast<double>(sorted_ns[index]) / 1000.0;
}

std::string json_escape(const std::string& text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(c));
          out += escaped;
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string json_number(double value) {
  if (!std::isfinite(value)) return "null";  // JSON has no NaN/Inf
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", value);
  return text;
}

}  // namespace

LatencyStats summarize(std::string name, std::vector<uint64_t> ns_samples, double wall_seconds,
                       double cpu_seconds) {
  LatencyStats stats;
  stats.name = std::move(name);
  stats.samples = ns_samples.size();
  if (ns_samples.empty()) return stats;

  std::sort(ns_samples.begin(), ns_samples.end());
  const double count = static_cast<double>(ns_samples.size());
  stats.p50_us = percentile_us(ns_samples, 0.50);
  stats.p99_us = percentile_us(ns_samples, 0.99);
  stats.p999_us = percentile_us(ns_samples, 0.999);
  // Sum in long double: 2^64 ns would need 584 years of samples, but mean precision still matters.
  const long double total_ns = std::accumulate(ns_samples.begin(), ns_samples.end(), 0.0L);
  stats.mean_us = static_cast<double>(total_ns / count) / 1000.0;
  stats.max_us = static_cast<double>(ns_samples.back()) / 1000.0;
  stats.round_trips_per_sec = wall_seconds > 0 ? count / wall_seconds : 0;
  stats.cpu_us_per_round_trip = cpu_seconds * 1e6 / count;
  return stats;
}

LatencyStats measure(std::string name, size_t warmup, size_t iterations, std::function<void()> round_trip,
                     std::function<double()> peer_cpu_seconds) {
  for (size_t i = 0; i < warmup; ++i) round_trip();

  using Clock = std::chrono::steady_clock;
  std::vector<uint64_t> samples(iterations);  // sized up front: no allocation inside the timed loop

  // Nested sampling (peer, self, wall ... wall, self, peer) keeps the cost of asking the peer for its
  // CPU time out of this process's share.
  const double peer_cpu_start = peer_cpu_seconds ? peer_cpu_seconds() : 0;
  const double self_cpu_start = rusage_self_cpu_seconds();
  const auto wall_start = Clock::now();
  for (size_t i = 0; i < iterations; ++i) {
    const auto start = Clock::now();
    round_trip();
    const auto end = Clock::now();
    samples[i] = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
  }
  const auto wall_end = Clock::now();
  const double self_cpu_end = rusage_self_cpu_seconds();
  const double peer_cpu_end = peer_cpu_seconds ? peer_cpu_seconds() : 0;

  const double wall_seconds = std::chrono::duration<double>(wall_end - wall_start).count();
  const double cpu_seconds = (self_cpu_end - self_cpu_start) + (peer_cpu_end - peer_cpu_start);
  return summarize(std::move(name), std::move(samples), wall_seconds, cpu_seconds);
}

void print_table(const std::vector<LatencyStats>& rows, const std::string& floor_name) {
  const LatencyStats* floor_row = nullptr;
  size_t name_width = 4;
  for (const auto& row : rows) {
    name_width = std::max(name_width, row.name.size());
    if (row.name == floor_name) floor_row = &row;
  }
  const int width = static_cast<int>(name_width);

  std::printf("%-*s %10s %10s %10s %14s %11s  %s\n", width, "name", "p50 us", "p99 us", "p99.9 us",
              "round trips/s", "CPU us/rt", "p50 vs floor");
  std::printf("%s\n", std::string(name_width + 74, '-').c_str());
  for (const auto& row : rows) {
    char ratio[48] = "-";
    if (floor_row != nullptr && floor_row->p50_us > 0) {
      std::snprintf(ratio, sizeof ratio, "x%.1f floor", row.p50_us / floor_row->p50_us);
    }
    std::printf("%-*s %10.2f %10.2f %10.2f %14.0f %11.2f  %s\n", width, row.name.c_str(), row.p50_us,
                row.p99_us, row.p999_us, row.round_trips_per_sec, row.cpu_us_per_round_trip, ratio);
  }
  std::fflush(stdout);
}

void write_json(const std::vector<LatencyStats>& rows, const std::string& path) {
  std::string json = "{\n  \"rows\": [";
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& row = rows[i];
    json += i == 0 ? "\n" : ",\n";
    json += "    {\"name\": \"" + json_escape(row.name) + "\"";
    json += ", \"samples\": " + std::to_string(row.samples);
    json += ", \"p50_us\": " + json_number(row.p50_us);
    json += ", \"p99_us\": " + json_number(row.p99_us);
    json += ", \"p999_us\": " + json_number(row.p999_us);
    json += ", \"mean_us\": " + json_number(row.mean_us);
    json += ", \"max_us\": " + json_number(row.max_us);
    json += ", \"round_trips_per_sec\": " + json_number(row.round_trips_per_sec);
    json += ", \"cpu_us_per_round_trip\": " + json_number(row.cpu_us_per_round_trip) + "}";
  }
  json += rows.empty() ? "]\n}\n" : "\n  ]\n}\n";

  std::FILE* file = std::fopen(path.c_str(), "w");
  if (file == nullptr) throw_errno("cannot open JSON output '" + path + "'");
  const bool written = std::fwrite(json.data(), 1, json.size(), file) == json.size();
  const int saved_errno = errno;
  if (std::fclose(file) != 0 || !written) {
    if (!written) errno = saved_errno;
    throw_errno("cannot write JSON output '" + path + "'");
  }
}

// ---- ChildProcess ----

struct ChildProcess::CpuReport {
  std::atomic<uint64_t> requested{0};  // parent bumps, then signals
  std::atomic<uint64_t> answered{0};   // child copies `requested` here once cpu_ns is written
  std::atomic<int64_t> cpu_ns{0};
};

namespace {

constexpr int kCpuReportSignal = SIGUSR2;
// Set in the child only; read by its signal handler.
std::atomic<void*> child_cpu_report{nullptr};

template <typename Report>
void answer_cpu_report(Report* report) {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);  // async-signal-safe, exact for the whole process
  report->cpu_ns.store(static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec,
                       std::memory_order_relaxed);
  report->answered.store(report->requested.load(std::memory_order_acquire), std::memory_order_release);
}

}  // namespace

ChildProcess::ChildProcess(const std::function<int()>& body) {
  void* page = mmap(nullptr, sizeof(CpuReport), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) throw_errno("mmap(CPU report page)");
  cpu_report_ = new (page) CpuReport{};

  // Block the report signal across fork so that a request can never reach the child before its
  // handler exists (the default action would kill it); the child unblocks it after installing one.
  sigset_t report_signal, previous_mask;
  sigemptyset(&report_signal);
  sigaddset(&report_signal, kCpuReportSignal);
  pthread_sigmask(SIG_BLOCK, &report_signal, &previous_mask);
  const pid_t parent = getpid();
  // Unflushed stdio buffers would otherwise be written twice, once by each process.
  std::fflush(nullptr);
  pid_ = fork();
  const int fork_errno = errno;
  if (pid_ != 0) {
    pthread_sigmask(SIG_SETMASK, &previous_mask, nullptr);
    if (pid_ > 0) return;
    munmap(cpu_report_, sizeof(CpuReport));
    errno = fork_errno;
    throw_errno("fork");
  }

  // Child. Die with the parent so a crashed or killed benchmark leaves no echo process spinning;
  // the getppid() check closes the race where the parent died before prctl.
  int exit_code = 1;
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(exit_code);
  child_cpu_report.store(cpu_report_);
  struct sigaction action {};
  action.sa_handler = [](int) {
    const int saved_errno = errno;
    answer_cpu_report(static_cast<CpuReport*>(child_cpu_report.load()));
    errno = saved_errno;
  };
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  if (sigaction(kCpuReportSignal, &action, nullptr) != 0) _exit(exit_code);
  sigdelset(&previous_mask, kCpuReportSignal);
  pthread_sigmask(SIG_SETMASK, &previous_mask, nullptr);
  try {
    exit_code = body();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "benchmark child %d: %s\n", static_cast<int>(getpid()), error.what());
  } catch (...) {
    std::fprintf(stderr, "benchmark child %d: unknown exception\n", static_cast<int>(getpid()));
  }
  std::fflush(nullptr);
  _exit(exit_code);
}

ChildProcess::~ChildProcess() {
  kill_and_reap();
  munmap(cpu_report_, sizeof(CpuReport));
}

double ChildProcess::cpu_seconds() {
  const uint64_t ticket = cpu_report_->requested.fetch_add(1, std::memory_order_acq_rel) + 1;
  if (reaped_ || kill(pid_, kCpuReportSignal) != 0) {
    if (!reaped_) throw_errno("kill(" + std::to_string(pid_) + ", SIGUSR2)");
    throw std::runtime_error("CPU time requested from child " + std::to_string(pid_) + " that has exited");
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (cpu_report_->answered.load(std::memory_order_acquire) != ticket) {
    throw_if_exited("CPU time request");
    if (std::chrono::steady_clock::now() >= deadline) {
      throw std::runtime_error("child " + std::to_string(pid_) + " did not report its CPU time within 5 s");
    }
    std::this_thread::yield();
  }
  return static_cast<double>(cpu_report_->cpu_ns.load(std::memory_order_relaxed)) * 1e-9;
}

void ChildProcess::record(int wait_status) noexcept {
  reaped_ = true;
  exit_status_ = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
}

bool ChildProcess::running() {
  if (reaped_) return false;
  int status = 0;
  const pid_t result = waitpid(pid_, &status, WNOHANG);
  if (result < 0) throw_errno("waitpid(" + std::to_string(pid_) + ")");
  if (result == 0) return true;
  record(status);
  return false;
}

int ChildProcess::wait() {
  while (!reaped_) {
    int status = 0;
    const pid_t result = waitpid(pid_, &status, 0);
    if (result == pid_) {
      record(status);
    } else if (result < 0 && errno != EINTR) {
      throw_errno("waitpid(" + std::to_string(pid_) + ")");
    }
  }
  return exit_status_;
}

int ChildProcess::wait_or_kill(std::chrono::milliseconds grace) {
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      std::fprintf(stderr, "warning: benchmark child %d did not exit in %lld ms; killing it\n",
                   static_cast<int>(pid_), static_cast<long long>(grace.count()));
      kill_and_reap();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return exit_status_;
}

void ChildProcess::throw_if_exited(const char* what) {
  if (running()) return;
  throw std::runtime_error(std::string(what) + ": child " + std::to_string(pid_) +
                           " exited unexpectedly with status " + std::to_string(exit_status_));
}

void ChildProcess::kill_and_reap() noexcept {
  if (pid_ <= 0 || reaped_) return;
  kill(pid_, SIGKILL);  // this pid only, never a process group
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) {  // ECHILD: already reaped elsewhere; nothing is left to kill
      reaped_ = true;
      return;
    }
  }
  record(status);
}

}  // namespace fltport::bench
