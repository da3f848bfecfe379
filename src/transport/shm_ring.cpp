#include "transport/shm_ring.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace fltport::transport {

namespace {

static_assert((kRingSlots & (kRingSlots - 1)) == 0, "ring indices wrap by masking");
static_assert(2 * sizeof(RingControl) <= SharedRegion::kControlSize, "both controls fit the first page");
static_assert(kRingSlotPayload % 8 == 0 && kRingSlotSize <= 4096);

constexpr int kSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

// Not FUTEX_PRIVATE: the word is shared with another process. The sleeper waits as `kind` (a
// sleep flag's value); FUTEX_WAIT_BITSET's timeout is absolute, on CLOCK_MONOTONIC (steady_clock).
void futex_wait(std::atomic<uint32_t>& word, uint32_t expected, Deadline deadline, uint32_t kind) noexcept {
  if (Timeout::Clock::now() >= deadline) return;
  timespec until{};
  timespec* timeout = nullptr;
  if (deadline != Deadline::max()) {
    const auto at = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
    until.tv_sec = static_cast<time_t>(at / 1'000'000'000);
    until.tv_nsec = static_cast<long>(at % 1'000'000'000);
    timeout = &until;
  }
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_BITSET, expected, timeout, nullptr,
            kind);
}

// Wakes the sleepers of the kinds in `kinds` (FUTEX_BITSET_MATCH_ANY: all).
void futex_wake(std::atomic<uint32_t>& word, uint32_t kinds) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_BITSET, INT_MAX, nullptr, nullptr,
            kinds);
}

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* address);
extern "C" void __tsan_release(void* address);
void sync_release(const void* key) noexcept {
  if (key != nullptr) __tsan_release(const_cast<void*>(key));
}
void sync_acquire(const void* key) noexcept {
  if (key != nullptr) __tsan_acquire(const_cast<void*>(key));
}
#else
void sync_release(const void*) noexcept {}
void sync_acquire(const void*) noexcept {}
#endif
// One byte per key; a collision only makes ThreadSanitizer see more order than there is.
char g_sync_keys[1024];

void ring_bell(std::atomic<uint32_t>& bell, uint32_t kinds = FUTEX_BITSET_MATCH_ANY) noexcept {
  bell.fetch_add(1, std::memory_order_seq_cst);
  futex_wake(bell, kinds);
}

// The two halves of the sleep protocol, for either side of a ring. The sleeper raises its flag,
// then re-checks; the waker publishes, then reads the flag. Both seq_cst: either the sleeper sees
// what was published, or the waker sees the flag (neither may see only the other's old value).
// True when it slept (the caller learns from how long).
template <class StillWaiting>
bool sleep_unless(std::atomic<uint32_t>& sleeping, std::atomic<uint32_t>& bell, StillWaiting still_waiting,
                  Deadline deadline) noexcept {
  const uint32_t rung = bell.load(std::memory_order_seq_cst);
  sleeping.store(kAsleep, std::memory_order_seq_cst);
  const bool sleep = still_waiting();
  if (sleep) futex_wait(bell, rung, deadline, kAsleep);
  sleeping.store(0, std::memory_order_relaxed);
  return sleep;
}

// The flag is the peer's word: a value that names no kind wakes every kind.
bool wake_if_sleeping(std::atomic<uint32_t>& sleeping, std::atomic<uint32_t>& bell,
                      std::atomic<int64_t>* rung_at = nullptr) noexcept {
  const uint32_t flag = sleeping.load(std::memory_order_seq_cst);
  if (flag == 0) return false;
  if (rung_at != nullptr) rung_at->store(steady_ns(), std::memory_order_relaxed);
  const uint32_t kinds = flag & (kAsleep | kNobodyReads);
  ring_bell(bell, kinds != 0 ? kinds : FUTEX_BITSET_MATCH_ANY);
  return true;
}

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace

