// Issue 6, soak: mixed load with client churn for FLTPORT_SOAK_SECONDS (default 600; the CI suite
// runs a 20-second variant). scripts/soak.sh runs the full one.
//
// The port: a filter process (this binary, --soak-role=filter) with a port for 16 connections and
// 6 threads calling FltSendMessage with mixed timeouts and sizes; services (this binary,
// --soak-role=service) started and ended all the time: each serves with 1-4 threads, answers late
// or never now and then, calls FilterSendMessage, and ends with CloseHandle or _exit with messages
// in hand, or is killed -9 by the test; more are started than the port admits. Every
// FltSendMessage must end in exactly one of replied (with the reply to that very message), timed
// out, disconnected, and within its timeout plus a bound.
//
// The file system path, where fanotify is permitted: fltmgrd with the scanner on a mkdtemp
// directory, its service restarted every 1-4 s (kill -9 or SIGTERM), a process (--soak-role=files)
// opening the files and rewriting some (so that the scanner keeps scanning). No open may fail.
//
// The filter process's and fltmgrd's RSS, fds and threads are sampled after the warm-up and at the
// end, each time with the load stopped and no service connected (fltmgrd: its service connected),
// so that both samples describe the same state; fds and threads must come back exactly (within
// kFdSlack/kThreadSlack), RSS within kRssSlack. Under ASan and TSan RSS is reported, not checked
// (their allocators keep freed memory in quarantine and shadow).
//
// Environment: FLTPORT_SOAK_SECONDS (5..840, default 600), FLTPORT_SOAK_SEED (default 6),
// FLTPORT_SOAK_SCANNER=0 (no fanotify half), FLTPORT_SOAK_REWRITES=0 (the file load only opens),
// FLTPORT_SOAK_DEBUG=1 (the filter process's fds at each sample).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/fanotify.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "soak/soak_shared.hpp"
#include "support/host_harness.hpp"
#include "support/proc_info.hpp"
#include "support/runtime_dir.hpp"
#include "support/sanitized.hpp"

namespace fltport::soak {
namespace {

using test::Clock;
using test::Program;
using namespace std::chrono_literals;
using std::chrono::milliseconds;

constexpr int kSenders = 6;
constexpr long kFdSlack = 2;         // fds: end <= start + 2
constexpr long kThreadSlack = 2;     // threads: end <= start + 2
constexpr long kRssSlackKib = 4096;  // RSS: end <= start + 4 MiB + 10 % of start
constexpr int kScannerDeadlineMs = 500;
constexpr long long kWorstOpenMs = 3000;  // any open, service up or down (deadline 500 ms)

// ---- /proc ----

// FLTPORT_SOAK_DEBUG=1: what each of a process's fds is, at each sample.
void print_fds(const char* who, pid_t pid) {
  if (std::getenv("FLTPORT_SOAK_DEBUG") == nullptr) return;
  std::printf("[ debug ] %s fds: %s\n", who, test::descriptors_of(pid).c_str());
}

void keep_peak(test::ProcessFigures& peak, const test::ProcessFigures& now) {
  peak.rss_kib = std::max(peak.rss_kib, now.rss_kib);
  peak.fds = std::max(peak.fds, now.fds);
  peak.threads = std::max(peak.threads, now.threads);
}

std::string mib(long kib) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(kib) / 1024.0);
  return text;
}

std::string describe(const test::ProcessFigures& start, const test::ProcessFigures& end,
                     const test::ProcessFigures& peak) {
  return "RSS " + mib(start.rss_kib) + " -> " + mib(end.rss_kib) + ", fds " + std::to_string(start.fds) +
         " -> " + std::to_string(end.fds) + ", threads " + std::to_string(start.threads) + " -> " +
         std::to_string(end.threads) + " (peak under load: RSS " + mib(peak.rss_kib) + ", " +
         std::to_string(peak.fds) + " fds, " + std::to_string(peak.threads) + " threads)";
}

