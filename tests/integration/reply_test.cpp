// FilterReplyMessage: reply data and lengths, the Windows padding rule, and replies nobody waits for.
#include <fltport/fltkernel.h>
#include <fltport/fltuser.h>

#include <cstring>
#include <vector>

#include "support/c_filter.hpp"
#include "support/process.hpp"

namespace fltport::test {
namespace {

class Reply : public PortTest {
 protected:
  // Sends `message` to connection 0 on its own thread, waiting for a reply of `capacity` bytes.
  // The result is the status; the reply lands in reply_ (with 0xEE guard bytes after it).
  std::unique_ptr<AsyncCall> send_async(CFilter& filter, std::vector<uint8_t> message, ULONG capacity) {
    reply_.assign(capacity + 64, 0xEE);
    reply_length_ = capacity;
    return std::make_unique<AsyncCall>(
        [this, &filter, message]() mutable -> int64_t {
          LARGE_INTEGER timeout = relative_timeout(kWaitTimeout);
          return FltSendMessage(filter.handle(), filter.client_port(0), message.data(),
                                static_cast<ULONG>(message.size()), reply_.data(), &reply_length_, &timeout);
        },
        [&filter] { filter.unregister(); });
  }
  bool guard_intact(size_t from) const {
    for (size_t i = from; i < reply_.size(); ++i) {
      if (reply_[i] != 0xEE) return false;
    }
    return true;
  }
  std::vector<uint8_t> reply_;
  ULONG reply_length_ = 0;
};

// The shape of the scanner sample's reply.
struct ScannerReply {
  FILTER_REPLY_HEADER ReplyHeader;
  UCHAR SafeToOpen;
};
static_assert(sizeof(ScannerReply) == 24, "the padded size the Windows documentation warns about");

TEST_F(Reply, HeaderOnlyReplyDeliversZeroBytes) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    MessageBuffer<64> buffer{};
    CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
    FILTER_REPLY_HEADER header{STATUS_SUCCESS, buffer.header.MessageId};
    notify_code(results, FilterReplyMessage(port, &header, sizeof header));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  auto send = send_async(filter, pattern(10, 1), 16);
  EXPECT_CODE(wait_code(results), S_OK);
  EXPECT_CODE(send->wait_code(), STATUS_SUCCESS);
  EXPECT_EQ(reply_length_, 0u);
  EXPECT_TRUE(guard_intact(0));
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(Reply, LongerThanTheFilterAcceptsIsBufferOverflowWithThePrefixDelivered) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    MessageBuffer<64> buffer{};
    CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
    results.notify(buffer.header.ReplyLength);
    const std::vector<uint8_t> answer = pattern(32, 2);
    notify_code(results, reply_message(port, buffer.header.MessageId, answer.data(), answer.size()));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  auto send = send_async(filter, pattern(10, 1), 8);
  EXPECT_EQ(wait_number(results), static_cast<long long>(sizeof(FILTER_REPLY_HEADER) + 8)) << "ReplyLength";
  EXPECT_CODE(wait_code(results), S_OK) << "FilterReplyMessage itself succeeds";
  EXPECT_CODE(send->wait_code(), STATUS_BUFFER_OVERFLOW);
  EXPECT_TRUE(matches_pattern(reply_.data(), 8, 2)) << "the first *ReplyLength bytes";
  EXPECT_TRUE(guard_intact(8)) << "bytes written past *ReplyLength";
  EXPECT_TRUE(ExitsCleanly(service));
}

// Windows: "the filter's ReplyLength and the service's size must both be
// sizeof(FILTER_REPLY_HEADER) + sizeof(data), not the size of a padded struct".
TEST_F(Reply, PaddedStructSizeOverflowsAOneByteReply) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    MessageBuffer<64> buffer{};
    CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
    results.notify(buffer.header.ReplyLength);
    ScannerReply reply{};
    reply.ReplyHeader.Status = 0;
    reply.ReplyHeader.MessageId = buffer.header.MessageId;
    reply.SafeToOpen = 1;
    notify_code(results, FilterReplyMessage(port, &reply.ReplyHeader, sizeof(ScannerReply)));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  auto send = send_async(filter, pattern(10, 1), sizeof(UCHAR));
  EXPECT_EQ(wait_number(results), static_cast<long long>(sizeof(FILTER_REPLY_HEADER) + sizeof(UCHAR)));
  EXPECT_CODE(wait_code(results), S_OK) << "FilterReplyMessage itself succeeds";
  EXPECT_CODE(send->wait_code(), STATUS_BUFFER_OVERFLOW);
  EXPECT_EQ(reply_[0], 1) << "SafeToOpen";
  EXPECT_TRUE(guard_intact(1));
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(Reply, HeaderPlusDataSizeFitsAOneByteReply) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    MessageBuffer<64> buffer{};
    CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
    ScannerReply reply{};
    reply.ReplyHeader.MessageId = buffer.header.MessageId;
    reply.SafeToOpen = 1;
    notify_code(results, FilterReplyMessage(port, &reply.ReplyHeader, sizeof(FILTER_REPLY_HEADER) + sizeof(UCHAR)));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  auto send = send_async(filter, pattern(10, 1), sizeof(UCHAR));
  EXPECT_CODE(wait_code(results), S_OK);
  EXPECT_CODE(send->wait_code(), STATUS_SUCCESS);
  EXPECT_EQ(reply_length_, sizeof(UCHAR));
  EXPECT_EQ(reply_[0], 1) << "SafeToOpen";
  EXPECT_TRUE(guard_intact(1));
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(Reply, StatusInTheReplyHeaderDoesNotChangeWhatFltSendMessageReturns) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    MessageBuffer<64> buffer{};
    CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
    notify_code(results, reply_message(port, buffer.header.MessageId, "data", 4, STATUS_ACCESS_DENIED));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  auto send = send_async(filter, pattern(10, 1), 16);
  EXPECT_CODE(wait_code(results), S_OK);
  EXPECT_CODE(send->wait_code(), STATUS_SUCCESS);
  EXPECT_EQ(reply_length_, 4u);
  EXPECT_EQ(std::memcmp(reply_.data(), "data", 4), 0);
  EXPECT_TRUE(ExitsCleanly(service));
}

