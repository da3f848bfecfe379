// MaxConnections under a race: many services connect at the same instant, through the real C API.
//
// 64 service processes, forked before the filter exists, wait on a barrier per round (a pipe whose
// write end the test closes: every reader wakes at once); each then calls
// FilterConnectCommunicationPort. With MaxConnections = 4, exactly 4 must succeed and the others
// get HRESULT_FROM_WIN32(ERROR_CONNECTION_COUNT_LIMIT); the winners disconnect on a second barrier
// and the next round starts once the filter has seen their DisconnectNotify. ConnectNotify must run
// once per success, never for a refused service.
#include <fltport/fltkernel.h>
#include <fltport/fltuser.h>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <map>
#include <vector>

#include "support/c_filter.hpp"
#include "support/process.hpp"

namespace fltport::test {
namespace {

constexpr int kServices = 64;
constexpr LONG kMaxConnections = 4;
constexpr int kRounds = 20;
constexpr int kBarrierTimeoutMs = 60000;

struct Report {
  int32_t service;
  int32_t round;
  int32_t hr;
};

// A pipe used as a barrier: readers block until every write end is closed.
struct Barrier {
  int read_end = -1;
  int write_end = -1;
};

// Blocks until the barrier's write ends are all closed (read returns 0); false on timeout.
bool pass(const Barrier& barrier) {
  pollfd ready{barrier.read_end, POLLIN, 0};
  for (;;) {
    const int n = ::poll(&ready, 1, kBarrierTimeoutMs);
    if (n < 0 && errno == EINTR) continue;
    if (n != 1) return false;
    char byte = 0;
    return ::read(barrier.read_end, &byte, 1) == 0;
  }
}

bool write_report(int fd, const Report& report) {
  for (;;) {
    const ssize_t n = ::write(fd, &report, sizeof report);  // < PIPE_BUF: atomic
    if (n == static_cast<ssize_t>(sizeof report)) return true;
    if (n < 0 && errno == EINTR) continue;
    return false;
  }
}

std::optional<Report> read_report(int fd, std::chrono::milliseconds timeout) {
  pollfd ready{fd, POLLIN, 0};
  if (::poll(&ready, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
  Report report{};
  if (::read(fd, &report, sizeof report) != static_cast<ssize_t>(sizeof report)) return std::nullopt;
  return report;
}

class ConnectionLimitRace : public PortTest {
 protected:
  void TearDown() override {
    for (auto* barriers : {&start_, &release_}) {
      for (Barrier& b : *barriers) {
        if (b.read_end >= 0) ::close(b.read_end);
        if (b.write_end >= 0) ::close(b.write_end);
      }
    }
    if (reports_[0] >= 0) ::close(reports_[0]);
    if (reports_[1] >= 0) ::close(reports_[1]);
  }

  std::array<Barrier, kRounds> start_;    // closed: the round's services connect
  std::array<Barrier, kRounds> release_;  // closed: the round's winners disconnect
  int reports_[2] = {-1, -1};
};

TEST_F(ConnectionLimitRace, ExactlyMaxConnectionsWinEachRound) {
  for (int r = 0; r < kRounds; ++r) {
    for (Barrier* b : {&start_[r], &release_[r]}) {
      int ends[2];
      ASSERT_EQ(::pipe2(ends, O_CLOEXEC), 0);
      b->read_end = ends[0];
      b->write_end = ends[1];
    }
  }
  ASSERT_EQ(::pipe2(reports_, O_CLOEXEC), 0);

  std::vector<ChildProcess> services;
  services.reserve(kServices);
  for (int s = 0; s < kServices; ++s) {
    services.emplace_back([this, s] {
      // Only the test holds the barriers' write ends, so that closing them releases everyone.
      for (int r = 0; r < kRounds; ++r) {
        ::close(start_[r].write_end);
        ::close(release_[r].write_end);
      }
      ::close(reports_[0]);
      for (int r = 0; r < kRounds; ++r) {
        CHILD_CHECK(pass(start_[r]));
        HANDLE port = nullptr;
        const HRESULT hr = connect_service(&port);
        CHILD_CHECK(write_report(reports_[1], Report{s, r, hr}));
        CHILD_CHECK(pass(release_[r]));
        if (hr == S_OK) CHILD_CHECK(CloseHandle(port));
      }
      return 0;
    });
  }
  ::close(reports_[1]);
  reports_[1] = -1;

  CFilter filter;
  ASSERT_CODE(filter.create_port({.max_connections = kMaxConnections}), STATUS_SUCCESS);

  int total_successes = 0;
  std::map<int32_t, int> other_results;  // anything but S_OK and the limit, by HRESULT
  for (int r = 0; r < kRounds; ++r) {
    ::close(start_[r].write_end);  // every service of the round connects now
    start_[r].write_end = -1;
    int successes = 0;
    int limited = 0;
    for (int received = 0; received < kServices; ++received) {
      const auto report = read_report(reports_[0], kWaitTimeout * 2);
      ASSERT_TRUE(report.has_value()) << "round " << r << ": only " << received << " services reported";
      ASSERT_EQ(report->round, r);
      if (report->hr == S_OK) {
        ++successes;
      } else if (report->hr == HRESULT_FROM_WIN32(ERROR_CONNECTION_COUNT_LIMIT)) {
        ++limited;
      } else {
        other_results[report->hr]++;
      }
    }
    total_successes += successes;
    EXPECT_EQ(successes, kMaxConnections) << "round " << r;
    EXPECT_EQ(limited, kServices - kMaxConnections) << "round " << r;
    EXPECT_EQ(filter.connect_attempts(), total_successes) << "round " << r << ": ConnectNotify calls";
    ::close(release_[r].write_end);  // the winners disconnect
    release_[r].write_end = -1;
    ASSERT_TRUE(filter.wait_disconnects(total_successes)) << "round " << r;
  }
  for (const auto& [hr, count] : other_results) {
    ADD_FAILURE() << count << " connects returned 0x" << std::hex << static_cast<uint32_t>(hr);
  }
  EXPECT_EQ(total_successes, kMaxConnections * kRounds);
  EXPECT_EQ(filter.connect_attempts(), total_successes);
  EXPECT_EQ(filter.connection_count(), total_successes);
  EXPECT_EQ(filter.disconnect_count(), total_successes);
  EXPECT_EQ(filter.bad_cookies(), 0);
  for (ChildProcess& service : services) EXPECT_TRUE(ExitsCleanly(service));
}

}  // namespace
}  // namespace fltport::test
