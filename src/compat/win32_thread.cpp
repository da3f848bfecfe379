// CreateThread and friends over pthreads. A thread object is signalled when the thread has ended,
// however it ended (return or ExitThread), so that it can be waited for like any other object.
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compat/win32_objects.hpp"

namespace fltport::compat {
namespace {

class ThreadObject final : public Waitable {
 public:
  ThreadObject(LPTHREAD_START_ROUTINE start, void* parameter, bool suspended)
      : start_(start), parameter_(parameter), suspend_count_(suspended ? 1 : 0) {}

  bool signalled() const override { return done_; }
  // Closing the handle of a running thread lets it run on: nothing will join it.
  void close() noexcept override { pthread_detach(thread_); }

  static void* main(void* argument);
  pthread_t thread_{};
  DWORD tid_ = 0;                    // set by the thread itself, under wait_mutex()
  std::condition_variable changed_;  // tid_ known, suspend count down to 0

  const LPTHREAD_START_ROUTINE start_;
  void* const parameter_;
  DWORD suspend_count_;             // under wait_mutex()
  DWORD exit_code_ = STILL_ACTIVE;  // under wait_mutex()
  bool done_ = false;               // under wait_mutex()
};

// The object of the thread running here, for ExitThread; null in threads we did not create.
thread_local ThreadObject* current_thread = nullptr;

// Marks the thread done when its start routine returns or ExitThread unwinds it (pthread_exit
// runs destructors on the way out).
struct FinishGuard {
  ThreadObject* thread;
  ~FinishGuard() {
    std::lock_guard lock(wait_mutex());
    thread->done_ = true;
    thread->notify_waiters();
  }
};

void* ThreadObject::main(void* argument) {
  // The creator handed over one reference; it keeps the object alive until the thread ends.
  std::shared_ptr<ThreadObject> self(*static_cast<std::shared_ptr<ThreadObject>*>(argument));
  delete static_cast<std::shared_ptr<ThreadObject>*>(argument);
  {
    std::unique_lock lock(wait_mutex());
    self->tid_ = static_cast<DWORD>(::syscall(SYS_gettid));
    self->changed_.notify_all();
    self->changed_.wait(lock, [&] { return self->suspend_count_ == 0; });
  }
  current_thread = self.get();
  FinishGuard finish{self.get()};
  const DWORD code = self->start_(self->parameter_);
  std::lock_guard lock(wait_mutex());
  self->exit_code_ = code;
  return nullptr;
}

}  // namespace
}  // namespace fltport::compat

using namespace fltport::compat;

extern "C" HANDLE WINAPI CreateThread(LPSECURITY_ATTRIBUTES, SIZE_T dwStackSize,
                                      LPTHREAD_START_ROUTINE lpStartAddress, LPVOID lpParameter,
                                      DWORD dwCreationFlags, LPDWORD lpThreadId) {
  if (lpStartAddress == nullptr) {
    SetLastError(ERROR_INVALID_PARAMETER);
    return nullptr;
  }
  auto thread =
      std::make_shared<ThreadObject>(lpStartAddress, lpParameter, (dwCreationFlags & CREATE_SUSPENDED) != 0);
  pthread_attr_t attributes;
  pthread_attr_init(&attributes);
  if (dwStackSize != 0) {
    const SIZE_T minimum = static_cast<SIZE_T>(PTHREAD_STACK_MIN);
    const SIZE_T stack = dwStackSize < minimum ? minimum : dwStackSize;
    pthread_attr_setstacksize(&attributes, stack);
  }
  auto* handed_over = new std::shared_ptr<ThreadObject>(thread);
  const int error = pthread_create(&thread->thread_, &attributes, &ThreadObject::main, handed_over);
  pthread_attr_destroy(&attributes);
  if (error != 0) {
    delete handed_over;
    SetLastError(ERROR_NOT_ENOUGH_MEMORY);
    return nullptr;
  }
  {
    // The id is the kernel's (gettid), which only the new thread can tell.
    std::unique_lock lock(wait_mutex());
    thread->changed_.wait(lock, [&] { return thread->tid_ != 0; });
    if (lpThreadId != nullptr) *lpThreadId = thread->tid_;
  }
  return HandleTable::instance().insert(std::move(thread));
}

extern "C" DWORD WINAPI ResumeThread(HANDLE hThread) {
  auto thread = HandleTable::instance().find<ThreadObject>(hThread);
  if (!thread) {
    SetLastError(ERROR_INVALID_HANDLE);
    return static_cast<DWORD>(-1);
  }
  std::lock_guard lock(wait_mutex());
  const DWORD previous = thread->suspend_count_;
  if (previous > 0 && --thread->suspend_count_ == 0) thread->changed_.notify_all();
  return previous;
}

extern "C" void WINAPI ExitThread(DWORD dwExitCode) {
  if (ThreadObject* self = current_thread) {
    std::lock_guard lock(wait_mutex());
    self->exit_code_ = dwExitCode;
  }
  pthread_exit(nullptr);
}

extern "C" BOOL WINAPI GetExitCodeThread(HANDLE hThread, LPDWORD lpExitCode) {
  auto thread = HandleTable::instance().find<ThreadObject>(hThread);
  if (!thread) {
    SetLastError(ERROR_INVALID_HANDLE);
    return FALSE;
  }
  if (lpExitCode == nullptr) {
    SetLastError(ERROR_INVALID_PARAMETER);
    return FALSE;
  }
  std::lock_guard lock(wait_mutex());
  *lpExitCode = thread->done_ ? thread->exit_code_ : static_cast<DWORD>(STILL_ACTIVE);
  return TRUE;
}

extern "C" DWORD WINAPI GetCurrentThreadId(void) {
  return static_cast<DWORD>(::syscall(SYS_gettid));
}

extern "C" DWORD WINAPI GetCurrentProcessId(void) {
  return static_cast<DWORD>(::getpid());
}
