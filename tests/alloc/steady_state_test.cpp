// Neither side of a port allocates per message once warm. A program of its own, because it
// replaces the global operator new to count: the filter side counts in this process, the service
// side in its forked child, each only while the counted phase runs.
#include <fltport/port.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#include "support/process.hpp"
#include "support/runtime_dir.hpp"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<size_t> g_allocations{0};

void* counted_allocation(size_t size) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
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
enum Phase : uint8_t { warm_up = 0, counted = 1, done = 2 };

class SteadyState : public ::testing::TestWithParam<PortTransport> {};

TEST_P(SteadyState, NeitherSideAllocatesPerMessage) {
  ScopedRuntimeDir runtime;
  // Forked before this process has any thread: a child forked while another thread holds a lock
  // (the sanitizers' allocator's, say) would wait on it forever.
  Signal port_ready;
  // The service counts from the first counted message to the `done` one and exits with the count.
  ChildProcess service([&port_ready, transport = GetParam()]() -> int {
    if (!port_ready.wait()) return 101;
    ConnectOptions connect;
    connect.transport = transport;
    auto connection = Connection::connect("\\SteadyState", connect);
    if (!connection) return 100;
    std::atomic<bool> finished{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < kServiceThreads; ++t) {
      threads.emplace_back([&] {
        std::byte buffer[256];
        const std::byte answer[16]{};
        auto message = connection->get_message(buffer);
        while (message && !finished.load()) {
          if (buffer[0] == std::byte{counted}) g_counting.store(true);
          if (buffer[0] == std::byte{done}) {
            g_counting.store(false);
            finished.store(true);
            connection->close();  // wakes the other thread
            break;
          }
          message = connection->reply_and_get(message->id, answer, STATUS_SUCCESS, buffer);
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    return static_cast<int>(std::min<size_t>(g_allocations.load(), 99));
  });

  std::mutex mutex;
  std::condition_variable connected;
  ClientPort client;
  ServerPortOptions options;
  options.name = "\\SteadyState";
  options.transport = GetParam();
  options.on_connect = [&](ClientPort& port, const ConnectRequest&, void*&) {
    std::lock_guard lock(mutex);
    client = std::move(port);
    connected.notify_all();
    return Status(STATUS_SUCCESS);
  };
  auto port = ServerPort::create(std::move(options));
  ASSERT_TRUE(port) << port.status().code();
  port_ready.notify();

  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(connected.wait_for(lock, kWaitTimeout, [&] { return client.is_open(); }));
  }
  ASSERT_EQ(client.transport(), GetParam());

  auto run = [&](Phase phase, int per_thread) {
    std::vector<std::thread> senders;
    std::atomic<int> failures{0};
    for (int t = 0; t < kSenders; ++t) {
      senders.emplace_back([&] {
        std::byte message[64]{};
        message[0] = std::byte{phase};
        std::byte reply[16];
        for (int i = 0; i < per_thread; ++i) {
          if (!client.send(message, reply, Timeout(std::chrono::seconds(5)))) {
            failures.fetch_add(1);
            return;
          }
        }
      });
    }
    for (std::thread& sender : senders) sender.join();
    return failures.load();
  };
  ASSERT_EQ(run(warm_up, kWarmUp / kSenders), 0);
  // Threads are started outside the counted phase: each sender counts from its first message.
  std::vector<std::thread> senders;
  std::atomic<int> failures{0};
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  for (int t = 0; t < kSenders; ++t) {
    senders.emplace_back([&] {
      std::byte message[64]{};
      message[0] = std::byte{counted};
      std::byte reply[16];
      ready.fetch_add(1);
      while (!go.load()) std::this_thread::yield();
      for (int i = 0; i < kCounted / kSenders; ++i) {
        if (!client.send(message, reply, Timeout(std::chrono::seconds(5)))) {
          failures.fetch_add(1);
          return;
        }
      }
    });
  }
  while (ready.load() != kSenders) std::this_thread::yield();
  g_counting.store(true);
  go.store(true);
  for (std::thread& sender : senders) sender.join();
  g_counting.store(false);
  const size_t filter_allocations = g_allocations.load();
  EXPECT_EQ(failures.load(), 0);

  std::byte last[1]{std::byte{done}};
  ASSERT_TRUE(client.post(last, Timeout(std::chrono::seconds(5))).ok());
  const ExitStatus ended = service.wait();
  EXPECT_EQ(filter_allocations, 0u) << "the filter side allocated during " << kCounted << " round trips";
  EXPECT_TRUE(ended.exited_with(0)) << "the service side allocated: " << ended.describe();
}

INSTANTIATE_TEST_SUITE_P(Transports, SteadyState,
                         ::testing::Values(PortTransport::shared_memory, PortTransport::socket),
                         [](const auto& info) {
                           return info.param == PortTransport::shared_memory ? "SharedMemory" : "Socket";
                         });

}  // namespace
}  // namespace fltport::test
