// The Win32 subset of <fltport/win32.h>, call by call, against Microsoft's documentation: events,
// semaphores, waits, threads, critical sections, the heap, the memory macros, completion ports and
// the errors each call sets. Waits that must time out use short timeouts; waits that must succeed
// use long ones, so that a slow machine can only make a test slower, never make it fail.
#include <fltport/status.h>
#include <fltport/win32.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr DWORD kLong = 10000;  // ms: a wait that must succeed
constexpr DWORD kShort = 50;    // ms: a wait that must time out

// Closes the handle at the end of the test.
class Handle {
 public:
  explicit Handle(HANDLE handle = nullptr) : handle_(handle) {}
  ~Handle() {
    if (handle_ != nullptr) CloseHandle(handle_);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  HANDLE get() const { return handle_; }
  HANDLE release() {
    HANDLE handle = handle_;
    handle_ = nullptr;
    return handle;
  }

 private:
  HANDLE handle_;
};

// A handle value that was issued and closed, so names nothing any more.
HANDLE closed_handle() {
  HANDLE event = CreateEventW(nullptr, TRUE, FALSE, nullptr);
  CloseHandle(event);
  return event;
}

long long elapsed_ms(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

// ---- constants and macros ----

TEST(Win32Values, AreThoseOfTheWindowsSdk) {
  EXPECT_EQ(INFINITE, 0xFFFFFFFFu);
  EXPECT_EQ(WAIT_OBJECT_0, 0u);
  EXPECT_EQ(WAIT_ABANDONED_0, 0x80u);
  EXPECT_EQ(WAIT_IO_COMPLETION, 0xC0u);
  EXPECT_EQ(WAIT_TIMEOUT, 258);
  EXPECT_EQ(WAIT_FAILED, 0xFFFFFFFFu);
  EXPECT_EQ(MAXIMUM_WAIT_OBJECTS, 64);
  EXPECT_EQ(STILL_ACTIVE, 259);
  EXPECT_EQ(CREATE_SUSPENDED, 4);
  EXPECT_EQ(HEAP_ZERO_MEMORY, 8);
  EXPECT_EQ(ERROR_ABANDONED_WAIT_0, 735);
  EXPECT_EQ(ERROR_OPERATION_ABORTED, 995);
  EXPECT_EQ(ERROR_IO_INCOMPLETE, 996);
  EXPECT_EQ(ERROR_IO_PENDING, 997);
  EXPECT_EQ(ERROR_NOT_FOUND, 1168);
  EXPECT_EQ(ERROR_TOO_MANY_POSTS, 298);
  EXPECT_EQ(sizeof(OVERLAPPED), 32u);
  EXPECT_EQ(sizeof(OVERLAPPED_ENTRY), 32u);
  EXPECT_EQ(offsetof(OVERLAPPED_ENTRY, dwNumberOfBytesTransferred), 24u);
}

struct Record {
  int first;
  char middle[12];
  double last;
};

TEST(Win32Macros, FieldOffsetAndContainingRecord) {
  static_assert(FIELD_OFFSET(Record, middle) == 4, "a constant expression, as on Windows");
  EXPECT_EQ(FIELD_OFFSET(Record, last), 16);
  Record record{};
  double* inner = &record.last;
  EXPECT_EQ(CONTAINING_RECORD(inner, Record, last), &record);
  EXPECT_EQ(CONTAINING_RECORD(&record.middle[0], Record, middle), &record);
}

TEST(Win32Macros, MemoryMacros) {
  char a[16];
  char b[16];
  FillMemory(a, sizeof a, 0x5A);
  for (char c : a) ASSERT_EQ(c, 0x5A);
  CopyMemory(b, a, sizeof a);
  EXPECT_TRUE(RtlEqualMemory(a, b, sizeof a));
  b[7] = 1;
  EXPECT_FALSE(RtlEqualMemory(a, b, sizeof a));
  ZeroMemory(a, sizeof a);
  for (char c : a) ASSERT_EQ(c, 0);
  char text[] = "abcdef";
  MoveMemory(text + 1, text, 4);  // overlapping, as memmove
  EXPECT_STREQ(text, "aabcdf");
  RtlCopyMemory(a, "xyz", 3);
  RtlZeroMemory(a + 1, 1);
  EXPECT_EQ(a[0], 'x');
  EXPECT_EQ(a[1], 0);
  RtlFillMemory(a, 2, 'q');
  EXPECT_EQ(a[1], 'q');
  RtlMoveMemory(a, "mn", 2);
  EXPECT_EQ(a[0], 'm');
  EXPECT_EQ(SecureZeroMemory(b, sizeof b), static_cast<PVOID>(b));
  for (char c : b) ASSERT_EQ(c, 0);
  int unused = 0;
  UNREFERENCED_PARAMETER(unused);
}

// ---- handles and errors ----

TEST(Win32Handles, CloseHandleOfAnUnknownHandleFails) {
  SetLastError(0);
  EXPECT_FALSE(CloseHandle(closed_handle()));
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_HANDLE));
  EXPECT_FALSE(CloseHandle(nullptr));
  EXPECT_FALSE(CloseHandle(INVALID_HANDLE_VALUE));
}

