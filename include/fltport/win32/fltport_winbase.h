/*
 * fltport compatibility: the kernel32 calls and types of <windows.h> beyond <fltport/win32.h> that
 * Windows services use around their filter code (Microsoft's minispy sample among them): message
 * text (FormatMessage), the local heap, message modules, the system directory, code page
 * conversion, file times, and a few winnt.h types. <windows.h> includes it; it needs the types
 * <windows.h> defines first, so include <windows.h> rather than this file.
 *
 * Semantics are Windows' (return values, GetLastError codes, buffer sizes) unless a comment says
 * otherwise; docs/porting.md lists what differs.
 */
#ifndef FLTPORT_COMPAT_WINBASE_H
#define FLTPORT_COMPAT_WINBASE_H

#include <stdarg.h>

/* ---- winnt.h / guiddef.h types ---- */
typedef union _ULARGE_INTEGER {
  struct {
    DWORD LowPart;
    DWORD HighPart;
  };
  struct {
    DWORD LowPart;
    DWORD HighPart;
  } u;
  ULONGLONG QuadPart;
} ULARGE_INTEGER, *PULARGE_INTEGER;

#ifndef GUID_DEFINED
#define GUID_DEFINED
typedef struct _GUID {
  DWORD Data1;
  WORD Data2;
  WORD Data3;
  BYTE Data4[8];
} GUID;
#endif
typedef GUID* LPGUID;
typedef const GUID* LPCGUID;

/* Doubly linked list head/entry (winnt.h). */
typedef struct _LIST_ENTRY {
  struct _LIST_ENTRY* Flink;
  struct _LIST_ENTRY* Blink;
} LIST_ENTRY, *PLIST_ENTRY, *PRLIST_ENTRY;

/* Reparse point tags (winnt.h): a filter may report them in its own records. */
#ifndef IO_REPARSE_TAG_MOUNT_POINT
#define IO_REPARSE_TAG_MOUNT_POINT ((DWORD)0xA0000003)
#define IO_REPARSE_TAG_SYMLINK ((DWORD)0xA000000C)
#endif

/* Win32 errors the calls below set, in addition to <fltport/status.h>'s. */
#ifndef ERROR_PATH_NOT_FOUND
#define ERROR_PATH_NOT_FOUND 3L
#endif
#ifndef ERROR_MOD_NOT_FOUND
#define ERROR_MOD_NOT_FOUND 126L
#endif
#ifndef ERROR_NO_WORK_DONE
#define ERROR_NO_WORK_DONE 235L
#endif
#ifndef ERROR_INVALID_FLAGS
#define ERROR_INVALID_FLAGS 1004L
#endif
#ifndef ERROR_NO_UNICODE_TRANSLATION
#define ERROR_NO_UNICODE_TRANSLATION 1113L
#endif
#ifndef ERROR_RESOURCE_TYPE_NOT_FOUND
#define ERROR_RESOURCE_TYPE_NOT_FOUND 1813L
#endif
#ifndef ERROR_RESOURCE_LANG_NOT_FOUND
#define ERROR_RESOURCE_LANG_NOT_FOUND 1815L
#endif

/* ---- Languages (winnt.h) ---- */
#ifndef MAKELANGID
#define MAKELANGID(p, s) ((((WORD)(s)) << 10) | (WORD)(p))
#define PRIMARYLANGID(lgid) ((WORD)(lgid)&0x3ff)
#define SUBLANGID(lgid) ((WORD)(lgid) >> 10)
#endif
#define LANG_NEUTRAL 0x00
#define LANG_INVARIANT 0x7f
#define LANG_ENGLISH 0x09
#define SUBLANG_NEUTRAL 0x00
#define SUBLANG_DEFAULT 0x01
#define SUBLANG_SYS_DEFAULT 0x02
#define SUBLANG_ENGLISH_US 0x01

/* ---- File times (minwinbase.h) ---- */
/* 100-nanosecond intervals since 1601-01-01 00:00 UTC, split in two halves. */
typedef struct _FILETIME {
  DWORD dwLowDateTime;
  DWORD dwHighDateTime;
} FILETIME, *PFILETIME, *LPFILETIME;

typedef struct _SYSTEMTIME {
  WORD wYear;
  WORD wMonth;     /* 1 = January */
  WORD wDayOfWeek; /* 0 = Sunday */
  WORD wDay;
  WORD wHour;
  WORD wMinute;
  WORD wSecond;
  WORD wMilliseconds;
} SYSTEMTIME, *PSYSTEMTIME, *LPSYSTEMTIME;

