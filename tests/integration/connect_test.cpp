// Connecting a service to a filter's port, and creating and closing ports
// (FilterConnectCommunicationPort, ConnectNotify, FltCreateCommunicationPort,
// FltCloseCommunicationPort). The filter runs in the test process, services in forked children.
#include <fltport/fltkernel.h>
#include <fltport/fltuser.h>

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "support/c_filter.hpp"
#include "support/process.hpp"

namespace fltport::test {
namespace {

using namespace std::chrono_literals;

class Connect : public PortTest {};
class CreatePort : public PortTest {};
class ClosePort : public PortTest {};

TEST_F(Connect, UnknownNameIsFileNotFound) {
  HANDLE port = nullptr;
  EXPECT_CODE(FilterConnectCommunicationPort(L"\\NoSuchPort", 0, nullptr, 0, nullptr, &port),
              HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND));
  EXPECT_CODE(HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND), static_cast<HRESULT>(0x80070002));
}

TEST_F(Connect, NameOfAnotherPortIsFileNotFound) {
  CFilter filter;
  ASSERT_CODE(filter.registration_status(), STATUS_SUCCESS);
  ASSERT_CODE(filter.create_port({.name = L"\\OtherPort"}), STATUS_SUCCESS);
  HANDLE port = nullptr;
  EXPECT_CODE(connect_service(&port), HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND));
  EXPECT_EQ(filter.connect_attempts(), 0);
}

TEST_F(Connect, ServiceInAnotherProcessIsAcceptedByConnectNotify) {
  Signal port_ready, result, done;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    const HRESULT hr = connect_service(&port);
    notify_code(result, hr);
    CHILD_CHECK_EQ(hr, S_OK);
    CHILD_CHECK(port != nullptr && port != INVALID_HANDLE_VALUE);
    CHILD_CHECK(done.wait());
    CHILD_CHECK(CloseHandle(port));
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.registration_status(), STATUS_SUCCESS);
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_CODE(wait_code(result), S_OK);
  ASSERT_TRUE(filter.wait_connections(1));
  EXPECT_NE(filter.client_port_value(0), nullptr);
  done.notify();
  EXPECT_TRUE(ExitsCleanly(service));
  EXPECT_TRUE(filter.wait_disconnects(1));
  EXPECT_EQ(filter.connection(0).disconnects.load(), 1);
  EXPECT_EQ(filter.bad_cookies(), 0);
}

TEST_F(Connect, PortOfKilledFilterProcessIsFileNotFound) {
  Signal port_ready, result;
  ChildProcess filter_process(port_host_until_killed(port_ready));
  ASSERT_TRUE(port_ready.wait());
  filter_process.kill();
  HANDLE port = nullptr;
  EXPECT_CODE(connect_service(&port), HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND));
}

// A service that connects once the filter's port is there, and is then killed with SIGKILL while
// the filter's DisconnectNotify takes `disconnect_delay`: its slot stays held until that is done.
// Forked at construction, before the filter's threads start (TSan).
struct KilledService {
  Signal port_ready, connected;
  ChildProcess process{[this] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    notify_code(connected, connect_service(&port));
    for (;;) ::pause();
    return 0;
  }};

  ::testing::AssertionResult connect_then_kill(CFilter& filter, std::chrono::milliseconds disconnect_delay) {
    filter.set_disconnect_delay(disconnect_delay);
    if (filter.create_port({.max_connections = 1}) != STATUS_SUCCESS)
      return ::testing::AssertionFailure() << "no port";
    port_ready.notify();
    if (wait_code(connected) != S_OK) return ::testing::AssertionFailure() << "the service did not connect";
    if (!filter.wait_connections(1)) return ::testing::AssertionFailure() << "no ConnectNotify";
    process.kill();
    return ::testing::AssertionSuccess();
  }
};

