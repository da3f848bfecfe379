#include "baselines.hpp"

#include <linux/futex.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace fltport::bench {
namespace {

using namespace std::chrono_literals;

constexpr size_t kCacheLine = 64;
// How long a parent waits for a stopped child before killing it.
constexpr auto kChildExitGrace = 5000ms;
// Busy-pollers check every 2^20 spins (tens of ms) that the peer still lives, so a crashed echo child
// turns into an error instead of a parent spinning forever. The child needs no check: PDEATHSIG.
constexpr uint32_t kLivenessCheckMask = (1u << 20) - 1;
// Futex sleepers wake up this often to do the same check.
constexpr timespec kFutexLivenessTimeout{0, 100'000'000};

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

void copy_bytes(void* destination, const void* source, size_t size) {
  if (size != 0) std::memcpy(destination, source, size);  // memcpy with a null pointer is UB even for 0
}

// The request carries the round-trip number in its first bytes and the echo copies them back, so a
// reply that belongs to another round trip (or a broken echo) is detected rather than timed.
constexpr size_t kStampBytes = sizeof(uint32_t);

void stamp_request(std::vector<std::byte>& request, uint32_t round_trip_number) {
  copy_bytes(request.data(), &round_trip_number, std::min(kStampBytes, request.size()));
}

void check_echo(const std::vector<std::byte>& request, const std::vector<std::byte>& reply,
                const char* name) {
  const size_t compared = std::min({kStampBytes, request.size(), reply.size()});
  if (compared != 0 && std::memcmp(request.data(), reply.data(), compared) != 0) {
    throw std::runtime_error(std::string(name) + ": reply does not echo the request it answers");
  }
}

// ---- shared memory ----

// One direction of the ping-pong. The writer bumps `sequence`; the waiter sets `waiter_sleeping`
// before FUTEX_WAIT on `sequence`. Both live on one line because the writer touches both anyway.
struct alignas(kCacheLine) Direction {
  std::atomic<uint32_t> sequence{0};
  std::atomic<uint32_t> waiter_sleeping{0};
};
static_assert(std::atomic<uint32_t>::is_always_lock_free, "cross-process atomics must be lock-free");
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "futex operates on a plain 32-bit word");

struct SharedHeader {
  Direction request;  // parent -> child
  Direction reply;    // child -> parent
  alignas(kCacheLine) std::atomic<uint32_t> stop{0};
};

constexpr size_t round_up_to_line(size_t size) {
  return (size + kCacheLine - 1) / kCacheLine * kCacheLine;
}

// MAP_SHARED|MAP_ANONYMOUS made before fork, so parent and child see the same pages.
class SharedRegion {
 public:
  SharedRegion(size_t request_size, size_t reply_size)
      : request_offset_(round_up_to_line(sizeof(SharedHeader))),
        reply_offset_(request_offset_ + round_up_to_line(request_size)),
        size_(reply_offset_ + round_up_to_line(reply_size)) {
    base_ = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (base_ == MAP_FAILED)
      throw_errno("mmap(MAP_SHARED|MAP_ANONYMOUS, " + std::to_string(size_) + " bytes)");
    header_ = new (base_) SharedHeader{};
  }
  ~SharedRegion() { munmap(base_, size_); }
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;

  SharedHeader& header() { return *header_; }
  std::byte* request_slot() { return static_cast<std::byte*>(base_) + request_offset_; }
  std::byte* reply_slot() { return static_cast<std::byte*>(base_) + reply_offset_; }

 private:
  size_t request_offset_, reply_offset_, size_;
  void* base_ = nullptr;
  SharedHeader* header_ = nullptr;
};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

uint32_t* futex_word(std::atomic<uint32_t>& word) {
  return reinterpret_cast<uint32_t*>(&word);
}

// Not FUTEX_PRIVATE_FLAG: the word is in memory shared between two processes. Returns true on timeout.
bool futex_wait(std::atomic<uint32_t>& word, uint32_t expected) {
  if (syscall(SYS_futex, futex_word(word), FUTEX_WAIT, expected, &kFutexLivenessTimeout, nullptr, 0) == 0) {
    return false;
  }
  if (errno == ETIMEDOUT) return true;
  if (errno != EAGAIN && errno != EINTR) throw_errno("futex(FUTEX_WAIT)");
  return false;
}

