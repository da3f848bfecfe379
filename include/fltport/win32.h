/*
 * fltport: the Windows base types the Filter Manager APIs are written in, with x86-64 Windows
 * sizes. Windows is LLP64: ULONG/LONG/DWORD are 32 bits even though Linux `long` is 64.
 * WCHAR is the platform wchar_t (4 bytes on Linux) so that L"\\ScannerPort" compiles unchanged.
 */
#ifndef FLTPORT_WIN32_H
#define FLTPORT_WIN32_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <wchar.h>

#ifdef __cplusplus
#define FLTPORT_EXTERN_C extern "C"
#define FLTPORT_BEGIN_C extern "C" {
#define FLTPORT_END_C }
#else
#define FLTPORT_EXTERN_C
#define FLTPORT_BEGIN_C
#define FLTPORT_END_C
#endif

#define FLTPORT_API __attribute__((visibility("default")))

/* Calling conventions and annotations have no meaning on x86-64 Linux. */
#ifndef WINAPI
#define WINAPI
#endif
#ifndef FLTAPI
#define FLTAPI
#endif
#ifndef NTAPI
#define NTAPI
#endif
#ifndef _In_
#define _In_
#define _In_opt_
#define _Out_
#define _Out_opt_
#define _Inout_
#define _Inout_opt_
#endif

/* Calling conventions: one convention on x86-64 Linux, so they all expand to nothing. */
#ifndef CALLBACK
#define CALLBACK
#endif
#ifndef APIENTRY
#define APIENTRY
#endif
#ifndef WINAPIV
#define WINAPIV
#endif
#ifndef __cdecl
#define __cdecl
#endif
#ifndef _cdecl
#define _cdecl
#endif
#ifndef __stdcall
#define __stdcall
#endif
#ifndef _stdcall
#define _stdcall
#endif

/* SAL annotations (sal.h): no-ops, so annotated Windows declarations compile unchanged. */
#ifndef _In_reads_bytes_
#define _In_z_
#define _In_opt_z_
#define _In_reads_(size)
#define _In_reads_opt_(size)
#define _In_reads_bytes_(size)
#define _In_reads_bytes_opt_(size)
#define _In_range_(low, high)
#define _Out_writes_(size)
#define _Out_writes_opt_(size)
#define _Out_writes_z_(size)
#define _Out_writes_to_(size, count)
#define _Out_writes_to_opt_(size, count)
#define _Out_writes_bytes_(size)
#define _Out_writes_bytes_opt_(size)
#define _Out_writes_bytes_to_(size, count)
#define _Out_writes_bytes_to_opt_(size, count)
#define _Out_writes_bytes_all_(size)
#define _Out_range_(low, high)
#define _Inout_z_
#define _Inout_updates_(size)
#define _Inout_updates_opt_(size)
#define _Inout_updates_bytes_(size)
#define _Inout_updates_bytes_opt_(size)
#define _Outptr_
#define _Outptr_opt_
#define _Outptr_result_maybenull_
#define _Outptr_result_buffer_(size)
#define _Outptr_result_bytes_(size)
#define _Deref_out_
#define _Deref_out_opt_
#define _Ret_maybenull_
#define _Ret_notnull_
#define _Ret_writes_bytes_maybenull_(size)
#define _Success_(expr)
#define _Must_inspect_result_
#define _Check_return_
#define _When_(cond, annotations)
#define _Pre_
#define _Post_
#define _Pre_satisfies_(expr)
#define _Post_satisfies_(expr)
#define _Field_size_(size)
#define _Field_size_opt_(size)
#define _Field_size_bytes_(size)
#define _Field_size_bytes_opt_(size)
#define _Field_size_part_(size, count)
#define _Field_size_bytes_part_(size, count)
#define _Field_range_(low, high)
#define _Field_z_
#define _Null_terminated_
#define _NullNull_terminated_
#define _Reserved_
#define _Frees_ptr_
#define _Frees_ptr_opt_
#define _Use_decl_annotations_
#define _Printf_format_string_
#define _Analysis_assume_(expr)
#define _Acquires_lock_(lock)
#define _Releases_lock_(lock)
#define _Requires_lock_held_(lock)
#define _Requires_lock_not_held_(lock)
#define _Guarded_by_(lock)
#define _Interlocked_
#define _IRQL_requires_(irql)
#define _IRQL_requires_max_(irql)
#define _IRQL_raises_(irql)
#define _IRQL_saves_
#define _IRQL_restores_
#define _Function_class_(name)
#define _Dispatch_type_(type)
#endif

