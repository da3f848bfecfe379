// Events, semaphores, waits, critical sections, the heap: synchapi.h and heapapi.h over pthreads.
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>

#include "compat/win32_objects.hpp"

namespace fltport::compat {

std::mutex& wait_mutex() {
  // Never destroyed: threads may still signal objects during static destruction.
  static auto* mutex = new std::mutex();
  return *mutex;
}

void Waitable::notify_waiters() {
  for (WaitBlock* block : waiters_) block->cv.notify_one();
}

void Waitable::add_waiter(WaitBlock* block) {
  waiters_.push_back(block);
}

void Waitable::remove_waiter(WaitBlock* block) {
  const auto found = std::find(waiters_.begin(), waiters_.end(), block);
  if (found != waiters_.end()) waiters_.erase(found);
}

void EventObject::set() {
  std::lock_guard lock(wait_mutex());
  signalled_ = true;
  notify_waiters();
}

void EventObject::reset() {
  std::lock_guard lock(wait_mutex());
  signalled_ = false;
}

Deadline deadline_after(DWORD milliseconds) {
  if (milliseconds == INFINITE) return std::nullopt;
  return std::chrono::steady_clock::now() + std::chrono::milliseconds(milliseconds);
}

std::shared_ptr<Waitable> find_waitable(HANDLE handle) {
  auto& table = HandleTable::instance();
  if (auto object = table.find<Waitable>(handle)) return object;
  if (auto file = table.find<IoTarget>(handle)) return file->signal();
  return nullptr;
}

DWORD wait_for_objects(const std::vector<std::shared_ptr<Waitable>>& objects, bool wait_all,
                       Deadline deadline) {
  std::unique_lock lock(wait_mutex());
  const auto satisfy = [&]() -> std::optional<DWORD> {
    if (wait_all) {
      for (const auto& object : objects) {
        if (!object->signalled()) return std::nullopt;
      }
      for (const auto& object : objects) object->acquire();
      return WAIT_OBJECT_0;
    }
    for (size_t i = 0; i < objects.size(); ++i) {
      if (objects[i]->signalled()) {
        objects[i]->acquire();
        return static_cast<DWORD>(WAIT_OBJECT_0 + i);
      }
    }
    return std::nullopt;
  };
  if (auto done = satisfy()) return *done;
  if (deadline && *deadline <= std::chrono::steady_clock::now()) return WAIT_TIMEOUT;

  WaitBlock block;
  for (const auto& object : objects) object->add_waiter(&block);
  std::optional<DWORD> result;
  while (!(result = satisfy())) {
    if (!deadline) {
      block.cv.wait(lock);
    } else if (block.cv.wait_until(lock, *deadline) == std::cv_status::timeout) {
      result = satisfy();
      if (!result) result = WAIT_TIMEOUT;
      break;
    }
  }
  for (const auto& object : objects) object->remove_waiter(&block);
  return *result;
}

namespace {

class SemaphoreObject final : public Waitable {
 public:
  SemaphoreObject(LONG initial, LONG maximum) : count_(initial), maximum_(maximum) {}
  bool signalled() const override { return count_ > 0; }
  void acquire() override { --count_; }
  // Under wait_mutex(). False when the count would pass the maximum (nothing changes then).
  bool release(LONG count, LONG* previous) {
    if (count > maximum_ - count_) return false;
    if (previous != nullptr) *previous = count_;
    count_ += count;
    notify_waiters();
    return true;
  }

 private:
  LONG count_;
  const LONG maximum_;
};

// Named events and semaphores, process-local: a second Create with the name opens the same object.
class NamedObjects {
 public:
  static NamedObjects& instance() {
    static auto* objects = new NamedObjects();
    return *objects;
  }
  // Returns the handle, or nullptr with the error set.
  template <class T, class Make>
  HANDLE create(const std::wstring* name, Make make) {
    if (name == nullptr) return insert(make());
    std::lock_guard lock(mutex_);
    auto& slot = objects_[*name];
    if (auto existing = slot.lock()) {
      auto same_type = std::dynamic_pointer_cast<T>(existing);
      if (!same_type) {
        SetLastError(ERROR_INVALID_HANDLE);
        return nullptr;
      }
      HANDLE handle = HandleTable::instance().insert(same_type);
      SetLastError(ERROR_ALREADY_EXISTS);
      return handle;
    }
    auto object = make();
    slot = object;
    return insert(std::move(object));
  }

