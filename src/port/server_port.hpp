// The filter side of a port: the listening ServerPortCore and one PortConnection per service.
//
// Flow control: a service receives a message only after asking for one (a `get` frame gives a
// credit per waiting FilterGetMessage). Until then the message stays queued here, so a timeout can
// withdraw it, the queue is bounded, and a service that does not read cannot fill its socket.
#pragma once

#include <fltport/port.hpp>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <list>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_set>
#include <vector>

#include "base/intrusive_list.hpp"
#include "base/ring_queue.hpp"
#include "port/wait.hpp"
#include "transport/runtime_dir.hpp"
#include "transport/shm_ring.hpp"
#include "transport/unix_socket.hpp"
#include "wire/frame.hpp"

namespace fltport::detail {

class PortConnection;

// What a port and its connections share; outlives the listener because FltCloseCommunicationPort
// leaves connections working.
struct PortShared {
  std::string name;
  PortSecurity security;
  int max_connections = 1;
  size_t queue_limit = 1024;
  bool shared_memory = true;  // offered to services that ask for it
  std::chrono::nanoseconds spin_budget{0};
  ConnectHandler on_connect;
  DisconnectHandler on_disconnect;
  MessageHandler on_message;
  std::atomic<uint64_t> next_message_id{1};  // unique per port, never reused
  std::atomic<bool> listening{true};

  std::mutex mutex;
  int connections = 0;  // accepted and not yet through DisconnectNotify
  std::vector<const PortConnection*> slot_holders;  // those `connections`; each removes itself
  std::condition_variable slot_freed;

  // Wakes connects waiting for a slot (PortConnection::slot_free_locked) to look again: a slot
  // came free, the port stopped listening, or a waiting connection was closed.
  void wake_slot_waiters() noexcept {
    { std::lock_guard lock(mutex); }  // a waiter between its check and its wait sees the change
    slot_freed.notify_all();
  }
};

class PortConnection : public std::enable_shared_from_this<PortConnection> {
 public:
  PortConnection(std::shared_ptr<PortShared> shared, UniqueFd socket, PeerCredentials peer);
  ~PortConnection();

  // FltSendMessage: `reply` null = no reply wanted.
  Result<ReplyInfo> send(ConstBytes message, MutableBytes* reply, Timeout timeout);
  // Ends the connection: waiters and queued senders fail with `reason`.
  void close(NTSTATUS reason) noexcept;
  // FltCloseClientPort: closes, and frees the connection's MaxConnections slot at once (else it is
  // freed when DisconnectNotify has returned).
  void close_by_filter() noexcept;
  bool is_open() const noexcept;
  const PeerCredentials& peer() const noexcept { return peer_; }
  PortTransport transport() const noexcept {
    return shared_memory_.load(std::memory_order_acquire) ? PortTransport::shared_memory
                                                          : PortTransport::socket;
  }

  // The connection's thread: handshake, then frames until the end, then DisconnectNotify.
  void run() noexcept;
  bool finished() const noexcept { return finished_.load(std::memory_order_acquire); }

 private:
  // One FltSendMessage call, on its caller's stack for the whole call.
  struct OutgoingMessage {
    enum class State { queued, sending, taken, replied, failed };
    uint64_t id = 0;
    ConstBytes data;
    MutableBytes reply;
    bool wants_reply = false;
    Deadline deadline;
    State state = State::queued;
    NTSTATUS failure = STATUS_SUCCESS;
    ReplyInfo result;
    // deliver() is using this object without the lock: its owner may not return, even if the reply
    // was already handed over by another thread.
    bool being_sent = false;
    bool woke_service = false;  // the service's reader slept when this went (shared memory)
    std::condition_variable changed;
    ListHook<OutgoingMessage> hook;  // in queue_ or waiters_
  };
  using MessageList = IntrusiveList<OutgoingMessage, &OutgoingMessage::hook>;
  struct Request {
    uint64_t id = 0;
    uint32_t output_capacity = 0;
    std::vector<std::byte> input;
  };

