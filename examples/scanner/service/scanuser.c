/*
 * scanuser: the user-mode half of the on-access scanner, in the shape of the classic "scanner"
 * sample's service: it connects to the filter's port \ScannerPort, and worker threads take the
 * filter's notifications (the first bytes of a file being opened or just written), scan them for
 * the word "foul" and answer whether the file is safe to open.
 *
 *   fltport-scanner-service [-t THREADS]      (default 2 threads; ports in $FLTPORT_RUNTIME_DIR)
 *
 * It prints one line per decision. It stops when the filter goes away (FilterGetMessage returns
 * HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE)) or on SIGINT/SIGTERM. This version uses the synchronous
 * calls; the classic sample's overlapped requests on a completion port come in a later version.
 */
#define _POSIX_C_SOURCE 200809L
#include <fltport/fltuser.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "scanner.h"

#define SCANNER_DEFAULT_THREAD_COUNT 2
#define SCANNER_MAX_THREAD_COUNT 64
#define SCANNER_CONNECT_TRIES 500 /* every 10 ms: 5 s for fltmgrd to create the port */

/* What FilterGetMessage fills: the header, then the filter's notification. */
typedef struct _SCANNER_MESSAGE {
  FILTER_MESSAGE_HEADER MessageHeader;
  SCANNER_NOTIFICATION Notification;
} SCANNER_MESSAGE, *PSCANNER_MESSAGE;

/* What FilterReplyMessage sends. Its size on the wire is SCANNER_REPLY_MESSAGE_SIZE, not
 * sizeof(SCANNER_REPLY_MESSAGE): the struct is padded to 24 bytes, and the filter expects exactly
 * the header and the 1-byte reply (the rule Microsoft's FilterReplyMessage page states). */
typedef struct _SCANNER_REPLY_MESSAGE {
  FILTER_REPLY_HEADER ReplyHeader;
  SCANNER_REPLY Reply;
} SCANNER_REPLY_MESSAGE, *PSCANNER_REPLY_MESSAGE;
#define SCANNER_REPLY_MESSAGE_SIZE (sizeof(FILTER_REPLY_HEADER) + sizeof(SCANNER_REPLY))

typedef struct _SCANNER_THREAD_CONTEXT {
  HANDLE Port;
  int Index;
} SCANNER_THREAD_CONTEXT;

static atomic_int g_running_workers;
static atomic_bool g_stopping;
static pid_t g_pid; /* printed on every line: getpid() is a system call each time */

/* The classic rule: a buffer holding "foul" anywhere is unsafe. Contents are bytes, not a string. */
static BOOLEAN ScanBuffer(const UCHAR* buffer, ULONG size) {
  static const char pattern[] = "foul";
  const ULONG length = sizeof pattern - 1;
  for (ULONG i = 0; i + length <= size; ++i) {
    if (memcmp(buffer + i, pattern, length) == 0) return TRUE;
  }
  return FALSE;
}

/* The first bytes, printable, for the log line: the message carries no file name. */
static void Preview(const UCHAR* buffer, ULONG size, char* out, size_t out_size) {
  size_t o = 0;
  for (ULONG i = 0; i < size && o + 4 < out_size; ++i) {
    const UCHAR c = buffer[i];
    out[o++] = (c >= 0x20 && c < 0x7F && c != '"') ? (char)c : '.';
  }
  if (size > 0 && o + 4 >= out_size) {
    out[o++] = '.';
    out[o++] = '.';
    out[o++] = '.';
  }
  out[o] = '\0';
}

static void* ScannerWorker(void* argument) {
  const SCANNER_THREAD_CONTEXT* context = argument;
  const char* why = "stop requested";
  for (;;) {
    SCANNER_MESSAGE message;
    HRESULT hr = FilterGetMessage(context->Port, &message.MessageHeader, sizeof message, NULL);
    if (hr == HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE)) {
      why = atomic_load(&g_stopping) ? "stop requested" : "the filter closed the port";
      break;
    }
    if (FAILED(hr) && hr != HRESULT_FROM_WIN32(ERROR_MORE_DATA)) {
      if (atomic_load(&g_stopping)) break; /* the wait was cut by CloseHandle (ERROR_OPERATION_ABORTED) */
      fprintf(stderr, "scanner: worker %d: FilterGetMessage failed: 0x%08X\n", context->Index, (unsigned)hr);
      why = "FilterGetMessage failed";
      break;
    }
    ULONG size = message.Notification.BytesToScan;
    if (size > SCANNER_READ_BUFFER_SIZE) size = SCANNER_READ_BUFFER_SIZE;
    const BOOLEAN foul = ScanBuffer(message.Notification.Contents, size);

    /* The verdict first, the line after: the process whose open waits for it should not wait for
     * our output as well. */
    hr = S_OK;
    if (message.MessageHeader.ReplyLength != 0) { /* 0: the filter wants no answer */
      SCANNER_REPLY_MESSAGE reply;
      memset(&reply, 0, sizeof reply);
      reply.ReplyHeader.Status = 0;
      reply.ReplyHeader.MessageId = message.MessageHeader.MessageId;
      reply.Reply.SafeToOpen = !foul;
      hr = FilterReplyMessage(context->Port, &reply.ReplyHeader, (DWORD)SCANNER_REPLY_MESSAGE_SIZE);
    }
    char preview[40];
    Preview(message.Notification.Contents, size, preview, sizeof preview);
    printf("scanner: %d %s  (message %llu, %u bytes: \"%s\")\n", (int)g_pid, foul ? "FOUL" : "clean",
           (unsigned long long)message.MessageHeader.MessageId, (unsigned)size, preview);
    if (hr == HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE)) {
      why = atomic_load(&g_stopping) ? "stop requested" : "the filter closed the port";
      break;
    }
    if (hr == (HRESULT)ERROR_FLT_NO_WAITER_FOR_REPLY) {
      printf("scanner: message %llu answered too late: the filter stopped waiting\n",
             (unsigned long long)message.MessageHeader.MessageId);
    } else if (FAILED(hr)) {
      fprintf(stderr, "scanner: worker %d: FilterReplyMessage failed: 0x%08X\n", context->Index,
              (unsigned)hr);
    }
  }
  printf("scanner: worker %d ends: %s\n", context->Index, why);
  atomic_fetch_sub(&g_running_workers, 1);
  return NULL;
}

