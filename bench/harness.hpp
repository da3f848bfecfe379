// Latency benchmark harness: time each round trip (from one thread or several), summarize percentiles,
// print tables, write JSON and the percentile points a plot is drawn from, and run the peer in a forked
// child process that is always reaped.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace fltport::bench {

// One point of a latency distribution: `percentile` (0..100) of the samples took at most `latency_us`.
struct PercentilePoint {
  double percentile = 0;
  double latency_us = 0;
};

struct LatencyStats {
  std::string name;
  // What the row is, for tables and JSON. The baselines and the single-case tools leave the defaults.
  std::string group;      // "filter->service", "service->filter", "baseline", "fanotify"
  std::string transport;  // e.g. "fltport shm", "fltport socket", "shm busy-poll"
  std::string unit = "round trip";
  size_t filter_threads = 1;   // threads of the filter process (ServerPort side) in the timed loop
  size_t service_threads = 1;  // threads of the service process (Connection side)
  size_t request_bytes = 0;
  size_t reply_bytes = 0;

  size_t samples = 0;
  double p50_us = 0, p99_us = 0, p999_us = 0, mean_us = 0, max_us = 0;
  double round_trips_per_sec = 0;
  // CPU time (user + sys) of BOTH processes over the timed loop, divided by the round trips: the
  // measuring process via getrusage(RUSAGE_SELF) (all its threads) plus, when measure() is given
  // peer_cpu_seconds, the peer's own CPU time (ChildProcess::cpu_seconds()). Warm-up is excluded. A
  // busy-polling pair therefore shows about 2 x its latency here.
  double cpu_us_per_round_trip = 0;
  // p50 divided by the p50 of `floor_name`'s row (see assign_floor_ratios); NaN when there is none.
  double floor_ratio = std::numeric_limits<double>::quiet_NaN();
  std::string floor_name;
  // Percentile points from 0 to 100 with more of them in the tail (see summarize), for plots.
  std::vector<PercentilePoint> distribution;
};

// Percentiles are nearest-rank over the sorted samples; round_trips_per_sec = samples / wall_seconds;
// cpu_us_per_round_trip = cpu_seconds / samples. `distribution` gets the latency at the percentiles
// 100 * (1 - 10^-k/20) for k = 0, 1, ... while at least one sample lies beyond them, then the maximum.
LatencyStats summarize(std::string name, std::vector<uint64_t> ns_samples, double wall_seconds,
                       double cpu_seconds);

// Calls round_trip() `warmup` times untimed, then `iterations` times, each timed with steady_clock
// (CLOCK_MONOTONIC, vDSO) into a vector preallocated before the loop. peer_cpu_seconds, if given, is
// called just before and just after the timed loop and must return the peer's cumulative CPU seconds
// (e.g. [&] { return child.cpu_seconds(); }); its delta is added to getrusage(RUSAGE_SELF)'s. A
// non-zero time_limit ends the timed loop early once that much time has passed (fewer samples).
LatencyStats measure(std::string name, size_t warmup, size_t iterations, std::function<void()> round_trip,
                     std::function<double()> peer_cpu_seconds = {},
                     std::chrono::nanoseconds time_limit = std::chrono::nanoseconds::zero());

// measure() with `threads` threads at once, each calling round_trip(thread_index) `warmup` times and
// then up to `iterations` timed times into its own preallocated sample vector. The clock starts when
// every thread has finished its warm-up and stops when the last one is done; the samples of all
// threads are merged, so round_trips_per_sec = all round trips / wall time. An exception in any
// thread is rethrown here after every thread has been joined.
LatencyStats measure_threads(std::string name, size_t threads, size_t warmup, size_t iterations,
                             const std::function<void(size_t thread_index)>& round_trip,
                             const std::function<double()>& peer_cpu_seconds = {},
                             std::chrono::nanoseconds time_limit = std::chrono::nanoseconds::zero());

// Sets floor_ratio and floor_name of every row. The floor rows are those whose `transport` is
// floor_transport; a row's floor is the one with the same request_bytes if there is one, else the
// first. Without any floor row, nothing changes.
void assign_floor_ratios(std::vector<LatencyStats>& rows, const std::string& floor_transport);

// Fixed-width table; the last column is each row's p50 divided by the p50 of the row named floor_name
// ("x2.1 floor"), or "-" when no such row exists.
void print_table(const std::vector<LatencyStats>& rows, const std::string& floor_name);

// The table of the port suite: one section per group (in order of first appearance) with the
// transport, threads (filter x service), payload, p50/p99/p99.9, messages/s, CPU us per message of
// both processes, and floor_ratio. Call assign_floor_ratios() first.
void print_suite_table(const std::vector<LatencyStats>& rows);

// The machine a run was made on.
struct MachineInfo {
  std::string kernel;     // uname -r
  std::string cpu_model;  // first "model name" of /proc/cpuinfo
  unsigned nproc = 0;     // online CPUs
  std::string date;       // start of the run, UTC, ISO 8601
  std::string compiler;
};
MachineInfo machine_info();

// What write_json() writes beside the rows.
struct JsonExtras {
  const MachineInfo* machine = nullptr;
  // Written as "settings": {key: value}; values are JSON text (a number, "\"text\"", true).
  std::vector<std::pair<std::string, std::string>> settings;
  // Row objects from another run (read_json_rows), appended to "rows" as they are.
  std::vector<std::string> merged_rows;
};

// Hand-written JSON: {"machine": {...}, "settings": {...}, "rows": [{"name": ..., "samples": ...}, ...]},
// one row per line.
void write_json(const std::vector<LatencyStats>& rows, const std::string& path,
                const JsonExtras& extras = {});

// The row objects of a file written by write_json(), as JSON text. Throws if it cannot be read.
std::vector<std::string> read_json_rows(const std::string& path);

// Percentile points of `rows` for gnuplot: one block per row (blocks separated by two blank lines, as
// gnuplot's `index` expects), each starting with a line naming the row in quotes (for columnheader),
// then "latency_us percentile nines" lines where nines = -log10(1 - percentile / 100), capped.
void write_distribution(const std::vector<const LatencyStats*>& rows, const std::string& path);

// A forked child running `body`; the child leaves through _exit(body's return value) so it never runs
// the parent's atexit handlers or destructors of objects it inherited, and gets SIGKILL if the parent
// dies. The destructor kills (SIGKILL, by this pid only) and reaps a child still running, so an
// exception in the parent leaves nothing behind. The child answers SIGUSR2 with its CPU time (see
// cpu_seconds()); `body` must leave SIGUSR2 alone and should restart or retry calls that fail with EINTR
// (or keep SIGUSR2 blocked in the threads that make such calls, see block_cpu_report_signal()).
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

// In a ChildProcess body: blocks (true) or unblocks (false) the CPU report signal in the calling thread.
// Threads created while it is blocked inherit the block, so a child can keep library threads that wait
// in poll() or futex() (which fail with EINTR even under SA_RESTART) out of the signal's way: block it,
// start them, then unblock it in a thread that only waits (pthread_join, a condition variable).
void block_cpu_report_signal(bool block);

}  // namespace fltport::bench
