// Overlapped FilterGetMessage: requests queued with an OVERLAPPED, completed through their event or
// the completion port associated with the port handle, cancelled with CancelIo/CancelIoEx, ended by
// CloseHandle or by the filter going away; and the rule that a message is never delivered to a
// cancelled request and never lost. The filter runs in the test process (the C API's filter side)
// unless the test says otherwise.
#include <fltport/fltkernel.h>
#include <fltport/fltuser.h>

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

constexpr DWORD kLong = 5000;  // ms: a completion that must come
constexpr DWORD kShort = 50;   // ms: a completion that must not

constexpr HRESULT kPending = HRESULT_FROM_WIN32(ERROR_IO_PENDING);

// One overlapped request: its OVERLAPPED, its event (optional) and its buffer, filled with 0xCC so
// that what the library wrote can be told from what it did not.
struct Request {
  explicit Request(size_t data_room = 256, bool with_event = true)
      : storage(sizeof(FILTER_MESSAGE_HEADER) + data_room, 0xCC) {
    if (with_event) overlapped.hEvent = CreateEventW(nullptr, TRUE, FALSE, nullptr);
  }
  ~Request() {
    if (event() != nullptr) CloseHandle(event());
  }
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;

  HANDLE event() const {
    return reinterpret_cast<HANDLE>(reinterpret_cast<uintptr_t>(overlapped.hEvent) & ~uintptr_t{1});
  }
  PFILTER_MESSAGE_HEADER header() { return reinterpret_cast<PFILTER_MESSAGE_HEADER>(storage.data()); }
  const uint8_t* data() const { return storage.data() + sizeof(FILTER_MESSAGE_HEADER); }
  HRESULT issue(HANDLE port) {
    return FilterGetMessage(port, header(), static_cast<DWORD>(storage.size()), &overlapped);
  }
  bool untouched() const {
    for (uint8_t byte : storage) {
      if (byte != 0xCC) return false;
    }
    return true;
  }
  // GetOverlappedResult with a bounded wait on the event: TRUE/FALSE, and the error when FALSE.
  BOOL result(HANDLE port, DWORD* bytes, DWORD* error, DWORD timeout = kLong) {
    SetLastError(0);
    const BOOL ok = GetOverlappedResultEx(port, &overlapped, bytes, timeout, FALSE);
    *error = ok ? 0 : GetLastError();
    return ok;
  }

  OVERLAPPED overlapped{};
  std::vector<uint8_t> storage;
};

class Overlapped : public PortTest {
 protected:
  void SetUp() override {
    ASSERT_CODE(filter_.create_port(), STATUS_SUCCESS);
    ASSERT_CODE(connect_service(&port_), S_OK);
    ASSERT_TRUE(filter_.wait_connections(1));
  }
  void TearDown() override {
    if (port_ != nullptr) CloseHandle(port_);
    filter_.unregister();
  }

  // FltSendMessage of `size` pattern bytes wanting no reply: returns once the service took it.
  NTSTATUS post(uint32_t seed, size_t size = 40) {
    std::vector<uint8_t> message = pattern(size, seed);
    LARGE_INTEGER timeout = relative_timeout(kWaitTimeout);
    return FltSendMessage(filter_.handle(), filter_.client_port(0), message.data(), static_cast<ULONG>(size),
                          nullptr, nullptr, &timeout);
  }
  // The same on a thread of its own, since it waits until a request takes the message.
  std::unique_ptr<AsyncCall> post_async(uint32_t seed, size_t size = 40) {
    return std::make_unique<AsyncCall>([this, seed, size]() -> int64_t { return post(seed, size); },
                                       [this] { filter_.unregister(); });
  }
  // FltSendMessage wanting `reply_size` bytes of reply; returns the status, or -1 when the reply is
  // not the pattern of seed + 1000.
  std::unique_ptr<AsyncCall> send_async(uint32_t seed, size_t size, ULONG reply_size) {
    return std::make_unique<AsyncCall>(
        [this, seed, size, reply_size]() -> int64_t {
          std::vector<uint8_t> message = pattern(size, seed);
          std::vector<uint8_t> reply(reply_size);
          ULONG reply_length = reply_size;
          LARGE_INTEGER timeout = relative_timeout(kWaitTimeout);
          const NTSTATUS status =
              FltSendMessage(filter_.handle(), filter_.client_port(0), message.data(),
                             static_cast<ULONG>(size), reply.data(), &reply_length, &timeout);
          if (status == STATUS_SUCCESS &&
              (reply_length != reply_size || !matches_pattern(reply.data(), reply_size, seed + 1000))) {
            return -1;
          }
          return status;
        },
        [this] { filter_.unregister(); });
  }

