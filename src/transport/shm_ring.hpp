// The shared-memory transport of one connection: a sealed memfd that both processes map, holding
// one bounded ring of frame records per direction. A waiting side spins for a short budget, then
// sleeps on a futex; a writer makes the futex call only when the reader has said it sleeps, so a
// busy pair exchanges frames with no system call at all.
//
// The peer can write anything anywhere in the mapping at any time. So nothing read from it is used
// twice: indices and lengths are loaded once, checked, and a record is copied out before it is
// decoded; our own indices live in our memory and are only published to the peer. A bad index or
// length is reported as STATUS_DATA_ERROR with a reason, and the connection closes; the worst a
// peer can do to the reader otherwise is wake it for nothing.
//
// A frame too large for a slot travels as a datagram on the direction's socket, announced by a
// record flagged kFlagOnSocket: the ring alone orders the frames, the reader never has to wait on
// two things at once.
#pragma once

#include <fltport/port.hpp>

#include <atomic>
#include <functional>
#include <mutex>

#include "base/unique_fd.hpp"
#include "transport/unix_socket.hpp"
#include "wire/frame.hpp"

namespace fltport::transport {

inline constexpr size_t kRingSlots = 64;       // per direction; a power of two
inline constexpr size_t kRingSlotSize = 2048;  // header + payload of one record
inline constexpr size_t kRingSlotPayload = kRingSlotSize - wire::kHeaderSize;
inline constexpr uint8_t kFlagOnSocket = 0x80;  // record flag: the frame is the next datagram

// One direction's indices. All counters wrap. Each index has a cache line of its own, and the
// sleep flags another: a busy pair writes only the indices, so reading the peer's flag after
// every write finds it in cache instead of pulling the line the peer just wrote.
struct RingControl {
  alignas(64) std::atomic<uint32_t> head{0};               // producer: records published
  alignas(64) std::atomic<uint32_t> producer_sleeping{0};  // producer: waits for room
  std::atomic<uint32_t> room_bell{0};                      // futex word the producer sleeps on
  alignas(64) std::atomic<uint32_t> tail{0};               // consumer: records consumed
  alignas(64) std::atomic<uint32_t> consumer_sleeping{0};  // consumer: kAsleep, kNobodyReads or 0
  std::atomic<uint32_t> data_bell{0};                      // futex word the consumer sleeps on
  // Written by the producer when it rings data_bell (steady clock, ns): lets the consumer tell
  // how long the producer took from how long its own wake-up took. Only a hint for the spin budget.
  std::atomic<int64_t> data_rung_at_ns{0};
};
static_assert(std::atomic<uint32_t>::is_always_lock_free, "futex words must be plain words");

// The values of a sleep flag, which are also the futex bitsets its sleepers wait with: a writer
// wakes only the kind of thread the flag names. kAsleep: the reader sleeps in receive() (or the
// producer waits for room); kNobodyReads: the reader left (RingReader::leave) and another thread
// of its process waits in wait_for_bell() to take over. Both at once would wake two threads for
// one record.
inline constexpr uint32_t kAsleep = 1;
inline constexpr uint32_t kNobodyReads = 2;

enum class RingDirection : uint8_t { to_service = 0, to_filter = 1 };

// The mapping: the filter creates and seals it, the service maps what it is handed after checking
// its size and seals (a peer able to shrink it could make us fault on access).
class SharedRegion {
 public:
  static constexpr size_t kControlSize = 4096;
  static constexpr size_t kRingBytes = kRingSlots * kRingSlotSize;
  static constexpr size_t kSize = kControlSize + 2 * kRingBytes;

  static Result<SharedRegion> create();
  static Result<SharedRegion> map(UniqueFd fd);
  SharedRegion() = default;
  SharedRegion(SharedRegion&& other) noexcept;
  SharedRegion& operator=(SharedRegion&& other) noexcept;
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;
  ~SharedRegion();

