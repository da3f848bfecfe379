// The shared-memory transport of ports (issue 5), with real processes: what both sides settle on
// at connect, data of every size through the ring slots and the socket overflow, full rings (the
// `drain` nudge, late replies), liveness while both sides sleep on the futex (spin budget 0), hostile
// services that break the rings, and the spin budget.
//
// Every wait is bounded: children run under ChildProcess (killed at the end of the test), calls that
// could block run in AsyncCall with an `unblock` action, and every Signal wait has a timeout.
#include <fltport/fltkernel.h>
#include <fltport/fltuser.h>
#include <fltport/port.hpp>

#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "support/c_filter.hpp"
#include "support/scoped_env.hpp"
#include "support/stderr_capture.hpp"
#include "support/process.hpp"
#include "support/ring_bell.hpp"
#include "transport/runtime_dir.hpp"
#include "transport/shm_ring.hpp"
#include "transport/unix_socket.hpp"
#include "wire/frame.hpp"

namespace fltport::test {
namespace {

using namespace std::chrono_literals;
using transport::kFlagOnSocket;
using transport::kRingSlotPayload;
using transport::kRingSlots;
using transport::kRingSlotSize;
using transport::RingDirection;
using wire::FrameHeader;
using wire::FrameType;

const std::string kName = "\\ScannerPort";
// "At once" for a wake-up that the kernel reports (a dead peer, a shut-down socket).
constexpr long long kPromptlyMs = 1000;

// ---- small helpers ----

ConstBytes cbytes(const std::vector<uint8_t>& v) { return std::as_bytes(std::span(v)); }
MutableBytes mbytes(std::vector<uint8_t>& v) { return std::as_writable_bytes(std::span(v)); }
ConstBytes cbytes(const void* data, size_t size) { return {static_cast<const std::byte*>(data), size}; }

template <class T>
NTSTATUS code_of(const Result<T>& result) {
  return result.ok() ? STATUS_SUCCESS : result.status().code();
}

uint64_t checksum(const uint8_t* data, size_t size) {
  uint64_t hash = 0xcbf29ce484222325ull;  // FNV-1a
  for (size_t i = 0; i < size; ++i) hash = (hash ^ data[i]) * 0x100000001b3ull;
  return hash;
}
void put64(std::vector<uint8_t>& bytes, size_t offset, uint64_t value) {
  std::memcpy(bytes.data() + offset, &value, sizeof value);
}
uint64_t get64(const uint8_t* bytes, size_t offset) {
  uint64_t value;
  std::memcpy(&value, bytes + offset, sizeof value);
  return value;
}

// How a transport travels through a Signal.
uint64_t transport_code(PortTransport transport) { return transport == PortTransport::shared_memory ? 1 : 2; }
const char* transport_name(PortTransport transport) {
  return transport == PortTransport::shared_memory ? "SharedMemory" : "Socket";
}

ConnectOptions connect_options(PortTransport transport = PortTransport::shared_memory,
                               std::chrono::nanoseconds spin = kDefaultSpinBudget) {
  ConnectOptions options;
  options.transport = transport;
  options.spin_budget = spin;
  return options;
}

transport::Deadline after(std::chrono::milliseconds delay) { return Timeout::Clock::now() + delay; }

// How long the calling thread has been runnable: on a CPU or waiting for one (schedstat), so that a
// spinner counts in full on a machine another test keeps busy; its CPU time where there is no
// schedstat.
long long thread_runnable_ms() {
  std::ifstream schedstat("/proc/thread-self/schedstat");
  unsigned long long on_cpu_ns = 0, waiting_ns = 0;
  if (schedstat >> on_cpu_ns >> waiting_ns) return static_cast<long long>((on_cpu_ns + waiting_ns) / 1'000'000);
  timespec now{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<long long>(now.tv_sec) * 1000 + now.tv_nsec / 1'000'000;
}

// Pins the calling thread, and the threads it starts meanwhile, to the first CPU it may use.
class ScopedAffinity {
 public:
  ScopedAffinity() {
    CPU_ZERO(&previous_);
    if (::sched_getaffinity(0, sizeof previous_, &previous_) != 0) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &previous_)) {
        CPU_SET(cpu, &one);
        break;
      }
    }
    pinned_ = ::sched_setaffinity(0, sizeof one, &one) == 0;
  }
  ~ScopedAffinity() {
    if (pinned_) ::sched_setaffinity(0, sizeof previous_, &previous_);
  }
  ScopedAffinity(const ScopedAffinity&) = delete;
  ScopedAffinity& operator=(const ScopedAffinity&) = delete;

 private:
  cpu_set_t previous_;
  bool pinned_ = false;
};

// A failure inside a child with a formatted explanation; returns false for `return 1` chains.
template <class... Args>
bool child_fail(const char* file, int line, const char* format, Args... args) {
  char text[512];
  std::snprintf(text, sizeof text, format, args...);
  child_failure(file, line, text);
  return false;
}
#define CHILD_FAIL(...) child_fail(__FILE__, __LINE__, __VA_ARGS__)

// ---- the filter side: accepted connections kept as ClientPorts ----

class ShmFilter {
 public:
  ServerPortOptions options(int max_connections = 1, PortTransport transport = PortTransport::shared_memory,
                            std::chrono::nanoseconds spin = kDefaultSpinBudget) {
    ServerPortOptions options;
    options.name = kName;
    options.max_connections = max_connections;
    options.transport = transport;
    options.spin_budget = spin;
    options.on_connect = [this](ClientPort& client, const ConnectRequest&, void*& cookie) -> Status {
      std::lock_guard lock(mutex_);
      clients_.push_back(std::make_unique<ClientPort>(std::move(client)));
      cookie = reinterpret_cast<void*>(static_cast<uintptr_t>(clients_.size()));
      changed_.notify_all();
      return STATUS_SUCCESS;
    };
    options.on_disconnect = [this](void*) {
      std::lock_guard lock(mutex_);
      ++disconnects_;
      changed_.notify_all();
    };
    return options;
  }
  bool wait_connections(size_t n, std::chrono::milliseconds timeout = kWaitTimeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return clients_.size() >= n; });
  }
  bool wait_disconnects(size_t n, std::chrono::milliseconds timeout = kWaitTimeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return disconnects_ >= n; });
  }
  ClientPort& client(size_t i) {
    std::lock_guard lock(mutex_);
    return *clients_.at(i);
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::unique_ptr<ClientPort>> clients_;
  size_t disconnects_ = 0;
};

// A message smaller than a slot and one larger than a slot, echoed unchanged.
::testing::AssertionResult echo_round_trip(ClientPort& client, uint32_t seed) {
  for (const size_t size : {size_t{10}, size_t{3000}}) {
    const std::vector<uint8_t> message = pattern(size, seed);
    std::vector<uint8_t> reply(size);
    auto sent = client.send(cbytes(message), mbytes(reply), Timeout(kWaitTimeout));
    if (!sent.ok()) {
      return ::testing::AssertionFailure() << "send of " << size << " bytes: " << sent.status().to_string();
    }
    if (sent->length != size || reply != message) {
      return ::testing::AssertionFailure() << "the echo of " << size << " bytes differs";
    }
  }
  return ::testing::AssertionSuccess();
}

// A well-behaved service: echoes every message until one that wants no reply ("stop").
int echo_service(Signal& port_ready, Signal& connected, const ConnectOptions& options = {}) {
  CHILD_CHECK(port_ready.wait(15s));
  auto connection = Connection::connect(kName, options);
  CHILD_CHECK(connection.ok());
  connected.notify(transport_code(connection->transport()));
  std::vector<uint8_t> buffer(kMaxMessageSize);
  for (;;) {
    auto info = connection->get_message(mbytes(buffer), Timeout(30s));
    CHILD_CHECK(info.ok());
    if (!info->wants_reply) return 0;
    CHILD_CHECK(connection->reply(info->id, cbytes(buffer).first(info->length)).ok());
  }
}

Status post_stop(ClientPort& client) {
  const uint8_t stop = 0;
  return client.post(cbytes(&stop, 1), Timeout(kWaitTimeout));
}

// ---- the rings driven by hand (internal transport helpers): hostile or hand-written peers ----

FrameHeader header_of(const std::vector<std::byte>& frame) {
  FrameHeader header;
  if (frame.size() >= wire::kHeaderSize) std::memcpy(&header, frame.data(), wire::kHeaderSize);
  return header;
}

// Our writing end of one ring.
class RawWriter {
 public:
  void attach(transport::RingControl* control, std::byte* slots) {
    control_ = control;
    slots_ = slots;
  }
  uint32_t head() const { return head_; }
  // Records the peer has not taken yet.
  uint32_t unread() const { return head_ - control_->tail.load(std::memory_order_acquire); }
  // Writes a record into the next slot and publishes it. The payload is copied as far as a slot
  // holds; the header is written as given (its length may lie). `always_ring`: wake the peer's
  // reader even when it does not say it sleeps (RingWriter rings only then).
  void publish(const FrameHeader& header, ConstBytes payload = {}, bool always_ring = true) {
    std::byte* slot = slots_ + (head_ % kRingSlots) * kRingSlotSize;
    std::memcpy(slot, &header, wire::kHeaderSize);
    if (!payload.empty()) {
      std::memcpy(slot + wire::kHeaderSize, payload.data(), std::min(payload.size(), kRingSlotPayload));
    }
    set_head(head_ + 1, always_ring);
  }
  void set_head(uint32_t head, bool always_ring = true) {
    head_ = head;
    control_->head.store(head_, std::memory_order_seq_cst);
    if (always_ring || control_->consumer_sleeping.load(std::memory_order_seq_cst) != 0) {
      test::ring_bell_as_peer(control_->data_bell);
    }
  }

 private:
  transport::RingControl* control_ = nullptr;
  std::byte* slots_ = nullptr;
  uint32_t head_ = 0;
};

