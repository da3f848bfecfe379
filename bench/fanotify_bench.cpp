// fltport-bench-fanotify: what a filter costs an open(). Every case times each open()+close() in a
// child process (the host's own accesses are exempt from filtering), on files in a fresh temporary
// directory, in one run:
//   no listener | a bare fanotify responder that allows everything | the kernel's verdict cache
//   alone (that responder leaving ignore marks; its second pass is the floor of any cached path) |
//   the filter manager with an allow-all filter, uncached and cached | fltmgrd + scanner + service,
//   uncached and cached; and
//   sporadic opens (--paced N files, 1 ms apart) for the bare responder and the scanner path.
// The sequence runs --rounds times (each round's groups, host and service are new, so every
// uncached pass is a first look); a row reports its median round, and its ratios are the medians of
// the ratios within each round: on a shared virtual machine a neighbour's burst moves a single pass
// by 30 %, and it moves the baseline of the same round with it.
// Needs root (fanotify permission events). scripts/bench.sh runs it and merges its --json rows into
// the port suite's results.
//
//   fltport-bench-fanotify [--files N] [--rounds N] [--paced N] [--json PATH] [--fltmgrd PATH
//                          --plugin-dir DIR --service PATH] [--service-threads N]   (the scanner
//                          service's worker threads; its default: 2)
#include <fltport/filter.hpp>

#include <fcntl.h>
#include <linux/fanotify.h>
#include <poll.h>
#include <signal.h>
#include <sys/fanotify.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "harness.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using fltport::bench::ChildProcess;
using fltport::bench::LatencyStats;

const char* const kNoListener = "no listener";
const char* const kBareResponder = "bare fanotify responder (allow all)";
const char* const kKernelCacheFloor = "kernel ignore marks alone, cached (floor)";
// Sporadic opens: each row of that kind is compared with the bare responder's of the same kind.
constexpr std::chrono::microseconds kPacedGap{1000};
const char* const kPacedSuffix = ", 1 ms apart";
std::string paced(const std::string& name) {
  return name + kPacedSuffix;
}
bool is_paced(const std::string& name) {
  return name.ends_with(kPacedSuffix);
}

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

double self_cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec * 1e-6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

int64_t process_cpu_ns() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

