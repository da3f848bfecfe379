/*
 * fltport compatibility <windows.h>: what Windows filter services take from windows.h, over
 * <fltport/win32.h> (base types, handles, completion ports, events, waits, threads, heap, critical
 * sections, memory macros, SAL) and <fltport/status.h> (error codes).
 *
 * Use: cc -I$(pkg-config --variable=win32includedir fltport) service.c $(pkg-config --libs fltport)
 *
 * Header-only additions below: the remaining base types, HRESULT macros, Interlocked*, and a few
 * ntdef.h helpers services use. Then, as Windows' windows.h does, the headers of the rest of the
 * subset: <excpt.h> (__try/__finally as C macros), "fltport_winbase.h" (FormatMessage, LoadLibrary,
 * MultiByteToWideChar, FILETIME/SYSTEMTIME ...) and "fltport_mscrt.h" (sprintf_s, fopen_s,
 * _stricmp ...; it includes <stdio.h>). Unlike Windows' windows.h it pulls in no GUI, registry or
 * service control API: those do not exist here (see docs/porting.md).
 */
#ifndef FLTPORT_COMPAT_WINDOWS_H
#define FLTPORT_COMPAT_WINDOWS_H

#include <fltport/win32.h>

#include <stdlib.h> /* exit, for ExitProcess */

/* ---- Base types windows.h has and <fltport/win32.h> does not (LLP64 sizes) ---- */
typedef UCHAR* PUCHAR;
typedef BYTE* PBYTE;
typedef BYTE* LPBYTE;
typedef WCHAR* PWCHAR;
typedef const WCHAR* PCWCH;
typedef CHAR* PCH;
typedef SHORT* PSHORT;
typedef USHORT* PUSHORT;
typedef WORD* PWORD;
typedef WORD* LPWORD;
typedef BOOLEAN* PBOOLEAN;
typedef LONGLONG* PLONGLONG;
typedef ULONGLONG* PULONGLONG;
typedef int64_t LONG64;
typedef uint64_t ULONG64;
typedef LONG64* PLONG64;
typedef ULONG64* PULONG64;
typedef uint32_t DWORD32;
typedef uint64_t DWORDLONG;
typedef int8_t INT8;
typedef int16_t INT16;
typedef int32_t INT32;
typedef int64_t INT64;
typedef uint8_t UINT8;
typedef uint16_t UINT16;
typedef uint32_t UINT32;
typedef uint64_t UINT64;
typedef intptr_t INT_PTR;
typedef uintptr_t UINT_PTR;
typedef uintptr_t DWORD_PTR;
typedef DWORD_PTR* PDWORD_PTR;
typedef intptr_t SSIZE_T;
typedef char CCHAR;
typedef float FLOAT;
typedef INT* PINT;
typedef UINT* PUINT;
typedef void* HMODULE;
typedef void* HINSTANCE;

/* TCHAR follows UNICODE, as in Windows' headers: define UNICODE as the Windows project did. */
#ifdef UNICODE
typedef WCHAR TCHAR;
#define __TEXT(quote) L##quote
#else
typedef CHAR TCHAR;
#define __TEXT(quote) quote
#endif
typedef TCHAR* PTCHAR;
typedef TCHAR* PTSTR;
typedef TCHAR* LPTSTR;
typedef const TCHAR* PCTSTR;
typedef const TCHAR* LPCTSTR;
#ifndef TEXT
#define TEXT(quote) __TEXT(quote)
#endif

/* ---- ntdef.h / minwindef.h helpers ---- */
#ifndef _Return_type_success_
#define _Return_type_success_(expr) /* SAL, as the others in <fltport/win32.h> */
#endif
#ifndef CONST
#define CONST const
#endif
#ifndef IN
#define IN
#define OUT
#define OPTIONAL
#endif
#ifndef MAX_PATH
#define MAX_PATH 260
#endif
#ifndef ANSI_NULL
#define ANSI_NULL ((CHAR)0)
#define UNICODE_NULL ((WCHAR)0)
#endif
#ifndef ARRAYSIZE
#define RTL_NUMBER_OF(A) (sizeof(A) / sizeof((A)[0]))
#define ARRAYSIZE(A) RTL_NUMBER_OF(A)
#endif
#ifndef _countof
#define _countof(A) (sizeof(A) / sizeof((A)[0]))
#endif
#ifndef FlagOn
#define FlagOn(_F, _SF) ((_F) & (_SF))
#define BooleanFlagOn(F, SF) ((BOOLEAN)(((F) & (SF)) != 0))
#define SetFlag(_F, _SF) ((_F) |= (_SF))
#define ClearFlag(_F, _SF) ((_F) &= ~(_SF))
#endif
#ifndef Add2Ptr
#define Add2Ptr(P, I) ((PVOID)((PUCHAR)(P) + (I)))
#endif
#ifndef LOWORD
#define LOBYTE(w) ((BYTE)(((DWORD_PTR)(w)) & 0xff))
#define HIBYTE(w) ((BYTE)((((DWORD_PTR)(w)) >> 8) & 0xff))
#define LOWORD(l) ((WORD)(((DWORD_PTR)(l)) & 0xffff))
#define HIWORD(l) ((WORD)((((DWORD_PTR)(l)) >> 16) & 0xffff))
#define MAKEWORD(a, b) \
  ((WORD)(((BYTE)(((DWORD_PTR)(a)) & 0xff)) | ((WORD)((BYTE)(((DWORD_PTR)(b)) & 0xff))) << 8))
#define MAKELONG(a, b) \
  ((LONG)(((WORD)(((DWORD_PTR)(a)) & 0xffff)) | ((DWORD)((WORD)(((DWORD_PTR)(b)) & 0xffff))) << 16))
