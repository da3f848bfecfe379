// Hostile or broken input: raw socket clients that send garbage, forged replies, invalid handles
// and invalid names. The filter must drop the offender and keep serving everyone else.
#include <fltport/fltkernel.h>
#include <fltport/fltuser.h>
#include <fltport/port.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <vector>

#include "support/c_filter.hpp"
#include "support/process.hpp"
#include "support/raw_client.hpp"
#include "wire/frame.hpp"

namespace fltport::test {
namespace {

using wire::FrameHeader;
using wire::FrameType;

struct Garbage {
  const char* name;
  bool after_hello;  // send a valid hello first (the connection reaches ConnectNotify)
  std::function<void(RawClient&)> send;
};
void PrintTo(const Garbage& garbage, std::ostream* os) { *os << garbage.name; }

FrameHeader header_of(FrameType type, uint64_t id, uint32_t payload_length, uint32_t aux = 0) {
  return wire::make_header(type, id, payload_length, 0, aux);
}

const Garbage kGarbage[] = {
    {"EmptyDatagram", false, [](RawClient& c) { c.send_bytes("", 0); }},
    {"ShorterThanAHeader", false, [](RawClient& c) { c.send_bytes("abc", 3); }},
    {"UnknownFrameType", false,
     [](RawClient& c) {
       FrameHeader h = header_of(FrameType::hello, wire::kProtocolVersion, 0);
       h.type = 0xEE;
       c.send_frame(h);
     }},
    {"PayloadLengthDisagreesWithTheDatagram", false,
     [](RawClient& c) {
       const uint8_t payload[10] = {};
       c.send_frame(header_of(FrameType::hello, wire::kProtocolVersion, 1000), payload, sizeof payload);
     }},
    {"UnsupportedProtocolVersion", false,
     [](RawClient& c) { c.send_frame(header_of(FrameType::hello, wire::kProtocolVersion + 98, 0)); }},
    {"ContextLongerThanAWord", false,
     [](RawClient& c) {
       std::vector<uint8_t> context(kMaxConnectionContextSize + 1, 0x41);
       c.send_frame(header_of(FrameType::hello, wire::kProtocolVersion, static_cast<uint32_t>(context.size())),
                    context.data(), context.size());
     }},
    {"DatagramLargerThanAnyFrame", false,
     [](RawClient& c) {
       std::vector<uint8_t> payload(kMaxMessageSize + 1000, 0x42);
       c.send_frame(header_of(FrameType::hello, wire::kProtocolVersion, static_cast<uint32_t>(payload.size())),
                    payload.data(), payload.size());
     }},
    {"RequestBeforeHello", false,
     [](RawClient& c) {
       const uint8_t payload[4] = {1, 2, 3, 4};
       c.send_frame(header_of(FrameType::request, 1, sizeof payload, 16), payload, sizeof payload);
     }},
    {"SecondHello", true,
     [](RawClient& c) { c.send_frame(header_of(FrameType::hello, wire::kProtocolVersion, 0)); }},
    {"FilterToServiceFrameFromTheService", true,
     [](RawClient& c) {
       FrameHeader h = header_of(FrameType::message, 1, 4, 0);
       c.send_frame(h, "evil", 4);
     }},
    {"ZeroCredits", true, [](RawClient& c) { c.send_frame(header_of(FrameType::get, 0, 0, 0)); }},
    {"TooManyCredits", true,
     [](RawClient& c) {
       c.send_frame(header_of(FrameType::get, 0, 0, wire::kMaxCredits));
       c.send_frame(header_of(FrameType::get, 0, 0, wire::kMaxCredits));
     }},
    {"RandomBytesAfterHello", true,
     [](RawClient& c) {
       std::vector<uint8_t> bytes = pattern(100, 99);
       bytes[0] = 0;  // frame type 0 does not exist
       c.send_bytes(bytes.data(), bytes.size());
     }},
};

class BadInput : public PortTest {};
class GarbageFrames : public PortTest, public ::testing::WithParamInterface<Garbage> {};

// A well-behaved service: connects, then answers messages (echo) until the filter sends "stop"
// (a message that wants no reply).
int echo_service(Signal& port_ready, Signal& connected) {
  CHILD_CHECK(port_ready.wait());
  HANDLE port = nullptr;
  CHILD_CHECK_EQ(connect_service(&port), S_OK);
  connected.notify();
  for (;;) {
    MessageBuffer<64> buffer{};
    CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
    if (buffer.header.ReplyLength == 0) break;
    CHILD_CHECK_EQ(reply_message(port, buffer.header.MessageId, buffer.data, 8), S_OK);
  }
  uint8_t in[4] = {5, 6, 7, 8}, out[4] = {};
  DWORD returned = 0;
  CHILD_CHECK_EQ(FilterSendMessage(port, in, sizeof in, out, sizeof out, &returned), S_OK);
  CHILD_CHECK(returned == 4 && std::memcmp(in, out, 4) == 0);
  CHILD_CHECK(CloseHandle(port));
  return 0;
}

::testing::AssertionResult echo_round_trip(CFilter& filter, int connection, uint64_t value) {
  uint64_t reply = 0;
  ULONG reply_length = sizeof reply;
  LARGE_INTEGER timeout = relative_timeout(kWaitTimeout);
  const NTSTATUS status = FltSendMessage(filter.handle(), filter.client_port(connection), &value, sizeof value,
                                         &reply, &reply_length, &timeout);
  if (status != STATUS_SUCCESS) return ::testing::AssertionFailure() << "FltSendMessage: 0x" << std::hex << status;
  if (reply_length != sizeof reply || reply != value) return ::testing::AssertionFailure() << "wrong reply";
  return ::testing::AssertionSuccess();
}

NTSTATUS send_stop(CFilter& filter, int connection) {
  uint8_t stop = 0;
  LARGE_INTEGER timeout = relative_timeout(kWaitTimeout);
  return FltSendMessage(filter.handle(), filter.client_port(connection), &stop, 1, nullptr, nullptr, &timeout);
}

enum : uint64_t { kAttackerCouldNotConnect = 2, kHelloRefused = 3, kNotDisconnected = 0, kDisconnected = 1 };

TEST_P(GarbageFrames, DisconnectOnlyTheSenderWhileAWellBehavedServiceKeepsWorking) {
  const Garbage& garbage = GetParam();
  Signal port_ready, connected, attack, attack_result;
  const std::string socket_dir = runtime_dir_.path();
  ChildProcess good([&] { return echo_service(port_ready, connected); });
  ChildProcess attacker([&] {
    CHILD_CHECK(attack.wait());
    RawClient client;
    std::string path = socket_dir + "/" + kNormalizedPortName + ".port";
    if (::access(path.c_str(), F_OK) != 0) path = "";
    if (!client.connect(path)) {
      attack_result.notify(kAttackerCouldNotConnect);
      return 0;
    }
    if (garbage.after_hello && !client.hello()) {
      attack_result.notify(kHelloRefused);
      return 0;
    }
    garbage.send(client);
    attack_result.notify(client.closed_by_peer_within(std::chrono::seconds(3)) ? kDisconnected : kNotDisconnected);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port({.max_connections = 4}), STATUS_SUCCESS);
  ASSERT_FALSE(runtime_dir_.socket_path(kNormalizedPortName).empty()) << "no socket in the runtime directory";
  ASSERT_EQ(runtime_dir_.socket_path(kNormalizedPortName),
            runtime_dir_.path() + "/" + kNormalizedPortName + ".port");
  port_ready.notify();
  ASSERT_TRUE(connected.wait());
  ASSERT_TRUE(filter.wait_connections(1));
  EXPECT_TRUE(echo_round_trip(filter, 0, 0x1111));

  attack.notify();
  const long long verdict = wait_number(attack_result, std::chrono::seconds(8));
  EXPECT_NE(verdict, static_cast<long long>(kAttackerCouldNotConnect)) << "the raw client could not connect";
  EXPECT_NE(verdict, static_cast<long long>(kHelloRefused)) << "a valid hello was refused";
  EXPECT_EQ(verdict, static_cast<long long>(kDisconnected)) << "the filter kept a client that sent " << garbage.name;
  EXPECT_TRUE(ExitsCleanly(attacker));
  if (garbage.after_hello) {
    EXPECT_TRUE(filter.wait_connections(2));
    EXPECT_TRUE(filter.wait_disconnects(1)) << "DisconnectNotify for the offender";
    EXPECT_EQ(filter.connection(1).disconnects.load(), 1);
  }

  EXPECT_TRUE(echo_round_trip(filter, 0, 0x2222)) << "the well-behaved service after the attack";
  EXPECT_EQ(filter.connection(0).disconnects.load(), 0) << "the well-behaved service was disconnected";
  EXPECT_CODE(send_stop(filter, 0), STATUS_SUCCESS);
  EXPECT_TRUE(ExitsCleanly(good));
  EXPECT_EQ(filter.connect_attempts(), garbage.after_hello ? 2 : 1);
}

INSTANTIATE_TEST_SUITE_P(Kinds, GarbageFrames, ::testing::ValuesIn(kGarbage),
                         [](const auto& info) { return std::string(info.param.name); });

TEST_F(BadInput, SilentRawClientDoesNotHoldUpOtherConnections) {
  Signal port_ready, connected, silent_connected, release;
  const std::string path = runtime_dir_.path() + "/" + kNormalizedPortName + ".port";
  ChildProcess silent([&] {
    CHILD_CHECK(port_ready.wait());
    RawClient client;
    CHILD_CHECK(client.connect(path));
    silent_connected.notify();
    CHILD_CHECK(release.wait(std::chrono::seconds(15)));
    return 0;
  });
  Signal good_ready;
  ChildProcess good([&] { return echo_service(good_ready, connected); });
  CFilter filter;
  ASSERT_CODE(filter.create_port({.max_connections = 4}), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(silent_connected.wait());
  good_ready.notify();
  ASSERT_TRUE(connected.wait()) << "a service could not connect while a raw client sat silent";
  ASSERT_TRUE(filter.wait_connections(1));
  EXPECT_TRUE(echo_round_trip(filter, 0, 0x3333));
  EXPECT_CODE(send_stop(filter, 0), STATUS_SUCCESS);
  EXPECT_TRUE(ExitsCleanly(good));
  release.notify();
  EXPECT_TRUE(ExitsCleanly(silent));
  EXPECT_EQ(filter.connect_attempts(), 1);
}

// A raw client that learns the id of a message sent to another service must not be able to answer
// it in that service's place.
TEST_F(BadInput, ForgedReplyFromAnotherConnectionDoesNotAnswerTheMessage) {
  Signal port_ready, message_id, forge, forged, results;
  const std::string path = runtime_dir_.path() + "/" + kNormalizedPortName + ".port";
  ChildProcess good([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    MessageBuffer<64> buffer{};
    CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
    message_id.notify(buffer.header.MessageId);
    CHILD_CHECK(forged.wait());
    notify_code(results, reply_message(port, buffer.header.MessageId, "genuine", 7));
    CloseHandle(port);
    return 0;
  });
  ChildProcess attacker([&] {
    const std::optional<uint64_t> id = forge.wait_value();
    CHILD_CHECK(id.has_value());
    RawClient client;
    CHILD_CHECK(client.connect(path));
    CHILD_CHECK(client.hello());
    FrameHeader reply = wire::make_header(FrameType::reply, *id, 6, STATUS_SUCCESS, 6);
    client.send_frame(reply, "forged", 6);
    // Whatever the filter does with it (drop it, or drop us), it must be done before "forged".
    client.closed_by_peer_within(std::chrono::milliseconds(300));
    forged.notify();
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port({.max_connections = 4}), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  PFLT_PORT* client = filter.client_port(0);
  char reply[16] = {};
  ULONG reply_length = sizeof reply;
  AsyncCall send([&]() -> int64_t {
    uint8_t message[4] = {1, 2, 3, 4};
    LARGE_INTEGER timeout = relative_timeout(std::chrono::seconds(10));
    return FltSendMessage(filter.handle(), client, message, sizeof message, reply, &reply_length, &timeout);
  }, [&] { filter.unregister(); });
  const std::optional<uint64_t> id = message_id.wait_value();
  ASSERT_TRUE(id.has_value());
  forge.notify(*id);
  EXPECT_CODE(wait_code(results, std::chrono::seconds(8)), S_OK) << "the genuine reply found no waiter";
  EXPECT_CODE(send.wait_code(), STATUS_SUCCESS);
  EXPECT_EQ(reply_length, 7u);
  EXPECT_EQ(std::string(reply, 7), "genuine");
  EXPECT_TRUE(ExitsCleanly(good));
  EXPECT_TRUE(ExitsCleanly(attacker));
}

TEST_F(BadInput, NullBogusAndClosedHandlesAreInvalidHandle) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    const HANDLE bogus[] = {nullptr, INVALID_HANDLE_VALUE, reinterpret_cast<HANDLE>(static_cast<uintptr_t>(0x12345678))};
    MessageBuffer<64> buffer{};
    uint8_t in[4] = {}, out[4];
    DWORD returned = 0;
    for (HANDLE handle : bogus) {
      notify_code(results, FilterGetMessage(handle, &buffer.header, sizeof buffer, nullptr));
      notify_code(results, reply_message(handle, 1, "x", 1));
      notify_code(results, FilterSendMessage(handle, in, sizeof in, out, sizeof out, &returned));
    }
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    CHILD_CHECK(CloseHandle(port));
    notify_code(results, FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr));
    notify_code(results, reply_message(port, 1, "x", 1));
    notify_code(results, FilterSendMessage(port, in, sizeof in, out, sizeof out, &returned));
    SetLastError(0);
    results.notify(CloseHandle(port) ? 1 : 0);
    results.notify(GetLastError());
    results.notify(CloseHandle(nullptr) ? 1 : 0);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  const char* kinds[] = {"NULL", "INVALID_HANDLE_VALUE", "a made-up pointer", "a closed handle"};
  const char* calls[] = {"FilterGetMessage", "FilterReplyMessage", "FilterSendMessage"};
  for (const char* kind : kinds) {
    for (const char* call : calls) {
      EXPECT_CODE(wait_code(results), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE)) << call << " with " << kind;
    }
  }
  EXPECT_EQ(wait_number(results), 0) << "CloseHandle of a closed handle succeeded";
  EXPECT_EQ(wait_number(results), ERROR_INVALID_HANDLE) << "GetLastError after closing a closed handle";
  EXPECT_EQ(wait_number(results), 0) << "CloseHandle(NULL) succeeded";
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(BadInput, ConnectWithoutANameOrWithoutAHandlePointerFails) {
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  HANDLE port = nullptr;
  EXPECT_TRUE(FAILED(FilterConnectCommunicationPort(nullptr, 0, nullptr, 0, nullptr, &port)));
  EXPECT_TRUE(FAILED(FilterConnectCommunicationPort(kPortName, 0, nullptr, 0, nullptr, nullptr)));
  EXPECT_TRUE(FAILED(FilterConnectCommunicationPort(L"", 0, nullptr, 0, nullptr, &port)));
  EXPECT_EQ(filter.connect_attempts(), 0);
}

TEST_F(BadInput, InvalidPortNamesAreRefusedAndCreateNothingOutsideTheRuntimeDirectory) {
  const char* names[] = {"", "\\", "a/b", "..", "\\..", "a\\b", "with space", "\\../escape",
                         "x123456789x123456789x123456789x123456789x123456789x123456789x1234"};
  for (const char* name : names) {
    ServerPortOptions options;
    options.name = name;
    auto port = ServerPort::create(std::move(options));
    ASSERT_FALSE(port.ok()) << "ServerPort::create accepted the name \"" << name << "\"";
    EXPECT_CODE(port.status().code(), STATUS_OBJECT_NAME_INVALID) << "name \"" << name << "\"";
  }
  EXPECT_TRUE(runtime_dir_.entries().empty() || runtime_dir_.socket_path("escape").empty());
  struct stat info{};
  const std::string parent = runtime_dir_.path() + "/../escape.port";
  EXPECT_NE(::stat(parent.c_str(), &info), 0) << "a port name escaped the runtime directory";
  // A 64-character name is still fine.
  ServerPortOptions options;
  options.name = "x123456789x123456789x123456789x123456789x123456789x123456789x123";
  auto port = ServerPort::create(std::move(options));
  EXPECT_TRUE(port.ok()) << port.status().to_string();
}

}  // namespace
}  // namespace fltport::test