// On Windows a killed process's handles are closed before anyone can see it dead, so a service
// restarted at once finds its predecessor's slot free. Here the filter learns of the death a
// moment later, and its DisconnectNotify may take a while: the connect waits for that slot.
TEST_F(Connect, ASlotHeldByAKilledServiceIsFreeForTheServiceStartedAfterIt) {
  KilledService killed;
  CFilter filter;
  ASSERT_TRUE(killed.connect_then_kill(filter, 300ms));
  HANDLE port = nullptr;
  const HRESULT connected_next = connect_service(&port);
  EXPECT_CODE(connected_next, S_OK) << "the dead service's slot must be the next one's";
  EXPECT_EQ(filter.disconnect_count(), 1) << "the slot was freed by the dead service's DisconnectNotify";
  if (SUCCEEDED(connected_next)) {
    EXPECT_TRUE(CloseHandle(port));
    EXPECT_TRUE(filter.wait_disconnects(2));
  }
}

TEST_F(Connect, AConnectWaitingForALeavingSlotIsRefusedWhenThePortCloses) {
  KilledService killed;
  CFilter filter;
  ASSERT_TRUE(killed.connect_then_kill(filter, 1000ms));  // the dead service's slot stays taken 1 s
  HANDLE port = nullptr;
  AsyncCall waiting_connect([&] { return static_cast<int64_t>(connect_service(&port)); });
  std::this_thread::sleep_for(200ms);  // it waits for the dead service's slot
  filter.close_server_port();          // FltCloseCommunicationPort: no new connections
  EXPECT_CODE(waiting_connect.wait_code(700ms), HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND))
      << "refused as a connect to a closed port is, before the slot came back";
  EXPECT_EQ(filter.connect_attempts(), 1) << "ConnectNotify never ran for it";
  EXPECT_TRUE(filter.wait_disconnects(1));
}

TEST_F(Connect, AtTheLimitWithEveryServiceAliveTheRefusalIsImmediate) {
  CFilter filter;
  filter.set_disconnect_delay(300ms);
  ASSERT_CODE(filter.create_port({.max_connections = 1}), STATUS_SUCCESS);
  HANDLE first = nullptr;
  ASSERT_CODE(connect_service(&first), S_OK);
  HANDLE second = nullptr;
  const auto started = std::chrono::steady_clock::now();
  EXPECT_CODE(connect_service(&second), HRESULT_FROM_WIN32(ERROR_CONNECTION_COUNT_LIMIT));
  EXPECT_LT(std::chrono::steady_clock::now() - started, 1500ms) << "no wait for a slot nobody is leaving";
  EXPECT_TRUE(CloseHandle(first));
  EXPECT_TRUE(filter.wait_disconnects(1));
}

// ---- connection context ----

class ConnectContext : public PortTest, public ::testing::WithParamInterface<size_t> {};

TEST_P(ConnectContext, BytesReachConnectNotifyIntact) {
  const size_t size = GetParam();
  const std::vector<uint8_t> context = pattern(size, 7);
  Signal port_ready, result;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    notify_code(result, connect_service(&port, size == 0 ? nullptr : context.data(), static_cast<WORD>(size)));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_CODE(wait_code(result), S_OK);
  ASSERT_TRUE(filter.wait_connections(1));
  const std::vector<uint8_t>& seen = filter.connection(0).context;
  ASSERT_EQ(seen.size(), size);
  EXPECT_TRUE(seen == context) << "the context bytes differ";
  EXPECT_EQ(filter.bad_cookies(), 0) << "SizeOfContext was non-zero with a NULL ConnectionContext";
  EXPECT_TRUE(ExitsCleanly(service));
}

INSTANTIATE_TEST_SUITE_P(Sizes, ConnectContext, ::testing::Values(size_t{0}, size_t{1}, size_t{65535}),
                         [](const auto& info) { return "Size" + std::to_string(info.param); });

// ---- connection limit ----