static void Usage(const char* program) {
  fprintf(stderr, "usage: %s [-t THREADS]   (1..%d worker threads, default %d)\n", program,
          SCANNER_MAX_THREAD_COUNT, SCANNER_DEFAULT_THREAD_COUNT);
}

/* Waits up to `milliseconds` for SIGINT or SIGTERM (blocked in every thread). */
static int WaitForStopSignal(const sigset_t* signals, long milliseconds) {
  struct timespec wait = {milliseconds / 1000, (milliseconds % 1000) * 1000000L};
  const int signal_number = sigtimedwait(signals, NULL, &wait);
  return signal_number > 0 ? signal_number : 0;
}

int main(int argc, char** argv) {
  int thread_count = SCANNER_DEFAULT_THREAD_COUNT;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
      char* end = NULL;
      const long value = strtol(argv[++i], &end, 10);
      if (end == argv[i] || *end != '\0' || value < 1 || value > SCANNER_MAX_THREAD_COUNT) {
        Usage(argv[0]);
        return 2;
      }
      thread_count = (int)value;
    } else {
      Usage(argv[0]);
      return 2;
    }
  }
  setvbuf(stdout, NULL, _IOLBF, 0);

  /* SIGINT and SIGTERM are taken by the main thread only, with sigtimedwait. */
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

  g_pid = getpid();
  SCANNER_CONNECTION_CONTEXT connection_context = {(ULONG)g_pid};
  HANDLE port = INVALID_HANDLE_VALUE;
  HRESULT hr = HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND);
  for (int attempt = 0; attempt < SCANNER_CONNECT_TRIES; ++attempt) {
    hr = FilterConnectCommunicationPort(SCANNER_PORT_NAME, 0, &connection_context, sizeof connection_context,
                                        NULL, &port);
    if (hr != HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)) break;
    if (attempt == 0) printf("scanner: waiting for the filter's port \\ScannerPort\n");
    if (WaitForStopSignal(&stop_signals, 10) != 0) {
      printf("scanner: stopped before connecting\n");
      return 0;
    }
  }
  if (FAILED(hr)) {
    fprintf(stderr, "scanner: cannot connect to \\ScannerPort: 0x%08X%s\n", (unsigned)hr,
            hr == HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND) ? " (is fltmgrd running with the scanner filter?)"
            : hr == E_ACCESSDENIED                         ? " (the port admits root only)"
                                                           : "");
    return 1;
  }
  printf("scanner: connected to \\ScannerPort, %d worker thread%s\n", thread_count,
         thread_count == 1 ? "" : "s");

  pthread_t threads[SCANNER_MAX_THREAD_COUNT];
  SCANNER_THREAD_CONTEXT contexts[SCANNER_MAX_THREAD_COUNT];
  int started = 0;
  for (int i = 0; i < thread_count; ++i) {
    contexts[i].Port = port;
    contexts[i].Index = i;
    atomic_fetch_add(&g_running_workers, 1);
    const int error = pthread_create(&threads[i], NULL, ScannerWorker, &contexts[i]);
    if (error != 0) {
      atomic_fetch_sub(&g_running_workers, 1);
      fprintf(stderr, "scanner: cannot start worker %d: %s\n", i, strerror(error));
      break;
    }
    ++started;
  }

  /* Until a stop signal, or until every worker ended (the filter went away). */
  int exit_code = started > 0 ? 0 : 1;
  while (started > 0 && atomic_load(&g_running_workers) > 0) {
    const int signal_number = WaitForStopSignal(&stop_signals, 200);
    if (signal_number != 0) {
      printf("scanner: %s, stopping\n", signal_number == SIGINT ? "SIGINT" : "SIGTERM");
      break;
    }
  }
  /* Closing the handle ends the workers' waits in FilterGetMessage. */
  atomic_store(&g_stopping, true);
  CloseHandle(port);
  for (int waited = 0; atomic_load(&g_running_workers) > 0 && waited < 300; ++waited) {
    if (WaitForStopSignal(&stop_signals, 10) != 0) break; /* a second signal: do not wait any longer */
  }
  if (atomic_load(&g_running_workers) > 0) {
    fprintf(stderr, "scanner: workers still busy after closing the port; exiting anyway\n");
    fflush(stdout);
    _exit(1);
  }
  for (int i = 0; i < started; ++i) pthread_join(threads[i], NULL);
  printf("scanner: stopped\n");
  return exit_code;
}
