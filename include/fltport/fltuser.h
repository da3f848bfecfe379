/*
 * fltport: the user-mode side of Filter Manager communication ports, with the names, types and
 * return values of Windows' fltuser.h. A service connects to a port a filter created, takes the
 * filter's messages, replies to them, and sends its own messages to the filter.
 */
#ifndef FLTPORT_FLTUSER_H
#define FLTPORT_FLTUSER_H

#include <fltport/status.h>
#include <fltport/win32.h>

/* dwOptions of FilterConnectCommunicationPort: the handle is used synchronously only. */
#define FLT_PORT_FLAG_SYNC_HANDLE 0x00000001

typedef struct _FILTER_MESSAGE_HEADER {
  /* Bytes of the reply the filter waits for, FILTER_REPLY_HEADER included; 0 = no reply wanted. */
  ULONG ReplyLength;
  ULONGLONG MessageId;
} FILTER_MESSAGE_HEADER, *PFILTER_MESSAGE_HEADER;

typedef struct _FILTER_REPLY_HEADER {
  NTSTATUS Status;
  ULONGLONG MessageId;
} FILTER_REPLY_HEADER, *PFILTER_REPLY_HEADER;

#ifdef __cplusplus
static_assert(sizeof(FILTER_MESSAGE_HEADER) == 16, "FILTER_MESSAGE_HEADER layout");
static_assert(offsetof(FILTER_MESSAGE_HEADER, MessageId) == 8, "FILTER_MESSAGE_HEADER layout");
static_assert(sizeof(FILTER_REPLY_HEADER) == 16, "FILTER_REPLY_HEADER layout");
static_assert(offsetof(FILTER_REPLY_HEADER, MessageId) == 8, "FILTER_REPLY_HEADER layout");
#else
_Static_assert(sizeof(FILTER_MESSAGE_HEADER) == 16, "FILTER_MESSAGE_HEADER layout");
_Static_assert(offsetof(FILTER_MESSAGE_HEADER, MessageId) == 8, "FILTER_MESSAGE_HEADER layout");
_Static_assert(sizeof(FILTER_REPLY_HEADER) == 16, "FILTER_REPLY_HEADER layout");
_Static_assert(offsetof(FILTER_REPLY_HEADER, MessageId) == 8, "FILTER_REPLY_HEADER layout");
#endif

FLTPORT_BEGIN_C

/* Connects to the port the filter created under lpPortName (e.g. L"\\ScannerPort"), handing
 * lpContext (up to 65535 bytes) to the filter's ConnectNotify. The handle is closed with
 * CloseHandle. Unknown name: HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND); refused by the port's
 * security: E_ACCESSDENIED; too many connections: HRESULT_FROM_WIN32(ERROR_CONNECTION_COUNT_LIMIT);
 * refused by ConnectNotify: its status, converted by FltportHResultFromNtStatus. The filter process
 * ended, or dropped the connection unanswered (too many connects in progress at once), during the
 * connect: HRESULT_FROM_WIN32(ERROR_NO_SYSTEM_RESOURCES) or HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE)
 * (ours: Windows filters cannot end during a connect); trying again later may succeed. */
FLTPORT_API HRESULT WINAPI FilterConnectCommunicationPort(LPCWSTR lpPortName, DWORD dwOptions,
                                                          LPCVOID lpContext, WORD wSizeOfContext,
                                                          LPSECURITY_ATTRIBUTES lpSecurityAttributes,
                                                          HANDLE* hPort);

/* Runs the port's MessageNotify in the filter with these buffers and returns its status as an
 * HRESULT; *lpBytesReturned receives the output length it set (never more than dwOutBufferSize). */
FLTPORT_API HRESULT WINAPI FilterSendMessage(HANDLE hPort, LPVOID lpInBuffer, DWORD dwInBufferSize,
                                             LPVOID lpOutBuffer, DWORD dwOutBufferSize,
                                             LPDWORD lpBytesReturned);

/* Takes the oldest message the filter queued on this connection, waiting for one if none is. The
 * buffer starts with a FILTER_MESSAGE_HEADER. A message longer than the buffer is cut to it and the
 * call returns HRESULT_FROM_WIN32(ERROR_MORE_DATA); the filter still waits for the reply.
 * With lpOverlapped (on a handle opened without FLT_PORT_FLAG_SYNC_HANDLE) the call queues the
 * request and returns HRESULT_FROM_WIN32(ERROR_IO_PENDING); requests take messages in the order
 * they were made. Completion sets Internal (STATUS_SUCCESS, STATUS_BUFFER_OVERFLOW for a cut
 * message, STATUS_CANCELLED after CancelIo/CancelIoEx/CloseHandle, STATUS_PORT_DISCONNECTED when
 * the filter went away) and InternalHigh (bytes written, header included), then sets hEvent and
 * queues a packet on the completion port associated with the handle. On a synchronous handle
 * lpOverlapped is ignored, as Windows ignores it there. */
