// fltmgrd: the filter host daemon. Loads filters built as plugins, attaches their instances, and
// serves the control port "\FltMgrControl" that fltmc and the fltuser management calls use.
// See README.md in this folder.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fltport/filter.hpp>
#include <fltport/port.hpp>

#include "compat/filter_host.hpp"
#include "config.hpp"
#include "control/control_protocol.hpp"

#ifndef FLTPORT_PLUGIN_DIR
#define FLTPORT_PLUGIN_DIR "/usr/local/lib/fltport/filters"
#endif
#ifndef FLTPORT_PLUGIN_DIR_FROM_BINDIR
#define FLTPORT_PLUGIN_DIR_FROM_BINDIR "../lib/fltport/filters"
#endif

namespace {

using fltport::Status;
namespace control = fltport::control;

// How long the end of a shutdown (filters unloading, after every event was answered) may take.
constexpr std::chrono::seconds kShutdownBound{10};

void say(const char* format, ...) __attribute__((format(printf, 1, 2)));
void say(const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::fputs("fltmgrd: ", stderr);
  std::vfprintf(stderr, format, args);
  std::fputc('\n', stderr);
  va_end(args);
}

std::string runtime_directory() {
  const char* value = std::getenv("FLTPORT_RUNTIME_DIR");
  return (value != nullptr && value[0] != '\0') ? value : "/run/fltport";
}

// A latency histogram as the control protocol's list of numbers: "3,0,12,...".
std::string histogram_text(const fltport::LatencyHistogram& buckets) {
  std::string text;
  for (size_t i = 0; i < buckets.size(); ++i) text += (i ? "," : "") + std::to_string(buckets[i]);
  return text;
}

std::string filesystem_name(const std::string& path) {
  struct statfs info {};
  if (::statfs(path.c_str(), &info) != 0) return "?";
  switch (static_cast<unsigned long>(info.f_type)) {
    case 0xEF53:
      return "ext4";
    case 0x01021994:
      return "tmpfs";
    case 0x58465342:
      return "xfs";
    case 0x9123683E:
      return "btrfs";
    case 0x794C7630:
      return "overlay";
    case 0x6969:
      return "nfs";
    case 0x65735546:
      return "fuse";
    case 0x2FC12FC1:
      return "zfs";
    case 0x4D44:
      return "vfat";
    case 0x5346544E:
      return "ntfs";
    case 0xF2F52010:
      return "f2fs";
    default: {
      char hex[32];
      std::snprintf(hex, sizeof hex, "0x%lx", static_cast<unsigned long>(info.f_type));
      return hex;
    }
  }
}

// Resolves an absolute directory path; STATUS_OBJECT_NAME_INVALID / _NOT_FOUND otherwise.
fltport::Result<std::string> resolve_directory(const std::string& path, std::string& why) {
  if (path.empty() || path.front() != '/') {
    why = "'" + path + "' is not an absolute path";
    return Status(STATUS_OBJECT_NAME_INVALID);
  }
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) == nullptr) {
    why = "'" + path + "': " + std::strerror(errno);
    return Status(STATUS_OBJECT_NAME_NOT_FOUND);
  }
  struct stat st {};
  if (::stat(resolved, &st) != 0 || !S_ISDIR(st.st_mode)) {
    why = "'" + path + "' is not a directory";
    return Status(STATUS_OBJECT_NAME_INVALID);
  }
  return std::string(resolved);
}

class Daemon {
 public:
  Daemon(std::vector<std::string> plugin_dirs, fltmgrd::Config config, std::string runtime_dir)
      : plugin_dirs_(std::move(plugin_dirs)),
        config_(std::move(config)),
        runtime_dir_(std::move(runtime_dir)) {}

  Status start_manager() {
    auto manager = fltport::FilterManager::create();
    if (!manager) return manager.status();
    manager_ = std::move(manager).value();
    return STATUS_SUCCESS;
  }