  bool valid() const noexcept { return base_ != nullptr; }
  int fd() const noexcept { return fd_.fd(); }
  RingControl& control(RingDirection direction) const noexcept;
  std::byte* slots(RingDirection direction) const noexcept;
  // The same for every mapping of this memfd in this process. ThreadSanitizer tracks memory by
  // address, so it cannot see that a release through one mapping and an acquire through another
  // (a filter and its service in one process) are the same word; the rings tell it through this.
  const void* sync_key(RingDirection direction) const noexcept;

 private:
  SharedRegion(UniqueFd fd, std::byte* base, uint64_t identity) noexcept
      : fd_(std::move(fd)), base_(base), identity_(identity) {}
  UniqueFd fd_;
  std::byte* base_ = nullptr;
  uint64_t identity_ = 0;  // the memfd's inode
};

// How a side waits: spin for `spin` (not when the peer is known asleep), then sleep.
struct WaitPolicy {
  std::chrono::nanoseconds spin{0};
  // The peer's "I sleep" flag on the other ring: a peer that sleeps answers no sooner than a
  // wake-up, so spinning for it only burns the CPU it needs.
  const std::atomic<uint32_t>* peer_sleeping = nullptr;
  // Spinning without yielding for this long, then each round also yields: a thread woken on our
  // CPU (more runnable threads than CPUs) runs at once instead of after our whole budget.
  std::chrono::nanoseconds pure_spin{20'000};
};

// The spin half of a spin-then-sleep wait, with a budget that adapts to how the peer answers.
// One waiter at a time (the ring's reader, or the writer under its lock).
class AdaptiveSpin {
 public:
  static constexpr int64_t kSpinShrinkFloor = 32;  // never below budget / 32 while spinning is on
  explicit AdaptiveSpin(WaitPolicy policy = {}) noexcept
      : policy_(policy), current_ns_(policy.spin.count()) {}
  template <class Ready>
  bool spin_until(Ready ready, Deadline deadline) noexcept;
  // After a wait that ended in sleep: `peer_took` = from the start of the wait until the peer
  // published (not counting our wake-up, which no spin could have saved us).
  void after_sleep(std::chrono::nanoseconds peer_took) noexcept;
  std::chrono::nanoseconds current() const noexcept {
    return std::chrono::nanoseconds(current_ns_.load(std::memory_order_relaxed));
  }

 private:
  WaitPolicy policy_;
  std::atomic<int64_t> current_ns_;
};

// Why a writer's send() returned STATUS_DATA_ERROR, for the log line of whoever closes.
inline constexpr const char* kCorruptConsumerIndex =
    "the peer's ring index says it read more than was written";

// The writing end of one ring. Thread-safe: writers are serialized here.
class RingWriter {
 public:
  RingWriter() = default;
  RingWriter(RingControl* control, std::byte* slots, int overflow_fd, WaitPolicy policy,
             const void* sync_key = nullptr) noexcept
      : control_(control), slots_(slots), overflow_fd_(overflow_fd), spin_(policy), sync_key_(sync_key) {}

  // Publishes one frame, waiting for room until `deadline`. STATUS_TIMEOUT: nothing was sent.
  // STATUS_PORT_DISCONNECTED: stop() was called or the overflow socket is gone. STATUS_DATA_ERROR:
  // the peer's index is impossible (kCorruptConsumerIndex says so in a log line).
  // `woke_reader`, if given, tells whether the reader slept and this send rang for it.
  Status send(const wire::FrameHeader& header, ConstBytes payload, LazyDeadline deadline,
              bool* woke_reader = nullptr) noexcept;
  // Fails a send() waiting for room, and every later one; may be called from any thread.
  void stop() noexcept;
  // Called (under the writer's lock) when a send() finds the ring full, before it waits: a
  // reader that only reads while it waits for something of its own needs telling.
  void on_full(std::function<void()> handler) { on_full_ = std::move(handler); }

