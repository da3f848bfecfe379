// The fltuser management calls (FilterLoad, FilterAttach, FilterFindFirst, ...) over fltmgrd's
// control port. The protocol (src/control/control_protocol.hpp) is shared so that the
// daemon, fltmc and these calls share one definition.
#include <fltport/fltuser.h>

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cstddef>
#include <cstring>
#include <cwchar>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "compat/handle_table.hpp"
#include "compat/wide_text.hpp"
#include "control/control_client.hpp"

namespace fltport::compat {
namespace {

namespace control = fltport::control;

constexpr HRESULT kNoMoreItems = HRESULT_FROM_WIN32(ERROR_NO_MORE_ITEMS);
constexpr HRESULT kInsufficientBuffer = HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER);
constexpr HRESULT kNotRunning = HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND);
constexpr size_t kMaxWideName = control::kMaxArgumentSize;  // characters

// WCHAR (UTF-32 on Linux) -> UTF-8. False for an empty or too long string, or a code point that
// is not one.
bool to_utf8(LPCWSTR text, std::string& out) {
  out.clear();
  if (text == nullptr) return false;
  const size_t length = wcsnlen(text, kMaxWideName + 1);
  return length != 0 && length <= kMaxWideName && utf8_from_wide(text, length, out);
}

// UTF-8 -> WCHAR; a byte that does not start a well-formed sequence stands for itself (U+00XX).
std::wstring to_wide(const std::string& text) {
  std::wstring out;
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    size_t length = c < 0x80             ? 1
                    : (c & 0xE0) == 0xC0 ? 2
                    : (c & 0xF0) == 0xE0 ? 3
                    : (c & 0xF8) == 0xF0 ? 4
                                         : 0;
    bool valid = length != 0 && i + length <= text.size();
    uint32_t code = length == 1 ? c : length == 2 ? (c & 0x1F) : length == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; valid && k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      valid = (next & 0xC0) == 0x80;
      code = (code << 6) | (next & 0x3F);
    }
    if (valid && length > 1 &&
        (code < (length == 2   ? 0x80u
                 : length == 3 ? 0x800u
                               : 0x10000u) ||
         code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)))
      valid = false;
    if (!valid) {
      out.push_back(static_cast<wchar_t>(c));
      ++i;
      continue;
    }
    out.push_back(static_cast<wchar_t>(code));
    i += length;
  }
  return out;
}

HRESULT failure(const control::CallResult& result) {
  if (!result.reached && result.status == Status(STATUS_OBJECT_NAME_NOT_FOUND)) return kNotRunning;
  return result.status.to_hresult();
}

control::CallResult run(const std::string& command, std::vector<std::string> arguments) {
  control::Request request;
  request.command = command;
  request.arguments = std::move(arguments);
  return control::call(std::move(request));
}

// One entry of a Find enumeration, already laid out as the information class wants it.
using Entry = std::vector<std::byte>;

// Snapshot of a list, walked by FindNext.
class FindHandle final : public HandleObject {
 public:
  enum class Kind { filters, instances, volumes, volume_instances };
  FindHandle(Kind kind, std::vector<Entry> entries) : kind(kind), entries_(std::move(entries)) {}
  void close() noexcept override {}

  // Copies the next entry into the buffer and advances.
  HRESULT next(LPVOID buffer, DWORD size, LPDWORD returned) {
    std::lock_guard lock(mutex_);
    if (position_ >= entries_.size()) return kNoMoreItems;
    const Entry& entry = entries_[position_];
    *returned = static_cast<DWORD>(entry.size());
    if (buffer == nullptr || size < entry.size()) return kInsufficientBuffer;
    std::memcpy(buffer, entry.data(), entry.size());
    ++position_;
    return S_OK;
  }

  const Kind kind;

 private:
  std::mutex mutex_;
  std::vector<Entry> entries_;
  size_t position_ = 0;
};

size_t align4(size_t n) {
  return (n + 3) & ~size_t{3};
}

bool fits_ushort(size_t n) {
  return n <= 0xFFFF;
}