// Our reading end of one ring; a record that announces a datagram is read from `overflow_fd`.
class RawReader {
 public:
  void attach(transport::RingControl* control, const std::byte* slots, int overflow_fd) {
    control_ = control;
    slots_ = slots;
    overflow_fd_ = overflow_fd;
  }
  std::optional<std::vector<std::byte>> try_next() {
    if (control_->head.load(std::memory_order_acquire) == tail_) return std::nullopt;
    const std::byte* slot = slots_ + (tail_ % kRingSlots) * kRingSlotSize;
    FrameHeader header;
    std::memcpy(&header, slot, wire::kHeaderSize);
    std::vector<std::byte> frame;
    if ((header.flags & kFlagOnSocket) != 0) {
      frame.resize(wire::kMaxFrameSize);
      auto received = transport::receive_frame(overflow_fd_, frame, after(kWaitTimeout));
      frame.resize(received ? *received : 0);
    } else {
      const size_t length = wire::kHeaderSize + std::min<size_t>(header.payload_length, kRingSlotPayload);
      frame.assign(slot, slot + length);
    }
    ++tail_;
    control_->tail.store(tail_, std::memory_order_seq_cst);
    if (control_->producer_sleeping.load(std::memory_order_seq_cst) != 0) test::ring_bell_as_peer(control_->room_bell);
    return frame;
  }
  // Polls (we never say we sleep, so the peer never needs to ring for us).
  std::optional<std::vector<std::byte>> next(std::chrono::milliseconds timeout) {
    const auto deadline = after(timeout);
    for (;;) {
      if (auto frame = try_next()) return frame;
      if (Timeout::Clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(1ms);
    }
  }

 private:
  transport::RingControl* control_ = nullptr;
  const std::byte* slots_ = nullptr;
  int overflow_fd_ = -1;
  uint32_t tail_ = 0;
};

// True when the peer ends the stream on `fd` within the timeout (frames before that are dropped).
bool closed_by_peer_within(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = after(timeout);
  std::vector<std::byte> buffer(wire::kMaxFrameSize + 1);
  for (;;) {
    auto received = transport::receive_frame(fd, buffer, deadline);
    if (received) continue;
    if (received.status() == Status(STATUS_PORT_DISCONNECTED)) return true;
    if (received.status() == Status(STATUS_TIMEOUT)) return false;
  }
}

// A service that connects with a hello asking for shared memory (and passing a reply channel),
// maps the region the filter hands over, and then does with the rings whatever a test wants.
class RawShmService {
 public:
  Status connect(const std::string& path) {
    auto control = transport::connect_to(path);
    if (!control) return control.status();
    control_ = std::move(*control);
    auto pair = transport::socket_pair();
    if (!pair) return pair.status();
    reply_ = std::move(pair->first);
    UniqueFd filter_end = std::move(pair->second);
    const FrameHeader hello =
        wire::make_header(FrameType::hello, wire::kProtocolVersion, 0, 0, wire::kOptionSharedMemory);
    if (Status sent = transport::send_frame(control_.fd(), hello, {}, after(kWaitTimeout), filter_end.fd());
        !sent.ok()) {
      return sent;
    }
    filter_end = UniqueFd();
    std::vector<std::byte> answer(wire::kHeaderSize);
    UniqueFd passed;
    auto received = transport::receive_frame(control_.fd(), answer, after(kWaitTimeout), &passed);
    if (!received) return received.status();
    const auto decoded = wire::decode(std::span(answer).first(*received), wire::Direction::to_service);
    if (!decoded.ok() || decoded.frame.type() != FrameType::welcome) return STATUS_DATA_ERROR;
    if (decoded.frame.header.status != STATUS_SUCCESS) return decoded.frame.header.status;
    if (decoded.frame.header.aux != wire::kWelcomeSharedMemory || !passed.valid()) return STATUS_NOT_SUPPORTED;
    auto region = transport::SharedRegion::map(std::move(passed));
    if (!region) return region.status();
    region_ = std::move(*region);
    writer_.attach(&to_filter(), region_.slots(RingDirection::to_filter));
    reader_.attach(&to_service(), region_.slots(RingDirection::to_service), control_.fd());
    return STATUS_SUCCESS;
  }

  transport::RingControl& to_filter() const { return region_.control(RingDirection::to_filter); }
  transport::RingControl& to_service() const { return region_.control(RingDirection::to_service); }
  uint32_t head() const { return writer_.head(); }
  uint32_t unread_by_filter() const { return writer_.unread(); }
  void publish(const FrameHeader& header, ConstBytes payload = {}, bool always_ring = true) {
    writer_.publish(header, payload, always_ring);
  }
  void set_head(uint32_t head) { writer_.set_head(head); }
  static FrameHeader credit() { return wire::make_header(FrameType::get, 0, 0, 0, 1); }
  bool send_drain() {
    return transport::send_frame(control_.fd(), wire::make_header(FrameType::drain, 0, 0), {}, after(kWaitTimeout))
        .ok();
  }
  // One credit on the ring, and a `drain` so that the filter reads it even if no sender waits.
  bool give_credit() {
    publish(credit());
    return send_drain();
  }
  // The reply channel, where the filter looks for frames announced by kFlagOnSocket.
  bool send_raw_datagram(const void* bytes, size_t size) {
    return ::send(reply_.fd(), bytes, size, MSG_NOSIGNAL) == static_cast<ssize_t>(size);
  }
  bool send_frame_to_filter(const FrameHeader& header, ConstBytes payload = {}) {
    return transport::send_frame(reply_.fd(), header, payload, after(kWaitTimeout)).ok();
  }
  std::optional<std::vector<std::byte>> try_next_from_filter() { return reader_.try_next(); }
  std::optional<std::vector<std::byte>> next_from_filter(std::chrono::milliseconds timeout) {
    return reader_.next(timeout);
  }
  static FrameHeader header_of(const std::vector<std::byte>& frame) { return test::header_of(frame); }
  bool closed_by_filter_within(std::chrono::milliseconds timeout) {
    return closed_by_peer_within(control_.fd(), timeout);
  }

 private:
  UniqueFd control_;
  UniqueFd reply_;
  transport::SharedRegion region_;
  RawWriter writer_;  // the ring to the filter
  RawReader reader_;  // the ring to the service
};

// A filter that listens where the port's socket would be, answers one service's hello with the
// rings, and then moves records as a test wants (the service side is then the real library).
class RawShmFilter {
 public:
  bool listen(const std::string& path) {
    auto listener = transport::listen_at(path);
    if (!listener) return false;
    listener_ = std::move(*listener);
    return true;
  }
  Status accept(std::chrono::milliseconds timeout) {
    pollfd ready{listener_.fd(), POLLIN, 0};
    if (::poll(&ready, 1, static_cast<int>(timeout.count())) <= 0) return STATUS_TIMEOUT;
    auto accepted = transport::accept_from(listener_.fd());
    if (!accepted) return accepted.status();
    control_ = std::move(*accepted);
    std::vector<std::byte> buffer(wire::kHeaderSize + kMaxConnectionContextSize);
    UniqueFd passed;
    auto received = transport::receive_frame(control_.fd(), buffer, after(timeout), &passed);
    if (!received) return received.status();
    const auto decoded = wire::decode(std::span(buffer).first(*received), wire::Direction::to_filter);
    if (!decoded.ok() || decoded.frame.type() != FrameType::hello) return STATUS_DATA_ERROR;
    if ((decoded.frame.header.aux & wire::kOptionSharedMemory) == 0 || !passed.valid()) return STATUS_NOT_SUPPORTED;
    reply_ = std::move(passed);
    auto region = transport::SharedRegion::create();
    if (!region) return region.status();
    region_ = std::move(*region);
    writer_.attach(&region_.control(RingDirection::to_service), region_.slots(RingDirection::to_service));
    reader_.attach(&region_.control(RingDirection::to_filter), region_.slots(RingDirection::to_filter), reply_.fd());
    const auto welcome = wire::make_header(FrameType::welcome, 0, 0, STATUS_SUCCESS, wire::kWelcomeSharedMemory);
    return transport::send_frame(control_.fd(), welcome, {}, after(timeout), region_.fd());
  }
  transport::RingControl& to_service() const { return region_.control(RingDirection::to_service); }
  uint32_t unread_by_service() const { return writer_.unread(); }
  void publish(const FrameHeader& header, ConstBytes payload = {}) { writer_.publish(header, payload); }
  std::optional<std::vector<std::byte>> try_next_from_service() { return reader_.try_next(); }
  std::optional<std::vector<std::byte>> next_from_service(std::chrono::milliseconds timeout) {
    return reader_.next(timeout);
  }
  // A datagram on the control socket, where the service looks for frames announced by kFlagOnSocket.
  bool send_frame_to_service(const FrameHeader& header, ConstBytes payload = {}) {
    return transport::send_frame(control_.fd(), header, payload, after(kWaitTimeout)).ok();
  }
  static FrameHeader header_of(const std::vector<std::byte>& frame) { return test::header_of(frame); }

