// Latency benchmark harness: time each round trip, summarize percentiles, print a table, write JSON,
// and run the echoing peer in a forked child process that is always reaped.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace fltport::bench {

struct LatencyStats {
  std::string name;
  size_t samples = 0;
  double p50_us = 0, p99_us = 0, p999_us = 0, mean_us = 0, max_us = 0;
  double round_trips_per_sec = 0;
  // CPU time (user + sys) of BOTH processes over the timed loop, divided by the round trips: the
  // measuring process via getrusage(RUSAGE_SELF) (all its threads) plus, when measure() is given
  // peer_cpu_seconds, the peer's own CPU time (ChildProcess::cpu_seconds()). Warm-up is excluded. A
  // busy-polling pair therefore shows about 2 x its latency here.
  double cpu_us_per_round_trip = 0;
};

// Percentiles are nearest-rank over the sorted samples; round_trips_per_sec = samples / wall_seconds;
// cpu_us_per_round_trip = cpu_seconds / samples.
LatencyStats summarize(std::string name, std::vector<uint64_t> ns_samples, double wall_seconds,
                       double cpu_seconds);

// Calls round_trip() `warmup` times untimed, then `iterations` times, each timed with steady_clock
// (CLOCK_MONOTONIC, vDSO) into a vector preallocated before the loop. peer_cpu_seconds, if given, is
// called just before and just after the timed loop and must return the peer's cumulative CPU seconds
// (e.g. [&] { return child.cpu_seconds(); }); its delta is added to getrusage(RUSAGE_SELF)'s.
LatencyStats measure(std::string name, size_t warmup, size_t iterations, std::function<void()> round_trip,
                     std::function<double()> peer_cpu_seconds = {});

// Fixed-width table; the last column is each row's p50 divided by the p50 of the row named floor_name
// ("x2.1 floor"), or "-" when no such row exists.
void print_table(const std::vector<LatencyStats>& rows, const std::string& floor_name);

// Hand-written JSON: {"rows": [{"name": ..., "samples": ..., "p50_us": ..., ...}, ...]}.
void write_json(const std::vector<LatencyStats>& rows, const std::string& path);

// A forked child running `body`; the child leaves through _exit(body's return value) so it never runs
// the parent's atexit handlers or destructors of objects it inherited, and gets SIGKILL if the parent
// dies. The destructor kills (SIGKILL, by this pid only) and reaps a child still running, so an
// exception in the parent leaves nothing behind. The child answers SIGUSR2 with its CPU time (see
// cpu_seconds()); `body` must leave SIGUSR2 alone and should restart or retry calls that fail with EINTR.
class ChildProcess {
 public:
  explicit ChildProcess(const std::function<int()>& body);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const noexcept { return pid_; }
  // Non-blocking; reaps the child if it has exited.
  bool running();
  // Blocks until the child exits. Returns its exit code, or 128 + signal number if it was killed.
  int wait();
  // Waits up to `grace`, then sends SIGKILL and reaps. Same return value as wait().
  int wait_or_kill(std::chrono::milliseconds grace);
  // Throws std::runtime_error naming `what` if the child is no longer running (used by parents that
  // would otherwise wait forever on a dead peer).
  void throw_if_exited(const char* what);
  // The child's cumulative CPU seconds (user + sys, all its threads), read by the child itself with
  // CLOCK_PROCESS_CPUTIME_ID in a SIGUSR2 handler and passed back through shared memory. Read from
  // here, the kernel's clock for another process lags up to a scheduler tick (4 ms at HZ=250) while
  // that process is running, which would swamp short measurements. Blocks until the child answers.
  double cpu_seconds();

 private:
  void record(int wait_status) noexcept;
  void kill_and_reap() noexcept;

  struct CpuReport;
  CpuReport* cpu_report_ = nullptr;  // one shared page, mapped before fork
  pid_t pid_ = -1;
  bool reaped_ = false;
  int exit_status_ = 0;
};

}  // namespace fltport::bench
