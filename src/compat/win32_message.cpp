// FormatMessage and where it reads messages: the system message table, the Filter Manager
// library's (fltlib.dll, "loaded" by LoadLibraryEx), or the caller's string. Also the local heap
// FORMAT_MESSAGE_ALLOCATE_BUFFER hands out, and GetSystemDirectory, where fltlib.dll "lives".
#include <dlfcn.h>
#include <fltport/win32/windows.h>
#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <cwchar>
#include <cwctype>
#include <string>
#include <vector>

namespace {

struct Message {
  DWORD id;
  const char* text;  // without the line break every message of a table ends with
};

// The system message table: Windows' US English texts (winerror.h's MessageText) of the Win32
// errors and HRESULTs that fltport's calls produce, and of a few close to them.
constexpr Message kSystemMessages[] = {
    {0, "The operation completed successfully."},
    {1, "Incorrect function."},
    {2, "The system cannot find the file specified."},
    {3, "The system cannot find the path specified."},
    {5, "Access is denied."},
    {6, "The handle is invalid."},
    {8, "Not enough memory resources are available to process this command."},
    {14, "Not enough storage is available to complete this operation."},
    {21, "The device is not ready."},
    {23, "Data error (cyclic redundancy check)."},
    {31, "A device attached to the system is not functioning."},
    {32, "The process cannot access the file because it is being used by another process."},
    {33, "The process cannot access the file because another process has locked a portion of the file."},
    {50, "The request is not supported."},
    {87, "The parameter is incorrect."},
    {112, "There is not enough space on the disk."},
    {120, "This function is not supported on this system."},
    {121, "The semaphore timeout period has expired."},
    {122, "The data area passed to a system call is too small."},
    {123, "The filename, directory name, or volume label syntax is incorrect."},
    {126, "The specified module could not be found."},
    {183, "Cannot create a file when that file already exists."},
    {225,
     "Operation did not complete successfully because the file contains a virus or potentially unwanted "
     "software."},
    {234, "More data is available."},
    {258, "The wait operation timed out."},
    {259, "No more data is available."},
    {298, "Too many posts were made to a semaphore."},
    {317, "The system cannot find message text for message number 0x%1 in the message file for %2."},
    {735, "ERROR_ABANDONED_WAIT_0"},
    {995, "The I/O operation has been aborted because of either a thread exit or an application request."},
    {996, "Overlapped I/O event is not in a signaled state."},
    {997, "Overlapped I/O operation is in progress."},
    {1004, "Invalid flags."},
    {1113, "No mapping for the Unicode character exists in the target multi-byte code page."},
    {1117, "The request could not be performed because of an I/O device error."},
    {1168, "Element not found."},
    {1223, "The operation was canceled by the user."},
    {1225, "The remote computer refused the network connection."},
    {1235, "The request was aborted."},
    {1238,
     "A connection to the server could not be made because the limit on the number of concurrent connections "
     "for "
     "this account has been reached."},
    {1450, "Insufficient system resources exist to complete the requested service."},
    {1460, "This operation returned because the timeout period expired."},
    {1784, "The supplied user buffer is not valid for the requested operation."},
    {1813, "The specified resource type cannot be found in the image file."},
    {1815, "The specified resource language ID cannot be found in the image file."},
    {1816, "Not enough quota is available to process this command."},
    {0x80004001, "Not implemented"},
    {0x80004002, "No such interface supported"},
    {0x80004003, "Invalid pointer"},
    {0x80004004, "Operation aborted"},
    {0x80004005, "Unspecified error"},
    {0x8000FFFF, "Catastrophic failure"},
};

// The Filter Manager's HRESULTs (fltWinError.h's MessageText): fltlib.dll's messages, which
// Windows' system table also holds since Vista.
constexpr Message kFilterManagerMessages[] = {
    {0x001F0001, "The IO was completed by a filter."},
    {0x801F0001, "A handler was not defined by the filter for this operation."},
    {0x801F0002, "A context is already defined for this object."},
    {0x801F0003, "Asynchronous requests are not valid for this operation."},
    {0x801F0004, "Disallow the Fast IO path for this operation."},
    {0x801F0005, "An invalid name request was made.  The name requested cannot be retrieved at this time."},
    {0x801F0006,
     "Posting this operation to a worker thread for further processing is not safe at this time because it "
     "could "
     "lead to a system deadlock."},
    {0x801F0007,
     "The Filter Manager was not initialized when a filter tried to register.  Make sure that the Filter "
     "Manager is "
     "getting loaded as a driver."},
    {0x801F0008,
     "The filter is not ready for attachment to volumes because it has not finished initializing "
     "(FltStartFiltering has not been called)."},
    {0x801F0009,
     "The filter must cleanup any operation specific context at this time because it is being removed from "
     "the "
     "system before the operation is completed by the lower drivers."},
    {0x801F000A,
     "The Filter Manager had an internal error from which it cannot recover, therefore the operation has "
     "been "
     "failed.  This is usually the result of a filter returning an invalid value from a pre-operation "
     "callback."},
    {0x801F000B,
     "The object specified for this action is in the process of being deleted, therefore the action "
     "requested "
     "cannot be completed at this time."},
    {0x801F000C, "Non-paged pool must be used for this type of context."},
    {0x801F000D, "A duplicate handler definition has been provided for an operation."},
    {0x801F000E, "The callback data queue has been disabled."},
    {0x801F000F, "Do not attach the filter to the volume at this time."},
    {0x801F0010, "Do not detach the filter from the volume at this time."},
    {0x801F0011, "An instance already exists at this altitude on the volume specified."},
    {0x801F0012, "An instance already exists with this name on the volume specified."},
    {0x801F0013, "The system could not find the filter specified."},
    {0x801F0014, "The system could not find the volume specified."},
    {0x801F0015, "The system could not find the instance specified."},
    {0x801F0016, "No registered context allocation definition was found for the given request."},
    {0x801F0017, "An invalid parameter was specified during context registration."},
    {0x801F0018,
     "The name requested was not found in Filter Manager's name cache and could not be retrieved from the "
     "file "
     "system."},
    {0x801F0019, "The requested device object does not exist for the given volume."},
    {0x801F001A, "The specified volume is already mounted."},
    {0x801F0020, "No waiter is present for the filter's reply to this message."},
};

template <size_t N>
const char* lookup(const Message (&table)[N], DWORD id) {
  for (const Message& message : table)
    if (message.id == id) return message.text;
  return nullptr;
}

const char* system_message(DWORD id) {
  if (const char* text = lookup(kSystemMessages, id)) return text;
  if (const char* text = lookup(kFilterManagerMessages, id)) return text;
  // An HRESULT_FROM_WIN32 value has its Win32 error's message (_com_error relies on this).
  if ((id & 0xFFFF0000u) == 0x80070000u) return lookup(kSystemMessages, id & 0xFFFFu);
  return nullptr;
}

// ---- Modules ----

// A message module: its handle is its address.
struct Module {
  const char* name;
  std::atomic<long> loads{0};
};
Module g_fltlib{"fltlib", {}};

Module* module_named(const std::string& path) {
  const size_t slash = path.find_last_of("/\\");
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (name == "fltlib" || name == "fltlib.dll") return &g_fltlib;
  return nullptr;
}

Module* loaded_module(HMODULE handle) {
  return handle == static_cast<HMODULE>(&g_fltlib) && g_fltlib.loads.load() > 0 ? &g_fltlib : nullptr;
}

HMODULE load_module(const std::string& path, HANDLE file) {
  if (file != nullptr) {
    SetLastError(ERROR_INVALID_PARAMETER);
    return nullptr;
  }
  Module* module = module_named(path);
  if (module == nullptr) {
    SetLastError(ERROR_MOD_NOT_FOUND);
    return nullptr;
  }
  module->loads.fetch_add(1);
  return static_cast<HMODULE>(module);
}

std::string narrow(LPCWSTR text) {
  std::string out;
  if (text == nullptr) return out;
  const int size = WideCharToMultiByte(CP_UTF8, 0, text, -1, nullptr, 0, nullptr, nullptr);
  if (size <= 0) return out;
  out.resize(static_cast<size_t>(size));
  WideCharToMultiByte(CP_UTF8, 0, text, -1, out.data(), size, nullptr, nullptr);
  out.pop_back();  // the NUL
  return out;
}

std::wstring widen(const char* text, size_t length) {
  std::wstring out;
  if (length == 0) return out;
  const int size = MultiByteToWideChar(CP_UTF8, 0, text, static_cast<int>(length), nullptr, 0);
  if (size <= 0) return out;
  out.resize(static_cast<size_t>(size));
  MultiByteToWideChar(CP_UTF8, 0, text, static_cast<int>(length), out.data(), size);
  return out;
}

std::wstring widen(const char* text) {
  return widen(text, std::strlen(text));
}

// ---- GetSystemDirectory ----

// The directory of the file libfltport was loaded from (the program itself when linked statically).
const std::string& system_directory() {
  static const std::string directory = [] {
    std::string file;
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&GetSystemDirectoryW), &info) != 0 && info.dli_fname != nullptr)
      file = info.dli_fname;
    char resolved[PATH_MAX];
    if (file.empty() || realpath(file.c_str(), resolved) == nullptr) {
      const ssize_t length = readlink("/proc/self/exe", resolved, sizeof resolved - 1);
      if (length <= 0) return std::string();
      resolved[length] = '\0';
    }
    std::string path(resolved);
    const size_t slash = path.find_last_of('/');
    return slash == 0 ? std::string("/") : path.substr(0, slash);
  }();
  return directory;
}