 private:
  UniqueFd listener_;
  UniqueFd control_;
  UniqueFd reply_;
  transport::SharedRegion region_;
  RawWriter writer_;  // the ring to the service
  RawReader reader_;  // the ring to the filter
};

std::string port_socket_path(const ScopedRuntimeDir& dir) {
  return transport::socket_path(dir.path(), kNormalizedPortName);
}

// Every test starts from the library's defaults, whatever the environment of the test run says:
// these tests are about the shared-memory path, so a run with FLTPORT_TRANSPORT=socket (the
// `socket.` copies of the suite) still exercises it here; the environment variables themselves are
// tested below, set in one process at a time.
class SharedMemoryTest : public PortTest {
 protected:
  ScopedEnv transport_env_{"FLTPORT_TRANSPORT", nullptr};
  ScopedEnv spin_env_{"FLTPORT_SPIN_NS", nullptr};
};

// =================================================================================================
// 1. Negotiation
// =================================================================================================

struct NegotiationCase {
  const char* name;
  PortTransport port;                // ServerPortOptions::transport
  PortTransport service;             // ConnectOptions::transport
  const char* service_env;           // FLTPORT_TRANSPORT in the service process
  const char* filter_env;            // FLTPORT_TRANSPORT in the filter process
  PortTransport expected;
};
void PrintTo(const NegotiationCase& c, std::ostream* os) { *os << c.name; }

constexpr auto kShm = PortTransport::shared_memory;
constexpr auto kSocket = PortTransport::socket;

const NegotiationCase kNegotiationCases[] = {
    {"Defaults", kShm, kShm, nullptr, nullptr, kShm},
    {"ServiceAsksForTheSocket", kShm, kSocket, nullptr, nullptr, kSocket},
    {"PortOffersOnlyTheSocket", kSocket, kShm, nullptr, nullptr, kSocket},
    {"ServiceEnvironmentForcesTheSocket", kShm, kShm, "socket", nullptr, kSocket},
    {"FilterEnvironmentForcesTheSocket", kShm, kShm, nullptr, "socket", kSocket},
};

class SharedMemoryNegotiation : public SharedMemoryTest, public ::testing::WithParamInterface<NegotiationCase> {};

TEST_P(SharedMemoryNegotiation, BothSidesReportWhatTheySettledOnAndTheConnectionWorks) {
  const NegotiationCase& c = GetParam();
  Signal port_ready, results;
  ChildProcess service([&] {
    if (c.service_env != nullptr) ::setenv("FLTPORT_TRANSPORT", c.service_env, 1);
    CHILD_CHECK(port_ready.wait(15s));
    auto connection = Connection::connect(kName, connect_options(c.service));
    CHILD_CHECK(connection.ok());
    results.notify(transport_code(connection->transport()));
    std::vector<uint8_t> buffer(kMaxMessageSize);
    for (int i = 0; i < 2; ++i) {
      auto info = connection->get_message(mbytes(buffer), Timeout(kWaitTimeout));
      CHILD_CHECK(info.ok());
      CHILD_CHECK(connection->reply(info->id, cbytes(buffer).first(info->length)).ok());
    }
    std::vector<uint8_t> output(3000);
    size_t returned = 0;
    notify_code(results, connection->send(cbytes(pattern(3000, 7)), mbytes(output), returned).code());
    results.notify(returned == 3000 && output == pattern(3000, 8) ? 1 : 0);
    return 0;
  });
  std::optional<ScopedEnv> filter_env;
  if (c.filter_env != nullptr) filter_env.emplace("FLTPORT_TRANSPORT", c.filter_env);
  ShmFilter filter;
  ServerPortOptions options = filter.options(1, c.port);
  options.on_message = [](void*, ConstBytes input, MutableBytes output, size_t& returned) -> Status {
    const std::vector<uint8_t> expected = pattern(3000, 7);
    if (input.size() != expected.size() || std::memcmp(input.data(), expected.data(), expected.size()) != 0) {
      return STATUS_DATA_ERROR;
    }
    const std::vector<uint8_t> answer = pattern(output.size(), 8);
    std::memcpy(output.data(), answer.data(), answer.size());
    returned = answer.size();
    return STATUS_SUCCESS;
  };
  auto port = ServerPort::create(std::move(options));
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  port_ready.notify();
  EXPECT_EQ(wait_number(results), static_cast<long long>(transport_code(c.expected))) << "Connection::transport()";
  ASSERT_TRUE(filter.wait_connections(1));
  EXPECT_EQ(filter.client(0).transport(), c.expected) << "ClientPort::transport()";
  EXPECT_TRUE(echo_round_trip(filter.client(0), 3));
  EXPECT_CODE(wait_code(results), STATUS_SUCCESS) << "Connection::send";
  EXPECT_EQ(wait_number(results), 1) << "the response of Connection::send";
  EXPECT_TRUE(ExitsCleanly(service));
}

INSTANTIATE_TEST_SUITE_P(SharedMemory, SharedMemoryNegotiation, ::testing::ValuesIn(kNegotiationCases),
                         [](const auto& info) { return std::string(info.param.name); });

// =================================================================================================
// 2. Data
// =================================================================================================

class SharedMemoryData : public SharedMemoryTest, public ::testing::WithParamInterface<PortTransport> {};

std::string transport_param_name(const ::testing::TestParamInfo<PortTransport>& info) {
  return transport_name(info.param);
}

// Around the slot size (kRingSlotPayload is the largest payload a ring slot holds) and up to the
// largest message.
constexpr size_t kSizes[] = {0, 1, kRingSlotPayload, kRingSlotPayload + 1, 64 * 1024, kMaxMessageSize};
// Distinct contents per size and per role.
uint32_t seed_for(size_t size, uint32_t role) { return static_cast<uint32_t>(size) * 16 + role; }

// The message the service took is exactly `size` bytes of pattern(size, seed), wanting a reply of size bytes.
bool is_message(const Result<MessageInfo>& info, const std::vector<uint8_t>& buffer, size_t size, uint32_t seed) {
  if (!info.ok()) return CHILD_FAIL("size %zu: get_message: 0x%08X", size, static_cast<unsigned>(info.status().code()));
  if (!info->wants_reply || info->reply_capacity != size || info->length != size || info->full_length != size) {
    return CHILD_FAIL("size %zu: wants_reply %d, reply_capacity %zu, length %zu, full_length %zu", size,
                      info->wants_reply ? 1 : 0, info->reply_capacity, info->length, info->full_length);
  }
  if (!matches_pattern(buffer.data(), size, seed)) return CHILD_FAIL("size %zu: the message's bytes differ", size);
  return true;
}

TEST_P(SharedMemoryData, EverySizeTravelsBothWaysByteForByte) {
  const PortTransport transport = GetParam();
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait(15s));
    auto connection = Connection::connect(kName, connect_options(transport));
    CHILD_CHECK(connection.ok());
    results.notify(transport_code(connection->transport()));
    std::vector<uint8_t> buffer(kMaxMessageSize);
    // Pass 1: get_message and reply, then a FilterSendMessage request and its response.
    for (const size_t size : kSizes) {
      auto info = connection->get_message(mbytes(buffer), Timeout(kWaitTimeout));
      if (!is_message(info, buffer, size, seed_for(size, 1))) return 1;
      const Status replied = connection->reply(info->id, cbytes(pattern(size, seed_for(size, 2))));
      if (!replied.ok()) {
        CHILD_FAIL("size %zu: reply: 0x%08X", size, static_cast<unsigned>(replied.code()));
        return 1;
      }
      std::vector<uint8_t> output(size);
      size_t returned = 0;
      const Status sent = connection->send(cbytes(pattern(size, seed_for(size, 3))), mbytes(output), returned);
      if (!sent.ok() || returned != size || !matches_pattern(output.data(), size, seed_for(size, 4))) {
        CHILD_FAIL("size %zu: send: 0x%08X, returned %zu", size, static_cast<unsigned>(sent.code()), returned);
        return 1;
      }
    }
    // Pass 2: reply_and_get from one message to the next.
    auto info = connection->get_message(mbytes(buffer), Timeout(kWaitTimeout));
    for (size_t i = 0; i < std::size(kSizes); ++i) {
      const size_t size = kSizes[i];
      if (!is_message(info, buffer, size, seed_for(size, 5))) return 1;
      const auto answer = pattern(size, seed_for(size, 6));
      if (i + 1 < std::size(kSizes)) {
        info = connection->reply_and_get(info->id, cbytes(answer), STATUS_SUCCESS, mbytes(buffer), Timeout(kWaitTimeout));
      } else {
        CHILD_CHECK(connection->reply(info->id, cbytes(answer)).ok());
      }
    }
    results.notify(1);
    return 0;
  });
  ShmFilter filter;
  ServerPortOptions options = filter.options(1, transport);
  std::atomic<int> bad_requests{0};
  options.on_message = [&](void*, ConstBytes input, MutableBytes output, size_t& returned) -> Status {
    const size_t size = input.size();
    if (output.size() != size ||
        !matches_pattern(reinterpret_cast<const uint8_t*>(input.data()), size, seed_for(size, 3))) {
      ++bad_requests;
      return STATUS_DATA_ERROR;
    }
    const auto answer = pattern(size, seed_for(size, 4));
    if (size != 0) std::memcpy(output.data(), answer.data(), size);
    returned = size;
    return STATUS_SUCCESS;
  };
  auto port = ServerPort::create(std::move(options));
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  port_ready.notify();
  ASSERT_EQ(wait_number(results), static_cast<long long>(transport_code(transport)));
  ASSERT_TRUE(filter.wait_connections(1));
  ClientPort& client = filter.client(0);
  ASSERT_EQ(client.transport(), transport);
  for (const uint32_t pass : {1u, 2u}) {
    for (const size_t size : kSizes) {
      const uint32_t message_seed = seed_for(size, pass == 1 ? 1 : 5);
      const uint32_t reply_seed = seed_for(size, pass == 1 ? 2 : 6);
      std::vector<uint8_t> reply(size);
      auto sent = client.send(cbytes(pattern(size, message_seed)), mbytes(reply), Timeout(kWaitTimeout));
      ASSERT_TRUE(sent.ok()) << "pass " << pass << ", size " << size << ": " << sent.status().to_string();
      EXPECT_EQ(sent->length, size) << "pass " << pass;
      EXPECT_EQ(sent->full_length, size) << "pass " << pass;
      EXPECT_CODE(sent->reply_status, STATUS_SUCCESS);
      EXPECT_TRUE(matches_pattern(reply.data(), size, reply_seed)) << "pass " << pass << ", reply of " << size << " bytes";
    }
  }
  EXPECT_EQ(wait_number(results), 1);
  EXPECT_EQ(bad_requests.load(), 0) << "requests whose bytes differ";
  EXPECT_TRUE(ExitsCleanly(service));
}

// The sizes of a mixed sequence: in a slot, exactly a slot, just over, the largest.
size_t mixed_size(uint64_t seq) {
  constexpr size_t kMixed[] = {3, kRingSlotPayload + 1, 0, 17, kMaxMessageSize, kRingSlotPayload, 1, 40000, 200,
                               64 * 1024, 9, 2100, 8, 5000};
  return kMixed[seq % std::size(kMixed)];
}

// One filter thread posts small and large messages. Before each batch the service leaves
// kBatch - 1 credits with the filter (getters that time out), so that a whole batch is in flight at
// once, records and datagrams interleaved (more than a ring holds); one service thread then takes
// them and finds them in the order they were sent.
TEST_P(SharedMemoryData, MixedSmallAndLargeMessagesFromOneThreadArriveInOrder) {
  constexpr int kRounds = 4;
  constexpr int kBatch = 100;
  const PortTransport transport = GetParam();
  Signal port_ready, credits_left, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait(15s));
    auto connection = Connection::connect(kName, connect_options(transport));
    CHILD_CHECK(connection.ok());
    std::vector<uint8_t> buffer(kMaxMessageSize);
    uint64_t seq = 0;
    for (int round = 0; round < kRounds; ++round) {
      std::atomic<int> unexpected{0};
      std::vector<std::thread> getters;
      for (int i = 0; i < kBatch - 1; ++i) {
        getters.emplace_back([&] {
          std::vector<uint8_t> small(16);
          auto info = connection->get_message(mbytes(small), Timeout(50ms));
          if (info.ok() || info.status() != Status(STATUS_TIMEOUT)) ++unexpected;
        });
      }
      for (std::thread& getter : getters) getter.join();
      CHILD_CHECK_EQ(unexpected.load(), 0);
      credits_left.notify(static_cast<uint64_t>(round));
      for (int i = 0; i < kBatch; ++i, ++seq) {
        auto info = connection->get_message(mbytes(buffer), Timeout(kWaitTimeout));
        const size_t size = mixed_size(seq);
        if (!info.ok()) {
          CHILD_FAIL("message %llu: 0x%08X", static_cast<unsigned long long>(seq),
                     static_cast<unsigned>(info.status().code()));
          return 1;
        }
        if (info->wants_reply || info->full_length != size || info->length != size ||
            !matches_pattern(buffer.data(), size, static_cast<uint32_t>(seq + 1))) {
          CHILD_FAIL("message %llu: expected %zu bytes of its pattern, got %zu bytes (out of order?)",
                     static_cast<unsigned long long>(seq), size, info->full_length);
          return 1;
        }
      }
    }
    results.notify(seq);
    return 0;
  });
  ShmFilter filter;
  auto port = ServerPort::create(filter.options(1, transport));
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  ClientPort& client = filter.client(0);
  uint64_t seq = 0;
  for (int round = 0; round < kRounds; ++round) {
    ASSERT_EQ(wait_number(credits_left, 15s), round) << "the service did not get ready for round " << round;
    for (int i = 0; i < kBatch; ++i, ++seq) {
      const Status posted = client.post(cbytes(pattern(mixed_size(seq), static_cast<uint32_t>(seq + 1))),
                                        Timeout(kWaitTimeout));
      ASSERT_CODE(posted.code(), STATUS_SUCCESS) << "message " << seq;
    }
  }
  EXPECT_EQ(wait_number(results, 15s), static_cast<long long>(seq)) << "messages the service found in order";
  EXPECT_TRUE(ExitsCleanly(service));
}

