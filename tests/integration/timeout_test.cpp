// FltSendMessage timeouts: relative, absolute and zero; withdrawn messages; late replies.
#include <fltport/fltkernel.h>
#include <fltport/fltuser.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "support/c_filter.hpp"
#include "support/process.hpp"

namespace fltport::test {
namespace {

class Timeout : public PortTest {};

NTSTATUS send_message(CFilter& filter, const std::vector<uint8_t>& message, void* reply, ULONG* reply_length,
                      LARGE_INTEGER* timeout) {
  return FltSendMessage(filter.handle(), filter.client_port(0), const_cast<uint8_t*>(message.data()),
                        static_cast<ULONG>(message.size()), reply, reply_length, timeout);
}

// The service connects, waits for "go", then takes one message, reports whether it is the message
// with pattern seed `expected_seed`, and replies "ok" if a reply is wanted.
int first_message_after_go(Signal& port_ready, Signal& connected, Signal& go, Signal& results, uint32_t expected_seed) {
  CHILD_CHECK(port_ready.wait());
  HANDLE port = nullptr;
  CHILD_CHECK_EQ(connect_service(&port), S_OK);
  connected.notify();
  CHILD_CHECK(go.wait());
  MessageBuffer<64> buffer{};
  CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
  results.notify(matches_pattern(buffer.data, 16, expected_seed) ? 1 : 0);
  if (buffer.header.ReplyLength != 0) CHILD_CHECK_EQ(reply_message(port, buffer.header.MessageId, "ok", 2), S_OK);
  CloseHandle(port);
  return 0;
}

TEST_F(Timeout, RelativeTimeoutWhenTheServiceTakesNothingIsTimeoutAndWithdrawsTheMessage) {
  Signal port_ready, connected, go, results;
  ChildProcess service([&] { return first_message_after_go(port_ready, connected, go, results, 3); });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(connected.wait());
  ASSERT_TRUE(filter.wait_connections(1));

  char reply[8];
  ULONG reply_length = sizeof reply;
  LARGE_INTEGER timeout = relative_timeout(std::chrono::milliseconds(100));  // -1000000
  ASSERT_EQ(timeout.QuadPart, -1000000);
  Stopwatch with_reply;
  EXPECT_CODE(send_message(filter, pattern(16, 1), reply, &reply_length, &timeout), STATUS_TIMEOUT);
  EXPECT_GE(with_reply.ms(), 80) << "returned before the timeout";
  EXPECT_LT(with_reply.ms(), 2000);

  Stopwatch without_reply;
  EXPECT_CODE(send_message(filter, pattern(16, 2), nullptr, nullptr, &timeout), STATUS_TIMEOUT);
  EXPECT_GE(without_reply.ms(), 80) << "returned before the timeout";
  EXPECT_LT(without_reply.ms(), 2000);

  go.notify();
  reply_length = sizeof reply;
  EXPECT_CODE(send_message(filter, pattern(16, 3), reply, &reply_length, nullptr), STATUS_SUCCESS);
  EXPECT_EQ(reply_length, 2u);
  EXPECT_EQ(wait_number(results), 1) << "the service received a message that had timed out";
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(Timeout, TakenButUnansweredIsTimeoutAndTheLateReplyFindsNoWaiter) {
  Signal port_ready, taken, timed_out, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    MessageBuffer<64> buffer{};
    CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
    taken.notify();
    CHILD_CHECK(timed_out.wait());
    notify_code(results, reply_message(port, buffer.header.MessageId, "late", 4));
    // The connection still works afterwards.
    CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
    notify_code(results, reply_message(port, buffer.header.MessageId, "fresh", 5));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  char reply[8];
  ULONG reply_length = sizeof reply;
  LARGE_INTEGER timeout = relative_timeout(std::chrono::milliseconds(300));
  Stopwatch stopwatch;
  EXPECT_CODE(send_message(filter, pattern(16, 1), reply, &reply_length, &timeout), STATUS_TIMEOUT);
  EXPECT_GE(stopwatch.ms(), 250);
  EXPECT_LT(stopwatch.ms(), 2500);
  ASSERT_TRUE(taken.wait()) << "the service did not take the message";
  timed_out.notify();
  EXPECT_CODE(wait_code(results), ERROR_FLT_NO_WAITER_FOR_REPLY);
  reply_length = sizeof reply;
  timeout = relative_timeout(kWaitTimeout);
  EXPECT_CODE(send_message(filter, pattern(16, 2), reply, &reply_length, &timeout), STATUS_SUCCESS);
  EXPECT_EQ(reply_length, 5u);
  EXPECT_EQ(std::memcmp(reply, "fresh", 5), 0) << "the late reply was delivered to the next message";
  EXPECT_CODE(wait_code(results), S_OK);
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(Timeout, ZeroWithNobodyWaitingIsTimeoutWithoutBlocking) {
  Signal port_ready, connected, go, results;
  ChildProcess service([&] { return first_message_after_go(port_ready, connected, go, results, 3); });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(connected.wait());
  ASSERT_TRUE(filter.wait_connections(1));
  char reply[8];
  ULONG reply_length = sizeof reply;
  LARGE_INTEGER zero;
  zero.QuadPart = 0;
  Stopwatch with_reply;
  EXPECT_CODE(send_message(filter, pattern(16, 1), reply, &reply_length, &zero), STATUS_TIMEOUT);
  EXPECT_LT(with_reply.ms(), 50);
  Stopwatch without_reply;
  EXPECT_CODE(send_message(filter, pattern(16, 2), nullptr, nullptr, &zero), STATUS_TIMEOUT);
  EXPECT_LT(without_reply.ms(), 50);
  go.notify();
  reply_length = sizeof reply;
  LARGE_INTEGER timeout = relative_timeout(kWaitTimeout);
  EXPECT_CODE(send_message(filter, pattern(16, 3), reply, &reply_length, &timeout), STATUS_SUCCESS);
  EXPECT_EQ(wait_number(results), 1) << "the service received a message sent with timeout 0";
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(Timeout, AbsoluteDeadlineIsHonoured) {
  Signal port_ready, connected, go, results;
  ChildProcess service([&] { return first_message_after_go(port_ready, connected, go, results, 3); });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(connected.wait());
  ASSERT_TRUE(filter.wait_connections(1));
  char reply[8];
  ULONG reply_length = sizeof reply;

  LARGE_INTEGER deadline = absolute_timeout(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  ASSERT_GT(deadline.QuadPart, 0);
  Stopwatch future_deadline;
  EXPECT_CODE(send_message(filter, pattern(16, 1), reply, &reply_length, &deadline), STATUS_TIMEOUT);
  EXPECT_GE(future_deadline.ms(), 120) << "an absolute deadline 200 ms ahead returned early";
  EXPECT_LT(future_deadline.ms(), 2000) << "an absolute deadline 200 ms ahead was not honoured";

  LARGE_INTEGER past;
  past.QuadPart = 1;  // 1601-01-01: long gone
  Stopwatch past_deadline;
  reply_length = sizeof reply;
  EXPECT_CODE(send_message(filter, pattern(16, 2), reply, &reply_length, &past), STATUS_TIMEOUT);
  EXPECT_LT(past_deadline.ms(), 50);

  go.notify();
  reply_length = sizeof reply;
  EXPECT_CODE(send_message(filter, pattern(16, 3), reply, &reply_length, nullptr), STATUS_SUCCESS);
  EXPECT_EQ(wait_number(results), 1) << "the service received a message whose deadline had passed";
  EXPECT_TRUE(ExitsCleanly(service));
}

}  // namespace
}  // namespace fltport::test