TEST(Win32Handles, EveryCallRefusesAnInvalidHandle) {
  const HANDLE bad = closed_handle();
  const auto expect_invalid = [](bool failed, const char* call) {
    EXPECT_TRUE(failed) << call;
    EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_HANDLE)) << call;
    SetLastError(0);
  };
  expect_invalid(!SetEvent(bad), "SetEvent");
  expect_invalid(!ResetEvent(bad), "ResetEvent");
  expect_invalid(!ReleaseSemaphore(bad, 1, nullptr), "ReleaseSemaphore");
  expect_invalid(WaitForSingleObject(bad, 0) == WAIT_FAILED, "WaitForSingleObject");
  expect_invalid(ResumeThread(bad) == static_cast<DWORD>(-1), "ResumeThread");
  DWORD code = 0;
  expect_invalid(!GetExitCodeThread(bad, &code), "GetExitCodeThread");
  expect_invalid(CreateIoCompletionPort(bad, nullptr, 0, 0) == nullptr, "CreateIoCompletionPort");
  DWORD bytes = 0;
  ULONG_PTR key = 0;
  LPOVERLAPPED overlapped = nullptr;
  expect_invalid(!GetQueuedCompletionStatus(bad, &bytes, &key, &overlapped, 0), "GetQueuedCompletionStatus");
  OVERLAPPED_ENTRY entry{};
  ULONG removed = 0;
  expect_invalid(!GetQueuedCompletionStatusEx(bad, &entry, 1, &removed, 0, FALSE),
                 "GetQueuedCompletionStatusEx");
  expect_invalid(!PostQueuedCompletionStatus(bad, 0, 0, nullptr), "PostQueuedCompletionStatus");
  expect_invalid(!CancelIo(bad), "CancelIo");
  expect_invalid(!CancelIoEx(bad, nullptr), "CancelIoEx");
  OVERLAPPED pending{};
  pending.Internal = STATUS_PENDING;
  expect_invalid(!GetOverlappedResult(bad, &pending, &bytes, TRUE), "GetOverlappedResult");
}

TEST(Win32Handles, AnObjectOfTheWrongTypeIsAnInvalidHandle) {
  Handle semaphore(CreateSemaphoreW(nullptr, 1, 1, nullptr));
  Handle event(CreateEventW(nullptr, TRUE, FALSE, nullptr));
  EXPECT_FALSE(SetEvent(semaphore.get()));
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_HANDLE));
  EXPECT_FALSE(ReleaseSemaphore(event.get(), 1, nullptr));
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_HANDLE));
  // An event is no file: it cannot be associated with a completion port.
  EXPECT_EQ(CreateIoCompletionPort(event.get(), nullptr, 1, 0), nullptr);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_HANDLE));
}

TEST(Win32Handles, LastErrorIsPerThread) {
  SetLastError(1234);
  std::thread([] {
    EXPECT_EQ(GetLastError(), 0u);
    SetLastError(42);
  }).join();
  EXPECT_EQ(GetLastError(), 1234u);
}

// ---- events ----

TEST(Win32Events, ManualResetStaysSignalledUntilReset) {
  Handle event(CreateEventW(nullptr, TRUE, FALSE, nullptr));
  ASSERT_NE(event.get(), nullptr);
  EXPECT_EQ(WaitForSingleObject(event.get(), 0), static_cast<DWORD>(WAIT_TIMEOUT));
  EXPECT_TRUE(SetEvent(event.get()));
  EXPECT_EQ(WaitForSingleObject(event.get(), 0), WAIT_OBJECT_0);
  EXPECT_EQ(WaitForSingleObject(event.get(), 0), WAIT_OBJECT_0) << "a wait does not reset it";
  EXPECT_TRUE(ResetEvent(event.get()));
  EXPECT_EQ(WaitForSingleObject(event.get(), 0), static_cast<DWORD>(WAIT_TIMEOUT));
}

