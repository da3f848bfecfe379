// Code page conversion: MultiByteToWideChar, WideCharToMultiByte, GetACP. The ANSI code page is
// UTF-8, which is what names, paths and terminals hold on Linux; WCHAR is UTF-32 (wchar_t).
#include <fltport/win32/windows.h>

#include <climits>
#include <cstring>
#include <string>

#include "compat/wide_text.hpp"

namespace {

enum class Page { utf8, cp1252, latin1, unsupported };

bool ansi_alias(UINT code_page) {
  return code_page == CP_ACP || code_page == CP_OEMCP || code_page == CP_THREAD_ACP;
}

Page page_of(UINT code_page) {
  if (ansi_alias(code_page) || code_page == CP_UTF8) return Page::utf8;
  if (code_page == 1252) return Page::cp1252;
  if (code_page == 28591) return Page::latin1;
  return Page::unsupported;
}

// Windows-1252 bytes 0x80..0x9F; the five it leaves undefined map to the C1 control of the same
// value, as Windows maps them.
constexpr char32_t kCp1252High[32] = {0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
                                      0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D, 0x017D, 0x008F,
                                      0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
                                      0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178};

// One UTF-8 sequence at text[0..size): its length (at least 1) and code point; an ill-formed
// sequence yields U+FFFD and consumes its longest well-formed prefix (at least one byte), as the
// Unicode standard recommends and Windows does.
size_t decode_utf8(const unsigned char* text, size_t size, char32_t& code, bool& valid) {
  const unsigned char lead = text[0];
  valid = false;
  code = 0xFFFD;
  if (lead < 0x80) {
    code = lead;
    valid = true;
    return 1;
  }
  size_t length;
  unsigned char low = 0x80, high = 0xBF;  // the allowed range of the second byte
  char32_t value;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
    value = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    value = lead & 0x0F;
    if (lead == 0xE0) low = 0xA0;   // no overlong forms
    if (lead == 0xED) high = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    value = lead & 0x07;
    if (lead == 0xF0) low = 0x90;   // no overlong forms
    if (lead == 0xF4) high = 0x8F;  // nothing above U+10FFFF
  } else {
    return 1;
  }
  for (size_t i = 1; i < length; ++i) {
    if (i >= size) return i;
    const unsigned char next = text[i];
    const unsigned char lo = i == 1 ? low : 0x80;
    const unsigned char hi = i == 1 ? high : 0xBF;
    if (next < lo || next > hi) return i;
    value = (value << 6) | (next & 0x3F);
  }
  code = value;
  valid = true;
  return length;
}

// The byte a single-byte code page has for `code`, or -1.
int single_byte(Page page, char32_t code) {
  if (code < 0x80) return static_cast<int>(code);
  if (page == Page::latin1) return code <= 0xFF ? static_cast<int>(code) : -1;
  if (code >= 0xA0 && code <= 0xFF) return static_cast<int>(code);
  for (int i = 0; i < 32; ++i)
    if (kCp1252High[i] == code) return 0x80 + i;
  return -1;
}

int fail(DWORD error) {
  SetLastError(error);
  return 0;
}

// Copies `count` units to the caller's buffer as Windows' size rules say.
template <class Unit>
int deliver(const Unit* data, size_t count, Unit* out, int out_size) {
  if (count > static_cast<size_t>(INT_MAX)) return fail(ERROR_INSUFFICIENT_BUFFER);
  if (out_size == 0) return static_cast<int>(count);  // the size query
  if (count > static_cast<size_t>(out_size)) return fail(ERROR_INSUFFICIENT_BUFFER);
  std::memcpy(out, data, count * sizeof(Unit));
  return static_cast<int>(count);
}

}  // namespace

extern "C" UINT WINAPI GetACP(void) {
  return CP_UTF8;
}

extern "C" UINT WINAPI GetOEMCP(void) {
  return CP_UTF8;
}