// Another process's cumulative CPU seconds (utime + stime of /proc/PID/stat, all its threads, the
// ended ones included), in clock ticks: 10 ms resolution, small beside a pass of thousands of opens.
double other_process_cpu_seconds(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return 0;
  const auto after_name = line.rfind(')');  // the command name may contain spaces and parentheses
  if (after_name == std::string::npos) return 0;
  std::vector<std::string> fields;
  std::string field;
  for (size_t i = after_name + 2; i <= line.size(); ++i) {
    if (i == line.size() || line[i] == ' ') {
      fields.push_back(field);
      field.clear();
    } else {
      field += line[i];
    }
  }
  // Fields from the state (3rd of stat(5)) on: utime is the 14th, stime the 15th.
  if (fields.size() < 13) return 0;
  const double ticks = std::stod(fields[11]) + std::stod(fields[12]);
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// The child's timings, in a MAP_SHARED mapping made before fork: a header, then one sample per file.
class SharedTimings {
 public:
  struct Header {
    int64_t child_cpu_ns = 0;
    int64_t wall_ns = 0;
    uint64_t failed_opens = 0;
  };

  explicit SharedTimings(size_t count) : size_(sizeof(Header) + count * sizeof(uint64_t)) {
    base_ = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (base_ == MAP_FAILED) throw_errno("mmap(timings)");
    new (base_) Header{};
  }
  ~SharedTimings() { munmap(base_, size_); }
  SharedTimings(const SharedTimings&) = delete;
  SharedTimings& operator=(const SharedTimings&) = delete;
  Header& header() { return *static_cast<Header*>(base_); }
  uint64_t* samples() { return reinterpret_cast<uint64_t*>(static_cast<char*>(base_) + sizeof(Header)); }

 private:
  size_t size_;
  void* base_;
};

// Opens each file once in a child process, timing each open()+close() (no warm-up: a first pass
// must be the filters' first look at every file). CPU per open counts the child, this process (the
// responders, the filter manager) and the processes `others_cpu` sums (fltmgrd, the service).
// With a `gap`, the child sleeps that long after each open (sporadic opens, as most are: every
// waiting thread has gone to sleep by the next one); the samples are then the open()+close() alone.
LatencyStats open_all_in_child(const std::string& name, const std::vector<std::string>& files,
                               const std::function<double()>& others_cpu = {},
                               std::chrono::microseconds gap = std::chrono::microseconds(0)) {
  SharedTimings timings(files.size());
  const double others_start = others_cpu ? others_cpu() : 0;
  const double self_start = self_cpu_seconds();
  ChildProcess child([&] {
    ::alarm(120);  // a permission event nobody answers must not hang the run
    SharedTimings::Header& header = timings.header();
    uint64_t* samples = timings.samples();
    const int64_t cpu_start = process_cpu_ns();
    const auto start = Clock::now();
    auto previous = start;
    for (size_t i = 0; i < files.size(); ++i) {
      const int fd = ::open(files[i].c_str(), O_RDONLY);
      if (fd >= 0)
        ::close(fd);
      else
        ++header.failed_opens;
      const auto now = Clock::now();
      samples[i] =
          static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(now - previous).count());
      previous = now;
      if (gap.count() > 0) {
        std::this_thread::sleep_for(gap);
        previous = Clock::now();
      }
    }
    header.wall_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(previous - start).count();
    header.child_cpu_ns = process_cpu_ns() - cpu_start;
    return 0;
  });
  const int status = child.wait();
  const double self_cpu = self_cpu_seconds() - self_start;
  const double others = others_cpu ? others_cpu() - others_start : 0;
  if (status != 0)
    throw std::runtime_error(name + ": the opening child exited with status " + std::to_string(status));
  const SharedTimings::Header& header = timings.header();
  if (header.failed_opens != 0) {
    std::fprintf(stderr, "%s: %llu of %zu opens failed\n", name.c_str(),
                 static_cast<unsigned long long>(header.failed_opens), files.size());
  }
  std::vector<uint64_t> samples(timings.samples(), timings.samples() + files.size());
  LatencyStats stats =
      fltport::bench::summarize(name, std::move(samples), static_cast<double>(header.wall_ns) * 1e-9,
                                static_cast<double>(header.child_cpu_ns) * 1e-9 + self_cpu + others);
  stats.group = "fanotify";
  stats.transport = name;
  stats.unit = "open()+close()";
  stats.filter_threads = 0;
  stats.service_threads = 0;
  return stats;
}

// A fanotify group answering FAN_OPEN_PERM with allow, nothing else: the kernel's own cost. With
// `ignore_until_modified`, each answer also leaves the kernel's cache of a clean verdict on the
// file (an evictable FAN_MARK_IGNORE mark, as the filter manager's verdict cache does), so that a
// second pass measures that cache's own cost: the floor for any cached path.
class BareResponder {
 public:
  BareResponder(const std::string& directory, bool ignore_until_modified) {
    group_ = ::fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE);
    if (group_ < 0) throw_errno("fanotify_init");
    if (::fanotify_mark(group_, FAN_MARK_ADD, FAN_OPEN_PERM | FAN_EVENT_ON_CHILD, AT_FDCWD,
                        directory.c_str()) != 0) {
      const int error = errno;
      ::close(group_);
      errno = error;
      throw_errno("fanotify_mark");
    }
    responder_ = std::thread([this, ignore_until_modified] { respond(ignore_until_modified); });
  }
  // Files the kernel would not mark (ignore_until_modified): a floor measured without them is none.
  uint64_t ignore_failures() const { return ignore_failures_.load(); }
  ~BareResponder() {
    stop_ = true;
    responder_.join();
    ::close(group_);  // also releases anything unanswered
  }
  BareResponder(const BareResponder&) = delete;
  BareResponder& operator=(const BareResponder&) = delete;

 private:
  void respond(bool ignore_until_modified) {
    alignas(fanotify_event_metadata) char buffer[8192];
    while (!stop_.load()) {
      pollfd pfd{group_, POLLIN, 0};
      if (::poll(&pfd, 1, 100) <= 0) continue;
      const ssize_t length = ::read(group_, buffer, sizeof buffer);
      if (length <= 0) continue;
      auto* event = reinterpret_cast<fanotify_event_metadata*>(buffer);
      ssize_t left = length;
      for (; FAN_EVENT_OK(event, left); event = FAN_EVENT_NEXT(event, left)) {
        if (event->fd < 0) continue;
        if (ignore_until_modified && !ignore(event->fd)) ignore_failures_.fetch_add(1);
        fanotify_response response{event->fd, FAN_ALLOW};
        [[maybe_unused]] ssize_t w = ::write(group_, &response, sizeof response);
        ::close(event->fd);
      }
    }
  }

  // The filter manager's way (fanotify.cpp): FAN_MARK_IGNORE where the kernel has it (6.0), else
  // the older ignored mask.
  bool ignore(int event_fd) const {
    if (::fanotify_mark(group_, FAN_MARK_ADD | FAN_MARK_IGNORE | FAN_MARK_EVICTABLE, FAN_OPEN_PERM, event_fd,
                        nullptr) == 0)
      return true;
    return ::fanotify_mark(group_, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK, FAN_OPEN_PERM, event_fd, nullptr) ==
           0;
  }

  int group_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> ignore_failures_{0};
  std::thread responder_;
};

