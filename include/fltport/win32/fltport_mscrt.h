/*
 * fltport compatibility: the Microsoft C runtime functions Windows services use that glibc does not
 * have (sprintf_s, fopen_s, _stricmp, _strnicmp, _wcsicmp, _wcsnicmp) and the invalid parameter
 * handler behind their error returns. On Windows they come with <stdio.h>, <string.h> and
 * <wchar.h>; here <windows.h> declares them (it includes this file).
 *
 * As in Microsoft's CRT, a bad argument (a NULL pointer, a zero size, a result that does not fit,
 * an unknown fopen mode) calls the invalid parameter handler. The default handler ends the
 * process (Windows' does too: a "fast fail"), after saying why on stderr; a handler installed with
 * _set_invalid_parameter_handler that returns lets the function return its error instead, with
 * errno set (EINVAL, or ERANGE for a result that does not fit).
 *
 * The format strings of sprintf_s and vsprintf_s are Microsoft's: %I64d, %Iu, %ws, %S (a wide
 * string), %lu (32 bits: long is 32 bits on Windows), %p (16 upper-case hex digits) ... are
 * understood as Windows understands them. %n is refused (invalid parameter), as by Microsoft's CRT.
 *
 * Define FLTPORT_MSVC_PRINTF (C only) to have printf, fprintf, sprintf, snprintf, vprintf,
 * vfprintf, vsprintf and vsnprintf read their formats the same way: code written for Windows then
 * prints what it printed there (glibc reads %ws, %I64x or %Iu otherwise, see docs/porting.md).
 */
#ifndef FLTPORT_COMPAT_MSCRT_H
#define FLTPORT_COMPAT_MSCRT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <wchar.h>

#include <fltport/win32.h>

#ifndef _ERRNO_T_DEFINED
#define _ERRNO_T_DEFINED
typedef int errno_t;
#endif

/* What the case-insensitive comparisons return for a bad argument. */
#ifndef _NLSCMPERROR
#define _NLSCMPERROR 2147483647
#endif

FLTPORT_BEGIN_C

/* Called with NULLs and 0 (as Microsoft's release runtime calls it). */
typedef void(__cdecl* _invalid_parameter_handler)(const wchar_t* expression, const wchar_t* function,
                                                  const wchar_t* file, unsigned int line, uintptr_t reserved);
/* Installs a process-wide handler (NULL: the default one) and returns the previous one (NULL when it
 * was the default). */
FLTPORT_API _invalid_parameter_handler __cdecl _set_invalid_parameter_handler(
    _invalid_parameter_handler handler);
FLTPORT_API _invalid_parameter_handler __cdecl _get_invalid_parameter_handler(void);

/* Formats into buffer (sizeOfBuffer bytes, NUL included) and returns the length written. buffer
 * NULL, sizeOfBuffer 0 or format NULL: invalid parameter, -1, errno EINVAL. A result that does not
 * fit: buffer[0] = '\0', invalid parameter, -1, errno ERANGE. */
FLTPORT_API int __cdecl sprintf_s(char* buffer, size_t sizeOfBuffer, const char* format, ...);
FLTPORT_API int __cdecl vsprintf_s(char* buffer, size_t sizeOfBuffer, const char* format, va_list argptr);

/* Opens the file: 0 and *pFile, or the errno of the failure and *pFile NULL. pFile, filename or
 * mode NULL, or a mode Microsoft's fopen refuses: invalid parameter, EINVAL. An empty file name:
 * EINVAL. Microsoft's mode letters t, c, n, N, S, R, T, D and ",ccs=..." are accepted and do
 * nothing here (files are always binary; no encoding is applied). */
FLTPORT_API errno_t __cdecl fopen_s(FILE** pFile, const char* filename, const char* mode);

/* Case-insensitive comparisons (the characters compared in lower case, as Microsoft's): < 0, 0 or
 * > 0. A NULL string: invalid parameter, _NLSCMPERROR, errno EINVAL. */
FLTPORT_API int __cdecl _stricmp(const char* string1, const char* string2);
FLTPORT_API int __cdecl _strnicmp(const char* string1, const char* string2, size_t count);
FLTPORT_API int __cdecl _wcsicmp(const wchar_t* string1, const wchar_t* string2);
FLTPORT_API int __cdecl _wcsnicmp(const wchar_t* string1, const wchar_t* string2, size_t count);

/* The printf family reading Microsoft's format syntax (see above). */
FLTPORT_API int FltportMsvcVfprintf(FILE* stream, const char* format, va_list args);
FLTPORT_API int FltportMsvcFprintf(FILE* stream, const char* format, ...);
FLTPORT_API int FltportMsvcPrintf(const char* format, ...);
FLTPORT_API int FltportMsvcVprintf(const char* format, va_list args);
FLTPORT_API int FltportMsvcSprintf(char* buffer, const char* format, ...);
FLTPORT_API int FltportMsvcVsprintf(char* buffer, const char* format, va_list args);
FLTPORT_API int FltportMsvcSnprintf(char* buffer, size_t count, const char* format, ...);
FLTPORT_API int FltportMsvcVsnprintf(char* buffer, size_t count, const char* format, va_list args);

FLTPORT_END_C

#if defined(FLTPORT_MSVC_PRINTF) && !defined(__cplusplus)
#define printf(...) FltportMsvcPrintf(__VA_ARGS__)
#define fprintf(...) FltportMsvcFprintf(__VA_ARGS__)
#define sprintf(...) FltportMsvcSprintf(__VA_ARGS__)
#define snprintf(...) FltportMsvcSnprintf(__VA_ARGS__)
#define vprintf(...) FltportMsvcVprintf(__VA_ARGS__)
#define vfprintf(...) FltportMsvcVfprintf(__VA_ARGS__)
#define vsprintf(...) FltportMsvcVsprintf(__VA_ARGS__)
#define vsnprintf(...) FltportMsvcVsnprintf(__VA_ARGS__)
#endif

#endif /* FLTPORT_COMPAT_MSCRT_H */