  // Both return the status and set `message` to a line for the user.
  Status load(const std::string& name, std::string& message) {
    std::lock_guard lock(mutex_);
    return load_locked(name, message);
  }
  Status unload(const std::string& name, std::string& message) {
    std::unique_ptr<fltport::host::FilterPlugin> plugin;
    {
      std::lock_guard lock(mutex_);
      auto it = plugins_.find(name);
      if (it == plugins_.end()) {
        message = "filter '" + name + "' is not loaded";
        return STATUS_OBJECT_NAME_NOT_FOUND;
      }
      plugin = std::move(it->second);
      plugins_.erase(it);
      unloading_.insert(name);
    }
    plugin.reset();  // runs the filter's unload callback outside the lock
    std::lock_guard lock(mutex_);
    unloading_.erase(name);
    message = "unloaded " + name;
    return STATUS_SUCCESS;
  }
  Status attach(const std::string& name, const std::string& path, std::string& message) {
    std::lock_guard lock(mutex_);
    return attach_locked(name, path, message);
  }
  Status detach(const std::string& name, const std::string& path, std::string& message) {
    std::lock_guard lock(mutex_);
    std::string why;
    auto resolved = resolve_directory(path, why);
    std::string target = resolved ? *resolved : path;  // a directory removed since: detach by name
    if (!resolved && (path.empty() || path.front() != '/')) {
      message = why;
      return resolved.status();
    }
    if (plugins_.find(name) == plugins_.end()) {
      message = "filter '" + name + "' is not loaded";
      return STATUS_OBJECT_NAME_NOT_FOUND;
    }
    Status status = manager_->detach(name, target);
    message = status.ok() ? "detached " + name + " from " + target
                          : "cannot detach " + name + " from " + target + ": " + status.to_string();
    return status;
  }

  // Startup: config filters with load=true and --load names, then attaches.
  bool start(const std::vector<std::string>& loads,
             const std::vector<std::pair<std::string, std::string>>& attaches) {
    std::lock_guard lock(mutex_);
    std::vector<std::string> names;
    for (const auto& filter : config_.filters)
      if (filter.load) names.push_back(filter.name);
    for (const auto& name : loads)
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    for (const auto& name : names) {
      std::string message;
      Status status = load_locked(name, message, /*apply_config_attach=*/false);
      say("%s", message.c_str());
      if (!status.ok()) return false;
    }
    std::vector<std::pair<std::string, std::string>> all;
    for (const auto& name : names)
      if (auto* filter = config_.find(name))
        for (const auto& dir : filter->attach) all.emplace_back(name, dir);
    all.insert(all.end(), attaches.begin(), attaches.end());
    for (const auto& [name, dir] : all) {
      std::string message;
      Status status = attach_locked(name, dir, message);
      say("%s", message.c_str());
      if (!status.ok()) return false;
    }
    return true;
  }

  Status start_control_port() {
    fltport::ServerPortOptions options;
    options.name = std::string(control::kPortName);
    options.security = fltport::PortSecurity::root_only();
    options.max_connections = 16;
    options.on_message = [this](void*, fltport::ConstBytes input, fltport::MutableBytes output,
                                size_t& returned) { return handle(input, output, returned); };
    auto port = fltport::ServerPort::create(std::move(options));
    if (!port) return port.status();
    control_port_ = std::move(port).value();
    return STATUS_SUCCESS;
  }

  // Never waits on a filter: what the kernel holds is answered first (fapolicyd #227).
  void stop_filtering() {
    if (!manager_ || filtering_stopped_) return;
    filtering_stopped_ = true;
    const size_t answered = manager_->stop_filtering();
    say("marks removed; %zu waiting events answered with their filters' defaults", answered);
  }

  void shutdown() {
    stop_filtering();
    control_port_ = fltport::ServerPort();  // stops the control port and waits for requests in flight
    std::map<std::string, std::unique_ptr<fltport::host::FilterPlugin>> plugins;
    {
      std::lock_guard lock(mutex_);
      plugins.swap(plugins_);
    }
    for (auto& [name, plugin] : plugins) {
      say("unloading %s", name.c_str());
      plugin.reset();
    }
    if (manager_) manager_->shutdown();
  }

 private:
  fltport::host::FilterSettings settings_for(const std::string& name) {
    fltport::host::FilterSettings settings;
    settings.name = name;
    if (auto* filter = config_.find(name)) {
      if (filter->altitude) settings.altitude = *filter->altitude;
      if (filter->deadline_ms) settings.deadline = std::chrono::milliseconds(*filter->deadline_ms);
      if (filter->default_deny)
        settings.default_decision =
            *filter->default_deny ? fltport::Decision::deny : fltport::Decision::allow;
    }
    return settings;
  }

