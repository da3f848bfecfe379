// The C++ API (fltport::ServerPort / ClientPort / Connection) on the same core paths as the C API:
// round trip with reply, reply_and_get loops, service->filter requests, timeouts, disconnects,
// the bounded queue, and interoperation with the C API.
#include <fltport/fltuser.h>
#include <fltport/port.hpp>

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "support/c_filter.hpp"
#include "support/process.hpp"

namespace fltport::test {
namespace {

using namespace std::chrono_literals;

const std::string kName = "\\ScannerPort";

ConstBytes bytes_of(const std::vector<uint8_t>& v) { return std::as_bytes(std::span(v)); }
MutableBytes bytes_of(std::vector<uint8_t>& v) { return std::as_writable_bytes(std::span(v)); }
ConstBytes bytes_of(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }

// The filter side: accepted connections kept as ClientPorts, and what the handlers saw.
class CppFilter {
 public:
  ServerPortOptions options(int max_connections = 1) {
    ServerPortOptions options;
    options.name = kName;
    options.max_connections = max_connections;
    options.on_connect = [this](ClientPort& client, const ConnectRequest& request, void*& cookie) -> Status {
      std::lock_guard lock(mutex_);
      if (!verdict_.ok()) return verdict_;
      contexts_.emplace_back(request.context.begin(), request.context.end());
      peers_.push_back(request.peer);
      clients_.push_back(std::make_unique<ClientPort>(std::move(client)));
      cookie = reinterpret_cast<void*>(static_cast<uintptr_t>(0xC0C0 + clients_.size()));
      changed_.notify_all();
      return STATUS_SUCCESS;
    };
    options.on_disconnect = [this](void* cookie) {
      std::lock_guard lock(mutex_);
      disconnect_cookies_.push_back(cookie);
      changed_.notify_all();
    };
    return options;
  }
  bool wait_connections(size_t n) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, kWaitTimeout, [&] { return clients_.size() >= n; });
  }
  bool wait_disconnects(size_t n) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, kWaitTimeout, [&] { return disconnect_cookies_.size() >= n; });
  }
  ClientPort& client(size_t i) {
    std::lock_guard lock(mutex_);
    return *clients_.at(i);
  }
  PeerCredentials peer(size_t i) {
    std::lock_guard lock(mutex_);
    return peers_.at(i);
  }
  std::vector<std::byte> context(size_t i) {
    std::lock_guard lock(mutex_);
    return contexts_.at(i);
  }
  std::vector<void*> disconnect_cookies() {
    std::lock_guard lock(mutex_);
    return disconnect_cookies_;
  }
  void set_verdict(Status verdict) {
    std::lock_guard lock(mutex_);
    verdict_ = verdict;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::unique_ptr<ClientPort>> clients_;
  std::vector<PeerCredentials> peers_;
  std::vector<std::vector<std::byte>> contexts_;
  std::vector<void*> disconnect_cookies_;
  Status verdict_ = STATUS_SUCCESS;
};

class CppApi : public PortTest {};