TEST(Win32Events, AutoResetReleasesOneWaitAndResets) {
  Handle event(CreateEventA(nullptr, FALSE, TRUE, nullptr));
  EXPECT_EQ(WaitForSingleObject(event.get(), 0), WAIT_OBJECT_0) << "initially signalled";
  EXPECT_EQ(WaitForSingleObject(event.get(), 0), static_cast<DWORD>(WAIT_TIMEOUT)) << "the wait reset it";
  SetEvent(event.get());
  SetEvent(event.get());  // not counted: still one wait
  EXPECT_EQ(WaitForSingleObject(event.get(), 0), WAIT_OBJECT_0);
  EXPECT_EQ(WaitForSingleObject(event.get(), 0), static_cast<DWORD>(WAIT_TIMEOUT));
}

TEST(Win32Events, AutoResetWakesExactlyOneOfTwoWaiters) {
  Handle event(CreateEventW(nullptr, FALSE, FALSE, nullptr));
  std::atomic<int> woken{0};
  auto waiter = [&] {
    if (WaitForSingleObject(event.get(), 500) == WAIT_OBJECT_0) ++woken;
  };
  std::thread a(waiter), b(waiter);
  SetEvent(event.get());
  a.join();
  b.join();
  EXPECT_EQ(woken.load(), 1) << "one SetEvent of an auto-reset event releases one wait";
}

TEST(Win32Events, SetFromAnotherThreadEndsAWait) {
  Handle event(CreateEventW(nullptr, TRUE, FALSE, nullptr));
  std::thread setter([&] { SetEvent(event.get()); });
  EXPECT_EQ(WaitForSingleObject(event.get(), kLong), WAIT_OBJECT_0);
  setter.join();
}

TEST(Win32Events, WaitTimesOutAfterAboutItsTimeout) {
  Handle event(CreateEventW(nullptr, TRUE, FALSE, nullptr));
  const auto start = Clock::now();
  EXPECT_EQ(WaitForSingleObjectEx(event.get(), 100, TRUE), static_cast<DWORD>(WAIT_TIMEOUT));
  EXPECT_GE(elapsed_ms(start), 100);
}

TEST(Win32Events, NamedEventsAreOneObject) {
  SetLastError(77);
  Handle first(CreateEventA(nullptr, TRUE, FALSE, "fltport-test-event"));
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_SUCCESS));
  Handle second(CreateEventW(nullptr, TRUE, FALSE, L"fltport-test-event"));
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_ALREADY_EXISTS));
  ASSERT_NE(second.get(), nullptr);
  EXPECT_NE(first.get(), second.get()) << "a new handle to the same object";
  SetEvent(first.get());
  EXPECT_EQ(WaitForSingleObject(second.get(), 0), WAIT_OBJECT_0);
  // The name of an event is not a semaphore's.
  EXPECT_EQ(CreateSemaphoreA(nullptr, 0, 1, "fltport-test-event"), nullptr);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_HANDLE));
}

TEST(Win32Events, CreateEventFollowsUnicode) {
#ifdef UNICODE
  HANDLE (*create)(LPSECURITY_ATTRIBUTES, BOOL, BOOL, LPCWSTR) = CreateEvent;
#else
  HANDLE (*create)(LPSECURITY_ATTRIBUTES, BOOL, BOOL, LPCSTR) = CreateEvent;
#endif
  Handle event(create(nullptr, TRUE, TRUE, nullptr));
  EXPECT_EQ(WaitForSingleObject(event.get(), 0), WAIT_OBJECT_0);
}

// ---- semaphores ----

TEST(Win32Semaphores, CountsDownOnWaitsAndUpOnRelease) {
  Handle semaphore(CreateSemaphoreW(nullptr, 2, 3, nullptr));
  ASSERT_NE(semaphore.get(), nullptr);
  EXPECT_EQ(WaitForSingleObject(semaphore.get(), 0), WAIT_OBJECT_0);
  EXPECT_EQ(WaitForSingleObject(semaphore.get(), 0), WAIT_OBJECT_0);
  EXPECT_EQ(WaitForSingleObject(semaphore.get(), 0), static_cast<DWORD>(WAIT_TIMEOUT));
  LONG previous = -1;
  EXPECT_TRUE(ReleaseSemaphore(semaphore.get(), 3, &previous));
  EXPECT_EQ(previous, 0);
  EXPECT_FALSE(ReleaseSemaphore(semaphore.get(), 1, &previous)) << "beyond the maximum";
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_TOO_MANY_POSTS));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(WaitForSingleObject(semaphore.get(), 0), WAIT_OBJECT_0) << i;
  EXPECT_EQ(WaitForSingleObject(semaphore.get(), 0), static_cast<DWORD>(WAIT_TIMEOUT))
      << "the count was unchanged";
  EXPECT_FALSE(ReleaseSemaphore(semaphore.get(), 0, nullptr));
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
}