void expect_flat(const char* who, const test::ProcessFigures& start, const test::ProcessFigures& end) {
  EXPECT_GT(start.fds, 0) << who;
  EXPECT_LE(end.fds, start.fds + kFdSlack) << who << ": fds " << start.fds << " -> " << end.fds;
  EXPECT_LE(end.threads, start.threads + kThreadSlack)
      << who << ": threads " << start.threads << " -> " << end.threads;
  if (!test::kSanitized) {
    EXPECT_LE(end.rss_kib, start.rss_kib + kRssSlackKib + start.rss_kib / 10)
        << who << ": RSS " << start.rss_kib << " -> " << end.rss_kib << " KiB";
  }
}

std::string self_path() {
  char path[4096];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof path - 1);
  if (n <= 0) return {};
  path[n] = '\0';
  return path;
}

int env_int(const char* name, int fallback) {
  const char* text = std::getenv(name);
  return text != nullptr && *text != '\0' ? std::atoi(text) : fallback;
}

// ---- the file load: a process (this binary, --soak-role=files) that opens the watched files and
// now and then rewrites one (each write is scanned, and the next open of that file is scanned
// again: the verdict cache forgets written files). Paced (an open every 0.5 ms), so that it does
// not take a CPU from the port's load. It counts in the shared file until files_stop. ----

void keep_max(std::atomic<uint64_t>& worst, uint64_t value) {
  uint64_t seen = worst.load();
  while (value > seen && !worst.compare_exchange_weak(seen, value)) {
  }
}

}  // namespace

int run_files(const std::string& shared_path, const std::string& directory, int count, bool rewrites,
              uint64_t seed) {
  Shared* shared = map_shared(shared_path, false);
  ::alarm(1000);  // its own watchdog (the test stops it long before)
  Rng rng(seed);
  auto elapsed_us = [](Clock::time_point since) {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - since).count());
  };
  for (uint64_t i = 0; shared->files_stop.load() == 0; ++i) {
    const std::string path = directory + "/file" + std::to_string(rng.below(static_cast<uint32_t>(count)));
    const auto start = Clock::now();
    if (rewrites && i % 20 == 19) {
      const int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
      bool ok = fd >= 0;
      if (ok) {
        const std::string content = "clean content " + std::to_string(i) + "\n";
        ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
        ::close(fd);
      }
      keep_max(shared->worst_write_us, elapsed_us(start));
      if (!ok) shared->file_write_failures++;
      shared->file_writes++;
    } else {
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        ::close(fd);
      } else {
        shared->file_open_failures++;
      }
      keep_max(shared->worst_open_us, elapsed_us(start));
      shared->file_opens++;
    }
    std::this_thread::sleep_for(500us);
  }
  return 0;
}

namespace {

// ---- the file system half: fltmgrd + scanner + its service restarted + the file load ----

class ScannerLoad {
 public:
  // Why the scanner half does not run, or "" when it can.
  static std::string unavailable() {
    if (env_int("FLTPORT_SOAK_SCANNER", 1) == 0) return "FLTPORT_SOAK_SCANNER=0";
    for (const std::string& file :
         {std::string(FLTPORT_TEST_FLTMGRD),
          std::string(FLTPORT_TEST_SCANNER_PLUGIN_DIR) + "/fltport-filter-scanner.so",
          std::string(FLTPORT_TEST_SCANNER_SERVICE)}) {
      if (file.empty() || file[0] != '/' || ::access(file.c_str(), R_OK) != 0) return "not built: " + file;
    }
    const int probe = ::fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, O_RDONLY);
    if (probe < 0) return std::string("fanotify permission events not permitted: ") + std::strerror(errno);
    ::close(probe);
    return "";
  }

  ScannerLoad(const std::string& runtime, const std::string& self, const std::string& shared_path,
              Shared* shared, uint64_t seed)
      : runtime_(runtime), self_(self), shared_path_(shared_path), shared_(shared), rng_(seed) {}

  ~ScannerLoad() {
    files_load_.reset();  // SIGKILL
    service_.reset();
    if (fltmgrd_) fltmgrd_->terminate(5s);
    if (!watched_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(watched_, ignored);
    }
  }

