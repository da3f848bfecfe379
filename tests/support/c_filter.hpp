// Helpers for tests written against the C API: a filter (FltRegisterFilter + communication ports)
// whose callbacks record what they saw, service-side buffers, byte patterns, timeouts and the
// per-test fixture that owns the runtime directory. Header-only.
#pragma once

#include <fltport/fltkernel.h>
#include <fltport/fltuser.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/process.hpp"
#include "support/runtime_dir.hpp"

namespace fltport::test {

inline constexpr const wchar_t* kPortName = L"\\ScannerPort";
inline constexpr const char* kNormalizedPortName = "scannerport";

// ---- comparing NTSTATUS / HRESULT values, printed in hex ----

// What wait_code() returns when the other process reported nothing in time.
inline constexpr int32_t kNoValue = 0x7EADBEEF;

inline ::testing::AssertionResult SameCode(const char* actual_expr, const char* expected_expr, long long actual,
                                           long long expected) {
  if (static_cast<int32_t>(actual) == static_cast<int32_t>(expected)) return ::testing::AssertionSuccess();
  char text[64];
  auto failure = ::testing::AssertionFailure();
  failure << actual_expr << " is ";
  if (static_cast<int32_t>(actual) == kNoValue) {
    failure << "nothing (the other process did not report in time)";
  } else {
    std::snprintf(text, sizeof text, "0x%08X", static_cast<unsigned>(static_cast<uint32_t>(actual)));
    failure << text;
  }
  std::snprintf(text, sizeof text, "0x%08X", static_cast<unsigned>(static_cast<uint32_t>(expected)));
  return failure << ", expected " << expected_expr << " = " << text;
}

#define EXPECT_CODE(actual, expected) EXPECT_PRED_FORMAT2(::fltport::test::SameCode, actual, expected)
#define ASSERT_CODE(actual, expected) ASSERT_PRED_FORMAT2(::fltport::test::SameCode, actual, expected)

// An NTSTATUS or HRESULT sent to the other process.
inline void notify_code(Signal& signal, int32_t code) { signal.notify(static_cast<uint32_t>(code)); }
inline int32_t wait_code(Signal& signal, std::chrono::milliseconds timeout = kWaitTimeout) {
  const std::optional<uint64_t> value = signal.wait_value(timeout);
  return value ? static_cast<int32_t>(static_cast<uint32_t>(*value)) : kNoValue;
}
inline long long wait_number(Signal& signal, std::chrono::milliseconds timeout = kWaitTimeout) {
  const std::optional<uint64_t> value = signal.wait_value(timeout);
  return value ? static_cast<long long>(*value) : -1;
}

// A call on its own thread, with a bounded wait for its result. If the call is still blocked when
// the object is destroyed, `unblock` runs (e.g. unregistering the filter) before the thread is joined.
class AsyncCall {
 public:
  explicit AsyncCall(std::function<int64_t()> body, std::function<void()> unblock = {})
      : unblock_(std::move(unblock)) {
    std::packaged_task<int64_t()> task(std::move(body));
    result_ = task.get_future();
    thread_ = std::thread(std::move(task));
  }
  ~AsyncCall() {
    if (thread_.joinable()) {
      if (result_.valid() && result_.wait_for(std::chrono::seconds(0)) != std::future_status::ready && unblock_) {
        unblock_();
      }
      thread_.join();
    }
  }
  AsyncCall(const AsyncCall&) = delete;
  AsyncCall& operator=(const AsyncCall&) = delete;

  // The result, or nullopt when the call did not return within the timeout.
  std::optional<int64_t> wait(std::chrono::milliseconds timeout = kWaitTimeout) {
    if (!result_.valid()) return value_;
    if (result_.wait_for(timeout) != std::future_status::ready) return std::nullopt;
    value_ = result_.get();
    return value_;
  }
  int32_t wait_code(std::chrono::milliseconds timeout = kWaitTimeout) {
    const auto value = wait(timeout);
    return value ? static_cast<int32_t>(*value) : kNoValue;
  }

