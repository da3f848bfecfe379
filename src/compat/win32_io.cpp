// I/O completion ports, the completion of overlapped requests, GetOverlappedResult and CancelIo(Ex).
#include <atomic>

#include "compat/win32_objects.hpp"

namespace fltport::compat {

// ---- CompletionPort ----

void CompletionPort::post(const Packet& packet) {
  std::lock_guard lock(mutex_);
  if (closed_) return;
  packets_.push_back(packet);
  cv_.notify_one();
}

CompletionPort::Got CompletionPort::get(std::vector<Packet>& out, size_t max, Deadline deadline) {
  std::unique_lock lock(mutex_);
  const auto ready = [&] { return closed_ || !packets_.empty(); };
  if (!deadline) {
    cv_.wait(lock, ready);
  } else if (!cv_.wait_until(lock, *deadline, ready)) {
    return Got::timeout;
  }
  if (closed_) return Got::closed;
  out.clear();
  while (!packets_.empty() && out.size() < max) {
    out.push_back(packets_.front());
    packets_.pop_front();
  }
  // Others may wait while packets remain (a wake-up can be consumed by a thread taking one).
  if (!packets_.empty()) cv_.notify_one();
  return Got::packets;
}

void CompletionPort::close() noexcept {
  std::lock_guard lock(mutex_);
  closed_ = true;
  packets_.clear();
  cv_.notify_all();
}

// ---- IoTarget ----

namespace {

std::atomic_ref<ULONG_PTR> internal_of(OVERLAPPED* overlapped) {
  return std::atomic_ref<ULONG_PTR>(overlapped->Internal);
}

// hEvent with its low bit set: signal the event, queue no packet (documented for
// GetQueuedCompletionStatus).
constexpr uintptr_t kNoPacketBit = 1;

}  // namespace

HANDLE overlapped_event(const OVERLAPPED* overlapped) {
  return reinterpret_cast<HANDLE>(reinterpret_cast<uintptr_t>(overlapped->hEvent) & ~kNoPacketBit);
}

NTSTATUS overlapped_status(const OVERLAPPED* overlapped) {
  const ULONG_PTR value = internal_of(const_cast<OVERLAPPED*>(overlapped)).load(std::memory_order_acquire);
  return static_cast<NTSTATUS>(static_cast<uint32_t>(value));
}

IoTarget::IoTarget() : signal_(std::make_shared<EventObject>(true, false)) {}

bool IoTarget::associate(std::shared_ptr<CompletionPort> port, ULONG_PTR key) {
  std::lock_guard lock(mutex_);
  if (port_) return false;
  port_ = std::move(port);
  key_ = key;
  return true;
}

void IoTarget::start(OVERLAPPED* overlapped) {
  overlapped->InternalHigh = 0;
  internal_of(overlapped).store(static_cast<uint32_t>(STATUS_PENDING), std::memory_order_relaxed);
  if (HANDLE event = overlapped_event(overlapped)) {
    if (auto object = HandleTable::instance().find<EventObject>(event)) object->reset();
  }
  signal_->reset();
}

void IoTarget::complete(OVERLAPPED* overlapped, NTSTATUS status, size_t bytes) {
  // Everything is read before Internal is published: from then on the owner may reuse the
  // OVERLAPPED (HasOverlappedIoCompleted polls it).
  const HANDLE event = overlapped_event(overlapped);
  const bool packet = (reinterpret_cast<uintptr_t>(overlapped->hEvent) & kNoPacketBit) == 0;
  std::shared_ptr<CompletionPort> port;
  ULONG_PTR key = 0;
  {
    std::lock_guard lock(mutex_);
    port = port_;
    key = key_;
  }
  overlapped->InternalHigh = bytes;
  {
    // Under wait_mutex(), so that wait_done() cannot check Internal between this store and the
    // signal below and then sleep through it.
    std::lock_guard lock(wait_mutex());
    internal_of(overlapped).store(static_cast<uint32_t>(status), std::memory_order_release);
  }
  if (event != nullptr) {
    if (auto object = HandleTable::instance().find<EventObject>(event)) object->set();
  }
  if (packet && port) port->post({static_cast<DWORD>(bytes), key, overlapped, status});
  signal_->set();
}

bool IoTarget::wait_done(OVERLAPPED* overlapped, Deadline deadline) {
  std::unique_lock lock(wait_mutex());
  const auto done = [&] { return overlapped_status(overlapped) != STATUS_PENDING; };
  if (done()) return true;
  WaitBlock block;
  signal_->add_waiter(&block);
  bool finished = true;
  while (!done()) {
    if (!deadline) {
      block.cv.wait(lock);
    } else if (block.cv.wait_until(lock, *deadline) == std::cv_status::timeout) {
      finished = done();
      break;
    }
  }
  signal_->remove_waiter(&block);
  return finished;
}

}  // namespace fltport::compat

