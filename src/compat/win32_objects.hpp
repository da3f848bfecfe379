// The kernel-like objects of the Win32 layer (events, semaphores, threads, completion ports) and
// what the overlapped I/O code needs of them: a handle that can be associated with a completion
// port, and the one way a request completes.
#pragma once

#include <fltport/status.h>
#include <fltport/win32.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "compat/handle_table.hpp"

namespace fltport::compat {

// ---- Waiting ----

// One lock for the state of every waitable object: WaitForMultipleObjects(bWaitAll) then takes all
// its objects at once simply, and a signal can never slip between a waiter's check and its sleep.
// Each waiter sleeps on its own condition variable, listed on the objects it waits for, so a
// signal wakes only the threads that wait for that object.
std::mutex& wait_mutex();

struct WaitBlock {
  std::condition_variable cv;
};

class Waitable : public HandleObject {
 public:
  // All three under wait_mutex().
  virtual bool signalled() const = 0;
  // What a satisfied wait does to the object: an auto-reset event resets, a semaphore counts down.
  virtual void acquire() {}
  void notify_waiters();

  void add_waiter(WaitBlock* block);
  void remove_waiter(WaitBlock* block);
  void close() noexcept override {}

 private:
  std::vector<WaitBlock*> waiters_;
};

// A waitable object with a manual or automatic reset: events, and the signal of a file handle.
class EventObject : public Waitable {
 public:
  EventObject(bool manual_reset, bool initial) : manual_reset_(manual_reset), signalled_(initial) {}
  bool signalled() const override { return signalled_; }
  void acquire() override {
    if (!manual_reset_) signalled_ = false;
  }
  // Take wait_mutex().
  void set();
  void reset();

 private:
  const bool manual_reset_;
  bool signalled_;
};

using Deadline = std::optional<std::chrono::steady_clock::time_point>;  // nullopt: INFINITE
Deadline deadline_after(DWORD milliseconds);

// The Waitable a handle stands for: the object itself, or the signal of a file handle. nullptr if
// the handle names no waitable object.
std::shared_ptr<Waitable> find_waitable(HANDLE handle);

// WaitForMultipleObjects on objects already looked up. Returns WAIT_OBJECT_0 + i or WAIT_TIMEOUT.
DWORD wait_for_objects(const std::vector<std::shared_ptr<Waitable>>& objects, bool wait_all,
                       Deadline deadline);

// ---- Completion ports ----

class CompletionPort final : public HandleObject {
 public:
  struct Packet {
    DWORD bytes = 0;
    ULONG_PTR key = 0;
    OVERLAPPED* overlapped = nullptr;
    NTSTATUS status = STATUS_SUCCESS;
  };
  enum class Got { packets, timeout, closed };

  // A packet for a closed port is dropped, as Windows drops it with the port.
  void post(const Packet& packet);
  // Takes 1..out.size() packets, oldest first, waiting until `deadline` for the first.
  Got get(std::vector<Packet>& out, size_t max, Deadline deadline);
  // CloseHandle: waiting threads return ERROR_ABANDONED_WAIT_0.
  void close() noexcept override;

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Packet> packets_;
  bool closed_ = false;
};

// ---- Overlapped I/O ----

// A handle on which overlapped requests run (a communication port). Handles it through the
// completion port association and the handle's own signal; the owner implements cancellation.
class IoTarget {
 public:
  IoTarget();
  virtual ~IoTarget() = default;

  // CreateIoCompletionPort: false if the handle already has a port.
  bool associate(std::shared_ptr<CompletionPort> port, ULONG_PTR key);
  // Before a request is queued: Internal = STATUS_PENDING, the event and the handle unsignalled.
  void start(OVERLAPPED* overlapped);
  // Completes a request as Windows does: InternalHigh = bytes, Internal = status, then hEvent is set
  // if there is one, and a packet (bytes, key, overlapped) goes to the associated completion port
  // unless hEvent has its low bit set. The OVERLAPPED is not touched afterwards: its owner may
  // reuse it as soon as any of these is visible.
  void complete(OVERLAPPED* overlapped, NTSTATUS status, size_t bytes);
  // CancelIo (this_thread_only) and CancelIoEx (overlapped, or nullptr for all): the number of
  // requests cancelled, each completed with STATUS_CANCELLED.
  virtual size_t cancel(OVERLAPPED* overlapped, bool this_thread_only) = 0;

  // Signalled when a request on this handle completes, reset when one starts.
  const std::shared_ptr<EventObject>& signal() const { return signal_; }
  // GetOverlappedResult without an event: waits until `overlapped` is done or the deadline.
  bool wait_done(OVERLAPPED* overlapped, Deadline deadline);

 private:
  std::mutex mutex_;
  std::shared_ptr<CompletionPort> port_;
  ULONG_PTR key_ = 0;
  const std::shared_ptr<EventObject> signal_;
};

// The status of a request, read as the completing thread published it.
NTSTATUS overlapped_status(const OVERLAPPED* overlapped);
// The event of a request: hEvent without its low bit (the bit that suppresses the packet).
HANDLE overlapped_event(const OVERLAPPED* overlapped);

}  // namespace fltport::compat
