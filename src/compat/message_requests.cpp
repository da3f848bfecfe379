#include "compat/message_requests.hpp"

#include <cstring>

namespace fltport::compat {

MessageRequests::MessageRequests(IoTarget& target, std::shared_ptr<detail::ServiceConnection> connection)
    : target_(target), connection_(std::move(connection)) {}

MessageRequests::~MessageRequests() {
  close();
}

HRESULT MessageRequests::submit(PFILTER_MESSAGE_HEADER buffer, DWORD size, LPOVERLAPPED overlapped) {
  // An hEvent that is no event fails the call, as the I/O manager refuses it (STATUS_INVALID_HANDLE).
  if (HANDLE event = overlapped_event(overlapped)) {
    if (!HandleTable::instance().find<EventObject>(event)) return HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
  }
  std::unique_lock lock(mutex_);
  if (closing_) return HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
  const Request request{overlapped, buffer, size, GetCurrentThreadId()};
  if (held_) {
    // The pump waits for a request while held_: buffer_ is ours to read.
    target_.start(overlapped);
    deliver(request);
    held_ = false;
    return HRESULT_FROM_WIN32(ERROR_IO_PENDING);
  }
  if (failed_ != STATUS_SUCCESS) return FltportHResultFromNtStatus(failed_);
  target_.start(overlapped);
  requests_.push_back(request);
  if (!thread_.joinable()) {
    buffer_.resize(kMaxMessageSize);
    thread_ = std::thread([this] { pump(); });
  }
  wake_pump_.notify_one();
  return HRESULT_FROM_WIN32(ERROR_IO_PENDING);
}

size_t MessageRequests::cancel(LPOVERLAPPED overlapped, bool this_thread_only) {
  const DWORD self = GetCurrentThreadId();
  std::vector<Request> cancelled;
  {
    std::lock_guard lock(mutex_);
    for (auto it = requests_.begin(); it != requests_.end();) {
      if ((overlapped == nullptr || it->overlapped == overlapped) &&
          (!this_thread_only || it->thread == self)) {
        cancelled.push_back(*it);
        it = requests_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const Request& request : cancelled) target_.complete(request.overlapped, STATUS_CANCELLED, 0);
  return cancelled.size();
}

void MessageRequests::close() noexcept {
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
    wake_pump_.notify_one();
  }
  // Ends a get_message in progress (STATUS_CANCELLED), and with it the pump.
  connection_->close();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void MessageRequests::pump() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_pump_.wait(lock, [&] { return closing_ || (!requests_.empty() && !held_); });
    if (closing_) break;
    lock.unlock();
    auto message =
        connection_->get_message(MutableBytes(buffer_.data(), buffer_.size()), Timeout::infinite());
    lock.lock();
    if (!message) {
      fail_all(lock, message.status().code());
      return;
    }
    info_ = *message;
    if (requests_.empty()) {
      held_ = true;  // every request was cancelled meanwhile: the next one gets it
      continue;
    }
    const Request request = requests_.front();
    requests_.pop_front();
    lock.unlock();
    deliver(request);
    lock.lock();
  }
  fail_all(lock, STATUS_CANCELLED);
}

void MessageRequests::fail_all(std::unique_lock<std::mutex>& lock, NTSTATUS status) {
  failed_ = status;
  std::deque<Request> failed;
  failed.swap(requests_);
  lock.unlock();
  for (const Request& request : failed) target_.complete(request.overlapped, status, 0);
  lock.lock();
}

void MessageRequests::deliver(const Request& request) {
  // As the synchronous FilterGetMessage writes it: the header, then the data cut to the buffer.
  const size_t room = request.size - sizeof(FILTER_MESSAGE_HEADER);
  const size_t copied = std::min(info_.length, room);
  FILTER_MESSAGE_HEADER header{};
  header.ReplyLength =
      info_.wants_reply ? static_cast<ULONG>(info_.reply_capacity + sizeof(FILTER_REPLY_HEADER)) : 0;
  header.MessageId = info_.id;
  auto* bytes = reinterpret_cast<std::byte*>(request.buffer);
  std::memcpy(bytes, &header, sizeof header);
  if (copied != 0) std::memcpy(bytes + sizeof header, buffer_.data(), copied);
  const NTSTATUS status = info_.full_length > copied ? STATUS_BUFFER_OVERFLOW : STATUS_SUCCESS;
  target_.complete(request.overlapped, status, sizeof header + copied);
}

}  // namespace fltport::compat
