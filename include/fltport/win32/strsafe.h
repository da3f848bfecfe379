/*
 * fltport compatibility <strsafe.h>: the bounded string functions of the Windows SDK, header-only,
 * with Windows' results:
 *   S_OK                           done, NUL-terminated;
 *   STRSAFE_E_INSUFFICIENT_BUFFER  the result did not fit: the destination holds as much as fits,
 *                                  NUL-terminated (cchDest - 1 characters);
 *   STRSAFE_E_INVALID_PARAMETER    cchDest is 0 or above STRSAFE_MAX_CCH (the destination, when it
 *                                  has room, is made an empty string), or the string to measure or
 *                                  the destination of a Cat has no NUL within its bound.
 * Cch functions count characters, Cb functions bytes (sizeof(WCHAR) is 4 here, not 2). The names
 * without A/W follow UNICODE. The Ex forms (StringCchCopyEx, ...) are not provided.
 *
 * Formats are those of the C library, not Microsoft's: in the W forms %s is a narrow string (use %ls
 * for a WCHAR string), and %Id, %I64d and %ws do not exist (use %zd, %lld and %ls).
 */
#ifndef FLTPORT_COMPAT_STRSAFE_H
#define FLTPORT_COMPAT_STRSAFE_H

#include "windows.h"

#include <stdarg.h>
#include <stdio.h>
#include <wchar.h>

#define STRSAFE_MAX_CCH 2147483647
/* HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER), E_INVALIDARG, HRESULT_FROM_WIN32(ERROR_HANDLE_EOF) */
#define STRSAFE_E_INSUFFICIENT_BUFFER ((HRESULT)0x8007007A)
#define STRSAFE_E_INVALID_PARAMETER ((HRESULT)0x80070057)
#define STRSAFE_E_END_OF_FILE ((HRESULT)0x80070026)

typedef char* STRSAFE_LPSTR;
typedef const char* STRSAFE_LPCSTR;
typedef wchar_t* STRSAFE_LPWSTR;
typedef const wchar_t* STRSAFE_LPCWSTR;

/* ---- workers (not Windows API): the rules every function below shares ---- */

static inline HRESULT FltportStrsafeValidateDest(size_t cchDest) {
  return (cchDest == 0 || cchDest > STRSAFE_MAX_CCH) ? STRSAFE_E_INVALID_PARAMETER : S_OK;
}

/* Copies at most cchToCopy characters of pszSrc; cuts to cchDest - 1 when it does not fit. */
static inline HRESULT FltportStrsafeCopyA(char* pszDest, size_t cchDest, const char* pszSrc,
                                          size_t cchToCopy) {
  while (cchDest != 0 && cchToCopy != 0 && *pszSrc != '\0') {
    *pszDest++ = *pszSrc++;
    --cchDest;
    --cchToCopy;
  }
  HRESULT hr = S_OK;
  if (cchDest == 0) {
    --pszDest; /* no room for the NUL: the last character gives way */
    hr = STRSAFE_E_INSUFFICIENT_BUFFER;
  }
  *pszDest = '\0';
  return hr;
}
static inline HRESULT FltportStrsafeCopyW(wchar_t* pszDest, size_t cchDest, const wchar_t* pszSrc,
                                          size_t cchToCopy) {
  while (cchDest != 0 && cchToCopy != 0 && *pszSrc != L'\0') {
    *pszDest++ = *pszSrc++;
    --cchDest;
    --cchToCopy;
  }
  HRESULT hr = S_OK;
  if (cchDest == 0) {
    --pszDest;
    hr = STRSAFE_E_INSUFFICIENT_BUFFER;
  }
  *pszDest = L'\0';
  return hr;
}

