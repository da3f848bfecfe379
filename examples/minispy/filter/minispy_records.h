/*
 * MiniSpy: the protocol between the MiniSpy filter (minispy_filter.c) and Microsoft's minispy user
 * program (filesys/miniFilter/minispy/user in Windows-driver-samples), which builds unchanged on
 * fltport. Written here from the layout that program reads, so that its records arrive byte for
 * byte where it looks for them; on Linux WCHAR is 4 bytes on both sides.
 *
 *   service -> filter   a command: { MINISPY_COMMAND Command; ULONG Reserved; }, by FilterSendMessage
 *   filter -> service   GetMiniSpyLog: log records one after the other, each Length bytes long (a
 *                       multiple of 8), or STATUS_NO_MORE_ENTRIES when there are none;
 *                       GetMiniSpyVersion: { USHORT Major; USHORT Minor; }
 */
#ifndef FLTPORT_EXAMPLES_MINISPY_RECORDS_H
#define FLTPORT_EXAMPLES_MINISPY_RECORDS_H

#include <fltport/win32.h>

#define MINISPY_PORT_NAME L"\\MiniSpyPort"
#define MINISPY_VERSION_MAJOR 2
#define MINISPY_VERSION_MINOR 0

/* The commands (a 32-bit enum). */
#define MINISPY_GET_LOG 0
#define MINISPY_GET_VERSION 1

typedef struct _MINISPY_COMMAND_MESSAGE {
  ULONG Command;
  ULONG Reserved;
} MINISPY_COMMAND_MESSAGE;

typedef struct _MINISPY_VERSION {
  USHORT Major;
  USHORT Minor;
} MINISPY_VERSION;

/* RecordType: a normal record, and the flag that says records were dropped before this one. */
#define MINISPY_RECORD_NORMAL 0x00000000u
#define MINISPY_RECORD_FLAG_EXCEEDED_ALLOWANCE 0x20000000u

/* Flags: how the operation came (always an IRP-style operation here). */
#define MINISPY_IRP_OPERATION 0x00000001u

/* What one operation looked like. Times are FILETIMEs (100 ns since 1601-01-01 UTC); the object
 * fields are identifiers, here 0 (fanotify has no device or file objects); Arg1 holds the
 * FileInformationClass of an IRP_MJ_SET_INFORMATION. */
typedef struct _MINISPY_RECORD_DATA {
  LARGE_INTEGER OriginatingTime;
  LARGE_INTEGER CompletionTime;
  ULONG_PTR DeviceObject;
  ULONG_PTR FileObject;
  ULONG_PTR Transaction;
  ULONG_PTR ProcessId;
  ULONG_PTR ThreadId;
  ULONG_PTR Information;
  NTSTATUS Status;
  ULONG IrpFlags;
  ULONG Flags;
  UCHAR MajorFunction;
  UCHAR MinorFunction;
  UCHAR Padding[2];
  PVOID Arg1;
  PVOID Arg2;
  PVOID Arg3;
  PVOID Arg4;
  PVOID Arg5;
  LARGE_INTEGER Arg6;
  ULONG EcpCount;
  ULONG KnownEcpMask;
} MINISPY_RECORD_DATA;

/* A record: the header, the data, then the file name, NUL-terminated, padded to a multiple of 8. */
typedef struct _MINISPY_LOG_RECORD {
  ULONG Length;
  ULONG SequenceNumber;
  ULONG RecordType;
  ULONG Reserved;
  MINISPY_RECORD_DATA Data;
  WCHAR Name[];
} MINISPY_LOG_RECORD;

/* The layout the user program reads (x86-64). */
#ifdef __cplusplus
#define MINISPY_STATIC_ASSERT static_assert
#else
#define MINISPY_STATIC_ASSERT _Static_assert
#endif
MINISPY_STATIC_ASSERT(sizeof(MINISPY_RECORD_DATA) == 136, "record data layout");
MINISPY_STATIC_ASSERT(offsetof(MINISPY_RECORD_DATA, Status) == 64, "record data layout");
MINISPY_STATIC_ASSERT(offsetof(MINISPY_RECORD_DATA, MajorFunction) == 76, "record data layout");
MINISPY_STATIC_ASSERT(offsetof(MINISPY_RECORD_DATA, Arg1) == 80, "record data layout");
MINISPY_STATIC_ASSERT(sizeof(MINISPY_LOG_RECORD) == 152, "log record layout");
MINISPY_STATIC_ASSERT(offsetof(MINISPY_LOG_RECORD, Name) == 152, "log record layout");
MINISPY_STATIC_ASSERT(sizeof(MINISPY_COMMAND_MESSAGE) == 8, "command layout");

#endif /* FLTPORT_EXAMPLES_MINISPY_RECORDS_H */