// ---- FormatMessage ----

// The inserts' arguments: a va_list read in order (values kept, since an insert may be used again)
// or a DWORD_PTR array. last() is the highest argument read so far, from which '*' widths go on.
class Arguments {
 public:
  Arguments(va_list* list, bool array) : list_(list), array_(array) {}
  bool present() const { return list_ != nullptr; }
  DWORD_PTR get(size_t index) {
    last_ = std::max(last_, index);
    if (array_) return reinterpret_cast<const DWORD_PTR*>(list_)[index - 1];
    while (read_.size() < index) read_.push_back(va_arg(*list_, DWORD_PTR));
    return read_[index - 1];
  }
  size_t last() const { return last_; }

 private:
  va_list* list_;
  const bool array_;
  std::vector<DWORD_PTR> read_;
  size_t last_ = 0;
};

// Output with Windows' line handling. width 0: line breaks are kept; kNoWrap (the width byte
// 0xFF): regular line breaks become spaces; another width also wraps lines at that many
// characters, after the last space of the line (its trailing spaces dropped) or, when there is
// none, just there.
class Output {
 public:
  static constexpr size_t kNoWrap = 0xFF;
  explicit Output(size_t width) : width_(width) {}

  void put(wchar_t c) {
    line_.push_back(c);
    if (width_ != 0 && width_ != kNoWrap && line_.size() >= width_) wrap();
  }
  void put(const std::wstring& text) {
    for (wchar_t c : text) put(c);
  }
  // %n, %r: a line break of its own.
  void hard_break(const wchar_t* brk) {
    done_ += line_;
    done_ += brk;
    line_.clear();
  }
  // A line break of the message text itself.
  void regular_break() {
    if (width_ == 0)
      hard_break(L"\r\n");
    else
      put(L' ');
  }
  std::wstring finish() { return done_ + line_; }