void futex_wake(std::atomic<uint32_t>& word) {
  if (syscall(SYS_futex, futex_word(word), FUTEX_WAKE, 1, nullptr, nullptr, 0) < 0) {
    throw_errno("futex(FUTEX_WAKE)");
  }
}

struct WaitPolicy {
  bool use_futex = false;
  unsigned spins_before_sleep = 0;
  bool yield_while_waiting = false;  // without futex: sched_yield() instead of a pause per look
  bool wake_always = false;          // with futex: FUTEX_WAKE after every publish, flag or not
};

// Returns the new value of direction.sequence once it differs from `old`.
template <typename CheckPeer>
uint32_t wait_for_change(Direction& direction, uint32_t old, const WaitPolicy& policy,
                         CheckPeer& check_peer) {
  if (!policy.use_futex) {
    for (uint32_t spin = 1;; ++spin) {
      const uint32_t value = direction.sequence.load(std::memory_order_acquire);
      if (value != old) return value;
      if (policy.yield_while_waiting) {
        sched_yield();
      } else {
        cpu_relax();
      }
      if ((spin & kLivenessCheckMask) == 0) check_peer();
    }
  }
  for (;;) {
    for (unsigned spin = 0; spin < policy.spins_before_sleep; ++spin) {
      const uint32_t value = direction.sequence.load(std::memory_order_acquire);
      if (value != old) return value;
      cpu_relax();
    }
    // Dekker with publish(): we store the flag then load the sequence, the writer stores the sequence
    // then loads the flag; with seq_cst at least one of us sees the other, so no wake-up is lost.
    direction.waiter_sleeping.store(1, std::memory_order_seq_cst);
    const uint32_t value = direction.sequence.load(std::memory_order_seq_cst);
    if (value != old) {
      direction.waiter_sleeping.store(0, std::memory_order_relaxed);
      return value;
    }
    const bool timed_out = futex_wait(direction.sequence, old);
    direction.waiter_sleeping.store(0, std::memory_order_relaxed);  // a stale 1 only costs a spare wake
    if (timed_out) check_peer();
  }
}

void publish(Direction& direction, uint32_t value, const WaitPolicy& policy) {
  if (!policy.use_futex) {
    direction.sequence.store(value, std::memory_order_release);
    return;
  }
  direction.sequence.store(value, std::memory_order_seq_cst);
  if (policy.wake_always || direction.waiter_sleeping.load(std::memory_order_seq_cst) != 0)
    futex_wake(direction.sequence);
}

int run_shared_memory_echo(SharedRegion& region, size_t request_size, size_t reply_size,
                           const WaitPolicy& policy) {
  SharedHeader& header = region.header();
  std::vector<std::byte> request(request_size);
  auto parent_checked_by_pdeathsig = [] {};
  uint32_t seen = 0;
  for (;;) {
    seen = wait_for_change(header.request, seen, policy, parent_checked_by_pdeathsig);
    // `stop` is written before the sequence is published, so the acquire above makes it visible.
    if (header.stop.load(std::memory_order_relaxed) != 0) return 0;
    copy_bytes(request.data(), region.request_slot(), request_size);
    copy_bytes(region.reply_slot(), request.data(), std::min(request_size, reply_size));
    publish(header.reply, seen, policy);
  }
}

enum class Echo { in_child_process, in_thread };

LatencyStats shared_memory_pingpong(const char* name, size_t warmup, size_t iterations, size_t request_size,
                                    size_t reply_size, const WaitPolicy& policy,
                                    std::chrono::nanoseconds time_limit, Echo echo = Echo::in_child_process) {
  SharedRegion region(request_size, reply_size);
  std::vector<std::byte> request(request_size), reply(reply_size);  // before the echo thread starts
  auto run_echo = [&] { return run_shared_memory_echo(region, request_size, reply_size, policy); };
  std::optional<ChildProcess> child;
  std::thread echo_thread;  // its CPU time is this process's, which measure() counts
  if (echo == Echo::in_thread) {
    echo_thread = std::thread(run_echo);
  } else {
    child.emplace(run_echo);
  }

  SharedHeader& header = region.header();
  auto check_child = [&] {
    if (child) child->throw_if_exited(name);
  };
  uint32_t round_trip_number = 0;
  auto round_trip = [&] {
    ++round_trip_number;
    stamp_request(request, round_trip_number);
    copy_bytes(region.request_slot(), request.data(), request_size);
    publish(header.request, round_trip_number, policy);
    if (wait_for_change(header.reply, round_trip_number - 1, policy, check_child) != round_trip_number) {
      throw std::runtime_error(std::string(name) + ": reply sequence out of step");
    }
    copy_bytes(reply.data(), region.reply_slot(), reply_size);
    check_echo(request, reply, name);
  };
  auto stop_echo = [&] {
    header.stop.store(1, std::memory_order_relaxed);
    publish(header.request, round_trip_number + 1, policy);
  };
  LatencyStats stats;
  try {
    stats = measure(
        name, warmup, iterations, round_trip, [&] { return child ? child->cpu_seconds() : 0.0; }, time_limit);
  } catch (...) {
    if (echo_thread.joinable()) {
      stop_echo();
      echo_thread.join();
    }
    throw;
  }
  stop_echo();
  if (echo_thread.joinable()) echo_thread.join();
  if (child) {
    if (const int status = child->wait_or_kill(kChildExitGrace); status != 0) {
      throw std::runtime_error(std::string(name) + ": echo child exited with status " +
                               std::to_string(status));
    }
  }
  return stats;
}