  CFilter filter_;
  HANDLE port_ = nullptr;
};

TEST_F(Overlapped, ReturnsPendingAndResetsTheEvent) {
  Request request;
  SetEvent(request.event());
  ASSERT_CODE(request.issue(port_), kPending);
  EXPECT_EQ(WaitForSingleObject(request.event(), 0), static_cast<DWORD>(WAIT_TIMEOUT))
      << "reset before return";
  DWORD bytes = 0;
  EXPECT_FALSE(GetOverlappedResult(port_, &request.overlapped, &bytes, FALSE));
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_IO_INCOMPLETE));
  EXPECT_EQ(request.overlapped.Internal, static_cast<ULONG_PTR>(STATUS_PENDING));
  auto sent = post_async(1);
  ASSERT_EQ(WaitForSingleObject(request.event(), kLong), WAIT_OBJECT_0);
  EXPECT_CODE(sent->wait_code(), STATUS_SUCCESS);
  DWORD error = 0;
  EXPECT_TRUE(request.result(port_, &bytes, &error)) << error;
  EXPECT_EQ(bytes, sizeof(FILTER_MESSAGE_HEADER) + 40) << "InternalHigh counts the header";
  EXPECT_EQ(request.overlapped.InternalHigh, bytes);
  EXPECT_EQ(request.overlapped.Internal, static_cast<ULONG_PTR>(STATUS_SUCCESS));
  EXPECT_TRUE(HasOverlappedIoCompleted(&request.overlapped));
  EXPECT_EQ(request.header()->ReplyLength, 0u);
  EXPECT_NE(request.header()->MessageId, 0u);
  EXPECT_TRUE(matches_pattern(request.data(), 40, 1));
  EXPECT_EQ(request.storage[sizeof(FILTER_MESSAGE_HEADER) + 40], 0xCC) << "nothing past the message";
}

TEST_F(Overlapped, ManyOutstandingRequestsTakeMessagesInTheOrderTheyWereMade) {
  constexpr int kCount = 6;
  std::vector<std::unique_ptr<Request>> requests;
  for (int i = 0; i < kCount; ++i) {
    requests.push_back(std::make_unique<Request>());
    ASSERT_CODE(requests.back()->issue(port_), kPending);
  }
  // One sender, so that message i is queued after message i - 1 was taken.
  AsyncCall sender(
      [&]() -> int64_t {
        for (int i = 0; i < kCount; ++i) {
          const NTSTATUS status = post(static_cast<uint32_t>(100 + i), 20 + static_cast<size_t>(i));
          if (status != STATUS_SUCCESS) return status;
        }
        return STATUS_SUCCESS;
      },
      [&] { filter_.unregister(); });
  EXPECT_CODE(sender.wait_code(), STATUS_SUCCESS);
  std::set<ULONGLONG> ids;
  for (int i = 0; i < kCount; ++i) {
    DWORD bytes = 0, error = 0;
    ASSERT_TRUE(requests[i]->result(port_, &bytes, &error)) << "request " << i << " error " << error;
    EXPECT_EQ(bytes, sizeof(FILTER_MESSAGE_HEADER) + 20 + i) << i;
    EXPECT_TRUE(matches_pattern(requests[i]->data(), 20 + i, 100 + i))
        << "request " << i << " got another message";
    ids.insert(requests[i]->header()->MessageId);
  }
  EXPECT_EQ(ids.size(), static_cast<size_t>(kCount));
}