  ::testing::AssertionResult start() {
    char pattern[] = "/tmp/fltport-soak-XXXXXX";
    if (::mkdtemp(pattern) == nullptr)
      return ::testing::AssertionFailure() << "mkdtemp: " << std::strerror(errno);
    watched_ = pattern;
    for (int i = 0; i < kFiles; ++i)
      test::write_file(watched_ + "/file" + std::to_string(i), "clean content\n");
    fltmgrd_log_ = runtime_ + "/fltmgrd.log";
    fltmgrd_ = std::make_unique<Program>(
        std::vector<std::string>{FLTPORT_TEST_FLTMGRD, "--foreground", "--plugin-dir",
                                 FLTPORT_TEST_SCANNER_PLUGIN_DIR, "--load", "scanner", "--attach",
                                 "scanner=" + watched_, "--deadline-ms",
                                 "scanner=" + std::to_string(kScannerDeadlineMs)},
        fltmgrd_log_, true);
    if (fltmgrd_->pid() <= 0 || !fltmgrd_->wait_for_stdout_line("fltmgrd: ready", 10s)) {
      return ::testing::AssertionFailure() << "fltmgrd did not start:\n" << test::read_file(fltmgrd_log_);
    }
    start_service();
    resume();
    return ::testing::AssertionSuccess();
  }

  pid_t fltmgrd_pid() const { return fltmgrd_ ? fltmgrd_->pid() : -1; }
  bool fltmgrd_alive() { return fltmgrd_ && fltmgrd_->alive(); }

  // One step of the service's life: restarts, reaping, noticing the connection.
  void tick(bool restarts) {
    const auto now = Clock::now();
    if (service_ && !service_->alive()) {
      const std::optional<int> status = service_->wait_exit(0ms);
      const std::string log = test::read_file(service_log_);
      if (terminating_ && status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0) {
        // SIGTERM: it closed its port and ended.
      } else if (status && WIFEXITED(*status) && WEXITSTATUS(*status) == 1 && !connected_ &&
                 log.find("0x800704D6") != std::string::npos) {
        ++connect_retries_;  // the previous one's connection was not closed yet (MaxConnections 1)
      } else {
        ++service_failures_;
        failure_text_ += "scanner service " + std::to_string(service_->pid()) + " ended unexpectedly (" +
                         (status ? std::to_string(*status) : std::string("?")) + "):\n" + log + "\n";
      }
      service_.reset();
      next_start_ = now + milliseconds(rng_.between(10, 60));
    }
    if (!service_ && now >= next_start_) start_service();
    if (service_ && !connected_ &&
        test::read_file(service_log_).find("connected to \\ScannerPort") != std::string::npos) {
      connected_ = true;
      next_restart_ = now + milliseconds(rng_.between(1000, 4000));
    }
    if (service_ && terminating_ && now >= terminate_deadline_) {
      service_->kill();  // did not end within 5 s of SIGTERM
      ++service_failures_;
      failure_text_ += "scanner service did not end within 5 s of SIGTERM\n";
      service_.reset();
    }
    if (restarts && service_ && connected_ && !terminating_ && now >= next_restart_) {
      if (rng_.per_mille(500)) {
        service_->kill();
        ++kills_;
        service_.reset();
        next_start_ = now + milliseconds(rng_.between(0, 50));
      } else {
        service_->signal(SIGTERM);
        ++terms_;
        terminating_ = true;
        terminate_deadline_ = now + 5s;
      }
    }
  }

  // Load stopped, the service connected: fltmgrd is idle with one connection.
  ::testing::AssertionResult quiesce() {
    if (auto stopped = stop_files(); !stopped) return stopped;
    const auto until = Clock::now() + 20s;
    while (!(service_ && connected_ && !terminating_) && Clock::now() < until) {
      tick(false);
      std::this_thread::sleep_for(10ms);
    }
    if (!(service_ && connected_))
      return ::testing::AssertionFailure() << "the scanner service did not connect";
    std::this_thread::sleep_for(500ms);
    return ::testing::AssertionSuccess();
  }