TEST_F(CppApi, SendAndReplyRoundTripCarriesDataLengthsAndReplyStatus) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    auto connection = Connection::connect(kName);
    CHILD_CHECK(connection.ok());
    std::vector<uint8_t> buffer(256);
    auto info = connection->get_message(bytes_of(buffer));
    CHILD_CHECK(info.ok());
    CHILD_CHECK(info->wants_reply);
    CHILD_CHECK_EQ(info->reply_capacity, 64);
    CHILD_CHECK_EQ(info->length, 100);
    CHILD_CHECK_EQ(info->full_length, 100);
    CHILD_CHECK(!info->truncated());
    CHILD_CHECK(matches_pattern(buffer.data(), 100, 3));
    notify_code(results, connection->reply(info->id, bytes_of(pattern(40, 4)), STATUS_ACCESS_DENIED).code());
    return 0;
  });
  CppFilter filter;
  auto port = ServerPort::create(filter.options());
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  EXPECT_EQ(port->name().empty(), false);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  std::vector<uint8_t> reply(64);
  auto sent = filter.client(0).send(bytes_of(pattern(100, 3)), bytes_of(reply), Timeout(kWaitTimeout));
  ASSERT_TRUE(sent.ok()) << sent.status().to_string();
  EXPECT_EQ(sent->length, 40u);
  EXPECT_EQ(sent->full_length, 40u);
  EXPECT_FALSE(sent->truncated());
  EXPECT_CODE(sent->reply_status, STATUS_ACCESS_DENIED) << "FILTER_REPLY_HEADER.Status reaches the filter";
  EXPECT_TRUE(matches_pattern(reply.data(), 40, 4));
  EXPECT_CODE(wait_code(results), STATUS_SUCCESS);
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(CppApi, ReplyAndGetServesAStreamOfMessages) {
  constexpr int kCount = 300;
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    auto connection = Connection::connect(kName);
    CHILD_CHECK(connection.ok());
    std::vector<uint8_t> buffer(16);
    auto info = connection->get_message(bytes_of(buffer));
    int served = 0;
    while (info.ok() && info->wants_reply) {
      uint64_t value = 0;
      std::memcpy(&value, buffer.data(), sizeof value);
      value = value * 2 + 1;
      std::vector<uint8_t> answer(sizeof value);
      std::memcpy(answer.data(), &value, sizeof value);
      ++served;
      info = connection->reply_and_get(info->id, bytes_of(answer), STATUS_SUCCESS, bytes_of(buffer));
    }
    CHILD_CHECK(info.ok());  // the last one is the filter's "stop", wanting no reply
    results.notify(static_cast<uint64_t>(served));
    return 0;
  });
  CppFilter filter;
  auto port = ServerPort::create(filter.options());
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  int right = 0;
  for (int i = 0; i < kCount; ++i) {
    const uint64_t value = 1000 + static_cast<uint64_t>(i);
    std::vector<uint8_t> message(sizeof value), reply(sizeof value);
    std::memcpy(message.data(), &value, sizeof value);
    auto sent = filter.client(0).send(bytes_of(message), bytes_of(reply), Timeout(kWaitTimeout));
    uint64_t answer = 0;
    std::memcpy(&answer, reply.data(), sizeof answer);
    if (sent.ok() && sent->length == sizeof answer && answer == value * 2 + 1) ++right;
  }
  EXPECT_EQ(right, kCount);
  EXPECT_CODE(filter.client(0).post(bytes_of(std::string_view("stop")), Timeout(kWaitTimeout)).code(), STATUS_SUCCESS);
  EXPECT_EQ(wait_number(results), kCount);
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(CppApi, ConnectionSendRunsOnMessageAndReturnsItsStatus) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    auto connection = Connection::connect(kName);
    CHILD_CHECK(connection.ok());
    std::vector<uint8_t> output(64, 0);
    size_t returned = 0;
    CHILD_CHECK_EQ(connection->send(bytes_of(std::string_view("hello")), bytes_of(output), returned).code(),
                   STATUS_SUCCESS);
    results.notify(returned);
    results.notify(std::memcmp(output.data(), "HELLO", 5) == 0 ? 1 : 0);
    notify_code(results, connection->send(bytes_of(std::string_view("fail")), bytes_of(output), returned).code());
    return 0;
  });
  CppFilter filter;
  ServerPortOptions options = filter.options();
  std::atomic<size_t> output_size{0};
  options.on_message = [&](void* cookie, ConstBytes input, MutableBytes output, size_t& returned) -> Status {
    if (cookie != reinterpret_cast<void*>(static_cast<uintptr_t>(0xC0C1))) return STATUS_INVALID_PARAMETER;
    output_size = output.size();
    const std::string text(reinterpret_cast<const char*>(input.data()), input.size());
    if (text == "fail") return STATUS_INSUFFICIENT_RESOURCES;
    for (size_t i = 0; i < text.size() && i < output.size(); ++i) {
      output[i] = static_cast<std::byte>(std::toupper(static_cast<unsigned char>(text[i])));
    }
    returned = text.size();
    return STATUS_SUCCESS;
  };
  auto port = ServerPort::create(std::move(options));
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  port_ready.notify();
  EXPECT_EQ(wait_number(results), 5) << "returned length";
  EXPECT_EQ(wait_number(results), 1) << "output bytes";
  EXPECT_CODE(wait_code(results), STATUS_INSUFFICIENT_RESOURCES);
  EXPECT_EQ(output_size.load(), 64u);
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(CppApi, ConnectionSendWithoutOnMessageFails) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    auto connection = Connection::connect(kName);
    CHILD_CHECK(connection.ok());
    std::vector<uint8_t> output(8);
    size_t returned = 0;
    notify_code(results, connection->send(bytes_of(std::string_view("x")), bytes_of(output), returned).code());
    return 0;
  });
  CppFilter filter;
  auto port = ServerPort::create(filter.options());
  ASSERT_TRUE(port.ok());
  port_ready.notify();
  EXPECT_CODE(wait_code(results), STATUS_INVALID_PARAMETER) << "send() on a port without on_message";
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(CppApi, GetMessageTimesOutWhenTheFilterSendsNothing) {
  Signal port_ready, results, send_now;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    auto connection = Connection::connect(kName);
    CHILD_CHECK(connection.ok());
    std::vector<uint8_t> buffer(16);
    Stopwatch stopwatch;
    auto nothing = connection->get_message(bytes_of(buffer), Timeout(100ms));
    CHILD_CHECK(!nothing.ok());
    notify_code(results, nothing.status().code());
    results.notify(static_cast<uint64_t>(stopwatch.ms()));
    auto none = connection->get_message(bytes_of(buffer), Timeout::none());
    notify_code(results, none.ok() ? STATUS_SUCCESS : none.status().code());
    send_now.notify();
    auto message = connection->get_message(bytes_of(buffer), Timeout(kWaitTimeout));
    CHILD_CHECK(message.ok());
    results.notify(matches_pattern(buffer.data(), 8, 5) ? 1 : 0);
    return 0;
  });
  CppFilter filter;
  auto port = ServerPort::create(filter.options());
  ASSERT_TRUE(port.ok());
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  EXPECT_CODE(wait_code(results), STATUS_TIMEOUT);
  const long long elapsed = wait_number(results);
  EXPECT_GE(elapsed, 80);
  EXPECT_LT(elapsed, 2000);
  EXPECT_CODE(wait_code(results), STATUS_TIMEOUT) << "Timeout::none() with nothing queued";
  ASSERT_TRUE(send_now.wait());
  EXPECT_CODE(filter.client(0).post(bytes_of(pattern(8, 5)), Timeout(kWaitTimeout)).code(), STATUS_SUCCESS);
  EXPECT_EQ(wait_number(results), 1);
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(CppApi, SendTimesOutWhenTheServiceDoesNotReplyAndTheLateReplyFindsNoWaiter) {
  Signal port_ready, taken, timed_out, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    auto connection = Connection::connect(kName);
    CHILD_CHECK(connection.ok());
    std::vector<uint8_t> buffer(16);
    auto info = connection->get_message(bytes_of(buffer));
    CHILD_CHECK(info.ok());
    taken.notify();
    CHILD_CHECK(timed_out.wait());
    notify_code(results, connection->reply(info->id, bytes_of(std::string_view("late"))).code());
    return 0;
  });
  CppFilter filter;
  auto port = ServerPort::create(filter.options());
  ASSERT_TRUE(port.ok());
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  std::vector<uint8_t> reply(16);
  Stopwatch stopwatch;
  auto sent = filter.client(0).send(bytes_of(pattern(8, 1)), bytes_of(reply), Timeout(150ms));
  ASSERT_FALSE(sent.ok());
  EXPECT_CODE(sent.status().code(), STATUS_TIMEOUT);
  EXPECT_GE(stopwatch.ms(), 120);
  EXPECT_LT(stopwatch.ms(), 2000);
  ASSERT_TRUE(taken.wait());
  // The service is not getting (it waits for "timed out"): Timeout::none() does not wait.
  Stopwatch immediate;
  EXPECT_CODE(filter.client(0).post(bytes_of(pattern(8, 2)), Timeout::none()).code(), STATUS_TIMEOUT);
  EXPECT_LT(immediate.ms(), 50);
  timed_out.notify();
  EXPECT_CODE(wait_code(results), STATUS_FLT_NO_WAITER_FOR_REPLY);
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(CppApi, ServiceClosingReleasesTheWaitingSenderWithPortDisconnected) {
  Signal port_ready, taken;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    auto connection = Connection::connect(kName);
    CHILD_CHECK(connection.ok());
    std::vector<uint8_t> buffer(16);
    CHILD_CHECK(connection->get_message(bytes_of(buffer)).ok());
    taken.notify();
    connection->close();
    return 0;
  });
  CppFilter filter;
  auto port = ServerPort::create(filter.options());
  ASSERT_TRUE(port.ok());
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  ClientPort& client = filter.client(0);
  AsyncCall send([&]() -> int64_t {
    std::vector<uint8_t> reply(16);
    auto sent = client.send(bytes_of(pattern(8, 1)), bytes_of(reply));
    return sent.ok() ? STATUS_SUCCESS : sent.status().code();
  }, [&] { client.close(); });
  ASSERT_TRUE(taken.wait());
  Stopwatch stopwatch;
  EXPECT_CODE(send.wait_code(), STATUS_PORT_DISCONNECTED);
  EXPECT_LT(stopwatch.ms(), 2000);
  ASSERT_TRUE(filter.wait_disconnects(1));
  const std::vector<void*> cookies = filter.disconnect_cookies();
  ASSERT_EQ(cookies.size(), 1u);
  EXPECT_EQ(cookies[0], reinterpret_cast<void*>(static_cast<uintptr_t>(0xC0C1)));
  EXPECT_FALSE(client.is_open());
  EXPECT_CODE(client.post(bytes_of(pattern(8, 2)), Timeout(100ms)).code(), STATUS_PORT_DISCONNECTED);
  EXPECT_TRUE(ExitsCleanly(service));
  EXPECT_EQ(filter.disconnect_cookies().size(), 1u) << "on_disconnect ran more than once";
}