TEST_F(Connect, BeyondMaxConnectionsIsConnectionCountLimitUntilOneCloses) {
  Signal port_ready, results, closed_one, go_again;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE a = nullptr, b = nullptr, c = nullptr, d = nullptr;
    notify_code(results, connect_service(&a));
    notify_code(results, connect_service(&b));
    notify_code(results, connect_service(&c));
    CHILD_CHECK(CloseHandle(a));
    closed_one.notify();
    CHILD_CHECK(go_again.wait());
    notify_code(results, connect_service(&d));
    CloseHandle(b);
    CloseHandle(d);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port({.max_connections = 2}), STATUS_SUCCESS);
  port_ready.notify();
  EXPECT_CODE(wait_code(results), S_OK);
  EXPECT_CODE(wait_code(results), S_OK);
  EXPECT_CODE(wait_code(results), HRESULT_FROM_WIN32(ERROR_CONNECTION_COUNT_LIMIT));
  EXPECT_CODE(HRESULT_FROM_WIN32(ERROR_CONNECTION_COUNT_LIMIT), static_cast<HRESULT>(0x800704D6));
  ASSERT_TRUE(closed_one.wait());
  ASSERT_TRUE(filter.wait_disconnects(1));
  go_again.notify();
  EXPECT_CODE(wait_code(results), S_OK) << "a slot freed by a closed connection must be reusable";
  EXPECT_TRUE(ExitsCleanly(service));
  EXPECT_EQ(filter.connection_count(), 3);
  EXPECT_EQ(filter.connect_attempts(), 3) << "a connection over the limit must not reach ConnectNotify";
}

// ---- ConnectNotify refusing ----

struct Refusal {
  NTSTATUS status;
  HRESULT expected;
  const char* name;
};

void PrintTo(const Refusal& refusal, std::ostream* os) { *os << refusal.name; }

class ConnectRefused : public PortTest, public ::testing::WithParamInterface<Refusal> {};

TEST_P(ConnectRefused, ConnectNotifyFailureReachesServiceAndLeavesNoConnection) {
  const Refusal refusal = GetParam();
  Signal port_ready, results, accept_now;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE refused = nullptr, accepted = nullptr;
    notify_code(results, connect_service(&refused));
    CHILD_CHECK(accept_now.wait());
    notify_code(results, connect_service(&accepted));
    CloseHandle(accepted);
    return 0;
  });
  CFilter filter;
  filter.set_connect_verdict(refusal.status);
  ASSERT_CODE(filter.create_port({.max_connections = 1}), STATUS_SUCCESS);
  port_ready.notify();
  const HRESULT refused = wait_code(results);
  EXPECT_CODE(refused, refusal.expected);
  EXPECT_CODE(refused, FltportHResultFromNtStatus(refusal.status));
  EXPECT_EQ(filter.connect_attempts(), 1);
  EXPECT_EQ(filter.connection_count(), 0);
  filter.set_connect_verdict(STATUS_SUCCESS);
  accept_now.notify();
  EXPECT_CODE(wait_code(results), S_OK) << "the refused connection must not hold the only slot";
  EXPECT_TRUE(ExitsCleanly(service));
  EXPECT_TRUE(filter.wait_disconnects(1));
  EXPECT_EQ(filter.disconnect_count(), 1) << "DisconnectNotify runs only for accepted connections";
}

INSTANTIATE_TEST_SUITE_P(
    Statuses, ConnectRefused,
    ::testing::Values(Refusal{STATUS_ACCESS_DENIED, E_ACCESSDENIED, "AccessDenied"},
                      Refusal{STATUS_INSUFFICIENT_RESOURCES, HRESULT_FROM_WIN32(ERROR_NO_SYSTEM_RESOURCES),
                              "InsufficientResources"},
                      Refusal{STATUS_CONNECTION_COUNT_LIMIT, HRESULT_FROM_WIN32(ERROR_CONNECTION_COUNT_LIMIT),
                              "ConnectionCountLimit"}),
    [](const auto& info) { return std::string(info.param.name); });

// ---- cookies ----