using namespace fltport::compat;

namespace {

BOOL overlapped_result(HANDLE hFile, LPOVERLAPPED overlapped, LPDWORD bytes, DWORD milliseconds) {
  if (overlapped == nullptr || bytes == nullptr) {
    SetLastError(ERROR_INVALID_PARAMETER);
    return FALSE;
  }
  // As on Windows, hFile is needed only to wait on it: the result of a request stays readable after
  // its handle was closed.
  if (overlapped_status(overlapped) == STATUS_PENDING) {
    if (milliseconds == 0) {
      SetLastError(ERROR_IO_INCOMPLETE);
      return FALSE;
    }
    const Deadline deadline = deadline_after(milliseconds);
    const HANDLE event = overlapped_event(overlapped);
    if (event != nullptr) {
      // Windows waits on the event the request will set; a wait that ends with the request still
      // pending (someone else set the event) waits again.
      auto object = find_waitable(event);
      if (!object) {
        SetLastError(ERROR_INVALID_HANDLE);
        return FALSE;
      }
      while (overlapped_status(overlapped) == STATUS_PENDING) {
        if (wait_for_objects({object}, false, deadline) == WAIT_TIMEOUT) break;
      }
    } else {
      auto target = HandleTable::instance().find<IoTarget>(hFile);
      if (!target) {
        SetLastError(ERROR_INVALID_HANDLE);
        return FALSE;
      }
      target->wait_done(overlapped, deadline);
    }
    if (overlapped_status(overlapped) == STATUS_PENDING) {
      SetLastError(WAIT_TIMEOUT);
      return FALSE;
    }
  }
  const NTSTATUS status = overlapped_status(overlapped);
  *bytes = static_cast<DWORD>(overlapped->InternalHigh);
  if (!NT_SUCCESS(status)) {
    SetLastError(RtlNtStatusToDosError(status));
    return FALSE;
  }
  return TRUE;
}

}  // namespace

extern "C" HANDLE WINAPI CreateIoCompletionPort(HANDLE FileHandle, HANDLE ExistingCompletionPort,
                                                ULONG_PTR CompletionKey, DWORD) {
  auto& table = HandleTable::instance();
  if (FileHandle == INVALID_HANDLE_VALUE) {
    if (ExistingCompletionPort != nullptr) {
      SetLastError(ERROR_INVALID_PARAMETER);
      return nullptr;
    }
    return table.insert(std::make_shared<CompletionPort>());
  }
  auto target = table.find<IoTarget>(FileHandle);
  if (!target) {
    SetLastError(ERROR_INVALID_HANDLE);
    return nullptr;
  }
  std::shared_ptr<CompletionPort> port;
  HANDLE port_handle = ExistingCompletionPort;
  if (ExistingCompletionPort != nullptr) {
    port = table.find<CompletionPort>(ExistingCompletionPort);
    if (!port) {
      SetLastError(ERROR_INVALID_HANDLE);
      return nullptr;
    }
  } else {
    port = std::make_shared<CompletionPort>();
  }
  if (!target->associate(port, CompletionKey)) {
    SetLastError(ERROR_INVALID_PARAMETER);  // one port per handle (STATUS_INVALID_PARAMETER)
    return nullptr;
  }
  if (port_handle == nullptr) port_handle = table.insert(std::move(port));
  return port_handle;
}

namespace {
// The wait both GetQueuedCompletionStatus calls share: false with the last error set (WAIT_TIMEOUT,
// or ERROR_ABANDONED_WAIT_0 once the port is closed), true with 1..max packets.
bool take_packets(fltport::compat::CompletionPort& port,
                  std::vector<fltport::compat::CompletionPort::Packet>& packets, size_t max,
                  DWORD milliseconds) {
  switch (port.get(packets, max, deadline_after(milliseconds))) {
    case fltport::compat::CompletionPort::Got::timeout:
      SetLastError(WAIT_TIMEOUT);
      return false;
    case fltport::compat::CompletionPort::Got::closed:
      SetLastError(ERROR_ABANDONED_WAIT_0);
      return false;
    case fltport::compat::CompletionPort::Got::packets:
      break;
  }
  return true;
}
}  // namespace