  std::string directories_text() const {
    std::string text;
    for (const auto& dir : plugin_dirs_) text += (text.empty() ? "" : ":") + dir;
    return text;
  }

  Status load_locked(const std::string& name, std::string& message, bool apply_config_attach = true) {
    if (!control::valid_filter_name(name)) {
      message = "invalid filter name '" + name + "'";
      return STATUS_OBJECT_NAME_INVALID;
    }
    if (plugins_.count(name) != 0 || unloading_.count(name) != 0) {
      message = "filter '" + name + "' is already loaded";
      return STATUS_OBJECT_NAME_COLLISION;
    }
    const std::string path = fltport::host::find_plugin(name, plugin_dirs_);
    if (path.empty()) {
      message = "no plugin named '" + name + "' (looked for fltport-filter-" + name + ".so and " + name +
                ".so in " + directories_text() + ")";
      return STATUS_OBJECT_NAME_NOT_FOUND;
    }
    auto plugin = fltport::host::FilterPlugin::load(*manager_, path, settings_for(name));
    if (!plugin) {
      message = "cannot load " + name + " from " + path + ": " + plugin.status().to_string();
      return plugin.status();
    }
    const auto& settings = plugin.value()->settings();
    message = "loaded " + name + " from " + path + " (altitude " + std::to_string(settings.altitude) +
              ", deadline " + std::to_string(settings.deadline.count()) + " ms, default " +
              (settings.default_decision == fltport::Decision::deny ? "deny" : "allow") + ")";
    plugins_[name] = std::move(plugin).value();
    if (apply_config_attach) {
      if (auto* filter = config_.find(name)) {
        for (const auto& dir : filter->attach) {
          std::string attach_message;
          Status status = attach_locked(name, dir, attach_message);
          say("%s", attach_message.c_str());
          if (!status.ok()) message += "; " + attach_message;
        }
      }
    }
    return STATUS_SUCCESS;
  }

  Status attach_locked(const std::string& name, const std::string& path, std::string& message) {
    if (plugins_.find(name) == plugins_.end()) {
      message = "cannot attach " + name + ": filter '" + name + "' is not loaded";
      return STATUS_OBJECT_NAME_NOT_FOUND;
    }
    std::string why;
    auto resolved = resolve_directory(path, why);
    if (!resolved) {
      message = "cannot attach " + name + ": " + why;
      return resolved.status();
    }
    Status status = manager_->attach(name, *resolved, fltport::AttachScope::directory_tree);
    message = status.ok() ? "attached " + name + " to " + *resolved
                          : "cannot attach " + name + " to " + *resolved + ": " + status.to_string();
    return status;
  }

  // ---- the control port ----

