// Windows strings are WCHAR (wchar_t: UTF-32 on Linux); fltport's names and paths are UTF-8.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace fltport::compat {

// Appends the UTF-8 bytes of `code`, a Unicode scalar value.
inline void append_utf8(char32_t code, std::string& out) {
  if (code < 0x80) {
    out.push_back(static_cast<char>(code));
  } else if (code < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code >> 6)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
  } else if (code < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (code >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
  }
}

// UTF-32 -> UTF-8. False (and `out` unspecified) for a value that is not a Unicode scalar value.
inline bool utf8_from_wide(const wchar_t* text, size_t length, std::string& out) {
  out.clear();
  out.reserve(length);
  for (size_t i = 0; i < length; ++i) {
    const auto c = static_cast<char32_t>(text[i]);
    if (c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return false;
    append_utf8(c, out);
  }
  return true;
}

// A port name as transport::normalize_port_name checks it: what is not valid text becomes a
// control character, which that check refuses like any other character a name may not hold.
inline std::string port_name_from_wide(const wchar_t* name, size_t length) {
  std::string utf8;
  return utf8_from_wide(name, length, utf8) ? utf8 : std::string("\x01");
}

}  // namespace fltport::compat
