#include "harness.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <exception>
#include <fstream>
#include <latch>
#include <map>
#include <new>
#include <numeric>
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
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
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

void write_file(const std::string& path, const std::string& content, const char* what) {
  std::FILE* file = std::fopen(path.c_str(), "w");
  if (file == nullptr) throw_errno(std::string("cannot open ") + what + " '" + path + "'");
  const bool written = std::fwrite(content.data(), 1, content.size(), file) == content.size();
  const int saved_errno = errno;
  if (std::fclose(file) != 0 || !written) {
    if (!written) errno = saved_errno;
    throw_errno(std::string("cannot write ") + what + " '" + path + "'");
  }
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

  // 20 points per decade of the tail ("nines"), up to the last percentile that still has a sample
  // beyond it: 2^64 samples would make 385 points, so the loop is bounded.
  const double max_nines = std::log10(count);
  for (int step = 0; step / 20.0 < max_nines; ++step) {
    const double quantile = 1.0 - std::pow(10.0, -step / 20.0);
    stats.distribution.push_back({quantile * 100.0, percentile_us(ns_samples, quantile)});
  }
  stats.distribution.push_back({100.0, stats.max_us});
  return stats;
}

LatencyStats measure(std::string name, size_t warmup, size_t iterations, std::function<void()> round_trip,
                     std::function<double()> peer_cpu_seconds, std::chrono::nanoseconds time_limit) {
  for (size_t i = 0; i < warmup; ++i) round_trip();

  using Clock = std::chrono::steady_clock;
  std::vector<uint64_t> samples(iterations);  // sized up front: no allocation inside the timed loop

  // Nested sampling (peer, self, wall ... wall, self, peer) keeps the cost of asking the peer for its
  // CPU time out of this process's share.
  const double peer_cpu_start = peer_cpu_seconds ? peer_cpu_seconds() : 0;
  const double self_cpu_start = rusage_self_cpu_seconds();
  const auto wall_start = Clock::now();
  const auto deadline =
      time_limit > std::chrono::nanoseconds::zero() ? wall_start + time_limit : Clock::time_point::max();
  size_t done = 0;
  while (done < iterations) {
    const auto start = Clock::now();
    round_trip();
    const auto end = Clock::now();
    samples[done++] =
        static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
    if (end >= deadline) break;
  }
  const auto wall_end = Clock::now();
  samples.resize(done);  // shrinking never reallocates
  const double self_cpu_end = rusage_self_cpu_seconds();
  const double peer_cpu_end = peer_cpu_seconds ? peer_cpu_seconds() : 0;

  const double wall_seconds = std::chrono::duration<double>(wall_end - wall_start).count();
  const double cpu_seconds = (self_cpu_end - self_cpu_start) + (peer_cpu_end - peer_cpu_start);
  return summarize(std::move(name), std::move(samples), wall_seconds, cpu_seconds);
}

LatencyStats measure_threads(std::string name, size_t threads, size_t warmup, size_t iterations,
                             const std::function<void(size_t thread_index)>& round_trip,
                             const std::function<double()>& peer_cpu_seconds,
                             std::chrono::nanoseconds time_limit) {
  using Clock = std::chrono::steady_clock;
  if (threads == 0) throw std::invalid_argument("measure_threads: no threads");
  // Everything a timed loop touches is sized here, before any thread starts.
  std::vector<std::vector<uint64_t>> samples(threads, std::vector<uint64_t>(iterations));
  std::vector<size_t> done(threads, 0);
  std::vector<Clock::time_point> finished(threads);
  std::vector<std::exception_ptr> errors(threads);
  std::latch warmed_up(static_cast<std::ptrdiff_t>(threads));
  std::latch go(1);
  // Both written before `go` is counted down and read after it is passed (the latch orders them).
  Clock::time_point deadline = Clock::time_point::max();
  bool abandoned = false;

  auto body = [&](size_t t) {
    try {
      for (size_t i = 0; i < warmup; ++i) round_trip(t);
    } catch (...) {
      errors[t] = std::current_exception();
    }
    warmed_up.count_down();
    go.wait();
    if (errors[t] || abandoned) return;
    try {
      auto& mine = samples[t];
      size_t count = 0;
      while (count < iterations) {
        const auto start = Clock::now();
        round_trip(t);
        const auto end = Clock::now();
        mine[count++] =
            static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
        if (end >= deadline) break;
      }
      done[t] = count;
    } catch (...) {
      errors[t] = std::current_exception();
    }
    finished[t] = Clock::now();
  };

  std::vector<std::thread> workers;
  workers.reserve(threads);
  double peer_cpu_start = 0, self_cpu_start = 0;
  Clock::time_point wall_start;
  try {
    for (size_t t = 0; t < threads; ++t) workers.emplace_back(body, t);
    warmed_up.wait();
    peer_cpu_start = peer_cpu_seconds ? peer_cpu_seconds() : 0;
    self_cpu_start = rusage_self_cpu_seconds();
    wall_start = Clock::now();
    if (time_limit > std::chrono::nanoseconds::zero()) deadline = wall_start + time_limit;
  } catch (...) {
    // A thread that could not be started or a peer that did not answer: release and join the others.
    abandoned = true;
    go.count_down();
    for (auto& worker : workers) worker.join();
    throw;
  }
  go.count_down();
  for (auto& worker : workers) worker.join();
  const double self_cpu_end = rusage_self_cpu_seconds();
  for (const auto& error : errors) {
    if (error) std::rethrow_exception(error);
  }
  const double peer_cpu_end = peer_cpu_seconds ? peer_cpu_seconds() : 0;

  const auto wall_end = *std::max_element(finished.begin(), finished.end());
  std::vector<uint64_t> merged;
  merged.reserve(std::accumulate(done.begin(), done.end(), size_t{0}));
  for (size_t t = 0; t < threads; ++t) {
    merged.insert(merged.end(), samples[t].begin(),
                  samples[t].begin() + static_cast<std::ptrdiff_t>(done[t]));
  }
  const double wall_seconds = std::chrono::duration<double>(wall_end - wall_start).count();
  const double cpu_seconds = (self_cpu_end - self_cpu_start) + (peer_cpu_end - peer_cpu_start);
  return summarize(std::move(name), std::move(merged), wall_seconds, cpu_seconds);
}

