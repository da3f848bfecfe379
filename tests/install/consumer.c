/* A program of a user who installed fltport: both C headers, pure C11, linked through pkg-config. */
#include <fltport/fltkernel.h>
#include <fltport/fltuser.h>

#include <stdio.h>
#include <string.h>

int main(void) {
  FLT_REGISTRATION registration;
  memset(&registration, 0, sizeof registration);
  registration.Size = sizeof registration;
  registration.Version = FLT_REGISTRATION_VERSION;
  PFLT_FILTER filter = NULL;
  if (FltRegisterFilter(NULL, &registration, &filter) != STATUS_SUCCESS) return 1;
  FltUnregisterFilter(filter);
  HANDLE port = NULL;
  HRESULT hr = FilterConnectCommunicationPort(L"\\NoSuchPortForTheInstallTest", 0, NULL, 0, NULL, &port);
  if (hr != HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)) {
    fprintf(stderr, "unexpected 0x%08X\n", (unsigned)hr);
    return 1;
  }
  puts("installed fltport works from C11");
  return 0;
}