TEST_F(CppApi, ClientPortCloseReleasesTheServiceBlockedInGetMessage) {
  Signal port_ready, about_to_get, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    auto connection = Connection::connect(kName);
    CHILD_CHECK(connection.ok());
    std::vector<uint8_t> buffer(16);
    about_to_get.notify();
    Stopwatch stopwatch;
    auto info = connection->get_message(bytes_of(buffer), Timeout(kWaitTimeout));
    notify_code(results, info.ok() ? STATUS_SUCCESS : info.status().code());
    results.notify(static_cast<uint64_t>(stopwatch.ms()));
    return 0;
  });
  CppFilter filter;
  auto port = ServerPort::create(filter.options());
  ASSERT_TRUE(port.ok());
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  ASSERT_TRUE(about_to_get.wait());
  filter.client(0).close();
  EXPECT_FALSE(filter.client(0).is_open());
  EXPECT_CODE(wait_code(results), STATUS_PORT_DISCONNECTED);
  EXPECT_LT(wait_number(results), 2000);
  EXPECT_TRUE(ExitsCleanly(service));
  EXPECT_TRUE(filter.wait_disconnects(1));
}

TEST_F(CppApi, ClosingTheConnectionLocallyReleasesItsOwnBlockedGetMessage) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    auto connection = Connection::connect(kName);
    CHILD_CHECK(connection.ok());
    std::atomic<NTSTATUS> status{STATUS_PENDING};
    std::thread getter([&] {
      std::vector<uint8_t> buffer(16);
      auto info = connection->get_message(bytes_of(buffer), Timeout(10s));
      status = info.ok() ? STATUS_SUCCESS : info.status().code();
    });
    Stopwatch stopwatch;
    connection->close();
    getter.join();
    notify_code(results, status.load());
    results.notify(static_cast<uint64_t>(stopwatch.ms()));
    return 0;
  });
  CppFilter filter;
  auto port = ServerPort::create(filter.options());
  ASSERT_TRUE(port.ok());
  port_ready.notify();
  // Whether close() lands before or during get_message cannot be controlled from outside: during
  // it the header promises STATUS_CANCELLED; before it the call fails on a closed connection.
  const NTSTATUS status = wait_code(results, 15s);
  EXPECT_TRUE(status == STATUS_CANCELLED || status == STATUS_PORT_DISCONNECTED || status == STATUS_INVALID_HANDLE)
      << "get_message on a locally closed connection returned 0x" << std::hex << static_cast<uint32_t>(status);
  EXPECT_LT(wait_number(results), 2000);
  EXPECT_TRUE(ExitsCleanly(service));
}

