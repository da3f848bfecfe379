/*
 * scanuser_classic: the scanner service in the shape of the user program of Microsoft's classic
 * "scanner" minifilter sample, written only against <windows.h> and <fltuser.h> (fltport's Win32
 * compatibility include directory, docs/porting.md) and the C library: one I/O completion port
 * associated with the communication port, THREADS worker threads, REQUESTS overlapped
 * FilterGetMessage calls outstanding per thread. A worker takes any completed request from the
 * port (requests complete in any order), scans the file's first bytes for the word "foul",
 * answers with FilterReplyMessage and issues the request again.
 *
 *   fltport-scanner-service-classic [-r REQUESTS] [-t THREADS]
 *   fltport-scanner-service-classic [REQUESTS [THREADS]]          (the classic sample's arguments)
 *
 * It stops when the filter goes away (the outstanding requests fail) or on SIGINT/SIGTERM (a stop
 * packet per worker through PostQueuedCompletionStatus). See scanuser.c for the synchronous
 * version that the README's demo runs.
 */
#include <windows.h>

#include <fltuser.h>

#include <assert.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCANNER_DEFAULT_REQUEST_COUNT 5
#define SCANNER_DEFAULT_THREAD_COUNT 2
#define SCANNER_MAX_REQUEST_COUNT 64
#define SCANNER_MAX_THREAD_COUNT MAXIMUM_WAIT_OBJECTS /* main waits for all of them at once */
#define SCANNER_CONNECT_TRIES 500                     /* every 10 ms: 5 s for fltmgrd to create the port */

/* ---- What the filter and the service share: the classic sample's scanuk.h, byte for byte (the
 * filter's copy is examples/scanner/filter/scanner.h). ---- */

static const PCWSTR ScannerPortName = L"\\ScannerPort";

#define SCANNER_READ_BUFFER_SIZE 1024

typedef struct _SCANNER_NOTIFICATION {
  ULONG BytesToScan;
  ULONG Reserved; /* keeps Contents quad-word aligned */
  UCHAR Contents[SCANNER_READ_BUFFER_SIZE];
} SCANNER_NOTIFICATION, *PSCANNER_NOTIFICATION;

typedef struct _SCANNER_REPLY {
  BOOLEAN SafeToOpen;
} SCANNER_REPLY, *PSCANNER_REPLY;

/* Linux extension of the scanner filter: on Windows the filter notes the connecting process in
 * ConnectNotify; here ConnectNotify runs in fltmgrd, so the service says who it is, and the filter
 * never scans the service's own opens. A service that sends nothing works too, unrecognised. */
typedef struct _SCANNER_CONNECTION_CONTEXT {
  ULONG ProcessId;
} SCANNER_CONNECTION_CONTEXT;

/* ---- The service's own layouts: the classic sample's scanuser.h. Packed as there, so that
 * sizeof(SCANNER_REPLY_MESSAGE) is exactly the header and the 1-byte reply, the size the filter
 * takes (the rule Microsoft's FilterReplyMessage page gives). ---- */

#pragma pack(push, 1)
typedef struct _SCANNER_MESSAGE {
  FILTER_MESSAGE_HEADER MessageHeader;
  SCANNER_NOTIFICATION Notification;
  /* Not part of the message: each request's OVERLAPPED lives with its buffer, so that
   * CONTAINING_RECORD finds the buffer from the OVERLAPPED a completion returns. */
  OVERLAPPED Ovlp;
} SCANNER_MESSAGE, *PSCANNER_MESSAGE;

typedef struct _SCANNER_REPLY_MESSAGE {
  FILTER_REPLY_HEADER ReplyHeader;
  SCANNER_REPLY Reply;
} SCANNER_REPLY_MESSAGE, *PSCANNER_REPLY_MESSAGE;
#pragma pack(pop)

_Static_assert(sizeof(SCANNER_NOTIFICATION) == 8 + SCANNER_READ_BUFFER_SIZE, "SCANNER_NOTIFICATION layout");
_Static_assert(FIELD_OFFSET(SCANNER_MESSAGE, Notification) == sizeof(FILTER_MESSAGE_HEADER),
               "SCANNER_MESSAGE");
/* Packing keeps every OVERLAPPED of the message array 8-byte aligned: the header and the
 * notification add up to a multiple of 8, and so does the whole message. */
