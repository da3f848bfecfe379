/*
 * fltport: the filter side of Filter Manager communication ports, with the names, types and
 * NTSTATUS values of Windows' fltKernel.h. A filter process registers (FltRegisterFilter), creates
 * a named server port, accepts services' connections in ConnectNotify and sends them messages with
 * FltSendMessage.
 */
#ifndef FLTPORT_FLTKERNEL_H
#define FLTPORT_FLTKERNEL_H

#include <fltport/status.h>
#include <fltport/win32.h>

/* ---- object names and attributes ---- */
typedef struct _UNICODE_STRING {
  USHORT Length;        /* bytes, without a terminator */
  USHORT MaximumLength; /* bytes */
  PWSTR Buffer;
} UNICODE_STRING, *PUNICODE_STRING;
typedef const UNICODE_STRING* PCUNICODE_STRING;

typedef struct _OBJECT_ATTRIBUTES {
  ULONG Length;
  HANDLE RootDirectory;
  PUNICODE_STRING ObjectName;
  ULONG Attributes;
  PVOID SecurityDescriptor;
  PVOID SecurityQualityOfService;
} OBJECT_ATTRIBUTES, *POBJECT_ATTRIBUTES;

#define OBJ_INHERIT 0x00000002L
#define OBJ_CASE_INSENSITIVE 0x00000040L
#define OBJ_KERNEL_HANDLE 0x00000200L

#define InitializeObjectAttributes(p, n, a, r, s) \
  do {                                            \
    (p)->Length = sizeof(OBJECT_ATTRIBUTES);      \
    (p)->RootDirectory = (r);                     \
    (p)->Attributes = (a);                        \
    (p)->ObjectName = (n);                        \
    (p)->SecurityDescriptor = (s);                \
    (p)->SecurityQualityOfService = NULL;         \
  } while (0)

/* ---- filters ---- */
typedef struct _DRIVER_OBJECT DRIVER_OBJECT, *PDRIVER_OBJECT;
typedef struct _FLT_FILTER* PFLT_FILTER;
typedef struct _FLT_PORT* PFLT_PORT;
/* Contexts are not supported: a filter passes NULL. */
typedef struct _FLT_CONTEXT_REGISTRATION FLT_CONTEXT_REGISTRATION;
typedef ULONG FLT_REGISTRATION_FLAGS;
typedef ULONG FLT_FILTER_UNLOAD_FLAGS;
typedef NTSTATUS(FLTAPI* PFLT_FILTER_UNLOAD_CALLBACK)(FLT_FILTER_UNLOAD_FLAGS Flags);

/* ---- file operations (the filter manager on fanotify) ----
 * The Windows shapes, carrying what fanotify reports. Which Linux event each major function stands for:
 *   IRP_MJ_CREATE pre .................................. open (FAN_OPEN_PERM): may be denied
 *   IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION pre ..... open for exec (FAN_OPEN_EXEC_PERM): may be denied
 *   IRP_MJ_READ pre .................................... read (FAN_PRE_ACCESS with the range, or
 * FAN_ACCESS_PERM) IRP_MJ_CLEANUP post ................................ close after write (FAN_CLOSE_WRITE)
 *   IRP_MJ_CREATE post ................................. a file or directory was created (FAN_CREATE)
 *   IRP_MJ_SET_INFORMATION post ........................ deleted / renamed / attributes changed, told by
 *        Iopb->Parameters.SetFileInformation.FileInformationClass (FileDispositionInformation,
 *        FileRenameInformation, FileBasicInformation)
 * A post-operation of IRP_MJ_CREATE is only called for creations; opens are pre-operations. */
#define IRP_MJ_CREATE 0x00
#define IRP_MJ_READ 0x03
#define IRP_MJ_WRITE 0x04
#define IRP_MJ_SET_INFORMATION 0x06
#define IRP_MJ_CLEANUP 0x12
#define IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION ((UCHAR)-1)
#define IRP_MJ_OPERATION_END ((UCHAR)0x80)

#define FileBasicInformation 4
#define FileRenameInformation 10
#define FileDispositionInformation 13