TEST_F(Connect, CookieFromConnectNotifyArrivesInMessageNotifyAndDisconnectNotify) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE a = nullptr, b = nullptr;
    CHILD_CHECK_EQ(connect_service(&a), S_OK);
    CHILD_CHECK_EQ(connect_service(&b), S_OK);
    uint8_t in[4] = {1, 2, 3, 4}, out[4];
    DWORD returned = 0;
    notify_code(results, FilterSendMessage(a, in, sizeof in, out, sizeof out, &returned));
    notify_code(results, FilterSendMessage(b, in, sizeof in, out, sizeof out, &returned));
    notify_code(results, FilterSendMessage(b, in, sizeof in, out, sizeof out, &returned));
    CHILD_CHECK(CloseHandle(a));
    CHILD_CHECK(CloseHandle(b));
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port({.max_connections = 2}), STATUS_SUCCESS);
  port_ready.notify();
  for (int i = 0; i < 3; ++i) EXPECT_CODE(wait_code(results), S_OK);
  EXPECT_TRUE(ExitsCleanly(service));
  ASSERT_TRUE(filter.wait_disconnects(2));
  ASSERT_EQ(filter.connection_count(), 2);
  ConnectionRecord& a = filter.connection(0);
  ConnectionRecord& b = filter.connection(1);
  EXPECT_EQ(a.messages.load(), 1);
  EXPECT_EQ(b.messages.load(), 2);
  const std::vector<void*> message_cookies = filter.message_cookies();
  ASSERT_EQ(message_cookies.size(), 3u);
  EXPECT_EQ(message_cookies[0], &a);
  EXPECT_EQ(message_cookies[1], &b);
  EXPECT_EQ(message_cookies[2], &b);
  std::vector<void*> disconnect_cookies = filter.disconnect_cookies();
  ASSERT_EQ(disconnect_cookies.size(), 2u);
  EXPECT_TRUE((disconnect_cookies[0] == &a && disconnect_cookies[1] == &b) ||
              (disconnect_cookies[0] == &b && disconnect_cookies[1] == &a));
  EXPECT_EQ(a.disconnects.load(), 1);
  EXPECT_EQ(b.disconnects.load(), 1);
  EXPECT_EQ(filter.bad_cookies(), 0) << "a callback received a cookie the filter did not set";
}

// ---- creating ports ----

TEST_F(CreatePort, SameNameIsObjectNameCollisionWhateverTheCase) {
  CFilter filter;
  ASSERT_CODE(filter.registration_status(), STATUS_SUCCESS);
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  EXPECT_CODE(filter.create_port(), STATUS_OBJECT_NAME_COLLISION);
  EXPECT_CODE(filter.create_port({.name = L"\\SCANNERPORT"}), STATUS_OBJECT_NAME_COLLISION);
  EXPECT_CODE(filter.create_port({.name = L"\\scannerPort"}), STATUS_OBJECT_NAME_COLLISION);
  EXPECT_CODE(filter.create_port({.name = L"\\OtherPort"}), STATUS_SUCCESS);
}

TEST_F(CreatePort, SameNameAsAPortOfAnotherProcessIsObjectNameCollision) {
  Signal port_ready, done;
  ChildProcess other([&] {
    CFilter filter;
    CHILD_CHECK_EQ(filter.create_port(), STATUS_SUCCESS);
    port_ready.notify();
    CHILD_CHECK(done.wait());
    return 0;
  });
  ASSERT_TRUE(port_ready.wait());
  CFilter filter;
  EXPECT_CODE(filter.create_port(), STATUS_OBJECT_NAME_COLLISION);
  EXPECT_CODE(filter.create_port({.name = L"\\scannerport"}), STATUS_OBJECT_NAME_COLLISION);
  done.notify();
  EXPECT_TRUE(ExitsCleanly(other));
}