// Spins until `ready()` or the budget ends; true when ready. The budget adapts (after_sleep).
template <class Ready>
bool AdaptiveSpin::spin_until(Ready ready, Deadline deadline) noexcept {
  const auto budget = std::chrono::nanoseconds(current_ns_.load(std::memory_order_relaxed));
  if (budget.count() <= 0) return ready();
  const auto start = Timeout::Clock::now();
  const Deadline end = std::min(deadline, start + budget);
  const Deadline pure_spin_end = std::min(end, start + policy_.pure_spin);
  for (unsigned i = 1;; ++i) {
    if (ready()) {
      current_ns_.store(std::min(policy_.spin.count(), budget.count() * 2), std::memory_order_relaxed);
      return true;
    }
    cpu_relax();
    if ((i & 63) == 0) {
      if (policy_.peer_sleeping != nullptr && policy_.peer_sleeping->load(std::memory_order_relaxed) != 0) {
        return ready();  // not the budget's fault: keep it
      }
      const auto now = Timeout::Clock::now();
      if (now >= end) break;
      if (now >= pure_spin_end) ::sched_yield();
    }
  }
  return ready();
}

void AdaptiveSpin::after_sleep(std::chrono::nanoseconds peer_took) noexcept {
  const int64_t budget = current_ns_.load(std::memory_order_relaxed);
  if (peer_took <= policy_.spin) {
    // Spinning that long would have saved the sleep: spin longer next time.
    current_ns_.store(std::min(policy_.spin.count(), std::max(budget, 2 * peer_took.count())),
                      std::memory_order_relaxed);
  } else {
    // The peer takes longer than any spin we allow (it is slow, or shares our CPU and needs it).
    current_ns_.store(std::max(policy_.spin.count() / kSpinShrinkFloor, budget / 2),
                      std::memory_order_relaxed);
  }
}

// ---- SharedRegion ----

Result<SharedRegion> SharedRegion::create() {
  UniqueFd fd(::memfd_create("fltport-port", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) return Status(STATUS_INSUFFICIENT_RESOURCES);
  if (::ftruncate(fd.fd(), static_cast<off_t>(kSize)) != 0 || ::fcntl(fd.fd(), F_ADD_SEALS, kSeals) != 0) {
    return Status(STATUS_INSUFFICIENT_RESOURCES);
  }
  struct stat info {};
  if (::fstat(fd.fd(), &info) != 0) return Status(STATUS_INSUFFICIENT_RESOURCES);
  void* base = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.fd(), 0);
  if (base == MAP_FAILED) return Status(STATUS_INSUFFICIENT_RESOURCES);
  // A fresh memfd reads as zeros: every index and flag starts at 0 on both sides.
  return SharedRegion(std::move(fd), static_cast<std::byte*>(base), static_cast<uint64_t>(info.st_ino));
}

Result<SharedRegion> SharedRegion::map(UniqueFd fd) {
  // Only a sealed memfd of exactly our size: seals are refused on anything but shmem, and a
  // region its creator could still shrink would make our accesses fault.
  struct stat info {};
  const int seals = ::fcntl(fd.fd(), F_GET_SEALS);
  if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW) ||
      ::fstat(fd.fd(), &info) != 0 || !S_ISREG(info.st_mode) || static_cast<size_t>(info.st_size) != kSize) {
    return Status(STATUS_INVALID_PARAMETER);
  }
  void* base = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.fd(), 0);
  if (base == MAP_FAILED) return Status(STATUS_INSUFFICIENT_RESOURCES);
  return SharedRegion(std::move(fd), static_cast<std::byte*>(base), static_cast<uint64_t>(info.st_ino));
}

SharedRegion::SharedRegion(SharedRegion&& other) noexcept
    : fd_(std::move(other.fd_)), base_(std::exchange(other.base_, nullptr)), identity_(other.identity_) {}

const void* SharedRegion::sync_key(RingDirection direction) const noexcept {
  return &g_sync_keys[(identity_ * 2 + static_cast<uint64_t>(direction)) % sizeof g_sync_keys];
}