TEST(Win32Semaphores, RefusesImpossibleCounts) {
  EXPECT_EQ(CreateSemaphoreW(nullptr, 0, 0, nullptr), nullptr);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  EXPECT_EQ(CreateSemaphoreW(nullptr, 2, 1, nullptr), nullptr);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  EXPECT_EQ(CreateSemaphoreA(nullptr, -1, 1, nullptr), nullptr);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
}

TEST(Win32Semaphores, ReleaseWakesWaitersUpToTheCount) {
  Handle semaphore(CreateSemaphoreW(nullptr, 0, 10, nullptr));
  std::atomic<int> acquired{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&] {
      if (WaitForSingleObject(semaphore.get(), 1000) == WAIT_OBJECT_0) ++acquired;
    });
  }
  ReleaseSemaphore(semaphore.get(), 2, nullptr);
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(acquired.load(), 2);
}

// ---- waiting on several objects ----

TEST(Win32Waits, WaitAnyReturnsTheLowestSignalledIndex) {
  Handle events[3] = {Handle(CreateEventW(nullptr, TRUE, FALSE, nullptr)),
                      Handle(CreateEventW(nullptr, TRUE, FALSE, nullptr)),
                      Handle(CreateEventW(nullptr, TRUE, FALSE, nullptr))};
  const HANDLE handles[3] = {events[0].get(), events[1].get(), events[2].get()};
  EXPECT_EQ(WaitForMultipleObjects(3, handles, FALSE, kShort), static_cast<DWORD>(WAIT_TIMEOUT));
  SetEvent(handles[2]);
  EXPECT_EQ(WaitForMultipleObjects(3, handles, FALSE, 0), WAIT_OBJECT_0 + 2);
  SetEvent(handles[1]);
  EXPECT_EQ(WaitForMultipleObjectsEx(3, handles, FALSE, 0, FALSE), WAIT_OBJECT_0 + 1);
}

TEST(Win32Waits, WaitAnyWakesForASignalFromAnotherThread) {
  Handle a(CreateEventW(nullptr, FALSE, FALSE, nullptr));
  Handle b(CreateSemaphoreW(nullptr, 0, 1, nullptr));
  const HANDLE handles[2] = {a.get(), b.get()};
  std::thread releaser([&] { ReleaseSemaphore(b.get(), 1, nullptr); });
  EXPECT_EQ(WaitForMultipleObjects(2, handles, FALSE, kLong), WAIT_OBJECT_0 + 1);
  releaser.join();
  EXPECT_EQ(WaitForSingleObject(b.get(), 0), static_cast<DWORD>(WAIT_TIMEOUT)) << "the wait took the count";
}

TEST(Win32Waits, WaitAllTakesEveryObjectAtOnceOrNone) {
  Handle event(CreateEventW(nullptr, FALSE, TRUE, nullptr));   // auto-reset, signalled
  Handle semaphore(CreateSemaphoreW(nullptr, 0, 5, nullptr));  // not available
  const HANDLE handles[2] = {event.get(), semaphore.get()};
  EXPECT_EQ(WaitForMultipleObjects(2, handles, TRUE, kShort), static_cast<DWORD>(WAIT_TIMEOUT));
  EXPECT_EQ(WaitForSingleObject(event.get(), 0), WAIT_OBJECT_0)
      << "a WaitAll that did not complete took nothing from the auto-reset event";
  SetEvent(event.get());
  ReleaseSemaphore(semaphore.get(), 1, nullptr);
  EXPECT_EQ(WaitForMultipleObjects(2, handles, TRUE, 0), WAIT_OBJECT_0);
  EXPECT_EQ(WaitForSingleObject(event.get(), 0), static_cast<DWORD>(WAIT_TIMEOUT));
  EXPECT_EQ(WaitForSingleObject(semaphore.get(), 0), static_cast<DWORD>(WAIT_TIMEOUT));
}

TEST(Win32Waits, WaitAllCompletesWhenTheLastObjectIsSignalled) {
  Handle a(CreateEventW(nullptr, TRUE, FALSE, nullptr));
  Handle b(CreateEventW(nullptr, TRUE, FALSE, nullptr));
  const HANDLE handles[2] = {a.get(), b.get()};
  std::thread setter([&] {
    SetEvent(a.get());
    SetEvent(b.get());
  });
  EXPECT_EQ(WaitForMultipleObjects(2, handles, TRUE, kLong), WAIT_OBJECT_0);
  setter.join();
}