// queue_limit 4: four posts fill the queue of a service that takes nothing; a fifth with a 200 ms
// timeout gives up with STATUS_TIMEOUT and is withdrawn; the four are delivered once the service
// starts taking.
TEST_F(CppApi, BoundedQueueMakesTheFifthPostTimeOut) {
  Signal port_ready, connected, go, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    auto connection = Connection::connect(kName);
    CHILD_CHECK(connection.ok());
    connected.notify();
    CHILD_CHECK(go.wait());
    uint64_t seen = 0, count = 0;
    std::vector<uint8_t> buffer(8);
    for (;;) {
      auto info = connection->get_message(bytes_of(buffer), Timeout(500ms));
      if (!info.ok()) break;
      seen |= 1ull << buffer[0];
      ++count;
    }
    results.notify(seen);
    results.notify(count);
    return 0;
  });
  CppFilter filter;
  ServerPortOptions options = filter.options();
  options.queue_limit = 4;
  auto port = ServerPort::create(std::move(options));
  ASSERT_TRUE(port.ok());
  port_ready.notify();
  ASSERT_TRUE(connected.wait());
  ASSERT_TRUE(filter.wait_connections(1));
  ClientPort& client = filter.client(0);
  std::vector<std::unique_ptr<AsyncCall>> posts;
  for (uint8_t marker = 1; marker <= 4; ++marker) {
    posts.push_back(std::make_unique<AsyncCall>(
        [&client, marker]() -> int64_t {
          const std::vector<uint8_t> message(8, marker);
          return client.post(bytes_of(message), Timeout(10s)).code();
        },
        [&client] { client.close(); }));
  }
  const std::vector<uint8_t> fifth(8, 5);
  Stopwatch stopwatch;
  EXPECT_CODE(client.post(bytes_of(fifth), Timeout(200ms)).code(), STATUS_TIMEOUT);
  EXPECT_GE(stopwatch.ms(), 150);
  EXPECT_LT(stopwatch.ms(), 2000);
  go.notify();
  for (auto& post : posts) EXPECT_CODE(post->wait_code(), STATUS_SUCCESS);
  EXPECT_EQ(wait_number(results), 0b11110) << "markers the service received (bit n = marker n)";
  EXPECT_EQ(wait_number(results), 4);
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(CppApi, PeerCredentialsIdentifyTheServiceProcess) {
  Signal port_ready, done;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    auto connection = Connection::connect(kName, ConnectOptions{bytes_of(std::string_view("ctx")), false});
    CHILD_CHECK(connection.ok());
    CHILD_CHECK(done.wait());
    return 0;
  });
  CppFilter filter;
  auto port = ServerPort::create(filter.options());
  ASSERT_TRUE(port.ok());
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  const PeerCredentials peer = filter.peer(0);
  EXPECT_EQ(peer.pid, service.pid());
  EXPECT_EQ(peer.uid, ::geteuid());
  EXPECT_EQ(peer.gid, ::getegid());
  EXPECT_EQ(filter.client(0).peer().pid, service.pid());
  const std::vector<std::byte> context = filter.context(0);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(context.data()), context.size()), "ctx");
  EXPECT_EQ(port->connection_count(), 1u);
  done.notify();
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(CppApi, TruncatedReplyAndTruncatedMessageAreReportedNotFailed) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    auto connection = Connection::connect(kName);
    CHILD_CHECK(connection.ok());
    std::vector<uint8_t> buffer(64);
    auto info = connection->get_message(bytes_of(buffer));
    CHILD_CHECK(info.ok());
    results.notify(info->length);
    results.notify(info->full_length);
    results.notify(info->truncated() ? 1 : 0);
    results.notify(info->reply_capacity);
    results.notify(matches_pattern(buffer.data(), 64, 8) ? 1 : 0);
    CHILD_CHECK(connection->reply(info->id, bytes_of(pattern(32, 9))).ok());
    return 0;
  });
  CppFilter filter;
  auto port = ServerPort::create(filter.options());
  ASSERT_TRUE(port.ok());
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  std::vector<uint8_t> reply(8);
  auto sent = filter.client(0).send(bytes_of(pattern(1000, 8)), bytes_of(reply), Timeout(kWaitTimeout));
  ASSERT_TRUE(sent.ok()) << sent.status().to_string();
  EXPECT_EQ(sent->length, 8u);
  EXPECT_EQ(sent->full_length, 32u);
  EXPECT_TRUE(sent->truncated());
  EXPECT_TRUE(matches_pattern(reply.data(), 8, 9));
  EXPECT_EQ(wait_number(results), 64);
  EXPECT_EQ(wait_number(results), 1000);
  EXPECT_EQ(wait_number(results), 1);
  EXPECT_EQ(wait_number(results), 8);
  EXPECT_EQ(wait_number(results), 1);
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(CppApi, ConnectToUnknownNameIsObjectNameNotFound) {
  auto connection = Connection::connect("\\NoSuchPort");
  ASSERT_FALSE(connection.ok());
  EXPECT_CODE(connection.status().code(), STATUS_OBJECT_NAME_NOT_FOUND);
  EXPECT_CODE(connection.status().to_hresult(), HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND));
}