static inline HRESULT FltportStrsafeLengthA(const char* psz, size_t cchMax, size_t* pcchLength) {
  HRESULT hr = S_OK;
  size_t length = 0;
  if (psz == NULL || cchMax > STRSAFE_MAX_CCH) {
    hr = STRSAFE_E_INVALID_PARAMETER;
  } else {
    while (length < cchMax && psz[length] != '\0') ++length;
    if (length == cchMax) hr = STRSAFE_E_INVALID_PARAMETER; /* no NUL within the bound */
  }
  if (pcchLength != NULL) *pcchLength = SUCCEEDED(hr) ? length : 0;
  return hr;
}
static inline HRESULT FltportStrsafeLengthW(const wchar_t* psz, size_t cchMax, size_t* pcchLength) {
  HRESULT hr = S_OK;
  size_t length = 0;
  if (psz == NULL || cchMax > STRSAFE_MAX_CCH) {
    hr = STRSAFE_E_INVALID_PARAMETER;
  } else {
    while (length < cchMax && psz[length] != L'\0') ++length;
    if (length == cchMax) hr = STRSAFE_E_INVALID_PARAMETER;
  }
  if (pcchLength != NULL) *pcchLength = SUCCEEDED(hr) ? length : 0;
  return hr;
}

static inline __attribute__((format(printf, 3, 0))) HRESULT FltportStrsafeVPrintfA(char* pszDest,
                                                                                   size_t cchDest,
                                                                                   const char* pszFormat,
                                                                                   va_list argList) {
  if (FAILED(FltportStrsafeValidateDest(cchDest))) {
    if (cchDest != 0 && pszDest != NULL) *pszDest = '\0';
    return STRSAFE_E_INVALID_PARAMETER;
  }
  /* vsnprintf NUL-terminates within cchDest and returns the length the whole output needed. */
  const int written = vsnprintf(pszDest, cchDest, pszFormat, argList);
  if (written < 0 || (size_t)written >= cchDest) {
    pszDest[cchDest - 1] = '\0';
    return STRSAFE_E_INSUFFICIENT_BUFFER;
  }
  return S_OK;
}
static inline HRESULT FltportStrsafeVPrintfW(wchar_t* pszDest, size_t cchDest, const wchar_t* pszFormat,
                                             va_list argList) {
  if (FAILED(FltportStrsafeValidateDest(cchDest))) {
    if (cchDest != 0 && pszDest != NULL) *pszDest = L'\0';
    return STRSAFE_E_INVALID_PARAMETER;
  }
  /* vswprintf returns -1 when the output does not fit, and glibc then leaves it unterminated. */
  const int written = vswprintf(pszDest, cchDest, pszFormat, argList);
  if (written < 0 || (size_t)written >= cchDest) {
    pszDest[cchDest - 1] = L'\0';
    return STRSAFE_E_INSUFFICIENT_BUFFER;
  }
  return S_OK;
}

/* ---- Copy ---- */
static inline HRESULT StringCchCopyA(STRSAFE_LPSTR pszDest, size_t cchDest, STRSAFE_LPCSTR pszSrc) {
  if (FAILED(FltportStrsafeValidateDest(cchDest))) {
    if (cchDest != 0) *pszDest = '\0';
    return STRSAFE_E_INVALID_PARAMETER;
  }
  return FltportStrsafeCopyA(pszDest, cchDest, pszSrc, STRSAFE_MAX_CCH);
}
static inline HRESULT StringCchCopyW(STRSAFE_LPWSTR pszDest, size_t cchDest, STRSAFE_LPCWSTR pszSrc) {
  if (FAILED(FltportStrsafeValidateDest(cchDest))) {
    if (cchDest != 0) *pszDest = L'\0';
    return STRSAFE_E_INVALID_PARAMETER;
  }
  return FltportStrsafeCopyW(pszDest, cchDest, pszSrc, STRSAFE_MAX_CCH);
}
static inline HRESULT StringCbCopyA(STRSAFE_LPSTR pszDest, size_t cbDest, STRSAFE_LPCSTR pszSrc) {
  return StringCchCopyA(pszDest, cbDest / sizeof(char), pszSrc);
}
static inline HRESULT StringCbCopyW(STRSAFE_LPWSTR pszDest, size_t cbDest, STRSAFE_LPCWSTR pszSrc) {
  return StringCchCopyW(pszDest, cbDest / sizeof(wchar_t), pszSrc);
}

