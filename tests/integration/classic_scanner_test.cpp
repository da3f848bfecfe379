// The classic-shape scanner service end to end, as root on real fanotify: fltmgrd loads the scanner
// filter plugin on a directory of the test's own, and examples/scanner/service/scanuser_classic.c
// -- written only against <windows.h> and <fltuser.h>: a completion port, THREADS x REQUESTS
// overlapped FilterGetMessage calls, GetQueuedCompletionStatus, FilterReplyMessage -- answers the
// filter's questions while ordinary processes open files there.
//
// The fixture is the scanner test's (support/host_harness.hpp): a fresh runtime directory and a
// fresh mkdtemp directory that is the only place marked, programs killed by pid and reaped (and by
// the kernel should the test die: PR_SET_PDEATHSIG), an alarm as watchdog, a clean skip where
// fanotify permission events are not permitted. The classic service's path comes as a compile
// definition from examples/scanner/CMakeLists.txt.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "scanner.h"
#include "support/host_harness.hpp"

#ifndef FLTPORT_TEST_SCANNER_SERVICE_CLASSIC
#define FLTPORT_TEST_SCANNER_SERVICE_CLASSIC ""
#endif

namespace fltport {
namespace {

using namespace std::chrono_literals;
using namespace fltport::test;

class ClassicScannerTest : public ScannerTest {
 protected:
  void SetUp() override {
    ScannerTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    const std::string service = FLTPORT_TEST_SCANNER_SERVICE_CLASSIC;
    if (service.empty() || service[0] != '/' || ::access(service.c_str(), X_OK) != 0) {
      GTEST_SKIP() << "not built: " << (service.empty() ? std::string("(no path configured)") : service)
                   << " (the classic scanner service)";
    }
  }

  // The classic service with `threads` workers and `requests` outstanding requests each; returns
  // when it says it is connected (every request issued).
  ::testing::AssertionResult start_classic_service(int threads, int requests) {
    return start_service({FLTPORT_TEST_SCANNER_SERVICE_CLASSIC, "-t", std::to_string(threads), "-r",
                          std::to_string(requests)});
  }

  // Opens every (path, foul) at once, each from its own child, and checks each verdict.
  void expect_verdicts_in_parallel(const std::vector<std::pair<std::string, bool>>& files) {
    std::vector<std::unique_ptr<OpenProbe>> probes;
    for (const auto& file : files) probes.push_back(std::make_unique<OpenProbe>(file.first));
    for (size_t i = 0; i < files.size(); ++i) {
      const int error = probes[i]->result().error;
      if (files[i].second) {
        EXPECT_TRUE(is_denial(error))
            << files[i].first << ": " << (error > 0 ? std::strerror(error) : "opened, although foul");
      } else {
        EXPECT_EQ(error, 0) << files[i].first << ": " << (error > 0 ? std::strerror(error) : "no answer");
      }
    }
  }
};

TEST_F(ClassicScannerTest, CleanFileOpensFoulFileIsDeniedAndTheServiceEndsWithTheFilter) {
  ASSERT_TRUE(start_fltmgrd());
  ASSERT_TRUE(start_classic_service(2, 3));
  expect_the_classic_verdicts<SCANNER_READ_BUFFER_SIZE>();

  // More opens at once than one request serves: the six outstanding requests complete in any
  // order, and each reply reaches its own open.
  std::vector<std::pair<std::string, bool>> files;
  for (int i = 0; i < 12; ++i) {
    const bool foul = i % 3 == 0;
    const std::string name = "parallel-" + std::to_string(i) + ".txt";
    write_file(path(name), foul ? "foul number " + std::to_string(i) : "clean number " + std::to_string(i));
    files.emplace_back(path(name), foul);
  }
  expect_verdicts_in_parallel(files);

  // fltmgrd unloads the filter on SIGTERM: the outstanding requests fail, each worker ends on the
  // failure it takes from the completion port, and the service exits 0.
  const std::optional<int> status = fltmgrd_->terminate(kStopTimeout);
  ASSERT_TRUE(status.has_value()) << "fltmgrd did not exit within " << kStopTimeout.count()
                                  << " ms of SIGTERM";
  const std::optional<int> service_status = service_->wait_exit(5s);
  ASSERT_TRUE(service_status.has_value()) << "the service did not end when the filter went away";
  EXPECT_TRUE(WIFEXITED(*service_status) && WEXITSTATUS(*service_status) == 0)
      << "service wait status " << *service_status;
  const std::string log = read_file(service_log_);
  EXPECT_EQ(count(log, "port is disconnected"), 2u) << "each of the 2 workers sees the port go";
  EXPECT_EQ(count(log, "scanner: stopped"), 1u);
}

TEST_F(ClassicScannerTest, StopsOnSigtermWithRequestsOutstanding) {
  ASSERT_TRUE(start_fltmgrd());
  ASSERT_TRUE(start_classic_service(3, 4));
  write_file(path("foul.txt"), "foul while the service runs\n");
  ASSERT_TRUE(is_denial(open_in_child(path("foul.txt")).error));

  // A stop packet per worker (PostQueuedCompletionStatus), then CloseHandle on the port with
  // twelve requests outstanding; nothing may crash or hang, and the exit status is 0.
  const std::optional<int> status = service_->terminate(5s);
  ASSERT_TRUE(status.has_value()) << "the service did not exit within 5 s of SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "service wait status " << *status;
  const std::string log = read_file(service_log_);
  EXPECT_EQ(count(log, "stop requested"), 3u);
  EXPECT_EQ(count(log, "scanner: stopped"), 1u);

  // No service any more: the filter lets opens through, and fltmgrd is unharmed.
  EXPECT_EQ(open_in_child(path("foul.txt")).error, 0);
  EXPECT_TRUE(fltmgrd_->alive());
}

TEST_F(ClassicScannerTest, OneThreadWithOneRequestServesOpensOneAfterAnother) {
  ASSERT_TRUE(start_fltmgrd());
  ASSERT_TRUE(start_classic_service(1, 1));
  std::vector<std::pair<std::string, bool>> files;
  for (int i = 0; i < 6; ++i) {
    const bool foul = i % 2 == 1;
    const std::string name = "serial-" + std::to_string(i) + ".txt";
    write_file(path(name), foul ? "a foul one" : "a clean one");
    files.emplace_back(path(name), foul);
  }
  // Queued in the filter until the single request is issued again after each reply.
  expect_verdicts_in_parallel(files);
}

}  // namespace
}  // namespace fltport