// 8 filter threads x 250 round trips, 4 service threads (two with reply + get_message, two with
// reply_and_get). Each reply names its message (a tag the message carries) and carries the
// checksum of the whole message, so a reply handed to the wrong waiter or a damaged message shows.
TEST_P(SharedMemoryData, ManyRoundTripsFromEightFilterThreadsToFourServiceThreadsAllMatch) {
  constexpr int kFilterThreads = 8;
  constexpr int kPerThread = 250;
  constexpr int kServiceThreads = 4;
  const PortTransport transport = GetParam();
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait(15s));
    auto connection = Connection::connect(kName, connect_options(transport));
    CHILD_CHECK(connection.ok());
    std::mutex mutex;
    std::set<uint64_t> ids;
    std::atomic<int> replied{0}, duplicates{0}, broken{0}, failures{0};
    auto serve = [&](bool chained) {
      std::vector<uint8_t> buffer(kMaxMessageSize);
      auto info = connection->get_message(mbytes(buffer), Timeout(30s));
      for (;;) {
        if (!info.ok()) {
          ++failures;
          return;
        }
        if (!info->wants_reply) return;  // stop
        {
          std::lock_guard lock(mutex);
          if (!ids.insert(info->id).second) ++duplicates;
        }
        if (info->length < 16 || get64(buffer.data(), 8) != info->length) ++broken;
        std::vector<uint8_t> answer(24);
        put64(answer, 0, get64(buffer.data(), 0));
        put64(answer, 8, checksum(buffer.data(), info->length));
        put64(answer, 16, info->id);
        ++replied;
        if (chained) {
          info = connection->reply_and_get(info->id, cbytes(answer), STATUS_SUCCESS, mbytes(buffer), Timeout(30s));
        } else {
          if (!connection->reply(info->id, cbytes(answer)).ok()) ++failures;
          info = connection->get_message(mbytes(buffer), Timeout(30s));
        }
      }
    };
    std::vector<std::thread> threads;
    for (int i = 0; i < kServiceThreads; ++i) threads.emplace_back(serve, i % 2 == 1);
    for (std::thread& thread : threads) thread.join();
    results.notify(static_cast<uint64_t>(replied.load()));
    results.notify(static_cast<uint64_t>(duplicates.load()));
    results.notify(static_cast<uint64_t>(broken.load()));
    results.notify(static_cast<uint64_t>(failures.load()));
    return 0;
  });
  ShmFilter filter;
  auto port = ServerPort::create(filter.options(1, transport));
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  ClientPort& client = filter.client(0);
  std::atomic<int> matched{0};
  std::mutex failure_mutex;
  std::string first_failure;
  std::vector<std::thread> senders;
  for (int t = 0; t < kFilterThreads; ++t) {
    senders.emplace_back([&, t] {
      for (int seq = 0; seq < kPerThread; ++seq) {
        size_t size = 16 + static_cast<size_t>((seq * 37 + t * 11) % 400);
        if (seq % 25 == 0) size = 3000 + static_cast<size_t>(seq);
        if (seq % 25 == 1) size = kRingSlotPayload;
        if (seq % 25 == 2) size = kRingSlotPayload + 1;
        const uint64_t tag = (static_cast<uint64_t>(t) << 32) | static_cast<uint64_t>(seq);
        std::vector<uint8_t> message = pattern(size, static_cast<uint32_t>(tag * 7 + 1));
        put64(message, 0, tag);
        put64(message, 8, size);
        std::vector<uint8_t> reply(64);
        auto sent = client.send(cbytes(message), mbytes(reply), Timeout(15s));
        std::string failure;
        if (!sent.ok()) {
          failure = "send: " + sent.status().to_string();
        } else if (sent->length != 24 || get64(reply.data(), 0) != tag) {
          failure = "a reply that names another message";
        } else if (get64(reply.data(), 8) != checksum(message.data(), message.size())) {
          failure = "a reply whose checksum differs from the message's";
        } else {
          ++matched;
          continue;
        }
        std::lock_guard lock(failure_mutex);
        if (first_failure.empty()) {
          first_failure = "thread " + std::to_string(t) + ", message " + std::to_string(seq) + ": " + failure;
        }
        if (!sent.ok()) return;
      }
    });
  }
  for (std::thread& sender : senders) sender.join();
  EXPECT_EQ(matched.load(), kFilterThreads * kPerThread) << first_failure;
  for (int i = 0; i < kServiceThreads; ++i) EXPECT_CODE(post_stop(client).code(), STATUS_SUCCESS);
  EXPECT_EQ(wait_number(results, 30s), kFilterThreads * kPerThread) << "replies the service sent";
  EXPECT_EQ(wait_number(results), 0) << "message ids the service saw twice";
  EXPECT_EQ(wait_number(results), 0) << "messages whose length differs from what they say";
  EXPECT_EQ(wait_number(results), 0) << "failed service calls";
  EXPECT_TRUE(ExitsCleanly(service));
}

INSTANTIATE_TEST_SUITE_P(SharedMemory, SharedMemoryData, ::testing::Values(kShm, kSocket), transport_param_name);

// Service threads take turns at the ring: while one handles a message, another stands by on the
// ring's bell, and the first takes the reading back without waking anyone if it returns before
// the next message. One filter thread sends one message at a time after gaps from none to longer
// than any spin, and now and then a burst comes from eight threads at once, so that a message
// finds the service in every state: its reader spinning, its reader asleep, nobody reading with
// the standby asleep, and several waiting to be handed out. Every message must be answered within
// the send's timeout, and a standby's own timeout must hold.
class SharedMemoryTakingTurns : public SharedMemoryTest,
                                public ::testing::WithParamInterface<std::chrono::nanoseconds> {};

TEST_P(SharedMemoryTakingTurns, MessagesOneAtATimeAndInBurstsAreAllAnsweredByFourServiceThreads) {
  constexpr int kServiceThreads = 4;
  constexpr int kMessages = 1500;
  constexpr int kBurstEvery = 100;
  constexpr int kBurstThreads = 8;
  const auto spin = GetParam();
  Signal port_ready, waited_alone, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait(15s));
    auto connection = Connection::connect(kName, connect_options(kShm, spin));
    CHILD_CHECK(connection.ok());
    CHILD_CHECK(connection->transport() == kShm);
    std::atomic<int> timed_out{0}, waiting_alone{0}, replied{0}, failures{0};
    auto serve = [&] {
      std::vector<uint8_t> buffer(256);
      // Nothing comes yet: each thread's wait ends on time, whether it reads, stands by or sleeps.
      const auto start = std::chrono::steady_clock::now();
      auto info = connection->get_message(mbytes(buffer), Timeout(100ms));
      if (code_of(info) == STATUS_TIMEOUT && std::chrono::steady_clock::now() - start < 5s) ++timed_out;
      ++waiting_alone;
      info = connection->get_message(mbytes(buffer), Timeout(30s));
      while (info.ok() && info->wants_reply) {
        ++replied;
        info = connection->reply_and_get(info->id, cbytes(buffer.data(), info->length), STATUS_SUCCESS,
                                         mbytes(buffer), Timeout(30s));
      }
      if (!info.ok()) ++failures;
    };
    std::vector<std::thread> threads;
    for (int i = 0; i < kServiceThreads; ++i) threads.emplace_back(serve);
    while (waiting_alone.load() < kServiceThreads) std::this_thread::sleep_for(1ms);
    waited_alone.notify(static_cast<uint64_t>(timed_out.load()));
    for (std::thread& thread : threads) thread.join();
    results.notify(static_cast<uint64_t>(replied.load()));
    results.notify(static_cast<uint64_t>(failures.load()));
    return 0;
  });
  ShmFilter filter;
  auto port = ServerPort::create(filter.options(1, kShm, spin));
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  ClientPort& client = filter.client(0);
  EXPECT_EQ(wait_number(waited_alone, 15s), kServiceThreads) << "get_message calls that timed out on time";

  auto echoes = [&client](uint32_t seed) {
    const std::vector<uint8_t> message = pattern(16 + seed % 200, seed);
    std::vector<uint8_t> reply(256);
    auto sent = client.send(cbytes(message), mbytes(reply), Timeout(5s));
    return sent.ok() && sent->length == message.size() && std::equal(message.begin(), message.end(), reply.begin());
  };
  constexpr std::chrono::microseconds kGaps[] = {0us, 0us, 20us, 150us, 1000us};
  int answered = 0;
  int sent = 0;
  for (int i = 0; i < kMessages; ++i) {
    std::this_thread::sleep_for(kGaps[i % std::size(kGaps)]);
    if (i % kBurstEvery == kBurstEvery / 2) {
      std::atomic<int> burst_answered{0};
      std::vector<std::thread> burst;
      for (int t = 0; t < kBurstThreads; ++t) {
        burst.emplace_back([&, t] { burst_answered += echoes(static_cast<uint32_t>(i * 16 + t)) ? 1 : 0; });
      }
      for (std::thread& thread : burst) thread.join();
      answered += burst_answered.load();
      sent += kBurstThreads;
    } else {
      answered += echoes(static_cast<uint32_t>(i * 16)) ? 1 : 0;
      ++sent;
    }
    ASSERT_EQ(answered, sent) << "message " << i << " was not answered within 5 s";
  }
  for (int i = 0; i < kServiceThreads; ++i) EXPECT_CODE(post_stop(client).code(), STATUS_SUCCESS);
  EXPECT_EQ(wait_number(results, 30s), sent) << "replies the service sent";
  EXPECT_EQ(wait_number(results), 0) << "failed service calls";
  EXPECT_TRUE(ExitsCleanly(service));
}