// ---- replies nobody waits for ----

TEST_F(Reply, ToAMessageThatWantsNoReplyIsNoWaiter) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    MessageBuffer<64> buffer{};
    CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
    CHILD_CHECK_EQ(buffer.header.ReplyLength, 0);
    notify_code(results, reply_message(port, buffer.header.MessageId, "x", 1));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  uint8_t message[4] = {1, 2, 3, 4};
  LARGE_INTEGER timeout = relative_timeout(kWaitTimeout);
  EXPECT_CODE(FltSendMessage(filter.handle(), filter.client_port(0), message, sizeof message, nullptr, nullptr,
                             &timeout),
              STATUS_SUCCESS);
  EXPECT_CODE(wait_code(results), ERROR_FLT_NO_WAITER_FOR_REPLY);
  EXPECT_CODE(ERROR_FLT_NO_WAITER_FOR_REPLY, static_cast<HRESULT>(0x801F0020));
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(Reply, SecondReplyToTheSameMessageIsNoWaiter) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    MessageBuffer<64> buffer{};
    CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
    notify_code(results, reply_message(port, buffer.header.MessageId, "first", 5));
    notify_code(results, reply_message(port, buffer.header.MessageId, "again", 5));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  auto send = send_async(filter, pattern(10, 1), 16);
  EXPECT_CODE(wait_code(results), S_OK);
  EXPECT_CODE(wait_code(results), ERROR_FLT_NO_WAITER_FOR_REPLY);
  EXPECT_CODE(send->wait_code(), STATUS_SUCCESS);
  EXPECT_EQ(reply_length_, 5u);
  EXPECT_EQ(std::memcmp(reply_.data(), "first", 5), 0);
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(Reply, IdOfAMessageFromAnotherConnectionIsNoWaiter) {
  Signal port_ready, results, connected_a;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE a = nullptr, b = nullptr;
    CHILD_CHECK_EQ(connect_service(&a), S_OK);
    connected_a.notify();
    CHILD_CHECK_EQ(connect_service(&b), S_OK);
    MessageBuffer<64> buffer{};
    CHILD_CHECK_EQ(FilterGetMessage(a, &buffer.header, sizeof buffer, nullptr), S_OK);
    notify_code(results, reply_message(b, buffer.header.MessageId, "wrong", 5));
    notify_code(results, reply_message(a, buffer.header.MessageId, "right", 5));
    CloseHandle(a);
    CloseHandle(b);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port({.max_connections = 2}), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(connected_a.wait());
  ASSERT_TRUE(filter.wait_connections(2));
  auto send = send_async(filter, pattern(10, 1), 16);  // to connection 0, the first one (a)
  EXPECT_CODE(wait_code(results), ERROR_FLT_NO_WAITER_FOR_REPLY);
  EXPECT_CODE(wait_code(results), S_OK);
  EXPECT_CODE(send->wait_code(), STATUS_SUCCESS);
  EXPECT_EQ(reply_length_, 5u);
  EXPECT_EQ(std::memcmp(reply_.data(), "right", 5), 0);
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(Reply, MadeUpIdIsNoWaiterAndTheConnectionKeepsWorking) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    notify_code(results, reply_message(port, 0x123456789ull, "x", 1));
    notify_code(results, reply_message(port, 0, "x", 1));
    notify_code(results, reply_message(port, ~0ull, "x", 1));
    MessageBuffer<64> buffer{};
    CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
    notify_code(results, reply_message(port, buffer.header.MessageId ^ 0x5A5Aull, "x", 1));
    notify_code(results, reply_message(port, buffer.header.MessageId, "y", 1));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  for (int i = 0; i < 3; ++i) EXPECT_CODE(wait_code(results), ERROR_FLT_NO_WAITER_FOR_REPLY) << "id " << i;
  auto send = send_async(filter, pattern(10, 1), 16);
  EXPECT_CODE(wait_code(results), ERROR_FLT_NO_WAITER_FOR_REPLY);
  EXPECT_CODE(wait_code(results), S_OK);
  EXPECT_CODE(send->wait_code(), STATUS_SUCCESS);
  EXPECT_EQ(reply_length_, 1u);
  EXPECT_EQ(reply_[0], 'y');
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(Reply, BufferShorterThanTheHeaderIsInvalidArgAndKeepsTheWaiter) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    MessageBuffer<64> buffer{};
    CHILD_CHECK_EQ(FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr), S_OK);
    FILTER_REPLY_HEADER header{STATUS_SUCCESS, buffer.header.MessageId};
    notify_code(results, FilterReplyMessage(port, &header, sizeof(FILTER_REPLY_HEADER) - 1));
    notify_code(results, FilterReplyMessage(port, &header, 0));
    notify_code(results, reply_message(port, buffer.header.MessageId, "z", 1));
    CloseHandle(port);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  auto send = send_async(filter, pattern(10, 1), 16);
  EXPECT_CODE(wait_code(results), E_INVALIDARG);
  EXPECT_CODE(wait_code(results), E_INVALIDARG);
  EXPECT_CODE(wait_code(results), S_OK) << "the invalid replies must not have consumed the waiter";
  EXPECT_CODE(send->wait_code(), STATUS_SUCCESS);
  EXPECT_EQ(reply_length_, 1u);
  EXPECT_EQ(reply_[0], 'z');
  EXPECT_TRUE(ExitsCleanly(service));
}

}  // namespace
}  // namespace fltport::test