// ---- AF_UNIX SOCK_SEQPACKET ----

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd = -1) : fd_(fd) {}
  ~FileDescriptor() { reset(); }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// Returns the full message length (MSG_TRUNC), or 0 when the peer has closed its end.
size_t receive_packet(int fd, std::vector<std::byte>& buffer, const char* what) {
  for (;;) {
    const ssize_t received = recv(fd, buffer.data(), buffer.size(), MSG_TRUNC);
    if (received >= 0) return static_cast<size_t>(received);
    if (errno != EINTR) throw_errno(std::string(what) + ": recv");
  }
}

void send_packet(int fd, const std::vector<std::byte>& buffer, const char* what) {
  for (;;) {
    const ssize_t sent = send(fd, buffer.data(), buffer.size(), MSG_NOSIGNAL);
    if (sent == static_cast<ssize_t>(buffer.size())) return;
    if (sent >= 0) throw std::runtime_error(std::string(what) + ": short send on a SOCK_SEQPACKET socket");
    if (errno != EINTR) throw_errno(std::string(what) + ": send");
  }
}

int run_seqpacket_echo(int fd, size_t request_size, size_t reply_size) {
  std::vector<std::byte> request(request_size), reply(reply_size);
  for (;;) {
    const size_t length = receive_packet(fd, request, "seqpacket echo");
    if (length == 0) return 0;  // parent closed its end: the stop signal
    if (length != request_size) throw std::runtime_error("seqpacket echo: unexpected request length");
    copy_bytes(reply.data(), request.data(), std::min(request_size, reply_size));
    send_packet(fd, reply, "seqpacket echo");
  }
}

// ---- ZeroMQ ----

[[noreturn]] void throw_zmq(const std::string& what) {
  const int error = zmq_errno();
  throw std::system_error(error, std::generic_category(), what + ": " + zmq_strerror(error));
}

class ZmqContext {
 public:
  ZmqContext() : context_(zmq_ctx_new()) {
    if (context_ == nullptr) throw_zmq("zmq_ctx_new");
  }
  ~ZmqContext() {
    while (zmq_ctx_term(context_) != 0 && zmq_errno() == EINTR) {
    }
  }
  ZmqContext(const ZmqContext&) = delete;
  ZmqContext& operator=(const ZmqContext&) = delete;
  void* get() const { return context_; }

 private:
  void* context_;
};

class ZmqSocket {
 public:
  ZmqSocket(const ZmqContext& context, int type) : socket_(zmq_socket(context.get(), type)) {
    if (socket_ == nullptr) throw_zmq("zmq_socket");
    // Linger 0: closing must never block on undelivered messages to a peer that is gone.
    set_option(ZMQ_LINGER, 0);
  }
  ~ZmqSocket() { zmq_close(socket_); }
  ZmqSocket(const ZmqSocket&) = delete;
  ZmqSocket& operator=(const ZmqSocket&) = delete;
  void* get() const { return socket_; }
  void set_option(int option, int value) {
    if (zmq_setsockopt(socket_, option, &value, sizeof value) != 0) throw_zmq("zmq_setsockopt");
  }

 private:
  void* socket_;
};

