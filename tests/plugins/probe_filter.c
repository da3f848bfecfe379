/*
 * probe: a filter plugin for the tests of what a host must survive (tests/integration/
 * never_freeze_test.cpp). It decides by the opened file's name:
 *   crash-SIGSEGV, crash-SIGBUS, crash-SIGABRT, crash-SIGILL, crash-SIGFPE: the host dies of that
 *       signal, raised by a real fault inside the callback (a null write, a touch past the end of a
 *       mapped empty file, abort(), an undefined instruction, a division by zero);
 *   slow*: answers allow after 200 ms (a service that thinks);
 *   hang*, or anything under a directory named hangdir: does not answer for 30 s, or until the
 *       filter unloads;
 *   deny*: denies; busy*: denies with STATUS_SHARING_VIOLATION (EBUSY where the kernel takes errnos);
 *   default*: FLT_PREOP_FLTPORT_TAKE_DEFAULT;
 *   pend-allow*, pend-deny*, pend-default*: FLT_PREOP_PENDING, completed 50 ms later from another
 *       thread with an allow, a deny (STATUS_ACCESS_DENIED) or FLT_PREOP_FLTPORT_TAKE_DEFAULT;
 *   anything else: allows;
 * and after a file named post* was written and closed, its post-operation takes 2 ms.
 */
#define _GNU_SOURCE
#include <fltport/fltkernel.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PROBE_EXPORT __attribute__((visibility("default")))

static PFLT_FILTER ProbeFilter;
static atomic_bool ProbeUnloading;
/* Threads completing a pended operation: unload joins them (their code is the plugin's). */
#define PROBE_MAX_COMPLETERS 64
static pthread_mutex_t ProbeCompletersLock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t ProbeCompleters[PROBE_MAX_COMPLETERS];
static int ProbeCompleterCount;

PROBE_EXPORT NTSTATUS DriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath);

static void SleepMs(long ms) {
  struct timespec delay = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&delay, &delay) != 0) {
  }
}

/* Not instrumented by UBSan, which would stop the host at the null write or the division with a
 * report and an exit code: the tests need the real fault and the real signal. */
__attribute__((no_sanitize("undefined"))) static void Crash(const char* name) {
  if (strcmp(name, "SIGSEGV") == 0) {
    volatile int* volatile nowhere = NULL;
    *nowhere = 1;
  } else if (strcmp(name, "SIGBUS") == 0) {
    const int fd = memfd_create("probe-empty", MFD_CLOEXEC);
    volatile char* page = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
    if (page != MAP_FAILED) (void)page[0]; /* past the end of an empty file */
  } else if (strcmp(name, "SIGABRT") == 0) {
    abort();
  } else if (strcmp(name, "SIGILL") == 0) {
    __builtin_trap();
  } else if (strcmp(name, "SIGFPE") == 0) {
    volatile int zero = 0, seven = 7; /* not 1 / x, which compilers turn into a comparison */
    volatile int quotient = seven / zero;
    (void)quotient;
  }
}

typedef struct _PROBE_PENDED {
  PFLT_CALLBACK_DATA Data;
  FLT_PREOP_CALLBACK_STATUS Status;
} PROBE_PENDED;

static void* ProbeComplete(void* argument) {
  PROBE_PENDED* pended = argument;
  SleepMs(50);
  if (pended->Status == FLT_PREOP_COMPLETE) pended->Data->IoStatus.Status = STATUS_ACCESS_DENIED;
  FltCompletePendedPreOperation(pended->Data, pended->Status, NULL);
  free(pended);
  return NULL;
}

/* Completes Data from another thread 50 ms from now with `status`; allows now if it cannot. */
static FLT_PREOP_CALLBACK_STATUS ProbePend(PFLT_CALLBACK_DATA Data, FLT_PREOP_CALLBACK_STATUS status) {
  PROBE_PENDED* pended = malloc(sizeof *pended);
  if (pended == NULL) return FLT_PREOP_SUCCESS_NO_CALLBACK;
  pended->Data = Data;
  pended->Status = status;
  pthread_mutex_lock(&ProbeCompletersLock);
  const int made = !atomic_load(&ProbeUnloading) && ProbeCompleterCount < PROBE_MAX_COMPLETERS &&
                   pthread_create(&ProbeCompleters[ProbeCompleterCount], NULL, ProbeComplete, pended) == 0;
  if (made) ++ProbeCompleterCount;
  pthread_mutex_unlock(&ProbeCompletersLock);
  if (!made) {
    free(pended);
    return FLT_PREOP_SUCCESS_NO_CALLBACK;
  }
  return FLT_PREOP_PENDING;
}

