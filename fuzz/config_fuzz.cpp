// fltmgrd's configuration parser over arbitrary text (a config file is written by an administrator,
// but also by installers and scripts: a bad one must give a line-numbered error, never a crash).
// What is accepted holds to the documented limits.
#include <string>
#include <string_view>

#include "config.hpp"
#include "control/control_protocol.hpp"
#include "fuzz_entry.hpp"

FLTPORT_FUZZ_ENTRY(config) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string error;
  const auto config = fltmgrd::parse_config(text, "fuzz.conf", error);
  if (!config) {
    FUZZ_CHECK(error.rfind("fuzz.conf:", 0) == 0);
    return 0;
  }
  FUZZ_CHECK(config->filters.size() <= fltmgrd::kMaxFilters);
  for (const auto& filter : config->filters) {
    FUZZ_CHECK(fltport::control::valid_filter_name(filter.name));
    FUZZ_CHECK(filter.attach.size() <= fltmgrd::kMaxAttachPerFilter);
    for (const auto& path : filter.attach) FUZZ_CHECK(!path.empty() && path[0] == '/');
    if (filter.deadline_ms) FUZZ_CHECK(*filter.deadline_ms >= 1 && *filter.deadline_ms <= 3600000);
  }
  for (const auto& directory : config->plugin_dirs) FUZZ_CHECK(!directory.empty() && directory[0] == '/');
  // The lookups the daemon makes.
  for (const auto& filter : config->filters) {
    auto& mutable_config = const_cast<fltmgrd::Config&>(*config);
    FUZZ_CHECK(mutable_config.find(filter.name) != nullptr);
  }
  return 0;
}
