// Connections ending: the service closes its handle or dies, the filter closes the client port,
// dies, or unregisters. Whoever is blocked on the other side must be released promptly.
#include <fltport/fltkernel.h>
#include <fltport/fltuser.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "support/c_filter.hpp"
#include "support/process.hpp"

namespace fltport::test {
namespace {

class Disconnect : public PortTest {};

constexpr long long kPromptlyMs = 2000;

enum class Ending { close_handle, sigkill };
void PrintTo(Ending ending, std::ostream* os) { *os << (ending == Ending::close_handle ? "CloseHandle" : "SIGKILL"); }

class ServiceEnds : public PortTest, public ::testing::WithParamInterface<Ending> {};

// The filter waits in FltSendMessage (no timeout) for a reply to a message the service has taken;
// the service then closes its handle or is killed.
TEST_P(ServiceEnds, WhileTheFilterWaitsForAReplyIsPortDisconnectedAndTheSlotIsFreed) {
  const Ending ending = GetParam();
  Signal port_ready, taken, reconnect, reconnect_result;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    MessageBuffer<64> buffer{};
    CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
    CHILD_CHECK(buffer.header.ReplyLength != 0);
    taken.notify();
    if (ending == Ending::close_handle) {
      CHILD_CHECK(CloseHandle(port));
      return 0;
    }
    Signal never;
    never.wait(std::chrono::seconds(30));  // killed by the test
    return 0;
  });
  ChildProcess next_service([&] {
    CHILD_CHECK(reconnect.wait(std::chrono::seconds(15)));
    HANDLE port = nullptr;
    notify_code(reconnect_result, connect_service(&port));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port({.max_connections = 1}), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  PFLT_PORT* client = filter.client_port(0);
  AsyncCall send([&]() -> int64_t {
    uint8_t message[8] = {1};
    uint8_t reply[8];
    ULONG reply_length = sizeof reply;
    return FltSendMessage(filter.handle(), client, message, sizeof message, reply, &reply_length, nullptr);
  }, [&] { filter.unregister(); });
  ASSERT_TRUE(taken.wait());
  Stopwatch stopwatch;
  if (ending == Ending::sigkill) {
    EXPECT_EQ(service.kill().kind, ExitStatus::Kind::signaled);
  }
  EXPECT_CODE(send.wait_code(), STATUS_PORT_DISCONNECTED);
  EXPECT_LT(stopwatch.ms(), kPromptlyMs);
  if (ending == Ending::close_handle) {
    EXPECT_TRUE(ExitsCleanly(service));
  }

  ASSERT_TRUE(filter.wait_disconnects(1));
  EXPECT_EQ(filter.connection(0).disconnects.load(), 1);
  EXPECT_EQ(filter.client_port_value(0), nullptr) << "FltCloseClientPort in DisconnectNotify sets the port to NULL";

  reconnect.notify();
  EXPECT_CODE(wait_code(reconnect_result), S_OK) << "MaxConnections 1: the ended connection must free its slot";
  EXPECT_TRUE(ExitsCleanly(next_service));
  EXPECT_TRUE(filter.wait_disconnects(2));
  EXPECT_EQ(filter.connection(0).disconnects.load(), 1) << "DisconnectNotify ran more than once";
  EXPECT_EQ(filter.disconnect_count(), 2);
}

INSTANTIATE_TEST_SUITE_P(Ways, ServiceEnds, ::testing::Values(Ending::close_handle, Ending::sigkill),
                         [](const auto& info) {
                           return std::string(info.param == Ending::close_handle ? "ClosesHandle" : "IsKilled");
                         });

// The service closes its handle while the filter's message is still queued (not taken), or just
// before the filter sends: either way the filter gets STATUS_PORT_DISCONNECTED promptly.
TEST_F(Disconnect, ServiceClosingWhileTheMessageIsQueuedIsPortDisconnected) {
  Signal port_ready, connected, sending;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    connected.notify();
    CHILD_CHECK(sending.wait());
    CHILD_CHECK(CloseHandle(port));
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(connected.wait());
  ASSERT_TRUE(filter.wait_connections(1));
  PFLT_PORT* client = filter.client_port(0);
  Stopwatch stopwatch;
  AsyncCall send([&]() -> int64_t {
    uint8_t message[8] = {1};
    sending.notify();
    return FltSendMessage(filter.handle(), client, message, sizeof message, nullptr, nullptr, nullptr);
  }, [&] { filter.unregister(); });
  EXPECT_CODE(send.wait_code(), STATUS_PORT_DISCONNECTED);
  EXPECT_LT(stopwatch.ms(), kPromptlyMs);
  EXPECT_TRUE(filter.wait_disconnects(1));
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(Disconnect, FltSendMessageOnAClosedClientPortIsPortDisconnected) {
  Signal port_ready;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    CHILD_CHECK(CloseHandle(port));
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_disconnects(1));
  ASSERT_EQ(filter.client_port_value(0), nullptr);
  uint8_t message[4] = {};
  uint8_t reply[4];
  ULONG reply_length = sizeof reply;
  LARGE_INTEGER timeout = relative_timeout(std::chrono::milliseconds(1000));
  Stopwatch stopwatch;
  EXPECT_CODE(FltSendMessage(filter.handle(), filter.client_port(0), message, sizeof message, reply, &reply_length,
                             &timeout),
              STATUS_PORT_DISCONNECTED);
  PFLT_PORT null_port = nullptr;
  EXPECT_CODE(FltSendMessage(filter.handle(), &null_port, message, sizeof message, nullptr, nullptr, &timeout),
              STATUS_PORT_DISCONNECTED);
  EXPECT_LT(stopwatch.ms(), 500) << "a closed port must fail at once, not wait for the timeout";
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(Disconnect, ConnectionLeftOpenByDisconnectNotifyStillFailsFltSendMessage) {
  Signal port_ready;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    CHILD_CHECK(CloseHandle(port));
    return 0;
  });
  CFilter filter;
  filter.set_close_client_on_disconnect(false);
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_disconnects(1));
  ASSERT_NE(filter.client_port_value(0), nullptr);
  uint8_t message[4] = {};
  LARGE_INTEGER timeout = relative_timeout(std::chrono::milliseconds(1000));
  Stopwatch stopwatch;
  EXPECT_CODE(FltSendMessage(filter.handle(), filter.client_port(0), message, sizeof message, nullptr, nullptr,
                             &timeout),
              STATUS_PORT_DISCONNECTED);
  EXPECT_LT(stopwatch.ms(), 500);
  filter.close_client_port(0);
  EXPECT_EQ(filter.client_port_value(0), nullptr);
  EXPECT_TRUE(ExitsCleanly(service));
}

