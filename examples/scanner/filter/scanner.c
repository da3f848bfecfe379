/*
 * scanner: an on-access scanner filter, in the shape of Microsoft's classic "scanner" minifilter
 * sample, loaded by fltmgrd as a plugin (fltport-filter-scanner.so):
 *
 *   fltmgrd --foreground --plugin-dir DIR --load scanner --attach scanner=/some/dir
 *
 * DriverEntry registers an open pre-operation (IRP_MJ_CREATE) and a close-after-write
 * post-operation (IRP_MJ_CLEANUP), creates the port \ScannerPort for one user-mode service and
 * starts filtering. On every open of a regular file it sends the file's first 1024 bytes to the
 * service and denies the open when the service answers that they are unsafe. With no service
 * connected the open is allowed (the classic sample's choice: a scanner that is not running must
 * not lock the machine up). When the service was asked and gives no answer (it died, or stalled past
 * the send's timeout), the filter's default verdict answers, as at the deadline: fltmgrd's
 * --default scanner=allow|deny (FLT_PREOP_FLTPORT_TAKE_DEFAULT); so does an open sent in the few
 * milliseconds between the service's death and this filter's DisconnectNotify. After a file was
 * written and closed it is scanned again and the finding is logged: a close cannot be refused.
 *
 * Linux notes: the open arrives as a fanotify permission event; Data->FileEvent->FileDescriptor is
 * the file opened by the kernel for us, and reading through it makes no new event. A clean verdict
 * sets Data->FileEvent->CacheVerdict: the next opens of that file cost nothing until it changes.
 */
#define _POSIX_C_SOURCE 200809L
#include <fltport/fltkernel.h>

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scanner.h"

/* How long a scan may wait for the service. fltmgrd's per-filter deadline (--deadline-ms) answers
 * the opening process anyway if that is shorter; this bounds how long a callback holds a worker. */
#define SCANNER_SEND_TIMEOUT_MS 2000

/* The plugin's one exported symbol: the default visibility of the build is hidden. */
#define SCANNER_EXPORT __attribute__((visibility("default")))

typedef struct _SCANNER_DATA {
  PDRIVER_OBJECT DriverObject;
  PFLT_FILTER Filter;
  PFLT_PORT ServerPort;
  /* The connected service. Written by ConnectNotify before Connected is set; cleared by
   * FltCloseClientPort, which FltSendMessage synchronises with (it takes the port by address). */
  PFLT_PORT ClientPort;
  atomic_bool Connected;
  atomic_uint UserProcessId; /* the service's pid, 0 when unknown */
} SCANNER_DATA;

static SCANNER_DATA ScannerData;

SCANNER_EXPORT NTSTATUS DriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath);
static NTSTATUS FLTAPI ScannerUnload(FLT_FILTER_UNLOAD_FLAGS Flags);
static FLT_PREOP_CALLBACK_STATUS FLTAPI ScannerPreCreate(PFLT_CALLBACK_DATA Data, PCFLT_RELATED_OBJECTS FltObjects,
                                                        PVOID* CompletionContext);
static FLT_POSTOP_CALLBACK_STATUS FLTAPI ScannerPostCleanup(PFLT_CALLBACK_DATA Data,
                                                           PCFLT_RELATED_OBJECTS FltObjects,
                                                           PVOID CompletionContext, FLT_POST_OPERATION_FLAGS Flags);

static const FLT_OPERATION_REGISTRATION Callbacks[] = {
    {IRP_MJ_CREATE, 0, ScannerPreCreate, NULL, NULL},
    {IRP_MJ_CLEANUP, 0, NULL, ScannerPostCleanup, NULL},
    {IRP_MJ_OPERATION_END, 0, NULL, NULL, NULL},
};

/* ---- the port ---- */

