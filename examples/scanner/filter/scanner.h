/*
 * scanner: what the on-access scanner filter and its user-mode service share — the port name and
 * the two message layouts of Microsoft's classic "scanner" minifilter sample, byte for byte:
 *
 *   filter -> service   SCANNER_NOTIFICATION { ULONG BytesToScan; ULONG Reserved; UCHAR Contents[1024]; }
 *   service -> filter   SCANNER_REPLY        { UCHAR SafeToOpen; }
 *
 * so that a service written for Windows reads and answers them unchanged. On the wire the service
 * sees a FILTER_MESSAGE_HEADER in front of the notification and puts a FILTER_REPLY_HEADER in
 * front of its reply (see scanuser.c).
 */
#ifndef FLTPORT_EXAMPLES_SCANNER_H
#define FLTPORT_EXAMPLES_SCANNER_H

#include <fltport/win32.h>

#define SCANNER_PORT_NAME L"\\ScannerPort"
#define SCANNER_READ_BUFFER_SIZE 1024

typedef struct _SCANNER_NOTIFICATION {
  ULONG BytesToScan; /* how many of Contents are the file's first bytes */
  ULONG Reserved;    /* keeps Contents quad-word aligned, as in the classic layout */
  UCHAR Contents[SCANNER_READ_BUFFER_SIZE];
} SCANNER_NOTIFICATION, *PSCANNER_NOTIFICATION;

typedef struct _SCANNER_REPLY {
  UCHAR SafeToOpen; /* FALSE: the filter denies the open */
} SCANNER_REPLY, *PSCANNER_REPLY;

/* Linux extension: the connection context the service hands FilterConnectCommunicationPort.
 * On Windows ConnectNotify runs in the connecting process and the filter records it with
 * PsGetCurrentProcess; here it runs in fltmgrd, so the service says who it is. The filter never
 * scans the service's own opens. A service that sends no context is simply not recognised. */
typedef struct _SCANNER_CONNECTION_CONTEXT {
  ULONG ProcessId;
} SCANNER_CONNECTION_CONTEXT, *PSCANNER_CONNECTION_CONTEXT;

#ifdef __cplusplus
static_assert(sizeof(SCANNER_NOTIFICATION) == 8 + SCANNER_READ_BUFFER_SIZE, "SCANNER_NOTIFICATION layout");
static_assert(offsetof(SCANNER_NOTIFICATION, Contents) == 8, "SCANNER_NOTIFICATION layout");
static_assert(sizeof(SCANNER_REPLY) == 1, "SCANNER_REPLY layout");
#else
_Static_assert(sizeof(SCANNER_NOTIFICATION) == 8 + SCANNER_READ_BUFFER_SIZE, "SCANNER_NOTIFICATION layout");
_Static_assert(offsetof(SCANNER_NOTIFICATION, Contents) == 8, "SCANNER_NOTIFICATION layout");
_Static_assert(sizeof(SCANNER_REPLY) == 1, "SCANNER_REPLY layout");
#endif

#endif /* FLTPORT_EXAMPLES_SCANNER_H */
