// Never freeze the host (issue 7): the failure modes that froze fapolicyd's users, each run as root
// on real fanotify against the test's own mkdtemp directory, with fltmgrd, the scanner and the
// probe filter plugin (tests/plugins/probe_filter.c) as real processes, under an alarm.
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/utsname.h>

#include <cstdlib>
#include <optional>
#include <string>

#include "support/host_harness.hpp"
#include "support/proc_info.hpp"
#include "support/scoped_env.hpp"

#ifndef FLTPORT_TEST_PROBE_PLUGIN_DIR
#define FLTPORT_TEST_PROBE_PLUGIN_DIR ""
#endif
#ifndef FLTMC_PATH
#define FLTMC_PATH ""
#endif

namespace fltport {
namespace {

using namespace std::chrono_literals;
using namespace fltport::test;

// Every open held by a host that stops completes within this of the stop.
constexpr milliseconds kReleaseBound = kSanitized ? 3s : 1s;
// ... and within this of a fatal signal, in every preset (issue 7's bound).
constexpr milliseconds kFatalReleaseBound = 1s;

// The sanitizer runtimes catch fatal signals themselves and spend a second or more symbolizing a
// report before the process dies; a host built with them is told to leave those signals to
// fltmgrd's own guard, as a production build does.
std::string without_sanitizer_signal_handlers(const char* variable) {
  const char* current = std::getenv(variable);
  std::string options = current != nullptr ? current : "";
  if (!options.empty()) options += ':';
  return options + "handle_segv=0:handle_sigbus=0:handle_abort=0:handle_sigill=0:handle_sigfpe=0";
}
// When the probe filter faulted, from its log line (nullopt when not logged).
std::optional<Clock::time_point> fault_time(const std::string& log) {
  const std::string mark = "at monotonic ns ";
  const auto at = log.find(mark);
  if (at == std::string::npos) return std::nullopt;
  return Clock::time_point{std::chrono::nanoseconds(std::atoll(log.c_str() + at + mark.size()))};
}
constexpr long long kRssGrowthBoundKib = kSanitized ? 1024 * 1024 : 64 * 1024;

// A number field of `fltmc host --json` (whose only row is the host), or -1.
long long host_field(const std::string& json, const std::string& name) {
  const auto at = json.find("\"" + name + "\": ");
  if (at == std::string::npos) return -1;
  return std::atoll(json.c_str() + at + name.size() + 4);
}

// fltmc's output (stdout and stderr); `runtime_dir`: another host's, instead of the test's own.
std::string run_fltmc(const std::string& arguments, const std::string& runtime_dir = "") {
  const std::string environment = runtime_dir.empty() ? "" : "FLTPORT_RUNTIME_DIR=" + runtime_dir + " ";
  std::string out;
  if (FILE* pipe = ::popen((environment + FLTMC_PATH + " " + arguments + " 2>&1").c_str(), "r")) {
    char chunk[4096];
    size_t n;
    while ((n = std::fread(chunk, 1, sizeof chunk, pipe)) > 0) out.append(chunk, n);
    ::pclose(pipe);
  }
  return out;
}

class NeverFreeze : public ScannerTest {
 protected:
  void SetUp() override {
    ScannerTest::SetUp();
    if (IsSkipped()) return;
    const std::string plugin = std::string(FLTPORT_TEST_PROBE_PLUGIN_DIR) + "/fltport-filter-probe.so";
    if (plugin[0] != '/' || ::access(plugin.c_str(), R_OK) != 0) GTEST_SKIP() << "not built: " << plugin;
  }

  // fltmgrd with the scanner (no service: it allows) and the probe filter, whose default is deny and
  // deadline long: whatever answers the held opens below is the shutdown or the kernel, not the
  // deadline.
  ::testing::AssertionResult start_host() {
    return start_fltmgrd({"--plugin-dir", FLTPORT_TEST_PROBE_PLUGIN_DIR, "--load", "probe", "--attach",
                          "probe=" + watched_, "--deadline-ms", "probe=20000", "--default", "probe=deny"});
  }

