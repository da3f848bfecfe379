// The one error style of the C++ API: every call that can fail returns fltport::Status (a
// Windows NTSTATUS) or fltport::Result<T> (a value or a failure Status). No exceptions cross the
// API, so the C layer above it is a thin translation and a filter host never unwinds from a
// callback. See docs/architecture.md, "Errors".
#pragma once

#include <fltport/status.h>

#include <cassert>
#include <optional>
#include <string>
#include <utility>

namespace fltport {

class FLTPORT_API Status {
 public:
  constexpr Status() noexcept = default;
  // Implicit on purpose: statuses are plain values (`return STATUS_TIMEOUT;`).
  constexpr Status(NTSTATUS code) noexcept : code_(code) {}  // NOLINT(google-explicit-constructor)

  constexpr NTSTATUS code() const noexcept { return code_; }
  // Exactly STATUS_SUCCESS. NT_SUCCESS() would also accept STATUS_TIMEOUT and other informational codes.
  constexpr bool ok() const noexcept { return code_ == STATUS_SUCCESS; }
  // What the user-mode C API returns for this status.
  HRESULT to_hresult() const noexcept;
  // "STATUS_TIMEOUT (0x00000102)".
  std::string to_string() const;

  friend constexpr bool operator==(Status, Status) noexcept = default;

 private:
  NTSTATUS code_ = STATUS_SUCCESS;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status failure) : status_(failure) {    // NOLINT(google-explicit-constructor)
    assert(!failure.ok() && "a Result without a value needs a failure status");
  }

  bool ok() const noexcept { return value_.has_value(); }
  explicit operator bool() const noexcept { return ok(); }
  Status status() const noexcept { return status_; }

  T& value() & {
    assert(ok());
    return *value_;
  }
  const T& value() const& {
    assert(ok());
    return *value_;
  }
  T&& value() && {
    assert(ok());
    return std::move(*value_);
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace fltport
