/*
 * MiniSpy: a filter plugin that records file activity the way Microsoft's minispy minifilter does,
 * for its user program (minispy.exe's source, mspyUser.c and mspyLog.c, builds unchanged on fltport:
 * docs/porting.md). fltmgrd loads it by the name that program uses:
 *
 *   fltmgrd --foreground --plugin-dir DIR --load MiniSpy [--attach MiniSpy=/some/dir]
 *
 * It opens the port \MiniSpyPort for one client and keeps a log of the post-operations fanotify
 * reports on the directories it is attached to: creations (IRP_MJ_CREATE), closes after a write
 * (IRP_MJ_CLEANUP), deletions, renames and attribute changes (IRP_MJ_SET_INFORMATION). The client
 * polls with FilterSendMessage(GetMiniSpyLog) and gets as many records as fit its buffer, or
 * STATUS_NO_MORE_ENTRIES (ERROR_NO_MORE_ITEMS), as from Windows' minispy. The log holds at most
 * MINISPY_MAX_RECORDS records: beyond that new ones are dropped and the next one kept carries the
 * "exceeded allowance" flag, which the user program reports.
 *
 * What differs from Windows' minispy: only post-operations are seen (fanotify reports no reads,
 * queries or IRPs of its own), there are no device or file objects (their fields are 0), and the
 * thread id is unknown (0): fanotify reports the process.
 */
#define _POSIX_C_SOURCE 200809L
#include <fltport/fltkernel.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "minispy_records.h"

#define MINISPY_EXPORT __attribute__((visibility("default")))

/* One record's room (the user program's limit too), and how many records the log keeps. */
#define MINISPY_RECORD_SIZE 1024
#define MINISPY_MAX_RECORDS 500
#define MINISPY_MAX_NAME_CHARS ((MINISPY_RECORD_SIZE - sizeof(MINISPY_LOG_RECORD)) / sizeof(WCHAR) - 1)

typedef union _MINISPY_SLOT {
  MINISPY_LOG_RECORD Record;
  unsigned char Bytes[MINISPY_RECORD_SIZE];
} MINISPY_SLOT;

static struct {
  PFLT_FILTER Filter;
  PFLT_PORT ServerPort;
  PFLT_PORT ClientPort;
  pthread_mutex_t Lock; /* the log below */
  MINISPY_SLOT Log[MINISPY_MAX_RECORDS];
  unsigned First, Count; /* a ring: the oldest record and how many there are */
  bool Dropped;          /* records were dropped since the last one kept */
  atomic_uint Sequence;
} Spy;

MINISPY_EXPORT NTSTATUS DriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath);

/* Now, as a FILETIME. */
static LONGLONG MiniSpyNow(void) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return (LONGLONG)now.tv_sec * 10000000 + now.tv_nsec / 100 + 116444736000000000LL;
}

/* Appends UTF-8 text to Name as WCHARs (UTF-32); a byte that starts no valid sequence becomes
 * U+FFFD. Stops at the room left. */
static size_t MiniSpyAppendName(WCHAR* Name, size_t Used, size_t Room, const char* Text) {
  const unsigned char* p = (const unsigned char*)Text;
  while (*p != '\0' && Used < Room) {
    unsigned code = *p, length = 1;
    if (code >= 0xF0 && code <= 0xF4)
      length = 4, code &= 0x07;
    else if (code >= 0xE0)
      length = code <= 0xEF ? 3 : 1, code &= 0x0F;
    else if (code >= 0xC2)
      length = 2, code &= 0x1F;
    unsigned i = 1;
    for (; i < length && (p[i] & 0xC0) == 0x80; ++i) code = (code << 6) | (p[i] & 0x3F);
    if (i < length || (*p >= 0x80 && length == 1)) {
      code = 0xFFFD;
      length = i;
    }
    Name[Used++] = (WCHAR)code;
    p += length;
  }
  return Used;
}