#ifndef VOID
#define VOID void
#endif
typedef void* PVOID;
typedef void* LPVOID;
typedef const void* LPCVOID;
typedef const void* PCVOID;
typedef char CHAR;
typedef CHAR* PCHAR;
typedef CHAR* PSTR;
typedef CHAR* LPSTR;
typedef const CHAR* PCSTR;
typedef const CHAR* LPCSTR;
typedef uint8_t UCHAR;
typedef uint8_t BYTE;
typedef uint8_t BOOLEAN;
typedef int16_t SHORT;
typedef uint16_t USHORT;
typedef uint16_t WORD;
typedef int32_t LONG;
typedef uint32_t ULONG;
typedef uint32_t DWORD;
typedef int32_t BOOL;
typedef int INT;
typedef unsigned int UINT;
typedef int64_t LONGLONG;
typedef uint64_t ULONGLONG;
typedef uint64_t DWORD64;
typedef uintptr_t ULONG_PTR;
typedef intptr_t LONG_PTR;
typedef uintptr_t SIZE_T;
typedef wchar_t WCHAR;
typedef WCHAR* PWSTR;
typedef WCHAR* LPWSTR;
typedef const WCHAR* PCWSTR;
typedef const WCHAR* LPCWSTR;
typedef ULONG* PULONG;
typedef DWORD* PDWORD;
typedef DWORD* LPDWORD;
typedef LONG* PLONG;
typedef LONG* LPLONG;
typedef ULONG_PTR* PULONG_PTR;
typedef SIZE_T* PSIZE_T;
typedef BOOL* PBOOL;
typedef BOOL* LPBOOL;
typedef void* HANDLE;
typedef HANDLE* PHANDLE;
typedef HANDLE* LPHANDLE;
typedef int32_t HRESULT;
typedef int32_t NTSTATUS;
typedef ULONG ACCESS_MASK;
typedef PVOID PSECURITY_DESCRIPTOR;

#ifndef TRUE
#define TRUE 1
#endif
#ifndef FALSE
#define FALSE 0
#endif
#define INVALID_HANDLE_VALUE ((HANDLE)(LONG_PTR)-1)

typedef union _LARGE_INTEGER {
  struct {
    DWORD LowPart;
    LONG HighPart;
  };
  struct {
    DWORD LowPart;
    LONG HighPart;
  } u;
  LONGLONG QuadPart;
} LARGE_INTEGER, *PLARGE_INTEGER;

typedef struct _OVERLAPPED {
  ULONG_PTR Internal;     /* status of the completed request */
  ULONG_PTR InternalHigh; /* bytes transferred */
  union {
    struct {
      DWORD Offset;
      DWORD OffsetHigh;
    };
    PVOID Pointer;
  };
  HANDLE hEvent;
} OVERLAPPED, *LPOVERLAPPED;

typedef struct _SECURITY_ATTRIBUTES {
  DWORD nLength;
  LPVOID lpSecurityDescriptor;
  BOOL bInheritHandle;
} SECURITY_ATTRIBUTES, *PSECURITY_ATTRIBUTES, *LPSECURITY_ATTRIBUTES;

/* ---- Structure helpers (ntdef.h) ----
 * Built on offsetof so that they stay constant expressions in C and C++. */