TEST_F(CreatePort, NameOfKilledFilterProcessIsFreeAgain) {
  Signal port_ready;
  ChildProcess other(port_host_until_killed(port_ready));
  ASSERT_TRUE(port_ready.wait());
  other.kill();
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  HANDLE port = nullptr;
  EXPECT_CODE(connect_service(&port), S_OK);
  EXPECT_TRUE(filter.wait_connections(1));
  CloseHandle(port);
}

TEST_F(CreatePort, NameIsFreeAgainAfterFltCloseCommunicationPort) {
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  filter.close_server_port(0);
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  HANDLE port = nullptr;
  EXPECT_CODE(connect_service(&port), S_OK);
  EXPECT_TRUE(filter.wait_connections(1));
  CloseHandle(port);
}

TEST_F(CreatePort, MaxConnectionsZeroOrNegativeIsInvalidParameter) {
  CFilter filter;
  EXPECT_CODE(filter.create_port({.max_connections = 0}), STATUS_INVALID_PARAMETER);
  EXPECT_CODE(filter.create_port({.max_connections = -1}), STATUS_INVALID_PARAMETER);
  // The refused attempts did not take the name.
  EXPECT_CODE(filter.create_port({.max_connections = 1}), STATUS_SUCCESS);
}

TEST_F(CreatePort, AttributesWithoutObjKernelHandleAreInvalidParameter) {
  CFilter filter;
  EXPECT_CODE(filter.create_port({.attributes = OBJ_CASE_INSENSITIVE}), STATUS_INVALID_PARAMETER);
  EXPECT_CODE(filter.create_port({.attributes = 0}), STATUS_INVALID_PARAMETER);
  EXPECT_CODE(filter.create_port(), STATUS_SUCCESS);
}

// ---- closing the server port ----

TEST_F(ClosePort, NewConnectsFailButExistingConnectionKeepsWorking) {
  Signal port_ready, results, port_closed;
  const std::vector<uint8_t> message = pattern(50, 21);
  const std::vector<uint8_t> answer = pattern(20, 22);
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE existing = nullptr, late = nullptr;
    notify_code(results, connect_service(&existing));
    CHILD_CHECK(port_closed.wait());
    notify_code(results, connect_service(&late));
    MessageBuffer<256> buffer{};
    const HRESULT got = FilterGetMessage(existing, &buffer.header, sizeof buffer, nullptr);
    CHILD_CHECK_EQ(got, S_OK);
    CHILD_CHECK(matches_pattern(buffer.data, message.size(), 21));
    notify_code(results, reply_message(existing, buffer.header.MessageId, answer.data(), answer.size()));
    uint8_t in[3] = {7, 8, 9}, out[3] = {};
    DWORD returned = 0;
    notify_code(results, FilterSendMessage(existing, in, sizeof in, out, sizeof out, &returned));
    CHILD_CHECK(CloseHandle(existing));
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port({.max_connections = 4}), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_CODE(wait_code(results), S_OK);
  ASSERT_TRUE(filter.wait_connections(1));
  filter.close_server_port(0);
  port_closed.notify();
  EXPECT_CODE(wait_code(results), HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND));

  std::vector<uint8_t> reply(64, 0xEE);
  ULONG reply_length = static_cast<ULONG>(reply.size());
  LARGE_INTEGER timeout = relative_timeout(kWaitTimeout);
  EXPECT_CODE(FltSendMessage(filter.handle(), filter.client_port(0), const_cast<uint8_t*>(message.data()),
                             static_cast<ULONG>(message.size()), reply.data(), &reply_length, &timeout),
              STATUS_SUCCESS);
  EXPECT_EQ(reply_length, answer.size());
  EXPECT_TRUE(matches_pattern(reply.data(), answer.size(), 22));
  EXPECT_CODE(wait_code(results), S_OK);  // FilterReplyMessage
  EXPECT_CODE(wait_code(results), S_OK);  // FilterSendMessage on the existing connection
  EXPECT_TRUE(ExitsCleanly(service));
  EXPECT_EQ(filter.connection_count(), 1);
}

}  // namespace
}  // namespace fltport::test