Entry filter_entry(const std::string& name, ULONG instances, ULONG frame) {
  const std::wstring wide = to_wide(name);
  const size_t name_bytes = wide.size() * sizeof(WCHAR);
  const size_t size = std::max(offsetof(FILTER_FULL_INFORMATION, FilterNameBuffer) + name_bytes,
                               sizeof(FILTER_FULL_INFORMATION));
  Entry entry(align4(size));
  FILTER_FULL_INFORMATION header{};
  header.NextEntryOffset = 0;
  header.FrameID = frame;
  header.NumberOfInstances = instances;
  header.FilterNameLength = static_cast<USHORT>(name_bytes);
  std::memcpy(entry.data(), &header, offsetof(FILTER_FULL_INFORMATION, FilterNameBuffer));
  std::memcpy(entry.data() + offsetof(FILTER_FULL_INFORMATION, FilterNameBuffer), wide.data(), name_bytes);
  return entry;
}

Entry volume_entry(const std::string& path) {
  const std::wstring wide = to_wide(path);
  const size_t name_bytes = wide.size() * sizeof(WCHAR);
  const size_t size = std::max(offsetof(FILTER_VOLUME_BASIC_INFORMATION, FilterVolumeName) + name_bytes,
                               sizeof(FILTER_VOLUME_BASIC_INFORMATION));
  Entry entry(align4(size));
  const auto length = static_cast<USHORT>(name_bytes);
  std::memcpy(entry.data() + offsetof(FILTER_VOLUME_BASIC_INFORMATION, FilterVolumeNameLength), &length,
              sizeof length);
  std::memcpy(entry.data() + offsetof(FILTER_VOLUME_BASIC_INFORMATION, FilterVolumeName), wide.data(),
              name_bytes);
  return entry;
}

// INSTANCE_FULL_INFORMATION followed by instance name, altitude, volume and filter name.
bool instance_entry(const std::string& instance, const std::string& altitude, const std::string& volume,
                    const std::string& filter, Entry& entry) {
  const std::wstring strings[4] = {to_wide(instance), to_wide(altitude), to_wide(volume), to_wide(filter)};
  size_t offset = align4(sizeof(INSTANCE_FULL_INFORMATION));
  USHORT offsets[4], lengths[4];
  for (int i = 0; i < 4; ++i) {
    const size_t bytes = strings[i].size() * sizeof(WCHAR);
    if (!fits_ushort(offset) || !fits_ushort(bytes)) return false;
    offsets[i] = static_cast<USHORT>(offset);
    lengths[i] = static_cast<USHORT>(bytes);
    offset = align4(offset + bytes);
  }
  entry.assign(offset, std::byte{0});
  INSTANCE_FULL_INFORMATION header{};
  header.NextEntryOffset = 0;
  header.InstanceNameLength = lengths[0];
  header.InstanceNameBufferOffset = offsets[0];
  header.AltitudeLength = lengths[1];
  header.AltitudeBufferOffset = offsets[1];
  header.VolumeNameLength = lengths[2];
  header.VolumeNameBufferOffset = offsets[2];
  header.FilterNameLength = lengths[3];
  header.FilterNameBufferOffset = offsets[3];
  std::memcpy(entry.data(), &header, sizeof header);
  for (int i = 0; i < 4; ++i) std::memcpy(entry.data() + offsets[i], strings[i].data(), lengths[i]);
  return true;
}

const std::string& cell(const control::Table& table, const std::vector<std::string>& row, const char* name) {
  static const std::string empty;
  const int index = table.column(name);
  return index < 0 ? empty : row[static_cast<size_t>(index)];
}

ULONG to_ulong(const std::string& digits) {
  const unsigned long long value = std::strtoull(digits.c_str(), nullptr, 10);
  return value > 0xFFFFFFFFull ? 0xFFFFFFFFu : static_cast<ULONG>(value);
}

// The common part of the FindFirst calls.
HRESULT find_first(FindHandle::Kind kind, std::vector<Entry> entries, LPVOID buffer, DWORD size,
                   LPDWORD returned, LPHANDLE find) {
  auto handle = std::make_shared<FindHandle>(kind, std::move(entries));
  const HRESULT hr = handle->next(buffer, size, returned);
  if (hr != S_OK) return hr;  // nothing to walk on: no handle
  *find = HandleTable::instance().insert(handle);
  return S_OK;
}

