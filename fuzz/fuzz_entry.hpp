// The entry point of a fuzz target. Built for libFuzzer it is LLVMFuzzerTestOneInput; built with
// FLTPORT_FUZZ_NO_MAIN (the corpus regression test, which links every target into one program)
// each target's entry has its own name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#ifdef FLTPORT_FUZZ_NO_MAIN
#define FLTPORT_FUZZ_ENTRY(name) extern "C" int fltport_fuzz_##name(const uint8_t* data, size_t size)
#else
#define FLTPORT_FUZZ_ENTRY(name) extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
#endif

// An invariant of the code under test does not hold: a crash, for the fuzzer and for the test.
#define FUZZ_CHECK(cond)                                                                     \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)