typedef enum _FLT_PREOP_CALLBACK_STATUS {
  FLT_PREOP_SUCCESS_WITH_CALLBACK = 0,
  FLT_PREOP_SUCCESS_NO_CALLBACK = 1,
  FLT_PREOP_PENDING = 2,
  FLT_PREOP_DISALLOW_FASTIO = 3,
  FLT_PREOP_COMPLETE = 4, /* with a failure in Data->IoStatus.Status: the operation is denied */
  FLT_PREOP_SYNCHRONIZE = 5,
  FLT_PREOP_DISALLOW_FSFILTER_IO = 6,
  /* Linux extension, returned by a pre-operation callback or given to FltCompletePendedPreOperation:
   * the filter cannot decide (its service is gone or too slow), and its default verdict answers
   * (fltmgrd's --default NAME=allow|deny), counted and logged as a default, as when its deadline passes. */
  FLT_PREOP_FLTPORT_TAKE_DEFAULT = 0x1000
} FLT_PREOP_CALLBACK_STATUS,
    *PFLT_PREOP_CALLBACK_STATUS;

typedef enum _FLT_POSTOP_CALLBACK_STATUS {
  FLT_POSTOP_FINISHED_PROCESSING = 0,
  FLT_POSTOP_MORE_PROCESSING_REQUIRED = 1,
  FLT_POSTOP_DISALLOW_FSFILTER_IO = 2
} FLT_POSTOP_CALLBACK_STATUS,
    *PFLT_POSTOP_CALLBACK_STATUS;

typedef ULONG FLT_OPERATION_REGISTRATION_FLAGS;
typedef ULONG FLT_POST_OPERATION_FLAGS;

typedef struct _IO_STATUS_BLOCK {
  union {
    NTSTATUS Status;
    PVOID Pointer;
  };
  ULONG_PTR Information;
} IO_STATUS_BLOCK, *PIO_STATUS_BLOCK;

typedef struct _FLT_IO_PARAMETER_BLOCK {
  ULONG IrpFlags;
  UCHAR MajorFunction;
  UCHAR MinorFunction;
  UCHAR OperationFlags;
  UCHAR Reserved;
  union {
    struct {
      ULONG Length;
      ULONG Key;
      LARGE_INTEGER ByteOffset;
    } Read;
    struct {
      ULONG Length;
      ULONG FileInformationClass;
    } SetFileInformation;
  } Parameters;
} FLT_IO_PARAMETER_BLOCK, *PFLT_IO_PARAMETER_BLOCK;

/* Linux extension: what the kernel told about the operation. Strings are UTF-8 paths. */
typedef struct _FLTPORT_FILE_EVENT {
  /* Pre-operations: the file, opened by the kernel (O_NOATIME); reads through it make no events
   * and leave the access time. */
  int FileDescriptor;
  const char* Path;    /* for a rename, the new path */
  const char* OldPath; /* rename only, else "" */
  const char* Executable; /* the process's executable, when FLTFL_REGISTRATION_FLTPORT_WANT_EXECUTABLE */
  ULONG ProcessId;
  ULONG UserId; /* with FLTFL_REGISTRATION_FLTPORT_WANT_CREDENTIALS, else (ULONG)-1 */
  ULONG GroupId;
  BOOLEAN IsDirectory;
  BOOLEAN HasRange;     /* IRP_MJ_READ with the byte range about to be read */
  BOOLEAN CacheVerdict; /* set by the filter on an allow: the verdict stands until the file changes */
  ULONGLONG KernelFlags; /* fanotify's mask bits for the event (FAN_OPEN_PERM, ..., FAN_ONDIR) */
  PVOID FltportReserved; /* the library's own (the event, for FltportReadFile's bound): do not touch */
  /* Added after the fields above, so that a filter built against the older layout keeps working: */
  ULONG FileMode;    /* pre-operations: st_mode of FileDescriptor when the event came, 0 if unknown */
  LONGLONG FileSize; /* and st_size: what the host saw, so that a filter need not fstat again */
} FLTPORT_FILE_EVENT, *PFLTPORT_FILE_EVENT;

