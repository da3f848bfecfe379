#include "port/server_port.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/log.hpp"
#include "transport/runtime_dir.hpp"

namespace fltport::detail {

using wire::FrameType;

// Bounds on what one service can make the filter hold.
namespace {
constexpr size_t kMaxPendingRequests = 64;  // FilterSendMessage calls queued for MessageNotify
constexpr size_t kMaxNotifyWorkers = 4;     // MessageNotify calls running at once per connection
constexpr size_t kWithdrawnMemory = 4096;   // timed-out ids remembered to excuse late replies
constexpr size_t kMaxHandshakes = 64;       // connections not yet accepted, per port
}  // namespace

PortConnection::PortConnection(std::shared_ptr<PortShared> shared, UniqueFd socket, PeerCredentials peer)
    : shared_(std::move(shared)), socket_(std::move(socket)), peer_(std::move(peer)) {}

PortConnection::~PortConnection() {
  release_slot();  // a slot holder must never outlive itself in shared_->slot_holders
}

bool PortConnection::is_open() const noexcept {
  std::lock_guard lock(mutex_);
  return !closed_;
}

Result<ReplyInfo> PortConnection::send(ConstBytes message, MutableBytes* reply, Timeout timeout) {
  if (message.size() > kMaxMessageSize) return Status(STATUS_INVALID_PARAMETER);
  OutgoingMessage m;
  m.data = message;
  m.wants_reply = reply != nullptr;
  // A reply frame cannot carry more than kMaxMessageSize bytes: a bigger buffer is not an error.
  if (reply != nullptr) m.reply = reply->first(std::min(reply->size(), kMaxMessageSize));
  m.deadline = timeout.deadline();
  m.id = shared_->next_message_id.fetch_add(1, std::memory_order_relaxed);

  std::unique_lock lock(mutex_);
  while (!closed_ && queue_.size() >= shared_->queue_limit) {
    if (!wait_until(queue_room_, lock, m.deadline) && !closed_ && queue_.size() >= shared_->queue_limit) {
      return Status(STATUS_TIMEOUT);
    }
  }
  if (closed_) return Status(close_reason_);
  if (credits_ > 0 && queue_.empty()) {
    --credits_;
    deliver(m, lock);
  } else {
    queue_.push_back(&m);
  }

  using State = OutgoingMessage::State;
  for (;;) {
    if (m.being_sent) {
      m.changed.wait(lock);
      continue;
    }
    if (m.state == State::replied || (m.state == State::taken && !m.wants_reply)) {
      hand_over_reply_channel(&m);
      return m.result;
    }
    if (m.state == State::failed) {
      hand_over_reply_channel(&m);
      return Status(m.failure);
    }
    // Queued, or taken and waiting for the reply: read the reply channel if nobody does (a queued
    // sender too, since replies carry the credits it waits for), else wait to be told.
    const bool progressed = reply_socket_.valid() && !reply_reader_active_ && !closed_
                                ? read_reply_channel(lock, m.deadline, m.woke_service)
                                : wait_until(m.changed, lock, m.deadline);
    if (progressed || Timeout::Clock::now() < m.deadline) continue;
    if (m.state == State::queued) {
      // Not taken in time: withdrawn before any service saw it.
      queue_.erase(&m);
      queue_room_.notify_one();
      hand_over_reply_channel(&m);
      return Status(STATUS_TIMEOUT);
    }
    if (m.state == State::taken) {
      waiters_.erase(&m);
      remember_withdrawn(m.id);
      hand_over_reply_channel(&m);
      const bool open = !closed_;
      lock.unlock();
      // Best effort and never blocking: tells the service nobody waits for this reply any more.
      if (open) send_to_service(wire::make_header(FrameType::withdrawn, m.id, 0), {}, Timeout::Clock::now());
      return Status(STATUS_TIMEOUT);
    }
  }
}

bool PortConnection::read_reply_channel(std::unique_lock<std::mutex>& lock, Deadline deadline,
                                        bool service_waking) {
  if (!read_reply_frame(lock, deadline, service_waking)) return false;
  // One wake-up takes what else is in the ring already (a check of its index, no system call).
  for (size_t more = 0; more < transport::kRingSlots && from_service_ && !closed_ && !reply_reader_active_ &&
                        from_service_->readable();
       ++more) {
    if (!read_reply_frame(lock, Deadline::min())) break;
  }
  return true;
}

bool PortConnection::read_reply_frame(std::unique_lock<std::mutex>& lock, Deadline deadline,
                                      bool service_waking) {
  reply_reader_active_ = true;
  lock.unlock();
  const MutableBytes buffer = reply_buffer_->span();
  const auto received = from_service_ ? from_service_->receive(buffer, deadline, service_waking)
                                      : transport::receive_frame(reply_socket_.fd(), buffer, deadline);
  lock.lock();
  reply_reader_active_ = false;
  reply_reader_left_.notify_all();
  if (!received) {
    if (received.status() == Status(STATUS_TIMEOUT)) return false;
    if (received.status() == Status(STATUS_BUFFER_OVERFLOW)) {
      violation_locked("frame larger than the protocol allows");
    } else if (received.status() == Status(STATUS_DATA_ERROR)) {
      violation_locked(from_service_->error());
    } else {
      close_locked(STATUS_PORT_DISCONNECTED);
    }
    return true;
  }
  const auto decoded = wire::decode(buffer.first(*received), wire::Direction::to_filter);
  if (!decoded.ok()) {
    violation_locked(decoded.error);
    return true;
  }
  const wire::Frame& frame = decoded.frame;
  if (frame.type() == FrameType::get) {
    on_credits(frame.header.aux, lock);
  } else if (frame.type() == FrameType::reply) {
    on_reply(frame);
    if (!closed_ && (frame.header.flags & wire::kFlagGetNext) != 0) on_credits(1, lock);
  } else {
    violation_locked("a frame other than a reply or a get on the reply channel");
  }
  return true;
}

void PortConnection::drain_reply_channel() noexcept {
  std::unique_lock lock(mutex_);
  if (!reply_socket_.valid() || closed_) return;
  reply_socket_.shutdown();                  // reads return what is queued, then the end
  if (from_service_) from_service_->stop();  // likewise, and wakes a sender asleep on the ring
  while (!closed_) {
    if (reply_reader_active_) {
      reply_reader_left_.wait(lock);
    } else {
      read_reply_channel(lock, Deadline::max());
    }
  }
}

void PortConnection::hand_over_reply_channel(const OutgoingMessage* leaving) noexcept {
  if (!reply_socket_.valid() || reply_reader_active_) return;
  auto other_taken = [leaving](OutgoingMessage* m) {
    return m != leaving && m->state == OutgoingMessage::State::taken;
  };
  if (OutgoingMessage* m = waiters_.find_if(other_taken)) return m->changed.notify_one();
  if (OutgoingMessage* m = queue_.find_if([leaving](OutgoingMessage* q) { return q != leaving; })) {
    m->changed.notify_one();
  }
}

// Sends `m` to the service, a credit already spent on it. Called with the lock held; drops it
// around the system call.
void PortConnection::deliver(OutgoingMessage& m, std::unique_lock<std::mutex>& lock) {
  using State = OutgoingMessage::State;
  m.state = State::sending;
  m.being_sent = true;  // bounded: the send gives up at the message's deadline or the stall limit
  if (m.wants_reply) waiters_.push_back(&m);
  const auto capacity = static_cast<uint32_t>(m.reply.size());
  const auto header =
      wire::make_header(FrameType::message, m.id, m.data.size(), 0, m.wants_reply ? capacity : 0,
                        m.wants_reply ? wire::kFlagWantsReply : 0);
  const transport::LazyDeadline give_up = stall_limit(m.deadline);
  lock.unlock();
  const Status sent = send_to_service(header, m.data, give_up, &m.woke_service);
  lock.lock();
  if (sent.ok()) {
    if (m.state == State::sending) m.state = State::taken;  // a fast reply may already be here
  } else {
    if (m.wants_reply) waiters_.erase(&m);
    if (m.state == State::sending) {
      m.state = State::failed;
      if (sent == Status(STATUS_TIMEOUT) && Timeout::Clock::now() >= m.deadline) {
        // Nothing was sent: the message simply was not taken in time, the credit still stands.
        m.failure = STATUS_TIMEOUT;
        ++credits_;
      } else {
        if (sent == Status(STATUS_TIMEOUT)) {
          FLTPORT_LOG_LIMITED(warning, "port",
                              "%s: service pid %d asked for messages but stopped reading; closing",
                              shared_->name.c_str(), static_cast<int>(peer_.pid));
        }
        close_locked(STATUS_PORT_DISCONNECTED);
        m.failure = close_reason_;
      }
    }
  }
  m.being_sent = false;
  m.changed.notify_one();
}

void PortConnection::close(NTSTATUS reason) noexcept {
  {
    std::lock_guard lock(mutex_);
    close_locked(reason);
  }
  shared_->wake_slot_waiters();  // this connection may be one, in its handshake: it stops now
}

void PortConnection::close_by_filter() noexcept {
  close(STATUS_PORT_DISCONNECTED);
  release_slot();
}

void PortConnection::release_slot() noexcept {
  std::lock_guard lock(shared_->mutex);
  if (!slot_held_) return;
  slot_held_ = false;
  --shared_->connections;
  std::erase(shared_->slot_holders, this);
  shared_->slot_freed.notify_all();
}

bool PortConnection::leaving() const noexcept {
  pollfd hangup{socket_.fd(), POLLRDHUP, 0};
  return ::poll(&hangup, 1, 0) == 1 && (hangup.revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0;
}

bool PortConnection::slot_free_locked(std::unique_lock<std::mutex>& lock) {
  // On Windows a killed service's handles are closed before anyone can see it dead, so a service
  // restarted at once finds the slot free. Here the dead one's connection thread has yet to see
  // the hang-up and run DisconnectNotify: a slot on its way back is waited for, briefly. A full
  // port whose services are all there refuses at once.
  const auto give_up = Timeout::Clock::now() + kLeavingSlotWait;
  // Not while the port closes, nor once this connection is closed or its service gone (leaving()).
  while (shared_->connections >= shared_->max_connections && shared_->listening.load() && !leaving()) {
    const bool one_leaving = std::any_of(shared_->slot_holders.begin(), shared_->slot_holders.end(),
                                         [](const PortConnection* holder) { return holder->leaving(); });
    if (!one_leaving || shared_->slot_freed.wait_until(lock, give_up) == std::cv_status::timeout) break;
  }
  return shared_->connections < shared_->max_connections;
}

void PortConnection::close_locked(NTSTATUS reason) noexcept {
  if (closed_) return;
  closed_ = true;
  close_reason_ = reason;
  for (MessageList* list : {&queue_, &waiters_}) {
    while (OutgoingMessage* m = list->pop_front()) {
      m->state = OutgoingMessage::State::failed;
      m->failure = reason;
      m->changed.notify_one();
    }
  }
  queue_room_.notify_all();
  requests_ready_.notify_all();
  requests_room_.notify_all();
  socket_.shutdown();  // wakes this connection's thread and tells the service at once
  reply_socket_.shutdown();
  if (from_service_) from_service_->stop();
  if (to_service_) to_service_->stop();
}

Status PortConnection::send_to_service(const wire::FrameHeader& header, ConstBytes payload,
                                       transport::LazyDeadline deadline, bool* woke_service) noexcept {
  if (!to_service_) return transport::send_frame(socket_.fd(), header, payload, deadline.get());
  const Status sent = to_service_->send(header, payload, deadline, woke_service);
  // A broken ring is the service's violation, whichever send found it (callers send unlocked).
  if (sent == Status(STATUS_DATA_ERROR)) violation(transport::kCorruptConsumerIndex);
  return sent;
}

bool PortConnection::set_up_shared_memory() {
  auto region = transport::SharedRegion::create();
  if (!region) {
    FLTPORT_LOG_LIMITED(warning, "port", "%s: no shared memory for pid %d; using the socket",
                        shared_->name.c_str(), static_cast<int>(peer_.pid));
    return false;
  }
  using transport::RingDirection;
  const auto spin = transport::effective_spin_budget(shared_->spin_budget);
  // The service is known asleep when its reader of our ring sleeps: then room in that ring takes
  // at least a wake-up, and a writer waiting for it does not spin. Nor does a sender waiting for
  // the reply to a message that had to wake the service (OutgoingMessage::woke_service): the
  // service's wake-up comes first and may need this thread's CPU. Spinning there cost sporadic
  // opens (fanotify bench, scanner path, 1 ms apart) 213 instead of 120 us each.
  const auto* service_asleep = &region->control(RingDirection::to_service).consumer_sleeping;
  std::lock_guard lock(mutex_);
  if (closed_) return false;
  region_ = std::move(*region);
  to_service_ = std::make_unique<transport::RingWriter>(
      &region_.control(RingDirection::to_service), region_.slots(RingDirection::to_service), socket_.fd(),
      transport::WaitPolicy{spin, service_asleep}, region_.sync_key(RingDirection::to_service));
  from_service_ = std::make_unique<transport::RingReader>(
      &region_.control(RingDirection::to_filter), region_.slots(RingDirection::to_filter), reply_socket_.fd(),
      transport::WaitPolicy{spin, nullptr}, region_.sync_key(RingDirection::to_filter));
  shared_memory_.store(true, std::memory_order_release);
  return true;
}

void PortConnection::violation(const char* what) noexcept {
  std::lock_guard lock(mutex_);
  violation_locked(what);
}

void PortConnection::violation_locked(const char* what) noexcept {
  FLTPORT_LOG_LIMITED(warning, "port", "%s: closing the connection of pid %d (uid %u): %s",
                      shared_->name.c_str(), static_cast<int>(peer_.pid), static_cast<unsigned>(peer_.uid),
                      what);
  close_locked(STATUS_PORT_DISCONNECTED);
}

void PortConnection::remember_withdrawn(uint64_t id) {
  withdrawn_.insert(id);
  withdrawn_order_.push_back(id);
  if (withdrawn_order_.size() > kWithdrawnMemory) {
    withdrawn_.erase(withdrawn_order_.front());
    withdrawn_order_.pop_front();
  }
}

void PortConnection::run() noexcept {
  if (handshake()) {
    receive_loop();
    drain_reply_channel();
  }
  close(STATUS_PORT_DISCONNECTED);
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
  if (accepted_) {
    if (shared_->on_disconnect) {
      try {
        shared_->on_disconnect(cookie_);
      } catch (...) {
        FLTPORT_LOG(error, "port", "%s: DisconnectNotify threw; ignored", shared_->name.c_str());
      }
    }
    // Not before: a scanner-style DisconnectNotify closes the port it stored (which frees the
    // slot then), and that must not be the next connection's.
    release_slot();
  }
  kept_handle_ = ClientPort();  // the handle holds this object: break the cycle
  finished_.store(true, std::memory_order_release);
}

bool PortConnection::handshake() {
  const wire::FrameBuffer buffer(wire::kHeaderSize + kMaxConnectionContextSize);
  UniqueFd passed;
  const auto received =
      transport::receive_frame(socket_.fd(), buffer.span(), Timeout::Clock::now() + kHandshakeLimit, &passed);
  if (!received) {
    if (received.status() != Status(STATUS_PORT_DISCONNECTED)) violation("no valid hello in time");
    return false;
  }
  const auto decoded = wire::decode(buffer.span().first(*received), wire::Direction::to_filter);
  if (!decoded.ok() || decoded.frame.type() != FrameType::hello) {
    violation(decoded.ok() ? "first frame is not a hello" : decoded.error);
    return false;
  }
  if (passed.valid()) {
    if (!transport::is_seqpacket_socket(passed.fd())) {
      violation("the reply channel is not a seqpacket socket");
      return false;
    }
    std::lock_guard lock(mutex_);  // close_locked() may be shutting it down from another thread
    if (closed_) return false;
    reply_socket_ = std::move(passed);
    reply_buffer_.emplace();
  }
  auto answer = [this](NTSTATUS status) {
    return transport::send_frame(socket_.fd(), wire::make_header(FrameType::welcome, 0, 0, status), {},
                                 stall_deadline())
        .ok();
  };
  if (!shared_->security.admits(peer_)) {
    FLTPORT_LOG_LIMITED(info, "port", "%s: refused pid %d uid %u", shared_->name.c_str(),
                        static_cast<int>(peer_.pid), static_cast<unsigned>(peer_.uid));
    answer(STATUS_ACCESS_DENIED);
    return false;
  }
  if (!shared_->listening.load()) {
    answer(STATUS_OBJECT_NAME_NOT_FOUND);
    return false;
  }
  {
    std::unique_lock lock(shared_->mutex);
    const bool slot_free = slot_free_locked(lock);
    if (leaving()) return false;       // closed while it waited (the port shut down), or the service left
    if (!shared_->listening.load()) {  // the port closed while it waited
      lock.unlock();
      answer(STATUS_OBJECT_NAME_NOT_FOUND);
      return false;
    }
    if (!slot_free) {
      lock.unlock();
      answer(STATUS_CONNECTION_COUNT_LIMIT);
      return false;
    }
    ++shared_->connections;
    shared_->slot_holders.push_back(this);
    slot_held_ = true;
  }
  // Before ConnectNotify, which may already start senders on this connection.
  const bool shared_memory = (decoded.frame.header.aux & wire::kOptionSharedMemory) != 0 &&
                             shared_->shared_memory && transport::shared_memory_allowed() &&
                             reply_socket_.valid() && set_up_shared_memory();
  ClientPort handle(shared_from_this());
  Status verdict = STATUS_SUCCESS;
  if (shared_->on_connect) {
    try {
      verdict = shared_->on_connect(handle, ConnectRequest{decoded.frame.payload, peer_}, cookie_);
    } catch (...) {
      FLTPORT_LOG(error, "port", "%s: ConnectNotify threw; refusing the connection", shared_->name.c_str());
      verdict = STATUS_UNSUCCESSFUL;
    }
  }
  if (!verdict.ok()) {
    release_slot();
    answer(verdict.code());
    return false;
  }
  accepted_ = true;
  kept_handle_ = std::move(handle);
  const auto welcome = wire::make_header(FrameType::welcome, 0, 0, STATUS_SUCCESS,
                                         shared_memory ? wire::kWelcomeSharedMemory : 0);
  return transport::send_frame(socket_.fd(), welcome, {}, stall_deadline(), shared_memory ? region_.fd() : -1)
      .ok();
}

void PortConnection::receive_loop() {
  const wire::FrameBuffer buffer;
  for (;;) {
    const auto received = transport::receive_frame(socket_.fd(), buffer.span(), Deadline::max());
    if (!received) {
      if (received.status() == Status(STATUS_BUFFER_OVERFLOW))
        violation("frame larger than the protocol allows");
      return;  // the service left, or we closed
    }
    const auto decoded = wire::decode(buffer.span().first(*received), wire::Direction::to_filter);
    if (!decoded.ok()) {
      violation(decoded.error);
      return;
    }
    const wire::Frame& frame = decoded.frame;
    std::unique_lock lock(mutex_);
    if (closed_) return;
    switch (frame.type()) {
      case FrameType::get:
        on_credits(frame.header.aux, lock);
        break;
      case FrameType::reply:
        on_reply(frame);
        if (!closed_ && (frame.header.flags & wire::kFlagGetNext) != 0) on_credits(1, lock);
        break;
      case FrameType::request:
        on_request(frame, lock);
        break;
      case FrameType::drain:
        // The service waits for room in its ring, which only waiting senders read: read it here
        // unless one is reading already.
        while (!closed_ && from_service_ && !reply_reader_active_ &&
               read_reply_channel(lock, Deadline::min())) {
        }
        // A sender that came while we read waits behind us: it reads now.
        hand_over_reply_channel(nullptr);
        break;
      default:
        return violation_locked("unexpected frame after the handshake");
    }
  }
}

void PortConnection::on_credits(uint32_t count, std::unique_lock<std::mutex>& lock) {
  if (credits_ + count > wire::kMaxCredits)
    return violation_locked("asked for more messages than it can hold");
  credits_ += count;
  while (!closed_ && credits_ > 0 && !queue_.empty()) {
    OutgoingMessage* m = queue_.pop_front();
    queue_room_.notify_one();
    --credits_;
    deliver(*m, lock);
  }
}

void PortConnection::on_reply(const wire::Frame& frame) {
  const uint64_t id = frame.header.id;
  OutgoingMessage* found = waiters_.find_if([id](OutgoingMessage* m) { return m->id == id; });
  if (found == nullptr) {
    if (withdrawn_.count(id) != 0) return;  // crossed our timeout on the way: expected, dropped
    return violation_locked("reply for a message it was not waiting to answer");
  }
  OutgoingMessage& m = *found;
  waiters_.erase(found);
  const size_t length = std::min(frame.payload.size(), m.reply.size());
  if (length != 0) std::memcpy(m.reply.data(), frame.payload.data(), length);
  m.result.length = length;
  m.result.full_length = frame.header.aux;
  m.result.reply_status = frame.header.status;
  m.state = OutgoingMessage::State::replied;
  m.changed.notify_one();
}

void PortConnection::on_request(const wire::Frame& frame, std::unique_lock<std::mutex>& lock) {
  while (!closed_ && requests_.size() >= kMaxPendingRequests) requests_room_.wait(lock);
  if (closed_) return;
  Request& request = requests_.back_slot();  // its input buffer is reused
  request.id = frame.header.id;
  request.output_capacity = frame.header.aux;
  request.input.assign(frame.payload.begin(), frame.payload.end());
  requests_.commit_push();
  if (idle_workers_ == 0 && workers_.size() < kMaxNotifyWorkers) {
    workers_.emplace_back([this] { notify_worker(); });
  } else {
    requests_ready_.notify_one();
  }
}

void PortConnection::notify_worker() noexcept {
  std::vector<std::byte> output;
  Request request;
  std::unique_lock lock(mutex_);
  for (;;) {
    ++idle_workers_;
    while (!closed_ && requests_.empty()) requests_ready_.wait(lock);
    --idle_workers_;
    if (closed_) return;
    std::swap(request, requests_.front());  // the slot keeps our old buffer for the next request
    requests_.pop_front();
    requests_room_.notify_one();
    lock.unlock();

    output.resize(request.output_capacity);
    size_t returned = 0;
    Status status = STATUS_INVALID_PARAMETER;  // no MessageNotify: FilterSendMessage fails cleanly
    if (shared_->on_message) {
      try {
        status = shared_->on_message(cookie_, request.input, output, returned);
      } catch (...) {
        FLTPORT_LOG(error, "port", "%s: MessageNotify threw", shared_->name.c_str());
        status = STATUS_UNSUCCESSFUL;
      }
    }
    returned = std::min(returned, output.size());
    const auto header = wire::make_header(FrameType::response, request.id, returned, status.code(),
                                          static_cast<uint32_t>(returned));
    const Status sent = send_to_service(header, std::span(output).first(returned), stall_limit());
    lock.lock();
    if (!sent.ok()) close_locked(STATUS_PORT_DISCONNECTED);
  }
}

// ---------------------------------------------------------------------------------------------

ServerPortCore::ServerPortCore(std::shared_ptr<PortShared> shared, UniqueFd listener,
                               transport::PortName port_name)
    : shared_(std::move(shared)),
      listener_(std::move(listener)),
      port_name_(std::move(port_name)),
      socket_path_(port_name_.socket_path()) {}

Result<std::shared_ptr<ServerPortCore>> ServerPortCore::create(ServerPortOptions options) {
  if (options.max_connections <= 0 || options.queue_limit == 0) return Status(STATUS_INVALID_PARAMETER);
  auto name = transport::normalize_port_name(options.name);
  if (!name) return name.status();
  // The runtime directory is checked and the name's lock taken; the socket is bound in that very
  // directory, replacing only a socket a dead owner left (transport/runtime_dir.hpp).
  auto port_name = transport::PortName::claim(transport::runtime_directory(), *name);
  if (!port_name) return port_name.status();
  auto listener = port_name->listen();
  if (!listener) return listener.status();

  auto shared = std::make_shared<PortShared>();
  shared->name = options.name;
  shared->security = std::move(options.security);
  shared->max_connections = options.max_connections;
  shared->queue_limit = options.queue_limit;
  shared->shared_memory = options.transport == PortTransport::shared_memory;
  shared->spin_budget = options.spin_budget;
  shared->on_connect = std::move(options.on_connect);
  shared->on_disconnect = std::move(options.on_disconnect);
  shared->on_message = std::move(options.on_message);

  std::shared_ptr<ServerPortCore> core(
      new ServerPortCore(std::move(shared), std::move(*listener), std::move(*port_name)));
  core->acceptor_ = std::thread([raw = core.get()] { raw->accept_loop(); });
  {
    std::lock_guard registry(port_registry_mutex());
    port_registry().push_back(core);
  }
  return core;
}

std::mutex& ServerPortCore::port_registry_mutex() {
  static auto* mutex = new std::mutex();  // never destroyed: ports may outlive static destruction
  return *mutex;
}

std::vector<std::weak_ptr<ServerPortCore>>& ServerPortCore::port_registry() {
  static auto* ports = new std::vector<std::weak_ptr<ServerPortCore>>();
  return *ports;
}

std::vector<ServerPortInfo> ServerPortCore::list() {
  std::vector<std::shared_ptr<ServerPortCore>> alive;
  {
    std::lock_guard registry(port_registry_mutex());
    auto& ports = port_registry();
    std::erase_if(ports, [](const std::weak_ptr<ServerPortCore>& port) { return port.expired(); });
    for (const auto& weak : ports) {
      if (auto port = weak.lock()) alive.push_back(std::move(port));
    }
  }
  // Outside the registry lock: dropping the last reference to a port runs its whole shutdown.
  std::vector<ServerPortInfo> infos;
  for (const auto& port : alive) {
    infos.push_back({port->shared_->name, port->socket_path_, port->shared_->max_connections,
                     port->connection_count(), port->shared_->listening.load()});
  }
  return infos;
}

ServerPortCore::~ServerPortCore() {
  shutdown();
}

void ServerPortCore::accept_loop() noexcept {
  // A connection's thread says here when it has ended, so that it is joined and its descriptors,
  // shared memory and stack are released at once, not when the next service happens to connect
  // (which, after the last one left, may be never). Shared with those threads: it outlives us.
  const auto ended = std::make_shared<UniqueFd>(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  for (;;) {
    if (ended->valid()) {
      pollfd ready[2] = {{listener_.fd(), POLLIN, 0}, {ended->fd(), POLLIN, 0}};
      if (::poll(ready, 2, -1) < 0 && errno != EINTR) return;
      if ((ready[1].revents & POLLIN) != 0) {
        uint64_t count = 0;
        [[maybe_unused]] const ssize_t n = ::read(ended->fd(), &count, sizeof count);
        std::lock_guard lock(mutex_);
        reap_finished_locked();
      }
      // (A shut-down listener reports POLLHUP: accept() then fails at once, and we return.)
      if (ready[0].revents == 0) continue;
    }
    auto accepted = transport::accept_from(listener_.fd());
    if (!accepted) {
      if (!shared_->listening.load()) return;
      if (accepted.status() == Status(STATUS_INSUFFICIENT_RESOURCES)) {
        // Out of descriptors: back off instead of spinning; connections that end free some.
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      return;
    }
    auto peer = transport::peer_credentials(accepted->fd());
    if (!peer) continue;
    std::lock_guard lock(mutex_);
    reap_finished_locked();
    if (connections_.size() >= static_cast<size_t>(shared_->max_connections) + kMaxHandshakes) {
      FLTPORT_LOG_LIMITED(warning, "port", "%s: too many connections in progress; dropping pid %d",
                          shared_->name.c_str(), static_cast<int>(peer->pid));
      continue;
    }
    auto connection = std::make_shared<PortConnection>(shared_, std::move(*accepted), std::move(*peer));
    connections_.push_back(Running{connection, std::thread([connection, ended] {
                                     connection->run();
                                     const uint64_t one = 1;
                                     [[maybe_unused]] const ssize_t n =
                                         ::write(ended->fd(), &one, sizeof one);
                                   })});
  }
}

void ServerPortCore::reap_finished_locked() {
  for (auto it = connections_.begin(); it != connections_.end();) {
    if (it->connection->finished()) {
      it->thread.join();
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

size_t ServerPortCore::connection_count() const noexcept {
  std::lock_guard lock(shared_->mutex);
  return static_cast<size_t>(shared_->connections);
}

void ServerPortCore::stop_listening() noexcept {
  {
    std::lock_guard lock(mutex_);
    if (!listening_) return;
    listening_ = false;
  }
  shared_->listening.store(false);
  shared_->wake_slot_waiters();  // a connect waiting for a slot stops
  listener_.shutdown();  // accept() returns at once
  if (acceptor_.joinable()) acceptor_.join();
  // Unlink before giving up the name, so that a new owner's socket is never ours to remove.
  port_name_.remove_socket();
  listener_ = UniqueFd();
  port_name_ = transport::PortName();
}

void ServerPortCore::shutdown() noexcept {
  stop_listening();
  std::list<Running> running;
  {
    std::lock_guard lock(mutex_);
    running.swap(connections_);
  }
  for (Running& r : running) r.connection->close(STATUS_THREAD_IS_TERMINATING);
  for (Running& r : running) {
    if (r.thread.get_id() == std::this_thread::get_id()) {
      r.thread.detach();  // torn down from its own callback: it finishes on its own
    } else {
      r.thread.join();
    }
  }
}

}  // namespace fltport::detail

// ---- the public classes over the core ----

namespace fltport {

ClientPort::ClientPort() noexcept = default;
ClientPort::ClientPort(std::shared_ptr<detail::PortConnection> connection) noexcept
    : connection_(std::move(connection)) {}
ClientPort::ClientPort(ClientPort&&) noexcept = default;
ClientPort& ClientPort::operator=(ClientPort&& other) noexcept {
  if (this != &other) {
    close();
    connection_ = std::move(other.connection_);
  }
  return *this;
}
ClientPort::~ClientPort() {
  close();
}

Result<ReplyInfo> ClientPort::send(ConstBytes message, MutableBytes reply, Timeout timeout) {
  if (!connection_) return Status(STATUS_PORT_DISCONNECTED);
  return connection_->send(message, &reply, timeout);
}

Status ClientPort::post(ConstBytes message, Timeout timeout) {
  if (!connection_) return STATUS_PORT_DISCONNECTED;
  return connection_->send(message, nullptr, timeout).status();
}

void ClientPort::close() noexcept {
  // The connection object stays until this handle is destroyed: another thread may be sending.
  if (connection_) connection_->close_by_filter();
}

bool ClientPort::is_open() const noexcept {
  return connection_ && connection_->is_open();
}

PortTransport ClientPort::transport() const noexcept {
  return connection_ ? connection_->transport() : PortTransport::socket;
}

const PeerCredentials& ClientPort::peer() const noexcept {
  static const PeerCredentials nobody;
  return connection_ ? connection_->peer() : nobody;
}

ServerPort::ServerPort(std::shared_ptr<detail::ServerPortCore> core) noexcept : core_(std::move(core)) {}
ServerPort::ServerPort(ServerPort&&) noexcept = default;
ServerPort& ServerPort::operator=(ServerPort&& other) noexcept {
  if (this != &other) {
    if (core_) core_->shutdown();
    core_ = std::move(other.core_);
  }
  return *this;
}
ServerPort::~ServerPort() {
  if (core_) core_->shutdown();
}

Result<ServerPort> ServerPort::create(ServerPortOptions options) {
  auto core = detail::ServerPortCore::create(std::move(options));
  if (!core) return core.status();
  return ServerPort(std::move(*core));
}

void ServerPort::close() noexcept {
  if (core_) core_->stop_listening();
}

const std::string& ServerPort::name() const noexcept {
  static const std::string none;
  return core_ ? core_->name() : none;
}

size_t ServerPort::connection_count() const noexcept {
  return core_ ? core_->connection_count() : 0;
}

std::vector<ServerPortInfo> list_server_ports() {
  return detail::ServerPortCore::list();
}

}  // namespace fltport