/* At most cchToCopy characters of pszSrc (fewer when it ends first). */
static inline HRESULT StringCchCopyNA(STRSAFE_LPSTR pszDest, size_t cchDest, STRSAFE_LPCSTR pszSrc,
                                      size_t cchToCopy) {
  if (FAILED(FltportStrsafeValidateDest(cchDest)) || cchToCopy > STRSAFE_MAX_CCH) {
    if (cchDest != 0) *pszDest = '\0';
    return STRSAFE_E_INVALID_PARAMETER;
  }
  return FltportStrsafeCopyA(pszDest, cchDest, pszSrc, cchToCopy);
}
static inline HRESULT StringCchCopyNW(STRSAFE_LPWSTR pszDest, size_t cchDest, STRSAFE_LPCWSTR pszSrc,
                                      size_t cchToCopy) {
  if (FAILED(FltportStrsafeValidateDest(cchDest)) || cchToCopy > STRSAFE_MAX_CCH) {
    if (cchDest != 0) *pszDest = L'\0';
    return STRSAFE_E_INVALID_PARAMETER;
  }
  return FltportStrsafeCopyW(pszDest, cchDest, pszSrc, cchToCopy);
}

/* ---- Cat: the destination must already hold a NUL within cchDest ---- */
static inline HRESULT StringCchCatA(STRSAFE_LPSTR pszDest, size_t cchDest, STRSAFE_LPCSTR pszSrc) {
  size_t length = 0;
  if (FAILED(FltportStrsafeValidateDest(cchDest)) ||
      FAILED(FltportStrsafeLengthA(pszDest, cchDest, &length))) {
    return STRSAFE_E_INVALID_PARAMETER;
  }
  return FltportStrsafeCopyA(pszDest + length, cchDest - length, pszSrc, STRSAFE_MAX_CCH);
}
static inline HRESULT StringCchCatW(STRSAFE_LPWSTR pszDest, size_t cchDest, STRSAFE_LPCWSTR pszSrc) {
  size_t length = 0;
  if (FAILED(FltportStrsafeValidateDest(cchDest)) ||
      FAILED(FltportStrsafeLengthW(pszDest, cchDest, &length))) {
    return STRSAFE_E_INVALID_PARAMETER;
  }
  return FltportStrsafeCopyW(pszDest + length, cchDest - length, pszSrc, STRSAFE_MAX_CCH);
}
static inline HRESULT StringCbCatA(STRSAFE_LPSTR pszDest, size_t cbDest, STRSAFE_LPCSTR pszSrc) {
  return StringCchCatA(pszDest, cbDest / sizeof(char), pszSrc);
}
static inline HRESULT StringCbCatW(STRSAFE_LPWSTR pszDest, size_t cbDest, STRSAFE_LPCWSTR pszSrc) {
  return StringCchCatW(pszDest, cbDest / sizeof(wchar_t), pszSrc);
}