INSTANTIATE_TEST_SUITE_P(SharedMemory, SharedMemoryTakingTurns,
                         ::testing::Values(std::chrono::nanoseconds{0}, kDefaultSpinBudget,
                                           kDefaultServiceSpinBudget),
                         [](const auto& info) { return "Spin" + std::to_string(info.param.count() / 1000) + "us"; });

// =================================================================================================
// 3. Full rings
// =================================================================================================

class SharedMemoryRingFull : public SharedMemoryTest {};

// 100 service threads ask for a message while the filter sends nothing: 100 `get` credits do not
// fit the 64 slots of the ring to the filter, and no filter thread is reading it; the `drain` nudge
// must let them all through. Phase 1 (600 ms timeouts) shows whether any get_message stalled;
// phase 2 waits with no timeout, then the filter sends 100 messages, each received and replied.
TEST_F(SharedMemoryRingFull, HundredWaitingGettersDoNotStallAndThenEveryMessageIsAnswered) {
  constexpr int kThreads = 100;
  Signal port_ready, phase1, waiting, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait(15s));
    auto connection = Connection::connect(kName);
    CHILD_CHECK(connection.ok());
    CHILD_CHECK(connection->transport() == kShm);
    std::mutex mutex;
    std::condition_variable changed;
    int phase1_done = 0;
    bool go = false;
    std::atomic<int> timed_out{0}, other{0}, replied{0}, failed{0};
    std::atomic<long long> slowest{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        std::vector<uint8_t> buffer(2048);
        Stopwatch stopwatch;
        auto first = connection->get_message(mbytes(buffer), Timeout(600ms));
        const long long ms = stopwatch.ms();
        for (long long seen = slowest.load(); ms > seen && !slowest.compare_exchange_weak(seen, ms);) {
        }
        (!first.ok() && first.status() == Status(STATUS_TIMEOUT) ? timed_out : other)++;
        {
          std::unique_lock lock(mutex);
          ++phase1_done;
          changed.notify_all();
          changed.wait(lock, [&] { return go; });
        }
        auto info = connection->get_message(mbytes(buffer), Timeout(30s));
        if (!info.ok() || !info->wants_reply || info->length < 8 || info->truncated()) {
          ++failed;
          return;
        }
        std::vector<uint8_t> answer(16);
        put64(answer, 0, get64(buffer.data(), 0));
        put64(answer, 8, checksum(buffer.data(), info->length));
        if (connection->reply(info->id, cbytes(answer)).ok()) {
          ++replied;
        } else {
          ++failed;
        }
      });
    }
    {
      std::unique_lock lock(mutex);
      changed.wait_for(lock, 30s, [&] { return phase1_done == kThreads; });
      results.notify(static_cast<uint64_t>(phase1_done));
      go = true;
      changed.notify_all();
    }
    results.notify(static_cast<uint64_t>(timed_out.load()));
    results.notify(static_cast<uint64_t>(other.load()));
    results.notify(static_cast<uint64_t>(slowest.load()));
    std::this_thread::sleep_for(100ms);  // the threads are back in get_message (not needed for correctness)
    waiting.notify();
    for (std::thread& thread : threads) thread.join();
    results.notify(static_cast<uint64_t>(replied.load()));
    results.notify(static_cast<uint64_t>(failed.load()));
    return 0;
  });
  ShmFilter filter;
  auto port = ServerPort::create(filter.options());
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  ClientPort& client = filter.client(0);
  ASSERT_EQ(client.transport(), kShm);
  ASSERT_EQ(wait_number(results, 30s), kThreads) << "service threads through phase 1";
  EXPECT_EQ(wait_number(results), kThreads) << "get_message calls that timed out as asked";
  EXPECT_EQ(wait_number(results), 0) << "get_message calls that returned something else";
  EXPECT_LT(wait_number(results), 2000) << "ms the slowest 600 ms get_message took (a stalled credit waits 10 s)";
  ASSERT_TRUE(waiting.wait(10s));
  std::this_thread::sleep_for(300ms);  // the filter sends nothing while the service threads wait
  std::atomic<int> answered{0};
  std::vector<std::thread> senders;
  for (int i = 0; i < kThreads; ++i) {
    senders.emplace_back([&, i] {
      std::vector<uint8_t> message = pattern(8 + static_cast<size_t>(i) * 13, static_cast<uint32_t>(i));
      put64(message, 0, static_cast<uint64_t>(i));
      std::vector<uint8_t> reply(16);
      auto sent = client.send(cbytes(message), mbytes(reply), Timeout(15s));
      if (sent.ok() && sent->length == 16 && get64(reply.data(), 0) == static_cast<uint64_t>(i) &&
          get64(reply.data(), 8) == checksum(message.data(), message.size())) {
        ++answered;
      }
    });
  }
  for (std::thread& sender : senders) sender.join();
  EXPECT_EQ(answered.load(), kThreads) << "messages answered with their own reply";
  EXPECT_EQ(wait_number(results, 20s), kThreads) << "replies the service sent";
  EXPECT_EQ(wait_number(results), 0) << "service threads that failed";
  EXPECT_TRUE(ExitsCleanly(service));
}

// 200 messages time out in the filter after the service took them; then the service answers them
// all. The withdrawn notices do not all fit the ring to the service, so most replies travel, and
// more than the 64 slots of the ring to the filter, with no filter thread waiting to read it: every
// reply() must still return at once (STATUS_SUCCESS or STATUS_FLT_NO_WAITER_FOR_REPLY), and the
// connection must go on working.
TEST_F(SharedMemoryRingFull, ManyLateRepliesToTimedOutMessagesDoNotBlockTheService) {
  constexpr int kMessages = 200;
  Signal port_ready, taken, timed_out, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait(15s));
    auto connection = Connection::connect(kName);
    CHILD_CHECK(connection.ok());
    std::vector<uint8_t> buffer(256);
    std::vector<uint64_t> ids;
    while (ids.size() < static_cast<size_t>(kMessages)) {
      auto info = connection->get_message(mbytes(buffer), Timeout(5s));
      if (!info.ok()) break;
      ids.push_back(info->id);
    }
    taken.notify(ids.size());
    CHILD_CHECK(timed_out.wait(20s));
    long long slowest = 0;
    int sent = 0, no_waiter = 0, other = 0;
    const std::vector<uint8_t> answer = pattern(64, 5);
    for (const uint64_t id : ids) {
      Stopwatch stopwatch;
      const Status status = connection->reply(id, cbytes(answer));
      slowest = std::max(slowest, stopwatch.ms());
      if (status.ok()) {
        ++sent;
      } else if (status == Status(STATUS_FLT_NO_WAITER_FOR_REPLY)) {
        ++no_waiter;
      } else {
        ++other;
      }
    }
    results.notify(static_cast<uint64_t>(slowest));
    results.notify(static_cast<uint64_t>(sent));
    results.notify(static_cast<uint64_t>(no_waiter));
    results.notify(static_cast<uint64_t>(other));
    // The connection still works.
    auto info = connection->get_message(mbytes(buffer), Timeout(kWaitTimeout));
    CHILD_CHECK(info.ok());
    notify_code(results, connection->reply(info->id, cbytes(buffer).first(info->length)).code());
    return 0;
  });
  ShmFilter filter;
  auto port = ServerPort::create(filter.options());
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  ClientPort& client = filter.client(0);
  std::atomic<int> timeouts{0};
  std::vector<std::thread> senders;
  for (int i = 0; i < kMessages; ++i) {
    senders.emplace_back([&, i] {
      std::vector<uint8_t> reply(64);
      auto sent = client.send(cbytes(pattern(32, static_cast<uint32_t>(i))), mbytes(reply), Timeout(2500ms));
      if (!sent.ok() && sent.status() == Status(STATUS_TIMEOUT)) ++timeouts;
    });
  }
  EXPECT_EQ(wait_number(taken, 15s), kMessages) << "messages the service took";
  for (std::thread& sender : senders) sender.join();
  EXPECT_EQ(timeouts.load(), kMessages) << "sends that timed out (nobody replied in time)";
  timed_out.notify();
  const long long slowest = wait_number(results, 30s);
  const long long sent = wait_number(results);
  const long long no_waiter = wait_number(results);
  EXPECT_LT(slowest, 1000) << "ms the slowest late reply() took";
  EXPECT_EQ(wait_number(results), 0) << "late replies that failed otherwise";
  EXPECT_EQ(sent + no_waiter, kMessages);
  std::printf("late replies: %lld sent to the filter, %lld answered locally (no waiter)\n", sent, no_waiter);
  std::vector<uint8_t> reply(32);
  auto after = client.send(cbytes(pattern(32, 77)), mbytes(reply), Timeout(kWaitTimeout));
  ASSERT_TRUE(after.ok()) << "a round trip after the late replies: " << after.status().to_string();
  EXPECT_EQ(reply, pattern(32, 77));
  EXPECT_CODE(wait_code(results), STATUS_SUCCESS);
  EXPECT_TRUE(ExitsCleanly(service));
}

// A service that holds more credits than the ring to it has slots, and stops reading for a while
// (its getters timed out): 64 messages fill the ring, a 65th sender waits for room. The senders of
// the 64 time out meanwhile and must return at their timeout, as they do on the socket (whose
// buffer holds them all), not when the 65th gives up.
class SharedMemoryTimeouts : public SharedMemoryTest, public ::testing::WithParamInterface<PortTransport> {};

TEST_P(SharedMemoryTimeouts, SendersTimeOutOnTimeWhileAnotherWaitsForRoomInTheRing) {
  constexpr int kCredits = 80;
  constexpr int kFilling = static_cast<int>(kRingSlots);
  const PortTransport transport = GetParam();
  Signal port_ready, credits_left, done;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait(15s));
    auto connection = Connection::connect(kName, connect_options(transport));
    CHILD_CHECK(connection.ok());
    std::vector<std::thread> getters;
    for (int i = 0; i < kCredits; ++i) {
      getters.emplace_back([&] {
        std::vector<uint8_t> buffer(64);
        (void)connection->get_message(mbytes(buffer), Timeout(100ms));
      });
    }
    for (std::thread& getter : getters) getter.join();
    credits_left.notify();
    CHILD_CHECK(done.wait(30s));  // reads nothing meanwhile
    return 0;
  });
  ShmFilter filter;
  auto port = ServerPort::create(filter.options(1, transport));
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  ClientPort& client = filter.client(0);
  ASSERT_TRUE(credits_left.wait(15s));
  std::atomic<long long> slowest{0};
  std::atomic<int> timeouts{0};
  std::vector<std::thread> senders;
  for (int i = 0; i < kFilling; ++i) {
    senders.emplace_back([&, i] {
      std::vector<uint8_t> reply(16);
      Stopwatch stopwatch;
      auto sent = client.send(cbytes(pattern(16, static_cast<uint32_t>(i))), mbytes(reply), Timeout(700ms));
      const long long ms = stopwatch.ms();
      if (!sent.ok() && sent.status() == Status(STATUS_TIMEOUT)) ++timeouts;
      for (long long seen = slowest.load(); ms > seen && !slowest.compare_exchange_weak(seen, ms);) {
      }
    });
  }
  std::this_thread::sleep_for(300ms);  // the 64 are in the ring by now (not needed for correctness)
  AsyncCall last([&]() -> int64_t {
    std::vector<uint8_t> reply(16);
    return code_of(client.send(cbytes(pattern(16, 999)), mbytes(reply), Timeout(2500ms)));
  }, [&] { client.close(); });
  for (std::thread& sender : senders) sender.join();
  EXPECT_EQ(timeouts.load(), kFilling);
  EXPECT_LT(slowest.load(), 1700) << "ms the slowest 700 ms send took to time out";
  EXPECT_CODE(last.wait_code(10s), STATUS_TIMEOUT);
  done.notify();
  EXPECT_TRUE(ExitsCleanly(service));
}