FLTPORT_API HRESULT WINAPI FilterGetMessage(HANDLE hPort, PFILTER_MESSAGE_HEADER lpMessageBuffer,
                                            DWORD dwMessageBufferSize, LPOVERLAPPED lpOverlapped);

/* Answers the message MessageId names: the reply data are the dwReplyBufferSize - 16 bytes after the
 * header. No waiter for that id: ERROR_FLT_NO_WAITER_FOR_REPLY; a buffer shorter than the header:
 * E_INVALIDARG. */
FLTPORT_API HRESULT WINAPI FilterReplyMessage(HANDLE hPort, PFILTER_REPLY_HEADER lpReplyBuffer,
                                              DWORD dwReplyBufferSize);

FLTPORT_END_C

/* ==========================================================================================
 * Management calls (FilterLoad, FilterAttach, FilterFindFirst, ...): they talk to fltmgrd over
 * its control port "\FltMgrControl" (root only by default). fltmgrd not running:
 * HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND). Filter names are fltmgrd plugin names; a "volume" is
 * a directory path (wide string; UTF-8 on the Linux side). Names are WCHAR strings, so lengths in
 * bytes are multiples of sizeof(WCHAR) (4 on Linux). The Find calls return one entry per call
 * (NextEntryOffset is 0) from a snapshot taken by the FindFirst call; a buffer too small for the
 * entry gives HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER) with *lpBytesReturned set to the
 * size needed, and the enumeration does not advance (FindFirst then creates no handle). The end
 * (or an empty list in FindFirst, which then creates no handle) is
 * HRESULT_FROM_WIN32(ERROR_NO_MORE_ITEMS). Find handles are closed with the matching FindClose
 * (or CloseHandle).
 * ========================================================================================== */

#ifndef ERROR_NO_MORE_ITEMS
#define ERROR_NO_MORE_ITEMS 259L
#endif

typedef enum _FILTER_INFORMATION_CLASS {
  FilterFullInformation,
  FilterAggregateBasicInformation,    /* not supported: E_INVALIDARG */
  FilterAggregateStandardInformation  /* not supported: E_INVALIDARG */
} FILTER_INFORMATION_CLASS, *PFILTER_INFORMATION_CLASS;

typedef enum _INSTANCE_INFORMATION_CLASS {
  InstanceBasicInformation,             /* not supported: E_INVALIDARG */
  InstancePartialInformation,           /* not supported: E_INVALIDARG */
  InstanceFullInformation,              /* the one supported class */
  InstanceAggregateStandardInformation  /* not supported: E_INVALIDARG */
} INSTANCE_INFORMATION_CLASS, *PINSTANCE_INFORMATION_CLASS;

typedef enum _FILTER_VOLUME_INFORMATION_CLASS {
  FilterVolumeBasicInformation,
  FilterVolumeStandardInformation  /* not supported: E_INVALIDARG */
} FILTER_VOLUME_INFORMATION_CLASS, *PFILTER_VOLUME_INFORMATION_CLASS;

typedef struct _FILTER_FULL_INFORMATION {
  ULONG NextEntryOffset;
  ULONG FrameID;
  ULONG NumberOfInstances;
  USHORT FilterNameLength; /* bytes, no terminating NUL */
  WCHAR FilterNameBuffer[1];
} FILTER_FULL_INFORMATION, *PFILTER_FULL_INFORMATION;

/* Strings follow the structure; offsets are from its start, lengths in bytes, no NULs.
 * InstanceName is "<filter> Instance:<path>", Altitude the decimal altitude, VolumeName the path. */
typedef struct _INSTANCE_FULL_INFORMATION {
  ULONG NextEntryOffset;
  USHORT InstanceNameLength;
  USHORT InstanceNameBufferOffset;
  USHORT AltitudeLength;
  USHORT AltitudeBufferOffset;
  USHORT VolumeNameLength;
  USHORT VolumeNameBufferOffset;
  USHORT FilterNameLength;
  USHORT FilterNameBufferOffset;
} INSTANCE_FULL_INFORMATION, *PINSTANCE_FULL_INFORMATION;

/* The longest instance name, in characters (fltUserStructures.h). */
#define INSTANCE_NAME_MAX_CHARS 255
#define INSTANCE_NAME_MAX_BYTES (INSTANCE_NAME_MAX_CHARS * sizeof(WCHAR))

typedef struct _FILTER_VOLUME_BASIC_INFORMATION {
  USHORT FilterVolumeNameLength; /* bytes, no terminating NUL */
  WCHAR FilterVolumeName[1];
} FILTER_VOLUME_BASIC_INFORMATION, *PFILTER_VOLUME_BASIC_INFORMATION;

FLTPORT_BEGIN_C

/* Loads the plugin of that name into fltmgrd. Unknown: HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND);
 * already loaded: the HRESULT of STATUS_OBJECT_NAME_COLLISION. */
