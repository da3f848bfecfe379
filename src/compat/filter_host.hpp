// Hosting filters built as plugins (FilterLoad / FilterUnload in spirit): a shared object that
// exports the Windows entry point
//     NTSTATUS DriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath);
// which calls FltRegisterFilter(DriverObject, ...), creates its ports and calls FltStartFiltering.
// The host passes, through the DriverObject, the filter manager and what Windows keeps in the
// filter's registry key (altitude, and ours: deadline and default verdict).
//
// Plugins link libfltport.so; a host must too (not the static library), so that both use one copy.
#pragma once

#include <fltport/filter.hpp>

#include <memory>
#include <string>
#include <vector>

#include "base/unique_fd.hpp"

struct _DRIVER_OBJECT;

namespace fltport::host {

struct FilterSettings {
  std::string name;
  uint32_t altitude = 0;
  std::chrono::milliseconds deadline{3000};
  Decision default_decision = Decision::allow;
};

class FLTPORT_API FilterPlugin {
 public:
  // Loads `path`, runs its DriverEntry. STATUS_OBJECT_NAME_NOT_FOUND (no such file),
  // STATUS_INVALID_IMAGE_FORMAT-like failures come back as STATUS_INVALID_PARAMETER with a log line,
  // or DriverEntry's own failure status.
  static Result<std::unique_ptr<FilterPlugin>> load(FilterManager& manager, const std::string& path,
                                                    FilterSettings settings);
  // Unloads: the filter's FilterUnloadCallback (which closes its ports and unregisters), or
  // FltUnregisterFilter when it has none; then the shared object is closed.
  ~FilterPlugin();

  const FilterSettings& settings() const noexcept { return settings_; }
  const std::string& path() const noexcept { return path_; }

  FilterPlugin(const FilterPlugin&) = delete;
  FilterPlugin& operator=(const FilterPlugin&) = delete;

 private:
  FilterPlugin() = default;
  FilterSettings settings_;
  std::string path_;
  void* library_ = nullptr;
  std::unique_ptr<_DRIVER_OBJECT> driver_;
};

// "<dir>/fltport-filter-<name>.so", then "<dir>/<name>.so", in each directory in turn; "" if none.
FLTPORT_API std::string find_plugin(const std::string& name, const std::vector<std::string>& directories);

// The host's own lock, "<directory>/<file_name>" (an flock held for the life of the process, so
// that two hosts never share a runtime directory), opened with the checks a port's lock gets
// (transport::open_runtime_directory, open_lock_file): no symlink, no FIFO, no one else's file.
// The holder's pid is written into it. STATUS_OBJECT_NAME_COLLISION when a live process holds it
// (`holder` then has the pid it wrote, or is empty); STATUS_ACCESS_DENIED when a check fails
// (logged).
FLTPORT_API Result<UniqueFd> lock_host(const std::string& directory, const std::string& file_name,
                                       std::string& holder);

}  // namespace fltport::host