  std::vector<std::string> make_files(const std::string& prefix, int n) {
    std::vector<std::string> paths;
    for (int i = 0; i < n; ++i) {
      paths.push_back(path(prefix + std::to_string(i)));
      write_file(paths.back(), "clean content\n");
    }
    return paths;
  }
};

// fapolicyd #227: after Ctrl-C of a foreground daemon under load nothing could be opened. fltmgrd
// answers every event it holds with the filter's default, removes its marks and exits; opens made
// while it shuts down go on.
class NeverFreezeShutdown : public NeverFreeze, public ::testing::WithParamInterface<int> {};

TEST_P(NeverFreezeShutdown, AnswersEveryHeldOpenWithTheDefaultAndExits) {
  const int signal_number = GetParam();
  const auto held_files = make_files("hang", 6);  // before the host: writing them is not filtered
  const auto clean_files = make_files("clean", 20);
  ASSERT_TRUE(start_host());
  Loader loader(clean_files, 20s);
  std::vector<std::unique_ptr<OpenProbe>> held;
  for (const auto& file : held_files) held.push_back(std::make_unique<OpenProbe>(file));
  std::this_thread::sleep_for(300ms);  // the probe holds them (for 30 s)

  const auto stop = Clock::now();
  fltmgrd_->signal(signal_number);
  for (auto& probe : held) {
    const auto outcome = probe->result(kReleaseBound + 2s);
    EXPECT_TRUE(is_denial(outcome.error))
        << "a held open must take the probe's default (deny), got " << outcome.error;
  }
  const long long released_ms = ms_since(stop);
  EXPECT_LE(released_ms, kReleaseBound.count())
      << "held opens released " << released_ms << " ms after the signal";
  const auto status = fltmgrd_->wait_exit(5s);
  ASSERT_TRUE(status.has_value()) << "fltmgrd did not exit within 5 s of the signal";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
  const auto report = loader.stop();
  ASSERT_TRUE(report.received);
  // The loader's one open in flight when the signal came takes the probe's default too (deny);
  // every other open, during and after the shutdown, goes on.
  EXPECT_LE(report.failures, 1u) << "opens during and after the shutdown are not refused";
  EXPECT_LT(report.worst_us, static_cast<uint64_t>(kReleaseBound.count()) * 1000);
  const std::string log = read_file(fltmgrd_log_);
  EXPECT_NE(log.find("waiting events answered"), std::string::npos) << log;
  std::printf(
      "[ measured ] %s: held opens released %lld ms after the signal; loader %llu opens, worst %llu us\n",
      signal_number == SIGINT ? "SIGINT" : "SIGTERM", released_ms,
      static_cast<unsigned long long>(report.opens), static_cast<unsigned long long>(report.worst_us));
  fltmgrd_.reset();
}

INSTANTIATE_TEST_SUITE_P(Signals, NeverFreezeShutdown, ::testing::Values(SIGINT, SIGTERM),
                         [](const auto& info) { return info.param == SIGINT ? "SIGINT" : "SIGTERM"; });

// fapolicyd #273: a daemon dying of a fatal signal kept its group while the kernel dumped its core,
// and the core-dump helper (and everyone else) waited for verdicts. fltmgrd's groups close before
// it dies: held opens, and opens made meanwhile, go on within a second. The signal is raised by a
// real fault in a filter callback; the core (where the limit allows one) goes into the marked
// directory, where the kernel's own open of the core file would otherwise wait on the dying host.
class NeverFreezeFatal : public NeverFreeze, public ::testing::WithParamInterface<int> {};

TEST_P(NeverFreezeFatal, GroupsCloseBeforeTheHostDies) {
  const int signal_number = GetParam();
  const std::string name = std::string("crash-SIG") + sigabbrev_np(signal_number);
  const auto held_files = make_files("hang", 4);
  const auto clean_files = make_files("clean", 20);
  write_file(path(name), "x");

  // A core into the marked directory: the working directory and limit fltmgrd inherits.
  rlimit saved_core{};
  ::getrlimit(RLIMIT_CORE, &saved_core);
  rlimit core = saved_core;
  core.rlim_cur = std::min<rlim_t>(core.rlim_max, rlim_t{512} << 20);
  ::setrlimit(RLIMIT_CORE, &core);
  const auto saved_cwd = std::filesystem::current_path();
  std::filesystem::current_path(watched_);
  const ScopedEnv asan_options("ASAN_OPTIONS", without_sanitizer_signal_handlers("ASAN_OPTIONS").c_str());
  const ScopedEnv tsan_options("TSAN_OPTIONS", without_sanitizer_signal_handlers("TSAN_OPTIONS").c_str());
  const auto started = start_host();
  std::filesystem::current_path(saved_cwd);
  ::setrlimit(RLIMIT_CORE, &saved_core);
  ASSERT_TRUE(started);

  Loader loader(clean_files, 20s);
  std::vector<std::unique_ptr<OpenProbe>> held;
  for (const auto& file : held_files) held.push_back(std::make_unique<OpenProbe>(file));
  std::this_thread::sleep_for(300ms);

  const auto crash = Clock::now();
  OpenProbe trigger(path(name));
  // When each open (the trigger's and the held ones) returned, as its own process saw it, not
  // when this (possibly starved) process got round to reading it; +1 ms for the whole ms reported.
  const auto returned_at = [](const OpenProbe& probe, const OpenProbe::Outcome& outcome) {
    return probe.started_at() + milliseconds(outcome.elapsed_ms + 1);
  };
  const auto trigger_outcome = trigger.result(kFatalReleaseBound + 5s);
  EXPECT_NE(trigger_outcome.error, -1) << "the open that crashed the host got no answer";
  Clock::time_point last_release = returned_at(trigger, trigger_outcome);
  for (auto& probe : held) {
    const auto outcome = probe->result(kFatalReleaseBound + 5s);
    EXPECT_EQ(outcome.error, 0) << "the kernel allows what a closed group held";
    last_release = std::max(last_release, returned_at(*probe, outcome));
  }
  const auto status = fltmgrd_->wait_exit(30s);  // a core takes a while to write
  const std::string log = read_file(fltmgrd_log_);
  // The bound runs from the fault, as the probe filter logged it. From the trigger's open on, a
  // loaded machine adds the fork of this (sanitized, large) process and the host's way to the
  // event, neither of which holds anyone's open.
  const auto fault = fault_time(log);
  EXPECT_TRUE(fault.has_value()) << "the probe filter did not log its fault; fltmgrd's log:\n" << log;
  const long long released_ms =
      std::chrono::duration_cast<milliseconds>(last_release - fault.value_or(crash)).count();
  const long long fault_ms = fault ? std::chrono::duration_cast<milliseconds>(*fault - crash).count() : -1;
  ASSERT_TRUE(status.has_value()) << "fltmgrd did not die";
  ASSERT_TRUE(WIFSIGNALED(*status)) << "wait status " << *status << "; fltmgrd's log:\n" << log;
  EXPECT_EQ(WTERMSIG(*status), signal_number) << "died of signal " << WTERMSIG(*status);
  // The way to the fault (a fork, and the host reading one event) is no part of the bound, but
  // it is bounded too: a host that took seconds to reach an event would be a bug of its own.
  EXPECT_LT(fault_ms, 5000) << "the host took " << fault_ms << " ms to reach the trigger's event";
  EXPECT_LE(released_ms, kFatalReleaseBound.count())
      << "held opens released " << released_ms << " ms after the fault (which came " << fault_ms
      << " ms after the trigger's open began)";
  const auto report = loader.stop();
  ASSERT_TRUE(report.received);
  EXPECT_EQ(report.failures, 0u);
  EXPECT_LT(report.worst_us, static_cast<uint64_t>(kFatalReleaseBound.count()) * 1000);
  std::printf(
      "[ measured ] %s: held opens released %lld ms after the fault (%lld ms after the trigger's open "
      "began; core dumped: %s); loader %llu opens, worst %llu us\n",
      name.c_str() + 6, released_ms, fault_ms, WIFSIGNALED(*status) && WCOREDUMP(*status) ? "yes" : "no",
      static_cast<unsigned long long>(report.opens), static_cast<unsigned long long>(report.worst_us));
  fltmgrd_.reset();
}

INSTANTIATE_TEST_SUITE_P(Signals, NeverFreezeFatal,
                         ::testing::Values(SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE),
                         [](const auto& info) { return std::string(sigabbrev_np(info.param)); });

// fapolicyd #305: a slow decider and a flood of opens slowed the machine until it froze. Here every
// open asks a filter that takes 200 ms while its deadline is 100 ms, and 256 threads open at once
// for 3 s: each open ends by the deadline, the host's memory stays flat, and `fltmc host` shows the
// queue meanwhile.
TEST_F(NeverFreeze, FloodOfOpensWithASlowFilterKeepsLatencyAndMemoryBounded) {
  if (std::string(FLTMC_PATH).empty()) GTEST_SKIP() << "fltmc not built";
  const auto slow_files = make_files("slow", 256);
  ASSERT_TRUE(start_fltmgrd({"--plugin-dir", FLTPORT_TEST_PROBE_PLUGIN_DIR, "--load", "probe", "--attach",
                             "probe=" + watched_, "--deadline-ms", "probe=100", "--default", "probe=allow"}));
  const long long rss_before = figures_of(fltmgrd_->pid()).rss_kib;
  const auto flood_start = Clock::now();
  Loader flood(slow_files, 3s, 256);
  std::this_thread::sleep_for(1500ms);
  const std::string during = run_fltmc("host --json");
  const long long rss_during = figures_of(fltmgrd_->pid()).rss_kib;
  std::this_thread::sleep_until(flood_start + 3s);
  const auto report = flood.stop(20s);
  ASSERT_TRUE(report.received);
  const std::string after = run_fltmc("host --json");
  const std::string text = run_fltmc("stats");
  const long long rss_after = figures_of(fltmgrd_->pid()).rss_kib;

  EXPECT_EQ(report.failures, 0u) << "the default is allow";
  // A flood: the 256 openers went round four times each or more. (About 5500 opens on a quiet dev
  // build, 4500 under TSan, 2600 under TSan with the rest of the suite running beside it.)
  EXPECT_GT(report.opens, 256u * 4) << "the flood was not one";
  // Deadline 100 ms, plus the way through the kernel and a loaded machine (2 cores, 256 openers):
  // 130-190 ms measured on a dev build, up to 300 ms under TSan beside another test.
  EXPECT_LT(report.worst_us, 100'000u + (kSanitized ? 900'000u : 400'000u));
  EXPECT_GT(host_field(during, "waiting"), 0) << during;
  EXPECT_GT(host_field(during, "waiting_limit"), 1000) << during;
  EXPECT_EQ(host_field(after, "waiting"), 0) << after;
  EXPECT_NE(text.find("Host queues:"), std::string::npos) << text;
  EXPECT_LT(rss_after - rss_before, kRssGrowthBoundKib)
      << "fltmgrd's memory grew from " << rss_before << " to " << rss_after << " KiB";
  std::printf(
      "[ measured ] flood: %llu opens in 3 s by 256 threads, worst %llu us (deadline 100 ms), %lld "
      "waiting mid-flood; fltmgrd RSS %lld -> %lld -> %lld KiB\n",
      static_cast<unsigned long long>(report.opens), static_cast<unsigned long long>(report.worst_us),
      host_field(during, "waiting"), rss_before, rss_during, rss_after);
}

// The same for notifications: 20000 files written and closed while each post-operation takes 2 ms.
// What the host cannot keep up with is dropped and counted (by the kernel, FAN_Q_OVERFLOW, or by the
// host's own bounded queue), never held in ever-growing memory; opens go on meanwhile.
TEST_F(NeverFreeze, NotificationFloodIsBoundedAndCounted) {
  if (std::string(FLTMC_PATH).empty()) GTEST_SKIP() << "fltmc not built";
  ASSERT_TRUE(start_fltmgrd(
      {"--plugin-dir", FLTPORT_TEST_PROBE_PLUGIN_DIR, "--load", "probe", "--attach", "probe=" + watched_}));
  const long long rss_before = figures_of(fltmgrd_->pid()).rss_kib;
  constexpr int kFiles = 40000;
  const auto start = Clock::now();
  for (int i = 0; i < kFiles; ++i) {
    const int fd =
        ::open(path("post" + std::to_string(i)).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    ASSERT_EQ(::write(fd, "x", 1), 1);
    ::close(fd);
  }
  const long long write_ms = ms_since(start);
  const auto clean = open_in_child(path("post0"));
  EXPECT_EQ(clean.error, 0);
  const std::string host = run_fltmc("host --json");
  const long long rss_after = figures_of(fltmgrd_->pid()).rss_kib;
  const long long lost =
      host_field(host, "notification_overflows") + host_field(host, "post_operations_dropped");
  EXPECT_GT(lost, 0) << "40000 notifications at 2 ms each cannot all be kept: " << host;
  EXPECT_LE(host_field(host, "post_operations_queued"), 16384) << host;
  EXPECT_LT(rss_after - rss_before, kRssGrowthBoundKib)
      << "fltmgrd's memory grew from " << rss_before << " to " << rss_after << " KiB";
  std::printf(
      "[ measured ] notification flood: %d files written in %lld ms; kernel overflows %lld, dropped over "
      "the host's bound %lld, queued %lld; open meanwhile %lld ms; RSS %lld -> %lld KiB\n",
      kFiles, write_ms, host_field(host, "notification_overflows"),
      host_field(host, "post_operations_dropped"), host_field(host, "post_operations_queued"),
      clean.elapsed_ms, rss_before, rss_after);
}

// `field` (a number) of filter `name` in `fltmc stats --json`, or -1.
long long filter_field(const std::string& json, const std::string& name,
                       const std::string& field = "events") {
  const auto row = json.find("\"name\": \"" + name + "\"");
  if (row == std::string::npos) return -1;
  const std::string key = "\"" + field + "\": ";
  const auto at = json.find(key, row);
  return at == std::string::npos ? -1 : std::atoll(json.c_str() + at + key.size());
}

// The C filter interface's verdicts through fltmgrd: operations pended and completed from another
// thread (allow, deny, the filter's default), FLT_PREOP_FLTPORT_TAKE_DEFAULT returned at once, and
// a status the kernel has an errno for (STATUS_SHARING_VIOLATION: EBUSY, Linux 6.14+). The probe's
// default is deny and its deadline 20 s: each default here is the filter's own, counted once.
TEST_F(NeverFreeze, ACFilterPendsAndCompletesFromAnotherThreadAndTakesItsDefault) {
  if (std::string(FLTMC_PATH).empty()) GTEST_SKIP() << "fltmc not built";
  for (const char* name : {"pend-allow", "pend-deny", "pend-default", "default", "busy", "plain"})
    write_file(path(name), "x");
  ASSERT_TRUE(start_host());
  const auto pended_allow = open_in_child(path("pend-allow"));
  EXPECT_EQ(pended_allow.error, 0);
  EXPECT_GE(pended_allow.elapsed_ms, 40) << "completed 50 ms later";
  EXPECT_TRUE(is_denial(open_in_child(path("pend-deny")).error));
  for (const char* name : {"pend-default", "default"}) {
    const auto outcome = open_in_child(path(name));
    EXPECT_EQ(outcome.error, EPERM) << name << ": the probe's default is deny";
    EXPECT_LT(outcome.elapsed_ms, 5000) << name << ": answered by the filter, not its 20 s deadline";
  }
  utsname kernel{};
  ASSERT_EQ(::uname(&kernel), 0);
  int major = 0, minor = 0;
  std::sscanf(kernel.release, "%d.%d", &major, &minor);
  const bool kernel_takes_errnos = major > 6 || (major == 6 && minor >= 14);
  EXPECT_EQ(open_in_child(path("busy")).error, kernel_takes_errnos ? EBUSY : EPERM) << kernel.release;
  EXPECT_EQ(open_in_child(path("plain")).error, 0);

  const std::string stats = run_fltmc("stats --json");
  EXPECT_EQ(filter_field(stats, "probe", "defaults_taken"), 2) << stats;
  EXPECT_EQ(filter_field(stats, "probe", "denied"), 4) << stats;
  EXPECT_EQ(filter_field(stats, "probe", "allowed"), 2) << stats;
  const std::string log = read_file(fltmgrd_log_);
  EXPECT_NE(log.find("probe: no verdict for open of " + path("default")), std::string::npos) << log;
}

// fapolicyd #134: a second instance hung the system. A second fltmgrd on the same runtime
// directory refuses to start (tests/integration/fltmgrd_test.cpp). Two hosts with runtime
// directories of their own may mark overlapping trees (the kernel allows it): each answers its own
// events, neither ever sees the other's own accesses (the scanner's content reads go through the
// kernel's event fds), and one dying leaves the other working.
TEST_F(NeverFreeze, TwoHostsOnOverlappingMarksNeverBlockEachOther) {
  if (std::string(FLTMC_PATH).empty()) GTEST_SKIP() << "fltmc not built";
  const std::string shared = path("shared");
  ASSERT_EQ(::mkdir(shared.c_str(), 0755), 0);
  std::vector<std::string> clean;
  for (int i = 0; i < 50; ++i) {
    clean.push_back(shared + "/clean" + std::to_string(i));
    write_file(clean.back(), "clean content\n");
  }
  write_file(shared + "/foul", "a foul thing\n");
  write_file(shared + "/deny1", "x");

  // Host A: the fixture's (scanner + its service, and the probe) on the whole directory.
  ASSERT_TRUE(start_host());
  ASSERT_TRUE(start_service());
  // Host B: its own runtime directory, the probe on the shared subdirectory only.
  char pattern[] = "/tmp/fltport-second-host-XXXXXX";
  ASSERT_NE(::mkdtemp(pattern), nullptr);
  const std::string second_runtime = pattern;
  Program second({"/usr/bin/env", "FLTPORT_RUNTIME_DIR=" + second_runtime, FLTPORT_TEST_FLTMGRD,
                  "--foreground", "--plugin-dir", FLTPORT_TEST_PROBE_PLUGIN_DIR, "--load", "probe",
                  "--attach", "probe=" + shared, "--deadline-ms", "probe=20000", "--default", "probe=deny"},
                 runtime_->path() + "/second.log", true);
  ASSERT_TRUE(second.wait_for_stdout_line("fltmgrd: ready", kStartTimeout))
      << read_file(runtime_->path() + "/second.log");

  long long worst_ms = 0;
  for (const auto& file : clean) {
    const auto outcome = open_in_child(file);
    EXPECT_EQ(outcome.error, 0) << file;
    worst_ms = std::max(worst_ms, outcome.elapsed_ms);
  }
  const auto foul = open_in_child(shared + "/foul");
  EXPECT_TRUE(is_denial(foul.error)) << "host A's scanner denies it: " << foul.error;
  const auto denied = open_in_child(shared + "/deny1");
  EXPECT_TRUE(is_denial(denied.error)) << denied.error;
  EXPECT_LT(worst_ms, 1000);

  // Host B saw the test's opens (the 50 clean ones; the two denied ones only if its group came
  // before host A's, as the kernel stops at the first denial), none of host A's or its service's
  // own accesses (host A's scanner read all 52 files).
  const std::string b_json = run_fltmc("stats --json", second_runtime);
  EXPECT_GE(filter_field(b_json, "probe"), 50) << b_json;
  EXPECT_LE(filter_field(b_json, "probe"), 52) << b_json;

  // Host A dies: host B goes on answering under the shared marks.
  Loader loader(clean, 2s);
  std::this_thread::sleep_for(200ms);
  fltmgrd_->kill();
  std::this_thread::sleep_for(300ms);
  const auto after = open_in_child(shared + "/deny1");
  EXPECT_TRUE(is_denial(after.error)) << "host B still filters: " << after.error;
  const auto report = loader.stop();
  ASSERT_TRUE(report.received);
  EXPECT_EQ(report.failures, 0u);
  EXPECT_LT(report.worst_us, 1'000'000u);
  std::printf(
      "[ measured ] two hosts: 52 opens through both, worst %lld ms; host A killed under load: loader %llu "
      "opens, worst %llu us\n",
      worst_ms, static_cast<unsigned long long>(report.opens),
      static_cast<unsigned long long>(report.worst_us));
  EXPECT_TRUE(second.terminate(kStopTimeout).has_value());
  std::error_code ignored;
  std::filesystem::remove_all(second_runtime, ignored);
}

// What fltmgrd itself opens never waits on its own marks: with the probe holding every open under
// a "hangdir" directory for 30 s, fltmgrd loads a plugin from there (and reads its config from
// there at start) at once; the same open by another process is held.
TEST_F(NeverFreeze, TheHostsOwnAccessesNeverWaitOnItsMarks) {
  if (std::string(FLTMC_PATH).empty()) GTEST_SKIP() << "fltmc not built";
  const std::string hangdir = path("hangdir");
  ASSERT_EQ(::mkdir(hangdir.c_str(), 0755), 0);
  std::filesystem::copy_file(std::string(FLTPORT_TEST_PROBE_PLUGIN_DIR) + "/fltport-filter-probe.so",
                             hangdir + "/fltport-filter-probe2.so");
  write_file(hangdir + "/fltmgrd.conf",
             "[fltmgrd]\nplugin_dir = " + hangdir + "\n[filter probe2]\ndefault = allow\n");
  ASSERT_TRUE(start_fltmgrd(
      {"--config", hangdir + "/fltmgrd.conf", "--plugin-dir", FLTPORT_TEST_PROBE_PLUGIN_DIR, "--load",
       "probe", "--attach", "probe=" + watched_, "--deadline-ms", "probe=20000", "--default", "probe=deny"}));
  // Another process's open under hangdir is held (and answered by the deadline thread much later).
  OpenProbe held(hangdir + "/fltmgrd.conf");
  EXPECT_EQ(held.result(300ms).error, -1) << "the probe holds opens under hangdir";
  const auto start = Clock::now();
  const std::string loaded = run_fltmc("load probe2");
  const long long load_ms = ms_since(start);
  EXPECT_NE(run_fltmc("filters").find("probe2"), std::string::npos) << loaded << read_file(fltmgrd_log_);
  EXPECT_LT(load_ms, 2000) << "loading a plugin from a marked directory waited on the host's own marks";
  std::printf("[ measured ] own accesses: plugin loaded from a held directory in %lld ms\n", load_ms);
}

// Issue 6, "never freeze the machine": the scanner's service stopped (SIGSTOP) for 60 s while two
// threads keep opening distinct files: every open completes within the deadline + 100 ms, and the
// scanner's default verdicts are exactly the opens that timed out (all of them: nobody answers).
// FLTPORT_STOPPED_SERVICE_SECONDS shortens it for a quick run.
TEST_F(NeverFreeze, ServiceStoppedForAMinuteNeverHoldsAnOpenPastTheDeadline) {
  if (std::string(FLTMC_PATH).empty()) GTEST_SKIP() << "fltmc not built";
  const char* env = std::getenv("FLTPORT_STOPPED_SERVICE_SECONDS");
  const int seconds = env != nullptr && std::atoi(env) > 0 ? std::atoi(env) : 60;
  ::alarm(static_cast<unsigned>(seconds + 60));
  std::vector<std::string> files;
  for (int i = 0; i < 2000; ++i) {
    files.push_back(path("file" + std::to_string(i)));
    write_file(files.back(), "clean content\n");
  }
  ASSERT_TRUE(start_fltmgrd({"--deadline-ms", "scanner=" + std::to_string(kDeadlineMs)}));
  ASSERT_TRUE(start_service());
  ASSERT_EQ(open_in_child(files[0]).error, 0);
  const long long defaults_before = host_field(run_fltmc("stats --json"), "defaults_taken");
  ASSERT_TRUE(service_->stop());

  Loader loader(std::vector<std::string>(files.begin() + 1, files.end()), std::chrono::seconds(seconds), 2);
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  const auto report = loader.stop(20s);
  service_->signal(SIGCONT);
  ASSERT_TRUE(report.received);
  const long long defaults = host_field(run_fltmc("stats --json"), "defaults_taken") - defaults_before;
  EXPECT_EQ(report.failures, 0u) << "the scanner's default is allow";
  EXPECT_GT(report.opens, 0u);
  EXPECT_LE(report.worst_us, static_cast<uint64_t>(kDeadlineMs + kDeadlineMargin.count()) * 1000);
  EXPECT_EQ(static_cast<uint64_t>(defaults), report.opens) << "one default per timed-out open";
  std::printf(
      "[ measured ] service stopped %d s: %llu opens, worst %llu us (deadline %d ms), %lld defaults\n",
      seconds, static_cast<unsigned long long>(report.opens),
      static_cast<unsigned long long>(report.worst_us), kDeadlineMs, defaults);
}

// Issue 6, faults: kill -9 at random points under load. 100 times the service (fltmgrd's fds and
// threads stay flat, opens go on), then 40 times fltmgrd itself with its service connected (opens
// under the dead host's marks go on at once; nothing of it is left).
TEST_F(NeverFreeze, KillNineAtRandomPointsUnderLoad) {
  ::alarm(240);
  std::vector<std::string> files = make_files("file", 200);
  ASSERT_TRUE(start_fltmgrd({"--deadline-ms", "scanner=" + std::to_string(kDeadlineMs)}));
  ASSERT_TRUE(start_service());
  Loader loader(files, 200s, 2);
  std::this_thread::sleep_for(200ms);
  const ProcessFigures before = figures_of(fltmgrd_->pid());
  unsigned seed = 12345;
  for (int i = 0; i < 100; ++i) {
    if (i > 0) {
      ASSERT_TRUE(start_service()) << "iteration " << i;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(::rand_r(&seed) % 50));
    service_->kill();
  }
  std::this_thread::sleep_for(300ms);  // the last disconnect is handled
  const ProcessFigures after = figures_of(fltmgrd_->pid());
  EXPECT_LE(after.fds, before.fds + 2) << "fltmgrd's fds: " << before.fds << " -> " << after.fds;
  EXPECT_LE(after.threads, before.threads + 16)
      << "fltmgrd's threads: " << before.threads << " -> " << after.threads;
  EXPECT_TRUE(fltmgrd_->alive());

  int host_kills = 0;
  for (int i = 0; i < 40; ++i) {
    if (i > 0) {
      ASSERT_TRUE(start_fltmgrd({"--deadline-ms", "scanner=" + std::to_string(kDeadlineMs)}))
          << "iteration " << i;
    }
    ASSERT_TRUE(start_service());
    if (i == 0) {
      EXPECT_FALSE(fanotify_marks_on(watched_).empty())
          << "a live host's marks are seen (the check below can fail)";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(::rand_r(&seed) % 100));
    fltmgrd_->kill();
    ++host_kills;
    service_->kill();
    // The runtime directory may hold the dead host's sockets; the next host takes them over.
  }
  const auto report = loader.stop();
  ASSERT_TRUE(report.received);
  EXPECT_EQ(report.failures, 0u);
  EXPECT_LT(report.worst_us, static_cast<uint64_t>(kDeadlineMs + kDeadlineMargin.count()) * 1000);
  // Nothing of the dead hosts is left: no group anywhere still marks the directory.
  const std::vector<std::string> marks = fanotify_marks_on(watched_);
  EXPECT_TRUE(marks.empty()) << "marks left on " << watched_ << ": " << ::testing::PrintToString(marks);
  std::printf(
      "[ measured ] kill -9: 100 services and %d hosts under load; fltmgrd fds %ld -> %ld, threads %ld -> "
      "%ld; loader %llu opens, worst %llu us, %llu failed; fanotify marks left on the directory: %zu\n",
      host_kills, before.fds, after.fds, before.threads, after.threads,
      static_cast<unsigned long long>(report.opens), static_cast<unsigned long long>(report.worst_us),
      static_cast<unsigned long long>(report.failures), marks.size());
}

}  // namespace
}  // namespace fltport
