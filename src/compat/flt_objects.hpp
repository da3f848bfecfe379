// The objects behind fltkernel.h's opaque pointers: PFLT_FILTER, PFLT_PORT and PDRIVER_OBJECT.
#pragma once

#include <fltport/fltkernel.h>
#include <fltport/filter.hpp>
#include <fltport/port.hpp>

#include <mutex>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

// What a filter host (fltmgrd, or a test) hands a filter's DriverEntry: the filter manager the
// filter joins and the settings Windows would read from the filter's registry key.
struct _DRIVER_OBJECT {
  static constexpr uint32_t kMagic = 0x56524446;  // "FDRV"
  uint32_t magic = kMagic;
  fltport::FilterManager* manager = nullptr;
  std::string name;
  uint32_t altitude = 0;
  std::chrono::milliseconds deadline{3000};
  fltport::Decision default_decision = fltport::Decision::allow;
  PFLT_FILTER registered = nullptr;  // what DriverEntry registered through this object
};

struct _FLT_FILTER {
  static constexpr uint32_t kMagic = 0x464C5446;  // "FTLF"
  uint32_t magic = kMagic;
  std::mutex mutex;
  std::vector<struct _FLT_PORT*> server_ports;
  std::unordered_set<struct _FLT_PORT*> client_ports;
  // Filters registered through a host's DriverObject: their operations, registered with the
  // manager by FltStartFiltering.
  fltport::FilterManager* manager = nullptr;
  std::optional<fltport::FilterRegistration> operations;
  bool filtering = false;
  PFLT_FILTER_UNLOAD_CALLBACK unload = nullptr;
  _DRIVER_OBJECT* driver = nullptr;  // the host's record of this filter, cleared when it unregisters
};

struct _FLT_PORT {
  enum class Kind { server, client };
  Kind kind;
  PFLT_FILTER filter;
  fltport::ServerPort server;  // kind == server
  fltport::ClientPort client;  // kind == client
};

namespace fltport::compat {
// Builds the manager registration for FLT_REGISTRATION's operations (filter_operations.cpp).
// STATUS_INVALID_PARAMETER for a major function or callback fltport cannot call.
Result<FilterRegistration> operations_from(const FLT_REGISTRATION& registration, const _DRIVER_OBJECT& driver,
                                           PFLT_FILTER filter);
}  // namespace fltport::compat