_Static_assert(FIELD_OFFSET(SCANNER_MESSAGE, Ovlp) % 8 == 0 && sizeof(SCANNER_MESSAGE) % 8 == 0, "alignment");
_Static_assert(sizeof(SCANNER_REPLY_MESSAGE) == sizeof(FILTER_REPLY_HEADER) + sizeof(SCANNER_REPLY),
               "reply size");

typedef struct _SCANNER_THREAD_CONTEXT {
  HANDLE Port;
  HANDLE Completion;
} SCANNER_THREAD_CONTEXT, *PSCANNER_THREAD_CONTEXT;

/* Set by SIGINT/SIGTERM; main polls it (a signal handler may not call into the library). */
static volatile sig_atomic_t StopSignal = 0;

static void OnStopSignal(int signalNumber) {
  StopSignal = signalNumber;
}

static const UCHAR FoulString[] = "foul";

/* TRUE when the buffer holds FoulString anywhere. Contents are bytes, not a string. */
static BOOL ScanBuffer(_In_reads_bytes_(BufferSize) const UCHAR* Buffer, _In_ ULONG BufferSize) {
  const ULONG searchStringLength = sizeof(FoulString) - sizeof(UCHAR);
  for (ULONG i = 0; i + searchStringLength <= BufferSize; ++i) {
    if (RtlEqualMemory(Buffer + i, FoulString, searchStringLength)) return TRUE;
  }
  return FALSE;
}

/* The first bytes, printable, for the log line: the message carries no file name. */
static void Preview(const UCHAR* Buffer, ULONG Size, char* Out, size_t OutSize) {
  size_t o = 0;
  for (ULONG i = 0; i < Size && o + 4 < OutSize; ++i) {
    const UCHAR c = Buffer[i];
    Out[o++] = (c >= 0x20 && c < 0x7F && c != '"') ? (char)c : '.';
  }
  if (Size > 0 && o + 4 >= OutSize) {
    Out[o++] = '.';
    Out[o++] = '.';
    Out[o++] = '.';
  }
  Out[o] = '\0';
}

/* Issues (again) the overlapped request whose buffer is Message. */
static HRESULT RequestMessage(HANDLE Port, PSCANNER_MESSAGE Message) {
  ZeroMemory(&Message->Ovlp, sizeof(OVERLAPPED));
  return FilterGetMessage(Port, &Message->MessageHeader, FIELD_OFFSET(SCANNER_MESSAGE, Ovlp), &Message->Ovlp);
}

/* Worker: returns S_OK when asked to stop, the failure that ended it otherwise. */
static DWORD WINAPI ScannerWorker(_In_ LPVOID Parameter) {
  const PSCANNER_THREAD_CONTEXT context = (PSCANNER_THREAD_CONTEXT)Parameter;
  const DWORD threadId = GetCurrentThreadId();
  HRESULT hr = S_OK;

  for (;;) {
    DWORD outSize = 0;
    ULONG_PTR key = 0;
    LPOVERLAPPED pOvlp = NULL;
    const BOOL result = GetQueuedCompletionStatus(context->Completion, &outSize, &key, &pOvlp, INFINITE);

    if (!result) {
      /* With pOvlp set, a request failed (the port went away, or it was cancelled); without it, the
       * completion port itself failed. Either way this worker is done, as in the classic sample. */
      hr = HRESULT_FROM_WIN32(GetLastError());
      break;
    }
    if (pOvlp == NULL) break; /* the stop packet main posts */

    /* Not necessarily the request this thread issued: any of them completes, in any order. */
    const PSCANNER_MESSAGE message = CONTAINING_RECORD(pOvlp, SCANNER_MESSAGE, Ovlp);
    const PSCANNER_NOTIFICATION notification = &message->Notification;
    assert(notification->BytesToScan <= SCANNER_READ_BUFFER_SIZE);
    const ULONG size = min(notification->BytesToScan, (ULONG)SCANNER_READ_BUFFER_SIZE);
    const BOOL foul = ScanBuffer(notification->Contents, size);

    char preview[40];
    Preview(notification->Contents, size, preview, sizeof preview);
    /* InternalHigh is a ULONG_PTR: the classic "%Id" is Microsoft's; C's is %zu on a size_t. */
    printf("scanner: %s  (message %llu, %zu bytes received, %u scanned: \"%s\", thread %u)\n",
           foul ? "FOUL" : "clean", (unsigned long long)message->MessageHeader.MessageId,
           (size_t)pOvlp->InternalHigh, (unsigned)size, preview, (unsigned)threadId);

    if (message->MessageHeader.ReplyLength != 0) { /* 0: the filter wants no answer */
      SCANNER_REPLY_MESSAGE replyMessage;
      ZeroMemory(&replyMessage, sizeof replyMessage);
      replyMessage.ReplyHeader.Status = 0;
      replyMessage.ReplyHeader.MessageId = message->MessageHeader.MessageId;
      /* ScanBuffer is TRUE for foul content, which is not safe to open. */
      replyMessage.Reply.SafeToOpen = !foul;
      hr = FilterReplyMessage(context->Port, &replyMessage.ReplyHeader, (DWORD)sizeof(replyMessage));
      if (hr == ERROR_FLT_NO_WAITER_FOR_REPLY) {
        /* The filter stopped waiting (its timeout): not a reason to stop serving. */
        printf("scanner: message %llu answered too late\n",
               (unsigned long long)message->MessageHeader.MessageId);
      } else if (FAILED(hr)) {
        break;
      }
    }

    hr = RequestMessage(context->Port, message);
    if (hr != HRESULT_FROM_WIN32(ERROR_IO_PENDING)) break;
    hr = S_OK;
  }

  if (hr == HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE)) {
    printf("scanner: thread %u: port is disconnected, probably due to scanner filter unloading\n",
           (unsigned)threadId);
  } else if (hr == HRESULT_FROM_WIN32(ERROR_OPERATION_ABORTED)) {
    printf("scanner: thread %u: requests cancelled\n", (unsigned)threadId);
  } else if (FAILED(hr)) {
    printf("scanner: thread %u: unexpected error 0x%08X\n", (unsigned)threadId, (unsigned)hr);
  } else {
    printf("scanner: thread %u: stop requested\n", (unsigned)threadId);
  }
  return (DWORD)hr;
}