static NTSTATUS FLTAPI ScannerPortConnect(PFLT_PORT ClientPort, PVOID ServerPortCookie, PVOID ConnectionContext,
                                          ULONG SizeOfContext, PVOID* ConnectionCookie) {
  (void)ServerPortCookie;
  SCANNER_CONNECTION_CONTEXT context = {0};
  if (ConnectionContext != NULL && SizeOfContext >= sizeof context) memcpy(&context, ConnectionContext, sizeof context);
  /* MaxConnections is 1: there is no other client port to overwrite. */
  ScannerData.ClientPort = ClientPort;
  atomic_store(&ScannerData.UserProcessId, context.ProcessId);
  atomic_store(&ScannerData.Connected, true);
  *ConnectionCookie = NULL;
  fprintf(stderr, "scanner filter: service connected (pid %u)\n", (unsigned)context.ProcessId);
  return STATUS_SUCCESS;
}

static VOID FLTAPI ScannerPortDisconnect(PVOID ConnectionCookie) {
  (void)ConnectionCookie;
  atomic_store(&ScannerData.Connected, false);
  atomic_store(&ScannerData.UserProcessId, 0);
  /* Pending FltSendMessage calls on it return STATUS_PORT_DISCONNECTED: their opens take the default. */
  FltCloseClientPort(ScannerData.Filter, &ScannerData.ClientPort);
  fprintf(stderr, "scanner filter: service disconnected\n");
}

/* ---- scanning ---- */

/* Reads the first bytes of the file (File->FileDescriptor) and asks the service about them.
 * STATUS_SUCCESS with *SafeToOpen set, or the reason there is no verdict (then the open takes the
 * filter's default). The read goes through FltportReadFile, not pread: on a stalled device
 * (a failing disk, a hung network file system) it gives up at the event's deadline with
 * STATUS_IO_TIMEOUT, so that open takes the filter's default and this thread is free again. */
static NTSTATUS ScannerScanFile(PFLTPORT_FILE_EVENT File, BOOLEAN* SafeToOpen, ULONG* BytesScanned) {
  *SafeToOpen = TRUE;
  *BytesScanned = 0;
  if (!atomic_load(&ScannerData.Connected)) return STATUS_PORT_DISCONNECTED;

  SCANNER_NOTIFICATION notification;
  memset(&notification, 0, sizeof notification);
  ULONG have = 0;
  const NTSTATUS read = FltportReadFile(File, 0, notification.Contents, sizeof notification.Contents, &have);
  if (read != STATUS_SUCCESS) return read;
  notification.BytesToScan = have;
  *BytesScanned = notification.BytesToScan;

  SCANNER_REPLY reply = {TRUE};
  ULONG reply_length = sizeof reply;
  LARGE_INTEGER timeout;
  timeout.QuadPart = -(LONGLONG)SCANNER_SEND_TIMEOUT_MS * 10 * 1000; /* relative, 100 ns units */
  const NTSTATUS status = FltSendMessage(ScannerData.Filter, &ScannerData.ClientPort, &notification,
                                         sizeof notification, &reply, &reply_length, &timeout);
  /* Not NT_SUCCESS: STATUS_TIMEOUT is a success code. Only a delivered reply is a verdict. */
  if (status != STATUS_SUCCESS) return status;
  if (reply_length < sizeof reply) return STATUS_INVALID_BUFFER_SIZE;
  *SafeToOpen = reply.SafeToOpen;
  return STATUS_SUCCESS;
}

static const char* ScannerReason(NTSTATUS status) {
  switch (status) {
    case STATUS_TIMEOUT:
      return "the service did not answer in time";
    case STATUS_IO_TIMEOUT:
      return "the file could not be read in time (a stalled device?)";
    case STATUS_PORT_DISCONNECTED:
      return "the service disconnected";
    case STATUS_THREAD_IS_TERMINATING:
      return "the filter is unloading";
    case STATUS_BUFFER_OVERFLOW:
    case STATUS_INVALID_BUFFER_SIZE:
      return "the reply has the wrong size";
    default:
      return "the scan failed";
  }
}

