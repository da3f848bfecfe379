// Neither side of a port allocates per message once warm, whichever side sends, through the C++
// API or the C one (fltuser.h), with messages that fit a ring slot and messages that do not. A
// program of its own, because it replaces the global operator new to count: the filter side counts
// in this process, the service side in its forked child, each only while the counted phase runs.
// FLTPORT_ALLOC_TRACE=1 prints a backtrace of each counted allocation, to find where one comes from
// (addr2line -Cfpe <this program> <offsets> names the frames).
#include <fltport/fltuser.h>
#include <fltport/port.hpp>

#include <execinfo.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "support/process.hpp"
#include "support/runtime_dir.hpp"
#include "support/sanitized.hpp"
#include "transport/shm_ring.hpp"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<size_t> g_allocations{0};
const bool g_trace = std::getenv("FLTPORT_ALLOC_TRACE") != nullptr;

void trace_allocation(size_t size) {
  thread_local bool tracing = false;  // backtrace() may allocate the first time
  if (tracing) return;
  tracing = true;
  char line[64];
  const int n = std::snprintf(line, sizeof line, "counted allocation of %zu bytes in pid %d:\n", size,
                              static_cast<int>(::getpid()));
  if (n > 0) (void)!::write(STDERR_FILENO, line, static_cast<size_t>(n));
  void* frames[32];
  ::backtrace_symbols_fd(frames, ::backtrace(frames, 32), STDERR_FILENO);
  tracing = false;
}