SharedRegion& SharedRegion::operator=(SharedRegion&& other) noexcept {
  if (this != &other) {
    if (base_ != nullptr) ::munmap(base_, kSize);
    fd_ = std::move(other.fd_);
    base_ = std::exchange(other.base_, nullptr);
    identity_ = other.identity_;
  }
  return *this;
}

SharedRegion::~SharedRegion() {
  if (base_ != nullptr) ::munmap(base_, kSize);
}

RingControl& SharedRegion::control(RingDirection direction) const noexcept {
  return reinterpret_cast<RingControl*>(base_)[static_cast<size_t>(direction)];
}

std::byte* SharedRegion::slots(RingDirection direction) const noexcept {
  return base_ + kControlSize + static_cast<size_t>(direction) * kRingBytes;
}

// ---- RingWriter ----

Status RingWriter::wait_for_room(Deadline deadline) noexcept {
  RingControl& c = *control_;
  auto room = [&] { return head_ - c.tail.load(std::memory_order_acquire) < kRingSlots; };
  // A stop ends the spin too: a dead peer is noticed at once, whatever the configured budget.
  auto room_or_stopped = [&] { return room() || stopped_.load(std::memory_order_relaxed); };
  bool told = false;
  const auto started = Timeout::Clock::now();
  for (;;) {
    const uint32_t tail = c.tail.load(std::memory_order_acquire);
    const uint32_t used = head_ - tail;
    if (used > kRingSlots) return STATUS_DATA_ERROR;  // the consumer claims more than we wrote
    if (used < kRingSlots) {
      tail_seen_ = tail;
      return STATUS_SUCCESS;
    }
    if (stopped_.load(std::memory_order_acquire)) return STATUS_PORT_DISCONNECTED;
    if (Timeout::Clock::now() >= deadline) return STATUS_TIMEOUT;
    if (!told && on_full_) {
      told = true;
      on_full_();
    }
    if (spin_.spin_until(room_or_stopped, deadline)) continue;
    auto still_full = [&] {
      return head_ - c.tail.load(std::memory_order_seq_cst) >= kRingSlots &&
             !stopped_.load(std::memory_order_seq_cst);
    };
    sleep_unless(c.producer_sleeping, c.room_bell, still_full, deadline);
    if (room()) spin_.after_sleep(Timeout::Clock::now() - started);
  }
}

Status RingWriter::send(const wire::FrameHeader& header, ConstBytes payload, LazyDeadline deadline,
                        bool* woke_reader) noexcept {
  // Another writer may be waiting for room: our own deadline bounds the wait for our turn too.
  std::unique_lock lock(mutex_, std::try_to_lock);
  if (!lock.owns_lock()) {
    if (deadline.get() == Deadline::max()) {
      lock.lock();
    } else if (!lock.try_lock_until(std::chrono::system_clock::now() +
                                    (deadline.get() - Timeout::Clock::now()))) {
      // (system_clock: libstdc++ waits on a steady deadline with pthread_mutex_clocklock, which
      // ThreadSanitizer does not know; a clock step can only shorten or lengthen this one wait.)
      return stopped_.load(std::memory_order_acquire) ? STATUS_PORT_DISCONNECTED : STATUS_TIMEOUT;
    }
  }
  if (stopped_.load(std::memory_order_acquire)) return STATUS_PORT_DISCONNECTED;
  // Room the last look already showed costs no look at the consumer's line, and no clock read.
  if (head_ - tail_seen_ >= kRingSlots) {
    if (Status room = wait_for_room(deadline.get()); !room.ok()) return room;
  }
  wire::FrameHeader record = header;
  // The record says what it carries, whatever the caller's header claimed.
  record.payload_length = static_cast<uint32_t>(payload.size());
  record.flags = static_cast<uint8_t>(record.flags & ~kFlagOnSocket);
  if (payload.size() > kRingSlotPayload) {
    // Too big for a slot: the datagram first, so that it is queued when the record is seen.
    // Bounded by `deadline`, and by the caller shutting the socket down when it closes.
    if (Status sent = send_frame(overflow_fd_, record, payload, deadline.get()); !sent.ok()) return sent;
    record.flags = static_cast<uint8_t>(record.flags | kFlagOnSocket);
    record.payload_length = 0;
    payload = {};
  }
  std::byte* slot = slots_ + (head_ & (kRingSlots - 1)) * kRingSlotSize;
  std::memcpy(slot, &record, wire::kHeaderSize);
  if (!payload.empty()) std::memcpy(slot + wire::kHeaderSize, payload.data(), payload.size());
  ++head_;
  RingControl& c = *control_;
  sync_release(sync_key_);
  c.head.store(head_, std::memory_order_seq_cst);
  const bool rang = wake_if_sleeping(c.consumer_sleeping, c.data_bell, &c.data_rung_at_ns);
  if (woke_reader != nullptr) *woke_reader = rang;
  return STATUS_SUCCESS;
}