 private:
  std::function<void()> unblock_;
  std::future<int64_t> result_;
  std::optional<int64_t> value_;
  std::thread thread_;
};

// Every test owns a fresh runtime directory ($FLTPORT_RUNTIME_DIR).
class PortTest : public ::testing::Test {
 protected:
  ScopedRuntimeDir runtime_dir_;
};

// A recognisable byte pattern; different seeds give different bytes.
inline std::vector<uint8_t> pattern(size_t size, uint32_t seed = 1) {
  std::vector<uint8_t> bytes(size);
  for (size_t i = 0; i < size; ++i) {
    bytes[i] = static_cast<uint8_t>((i * 131u) ^ (i >> 8) ^ (seed * 77u) ^ (seed >> 8));
  }
  return bytes;
}

inline bool matches_pattern(const uint8_t* data, size_t size, uint32_t seed) {
  const std::vector<uint8_t> expected = pattern(size, seed);
  return size == 0 || std::memcmp(data, expected.data(), size) == 0;
}

// FltSendMessage timeouts are 100 ns units; negative is relative.
inline LARGE_INTEGER relative_timeout(std::chrono::milliseconds ms) {
  LARGE_INTEGER timeout;
  timeout.QuadPart = -static_cast<LONGLONG>(ms.count()) * 10000;
  return timeout;
}
// Absolute: 100 ns units since 1601-01-01 UTC.
inline LARGE_INTEGER absolute_timeout(std::chrono::system_clock::time_point when) {
  constexpr LONGLONG kEpochDifference = 11644473600LL;  // seconds from 1601 to 1970
  const auto since_unix = std::chrono::duration_cast<std::chrono::nanoseconds>(when.time_since_epoch()).count();
  LARGE_INTEGER timeout;
  timeout.QuadPart = kEpochDifference * 10000000LL + since_unix / 100;
  return timeout;
}

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  std::chrono::milliseconds elapsed() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start_);
  }
  long long ms() const { return elapsed().count(); }

 private:
  std::chrono::steady_clock::time_point start_;
};

// ---- service side ----

template <size_t N>
struct MessageBuffer {
  FILTER_MESSAGE_HEADER header;
  uint8_t data[N];
};

// Replies with a FILTER_REPLY_HEADER followed by `length` bytes of `data`.
inline HRESULT reply_message(HANDLE port, ULONGLONG id, const void* data, size_t length,
                             NTSTATUS status = STATUS_SUCCESS) {
  std::vector<uint8_t> buffer(sizeof(FILTER_REPLY_HEADER) + length);
  FILTER_REPLY_HEADER header{};
  header.Status = status;
  header.MessageId = id;
  std::memcpy(buffer.data(), &header, sizeof header);
  if (length != 0) std::memcpy(buffer.data() + sizeof header, data, length);
  return FilterReplyMessage(port, reinterpret_cast<PFILTER_REPLY_HEADER>(buffer.data()),
                            static_cast<DWORD>(buffer.size()));
}

inline HRESULT connect_service(HANDLE* port, const void* context = nullptr, WORD context_size = 0,
                               const wchar_t* name = kPortName) {
  *port = nullptr;
  return FilterConnectCommunicationPort(name, 0, context, context_size, nullptr, port);
}

// ---- filter side ----

// One accepted connection, as ConnectNotify saw it. Its address is the connection cookie.
struct ConnectionRecord {
  static constexpr uint64_t kMagic = 0x464c54504f525431ull;
  uint64_t magic = kMagic;
  int index = 0;
  PFLT_PORT client_port = nullptr;
  std::vector<uint8_t> context;
  std::atomic<int> disconnects{0};
  std::atomic<int> messages{0};
};

