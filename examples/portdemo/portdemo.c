/*
 * portdemo: a filter process and a service process talking through a communication port, with
 * the Windows API only. The filter asks "may this file be opened?" for a few names; the service
 * answers, and once asks the filter something of its own with FilterSendMessage.
 *
 *   fltport-portdemo            (uses a temporary runtime directory unless FLTPORT_RUNTIME_DIR is set)
 */
#define _GNU_SOURCE
#include <fltport/fltkernel.h>
#include <fltport/fltuser.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PORT_NAME L"\\DemoPort"

typedef struct {
  char path[64];
} DEMO_QUESTION;

typedef struct {
  UCHAR SafeToOpen;
} DEMO_ANSWER;

/* What the service sends: the header and the answer, no padding (the Windows rule). */
typedef struct {
  FILTER_REPLY_HEADER ReplyHeader;
  DEMO_ANSWER Answer;
} DEMO_REPLY;

typedef struct {
  FILTER_MESSAGE_HEADER MessageHeader;
  DEMO_QUESTION Question;
} DEMO_MESSAGE;

static PFLT_FILTER g_filter;
static PFLT_PORT g_client;
static atomic_int g_connected; /* publishes g_client to the main thread */

static NTSTATUS FLTAPI on_connect(PFLT_PORT client, PVOID server_cookie, PVOID context, ULONG context_size,
                                  PVOID* connection_cookie) {
  (void)server_cookie;
  printf("filter : service connected, context \"%.*s\"\n", (int)context_size, (const char*)context);
  g_client = client;
  *connection_cookie = NULL;
  atomic_store(&g_connected, 1);
  return STATUS_SUCCESS;
}

static VOID FLTAPI on_disconnect(PVOID cookie) {
  (void)cookie;
  printf("filter : service disconnected\n");
  FltCloseClientPort(g_filter, &g_client);
}

static NTSTATUS FLTAPI on_message(PVOID cookie, PVOID input, ULONG input_length, PVOID output,
                                  ULONG output_length, PULONG returned) {
  (void)cookie;
  static const char answer[] = "filter says: 3 questions asked";
  printf("filter : service asks \"%.*s\"\n", (int)input_length, (const char*)input);
  ULONG n = output_length < sizeof answer ? output_length : (ULONG)sizeof answer;
  memcpy(output, answer, n);
  *returned = n;
  return STATUS_SUCCESS;
}

static int run_service(void) {
  HANDLE port = INVALID_HANDLE_VALUE;
  HRESULT hr = HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND);
  /* The filter creates its port right after fork: try for up to 5 s. */
  for (int attempt = 0; attempt < 500 && hr == HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND); ++attempt) {
    hr = FilterConnectCommunicationPort(PORT_NAME, 0, "demo service", 12, NULL, &port);
    if (hr == HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)) usleep(10000);
  }
  if (FAILED(hr)) {
    fprintf(stderr, "service: connect failed: 0x%08X\n", (unsigned)hr);
    return 1;
  }
  for (;;) {
    DEMO_MESSAGE message;
    hr = FilterGetMessage(port, &message.MessageHeader, sizeof message, NULL);
    if (hr == HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE)) break; /* the filter closed the port */
    if (FAILED(hr)) {
      fprintf(stderr, "service: FilterGetMessage failed: 0x%08X\n", (unsigned)hr);
      break;
    }
    DEMO_REPLY reply;
    memset(&reply, 0, sizeof reply);
    reply.ReplyHeader.MessageId = message.MessageHeader.MessageId;
    reply.Answer.SafeToOpen = strstr(message.Question.path, "virus") == NULL;
    printf("service: message %llu \"%s\" -> %s\n", (unsigned long long)message.MessageHeader.MessageId,
           message.Question.path, reply.Answer.SafeToOpen ? "allow" : "deny");
    hr = FilterReplyMessage(port, &reply.ReplyHeader, sizeof(FILTER_REPLY_HEADER) + sizeof(DEMO_ANSWER));
    if (FAILED(hr)) fprintf(stderr, "service: FilterReplyMessage failed: 0x%08X\n", (unsigned)hr);
    if (strcmp(message.Question.path, "/tmp/last.txt") == 0) {
      char answer[64] = {0};
      DWORD returned = 0;
      hr = FilterSendMessage(port, "how many questions?", 19, answer, sizeof answer - 1, &returned);
      printf("service: FilterSendMessage -> 0x%08X, %u bytes: \"%s\"\n", (unsigned)hr, (unsigned)returned,
             answer);
    }
  }
  CloseHandle(port);
  return 0;
}

