// Messages from the filter to a service: FltSendMessage, FilterGetMessage, the message header,
// concurrency, and messages longer than the service's buffer.
#include <fltport/fltkernel.h>
#include <fltport/fltuser.h>
#include <fltport/port.hpp>

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "support/c_filter.hpp"
#include "support/process.hpp"

namespace fltport::test {
namespace {

class Messages : public PortTest {};

NTSTATUS send_with_reply(CFilter& filter, int connection, const std::vector<uint8_t>& message, void* reply,
                         ULONG* reply_length, std::chrono::milliseconds timeout = kWaitTimeout) {
  LARGE_INTEGER t = relative_timeout(timeout);
  return FltSendMessage(filter.handle(), filter.client_port(connection), const_cast<uint8_t*>(message.data()),
                        static_cast<ULONG>(message.size()), reply, reply_length, &t);
}

TEST_F(Messages, RoundTripWithReplyAcrossProcesses) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    MessageBuffer<256> buffer{};
    CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
    // The filter accepts 64 bytes of reply data, plus the reply header.
    CHILD_CHECK_EQ(buffer.header.ReplyLength, sizeof(FILTER_REPLY_HEADER) + 64);
    CHILD_CHECK(matches_pattern(buffer.data, 100, 3));
    const std::vector<uint8_t> answer = pattern(40, 4);
    CHILD_CHECK_EQ(reply_message(port, buffer.header.MessageId, answer.data(), answer.size()), S_OK);
    CHILD_CHECK(CloseHandle(port));
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  std::vector<uint8_t> reply(96, 0xEE);
  ULONG reply_length = 64;
  EXPECT_CODE(send_with_reply(filter, 0, pattern(100, 3), reply.data(), &reply_length), STATUS_SUCCESS);
  EXPECT_EQ(reply_length, 40u);
  EXPECT_TRUE(matches_pattern(reply.data(), 40, 4));
  for (size_t i = 40; i < reply.size(); ++i) ASSERT_EQ(reply[i], 0xEE) << "reply buffer written at " << i;
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(Messages, ReplyLengthIsZeroWhenNoReplyWanted) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    MessageBuffer<64> buffer{};
    buffer.header.ReplyLength = 0xFFFFFFFF;
    notify_code(results, FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr));
    results.notify(buffer.header.ReplyLength);
    results.notify(matches_pattern(buffer.data, 33, 9) ? 1 : 0);
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  std::vector<uint8_t> message = pattern(33, 9);
  LARGE_INTEGER timeout = relative_timeout(kWaitTimeout);
  EXPECT_CODE(FltSendMessage(filter.handle(), filter.client_port(0), message.data(), 33, nullptr, nullptr, &timeout),
              STATUS_SUCCESS);
  EXPECT_CODE(wait_code(results), S_OK);
  EXPECT_EQ(wait_number(results), 0) << "FILTER_MESSAGE_HEADER.ReplyLength";
  EXPECT_EQ(wait_number(results), 1) << "message bytes";
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(Messages, EachClientPortReachesItsOwnService) {
  Signal port_ready, results_a, results_b;
  auto service_body = [&](Signal& results) {
    return [&] {
      CHILD_CHECK(port_ready.wait());
      const pid_t me = ::getpid();
      HANDLE port = nullptr;
      CHILD_CHECK_EQ(connect_service(&port, &me, sizeof me), S_OK);
      MessageBuffer<64> buffer{};
      CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
      pid_t addressed_to = 0;
      std::memcpy(&addressed_to, buffer.data, sizeof addressed_to);
      results.notify(static_cast<uint64_t>(addressed_to));
      CHILD_CHECK_EQ(reply_message(port, buffer.header.MessageId, &me, sizeof me), S_OK);
      CloseHandle(port);
      return 0;
    };
  };
  ChildProcess a(service_body(results_a));
  ChildProcess b(service_body(results_b));
  CFilter filter;
  ASSERT_CODE(filter.create_port({.max_connections = 2}), STATUS_SUCCESS);
  port_ready.notify();
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(2));
  for (int i = 0; i < 2; ++i) {
    ConnectionRecord& record = filter.connection(i);
    ASSERT_EQ(record.context.size(), sizeof(pid_t));
    pid_t owner = 0;
    std::memcpy(&owner, record.context.data(), sizeof owner);
    std::vector<uint8_t> message(sizeof owner);
    std::memcpy(message.data(), &owner, sizeof owner);
    pid_t replier = 0;
    ULONG reply_length = sizeof replier;
    EXPECT_CODE(send_with_reply(filter, i, message, &replier, &reply_length), STATUS_SUCCESS);
    EXPECT_EQ(replier, owner) << "connection " << i << " was answered by another service";
  }
  EXPECT_EQ(wait_number(results_a), a.pid());
  EXPECT_EQ(wait_number(results_b), b.pid());
  EXPECT_TRUE(ExitsCleanly(a));
  EXPECT_TRUE(ExitsCleanly(b));
}

