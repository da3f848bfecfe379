/*
 * C11 smoke test of the public C headers and the library: the headers compile as strict C11, the
 * layouts and constant values are those of Windows x64, and one filter + service round trip works
 * in one process. Returns 0 on success, 1 with a message on the first failure.
 */
#define _POSIX_C_SOURCE 200809L

#include <fltport/fltkernel.h>
#include <fltport/fltuser.h>

#include <dirent.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- compile-time layout checks (Windows x64 sizes) ---- */
_Static_assert(sizeof(ULONG) == 4, "ULONG is 32 bits (LLP64)");
_Static_assert(sizeof(LONG) == 4, "LONG is 32 bits (LLP64)");
_Static_assert(sizeof(DWORD) == 4, "DWORD is 32 bits");
_Static_assert(sizeof(USHORT) == 2, "USHORT");
_Static_assert(sizeof(WORD) == 2, "WORD");
_Static_assert(sizeof(ULONGLONG) == 8, "ULONGLONG");
_Static_assert(sizeof(NTSTATUS) == 4, "NTSTATUS");
_Static_assert(sizeof(HRESULT) == 4, "HRESULT");
_Static_assert(sizeof(HANDLE) == 8, "HANDLE is a pointer");
_Static_assert(sizeof(LARGE_INTEGER) == 8, "LARGE_INTEGER");
_Static_assert(sizeof(FILTER_MESSAGE_HEADER) == 16, "FILTER_MESSAGE_HEADER");
_Static_assert(offsetof(FILTER_MESSAGE_HEADER, ReplyLength) == 0, "FILTER_MESSAGE_HEADER.ReplyLength");
_Static_assert(offsetof(FILTER_MESSAGE_HEADER, MessageId) == 8, "FILTER_MESSAGE_HEADER.MessageId");
_Static_assert(sizeof(FILTER_REPLY_HEADER) == 16, "FILTER_REPLY_HEADER");
_Static_assert(offsetof(FILTER_REPLY_HEADER, Status) == 0, "FILTER_REPLY_HEADER.Status");
_Static_assert(offsetof(FILTER_REPLY_HEADER, MessageId) == 8, "FILTER_REPLY_HEADER.MessageId");
_Static_assert(sizeof(OVERLAPPED) == 32, "OVERLAPPED");
_Static_assert(offsetof(OVERLAPPED, hEvent) == 24, "OVERLAPPED.hEvent");
_Static_assert(sizeof(SECURITY_ATTRIBUTES) == 24, "SECURITY_ATTRIBUTES");
_Static_assert(sizeof(UNICODE_STRING) == 16, "UNICODE_STRING");
_Static_assert(offsetof(UNICODE_STRING, Buffer) == 8, "UNICODE_STRING.Buffer");
_Static_assert(sizeof(OBJECT_ATTRIBUTES) == 48, "OBJECT_ATTRIBUTES");
_Static_assert(offsetof(OBJECT_ATTRIBUTES, ObjectName) == 16, "OBJECT_ATTRIBUTES.ObjectName");
_Static_assert(offsetof(OBJECT_ATTRIBUTES, Attributes) == 24, "OBJECT_ATTRIBUTES.Attributes");
_Static_assert(offsetof(OBJECT_ATTRIBUTES, SecurityDescriptor) == 32, "OBJECT_ATTRIBUTES.SecurityDescriptor");
_Static_assert(sizeof(FLT_REGISTRATION) == 112, "FLT_REGISTRATION (version 0x0203)");
_Static_assert(offsetof(FLT_REGISTRATION, Flags) == 4, "FLT_REGISTRATION.Flags");
_Static_assert(offsetof(FLT_REGISTRATION, ContextRegistration) == 8, "FLT_REGISTRATION.ContextRegistration");
_Static_assert(offsetof(FLT_REGISTRATION, FilterUnloadCallback) == 24, "FLT_REGISTRATION.FilterUnloadCallback");

