#include "config.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "control/control_protocol.hpp"

namespace fltmgrd {

FilterConfig* Config::find(std::string_view name) {
  for (auto& filter : filters)
    if (filter.name == name) return &filter;
  return nullptr;
}

namespace {

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r')) text.remove_suffix(1);
  return text;
}

std::optional<bool> parse_bool(std::string_view text) {
  if (text == "true" || text == "yes" || text == "1") return true;
  if (text == "false" || text == "no" || text == "0") return false;
  return std::nullopt;
}

}  // namespace

std::optional<uint32_t> parse_uint(std::string_view text, uint32_t max) {
  auto value = fltport::control::parse_u32(text);
  if (!value || *value > max) return std::nullopt;
  return value;
}

std::optional<bool> parse_decision(std::string_view text) {
  if (text == "allow") return false;
  if (text == "deny") return true;
  return std::nullopt;
}

std::optional<std::pair<std::string, std::string>> split_assignment(std::string_view text) {
  const size_t equals = text.find('=');
  if (equals == std::string_view::npos || equals == 0 || equals + 1 == text.size()) return std::nullopt;
  return std::make_pair(std::string(text.substr(0, equals)), std::string(text.substr(equals + 1)));
}

std::optional<Config> parse_config(std::string_view text, const std::string& source, std::string& error) {
  Config config;
  enum class Section { none, daemon, filter } section = Section::none;
  FilterConfig* filter = nullptr;
  size_t line_number = 0;
  auto fail = [&](const std::string& what) {
    error = source + ":" + std::to_string(line_number) + ": " + what;
    return std::nullopt;
  };
  if (text.size() > kMaxConfigSize) {
    line_number = 0;
    return fail("file larger than " + std::to_string(kMaxConfigSize) + " bytes");
  }
  size_t begin = 0;
  while (begin < text.size()) {
    ++line_number;
    size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    std::string_view raw = text.substr(begin, end - begin);
    begin = end + 1;
    if (raw.size() > kMaxLineLength) return fail("line longer than " + std::to_string(kMaxLineLength) + " bytes");
    for (unsigned char c : raw)
      if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7F) return fail("control character in line");
    std::string_view line = trim(raw);
    if (line.empty() || line.front() == '#' || line.front() == ';') continue;
    if (line.front() == '[') {
      if (line.back() != ']') return fail("section header without closing ']'");
      std::string_view inside = trim(line.substr(1, line.size() - 2));
      if (inside == "fltmgrd") {
        section = Section::daemon;
        filter = nullptr;
        continue;
      }
      if (inside.substr(0, 7) != "filter " && inside.substr(0, 7) != "filter\t")
        return fail("unknown section '[" + std::string(inside) + "]' (expected [fltmgrd] or [filter NAME])");
      std::string_view name = trim(inside.substr(7));
      if (!fltport::control::valid_filter_name(name))
        return fail("invalid filter name '" + std::string(name) + "' (letters, digits, '_', '-', '.')");
      if (config.find(name) != nullptr) return fail("duplicate section [filter " + std::string(name) + "]");
      if (config.filters.size() >= kMaxFilters) return fail("too many filter sections");
      config.filters.push_back(FilterConfig{});
      filter = &config.filters.back();
      filter->name = std::string(name);
      filter->line = line_number;
      section = Section::filter;
      continue;
    }
    const size_t equals = line.find('=');
    if (equals == std::string_view::npos) return fail("expected 'key = value' or a [section]");
    const std::string_view key = trim(line.substr(0, equals));
    const std::string_view value = trim(line.substr(equals + 1));
    if (key.empty()) return fail("empty key");
    if (value.empty()) return fail("empty value for '" + std::string(key) + "'");
    switch (section) {
      case Section::none:
        return fail("'" + std::string(key) + "' outside a section");
      case Section::daemon:
        if (key == "plugin_dir") {
          if (value.front() != '/') return fail("plugin_dir must be an absolute path");
          config.plugin_dirs.emplace_back(value);
        } else {
          return fail("unknown key '" + std::string(key) + "' in [fltmgrd] (expected plugin_dir)");
        }
        break;
      case Section::filter:
        if (key == "altitude") {
          auto n = parse_uint(value, UINT32_MAX);
          if (!n) return fail("altitude must be an unsigned 32-bit number, not '" + std::string(value) + "'");
          filter->altitude = *n;
        } else if (key == "deadline_ms") {
          auto n = parse_uint(value, 3600 * 1000);
          if (!n || *n == 0)
            return fail("deadline_ms must be a number of milliseconds in 1..3600000, not '" + std::string(value) + "'");
          filter->deadline_ms = *n;
        } else if (key == "default") {
          auto d = parse_decision(value);
          if (!d) return fail("default must be allow or deny, not '" + std::string(value) + "'");
          filter->default_deny = *d;
        } else if (key == "attach") {
          if (value.front() != '/') return fail("attach needs an absolute directory path");
          if (filter->attach.size() >= kMaxAttachPerFilter) return fail("too many attach lines");
          filter->attach.emplace_back(value);
        } else if (key == "load") {
          auto b = parse_bool(value);
          if (!b) return fail("load must be true or false, not '" + std::string(value) + "'");
          filter->load = *b;
        } else {
          return fail("unknown key '" + std::string(key) +
                      "' (expected altitude, deadline_ms, default, attach or load)");
        }
        break;
    }
  }
  return config;
}

std::optional<Config> load_config(const std::string& path, std::string& error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = path + ": " + std::strerror(errno);
    return std::nullopt;
  }
  std::string text;
  char buffer[65536];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error = path + ": " + std::strerror(errno);
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
    if (text.size() > kMaxConfigSize) {
      ::close(fd);
      error = path + ": file larger than " + std::to_string(kMaxConfigSize) + " bytes";
      return std::nullopt;
    }
  }
  ::close(fd);
  return parse_config(text, path, error);
}

}  // namespace fltmgrd