void RingWriter::stop() noexcept {
  stopped_.store(true, std::memory_order_seq_cst);
  if (control_ != nullptr) ring_bell(control_->room_bell);
}

// ---- RingReader ----

Status RingReader::corrupt(const char* what) noexcept {
  error_ = what;
  return STATUS_DATA_ERROR;
}

Result<size_t> RingReader::take(MutableBytes buffer) noexcept {
  RingControl& c = *control_;
  const uint32_t head = c.head.load(std::memory_order_acquire);  // once
  const uint32_t available = head - tail_;
  if (available == 0) return Status(STATUS_NO_MORE_ENTRIES);
  if (available > kRingSlots) return corrupt("ring index beyond its capacity");
  sync_acquire(sync_key_);
  const std::byte* slot = slots_ + (tail_ & (kRingSlots - 1)) * kRingSlotSize;
  wire::FrameHeader header;
  std::memcpy(&header, slot, wire::kHeaderSize);  // once; the copy is what we check and use
  size_t length = 0;
  if ((header.flags & kFlagOnSocket) != 0) {
    if (header.payload_length != 0) return corrupt("ring record announces a datagram and carries data");
    if (buffer.size() < wire::kMaxFrameSize) return corrupt("buffer smaller than a frame");
    // The writer sent it before publishing the record: it is queued already, no need to wait.
    auto received = receive_frame(overflow_fd_, buffer.first(wire::kMaxFrameSize), Timeout::Clock::now());
    if (!received) {
      if (received.status() == Status(STATUS_PORT_DISCONNECTED)) return received.status();
      if (received.status() == Status(STATUS_BUFFER_OVERFLOW)) return corrupt("datagram larger than a frame");
      return corrupt("ring record announces a datagram that is not there");
    }
    length = *received;
  } else {
    if (header.payload_length > kRingSlotPayload) return corrupt("ring record longer than its slot");
    length = wire::kHeaderSize + header.payload_length;
    if (buffer.size() < length) return corrupt("buffer smaller than a ring record");
    std::memcpy(buffer.data(), &header, wire::kHeaderSize);
    if (header.payload_length != 0)
      std::memcpy(buffer.data() + wire::kHeaderSize, slot + wire::kHeaderSize, header.payload_length);
  }
  ++tail_;
  c.tail.store(tail_, std::memory_order_seq_cst);
  wake_if_sleeping(c.producer_sleeping, c.room_bell);
  return length;
}

