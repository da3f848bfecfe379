// A slow or stuck file system under a scanned file (issue 7, fapolicyd #237): fltmgrd with the
// scanner filter on a FUSE file system whose reads of "stall*" files never return until released
// (tests/support/stall_fs.c), and on an ordinary directory. The scanner reads through
// FltportReadFile, bounded by the event's deadline: a stalled file's open takes the default at its
// deadline, and every other open, on the same mount or elsewhere, goes on meanwhile.
//
// As root only, with /dev/fuse; skips otherwise. Everything it marks or mounts it created itself
// (mkdtemp directories); it kills only the programs it started, by pid; an alarm is the watchdog,
// and the watchdog's handler also kills the FUSE program and detaches the mount, so nothing stays
// mounted even when the test hangs.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/fanotify.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/host_harness.hpp"

#ifndef FLTPORT_TEST_STALL_FS
#define FLTPORT_TEST_STALL_FS ""
#endif

namespace fltport {
namespace {

using namespace std::chrono_literals;
using namespace fltport::test;

constexpr milliseconds kStallOpenTimeout = 3s;  // any one open, whatever happens (18 in flight at most)
constexpr int kDeadlineMs = 1000;               // --deadline-ms scanner=1000
// Nine stalled opens forked at once: each is read by fltmgrd while its workers are busy with the
// others (a worker takes over reading within 5 ms each), so the last ones arrive, and get their
// deadline, later than they were started. Measured here: deadline + 35-100 ms.
constexpr milliseconds kWaveMargin = 250ms;
// An open that does not touch the stalled files must not wait for them: far below the deadline.
constexpr long long kQuickMs = 300;

bool mounted(const std::string& path) {
  std::ifstream mounts("/proc/self/mounts");
  std::string device, point;
  std::string rest;
  while (mounts >> device >> point) {
    std::getline(mounts, rest);
    if (point == path) return true;
  }
  return false;
}

// ---- the watchdog ----
// What the SIGALRM handler must undo: async-signal-safe calls only (kill, umount2, _exit).
volatile pid_t g_stall_fs_pid = -1;
char g_mount_point[256] = {};

void watchdog(int) {
  if (g_stall_fs_pid > 0) ::kill(g_stall_fs_pid, SIGKILL);
  if (g_mount_point[0] != '\0' && ::umount2(g_mount_point, MNT_DETACH) == 0) ::rmdir(g_mount_point);
  static const char message[] = "stalled_fs_test: watchdog expired; FUSE program killed, mount detached\n";
  [[maybe_unused]] ssize_t written = ::write(STDERR_FILENO, message, sizeof message - 1);
  ::_exit(124);  // the other children die with us (PR_SET_PDEATHSIG)
}

// ---- the fixture ----

class StalledFsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const std::string& file :
         {std::string(FLTPORT_TEST_FLTMGRD),
          std::string(FLTPORT_TEST_SCANNER_PLUGIN_DIR) + "/fltport-filter-scanner.so",
          std::string(FLTPORT_TEST_SCANNER_SERVICE), std::string(FLTPORT_TEST_STALL_FS)}) {
      if (file.empty() || file[0] != '/' || ::access(file.c_str(), R_OK) != 0) {
        GTEST_SKIP()
            << "not built: " << (file.empty() ? std::string("(no path configured)") : file)
            << " (needs fltmgrd, the scanner plugin and service, and tests/support/stall_fs.c, which "
               "needs libfuse3: Debian libfuse3-dev)";
      }
    }
    const int probe = ::fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, O_RDONLY);
    if (probe < 0) {
      GTEST_SKIP() << "fanotify permission events are not permitted here (fanotify_init: "
                   << std::strerror(errno) << "): needs root (CAP_SYS_ADMIN)";
    }
    ::close(probe);
    const int fuse = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fuse < 0) GTEST_SKIP() << "/dev/fuse cannot be opened (" << std::strerror(errno) << "): no FUSE here";
    ::close(fuse);

    struct sigaction action {};
    action.sa_handler = watchdog;
    ::sigaction(SIGALRM, &action, &previous_alarm_);
    ::alarm(100);  // below ctest's 120 s

    runtime_ = std::make_unique<test::ScopedRuntimeDir>();
    char plain[] = "/tmp/fltport-stall-plain-XXXXXX";
    ASSERT_NE(::mkdtemp(plain), nullptr) << std::strerror(errno);
    plain_ = plain;
    char mount_point[] = "/tmp/fltport-stall-fuse-XXXXXX";
    ASSERT_NE(::mkdtemp(mount_point), nullptr) << std::strerror(errno);
    mount_point_ = mount_point;
    fltmgrd_log_ = runtime_->path() + "/fltmgrd.log";
    service_log_ = runtime_->path() + "/service.log";
    stall_fs_log_ = runtime_->path() + "/stall_fs.log";

    // The FUSE program, mounted on the directory just made; it is up when its files are there.
    std::snprintf(g_mount_point, sizeof g_mount_point, "%s", mount_point_.c_str());
    stall_fs_ = std::make_unique<Program>(std::vector<std::string>{FLTPORT_TEST_STALL_FS, mount_point_},
                                          stall_fs_log_, false);
    ASSERT_GT(stall_fs_->pid(), 0) << "could not start stall_fs";
    g_stall_fs_pid = stall_fs_->pid();
    const auto until = Clock::now() + kStartTimeout;
    struct stat file {};
    while (::stat(fuse_path("clean1.txt").c_str(), &file) != 0 && Clock::now() < until) {
      if (!stall_fs_->alive()) break;
      std::this_thread::sleep_for(10ms);
    }
    if (::stat(fuse_path("clean1.txt").c_str(), &file) != 0) {
      const std::string log = read_file(stall_fs_log_);
      cleanup_mount();
      GTEST_SKIP() << "the FUSE file system could not be mounted here: " << log;
    }
  }

  void TearDown() override {
    service_.reset();
    if (stall_fs_) stall_fs_->signal(SIGUSR1);  // stalled reads return: fltmgrd's threads are free
    if (fltmgrd_) {
      fltmgrd_->terminate(kStopTimeout);
      fltmgrd_.reset();
    }
    if (HasFailure() && runtime_) {
      std::fprintf(
          stderr, "---- fltmgrd log ----\n%s---- service log ----\n%s---- stall_fs log ----\n%s----\n",
          read_file(fltmgrd_log_).c_str(), read_file(service_log_).c_str(), read_file(stall_fs_log_).c_str());
    }
    cleanup_mount();
    if (!mount_point_.empty()) {
      EXPECT_FALSE(mounted(mount_point_)) << mount_point_ << " is still mounted";
      ::rmdir(mount_point_.c_str());
    }
    if (!plain_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(plain_, ignored);
    }
    runtime_.reset();
    ::alarm(0);
    ::sigaction(SIGALRM, &previous_alarm_, nullptr);
  }

  // The FUSE program killed by pid, then the mount detached (a killed FUSE server leaves its mount).
  void cleanup_mount() {
    if (stall_fs_) stall_fs_->kill();
    stall_fs_.reset();
    g_stall_fs_pid = -1;
    if (!mount_point_.empty() && mounted(mount_point_)) ::umount2(mount_point_.c_str(), MNT_DETACH);
    g_mount_point[0] = '\0';
  }

  std::string fuse_path(const std::string& name) const { return mount_point_ + "/" + name; }
  std::string plain_path(const std::string& name) const { return plain_ + "/" + name; }

  ::testing::AssertionResult start_fltmgrd(const std::string& default_verdict = "allow") {
    // The ordinary directory first: the FUSE one (no fsid) then gets permission marks only.
    std::vector<std::string> argv = {FLTPORT_TEST_FLTMGRD,
                                     "--foreground",
                                     "--plugin-dir",
                                     FLTPORT_TEST_SCANNER_PLUGIN_DIR,
                                     "--load",
                                     "scanner",
                                     "--attach",
                                     "scanner=" + plain_,
                                     "--attach",
                                     "scanner=" + mount_point_,
                                     "--deadline-ms",
                                     "scanner=" + std::to_string(kDeadlineMs),
                                     "--default",
                                     "scanner=" + default_verdict};
    fltmgrd_ = std::make_unique<Program>(argv, fltmgrd_log_, true);
    if (fltmgrd_->pid() <= 0) return ::testing::AssertionFailure() << "could not start fltmgrd";
    if (!fltmgrd_->wait_for_stdout_line("fltmgrd: ready", kStartTimeout))
      return ::testing::AssertionFailure() << "fltmgrd did not get ready";
    return ::testing::AssertionSuccess();
  }

  ::testing::AssertionResult start_service() {
    service_ = std::make_unique<Program>(std::vector<std::string>{FLTPORT_TEST_SCANNER_SERVICE, "-t", "2"},
                                         service_log_, false);
    if (service_->pid() <= 0) return ::testing::AssertionFailure() << "could not start the service";
    const auto until = Clock::now() + kStartTimeout;
    while (Clock::now() < until) {
      if (count(read_file(service_log_), "connected to \\ScannerPort") > 0)
        return ::testing::AssertionSuccess();
      if (!service_->alive()) return ::testing::AssertionFailure() << "the service ended";
      std::this_thread::sleep_for(10ms);
    }
    return ::testing::AssertionFailure() << "the service did not connect";
  }

  bool wait_for_stalls(size_t n, milliseconds timeout = 5s) {
    const auto until = Clock::now() + timeout;
    while (Clock::now() < until) {
      if (count(read_file(stall_fs_log_), "stalling read of") >= n) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }

  // Opens, one after another, of clean files on the stalled mount and in the ordinary directory, and
  // of a foul file in the ordinary directory (denied: the scanner still reads and asks the service).
  // The worst latency of the clean opens.
  long long other_opens_go_on(int rounds, bool foul_on_fuse) {
    long long worst = 0;
    for (int round = 0; round < rounds; ++round) {
      // A new file each round: written, so scanned afresh (no cached verdict).
      const std::string fresh = plain_path("clean-" + std::to_string(round) + ".txt");
      std::ofstream(fresh, std::ios::trunc) << "nothing wrong, round " << round << "\n";
      for (const std::string& path :
           {fuse_path("clean1.txt"), fuse_path("clean2.txt"), fuse_path("clean3.txt"), fresh}) {
        const auto outcome = open_in_child(path);
        EXPECT_EQ(outcome.error, 0) << path;
        EXPECT_LT(outcome.elapsed_ms, kQuickMs) << "open of " << path << " waited for the stalled reads";
        worst = std::max(worst, outcome.elapsed_ms);
      }
      const auto foul = open_in_child(plain_path("foul.txt"));
      EXPECT_TRUE(is_denial(foul.error))
          << "foul.txt in the ordinary directory was not denied during the stall";
      EXPECT_LT(foul.elapsed_ms, kQuickMs);
      if (foul_on_fuse) {
        const auto fuse_foul = open_in_child(fuse_path("foul.txt"));
        EXPECT_TRUE(is_denial(fuse_foul.error)) << "foul.txt on the stalled mount was not denied";
        EXPECT_LT(fuse_foul.elapsed_ms, kQuickMs);
      }
    }
    return worst;
  }

  std::unique_ptr<test::ScopedRuntimeDir> runtime_;
  std::string plain_, mount_point_, fltmgrd_log_, service_log_, stall_fs_log_;
  std::unique_ptr<Program> stall_fs_, fltmgrd_, service_;
  struct sigaction previous_alarm_ {};
};

