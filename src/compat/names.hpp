// Windows object names arrive as WCHAR strings; port names are printable ASCII (see
// transport::normalize_port_name), so anything else is kept as a character that name checks refuse.
#pragma once

#include <string>

namespace fltport::compat {

inline std::string narrow_name(const wchar_t* name, size_t length) {
  std::string narrow;
  narrow.reserve(length);
  for (size_t i = 0; i < length; ++i) {
    const auto c = static_cast<unsigned long>(name[i]);
    narrow.push_back(c < 0x80 ? static_cast<char>(c) : '\x01');
  }
  return narrow;
}

}  // namespace fltport::compat