void* counted_allocation(size_t size) {
  if (g_counting.load(std::memory_order_relaxed)) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    if (g_trace) trace_allocation(size);
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(size_t size) {
  return counted_allocation(size);
}
void* operator new[](size_t size) {
  return counted_allocation(size);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, size_t) noexcept {
  std::free(p);
}

namespace fltport::test {
namespace {

constexpr int kWarmUp = 3000;
constexpr int kCounted = 2000;
constexpr int kSenders = 4;
constexpr int kServiceThreads = 2;
constexpr size_t kReplySize = 16;
const char* const kPortName = "\\SteadyState";
const wchar_t* const kWidePortName = L"\\SteadyState";

// The first byte of every message says which phase sent it.
enum Phase : uint8_t { warm_up = 0, counted = 1, done = 2 };

// Who sends, and who answers.
enum class Flow : uint8_t {
  to_service,    // ClientPort::send, answered by Connection::reply_and_get
  to_c_service,  // ClientPort::send, answered by FilterGetMessage + FilterReplyMessage
  to_filter,     // Connection::send (FilterSendMessage), answered by MessageNotify
};
constexpr size_t kSmall = 64;
constexpr size_t kLarge = 64 * 1024;  // larger than a ring slot: an overflow datagram on the socket
static_assert(kLarge > transport::kRingSlotPayload && kLarge <= kMaxMessageSize);

// The service's exit code: its count of allocations (at most kMaxReported), or what went wrong.
constexpr int kMaxReported = 99;
constexpr int kNotConnected = 100;
constexpr int kNoPort = 101;
constexpr int kSendFailed = 102;

std::string describe_service(const ExitStatus& ended) {
  if (ended.kind == ExitStatus::Kind::exited) {
    if (ended.value == kNotConnected) return "it could not connect";
    if (ended.value == kNoPort) return "the port was not created in time";
    if (ended.value == kSendFailed) return "a send failed";
    if (ended.value < kMaxReported) return "it allocated " + std::to_string(ended.value) + " times";
    if (ended.value == kMaxReported)
      return "it allocated at least " + std::to_string(kMaxReported) + " times";
  }
  return ended.describe();
}
int service_allocations() {
  return static_cast<int>(std::min<size_t>(g_allocations.load(), kMaxReported));
}

// The answering side counts from the first counted message to the `done` one; true at `done`.
bool answerer_sees(std::byte phase) {
  if (phase == std::byte{counted}) g_counting.store(true);
  if (phase != std::byte{done}) return false;
  g_counting.store(false);
  return true;
}

// The sending side: kSenders threads send kWarmUp messages of `size` bytes, then kCounted more,
// counted here. `send` sends one (each thread has its own message) and says whether that worked.
// Threads are started outside the counted phase: each counts from its first message.
struct Sent {
  int failures = 0;
  size_t allocations = 0;
};
template <class Send>
Sent send_phases(size_t size, const Send& send) {
  std::atomic<int> failures{0};
  auto run = [&](Phase phase, int count) {
    std::vector<std::thread> senders;
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    for (int t = 0; t < kSenders; ++t) {
      senders.emplace_back([&] {
        std::vector<std::byte> message(size);
        message[0] = std::byte{phase};
        ready.fetch_add(1);
        while (!go.load()) std::this_thread::yield();
        for (int i = 0; i < count / kSenders; ++i) {
          if (!send(ConstBytes(message))) {
            failures.fetch_add(1);
            return;
          }
        }
      });
    }
    while (ready.load() != kSenders) std::this_thread::yield();
    if (phase == counted) g_counting.store(true);
    go.store(true);
    for (std::thread& sender : senders) sender.join();
    g_counting.store(false);
  };
  run(warm_up, kWarmUp);
  if (failures.load() == 0) run(counted, kCounted);
  return Sent{failures.load(), g_allocations.load()};
}

// The service answering through the C++ API, on kServiceThreads threads, until `done`.
int answer_with_cpp_api(PortTransport transport, size_t size) {
  ConnectOptions connect;
  connect.transport = transport;
  auto connection = Connection::connect(kPortName, connect);
  if (!connection) return kNotConnected;
  std::atomic<bool> finished{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kServiceThreads; ++t) {
    threads.emplace_back([&] {
      std::vector<std::byte> buffer(size);
      const std::byte answer[kReplySize]{};
      auto message = connection->get_message(buffer);
      while (message && !finished.load()) {
        if (answerer_sees(buffer[0])) {
          finished.store(true);
          connection->close();  // wakes the other thread
          break;
        }
        message = connection->reply_and_get(message->id, answer, STATUS_SUCCESS, buffer);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  return service_allocations();
}

// The same through fltuser.h. The C API has no transport option: FLTPORT_TRANSPORT=socket forces
// the socket in this (child) process.
int answer_with_c_api(PortTransport transport, size_t size) {
  if (transport == PortTransport::socket) ::setenv("FLTPORT_TRANSPORT", "socket", 1);
  HANDLE port = nullptr;
  if (FAILED(FilterConnectCommunicationPort(kWidePortName, 0, nullptr, 0, nullptr, &port)))
    return kNotConnected;
  std::atomic<bool> finished{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kServiceThreads; ++t) {
    threads.emplace_back([&] {
      std::vector<std::byte> buffer(sizeof(FILTER_MESSAGE_HEADER) + size);
      auto* header = reinterpret_cast<FILTER_MESSAGE_HEADER*>(buffer.data());
      struct {
        FILTER_REPLY_HEADER header;
        std::byte data[kReplySize];
      } reply{};
      while (!finished.load()) {
        if (FilterGetMessage(port, header, static_cast<DWORD>(buffer.size()), nullptr) != S_OK) break;
        if (answerer_sees(buffer[sizeof(FILTER_MESSAGE_HEADER)])) {
          finished.store(true);
          CloseHandle(port);  // wakes the other thread
          break;
        }
        reply.header.Status = STATUS_SUCCESS;
        reply.header.MessageId = header->MessageId;
        if (FilterReplyMessage(port, &reply.header, sizeof reply) != S_OK) break;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  return service_allocations();
}

// The service sending (FilterSendMessage in spirit), answered by the filter's MessageNotify.
int send_to_filter(PortTransport transport, size_t size) {
  ConnectOptions connect;
  connect.transport = transport;
  auto connection = Connection::connect(kPortName, connect);
  if (!connection) return kNotConnected;
  auto send = [&](ConstBytes message) {
    std::byte output[kReplySize];
    size_t returned = 0;
    return connection->send(message, output, returned).ok() && returned == kReplySize;
  };
  const Sent sent = send_phases(size, send);
  if (sent.failures != 0) return kSendFailed;
  const std::byte last[1]{std::byte{done}};
  if (!send(last)) return kSendFailed;
  return service_allocations();
}

using Param = std::tuple<Flow, size_t, PortTransport>;

class SteadyState : public ::testing::TestWithParam<Param> {};

TEST_P(SteadyState, NeitherSideAllocatesPerMessage) {
  const auto [flow, size, transport] = GetParam();
  g_allocations.store(0);  // a count (or counting) left by an earlier test, here and in the child
  g_counting.store(false);
  ScopedRuntimeDir runtime;
  // Forked before this process has any thread: a child forked while another thread holds a lock
  // (the sanitizers' allocator's, say) would wait on it forever.
  Signal port_ready;
  ChildProcess service([&port_ready, flow, size, transport]() -> int {
    if (!port_ready.wait()) return kNoPort;
    switch (flow) {
      case Flow::to_service:
        return answer_with_cpp_api(transport, size);
      case Flow::to_c_service:
        return answer_with_c_api(transport, size);
      case Flow::to_filter:
        return send_to_filter(transport, size);
    }
    return kNotConnected;
  });

  std::mutex mutex;
  std::condition_variable connected;
  ClientPort client;
  ServerPortOptions options;
  options.name = kPortName;
  options.transport = transport;
  options.on_connect = [&](ClientPort& port, const ConnectRequest&, void*&) {
    std::lock_guard lock(mutex);
    client = std::move(port);
    connected.notify_all();
    return Status(STATUS_SUCCESS);
  };
  // The filter answering: counted from the first counted message to the `done` one. A connection
  // starts its MessageNotify workers (up to 4) one by one as calls overlap, each start allocating
  // (src/port/server_port.cpp, on_request): warm-up alone did not meet kSenders overlapping calls in
  // about 1 run in 8, so the first warm-up calls wait for one another until kSenders run at once.
  std::atomic<int> overlapping{0};
  options.on_message = [&overlapping](void*, ConstBytes input, MutableBytes output, size_t& returned) {
    if (input.empty()) return Status(STATUS_INVALID_PARAMETER);
    if (input[0] == std::byte{warm_up} && overlapping.load() < kSenders) {
      overlapping.fetch_add(1);
      const auto until = std::chrono::steady_clock::now() + kWaitTimeout;
      while (overlapping.load() < kSenders && std::chrono::steady_clock::now() < until) {
        std::this_thread::yield();
      }
    }
    answerer_sees(input[0]);
    returned = std::min(output.size(), kReplySize);
    std::memset(output.data(), 0, returned);
    return Status(STATUS_SUCCESS);
  };
  auto port = ServerPort::create(std::move(options));
  ASSERT_TRUE(port) << port.status().code();
  port_ready.notify();

  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(connected.wait_for(lock, kWaitTimeout, [&] { return client.is_open(); }));
  }
  ASSERT_EQ(client.transport(), transport);

  size_t filter_allocations = 0;
  if (flow == Flow::to_filter) {
    // The service drives the phases and sends `done` last: once it has exited, MessageNotify has
    // seen every message.
    // The whole run happens inside this wait (5,000 round trips, some of 64 KiB on the socket).
    const ExitStatus ended = service.wait(kSanitized ? 100s : 30s);
    filter_allocations = g_allocations.load();
    EXPECT_TRUE(ended.exited_with(0)) << "service side: " << describe_service(ended);
  } else {
    const Sent sent = send_phases(size, [&](ConstBytes message) {
      std::byte reply[kReplySize];
      return client.send(message, reply, Timeout(std::chrono::seconds(5))).ok();
    });
    EXPECT_EQ(sent.failures, 0);
    filter_allocations = sent.allocations;
    const std::byte last[1]{std::byte{done}};
    ASSERT_TRUE(client.post(last, Timeout(std::chrono::seconds(5))).ok());
    const ExitStatus ended = service.wait();
    EXPECT_TRUE(ended.exited_with(0)) << "service side: " << describe_service(ended);
  }
  EXPECT_EQ(filter_allocations, 0u) << "the filter side allocated during " << kCounted << " messages";
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  const auto [flow, size, transport] = info.param;
  std::string name = flow == Flow::to_service     ? "FilterToService"
                     : flow == Flow::to_c_service ? "FilterToCService"
                                                  : "ServiceToFilter";
  name += size == kSmall ? "_64B" : "_64KiB";
  name += transport == PortTransport::shared_memory ? "_SharedMemory" : "_Socket";
  return name;
}

INSTANTIATE_TEST_SUITE_P(
    Flows, SteadyState,
    ::testing::Combine(::testing::Values(Flow::to_service, Flow::to_c_service, Flow::to_filter),
                       ::testing::Values(kSmall, kLarge),
                       ::testing::Values(PortTransport::shared_memory, PortTransport::socket)),
    param_name);

}  // namespace
}  // namespace fltport::test