INSTANTIATE_TEST_SUITE_P(SharedMemory, SharedMemoryTimeouts, ::testing::Values(kShm, kSocket), transport_param_name);

// Leader/follower hand-over when a reader that is not a waiter stops reading. A thread that needs
// a frame while another reads goes to sleep behind that reader; when the reader stops, it must wake
// one of them to read on, or a frame that comes later sits in the ring with nobody reading it. Each
// round below opens that window (a reader kept busy by a stream of frames, a waiter arriving
// meanwhile); scheduling decides whether the waiter really comes while the reader reads, so the
// rounds are repeated.
constexpr int kHandOverRounds = 20;

// Filter side: after a `drain`, the connection thread reads the ring to the filter. A sender that
// starts meanwhile waits behind it; when the ring is empty and the connection thread stops, that
// sender must read its own reply when it comes.
TEST_F(SharedMemoryRingFull, SendersStartingWhileTheFilterDrainsTheRingAreNotLeftWaiting) {
  constexpr uint32_t kMaxFedPerRound = 1500;  // credits; all rounds stay far below wire::kMaxCredits
  Signal port_ready, connected, go, draining, done;
  const std::string path = port_socket_path(runtime_dir_);
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait(15s));
    RawShmService raw;
    CHILD_CHECK_EQ(raw.connect(path).code(), STATUS_SUCCESS);
    connected.notify();
    for (int round = 0; round < kHandOverRounds; ++round) {
      CHILD_CHECK(go.wait(15s));
      // Credits fill the ring and a `drain` asks the filter to read it; the ring is kept topped up,
      // as by a service whose many threads ask for messages, until the filter's message is here.
      uint32_t fed = 0;
      auto top_up = [&] {
        if (raw.unread_by_filter() >= kRingSlots / 2) return false;
        raw.publish(RawShmService::credit(), {}, false);
        ++fed;
        return true;
      };
      while (raw.unread_by_filter() < kRingSlots) {
        raw.publish(RawShmService::credit(), {}, false);
        ++fed;
      }
      const uint32_t tail = raw.to_filter().tail.load();
      CHILD_CHECK(raw.send_drain());
      const auto give_up = after(kWaitTimeout);
      while (raw.to_filter().tail.load() == tail && Timeout::Clock::now() < give_up) {
      }
      CHILD_CHECK(raw.to_filter().tail.load() != tail);  // nobody else reads: the connection thread drains
      draining.notify();
      std::optional<std::vector<std::byte>> message;
      for (uint32_t after_message = 0; fed < kMaxFedPerRound && after_message < kRingSlots;) {
        if (top_up() && message) ++after_message;
        if (!message) message = raw.try_next_from_filter();
      }
      // The ring empties and the drain ends; then the reply, published as RingWriter does (the bell
      // only when the filter's reader says it sleeps).
      const auto emptied = after(200ms);
      while (raw.unread_by_filter() != 0 && Timeout::Clock::now() < emptied) std::this_thread::sleep_for(100us);
      std::this_thread::sleep_for(2ms);
      if (!message) message = raw.next_from_filter(kWaitTimeout);
      CHILD_CHECK(message.has_value());
      const FrameHeader header = RawShmService::header_of(*message);
      CHILD_CHECK_EQ(header.type, static_cast<uint8_t>(FrameType::message));
      raw.publish(wire::make_header(FrameType::reply, header.id, 5, STATUS_SUCCESS, 5), cbytes("late!", 5), false);
    }
    CHILD_CHECK(done.wait(20s));
    return 0;
  });
  // All of the filter's threads on one CPU: a sender that wakes then preempts the connection
  // thread at any point of its drain, also while it reads (else the sender rarely gets the lock
  // before the drain is over, and the window stays shut).
  ScopedAffinity one_cpu;
  ShmFilter filter;
  auto port = ServerPort::create(filter.options());
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  port_ready.notify();
  ASSERT_TRUE(connected.wait());
  ASSERT_TRUE(filter.wait_connections(1));
  ClientPort& client = filter.client(0);
  int answered = 0;
  std::string failures;
  for (int round = 0; round < kHandOverRounds; ++round) {
    go.notify();
    ASSERT_TRUE(draining.wait()) << "round " << round;
    std::vector<uint8_t> reply(16);
    Stopwatch stopwatch;
    auto sent = client.send(cbytes(pattern(8, static_cast<uint32_t>(round))), mbytes(reply), Timeout(1500ms));
    if (sent.ok() && std::string(reinterpret_cast<const char*>(reply.data()), sent->length) == "late!") {
      ++answered;
    } else {
      failures += " round " + std::to_string(round) + ": " + (sent.ok() ? "wrong reply" : sent.status().to_string()) +
                  " after " + std::to_string(stopwatch.ms()) + " ms;";
      if (!client.is_open()) break;
    }
  }
  EXPECT_EQ(answered, kHandOverRounds) << "senders left waiting for a reply that sat in the ring:" << failures;
  done.notify();
  EXPECT_TRUE(ExitsCleanly(service));
}

// Service side: reply() first takes the frames that already arrived (a withdrawal crossing it), and
// reads the ring for that while. A getter that starts meanwhile waits behind it; when reply() stops
// reading, that getter must read its message when it comes. The filter is driven by hand here (the
// service is the real library); it keeps reply() reading with a stream of `withdrawn` notices.
TEST_F(SharedMemoryRingFull, GettersStartingWhileAReplyTakesArrivedFramesAreNotLeftWaiting) {
  Signal port_ready, took, reply_now, b_go, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait(15s));
    auto connection = Connection::connect(kName);
    CHILD_CHECK(connection.ok());
    CHILD_CHECK(connection->transport() == kShm);
    for (int round = 0; round < kHandOverRounds; ++round) {
      std::thread a([&] {  // takes a message, then replies when told
        std::vector<uint8_t> buffer(64);
        auto info = connection->get_message(mbytes(buffer), Timeout(kWaitTimeout));
        if (!info.ok()) {
          took.notify(0);
          return;
        }
        took.notify(info->id);
        if (!reply_now.wait(15s)) return;
        notify_code(results, connection->reply(info->id, cbytes("a", 1)).code());
      });
      if (!b_go.wait(15s)) {
        a.join();
        return 1;
      }
      std::vector<uint8_t> buffer(64);
      Stopwatch stopwatch;
      auto info = connection->get_message(mbytes(buffer), Timeout(1500ms));
      notify_code(results, code_of(info));
      results.notify(static_cast<uint64_t>(stopwatch.ms()));
      a.join();
    }
    return 0;
  });
  RawShmFilter filter;
  ASSERT_TRUE(filter.listen(port_socket_path(runtime_dir_)));
  port_ready.notify();
  ASSERT_CODE(filter.accept(kWaitTimeout).code(), STATUS_SUCCESS);
  uint64_t next_id = 1;
  uint64_t notice = 1'000'000;  // ids of withdrawn notices: messages the service never had
  int answered = 0;
  std::string failures;
  for (int round = 0; round < kHandOverRounds; ++round) {
    auto a_credit = filter.next_from_service(kWaitTimeout);
    ASSERT_TRUE(a_credit.has_value()) << "round " << round;
    ASSERT_EQ(RawShmFilter::header_of(*a_credit).type, static_cast<uint8_t>(FrameType::get));
    const uint64_t a_id = next_id++;
    filter.publish(wire::make_header(FrameType::message, a_id, 4, 0, 16, wire::kFlagWantsReply), cbytes("msgA", 4));
    ASSERT_EQ(wait_number(took), static_cast<long long>(a_id)) << "round " << round;
    // Keep A's reply() reading: the ring full of notices, topped up until B has asked for a message.
    while (filter.unread_by_service() < kRingSlots) filter.publish(wire::make_header(FrameType::withdrawn, notice++, 0));
    const uint32_t tail = filter.to_service().tail.load();
    reply_now.notify();
    const auto give_up = after(kWaitTimeout);
    while (filter.to_service().tail.load() == tail && Timeout::Clock::now() < give_up) {
    }
    b_go.notify();
    std::optional<std::vector<std::byte>> b_credit, a_reply;
    for (int after_credit = 0; after_credit < static_cast<int>(kRingSlots) && Timeout::Clock::now() < give_up;) {
      if (filter.unread_by_service() < kRingSlots / 2) {
        filter.publish(wire::make_header(FrameType::withdrawn, notice++, 0));
        if (b_credit) ++after_credit;
      }
      if (auto frame = filter.try_next_from_service()) {
        (RawShmFilter::header_of(*frame).type == static_cast<uint8_t>(FrameType::get) ? b_credit : a_reply) = frame;
      }
    }
    // A's reply() stops reading once the ring is empty.
    while (filter.unread_by_service() != 0 && Timeout::Clock::now() < give_up) std::this_thread::sleep_for(100us);
    while ((!b_credit || !a_reply) && Timeout::Clock::now() < give_up) {
      if (auto frame = filter.next_from_service(10ms)) {
        (RawShmFilter::header_of(*frame).type == static_cast<uint8_t>(FrameType::get) ? b_credit : a_reply) = frame;
      }
    }
    ASSERT_TRUE(b_credit.has_value() && a_reply.has_value()) << "round " << round;
    EXPECT_CODE(wait_code(results), STATUS_SUCCESS) << "A's reply() in round " << round;
    std::this_thread::sleep_for(2ms);
    filter.publish(wire::make_header(FrameType::message, next_id++, 4, 0, 16, wire::kFlagWantsReply), cbytes("msgB", 4));
    const NTSTATUS b_status = wait_code(results);
    const long long b_ms = wait_number(results);
    if (b_status == STATUS_SUCCESS && b_ms < 1000) {
      ++answered;
    } else {
      failures += " round " + std::to_string(round) + ": " + Status(b_status).to_string() + " after " +
                  std::to_string(b_ms) + " ms;";
      break;  // the rounds are out of step now
    }
  }
  EXPECT_EQ(answered, kHandOverRounds) << "getters left waiting for a message that sat in the ring:" << failures;
  EXPECT_TRUE(ExitsCleanly(service));
}