static int failures = 0;

#define CHECK(cond)                                                      \
  do {                                                                   \
    if (!(cond)) {                                                       \
      fprintf(stderr, "c_api_smoke: %s:%d: failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                        \
    }                                                                    \
  } while (0)

#define CHECK_CODE(actual, expected)                                                              \
  do {                                                                                            \
    const long long a_ = (long long)(actual);                                                     \
    const long long e_ = (long long)(expected);                                                   \
    if (a_ != e_) {                                                                               \
      fprintf(stderr, "c_api_smoke: %s:%d: %s is 0x%08X, expected %s = 0x%08X\n", __FILE__, __LINE__, \
              #actual, (unsigned)a_, #expected, (unsigned)e_);                                    \
      failures++;                                                                                 \
    }                                                                                             \
  } while (0)

/* ---- the filter's callbacks ---- */
static int g_cookie_target;
static volatile int g_connects = 0;
static volatile int g_disconnects = 0;
static volatile int g_messages = 0;
static PFLT_FILTER g_filter = NULL;
static PFLT_PORT g_client_port = NULL;
static void* g_server_cookie_seen = NULL;
static void* g_message_cookie_seen = NULL;
static void* g_disconnect_cookie_seen = NULL;
static char g_context[16];
static ULONG g_context_size = 0;

static NTSTATUS FLTAPI on_connect(PFLT_PORT client_port, PVOID server_cookie, PVOID context, ULONG context_size,
                                  PVOID* connection_cookie) {
  g_client_port = client_port;
  g_server_cookie_seen = server_cookie;
  g_context_size = context_size;
  if (context != NULL && context_size <= sizeof g_context) memcpy(g_context, context, context_size);
  *connection_cookie = &g_cookie_target;
  g_connects++;
  return STATUS_SUCCESS;
}

static VOID FLTAPI on_disconnect(PVOID connection_cookie) {
  g_disconnect_cookie_seen = connection_cookie;
  FltCloseClientPort(g_filter, &g_client_port);
  g_disconnects++;
}

/* Answers "ping" with "pong". */
static NTSTATUS FLTAPI on_message(PVOID port_cookie, PVOID input, ULONG input_length, PVOID output,
                                  ULONG output_length, PULONG returned_length) {
  g_message_cookie_seen = port_cookie;
  g_messages++;
  if (input == NULL || input_length != 4 || memcmp(input, "ping", 4) != 0) return STATUS_INVALID_PARAMETER;
  if (output == NULL || output_length < 4) return STATUS_BUFFER_TOO_SMALL;
  memcpy(output, "pong", 4);
  *returned_length = 4;
  return STATUS_SUCCESS;
}

static void remove_directory(const char* path) {
  DIR* dir = opendir(path);
  if (dir != NULL) {
    struct dirent* entry;
    while ((entry = readdir(dir)) != NULL) {
      char child[512];
      if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
      snprintf(child, sizeof child, "%s/%s", path, entry->d_name);
      unlink(child);
    }
    closedir(dir);
  }
  rmdir(path);
}

static void check_constants(void) {
  CHECK_CODE(HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND), (HRESULT)0x80070002);
  CHECK_CODE(HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE), (HRESULT)0x80070006);
  CHECK_CODE(HRESULT_FROM_WIN32(ERROR_MORE_DATA), (HRESULT)0x800700EA);
  CHECK_CODE(HRESULT_FROM_WIN32(ERROR_CONNECTION_COUNT_LIMIT), (HRESULT)0x800704D6);
  CHECK_CODE(HRESULT_FROM_WIN32(ERROR_SUCCESS), S_OK);
  CHECK_CODE(HRESULT_FROM_WIN32(E_ACCESSDENIED), E_ACCESSDENIED); /* already an HRESULT: unchanged */
  CHECK_CODE(E_ACCESSDENIED, (HRESULT)0x80070005);
  CHECK_CODE(E_HANDLE, (HRESULT)0x80070006);
  CHECK_CODE(E_INVALIDARG, (HRESULT)0x80070057);
  CHECK_CODE(E_OUTOFMEMORY, (HRESULT)0x8007000E);
  CHECK_CODE(E_NOTIMPL, (HRESULT)0x80004001);
  CHECK_CODE(ERROR_FLT_NO_WAITER_FOR_REPLY, (HRESULT)0x801F0020);
  CHECK_CODE(STATUS_SUCCESS, 0);
  CHECK_CODE(STATUS_TIMEOUT, 0x102);
  CHECK_CODE(STATUS_BUFFER_OVERFLOW, (NTSTATUS)0x80000005);
  CHECK(!NT_SUCCESS(STATUS_BUFFER_OVERFLOW));
  CHECK(NT_SUCCESS(STATUS_TIMEOUT));
  CHECK_CODE(STATUS_INVALID_PARAMETER, (NTSTATUS)0xC000000D);
  CHECK_CODE(STATUS_ACCESS_DENIED, (NTSTATUS)0xC0000022);
  CHECK_CODE(STATUS_OBJECT_NAME_NOT_FOUND, (NTSTATUS)0xC0000034);
  CHECK_CODE(STATUS_OBJECT_NAME_COLLISION, (NTSTATUS)0xC0000035);
  CHECK_CODE(STATUS_PORT_DISCONNECTED, (NTSTATUS)0xC0000037);
  CHECK_CODE(STATUS_THREAD_IS_TERMINATING, (NTSTATUS)0xC000004B);
  CHECK_CODE(STATUS_INSUFFICIENT_RESOURCES, (NTSTATUS)0xC000009A);
  CHECK_CODE(STATUS_CONNECTION_COUNT_LIMIT, (NTSTATUS)0xC0000246);
  CHECK_CODE(STATUS_FLT_NO_WAITER_FOR_REPLY, (NTSTATUS)0xC01C0020);
  CHECK_CODE(ERROR_CONNECTION_COUNT_LIMIT, 1238);
  CHECK_CODE(ERROR_MORE_DATA, 234);
  CHECK_CODE(FLT_PORT_ALL_ACCESS, 0x001F0001);
  CHECK_CODE(FLT_PORT_FLAG_SYNC_HANDLE, 1);
  CHECK_CODE(OBJ_KERNEL_HANDLE, 0x200);
  CHECK_CODE(OBJ_CASE_INSENSITIVE, 0x40);
  CHECK_CODE(FLT_REGISTRATION_VERSION, 0x0203);
  /* A path asked for without a callback's data: an empty string, never NULL. */
  CHECK(FltportGetFilePath(NULL) != NULL && FltportGetFilePath(NULL)[0] == '\0');
  /* The status mapping, as the service sees filter statuses. */
  CHECK_CODE(FltportHResultFromNtStatus(STATUS_SUCCESS), S_OK);
  CHECK_CODE(FltportHResultFromNtStatus(STATUS_PORT_DISCONNECTED), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE));
  CHECK_CODE(FltportHResultFromNtStatus(STATUS_OBJECT_NAME_NOT_FOUND), HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND));
  CHECK_CODE(FltportHResultFromNtStatus(STATUS_ACCESS_DENIED), E_ACCESSDENIED);
  CHECK_CODE(FltportHResultFromNtStatus(STATUS_CONNECTION_COUNT_LIMIT),
             HRESULT_FROM_WIN32(ERROR_CONNECTION_COUNT_LIMIT));
  CHECK_CODE(FltportHResultFromNtStatus(STATUS_BUFFER_OVERFLOW), HRESULT_FROM_WIN32(ERROR_MORE_DATA));
  CHECK_CODE(FltportHResultFromNtStatus(STATUS_FLT_NO_WAITER_FOR_REPLY), ERROR_FLT_NO_WAITER_FOR_REPLY);
  CHECK_CODE(RtlNtStatusToDosError(STATUS_OBJECT_NAME_COLLISION), ERROR_ALREADY_EXISTS);
}