// FltCloseClientPort while the service is blocked in FilterGetMessage.
TEST_F(Disconnect, FltCloseClientPortReleasesTheServiceBlockedInFilterGetMessage) {
  Signal port_ready, about_to_get, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    MessageBuffer<64> buffer{};
    about_to_get.notify();
    Stopwatch stopwatch;
    notify_code(results, FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr));
    results.notify(static_cast<uint64_t>(stopwatch.ms()));
    notify_code(results, FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr));
    uint8_t in[4] = {}, out[4];
    DWORD returned = 0;
    notify_code(results, FilterSendMessage(port, in, sizeof in, out, sizeof out, &returned));
    notify_code(results, reply_message(port, 1, "x", 1));
    results.notify(CloseHandle(port) ? 1 : 0);
    return 0;
  });
  CFilter filter;
  filter.set_close_client_on_disconnect(false);
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  ASSERT_TRUE(about_to_get.wait());
  filter.close_client_port(0);
  EXPECT_EQ(filter.client_port_value(0), nullptr) << "FltCloseClientPort sets *ClientPort to NULL";
  filter.close_client_port(0);  // NULL: does nothing

  EXPECT_CODE(wait_code(results), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE)) << "the blocked FilterGetMessage";
  EXPECT_LT(wait_number(results), kPromptlyMs) << "ms the blocked FilterGetMessage took to return";
  EXPECT_CODE(wait_code(results), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE)) << "a later FilterGetMessage";
  EXPECT_CODE(wait_code(results), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE)) << "a later FilterSendMessage";
  EXPECT_TRUE(FAILED(wait_code(results))) << "a later FilterReplyMessage";
  EXPECT_EQ(wait_number(results), 1) << "CloseHandle of the dead connection's handle";
  EXPECT_TRUE(ExitsCleanly(service));
  EXPECT_TRUE(filter.wait_disconnects(1)) << "DisconnectNotify runs when the connection ends";
  EXPECT_EQ(filter.connection(0).disconnects.load(), 1);
}

// The filter process dies (SIGKILL) while the service is blocked in FilterGetMessage.
TEST_F(Disconnect, FilterProcessKilledReleasesTheServiceBlockedInFilterGetMessage) {
  Signal port_ready, about_to_get, results;
  ChildProcess filter_process(port_host_until_killed(port_ready));
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    notify_code(results, connect_service(&port));
    MessageBuffer<64> buffer{};
    about_to_get.notify();
    Stopwatch stopwatch;
    notify_code(results, FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr));
    results.notify(static_cast<uint64_t>(stopwatch.ms()));
    notify_code(results, FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr));
    uint8_t in[4] = {}, out[4];
    DWORD returned = 0;
    notify_code(results, FilterSendMessage(port, in, sizeof in, out, sizeof out, &returned));
    CloseHandle(port);
    return 0;
  });
  ASSERT_CODE(wait_code(results), S_OK) << "connect";
  ASSERT_TRUE(about_to_get.wait());
  EXPECT_EQ(filter_process.kill().kind, ExitStatus::Kind::signaled);
  EXPECT_CODE(wait_code(results), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE)) << "the blocked FilterGetMessage";
  EXPECT_LT(wait_number(results), kPromptlyMs) << "ms the blocked FilterGetMessage took to return";
  EXPECT_CODE(wait_code(results), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE)) << "a later FilterGetMessage";
  EXPECT_CODE(wait_code(results), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE)) << "a later FilterSendMessage";
  EXPECT_TRUE(ExitsCleanly(service));
}