// =================================================================================================
// 4. Liveness with spin budget 0: both sides really sleep on the futex
// =================================================================================================

class SharedMemoryLiveness : public SharedMemoryTest {};

constexpr std::chrono::nanoseconds kNoSpin{0};

TEST_F(SharedMemoryLiveness, ServiceKilledWhileTheFilterSleepsWaitingForAReplyIsPortDisconnected) {
  Signal port_ready, taken;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait(15s));
    auto connection = Connection::connect(kName, connect_options(kShm, kNoSpin));
    CHILD_CHECK(connection.ok());
    std::vector<uint8_t> buffer(64);
    CHILD_CHECK(connection->get_message(mbytes(buffer), Timeout(kWaitTimeout)).ok());
    taken.notify();
    Signal never;
    never.wait(30s);  // killed by the test
    return 0;
  });
  ShmFilter filter;
  auto port = ServerPort::create(filter.options(1, kShm, kNoSpin));
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  ClientPort& client = filter.client(0);
  ASSERT_EQ(client.transport(), kShm);
  AsyncCall send([&]() -> int64_t {
    std::vector<uint8_t> reply(64);
    return code_of(client.send(cbytes(pattern(16, 1)), mbytes(reply)));
  }, [&] { client.close(); });
  ASSERT_TRUE(taken.wait());
  std::this_thread::sleep_for(100ms);  // the sender is asleep on the ring by now
  Stopwatch stopwatch;
  EXPECT_EQ(service.kill().kind, ExitStatus::Kind::signaled);
  EXPECT_CODE(send.wait_code(), STATUS_PORT_DISCONNECTED);
  EXPECT_LT(stopwatch.ms(), kPromptlyMs);
  EXPECT_TRUE(filter.wait_disconnects(1));
}

TEST_F(SharedMemoryLiveness, FilterKilledWhileServiceThreadsSleepInGetMessageIsPortDisconnected) {
  constexpr int kGetters = 3;
  Signal port_ready, connected, results;
  ChildProcess filter_process([&] {
    ShmFilter filter;
    auto port = ServerPort::create(filter.options(1, kShm, kNoSpin));
    CHILD_CHECK(port.ok());
    port_ready.notify();
    Signal never;
    never.wait(30s);  // killed by the test
    return 0;
  });
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait(15s));
    auto connection = Connection::connect(kName, connect_options(kShm, kNoSpin));
    CHILD_CHECK(connection.ok());
    CHILD_CHECK(connection->transport() == kShm);
    std::vector<std::thread> getters;
    for (int i = 0; i < kGetters; ++i) {
      getters.emplace_back([&] {
        std::vector<uint8_t> buffer(64);
        notify_code(results, code_of(connection->get_message(mbytes(buffer))));  // no timeout
      });
    }
    connected.notify();
    for (std::thread& getter : getters) getter.join();
    return 0;
  });
  ASSERT_TRUE(connected.wait(10s));
  std::this_thread::sleep_for(100ms);  // the getters are asleep by now
  Stopwatch stopwatch;
  EXPECT_EQ(filter_process.kill().kind, ExitStatus::Kind::signaled);
  for (int i = 0; i < kGetters; ++i) {
    EXPECT_CODE(wait_code(results), STATUS_PORT_DISCONNECTED) << "getter " << i;
  }
  EXPECT_LT(stopwatch.ms(), kPromptlyMs);
  EXPECT_TRUE(ExitsCleanly(service));
}

TEST_F(SharedMemoryLiveness, ClientPortCloseWakesTheServiceSleepingInGetMessageAtOnce) {
  Signal port_ready, about_to_get, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait(15s));
    auto connection = Connection::connect(kName, connect_options(kShm, kNoSpin));
    CHILD_CHECK(connection.ok());
    std::vector<uint8_t> buffer(64);
    about_to_get.notify();
    notify_code(results, code_of(connection->get_message(mbytes(buffer))));  // no timeout
    return 0;
  });
  ShmFilter filter;
  auto port = ServerPort::create(filter.options(1, kShm, kNoSpin));
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  ASSERT_TRUE(about_to_get.wait());
  std::this_thread::sleep_for(100ms);  // the getter is asleep by now
  Stopwatch stopwatch;
  filter.client(0).close();
  EXPECT_CODE(wait_code(results), STATUS_PORT_DISCONNECTED);
  EXPECT_LT(stopwatch.ms(), kPromptlyMs);
  EXPECT_TRUE(ExitsCleanly(service));
  EXPECT_TRUE(filter.wait_disconnects(1));
}

// The same through the C API, with the spin budget set by FLTPORT_SPIN_NS=0 in both processes.
TEST_F(SharedMemoryLiveness, FltCloseClientPortWakesTheServiceSleepingInFilterGetMessageAtOnce) {
  Signal port_ready, about_to_get, results;
  ChildProcess service([&] {
    ::setenv("FLTPORT_SPIN_NS", "0", 1);
    CHILD_CHECK(port_ready.wait(15s));
    HANDLE port = nullptr;
    CHILD_CHECK_EQ(connect_service(&port), S_OK);
    MessageBuffer<64> buffer{};
    about_to_get.notify();
    notify_code(results, FilterGetMessage(port, &buffer.header, sizeof buffer, nullptr));
    CloseHandle(port);
    return 0;
  });
  ScopedEnv spin("FLTPORT_SPIN_NS", "0");
  CFilter filter;
  filter.set_close_client_on_disconnect(false);
  ASSERT_CODE(filter.create_port(), STATUS_SUCCESS);
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  ASSERT_TRUE(about_to_get.wait());
  std::this_thread::sleep_for(100ms);  // the getter is asleep by now
  Stopwatch stopwatch;
  filter.close_client_port(0);
  EXPECT_CODE(wait_code(results), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE));
  EXPECT_LT(stopwatch.ms(), kPromptlyMs);
  EXPECT_TRUE(ExitsCleanly(service));
  EXPECT_TRUE(filter.wait_disconnects(1));
}

TEST_F(SharedMemoryLiveness, ConnectionCloseWakesTheFilterSleepingWaitingForAReply) {
  Signal port_ready, taken, close_now, finished;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait(15s));
    auto connection = Connection::connect(kName, connect_options(kShm, kNoSpin));
    CHILD_CHECK(connection.ok());
    std::vector<uint8_t> buffer(64);
    CHILD_CHECK(connection->get_message(mbytes(buffer), Timeout(kWaitTimeout)).ok());
    taken.notify();
    CHILD_CHECK(close_now.wait(15s));
    connection->close();
    CHILD_CHECK(finished.wait(15s));  // the process (and its descriptors) stays: only close() wakes the filter
    return 0;
  });
  ShmFilter filter;
  auto port = ServerPort::create(filter.options(1, kShm, kNoSpin));
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  port_ready.notify();
  ASSERT_TRUE(filter.wait_connections(1));
  ClientPort& client = filter.client(0);
  AsyncCall send([&]() -> int64_t {
    std::vector<uint8_t> reply(64);
    return code_of(client.send(cbytes(pattern(16, 1)), mbytes(reply)));
  }, [&] { client.close(); });
  ASSERT_TRUE(taken.wait());
  std::this_thread::sleep_for(100ms);  // the sender is asleep on the ring by now
  Stopwatch stopwatch;
  close_now.notify();
  EXPECT_CODE(send.wait_code(), STATUS_PORT_DISCONNECTED);
  EXPECT_LT(stopwatch.ms(), kPromptlyMs);
  finished.notify();
  EXPECT_TRUE(ExitsCleanly(service));
}

// =================================================================================================
// 5. Hostile services
// =================================================================================================

enum class Breakage {
  head_far_beyond_tail,
  record_longer_than_its_slot,
  datagram_announced_but_not_sent,
  announcement_carrying_data,
  announced_datagram_is_not_a_frame,
  frame_type_the_filter_never_receives,
  reply_to_a_message_never_sent,
};
struct HostileCase {
  const char* name;
  Breakage breakage;
};
void PrintTo(const HostileCase& c, std::ostream* os) { *os << c.name; }

const HostileCase kHostileCases[] = {
    {"HeadFarBeyondTail", Breakage::head_far_beyond_tail},
    {"RecordLongerThanItsSlot", Breakage::record_longer_than_its_slot},
    {"DatagramAnnouncedButNotSent", Breakage::datagram_announced_but_not_sent},
    {"AnnouncementCarryingData", Breakage::announcement_carrying_data},
    {"AnnouncedDatagramIsNotAFrame", Breakage::announced_datagram_is_not_a_frame},
    {"FrameTypeTheFilterNeverReceives", Breakage::frame_type_the_filter_never_receives},
    {"ReplyToAMessageNeverSent", Breakage::reply_to_a_message_never_sent},
};

void break_ring(RawShmService& raw, Breakage breakage, uint64_t id) {
  switch (breakage) {
    case Breakage::head_far_beyond_tail:
      raw.set_head(raw.head() + 1000);
      return;
    case Breakage::record_longer_than_its_slot: {
      const uint32_t length = static_cast<uint32_t>(kRingSlotPayload + 1);
      raw.publish(wire::make_header(FrameType::reply, id, length, STATUS_SUCCESS, length));
      return;
    }
    case Breakage::datagram_announced_but_not_sent:
      raw.publish(wire::make_header(FrameType::reply, id, 0, STATUS_SUCCESS, 0, kFlagOnSocket));
      return;
    case Breakage::announcement_carrying_data:
      raw.publish(wire::make_header(FrameType::reply, id, 8, STATUS_SUCCESS, 8, kFlagOnSocket),
                  cbytes("12345678", 8));
      return;
    case Breakage::announced_datagram_is_not_a_frame:
      raw.send_raw_datagram("junk!", 5);
      raw.publish(wire::make_header(FrameType::reply, id, 0, STATUS_SUCCESS, 0, kFlagOnSocket));
      return;
    case Breakage::frame_type_the_filter_never_receives:
      raw.publish(wire::make_header(FrameType::message, id, 0));
      return;
    case Breakage::reply_to_a_message_never_sent:
      raw.publish(wire::make_header(FrameType::reply, id + 1000, 0, STATUS_SUCCESS, 0));
      return;
  }
}

class SharedMemoryHostile : public SharedMemoryTest, public ::testing::WithParamInterface<HostileCase> {};