std::vector<LatencyStats> bare_responder(const std::string& directory, const std::vector<std::string>& files,
                                         const std::vector<std::string>& paced_files) {
  BareResponder responder(directory, false);
  std::vector<LatencyStats> rows;
  rows.push_back(open_all_in_child(kBareResponder, files));
  if (!paced_files.empty())
    rows.push_back(open_all_in_child(paced(kBareResponder), paced_files, {}, kPacedGap));
  return rows;
}

// The kernel's verdict cache alone: what a cached open costs whatever runs in user space.
LatencyStats kernel_cache_floor(const std::string& directory, const std::vector<std::string>& files) {
  BareResponder responder(directory, true);
  open_all_in_child(kKernelCacheFloor, files);  // first pass: every file answered and marked
  if (responder.ignore_failures() != 0) {
    throw std::runtime_error(std::to_string(responder.ignore_failures()) +
                             " files could not be ignore-marked");
  }
  return open_all_in_child(kKernelCacheFloor, files);
}

LatencyStats filter_manager(const std::string& directory, const std::vector<std::string>& files, bool cache) {
  auto manager = fltport::FilterManager::create();
  if (!manager) throw std::runtime_error("FilterManager::create: " + manager.status().to_string());
  fltport::FilterRegistration allow_all;
  allow_all.name = "allow-all";
  allow_all.operations = static_cast<uint32_t>(fltport::Operation::open);
  allow_all.want_path = false;  // it looks at nothing: the manager's own cost
  allow_all.pre_operation = [cache](const fltport::FileEvent&, fltport::PendingOperation&) {
    return fltport::PreResult::now(fltport::Verdict::allow(cache));
  };
  if (!(*manager)->register_filter(std::move(allow_all)).ok() ||
      !(*manager)->attach("allow-all", directory).ok()) {
    throw std::runtime_error("cannot register and attach the allow-all filter");
  }
  const std::string name =
      std::string("filter manager, allow-all filter, ") + (cache ? "cached" : "uncached");
  if (cache) open_all_in_child(name, files);  // first pass fills the cache
  return open_all_in_child(name, files);
}

// A daemon started for the scanner case, with stdout on a pipe this process reads until it is ready.
struct Daemon {
  std::unique_ptr<ChildProcess> process;
  int output = -1;
  Daemon() = default;
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;
  // SIGTERM, then SIGKILL after 5 s; reaped either way.
  ~Daemon() {
    if (process) {
      ::kill(process->pid(), SIGTERM);
      process->wait_or_kill(std::chrono::milliseconds(5000));
    }
    if (output >= 0) ::close(output);
  }
};