HRESULT find_next(FindHandle::Kind kind, HANDLE find, LPVOID buffer, DWORD size, LPDWORD returned) {
  if (returned == nullptr) return E_INVALIDARG;
  *returned = 0;
  auto handle = HandleTable::instance().find<FindHandle>(find);
  if (!handle || handle->kind != kind) return HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
  return handle->next(buffer, size, returned);
}

HRESULT find_close(FindHandle::Kind kind, HANDLE find) {
  auto handle = HandleTable::instance().find<FindHandle>(find);
  if (!handle || handle->kind != kind) return HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
  if (auto removed = HandleTable::instance().remove(find)) removed->close();
  return S_OK;
}

HRESULT name_argument(LPCWSTR name, std::string& out) {
  if (!to_utf8(name, out) || !control::valid_filter_name(out)) return E_INVALIDARG;
  return S_OK;
}

HRESULT path_argument(LPCWSTR path, std::string& out) {
  if (!to_utf8(path, out) || !control::valid_field(out)) return E_INVALIDARG;
  char resolved[PATH_MAX];
  if (::realpath(out.c_str(), resolved) != nullptr) out = resolved;
  if (out.front() != '/') return E_INVALIDARG;  // relative and not found: nothing to send
  return S_OK;
}

}  // namespace
}  // namespace fltport::compat

using namespace fltport;
using namespace fltport::compat;

extern "C" HRESULT WINAPI FilterLoad(LPCWSTR lpFilterName) {
  std::string name;
  if (HRESULT hr = name_argument(lpFilterName, name); hr != S_OK) return hr;
  auto result = run("load", {name});
  return result.status.ok() ? S_OK : failure(result);
}

extern "C" HRESULT WINAPI FilterUnload(LPCWSTR lpFilterName) {
  std::string name;
  if (HRESULT hr = name_argument(lpFilterName, name); hr != S_OK) return hr;
  auto result = run("unload", {name});
  return result.status.ok() ? S_OK : failure(result);
}

extern "C" HRESULT WINAPI FilterAttach(LPCWSTR lpFilterName, LPCWSTR lpVolumeName, LPCWSTR /*lpInstanceName*/,
                                       DWORD dwCreatedInstanceNameLength, LPWSTR lpCreatedInstanceName) {
  std::string name, path;
  if (HRESULT hr = name_argument(lpFilterName, name); hr != S_OK) return hr;
  if (HRESULT hr = path_argument(lpVolumeName, path); hr != S_OK) return hr;
  auto result = run("attach", {name, path});
  if (!result.status.ok()) return failure(result);
  if (lpCreatedInstanceName != nullptr) {
    const std::string instance = result.table.rows.empty()
                                     ? control::instance_name(name, path)
                                     : cell(result.table, result.table.rows[0], "instance");
    const std::wstring wide = to_wide(instance);
    if ((wide.size() + 1) * sizeof(WCHAR) > dwCreatedInstanceNameLength) return kInsufficientBuffer;
    std::memcpy(lpCreatedInstanceName, wide.c_str(), (wide.size() + 1) * sizeof(WCHAR));
  }
  return S_OK;
}

extern "C" HRESULT WINAPI FilterDetach(LPCWSTR lpFilterName, LPCWSTR lpVolumeName,
                                       LPCWSTR /*lpInstanceName*/) {
  std::string name, path;
  if (HRESULT hr = name_argument(lpFilterName, name); hr != S_OK) return hr;
  if (HRESULT hr = path_argument(lpVolumeName, path); hr != S_OK) return hr;
  auto result = run("detach", {name, path});
  return result.status.ok() ? S_OK : failure(result);
}

extern "C" HRESULT WINAPI FilterFindFirst(FILTER_INFORMATION_CLASS dwInformationClass, LPVOID lpBuffer,
                                          DWORD dwBufferSize, LPDWORD lpBytesReturned,
                                          LPHANDLE lpFilterFind) {
  if (lpBytesReturned == nullptr || lpFilterFind == nullptr) return E_INVALIDARG;
  *lpBytesReturned = 0;
  *lpFilterFind = INVALID_HANDLE_VALUE;
  if (dwInformationClass != FilterFullInformation) return E_INVALIDARG;
  auto result = run("filters", {});
  if (!result.status.ok()) return failure(result);
  std::vector<Entry> entries;
  for (const auto& row : result.table.rows)
    entries.push_back(filter_entry(cell(result.table, row, "name"),
                                   to_ulong(cell(result.table, row, "instances")),
                                   to_ulong(cell(result.table, row, "frame"))));
  return find_first(FindHandle::Kind::filters, std::move(entries), lpBuffer, dwBufferSize, lpBytesReturned,
                    lpFilterFind);
}