  std::string list(const control::Request& request, Status& status) {
    using control::Column;
    using control::ColumnType;
    std::lock_guard lock(mutex_);
    const auto instances = manager_->instances();
    if (request.command == "filters") {
      control::TableWriter table({{"name", ColumnType::text},
                                  {"instances", ColumnType::number},
                                  {"altitude", ColumnType::number},
                                  {"frame", ColumnType::number},
                                  {"deadline_ms", ColumnType::number},
                                  {"default", ColumnType::text},
                                  {"path", ColumnType::text}});
      std::set<std::string> names;
      for (const auto& [name, plugin] : plugins_) names.insert(name);
      for (const auto& name : manager_->filters()) names.insert(name);
      for (const auto& name : names) {
        size_t count = 0;
        for (const auto& instance : instances) count += instance.filter == name ? 1 : 0;
        auto it = plugins_.find(name);
        fltport::host::FilterSettings settings;
        std::string path;
        if (it != plugins_.end()) {
          settings = it->second->settings();
          path = it->second->path();
        }
        table.add({name, std::to_string(count), std::to_string(settings.altitude), "0",
                   std::to_string(settings.deadline.count()),
                   settings.default_decision == fltport::Decision::deny ? "deny" : "allow", path});
      }
      return table.finish(request.start);
    }
    if (request.command == "instances") {
      control::TableWriter table({{"filter", ColumnType::text},
                                  {"volume", ColumnType::text},
                                  {"altitude", ColumnType::number},
                                  {"instance", ColumnType::text},
                                  {"frame", ColumnType::number},
                                  {"scope", ColumnType::text},
                                  {"events", ColumnType::number},
                                  {"allowed", ColumnType::number},
                                  {"denied", ColumnType::number},
                                  {"defaults_taken", ColumnType::number},
                                  {"post_notifications", ColumnType::number},
                                  {"latency_us_log2", ColumnType::numbers}});
      for (const auto& instance : instances) {
        const char* scope = instance.scope == fltport::AttachScope::directory_tree ? "directory"
                            : instance.scope == fltport::AttachScope::mount        ? "mount"
                                                                                   : "filesystem";
        table.add({instance.filter, instance.path, std::to_string(instance.altitude),
                   control::instance_name(instance.filter, instance.path), "0", scope,
                   std::to_string(instance.events), std::to_string(instance.allowed),
                   std::to_string(instance.denied), std::to_string(instance.defaults_taken),
                   std::to_string(instance.post_notifications), histogram_text(instance.latency_us_log2)});
      }
      return table.finish(request.start);
    }
    if (request.command == "volumes") {
      control::TableWriter table({{"volume", ColumnType::text},
                                  {"filesystem", ColumnType::text},
                                  {"instances", ColumnType::number}});
      std::map<std::string, size_t> volumes;
      for (const auto& instance : instances) ++volumes[instance.path];
      for (const auto& [path, count] : volumes)
        table.add({path, filesystem_name(path), std::to_string(count)});
      return table.finish(request.start);
    }
    if (request.command == "host") {
      const auto host = manager_->host_statistics();
      control::TableWriter table({{"waiting", ColumnType::number},
                                  {"waiting_limit", ColumnType::number},
                                  {"overload_defaults", ColumnType::number},
                                  {"kernel_queued", ColumnType::number},
                                  {"post_operations_queued", ColumnType::number},
                                  {"post_operations_dropped", ColumnType::number},
                                  {"permission_overflows", ColumnType::number},
                                  {"notification_overflows", ColumnType::number},
                                  {"content_reads", ColumnType::number},
                                  {"content_reads_from_page_cache", ColumnType::number},
                                  {"content_read_timeouts", ColumnType::number},
                                  {"content_readers_stuck", ColumnType::number}});
      const auto reads = fltport::content_read_statistics();
      table.add({std::to_string(host.waiting), std::to_string(host.waiting_limit),
                 std::to_string(host.overload_defaults), std::to_string(host.kernel_queued),
                 std::to_string(host.post_operations_queued), std::to_string(host.post_operations_dropped),
                 std::to_string(host.permission_overflows), std::to_string(host.notification_overflows),
                 std::to_string(reads.reads), std::to_string(reads.from_page_cache),
                 std::to_string(reads.timeouts), std::to_string(reads.stuck)});
      return table.finish(request.start);
    }
    if (request.command == "ports") {
      // The ports of this host: its filters' and its own control port.
      control::TableWriter table({{"name", ColumnType::text},
                                  {"socket", ColumnType::text},
                                  {"connections", ColumnType::number},
                                  {"max_connections", ColumnType::number},
                                  {"listening", ColumnType::text}});
      for (const auto& port : fltport::list_server_ports()) {
        const std::string name =
            !port.name.empty() && port.name.front() == '\\' ? port.name : "\\" + port.name;
        table.add({name, port.socket_path, std::to_string(port.connections),
                   std::to_string(port.max_connections), port.listening ? "yes" : "no"});
      }
      return table.finish(request.start);
    }
    // stats, stat NAME
    control::TableWriter table({{"name", ColumnType::text},
                                {"events", ColumnType::number},
                                {"allowed", ColumnType::number},
                                {"denied", ColumnType::number},
                                {"defaults_taken", ColumnType::number},
                                {"cache_hits", ColumnType::number},
                                {"post_notifications", ColumnType::number},
                                {"latency_us_log2", ColumnType::numbers}});
    std::vector<std::string> names;
    if (request.command == "stat") {
      names.push_back(request.arguments[0]);
    } else {
      names = manager_->filters();
      std::sort(names.begin(), names.end());
    }
    for (const auto& name : names) {
      auto stats = manager_->statistics(name);
      if (!stats) {
        if (request.command == "stat") {
          status = stats.status();
          return "no filter named '" + name + "'";
        }
        continue;
      }
      table.add({name, std::to_string(stats->events), std::to_string(stats->allowed),
                 std::to_string(stats->denied), std::to_string(stats->defaults_taken),
                 std::to_string(stats->cache_hits), std::to_string(stats->post_notifications),
                 histogram_text(stats->latency_us_log2)});
    }
    return table.finish(request.start);
  }