typedef struct _FLT_CALLBACK_DATA {
  ULONG Flags;
  PFLT_IO_PARAMETER_BLOCK Iopb;
  IO_STATUS_BLOCK IoStatus; /* a denying pre-operation sets a failure Status and returns FLT_PREOP_COMPLETE */
  PFLTPORT_FILE_EVENT FileEvent;
} FLT_CALLBACK_DATA, *PFLT_CALLBACK_DATA;

typedef struct _FLT_RELATED_OBJECTS {
  USHORT Size;
  USHORT TransactionContext;
  PFLT_FILTER Filter;
  PVOID Volume;
  PVOID Instance;
  PVOID FileObject;
  PVOID Transaction;
} FLT_RELATED_OBJECTS, *PFLT_RELATED_OBJECTS;
typedef const FLT_RELATED_OBJECTS* PCFLT_RELATED_OBJECTS;

typedef FLT_PREOP_CALLBACK_STATUS(FLTAPI* PFLT_PRE_OPERATION_CALLBACK)(PFLT_CALLBACK_DATA Data,
                                                                       PCFLT_RELATED_OBJECTS FltObjects,
                                                                       PVOID* CompletionContext);
typedef FLT_POSTOP_CALLBACK_STATUS(FLTAPI* PFLT_POST_OPERATION_CALLBACK)(PFLT_CALLBACK_DATA Data,
                                                                         PCFLT_RELATED_OBJECTS FltObjects,
                                                                         PVOID CompletionContext,
                                                                         FLT_POST_OPERATION_FLAGS Flags);

typedef struct _FLT_OPERATION_REGISTRATION {
  UCHAR MajorFunction;
  FLT_OPERATION_REGISTRATION_FLAGS Flags;
  PFLT_PRE_OPERATION_CALLBACK PreOperation;
  PFLT_POST_OPERATION_CALLBACK PostOperation;
  PVOID Reserved1;
} FLT_OPERATION_REGISTRATION, *PFLT_OPERATION_REGISTRATION;

/* FLT_REGISTRATION.Flags, Linux extensions: fill FLTPORT_FILE_EVENT.Executable, and UserId and
 * GroupId (otherwise (ULONG)-1). Each costs a look into /proc per event. */
#define FLTFL_REGISTRATION_FLTPORT_WANT_EXECUTABLE 0x80000000
#define FLTFL_REGISTRATION_FLTPORT_WANT_CREDENTIALS 0x40000000
/* FLTPORT_FILE_EVENT.Path may be "" in pre-operations unless another filter of the event wants it:
 * a path costs a readlink of /proc per event (3-8 us here, a fifth of a scanned open). The filter
 * asks for it when it needs it with FltportGetFilePath (FltGetFileNameInformation in spirit). */
#define FLTFL_REGISTRATION_FLTPORT_PATH_ON_REQUEST 0x20000000

#define FLT_REGISTRATION_VERSION_0200 0x0200
#define FLT_REGISTRATION_VERSION_0201 0x0201
#define FLT_REGISTRATION_VERSION_0202 0x0202
#define FLT_REGISTRATION_VERSION_0203 0x0203
#define FLT_REGISTRATION_VERSION FLT_REGISTRATION_VERSION_0203

typedef struct _FLT_REGISTRATION {
  USHORT Size;
  USHORT Version;
  FLT_REGISTRATION_FLAGS Flags;
  const FLT_CONTEXT_REGISTRATION* ContextRegistration;
  const FLT_OPERATION_REGISTRATION* OperationRegistration;
  PFLT_FILTER_UNLOAD_CALLBACK FilterUnloadCallback;
  /* Instance, name and transaction callbacks: not used by fltport yet, kept for layout. */
  PVOID InstanceSetupCallback;
  PVOID InstanceQueryTeardownCallback;
  PVOID InstanceTeardownStartCallback;
  PVOID InstanceTeardownCompleteCallback;
  PVOID GenerateFileNameCallback;
  PVOID NormalizeNameComponentCallback;
  PVOID NormalizeContextCleanupCallback;
  PVOID TransactionNotificationCallback;
  PVOID NormalizeNameComponentExCallback;
  PVOID SectionNotificationCallback;
} FLT_REGISTRATION, *PFLT_REGISTRATION;

