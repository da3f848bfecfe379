// Win32 handles: opaque values that name library objects. A handle that was never issued, or was
// closed, is simply not found, so a stale or made-up HANDLE gives an error and never a crash.
// Values are never reused.
#pragma once

#include <fltport/win32.h>

#include <memory>
#include <shared_mutex>
#include <unordered_map>

namespace fltport::compat {

class HandleObject {
 public:
  virtual ~HandleObject() = default;
  // CloseHandle: ends what the object does; calls in progress on other threads return.
  virtual void close() noexcept = 0;
};

class HandleTable {
 public:
  static HandleTable& instance();

  HANDLE insert(std::shared_ptr<HandleObject> object);
  std::shared_ptr<HandleObject> remove(HANDLE handle);

  template <class T>
  std::shared_ptr<T> find(HANDLE handle) const {
    return std::dynamic_pointer_cast<T>(find_object(handle));
  }

 private:
  std::shared_ptr<HandleObject> find_object(HANDLE handle) const;

  mutable std::shared_mutex mutex_;
  std::unordered_map<uintptr_t, std::shared_ptr<HandleObject>> objects_;
  uintptr_t next_ = 0x10004;  // multiples of 4, like Windows handles; never 0 or -1
};

}  // namespace fltport::compat
