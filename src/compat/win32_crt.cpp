// The Microsoft C runtime functions of <fltport/win32/fltport_mscrt.h>: the invalid parameter
// handler, sprintf_s/vsprintf_s, fopen_s, the case-insensitive comparisons, and the printf family
// read in Microsoft's format dialect.
#include <fltport/win32/windows.h>
#include <strings.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cwctype>
#include <string>

namespace {

std::atomic<_invalid_parameter_handler> g_handler{nullptr};

// What Microsoft's CRT does with a bad argument: errno first, then the handler; the default one
// ends the process, as Windows' fast fail does. `function` only names the culprit on stderr.
void invalid_parameter(const char* function, int error) {
  errno = error;
  if (_invalid_parameter_handler handler = g_handler.load()) {
    handler(nullptr, nullptr, nullptr, 0, 0);
    errno = error;  // the handler may have used errno itself
    return;
  }
  std::fprintf(stderr,
               "fltport: invalid parameter passed to %s; the process ends, as with Microsoft's C runtime "
               "(_set_invalid_parameter_handler installs a handler that returns instead)\n",
               function);
  std::fflush(stderr);
  std::abort();
}

// Rewrites a format of Microsoft's printf dialect into glibc's: the same conversions consume the
// same arguments. False for %n, which Microsoft's CRT refuses.
bool translate_format(const char* format, std::string& out) {
  out.clear();
  const char* p = format;
  while (*p != '\0') {
    if (*p != '%') {
      out.push_back(*p++);
      continue;
    }
    out.push_back(*p++);
    if (*p == '%') {
      out.push_back(*p++);
      continue;
    }
    while (*p != '\0' && std::strchr("-+ #0", *p) != nullptr) out.push_back(*p++);
    if (*p == '*') {
      out.push_back(*p++);
    } else {
      while (std::isdigit(static_cast<unsigned char>(*p))) out.push_back(*p++);
    }
    bool has_precision = false;
    if (*p == '.') {
      has_precision = true;
      out.push_back(*p++);
      if (*p == '*') {
        out.push_back(*p++);
      } else {
        while (std::isdigit(static_cast<unsigned char>(*p))) out.push_back(*p++);
      }
    }
    // The size prefix, in Microsoft's meaning.
    enum class Size { none, h, hh, l, ll, i32, i64, pointer, w, big_l, j, t } size = Size::none;
    if (std::strncmp(p, "I64", 3) == 0) {
      size = Size::i64, p += 3;
    } else if (std::strncmp(p, "I32", 3) == 0) {
      size = Size::i32, p += 3;
    } else if (*p == 'I' || *p == 'z') {
      size = Size::pointer, ++p;
    } else if (std::strncmp(p, "ll", 2) == 0) {
      size = Size::ll, p += 2;
    } else if (std::strncmp(p, "hh", 2) == 0) {
      size = Size::hh, p += 2;
    } else if (*p == 'l') {
      size = Size::l, ++p;
    } else if (*p == 'h') {
      size = Size::h, ++p;
    } else if (*p == 'w') {
      size = Size::w, ++p;
    } else if (*p == 'L') {
      size = Size::big_l, ++p;
    } else if (*p == 'j') {
      size = Size::j, ++p;
    } else if (*p == 't') {
      size = Size::t, ++p;
    }
    const char conversion = *p;
    if (conversion == '\0') break;  // an incomplete specification at the end: printed as it is
    ++p;
    const bool narrow = size == Size::h || size == Size::hh;
    const bool wide = size == Size::l || size == Size::w;
    switch (conversion) {
      case 'd':
      case 'i':
      case 'o':
      case 'u':
      case 'x':
      case 'X':
        // long is 32 bits on Windows: %ld reads an int.
        out += size == Size::h                                                ? "h"
               : size == Size::hh                                             ? "hh"
               : size == Size::ll || size == Size::i64 || size == Size::big_l ? "ll"
               : size == Size::pointer                                        ? "z"
               : size == Size::j                                              ? "j"
               : size == Size::t                                              ? "t"
                                                                              : "";
        out.push_back(conversion);
        break;
      case 'c':
        out += wide ? "lc" : "c";
        break;
      case 'C':  // the other width's character
        out += narrow ? "c" : "lc";
        break;
      case 's':
        out += wide ? "ls" : "s";
        break;
      case 'S':  // the other width's string
        out += narrow ? "s" : "ls";
        break;
      case 'p':
        // 16 upper-case hex digits, without 0x.
        if (!has_precision) out += ".16";
        out += "llX";
        break;
      case 'n':
        return false;
      default:  // floating point (long double is double on Windows: drop L) and anything else
        out.push_back(conversion);
        break;
    }
  }
  return true;
}

int fold(int c) {
  return std::tolower(static_cast<unsigned char>(c));
}

}  // namespace

