/*
 * fltport compatibility <excpt.h>: structured exception handling (__try/__finally/__leave,
 * __try/__except) as C macros, so that Windows C code that uses them for cleanup compiles and takes
 * the same path when nothing faults. <windows.h> includes it, as Windows' does.
 *
 * There are no structured exceptions on Linux (a fault is a signal), so only the control flow
 * without an exception is kept:
 *   - the __try block runs; __leave (anywhere inside it, even in a loop or a switch) jumps to its
 *     end; then the __finally block runs. AbnormalTermination() is always 0.
 *   - an __except block never runs and its filter expression is never evaluated (it is compiled,
 *     so GetExceptionCode() and the EXCEPTION_* values are given).
 * Limits:
 *   - return, goto, break and continue out of a __try block skip its __finally block (Windows runs
 *     it): write __leave, or move the cleanup after the statement.
 *   - "__try {...} __finally {...}" must be a statement of its own: as the unbraced body of an if,
 *     else or loop, only the __try part would be that body.
 *   - C only: in C++ libstdc++ defines __try itself (and try is a keyword); use destructors there.
 * Like Windows' excpt.h, C code also gets the lowercase try, except, finally and leave (unless
 * FLTPORT_NO_SEH_KEYWORDS is defined).
 *
 * The macros use GCC's block-local labels (__label__, also in clang), so __try blocks nest and any
 * number of them share a function.
 */
#ifndef FLTPORT_COMPAT_EXCPT_H
#define FLTPORT_COMPAT_EXCPT_H

/* Filter results (Windows' values). */
#ifndef EXCEPTION_EXECUTE_HANDLER
#define EXCEPTION_EXECUTE_HANDLER 1
#define EXCEPTION_CONTINUE_SEARCH 0
#define EXCEPTION_CONTINUE_EXECUTION (-1)
#endif

#ifndef __cplusplus

/* Only ever seen by a filter or handler that does not run. */
struct _EXCEPTION_POINTERS;
#define GetExceptionCode() ((unsigned int)0)
#define _exception_code() ((unsigned int)0)
#define GetExceptionInformation() ((struct _EXCEPTION_POINTERS*)0)
#define _exception_info() ((struct _EXCEPTION_POINTERS*)0)
/* Nothing leaves a __try block abnormally and still reaches its __finally block. */
#define AbnormalTermination() 0
#define _abnormal_termination() 0

/* Kept from clang-format, which reads __except(filter) as the keyword and breaks the macro. */
/* clang-format off */
/* __try opens a block with its own leave label ("if (0) goto" counts as a use, so an unused label
 * is not a warning; -Wpedantic would call the label declaration an extension, which it is, on
 * purpose); __finally and __except close it at that label. */
#define __try                                              \
  _Pragma("GCC diagnostic push")                           \
  _Pragma("GCC diagnostic ignored \"-Wpedantic\"")         \
  {                                                        \
    __label__ fltport_seh_leave_;                          \
    _Pragma("GCC diagnostic pop")                          \
    if (0) goto fltport_seh_leave_;
#define __leave goto fltport_seh_leave_
#define __finally        \
  fltport_seh_leave_:;   \
  }
/* The handler compiles as the body of a branch never taken; && keeps the filter unevaluated. */
#define __except(filter) \
  fltport_seh_leave_:;   \
  }                      \
  if (0 && (filter))

/* Windows' excpt.h gives C these names too. Define FLTPORT_NO_SEH_KEYWORDS for C code that uses
 * them as identifiers (a function named leave ...). */
#ifndef FLTPORT_NO_SEH_KEYWORDS
#define try __try
#define except __except
#define finally __finally
#define leave __leave
#endif
/* clang-format on */

#endif /* !__cplusplus */

#endif /* FLTPORT_COMPAT_EXCPT_H */