// Starts `argv`; if `ready` is given, waits (bounded) for a line of its stdout containing it.
std::unique_ptr<Daemon> start_process(const std::vector<std::string>& argv, const char* ready) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw_errno("pipe2");
  std::vector<char*> args;  // made before fork: the child only calls async-signal-safe functions
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  auto daemon = std::make_unique<Daemon>();
  daemon->output = out[0];
  daemon->process = std::make_unique<ChildProcess>([&] {
    const int null = ::open("/dev/null", O_WRONLY);
    // Nobody reads a daemon's output after it is ready: a full pipe would stall it.
    ::dup2(ready != nullptr ? out[1] : null, STDOUT_FILENO);
    ::dup2(null, STDERR_FILENO);
    ::execv(args[0], args.data());
    return 127;
  });
  ::close(out[1]);
  std::string seen;
  const auto give_up = Clock::now() + std::chrono::seconds(10);
  while (ready != nullptr && seen.find(ready) == std::string::npos && Clock::now() < give_up) {
    pollfd pfd{daemon->output, POLLIN, 0};
    if (::poll(&pfd, 1, 100) <= 0) continue;
    char buffer[256];
    const ssize_t n = ::read(daemon->output, buffer, sizeof buffer);
    if (n <= 0) break;
    seen.append(buffer, static_cast<size_t>(n));
  }
  if (ready != nullptr && seen.find(ready) == std::string::npos) {
    throw std::runtime_error(argv[0] + " did not report '" + ready + "'");
  }
  return daemon;
}

// fltmgrd with the scanner filter and the scanner service: first pass uncached (every file is
// sent to the service), second pass cached.
std::vector<LatencyStats> scanner(const std::string& directory, const std::vector<std::string>& files,
                                  const std::vector<std::string>& paced_files, const std::string& fltmgrd,
                                  const std::string& plugin_dir, const std::string& service,
                                  const std::string& service_threads) {
  auto host = start_process({fltmgrd, "--foreground", "--plugin-dir", plugin_dir, "--load", "scanner",
                             "--attach", "scanner=" + directory},
                            "fltmgrd: ready");
  std::vector<std::string> service_command{service};
  if (!service_threads.empty()) service_command.insert(service_command.end(), {"-t", service_threads});
  auto scanning = start_process(service_command, nullptr);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // it connects within a few ms
  const pid_t host_pid = host->process->pid(), service_pid = scanning->process->pid();
  auto daemons_cpu = [&] {
    return other_process_cpu_seconds(host_pid) + other_process_cpu_seconds(service_pid);
  };
  std::vector<LatencyStats> rows;
  rows.push_back(open_all_in_child("fltmgrd + scanner + service, uncached", files, daemons_cpu));
  rows.push_back(open_all_in_child("fltmgrd + scanner + service, cached", files, daemons_cpu));
  if (!paced_files.empty()) {  // files this host has not seen: uncached
    rows.push_back(open_all_in_child(paced("fltmgrd + scanner + service, uncached"), paced_files, daemons_cpu,
                                     kPacedGap));
  }
  scanning.reset();  // the service first, as an administrator would stop them
  host.reset();
  return rows;
}

struct Row {
  std::string name;
  std::optional<LatencyStats> stats;
};

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

// One row over the rounds: its median round (by mean), and its means as ratios to another row's
// mean of the same round (NaN-free: rounds where either failed are left out).
struct RoundsOfRow {
  std::string name;
  std::vector<std::optional<LatencyStats>> rounds;

  std::optional<LatencyStats> median_round() const {
    std::vector<const LatencyStats*> measured;
    for (const auto& round : rounds) {
      if (round) measured.push_back(&*round);
    }
    if (measured.empty()) return std::nullopt;
    std::sort(measured.begin(), measured.end(),
              [](const LatencyStats* a, const LatencyStats* b) { return a->mean_us < b->mean_us; });
    return *measured[(measured.size() - 1) / 2];
  }
  std::vector<double> ratios_to(const RoundsOfRow& base) const {
    std::vector<double> ratios;
    for (size_t i = 0; i < rounds.size() && i < base.rounds.size(); ++i) {
      if (rounds[i] && base.rounds[i] && base.rounds[i]->mean_us > 0)
        ratios.push_back(rounds[i]->mean_us / base.rounds[i]->mean_us);
    }
    return ratios;
  }
};