#ifndef FIELD_OFFSET
#define FIELD_OFFSET(type, field) ((LONG)offsetof(type, field))
#endif
#ifndef CONTAINING_RECORD
#define CONTAINING_RECORD(address, type, field) ((type*)((char*)(address) - offsetof(type, field)))
#endif
#ifndef UNREFERENCED_PARAMETER
#define UNREFERENCED_PARAMETER(P) ((void)(P))
#define DBG_UNREFERENCED_PARAMETER(P) ((void)(P))
#define DBG_UNREFERENCED_LOCAL_VARIABLE(V) ((void)(V))
#endif

/* ---- Memory (winnt.h, minwinbase.h) ---- */
#define RtlEqualMemory(Destination, Source, Length) (!memcmp((Destination), (Source), (Length)))
#define RtlCopyMemory(Destination, Source, Length) memcpy((Destination), (Source), (Length))
#define RtlMoveMemory(Destination, Source, Length) memmove((Destination), (Source), (Length))
#define RtlFillMemory(Destination, Length, Fill) memset((Destination), (Fill), (Length))
#define RtlZeroMemory(Destination, Length) memset((Destination), 0, (Length))
#define EqualMemory RtlEqualMemory
#define CopyMemory RtlCopyMemory
#define MoveMemory RtlMoveMemory
#define FillMemory RtlFillMemory
#define ZeroMemory RtlZeroMemory
/* Writes through a volatile pointer so the compiler cannot drop it as a dead store. */
static inline PVOID RtlSecureZeroMemory(PVOID ptr, SIZE_T cnt) {
  volatile char* p = (volatile char*)ptr;
  while (cnt != 0) {
    *p++ = 0;
    --cnt;
  }
  return ptr;
}
#define SecureZeroMemory RtlSecureZeroMemory

/* ---- Waits (winbase.h, synchapi.h); WAIT_TIMEOUT is with the errors in <fltport/status.h> ---- */
#define INFINITE 0xFFFFFFFFu
#define MAXIMUM_WAIT_OBJECTS 64
#define WAIT_OBJECT_0 0x00000000u
#define WAIT_ABANDONED 0x00000080u
#define WAIT_ABANDONED_0 0x00000080u
#define WAIT_IO_COMPLETION 0x000000C0u
#define WAIT_FAILED 0xFFFFFFFFu
/* GetExitCodeThread of a thread still running (STATUS_PENDING). */
#define STILL_ACTIVE 259
/* dwCreationFlags of CreateThread */
#define CREATE_SUSPENDED 0x00000004
/* Heap flags */
#define HEAP_NO_SERIALIZE 0x00000001
#define HEAP_GENERATE_EXCEPTIONS 0x00000004
#define HEAP_ZERO_MEMORY 0x00000008
#define HEAP_REALLOC_IN_PLACE_ONLY 0x00000010

/* Done when Internal is no longer STATUS_PENDING (0x103). Reading Internal while another thread
 * completes the request is a race in C11 terms, as on Windows: prefer GetOverlappedResult. */
#define HasOverlappedIoCompleted(lpOverlapped) (((DWORD)(lpOverlapped)->Internal) != 0x00000103u)

typedef struct _OVERLAPPED_ENTRY {
  ULONG_PTR lpCompletionKey;
  LPOVERLAPPED lpOverlapped;
  ULONG_PTR Internal; /* the request's status (reserved on Windows) */
  DWORD dwNumberOfBytesTransferred;
} OVERLAPPED_ENTRY, *LPOVERLAPPED_ENTRY;

typedef DWORD(WINAPI* PTHREAD_START_ROUTINE)(LPVOID lpThreadParameter);
typedef PTHREAD_START_ROUTINE LPTHREAD_START_ROUTINE;

/* Windows' fields are replaced by room for the recursive pthread mutex that does the work
 * (40 bytes on x86-64 glibc); fltport checks at build time that it fits. */