TEST_F(CppApi, OnConnectRefusalReachesTheServiceAsItsStatus) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    auto connection = Connection::connect(kName);
    notify_code(results, connection.ok() ? STATUS_SUCCESS : connection.status().code());
    return 0;
  });
  CppFilter filter;
  filter.set_verdict(STATUS_ACCESS_DENIED);
  auto port = ServerPort::create(filter.options());
  ASSERT_TRUE(port.ok());
  port_ready.notify();
  EXPECT_CODE(wait_code(results), STATUS_ACCESS_DENIED);
  EXPECT_EQ(port->connection_count(), 0u);
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(CppApi, ServerPortCloseStopsNewConnectionsOnly) {
  Signal port_ready, closed, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    auto existing = Connection::connect(kName);
    CHILD_CHECK(existing.ok());
    CHILD_CHECK(closed.wait());
    auto late = Connection::connect(kName);
    notify_code(results, late.ok() ? STATUS_SUCCESS : late.status().code());
    std::vector<uint8_t> buffer(8);
    auto info = existing->get_message(bytes_of(buffer), Timeout(kWaitTimeout));
    CHILD_CHECK(info.ok());
    notify_code(results, existing->reply(info->id, bytes_of(std::string_view("still"))).code());
    return 0;
  });
  CppFilter filter;
  auto port = ServerPort::create(filter.options(2));
  ASSERT_TRUE(port.ok());
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  port->close();
  closed.notify();
  EXPECT_CODE(wait_code(results), STATUS_OBJECT_NAME_NOT_FOUND);
  std::vector<uint8_t> reply(8);
  auto sent = filter.client(0).send(bytes_of(pattern(8, 1)), bytes_of(reply), Timeout(kWaitTimeout));
  ASSERT_TRUE(sent.ok()) << sent.status().to_string();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(reply.data()), sent->length), "still");
  EXPECT_CODE(wait_code(results), STATUS_SUCCESS);
  EXPECT_TRUE(ExitsCleanly(service));
}