TEST_F(Overlapped, CompletionPortGetsAPacketWithTheKey) {
  HANDLE iocp = CreateIoCompletionPort(port_, nullptr, 0x77, 0);
  ASSERT_NE(iocp, nullptr);
  EXPECT_EQ(CreateIoCompletionPort(port_, iocp, 0x78, 0), nullptr) << "one port per handle";
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  Request a(256, false), b(256, false);
  ASSERT_CODE(a.issue(port_), kPending);
  ASSERT_CODE(b.issue(port_), kPending);
  auto first = post_async(1, 30);
  auto second = post_async(2, 31);
  for (Request* expected : {&a, &b}) {
    DWORD bytes = 0;
    ULONG_PTR key = 0;
    LPOVERLAPPED overlapped = nullptr;
    ASSERT_TRUE(GetQueuedCompletionStatus(iocp, &bytes, &key, &overlapped, kLong)) << GetLastError();
    EXPECT_EQ(key, 0x77u);
    EXPECT_EQ(overlapped, &expected->overlapped);
    EXPECT_EQ(bytes, overlapped->InternalHigh);
  }
  EXPECT_CODE(first->wait_code(), STATUS_SUCCESS);
  EXPECT_CODE(second->wait_code(), STATUS_SUCCESS);
  // Which message each request got depends on which sender went first; each got one.
  EXPECT_TRUE((matches_pattern(a.data(), 30, 1) && matches_pattern(b.data(), 31, 2)) ||
              (matches_pattern(a.data(), 31, 2) && matches_pattern(b.data(), 30, 1)));
  EXPECT_TRUE(CloseHandle(iocp));
}

TEST_F(Overlapped, EventWithItsLowBitSetSuppressesThePacket) {
  HANDLE iocp = CreateIoCompletionPort(port_, nullptr, 5, 0);
  ASSERT_NE(iocp, nullptr);
  Request quiet;
  quiet.overlapped.hEvent =
      reinterpret_cast<HANDLE>(reinterpret_cast<uintptr_t>(quiet.overlapped.hEvent) | 1);
  ASSERT_CODE(quiet.issue(port_), kPending);
  auto sent = post_async(3);
  ASSERT_EQ(WaitForSingleObject(quiet.event(), kLong), WAIT_OBJECT_0) << "the event is still set";
  EXPECT_CODE(sent->wait_code(), STATUS_SUCCESS);
  DWORD bytes = 0;
  ULONG_PTR key = 0;
  LPOVERLAPPED overlapped = nullptr;
  EXPECT_FALSE(GetQueuedCompletionStatus(iocp, &bytes, &key, &overlapped, kShort)) << "no packet";
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(WAIT_TIMEOUT));
  // Without the bit the same port gets the packet.
  Request loud;
  ASSERT_CODE(loud.issue(port_), kPending);
  auto again = post_async(4);
  EXPECT_TRUE(GetQueuedCompletionStatus(iocp, &bytes, &key, &overlapped, kLong));
  EXPECT_EQ(overlapped, &loud.overlapped);
  EXPECT_EQ(WaitForSingleObject(loud.event(), 0), WAIT_OBJECT_0) << "and the event";
  EXPECT_CODE(again->wait_code(), STATUS_SUCCESS);
  CloseHandle(iocp);
}

TEST_F(Overlapped, CancelIoExOfOneRequestAbortsItAndTheMessageGoesToTheNext) {
  Request a, b;
  ASSERT_CODE(a.issue(port_), kPending);
  ASSERT_CODE(b.issue(port_), kPending);
  EXPECT_TRUE(CancelIoEx(port_, &a.overlapped));
  DWORD bytes = 99, error = 0;
  EXPECT_FALSE(a.result(port_, &bytes, &error));
  EXPECT_EQ(error, static_cast<DWORD>(ERROR_OPERATION_ABORTED));
  EXPECT_EQ(bytes, 0u);
  EXPECT_EQ(static_cast<NTSTATUS>(a.overlapped.Internal), STATUS_CANCELLED);
  EXPECT_FALSE(CancelIoEx(port_, &a.overlapped)) << "already done";
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_NOT_FOUND));
  auto sent = post_async(7);
  EXPECT_TRUE(b.result(port_, &bytes, &error)) << error;
  EXPECT_TRUE(matches_pattern(b.data(), 40, 7));
  EXPECT_CODE(sent->wait_code(), STATUS_SUCCESS);
  EXPECT_TRUE(a.untouched()) << "nothing was written into the cancelled request's buffer";
}