typedef struct _RTL_CRITICAL_SECTION {
  union {
    uint64_t Align;
    unsigned char Storage[64];
  } FltportMutex;
  ULONG_PTR SpinCount;
} RTL_CRITICAL_SECTION, *PRTL_CRITICAL_SECTION;
typedef RTL_CRITICAL_SECTION CRITICAL_SECTION;
typedef PRTL_CRITICAL_SECTION PCRITICAL_SECTION;
typedef PRTL_CRITICAL_SECTION LPCRITICAL_SECTION;

FLTPORT_BEGIN_C

/* ---- Handles and errors ----
 * Handles name process-local objects: ports, events, semaphores, threads, completion ports.
 * A closed or made-up handle fails with ERROR_INVALID_HANDLE and never crashes. */
FLTPORT_API BOOL WINAPI CloseHandle(HANDLE hObject);
/* The calling thread's last Win32 error, as set by the calls below. */
FLTPORT_API DWORD WINAPI GetLastError(void);
FLTPORT_API void WINAPI SetLastError(DWORD dwErrCode);

/* ---- I/O completion ports (ioapiset.h) ----
 * FileHandle INVALID_HANDLE_VALUE (ExistingCompletionPort NULL): a new port. Otherwise FileHandle
 * (a communication port handle) is associated with ExistingCompletionPort, or with a new port when
 * it is NULL, under CompletionKey; a handle can be associated once (else ERROR_INVALID_PARAMETER).
 * NumberOfConcurrentThreads is accepted and not enforced: every waiting thread may run. */
FLTPORT_API HANDLE WINAPI CreateIoCompletionPort(HANDLE FileHandle, HANDLE ExistingCompletionPort,
                                                 ULONG_PTR CompletionKey, DWORD NumberOfConcurrentThreads);
/* Packets come out in the order they were queued. Failed request: FALSE with the outputs set and
 * its error; timeout: FALSE, *lpOverlapped NULL, WAIT_TIMEOUT; port closed while waiting: FALSE,
 * *lpOverlapped NULL, ERROR_ABANDONED_WAIT_0. */
FLTPORT_API BOOL WINAPI GetQueuedCompletionStatus(HANDLE CompletionPort, LPDWORD lpNumberOfBytesTransferred,
                                                  PULONG_PTR lpCompletionKey, LPOVERLAPPED* lpOverlapped,
                                                  DWORD dwMilliseconds);
/* Up to ulCount packets at once (at least one, or FALSE as above). fAlertable is accepted: there
 * are no APCs, so WAIT_IO_COMPLETION never happens. */
FLTPORT_API BOOL WINAPI GetQueuedCompletionStatusEx(HANDLE CompletionPort,
                                                    LPOVERLAPPED_ENTRY lpCompletionPortEntries, ULONG ulCount,
                                                    PULONG ulNumEntriesRemoved, DWORD dwMilliseconds,
                                                    BOOL fAlertable);
FLTPORT_API BOOL WINAPI PostQueuedCompletionStatus(HANDLE CompletionPort, DWORD dwNumberOfBytesTransferred,
                                                   ULONG_PTR dwCompletionKey, LPOVERLAPPED lpOverlapped);

/* ---- Overlapped results and cancellation ----
 * Waits on lpOverlapped->hEvent when set, else until this request is done; not done and !bWait:
 * FALSE with ERROR_IO_INCOMPLETE. The request's status becomes the Win32 error
 * (RtlNtStatusToDosError): cancelled -> ERROR_OPERATION_ABORTED, cut -> ERROR_MORE_DATA (FALSE,
 * with the bytes set). */
FLTPORT_API BOOL WINAPI GetOverlappedResult(HANDLE hFile, LPOVERLAPPED lpOverlapped,
                                            LPDWORD lpNumberOfBytesTransferred, BOOL bWait);
/* As above with a timeout: WAIT_TIMEOUT when it runs out, ERROR_IO_INCOMPLETE when it is 0. */
FLTPORT_API BOOL WINAPI GetOverlappedResultEx(HANDLE hFile, LPOVERLAPPED lpOverlapped,
                                              LPDWORD lpNumberOfBytesTransferred, DWORD dwMilliseconds,
                                              BOOL bAlertable);