void assign_floor_ratios(std::vector<LatencyStats>& rows, const std::string& floor_transport) {
  std::vector<const LatencyStats*> floors;
  for (const auto& row : rows) {
    if (row.transport == floor_transport) floors.push_back(&row);
  }
  if (floors.empty()) return;
  for (auto& row : rows) {
    const LatencyStats* floor = floors.front();
    for (const LatencyStats* candidate : floors) {
      if (candidate->request_bytes == row.request_bytes) {
        floor = candidate;
        break;
      }
    }
    row.floor_name = floor->name;
    row.floor_ratio =
        floor->p50_us > 0 ? row.p50_us / floor->p50_us : std::numeric_limits<double>::quiet_NaN();
  }
}

namespace {

std::string format_bytes(size_t bytes) {
  if (bytes >= 1024 && bytes % 1024 == 0) return std::to_string(bytes / 1024) + " KiB";
  return std::to_string(bytes) + " B";
}

std::string format_threads(size_t threads) {
  return threads == 0 ? "-" : std::to_string(threads);
}

}  // namespace

void print_suite_table(const std::vector<LatencyStats>& rows) {
  size_t width = 9;  // "transport"
  std::vector<std::string> groups;
  for (const auto& row : rows) {
    width = std::max(width, row.transport.size());
    if (std::find(groups.begin(), groups.end(), row.group) == groups.end()) groups.push_back(row.group);
  }
  const int w = static_cast<int>(width);
  for (const auto& group : groups) {
    std::printf("\n%s\n", group.c_str());
    std::printf("%-*s %5s %5s %8s %9s %9s %9s %10s %11s %9s\n", w, "transport", "filt", "serv", "payload",
                "p50 us", "p99 us", "p99.9 us", "msgs/s", "CPU us/msg", "p50/floor");
    std::printf("%s\n", std::string(width + 84, '-').c_str());
    for (const auto& row : rows) {
      if (row.group != group) continue;
      char ratio[32] = "-";
      if (std::isfinite(row.floor_ratio)) {
        // Below x0.1 only when the floor itself was disturbed; keep such ratios readable.
        std::snprintf(ratio, sizeof ratio, row.floor_ratio < 0.1 ? "x%.3f" : "x%.1f", row.floor_ratio);
      }
      std::printf("%-*s %5s %5s %8s %9.2f %9.2f %9.2f %10.0f %11.2f %9s\n", w, row.transport.c_str(),
                  format_threads(row.filter_threads).c_str(), format_threads(row.service_threads).c_str(),
                  format_bytes(row.request_bytes).c_str(), row.p50_us, row.p99_us, row.p999_us,
                  row.round_trips_per_sec, row.cpu_us_per_round_trip, ratio);
    }
  }
  std::fflush(stdout);
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

MachineInfo machine_info() {
  MachineInfo info;
  utsname names{};
  if (uname(&names) == 0) info.kernel = names.release;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) != 0) continue;
    const auto value = line.find_first_not_of(" \t", line.find(':') + 1);
    if (line.find(':') == std::string::npos || value == std::string::npos) continue;
    info.cpu_model = line.substr(value);
    break;
  }
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  info.nproc = online > 0 ? static_cast<unsigned>(online) : 0;
  const time_t now = time(nullptr);
  tm utc{};
  char date[32] = "";
  if (gmtime_r(&now, &utc) != nullptr) std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &utc);
  info.date = date;