  void resume() {
    shared_->files_stop.store(0);
    files_load_ = std::make_unique<Program>(
        std::vector<std::string>{self_, "--soak-role=files", shared_path_, watched_, std::to_string(kFiles),
                                 rewrites_ ? "1" : "0", std::to_string(rng_.next())},
        runtime_ + "/files.log", false);
  }

  void finish() {
    files_stopped_ = stop_files();
    service_.reset();
    if (fltmgrd_) {
      const std::optional<int> status = fltmgrd_->terminate(10s);
      fltmgrd_exit_ = status && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
    }
  }

  void report_and_check(const test::ProcessFigures& start, const test::ProcessFigures& end,
                        const test::ProcessFigures& peak) {
    EXPECT_EQ(service_failures_, 0) << failure_text_;
    EXPECT_TRUE(files_stopped_);
    const uint64_t opens = shared_->file_opens, open_failures = shared_->file_open_failures;
    const uint64_t writes = shared_->file_writes, write_failures = shared_->file_write_failures;
    const uint64_t worst_open_us = shared_->worst_open_us, worst_write_us = shared_->worst_write_us;
    EXPECT_GT(opens, 0u);
    EXPECT_EQ(open_failures, 0u) << "opens refused (the scanner's default is allow)";
    EXPECT_EQ(write_failures, 0u);
    EXPECT_LT(worst_open_us / 1000, static_cast<uint64_t>(kWorstOpenMs));
    EXPECT_LT(worst_write_us / 1000, static_cast<uint64_t>(kWorstOpenMs));
    EXPECT_EQ(fltmgrd_exit_, 0) << "fltmgrd's exit after SIGTERM\n" << test::read_file(fltmgrd_log_);
    expect_flat("fltmgrd", start, end);
    std::printf(
        "[ measured ] soak fltmgrd + scanner: service restarted %d times (%d kill -9, %d SIGTERM, %d connect "
        "retries); %llu opens (%llu failed, worst %.1f ms), %llu rewrites (%llu failed, worst %.1f ms); "
        "deadline %d ms\n",
        kills_ + terms_, kills_, terms_, connect_retries_, static_cast<unsigned long long>(opens),
        static_cast<unsigned long long>(open_failures), static_cast<double>(worst_open_us) / 1000.0,
        static_cast<unsigned long long>(writes), static_cast<unsigned long long>(write_failures),
        static_cast<double>(worst_write_us) / 1000.0, kScannerDeadlineMs);
    std::printf("[ measured ] soak fltmgrd: %s\n", describe(start, end, peak).c_str());
  }

 private:
  void start_service() {
    service_log_ = runtime_ + "/scanner-service-" + std::to_string(++starts_) + ".log";
    std::error_code ignored;
    if (starts_ > 2)
      std::filesystem::remove(runtime_ + "/scanner-service-" + std::to_string(starts_ - 2) + ".log", ignored);
    service_ = std::make_unique<Program>(std::vector<std::string>{FLTPORT_TEST_SCANNER_SERVICE, "-t", "2"},
                                         service_log_, false);
    connected_ = false;
    terminating_ = false;
  }
  // Stops the file load and waits for it to end.
  ::testing::AssertionResult stop_files() {
    if (!files_load_) return ::testing::AssertionSuccess();
    shared_->files_stop.store(1);
    std::optional<int> status = files_load_->wait_exit(15s);
    std::string stuck;
    if (!status) {
      const std::string host = test::describe_tasks(fltmgrd_pid());
      stuck = test::describe_tasks(files_load_->pid()) + "fltmgrd:\n" + host + "fanotify groups:\n" +
              test::describe_fanotify_groups();
      if (host.find("fanotify_handle_event") != std::string::npos) {
        stuck +=
            "fltmgrd itself waits in open(2) for a permission event that nobody reads (as when a "
            "post-operation ran inline on the only reader and opened a file under the host's own marks, "
            "fixed in eada836)\n";
      }
    }
    const std::string log = test::read_file(runtime_ + "/files.log");
    files_load_.reset();
    if (!status)
      return ::testing::AssertionFailure() << "the file load did not stop within 15 s\n" << stuck << log;
    if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      return ::testing::AssertionFailure() << "the file load ended with wait status " << *status << "\n"
                                           << log;
    }
    return ::testing::AssertionSuccess();
  }

  static constexpr int kFiles = 200;
  std::string runtime_, self_, shared_path_;
  Shared* shared_;
  Rng rng_;
  std::string watched_, fltmgrd_log_, service_log_;
  std::unique_ptr<Program> fltmgrd_, service_, files_load_;
  ::testing::AssertionResult files_stopped_ = ::testing::AssertionSuccess();
  const bool rewrites_ = env_int("FLTPORT_SOAK_REWRITES", 1) != 0;
  bool connected_ = false, terminating_ = false;
  Clock::time_point next_start_{}, next_restart_{}, terminate_deadline_{};
  int starts_ = 0, kills_ = 0, terms_ = 0, connect_retries_ = 0, service_failures_ = 0;
  int fltmgrd_exit_ = -1;
  std::string failure_text_;
};