TEST(Win32Waits, RefusesBadArguments) {
  Handle event(CreateEventW(nullptr, TRUE, TRUE, nullptr));
  const HANDLE handles[2] = {event.get(), event.get()};
  EXPECT_EQ(WaitForMultipleObjects(0, handles, FALSE, 0), WAIT_FAILED);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  EXPECT_EQ(WaitForMultipleObjects(MAXIMUM_WAIT_OBJECTS + 1, handles, FALSE, 0), WAIT_FAILED);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  EXPECT_EQ(WaitForMultipleObjects(2, handles, TRUE, 0), WAIT_FAILED) << "the same object twice in WaitAll";
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  const HANDLE with_bad[2] = {event.get(), closed_handle()};
  EXPECT_EQ(WaitForMultipleObjects(2, with_bad, FALSE, 0), WAIT_FAILED);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_HANDLE));
}

TEST(Win32Waits, SleepSleepsAndSleepExReturnsZero) {
  const auto start = Clock::now();
  Sleep(30);
  EXPECT_GE(elapsed_ms(start), 30);
  EXPECT_EQ(SleepEx(0, TRUE), 0u);
}

// ---- threads ----

DWORD WINAPI return_parameter(LPVOID parameter) {
  return static_cast<DWORD>(reinterpret_cast<uintptr_t>(parameter));
}

TEST(Win32Threads, ExitCodeIsTheReturnValueAndTheHandleIsSignalledAtTheEnd) {
  DWORD id = 0;
  Handle thread(CreateThread(nullptr, 0, return_parameter, reinterpret_cast<LPVOID>(uintptr_t{42}), 0, &id));
  ASSERT_NE(thread.get(), nullptr);
  EXPECT_NE(id, 0u);
  EXPECT_NE(id, GetCurrentThreadId());
  ASSERT_EQ(WaitForSingleObject(thread.get(), kLong), WAIT_OBJECT_0);
  DWORD code = 0;
  EXPECT_TRUE(GetExitCodeThread(thread.get(), &code));
  EXPECT_EQ(code, 42u);
  EXPECT_EQ(WaitForSingleObject(thread.get(), 0), WAIT_OBJECT_0) << "an ended thread stays signalled";
}

struct Gate {
  HANDLE started;
  HANDLE go;
  DWORD id;
};

DWORD WINAPI wait_at_gate(LPVOID parameter) {
  auto* gate = static_cast<Gate*>(parameter);
  gate->id = GetCurrentThreadId();
  SetEvent(gate->started);
  WaitForSingleObject(gate->go, INFINITE);
  return 7;
}

TEST(Win32Threads, RunningThreadIsStillActiveAndNotSignalled) {
  Handle started(CreateEventW(nullptr, TRUE, FALSE, nullptr));
  Handle go(CreateEventW(nullptr, TRUE, FALSE, nullptr));
  Gate gate{started.get(), go.get(), 0};
  DWORD id = 0;
  Handle thread(CreateThread(nullptr, 64 * 1024, wait_at_gate, &gate, 0, &id));
  ASSERT_EQ(WaitForSingleObject(started.get(), kLong), WAIT_OBJECT_0);
  EXPECT_EQ(gate.id, id) << "lpThreadId is the thread's GetCurrentThreadId";
  DWORD code = 0;
  EXPECT_TRUE(GetExitCodeThread(thread.get(), &code));
  EXPECT_EQ(code, static_cast<DWORD>(STILL_ACTIVE));
  EXPECT_EQ(WaitForSingleObject(thread.get(), kShort), static_cast<DWORD>(WAIT_TIMEOUT));
  SetEvent(go.get());
  EXPECT_EQ(WaitForSingleObject(thread.get(), kLong), WAIT_OBJECT_0);
  EXPECT_TRUE(GetExitCodeThread(thread.get(), &code));
  EXPECT_EQ(code, 7u);
}

TEST(Win32Threads, SuspendedThreadRunsAtResume) {
  Handle started(CreateEventW(nullptr, TRUE, FALSE, nullptr));
  Handle go(CreateEventW(nullptr, TRUE, TRUE, nullptr));
  Gate gate{started.get(), go.get(), 0};
  Handle thread(CreateThread(nullptr, 0, wait_at_gate, &gate, CREATE_SUSPENDED, nullptr));
  ASSERT_NE(thread.get(), nullptr);
  EXPECT_EQ(WaitForSingleObject(started.get(), kShort), static_cast<DWORD>(WAIT_TIMEOUT)) << "it has not run";
  EXPECT_EQ(ResumeThread(thread.get()), 1u) << "the previous suspend count";
  EXPECT_EQ(WaitForSingleObject(started.get(), kLong), WAIT_OBJECT_0);
  EXPECT_EQ(WaitForSingleObject(thread.get(), kLong), WAIT_OBJECT_0);
  EXPECT_EQ(ResumeThread(thread.get()), 0u) << "not suspended";
}