/* Cancels the requests the calling thread issued on hFile. */
FLTPORT_API BOOL WINAPI CancelIo(HANDLE hFile);
/* Cancels the request lpOverlapped (NULL: every request on hFile, from any thread). None found:
 * FALSE with ERROR_NOT_FOUND. Cancelled requests complete with STATUS_CANCELLED. */
FLTPORT_API BOOL WINAPI CancelIoEx(HANDLE hFile, LPOVERLAPPED lpOverlapped);

/* ---- Events (synchapi.h) ----
 * Named objects are process-local here: the same name in another process is another object. */
FLTPORT_API HANDLE WINAPI CreateEventA(LPSECURITY_ATTRIBUTES lpEventAttributes, BOOL bManualReset,
                                       BOOL bInitialState, LPCSTR lpName);
FLTPORT_API HANDLE WINAPI CreateEventW(LPSECURITY_ATTRIBUTES lpEventAttributes, BOOL bManualReset,
                                       BOOL bInitialState, LPCWSTR lpName);
FLTPORT_API BOOL WINAPI SetEvent(HANDLE hEvent);
FLTPORT_API BOOL WINAPI ResetEvent(HANDLE hEvent);

/* ---- Semaphores ----
 * lMaximumCount <= 0 or lInitialCount outside 0..lMaximumCount: ERROR_INVALID_PARAMETER. Releasing
 * past the maximum: FALSE with ERROR_TOO_MANY_POSTS and the count unchanged. */
FLTPORT_API HANDLE WINAPI CreateSemaphoreA(LPSECURITY_ATTRIBUTES lpSemaphoreAttributes, LONG lInitialCount,
                                           LONG lMaximumCount, LPCSTR lpName);
FLTPORT_API HANDLE WINAPI CreateSemaphoreW(LPSECURITY_ATTRIBUTES lpSemaphoreAttributes, LONG lInitialCount,
                                           LONG lMaximumCount, LPCWSTR lpName);
FLTPORT_API BOOL WINAPI ReleaseSemaphore(HANDLE hSemaphore, LONG lReleaseCount, LPLONG lpPreviousCount);

/* The A/W choice follows UNICODE, as in Windows' headers. */
#ifdef UNICODE
#define CreateEvent CreateEventW
#define CreateSemaphore CreateSemaphoreW
#else
#define CreateEvent CreateEventA
#define CreateSemaphore CreateSemaphoreA
#endif

/* ---- Waits ----
 * On events, semaphores and threads (a thread is signalled when it has ended), and on a
 * communication port handle (signalled when an I/O on it completes). Returns WAIT_OBJECT_0 + i,
 * WAIT_TIMEOUT, or WAIT_FAILED with the error (ERROR_INVALID_HANDLE; nCount 0 or above
 * MAXIMUM_WAIT_OBJECTS: ERROR_INVALID_PARAMETER). bWaitAll takes every object at once or none.
 * bAlertable is accepted: there are no APCs, so WAIT_IO_COMPLETION never happens. */
FLTPORT_API DWORD WINAPI WaitForSingleObject(HANDLE hHandle, DWORD dwMilliseconds);
FLTPORT_API DWORD WINAPI WaitForSingleObjectEx(HANDLE hHandle, DWORD dwMilliseconds, BOOL bAlertable);
FLTPORT_API DWORD WINAPI WaitForMultipleObjects(DWORD nCount, const HANDLE* lpHandles, BOOL bWaitAll,
                                                DWORD dwMilliseconds);
FLTPORT_API DWORD WINAPI WaitForMultipleObjectsEx(DWORD nCount, const HANDLE* lpHandles, BOOL bWaitAll,
                                                  DWORD dwMilliseconds, BOOL bAlertable);