/* ---- FormatMessage (winbase.h) ---- */
#define FORMAT_MESSAGE_ALLOCATE_BUFFER 0x00000100
#define FORMAT_MESSAGE_IGNORE_INSERTS 0x00000200
#define FORMAT_MESSAGE_FROM_STRING 0x00000400
#define FORMAT_MESSAGE_FROM_HMODULE 0x00000800
#define FORMAT_MESSAGE_FROM_SYSTEM 0x00001000
#define FORMAT_MESSAGE_ARGUMENT_ARRAY 0x00002000
#define FORMAT_MESSAGE_MAX_WIDTH_MASK 0x000000FF

/* ---- Local heap (winbase.h) ---- */
typedef HANDLE HLOCAL;
#define LMEM_FIXED 0x0000
#define LMEM_MOVEABLE 0x0002
#define LMEM_ZEROINIT 0x0040
#define LPTR (LMEM_FIXED | LMEM_ZEROINIT)
#define LHND (LMEM_MOVEABLE | LMEM_ZEROINIT)

/* ---- Modules (libloaderapi.h) ---- */
#define DONT_RESOLVE_DLL_REFERENCES 0x00000001
#define LOAD_LIBRARY_AS_DATAFILE 0x00000002
#define LOAD_WITH_ALTERED_SEARCH_PATH 0x00000008
#define LOAD_IGNORE_CODE_AUTHZ_LEVEL 0x00000010
#define LOAD_LIBRARY_AS_IMAGE_RESOURCE 0x00000020
#define LOAD_LIBRARY_AS_DATAFILE_EXCLUSIVE 0x00000040
#define LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR 0x00000100
#define LOAD_LIBRARY_SEARCH_APPLICATION_DIR 0x00000200
#define LOAD_LIBRARY_SEARCH_USER_DIRS 0x00000400
#define LOAD_LIBRARY_SEARCH_SYSTEM32 0x00000800
#define LOAD_LIBRARY_SEARCH_DEFAULT_DIRS 0x00001000

/* ---- Code pages (winnls.h, stringapiset.h) ---- */
typedef const CHAR* LPCCH;
typedef const CHAR* PCCH;
typedef const WCHAR* LPCWCH;
typedef CHAR* LPCH;
typedef WCHAR* LPWCH;
#define CP_ACP 0
#define CP_OEMCP 1
#define CP_MACCP 2
#define CP_THREAD_ACP 3
#define CP_SYMBOL 42
#define CP_UTF7 65000
#define CP_UTF8 65001
#define MB_PRECOMPOSED 0x00000001
#define MB_COMPOSITE 0x00000002
#define MB_USEGLYPHCHARS 0x00000004
#define MB_ERR_INVALID_CHARS 0x00000008
#define WC_COMPOSITECHECK 0x00000200
#define WC_DISCARDNS 0x00000010
#define WC_SEPCHARS 0x00000020
#define WC_DEFAULTCHAR 0x00000040
#define WC_ERR_INVALID_CHARS 0x00000080
#define WC_NO_BEST_FIT_CHARS 0x00000400

FLTPORT_BEGIN_C

/* Formats a message into lpBuffer (nSize TCHARs) and returns its length without the NUL, or 0 with
 * the error. The message comes from lpSource (FORMAT_MESSAGE_FROM_STRING), from a message module
 * (FORMAT_MESSAGE_FROM_HMODULE: a module LoadLibraryEx returned; NULL, the program, has no
 * messages: ERROR_RESOURCE_TYPE_NOT_FOUND) and/or from the system table
 * (FORMAT_MESSAGE_FROM_SYSTEM). The system table holds the messages of the Win32 errors,
 * HRESULTs and Filter Manager errors fltport produces, in Windows' (US English) wording, ending
 * with "\r\n" as Windows' do; an HRESULT_FROM_WIN32 value finds its Win32 error's message. Not
 * found: ERROR_MR_MID_NOT_FOUND. dwLanguageId: 0, neutral or English; another language:
 * ERROR_RESOURCE_LANG_NOT_FOUND.
 * Inserts: %1..%99 with an optional !printf format! (default !s!), from *Arguments (va_list*)
 * or, with FORMAT_MESSAGE_ARGUMENT_ARRAY, an array of DWORD_PTR; FORMAT_MESSAGE_IGNORE_INSERTS
 * copies them unchanged. An insert with no arguments, or a lone '%': ERROR_INVALID_PARAMETER.
 * Escapes %0 %% %n %r %t %. %! and "% " as Windows. The low byte of dwFlags is the line width:
 * 0 keeps the message's line breaks, FORMAT_MESSAGE_MAX_WIDTH_MASK turns them into spaces, any
 * other value also wraps the lines at that width.
 * Buffer: too small: ERROR_INSUFFICIENT_BUFFER (the W form leaves as much as fits, NUL-terminated;
 * the A form leaves the buffer untouched). FORMAT_MESSAGE_ALLOCATE_BUFFER: lpBuffer is really a
 * LPTSTR* that receives a LocalAlloc'ed buffer of at least nSize TCHARs (free it with LocalFree).
 * An empty result: 0 with ERROR_NO_WORK_DONE. A forms: narrow text is UTF-8 (the ANSI code page,
 * see GetACP) and a result longer than 32766 bytes fails with ERROR_INVALID_PARAMETER, as Windows. */
