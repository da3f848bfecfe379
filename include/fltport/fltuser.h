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
 * refused by ConnectNotify: its status, converted by FltportHResultFromNtStatus. */
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
 * lpOverlapped must be NULL for now (E_NOTIMPL otherwise). */
FLTPORT_API HRESULT WINAPI FilterGetMessage(HANDLE hPort, PFILTER_MESSAGE_HEADER lpMessageBuffer,
                                            DWORD dwMessageBufferSize, LPOVERLAPPED lpOverlapped);

/* Answers the message MessageId names: the reply data are the dwReplyBufferSize - 16 bytes after the
 * header. No waiter for that id: ERROR_FLT_NO_WAITER_FOR_REPLY; a buffer shorter than the header:
 * E_INVALIDARG. */
FLTPORT_API HRESULT WINAPI FilterReplyMessage(HANDLE hPort, PFILTER_REPLY_HEADER lpReplyBuffer,
                                              DWORD dwReplyBufferSize);

FLTPORT_END_C

#endif /* FLTPORT_FLTUSER_H */