struct Unwound {
  std::atomic<bool>* flag;
  ~Unwound() { *flag = true; }
};

std::atomic<bool> exit_thread_unwound{false};

DWORD WINAPI call_exit_thread(LPVOID) {
  Unwound guard{&exit_thread_unwound};
  ExitThread(99);
}

TEST(Win32Threads, ExitThreadSetsTheExitCodeAndUnwinds) {
  Handle thread(CreateThread(nullptr, 0, call_exit_thread, nullptr, 0, nullptr));
  ASSERT_EQ(WaitForSingleObject(thread.get(), kLong), WAIT_OBJECT_0);
  DWORD code = 0;
  EXPECT_TRUE(GetExitCodeThread(thread.get(), &code));
  EXPECT_EQ(code, 99u);
  EXPECT_TRUE(exit_thread_unwound.load()) << "destructors ran on the way out";
}

TEST(Win32Threads, ClosingARunningThreadsHandleLetsItFinish) {
  Handle started(CreateEventW(nullptr, TRUE, FALSE, nullptr));
  Handle go(CreateEventW(nullptr, TRUE, FALSE, nullptr));
  Handle finished(CreateEventW(nullptr, TRUE, FALSE, nullptr));
  struct Work {
    Gate gate;
    HANDLE finished;
  } work{{started.get(), go.get(), 0}, finished.get()};
  HANDLE thread = CreateThread(
      nullptr, 0,
      [](LPVOID parameter) -> DWORD {
        auto* work = static_cast<Work*>(parameter);
        wait_at_gate(&work->gate);
        SetEvent(work->finished);
        return 0;
      },
      &work, 0, nullptr);
  ASSERT_EQ(WaitForSingleObject(started.get(), kLong), WAIT_OBJECT_0);
  EXPECT_TRUE(CloseHandle(thread));
  SetEvent(go.get());
  EXPECT_EQ(WaitForSingleObject(finished.get(), kLong), WAIT_OBJECT_0);
}

TEST(Win32Threads, WaitForMultipleThreads) {
  Handle threads[3] = {Handle(CreateThread(nullptr, 0, return_parameter, nullptr, 0, nullptr)),
                       Handle(CreateThread(nullptr, 0, return_parameter, nullptr, 0, nullptr)),
                       Handle(CreateThread(nullptr, 0, return_parameter, nullptr, 0, nullptr))};
  const HANDLE handles[3] = {threads[0].get(), threads[1].get(), threads[2].get()};
  EXPECT_EQ(WaitForMultipleObjects(3, handles, TRUE, kLong), WAIT_OBJECT_0);
}

TEST(Win32Threads, CreateThreadWithoutAStartRoutineFails) {
  EXPECT_EQ(CreateThread(nullptr, 0, nullptr, nullptr, 0, nullptr), nullptr);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
}

TEST(Win32Threads, CurrentIds) {
  EXPECT_NE(GetCurrentThreadId(), 0u);
  EXPECT_EQ(GetCurrentProcessId(), static_cast<DWORD>(getpid()));
  DWORD other = 0;
  std::thread([&] { other = GetCurrentThreadId(); }).join();
  EXPECT_NE(other, GetCurrentThreadId());
}

// ---- critical sections ----

TEST(Win32CriticalSections, AreRecursive) {
  CRITICAL_SECTION section;
  InitializeCriticalSection(&section);
  EnterCriticalSection(&section);
  EnterCriticalSection(&section);
  EXPECT_TRUE(TryEnterCriticalSection(&section)) << "the owner enters again";
  LeaveCriticalSection(&section);
  LeaveCriticalSection(&section);
  bool other_entered = true;
  std::thread([&] { other_entered = TryEnterCriticalSection(&section) != FALSE; }).join();
  EXPECT_FALSE(other_entered) << "still held once";
  LeaveCriticalSection(&section);
  std::thread([&] {
    other_entered = TryEnterCriticalSection(&section) != FALSE;
    if (other_entered) LeaveCriticalSection(&section);
  }).join();
  EXPECT_TRUE(other_entered);
  DeleteCriticalSection(&section);
}

TEST(Win32CriticalSections, ExcludeOtherThreads) {
  CRITICAL_SECTION section;
  ASSERT_TRUE(InitializeCriticalSectionAndSpinCount(&section, 4000));
  long counter = 0;  // guarded by the section only
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        EnterCriticalSection(&section);
        ++counter;
        LeaveCriticalSection(&section);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(counter, 40000);
  DeleteCriticalSection(&section);
  ASSERT_TRUE(InitializeCriticalSectionEx(&section, 0, 0));
  DeleteCriticalSection(&section);
}

