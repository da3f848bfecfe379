// The on-access scanner end to end, as root on real fanotify: fltmgrd loads the scanner filter
// plugin on a directory of the test's own, the scanner service connects to \ScannerPort, and
// ordinary processes open files there.
//
// fltmgrd, the plugin directory and the service come as compile definitions that
// examples/scanner/CMakeLists.txt adds to this test executable (deferred to the end of the
// top-level CMakeLists.txt, since tests/ is read after examples/).
//
// Every test: a fresh runtime directory ($FLTPORT_RUNTIME_DIR) and a fresh mkdtemp directory that
// is the only place marked; both programs are children of the test (killed with SIGKILL by pid and
// reaped at the end, and killed by the kernel should the test process die: PR_SET_PDEATHSIG); an
// alarm is the watchdog. Opens are made by forked children: the verdict reaches the opening process.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/fanotify.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "scanner.h"
#include "support/host_harness.hpp"

namespace fltport {
namespace {

using namespace std::chrono_literals;
using namespace fltport::test;

TEST_F(ScannerTest, CleanFileOpensAndFoulFileIsDenied) {
  ASSERT_TRUE(start_fltmgrd());
  ASSERT_TRUE(start_service());
  expect_the_classic_verdicts<SCANNER_READ_BUFFER_SIZE>();
  // The filter takes no paths with its events; its log line asks for the one it names.
  const std::string denial = "open of " + std::filesystem::canonical(path("foul.txt")).string() + " by pid";
  EXPECT_NE(read_file(fltmgrd_log_).find(denial), std::string::npos) << read_file(fltmgrd_log_);

  // Directories are not scanned.
  ASSERT_EQ(::mkdir(path("sub").c_str(), 0755), 0);
  EXPECT_EQ(open_in_child(path("sub")).error, 0);

  // fltmgrd unloads the filter on SIGTERM and exits 0; the service sees the port go and exits 0.
  const std::optional<int> status = fltmgrd_->terminate(kStopTimeout);
  ASSERT_TRUE(status.has_value()) << "fltmgrd did not exit within " << kStopTimeout.count()
                                  << " ms of SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "fltmgrd wait status " << *status;
  const auto until = Clock::now() + 5s;
  while (service_->alive() && Clock::now() < until) std::this_thread::sleep_for(10ms);
  EXPECT_FALSE(service_->alive()) << "the service did not end when the filter went away";
  // Nothing marks the directory any more.
  EXPECT_EQ(open_in_child(path("foul.txt")).error, 0);
}

TEST_F(ScannerTest, WithNoServiceConnectedOpensAreAllowed) {
  ASSERT_TRUE(start_fltmgrd());
  write_file(path("foul.txt"), "foul, but nobody is looking\n");
  for (int i = 0; i < 3; ++i) {
    const auto outcome = open_in_child(path("foul.txt"));
    EXPECT_EQ(outcome.error, 0);
    EXPECT_LT(outcome.elapsed_ms, 1000) << "an open with no service should not wait";
  }
  // Nothing was cached while no service looked: once one connects, the file is denied.
  ASSERT_TRUE(start_service());
  EXPECT_TRUE(is_denial(open_in_child(path("foul.txt")).error));
}

TEST_F(ScannerTest, CleanVerdictIsCachedUntilTheFileIsWritten) {
  ASSERT_TRUE(start_fltmgrd());
  ASSERT_TRUE(start_service());
  const std::string clean = "twenty-nine bytes, all clean\n";
  const std::string marker = std::to_string(clean.size()) + " bytes";
  write_file(path("file.txt"), clean);
  // The close after the write is scanned (asynchronously) and so is the first open.
  EXPECT_EQ(open_in_child(path("file.txt")).error, 0);
  ASSERT_TRUE(wait_for_service_lines(marker, 2)) << "expected the close-after-write scan and the open scan";
  std::this_thread::sleep_for(100ms);
  const size_t scans = count(read_file(service_log_), "scanner: ");

  // Cached: the next opens reach neither the filter nor the service.
  EXPECT_EQ(open_in_child(path("file.txt")).error, 0);
  EXPECT_EQ(open_in_child(path("file.txt")).error, 0);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(count(read_file(service_log_), "scanner: "), scans) << "a cached clean file was scanned again";

  // Writing drops the cached verdict: the next open is scanned, and denied.
  write_file(path("file.txt"), "now it is foul\n");
  const int denied = open_in_child(path("file.txt")).error;
  EXPECT_TRUE(is_denial(denied)) << "open after writing foul: "
                                 << (denied > 0 ? std::strerror(denied) : "opened");
}

// The scanner rescans a file when it is closed after a write, opening it by path under its own
// marks. A host that ran that post-operation on its only reading thread, with no deadline pending
// to make anyone notice, left the rescan's own open (and every open after it) waiting for ever.
TEST_F(ScannerTest, RescanAfterAWriteWithNothingElsePendingDoesNotStopTheHost) {
  ASSERT_TRUE(start_fltmgrd({"--deadline-ms", "scanner=300"}));
  ASSERT_TRUE(start_service());
  write_file(path("file.txt"), "clean\n");
  EXPECT_EQ(open_in_child(path("file.txt")).error, 0);  // scanned, and cached as clean
  std::this_thread::sleep_for(1s);                      // every deadline of those events has passed
  write_file(path("file.txt"), "clean, and written again\n");
  const auto outcome = OpenProbe(path("file.txt")).result(5s);
  EXPECT_EQ(outcome.error, 0) << (outcome.error == -1 ? "no answer: the host stopped reading its events"
                                                      : "");
  EXPECT_LT(outcome.elapsed_ms, 1000);
}

TEST_F(ScannerTest, StoppedServiceOpensTakeTheDefaultWithinTheDeadline) {
  ASSERT_TRUE(start_fltmgrd(
      {"--deadline-ms", "scanner=" + std::to_string(kDeadlineMs), "--default", "scanner=allow"}));
  ASSERT_TRUE(start_service());
  write_file(path("foul.txt"), "foul: denied whenever the service answers\n");
  ASSERT_TRUE(is_denial(open_in_child(path("foul.txt")).error));
  ASSERT_TRUE(wait_for_service_lines("FOUL", 2));  // the close-after-write scan and the open

  ASSERT_TRUE(service_->stop());
  // Several opens in flight at once, each answered by the deadline with the default (allow),
  // although the file is foul: nobody is there to say so.
  std::vector<std::unique_ptr<OpenProbe>> probes;
  for (int i = 0; i < 3; ++i) probes.push_back(std::make_unique<OpenProbe>(path("foul.txt")));
  for (auto& probe : probes) {
    const auto outcome = probe->result();
    EXPECT_EQ(outcome.error, 0) << "a stalled service must not deny (the default is allow)";
    EXPECT_LE(outcome.elapsed_ms, kDeadlineMs + kDeadlineMargin.count()) << "the deadline was not kept";
    EXPECT_GE(outcome.elapsed_ms, kDeadlineMs - 100)
        << "answered before the deadline: was the service asked?";
  }

  // The service comes back: its late answers find nobody waiting, and new opens are denied again.
  service_->signal(SIGCONT);
  const auto until = Clock::now() + 10s;
  int error = 0;
  while (Clock::now() < until && !is_denial(error = open_in_child(path("foul.txt")).error)) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(is_denial(error)) << "the resumed service's verdicts do not reach opens";
}

TEST_F(ScannerTest, KilledServiceOpensGoOn) {
  ASSERT_TRUE(start_fltmgrd({"--deadline-ms", "scanner=" + std::to_string(kDeadlineMs)}));
  ASSERT_TRUE(start_service());
  write_file(path("foul.txt"), "foul until the service dies\n");
  ASSERT_TRUE(is_denial(open_in_child(path("foul.txt")).error));
  ASSERT_TRUE(wait_for_service_lines("FOUL", 2));

  // An open in flight (the service stopped, so it cannot answer) when the service is killed.
  ASSERT_TRUE(service_->stop());
  OpenProbe in_flight(path("foul.txt"));
  std::this_thread::sleep_for(100ms);
  service_->kill();  // SIGKILL by pid, reaped
  const auto outcome = in_flight.result();
  EXPECT_EQ(outcome.error, 0);
  EXPECT_LE(outcome.elapsed_ms, kDeadlineMs + kDeadlineMargin.count());

  // No service: opens go on at once.
  for (int i = 0; i < 3; ++i) {
    const auto next = open_in_child(path("foul.txt"));
    EXPECT_EQ(next.error, 0);
    EXPECT_LT(next.elapsed_ms, kDeadlineMs) << "an open waited although no service is connected";
  }

  // The port takes a new service (MaxConnections 1: the dead one's connection is gone), which scans again.
  ASSERT_TRUE(start_service());
  EXPECT_TRUE(is_denial(open_in_child(path("foul.txt")).error));
}

// Opens the service was asked about and never answered take the policy's default, whatever it is:
// with deny, a service killed with an open in flight denies that open (at once, not at the
// deadline), and one that stalls past the scanner's send timeout (2 s, inside a 3 s deadline)
// denies too. With no service connected, opens are allowed (the classic scanner's rule).
TEST_F(ScannerTest, WithADenyPolicyOpensTheServiceNeverAnsweredAreDenied) {
  constexpr int kLongDeadlineMs = 3000;
  ASSERT_TRUE(start_fltmgrd(
      {"--deadline-ms", "scanner=" + std::to_string(kLongDeadlineMs), "--default", "scanner=deny"}));
  ASSERT_TRUE(start_service());
  write_file(path("clean.txt"), "clean: allowed whenever the service answers\n");
  ASSERT_EQ(open_in_child(path("clean.txt")).error, 0);
  write_file(path("clean2.txt"), "clean as well\n");  // not cached yet

  ASSERT_TRUE(service_->stop());
  const auto stalled = OpenProbe(path("clean2.txt")).result(10s);
  EXPECT_TRUE(is_denial(stalled.error)) << "a stalled service: the default (deny), error " << stalled.error;
  EXPECT_GE(stalled.elapsed_ms, 1900) << "answered before the scanner's send timed out";
  EXPECT_LE(stalled.elapsed_ms, kLongDeadlineMs + kDeadlineMargin.count());

  OpenProbe in_flight(path("clean2.txt"));
  std::this_thread::sleep_for(200ms);
  service_->kill();  // SIGKILL by pid, reaped
  const auto killed = in_flight.result(10s);
  EXPECT_TRUE(is_denial(killed.error)) << "a killed service: the default (deny), error " << killed.error;
  EXPECT_LT(killed.elapsed_ms, 1900) << "the service's death should end the wait, not the send's timeout";

  // Until the filter has heard of the death (its DisconnectNotify), an open is still sent and
  // comes back unanswered: the default. Once it has, no service is connected: allowed.
  const auto log_text = [&] {
    std::ifstream log(fltmgrd_log_);
    return std::string((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  };
  for (int i = 0; i < 500 && log_text().find("service disconnected") == std::string::npos; ++i)
    std::this_thread::sleep_for(10ms);
  const auto alone = open_in_child(path("clean2.txt"));
  EXPECT_EQ(alone.error, 0) << "no service connected: allowed";
  const std::string text = log_text();
  EXPECT_NE(text.find("no verdict for open"), std::string::npos) << text;
  EXPECT_NE(text.find("denied by default"), std::string::npos) << text;
}

}  // namespace
}  // namespace fltport

namespace fltport {
namespace {

// The daemon killed with SIGKILL while an open waits under its marks: the kernel drops its groups
// and the open goes on; no mark is left behind (later opens do not wait either).
TEST_F(ScannerTest, KilledDaemonOpensUnderItsMarksGoOn) {
  ASSERT_TRUE(start_fltmgrd({"--deadline-ms", "scanner=" + std::to_string(kDeadlineMs * 10)}));
  ASSERT_TRUE(start_service());
  write_file(path("foul.txt"), "foul while the daemon lives\n");
  ASSERT_TRUE(is_denial(open_in_child(path("foul.txt")).error));

  ASSERT_TRUE(service_->stop());  // nobody answers: the open waits in the kernel for fltmgrd
  OpenProbe in_flight(path("foul.txt"));
  std::this_thread::sleep_for(100ms);
  fltmgrd_->kill();  // SIGKILL by pid, reaped
  const auto outcome = in_flight.result();
  EXPECT_EQ(outcome.error, 0) << "an open under a dead host's marks must go on";
  EXPECT_LT(outcome.elapsed_ms, 1000) << "the kernel releases waiting opens when the group goes away";
  for (int i = 0; i < 3; ++i) {
    const auto next = open_in_child(path("foul.txt"));
    EXPECT_EQ(next.error, 0);
    EXPECT_LT(next.elapsed_ms, 200) << "no mark of the dead host may remain";
  }
}

}  // namespace
}  // namespace fltport
