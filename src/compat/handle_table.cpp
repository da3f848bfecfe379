#include "compat/handle_table.hpp"

#include <fltport/status.h>

#include <mutex>

namespace fltport::compat {

HandleTable& HandleTable::instance() {
  // Never destroyed: handles may be closed from threads that outlive static destruction.
  static auto* table = new HandleTable();
  return *table;
}

HANDLE HandleTable::insert(std::shared_ptr<HandleObject> object) {
  std::unique_lock lock(mutex_);
  const uintptr_t value = next_;
  next_ += 4;
  objects_.emplace(value, std::move(object));
  return reinterpret_cast<HANDLE>(value);
}

std::shared_ptr<HandleObject> HandleTable::remove(HANDLE handle) {
  std::unique_lock lock(mutex_);
  const auto found = objects_.find(reinterpret_cast<uintptr_t>(handle));
  if (found == objects_.end()) return nullptr;
  auto object = std::move(found->second);
  objects_.erase(found);
  return object;
}

std::shared_ptr<HandleObject> HandleTable::find_object(HANDLE handle) const {
  std::shared_lock lock(mutex_);
  const auto found = objects_.find(reinterpret_cast<uintptr_t>(handle));
  return found == objects_.end() ? nullptr : found->second;
}

namespace {
thread_local DWORD last_error = ERROR_SUCCESS;
}  // namespace

}  // namespace fltport::compat

extern "C" DWORD WINAPI GetLastError(void) {
  return fltport::compat::last_error;
}
extern "C" void WINAPI SetLastError(DWORD error) {
  fltport::compat::last_error = error;
}

extern "C" BOOL WINAPI CloseHandle(HANDLE handle) {
  auto object = fltport::compat::HandleTable::instance().remove(handle);
  if (!object) {
    SetLastError(ERROR_INVALID_HANDLE);
    return FALSE;
  }
  object->close();
  return TRUE;
}