FLTPORT_API HRESULT WINAPI FilterLoad(LPCWSTR lpFilterName);
FLTPORT_API HRESULT WINAPI FilterUnload(LPCWSTR lpFilterName);
/* Attaches the filter to the directory tree lpVolumeName (an absolute path). lpInstanceName is
 * ignored (instances are named after filter and path); when lpCreatedInstanceName is not NULL it
 * receives the instance name, NUL-terminated, in dwCreatedInstanceNameLength bytes (too small:
 * ERROR_INSUFFICIENT_BUFFER, the instance stays attached). */
FLTPORT_API HRESULT WINAPI FilterAttach(LPCWSTR lpFilterName, LPCWSTR lpVolumeName, LPCWSTR lpInstanceName,
                                        DWORD dwCreatedInstanceNameLength, LPWSTR lpCreatedInstanceName);
/* lpInstanceName may be NULL and is ignored: an instance is named by its filter and path. */
FLTPORT_API HRESULT WINAPI FilterDetach(LPCWSTR lpFilterName, LPCWSTR lpVolumeName, LPCWSTR lpInstanceName);

FLTPORT_API HRESULT WINAPI FilterFindFirst(FILTER_INFORMATION_CLASS dwInformationClass, LPVOID lpBuffer,
                                           DWORD dwBufferSize, LPDWORD lpBytesReturned, LPHANDLE lpFilterFind);
FLTPORT_API HRESULT WINAPI FilterFindNext(HANDLE hFilterFind, FILTER_INFORMATION_CLASS dwInformationClass,
                                          LPVOID lpBuffer, DWORD dwBufferSize, LPDWORD lpBytesReturned);
FLTPORT_API HRESULT WINAPI FilterFindClose(HANDLE hFilterFind);

FLTPORT_API HRESULT WINAPI FilterInstanceFindFirst(LPCWSTR lpFilterName, INSTANCE_INFORMATION_CLASS dwInformationClass,
                                                   LPVOID lpBuffer, DWORD dwBufferSize, LPDWORD lpBytesReturned,
                                                   LPHANDLE lpFilterInstanceFind);
FLTPORT_API HRESULT WINAPI FilterInstanceFindNext(HANDLE hFilterInstanceFind,
                                                  INSTANCE_INFORMATION_CLASS dwInformationClass, LPVOID lpBuffer,
                                                  DWORD dwBufferSize, LPDWORD lpBytesReturned);
FLTPORT_API HRESULT WINAPI FilterInstanceFindClose(HANDLE hFilterInstanceFind);

FLTPORT_API HRESULT WINAPI FilterVolumeFindFirst(FILTER_VOLUME_INFORMATION_CLASS dwInformationClass, LPVOID lpBuffer,
                                                 DWORD dwBufferSize, LPDWORD lpBytesReturned, PHANDLE lpVolumeFind);
FLTPORT_API HRESULT WINAPI FilterVolumeFindNext(HANDLE hVolumeFind, FILTER_VOLUME_INFORMATION_CLASS dwInformationClass,
                                                LPVOID lpBuffer, DWORD dwBufferSize, LPDWORD lpBytesReturned);
FLTPORT_API HRESULT WINAPI FilterVolumeFindClose(HANDLE hVolumeFind);

/* The instances of every filter on one volume (directory path, resolved as FilterAttach resolves
 * it), in the rules above: InstanceFullInformation entries; no instance there: ERROR_NO_MORE_ITEMS. */
FLTPORT_API HRESULT WINAPI FilterVolumeInstanceFindFirst(LPCWSTR lpVolumeName,
                                                         INSTANCE_INFORMATION_CLASS dwInformationClass,
                                                         LPVOID lpBuffer, DWORD dwBufferSize,
                                                         LPDWORD lpBytesReturned,
                                                         LPHANDLE lpVolumeInstanceFind);
FLTPORT_API HRESULT WINAPI FilterVolumeInstanceFindNext(HANDLE hVolumeInstanceFind,
                                                        INSTANCE_INFORMATION_CLASS dwInformationClass,
                                                        LPVOID lpBuffer, DWORD dwBufferSize,
                                                        LPDWORD lpBytesReturned);
FLTPORT_API HRESULT WINAPI FilterVolumeInstanceFindClose(HANDLE hVolumeInstanceFind);

/* The DOS name of a volume. Windows answers a drive letter ("C:"); here a volume is a directory
 * and there are no drive letters, so its DOS name is its own path, resolved (absolute, no "..",
 * no symbolic link): what a user types to reach it. Needs no fltmgrd. dwDosNameBufferSize is in
 * WCHARs, the NUL included; too small: HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER). A path that
 * does not exist: HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND); not a directory:
 * HRESULT_FROM_WIN32(ERROR_INVALID_NAME); NULL, or a relative path that does not exist: E_INVALIDARG. */
FLTPORT_API HRESULT WINAPI FilterGetDosName(LPCWSTR lpVolumeName, LPWSTR lpDosName,
                                            DWORD dwDosNameBufferSize);

FLTPORT_END_C
/* ======================= end of the management calls ======================= */


#endif /* FLTPORT_FLTUSER_H */