 private:
  void wrap() {
    const size_t space = line_.rfind(L' ');
    if (space == std::wstring::npos) {
      hard_break(L"\r\n");
      return;
    }
    std::wstring head = line_.substr(0, space);
    while (!head.empty() && head.back() == L' ') head.pop_back();
    std::wstring rest = line_.substr(space + 1);
    done_ += head;
    done_ += L"\r\n";
    line_ = rest;
  }

  const size_t width_;
  std::wstring done_, line_;
};

std::wstring wformat(const wchar_t* format, ...) {
  std::vector<wchar_t> buffer(128);
  while (true) {
    va_list args;
    va_start(args, format);
    const int written = std::vswprintf(buffer.data(), buffer.size(), format, args);
    va_end(args);
    if (written >= 0 && static_cast<size_t>(written) < buffer.size())
      return std::wstring(buffer.data(), written);
    if (buffer.size() >= (size_t{1} << 24)) return std::wstring();
    buffer.resize(buffer.size() * 4);
  }
}

// One %n!spec! insert (spec as printf's, in Microsoft's meaning: in the W form s and c are wide
// and S and C narrow, the other way round in the A form; l/w make them wide, h narrow; integers are
// 32 bits unless I64, ll or I; p is 16 upper-case hex digits). False: a specification it cannot
// format.
bool format_insert(size_t index, const std::wstring& spec, bool ansi, Arguments& args, Output& out) {
  size_t i = 0;
  std::wstring native = L"%";
  while (i < spec.size() && std::wcschr(L"-+ #0", spec[i]) != nullptr) native.push_back(spec[i++]);
  int width = -1, precision = -1;
  size_t next = index;  // the argument the next '*' or the value comes from
  if (i < spec.size() && spec[i] == L'*') {
    width = static_cast<int>(args.get(next));
    next = args.last() + 1;
    ++i;
  } else {
    while (i < spec.size() && std::iswdigit(spec[i])) native.push_back(spec[i++]);
  }
  if (width >= 0) native += std::to_wstring(width);
  if (i < spec.size() && spec[i] == L'.') {
    ++i;
    native.push_back(L'.');
    if (i < spec.size() && spec[i] == L'*') {
      precision = static_cast<int>(args.get(next));
      next = args.last() + 1;
      ++i;
      native += std::to_wstring(std::max(precision, 0));
    } else {
      while (i < spec.size() && std::iswdigit(spec[i])) native.push_back(spec[i++]);
    }
  }
  enum class Size { none, h, hh, l, w, i64, pointer } size = Size::none;
  const std::wstring rest = spec.substr(i);
  auto take = [&](const wchar_t* prefix, Size value) {
    const size_t length = std::wcslen(prefix);
    if (rest.compare(0, length, prefix) != 0) return false;
    size = value;
    i += length;
    return true;
  };
  static_cast<void>(take(L"I64", Size::i64) || take(L"I32", Size::none) || take(L"ll", Size::i64) ||
                    take(L"I", Size::pointer) || take(L"z", Size::pointer) || take(L"hh", Size::hh) ||
                    take(L"h", Size::h) || take(L"l", Size::l) || take(L"w", Size::w));
  if (i + 1 != spec.size()) return false;  // exactly one conversion must be left
  const wchar_t conversion = spec[i];
  const DWORD_PTR value = args.get(next);
  const bool wide_default = !ansi;
  switch (conversion) {
    case L's':
    case L'S': {
      const bool wide = size == Size::l || size == Size::w    ? true
                        : size == Size::h || size == Size::hh ? false
                        : conversion == L's'                  ? wide_default
                                                              : !wide_default;
      std::wstring text;
      if (value == 0)
        text = L"(null)";
      else if (wide)
        text = reinterpret_cast<const wchar_t*>(value);
      else
        text = widen(reinterpret_cast<const char*>(value));
      out.put(wformat((native + L"ls").c_str(), text.c_str()));
      return true;
    }
    case L'c':
    case L'C': {
      const bool wide = size == Size::l || size == Size::w    ? true
                        : size == Size::h || size == Size::hh ? false
                        : conversion == L'c'                  ? wide_default
                                                              : !wide_default;
      const auto c = wide ? static_cast<wchar_t>(static_cast<uint32_t>(value))
                          : static_cast<wchar_t>(static_cast<unsigned char>(value));
      out.put(wformat((native + L"lc").c_str(), static_cast<wint_t>(c)));
      return true;
    }
    case L'd':
    case L'i':
    case L'u':
    case L'o':
    case L'x':
    case L'X': {
      const bool is_signed = conversion == L'd' || conversion == L'i';
      long long number;
      switch (size) {
        case Size::i64:
        case Size::pointer:
          number = static_cast<long long>(value);
          break;
        // Each branch converts on its own: a conditional would convert both to one common type.
        case Size::h:
          number = is_signed ? static_cast<long long>(static_cast<short>(value))
                             : static_cast<long long>(static_cast<unsigned short>(value));
          break;
        case Size::hh:
          number = is_signed ? static_cast<long long>(static_cast<signed char>(value))
                             : static_cast<long long>(static_cast<unsigned char>(value));
          break;
        default:  // 32 bits, l included: long is 32 bits on Windows
          number = is_signed ? static_cast<long long>(static_cast<int32_t>(value))
                             : static_cast<long long>(static_cast<uint32_t>(value));
          break;
      }
      out.put(wformat((native + L"ll" + conversion).c_str(), number));
      return true;
    }
    case L'p':
      out.put(wformat(
          (native + (precision < 0 && native.find(L'.') == std::wstring::npos ? L".16llX" : L"llX")).c_str(),
          static_cast<unsigned long long>(value)));
      return true;
    default:  // floating point is not supported by FormatMessage; anything else is no conversion
      return false;
  }
}