extern "C" _invalid_parameter_handler __cdecl _set_invalid_parameter_handler(
    _invalid_parameter_handler handler) {
  return g_handler.exchange(handler);
}

extern "C" _invalid_parameter_handler __cdecl _get_invalid_parameter_handler(void) {
  return g_handler.load();
}

extern "C" int __cdecl vsprintf_s(char* buffer, size_t sizeOfBuffer, const char* format, va_list argptr) {
  if (format == nullptr || buffer == nullptr || sizeOfBuffer == 0) {
    if (buffer != nullptr && sizeOfBuffer != 0) buffer[0] = '\0';
    invalid_parameter("vsprintf_s", EINVAL);
    return -1;
  }
  std::string native;
  if (!translate_format(format, native)) {
    buffer[0] = '\0';
    invalid_parameter("vsprintf_s", EINVAL);
    return -1;
  }
  const int written = std::vsnprintf(buffer, sizeOfBuffer, native.c_str(), argptr);
  if (written < 0) {
    buffer[0] = '\0';
    return -1;
  }
  if (static_cast<size_t>(written) >= sizeOfBuffer) {
    buffer[0] = '\0';
    invalid_parameter("sprintf_s", ERANGE);
    return -1;
  }
  return written;
}

extern "C" int __cdecl sprintf_s(char* buffer, size_t sizeOfBuffer, const char* format, ...) {
  va_list args;
  va_start(args, format);
  const int written = vsprintf_s(buffer, sizeOfBuffer, format, args);
  va_end(args);
  return written;
}

extern "C" errno_t __cdecl fopen_s(FILE** pFile, const char* filename, const char* mode) {
  if (pFile == nullptr) {
    invalid_parameter("fopen_s", EINVAL);
    return EINVAL;
  }
  *pFile = nullptr;
  if (filename == nullptr || mode == nullptr || mode[0] == '\0') {
    invalid_parameter("fopen_s", EINVAL);
    return EINVAL;
  }
  // Microsoft's mode grammar: r, w or a; then + once, at most one of t/b, c/n, S/R, and T, D, N,
  // x (with w), each once; then ",ccs=ENCODING". Only what glibc has a meaning for is passed on.
  std::string native(1, mode[0]);
  bool valid = mode[0] == 'r' || mode[0] == 'w' || mode[0] == 'a';
  std::string seen;
  const char* p = mode + 1;
  for (; valid && *p != '\0' && *p != ','; ++p) {
    const char c = *p;
    static const char* const kGroups[] = {"+", "tb", "cn", "SR", "T", "D", "N", "x"};
    const char* group = nullptr;
    for (const char* g : kGroups)
      if (std::strchr(g, c) != nullptr) group = g;
    if (group == nullptr || seen.find(group) != std::string::npos || (c == 'x' && mode[0] != 'w')) {
      valid = false;
      break;
    }
    seen += group;
    if (c == '+' || c == 'x') native.push_back(c);
    if (c == 'N') native.push_back('e');  // not inherited: close on exec
  }
  if (valid && *p == ',') {
    ++p;
    while (*p == ' ') ++p;
    valid = std::strncmp(p, "ccs=", 4) == 0 &&
            (strcasecmp(p + 4, "UTF-8") == 0 || strcasecmp(p + 4, "UTF-16LE") == 0 ||
             strcasecmp(p + 4, "UNICODE") == 0);
  }
  if (!valid) {
    invalid_parameter("fopen_s", EINVAL);
    return EINVAL;
  }
  if (filename[0] == '\0') return EINVAL;  // as Microsoft's: an error, not an invalid parameter
  *pFile = std::fopen(filename, native.c_str());
  return *pFile != nullptr ? 0 : errno;
}