/* ---- Printf ---- */
static inline __attribute__((format(printf, 3, 0))) HRESULT StringCchVPrintfA(STRSAFE_LPSTR pszDest,
                                                                              size_t cchDest,
                                                                              STRSAFE_LPCSTR pszFormat,
                                                                              va_list argList) {
  return FltportStrsafeVPrintfA(pszDest, cchDest, pszFormat, argList);
}
static inline HRESULT StringCchVPrintfW(STRSAFE_LPWSTR pszDest, size_t cchDest, STRSAFE_LPCWSTR pszFormat,
                                        va_list argList) {
  return FltportStrsafeVPrintfW(pszDest, cchDest, pszFormat, argList);
}
static inline __attribute__((format(printf, 3, 4))) HRESULT StringCchPrintfA(STRSAFE_LPSTR pszDest,
                                                                             size_t cchDest,
                                                                             STRSAFE_LPCSTR pszFormat, ...) {
  va_list args;
  va_start(args, pszFormat);
  const HRESULT hr = FltportStrsafeVPrintfA(pszDest, cchDest, pszFormat, args);
  va_end(args);
  return hr;
}
static inline HRESULT StringCchPrintfW(STRSAFE_LPWSTR pszDest, size_t cchDest, STRSAFE_LPCWSTR pszFormat,
                                       ...) {
  va_list args;
  va_start(args, pszFormat);
  const HRESULT hr = FltportStrsafeVPrintfW(pszDest, cchDest, pszFormat, args);
  va_end(args);
  return hr;
}
static inline __attribute__((format(printf, 3, 0))) HRESULT StringCbVPrintfA(STRSAFE_LPSTR pszDest,
                                                                             size_t cbDest,
                                                                             STRSAFE_LPCSTR pszFormat,
                                                                             va_list argList) {
  return FltportStrsafeVPrintfA(pszDest, cbDest / sizeof(char), pszFormat, argList);
}
static inline HRESULT StringCbVPrintfW(STRSAFE_LPWSTR pszDest, size_t cbDest, STRSAFE_LPCWSTR pszFormat,
                                       va_list argList) {
  return FltportStrsafeVPrintfW(pszDest, cbDest / sizeof(wchar_t), pszFormat, argList);
}
static inline __attribute__((format(printf, 3, 4))) HRESULT StringCbPrintfA(STRSAFE_LPSTR pszDest,
                                                                            size_t cbDest,
                                                                            STRSAFE_LPCSTR pszFormat, ...) {
  va_list args;
  va_start(args, pszFormat);
  const HRESULT hr = FltportStrsafeVPrintfA(pszDest, cbDest / sizeof(char), pszFormat, args);
  va_end(args);
  return hr;
}
static inline HRESULT StringCbPrintfW(STRSAFE_LPWSTR pszDest, size_t cbDest, STRSAFE_LPCWSTR pszFormat, ...) {
  va_list args;
  va_start(args, pszFormat);
  const HRESULT hr = FltportStrsafeVPrintfW(pszDest, cbDest / sizeof(wchar_t), pszFormat, args);
  va_end(args);
  return hr;
}

/* ---- Length: characters (Cch) or bytes (Cb) before the NUL, which must come within the bound;
 * *pcchLength is 0 on failure ---- */
static inline HRESULT StringCchLengthA(STRSAFE_LPCSTR psz, size_t cchMax, size_t* pcchLength) {
  return FltportStrsafeLengthA(psz, cchMax, pcchLength);
}
static inline HRESULT StringCchLengthW(STRSAFE_LPCWSTR psz, size_t cchMax, size_t* pcchLength) {
  return FltportStrsafeLengthW(psz, cchMax, pcchLength);
}
static inline HRESULT StringCbLengthA(STRSAFE_LPCSTR psz, size_t cbMax, size_t* pcbLength) {
  return FltportStrsafeLengthA(psz, cbMax / sizeof(char), pcbLength);
}
static inline HRESULT StringCbLengthW(STRSAFE_LPCWSTR psz, size_t cbMax, size_t* pcbLength) {
  size_t length = 0;
  const HRESULT hr = FltportStrsafeLengthW(psz, cbMax / sizeof(wchar_t), &length);
  if (pcbLength != NULL) *pcbLength = length * sizeof(wchar_t);
  return hr;
}

#ifdef UNICODE
#define StringCchCopy StringCchCopyW
#define StringCbCopy StringCbCopyW
#define StringCchCopyN StringCchCopyNW
#define StringCchCat StringCchCatW
#define StringCbCat StringCbCatW
#define StringCchPrintf StringCchPrintfW
#define StringCbPrintf StringCbPrintfW
#define StringCchVPrintf StringCchVPrintfW
#define StringCbVPrintf StringCbVPrintfW
#define StringCchLength StringCchLengthW
#define StringCbLength StringCbLengthW
#else
#define StringCchCopy StringCchCopyA
#define StringCbCopy StringCbCopyA
#define StringCchCopyN StringCchCopyNA
#define StringCchCat StringCchCatA
#define StringCbCat StringCbCatA
#define StringCchPrintf StringCchPrintfA
#define StringCbPrintf StringCbPrintfA
#define StringCchVPrintf StringCchVPrintfA
#define StringCbVPrintf StringCbVPrintfA
#define StringCchLength StringCchLengthA
#define StringCbLength StringCbLengthA
#endif

#endif /* FLTPORT_COMPAT_STRSAFE_H */
