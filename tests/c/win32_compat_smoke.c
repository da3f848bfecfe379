/*
 * The Win32 compatibility include directory, from a Windows-shaped C11 program: the header
 * spellings Windows code uses, the types and macros of <windows.h>, <winioctl.h> and <crtdbg.h>,
 * <strsafe.h>'s results against Microsoft's documentation, and a completion port, a thread and the
 * port API reached through them. It includes nothing of fltport's by name: built in the tree
 * (tests/CMakeLists.txt) with fltport::win32, and by tests/install/check_install.sh with only
 * -I$(pkg-config --variable=win32includedir fltport). Returns 0, or 1 after printing what failed.
 */
/* Windows.h first, as Windows code has it; then the other spellings in use. */
#include <Windows.h>

#include <DriverSpecs.h>
#include <FltUser.h>
#include <StrSafe.h>
#include <WinIoCtl.h>
#include <crtdbg.h>
#include <dontuse.h>
#include <fltUserStructures.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(condition)                                                      \
  do {                                                                        \
    if (!(condition)) {                                                       \
      fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #condition); \
      ++failures;                                                             \
    }                                                                         \
  } while (0)

_Static_assert(sizeof(ULONG64) == 8 && sizeof(DWORD_PTR) == 8 && sizeof(UINT_PTR) == 8,
               "pointer-sized types");
_Static_assert(sizeof(ULONG) == 4 && sizeof(DWORD32) == 4 && sizeof(INT32) == 4, "LLP64: 32-bit longs");
_Static_assert(sizeof(*(PUCHAR)0) == 1 && sizeof(*(PBYTE)0) == 1, "byte pointers");
_Static_assert(sizeof(FILTER_MESSAGE_HEADER) == 16, "fltUserStructures.h");
_Static_assert(CTL_CODE(FILE_DEVICE_UNKNOWN, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS) == 0x222000,
               "CTL_CODE");
_Static_assert(MAX_PATH == 260, "MAX_PATH");

typedef struct {
  int Before;
  OVERLAPPED Ovlp;
} REQUEST;

static DWORD WINAPI Worker(LPVOID parameter) {
  InterlockedIncrement((LONG volatile*)parameter);
  return 42;
}

static void CheckWindowsH(void) {
  /* IS_ERROR looks at bit 31 of a 32-bit value (Windows' cast to unsigned long would not, on LP64). */
  CHECK(IS_ERROR(E_INVALIDARG));
  CHECK(IS_ERROR(HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE)));
  CHECK(!IS_ERROR(S_OK));
  CHECK(!IS_ERROR(S_FALSE));
  CHECK(HRESULT_CODE(HRESULT_FROM_WIN32(ERROR_IO_PENDING)) == ERROR_IO_PENDING);
  CHECK(HRESULT_FACILITY(HRESULT_FROM_WIN32(ERROR_IO_PENDING)) == FACILITY_WIN32);
  CHECK(MAKE_HRESULT(SEVERITY_ERROR, FACILITY_WIN32, ERROR_MORE_DATA) == HRESULT_FROM_WIN32(ERROR_MORE_DATA));
  CHECK(min(3, 4) == 3 && max(3, 4) == 4);
  CHECK(LOWORD(0x12345678) == 0x5678 && HIWORD(0x12345678) == 0x1234);
  CHECK(FlagOn(0x6, 0x2) && !FlagOn(0x6, 0x1));
  CHECK(DEVICE_TYPE_FROM_CTL_CODE(CTL_CODE(FILE_DEVICE_DISK, 1, METHOD_NEITHER, FILE_READ_ACCESS)) ==
        FILE_DEVICE_DISK);

  REQUEST request;
  CHECK(CONTAINING_RECORD(&request.Ovlp, REQUEST, Ovlp) == &request);
  CHECK(FIELD_OFFSET(REQUEST, Ovlp) == 8);
  CHECK(Add2Ptr(&request, FIELD_OFFSET(REQUEST, Ovlp)) == (PVOID)&request.Ovlp);

  LONG value = 5;
  CHECK(InterlockedIncrement(&value) == 6 && InterlockedDecrement(&value) == 5);
  CHECK(InterlockedExchange(&value, 9) == 5 && value == 9);
  CHECK(InterlockedCompareExchange(&value, 1, 8) == 9 && value == 9);
  CHECK(InterlockedCompareExchange(&value, 1, 9) == 9 && value == 1);
  CHECK(InterlockedExchangeAdd(&value, 10) == 1 && value == 11);
  LONG64 wide = 1;
  CHECK(InterlockedIncrement64(&wide) == 2);
  PVOID pointer = NULL;
  CHECK(InterlockedCompareExchangePointer(&pointer, &value, NULL) == NULL && pointer == &value);

  _ASSERTE(!"not compiled without _DEBUG");
  _RPT1(_CRT_WARN, "not printed without _DEBUG %d\n", 1);
  CHECK(_CrtSetDbgFlag(_CRTDBG_REPORT_FLAG) == 0);
}