static FLT_PREOP_CALLBACK_STATUS FLTAPI ProbePreCreate(PFLT_CALLBACK_DATA Data,
                                                       PCFLT_RELATED_OBJECTS FltObjects,
                                                       PVOID* CompletionContext) {
  (void)FltObjects;
  (void)CompletionContext;
  const char* path = Data->FileEvent != NULL ? Data->FileEvent->Path : "";
  const char* slash = strrchr(path, '/');
  const char* name = slash != NULL ? slash + 1 : path;
  if (strncmp(name, "crash-", 6) == 0) {
    /* The monotonic time of the fault, for the test to tell the host's way to this event from
     * the release that follows the fault. */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    fprintf(stderr, "probe filter: crashing with %s at monotonic ns %lld\n", name + 6,
            (long long)now.tv_sec * 1000000000LL + now.tv_nsec);
    Crash(name + 6);
  } else if (strncmp(name, "slow", 4) == 0) {
    SleepMs(200);
  } else if (strncmp(name, "hang", 4) == 0 || strstr(path, "/hangdir/") != NULL) {
    for (int i = 0; i < 3000 && !atomic_load(&ProbeUnloading); ++i) SleepMs(10);
  } else if (strncmp(name, "deny", 4) == 0) {
    Data->IoStatus.Status = STATUS_ACCESS_DENIED;
    return FLT_PREOP_COMPLETE;
  } else if (strncmp(name, "busy", 4) == 0) {
    Data->IoStatus.Status = STATUS_SHARING_VIOLATION;
    return FLT_PREOP_COMPLETE;
  } else if (strncmp(name, "default", 7) == 0) {
    return FLT_PREOP_FLTPORT_TAKE_DEFAULT;
  } else if (strncmp(name, "pend-allow", 10) == 0) {
    return ProbePend(Data, FLT_PREOP_SUCCESS_NO_CALLBACK);
  } else if (strncmp(name, "pend-deny", 9) == 0) {
    return ProbePend(Data, FLT_PREOP_COMPLETE);
  } else if (strncmp(name, "pend-default", 12) == 0) {
    return ProbePend(Data, FLT_PREOP_FLTPORT_TAKE_DEFAULT);
  }
  return FLT_PREOP_SUCCESS_NO_CALLBACK;
}

static FLT_POSTOP_CALLBACK_STATUS FLTAPI ProbePostCleanup(PFLT_CALLBACK_DATA Data,
                                                          PCFLT_RELATED_OBJECTS FltObjects,
                                                          PVOID CompletionContext,
                                                          FLT_POST_OPERATION_FLAGS Flags) {
  (void)FltObjects;
  (void)CompletionContext;
  (void)Flags;
  const char* path = Data->FileEvent != NULL ? Data->FileEvent->Path : "";
  const char* slash = strrchr(path, '/');
  if (strncmp(slash != NULL ? slash + 1 : path, "post", 4) == 0) SleepMs(2);
  return FLT_POSTOP_FINISHED_PROCESSING;
}

static const FLT_OPERATION_REGISTRATION Callbacks[] = {
    {IRP_MJ_CREATE, 0, ProbePreCreate, NULL, NULL},
    {IRP_MJ_CLEANUP, 0, NULL, ProbePostCleanup, NULL},
    {IRP_MJ_OPERATION_END, 0, NULL, NULL, NULL},
};

static NTSTATUS FLTAPI ProbeUnload(FLT_FILTER_UNLOAD_FLAGS Flags) {
  (void)Flags;
  atomic_store(&ProbeUnloading, true); /* hung callbacks return */
  /* Pended operations are completed (each within 50 ms) before this code may be unmapped. */
  pthread_mutex_lock(&ProbeCompletersLock);
  for (int i = 0; i < ProbeCompleterCount; ++i) pthread_join(ProbeCompleters[i], NULL);
  ProbeCompleterCount = 0;
  pthread_mutex_unlock(&ProbeCompletersLock);
  FltUnregisterFilter(ProbeFilter);
  ProbeFilter = NULL;
  return STATUS_SUCCESS;
}

NTSTATUS DriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath) {
  (void)RegistryPath;
  atomic_init(&ProbeUnloading, false);
  FLT_REGISTRATION registration;
  memset(&registration, 0, sizeof registration);
  registration.Size = sizeof registration;
  registration.Version = FLT_REGISTRATION_VERSION;
  registration.OperationRegistration = Callbacks;
  registration.FilterUnloadCallback = ProbeUnload;
  NTSTATUS status = FltRegisterFilter(DriverObject, &registration, &ProbeFilter);
  if (NT_SUCCESS(status)) status = FltStartFiltering(ProbeFilter);
  return status;
}