static int run_filter(void) {
  FLT_REGISTRATION registration;
  memset(&registration, 0, sizeof registration);
  registration.Size = sizeof registration;
  registration.Version = FLT_REGISTRATION_VERSION;
  NTSTATUS status = FltRegisterFilter(NULL, &registration, &g_filter);
  if (!NT_SUCCESS(status)) return 1;

  PSECURITY_DESCRIPTOR sd;
  FltBuildDefaultSecurityDescriptor(&sd, FLT_PORT_ALL_ACCESS);
  UNICODE_STRING name;
  RtlInitUnicodeString(&name, PORT_NAME);
  OBJECT_ATTRIBUTES attributes;
  InitializeObjectAttributes(&attributes, &name, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, NULL, sd);
  PFLT_PORT server_port;
  status = FltCreateCommunicationPort(g_filter, &server_port, &attributes, NULL, on_connect, on_disconnect,
                                      on_message, 1);
  FltFreeSecurityDescriptor(sd);
  if (!NT_SUCCESS(status)) {
    fprintf(stderr, "filter : FltCreateCommunicationPort failed: 0x%08X\n", (unsigned)status);
    FltUnregisterFilter(g_filter);
    return 1;
  }
  printf("filter : port \\DemoPort created\n");
  for (int i = 0; i < 500 && !atomic_load(&g_connected); ++i) usleep(10000);

  const char* paths[] = {"/tmp/report.pdf", "/tmp/virus.exe", "/tmp/last.txt"};
  int failures = 0;
  for (int i = 0; i < 3; ++i) {
    DEMO_QUESTION question;
    memset(&question, 0, sizeof question);
    snprintf(question.path, sizeof question.path, "%s", paths[i]);
    DEMO_ANSWER answer = {0};
    ULONG answer_length = sizeof answer;
    LARGE_INTEGER timeout;
    timeout.QuadPart = -5LL * 10 * 1000 * 1000; /* 5 s, relative */
    status =
        FltSendMessage(g_filter, &g_client, &question, sizeof question, &answer, &answer_length, &timeout);
    printf("filter : FltSendMessage(\"%s\") -> 0x%08X, %s\n", paths[i], (unsigned)status,
           status == STATUS_SUCCESS ? (answer.SafeToOpen ? "open allowed" : "open DENIED") : "no verdict");
    if (status != STATUS_SUCCESS) ++failures;
  }
  usleep(200000); /* let the service's own question finish before closing */
  FltCloseCommunicationPort(server_port);
  FltCloseClientPort(g_filter, &g_client);
  FltUnregisterFilter(g_filter);
  return failures == 0 ? 0 : 1;
}

int main(void) {
  char directory[] = "/tmp/fltport-demo-XXXXXX";
  int own_directory = getenv("FLTPORT_RUNTIME_DIR") == NULL;
  if (own_directory) {
    if (mkdtemp(directory) == NULL) return 1;
    setenv("FLTPORT_RUNTIME_DIR", directory, 1);
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  pid_t service = fork();
  if (service == 0) _exit(run_service());
  int result = run_filter();
  int service_status = 0;
  waitpid(service, &service_status, 0);
  if (own_directory) {
    char command[128];
    snprintf(command, sizeof command, "rm -rf %s", directory);
    if (system(command) != 0) fprintf(stderr, "could not remove %s\n", directory);
  }
  if (result != 0 || !WIFEXITED(service_status) || WEXITSTATUS(service_status) != 0) {
    printf("demo FAILED\n");
    return 1;
  }
  printf("demo passed: 3 messages answered, 1 service request served\n");
  return 0;
}