static void CheckStrsafe(void) {
  char a[8];
  CHECK(StringCchCopyA(a, ARRAYSIZE(a), "1234567") == S_OK && strcmp(a, "1234567") == 0);
  CHECK(StringCchCopyA(a, ARRAYSIZE(a), "12345678") == STRSAFE_E_INSUFFICIENT_BUFFER &&
        strcmp(a, "1234567") == 0);
  CHECK(StringCchCopyA(a, 0, "x") == STRSAFE_E_INVALID_PARAMETER);
  CHECK(StringCchCopyA(a, (size_t)STRSAFE_MAX_CCH + 1, "x") == STRSAFE_E_INVALID_PARAMETER && a[0] == '\0');
  CHECK(StringCbCopyA(a, sizeof a, "abc") == S_OK && strcmp(a, "abc") == 0);
  CHECK(StringCchCopyNA(a, ARRAYSIZE(a), "abcdef", 2) == S_OK && strcmp(a, "ab") == 0);
  CHECK(StringCchCatA(a, ARRAYSIZE(a), "cde") == S_OK && strcmp(a, "abcde") == 0);
  CHECK(StringCchCatA(a, ARRAYSIZE(a), "fgh") == STRSAFE_E_INSUFFICIENT_BUFFER && strcmp(a, "abcdefg") == 0);
  memset(a, 'x', sizeof a); /* no NUL within the bound: not a string to append to */
  CHECK(StringCchCatA(a, ARRAYSIZE(a), "y") == STRSAFE_E_INVALID_PARAMETER);
  CHECK(StringCchPrintfA(a, ARRAYSIZE(a), "%d-%s", 12, "ab") == S_OK && strcmp(a, "12-ab") == 0);
  CHECK(StringCchPrintfA(a, ARRAYSIZE(a), "%s", "1234567") == S_OK && strcmp(a, "1234567") == 0);
  CHECK(StringCchPrintfA(a, ARRAYSIZE(a), "%d", 123456789) == STRSAFE_E_INSUFFICIENT_BUFFER &&
        strcmp(a, "1234567") == 0);
  CHECK(StringCbPrintfA(a, 4, "%s", "abcdef") == STRSAFE_E_INSUFFICIENT_BUFFER && strcmp(a, "abc") == 0);
  size_t length = 99;
  CHECK(StringCchLengthA("abc", 4, &length) == S_OK && length == 3);
  CHECK(StringCchLengthA("abc", 3, &length) == STRSAFE_E_INVALID_PARAMETER && length == 0);
  CHECK(StringCchLengthA(NULL, 3, &length) == STRSAFE_E_INVALID_PARAMETER);
  CHECK(StringCbLengthA("abc", 10, &length) == S_OK && length == 3);

  WCHAR w[6];
  CHECK(StringCchCopyW(w, ARRAYSIZE(w), L"hello") == S_OK && wcscmp(w, L"hello") == 0);
  CHECK(StringCchCopyW(w, ARRAYSIZE(w), L"hello!") == STRSAFE_E_INSUFFICIENT_BUFFER &&
        wcscmp(w, L"hello") == 0);
  CHECK(StringCbCopyW(w, sizeof w, L"ab") == S_OK && wcscmp(w, L"ab") == 0);
  CHECK(StringCbCopyW(w, sizeof(WCHAR) - 1, L"ab") == STRSAFE_E_INVALID_PARAMETER); /* 0 characters */
  CHECK(StringCchCatW(w, ARRAYSIZE(w), L"cdef") == STRSAFE_E_INSUFFICIENT_BUFFER && wcscmp(w, L"abcde") == 0);
  /* %ls: in C's wide formats %s is a narrow string (Microsoft's wide %s is a wide one). */
  CHECK(StringCchPrintfW(w, ARRAYSIZE(w), L"%ls%d", L"ab", 12) == S_OK && wcscmp(w, L"ab12") == 0);
  CHECK(StringCchPrintfW(w, ARRAYSIZE(w), L"%d", 1234567) == STRSAFE_E_INSUFFICIENT_BUFFER &&
        wcscmp(w, L"12345") == 0);
  CHECK(StringCbLengthW(L"abc", 16, &length) == S_OK && length == 3 * sizeof(WCHAR));
  CHECK(StringCchLengthW(L"abc", 10, &length) == S_OK && length == 3);
#ifndef UNICODE
  CHECK(StringCchCopy(a, ARRAYSIZE(a), "narrow") == S_OK); /* the plain names are the A forms */
#endif
}

static void CheckLibrary(void) {
  /* A completion port of its own, a packet through it, and a wait that times out. */
  HANDLE completion = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 0);
  CHECK(completion != NULL);
  REQUEST request;
  ZeroMemory(&request, sizeof request);
  CHECK(PostQueuedCompletionStatus(completion, 7, 3, &request.Ovlp));
  DWORD bytes = 0;
  ULONG_PTR key = 0;
  LPOVERLAPPED overlapped = NULL;
  CHECK(GetQueuedCompletionStatus(completion, &bytes, &key, &overlapped, 1000));
  CHECK(bytes == 7 && key == 3 && CONTAINING_RECORD(overlapped, REQUEST, Ovlp) == &request);
  CHECK(!GetQueuedCompletionStatus(completion, &bytes, &key, &overlapped, 0));
  CHECK(GetLastError() == WAIT_TIMEOUT && overlapped == NULL);
  CHECK(CloseHandle(completion));

  LONG counter = 0;
  DWORD threadId = 0;
  HANDLE thread = CreateThread(NULL, 0, Worker, &counter, 0, &threadId);
  CHECK(thread != NULL);
  CHECK(WaitForSingleObject(thread, 5000) == WAIT_OBJECT_0);
  DWORD exitCode = 0;
  CHECK(GetExitCodeThread(thread, &exitCode) && exitCode == 42 && counter == 1);
  CHECK(CloseHandle(thread));

  HANDLE port = NULL;
  const HRESULT hr = FilterConnectCommunicationPort(L"\\NoSuchPortForTheWin32Test", 0, NULL, 0, NULL, &port);
  CHECK(hr == HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND));
}

int _cdecl main(_In_ int argc, _In_reads_(argc) char* argv[]) {
  UNREFERENCED_PARAMETER(argc);
  UNREFERENCED_PARAMETER(argv);
  CheckWindowsH();
  CheckStrsafe();
  CheckLibrary();
  if (failures != 0) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  puts("the Win32 compatibility headers work from C11");
  return 0;
}