FLTPORT_API DWORD WINAPI FormatMessageA(DWORD dwFlags, LPCVOID lpSource, DWORD dwMessageId,
                                        DWORD dwLanguageId, LPSTR lpBuffer, DWORD nSize, va_list* Arguments);
FLTPORT_API DWORD WINAPI FormatMessageW(DWORD dwFlags, LPCVOID lpSource, DWORD dwMessageId,
                                        DWORD dwLanguageId, LPWSTR lpBuffer, DWORD nSize, va_list* Arguments);

/* The process heap under another name: LMEM_ZEROINIT zeroes; LMEM_MOVEABLE memory does not move,
 * so its handle is its address (LocalLock is not needed and not provided). Out of memory: NULL with
 * ERROR_NOT_ENOUGH_MEMORY. LocalFree returns NULL, as on success on Windows (like HeapFree here, it
 * cannot tell a pointer it did not hand out); LocalFree(NULL) does nothing. */
FLTPORT_API HLOCAL WINAPI LocalAlloc(UINT uFlags, SIZE_T uBytes);
FLTPORT_API HLOCAL WINAPI LocalFree(HLOCAL hMem);

/* Message modules. There is no Windows code to load, so these "load" the one module whose
 * messages fltport has: fltlib.dll (the Filter Manager library's messages, found by its file name
 * whatever the directory: "<GetSystemDirectory>\\fltlib.dll", "fltlib.dll" or "fltlib"), as if
 * with LOAD_LIBRARY_AS_DATAFILE; its handle serves FormatMessage(FORMAT_MESSAGE_FROM_HMODULE).
 * Any other name: NULL with ERROR_MOD_NOT_FOUND. hFile must be NULL (else ERROR_INVALID_PARAMETER).
 * Each successful load must be matched by a FreeLibrary; a handle that names no loaded module:
 * FALSE with ERROR_MOD_NOT_FOUND. There is no GetProcAddress. */
FLTPORT_API HMODULE WINAPI LoadLibraryExA(LPCSTR lpLibFileName, HANDLE hFile, DWORD dwFlags);
FLTPORT_API HMODULE WINAPI LoadLibraryExW(LPCWSTR lpLibFileName, HANDLE hFile, DWORD dwFlags);
FLTPORT_API HMODULE WINAPI LoadLibraryA(LPCSTR lpLibFileName);
FLTPORT_API HMODULE WINAPI LoadLibraryW(LPCWSTR lpLibFileName);
FLTPORT_API BOOL WINAPI FreeLibrary(HMODULE hLibModule);

/* The directory libfltport was loaded from (the program's directory when it is linked statically):
 * where fltport's "system DLL", fltlib.dll above, lives. Returns its length without the NUL; a
 * buffer of uSize TCHARs too small for it and its NUL: the size needed, NUL included. */
FLTPORT_API UINT WINAPI GetSystemDirectoryA(LPSTR lpBuffer, UINT uSize);
FLTPORT_API UINT WINAPI GetSystemDirectoryW(LPWSTR lpBuffer, UINT uSize);

/* The ANSI and OEM code pages are UTF-8 (65001), as on Windows with the UTF-8 code page setting:
 * CP_ACP, CP_OEMCP and CP_THREAD_ACP mean CP_UTF8. */