#endif
/* Windows defines min and max as macros unless NOMINMAX; in C++ they would break the standard
 * library's std::min/std::max, so they are given to C only. */
#if !defined(__cplusplus) && !defined(NOMINMAX)
#ifndef min
#define min(a, b) (((a) < (b)) ? (a) : (b))
#endif
#ifndef max
#define max(a, b) (((a) > (b)) ? (a) : (b))
#endif
#endif
#ifndef FORCEINLINE
#define FORCEINLINE static inline __attribute__((always_inline))
#endif
#ifndef __forceinline
#define __forceinline inline __attribute__((always_inline))
#endif

/* ---- winerror.h: HRESULT helpers ----
 * IS_ERROR casts to a 32-bit type: Windows' (unsigned long) is 64 bits on Linux and would sign-extend
 * a failure HRESULT, so that the test never matched. */
#ifndef SEVERITY_SUCCESS
#define SEVERITY_SUCCESS 0
#define SEVERITY_ERROR 1
#endif
#ifndef IS_ERROR
#define IS_ERROR(Status) (((uint32_t)(Status)) >> 31 == SEVERITY_ERROR)
#endif
#ifndef HRESULT_CODE
#define HRESULT_CODE(hr) ((hr)&0xFFFF)
#define HRESULT_FACILITY(hr) (((hr) >> 16) & 0x1fff)
#define HRESULT_SEVERITY(hr) ((((uint32_t)(hr)) >> 31) & 0x1)
#define SCODE_CODE(sc) ((sc)&0xFFFF)
#define MAKE_HRESULT(sev, fac, code) \
  ((HRESULT)(((uint32_t)(sev) << 31) | ((uint32_t)(fac) << 16) | ((uint32_t)(code))))
#endif
#ifndef E_UNEXPECTED
#define E_UNEXPECTED ((HRESULT)0x8000FFFF)
#endif
#ifndef E_NOINTERFACE
#define E_NOINTERFACE ((HRESULT)0x80004002)
#endif
#ifndef E_POINTER
#define E_POINTER ((HRESULT)0x80004003)
#endif
#ifndef E_ABORT
#define E_ABORT ((HRESULT)0x80004004)
#endif

/* ---- Interlocked operations (winnt.h): sequentially consistent, as Windows' full barriers ---- */
static inline LONG InterlockedIncrement(LONG volatile* Addend) {
  return __atomic_add_fetch(Addend, 1, __ATOMIC_SEQ_CST);
}
static inline LONG InterlockedDecrement(LONG volatile* Addend) {
  return __atomic_sub_fetch(Addend, 1, __ATOMIC_SEQ_CST);
}
static inline LONG InterlockedExchange(LONG volatile* Target, LONG Value) {
  return __atomic_exchange_n(Target, Value, __ATOMIC_SEQ_CST);
}
static inline LONG InterlockedExchangeAdd(LONG volatile* Addend, LONG Value) {
  return __atomic_fetch_add(Addend, Value, __ATOMIC_SEQ_CST);
}
/* Returns the initial value; stores Exchange only if it equalled Comperand. */
static inline LONG InterlockedCompareExchange(LONG volatile* Destination, LONG Exchange, LONG Comperand) {
  __atomic_compare_exchange_n(Destination, &Comperand, Exchange, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return Comperand;
}
static inline LONG InterlockedOr(LONG volatile* Destination, LONG Value) {
  return __atomic_fetch_or(Destination, Value, __ATOMIC_SEQ_CST);
}
static inline LONG InterlockedAnd(LONG volatile* Destination, LONG Value) {
  return __atomic_fetch_and(Destination, Value, __ATOMIC_SEQ_CST);
}
static inline LONG64 InterlockedIncrement64(LONG64 volatile* Addend) {
  return __atomic_add_fetch(Addend, 1, __ATOMIC_SEQ_CST);
}
static inline LONG64 InterlockedDecrement64(LONG64 volatile* Addend) {
  return __atomic_sub_fetch(Addend, 1, __ATOMIC_SEQ_CST);
}
static inline LONG64 InterlockedExchange64(LONG64 volatile* Target, LONG64 Value) {
  return __atomic_exchange_n(Target, Value, __ATOMIC_SEQ_CST);
}
static inline LONG64 InterlockedExchangeAdd64(LONG64 volatile* Addend, LONG64 Value) {
  return __atomic_fetch_add(Addend, Value, __ATOMIC_SEQ_CST);
}
static inline LONG64 InterlockedCompareExchange64(LONG64 volatile* Destination, LONG64 Exchange,
                                                  LONG64 Comperand) {
  __atomic_compare_exchange_n(Destination, &Comperand, Exchange, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return Comperand;
}
static inline PVOID InterlockedExchangePointer(PVOID volatile* Target, PVOID Value) {
  return __atomic_exchange_n(Target, Value, __ATOMIC_SEQ_CST);
}
static inline PVOID InterlockedCompareExchangePointer(PVOID volatile* Destination, PVOID Exchange,
                                                      PVOID Comperand) {
  __atomic_compare_exchange_n(Destination, &Comperand, Exchange, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return Comperand;
}
#ifndef MemoryBarrier
#define MemoryBarrier() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#endif

/* ---- Process ---- */
/* Ends the process with that code; C exit handlers run and stdio buffers are flushed, as the
 * C runtime does on Windows when the process exits. */
static inline __attribute__((noreturn)) void ExitProcess(UINT uExitCode) {
  exit((int)uExitCode);
}

/* ---- The rest of the subset ---- */
#include "excpt.h"
#include "fltport_mscrt.h"
#include "fltport_winbase.h"

#endif /* FLTPORT_COMPAT_WINDOWS_H */