TEST_F(Overlapped, CancelIoExOfAllThenTheMessageWaitsForTheNextRequest) {
  Request a, b;
  ASSERT_CODE(a.issue(port_), kPending);
  ASSERT_CODE(b.issue(port_), kPending);
  // Let the library start asking the filter for a message on their behalf (nothing outside tells
  // when it has; if not yet, the other branch below is taken and checked instead).
  Sleep(100);
  EXPECT_TRUE(CancelIoEx(port_, nullptr));
  DWORD bytes = 0, error = 0;
  EXPECT_FALSE(a.result(port_, &bytes, &error));
  EXPECT_EQ(error, static_cast<DWORD>(ERROR_OPERATION_ABORTED));
  EXPECT_FALSE(b.result(port_, &bytes, &error));
  EXPECT_EQ(error, static_cast<DWORD>(ERROR_OPERATION_ABORTED));
  EXPECT_FALSE(CancelIoEx(port_, nullptr)) << "nothing left to cancel";
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_NOT_FOUND));
  // FltSendMessage without a reply returns once the message was taken. If the library was already
  // asking for it, it takes it now although no request is outstanding, and must hold it for the
  // next request; otherwise nobody takes it and it times out, withdrawn.
  std::vector<uint8_t> message = pattern(64, 11);
  LARGE_INTEGER timeout = relative_timeout(std::chrono::milliseconds(500));
  const NTSTATUS posted = FltSendMessage(filter_.handle(), filter_.client_port(0), message.data(), 64,
                                         nullptr, nullptr, &timeout);
  ASSERT_TRUE(posted == STATUS_SUCCESS || posted == STATUS_TIMEOUT) << std::hex << posted;
  RecordProperty("held_message", posted == STATUS_SUCCESS ? "yes" : "no");
  EXPECT_TRUE(a.untouched()) << "a cancelled request got the message";
  EXPECT_TRUE(b.untouched()) << "a cancelled request got the message";
  auto sent = send_async(12, 32, 16);
  Request c;
  ASSERT_CODE(c.issue(port_), kPending);
  ASSERT_TRUE(c.result(port_, &bytes, &error)) << error;
  if (posted == STATUS_SUCCESS) {
    EXPECT_EQ(bytes, sizeof(FILTER_MESSAGE_HEADER) + 64);
    EXPECT_TRUE(matches_pattern(c.data(), 64, 11)) << "the held message comes first";
    ASSERT_CODE(c.issue(port_), kPending);
    ASSERT_TRUE(c.result(port_, &bytes, &error)) << error;
  }
  // The next message goes to the next request, with its reply.
  EXPECT_TRUE(matches_pattern(c.data(), 32, 12));
  EXPECT_EQ(c.header()->ReplyLength, sizeof(FILTER_REPLY_HEADER) + 16);
  const std::vector<uint8_t> answer = pattern(16, 1012);
  EXPECT_CODE(reply_message(port_, c.header()->MessageId, answer.data(), answer.size()), S_OK);
  EXPECT_CODE(sent->wait_code(), STATUS_SUCCESS);
}

TEST_F(Overlapped, CancelIoCancelsOnlyTheCallingThreadsRequests) {
  Request mine, theirs;
  std::thread([&] { EXPECT_CODE(theirs.issue(port_), kPending); }).join();
  ASSERT_CODE(mine.issue(port_), kPending);
  EXPECT_TRUE(CancelIo(port_));
  DWORD bytes = 0, error = 0;
  EXPECT_FALSE(mine.result(port_, &bytes, &error));
  EXPECT_EQ(error, static_cast<DWORD>(ERROR_OPERATION_ABORTED));
  EXPECT_FALSE(theirs.result(port_, &bytes, &error, 0));
  EXPECT_EQ(error, static_cast<DWORD>(ERROR_IO_INCOMPLETE)) << "the other thread's request is still pending";
  auto sent = post_async(21);
  EXPECT_TRUE(theirs.result(port_, &bytes, &error)) << error;
  EXPECT_TRUE(matches_pattern(theirs.data(), 40, 21));
  EXPECT_CODE(sent->wait_code(), STATUS_SUCCESS);
}