TEST_F(StalledFsTest, StalledReadTakesTheDefaultAtTheDeadlineWhileOtherOpensGoOn) {
  ASSERT_TRUE(start_fltmgrd());
  ASSERT_TRUE(start_service());
  std::ofstream(plain_path("foul.txt")) << "this one is foul\n";
  ASSERT_TRUE(is_denial(open_in_child(plain_path("foul.txt")).error)) << "the scanner does not scan here";

  OpenProbe stalled(fuse_path("stall1"));
  ASSERT_TRUE(wait_for_stalls(1)) << "the scanner's read of stall1 never reached the file system";
  const auto during = Clock::now();
  const long long worst = other_opens_go_on(3, true);
  const auto outcome = stalled.result(kStallOpenTimeout);
  std::printf(
      "[ stalled  ] open of stall1: %lld ms (deadline %d ms); worst other open during the stall: %lld ms\n",
      outcome.elapsed_ms, kDeadlineMs, worst);
  EXPECT_EQ(outcome.error, 0) << "the default is allow";
  EXPECT_LE(outcome.elapsed_ms, kDeadlineMs + kDeadlineMargin.count()) << "the deadline was not kept";
  EXPECT_GE(outcome.elapsed_ms, kDeadlineMs - 100) << "answered before the deadline: was stall1 read at all?";
  EXPECT_LT(ms_since(during), kDeadlineMs + 1000);
  // The read itself gives up just after the deadline (the default answered first), and says so.
  const auto logged_until = Clock::now() + 2s;
  while (count(read_file(fltmgrd_log_), "STATUS_IO_TIMEOUT") == 0 && Clock::now() < logged_until) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_GE(count(read_file(fltmgrd_log_), "STATUS_IO_TIMEOUT"), 1u) << "the timed-out read was not logged";

  // The stalled read is still stuck in its thread; once released, stall1 is scanned normally.
  stall_fs_->signal(SIGUSR1);
  const auto after = open_in_child(fuse_path("stall1"));
  EXPECT_EQ(after.error, 0);
  EXPECT_LT(after.elapsed_ms, kQuickMs);
}