  std::string action(const control::Request& request, Status& status) {
    std::string message;
    const auto& args = request.arguments;
    std::string instance;
    if (request.command == "load") {
      status = load(args[0], message);
    } else if (request.command == "unload") {
      status = unload(args[0], message);
    } else if (request.command == "attach") {
      status = attach(args[0], args[1], message);
      if (status.ok()) {
        std::string why;
        auto resolved = resolve_directory(args[1], why);
        instance = control::instance_name(args[0], resolved ? *resolved : args[1]);
      }
    } else {
      status = detach(args[0], args[1], message);
    }
    say("control: %s", message.c_str());
    if (!status.ok()) return message;
    control::TableWriter table(
        {{"message", control::ColumnType::text}, {"instance", control::ColumnType::text}});
    table.add({message, instance});
    return table.finish();
  }

  Status handle(fltport::ConstBytes input, fltport::MutableBytes output, size_t& returned) {
    Status status = STATUS_SUCCESS;
    std::string body;
    control::DecodeError error;
    auto request = control::decode_request(
        std::string_view(reinterpret_cast<const char*>(input.data()), input.size()), error);
    if (!request) {
      status = STATUS_INVALID_PARAMETER;
      switch (error) {
        case control::DecodeError::version:
          body = "unsupported control protocol version";
          break;
        case control::DecodeError::unknown_command:
          body = "unknown command";
          break;
        case control::DecodeError::arguments:
          body = "wrong arguments for the command";
          break;
        default:
          body = "malformed request";
          break;
      }
    } else if (request->command == "load" || request->command == "unload" || request->command == "attach" ||
               request->command == "detach") {
      body = action(*request, status);
    } else {
      body = list(*request, status);
    }
    if (body.size() > output.size()) {
      // The client's buffer is too small for the page: say so, with nothing partial.
      body = "response needs " + std::to_string(body.size()) + " bytes";
      if (body.size() > output.size()) body.clear();
      status = STATUS_BUFFER_TOO_SMALL;
    }
    std::memcpy(output.data(), body.data(), body.size());
    returned = body.size();
    return status;
  }

  std::mutex mutex_;
  std::vector<std::string> plugin_dirs_;
  fltmgrd::Config config_;
  std::string runtime_dir_;
  std::unique_ptr<fltport::FilterManager> manager_;
  std::map<std::string, std::unique_ptr<fltport::host::FilterPlugin>> plugins_;
  std::set<std::string> unloading_;
  fltport::ServerPort control_port_;
  bool filtering_stopped_ = false;  // main thread only
};

// Holds "<runtime dir>/fltmgrd.lock" for the life of the process; empty when another fltmgrd has
// it or the directory or file fails its checks (said why).
fltport::UniqueFd take_lock(const std::string& runtime_dir) {
  std::string holder;
  auto lock = fltport::host::lock_host(runtime_dir, "fltmgrd.lock", holder);
  if (lock) return std::move(*lock);
  if (lock.status() == Status(STATUS_OBJECT_NAME_COLLISION)) {
    say("another fltmgrd is already running on %s (%s/fltmgrd.lock is held%s%s); not starting",
        runtime_dir.c_str(), runtime_dir.c_str(), holder.empty() ? "" : " by pid ", holder.c_str());
  } else {
    say("cannot take %s/fltmgrd.lock: %s; not starting", runtime_dir.c_str(),
        lock.status().to_string().c_str());
  }
  return {};
}