// 8 filter threads x 200 messages to one service that takes them with 4 threads.
TEST_F(Messages, ManyFilterThreadsAndServiceThreadsEveryMessageAnsweredWithUniqueIds) {
  constexpr int kSenders = 8;
  constexpr int kPerSender = 200;
  constexpr int kTakers = 4;
  struct Body {
    uint32_t sender;
    uint32_t sequence;
    uint64_t check;
  };
  auto answer_for = [](const Body& body) {
    Body answer = body;
    answer.check = ~body.check ^ (static_cast<uint64_t>(body.sender) << 32 | body.sequence);
    return answer;
  };
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    std::mutex mutex;
    std::set<ULONGLONG> ids;
    std::atomic<int> taken{0}, duplicates{0}, failures{0};
    std::vector<std::thread> takers;
    for (int t = 0; t < kTakers; ++t) {
      takers.emplace_back([&] {
        for (;;) {
          MessageBuffer<sizeof(Body)> buffer{};
          const HRESULT hr = FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr);
          if (hr != S_OK) {
            std::fprintf(stderr, "FilterGetMessage: 0x%08X\n", static_cast<unsigned>(hr));
            failures++;
            return;
          }
          if (buffer.header.ReplyLength == 0) return;  // the filter's "stop"
          Body body;
          std::memcpy(&body, buffer.data, sizeof body);
          {
            std::lock_guard lock(mutex);
            if (!ids.insert(buffer.header.MessageId).second) duplicates++;
          }
          taken++;
          const Body answer = answer_for(body);
          if (reply_message(port, buffer.header.MessageId, &answer, sizeof answer) != S_OK) failures++;
        }
      });
    }
    for (std::thread& taker : takers) taker.join();
    results.notify(static_cast<uint64_t>(taken.load()));
    results.notify(static_cast<uint64_t>(duplicates.load()));
    results.notify(static_cast<uint64_t>(failures.load()));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  std::atomic<int> answered{0}, wrong{0};
  {
    std::vector<std::thread> senders;
    for (int s = 0; s < kSenders; ++s) {
      senders.emplace_back([&, s] {
        for (int i = 0; i < kPerSender; ++i) {
          Body body{static_cast<uint32_t>(s), static_cast<uint32_t>(i),
                    0x9E3779B97F4A7C15ull * static_cast<uint64_t>(s * kPerSender + i + 1)};
          Body reply{};
          ULONG reply_length = sizeof reply;
          LARGE_INTEGER timeout = relative_timeout(std::chrono::seconds(20));
          const NTSTATUS status = FltSendMessage(filter.handle(), filter.client_port(0), &body, sizeof body, &reply,
                                                 &reply_length, &timeout);
          const Body expected = answer_for(body);
          if (status == STATUS_SUCCESS && reply_length == sizeof reply &&
              std::memcmp(&reply, &expected, sizeof reply) == 0) {
            answered++;
          } else {
            if (wrong++ < 5) {
              std::fprintf(stderr, "sender %d message %d: status 0x%08X reply length %u\n", s, i,
                           static_cast<unsigned>(status), static_cast<unsigned>(reply_length));
            }
          }
        }
      });
    }
    for (std::thread& sender : senders) sender.join();
  }
  EXPECT_EQ(answered.load(), kSenders * kPerSender);
  EXPECT_EQ(wrong.load(), 0);
  // One "stop" (no reply wanted) per service thread.
  for (int t = 0; t < kTakers; ++t) {
    uint8_t stop = 0;
    LARGE_INTEGER timeout = relative_timeout(kWaitTimeout);
    EXPECT_CODE(FltSendMessage(filter.handle(), filter.client_port(0), &stop, 1, nullptr, nullptr, &timeout),
                STATUS_SUCCESS);
  }
  EXPECT_EQ(wait_number(results, std::chrono::seconds(10)), kSenders * kPerSender) << "messages taken";
  EXPECT_EQ(wait_number(results), 0) << "duplicate MessageIds";
  EXPECT_EQ(wait_number(results), 0) << "failed FilterGetMessage/FilterReplyMessage calls";
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(Messages, LongerThanServiceBufferIsMoreDataWithHeaderIntactAndNothingWrittenPastTheBuffer) {
  constexpr size_t kMessage = 1000;
  constexpr size_t kRoom = 64;
  constexpr size_t kGuard = 256;
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    std::vector<uint8_t> storage(sizeof(FILTER_MESSAGE_HEADER) + kRoom + kGuard, 0xCC);
    auto* header = reinterpret_cast<PFILTER_MESSAGE_HEADER>(storage.data());
    const HRESULT hr = FilterGetMessage(port, header, sizeof(FILTER_MESSAGE_HEADER) + kRoom, nullptr);
    notify_code(results, hr);
    results.notify(header->ReplyLength);
    results.notify(matches_pattern(storage.data() + sizeof(FILTER_MESSAGE_HEADER), kRoom, 5) ? 1 : 0);
    size_t written_past = 0;
    for (size_t i = sizeof(FILTER_MESSAGE_HEADER) + kRoom; i < storage.size(); ++i) {
      if (storage[i] != 0xCC) ++written_past;
    }
    results.notify(written_past);
    // The filter still waits for the reply to this message.
    const std::vector<uint8_t> answer = pattern(32, 6);
    notify_code(results, reply_message(port, header->MessageId, answer.data(), answer.size()));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  AsyncCall send([&]() -> int64_t {
    std::vector<uint8_t> reply(32);
    ULONG reply_length = 32;
    const NTSTATUS status = send_with_reply(filter, 0, pattern(kMessage, 5), reply.data(), &reply_length);
    if (status == STATUS_SUCCESS && (reply_length != 32 || !matches_pattern(reply.data(), 32, 6))) return -1;
    return status;
  }, [&] { filter.unregister(); });
  EXPECT_CODE(wait_code(results), HRESULT_FROM_WIN32(ERROR_MORE_DATA));
  EXPECT_EQ(wait_number(results), static_cast<long long>(sizeof(FILTER_REPLY_HEADER) + 32)) << "ReplyLength";
  EXPECT_EQ(wait_number(results), 1) << "the bytes that fit";
  EXPECT_EQ(wait_number(results), 0) << "bytes written past the buffer";
  EXPECT_CODE(wait_code(results), S_OK) << "FilterReplyMessage to the cut message";
  EXPECT_CODE(send.wait_code(), STATUS_SUCCESS) << "-1: the reply data differ";
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(Messages, ServiceBufferSmallerThanTheHeaderIsInvalidArgAndLosesNothing) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    MessageBuffer<64> buffer{};
    notify_code(results, FilterGetMessage(port, &buffer.header, 8, nullptr));
    notify_code(results, FilterGetMessage(port, &buffer.header, sizeof(FILTER_MESSAGE_HEADER) - 1, nullptr));
    notify_code(results, FilterGetMessage(port, &buffer.header, 0, nullptr));
    notify_code(results, FilterGetMessage(port, nullptr, 0, nullptr));
    // The message sent meanwhile is still there.
    CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
    CHILD_CHECK(matches_pattern(buffer.data, 20, 11));
    CHILD_CHECK_EQ(reply_message(port, buffer.header.MessageId, "ok", 2), S_OK);
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  AsyncCall send([&]() -> int64_t {
    char reply[2] = {};
    ULONG reply_length = sizeof reply;
    const NTSTATUS status = send_with_reply(filter, 0, pattern(20, 11), reply, &reply_length);
    return status == STATUS_SUCCESS && (reply_length != 2 || std::memcmp(reply, "ok", 2) != 0) ? -1 : status;
  }, [&] { filter.unregister(); });
  for (int i = 0; i < 4; ++i) EXPECT_CODE(wait_code(results), E_INVALIDARG) << "call " << i;
  EXPECT_CODE(send.wait_code(), STATUS_SUCCESS);
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(Messages, LargestMessageAndReplyArriveIntact) {
  const size_t kMax = fltport::kMaxMessageSize;
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    std::vector<uint8_t> storage(sizeof(FILTER_MESSAGE_HEADER) + kMax);
    auto* header = reinterpret_cast<PFILTER_MESSAGE_HEADER>(storage.data());
    CHILD_CHECK_EQ(FilterGetMessage(port, header, static_cast<DWORD>(storage.size()), nullptr), S_OK);
    CHILD_CHECK_EQ(header->ReplyLength, sizeof(FILTER_REPLY_HEADER) + kMax);
    CHILD_CHECK(matches_pattern(storage.data() + sizeof(FILTER_MESSAGE_HEADER), kMax, 12));
    const std::vector<uint8_t> answer = pattern(kMax, 13);
    CHILD_CHECK_EQ(reply_message(port, header->MessageId, answer.data(), answer.size()), S_OK);
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  std::vector<uint8_t> reply(kMax);
  ULONG reply_length = static_cast<ULONG>(kMax);
  EXPECT_CODE(send_with_reply(filter, 0, pattern(kMax, 12), reply.data(), &reply_length), STATUS_SUCCESS);
  EXPECT_EQ(reply_length, kMax);
  EXPECT_TRUE(matches_pattern(reply.data(), kMax, 13));
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(Messages, LargerThanTheMaximumIsRefusedAndTheConnectionKeepsWorking) {
  const size_t kTooBig = fltport::kMaxMessageSize + 1;
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    MessageBuffer<64> buffer{};
    CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
    // The first message to arrive is the small one.
    results.notify(matches_pattern(buffer.data, 10, 14) ? 1 : 0);
    CHILD_CHECK_EQ(reply_message(port, buffer.header.MessageId, nullptr, 0), S_OK);
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  uint8_t reply[4];
  ULONG reply_length = sizeof reply;
  const NTSTATUS too_big = send_with_reply(filter, 0, pattern(kTooBig, 15), reply, &reply_length);
  EXPECT_FALSE(NT_SUCCESS(too_big));
  EXPECT_CODE(too_big, STATUS_INVALID_PARAMETER);
  reply_length = sizeof reply;
  EXPECT_CODE(send_with_reply(filter, 0, pattern(10, 14), reply, &reply_length), STATUS_SUCCESS);
  EXPECT_EQ(reply_length, 0u);
  EXPECT_EQ(wait_number(results), 1) << "the service received the refused message";
  EXPECT_TRUE(ExitsCleanly(service));
}

}  // namespace
}  // namespace fltport::test