TEST_F(Overlapped, CloseHandleAbortsOutstandingRequestsThroughEventAndPort) {
  HANDLE iocp = CreateIoCompletionPort(port_, nullptr, 9, 0);
  ASSERT_NE(iocp, nullptr);
  Request a, b;
  ASSERT_CODE(a.issue(port_), kPending);
  ASSERT_CODE(b.issue(port_), kPending);
  ASSERT_TRUE(CloseHandle(port_));
  const HANDLE closed = port_;
  port_ = nullptr;
  for (Request* expected : {&a, &b}) {
    DWORD bytes = 0;
    ULONG_PTR key = 0;
    LPOVERLAPPED overlapped = nullptr;
    EXPECT_FALSE(GetQueuedCompletionStatus(iocp, &bytes, &key, &overlapped, kLong));
    EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_OPERATION_ABORTED));
    EXPECT_EQ(overlapped, &expected->overlapped) << "a failed request's packet, not a timeout";
    EXPECT_EQ(key, 9u);
    DWORD error = 0;
    EXPECT_FALSE(expected->result(closed, &bytes, &error)) << "readable after the handle is gone";
    EXPECT_EQ(error, static_cast<DWORD>(ERROR_OPERATION_ABORTED));
  }
  EXPECT_CODE(FilterGetMessage(closed, a.header(), 64, &a.overlapped),
              HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE));
  CloseHandle(iocp);
}

TEST_F(Overlapped, FilterGoingAwayEndsRequestsWithTheErrorOfTheSynchronousCall) {
  Request a, b;
  ASSERT_CODE(a.issue(port_), kPending);
  ASSERT_CODE(b.issue(port_), kPending);
  filter_.close_client_port(0);
  for (Request* request : {&a, &b}) {
    DWORD bytes = 0, error = 0;
    EXPECT_FALSE(request->result(port_, &bytes, &error));
    EXPECT_EQ(error, static_cast<DWORD>(ERROR_INVALID_HANDLE)) << "as the classic scanner expects";
    EXPECT_EQ(static_cast<NTSTATUS>(request->overlapped.Internal), STATUS_PORT_DISCONNECTED);
  }
  Request late;
  EXPECT_CODE(late.issue(port_), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE))
      << "fails at once, like the sync call";
  EXPECT_CODE(FilterGetMessage(port_, late.header(), 64, nullptr), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE));
}

TEST_F(Overlapped, CutMessageIsMoreDataWithTheHeaderIntactAndStillAnswerable) {
  Request small(8);
  ASSERT_CODE(small.issue(port_), kPending);
  auto sent = send_async(31, 100, 4);
  DWORD bytes = 0, error = 0;
  EXPECT_FALSE(small.result(port_, &bytes, &error));
  EXPECT_EQ(error, static_cast<DWORD>(ERROR_MORE_DATA));
  EXPECT_EQ(bytes, sizeof(FILTER_MESSAGE_HEADER) + 8);
  EXPECT_EQ(static_cast<NTSTATUS>(small.overlapped.Internal), STATUS_BUFFER_OVERFLOW);
  EXPECT_EQ(small.header()->ReplyLength, sizeof(FILTER_REPLY_HEADER) + 4);
  EXPECT_TRUE(matches_pattern(small.data(), 8, 31));
  const std::vector<uint8_t> answer = pattern(4, 1031);
  EXPECT_CODE(reply_message(port_, small.header()->MessageId, answer.data(), answer.size()), S_OK);
  EXPECT_CODE(sent->wait_code(), STATUS_SUCCESS);
}

TEST_F(Overlapped, GetOverlappedResultWithoutAnEventWaitsOnThePortHandle) {
  Request request(256, false);
  ASSERT_CODE(request.issue(port_), kPending);
  EXPECT_EQ(WaitForSingleObject(port_, 0), static_cast<DWORD>(WAIT_TIMEOUT)) << "unsignalled while it runs";
  auto sent = post_async(41);
  DWORD bytes = 0;
  ASSERT_TRUE(GetOverlappedResult(port_, &request.overlapped, &bytes, TRUE)) << GetLastError();
  EXPECT_EQ(bytes, sizeof(FILTER_MESSAGE_HEADER) + 40);
  EXPECT_TRUE(matches_pattern(request.data(), 40, 41));
  EXPECT_EQ(WaitForSingleObject(port_, 0), WAIT_OBJECT_0) << "the handle is signalled by the completion";
  EXPECT_CODE(sent->wait_code(), STATUS_SUCCESS);
}

