// Never freeze the host (issue 7): the failure modes that froze fapolicyd's users, each run as root
// on real fanotify against the test's own mkdtemp directory, with fltmgrd, the scanner and the
// probe filter plugin (tests/plugins/probe_filter.c) as real processes, under an alarm.
#include <gtest/gtest.h>

#include <sys/resource.h>

#include "support/host_harness.hpp"

#ifndef FLTPORT_TEST_PROBE_PLUGIN_DIR
#define FLTPORT_TEST_PROBE_PLUGIN_DIR ""
#endif

namespace fltport {
namespace {

using namespace std::chrono_literals;
using namespace fltport::test;

// Every open held by a host that stops or dies completes within this of the stop.
constexpr milliseconds kReleaseBound = 1s;

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
    EXPECT_TRUE(is_denial(outcome.error)) << "a held open must take the probe's default (deny), got "
                                          << outcome.error;
  }
  const long long released_ms = ms_since(stop);
  EXPECT_LE(released_ms, kReleaseBound.count()) << "held opens released " << released_ms << " ms after the signal";
  const auto status = fltmgrd_->wait_exit(5s);
  ASSERT_TRUE(status.has_value()) << "fltmgrd did not exit within 5 s of the signal";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
  const auto report = loader.stop();
  ASSERT_TRUE(report.received);
  EXPECT_EQ(report.failures, 0u) << "opens during and after the shutdown are not refused";
  EXPECT_LT(report.worst_us, static_cast<uint64_t>(kReleaseBound.count()) * 1000);
  const std::string log = read_file(fltmgrd_log_);
  EXPECT_NE(log.find("waiting events answered"), std::string::npos) << log;
  std::printf("[ measured ] %s: held opens released %lld ms after the signal; loader %llu opens, worst %llu us\n",
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
  const auto trigger_outcome = trigger.result(kReleaseBound + 5s);
  EXPECT_NE(trigger_outcome.error, -1) << "the open that crashed the host got no answer";
  for (auto& probe : held) {
    const auto outcome = probe->result(kReleaseBound + 5s);
    EXPECT_EQ(outcome.error, 0) << "the kernel allows what a closed group held";
  }
  const long long released_ms = ms_since(crash);
  const auto status = fltmgrd_->wait_exit(30s);  // a core takes a while to write
  ASSERT_TRUE(status.has_value()) << "fltmgrd did not die";
  // Under a sanitizer its own handler may end the process with an exit code instead.
  EXPECT_TRUE(WIFSIGNALED(*status) || WIFEXITED(*status)) << "wait status " << *status;
  if (WIFSIGNALED(*status)) {
    EXPECT_EQ(WTERMSIG(*status), signal_number);
  }
  EXPECT_LE(released_ms, kReleaseBound.count()) << "held opens released " << released_ms << " ms after the fault";
  const auto report = loader.stop();
  ASSERT_TRUE(report.received);
  EXPECT_EQ(report.failures, 0u);
  EXPECT_LT(report.worst_us, static_cast<uint64_t>(kReleaseBound.count()) * 1000);
  std::printf("[ measured ] %s: held opens released %lld ms after the fault (core dumped: %s); loader %llu opens, "
              "worst %llu us\n",
              name.c_str() + 6, released_ms, WIFSIGNALED(*status) && WCOREDUMP(*status) ? "yes" : "no",
              static_cast<unsigned long long>(report.opens), static_cast<unsigned long long>(report.worst_us));
  fltmgrd_.reset();
}

INSTANTIATE_TEST_SUITE_P(Signals, NeverFreezeFatal, ::testing::Values(SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE),
                         [](const auto& info) { return std::string(sigabbrev_np(info.param)); });

}  // namespace
}  // namespace fltport