// MessageNotify behaviour: what FilterSendMessage runs in the filter.
using MessageCallback = std::function<NTSTATUS(ConnectionRecord& connection, const uint8_t* input,
                                               ULONG input_length, uint8_t* output, ULONG output_length,
                                               ULONG* returned_length)>;

struct PortConfig {
  const wchar_t* name = kPortName;
  LONG max_connections = 1;
  bool message_notify = true;
  // nullptr: FltBuildDefaultSecurityDescriptor (root only). Not freed by the filter.
  PSECURITY_DESCRIPTOR security = nullptr;
  ULONG attributes = OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE;
  // Pass no security descriptor at all (the header says: root only).
  bool null_security = false;
};

class CFilter {
 public:
  CFilter() {
    FLT_REGISTRATION registration;
    std::memset(&registration, 0, sizeof registration);
    registration.Size = sizeof registration;
    registration.Version = FLT_REGISTRATION_VERSION;
    registration_status_ = FltRegisterFilter(nullptr, &registration, &filter_);
    std::lock_guard lock(live_mutex());
    live().push_back(this);
  }

  ~CFilter() {
    unregister();
    std::lock_guard lock(live_mutex());
    live().erase(std::remove(live().begin(), live().end(), this), live().end());
  }

  CFilter(const CFilter&) = delete;
  CFilter& operator=(const CFilter&) = delete;

  NTSTATUS registration_status() const { return registration_status_; }
  PFLT_FILTER handle() const { return filter_; }

  // FltCreateCommunicationPort with our callbacks; the server port cookie is `this`.
  NTSTATUS create_port(const PortConfig& config = {}) {
    PSECURITY_DESCRIPTOR security = config.security;
    bool built = false;
    if (security == nullptr && !config.null_security) {
      const NTSTATUS status = FltBuildDefaultSecurityDescriptor(&security, FLT_PORT_ALL_ACCESS);
      if (!NT_SUCCESS(status)) return status;
      built = true;
    }
    UNICODE_STRING name;
    RtlInitUnicodeString(&name, config.name);
    OBJECT_ATTRIBUTES attributes;
    InitializeObjectAttributes(&attributes, &name, config.attributes, nullptr, security);
    PFLT_PORT port = nullptr;
    const NTSTATUS status =
        FltCreateCommunicationPort(filter_, &port, &attributes, this, &CFilter::connect_notify,
                                   &CFilter::disconnect_notify,
                                   config.message_notify ? &CFilter::message_notify : nullptr,
                                   config.max_connections);
    if (built) FltFreeSecurityDescriptor(security);
    if (NT_SUCCESS(status)) server_ports_.push_back(port);
    return status;
  }

  PFLT_PORT server_port(size_t i = 0) const { return i < server_ports_.size() ? server_ports_[i] : nullptr; }

  void close_server_port(size_t i = 0) {
    if (i < server_ports_.size() && server_ports_[i] != nullptr) {
      FltCloseCommunicationPort(server_ports_[i]);
      server_ports_[i] = nullptr;
    }
  }

  // Closes the server ports and unregisters the filter (once).
  void unregister() {
    for (size_t i = 0; i < server_ports_.size(); ++i) close_server_port(i);
    if (filter_ != nullptr) {
      FltUnregisterFilter(filter_);
      filter_ = nullptr;
    }
  }

  // ---- behaviour, set before services connect ----
  void set_connect_verdict(NTSTATUS verdict) { connect_verdict_ = verdict; }
  void set_close_client_on_disconnect(bool close) { close_client_on_disconnect_ = close; }
  // DisconnectNotify takes this long before it closes the client port (a filter cleaning up).
  void set_disconnect_delay(std::chrono::milliseconds delay) { disconnect_delay_ms_ = delay.count(); }
  void set_message_callback(MessageCallback callback) {
    std::lock_guard lock(mutex_);
    message_callback_ = std::move(callback);
  }