extern "C" int __cdecl _strnicmp(const char* string1, const char* string2, size_t count) {
  if (string1 == nullptr || string2 == nullptr) {
    invalid_parameter("_strnicmp", EINVAL);
    return _NLSCMPERROR;
  }
  for (size_t i = 0; i < count; ++i) {
    const int a = fold(string1[i]), b = fold(string2[i]);
    if (a != b || a == 0) return a - b;
  }
  return 0;
}

extern "C" int __cdecl _stricmp(const char* string1, const char* string2) {
  if (string1 == nullptr || string2 == nullptr) {
    invalid_parameter("_stricmp", EINVAL);
    return _NLSCMPERROR;
  }
  return _strnicmp(string1, string2, SIZE_MAX);
}

extern "C" int __cdecl _wcsnicmp(const wchar_t* string1, const wchar_t* string2, size_t count) {
  if (string1 == nullptr || string2 == nullptr) {
    invalid_parameter("_wcsnicmp", EINVAL);
    return _NLSCMPERROR;
  }
  for (size_t i = 0; i < count; ++i) {
    const auto a = static_cast<wint_t>(std::towlower(static_cast<wint_t>(string1[i])));
    const auto b = static_cast<wint_t>(std::towlower(static_cast<wint_t>(string2[i])));
    if (a != b) return a < b ? -1 : 1;
    if (a == 0) break;
  }
  return 0;
}

extern "C" int __cdecl _wcsicmp(const wchar_t* string1, const wchar_t* string2) {
  if (string1 == nullptr || string2 == nullptr) {
    invalid_parameter("_wcsicmp", EINVAL);
    return _NLSCMPERROR;
  }
  return _wcsnicmp(string1, string2, SIZE_MAX);
}

// ---- printf in Microsoft's dialect ----

extern "C" int FltportMsvcVfprintf(FILE* stream, const char* format, va_list args) {
  std::string native;
  if (format == nullptr || stream == nullptr || !translate_format(format, native)) {
    invalid_parameter("printf", EINVAL);
    return -1;
  }
  return std::vfprintf(stream, native.c_str(), args);
}

extern "C" int FltportMsvcVprintf(const char* format, va_list args) {
  return FltportMsvcVfprintf(stdout, format, args);
}

extern "C" int FltportMsvcVsnprintf(char* buffer, size_t count, const char* format, va_list args) {
  std::string native;
  if (format == nullptr || !translate_format(format, native)) {
    invalid_parameter("snprintf", EINVAL);
    return -1;
  }
  return std::vsnprintf(buffer, count, native.c_str(), args);
}

extern "C" int FltportMsvcVsprintf(char* buffer, const char* format, va_list args) {
  std::string native;
  if (buffer == nullptr || format == nullptr || !translate_format(format, native)) {
    invalid_parameter("sprintf", EINVAL);
    return -1;
  }
  return std::vsprintf(buffer, native.c_str(), args);
}

extern "C" int FltportMsvcFprintf(FILE* stream, const char* format, ...) {
  va_list args;
  va_start(args, format);
  const int written = FltportMsvcVfprintf(stream, format, args);
  va_end(args);
  return written;
}

extern "C" int FltportMsvcPrintf(const char* format, ...) {
  va_list args;
  va_start(args, format);
  const int written = FltportMsvcVfprintf(stdout, format, args);
  va_end(args);
  return written;
}

extern "C" int FltportMsvcSprintf(char* buffer, const char* format, ...) {
  va_list args;
  va_start(args, format);
  const int written = FltportMsvcVsprintf(buffer, format, args);
  va_end(args);
  return written;
}

extern "C" int FltportMsvcSnprintf(char* buffer, size_t count, const char* format, ...) {
  va_list args;
  va_start(args, format);
  const int written = FltportMsvcVsnprintf(buffer, count, format, args);
  va_end(args);
  return written;
}