// mkdtemp directory for the ipc:// socket file, removed with everything in it.
class TemporaryDirectory {
 public:
  TemporaryDirectory() {
    std::string pattern = "/tmp/fltport-bench-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) throw_errno("mkdtemp(" + pattern + ")");
    path_ = pattern;
  }
  ~TemporaryDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TemporaryDirectory(const TemporaryDirectory&) = delete;
  TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The stop message is the only multipart one, so ordinary requests of any size (even 0) stay usable.
constexpr char kZmqStopFrame[] = "stop";

int run_zmq_echo(const std::string& endpoint, size_t reply_size) {
  ZmqContext context;  // created after fork: a zmq context does not survive fork
  ZmqSocket socket(context, ZMQ_REP);
  socket.set_option(ZMQ_RECONNECT_IVL, 10);  // the parent may bind after we connect
  if (zmq_connect(socket.get(), endpoint.c_str()) != 0) throw_zmq("zmq_connect(" + endpoint + ")");

  std::vector<std::byte> reply(reply_size);
  zmq_msg_t message;
  for (;;) {
    zmq_msg_init(&message);
    if (zmq_msg_recv(&message, socket.get(), 0) < 0) {
      zmq_msg_close(&message);
      if (zmq_errno() == EINTR) continue;
      throw_zmq("zmq echo: zmq_msg_recv");
    }
    if (zmq_msg_more(&message) != 0) {
      zmq_msg_close(&message);
      return 0;  // no reply: the parent waits for our exit, not for an answer
    }
    copy_bytes(reply.data(), zmq_msg_data(&message), std::min(zmq_msg_size(&message), reply_size));
    zmq_msg_close(&message);
    while (zmq_send(socket.get(), reply.data(), reply.size(), 0) < 0) {
      if (zmq_errno() != EINTR) throw_zmq("zmq echo: zmq_send");
    }
  }
}

}  // namespace

LatencyStats busy_poll_pingpong(size_t warmup, size_t iterations, size_t request_size, size_t reply_size,
                                std::chrono::nanoseconds time_limit) {
  return shared_memory_pingpong(kBusyPollName, warmup, iterations, request_size, reply_size,
                                WaitPolicy{.use_futex = false, .spins_before_sleep = 0}, time_limit);
}

LatencyStats spin_futex_pingpong(size_t warmup, size_t iterations, size_t request_size, size_t reply_size,
                                 unsigned spins, std::chrono::nanoseconds time_limit) {
  return shared_memory_pingpong(kSpinFutexName, warmup, iterations, request_size, reply_size,
                                WaitPolicy{.use_futex = true, .spins_before_sleep = spins}, time_limit);
}

LatencyStats spin_futex_wake_always_pingpong(size_t warmup, size_t iterations, size_t request_size,
                                             size_t reply_size, unsigned spins,
                                             std::chrono::nanoseconds time_limit) {
  return shared_memory_pingpong(
      kSpinFutexWakeAlwaysName, warmup, iterations, request_size, reply_size,
      WaitPolicy{.use_futex = true, .spins_before_sleep = spins, .wake_always = true}, time_limit);
}

LatencyStats same_cpu_yield_pingpong(bool threads, size_t warmup, size_t iterations, size_t request_size,
                                     size_t reply_size, std::chrono::nanoseconds time_limit) {
  // Both sides on the CPU this thread runs on (a child process or thread inherits the mask), then back.
  cpu_set_t before;
  if (sched_getaffinity(0, sizeof before, &before) != 0) throw_errno("sched_getaffinity");
  const int cpu = sched_getcpu();
  if (cpu < 0) throw_errno("sched_getcpu");
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  if (sched_setaffinity(0, sizeof one, &one) != 0) throw_errno("sched_setaffinity");
  struct RestoreAffinity {
    const cpu_set_t& mask;
    ~RestoreAffinity() { sched_setaffinity(0, sizeof mask, &mask); }
  } restore{before};
  return shared_memory_pingpong(
      threads ? kSameCpuYieldThreadsName : kSameCpuYieldName, warmup, iterations, request_size, reply_size,
      WaitPolicy{.use_futex = false, .spins_before_sleep = 0, .yield_while_waiting = true}, time_limit,
      threads ? Echo::in_thread : Echo::in_child_process);
}