extern "C" HRESULT WINAPI FilterFindNext(HANDLE hFilterFind, FILTER_INFORMATION_CLASS dwInformationClass,
                                         LPVOID lpBuffer, DWORD dwBufferSize, LPDWORD lpBytesReturned) {
  if (dwInformationClass != FilterFullInformation) return E_INVALIDARG;
  return find_next(FindHandle::Kind::filters, hFilterFind, lpBuffer, dwBufferSize, lpBytesReturned);
}

extern "C" HRESULT WINAPI FilterFindClose(HANDLE hFilterFind) {
  return find_close(FindHandle::Kind::filters, hFilterFind);
}

extern "C" HRESULT WINAPI FilterInstanceFindFirst(LPCWSTR lpFilterName,
                                                  INSTANCE_INFORMATION_CLASS dwInformationClass,
                                                  LPVOID lpBuffer, DWORD dwBufferSize,
                                                  LPDWORD lpBytesReturned, LPHANDLE lpFilterInstanceFind) {
  if (lpBytesReturned == nullptr || lpFilterInstanceFind == nullptr) return E_INVALIDARG;
  *lpBytesReturned = 0;
  *lpFilterInstanceFind = INVALID_HANDLE_VALUE;
  if (dwInformationClass != InstanceFullInformation) return E_INVALIDARG;
  std::string name;
  if (HRESULT hr = name_argument(lpFilterName, name); hr != S_OK) return hr;
  auto result = run("instances", {});
  if (!result.status.ok()) return failure(result);
  std::vector<Entry> entries;
  for (const auto& row : result.table.rows) {
    if (cell(result.table, row, "filter") != name) continue;
    Entry entry;
    if (!instance_entry(cell(result.table, row, "instance"), cell(result.table, row, "altitude"),
                        cell(result.table, row, "volume"), name, entry))
      continue;  // a path too long for USHORT offsets
    entries.push_back(std::move(entry));
  }
  return find_first(FindHandle::Kind::instances, std::move(entries), lpBuffer, dwBufferSize, lpBytesReturned,
                    lpFilterInstanceFind);
}

extern "C" HRESULT WINAPI FilterInstanceFindNext(HANDLE hFilterInstanceFind,
                                                 INSTANCE_INFORMATION_CLASS dwInformationClass,
                                                 LPVOID lpBuffer, DWORD dwBufferSize,
                                                 LPDWORD lpBytesReturned) {
  if (dwInformationClass != InstanceFullInformation) return E_INVALIDARG;
  return find_next(FindHandle::Kind::instances, hFilterInstanceFind, lpBuffer, dwBufferSize, lpBytesReturned);
}

extern "C" HRESULT WINAPI FilterInstanceFindClose(HANDLE hFilterInstanceFind) {
  return find_close(FindHandle::Kind::instances, hFilterInstanceFind);
}

extern "C" HRESULT WINAPI FilterVolumeFindFirst(FILTER_VOLUME_INFORMATION_CLASS dwInformationClass,
                                                LPVOID lpBuffer, DWORD dwBufferSize, LPDWORD lpBytesReturned,
                                                PHANDLE lpVolumeFind) {
  if (lpBytesReturned == nullptr || lpVolumeFind == nullptr) return E_INVALIDARG;
  *lpBytesReturned = 0;
  *lpVolumeFind = INVALID_HANDLE_VALUE;
  if (dwInformationClass != FilterVolumeBasicInformation) return E_INVALIDARG;
  auto result = run("volumes", {});
  if (!result.status.ok()) return failure(result);
  std::vector<Entry> entries;
  for (const auto& row : result.table.rows) {
    const std::string& volume = cell(result.table, row, "volume");
    if (to_wide(volume).size() * sizeof(WCHAR) > 0xFFFF) continue;
    entries.push_back(volume_entry(volume));
  }
  return find_first(FindHandle::Kind::volumes, std::move(entries), lpBuffer, dwBufferSize, lpBytesReturned,
                    lpVolumeFind);
}