extern "C" int WINAPI MultiByteToWideChar(UINT CodePage, DWORD dwFlags, LPCCH lpMultiByteStr, int cbMultiByte,
                                          LPWSTR lpWideCharStr, int cchWideChar) {
  if (lpMultiByteStr == nullptr || cbMultiByte == 0 || cbMultiByte < -1 || cchWideChar < 0 ||
      (lpWideCharStr == nullptr && cchWideChar != 0) ||
      static_cast<const void*>(lpWideCharStr) == static_cast<const void*>(lpMultiByteStr))
    return fail(ERROR_INVALID_PARAMETER);
  const Page page = page_of(CodePage);
  if (page == Page::unsupported) return fail(ERROR_INVALID_PARAMETER);
  // UTF-8 named as such takes only MB_ERR_INVALID_CHARS; the ANSI aliases keep the flags code
  // written for single-byte ANSI code pages passes.
  const DWORD allowed = CodePage == CP_UTF8
                            ? MB_ERR_INVALID_CHARS
                            : MB_PRECOMPOSED | MB_COMPOSITE | MB_USEGLYPHCHARS | MB_ERR_INVALID_CHARS;
  if ((dwFlags & ~allowed) != 0 || ((dwFlags & MB_PRECOMPOSED) != 0 && (dwFlags & MB_COMPOSITE) != 0))
    return fail(ERROR_INVALID_FLAGS);

  const auto* text = reinterpret_cast<const unsigned char*>(lpMultiByteStr);
  const size_t size = cbMultiByte == -1 ? std::strlen(lpMultiByteStr) + 1 : static_cast<size_t>(cbMultiByte);
  std::wstring out;
  out.reserve(size);
  for (size_t i = 0; i < size;) {
    if (page != Page::utf8) {
      const unsigned char byte = text[i++];
      out.push_back(static_cast<wchar_t>(
          page == Page::cp1252 && byte >= 0x80 && byte < 0xA0 ? kCp1252High[byte - 0x80] : byte));
      continue;
    }
    char32_t code;
    bool valid;
    i += decode_utf8(text + i, size - i, code, valid);
    if (!valid && (dwFlags & MB_ERR_INVALID_CHARS) != 0) return fail(ERROR_NO_UNICODE_TRANSLATION);
    out.push_back(static_cast<wchar_t>(code));
  }
  return deliver(out.data(), out.size(), lpWideCharStr, cchWideChar);
}

extern "C" int WINAPI WideCharToMultiByte(UINT CodePage, DWORD dwFlags, LPCWCH lpWideCharStr, int cchWideChar,
                                          LPSTR lpMultiByteStr, int cbMultiByte, LPCCH lpDefaultChar,
                                          LPBOOL lpUsedDefaultChar) {
  if (lpWideCharStr == nullptr || cchWideChar == 0 || cchWideChar < -1 || cbMultiByte < 0 ||
      (lpMultiByteStr == nullptr && cbMultiByte != 0) ||
      static_cast<const void*>(lpWideCharStr) == static_cast<const void*>(lpMultiByteStr))
    return fail(ERROR_INVALID_PARAMETER);
  const Page page = page_of(CodePage);
  if (page == Page::unsupported) return fail(ERROR_INVALID_PARAMETER);
  if (CodePage == CP_UTF8) {
    if ((dwFlags & ~static_cast<DWORD>(WC_ERR_INVALID_CHARS)) != 0) return fail(ERROR_INVALID_FLAGS);
    if (lpDefaultChar != nullptr || lpUsedDefaultChar != nullptr) return fail(ERROR_INVALID_PARAMETER);
  } else {
    const DWORD allowed = WC_COMPOSITECHECK | WC_DISCARDNS | WC_SEPCHARS | WC_DEFAULTCHAR |
                          WC_NO_BEST_FIT_CHARS | (page == Page::utf8 ? WC_ERR_INVALID_CHARS : 0);
    if ((dwFlags & ~allowed) != 0) return fail(ERROR_INVALID_FLAGS);
  }

  const size_t size = cchWideChar == -1 ? std::wcslen(lpWideCharStr) + 1 : static_cast<size_t>(cchWideChar);
  const char default_char = lpDefaultChar != nullptr ? *lpDefaultChar : '?';
  bool used_default = false;
  std::string out;
  out.reserve(size);
  for (size_t i = 0; i < size; ++i) {
    auto code = static_cast<char32_t>(static_cast<uint32_t>(lpWideCharStr[i]));
    // A UTF-16 surrogate pair that code written for 2-byte WCHARs built: one code point.
    if (code >= 0xD800 && code <= 0xDBFF && i + 1 < size) {
      const auto next = static_cast<char32_t>(static_cast<uint32_t>(lpWideCharStr[i + 1]));
      if (next >= 0xDC00 && next <= 0xDFFF) {
        code = 0x10000 + ((code - 0xD800) << 10) + (next - 0xDC00);
        ++i;
      }
    }
    const bool valid = code <= 0x10FFFF && (code < 0xD800 || code > 0xDFFF);
    if (page == Page::utf8) {
      if (!valid) {
        if ((dwFlags & WC_ERR_INVALID_CHARS) != 0) return fail(ERROR_NO_UNICODE_TRANSLATION);
        code = 0xFFFD;
        used_default = true;
      }
      fltport::compat::append_utf8(code, out);
      continue;
    }
    const int byte = valid ? single_byte(page, code) : -1;
    if (byte < 0) {
      out.push_back(default_char);
      used_default = true;
    } else {
      out.push_back(static_cast<char>(byte));
    }
  }
  if (lpUsedDefaultChar != nullptr) *lpUsedDefaultChar = used_default ? TRUE : FALSE;
  return deliver(out.data(), out.size(), lpMultiByteStr, cbMultiByte);
}