int main(void) {
  char runtime_dir[] = "/tmp/fltport-c-smoke-XXXXXX";
  FLT_REGISTRATION registration;
  PSECURITY_DESCRIPTOR security = NULL;
  UNICODE_STRING name;
  OBJECT_ATTRIBUTES attributes;
  PFLT_PORT server_port = NULL;
  HANDLE port = NULL;
  NTSTATUS status;
  HRESULT hr;
  char output[16];
  DWORD returned = 0;
  char message[4] = {'m', 's', 'g', '!'};
  char reply[8];
  ULONG reply_length = sizeof reply;
  LARGE_INTEGER no_wait;

  check_constants();

  if (mkdtemp(runtime_dir) == NULL) {
    perror("c_api_smoke: mkdtemp");
    return 1;
  }
  setenv("FLTPORT_RUNTIME_DIR", runtime_dir, 1);

  memset(&registration, 0, sizeof registration);
  registration.Size = sizeof registration;
  registration.Version = FLT_REGISTRATION_VERSION;
  status = FltRegisterFilter(NULL, &registration, &g_filter);
  CHECK_CODE(status, STATUS_SUCCESS);
  if (!NT_SUCCESS(status)) goto done;

  status = FltBuildDefaultSecurityDescriptor(&security, FLT_PORT_ALL_ACCESS);
  CHECK_CODE(status, STATUS_SUCCESS);
  RtlInitUnicodeString(&name, L"\\SmokePort");
  CHECK(name.Length == wcslen(L"\\SmokePort") * sizeof(WCHAR));
  InitializeObjectAttributes(&attributes, &name, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL, security);
  status = FltCreateCommunicationPort(g_filter, &server_port, &attributes, runtime_dir, on_connect, on_disconnect,
                                      on_message, 1);
  FltFreeSecurityDescriptor(security);
  CHECK_CODE(status, STATUS_SUCCESS);
  if (!NT_SUCCESS(status)) goto unregister;

  hr = FilterConnectCommunicationPort(L"\\SmokePort", 0, "hello", 5, NULL, &port);
  CHECK_CODE(hr, S_OK);
  if (FAILED(hr)) goto close_port;
  CHECK(g_connects == 1);
  CHECK(g_server_cookie_seen == runtime_dir);
  CHECK(g_context_size == 5 && memcmp(g_context, "hello", 5) == 0);
  CHECK(g_client_port != NULL);

  /* One FilterSendMessage round trip through MessageNotify. */
  memset(output, 0, sizeof output);
  hr = FilterSendMessage(port, "ping", 4, output, sizeof output, &returned);
  CHECK_CODE(hr, S_OK);
  CHECK(returned == 4);
  CHECK(memcmp(output, "pong", 4) == 0);
  CHECK(g_messages == 1);
  CHECK(g_message_cookie_seen == &g_cookie_target);

  /* Nobody is getting messages: a zero timeout returns STATUS_TIMEOUT at once. */
  no_wait.QuadPart = 0;
  status = FltSendMessage(g_filter, &g_client_port, message, sizeof message, reply, &reply_length, &no_wait);
  CHECK_CODE(status, STATUS_TIMEOUT);

  CHECK(CloseHandle(port));

close_port:
  FltCloseCommunicationPort(server_port);
unregister:
  FltUnregisterFilter(g_filter);
  /* The service closed its handle before the filter unregistered: DisconnectNotify ran once. */
  CHECK(g_disconnects == 1);
  CHECK(g_disconnect_cookie_seen == &g_cookie_target);
done:
  remove_directory(runtime_dir);
  if (failures != 0) {
    fprintf(stderr, "c_api_smoke: %d check(s) failed\n", failures);
    return 1;
  }
  printf("c_api_smoke: ok\n");
  return 0;
}