 private:
  Status wait_for_room(Deadline deadline) noexcept;
  RingControl* control_ = nullptr;
  std::byte* slots_ = nullptr;
  int overflow_fd_ = -1;
  AdaptiveSpin spin_;
  const void* sync_key_ = nullptr;
  std::function<void()> on_full_;
  std::timed_mutex mutex_;
  uint32_t head_ = 0;       // ours; the copy in shared memory is only for the peer
  uint32_t tail_seen_ = 0;  // the consumer's index when we last looked: room without a look
  std::atomic<bool> stopped_{false};
};

// The reading end of one ring. One reader at a time (the caller's leader/follower ensures it).
class RingReader {
 public:
  RingReader() = default;
  RingReader(RingControl* control, const std::byte* slots, int overflow_fd, WaitPolicy policy,
             const void* sync_key = nullptr) noexcept
      : control_(control), slots_(slots), overflow_fd_(overflow_fd), spin_(policy), sync_key_(sync_key) {}
  std::chrono::nanoseconds spin_budget() const noexcept { return spin_.current(); }

  // Copies the next frame (header and payload) into `buffer`, which must hold kMaxFrameSize bytes,
  // waiting until `deadline` (spin, then sleep; Deadline::min(): no wait and no clock read).
  // STATUS_TIMEOUT: nothing arrived.
  // STATUS_PORT_DISCONNECTED: stop() was called and the ring is empty. STATUS_DATA_ERROR: the peer
  // broke the ring; error() says how.
  // `peer_waking`: what we wait for answers a record that had to wake the peer (RingWriter::send's
  // `woke_reader`). Its wake-up comes first, and may need this very CPU (more runnable threads than
  // CPUs, or a scheduler that wakes it where it last ran): no spin, sleep at once. (fanotify bench,
  // scanner path, opens 1 ms apart: 213 -> 120 us per open, daemons' CPU 200 -> 139 us per open.)
  Result<size_t> receive(MutableBytes buffer, Deadline deadline, bool peer_waking = false) noexcept;
  // True when a record waits (the reader's own check; call it where receive() may be called).
  bool readable() const noexcept;
  bool stopped() const noexcept { return stopped_.load(std::memory_order_acquire); }
  // Makes a waiting receive() return, and every later one once the ring is empty. Any thread.
  void stop() noexcept;

  // For callers whose threads take turns reading (ServiceConnection): between two turns nobody
  // spins on the ring, so the producer must ring the bell for a thread that waits in
  // wait_for_bell() meanwhile. leave() says so (the next receive() that has to wait takes it
  // back) and returns true when a record came before that was seen: the caller sees it read.
  bool leave() noexcept;
  uint32_t bell() const noexcept { return control_->data_bell.load(std::memory_order_seq_cst); }
  // Returns when the bell rang since `seen` was read, at `deadline`, or spuriously.
  void wait_for_bell(uint32_t seen, Deadline deadline) const noexcept;
  void ring() const noexcept;  // wakes every thread in wait_for_bell() or asleep in receive()
  const char* error() const noexcept { return error_; }

 private:
  Result<size_t> take(MutableBytes buffer) noexcept;
  Status corrupt(const char* what) noexcept;
  RingControl* control_ = nullptr;
  const std::byte* slots_ = nullptr;
  int overflow_fd_ = -1;
  AdaptiveSpin spin_;
  const void* sync_key_ = nullptr;
  uint32_t tail_ = 0;  // ours
  const char* error_ = nullptr;
  std::atomic<bool> stopped_{false};
};

// Timeout::Clock's now, in ns since its epoch: a time that fits an atomic.
int64_t steady_ns() noexcept;
// The spin budget in effect: FLTPORT_SPIN_NS if set, else `configured`.
std::chrono::nanoseconds effective_spin_budget(std::chrono::nanoseconds configured) noexcept;
// False when FLTPORT_TRANSPORT=socket forces the socket path in this process.
bool shared_memory_allowed() noexcept;

}  // namespace fltport::transport
