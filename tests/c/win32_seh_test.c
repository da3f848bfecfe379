/*
 * The control flow of <excpt.h>'s structured exception macros, as C code written for Windows uses
 * them (Microsoft's minispy sample: try { ... leave; ... } finally { ... }): the __try block runs,
 * __leave jumps to its end from anywhere inside it, the __finally block then runs; __except blocks
 * never run and their filters are never evaluated. Each case records the steps it takes in a trace
 * and compares it with Windows' order. Built with the compatibility directory only, as C11.
 * Returns 0, or 1 after printing what failed.
 */
#include <windows.h>

#include <stdio.h>
#include <string.h>

static int failures = 0;
static char trace[256];

static void step(const char* name) {
  if (strlen(trace) + strlen(name) + 2 < sizeof trace) {
    if (trace[0] != '\0') strcat(trace, " ");
    strcat(trace, name);
  }
}

#define EXPECT_TRACE(expected)                                                                        \
  do {                                                                                                \
    if (strcmp(trace, expected) != 0) {                                                               \
      fprintf(stderr, "%s:%d: trace \"%s\", expected \"%s\"\n", __FILE__, __LINE__, trace, expected); \
      ++failures;                                                                                     \
    }                                                                                                 \
    trace[0] = '\0';                                                                                  \
  } while (0)

static int filter_evaluations = 0;
static int Filter(unsigned int code) {
  (void)code;
  ++filter_evaluations;
  return EXCEPTION_EXECUTE_HANDLER;
}

static void Completes(void) {
  __try {
    step("body");
    step("end");
  } __finally {
    step("finally");
  }
  step("after");
}

static void Leaves(int leave_early) {
  __try {
    step("body");
    if (leave_early) __leave;
    step("end");
  } __finally {
    step("finally");
  }
  step("after");
}

/* __leave from a loop and from a switch inside the __try leaves the __try, not just the loop. */
static void LeavesFromLoopAndSwitch(int how) {
  __try {
    for (int i = 0; i < 3; ++i) {
      step("loop");
      if (how == 0 && i == 1) __leave;
    }
    switch (how) {
      case 1:
        step("case");
        __leave;
      default:
        step("default");
        break;
    }
    step("end");
  } __finally {
    step("finally");
  }
  step("after");
}

/* The inner __leave ends the inner block only; the finally blocks run innermost first. */
static void Nested(void) {
  __try {
    step("outer");
    __try {
      step("inner");
      __leave;
      step("never");
    } __finally {
      step("inner-finally");
    }
    step("outer-end");
    __leave;
    step("never");
  } __finally {
    step("outer-finally");
  }
}

/* Several __try statements in one function, and one per iteration of a loop. */
static void Repeated(void) {
  for (int i = 0; i < 3; ++i) {
    __try {
      if (i == 1) __leave;
      step("body");
    } __finally {
      step("finally");
    }
  }
  __try {
    step("second");
  } __finally {
    step("second-finally");
  }
}

/* No exception: the handler never runs and the filter is not evaluated. */
static void Except(void) {
  __try {
    step("body");
  } __except (Filter(GetExceptionCode())) {
    step("handler");
  }
  __try {
    step("leave");
    __leave;
    step("never");
  } __except (EXCEPTION_EXECUTE_HANDLER) {
    step("handler");
  }
  step("after");
}

static void AbnormalTerminationIsZero(void) {
  __try {
    __leave;
  } __finally {
    step(AbnormalTermination() ? "abnormal" : "normal");
  }
}

/* The spelling minispy uses (Windows' excpt.h gives C these names). */
static void LowercaseNames(int leave_early) {
  try {
    step("body");
    if (leave_early) {
      leave;
    }
    step("end");
  } finally {
    step("finally");
  }
}

/* A documented limit: break (like return, goto, continue) out of a __try skips its __finally. */
static void BreakSkipsFinally(void) {
  for (int i = 0; i < 2; ++i) {
    __try {
      step("body");
      break;
    } __finally {
      step("finally");
    }
  }
  step("after");
}

int main(void) {
  Completes();
  EXPECT_TRACE("body end finally after");
  Leaves(0);
  EXPECT_TRACE("body end finally after");
  Leaves(1);
  EXPECT_TRACE("body finally after");
  LeavesFromLoopAndSwitch(0);
  EXPECT_TRACE("loop loop finally after");
  LeavesFromLoopAndSwitch(1);
  EXPECT_TRACE("loop loop loop case finally after");
  LeavesFromLoopAndSwitch(2);
  EXPECT_TRACE("loop loop loop default end finally after");
  Nested();
  EXPECT_TRACE("outer inner inner-finally outer-end outer-finally");
  Repeated();
  EXPECT_TRACE("body finally finally body finally second second-finally");
  Except();
  EXPECT_TRACE("body leave after");
  if (filter_evaluations != 0) {
    fprintf(stderr, "an __except filter was evaluated\n");
    ++failures;
  }
  AbnormalTerminationIsZero();
  EXPECT_TRACE("normal");
  LowercaseNames(0);
  EXPECT_TRACE("body end finally");
  LowercaseNames(1);
  EXPECT_TRACE("body finally");
  BreakSkipsFinally();
  EXPECT_TRACE("body after");
  if (failures == 0) printf("win32 SEH macros: all cases passed\n");
  return failures == 0 ? 0 : 1;
}