FLTPORT_API UINT WINAPI GetACP(void);
FLTPORT_API UINT WINAPI GetOEMCP(void);

/* Code pages: CP_UTF8 (and the ANSI/OEM aliases above), 1252 and 28591 (ISO 8859-1); another:
 * ERROR_INVALID_PARAMETER. WCHAR is UTF-32 here: one WCHAR per code point, never a surrogate pair,
 * so counts of characters beyond U+FFFF are smaller than Windows'. cbMultiByte -1: the string and
 * its NUL (counted). cchWideChar 0: returns the size needed and writes nothing; too small:
 * 0 with ERROR_INSUFFICIENT_BUFFER. Invalid UTF-8 becomes U+FFFD, or with MB_ERR_INVALID_CHARS
 * fails with ERROR_NO_UNICODE_TRANSLATION. Flags: CP_UTF8 takes only MB_ERR_INVALID_CHARS
 * (ERROR_INVALID_FLAGS otherwise); the others also MB_PRECOMPOSED, MB_COMPOSITE (no decomposition
 * is done) and MB_USEGLYPHCHARS. Bad pointers or sizes: ERROR_INVALID_PARAMETER. */
FLTPORT_API int WINAPI MultiByteToWideChar(UINT CodePage, DWORD dwFlags, LPCCH lpMultiByteStr,
                                           int cbMultiByte, LPWSTR lpWideCharStr, int cchWideChar);
/* The reverse, with the same rules. To UTF-8, lpDefaultChar and lpUsedDefaultChar must be NULL;
 * a value that is no code point (a lone surrogate, above U+10FFFF) becomes U+FFFD, or fails with
 * WC_ERR_INVALID_CHARS; a UTF-16 surrogate pair left in WCHARs by code written for Windows is
 * joined. To 1252 and 28591, a character with no byte becomes lpDefaultChar ('?' by default) and
 * sets *lpUsedDefaultChar. */
FLTPORT_API int WINAPI WideCharToMultiByte(UINT CodePage, DWORD dwFlags, LPCWCH lpWideCharStr,
                                           int cchWideChar, LPSTR lpMultiByteStr, int cbMultiByte,
                                           LPCCH lpDefaultChar, LPBOOL lpUsedDefaultChar);

/* File times. FileTimeToSystemTime: a FILETIME of 2^63 or more: FALSE, ERROR_INVALID_PARAMETER.
 * SystemTimeToFileTime: a field out of range (year 1601..30827, a day the month has, ...): FALSE,
 * ERROR_INVALID_PARAMETER; wDayOfWeek is ignored. The local conversions use the time zone's
 * current offset from UTC, daylight saving included, whatever the date converted (as Windows
 * documents). */
FLTPORT_API BOOL WINAPI FileTimeToSystemTime(const FILETIME* lpFileTime, LPSYSTEMTIME lpSystemTime);
FLTPORT_API BOOL WINAPI SystemTimeToFileTime(const SYSTEMTIME* lpSystemTime, LPFILETIME lpFileTime);
FLTPORT_API BOOL WINAPI FileTimeToLocalFileTime(const FILETIME* lpFileTime, LPFILETIME lpLocalFileTime);
FLTPORT_API BOOL WINAPI LocalFileTimeToFileTime(const FILETIME* lpLocalFileTime, LPFILETIME lpFileTime);
/* -1, 0 or 1. */
FLTPORT_API LONG WINAPI CompareFileTime(const FILETIME* lpFileTime1, const FILETIME* lpFileTime2);
FLTPORT_API void WINAPI GetSystemTimeAsFileTime(LPFILETIME lpSystemTimeAsFileTime);
FLTPORT_API void WINAPI GetSystemTime(LPSYSTEMTIME lpSystemTime);
FLTPORT_API void WINAPI GetLocalTime(LPSYSTEMTIME lpSystemTime);

FLTPORT_END_C

/* The A/W choice follows UNICODE, as in Windows' headers. */
#ifdef UNICODE
#define FormatMessage FormatMessageW
#define LoadLibrary LoadLibraryW
#define LoadLibraryEx LoadLibraryExW
#define GetSystemDirectory GetSystemDirectoryW
#else
#define FormatMessage FormatMessageA
#define LoadLibrary LoadLibraryA
#define LoadLibraryEx LoadLibraryExA
#define GetSystemDirectory GetSystemDirectoryA
#endif

#endif /* FLTPORT_COMPAT_WINBASE_H */
