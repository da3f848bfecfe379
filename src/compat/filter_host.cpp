#include "compat/filter_host.hpp"

#include <dlfcn.h>
#include <sys/file.h>
#include <unistd.h>

#include "base/log.hpp"
#include "compat/flt_objects.hpp"
#include "transport/runtime_dir.hpp"

namespace fltport::host {

Result<std::unique_ptr<FilterPlugin>> FilterPlugin::load(FilterManager& manager, const std::string& path,
                                                         FilterSettings settings) {
  if (::access(path.c_str(), R_OK) != 0) return Status(STATUS_OBJECT_NAME_NOT_FOUND);
  std::unique_ptr<FilterPlugin> plugin(new FilterPlugin());
  plugin->settings_ = std::move(settings);
  plugin->path_ = path;
  plugin->library_ = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (plugin->library_ == nullptr) {
    FLTPORT_LOG(error, "host", "cannot load %s: %s", path.c_str(), ::dlerror());
    return Status(STATUS_INVALID_PARAMETER);
  }
  using DriverEntry = NTSTATUS (*)(PDRIVER_OBJECT, PUNICODE_STRING);
  auto entry = reinterpret_cast<DriverEntry>(::dlsym(plugin->library_, "DriverEntry"));
  if (entry == nullptr) {
    FLTPORT_LOG(error, "host", "%s exports no DriverEntry", path.c_str());
    return Status(STATUS_INVALID_PARAMETER);
  }
  plugin->driver_ = std::make_unique<_DRIVER_OBJECT>();
  plugin->driver_->manager = &manager;
  plugin->driver_->name = plugin->settings_.name;
  plugin->driver_->altitude = plugin->settings_.altitude;
  plugin->driver_->deadline = plugin->settings_.deadline;
  plugin->driver_->default_decision = plugin->settings_.default_decision;
  // Windows passes the filter's service key; ours names the filter the same way.
  std::wstring key = L"\\Registry\\Machine\\System\\CurrentControlSet\\Services\\";
  key.append(plugin->settings_.name.begin(), plugin->settings_.name.end());
  UNICODE_STRING registry_path;
  RtlInitUnicodeString(&registry_path, key.c_str());
  const NTSTATUS status = entry(plugin->driver_.get(), &registry_path);
  if (!NT_SUCCESS(status)) {
    FLTPORT_LOG(error, "host", "%s: DriverEntry failed with 0x%08X", plugin->settings_.name.c_str(),
                static_cast<unsigned>(status));
    // What the failed DriverEntry left registered (FltUnregisterFilter clears `registered`).
    if (plugin->driver_->registered != nullptr) FltUnregisterFilter(plugin->driver_->registered);
    return Status(status);
  }
  return plugin;
}

FilterPlugin::~FilterPlugin() {
  if (driver_ && driver_->registered != nullptr) {
    // The filter's unload callback closes its ports and calls FltUnregisterFilter itself, which
    // clears `registered`; whatever it left registered is unregistered here.
    PFLT_FILTER filter = driver_->registered;
    if (filter->unload != nullptr) filter->unload(0);
    if (driver_->registered != nullptr) FltUnregisterFilter(driver_->registered);
  }
  if (library_ != nullptr) ::dlclose(library_);
}

std::string find_plugin(const std::string& name, const std::vector<std::string>& directories) {
  if (name.empty() || name.find('/') != std::string::npos) return {};
  for (const auto& directory : directories) {
    for (const std::string& candidate :
         {directory + "/fltport-filter-" + name + ".so", directory + "/" + name + ".so"}) {
      if (::access(candidate.c_str(), R_OK) == 0) return candidate;
    }
  }
  return {};
}

Result<UniqueFd> lock_host(const std::string& directory, const std::string& file_name, std::string& holder) {
  holder.clear();
  auto opened = transport::open_runtime_directory(directory);
  if (!opened) return opened.status();
  auto lock = transport::open_lock_file(opened->fd(), directory, file_name);
  if (!lock) return lock.status();
  if (::flock(lock->fd(), LOCK_EX | LOCK_NB) != 0) {
    char pid[16] = {};
    const ssize_t n = ::pread(lock->fd(), pid, sizeof pid - 1, 0);
    for (ssize_t i = 0; i < n && pid[i] >= '0' && pid[i] <= '9'; ++i) holder += pid[i];
    return Status(STATUS_OBJECT_NAME_COLLISION);
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lock->fd(), 0) != 0 || ::pwrite(lock->fd(), pid.data(), pid.size(), 0) < 0) {
    // The lock is what matters; the pid is for the message a second host prints.
  }
  return lock;
}

}  // namespace fltport::host