// ---- heap ----

TEST(Win32Heap, AllocZeroReallocFree) {
  HANDLE heap = GetProcessHeap();
  ASSERT_NE(heap, nullptr);
  EXPECT_EQ(GetProcessHeap(), heap);
  auto* block = static_cast<unsigned char*>(HeapAlloc(heap, HEAP_ZERO_MEMORY, 100));
  ASSERT_NE(block, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(block) % 16, 0u);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(block[i], 0) << i;
  EXPECT_EQ(HeapSize(heap, 0, block), 100u);
  std::memset(block, 0xAB, 100);
  block = static_cast<unsigned char*>(HeapReAlloc(heap, HEAP_ZERO_MEMORY, block, 300));
  ASSERT_NE(block, nullptr);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(block[i], 0xAB) << i;
  for (int i = 100; i < 300; ++i) ASSERT_EQ(block[i], 0) << "grown bytes are zeroed: " << i;
  EXPECT_EQ(HeapReAlloc(heap, HEAP_REALLOC_IN_PLACE_ONLY, block, 4000), nullptr);
  EXPECT_EQ(HeapReAlloc(heap, HEAP_REALLOC_IN_PLACE_ONLY, block, 10), block) << "shrinking stays in place";
  EXPECT_EQ(HeapSize(heap, 0, block), 10u);
  EXPECT_TRUE(HeapFree(heap, 0, block));
  EXPECT_TRUE(HeapFree(heap, 0, nullptr));
  void* plain = HeapAlloc(heap, 0, 0);
  EXPECT_NE(plain, nullptr);
  HeapFree(heap, 0, plain);
}

// ---- completion ports ----

TEST(Win32CompletionPorts, PacketsComeOutInOrderWithTheirValues) {
  Handle port(CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, 0));
  ASSERT_NE(port.get(), nullptr);
  OVERLAPPED overlapped[3] = {};
  for (DWORD i = 0; i < 3; ++i) {
    ASSERT_TRUE(PostQueuedCompletionStatus(port.get(), 100 + i, 10 + i, &overlapped[i]));
  }
  for (DWORD i = 0; i < 3; ++i) {
    DWORD bytes = 0;
    ULONG_PTR key = 0;
    LPOVERLAPPED got = nullptr;
    ASSERT_TRUE(GetQueuedCompletionStatus(port.get(), &bytes, &key, &got, 0));
    EXPECT_EQ(bytes, 100 + i);
    EXPECT_EQ(key, 10 + i);
    EXPECT_EQ(got, &overlapped[i]);
  }
}

TEST(Win32CompletionPorts, EmptyPortTimesOutWithNoOverlapped) {
  Handle port(CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, 4));
  DWORD bytes = 0;
  ULONG_PTR key = 0;
  OVERLAPPED dummy{};
  LPOVERLAPPED got = &dummy;
  const auto start = Clock::now();
  EXPECT_FALSE(GetQueuedCompletionStatus(port.get(), &bytes, &key, &got, kShort));
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(WAIT_TIMEOUT));
  EXPECT_EQ(got, nullptr) << "a timeout is told apart from a failed request by *lpOverlapped";
  EXPECT_GE(elapsed_ms(start), kShort);
  got = &dummy;
  EXPECT_FALSE(GetQueuedCompletionStatus(port.get(), &bytes, &key, &got, 0));
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(WAIT_TIMEOUT));
  EXPECT_EQ(got, nullptr);
}

TEST(Win32CompletionPorts, AWaitingThreadGetsAPacketPostedLater) {
  Handle port(CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, 0));
  std::thread poster([&] { PostQueuedCompletionStatus(port.get(), 5, 6, nullptr); });
  DWORD bytes = 0;
  ULONG_PTR key = 0;
  LPOVERLAPPED got = nullptr;
  EXPECT_TRUE(GetQueuedCompletionStatus(port.get(), &bytes, &key, &got, kLong));
  EXPECT_EQ(bytes, 5u);
  EXPECT_EQ(key, 6u);
  EXPECT_EQ(got, nullptr);
  poster.join();
}