// Formats the message text into `result`. Returns 0 or the error.
DWORD format(DWORD flags, const std::wstring& text, Arguments& args, bool ansi, std::wstring& result) {
  Output out(flags & FORMAT_MESSAGE_MAX_WIDTH_MASK);
  const bool ignore_inserts = (flags & FORMAT_MESSAGE_IGNORE_INSERTS) != 0;
  for (size_t i = 0; i < text.size(); ++i) {
    wchar_t c = text[i];
    if (c == L'\r' || c == L'\n') {
      if (c == L'\r' && i + 1 < text.size() && text[i + 1] == L'\n') ++i;
      out.regular_break();
      continue;
    }
    if (c != L'%') {
      out.put(c);
      continue;
    }
    if (++i == text.size()) return ERROR_INVALID_PARAMETER;  // a lone '%'
    c = text[i];
    if (c == L'0') break;  // the end, without a line break
    if (c >= L'1' && c <= L'9') {
      size_t index = static_cast<size_t>(c - L'0');
      const size_t start = i - 1;
      if (i + 1 < text.size() && std::iswdigit(text[i + 1]))
        index = index * 10 + static_cast<size_t>(text[++i] - L'0');
      std::wstring spec = L"s";
      if (i + 1 < text.size() && text[i + 1] == L'!') {
        const size_t close = text.find(L'!', i + 2);
        if (close == std::wstring::npos) return ERROR_INVALID_PARAMETER;
        spec = text.substr(i + 2, close - i - 2);
        i = close;
      }
      if (ignore_inserts) {
        out.put(text.substr(start, i + 1 - start));
        continue;
      }
      if (!args.present() || !format_insert(index, spec, ansi, args, out)) return ERROR_INVALID_PARAMETER;
      continue;
    }
    switch (c) {
      case L'n':
        out.hard_break(L"\r\n");
        break;
      case L'r':
        out.hard_break(L"\r");
        break;
      case L't':
        out.put(L'\t');
        break;
      default:  // %% %. %! "% " and anything else: the character itself
        out.put(c);
        break;
    }
  }
  result = out.finish();
  return 0;
}

