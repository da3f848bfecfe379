// Overlapped FilterGetMessage on one port handle: the requests outstanding, oldest first, and the
// thread that takes messages for them from the connection.
//
// The rule: a message is never delivered to a request that was cancelled, and never lost. The
// pump takes a message from the connection only while a request is outstanding; if every request
// was cancelled while it waited, it holds the message for the next request. A request is either
// taken by the pump (and gets a message) or removed by a cancellation (and gets none), under one
// lock.
#pragma once

#include <fltport/fltuser.h>

#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "compat/win32_objects.hpp"
#include "port/connection.hpp"

namespace fltport::compat {

class MessageRequests {
 public:
  MessageRequests(IoTarget& target, std::shared_ptr<detail::ServiceConnection> connection);
  ~MessageRequests();
  MessageRequests(const MessageRequests&) = delete;
  MessageRequests& operator=(const MessageRequests&) = delete;

  // Queues a request: HRESULT_FROM_WIN32(ERROR_IO_PENDING), even when a message is already there.
  // A connection that already failed: its error, and nothing is queued.
  HRESULT submit(PFILTER_MESSAGE_HEADER buffer, DWORD size, LPOVERLAPPED overlapped);
  // Completes the matching requests with STATUS_CANCELLED; returns how many.
  size_t cancel(LPOVERLAPPED overlapped, bool this_thread_only);
  // CloseHandle: outstanding requests complete with STATUS_CANCELLED; the pump is joined.
  void close() noexcept;

 private:
  struct Request {
    LPOVERLAPPED overlapped;
    PFILTER_MESSAGE_HEADER buffer;
    DWORD size;
    DWORD thread;  // who issued it, for CancelIo
  };
  void pump();
  // Copies the message in buffer_ into the request's buffer and completes it.
  void deliver(const Request& request);
  void fail_all(std::unique_lock<std::mutex>& lock, NTSTATUS status);

  IoTarget& target_;
  const std::shared_ptr<detail::ServiceConnection> connection_;
  std::mutex mutex_;
  std::condition_variable wake_pump_;
  std::deque<Request> requests_;
  bool held_ = false;  // buffer_ holds a message no request took yet
  bool closing_ = false;
  NTSTATUS failed_ = STATUS_SUCCESS;  // the connection's end, once the pump saw it
  // Written by the pump only, and read by others only while held_ (when the pump does not fetch).
  std::vector<std::byte> buffer_;
  MessageInfo info_;
  std::thread thread_;
};

}  // namespace fltport::compat