 private:
  static HANDLE insert(std::shared_ptr<HandleObject> object) {
    HANDLE handle = HandleTable::instance().insert(std::move(object));
    SetLastError(ERROR_SUCCESS);
    return handle;
  }
  std::mutex mutex_;
  std::map<std::wstring, std::weak_ptr<HandleObject>> objects_;
};

std::optional<std::wstring> wide_name(LPCSTR name) {
  if (name == nullptr) return std::nullopt;
  std::wstring out;
  for (const char* c = name; *c != '\0'; ++c)
    out.push_back(static_cast<wchar_t>(static_cast<unsigned char>(*c)));
  return out;
}
std::optional<std::wstring> wide_name(LPCWSTR name) {
  if (name == nullptr) return std::nullopt;
  return std::wstring(name);
}

HANDLE create_event(bool manual, bool initial, const std::optional<std::wstring>& name) {
  return NamedObjects::instance().create<EventObject>(
      name ? &*name : nullptr, [&] { return std::make_shared<EventObject>(manual, initial); });
}

HANDLE create_semaphore(LONG initial, LONG maximum, const std::optional<std::wstring>& name) {
  if (maximum <= 0 || initial < 0 || initial > maximum) {
    SetLastError(ERROR_INVALID_PARAMETER);
    return nullptr;
  }
  return NamedObjects::instance().create<SemaphoreObject>(
      name ? &*name : nullptr, [&] { return std::make_shared<SemaphoreObject>(initial, maximum); });
}

DWORD wait_handles(DWORD count, const HANDLE* handles, bool wait_all, DWORD milliseconds) {
  if (count == 0 || count > MAXIMUM_WAIT_OBJECTS || handles == nullptr) {
    SetLastError(ERROR_INVALID_PARAMETER);
    return WAIT_FAILED;
  }
  std::vector<std::shared_ptr<Waitable>> objects;
  objects.reserve(count);
  for (DWORD i = 0; i < count; ++i) {
    auto object = find_waitable(handles[i]);
    if (!object) {
      SetLastError(ERROR_INVALID_HANDLE);
      return WAIT_FAILED;
    }
    // Windows refuses the same object twice when all are waited for (STATUS_INVALID_PARAMETER_MIX).
    if (wait_all && std::find(objects.begin(), objects.end(), object) != objects.end()) {
      SetLastError(ERROR_INVALID_PARAMETER);
      return WAIT_FAILED;
    }
    objects.push_back(std::move(object));
  }
  return wait_for_objects(objects, wait_all, deadline_after(milliseconds));
}

// ---- Critical sections ----

static_assert(sizeof(pthread_mutex_t) <= sizeof(CRITICAL_SECTION::FltportMutex),
              "CRITICAL_SECTION too small");
static_assert(alignof(pthread_mutex_t) <= alignof(CRITICAL_SECTION), "CRITICAL_SECTION alignment");

pthread_mutex_t* mutex_of(LPCRITICAL_SECTION section) {
  return reinterpret_cast<pthread_mutex_t*>(section->FltportMutex.Storage);
}

void init_section(LPCRITICAL_SECTION section, DWORD spin_count) {
  std::memset(section, 0, sizeof *section);
  pthread_mutexattr_t attributes;
  pthread_mutexattr_init(&attributes);
  // Windows critical sections are recursive: the owner may enter again.
  pthread_mutexattr_settype(&attributes, PTHREAD_MUTEX_RECURSIVE);
  pthread_mutex_init(mutex_of(section), &attributes);
  pthread_mutexattr_destroy(&attributes);
  section->SpinCount = spin_count;
}

// ---- Heap ----

// Each block starts with its size, so that HeapReAlloc can zero what it adds and HeapSize can
// answer; 16 bytes keep the block 16-byte aligned, as MEMORY_ALLOCATION_ALIGNMENT is on x64.
constexpr size_t kHeapHeader = 16;

char process_heap;  // GetProcessHeap's handle: an address nothing else uses

SIZE_T& block_size(void* block) {
  return *reinterpret_cast<SIZE_T*>(static_cast<char*>(block) - kHeapHeader);
}

}  // namespace
}  // namespace fltport::compat