extern "C" BOOL WINAPI GetQueuedCompletionStatus(HANDLE CompletionPort, LPDWORD lpNumberOfBytesTransferred,
                                                 PULONG_PTR lpCompletionKey, LPOVERLAPPED* lpOverlapped,
                                                 DWORD dwMilliseconds) {
  auto port = HandleTable::instance().find<fltport::compat::CompletionPort>(CompletionPort);
  if (!port) {
    SetLastError(ERROR_INVALID_HANDLE);
    return FALSE;
  }
  if (lpNumberOfBytesTransferred == nullptr || lpCompletionKey == nullptr || lpOverlapped == nullptr) {
    SetLastError(ERROR_INVALID_PARAMETER);
    return FALSE;
  }
  *lpOverlapped = nullptr;
  std::vector<fltport::compat::CompletionPort::Packet> packets;
  if (!take_packets(*port, packets, 1, dwMilliseconds)) return FALSE;
  const auto& packet = packets.front();
  *lpNumberOfBytesTransferred = packet.bytes;
  *lpCompletionKey = packet.key;
  *lpOverlapped = packet.overlapped;
  // A failed request (STATUS_BUFFER_OVERFLOW included, as NT_SUCCESS is false for it) returns FALSE
  // with its packet, so that the caller can tell it from a timeout by *lpOverlapped.
  if (!NT_SUCCESS(packet.status)) {
    SetLastError(RtlNtStatusToDosError(packet.status));
    return FALSE;
  }
  return TRUE;
}

extern "C" BOOL WINAPI GetQueuedCompletionStatusEx(HANDLE CompletionPort,
                                                   LPOVERLAPPED_ENTRY lpCompletionPortEntries, ULONG ulCount,
                                                   PULONG ulNumEntriesRemoved, DWORD dwMilliseconds, BOOL) {
  auto port = HandleTable::instance().find<fltport::compat::CompletionPort>(CompletionPort);
  if (!port) {
    SetLastError(ERROR_INVALID_HANDLE);
    return FALSE;
  }
  if (lpCompletionPortEntries == nullptr || ulCount == 0 || ulNumEntriesRemoved == nullptr) {
    SetLastError(ERROR_INVALID_PARAMETER);
    return FALSE;
  }
  *ulNumEntriesRemoved = 0;
  std::vector<fltport::compat::CompletionPort::Packet> packets;
  if (!take_packets(*port, packets, ulCount, dwMilliseconds)) return FALSE;
  for (size_t i = 0; i < packets.size(); ++i) {
    OVERLAPPED_ENTRY& entry = lpCompletionPortEntries[i];
    entry.lpCompletionKey = packets[i].key;
    entry.lpOverlapped = packets[i].overlapped;
    entry.Internal = static_cast<uint32_t>(packets[i].status);
    entry.dwNumberOfBytesTransferred = packets[i].bytes;
  }
  *ulNumEntriesRemoved = static_cast<ULONG>(packets.size());
  return TRUE;
}

extern "C" BOOL WINAPI PostQueuedCompletionStatus(HANDLE CompletionPort, DWORD dwNumberOfBytesTransferred,
                                                  ULONG_PTR dwCompletionKey, LPOVERLAPPED lpOverlapped) {
  auto port = HandleTable::instance().find<fltport::compat::CompletionPort>(CompletionPort);
  if (!port) {
    SetLastError(ERROR_INVALID_HANDLE);
    return FALSE;
  }
  port->post({dwNumberOfBytesTransferred, dwCompletionKey, lpOverlapped, STATUS_SUCCESS});
  return TRUE;
}

extern "C" BOOL WINAPI GetOverlappedResult(HANDLE hFile, LPOVERLAPPED lpOverlapped,
                                           LPDWORD lpNumberOfBytesTransferred, BOOL bWait) {
  return overlapped_result(hFile, lpOverlapped, lpNumberOfBytesTransferred, bWait ? INFINITE : 0);
}

extern "C" BOOL WINAPI GetOverlappedResultEx(HANDLE hFile, LPOVERLAPPED lpOverlapped,
                                             LPDWORD lpNumberOfBytesTransferred, DWORD dwMilliseconds, BOOL) {
  return overlapped_result(hFile, lpOverlapped, lpNumberOfBytesTransferred, dwMilliseconds);
}

extern "C" BOOL WINAPI CancelIo(HANDLE hFile) {
  auto target = HandleTable::instance().find<IoTarget>(hFile);
  if (!target) {
    SetLastError(ERROR_INVALID_HANDLE);
    return FALSE;
  }
  target->cancel(nullptr, true);
  return TRUE;
}

extern "C" BOOL WINAPI CancelIoEx(HANDLE hFile, LPOVERLAPPED lpOverlapped) {
  auto target = HandleTable::instance().find<IoTarget>(hFile);
  if (!target) {
    SetLastError(ERROR_INVALID_HANDLE);
    return FALSE;
  }
  if (target->cancel(lpOverlapped, false) == 0) {
    SetLastError(ERROR_NOT_FOUND);
    return FALSE;
  }
  return TRUE;
}