  // ---- observations ----
  bool wait_connections(int count, std::chrono::milliseconds timeout = kWaitTimeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return static_cast<int>(records_.size()) >= count; });
  }
  bool wait_disconnects(int count, std::chrono::milliseconds timeout = kWaitTimeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return disconnects_ >= count; });
  }
  bool wait_connect_attempts(int count, std::chrono::milliseconds timeout = kWaitTimeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return connect_attempts_ >= count; });
  }
  int connection_count() const {
    std::lock_guard lock(mutex_);
    return static_cast<int>(records_.size());
  }
  int disconnect_count() const {
    std::lock_guard lock(mutex_);
    return disconnects_;
  }
  int connect_attempts() const {
    std::lock_guard lock(mutex_);
    return connect_attempts_;
  }
  // Context bytes of every ConnectNotify call, refused ones included.
  std::vector<std::vector<uint8_t>> contexts_seen() const {
    std::lock_guard lock(mutex_);
    return contexts_seen_;
  }
  std::vector<void*> disconnect_cookies() const {
    std::lock_guard lock(mutex_);
    return disconnect_cookies_;
  }
  std::vector<void*> message_cookies() const {
    std::lock_guard lock(mutex_);
    return message_cookies_;
  }
  // Callbacks that received a cookie that was not the one the filter set.
  int bad_cookies() const { return bad_cookies_.load(); }

  ConnectionRecord& connection(int i) {
    std::lock_guard lock(mutex_);
    return *records_.at(static_cast<size_t>(i));
  }
  // The client port of connection i, by address (as FltSendMessage and FltCloseClientPort take it).
  PFLT_PORT* client_port(int i) { return &connection(i).client_port; }
  // Its current value, read under the lock FltCloseClientPort is called with (it sets it to NULL).
  PFLT_PORT client_port_value(int i) {
    ConnectionRecord& record = connection(i);
    std::lock_guard lock(port_mutex_);
    return record.client_port;
  }
  // FltCloseClientPort on connection i.
  void close_client_port(int i) {
    ConnectionRecord& record = connection(i);
    std::lock_guard lock(port_mutex_);
    FltCloseClientPort(filter_, &record.client_port);
  }

 private:
  static std::mutex& live_mutex() {
    static std::mutex mutex;
    return mutex;
  }
  static std::vector<CFilter*>& live() {
    static std::vector<CFilter*> filters;
    return filters;
  }
  // The CFilter a server port cookie names; a wrong cookie is counted and the latest filter used.
  static CFilter* from_server_cookie(void* cookie) {
    std::lock_guard lock(live_mutex());
    for (CFilter* filter : live()) {
      if (filter == cookie) return filter;
    }
    if (live().empty()) return nullptr;
    live().back()->bad_cookies_++;
    return live().back();
  }
  // The record a connection cookie names, or nullptr (counted) when it is not one of ours.
  static ConnectionRecord* from_connection_cookie(void* cookie, CFilter** owner) {
    std::lock_guard lock(live_mutex());
    for (CFilter* filter : live()) {
      std::lock_guard records_lock(filter->mutex_);
      for (const auto& record : filter->records_) {
        if (record.get() == cookie) {
          *owner = filter;
          return record.get();
        }
      }
    }
    if (!live().empty()) live().back()->bad_cookies_++;
    *owner = live().empty() ? nullptr : live().back();
    return nullptr;
  }

  static NTSTATUS FLTAPI connect_notify(PFLT_PORT client_port, PVOID server_cookie, PVOID context,
                                        ULONG context_size, PVOID* connection_cookie) {
    CFilter* self = from_server_cookie(server_cookie);
    if (self == nullptr) return STATUS_INVALID_PARAMETER;
    std::lock_guard lock(self->mutex_);
    ++self->connect_attempts_;
    std::vector<uint8_t> bytes;
    if (context_size != 0) {
      if (context == nullptr) {
        self->bad_cookies_++;  // a size without bytes: counted as a broken callback argument
      } else {
        bytes.assign(static_cast<const uint8_t*>(context), static_cast<const uint8_t*>(context) + context_size);
      }
    }
    self->contexts_seen_.push_back(bytes);
    const NTSTATUS verdict = self->connect_verdict_.load();
    if (!NT_SUCCESS(verdict)) {
      self->changed_.notify_all();
      return verdict;
    }
    auto record = std::make_unique<ConnectionRecord>();
    record->index = static_cast<int>(self->records_.size());
    record->client_port = client_port;
    record->context = std::move(bytes);
    *connection_cookie = record.get();
    self->records_.push_back(std::move(record));
    self->changed_.notify_all();
    return STATUS_SUCCESS;
  }

  static VOID FLTAPI disconnect_notify(PVOID connection_cookie) {
    CFilter* self = nullptr;
    ConnectionRecord* record = from_connection_cookie(connection_cookie, &self);
    if (self == nullptr) return;
    if (record != nullptr) {
      record->disconnects++;
      std::this_thread::sleep_for(std::chrono::milliseconds(self->disconnect_delay_ms_.load()));
      if (self->close_client_on_disconnect_) {
        std::lock_guard lock(self->port_mutex_);
        FltCloseClientPort(self->filter_, &record->client_port);
      }
    }
    std::lock_guard lock(self->mutex_);
    ++self->disconnects_;
    self->disconnect_cookies_.push_back(connection_cookie);
    self->changed_.notify_all();
  }

  static NTSTATUS FLTAPI message_notify(PVOID port_cookie, PVOID input, ULONG input_length, PVOID output,
                                        ULONG output_length, PULONG returned_length) {
    CFilter* self = nullptr;
    ConnectionRecord* record = from_connection_cookie(port_cookie, &self);
    if (self == nullptr) return STATUS_INVALID_PARAMETER;
    MessageCallback callback;
    {
      std::lock_guard lock(self->mutex_);
      self->message_cookies_.push_back(port_cookie);
      callback = self->message_callback_;
    }
    if (record == nullptr) return STATUS_INVALID_PARAMETER;
    record->messages++;
    if (callback) {
      return callback(*record, static_cast<const uint8_t*>(input), input_length, static_cast<uint8_t*>(output),
                      output_length, returned_length);
    }
    // Default: echo the input.
    const ULONG n = std::min(input_length, output_length);
    if (n != 0) std::memcpy(output, input, n);
    *returned_length = n;
    return STATUS_SUCCESS;
  }

  PFLT_FILTER filter_ = nullptr;
  NTSTATUS registration_status_ = STATUS_UNSUCCESSFUL;
  std::vector<PFLT_PORT> server_ports_;

  std::atomic<NTSTATUS> connect_verdict_{STATUS_SUCCESS};
  std::atomic<bool> close_client_on_disconnect_{true};
  std::atomic<int64_t> disconnect_delay_ms_{0};
  std::atomic<int> bad_cookies_{0};

  mutable std::mutex mutex_;
  std::mutex port_mutex_;  // around FltCloseClientPort, which writes a record's client_port
  std::condition_variable changed_;
  std::deque<std::unique_ptr<ConnectionRecord>> records_;
  int connect_attempts_ = 0;
  int disconnects_ = 0;
  std::vector<std::vector<uint8_t>> contexts_seen_;
  std::vector<void*> disconnect_cookies_;
  std::vector<void*> message_cookies_;
  MessageCallback message_callback_;
};

// The body of a filter process whose death a test is about: it creates the test's port, says so
// on `port_ready`, and waits to be killed.
inline std::function<int()> port_host_until_killed(Signal& port_ready) {
  return [&port_ready] {
    CFilter filter;
    CHILD_CHECK_EQ(filter.create_port(), STATUS_SUCCESS);
    port_ready.notify();
    Signal never;
    never.wait(std::chrono::seconds(30));  // killed by the test
    return 0;
  };
}

}  // namespace fltport::test
