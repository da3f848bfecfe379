// fltmgrd's configuration file: a small INI dialect parsed by hand (see README.md in this folder).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fltmgrd {

inline constexpr size_t kMaxLineLength = 4096;
inline constexpr size_t kMaxConfigSize = 1024 * 1024;
inline constexpr size_t kMaxFilters = 256;
inline constexpr size_t kMaxAttachPerFilter = 1024;

struct FilterConfig {
  std::string name;
  std::optional<uint32_t> altitude;
  std::optional<uint32_t> deadline_ms;
  std::optional<bool> default_deny;  // default = allow|deny
  std::vector<std::string> attach;
  bool load = false;
  size_t line = 0;  // where the section starts
};

struct Config {
  std::vector<std::string> plugin_dirs;  // [fltmgrd] plugin_dir
  std::vector<FilterConfig> filters;

  FilterConfig* find(std::string_view name);
};

// Parses `text` (the contents of `source`, used in messages). On failure returns nullopt and sets
// `error` to "SOURCE:LINE: what".
std::optional<Config> parse_config(std::string_view text, const std::string& source, std::string& error);
// Reads and parses a file (at most kMaxConfigSize bytes).
std::optional<Config> load_config(const std::string& path, std::string& error);

// "NAME=VALUE" as used by --attach, --altitude, ...; nullopt without '=' or with an empty side.
std::optional<std::pair<std::string, std::string>> split_assignment(std::string_view text);
std::optional<uint32_t> parse_uint(std::string_view text, uint32_t max);
// "allow" -> false, "deny" -> true.
std::optional<bool> parse_decision(std::string_view text);

}  // namespace fltmgrd