template <class Handler>
bool parse_assignments(const std::vector<std::string>& values, const char* flag, Handler handler) {
  for (const auto& value : values) {
    auto pair = fltmgrd::split_assignment(value);
    if (!pair) {
      say("%s expects NAME=VALUE, not '%s'", flag, value.c_str());
      return false;
    }
    if (!fltport::control::valid_filter_name(pair->first)) {
      say("%s: invalid filter name '%s'", flag, pair->first.c_str());
      return false;
    }
    if (!handler(pair->first, pair->second)) {
      say("%s: invalid value in '%s'", flag, value.c_str());
      return false;
    }
  }
  return true;
}

int run(int argc, char** argv) {
  CLI::App app{"fltmgrd: the fltport filter host daemon", "fltmgrd"};
  bool foreground = false;
  std::string config_path;
  std::vector<std::string> plugin_dirs, loads, attach_args, altitude_args, deadline_args, default_args;
  app.add_flag("--foreground", foreground, "Stay in the foreground (logs on stderr)");
  app.add_option("--config", config_path, "Configuration file (INI, see README)");
  app.add_option("--plugin-dir", plugin_dirs, "Directory searched for filter plugins (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--load", loads, "Filter to load at start (repeatable)")->allow_extra_args(false);
  app.add_option("--attach", attach_args, "NAME=DIR: attach a loaded filter to a directory tree (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--altitude", altitude_args, "NAME=N: a filter's altitude (default 0)")
      ->allow_extra_args(false);
  app.add_option("--deadline-ms", deadline_args, "NAME=MS: a filter's verdict deadline (default 3000)")
      ->allow_extra_args(false);
  app.add_option("--default", default_args, "NAME=allow|deny: a filter's default verdict (default allow)")
      ->allow_extra_args(false);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  fltmgrd::Config config;
  if (!config_path.empty()) {
    std::string error;
    auto parsed = fltmgrd::load_config(config_path, error);
    if (!parsed) {
      say("config error: %s", error.c_str());
      return 2;
    }
    config = std::move(*parsed);
  }
  auto section = [&config](const std::string& name) -> fltmgrd::FilterConfig& {
    if (auto* filter = config.find(name)) return *filter;
    config.filters.push_back(fltmgrd::FilterConfig{});
    config.filters.back().name = name;
    return config.filters.back();
  };
  bool ok =
      parse_assignments(altitude_args, "--altitude", [&](const std::string& name, const std::string& value) {
        auto n = fltmgrd::parse_uint(value, UINT32_MAX);
        if (n) section(name).altitude = *n;
        return n.has_value();
      });
  ok = ok && parse_assignments(deadline_args, "--deadline-ms",
                               [&](const std::string& name, const std::string& value) {
                                 auto n = fltmgrd::parse_uint(value, 3600 * 1000);
                                 if (n && *n > 0) section(name).deadline_ms = *n;
                                 return n.has_value() && *n > 0;
                               });
  ok = ok &&
       parse_assignments(default_args, "--default", [&](const std::string& name, const std::string& value) {
         auto d = fltmgrd::parse_decision(value);
         if (d) section(name).default_deny = *d;
         return d.has_value();
       });
  std::vector<std::pair<std::string, std::string>> attaches;
  ok = ok &&
       parse_assignments(attach_args, "--attach", [&](const std::string& name, const std::string& value) {
         attaches.emplace_back(name, value);
         return true;
       });
  for (const auto& name : loads) {
    if (!fltport::control::valid_filter_name(name)) {
      say("--load: invalid filter name '%s'", name.c_str());
      ok = false;
    }
  }
  if (!ok) return 2;

  // Plugin search path: --plugin-dir, [fltmgrd] plugin_dir, $FLTPORT_PLUGIN_PATH, the install directory.
  std::vector<std::string> directories = plugin_dirs;
  directories.insert(directories.end(), config.plugin_dirs.begin(), config.plugin_dirs.end());
  if (const char* env = std::getenv("FLTPORT_PLUGIN_PATH")) {
    std::string_view rest = env;
    while (!rest.empty()) {
      const size_t colon = rest.find(':');
      std::string_view part = rest.substr(0, colon);
      if (!part.empty()) directories.emplace_back(part);
      if (colon == std::string_view::npos) break;
      rest.remove_prefix(colon + 1);
    }
  }
  // The install directory as seen from this program's own (any install prefix), then as configured.
  char self[PATH_MAX];
  const ssize_t self_length = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (self_length > 0) {
    const std::string program(self, static_cast<size_t>(self_length));
    directories.push_back(program.substr(0, program.rfind('/') + 1) + FLTPORT_PLUGIN_DIR_FROM_BINDIR);
  }
  directories.emplace_back(FLTPORT_PLUGIN_DIR);

  // Without --foreground: fork now, before any thread, and let the parent report readiness.
  int ready_pipe[2] = {-1, -1};
  if (!foreground) {
    if (::pipe2(ready_pipe, O_CLOEXEC) != 0) {
      say("pipe: %s", std::strerror(errno));
      return 1;
    }
    const pid_t child = ::fork();
    if (child < 0) {
      say("fork: %s", std::strerror(errno));
      return 1;
    }
    if (child > 0) {
      ::close(ready_pipe[1]);
      char byte = 0;
      ssize_t n;
      do n = ::read(ready_pipe[0], &byte, 1);
      while (n < 0 && errno == EINTR);
      if (n == 1) {
        std::printf("fltmgrd: ready\n");
        std::fflush(stdout);
        return 0;
      }
      int status = 0;
      ::waitpid(child, &status, 0);
      return WIFEXITED(status) && WEXITSTATUS(status) != 0 ? WEXITSTATUS(status) : 1;
    }
    ::close(ready_pipe[0]);
    ::setsid();
    const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
      ::dup2(null, STDIN_FILENO);
      ::dup2(null, STDOUT_FILENO);
      ::close(null);
    }
  }

  // Block the signals before any thread starts, so that only sigwait() below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  // Each event waiting for a verdict holds an fd: take the hard limit, so that a flood is met by
  // the filter manager's ceiling (defaults, counted) and not by EMFILE (the kernel denies then).
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }

  const std::string runtime_dir = runtime_directory();
  const fltport::UniqueFd lock = take_lock(runtime_dir);
  if (!lock.valid()) return 1;

  Daemon daemon(directories, std::move(config), runtime_dir);
  Status status = daemon.start_manager();
  if (!status.ok()) {
    say("cannot start the filter manager: %s%s", status.to_string().c_str(),
        status == Status(STATUS_ACCESS_DENIED) ? " (fltmgrd needs CAP_SYS_ADMIN)" : "");
    return 1;
  }
  if (!daemon.start(loads, attaches)) {
    daemon.shutdown();
    return 1;
  }
  status = daemon.start_control_port();
  if (!status.ok()) {
    say("cannot create the control port %s in %s: %s", std::string(control::kPortName).c_str(),
        runtime_dir.c_str(), status.to_string().c_str());
    daemon.shutdown();
    return 1;
  }

  if (foreground) {
    std::printf("fltmgrd: ready\n");
    std::fflush(stdout);
  } else {
    const char byte = 1;
    if (::write(ready_pipe[1], &byte, 1) != 1) say("cannot report readiness to the parent");
    ::close(ready_pipe[1]);
  }
  say("ready (runtime directory %s, pid %d)", runtime_dir.c_str(), static_cast<int>(::getpid()));

  int signal_number = 0;
  while (true) {
    const int rc = sigwait(&signals, &signal_number);
    if (rc == 0) break;
    if (rc != EINTR) {
      say("sigwait: %s", std::strerror(rc));
      break;
    }
  }
  say("%s: shutting down", signal_number == SIGINT ? "SIGINT" : "SIGTERM");
  daemon.stop_filtering();
  // Nothing waits on this host any more; the rest (filters unloading, their services) may take a
  // while, but not forever: a filter stuck in its unload must not keep the daemon alive.
  std::thread watchdog([] {
    std::this_thread::sleep_for(kShutdownBound);
    say("shutdown did not finish within %lld s; exiting anyway",
        static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(kShutdownBound).count()));
    std::fflush(stderr);
    ::_exit(1);
  });
  watchdog.detach();
  daemon.shutdown();
  say("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    say("fatal: %s", e.what());
    return 1;
  }
}
