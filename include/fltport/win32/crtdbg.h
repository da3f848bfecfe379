/*
 * fltport compatibility <crtdbg.h>: the debug-report macros of the Microsoft C runtime, minimal.
 * As with the Microsoft runtime, _ASSERT, _ASSERTE and the _RPT macros do something only when
 * _DEBUG is defined: they print to stderr, and a failed assertion (or an _CRT_ASSERT/_CRT_ERROR
 * report) aborts. The heap-debugging calls (_CrtSetDbgFlag, _CrtDumpMemoryLeaks, ...) do nothing:
 * use AddressSanitizer or valgrind instead.
 */
#ifndef FLTPORT_COMPAT_CRTDBG_H
#define FLTPORT_COMPAT_CRTDBG_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define _CRT_WARN 0
#define _CRT_ERROR 1
#define _CRT_ASSERT 2
#define _CRT_ERRCNT 3

#define _CRTDBG_MODE_FILE 0x1
#define _CRTDBG_MODE_DEBUG 0x2
#define _CRTDBG_MODE_WNDW 0x4
#define _CRTDBG_REPORT_MODE -1

#define _CRTDBG_ALLOC_MEM_DF 0x01
#define _CRTDBG_DELAY_FREE_MEM_DF 0x02
#define _CRTDBG_CHECK_ALWAYS_DF 0x04
#define _CRTDBG_CHECK_CRT_DF 0x10
#define _CRTDBG_LEAK_CHECK_DF 0x20
#define _CRTDBG_REPORT_FLAG -1

/* Prints "file(line) : module : message" to stderr. Returns 0 (the Microsoft runtime returns 1 when
 * the user chose to debug; there is no dialog here). _CRT_ERROR and _CRT_ASSERT then abort. */
static inline __attribute__((format(printf, 5, 6))) int _CrtDbgReport(int reportType, const char* filename,
                                                                      int linenumber, const char* moduleName,
                                                                      const char* format, ...) {
  if (filename != NULL) fprintf(stderr, "%s(%d) : ", filename, linenumber);
  if (moduleName != NULL) fprintf(stderr, "%s : ", moduleName);
  if (format != NULL) {
    va_list args;
    va_start(args, format);
    vfprintf(stderr, format, args);
    va_end(args);
  }
  fflush(stderr);
  if (reportType == _CRT_ERROR || reportType == _CRT_ASSERT) abort();
  return 0;
}

static inline int _CrtSetDbgFlag(int newFlag) {
  (void)newFlag;
  return 0;
}
static inline int _CrtSetReportMode(int reportType, int reportMode) {
  (void)reportType;
  (void)reportMode;
  return 0;
}
static inline int _CrtDumpMemoryLeaks(void) {
  return 0;
}
static inline int _CrtCheckMemory(void) {
  return 1;
}
#define _CrtSetBreakAlloc(n) ((long)0)

#ifdef _DEBUG
#define _ASSERT_EXPR(expr, msg) \
  ((void)((expr) || _CrtDbgReport(_CRT_ASSERT, __FILE__, __LINE__, NULL, "Assertion failed: %s\n", msg)))
#define _ASSERT(expr) _ASSERT_EXPR((expr), #expr)
#define _ASSERTE(expr) _ASSERT_EXPR((expr), #expr)
#define _RPT_BASE(type, file, line, ...) ((void)_CrtDbgReport((type), (file), (line), NULL, __VA_ARGS__))
#else
#define _ASSERT_EXPR(expr, msg) ((void)0)
#define _ASSERT(expr) ((void)0)
#define _ASSERTE(expr) ((void)0)
#define _RPT_BASE(type, file, line, ...) ((void)0)
#endif

#define _RPT0(rptno, msg) _RPT_BASE((rptno), NULL, 0, "%s", (msg))
#define _RPT1(rptno, msg, a1) _RPT_BASE((rptno), NULL, 0, (msg), (a1))
#define _RPT2(rptno, msg, a1, a2) _RPT_BASE((rptno), NULL, 0, (msg), (a1), (a2))
#define _RPT3(rptno, msg, a1, a2, a3) _RPT_BASE((rptno), NULL, 0, (msg), (a1), (a2), (a3))
#define _RPT4(rptno, msg, a1, a2, a3, a4) _RPT_BASE((rptno), NULL, 0, (msg), (a1), (a2), (a3), (a4))
#define _RPTF0(rptno, msg) _RPT_BASE((rptno), __FILE__, __LINE__, "%s", (msg))
#define _RPTF1(rptno, msg, a1) _RPT_BASE((rptno), __FILE__, __LINE__, (msg), (a1))
#define _RPTF2(rptno, msg, a1, a2) _RPT_BASE((rptno), __FILE__, __LINE__, (msg), (a1), (a2))
#define _RPTF3(rptno, msg, a1, a2, a3) _RPT_BASE((rptno), __FILE__, __LINE__, (msg), (a1), (a2), (a3))
#define _RPTF4(rptno, msg, a1, a2, a3, a4) \
  _RPT_BASE((rptno), __FILE__, __LINE__, (msg), (a1), (a2), (a3), (a4))

#endif /* FLTPORT_COMPAT_CRTDBG_H */