/* ---- communication port callbacks ---- */
typedef NTSTATUS(FLTAPI* PFLT_CONNECT_NOTIFY)(PFLT_PORT ClientPort, PVOID ServerPortCookie,
                                              PVOID ConnectionContext, ULONG SizeOfContext,
                                              PVOID* ConnectionPortCookie);
typedef VOID(FLTAPI* PFLT_DISCONNECT_NOTIFY)(PVOID ConnectionCookie);
typedef NTSTATUS(FLTAPI* PFLT_MESSAGE_NOTIFY)(PVOID PortCookie, PVOID InputBuffer, ULONG InputBufferLength,
                                              PVOID OutputBuffer, ULONG OutputBufferLength,
                                              PULONG ReturnOutputBufferLength);

/* ---- port access ---- */
#define FLT_PORT_CONNECT 0x0001
#define STANDARD_RIGHTS_ALL 0x001F0000L
#define FLT_PORT_ALL_ACCESS (FLT_PORT_CONNECT | STANDARD_RIGHTS_ALL)

/* Linux extension: who may connect, checked against the connecting process's credentials.
 * Root is always admitted. Otherwise the port admits a uid or gid listed here, and applies Mode
 * like file permission bits against OwnerUid/OwnerGid, where the write bit grants connecting. */
typedef struct _FLTPORT_PORT_ACCESS {
  ULONG OwnerUid;
  ULONG OwnerGid;
  ULONG Mode;
  const ULONG* AllowedUids;
  ULONG AllowedUidCount;
  const ULONG* AllowedGids;
  ULONG AllowedGidCount;
} FLTPORT_PORT_ACCESS, *PFLTPORT_PORT_ACCESS;

FLTPORT_BEGIN_C

FLTPORT_API VOID NTAPI RtlInitUnicodeString(PUNICODE_STRING DestinationString, PCWSTR SourceString);

/* Registers a filter. A process that only uses communication ports passes DriverObject NULL and a
 * zero-initialised FLT_REGISTRATION with Size and Version set and no operations. */
FLTPORT_API NTSTATUS FLTAPI FltRegisterFilter(PDRIVER_OBJECT Driver, const FLT_REGISTRATION* Registration,
                                              PFLT_FILTER* RetFilter);
/* Closes the filter's server ports and client ports, stops its file operations, and waits for
 * its callbacks to return. */
FLTPORT_API VOID FLTAPI FltUnregisterFilter(PFLT_FILTER Filter);
/* Starts calling the filter's operation callbacks (a filter registered through a host's
 * DriverObject; see fltmgrd). STATUS_INVALID_PARAMETER for a port-only filter. */
FLTPORT_API NTSTATUS FLTAPI FltStartFiltering(PFLT_FILTER Filter);
/* Completes a pre-operation that returned FLT_PREOP_PENDING, from any thread: CallbackStatus
 * FLT_PREOP_COMPLETE with a failure Data->IoStatus.Status denies, FLT_PREOP_FLTPORT_TAKE_DEFAULT
 * takes the filter's default, anything else allows. Too late
 * (the deadline answered already) is harmless. Data must not be used afterwards. */
FLTPORT_API VOID FLTAPI FltCompletePendedPreOperation(PFLT_CALLBACK_DATA Data,
                                                      FLT_PREOP_CALLBACK_STATUS CallbackStatus,
                                                      PVOID Context);

/* A descriptor that admits administrators only: on Linux, uid 0. */
FLTPORT_API NTSTATUS FLTAPI FltBuildDefaultSecurityDescriptor(PSECURITY_DESCRIPTOR* SecurityDescriptor,
                                                              ACCESS_MASK DesiredAccess);
/* Linux extension: a descriptor with the access FLTPORT_PORT_ACCESS describes. */
FLTPORT_API NTSTATUS FLTAPI FltportBuildPortSecurityDescriptor(const FLTPORT_PORT_ACCESS* Access,
                                                               PSECURITY_DESCRIPTOR* SecurityDescriptor);
FLTPORT_API VOID FLTAPI FltFreeSecurityDescriptor(PSECURITY_DESCRIPTOR SecurityDescriptor);