static FLT_PREOP_CALLBACK_STATUS FLTAPI ScannerPreCreate(PFLT_CALLBACK_DATA Data, PCFLT_RELATED_OBJECTS FltObjects,
                                                        PVOID* CompletionContext) {
  (void)FltObjects;
  (void)CompletionContext;
  PFLTPORT_FILE_EVENT file = Data->FileEvent;
  if (file == NULL || file->IsDirectory || file->FileDescriptor < 0) return FLT_PREOP_SUCCESS_NO_CALLBACK;
  /* No service: nothing to ask (and nothing cached, so that a service that connects later sees it). */
  if (!atomic_load(&ScannerData.Connected)) return FLT_PREOP_SUCCESS_NO_CALLBACK;
  /* The service's own opens are never scanned: it would wait on itself. */
  const unsigned service = atomic_load(&ScannerData.UserProcessId);
  if (service != 0 && file->ProcessId == service) return FLT_PREOP_SUCCESS_NO_CALLBACK;
  mode_t mode = file->FileMode; /* the host's fstat of the event's file; 0 when it had none */
  struct stat info;
  if (mode == 0 && fstat(file->FileDescriptor, &info) == 0) mode = info.st_mode;
  if (!S_ISREG(mode)) return FLT_PREOP_SUCCESS_NO_CALLBACK;

  BOOLEAN safe = TRUE;
  ULONG scanned = 0;
  const NTSTATUS status = ScannerScanFile(file, &safe, &scanned);
  if (status != STATUS_SUCCESS) {
    /* Asked and not answered (the service died or stalled, the file could not be read): the policy
     * decides (fltmgrd --default scanner=allow|deny), as at the deadline, and it counts as a default. */
    fprintf(stderr,
            "scanner filter: open of %s by pid %u not scanned: %s (0x%08X); the default verdict answers\n",
            FltportGetFilePath(Data), (unsigned)file->ProcessId, ScannerReason(status), (unsigned)status);
    return FLT_PREOP_FLTPORT_TAKE_DEFAULT;
  }
  if (!safe) {
    fprintf(stderr, "scanner filter: open of %s by pid %u DENIED: the service found foul content\n",
            FltportGetFilePath(Data), (unsigned)file->ProcessId);
    Data->IoStatus.Status = STATUS_ACCESS_DENIED;
    Data->IoStatus.Information = 0;
    return FLT_PREOP_COMPLETE;
  }
  /* Clean: let the verdict stand until the file changes. Not for an empty file: it is almost
   * always one just created and about to be written, and caching it buys nothing. */
  if (scanned > 0) file->CacheVerdict = TRUE;
  return FLT_PREOP_SUCCESS_NO_CALLBACK;
}

