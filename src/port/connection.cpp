#include "port/connection.hpp"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/log.hpp"
#include "transport/runtime_dir.hpp"

namespace fltport::detail {

using wire::FrameType;

Result<std::shared_ptr<ServiceConnection>> ServiceConnection::connect(const std::string& port_name,
                                                                      const ConnectOptions& options) {
  if (options.context.size() > kMaxConnectionContextSize) return Status(STATUS_INVALID_PARAMETER);
  auto name = transport::normalize_port_name(port_name);
  if (!name) return name.status();
  auto socket = transport::connect_to(transport::socket_path(transport::runtime_directory(), *name));
  if (!socket) return socket.status();
  // Anyone who can write the runtime directory could listen there: talk only to a filter running
  // as root or as ourselves, before the hello carries our context and reply channel.
  if (Status trusted = transport::check_filter_peer(socket->fd(), port_name); !trusted.ok()) return trusted;

  auto replies = transport::socket_pair();
  if (!replies) return replies.status();
  auto& [reply_socket, filter_end] = *replies;
  const bool ask_shared_memory =
      options.transport == PortTransport::shared_memory && transport::shared_memory_allowed();
  const uint32_t hello_options = (options.sync_handle ? wire::kOptionSyncHandle : 0u) |
                                 (ask_shared_memory ? wire::kOptionSharedMemory : 0u);
  const auto hello =
      wire::make_header(FrameType::hello, wire::kProtocolVersion, options.context.size(), 0, hello_options);
  if (!transport::send_frame(socket->fd(), hello, options.context, stall_deadline(), filter_end.fd()).ok()) {
    return Status(STATUS_PORT_DISCONNECTED);
  }
  filter_end = UniqueFd();  // the filter holds it now
  // ConnectNotify runs before the answer comes; the filter bounds its own handshake.
  std::byte answer[wire::kHeaderSize];
  UniqueFd region_fd;
  const auto received = transport::receive_frame(socket->fd(), answer, stall_deadline(), &region_fd);
  if (!received) {
    // The filter dropped the connection unanswered: it is shutting down or overloaded.
    return Status(received.status() == Status(STATUS_TIMEOUT) ? STATUS_TIMEOUT
                                                              : STATUS_INSUFFICIENT_RESOURCES);
  }
  const auto decoded = wire::decode(std::span(answer).first(*received), wire::Direction::to_service);
  if (!decoded.ok() || decoded.frame.type() != FrameType::welcome) {
    FLTPORT_LOG(warning, "port", "%s: the filter's answer to connect is not valid: %s", port_name.c_str(),
                decoded.ok() ? "not a welcome" : decoded.error);
    return Status(STATUS_PORT_DISCONNECTED);
  }
  if (decoded.frame.header.status != STATUS_SUCCESS) return Status(decoded.frame.header.status);
  transport::SharedRegion region;
  if (decoded.frame.header.aux == wire::kWelcomeSharedMemory) {
    auto mapped = ask_shared_memory && region_fd.valid()
                      ? transport::SharedRegion::map(std::move(region_fd))
                      : Result<transport::SharedRegion>(STATUS_INVALID_PARAMETER);
    if (!mapped) {
      FLTPORT_LOG(warning, "port", "%s: the filter's shared memory is not usable", port_name.c_str());
      return Status(STATUS_PORT_DISCONNECTED);
    }
    region = std::move(*mapped);
  }
  return std::make_shared<ServiceConnection>(std::move(*socket), std::move(reply_socket), std::move(region),
                                             options.spin_budget);
}

ServiceConnection::ServiceConnection(UniqueFd socket, UniqueFd reply_socket, transport::SharedRegion region,
                                     std::chrono::nanoseconds spin_budget)
    : socket_(std::move(socket)), reply_socket_(std::move(reply_socket)), region_(std::move(region)) {
  // Room for the ids in flight from the start: grown on demand, the list allocated in the middle of
  // a steady run the first time more messages were held at once than ever before (two service
  // threads each holding one: tests/alloc, about 1 run in 30).
  constexpr size_t kIdsInFlight = 64;
  awaiting_reply_.reserve(kIdsInFlight);
  requests_.reserve(kIdsInFlight);
  if (!region_.valid()) return;
  using transport::RingDirection;
  const auto spin = transport::effective_spin_budget(spin_budget);
  // Messages come from any filter thread: nothing tells when the next one is due, so no
  // peer-asleep shortcut for the reader. A full ring to a filter that sleeps will not drain soon.
  // And the process whose file operation will make the next message may be waiting for this very
  // CPU: yield it early while spinning (fanotify bench, scanner path, uncached, 2 service threads:
  // yielding after 20 us of spinning 92-103 us per open, after 2 us 60-72).
  constexpr std::chrono::nanoseconds kYieldAfter{2'000};
  from_filter_ = std::make_unique<transport::RingReader>(
      &region_.control(RingDirection::to_service), region_.slots(RingDirection::to_service), socket_.fd(),
      transport::WaitPolicy{spin, nullptr, kYieldAfter}, region_.sync_key(RingDirection::to_service));
  to_filter_ = std::make_unique<transport::RingWriter>(
      &region_.control(RingDirection::to_filter), region_.slots(RingDirection::to_filter), reply_socket_.fd(),
      transport::WaitPolicy{spin, &region_.control(RingDirection::to_filter).consumer_sleeping},
      region_.sync_key(RingDirection::to_filter));
  to_filter_->on_full([this] {
    // Senders read our ring only while they wait for a reply: ask the filter's connection
    // thread to read it. Best effort; the wait for room is bounded either way.
    transport::send_frame(socket_.fd(), wire::make_header(FrameType::drain, 0, 0), {}, Timeout::Clock::now());
  });
  watcher_ = std::thread([this] { watch_socket(); });
}

ServiceConnection::~ServiceConnection() {
  {
    std::lock_guard lock(mutex_);
    fail(STATUS_CANCELLED);
  }
  if (watcher_.joinable()) watcher_.join();
}

void ServiceConnection::watch_socket() noexcept {
  pollfd watched{socket_.fd(), POLLRDHUP, 0};
  while (::poll(&watched, 1, -1) < 0 && errno == EINTR) {
  }
  // The filter ended the connection (or we did): readers take what the ring still holds, then
  // see the end.
  from_filter_->stop();
  to_filter_->stop();
}

Status ServiceConnection::send_to_filter(const wire::FrameHeader& header, ConstBytes payload) noexcept {
  if (!to_filter_) return transport::send_frame(reply_socket_.fd(), header, payload, stall_deadline());
  const Status sent = to_filter_->send(header, payload, stall_limit());
  if (sent == Status(STATUS_DATA_ERROR)) {
    // Every caller fails the connection on a failed send; this says why.
    FLTPORT_LOG(warning, "port", "closing the connection to the filter: %s",
                transport::kCorruptConsumerIndex);
  }
  return sent;
}

void ServiceConnection::close() noexcept {
  std::lock_guard lock(mutex_);
  fail(STATUS_CANCELLED);
}

void ServiceConnection::fail(NTSTATUS status) noexcept {
  if (broken_) return;
  broken_ = true;
  broken_status_ = status;
  socket_.shutdown();
  reply_socket_.shutdown();
  if (from_filter_) from_filter_->stop();
  if (to_filter_) to_filter_->stop();
  sleepers_.for_each([](Waiter* waiter) { waiter->cv.notify_one(); });
}

void ServiceConnection::violation(const char* what) noexcept {
  FLTPORT_LOG(warning, "port", "closing the connection to the filter: %s", what);
  fail(STATUS_PORT_DISCONNECTED);
}

template <class Ready>
Status ServiceConnection::pump(Lock& lock, Ready ready, bool getter, Deadline deadline) {
  Waiter self;
  self.getter = getter;
  Status result = STATUS_SUCCESS;
  for (;;) {
    if (ready()) break;
    if (broken_) {
      result = broken_status_;
      break;
    }
    bool progressed = false;
    if (reading_ && from_filter_ && standby_ == nullptr) {
      progressed = wait_as_standby(lock, self, deadline);
    } else if (reading_) {
      sleepers_.push_back(&self);
      progressed = wait_until(self.cv, lock, deadline);
      sleepers_.erase(&self);
    } else {
      progressed = receive_one(lock, deadline, getter);
    }
    if (!progressed) {
      if (!ready()) result = broken_ ? broken_status_ : STATUS_TIMEOUT;
      break;
    }
  }
  hand_over_reading();
  return result;
}

bool ServiceConnection::wait_as_standby(Lock& lock, Waiter& self, Deadline deadline) {
  standby_ = &self;
  // Read under the lock: whatever would wake us later (a record after leave(), wake(), fail())
  // changes the bell after this, so the wait below cannot miss it; unless the filter, which can
  // write the bell, puts the old value back. Our own wake-ups (close(), a message handed to us)
  // must not depend on it: the wait ends at least every kStandbySlice to look at our own state.
  constexpr std::chrono::milliseconds kStandbySlice{100};
  const uint32_t seen = from_filter_->bell();
  lock.unlock();
  from_filter_->wait_for_bell(seen, std::min(deadline, Timeout::Clock::now() + kStandbySlice));
  lock.lock();
  standby_ = nullptr;
  return deadline == Deadline::max() || Timeout::Clock::now() < deadline;
}

void ServiceConnection::wake(Waiter& waiter) noexcept {
  if (&waiter == standby_) {
    from_filter_->ring();
  } else {
    waiter.cv.notify_one();
  }
}

void ServiceConnection::hand_over_reading() noexcept {
  if (reading_ || broken_) return;
  if (standby_ != nullptr) {
    // The standby reads once the filter publishes, unless we come back first; a record that came
    // before the filter could see we left wakes it now.
    if (from_filter_->leave()) wake(*standby_);
    return;
  }
  // One sleeper takes over (one wake-up, not all of them).
  if (Waiter* next = sleepers_.front()) next->cv.notify_one();
}

void ServiceConnection::wake_for_arrivals(bool reader_is_getter, bool responded) noexcept {
  // The reader takes one message itself if it waits for one; each other message wakes one
  // waiting getter, and a response wakes the callers of send() (few; each checks its own).
  size_t surplus = inbox_.size();
  if (reader_is_getter && surplus != 0) --surplus;
  auto consider = [&](Waiter* waiter) {
    if (waiter->getter ? surplus != 0 : responded) {
      if (waiter->getter) --surplus;
      wake(*waiter);
    }
  };
  if (standby_ != nullptr) consider(standby_);
  sleepers_.for_each(consider);
}

bool ServiceConnection::receive_one(Lock& lock, Deadline deadline, bool reader_is_getter) {
  bool responded = false;
  bool progressed = receive_frame(lock, deadline, responded);
  // One wake-up takes what else is in the ring already (a check of its index, no system call).
  for (size_t more = 0; progressed && from_filter_ && !broken_ && !reading_ && more < transport::kRingSlots &&
                        from_filter_->readable();
       ++more) {
    if (!receive_frame(lock, Deadline::min(), responded)) break;
  }
  if (progressed) wake_for_arrivals(reader_is_getter, responded);
  return progressed;
}

bool ServiceConnection::receive_frame(Lock& lock, Deadline deadline, bool& responded) {
  reading_ = true;
  lock.unlock();
  const MutableBytes buffer = receive_buffer_.span();
  const auto received = from_filter_ ? from_filter_->receive(buffer, deadline)
                                     : transport::receive_frame(socket_.fd(), buffer, deadline);
  lock.lock();
  reading_ = false;
  bool progressed = true;
  if (received) {
    const auto decoded = wire::decode(buffer.first(*received), wire::Direction::to_service);
    if (decoded.ok()) {
      dispatch(decoded.frame);
      responded = responded || decoded.frame.type() == FrameType::response;
    } else {
      violation(decoded.error);
    }
  } else if (received.status() == Status(STATUS_TIMEOUT)) {
    progressed = false;
  } else if (received.status() == Status(STATUS_BUFFER_OVERFLOW)) {
    violation("frame larger than the protocol allows");
  } else if (received.status() == Status(STATUS_DATA_ERROR)) {
    violation(from_filter_->error());
  } else {
    fail(STATUS_PORT_DISCONNECTED);
  }
  return progressed;
}

void ServiceConnection::dispatch(const wire::Frame& frame) {
  const wire::FrameHeader& h = frame.header;
  switch (frame.type()) {
    case FrameType::message: {
      if (credits_outstanding_ == 0) return violation("message nobody asked for");
      --credits_outstanding_;
      Inbound& in = inbox_.back_slot();  // its buffer is reused
      in.id = h.id;
      in.wants_reply = (h.flags & wire::kFlagWantsReply) != 0;
      in.withdrawn = false;
      in.reply_capacity = h.aux;
      in.data.assign(frame.payload.begin(), frame.payload.end());
      inbox_.commit_push();
      return;
    }
    case FrameType::withdrawn:
      forget_awaited(h.id);
      inbox_.for_each([id = h.id](Inbound& in) {
        if (in.id == id) in.withdrawn = true;
      });
      return;
    case FrameType::response: {
      const auto found = std::find_if(requests_.begin(), requests_.end(),
                                      [id = h.id](const auto& entry) { return entry.first == id; });
      if (found == requests_.end()) return violation("response to no request");
      PendingRequest& request = *found->second;
      if (frame.payload.size() > request.output.size()) return violation("response longer than asked for");
      if (!frame.payload.empty())
        std::memcpy(request.output.data(), frame.payload.data(), frame.payload.size());
      request.returned = std::min<size_t>(h.aux, request.output.size());
      request.status = h.status;
      request.done = true;
      return;
    }
    default:
      return violation("unexpected frame type");
  }
}

void ServiceConnection::forget_awaited(uint64_t id) noexcept {
  std::erase_if(awaiting_reply_, [id](const auto& entry) { return entry.first == id; });
}

void ServiceConnection::drain_arrived(Lock& lock) {
  if (reading_) return;  // the active reader takes them as they come
  // An empty ring needs no turn at reading (a look at its index; the socket has no such look).
  // A stopped one does: the turn finds the end and fails the connection, as on the socket.
  if (from_filter_ && !from_filter_->readable() && !from_filter_->stopped()) return;
  while (!broken_ && receive_one(lock, Deadline::min(), false)) {
  }
  hand_over_reading();  // a getter that came while we read went to sleep behind us
}

bool ServiceConnection::need_credit() const noexcept {
  return inbox_.size() + credits_outstanding_ < getters_waiting_;
}

Result<MessageInfo> ServiceConnection::take_message(Lock& lock, MutableBytes buffer, Deadline deadline) {
  const Status waited = pump(
      lock, [this] { return !inbox_.empty(); }, true, deadline);
  --getters_waiting_;
  if (!waited.ok()) return waited;
  const Inbound& in = inbox_.front();
  MessageInfo info;
  info.id = in.id;
  info.wants_reply = in.wants_reply;
  info.reply_capacity = in.reply_capacity;
  info.full_length = in.data.size();
  info.length = std::min(in.data.size(), buffer.size());
  if (info.length != 0) std::memcpy(buffer.data(), in.data.data(), info.length);
  if (in.wants_reply && !in.withdrawn) awaiting_reply_.emplace_back(in.id, in.reply_capacity);
  inbox_.pop_front();
  return info;
}

Result<MessageInfo> ServiceConnection::get_message(MutableBytes buffer, Timeout timeout) {
  Lock lock(mutex_);
  if (broken_) return Status(broken_status_);
  ++getters_waiting_;
  if (need_credit()) {
    ++credits_outstanding_;
    lock.unlock();
    const Status sent = send_to_filter(wire::make_header(FrameType::get, 0, 0, 0, 1), {});
    lock.lock();
    if (!sent.ok()) fail(STATUS_PORT_DISCONNECTED);
  }
  return take_message(lock, buffer, timeout.deadline());
}

Status ServiceConnection::check_reply(uint64_t id, size_t length, uint32_t& capacity) {
  if (length > UINT32_MAX) return STATUS_INVALID_PARAMETER;
  const auto found = std::find_if(awaiting_reply_.begin(), awaiting_reply_.end(),
                                  [id](const auto& entry) { return entry.first == id; });
  if (found == awaiting_reply_.end()) return STATUS_FLT_NO_WAITER_FOR_REPLY;
  capacity = found->second;
  *found = awaiting_reply_.back();
  awaiting_reply_.pop_back();
  return STATUS_SUCCESS;
}

Status ServiceConnection::reply(uint64_t id, ConstBytes data, NTSTATUS reply_status) {
  Lock lock(mutex_);
  drain_arrived(lock);
  if (broken_) return broken_status_;
  uint32_t capacity = 0;
  if (Status checked = check_reply(id, data.size(), capacity); !checked.ok()) return checked;
  // Only what the filter accepts travels; the full length tells it whether it overflowed.
  const ConstBytes payload = data.first(std::min<size_t>(data.size(), capacity));
  const auto header = wire::make_header(FrameType::reply, id, payload.size(), reply_status,
                                        static_cast<uint32_t>(data.size()));
  lock.unlock();
  const Status sent = send_to_filter(header, payload);
  if (sent.ok()) return STATUS_SUCCESS;
  lock.lock();
  fail(STATUS_PORT_DISCONNECTED);
  return broken_status_;
}

Result<MessageInfo> ServiceConnection::reply_and_get(uint64_t id, ConstBytes data, NTSTATUS reply_status,
                                                     MutableBytes next, Timeout timeout) {
  Lock lock(mutex_);
  drain_arrived(lock);
  if (broken_) return Status(broken_status_);
  uint32_t capacity = 0;
  if (Status checked = check_reply(id, data.size(), capacity); !checked.ok()) return checked;
  ++getters_waiting_;
  const bool ask = need_credit();
  if (ask) ++credits_outstanding_;
  const ConstBytes payload = data.first(std::min<size_t>(data.size(), capacity));
  const auto header = wire::make_header(FrameType::reply, id, payload.size(), reply_status,
                                        static_cast<uint32_t>(data.size()), ask ? wire::kFlagGetNext : 0);
  lock.unlock();
  const Status sent = send_to_filter(header, payload);
  lock.lock();
  if (!sent.ok()) fail(STATUS_PORT_DISCONNECTED);
  return take_message(lock, next, timeout.deadline());
}

Status ServiceConnection::send(ConstBytes input, MutableBytes output, size_t& returned_length) {
  returned_length = 0;
  if (input.size() > kMaxMessageSize) return STATUS_INVALID_PARAMETER;
  const size_t capacity = std::min(output.size(), kMaxMessageSize);
  Lock lock(mutex_);
  if (broken_) return broken_status_;
  PendingRequest request;
  request.output = output.first(capacity);
  const uint64_t id = next_request_id_++;
  requests_.emplace_back(id, &request);
  const auto header =
      wire::make_header(FrameType::request, id, input.size(), 0, static_cast<uint32_t>(capacity));
  lock.unlock();
  const Status sent = transport::send_frame(socket_.fd(), header, input, stall_deadline());
  lock.lock();
  if (!sent.ok()) fail(STATUS_PORT_DISCONNECTED);
  const Status waited = pump(
      lock, [&request] { return request.done; }, false, Deadline::max());
  std::erase_if(requests_, [id](const auto& entry) { return entry.first == id; });
  if (!waited.ok()) return waited;
  returned_length = request.returned;
  return request.status;
}

}  // namespace fltport::detail

namespace fltport {

Connection::Connection(std::shared_ptr<detail::ServiceConnection> core) noexcept : core_(std::move(core)) {}
Connection::Connection(Connection&&) noexcept = default;
Connection& Connection::operator=(Connection&& other) noexcept {
  if (this != &other) {
    close();
    core_ = std::move(other.core_);
  }
  return *this;
}
Connection::~Connection() {
  close();
}

Result<Connection> Connection::connect(const std::string& port_name, const ConnectOptions& options) {
  auto core = detail::ServiceConnection::connect(port_name, options);
  if (!core) return core.status();
  return Connection(std::move(*core));
}

Result<MessageInfo> Connection::get_message(MutableBytes buffer, Timeout timeout) {
  if (!core_) return Status(STATUS_INVALID_HANDLE);
  return core_->get_message(buffer, timeout);
}

Status Connection::reply(uint64_t id, ConstBytes data, NTSTATUS reply_status) {
  if (!core_) return STATUS_INVALID_HANDLE;
  return core_->reply(id, data, reply_status);
}

Result<MessageInfo> Connection::reply_and_get(uint64_t id, ConstBytes data, NTSTATUS reply_status,
                                              MutableBytes next, Timeout timeout) {
  if (!core_) return Status(STATUS_INVALID_HANDLE);
  return core_->reply_and_get(id, data, reply_status, next, timeout);
}

Status Connection::send(ConstBytes input, MutableBytes output, size_t& returned_length) {
  returned_length = 0;
  if (!core_) return STATUS_INVALID_HANDLE;
  return core_->send(input, output, returned_length);
}

PortTransport Connection::transport() const noexcept {
  return core_ ? core_->transport() : PortTransport::socket;
}

void Connection::close() noexcept {
  // The core stays until this object is destroyed: other threads may be inside its calls.
  if (core_) core_->close();
}

}  // namespace fltport