static void MiniSpyLog(PFLT_CALLBACK_DATA Data) {
  PFLTPORT_FILE_EVENT file = Data->FileEvent;
  if (file == NULL) return;
  const LONGLONG now = MiniSpyNow();

  pthread_mutex_lock(&Spy.Lock);
  if (Spy.Count == MINISPY_MAX_RECORDS) {
    Spy.Dropped = true;
    pthread_mutex_unlock(&Spy.Lock);
    return;
  }
  MINISPY_SLOT* slot = &Spy.Log[(Spy.First + Spy.Count) % MINISPY_MAX_RECORDS];
  MINISPY_LOG_RECORD* record = &slot->Record;
  memset(record, 0, sizeof *record);
  record->SequenceNumber = atomic_fetch_add(&Spy.Sequence, 1);
  record->RecordType = MINISPY_RECORD_NORMAL | (Spy.Dropped ? MINISPY_RECORD_FLAG_EXCEEDED_ALLOWANCE : 0);
  Spy.Dropped = false;
  record->Data.OriginatingTime.QuadPart = now;
  record->Data.CompletionTime.QuadPart = now;
  record->Data.ProcessId = file->ProcessId;
  record->Data.Status = STATUS_SUCCESS;
  record->Data.Flags = MINISPY_IRP_OPERATION;
  record->Data.MajorFunction = Data->Iopb->MajorFunction;
  record->Data.MinorFunction = Data->Iopb->MinorFunction;
  if (Data->Iopb->MajorFunction == IRP_MJ_SET_INFORMATION)
    record->Data.Arg1 = (PVOID)(ULONG_PTR)Data->Iopb->Parameters.SetFileInformation.FileInformationClass;
  /* The name: the path; for a rename, "old -> new". */
  size_t used = 0;
  if (file->OldPath != NULL && file->OldPath[0] != '\0') {
    used = MiniSpyAppendName(record->Name, used, MINISPY_MAX_NAME_CHARS, file->OldPath);
    used = MiniSpyAppendName(record->Name, used, MINISPY_MAX_NAME_CHARS, " -> ");
  }
  used = MiniSpyAppendName(record->Name, used, MINISPY_MAX_NAME_CHARS, file->Path != NULL ? file->Path : "");
  record->Name[used] = L'\0';
  const size_t length = sizeof(MINISPY_LOG_RECORD) + (used + 1) * sizeof(WCHAR);
  record->Length = (ULONG)((length + 7) & ~(size_t)7);
  ++Spy.Count;
  pthread_mutex_unlock(&Spy.Lock);
}

static FLT_POSTOP_CALLBACK_STATUS FLTAPI MiniSpyPostOperation(PFLT_CALLBACK_DATA Data,
                                                              PCFLT_RELATED_OBJECTS FltObjects,
                                                              PVOID CompletionContext,
                                                              FLT_POST_OPERATION_FLAGS Flags) {
  (void)FltObjects;
  (void)CompletionContext;
  (void)Flags;
  MiniSpyLog(Data);
  return FLT_POSTOP_FINISHED_PROCESSING;
}

static const FLT_OPERATION_REGISTRATION Callbacks[] = {
    {IRP_MJ_CREATE, 0, NULL, MiniSpyPostOperation, NULL},
    {IRP_MJ_CLEANUP, 0, NULL, MiniSpyPostOperation, NULL},
    {IRP_MJ_SET_INFORMATION, 0, NULL, MiniSpyPostOperation, NULL},
    {IRP_MJ_OPERATION_END, 0, NULL, NULL, NULL},
};

/* ---- the port ---- */

/* Moves as many whole records as fit into the buffer. */
static NTSTATUS MiniSpyGetLog(UCHAR* Buffer, ULONG Size, PULONG Returned) {
  ULONG used = 0;
  pthread_mutex_lock(&Spy.Lock);
  while (Spy.Count > 0) {
    const MINISPY_LOG_RECORD* record = &Spy.Log[Spy.First].Record;
    if (record->Length > Size - used) break;
    memcpy(Buffer + used, record, record->Length);
    used += record->Length;
    Spy.First = (Spy.First + 1) % MINISPY_MAX_RECORDS;
    --Spy.Count;
  }
  const bool empty = Spy.Count == 0;
  pthread_mutex_unlock(&Spy.Lock);
  *Returned = used;
  if (used > 0) return STATUS_SUCCESS;
  return empty ? STATUS_NO_MORE_ENTRIES : STATUS_BUFFER_TOO_SMALL;
}