using namespace fltport::compat;

extern "C" HANDLE WINAPI CreateEventA(LPSECURITY_ATTRIBUTES, BOOL bManualReset, BOOL bInitialState,
                                      LPCSTR lpName) {
  return create_event(bManualReset != FALSE, bInitialState != FALSE, wide_name(lpName));
}

extern "C" HANDLE WINAPI CreateEventW(LPSECURITY_ATTRIBUTES, BOOL bManualReset, BOOL bInitialState,
                                      LPCWSTR lpName) {
  return create_event(bManualReset != FALSE, bInitialState != FALSE, wide_name(lpName));
}

extern "C" BOOL WINAPI SetEvent(HANDLE hEvent) {
  auto event = HandleTable::instance().find<EventObject>(hEvent);
  if (!event) {
    SetLastError(ERROR_INVALID_HANDLE);
    return FALSE;
  }
  event->set();
  return TRUE;
}

extern "C" BOOL WINAPI ResetEvent(HANDLE hEvent) {
  auto event = HandleTable::instance().find<EventObject>(hEvent);
  if (!event) {
    SetLastError(ERROR_INVALID_HANDLE);
    return FALSE;
  }
  event->reset();
  return TRUE;
}

extern "C" HANDLE WINAPI CreateSemaphoreA(LPSECURITY_ATTRIBUTES, LONG lInitialCount, LONG lMaximumCount,
                                          LPCSTR lpName) {
  return create_semaphore(lInitialCount, lMaximumCount, wide_name(lpName));
}

extern "C" HANDLE WINAPI CreateSemaphoreW(LPSECURITY_ATTRIBUTES, LONG lInitialCount, LONG lMaximumCount,
                                          LPCWSTR lpName) {
  return create_semaphore(lInitialCount, lMaximumCount, wide_name(lpName));
}

extern "C" BOOL WINAPI ReleaseSemaphore(HANDLE hSemaphore, LONG lReleaseCount, LPLONG lpPreviousCount) {
  auto semaphore = HandleTable::instance().find<SemaphoreObject>(hSemaphore);
  if (!semaphore) {
    SetLastError(ERROR_INVALID_HANDLE);
    return FALSE;
  }
  if (lReleaseCount <= 0) {
    SetLastError(ERROR_INVALID_PARAMETER);
    return FALSE;
  }
  std::lock_guard lock(wait_mutex());
  if (!semaphore->release(lReleaseCount, lpPreviousCount)) {
    SetLastError(ERROR_TOO_MANY_POSTS);
    return FALSE;
  }
  return TRUE;
}

extern "C" DWORD WINAPI WaitForSingleObject(HANDLE hHandle, DWORD dwMilliseconds) {
  return wait_handles(1, &hHandle, false, dwMilliseconds);
}

extern "C" DWORD WINAPI WaitForSingleObjectEx(HANDLE hHandle, DWORD dwMilliseconds, BOOL) {
  return wait_handles(1, &hHandle, false, dwMilliseconds);
}

extern "C" DWORD WINAPI WaitForMultipleObjects(DWORD nCount, const HANDLE* lpHandles, BOOL bWaitAll,
                                               DWORD dwMilliseconds) {
  return wait_handles(nCount, lpHandles, bWaitAll != FALSE, dwMilliseconds);
}

extern "C" DWORD WINAPI WaitForMultipleObjectsEx(DWORD nCount, const HANDLE* lpHandles, BOOL bWaitAll,
                                                 DWORD dwMilliseconds, BOOL) {
  return wait_handles(nCount, lpHandles, bWaitAll != FALSE, dwMilliseconds);
}

extern "C" void WINAPI Sleep(DWORD dwMilliseconds) {
  SleepEx(dwMilliseconds, FALSE);
}