TEST(Win32CompletionPorts, ExTakesSeveralEntriesAtOnce) {
  Handle port(CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, 0));
  OVERLAPPED overlapped[5] = {};
  for (DWORD i = 0; i < 5; ++i) PostQueuedCompletionStatus(port.get(), i, 100 + i, &overlapped[i]);
  OVERLAPPED_ENTRY entries[3];
  ULONG removed = 0;
  ASSERT_TRUE(GetQueuedCompletionStatusEx(port.get(), entries, 3, &removed, 0, FALSE));
  ASSERT_EQ(removed, 3u);
  for (ULONG i = 0; i < 3; ++i) {
    EXPECT_EQ(entries[i].lpCompletionKey, 100 + i);
    EXPECT_EQ(entries[i].lpOverlapped, &overlapped[i]);
    EXPECT_EQ(entries[i].dwNumberOfBytesTransferred, i);
  }
  ASSERT_TRUE(GetQueuedCompletionStatusEx(port.get(), entries, 3, &removed, kLong, TRUE));
  ASSERT_EQ(removed, 2u) << "what is left, without waiting for more";
  EXPECT_EQ(entries[1].lpOverlapped, &overlapped[4]);
  EXPECT_FALSE(GetQueuedCompletionStatusEx(port.get(), entries, 3, &removed, kShort, FALSE));
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(WAIT_TIMEOUT));
  EXPECT_EQ(removed, 0u);
  EXPECT_FALSE(GetQueuedCompletionStatusEx(port.get(), entries, 0, &removed, 0, FALSE));
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
}

TEST(Win32CompletionPorts, ClosingThePortWakesEveryWaiter) {
  HANDLE port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, 0);
  Handle ready(CreateSemaphoreW(nullptr, 0, 3, nullptr));
  std::atomic<int> abandoned{0}, late{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < 3; ++i) {
    waiters.emplace_back([&] {
      ReleaseSemaphore(ready.get(), 1, nullptr);
      DWORD bytes = 0;
      ULONG_PTR key = 0;
      LPOVERLAPPED got = nullptr;
      if (GetQueuedCompletionStatus(port, &bytes, &key, &got, kLong) || got != nullptr) return;
      if (GetLastError() == static_cast<DWORD>(ERROR_ABANDONED_WAIT_0)) ++abandoned;
      if (GetLastError() == static_cast<DWORD>(ERROR_INVALID_HANDLE)) ++late;
    });
  }
  for (int i = 0; i < 3; ++i) ASSERT_EQ(WaitForSingleObject(ready.get(), kLong), WAIT_OBJECT_0);
  // Nothing tells from outside that a thread is inside the wait: give them a moment. One that is
  // not there yet finds the handle closed (ERROR_INVALID_HANDLE); one that is must be woken now,
  // not at its 10 s timeout.
  Sleep(100);
  const auto start = Clock::now();
  EXPECT_TRUE(CloseHandle(port));
  for (auto& waiter : waiters) waiter.join();
  EXPECT_LT(elapsed_ms(start), static_cast<long long>(kLong / 2));
  EXPECT_EQ(abandoned.load() + late.load(), 3);
  EXPECT_GE(abandoned.load(), 1);
}

TEST(Win32CompletionPorts, RefusesAnExistingPortWithoutAFile) {
  Handle port(CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, 0));
  EXPECT_EQ(CreateIoCompletionPort(INVALID_HANDLE_VALUE, port.get(), 1, 0), nullptr);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
}

TEST(Win32Overlapped, HasOverlappedIoCompletedReadsInternal) {
  OVERLAPPED overlapped{};
  overlapped.Internal = STATUS_PENDING;
  EXPECT_FALSE(HasOverlappedIoCompleted(&overlapped));
  overlapped.Internal = STATUS_SUCCESS;
  EXPECT_TRUE(HasOverlappedIoCompleted(&overlapped));
}

TEST(Win32Overlapped, GetOverlappedResultOfACompletedRequestNeedsNoHandle) {
  OVERLAPPED overlapped{};
  overlapped.Internal = static_cast<uint32_t>(STATUS_CANCELLED);
  overlapped.InternalHigh = 3;
  DWORD bytes = 0;
  EXPECT_FALSE(GetOverlappedResult(closed_handle(), &overlapped, &bytes, FALSE));
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_OPERATION_ABORTED));
  EXPECT_EQ(bytes, 3u);
  overlapped.Internal = STATUS_SUCCESS;
  EXPECT_TRUE(GetOverlappedResultEx(closed_handle(), &overlapped, &bytes, 0, FALSE));
}

TEST(Win32Overlapped, PendingRequestIsIncompleteOrWaitsOnItsEvent) {
  Handle event(CreateEventW(nullptr, TRUE, FALSE, nullptr));
  OVERLAPPED overlapped{};
  overlapped.Internal = STATUS_PENDING;
  overlapped.hEvent = event.get();
  DWORD bytes = 0;
  EXPECT_FALSE(GetOverlappedResult(nullptr, &overlapped, &bytes, FALSE));
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_IO_INCOMPLETE));
  EXPECT_FALSE(GetOverlappedResultEx(nullptr, &overlapped, &bytes, kShort, FALSE));
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(WAIT_TIMEOUT));
}

}  // namespace