// The filter process dies while the service waits for nothing. Its next FilterReplyMessage, for a
// message it never had, learns of the end as any other call would, and is not only told that nobody
// waits for that reply (an empty shared-memory ring once hid the end from it).
TEST_F(Disconnect, FilterProcessKilledIsSeenByTheNextFilterReplyMessage) {
  Signal port_ready, killed, results;
  ChildProcess filter_process(port_host_until_killed(port_ready));
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    notify_code(results, connect_service(&port));
    CHILD_CHECK(killed.wait());
    // The end reaches the connection through its socket, a moment after the kill.
    Stopwatch stopwatch;
    HRESULT replied = reply_message(port, 12345, "x", 1);
    while (replied == ERROR_FLT_NO_WAITER_FOR_REPLY && stopwatch.ms() < kPromptlyMs) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      replied = reply_message(port, 12345, "x", 1);
    }
    notify_code(results, replied);
    CloseHandle(port);
    return 0;
  });
  ASSERT_CODE(wait_code(results), S_OK) << "connect";
  EXPECT_EQ(filter_process.kill().kind, ExitStatus::Kind::signaled);
  killed.notify();
  EXPECT_CODE(wait_code(results), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE))
      << "FilterReplyMessage within " << kPromptlyMs << " ms of the filter's death";
  EXPECT_TRUE(ExitsCleanly(service));
}

// A service blocked in FilterSendMessage while the filter process dies.
TEST_F(Disconnect, FilterProcessKilledReleasesTheServiceBlockedInFilterSendMessage) {
  Signal port_ready, in_message_notify, results;
  ChildProcess filter_process([&] {
    CFilter filter;
    filter.set_message_callback([&](ConnectionRecord&, const uint8_t*, ULONG, uint8_t*, ULONG, ULONG*) -> NTSTATUS {
      in_message_notify.notify();
      Signal never;
      never.wait(std::chrono::seconds(30));  // killed by the test while "working"
      return STATUS_SUCCESS;
    });
    CHILD_CHECK_EQ(filter.create_port(), STATUS_SUCCESS);
    port_ready.notify();
    Signal never;
    never.wait(std::chrono::seconds(30));
    return 0;
  });
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    uint8_t in[4] = {}, out[4];
    DWORD returned = 0;
    Stopwatch stopwatch;
    notify_code(results, FilterSendMessage(port, in, sizeof in, out, sizeof out, &returned));
    results.notify(static_cast<uint64_t>(stopwatch.ms()));
    CloseHandle(port);
    return 0;
  });
  ASSERT_TRUE(in_message_notify.wait());
  EXPECT_EQ(filter_process.kill().kind, ExitStatus::Kind::signaled);
  EXPECT_CODE(wait_code(results), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE));
  EXPECT_LT(wait_number(results), 30000) << "ms FilterSendMessage waited";
  EXPECT_TRUE(ExitsCleanly(service));
}

// FltUnregisterFilter while a sender waits for a reply: the sender is released, unregistering
// does not hang, DisconnectNotify runs once and the service sees the connection gone.
TEST_F(Disconnect, FltUnregisterFilterReleasesWaitingSendersAndTheService) {
  Signal port_ready, taken, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    MessageBuffer<64> buffer{};
    CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
    taken.notify();
    notify_code(results, FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  PFLT_FILTER handle = filter.handle();
  PFLT_PORT* client = filter.client_port(0);
  AsyncCall send([&]() -> int64_t {
    uint8_t message[8] = {1};
    uint8_t reply[8];
    ULONG reply_length = sizeof reply;
    return FltSendMessage(handle, client, message, sizeof message, reply, &reply_length, nullptr);
  });
  ASSERT_TRUE(taken.wait());
  AsyncCall unregister([&]() -> int64_t {
    filter.unregister();
    return 0;
  });
  EXPECT_TRUE(unregister.wait().has_value()) << "FltUnregisterFilter hangs while a sender waits";
  const NTSTATUS status = send.wait_code();
  RecordProperty("FltSendMessageStatus", std::to_string(static_cast<uint32_t>(status)));
  EXPECT_TRUE(status == STATUS_THREAD_IS_TERMINATING || status == STATUS_PORT_DISCONNECTED)
      << "FltSendMessage during FltUnregisterFilter returned 0x" << std::hex << static_cast<uint32_t>(status);
  EXPECT_CODE(wait_code(results), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE));
  EXPECT_EQ(filter.disconnect_count(), 1) << "DisconnectNotify must have run once by the end of FltUnregisterFilter";
  EXPECT_TRUE(ExitsCleanly(service));
}

}  // namespace
}  // namespace fltport::test