// A raw service takes a message, then breaks the ring to the filter while the filter's sender sleeps
// waiting for the reply: that send fails with STATUS_PORT_DISCONNECTED (no crash, no hang), the
// offender is disconnected, and a well-behaved service on the same port works before and after.
TEST_P(SharedMemoryHostile, BreakingTheRingToTheFilterDisconnectsOnlyTheOffender) {
  const Breakage breakage = GetParam().breakage;
  Signal port_ready, good_connected, attack, taken, corrupt, verdict;
  const std::string path = port_socket_path(runtime_dir_);
  ChildProcess good([&] { return echo_service(port_ready, good_connected); });
  ChildProcess attacker([&] {
    CHILD_CHECK(attack.wait(15s));
    RawShmService raw;
    CHILD_CHECK_EQ(raw.connect(path).code(), STATUS_SUCCESS);
    CHILD_CHECK(raw.give_credit());
    auto message = raw.next_from_filter(kWaitTimeout);
    CHILD_CHECK(message.has_value());
    const FrameHeader header = RawShmService::header_of(*message);
    CHILD_CHECK_EQ(header.type, static_cast<uint8_t>(FrameType::message));
    taken.notify(header.id);
    CHILD_CHECK(corrupt.wait(15s));
    break_ring(raw, breakage, header.id);
    verdict.notify(raw.closed_by_filter_within(5s) ? 1 : 0);
    return 0;
  });
  ShmFilter filter;
  auto port = ServerPort::create(filter.options(2));
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  port_ready.notify();
  ASSERT_EQ(wait_number(good_connected), static_cast<long long>(transport_code(kShm)));
  ASSERT_TRUE(filter.wait_connections(1));
  EXPECT_TRUE(echo_round_trip(filter.client(0), 1)) << "the well-behaved service before the attack";

  attack.notify();
  ASSERT_TRUE(filter.wait_connections(2));
  ClientPort& victim = filter.client(1);
  EXPECT_EQ(victim.transport(), kShm);
  AsyncCall send([&]() -> int64_t {
    std::vector<uint8_t> reply(64);
    return code_of(victim.send(cbytes(pattern(32, 9)), mbytes(reply), Timeout(15s)));
  }, [&] { victim.close(); });
  ASSERT_TRUE(taken.wait_value().has_value());
  std::this_thread::sleep_for(100ms);  // the sender is asleep on the ring by now
  Stopwatch stopwatch;
  corrupt.notify();
  EXPECT_CODE(send.wait_code(8s), STATUS_PORT_DISCONNECTED);
  EXPECT_LT(stopwatch.ms(), 3000) << "a datagram announced but missing is waited for 1 s at most";
  EXPECT_EQ(wait_number(verdict, 8s), 1) << "the filter kept the connection of the offender";
  EXPECT_TRUE(ExitsCleanly(attacker));
  EXPECT_TRUE(filter.wait_disconnects(1));
  EXPECT_FALSE(victim.is_open());

  EXPECT_TRUE(echo_round_trip(filter.client(0), 2)) << "the well-behaved service after the attack";
  EXPECT_CODE(post_stop(filter.client(0)).code(), STATUS_SUCCESS);
  EXPECT_TRUE(ExitsCleanly(good));
}

INSTANTIATE_TEST_SUITE_P(SharedMemory, SharedMemoryHostile, ::testing::ValuesIn(kHostileCases),
                         [](const auto& info) { return std::string(info.param.name); });

// A raw service claims to have consumed more of the ring to it than the filter wrote: the filter's
// next send on that connection fails cleanly, and the well-behaved service keeps working.
// The filter looks at the service's index only when its last look showed the ring full (a busy
// pair then never pulls that cache line): a lying index goes unnoticed until then, and hurts only
// the liar, whose messages nobody reads. At that look the connection closes.
TEST_F(SharedMemoryHostile, ToServiceTailBeyondHeadFailsTheNextSendCleanly) {
  Signal port_ready, good_connected, attack, ready, verdict;
  const std::string path = port_socket_path(runtime_dir_);
  ChildProcess good([&] { return echo_service(port_ready, good_connected); });
  ChildProcess attacker([&] {
    CHILD_CHECK(attack.wait(15s));
    RawShmService raw;
    CHILD_CHECK_EQ(raw.connect(path).code(), STATUS_SUCCESS);
    raw.to_service().tail.store(1000, std::memory_order_seq_cst);
    // Credits for a full ring and one more, one `get` frame of that many.
    raw.publish(wire::make_header(FrameType::get, 0, 0, 0, static_cast<uint32_t>(kRingSlots + 1)));
    CHILD_CHECK(raw.send_drain());
    ready.notify();
    verdict.notify(raw.closed_by_filter_within(8s) ? 1 : 0);
    return 0;
  });
  ShmFilter filter;
  auto port = ServerPort::create(filter.options(2));
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  port_ready.notify();
  ASSERT_EQ(wait_number(good_connected), static_cast<long long>(transport_code(kShm)));
  ASSERT_TRUE(filter.wait_connections(1));
  EXPECT_TRUE(echo_round_trip(filter.client(0), 1));
  attack.notify();
  ASSERT_TRUE(filter.wait_connections(2));
  ASSERT_TRUE(ready.wait());
  ClientPort& victim = filter.client(1);
  // Posts fill the ring (nobody reads it); the next one looks at the index and refuses it.
  for (size_t i = 0; i < kRingSlots; ++i) {
    ASSERT_EQ(victim.post(cbytes(pattern(32, 9)), Timeout(5s)).code(), STATUS_SUCCESS) << i;
  }
  StderrCapture log;
  Stopwatch stopwatch;
  const Status sent = victim.post(cbytes(pattern(32, 9)), Timeout(5s));
  EXPECT_CODE(sent.code(), STATUS_PORT_DISCONNECTED);
  EXPECT_LT(stopwatch.ms(), kPromptlyMs);
  EXPECT_NE(log.text().find(transport::kCorruptConsumerIndex), std::string::npos) << "the reason is logged";
  EXPECT_EQ(wait_number(verdict, 10s), 1) << "the filter kept the connection of the offender";
  EXPECT_TRUE(ExitsCleanly(attacker));
  EXPECT_FALSE(victim.is_open());
  EXPECT_TRUE(echo_round_trip(filter.client(0), 2)) << "the well-behaved service after the attack";
  EXPECT_CODE(post_stop(filter.client(0)).code(), STATUS_SUCCESS);
  EXPECT_TRUE(ExitsCleanly(good));
}

// =================================================================================================
// 6. Spin budget
// =================================================================================================

class SharedMemorySpin : public SharedMemoryTest {};

// FLTPORT_SPIN_NS=0 in both processes: every wait sleeps at once, and the connection still carries
// round trips of every kind.
TEST_F(SharedMemorySpin, SpinBudgetZeroFromTheEnvironmentStillRoundTrips) {
  constexpr int kRoundTrips = 300;
  Signal port_ready, results;
  ChildProcess service([&] {
    ::setenv("FLTPORT_SPIN_NS", "0", 1);
    CHILD_CHECK(port_ready.wait(15s));
    auto connection = Connection::connect(kName);
    CHILD_CHECK(connection.ok());
    results.notify(transport_code(connection->transport()));
    std::vector<uint8_t> buffer(kMaxMessageSize);
    auto info = connection->get_message(mbytes(buffer), Timeout(kWaitTimeout));
    int served = 0;
    while (info.ok() && info->wants_reply) {
      ++served;
      info = connection->reply_and_get(info->id, cbytes(buffer).first(info->length), STATUS_SUCCESS, mbytes(buffer),
                                       Timeout(kWaitTimeout));
    }
    CHILD_CHECK(info.ok());
    results.notify(static_cast<uint64_t>(served));
    return 0;
  });
  ScopedEnv spin("FLTPORT_SPIN_NS", "0");
  ShmFilter filter;
  auto port = ServerPort::create(filter.options());
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  port_ready.notify();
  ASSERT_EQ(wait_number(results), static_cast<long long>(transport_code(kShm)));
  ASSERT_TRUE(filter.wait_connections(1));
  ClientPort& client = filter.client(0);
  int right = 0;
  for (int i = 0; i < kRoundTrips; ++i) {
    const size_t size = i % 10 == 0 ? 5000 : 1 + static_cast<size_t>(i);
    const auto message = pattern(size, static_cast<uint32_t>(i));
    std::vector<uint8_t> reply(size);
    auto sent = client.send(cbytes(message), mbytes(reply), Timeout(kWaitTimeout));
    if (sent.ok() && sent->length == size && reply == message) ++right;
  }
  EXPECT_EQ(right, kRoundTrips);
  EXPECT_CODE(post_stop(client).code(), STATUS_SUCCESS);
  EXPECT_EQ(wait_number(results), kRoundTrips);
  EXPECT_TRUE(ExitsCleanly(service));
}

// What the budget does: a get_message that waits 300 ms for nothing spins for the budget. A large
// budget from the options keeps the thread runnable (burning CPU) throughout; FLTPORT_SPIN_NS=0 overrides it and the wait costs none.
TEST_F(SharedMemorySpin, TheEnvironmentOverridesTheConfiguredSpinBudget) {
  Signal port_ready, results;
  ChildProcess service([&] {
    CHILD_CHECK(port_ready.wait(15s));
    std::vector<uint8_t> buffer(64);
    {
      auto spinning = Connection::connect(kName, connect_options(kShm, 400ms));
      CHILD_CHECK(spinning.ok());
      const long long before = thread_runnable_ms();
      CHILD_CHECK(spinning->get_message(mbytes(buffer), Timeout(300ms)).status() == Status(STATUS_TIMEOUT));
      results.notify(static_cast<uint64_t>(thread_runnable_ms() - before));
    }
    ::setenv("FLTPORT_SPIN_NS", "0", 1);
    auto sleeping = Connection::connect(kName, connect_options(kShm, 1s));
    CHILD_CHECK(sleeping.ok());
    const long long before = thread_runnable_ms();
    CHILD_CHECK(sleeping->get_message(mbytes(buffer), Timeout(300ms)).status() == Status(STATUS_TIMEOUT));
    results.notify(static_cast<uint64_t>(thread_runnable_ms() - before));
    return 0;
  });
  ShmFilter filter;
  auto port = ServerPort::create(filter.options(2));
  ASSERT_TRUE(port.ok()) << port.status().to_string();
  port_ready.notify();
  const long long spun = wait_number(results);
  const long long slept = wait_number(results);
  EXPECT_GE(spun, 200) << "ms a 300 ms wait was runnable (spinning) with a 400 ms spin budget";
  EXPECT_LT(slept, 50) << "ms a 300 ms wait was runnable with FLTPORT_SPIN_NS=0";
  EXPECT_TRUE(ExitsCleanly(service));
}

}  // namespace
}  // namespace fltport::test