Result<size_t> RingReader::receive(MutableBytes buffer, Deadline deadline, bool peer_waking) noexcept {
  if (error_ != nullptr) return Status(STATUS_DATA_ERROR);
  RingControl& c = *control_;
  // While spinning, keep pulling the first two lines of the slot the next record lands in: the
  // record's bytes then arrive with, not after, the index that announces it, one cache-line transfer
  // less per message. (1 x 1, 64 B, p50 when a transfer is slow here: 1.22-1.26 -> 0.91-1.01 us,
  // x1.74-2.11 -> x1.20-1.74 the spin+futex ping-pong; 8 x 4 throughput unchanged, 40 rounds each.)
  // Only a hint: nothing is read from the slot before the index says it is written.
  const std::byte* next = slots_ + (tail_ & (kRingSlots - 1)) * kRingSlotSize;
  auto ready = [&] {
    __builtin_prefetch(next);
    __builtin_prefetch(next + 64);
    return c.head.load(std::memory_order_acquire) != tail_ || stopped_.load(std::memory_order_relaxed);
  };
  // We read from here on: a record need not ring the bell (see leave()). Written only when set,
  // since the producer reads this line after every record.
  if (c.consumer_sleeping.load(std::memory_order_relaxed) != 0)
    c.consumer_sleeping.store(0, std::memory_order_relaxed);
  // The clock only once there is nothing to take: a busy pair reads it on no round trip.
  Deadline started{};
  bool slept = false;
  for (;;) {
    auto taken = take(buffer);
    if (slept && taken) {
      // Our own wake-up (10-15 us on a VM) is no reason to spin less: judge the budget by when the
      // producer rang, if its stamp (the peer's word, so only trusted within our wait) says so.
      const auto woke = Timeout::Clock::now();
      const auto rung = Deadline(std::chrono::nanoseconds(c.data_rung_at_ns.load(std::memory_order_relaxed)));
      spin_.after_sleep(rung >= started && rung <= woke ? rung - started : woke - started);
    }
    if (taken || taken.status() != Status(STATUS_NO_MORE_ENTRIES)) return taken;
    if (stopped_.load(std::memory_order_acquire)) return Status(STATUS_PORT_DISCONNECTED);
    if (deadline == Deadline::min()) return Status(STATUS_TIMEOUT);
    const auto now = Timeout::Clock::now();
    if (now >= deadline) return Status(STATUS_TIMEOUT);
    if (started == Deadline{}) started = now;
    if (!peer_waking && spin_.spin_until(ready, deadline)) continue;
    auto nothing_yet = [&] {
      return c.head.load(std::memory_order_seq_cst) == tail_ && !stopped_.load(std::memory_order_seq_cst);
    };
    if (sleep_unless(c.consumer_sleeping, c.data_bell, nothing_yet, deadline)) slept = true;
  }
}

bool RingReader::readable() const noexcept {
  return control_->head.load(std::memory_order_acquire) != tail_;
}

void RingReader::stop() noexcept {
  stopped_.store(true, std::memory_order_seq_cst);
  if (control_ != nullptr) ring_bell(control_->data_bell);
}

bool RingReader::leave() noexcept {
  RingControl& c = *control_;
  // The flag first, then the look (both seq_cst, as in sleep_unless): either the producer sees
  // the flag and rings (for the thread in wait_for_bell(), not a reader asleep in receive()), or
  // we see its record.
  c.consumer_sleeping.store(kNobodyReads, std::memory_order_seq_cst);
  return c.head.load(std::memory_order_seq_cst) != tail_ || stopped_.load(std::memory_order_seq_cst);
}

void RingReader::wait_for_bell(uint32_t seen, Deadline deadline) const noexcept {
  futex_wait(control_->data_bell, seen, deadline, kNobodyReads);
}

void RingReader::ring() const noexcept {
  ring_bell(control_->data_bell);
}

// ---- settings ----

int64_t steady_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Timeout::Clock::now().time_since_epoch())
      .count();
}

std::chrono::nanoseconds effective_spin_budget(std::chrono::nanoseconds configured) noexcept {
  if (const char* text = std::getenv("FLTPORT_SPIN_NS"); text != nullptr && *text != '\0') {
    char* end = nullptr;
    const long long value = std::strtoll(text, &end, 10);
    if (end != nullptr && *end == '\0' && value >= 0 && value <= 1'000'000'000) {
      return std::chrono::nanoseconds(value);
    }
  }
  return configured < std::chrono::nanoseconds::zero() ? std::chrono::nanoseconds::zero() : configured;
}

bool shared_memory_allowed() noexcept {
  const char* forced = std::getenv("FLTPORT_TRANSPORT");
  return forced == nullptr || std::strcmp(forced, "socket") != 0;
}

}  // namespace fltport::transport