FLTPORT_API void WINAPI Sleep(DWORD dwMilliseconds);
/* Returns 0: there are no APCs to end it early. */
FLTPORT_API DWORD WINAPI SleepEx(DWORD dwMilliseconds, BOOL bAlertable);

/* ---- Threads (processthreadsapi.h) ----
 * dwStackSize 0: the default; otherwise at least that. CREATE_SUSPENDED: the thread runs at the
 * first ResumeThread. Closing the handle of a running thread lets it run on, detached. */
FLTPORT_API HANDLE WINAPI CreateThread(LPSECURITY_ATTRIBUTES lpThreadAttributes, SIZE_T dwStackSize,
                                       LPTHREAD_START_ROUTINE lpStartAddress, LPVOID lpParameter,
                                       DWORD dwCreationFlags, LPDWORD lpThreadId);
/* The previous suspend count, or (DWORD)-1 on failure. */
FLTPORT_API DWORD WINAPI ResumeThread(HANDLE hThread);
/* Ends the calling thread (it unwinds: C++ destructors run). */
FLTPORT_API __attribute__((noreturn)) void WINAPI ExitThread(DWORD dwExitCode);
/* STILL_ACTIVE while it runs. */
FLTPORT_API BOOL WINAPI GetExitCodeThread(HANDLE hThread, LPDWORD lpExitCode);
/* The kernel thread id (gettid). */
FLTPORT_API DWORD WINAPI GetCurrentThreadId(void);
FLTPORT_API DWORD WINAPI GetCurrentProcessId(void);

/* ---- Critical sections: recursive, as on Windows ---- */
FLTPORT_API void WINAPI InitializeCriticalSection(LPCRITICAL_SECTION lpCriticalSection);
/* Always TRUE; the spin count is kept and not used. */
FLTPORT_API BOOL WINAPI InitializeCriticalSectionAndSpinCount(LPCRITICAL_SECTION lpCriticalSection,
                                                              DWORD dwSpinCount);
FLTPORT_API BOOL WINAPI InitializeCriticalSectionEx(LPCRITICAL_SECTION lpCriticalSection, DWORD dwSpinCount,
                                                    DWORD Flags);
FLTPORT_API void WINAPI EnterCriticalSection(LPCRITICAL_SECTION lpCriticalSection);
FLTPORT_API BOOL WINAPI TryEnterCriticalSection(LPCRITICAL_SECTION lpCriticalSection);
FLTPORT_API void WINAPI LeaveCriticalSection(LPCRITICAL_SECTION lpCriticalSection);
FLTPORT_API void WINAPI DeleteCriticalSection(LPCRITICAL_SECTION lpCriticalSection);

/* ---- Heap (heapapi.h): the process heap is malloc; blocks are 16-byte aligned ----
 * Failure: NULL (HEAP_GENERATE_EXCEPTIONS is ignored: there are no structured exceptions). */
FLTPORT_API HANDLE WINAPI GetProcessHeap(void);
FLTPORT_API LPVOID WINAPI HeapAlloc(HANDLE hHeap, DWORD dwFlags, SIZE_T dwBytes);
/* HEAP_ZERO_MEMORY zeroes the bytes beyond the old size; HEAP_REALLOC_IN_PLACE_ONLY fails unless
 * the block keeps its address. */
FLTPORT_API LPVOID WINAPI HeapReAlloc(HANDLE hHeap, DWORD dwFlags, LPVOID lpMem, SIZE_T dwBytes);
/* lpMem NULL: TRUE, nothing to do. */
FLTPORT_API BOOL WINAPI HeapFree(HANDLE hHeap, DWORD dwFlags, LPVOID lpMem);
/* The size asked for at allocation. */
FLTPORT_API SIZE_T WINAPI HeapSize(HANDLE hHeap, DWORD dwFlags, LPCVOID lpMem);

FLTPORT_END_C

/* The error codes of the calls above. */
#include <fltport/status.h>

#endif /* FLTPORT_WIN32_H */