bool language_available(DWORD language) {
  const WORD primary = PRIMARYLANGID(language);
  return primary == LANG_NEUTRAL || primary == LANG_ENGLISH || primary == LANG_INVARIANT;
}

// The message text for the flags and source; 0 or the error.
DWORD message_text(DWORD flags, LPCVOID source, DWORD id, DWORD language, bool ansi, std::wstring& text) {
  const DWORD from =
      flags & (FORMAT_MESSAGE_FROM_STRING | FORMAT_MESSAGE_FROM_HMODULE | FORMAT_MESSAGE_FROM_SYSTEM);
  if ((from & FORMAT_MESSAGE_FROM_STRING) != 0) {  // it takes precedence over the other sources
    if (source == nullptr) return ERROR_INVALID_PARAMETER;
    text = ansi ? widen(static_cast<const char*>(source)) : std::wstring(static_cast<const wchar_t*>(source));
    return 0;
  }
  if (from == 0) return ERROR_INVALID_PARAMETER;
  if (!language_available(language)) return ERROR_RESOURCE_LANG_NOT_FOUND;
  const char* found = nullptr;
  DWORD error = ERROR_MR_MID_NOT_FOUND;
  if ((from & FORMAT_MESSAGE_FROM_HMODULE) != 0) {
    // NULL is the program, which has no message table; fltlib.dll is the one module with one.
    Module* module = source != nullptr ? loaded_module(const_cast<HMODULE>(source)) : nullptr;
    if (module == &g_fltlib)
      found = lookup(kFilterManagerMessages, id);
    else
      error = ERROR_RESOURCE_TYPE_NOT_FOUND;
  }
  if (found == nullptr && (from & FORMAT_MESSAGE_FROM_SYSTEM) != 0) {
    found = system_message(id);
    error = ERROR_MR_MID_NOT_FOUND;
  }
  if (found == nullptr) return error;
  text = widen(found) + L"\r\n";
  return 0;
}

