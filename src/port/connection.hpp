// The service side of a connection. Any thread of the service may call any member at once; there
// is no thread of the library's own. Whichever caller needs a frame while nobody reads becomes the
// reader, hands what it receives to whom it belongs, and passes the role on: a lone service
// thread costs one system call per received frame, as a bare socket would.
#pragma once

#include <fltport/port.hpp>

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "base/intrusive_list.hpp"
#include "base/ring_queue.hpp"
#include "port/wait.hpp"
#include "transport/shm_ring.hpp"
#include "transport/unix_socket.hpp"
#include "wire/frame.hpp"

namespace fltport::detail {

class ServiceConnection {
 public:
  static Result<std::shared_ptr<ServiceConnection>> connect(const std::string& port_name,
                                                            const ConnectOptions& options);
  // `region` valid: the filter agreed to the shared-memory rings.
  ServiceConnection(UniqueFd socket, UniqueFd reply_socket, transport::SharedRegion region,
                    std::chrono::nanoseconds spin_budget);
  ~ServiceConnection();
  ServiceConnection(const ServiceConnection&) = delete;
  ServiceConnection& operator=(const ServiceConnection&) = delete;
  PortTransport transport() const noexcept {
    return region_.valid() ? PortTransport::shared_memory : PortTransport::socket;
  }

  Result<MessageInfo> get_message(MutableBytes buffer, Timeout timeout);
  Status reply(uint64_t id, ConstBytes data, NTSTATUS reply_status);
  Result<MessageInfo> reply_and_get(uint64_t id, ConstBytes data, NTSTATUS reply_status, MutableBytes next,
                                    Timeout timeout);
  Status send(ConstBytes input, MutableBytes output, size_t& returned_length);
  // Fails every call in progress with STATUS_CANCELLED and every later one likewise.
  void close() noexcept;

 private:
  struct Inbound {
    uint64_t id = 0;
    bool wants_reply = false;
    bool withdrawn = false;  // its waiter timed out before it was taken here
    uint32_t reply_capacity = 0;
    std::vector<std::byte> data;
  };
  struct PendingRequest {
    MutableBytes output;
    bool done = false;
    NTSTATUS status = STATUS_SUCCESS;
    size_t returned = 0;
  };
  using Lock = std::unique_lock<std::mutex>;

  // A thread waiting in pump() while another reads: woken for what it waits for (a message for
  // a getter, a response for a caller of send()) or to take over reading.
  struct Waiter {
    std::condition_variable cv;
    bool getter = false;
    ListHook<Waiter> hook;
  };
  // Waits, reading frames when nobody else does, until `ready()` or the connection breaks.
  template <class Ready>
  Status pump(Lock& lock, Ready ready, bool getter, Deadline deadline);
  // With the rings: waits on the ring's bell as the standby, until the filter publishes while
  // nobody reads, the reader hands this thread something, or the connection breaks.
  bool wait_as_standby(Lock& lock, Waiter& self, Deadline deadline);
  void wake(Waiter& waiter) noexcept;
  void wake_for_arrivals(bool reader_is_getter, bool responded) noexcept;
  // Called by a thread that stops reading: someone must read in its place, now (a sleeper on the
  // socket path) or once the filter publishes (the standby, on the rings).
  void hand_over_reading() noexcept;
  // Takes frames that already arrived (a withdrawal crossing our reply) without waiting.
  void drain_arrived(Lock& lock);
  // Reads a frame (waiting until `deadline`) and, with the rings, every other frame already there.
  bool receive_one(Lock& lock, Deadline deadline, bool reader_is_getter);
  bool receive_frame(Lock& lock, Deadline deadline, bool& responded);
  void dispatch(const wire::Frame& frame);
  void fail(NTSTATUS status) noexcept;
  void violation(const char* what) noexcept;
  Status check_reply(uint64_t id, size_t length, uint32_t& full_length);
  void forget_awaited(uint64_t id) noexcept;
  // Asks the filter for one more message when the waiting getters are not all covered.
  bool need_credit() const noexcept;
  Result<MessageInfo> take_message(Lock& lock, MutableBytes buffer, Deadline deadline);
  // Replies and credits: the ring to the filter, or the reply socket.
  Status send_to_filter(const wire::FrameHeader& header, ConstBytes payload) noexcept;
  // With the rings, nobody reads the socket while all wait on the ring: this thread notices at
  // once that the filter closed or died, and wakes them.
  void watch_socket() noexcept;

  const UniqueFd socket_;
  // Replies and credits travel on a channel of their own, read by the filter thread that waits
  // for them: no hand-over through a reading thread on the filter's side.
  const UniqueFd reply_socket_;
  const transport::SharedRegion region_;
  std::unique_ptr<transport::RingReader> from_filter_;  // every frame from the filter
  std::unique_ptr<transport::RingWriter> to_filter_;    // replies and credits
  std::thread watcher_;
  std::mutex mutex_;
  IntrusiveList<Waiter, &Waiter::hook> sleepers_;
  // With the rings, one waiter sleeps on the ring's bell rather than its condition variable: a
  // reader that takes its message leaves the ring to it without a wake-up, and takes the reading
  // back itself if it returns before the next message: a service answering one event at a time
  // costs no system call however many threads wait, as long as its reader catches the next
  // message spinning; once the reader sleeps too, a record wakes the reader alone (the ring's
  // flag names which kind of sleeper to wake: transport::kAsleep, kNobodyReads).
  Waiter* standby_ = nullptr;
  bool reading_ = false;
  bool broken_ = false;
  NTSTATUS broken_status_ = STATUS_SUCCESS;
  wire::FrameBuffer receive_buffer_;  // owned by the current reader

  // No allocation per message once warm: the inbox keeps its slots' buffers, and the few ids in
  // flight are found by a scan.
  RingQueue<Inbound> inbox_;  // received, not yet taken, oldest first
  uint32_t credits_outstanding_ = 0;
  uint32_t getters_waiting_ = 0;
  std::vector<std::pair<uint64_t, uint32_t>> awaiting_reply_;  // taken here, filter waits: id, capacity
  std::vector<std::pair<uint64_t, PendingRequest*>> requests_;
  uint64_t next_request_id_ = 1;
};

}  // namespace fltport::detail