static NTSTATUS FLTAPI MiniSpyMessage(PVOID PortCookie, PVOID InputBuffer, ULONG InputBufferLength,
                                      PVOID OutputBuffer, ULONG OutputBufferLength,
                                      PULONG ReturnOutputBufferLength) {
  (void)PortCookie;
  *ReturnOutputBufferLength = 0;
  ULONG command;
  if (InputBuffer == NULL || InputBufferLength < sizeof command) return STATUS_INVALID_PARAMETER;
  memcpy(&command, InputBuffer, sizeof command);
  if (OutputBuffer == NULL) return STATUS_INVALID_PARAMETER;
  switch (command) {
    case MINISPY_GET_LOG:
      return MiniSpyGetLog(OutputBuffer, OutputBufferLength, ReturnOutputBufferLength);
    case MINISPY_GET_VERSION: {
      const MINISPY_VERSION version = {MINISPY_VERSION_MAJOR, MINISPY_VERSION_MINOR};
      if (OutputBufferLength < sizeof version) return STATUS_INVALID_PARAMETER;
      memcpy(OutputBuffer, &version, sizeof version);
      *ReturnOutputBufferLength = sizeof version;
      return STATUS_SUCCESS;
    }
    default:
      return STATUS_INVALID_PARAMETER;
  }
}

static NTSTATUS FLTAPI MiniSpyConnect(PFLT_PORT ClientPort, PVOID ServerPortCookie, PVOID ConnectionContext,
                                      ULONG SizeOfContext, PVOID* ConnectionCookie) {
  (void)ServerPortCookie;
  (void)ConnectionContext;
  (void)SizeOfContext;
  Spy.ClientPort = ClientPort; /* MaxConnections is 1 */
  *ConnectionCookie = NULL;
  fprintf(stderr, "MiniSpy filter: client connected\n");
  return STATUS_SUCCESS;
}

static VOID FLTAPI MiniSpyDisconnect(PVOID ConnectionCookie) {
  (void)ConnectionCookie;
  FltCloseClientPort(Spy.Filter, &Spy.ClientPort);
  fprintf(stderr, "MiniSpy filter: client disconnected\n");
}

/* ---- loading and unloading ---- */

static NTSTATUS FLTAPI MiniSpyUnload(FLT_FILTER_UNLOAD_FLAGS Flags) {
  (void)Flags;
  FltCloseCommunicationPort(Spy.ServerPort);
  Spy.ServerPort = NULL;
  FltUnregisterFilter(Spy.Filter); /* waits for the callbacks; the client's calls then fail */
  Spy.Filter = NULL;
  pthread_mutex_destroy(&Spy.Lock);
  fprintf(stderr, "MiniSpy filter: unloaded\n");
  return STATUS_SUCCESS;
}

NTSTATUS DriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath) {
  (void)RegistryPath;
  memset(&Spy, 0, sizeof Spy);
  pthread_mutex_init(&Spy.Lock, NULL);
  atomic_init(&Spy.Sequence, 1);

  FLT_REGISTRATION registration;
  memset(&registration, 0, sizeof registration);
  registration.Size = sizeof registration;
  registration.Version = FLT_REGISTRATION_VERSION;
  registration.OperationRegistration = Callbacks;
  registration.FilterUnloadCallback = MiniSpyUnload;
  NTSTATUS status = FltRegisterFilter(DriverObject, &registration, &Spy.Filter);
  if (!NT_SUCCESS(status)) {
    fprintf(stderr, "MiniSpy filter: FltRegisterFilter failed: 0x%08X\n", (unsigned)status);
    return status;
  }
  PSECURITY_DESCRIPTOR sd = NULL;
  status = FltBuildDefaultSecurityDescriptor(&sd, FLT_PORT_ALL_ACCESS);
  if (NT_SUCCESS(status)) {
    UNICODE_STRING name;
    RtlInitUnicodeString(&name, MINISPY_PORT_NAME);
    OBJECT_ATTRIBUTES attributes;
    InitializeObjectAttributes(&attributes, &name, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL, sd);
    status = FltCreateCommunicationPort(Spy.Filter, &Spy.ServerPort, &attributes, NULL, MiniSpyConnect,
                                        MiniSpyDisconnect, MiniSpyMessage, 1);
    FltFreeSecurityDescriptor(sd);
  }
  if (NT_SUCCESS(status)) status = FltStartFiltering(Spy.Filter);
  if (!NT_SUCCESS(status)) {
    fprintf(stderr, "MiniSpy filter: could not start: 0x%08X\n", (unsigned)status);
    if (Spy.ServerPort != NULL) FltCloseCommunicationPort(Spy.ServerPort);
    Spy.ServerPort = NULL;
    Spy.Filter = NULL; /* the host unregisters a filter whose DriverEntry failed (see scanner.c) */
    return status;
  }
  fprintf(stderr, "MiniSpy filter: loaded, port \\MiniSpyPort open\n");
  return STATUS_SUCCESS;
}