DWORD fail(DWORD error) {
  SetLastError(error);
  return 0;
}

DWORD format_message(DWORD flags, LPCVOID source, DWORD id, DWORD language, va_list* arguments, bool ansi,
                     std::wstring& result) {
  std::wstring text;
  if (DWORD error = message_text(flags, source, id, language, ansi, text); error != 0) return error;
  Arguments args(arguments, (flags & FORMAT_MESSAGE_ARGUMENT_ARRAY) != 0);
  return format(flags, text, args, ansi, result);
}

}  // namespace

extern "C" HLOCAL WINAPI LocalAlloc(UINT uFlags, SIZE_T uBytes) {
  void* block = HeapAlloc(GetProcessHeap(), (uFlags & LMEM_ZEROINIT) != 0 ? HEAP_ZERO_MEMORY : 0, uBytes);
  if (block == nullptr) SetLastError(ERROR_NOT_ENOUGH_MEMORY);
  return block;
}

extern "C" HLOCAL WINAPI LocalFree(HLOCAL hMem) {
  if (hMem != nullptr) HeapFree(GetProcessHeap(), 0, hMem);
  return nullptr;
}

extern "C" DWORD WINAPI FormatMessageW(DWORD dwFlags, LPCVOID lpSource, DWORD dwMessageId, DWORD dwLanguageId,
                                       LPWSTR lpBuffer, DWORD nSize, va_list* Arguments) {
  if (lpBuffer == nullptr) return fail(ERROR_INVALID_PARAMETER);
  const bool allocate = (dwFlags & FORMAT_MESSAGE_ALLOCATE_BUFFER) != 0;
  if (allocate) *reinterpret_cast<LPWSTR*>(lpBuffer) = nullptr;
  std::wstring result;
  if (DWORD error = format_message(dwFlags, lpSource, dwMessageId, dwLanguageId, Arguments, false, result);
      error != 0)
    return fail(error);
  const size_t length = result.size();
  if (allocate) {
    if (length == 0) return fail(ERROR_NO_WORK_DONE);
    const size_t units = std::max<size_t>(nSize, length + 1);
    auto* block = static_cast<LPWSTR>(LocalAlloc(LMEM_FIXED, units * sizeof(WCHAR)));
    if (block == nullptr) return fail(ERROR_NOT_ENOUGH_MEMORY);
    std::wmemcpy(block, result.c_str(), length + 1);
    *reinterpret_cast<LPWSTR*>(lpBuffer) = block;
    return static_cast<DWORD>(length);
  }
  if (length + 1 > nSize) {
    // As much as fits, NUL-terminated, as Windows leaves it.
    if (nSize > 0) {
      std::wmemcpy(lpBuffer, result.c_str(), nSize - 1);
      lpBuffer[nSize - 1] = L'\0';
    }
    return fail(ERROR_INSUFFICIENT_BUFFER);
  }
  std::wmemcpy(lpBuffer, result.c_str(), length + 1);
  if (length == 0) return fail(ERROR_NO_WORK_DONE);
  return static_cast<DWORD>(length);
}