LatencyStats seqpacket_pingpong(size_t warmup, size_t iterations, size_t request_size, size_t reply_size,
                                std::chrono::nanoseconds time_limit) {
  // A zero-length SOCK_SEQPACKET message reads as end-of-file, which is the stop signal here.
  if (request_size == 0) throw std::invalid_argument("seqpacket_pingpong: request_size must be at least 1");
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) {
    throw_errno("socketpair(AF_UNIX, SOCK_SEQPACKET)");
  }
  FileDescriptor parent_end(fds[0]), child_end(fds[1]);
  ChildProcess child([&] {
    parent_end.reset();  // else the child's own copy would keep the socket open and hide the stop EOF
    return run_seqpacket_echo(child_end.get(), request_size, reply_size);
  });
  child_end.reset();

  std::vector<std::byte> request(request_size), reply(reply_size);
  uint32_t round_trip_number = 0;
  auto round_trip = [&] {
    stamp_request(request, ++round_trip_number);
    send_packet(parent_end.get(), request, kSeqpacketName);
    const size_t length = receive_packet(parent_end.get(), reply, kSeqpacketName);
    if (length != reply_size) {
      if (length == 0)
        throw std::runtime_error(std::string(kSeqpacketName) + ": echo child closed its socket");
      throw std::runtime_error(std::string(kSeqpacketName) + ": unexpected reply length " +
                               std::to_string(length));
    }
    check_echo(request, reply, kSeqpacketName);
  };
  LatencyStats stats = measure(
      kSeqpacketName, warmup, iterations, round_trip, [&] { return child.cpu_seconds(); }, time_limit);

  parent_end.reset();  // EOF tells the child to exit
  if (const int status = child.wait_or_kill(kChildExitGrace); status != 0) {
    throw std::runtime_error(std::string(kSeqpacketName) + ": echo child exited with status " +
                             std::to_string(status));
  }
  return stats;
}

LatencyStats zmq_reqrep(size_t warmup, size_t iterations, size_t request_size, size_t reply_size,
                        std::chrono::nanoseconds time_limit) {
  // Declaration order is teardown order in reverse: sockets, context, child (killed if still there),
  // and last the directory holding the socket file.
  TemporaryDirectory directory;
  const std::string endpoint = "ipc://" + directory.path() + "/reqrep.sock";
  ChildProcess child([&] { return run_zmq_echo(endpoint, reply_size); });

  ZmqContext context;
  ZmqSocket socket(context, ZMQ_REQ);
  // A bounded receive wait lets the parent notice a dead child instead of blocking forever.
  socket.set_option(ZMQ_RCVTIMEO, 1000);
  if (zmq_bind(socket.get(), endpoint.c_str()) != 0) throw_zmq("zmq_bind(" + endpoint + ")");

  std::vector<std::byte> request(request_size), reply(reply_size);
  uint32_t round_trip_number = 0;
  auto round_trip = [&] {
    stamp_request(request, ++round_trip_number);
    while (zmq_send(socket.get(), request.data(), request.size(), 0) < 0) {
      if (zmq_errno() != EINTR) throw_zmq(std::string(kZmqReqRepName) + ": zmq_send");
    }
    int length;
    while ((length = zmq_recv(socket.get(), reply.data(), reply.size(), 0)) < 0) {
      if (zmq_errno() == EAGAIN) {
        child.throw_if_exited(kZmqReqRepName);
      } else if (zmq_errno() != EINTR) {
        throw_zmq(std::string(kZmqReqRepName) + ": zmq_recv");
      }
    }
    if (static_cast<size_t>(length) != reply_size) {
      throw std::runtime_error(std::string(kZmqReqRepName) + ": unexpected reply length " +
                               std::to_string(length));
    }
    check_echo(request, reply, kZmqReqRepName);
  };
  LatencyStats stats = measure(
      kZmqReqRepName, warmup, iterations, round_trip, [&] { return child.cpu_seconds(); }, time_limit);

  // Keep our socket open until the child has exited: linger 0 would drop an unsent stop message.
  if (zmq_send(socket.get(), kZmqStopFrame, sizeof kZmqStopFrame - 1, ZMQ_SNDMORE) < 0 ||
      zmq_send(socket.get(), nullptr, 0, 0) < 0) {
    throw_zmq(std::string(kZmqReqRepName) + ": sending stop");
  }
  if (const int status = child.wait_or_kill(kChildExitGrace); status != 0) {
    throw std::runtime_error(std::string(kZmqReqRepName) + ": echo child exited with status " +
                             std::to_string(status));
  }
  return stats;
}

}  // namespace fltport::bench