// A C++ ServerPort named without the backslash, in another case, serves a C-API service.
TEST_F(CppApi, NamesCompareCaseInsensitivelyAcrossTheTwoApis) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    notify_code(results, FilterConnectCommunicationPort(L"\\SCANNERPORT", 0, nullptr, 0, nullptr, &port));
    MessageBuffer<16> buffer{};
    notify_code(results, FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr));
    notify_code(results, reply_message(port, buffer.header.MessageId, buffer.data, 4));
    CloseHandle(port);
    return 0;
  });
  CppFilter filter;
  ServerPortOptions options = filter.options();
  options.name = "scannerPort";
  auto port = ServerPort::create(std::move(options));
  ASSERT_TRUE(port.ok());
  port_ready.notify();
  EXPECT_CODE(wait_code(results), S_OK);
  ASSERT_TRUE(filter.wait_connections(1));
  std::vector<uint8_t> reply(4);
  auto sent = filter.client(0).send(bytes_of(pattern(4, 3)), bytes_of(reply), Timeout(kWaitTimeout));
  ASSERT_TRUE(sent.ok());
  EXPECT_TRUE(matches_pattern(reply.data(), 4, 3));
  EXPECT_CODE(wait_code(results), S_OK);
  EXPECT_CODE(wait_code(results), S_OK);
  EXPECT_TRUE(ExitsCleanly(service));
}

}  // namespace
}  // namespace fltport::test