static void Usage(const char* program) {
  fprintf(stderr,
          "Connects to the scanner filter and scans buffers\n"
          "usage: %s [-r REQUESTS] [-t THREADS]   (or: %s [REQUESTS [THREADS]])\n"
          "  REQUESTS  overlapped requests per thread, 1..%d (default %d)\n"
          "  THREADS   worker threads, 1..%d (default %d)\n",
          program, program, SCANNER_MAX_REQUEST_COUNT, SCANNER_DEFAULT_REQUEST_COUNT,
          SCANNER_MAX_THREAD_COUNT, SCANNER_DEFAULT_THREAD_COUNT);
}

static BOOL ParseCount(const char* text, long maximum, DWORD* value) {
  char* end = NULL;
  const long parsed = strtol(text, &end, 10);
  if (end == text || *end != '\0' || parsed < 1 || parsed > maximum) return FALSE;
  *value = (DWORD)parsed;
  return TRUE;
}

int _cdecl main(_In_ int argc, _In_reads_(argc) char* argv[]) {
  DWORD requestCount = SCANNER_DEFAULT_REQUEST_COUNT;
  DWORD threadCount = SCANNER_DEFAULT_THREAD_COUNT;
  int positional = 0;
  for (int i = 1; i < argc; ++i) {
    BOOL ok;
    if (strcmp(argv[i], "-r") == 0 && i + 1 < argc) {
      ok = ParseCount(argv[++i], SCANNER_MAX_REQUEST_COUNT, &requestCount);
    } else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
      ok = ParseCount(argv[++i], SCANNER_MAX_THREAD_COUNT, &threadCount);
    } else if (positional == 0) {
      ok = ParseCount(argv[i], SCANNER_MAX_REQUEST_COUNT, &requestCount);
      ++positional;
    } else if (positional == 1) {
      ok = ParseCount(argv[i], SCANNER_MAX_THREAD_COUNT, &threadCount);
      ++positional;
    } else {
      ok = FALSE;
    }
    if (!ok) {
      Usage(argv[0]);
      return 1;
    }
  }
  setvbuf(stdout, NULL, _IOLBF, 0); /* one line at a time, also into a log file */
  signal(SIGINT, OnStopSignal);
  signal(SIGTERM, OnStopSignal);

  /* Connect; fltmgrd may still be creating the port. */
  printf("scanner: connecting to the filter ...\n");
  SCANNER_CONNECTION_CONTEXT connectionContext = {GetCurrentProcessId()};
  HANDLE port = INVALID_HANDLE_VALUE;
  HRESULT hr = HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND);
  for (int attempt = 0; attempt < SCANNER_CONNECT_TRIES && !StopSignal; ++attempt) {
    hr = FilterConnectCommunicationPort(ScannerPortName, 0, &connectionContext, sizeof connectionContext,
                                        NULL, &port);
    if (hr != HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)) break;
    Sleep(10);
  }
  if (StopSignal) {
    printf("scanner: stopped before connecting\n");
    return 0;
  }
  if (IS_ERROR(hr)) {
    printf("ERROR: connecting to filter port: 0x%08X%s\n", (unsigned)hr,
           hr == E_ACCESSDENIED ? " (the port admits root only)" : "");
    return 2;
  }

  /* One completion port for the communication port: every request's completion is queued there. */
  HANDLE completion = CreateIoCompletionPort(port, NULL, 0, threadCount);
  if (completion == NULL) {
    printf("ERROR: creating completion port: %u\n", (unsigned)GetLastError());
    CloseHandle(port);
    return 3;
  }

  SCANNER_THREAD_CONTEXT context;
  context.Port = port;
  context.Completion = completion;

  /* The classic sample allocates with calloc; the process heap serves as well. */
  const PSCANNER_MESSAGE messages = (PSCANNER_MESSAGE)HeapAlloc(
      GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof(SCANNER_MESSAGE) * threadCount * requestCount);
  HANDLE threads[SCANNER_MAX_THREAD_COUNT] = {NULL};
  DWORD started = 0;
  int exitCode = 0;
  if (messages == NULL) {
    printf("ERROR: out of memory\n");
    exitCode = 4;
  }

  for (DWORD i = 0; i < threadCount && messages != NULL; ++i) {
    DWORD threadId = 0;
    threads[i] = CreateThread(NULL, 0, ScannerWorker, &context, 0, &threadId);
    if (threads[i] == NULL) {
      printf("ERROR: couldn't create thread: %u\n", (unsigned)GetLastError());
      exitCode = 5;
      break;
    }
    ++started;
    for (DWORD j = 0; j < requestCount; ++j) {
      hr = RequestMessage(port, &messages[i * requestCount + j]);
      if (hr != HRESULT_FROM_WIN32(ERROR_IO_PENDING)) {
        printf("ERROR: FilterGetMessage: 0x%08X\n", (unsigned)hr);
        exitCode = 6;
        break;
      }
    }
    if (exitCode != 0) break;
  }
  if (exitCode == 0) {
    printf("scanner: connected to \\ScannerPort, %u thread%s x %u request%s\n", (unsigned)threadCount,
           threadCount == 1 ? "" : "s", (unsigned)requestCount, requestCount == 1 ? "" : "s");
  }

  /* Until every worker ended (the filter went away) or a stop is asked for (or setting up failed). */
  DWORD wait = started > 0 ? WAIT_TIMEOUT : WAIT_OBJECT_0;
  while (wait == WAIT_TIMEOUT && !StopSignal && exitCode == 0) {
    wait = WaitForMultipleObjects(started, threads, TRUE, 200);
  }
  if (wait == WAIT_FAILED) {
    printf("ERROR: waiting for the workers: %u\n", (unsigned)GetLastError());
    exitCode = 7;
  }
  if (wait != WAIT_OBJECT_0 && started > 0) {
    if (StopSignal == SIGINT || StopSignal == SIGTERM) {
      printf("scanner: %s, stopping\n", StopSignal == SIGINT ? "SIGINT" : "SIGTERM");
    }
    /* A stop packet per worker; a worker busy with a message finishes it first. */
    for (DWORD i = 0; i < started; ++i) PostQueuedCompletionStatus(completion, 0, 0, NULL);
    if (WaitForMultipleObjects(started, threads, TRUE, 5000) != WAIT_OBJECT_0) {
      printf("ERROR: workers still busy after 5 s; exiting anyway\n");
      fflush(stdout);
      ExitProcess(1);
    }
  }

  /* Closing the port completes the requests still outstanding (ERROR_OPERATION_ABORTED): after it
   * returns nothing writes to the buffers any more, and they can be freed. */
  CloseHandle(port);
  CloseHandle(completion);
  for (DWORD i = 0; i < started; ++i) CloseHandle(threads[i]);
  HeapFree(GetProcessHeap(), 0, messages);
  printf("scanner: stopped\n");
  return exitCode;
}