extern "C" HRESULT WINAPI FilterVolumeFindNext(HANDLE hVolumeFind,
                                               FILTER_VOLUME_INFORMATION_CLASS dwInformationClass,
                                               LPVOID lpBuffer, DWORD dwBufferSize, LPDWORD lpBytesReturned) {
  if (dwInformationClass != FilterVolumeBasicInformation) return E_INVALIDARG;
  return find_next(FindHandle::Kind::volumes, hVolumeFind, lpBuffer, dwBufferSize, lpBytesReturned);
}

extern "C" HRESULT WINAPI FilterVolumeFindClose(HANDLE hVolumeFind) {
  return find_close(FindHandle::Kind::volumes, hVolumeFind);
}

extern "C" HRESULT WINAPI FilterVolumeInstanceFindFirst(LPCWSTR lpVolumeName,
                                                        INSTANCE_INFORMATION_CLASS dwInformationClass,
                                                        LPVOID lpBuffer, DWORD dwBufferSize,
                                                        LPDWORD lpBytesReturned,
                                                        LPHANDLE lpVolumeInstanceFind) {
  if (lpBytesReturned == nullptr || lpVolumeInstanceFind == nullptr) return E_INVALIDARG;
  *lpBytesReturned = 0;
  *lpVolumeInstanceFind = INVALID_HANDLE_VALUE;
  if (dwInformationClass != InstanceFullInformation) return E_INVALIDARG;
  std::string path;
  if (HRESULT hr = path_argument(lpVolumeName, path); hr != S_OK) return hr;
  auto result = run("instances", {});
  if (!result.status.ok()) return failure(result);
  std::vector<Entry> entries;
  for (const auto& row : result.table.rows) {
    if (cell(result.table, row, "volume") != path) continue;
    Entry entry;
    if (!instance_entry(cell(result.table, row, "instance"), cell(result.table, row, "altitude"), path,
                        cell(result.table, row, "filter"), entry))
      continue;  // a path too long for USHORT offsets
    entries.push_back(std::move(entry));
  }
  return find_first(FindHandle::Kind::volume_instances, std::move(entries), lpBuffer, dwBufferSize,
                    lpBytesReturned, lpVolumeInstanceFind);
}

extern "C" HRESULT WINAPI FilterVolumeInstanceFindNext(HANDLE hVolumeInstanceFind,
                                                       INSTANCE_INFORMATION_CLASS dwInformationClass,
                                                       LPVOID lpBuffer, DWORD dwBufferSize,
                                                       LPDWORD lpBytesReturned) {
  if (dwInformationClass != InstanceFullInformation) return E_INVALIDARG;
  return find_next(FindHandle::Kind::volume_instances, hVolumeInstanceFind, lpBuffer, dwBufferSize,
                   lpBytesReturned);
}

extern "C" HRESULT WINAPI FilterVolumeInstanceFindClose(HANDLE hVolumeInstanceFind) {
  return find_close(FindHandle::Kind::volume_instances, hVolumeInstanceFind);
}

// A volume is a directory and has no drive letter: its DOS name is its resolved path (see fltuser.h).
extern "C" HRESULT WINAPI FilterGetDosName(LPCWSTR lpVolumeName, LPWSTR lpDosName,
                                           DWORD dwDosNameBufferSize) {
  if (lpDosName == nullptr) return E_INVALIDARG;
  std::string path;
  if (HRESULT hr = path_argument(lpVolumeName, path); hr != S_OK) return hr;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND);
  if (!S_ISDIR(st.st_mode)) return HRESULT_FROM_WIN32(ERROR_INVALID_NAME);
  const std::wstring wide = to_wide(path);
  if (wide.size() + 1 > dwDosNameBufferSize) return kInsufficientBuffer;
  std::memcpy(lpDosName, wide.c_str(), (wide.size() + 1) * sizeof(WCHAR));
  return S_OK;
}
