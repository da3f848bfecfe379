// The one place where a filter-side NTSTATUS becomes a Win32 error and an HRESULT. The pairs and
// the rules before the table are those of Windows' RtlNtStatusToDosError (Wine reproduces them in
// dlls/ntdll/error.c and the generated error.h; values checked against the SDK headers).
#include <fltport/status.h>
#include <fltport/result.hpp>

#include <array>
#include <cstdio>
#include <utility>

namespace {

// Filter Manager statuses (facility 0x1C) become FACILITY_USERMODE_FILTER_MANAGER (0x1F) HRESULTs
// with the same code (fltwinerror.h's FILTER_HRESULT_FROM_FLT_NTSTATUS); these "Win32 errors" are
// HRESULTs already, which HRESULT_FROM_WIN32 leaves as they are.
constexpr ULONG filter_hresult(uint32_t flt_status) {
  return (flt_status & 0x8000FFFFu) | (0x1Fu << 16);
}

struct Mapping {
  NTSTATUS status;
  ULONG win32;
  const char* name;
};

#define FLTPORT_MAP(status, win32)             \
  Mapping {                                    \
    status, static_cast<ULONG>(win32), #status \
  }
constexpr std::array kStatusTable{
    FLTPORT_MAP(STATUS_SUCCESS, ERROR_SUCCESS),
    FLTPORT_MAP(STATUS_TIMEOUT, ERROR_TIMEOUT),
    FLTPORT_MAP(STATUS_PENDING, ERROR_IO_PENDING),
    FLTPORT_MAP(STATUS_BUFFER_OVERFLOW, ERROR_MORE_DATA),
    FLTPORT_MAP(STATUS_NO_MORE_ENTRIES, ERROR_NO_MORE_ITEMS),
    FLTPORT_MAP(STATUS_UNSUCCESSFUL, ERROR_GEN_FAILURE),
    FLTPORT_MAP(STATUS_NOT_IMPLEMENTED, ERROR_INVALID_FUNCTION),
    FLTPORT_MAP(STATUS_INVALID_HANDLE, ERROR_INVALID_HANDLE),
    FLTPORT_MAP(STATUS_INVALID_PARAMETER, ERROR_INVALID_PARAMETER),
    FLTPORT_MAP(STATUS_INVALID_DEVICE_REQUEST, ERROR_INVALID_FUNCTION),
    FLTPORT_MAP(STATUS_NO_MEMORY, ERROR_NOT_ENOUGH_MEMORY),
    FLTPORT_MAP(STATUS_ACCESS_DENIED, ERROR_ACCESS_DENIED),
    FLTPORT_MAP(STATUS_BUFFER_TOO_SMALL, ERROR_INSUFFICIENT_BUFFER),
    FLTPORT_MAP(STATUS_OBJECT_NAME_INVALID, ERROR_INVALID_NAME),
    FLTPORT_MAP(STATUS_OBJECT_NAME_NOT_FOUND, ERROR_FILE_NOT_FOUND),
    FLTPORT_MAP(STATUS_OBJECT_NAME_COLLISION, ERROR_ALREADY_EXISTS),
    FLTPORT_MAP(STATUS_PORT_DISCONNECTED, ERROR_INVALID_HANDLE),
    FLTPORT_MAP(STATUS_DATA_ERROR, ERROR_CRC),
    FLTPORT_MAP(STATUS_PORT_CONNECTION_REFUSED, ERROR_ACCESS_DENIED),
    FLTPORT_MAP(STATUS_SHARING_VIOLATION, ERROR_SHARING_VIOLATION),
    FLTPORT_MAP(STATUS_QUOTA_EXCEEDED, ERROR_NOT_ENOUGH_QUOTA),
    FLTPORT_MAP(STATUS_THREAD_IS_TERMINATING, ERROR_ACCESS_DENIED),
    FLTPORT_MAP(STATUS_FILE_LOCK_CONFLICT, ERROR_LOCK_VIOLATION),
    FLTPORT_MAP(STATUS_DISK_FULL, ERROR_DISK_FULL),
    FLTPORT_MAP(STATUS_INSUFFICIENT_RESOURCES, ERROR_NO_SYSTEM_RESOURCES),
    FLTPORT_MAP(STATUS_DEVICE_NOT_READY, ERROR_NOT_READY),
    FLTPORT_MAP(STATUS_IO_TIMEOUT, ERROR_SEM_TIMEOUT),
    FLTPORT_MAP(STATUS_NOT_SUPPORTED, ERROR_NOT_SUPPORTED),
    FLTPORT_MAP(STATUS_INVALID_USER_BUFFER, ERROR_INVALID_USER_BUFFER),
    FLTPORT_MAP(STATUS_CANCELLED, ERROR_OPERATION_ABORTED),
    FLTPORT_MAP(STATUS_IO_DEVICE_ERROR, ERROR_IO_DEVICE),
    FLTPORT_MAP(STATUS_INVALID_BUFFER_SIZE, ERROR_INVALID_USER_BUFFER),
    FLTPORT_MAP(STATUS_REQUEST_ABORTED, ERROR_REQUEST_ABORTED),
    FLTPORT_MAP(STATUS_CONNECTION_COUNT_LIMIT, ERROR_CONNECTION_COUNT_LIMIT),
    FLTPORT_MAP(STATUS_VIRUS_INFECTED, ERROR_VIRUS_INFECTED),
    FLTPORT_MAP(STATUS_FLT_NO_WAITER_FOR_REPLY, filter_hresult(0xC01C0020u)),
};
#undef FLTPORT_MAP

const Mapping* find(NTSTATUS status) {
  for (const Mapping& entry : kStatusTable) {
    if (entry.status == status) return &entry;
  }
  return nullptr;
}

}  // namespace

extern "C" ULONG NTAPI RtlNtStatusToDosError(NTSTATUS status) {
  auto bits = static_cast<uint32_t>(status);
  // Customer-defined statuses pass through; 0xD... is read as 0xC...; Win32 errors and HRESULTs
  // wrapped in an NTSTATUS give their code back.
  if (bits == 0 || (bits & 0x20000000u) != 0) return bits;
  if ((bits & 0xF0000000u) == 0xD0000000u) bits &= ~0x10000000u;
  const uint32_t high = bits >> 16;
  if (high == 0xC001u || high == 0x8007u || high == 0xC007u) return bits & 0xFFFFu;
  if (const Mapping* entry = find(static_cast<NTSTATUS>(bits))) return entry->win32;
  // The rest of the Filter Manager facility maps to its HRESULT twin, except the warning
  // STATUS_FLT_BUFFER_TOO_SMALL, which Windows reports as ERROR_INSUFFICIENT_BUFFER.
  if (bits == 0x801C0001u) return ERROR_INSUFFICIENT_BUFFER;
  if ((bits & 0x0FFF0000u) == 0x001C0000u) return filter_hresult(bits);
  return ERROR_MR_MID_NOT_FOUND;
}

extern "C" HRESULT NTAPI FltportHResultFromNtStatus(NTSTATUS status) {
  if (status == STATUS_SUCCESS) return S_OK;
  return HRESULT_FROM_WIN32(RtlNtStatusToDosError(status));
}

namespace fltport {

HRESULT Status::to_hresult() const noexcept {
  return FltportHResultFromNtStatus(code_);
}

std::string Status::to_string() const {
  char hex[16];
  std::snprintf(hex, sizeof hex, "0x%08X", static_cast<unsigned>(code_));
  const Mapping* entry = find(code_);
  return entry != nullptr ? std::string(entry->name) + " (" + hex + ")" : std::string(hex);
}

}  // namespace fltport