extern "C" DWORD WINAPI FormatMessageA(DWORD dwFlags, LPCVOID lpSource, DWORD dwMessageId, DWORD dwLanguageId,
                                       LPSTR lpBuffer, DWORD nSize, va_list* Arguments) {
  const bool allocate = (dwFlags & FORMAT_MESSAGE_ALLOCATE_BUFFER) != 0;
  if (allocate && lpBuffer != nullptr) *reinterpret_cast<LPSTR*>(lpBuffer) = nullptr;
  std::wstring wide;
  if (DWORD error = format_message(dwFlags, lpSource, dwMessageId, dwLanguageId, Arguments, true, wide);
      error != 0)
    return fail(error);
  const std::string result = narrow(wide.c_str());
  const size_t length = result.size();
  if (length == 0) return fail(ERROR_NO_WORK_DONE);
  if (length >= 32767) return fail(ERROR_INVALID_PARAMETER);  // the A forms' limit
  if (allocate) {
    if (lpBuffer == nullptr) return fail(ERROR_NOT_ENOUGH_MEMORY);
    const size_t units = std::max<size_t>(nSize, length + 1);
    auto* block = static_cast<LPSTR>(LocalAlloc(LMEM_FIXED, units));
    if (block == nullptr) return fail(ERROR_NOT_ENOUGH_MEMORY);
    std::memcpy(block, result.c_str(), length + 1);
    *reinterpret_cast<LPSTR*>(lpBuffer) = block;
    return static_cast<DWORD>(length);
  }
  if (length + 1 > nSize) return fail(ERROR_INSUFFICIENT_BUFFER);  // the buffer is left untouched
  if (lpBuffer == nullptr) return fail(ERROR_INVALID_PARAMETER);
  std::memcpy(lpBuffer, result.c_str(), length + 1);
  return static_cast<DWORD>(length);
}

extern "C" HMODULE WINAPI LoadLibraryExW(LPCWSTR lpLibFileName, HANDLE hFile, DWORD) {
  if (lpLibFileName == nullptr) {
    SetLastError(ERROR_INVALID_PARAMETER);
    return nullptr;
  }
  return load_module(narrow(lpLibFileName), hFile);
}

extern "C" HMODULE WINAPI LoadLibraryExA(LPCSTR lpLibFileName, HANDLE hFile, DWORD) {
  if (lpLibFileName == nullptr) {
    SetLastError(ERROR_INVALID_PARAMETER);
    return nullptr;
  }
  return load_module(lpLibFileName, hFile);
}

extern "C" HMODULE WINAPI LoadLibraryW(LPCWSTR lpLibFileName) {
  return LoadLibraryExW(lpLibFileName, nullptr, 0);
}

extern "C" HMODULE WINAPI LoadLibraryA(LPCSTR lpLibFileName) {
  return LoadLibraryExA(lpLibFileName, nullptr, 0);
}

extern "C" BOOL WINAPI FreeLibrary(HMODULE hLibModule) {
  Module* module = hLibModule == static_cast<HMODULE>(&g_fltlib) ? &g_fltlib : nullptr;
  long loads = module != nullptr ? module->loads.load() : 0;
  while (loads > 0 && !module->loads.compare_exchange_weak(loads, loads - 1)) {
  }
  if (loads <= 0) {
    SetLastError(ERROR_MOD_NOT_FOUND);
    return FALSE;
  }
  return TRUE;
}

extern "C" UINT WINAPI GetSystemDirectoryW(LPWSTR lpBuffer, UINT uSize) {
  const std::string& directory = system_directory();
  if (directory.empty()) return fail(ERROR_PATH_NOT_FOUND);
  const std::wstring wide = widen(directory.c_str());
  if (lpBuffer == nullptr || uSize < wide.size() + 1) return static_cast<UINT>(wide.size() + 1);
  std::wmemcpy(lpBuffer, wide.c_str(), wide.size() + 1);
  return static_cast<UINT>(wide.size());
}

extern "C" UINT WINAPI GetSystemDirectoryA(LPSTR lpBuffer, UINT uSize) {
  const std::string& directory = system_directory();
  if (directory.empty()) return fail(ERROR_PATH_NOT_FOUND);
  if (lpBuffer == nullptr || uSize < directory.size() + 1) return static_cast<UINT>(directory.size() + 1);
  std::memcpy(lpBuffer, directory.c_str(), directory.size() + 1);
  return static_cast<UINT>(directory.size());
}
