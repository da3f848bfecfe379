/*
 * fltport: the Windows base types the Filter Manager APIs are written in, with x86-64 Windows
 * sizes. Windows is LLP64: ULONG/LONG/DWORD are 32 bits even though Linux `long` is 64.
 * WCHAR is the platform wchar_t (4 bytes on Linux) so that L"\\ScannerPort" compiles unchanged.
 */
#ifndef FLTPORT_WIN32_H
#define FLTPORT_WIN32_H

#include <stddef.h>
#include <stdint.h>
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

#ifndef VOID
#define VOID void
#endif
typedef void* PVOID;
typedef void* LPVOID;
typedef const void* LPCVOID;
typedef const void* PCVOID;
typedef char CHAR;
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

FLTPORT_BEGIN_C
/* Closes a handle returned by fltport (a communication port handle). */
FLTPORT_API BOOL WINAPI CloseHandle(HANDLE hObject);
/* The calling thread's last Win32 error, as set by CloseHandle and later Win32 calls. */
FLTPORT_API DWORD WINAPI GetLastError(void);
FLTPORT_API void WINAPI SetLastError(DWORD dwErrCode);
FLTPORT_END_C

#endif /* FLTPORT_WIN32_H */