#if defined(__clang__)
  info.compiler = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info.compiler = std::string("g++ ") + __VERSION__;
#endif
  return info;
}

void write_json(const std::vector<LatencyStats>& rows, const std::string& path, const JsonExtras& extras) {
  auto text = [](const std::string& value) { return "\"" + json_escape(value) + "\""; };
  std::string json = "{\n";
  if (extras.machine != nullptr) {
    const MachineInfo& m = *extras.machine;
    json += "  \"machine\": {\"kernel\": " + text(m.kernel) + ", \"cpu_model\": " + text(m.cpu_model) +
            ", \"nproc\": " + std::to_string(m.nproc) + ", \"date\": " + text(m.date) +
            ", \"compiler\": " + text(m.compiler) + "},\n";
  }
  if (!extras.settings.empty()) {
    json += "  \"settings\": {";
    for (size_t i = 0; i < extras.settings.size(); ++i) {
      json += (i == 0 ? "" : ", ") + text(extras.settings[i].first) + ": " + extras.settings[i].second;
    }
    json += "},\n";
  }
  json += "  \"rows\": [";
  bool first = true;
  for (const auto& row : rows) {
    json += first ? "\n" : ",\n";
    first = false;
    json += "    {\"name\": " + text(row.name);
    json += ", \"group\": " + text(row.group);
    json += ", \"transport\": " + text(row.transport);
    json += ", \"unit\": " + text(row.unit);
    json += ", \"filter_threads\": " + std::to_string(row.filter_threads);
    json += ", \"service_threads\": " + std::to_string(row.service_threads);
    json += ", \"request_bytes\": " + std::to_string(row.request_bytes);
    json += ", \"reply_bytes\": " + std::to_string(row.reply_bytes);
    json += ", \"samples\": " + std::to_string(row.samples);
    json += ", \"p50_us\": " + json_number(row.p50_us);
    json += ", \"p99_us\": " + json_number(row.p99_us);
    json += ", \"p999_us\": " + json_number(row.p999_us);
    json += ", \"mean_us\": " + json_number(row.mean_us);
    json += ", \"max_us\": " + json_number(row.max_us);
    json += ", \"round_trips_per_sec\": " + json_number(row.round_trips_per_sec);
    json += ", \"cpu_us_per_round_trip\": " + json_number(row.cpu_us_per_round_trip);
    json += ", \"floor\": " + (row.floor_name.empty() ? std::string("null") : text(row.floor_name));
    json += ", \"floor_ratio\": " + json_number(row.floor_ratio) + "}";
  }
  for (const auto& merged : extras.merged_rows) {
    json += first ? "\n    " : ",\n    ";
    first = false;
    json += merged;
  }
  json += first ? "]\n}\n" : "\n  ]\n}\n";
  write_file(path, json, "JSON output");
}

std::vector<std::string> read_json_rows(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw std::runtime_error("cannot read JSON rows from '" + path + "'");
  // write_json() puts each row on a line of its own and nothing else there starts with {"name".
  std::vector<std::string> rows;
  for (std::string line; std::getline(file, line);) {
    const auto start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line.compare(start, 8, "{\"name\":") != 0) continue;
    auto end = line.find_last_not_of(" \t\r,");
    rows.push_back(line.substr(start, end + 1 - start));
  }
  return rows;
}

void write_distribution(const std::vector<const LatencyStats*>& rows, const std::string& path) {
  std::string data =
      "# Latency distributions for gnuplot (bench/latency.gp): one block per row, blocks separated by\n"
      "# two blank lines; columns: latency_us percentile nines (= -log10(1 - percentile/100), capped at\n"
      "# log10(samples) for the maximum).\n";
  for (const LatencyStats* row : rows) {
    if (row != rows.front()) data += "\n\n";
    data += "\"" + row->transport + (row->group.empty() ? "" : " (" + row->group + ")") + "\"\n";
    const double cap = row->samples > 0 ? std::log10(static_cast<double>(row->samples)) : 0;
    for (const auto& point : row->distribution) {
      const double beyond = 1.0 - point.percentile / 100.0;
      const double nines =
          beyond <= 0 ? cap : std::clamp(-std::log10(beyond), 0.0, cap) + 0.0;  // + 0.0: no "-0"
      char line[96];
      std::snprintf(line, sizeof line, "%.4f %.6f %.4f\n", point.latency_us, point.percentile, nines);
      data += line;
    }
  }
  write_file(path, data, "distribution data");
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

void block_cpu_report_signal(bool block) {
  sigset_t report_signal;
  sigemptyset(&report_signal);
  sigaddset(&report_signal, kCpuReportSignal);
  pthread_sigmask(block ? SIG_BLOCK : SIG_UNBLOCK, &report_signal, nullptr);
}

}  // namespace fltport::bench