static FLT_POSTOP_CALLBACK_STATUS FLTAPI ScannerPostCleanup(PFLT_CALLBACK_DATA Data,
                                                           PCFLT_RELATED_OBJECTS FltObjects,
                                                           PVOID CompletionContext, FLT_POST_OPERATION_FLAGS Flags) {
  (void)FltObjects;
  (void)CompletionContext;
  (void)Flags;
  PFLTPORT_FILE_EVENT file = Data->FileEvent;
  if (file == NULL || file->IsDirectory || !atomic_load(&ScannerData.Connected))
    return FLT_POSTOP_FINISHED_PROCESSING;
  const unsigned service = atomic_load(&ScannerData.UserProcessId);
  if (service != 0 && file->ProcessId == service) return FLT_POSTOP_FINISHED_PROCESSING;
  /* A notification carries no file descriptor: open the file by its path. fltmgrd's own accesses
   * make no events for any filter. */
  int fd = file->FileDescriptor;
  const int own = fd < 0;
  if (own) fd = open(file->Path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return FLT_POSTOP_FINISHED_PROCESSING; /* gone already (deleted or renamed) */
  struct stat info;
  if (fstat(fd, &info) == 0 && S_ISREG(info.st_mode)) {
    BOOLEAN safe = TRUE;
    ULONG scanned = 0;
    file->FileDescriptor = fd; /* FltportReadFile reads the descriptor the event carries */
    const NTSTATUS status = ScannerScanFile(file, &safe, &scanned);
    if (own) file->FileDescriptor = -1;
    if (status != STATUS_SUCCESS) {
      fprintf(stderr, "scanner filter: %s written by pid %u not scanned: %s (0x%08X)\n", file->Path,
              (unsigned)file->ProcessId, ScannerReason(status), (unsigned)status);
    } else if (!safe) {
      /* The cached verdict, if any, went with the write; the next open is scanned and denied. */
      fprintf(stderr, "scanner filter: %s written by pid %u now holds foul content; its next open will be denied\n",
              file->Path, (unsigned)file->ProcessId);
    } else {
      fprintf(stderr, "scanner filter: %s written by pid %u, %u bytes scanned, clean\n", file->Path,
              (unsigned)file->ProcessId, (unsigned)scanned);
    }
  }
  if (own) close(fd);
  return FLT_POSTOP_FINISHED_PROCESSING;
}

/* ---- loading and unloading ---- */

static NTSTATUS FLTAPI ScannerUnload(FLT_FILTER_UNLOAD_FLAGS Flags) {
  (void)Flags;
  FltCloseCommunicationPort(ScannerData.ServerPort);
  ScannerData.ServerPort = NULL;
  /* Stops the callbacks and waits for them, closes the service's connection (DisconnectNotify
   * runs) and frees the filter. */
  FltUnregisterFilter(ScannerData.Filter);
  ScannerData.Filter = NULL;
  fprintf(stderr, "scanner filter: unloaded\n");
  return STATUS_SUCCESS;
}

NTSTATUS DriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath) {
  (void)RegistryPath;
  memset(&ScannerData, 0, sizeof ScannerData);
  atomic_init(&ScannerData.Connected, false);
  atomic_init(&ScannerData.UserProcessId, 0);
  ScannerData.DriverObject = DriverObject;

  FLT_REGISTRATION registration;
  memset(&registration, 0, sizeof registration);
  registration.Size = sizeof registration;
  registration.Version = FLT_REGISTRATION_VERSION;
  /* The path is for the log lines only: asked for when one is written (FltportGetFilePath). */
  registration.Flags = FLTFL_REGISTRATION_FLTPORT_PATH_ON_REQUEST;
  registration.OperationRegistration = Callbacks;
  registration.FilterUnloadCallback = ScannerUnload;
  NTSTATUS status = FltRegisterFilter(DriverObject, &registration, &ScannerData.Filter);
  if (!NT_SUCCESS(status)) {
    fprintf(stderr, "scanner filter: FltRegisterFilter failed: 0x%08X\n", (unsigned)status);
    return status;
  }

  PSECURITY_DESCRIPTOR sd = NULL;
  status = FltBuildDefaultSecurityDescriptor(&sd, FLT_PORT_ALL_ACCESS);
  if (NT_SUCCESS(status)) {
    UNICODE_STRING name;
    RtlInitUnicodeString(&name, SCANNER_PORT_NAME);
    OBJECT_ATTRIBUTES attributes;
    InitializeObjectAttributes(&attributes, &name, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL, sd);
    status = FltCreateCommunicationPort(ScannerData.Filter, &ScannerData.ServerPort, &attributes, NULL,
                                        ScannerPortConnect, ScannerPortDisconnect, NULL, 1);
    FltFreeSecurityDescriptor(sd);
  }
  if (NT_SUCCESS(status)) status = FltStartFiltering(ScannerData.Filter);
  if (!NT_SUCCESS(status)) {
    fprintf(stderr, "scanner filter: could not start: 0x%08X\n", (unsigned)status);
    if (ScannerData.ServerPort != NULL) FltCloseCommunicationPort(ScannerData.ServerPort);
    ScannerData.ServerPort = NULL;
    /* A Windows filter calls FltUnregisterFilter here itself. fltport's host unregisters the filter
     * its DriverObject registered when DriverEntry fails (filter_host.cpp), and would do it a second
     * time on a freed filter: leave it to the host. */
    ScannerData.Filter = NULL;
    return status;
  }
  fprintf(stderr, "scanner filter: loaded, port \\ScannerPort open, filtering\n");
  return STATUS_SUCCESS;
}