std::string ratio_text(const std::vector<double>& ratios) {
  if (ratios.empty()) return "-";
  char text[48];
  if (ratios.size() == 1) {
    std::snprintf(text, sizeof text, "%.2fx", ratios.front());
  } else {
    std::snprintf(text, sizeof text, "%.2fx (%.2f-%.2f)", median(ratios),
                  *std::min_element(ratios.begin(), ratios.end()),
                  *std::max_element(ratios.begin(), ratios.end()));
  }
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  size_t count = 20000;
  size_t round_count = 5;
  size_t paced_count = 1000;
  std::string json_path;
  std::string fltmgrd = FLTPORT_BENCH_FLTMGRD;
  std::string plugin_dir = FLTPORT_BENCH_PLUGIN_DIR;
  std::string service = FLTPORT_BENCH_SCANNER_SERVICE;
  std::string service_threads;
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (std::strcmp(argv[i], "--files") == 0 && has_value) {
      count = std::stoul(argv[++i]);
    } else if (std::strcmp(argv[i], "--rounds") == 0 && has_value) {
      round_count = std::stoul(argv[++i]);
    } else if (std::strcmp(argv[i], "--paced") == 0 && has_value) {
      paced_count = std::stoul(argv[++i]);
    } else if (std::strcmp(argv[i], "--json") == 0 && has_value) {
      json_path = argv[++i];
    } else if (std::strcmp(argv[i], "--fltmgrd") == 0 && has_value) {
      fltmgrd = argv[++i];
    } else if (std::strcmp(argv[i], "--plugin-dir") == 0 && has_value) {
      plugin_dir = argv[++i];
    } else if (std::strcmp(argv[i], "--service") == 0 && has_value) {
      service = argv[++i];
    } else if (std::strcmp(argv[i], "--service-threads") == 0 && has_value) {
      service_threads = argv[++i];
    } else {
      std::fprintf(stderr,
                   "usage: %s [--files N] [--rounds N] [--paced N] [--json PATH] [--fltmgrd PATH "
                   "--plugin-dir DIR --service PATH] [--service-threads N]\n",
                   argv[0]);
      return 2;
    }
  }
  if (count == 0) count = 1;
  if (round_count == 0) round_count = 1;
  const fltport::bench::MachineInfo machine = fltport::bench::machine_info();
  char pattern[] = "/tmp/fltport-bench-fan-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) return 1;
  const std::string directory = pattern;
  char runtime[] = "/tmp/fltport-bench-run-XXXXXX";
  if (::mkdtemp(runtime) == nullptr) return 1;
  ::setenv("FLTPORT_RUNTIME_DIR", runtime, 1);
  // Distinct files, so that every open of a first pass is a first look for the filters.
  auto make_files = [&directory](const std::string& prefix, size_t how_many) {
    std::vector<std::string> made;
    for (size_t i = 0; i < how_many; ++i) {
      made.push_back(directory + "/" + prefix + std::to_string(i) + ".txt");
      std::ofstream(made.back()) << "clean content " << i;
    }
    return made;
  };
  const std::vector<std::string> files = make_files("file", count);
  const std::vector<std::string> paced_files = make_files("paced", paced_count);

  std::vector<RoundsOfRow> table;  // in the order the rows first ran
  auto record = [&table, round_count](size_t round, const std::string& name,
                                      std::optional<LatencyStats> stats) {
    auto found =
        std::find_if(table.begin(), table.end(), [&](const RoundsOfRow& row) { return row.name == name; });
    if (found == table.end()) found = table.insert(table.end(), RoundsOfRow{name, {}});
    found->rounds.resize(round_count);
    found->rounds[round] = std::move(stats);
  };
  for (size_t round = 0; round < round_count; ++round) {
    std::fprintf(stderr, "round %zu of %zu\n", round + 1, round_count);
    auto run = [&](const std::vector<std::string>& names,
                   const std::function<std::vector<LatencyStats>()>& body) {
      std::fprintf(stderr, "  %s ...\n", names.front().c_str());
      try {
        for (auto& stats : body()) {
          const std::string name = stats.name;  // not stats.name: the argument is moved from first
          record(round, name, std::move(stats));
        }
      } catch (const std::exception& error) {
        std::fprintf(stderr, "  %s failed: %s\n", names.front().c_str(), error.what());
        for (const auto& name : names) record(round, name, std::nullopt);
      }
    };
    run({kNoListener}, [&] { return std::vector{open_all_in_child(kNoListener, files)}; });
    run({kBareResponder, paced(kBareResponder)},
        [&] { return bare_responder(directory, files, paced_files); });
    run({kKernelCacheFloor}, [&] { return std::vector{kernel_cache_floor(directory, files)}; });
    run({"filter manager, allow-all filter, uncached"},
        [&] { return std::vector{filter_manager(directory, files, false)}; });
    run({"filter manager, allow-all filter, cached"},
        [&] { return std::vector{filter_manager(directory, files, true)}; });
    if (!fltmgrd.empty() && !service.empty()) {
      run({"fltmgrd + scanner + service, uncached", "fltmgrd + scanner + service, cached",
           paced("fltmgrd + scanner + service, uncached")},
          [&] {
            return scanner(directory, files, paced_files, fltmgrd, plugin_dir, service, service_threads);
          });
    }
  }
  std::filesystem::remove_all(directory);
  std::filesystem::remove_all(runtime);

  std::vector<Row> rows;
  std::vector<LatencyStats> measured;
  for (const RoundsOfRow& row : table) {
    rows.push_back({row.name, row.median_round()});
    if (rows.back().stats) measured.push_back(*rows.back().stats);
  }
  fltport::bench::assign_floor_ratios(measured, kNoListener);
  const auto rounds_of = [&table](const char* name) -> const RoundsOfRow* {
    for (const RoundsOfRow& row : table) {
      if (row.name == name) return &row;
    }
    return nullptr;
  };
  const RoundsOfRow* no_listener = rounds_of(kNoListener);
  const RoundsOfRow* bare = rounds_of(kBareResponder);
  const RoundsOfRow* bare_paced = rounds_of(paced(kBareResponder).c_str());

  std::printf(
      "\nopen()+close() of %zu files, each once per pass, in a child process (no warm-up), %zu round%s\n",
      count, round_count, round_count == 1 ? "" : "s");
  std::printf("%-44s %8s %8s %8s %9s %9s %11s %8s %s\n", "case", "us/open", "p50 us", "p99 us", "p99.9 us",
              "opens/s", "CPU us/open", "vs none", "vs bare (range over rounds)");
  std::printf("%s\n", std::string(130, '-').c_str());
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    if (!row.stats) {
      std::printf("%-44s %8s\n", row.name.c_str(), "failed");
      continue;
    }
    const LatencyStats& s = *row.stats;
    const std::vector<double> to_none =
        no_listener ? table[i].ratios_to(*no_listener) : std::vector<double>{};
    const std::string versus_none = to_none.empty() ? "-" : ratio_text({median(to_none)});
    const RoundsOfRow* base = is_paced(row.name) ? bare_paced : bare;
    const std::string versus_bare = base ? ratio_text(table[i].ratios_to(*base)) : "-";
    std::printf("%-44s %8.2f %8.2f %8.2f %9.2f %9.0f %11.2f %8s %s\n", row.name.c_str(), s.mean_us, s.p50_us,
                s.p99_us, s.p999_us, s.round_trips_per_sec, s.cpu_us_per_round_trip, versus_none.c_str(),
                versus_bare.c_str());
  }
  // A cached open costs the kernel's mark lookup whatever user space does: how near each cached row
  // comes to that floor, and where the floor itself stands.
  if (const RoundsOfRow* floor = rounds_of(kKernelCacheFloor)) {
    for (const RoundsOfRow& row : table) {
      if (!row.name.ends_with(", cached")) continue;
      std::printf("%s: %s the kernel's floor (%s)\n", row.name.c_str(),
                  ratio_text(row.ratios_to(*floor)).c_str(), kKernelCacheFloor);
    }
    if (no_listener) {
      std::printf("the floor itself: %s no listener\n", ratio_text(floor->ratios_to(*no_listener)).c_str());
    }
  }
  std::printf(
      "Each row: its median round (by us/open). us/open = mean; ratios = the median over rounds of the\n"
      "ratio of means within a round (\"1 ms apart\" rows: to the bare responder's 1 ms apart row). CPU\n"
      "us/open = the opening child + this process (responder, filter manager) + fltmgrd and the service\n"
      "(from /proc, 10 ms ticks), per open (with the 1 ms gaps: what waiting costs).\n");
  std::fflush(stdout);

  if (!json_path.empty()) {
    fltport::bench::JsonExtras extras;
    extras.machine = &machine;
    extras.settings = {{"files", std::to_string(count)}, {"rounds", std::to_string(round_count)}};
    try {
      fltport::bench::write_json(measured, json_path, extras);
    } catch (const std::exception& error) {
      std::fprintf(stderr, "%s\n", error.what());
      return 1;
    }
  }
  for (const RoundsOfRow& row : table) {
    for (const auto& round : row.rounds) {
      if (!round) return 1;  // a failed pass, even in one round, fails the run
    }
  }
  return 0;
}