TEST_F(Overlapped, ArgumentsAreCheckedBeforeAnythingIsQueued) {
  Request request;
  EXPECT_CODE(
      FilterGetMessage(port_, request.header(), sizeof(FILTER_MESSAGE_HEADER) - 1, &request.overlapped),
      E_INVALIDARG);
  EXPECT_CODE(FilterGetMessage(port_, nullptr, 64, &request.overlapped), E_INVALIDARG);
  OVERLAPPED bad_event{};
  bad_event.hEvent = port_;  // a handle, but no event
  EXPECT_CODE(FilterGetMessage(port_, request.header(), 64, &bad_event),
              HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE));
  EXPECT_FALSE(CancelIoEx(port_, nullptr)) << "nothing was queued";
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_NOT_FOUND));
}

TEST_F(Overlapped, SyncHandleIgnoresTheOverlapped) {
  filter_.unregister();
  CloseHandle(port_);
  port_ = nullptr;
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  HANDLE sync_port = nullptr;
  ASSERT_CODE(
      FilterConnectCommunicationPort(kPortName, FLT_PORT_FLAG_SYNC_HANDLE, nullptr, 0, nullptr, &sync_port),
      S_OK);
  ASSERT_TRUE(filter.wait_connections(1));
  AsyncCall sent(
      [&]() -> int64_t {
        std::vector<uint8_t> message = pattern(40, 51);
        LARGE_INTEGER timeout = relative_timeout(kWaitTimeout);
        return FltSendMessage(filter.handle(), filter.client_port(0), message.data(), 40, nullptr, nullptr,
                              &timeout);
      },
      [&] { filter.unregister(); });
  Request request;
  EXPECT_CODE(request.issue(sync_port), S_OK) << "completed before it returned";
  EXPECT_TRUE(matches_pattern(request.data(), 40, 51));
  EXPECT_CODE(sent.wait_code(), STATUS_SUCCESS);
  CloseHandle(sync_port);
}

// The classic scanner's shape: worker threads (CreateThread) on a completion port, each message
// answered from whichever worker took it, each request re-issued after its reply.
struct Pool {
  HANDLE port;
  HANDLE iocp;
  std::vector<std::unique_ptr<Request>> requests;
  std::atomic<int> replied{0};
  std::atomic<int> failures{0};
  std::mutex mutex;
  std::set<DWORD> replying_threads;
};

DWORD WINAPI scanner_worker(LPVOID parameter) {
  auto* pool = static_cast<Pool*>(parameter);
  for (;;) {
    DWORD bytes = 0;
    ULONG_PTR key = 0;
    LPOVERLAPPED overlapped = nullptr;
    if (!GetQueuedCompletionStatus(pool->iocp, &bytes, &key, &overlapped, INFINITE)) {
      if (overlapped == nullptr) return 0;  // the completion port was closed: done
      continue;                             // a request aborted by CloseHandle on the port
    }
    Request* request = CONTAINING_RECORD(overlapped, Request, overlapped);
    const PFILTER_MESSAGE_HEADER header = request->header();
    uint32_t seed = 0;
    std::memcpy(&seed, request->data(), sizeof seed);
    const std::vector<uint8_t> answer = pattern(12, seed + 1000);
    std::vector<uint8_t> reply(sizeof(FILTER_REPLY_HEADER) + answer.size());
    auto* reply_header = reinterpret_cast<PFILTER_REPLY_HEADER>(reply.data());
    reply_header->Status = 0;
    reply_header->MessageId = header->MessageId;
    std::memcpy(reply.data() + sizeof(FILTER_REPLY_HEADER), answer.data(), answer.size());
    if (FilterReplyMessage(pool->port, reply_header, static_cast<DWORD>(reply.size())) != S_OK)
      ++pool->failures;
    {
      std::lock_guard lock(pool->mutex);
      pool->replying_threads.insert(GetCurrentThreadId());
    }
    ++pool->replied;
    // After the test closed the port, re-issuing finds the handle gone; anything else is a failure.
    const HRESULT again = request->issue(pool->port);
    if (again != kPending && again != HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE)) ++pool->failures;
  }
}