/* Creates the named server port services connect to. ObjectAttributes must carry OBJ_KERNEL_HANDLE
 * and MaxConnections must be > 0 (else STATUS_INVALID_PARAMETER); an existing name gives
 * STATUS_OBJECT_NAME_COLLISION. A NULL SecurityDescriptor admits root only. MessageNotify may be
 * NULL. */
FLTPORT_API NTSTATUS FLTAPI FltCreateCommunicationPort(
    PFLT_FILTER Filter, PFLT_PORT* ServerPort, POBJECT_ATTRIBUTES ObjectAttributes, PVOID ServerPortCookie,
    PFLT_CONNECT_NOTIFY ConnectNotifyCallback, PFLT_DISCONNECT_NOTIFY DisconnectNotifyCallback,
    PFLT_MESSAGE_NOTIFY MessageNotifyCallback, LONG MaxConnections);
/* Stops new connections; connections already made keep working. */
FLTPORT_API VOID FLTAPI FltCloseCommunicationPort(PFLT_PORT ServerPort);
/* Closes one service's connection and sets *ClientPort to NULL; pending FltSendMessage calls on it
 * return STATUS_PORT_DISCONNECTED and the service's calls fail. NULL *ClientPort does nothing. */
FLTPORT_API VOID FLTAPI FltCloseClientPort(PFLT_FILTER Filter, PFLT_PORT* ClientPort);

/* Sends SenderBuffer to the service on *ClientPort. With ReplyBuffer, waits for the reply, whose
 * data length lands in *ReplyLength. Timeout: NULL waits as long as it takes; otherwise 100 ns
 * units, negative relative, positive absolute (since 1601-01-01 UTC), zero does not wait.
 * Returns STATUS_SUCCESS, STATUS_TIMEOUT, STATUS_PORT_DISCONNECTED, STATUS_BUFFER_OVERFLOW (reply
 * longer than *ReplyLength: the first *ReplyLength bytes are delivered), STATUS_THREAD_IS_TERMINATING
 * (the filter is unregistering) or STATUS_INVALID_PARAMETER. */
FLTPORT_API NTSTATUS FLTAPI FltSendMessage(PFLT_FILTER Filter, PFLT_PORT* ClientPort, PVOID SenderBuffer,
                                           ULONG SenderBufferLength, PVOID ReplyBuffer, PULONG ReplyLength,
                                           PLARGE_INTEGER Timeout);

/* Linux extension, FltReadFile in spirit: reads up to Length bytes of File->FileDescriptor at
 * ByteOffset into Buffer; *BytesRead gets how many (fewer only at end of file, 0 there). Why: a
 * stalled device under the file must cost this one event its default verdict at its deadline, never
 * the filter's threads or the host (fapolicyd #237), so the read runs on the library's reader
 * threads and the caller waits at most until just past the event's deadline (a pre-operation: the
 * event has then taken the filter's default) or 2 s (a post-operation, whose File->FileDescriptor
 * the filter may set to a file it opened itself).
 * Returns STATUS_SUCCESS; STATUS_IO_TIMEOUT when the read has not finished by then, or at once when
 * every reader thread it could use is stuck on a stalled device; STATUS_INVALID_PARAMETER (NULL
 * File, Buffer or BytesRead, a directory); STATUS_INVALID_HANDLE (no descriptor); another failure
 * for a failed read. At most 1 MiB per call. */
FLTPORT_API NTSTATUS FLTAPI FltportReadFile(PFLTPORT_FILE_EVENT File, ULONGLONG ByteOffset, PVOID Buffer,
                                            ULONG Length, PULONG BytesRead);

/* Linux extension: the path of the operation's file, for a callback's Data. FileEvent->Path if it
 * has one, else the path of the event's descriptor now, which FileEvent->Path then also points to
 * (FLTFL_REGISTRATION_FLTPORT_PATH_ON_REQUEST). Valid as long as Data; "" when the kernel cannot
 * name the file or Data is not a callback's. Call it from the thread that holds Data. */
FLTPORT_API PCSTR FLTAPI FltportGetFilePath(PFLT_CALLBACK_DATA Data);

FLTPORT_END_C

#endif /* FLTPORT_FLTKERNEL_H */