// The default is the filter's, whatever it is: with deny, the stalled open is denied at its deadline
// (the read gives up just after it; the scanner then takes the default as well).
TEST_F(StalledFsTest, StalledReadTakesADenyDefault) {
  ASSERT_TRUE(start_fltmgrd("deny"));
  ASSERT_TRUE(start_service());
  for (int i = 1; i <= 3; ++i) {
    const auto outcome = open_in_child(fuse_path("stall" + std::to_string(i)));
    EXPECT_TRUE(is_denial(outcome.error))
        << "stall" << i << ": " << (outcome.error > 0 ? std::strerror(outcome.error) : "opened");
    EXPECT_LE(outcome.elapsed_ms, kDeadlineMs + kDeadlineMargin.count());
    EXPECT_GE(outcome.elapsed_ms, kDeadlineMs - 100);
  }
  EXPECT_EQ(open_in_child(fuse_path("clean1.txt")).error, 0);
}

TEST_F(StalledFsTest, MoreStalledFilesThanReaderThreadsDoNotBlockOtherOpens) {
  ASSERT_TRUE(start_fltmgrd());
  ASSERT_TRUE(start_service());
  std::ofstream(plain_path("foul.txt")) << "this one is foul\n";
  ASSERT_TRUE(is_denial(open_in_child(plain_path("foul.txt")).error));

  // Nine stalled files at once: more than the pool's 8 reader threads, and than the 4 one device
  // may hold. Each open is answered by its deadline at the latest; the reads beyond the device's
  // share wait until the 4 in the file system count as stalled (200 ms), then are refused and
  // take the default unscanned (allow here), as do reads of the mount's clean files from then on.
  std::vector<std::unique_ptr<OpenProbe>> stalled;
  for (int i = 1; i <= 9; ++i)
    stalled.push_back(std::make_unique<OpenProbe>(fuse_path("stall" + std::to_string(i))));
  ASSERT_TRUE(wait_for_stalls(4));
  std::this_thread::sleep_for(250ms);
  const long long worst = other_opens_go_on(3, false);
  long long slowest = 0;
  for (auto& probe : stalled) {
    const auto outcome = probe->result(kStallOpenTimeout);
    EXPECT_EQ(outcome.error, 0);
    EXPECT_LE(outcome.elapsed_ms, kDeadlineMs + kWaveMargin.count());
    slowest = std::max(slowest, outcome.elapsed_ms);
  }
  // A second wave while the first wave's reads are still stuck: refused at once, nothing waits.
  std::vector<std::unique_ptr<OpenProbe>> again;
  for (int i = 1; i <= 9; ++i)
    again.push_back(std::make_unique<OpenProbe>(fuse_path("stall" + std::to_string(i))));
  const long long worst_again = other_opens_go_on(2, false);
  long long slowest_again = 0;
  for (auto& probe : again) {
    const auto outcome = probe->result(kStallOpenTimeout);
    EXPECT_EQ(outcome.error, 0);
    EXPECT_LE(outcome.elapsed_ms, kDeadlineMs + kWaveMargin.count());
    slowest_again = std::max(slowest_again, outcome.elapsed_ms);
  }
  std::printf(
      "[ stalled  ] 9 stalled opens: slowest %lld ms, then with their reads still stuck: slowest %lld ms; "
      "worst other open: %lld ms, %lld ms\n",
      slowest, slowest_again, worst, worst_again);
  EXPECT_LE(count(read_file(stall_fs_log_), "stalling read of"), 4u)
      << "one device held more reader threads than its share";
  EXPECT_GE(count(read_file(fltmgrd_log_), "refused with STATUS_IO_TIMEOUT"), 1u);

  // fltmgrd stops promptly although reader threads are stuck in the file system.
  const std::optional<int> status = fltmgrd_->terminate(kStopTimeout);
  ASSERT_TRUE(status.has_value()) << "fltmgrd did not exit within " << kStopTimeout.count()
                                  << " ms of SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
}

}  // namespace
}  // namespace fltport