TEST_F(Overlapped, WorkersOnACompletionPortReplyFromAnyThread) {
  constexpr int kThreads = 3;
  constexpr int kRequestsPerThread = 2;
  constexpr int kMessages = 60;
  Pool pool;
  pool.port = port_;
  pool.iocp = CreateIoCompletionPort(port_, nullptr, 0, kThreads);
  ASSERT_NE(pool.iocp, nullptr);
  for (int i = 0; i < kThreads * kRequestsPerThread; ++i) {
    pool.requests.push_back(std::make_unique<Request>(256, false));
    ASSERT_CODE(pool.requests.back()->issue(port_), kPending);
  }
  std::vector<HANDLE> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.push_back(CreateThread(nullptr, 0, scanner_worker, &pool, 0, nullptr));
    ASSERT_NE(threads.back(), nullptr);
  }
  // Two filter threads; message bodies start with their seed so that the worker can answer.
  auto sender = [&](uint32_t first) {
    return std::make_unique<AsyncCall>(
        [&, first]() -> int64_t {
          for (uint32_t seed = first; seed < first + kMessages / 2; ++seed) {
            std::vector<uint8_t> message(32);
            std::memcpy(message.data(), &seed, sizeof seed);
            uint8_t reply[12];
            ULONG reply_length = sizeof reply;
            LARGE_INTEGER timeout = relative_timeout(kWaitTimeout);
            const NTSTATUS status = FltSendMessage(filter_.handle(), filter_.client_port(0), message.data(),
                                                   32, reply, &reply_length, &timeout);
            if (status != STATUS_SUCCESS) return status;
            if (reply_length != sizeof reply || !matches_pattern(reply, sizeof reply, seed + 1000)) return -1;
          }
          return STATUS_SUCCESS;
        },
        [&] { filter_.unregister(); });
  };
  auto a = sender(1);
  auto b = sender(1001);
  EXPECT_CODE(a->wait_code(std::chrono::seconds(30)), STATUS_SUCCESS);
  EXPECT_CODE(b->wait_code(std::chrono::seconds(30)), STATUS_SUCCESS);
  // Shutdown as the scanner does it: the port first (requests abort), then the completion port.
  ASSERT_TRUE(CloseHandle(port_));
  port_ = nullptr;
  ASSERT_TRUE(CloseHandle(pool.iocp));
  EXPECT_EQ(WaitForMultipleObjects(kThreads, threads.data(), TRUE, kLong), WAIT_OBJECT_0);
  for (HANDLE thread : threads) CloseHandle(thread);
  EXPECT_EQ(pool.replied.load(), kMessages);
  EXPECT_EQ(pool.failures.load(), 0);
  std::lock_guard lock(pool.mutex);
  EXPECT_GE(pool.replying_threads.size(), 1u);
}

// A service in another process, completion port and all.
TEST_F(Overlapped, ServiceInAnotherProcess) {
  filter_.unregister();
  CloseHandle(port_);
  port_ = nullptr;
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait());
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    HANDLE iocp = CreateIoCompletionPort(port, nullptr, 3, 1);
    CHILD_CHECK(iocp != nullptr);
    Request request(256, false);
    CHILD_CHECK_EQ(request.issue(port), kPending);
    DWORD bytes = 0;
    ULONG_PTR key = 0;
    LPOVERLAPPED overlapped = nullptr;
    CHILD_CHECK(GetQueuedCompletionStatus(iocp, &bytes, &key, &overlapped, kLong));
    CHILD_CHECK(overlapped == &request.overlapped);
    CHILD_CHECK_EQ(key, 3u);
    CHILD_CHECK(matches_pattern(request.data(), 50, 61));
    const std::vector<uint8_t> answer = pattern(8, 1061);
    CHILD_CHECK_EQ(reply_message(port, request.header()->MessageId, answer.data(), answer.size()), S_OK);
    CHILD_CHECK(CloseHandle(port));
    CHILD_CHECK(CloseHandle(iocp));
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  std::vector<uint8_t> message = pattern(50, 61);
  uint8_t reply[8];
  ULONG reply_length = sizeof reply;
  LARGE_INTEGER timeout = relative_timeout(kWaitTimeout);
  EXPECT_CODE(FltSendMessage(filter.handle(), filter.client_port(0), message.data(), 50, reply, &reply_length,
                             &timeout),
              STATUS_SUCCESS);
  EXPECT_TRUE(matches_pattern(reply, sizeof reply, 1061));
  EXPECT_TRUE(ExitsCleanly(service));
}

}  // namespace
}  // namespace fltport::test