extern "C" DWORD WINAPI SleepEx(DWORD dwMilliseconds, BOOL) {
  if (dwMilliseconds == 0) {
    sched_yield();  // Sleep(0): give up the rest of the time slice
  } else if (dwMilliseconds == INFINITE) {
    for (;;) std::this_thread::sleep_for(std::chrono::hours(24));
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(dwMilliseconds));
  }
  return 0;
}

extern "C" void WINAPI InitializeCriticalSection(LPCRITICAL_SECTION lpCriticalSection) {
  init_section(lpCriticalSection, 0);
}

extern "C" BOOL WINAPI InitializeCriticalSectionAndSpinCount(LPCRITICAL_SECTION lpCriticalSection,
                                                             DWORD dwSpinCount) {
  init_section(lpCriticalSection, dwSpinCount);
  return TRUE;
}

extern "C" BOOL WINAPI InitializeCriticalSectionEx(LPCRITICAL_SECTION lpCriticalSection, DWORD dwSpinCount,
                                                   DWORD) {
  init_section(lpCriticalSection, dwSpinCount);
  return TRUE;
}

extern "C" void WINAPI EnterCriticalSection(LPCRITICAL_SECTION lpCriticalSection) {
  pthread_mutex_lock(mutex_of(lpCriticalSection));
}

extern "C" BOOL WINAPI TryEnterCriticalSection(LPCRITICAL_SECTION lpCriticalSection) {
  return pthread_mutex_trylock(mutex_of(lpCriticalSection)) == 0 ? TRUE : FALSE;
}

extern "C" void WINAPI LeaveCriticalSection(LPCRITICAL_SECTION lpCriticalSection) {
  pthread_mutex_unlock(mutex_of(lpCriticalSection));
}

extern "C" void WINAPI DeleteCriticalSection(LPCRITICAL_SECTION lpCriticalSection) {
  pthread_mutex_destroy(mutex_of(lpCriticalSection));
}

extern "C" HANDLE WINAPI GetProcessHeap(void) {
  return &process_heap;
}

extern "C" LPVOID WINAPI HeapAlloc(HANDLE, DWORD dwFlags, SIZE_T dwBytes) {
  if (dwBytes > SIZE_MAX - kHeapHeader) return nullptr;
  void* raw = (dwFlags & HEAP_ZERO_MEMORY) != 0 ? std::calloc(1, kHeapHeader + dwBytes)
                                                : std::malloc(kHeapHeader + dwBytes);
  if (raw == nullptr) return nullptr;
  void* block = static_cast<char*>(raw) + kHeapHeader;
  block_size(block) = dwBytes;
  return block;
}

extern "C" LPVOID WINAPI HeapReAlloc(HANDLE, DWORD dwFlags, LPVOID lpMem, SIZE_T dwBytes) {
  if (lpMem == nullptr || dwBytes > SIZE_MAX - kHeapHeader) return nullptr;
  const SIZE_T old_size = block_size(lpMem);
  if ((dwFlags & HEAP_REALLOC_IN_PLACE_ONLY) != 0) {
    if (dwBytes > old_size) return nullptr;  // shrinking keeps the address; growing might not
    block_size(lpMem) = dwBytes;
    return lpMem;
  }
  void* raw = std::realloc(static_cast<char*>(lpMem) - kHeapHeader, kHeapHeader + dwBytes);
  if (raw == nullptr) return nullptr;
  void* block = static_cast<char*>(raw) + kHeapHeader;
  if ((dwFlags & HEAP_ZERO_MEMORY) != 0 && dwBytes > old_size) {
    std::memset(static_cast<char*>(block) + old_size, 0, dwBytes - old_size);
  }
  block_size(block) = dwBytes;
  return block;
}

extern "C" BOOL WINAPI HeapFree(HANDLE, DWORD, LPVOID lpMem) {
  if (lpMem != nullptr) std::free(static_cast<char*>(lpMem) - kHeapHeader);
  return TRUE;
}

extern "C" SIZE_T WINAPI HeapSize(HANDLE, DWORD, LPCVOID lpMem) {
  if (lpMem == nullptr) return static_cast<SIZE_T>(-1);
  return block_size(const_cast<void*>(lpMem));
}