  bool handshake();
  void receive_loop();
  void on_credits(uint32_t count, std::unique_lock<std::mutex>& lock);
  void on_reply(const wire::Frame& frame);  // with mutex_ held
  void on_request(const wire::Frame& frame, std::unique_lock<std::mutex>& lock);
  void deliver(OutgoingMessage& message, std::unique_lock<std::mutex>& lock);
  void notify_worker() noexcept;
  void close_locked(NTSTATUS reason) noexcept;
  void violation(const char* what) noexcept;
  void release_slot() noexcept;
  // The service has gone or we closed: the slot is on its way back (DisconnectNotify still runs).
  bool leaving() const noexcept;
  // Under shared_->mutex: waits a little while the port is full and one holder is leaving.
  bool slot_free_locked(std::unique_lock<std::mutex>& lock);
  void violation_locked(const char* what) noexcept;
  // A sender waiting for its reply reads the reply channel itself; false at the deadline.
  // `service_waking`: the reply waited for answers a message that had to wake the service.
  bool read_reply_channel(std::unique_lock<std::mutex>& lock, Deadline deadline, bool service_waking = false);
  bool read_reply_frame(std::unique_lock<std::mutex>& lock, Deadline deadline, bool service_waking = false);
  // At the end of the control stream: takes the replies the service sent before it left, so that
  // the two channels' order does not lose a reply.
  void drain_reply_channel() noexcept;
  // Wakes one other waiting sender to take over reading the reply channel.
  void hand_over_reply_channel(const OutgoingMessage* leaving) noexcept;
  void remember_withdrawn(uint64_t id);
  // The frames to the service (messages, withdrawn notices, responses): its ring, or the socket.
  // `woke_service`, if given: whether the service's reader slept and this send rang for it.
  // Called without the lock; a ring the service broke closes the connection here, with the reason.
  Status send_to_service(const wire::FrameHeader& header, ConstBytes payload,
                         transport::LazyDeadline deadline, bool* woke_service = nullptr) noexcept;
  // Sets up the rings before the welcome that hands them over; false if that failed.
  bool set_up_shared_memory();

  const std::shared_ptr<PortShared> shared_;
  const UniqueFd socket_;
  // The service's replies and credits, on a channel of their own (passed at hello), are read by
  // whichever sender waits (leader/follower): a reply wakes its waiter directly, and a sender
  // that waits for a credit takes it and sends its message itself. Without that channel both come
  // on `socket_` through this connection's thread.
  UniqueFd reply_socket_;
  std::optional<wire::FrameBuffer> reply_buffer_;  // once the service passed its reply channel
  // The shared-memory path: the service's replies and credits come on `from_service_` (with
  // `reply_socket_` carrying only frames too large for a slot), every frame to it on `to_service_`
  // (with `socket_` carrying the large ones). Set in the handshake, before any message can flow.
  transport::SharedRegion region_;
  std::unique_ptr<transport::RingWriter> to_service_;
  std::unique_ptr<transport::RingReader> from_service_;
  std::atomic<bool> shared_memory_{false};
  bool reply_reader_active_ = false;
  std::condition_variable reply_reader_left_;
  const PeerCredentials peer_;
  std::atomic<bool> finished_{false};

  mutable std::mutex mutex_;
  std::condition_variable queue_room_;
  bool closed_ = false;
  NTSTATUS close_reason_ = STATUS_PORT_DISCONNECTED;
  uint32_t credits_ = 0;
  // Each sender's message lives on its stack and is in one list at a time: no allocation per
  // message. Waiters are few (one per sending thread), so finding one by id scans.
  MessageList queue_;                       // waiting for a credit, oldest first
  MessageList waiters_;                     // delivered, waiting for a reply
  std::deque<uint64_t> withdrawn_order_;    // waiters that gave up: a late reply
  std::unordered_set<uint64_t> withdrawn_;  // to them is no offence

  // FilterSendMessage requests run on workers so that MessageNotify may itself call
  // FltSendMessage on this connection while this thread keeps reading replies.
  RingQueue<Request> requests_;
  std::condition_variable requests_ready_;
  std::condition_variable requests_room_;
  std::vector<std::thread> workers_;
  size_t idle_workers_ = 0;

  bool accepted_ = false;
  bool slot_held_ = false;  // counted in shared_->connections; guarded by shared_->mutex
  void* cookie_ = nullptr;
  ClientPort kept_handle_;  // the handle ConnectNotify did not take, closed at the end
};

class ServerPortCore {
 public:
  static Result<std::shared_ptr<ServerPortCore>> create(ServerPortOptions options);
  ~ServerPortCore();

  void stop_listening() noexcept;  // FltCloseCommunicationPort
  void shutdown() noexcept;        // and close every connection, waiting for their threads
  const std::string& name() const noexcept { return shared_->name; }
  size_t connection_count() const noexcept;
  static std::vector<ServerPortInfo> list();

 private:
  static std::mutex& port_registry_mutex();
  static std::vector<std::weak_ptr<ServerPortCore>>& port_registry();
  ServerPortCore(std::shared_ptr<PortShared> shared, UniqueFd listener, transport::PortName port_name);
  void accept_loop() noexcept;
  void reap_finished_locked();

  struct Running {
    std::shared_ptr<PortConnection> connection;
    std::thread thread;
  };

  const std::shared_ptr<PortShared> shared_;
  UniqueFd listener_;
  transport::PortName port_name_;  // the runtime directory, the lock on the name, the socket file
  const std::string socket_path_;
  std::thread acceptor_;

  std::mutex mutex_;
  bool listening_ = true;
  std::list<Running> connections_;
};

}  // namespace fltport::detail