// ---- the test ----

class Soak : public ::testing::Test {
 protected:
  test::ScopedRuntimeDir runtime_;
};

TEST_F(Soak, MixedLoadWithClientChurn) {
  const int seconds = std::clamp(env_int("FLTPORT_SOAK_SECONDS", 600), 5, 840);
  const uint64_t seed = static_cast<uint64_t>(env_int("FLTPORT_SOAK_SEED", 6));
  ::alarm(static_cast<unsigned>(seconds + 240));  // watchdog: the children die with us (PR_SET_PDEATHSIG)
  const milliseconds duration = std::chrono::seconds(seconds);
  const milliseconds warm_up = std::chrono::seconds(std::clamp(seconds / 10, 3, 30));
  const std::string self = self_path();
  ASSERT_FALSE(self.empty());
  const std::string shared_path = runtime_.path() + "/soak.shared";
  Shared* shared = map_shared(shared_path, true);
  const std::string filter_log = runtime_.path() + "/filter.log";
  const std::string services_log = runtime_.path() + "/services.log";
  Rng rng(seed);

  // The filter process.
  Program filter({self, "--soak-role=filter", shared_path, std::to_string(kSenders), std::to_string(seed)},
                 filter_log, false);
  ASSERT_GT(filter.pid(), 0);
  for (const auto until = Clock::now() + 10s; shared->filter_ready.load() == 0 && Clock::now() < until;) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(shared->filter_ready.load(), 1u) << test::read_file(filter_log);

  // The file system half, where it can run.
  const std::string scanner_off = ScannerLoad::unavailable();
  std::unique_ptr<ScannerLoad> scanner;
  if (scanner_off.empty()) {
    scanner = std::make_unique<ScannerLoad>(runtime_.path(), self, shared_path, shared, seed + 1);
    ASSERT_TRUE(scanner->start());
  } else {
    std::printf("[ measured ] soak: the fltmgrd + scanner half does not run (%s)\n", scanner_off.c_str());
  }

  // The services and the churn.
  std::vector<std::unique_ptr<Program>> services;
  uint64_t spawned = 0, killed = 0, quiesce_killed = 0, crashed = 0;
  uint64_t hung_calls = 0;
  std::string crash_text;
  int target = 12;
  test::ProcessFigures filter_peak, fltmgrd_peak;
  auto last_sample = Clock::now();

  auto reap = [&] {
    for (auto it = services.begin(); it != services.end();) {
      if ((*it)->alive()) {
        ++it;
        continue;
      }
      const std::optional<int> status = (*it)->wait_exit(0ms);
      if (!status || !WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
        ++crashed;
        crash_text += "service " + std::to_string((*it)->pid()) + " ended with wait status " +
                      (status ? std::to_string(*status) : std::string("?")) + "\n";
      }
      it = services.erase(it);
    }
  };
  auto check_calls = [&] {
    const int64_t now = monotonic_ns();
    for (int i = 0; i < kSenders; ++i) {
      const int64_t start = shared->senders[i].call_start_ns.load();
      const uint32_t timeout_ms = shared->senders[i].timeout_ms.load();
      if (start == 0) continue;
      const int64_t bound_ms = timeout_ms == kNoTimeout ? 60000 : int64_t{timeout_ms} + 10000;
      if ((now - start) / 1000000 > bound_ms) {
        ++hung_calls;
        ADD_FAILURE() << "FltSendMessage on sender " << i << " has run " << (now - start) / 1000000
                      << " ms with a timeout of " << timeout_ms << " ms";
      }
    }
  };
  // One step of the load: reap, start services up to the target, kill some, watch the calls.
  auto step = [&](bool churn) {
    reap();
    if (churn) {
      if (rng.per_mille(10)) target = static_cast<int>(rng.between(4, 22));  // sometimes more than 16
      for (int started = 0; started < 2 && static_cast<int>(services.size()) < target; ++started) {
        services.push_back(std::make_unique<Program>(
            std::vector<std::string>{self, "--soak-role=service", shared_path, std::to_string(rng.next())},
            services_log, false));
        ++spawned;
      }
      if (!services.empty() && rng.per_mille(25)) {  // about one a second
        const size_t victim = rng.below(static_cast<uint32_t>(services.size()));
        services[victim]->kill();
        services.erase(services.begin() + static_cast<long>(victim));
        ++killed;
      }
    }
    if (scanner) scanner->tick(churn);
    check_calls();
    if (Clock::now() - last_sample >= 1s) {
      last_sample = Clock::now();
      keep_peak(filter_peak, test::figures_of(filter.pid()));
      if (scanner) keep_peak(fltmgrd_peak, test::figures_of(scanner->fltmgrd_pid()));
    }
    ASSERT_TRUE(filter.alive()) << "the filter process ended:\n" << test::read_file(filter_log);
    if (scanner) {
      ASSERT_TRUE(scanner->fltmgrd_alive()) << "fltmgrd ended";
    }
  };
  auto run_for = [&](milliseconds how_long) {
    for (const auto until = Clock::now() + how_long; Clock::now() < until && !HasFatalFailure();) {
      step(true);
      std::this_thread::sleep_for(20ms);
    }
  };
  // Every service gone and every call returned: the filter process is idle again.
  auto quiesce = [&]() -> ::testing::AssertionResult {
    for (auto& service : services) service->kill();
    quiesce_killed += services.size();
    services.clear();
    const auto until = Clock::now() + 15s;
    auto idle = [&] {
      if (shared->live_connections.load() != 0) return false;
      for (int i = 0; i < kSenders; ++i) {
        if (shared->senders[i].call_start_ns.load() != 0) return false;
      }
      return true;
    };
    while (!idle() && Clock::now() < until) std::this_thread::sleep_for(10ms);
    if (!idle()) return ::testing::AssertionFailure() << "the filter did not become idle within 15 s";
    if (scanner) {
      if (auto ready = scanner->quiesce(); !ready) return ready;
    }
    // Threads that are ending (a connection's) leave within moments: wait until the count is steady.
    long previous = -1;
    for (int steady = 0, rounds = 0; steady < 3 && rounds < 50; ++rounds) {
      const long now = test::figures_of(filter.pid()).threads;
      steady = now == previous ? steady + 1 : 0;
      previous = now;
      std::this_thread::sleep_for(100ms);
    }
    return ::testing::AssertionSuccess();
  };

  const auto load_start = Clock::now();
  run_for(warm_up);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(quiesce());
  print_fds("filter start", filter.pid());
  const test::ProcessFigures filter_start = test::figures_of(filter.pid());
  const test::ProcessFigures fltmgrd_start =
      scanner ? test::figures_of(scanner->fltmgrd_pid()) : test::ProcessFigures{};
  const uint64_t sent_at_start = shared->sent.load();
  if (scanner) scanner->resume();
  run_for(duration - std::chrono::duration_cast<milliseconds>(Clock::now() - load_start));
  ASSERT_FALSE(HasFatalFailure());
  const auto load_ms = std::chrono::duration_cast<milliseconds>(Clock::now() - load_start).count();
  ASSERT_TRUE(quiesce());
  print_fds("filter end", filter.pid());
  const test::ProcessFigures filter_end = test::figures_of(filter.pid());
  const test::ProcessFigures fltmgrd_end =
      scanner ? test::figures_of(scanner->fltmgrd_pid()) : test::ProcessFigures{};
  const uint64_t sent_between = shared->sent.load() - sent_at_start;

  // Stop: the filter's senders end, it closes its port and unregisters.
  shared->stop.store(1);
  const std::optional<int> filter_status = filter.wait_exit(30s);
  ASSERT_TRUE(filter_status.has_value()) << "the filter process did not end";
  EXPECT_TRUE(WIFEXITED(*filter_status) && WEXITSTATUS(*filter_status) == 0)
      << "filter wait status " << *filter_status << "\n"
      << test::read_file(filter_log);
  EXPECT_EQ(shared->filter_done.load(), 1u);
  if (scanner) scanner->finish();

  const Shared& s = *shared;
  const uint64_t sent = s.sent, replied = s.replied, timed_out = s.timed_out, disconnected = s.disconnected;
  std::printf("[ measured ] soak: %.1f s of load (warm-up %lld s, seed %llu), %d filter threads sending\n",
              static_cast<double>(load_ms) / 1000.0, static_cast<long long>(warm_up.count() / 1000),
              static_cast<unsigned long long>(seed), kSenders);
  std::printf(
      "[ measured ] soak FltSendMessage: %llu sent = %llu replied + %llu timed out + %llu disconnected "
      "(other statuses %llu, wrong replies %llu; %llu between the two samples); worst STATUS_TIMEOUT %.1f ms "
      "after its timeout\n",
      static_cast<unsigned long long>(sent), static_cast<unsigned long long>(replied),
      static_cast<unsigned long long>(timed_out), static_cast<unsigned long long>(disconnected),
      static_cast<unsigned long long>(s.other_status.load()),
      static_cast<unsigned long long>(s.bad_reply.load()), static_cast<unsigned long long>(sent_between),
      static_cast<double>(s.max_timeout_overrun_us.load()) / 1000.0);
  auto mean_ms = [](uint64_t total_us, uint64_t n) {
    return n == 0 ? 0.0 : static_cast<double>(total_us) / 1000.0 / n;
  };
  std::printf(
      "[ measured ] soak FltSendMessage mean time: replied %.2f ms, timed out %.1f ms, disconnected %.1f "
      "ms\n",
      mean_ms(s.replied_us, replied), mean_ms(s.timed_out_us, timed_out),
      mean_ms(s.disconnected_us, disconnected));
  std::printf(
      "[ measured ] soak services: %llu started, %llu connected (%llu gave up at MaxConnections %d, %llu "
      "retries), connections churned %llu (DisconnectNotify %llu); ended by CloseHandle %llu, by _exit %llu, "
      "killed -9 %llu (+%llu at the two samples); unexpected ends %llu\n",
      static_cast<unsigned long long>(spawned), static_cast<unsigned long long>(s.svc_connected.load()),
      static_cast<unsigned long long>(s.svc_refused.load()), kMaxConnections,
      static_cast<unsigned long long>(s.svc_limit_retries.load()),
      static_cast<unsigned long long>(s.connects.load()),
      static_cast<unsigned long long>(s.disconnects.load()),
      static_cast<unsigned long long>(s.svc_end_close.load()),
      static_cast<unsigned long long>(s.svc_end_exit.load()), static_cast<unsigned long long>(killed),
      static_cast<unsigned long long>(quiesce_killed), static_cast<unsigned long long>(crashed));
  std::printf(
      "[ measured ] soak service side: %llu messages taken; replies %llu sent (%llu no waiter, %llu after "
      "CloseHandle, of %llu attempted), %llu late, %llu never answered; FilterSendMessage %llu (%llu "
      "answered, "
      "%llu after CloseHandle), MessageNotify %llu\n",
      static_cast<unsigned long long>(s.svc_got.load()),
      static_cast<unsigned long long>(s.svc_reply_ok.load()),
      static_cast<unsigned long long>(s.svc_reply_no_waiter.load()),
      static_cast<unsigned long long>(s.svc_reply_closed.load()),
      static_cast<unsigned long long>(s.svc_reply_attempts.load()),
      static_cast<unsigned long long>(s.svc_late.load()),
      static_cast<unsigned long long>(s.svc_dropped.load()),
      static_cast<unsigned long long>(s.svc_requests.load()),
      static_cast<unsigned long long>(s.svc_request_ok.load()),
      static_cast<unsigned long long>(s.svc_request_closed.load()),
      static_cast<unsigned long long>(s.notify_calls.load()));
  std::printf("[ measured ] soak filter process: %s\n",
              describe(filter_start, filter_end, filter_peak).c_str());

  // Zero lost messages: every call ended in exactly one of the three outcomes, with its own reply.
  EXPECT_EQ(sent, replied + timed_out + disconnected);
  EXPECT_EQ(s.other_status.load(), 0u) << "last other status 0x" << std::hex << s.last_other_status.load();
  EXPECT_EQ(s.bad_reply.load(), 0u);
  EXPECT_EQ(hung_calls, 0u);
  EXPECT_GT(replied, 0u);
  EXPECT_GT(sent_between, 0u);
  // Every reply the filter counted was sent by a service; every reply a service sent that the filter
  // did not count as replied, and every reply that found no waiter, answers a message whose call
  // timed out or saw the connection end.
  EXPECT_LE(replied, s.svc_reply_attempts.load());
  EXPECT_LE(s.svc_reply_ok.load(), replied + timed_out + disconnected);
  EXPECT_LE(s.svc_reply_no_waiter.load(), timed_out + disconnected);
  EXPECT_LE(s.svc_request_ok.load(), s.notify_calls.load());
  // Nothing the services saw was wrong.
  EXPECT_EQ(s.svc_msg_bad.load(), 0u);
  EXPECT_EQ(s.svc_get_other.load(), 0u);
  EXPECT_EQ(s.svc_reply_other.load(), 0u);
  EXPECT_EQ(s.svc_request_other.load(), 0u);
  EXPECT_EQ(s.svc_request_bad.load(), 0u);
  EXPECT_EQ(s.svc_connect_other.load(), 0u);
  EXPECT_EQ(s.notify_bad.load(), 0u);
  EXPECT_EQ(crashed, 0u) << crash_text << test::read_file(services_log);
  EXPECT_EQ(s.connects.load(), s.disconnects.load()) << "every connection's DisconnectNotify ran";
  if (s.last_unexpected_hr.load() != 0) ADD_FAILURE() << test::read_file(services_log);
  expect_flat("the filter process", filter_start, filter_end);
  if (scanner) scanner->report_and_check(fltmgrd_start, fltmgrd_end, fltmgrd_peak);
  ::munmap(shared, sizeof(Shared));
  ::alarm(0);
}

}  // namespace
}  // namespace fltport::soak

// The same binary is the filter process and the services (exec'd, so that the test forks only
// programs that start from scratch, never copies of its own threads).
int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]).rfind("--soak-role=", 0) == 0) {
    try {
      const std::string role = argv[1];
      if (role == "--soak-role=filter" && argc == 5) {
        return fltport::soak::run_filter(argv[2], std::atoi(argv[3]), std::strtoull(argv[4], nullptr, 10));
      }
      if (role == "--soak-role=service" && argc == 4) {
        return fltport::soak::run_service(argv[2], std::strtoull(argv[3], nullptr, 10));
      }
      if (role == "--soak-role=files" && argc == 7) {
        return fltport::soak::run_files(argv[2], argv[3], std::atoi(argv[4]), std::atoi(argv[5]) != 0,
                                        std::strtoull(argv[6], nullptr, 10));
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: %s\n", argv[1], e.what());
      return 3;
    }
    std::fprintf(stderr,
                 "usage: %s --soak-role=filter SHARED SENDERS SEED | --soak-role=service SHARED SEED | "
                 "--soak-role=files SHARED DIRECTORY COUNT REWRITES SEED\n",
                 argv[0]);
    return 2;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
