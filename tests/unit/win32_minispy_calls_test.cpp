// The calls the Win32 layer gained so that Microsoft's minispy user program builds unchanged, each
// against Microsoft's documentation of it (and, where the documentation is silent, what Windows
// does, as Wine's conformance tests record it): FormatMessage and its message modules, the local
// heap, GetSystemDirectory, code page conversion, file times, the Microsoft C runtime additions,
// FilterGetDosName and FilterVolumeInstanceFind* (the latter against a real fltmgrd).
#include <fltport/fltuser.h>
#include <fltport/win32/strsafe.h>
#include <fltport/win32/windows.h>
#include <gtest/gtest.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include "support/captured_process.hpp"
#include "support/runtime_dir.hpp"
#ifdef FLTPORT_UNIT_MINISPY_PLUGIN_DIR
#include "minispy_records.h"  // examples/minispy/filter
#endif

namespace {

using namespace std::chrono_literals;

// FormatMessage with its arguments as a va_list, as the function is called with one.
DWORD FormatW(DWORD flags, LPCVOID source, DWORD id, LPWSTR buffer, DWORD size, ...) {
  va_list args;
  va_start(args, size);
  const DWORD count = FormatMessageW(flags, source, id, 0, buffer, size, &args);
  va_end(args);
  return count;
}

DWORD FormatA(DWORD flags, LPCVOID source, DWORD id, LPSTR buffer, DWORD size, ...) {
  va_list args;
  va_start(args, size);
  const DWORD count = FormatMessageA(flags, source, id, 0, buffer, size, &args);
  va_end(args);
  return count;
}

std::wstring FromString(const wchar_t* text, DWORD flags = 0) {
  WCHAR buffer[512];
  const DWORD count = FormatMessageW(FORMAT_MESSAGE_FROM_STRING | flags, text, 0, 0, buffer, 512, nullptr);
  return std::wstring(buffer, count);
}

// A directory for the test, removed at the end.
class TempDir {
 public:
  TempDir() {
    char name[] = "/tmp/minispy-calls-XXXXXX";
    if (::mkdtemp(name) != nullptr) path_ = name;
  }
  ~TempDir() { fltport::test::remove_tree(path_); }
  const std::string& path() const { return path_; }
  std::wstring wide() const { return std::wstring(path_.begin(), path_.end()); }

 private:
  std::string path_;
};

// ---- FormatMessage: the system table ----

TEST(Win32FormatMessage, FromSystemGivesWindowsTextWithItsLineBreak) {
  WCHAR buffer[MAX_PATH];
  DWORD count =
      FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM, nullptr, ERROR_FILE_NOT_FOUND, 0, buffer, MAX_PATH, nullptr);
  EXPECT_EQ(std::wstring(buffer), L"The system cannot find the file specified.\r\n");
  EXPECT_EQ(count, wcslen(buffer));
  count = FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM, nullptr, ERROR_SUCCESS, 0, buffer, MAX_PATH, nullptr);
  EXPECT_EQ(std::wstring(buffer, count), L"The operation completed successfully.\r\n");
  char narrow[MAX_PATH];
  count =
      FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM, nullptr, ERROR_ACCESS_DENIED, 0, narrow, MAX_PATH, nullptr);
  EXPECT_EQ(std::string(narrow), "Access is denied.\r\n");
  EXPECT_EQ(count, 19u);
}

TEST(Win32FormatMessage, FromSystemTranslatesWin32HresultsAndFilterManagerErrors) {
  WCHAR buffer[MAX_PATH];
  // What minispy passes: an HRESULT (0x80070002), which finds its Win32 error's message.
  ASSERT_NE(FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM, nullptr,
                           static_cast<DWORD>(HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)), 0, buffer, MAX_PATH,
                           nullptr),
            0u);
  EXPECT_EQ(std::wstring(buffer), L"The system cannot find the file specified.\r\n");
  ASSERT_NE(FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM, nullptr, static_cast<DWORD>(E_ACCESSDENIED), 0, buffer,
                           MAX_PATH, nullptr),
            0u);
  EXPECT_EQ(std::wstring(buffer), L"Access is denied.\r\n");
  ASSERT_NE(FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM, nullptr, static_cast<DWORD>(E_FAIL), 0, buffer,
                           MAX_PATH, nullptr),
            0u);
  EXPECT_EQ(std::wstring(buffer), L"Unspecified error\r\n");
  ASSERT_NE(FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM, nullptr,
                           static_cast<DWORD>(ERROR_FLT_NO_WAITER_FOR_REPLY), 0, buffer, MAX_PATH, nullptr),
            0u);
  EXPECT_EQ(std::wstring(buffer), L"No waiter is present for the filter's reply to this message.\r\n");
}

TEST(Win32FormatMessage, UnknownMessageIsMrMidNotFound) {
  WCHAR buffer[64];
  SetLastError(0);
  EXPECT_EQ(FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM, nullptr, 0x12345, 0, buffer, 64, nullptr), 0u);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_MR_MID_NOT_FOUND));
  EXPECT_EQ(FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM, nullptr, 0x8007FFFF, 0, buffer, 64, nullptr), 0u);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_MR_MID_NOT_FOUND));
}

TEST(Win32FormatMessage, LanguagesOtherThanNeutralOrEnglishAreNotFound) {
  WCHAR buffer[64];
  EXPECT_NE(FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM, nullptr, 5, MAKELANGID(LANG_NEUTRAL, SUBLANG_DEFAULT),
                           buffer, 64, nullptr),
            0u);
  EXPECT_NE(FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM, nullptr, 5,
                           MAKELANGID(LANG_ENGLISH, SUBLANG_ENGLISH_US), buffer, 64, nullptr),
            0u);
  EXPECT_EQ(FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM, nullptr, 5, 0x040C /* French */, buffer, 64, nullptr),
            0u);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_RESOURCE_LANG_NOT_FOUND));
}

TEST(Win32FormatMessage, MaxWidthMaskTurnsLineBreaksIntoSpaces) {
  WCHAR buffer[64];
  const DWORD count = FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_MAX_WIDTH_MASK, nullptr,
                                     ERROR_ACCESS_DENIED, 0, buffer, 64, nullptr);
  EXPECT_EQ(std::wstring(buffer, count), L"Access is denied. ");
  EXPECT_EQ(FromString(L"hi\n", FORMAT_MESSAGE_MAX_WIDTH_MASK), L"hi ");
  EXPECT_EQ(FromString(L"\r\r\n", FORMAT_MESSAGE_MAX_WIDTH_MASK), L"  ");
}

TEST(Win32FormatMessage, LineBreaksOfTheTextBecomeCrLf) {
  EXPECT_EQ(FromString(L"hi\n"), L"hi\r\n");
  EXPECT_EQ(FromString(L"hi\r\n"), L"hi\r\n");
  EXPECT_EQ(FromString(L"\r"), L"\r\n");
  EXPECT_EQ(FromString(L"\r\r\n"), L"\r\n\r\n");
}

TEST(Win32FormatMessage, LineWidthWrapsAtSpaces) {
  EXPECT_EQ(FromString(L"short long line", 7), L"short\r\nlong\r\nline");
  EXPECT_EQ(FromString(L"shortlongline", 8), L"shortlon\r\ngline");
  EXPECT_EQ(FromString(L"shortlon", 8), L"shortlon\r\n");
  EXPECT_EQ(FromString(L"short long    line", 16), L"short long\r\nline");
  EXPECT_EQ(FromString(L"short long    line", 12), L"short long\r\n  line");
  EXPECT_EQ(FromString(L"short%nlong line", 8), L"short\r\nlong\r\nline");
  EXPECT_EQ(FromString(L"short\nlong line", 11), L"short long\r\nline");
}

// ---- FormatMessage: escapes and inserts ----

TEST(Win32FormatMessage, Escapes) {
  EXPECT_EQ(FromString(L"test%0test"), L"test");
  EXPECT_EQ(FromString(L" %%%% "), L" %% ");
  EXPECT_EQ(FromString(L" %.%.  x"), L" ..  x");
  EXPECT_EQ(FromString(L"yah%!%0   "), L"yah!");
  EXPECT_EQ(FromString(L"% %   "), L"    ");
  EXPECT_EQ(FromString(L"%n%r%t"), L"\r\n\r\t");
}

TEST(Win32FormatMessage, InsertsFromAVaList) {
  WCHAR buffer[128];
  DWORD count = FormatW(FORMAT_MESSAGE_FROM_STRING, L"%1!s! has %2!d! items, flags %3!04X!", 0, buffer, 128,
                        L"volume", -3, 0x1ab);
  EXPECT_EQ(std::wstring(buffer, count), L"volume has -3 items, flags 01AB");
  count = FormatW(FORMAT_MESSAGE_FROM_STRING, L"%1%3%2%1", 0, buffer, 128, L"t", L"s", L"e");
  EXPECT_EQ(std::wstring(buffer, count), L"test");
  count = FormatW(FORMAT_MESSAGE_FROM_STRING, L"%1!S!-%2!c!-%3!I64u!", 0, buffer, 128, "narrow", L'w',
                  1ull << 40);
  EXPECT_EQ(std::wstring(buffer, count), L"narrow-w-1099511627776");
  count = FormatW(FORMAT_MESSAGE_FROM_STRING, L"%1", 0, buffer, 128, static_cast<const wchar_t*>(nullptr));
  EXPECT_EQ(std::wstring(buffer, count), L"(null)");
  count = FormatW(FORMAT_MESSAGE_FROM_STRING, L"%1!*.*u!", 0, buffer, 128, 5, 3, 1);
  EXPECT_EQ(std::wstring(buffer, count), L"  001");
  count = FormatW(FORMAT_MESSAGE_FROM_STRING, L"%1!-4d!|", 0, buffer, 128, 1);
  EXPECT_EQ(std::wstring(buffer, count), L"1   |");
  char narrow[64];
  count = FormatA(FORMAT_MESSAGE_FROM_STRING, "%1 and %2!S!", 0, narrow, 64, "ansi", L"wide");
  EXPECT_EQ(std::string(narrow, count), "ansi and wide");
}

TEST(Win32FormatMessage, InsertsFromAnArgumentArray) {
  WCHAR buffer[64];
  DWORD_PTR args[] = {reinterpret_cast<DWORD_PTR>(L"port"), 7};
  const DWORD count = FormatMessageW(FORMAT_MESSAGE_FROM_STRING | FORMAT_MESSAGE_ARGUMENT_ARRAY, L"%1 #%2!u!",
                                     0, 0, buffer, 64, reinterpret_cast<va_list*>(args));
  EXPECT_EQ(std::wstring(buffer, count), L"port #7");
}

TEST(Win32FormatMessage, IgnoreInsertsKeepsThemAndNoArgumentsIsInvalid) {
  WCHAR buffer[256];
  // ERROR_MR_MID_NOT_FOUND's own text has two inserts.
  SetLastError(0);
  EXPECT_EQ(
      FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM, nullptr, ERROR_MR_MID_NOT_FOUND, 0, buffer, 256, nullptr),
      0u);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  const DWORD count = FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, nullptr,
                                     ERROR_MR_MID_NOT_FOUND, 0, buffer, 256, nullptr);
  EXPECT_EQ(std::wstring(buffer, count),
            L"The system cannot find message text for message number 0x%1 in the message file for %2.\r\n");
  EXPECT_EQ(FromString(L"a %1!d! b", FORMAT_MESSAGE_IGNORE_INSERTS), L"a %1!d! b");
}

TEST(Win32FormatMessage, BadTextIsInvalidParameterAndEmptyIsNoWorkDone) {
  WCHAR buffer[16] = L"xxxxxx";
  SetLastError(0);
  EXPECT_EQ(FormatMessageW(FORMAT_MESSAGE_FROM_STRING, L"%", 0, 0, buffer, 16, nullptr), 0u);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  EXPECT_EQ(FormatMessageW(FORMAT_MESSAGE_FROM_STRING, L"%1", 0, 0, buffer, 16, nullptr), 0u);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  EXPECT_EQ(FormatMessageW(FORMAT_MESSAGE_FROM_STRING, L"", 0, 0, buffer, 16, nullptr), 0u);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_NO_WORK_DONE));
  EXPECT_EQ(FormatMessageW(0, nullptr, 5, 0, buffer, 16, nullptr), 0u);  // no source flag
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  EXPECT_EQ(FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM, nullptr, 5, 0, nullptr, 16, nullptr), 0u);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
}

TEST(Win32FormatMessage, BufferTooSmallIsInsufficientBuffer) {
  WCHAR buffer[8] = L"xxxxxx";
  SetLastError(0);
  EXPECT_EQ(FormatMessageW(FORMAT_MESSAGE_FROM_STRING, L"test", 0, 0, buffer, 4, nullptr), 0u);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INSUFFICIENT_BUFFER));
  EXPECT_EQ(std::wstring(buffer), L"tes");  // the W form leaves what fits, NUL-terminated
  char narrow[8] = "xxxxxx";
  EXPECT_EQ(FormatMessageA(FORMAT_MESSAGE_FROM_STRING, "test", 0, 0, narrow, 4, nullptr), 0u);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INSUFFICIENT_BUFFER));
  EXPECT_EQ(std::string(narrow), "xxxxxx");  // the A form leaves the buffer alone
  EXPECT_EQ(FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM, nullptr, 0, 0, nullptr, 0, nullptr), 0u);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INSUFFICIENT_BUFFER));
  // Exactly the length and its NUL fits.
  EXPECT_EQ(FormatMessageW(FORMAT_MESSAGE_FROM_STRING, L"test", 0, 0, buffer, 5, nullptr), 4u);
}

TEST(Win32FormatMessage, AllocateBufferHandsOutALocalAllocBlock) {
  LPWSTR wide = reinterpret_cast<LPWSTR>(0x1);
  DWORD count = FormatMessageW(
      FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, nullptr,
      ERROR_INVALID_HANDLE, 0, reinterpret_cast<LPWSTR>(&wide), 0, nullptr);
  ASSERT_NE(wide, nullptr);
  EXPECT_EQ(std::wstring(wide, count), L"The handle is invalid.\r\n");
  EXPECT_EQ(LocalFree(wide), nullptr);
  LPSTR narrow = nullptr;
  count = FormatMessageA(FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_STRING, "test", 0, 0,
                         reinterpret_cast<LPSTR>(&narrow), 1024, nullptr);
  ASSERT_NE(narrow, nullptr);
  EXPECT_EQ(std::string(narrow, count), "test");
  EXPECT_EQ(LocalFree(narrow), nullptr);
  // Nothing to format: no block.
  wide = reinterpret_cast<LPWSTR>(0x1);
  EXPECT_EQ(FormatMessageW(FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_STRING, L"", 0, 0,
                           reinterpret_cast<LPWSTR>(&wide), 0, nullptr),
            0u);
  EXPECT_EQ(wide, nullptr);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_NO_WORK_DONE));
  EXPECT_EQ(FormatMessageA(FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM, nullptr, 0, 0,
                           nullptr, 0, nullptr),
            0u);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_NOT_ENOUGH_MEMORY));
}

TEST(Win32LocalAlloc, ZeroInitAndFree) {
  auto* block = static_cast<unsigned char*>(LocalAlloc(LPTR, 64));
  ASSERT_NE(block, nullptr);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(block[i], 0);
  EXPECT_EQ(LocalFree(block), nullptr);
  EXPECT_EQ(LocalFree(nullptr), nullptr);
}

// ---- Modules and the system directory: minispy's fallback path ----

TEST(Win32GetSystemDirectory, SizeQueryThenTheDirectory) {
  const UINT needed = GetSystemDirectoryW(nullptr, 0);
  ASSERT_GT(needed, 1u);
  std::wstring directory(needed, L'\0');
  EXPECT_EQ(GetSystemDirectoryW(directory.data(), 1), needed);  // too small: the size, NUL included
  EXPECT_EQ(GetSystemDirectoryW(directory.data(), needed), needed - 1);
  directory.resize(needed - 1);
  EXPECT_EQ(directory.front(), L'/');
  char narrow[PATH_MAX];
  const UINT length = GetSystemDirectoryA(narrow, sizeof narrow);
  ASSERT_EQ(length, needed - 1);
  EXPECT_EQ(std::wstring(narrow, narrow + length), directory);
  struct stat st {};
  ASSERT_EQ(::stat(narrow, &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
}

TEST(Win32LoadLibraryEx, FltlibHasTheFilterManagerMessages) {
  // As minispy builds it: the system directory, a backslash, fltlib.dll.
  WCHAR path[PATH_MAX];
  ASSERT_GT(GetSystemDirectoryW(path, PATH_MAX), 0u);
  ASSERT_EQ(StringCchCatW(path, PATH_MAX, L"\\fltlib.dll"), S_OK);
  HMODULE module = LoadLibraryExW(path, nullptr, LOAD_LIBRARY_AS_DATAFILE);
  ASSERT_NE(module, nullptr);
  WCHAR buffer[256];
  DWORD count = FormatMessageW(FORMAT_MESSAGE_FROM_HMODULE, module,
                               static_cast<DWORD>(ERROR_FLT_NO_WAITER_FOR_REPLY), 0, buffer, 256, nullptr);
  EXPECT_EQ(std::wstring(buffer, count), L"No waiter is present for the filter's reply to this message.\r\n");
  // A Win32 error is not among fltlib's messages; with FROM_SYSTEM as well, the system has it.
  EXPECT_EQ(FormatMessageW(FORMAT_MESSAGE_FROM_HMODULE, module, ERROR_ACCESS_DENIED, 0, buffer, 256, nullptr),
            0u);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_MR_MID_NOT_FOUND));
  count = FormatMessageW(FORMAT_MESSAGE_FROM_HMODULE | FORMAT_MESSAGE_FROM_SYSTEM, module,
                         ERROR_ACCESS_DENIED, 0, buffer, 256, nullptr);
  EXPECT_EQ(std::wstring(buffer, count), L"Access is denied.\r\n");
  // The program (NULL) has no message table.
  EXPECT_EQ(
      FormatMessageW(FORMAT_MESSAGE_FROM_HMODULE, nullptr, ERROR_ACCESS_DENIED, 0, buffer, 256, nullptr), 0u);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_RESOURCE_TYPE_NOT_FOUND));
  // Loads are counted; each needs its FreeLibrary.
  HMODULE again = LoadLibraryA("FLTLIB.DLL");
  EXPECT_EQ(again, module);
  EXPECT_TRUE(FreeLibrary(again));
  EXPECT_TRUE(FreeLibrary(module));
  SetLastError(0);
  EXPECT_FALSE(FreeLibrary(module));
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_MOD_NOT_FOUND));
}

TEST(Win32LoadLibraryEx, OtherModulesAreNotFound) {
  SetLastError(0);
  EXPECT_EQ(LoadLibraryExW(L"kernel32.dll", nullptr, LOAD_LIBRARY_AS_DATAFILE), nullptr);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_MOD_NOT_FOUND));
  EXPECT_EQ(LoadLibraryW(L"/usr/lib/libc.so.6"), nullptr);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_MOD_NOT_FOUND));
  EXPECT_EQ(LoadLibraryExW(L"fltlib.dll", reinterpret_cast<HANDLE>(0x10), 0), nullptr);  // hFile is reserved
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  EXPECT_EQ(LoadLibraryExA(nullptr, nullptr, 0), nullptr);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  int not_a_module = 0;
  EXPECT_FALSE(FreeLibrary(reinterpret_cast<HMODULE>(&not_a_module)));
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_MOD_NOT_FOUND));
}

// ---- Code pages ----

TEST(Win32MultiByteToWideChar, SizeQueryWithZeroDestination) {
  // "héllo" in UTF-8, and its NUL when the length is -1.
  EXPECT_EQ(MultiByteToWideChar(CP_UTF8, 0, "h\xC3\xA9llo", -1, nullptr, 0), 6);
  EXPECT_EQ(MultiByteToWideChar(CP_UTF8, 0, "h\xC3\xA9llo", 6, nullptr, 0), 5);
  EXPECT_EQ(MultiByteToWideChar(CP_ACP, MB_ERR_INVALID_CHARS, "/srv/inbox", -1, nullptr, 0), 11);
}

TEST(Win32MultiByteToWideChar, ConvertsAndCounts) {
  WCHAR buffer[16];
  ASSERT_EQ(MultiByteToWideChar(CP_UTF8, 0, "h\xC3\xA9llo", -1, buffer, 16), 6);
  EXPECT_EQ(std::wstring(buffer), L"h\u00E9llo");
  // Beyond U+FFFF: one WCHAR (UTF-32), where Windows needs two.
  ASSERT_EQ(MultiByteToWideChar(CP_UTF8, 0, "\xF0\x9F\x98\x80", 4, buffer, 16), 1);
  EXPECT_EQ(buffer[0], static_cast<WCHAR>(0x1F600));
  // An explicit length without the NUL gives no NUL.
  buffer[3] = L'#';
  ASSERT_EQ(MultiByteToWideChar(CP_UTF8, 0, "abc", 3, buffer, 16), 3);
  EXPECT_EQ(buffer[3], L'#');
  // Windows-1252 and ISO 8859-1.
  ASSERT_EQ(MultiByteToWideChar(1252, 0, "\x80\x81\xE9", 3, buffer, 16), 3);
  EXPECT_EQ(buffer[0], 0x20AC);
  EXPECT_EQ(buffer[1], 0x0081);
  EXPECT_EQ(buffer[2], 0x00E9);
  ASSERT_EQ(MultiByteToWideChar(28591, 0, "\x80", 1, buffer, 16), 1);
  EXPECT_EQ(buffer[0], 0x0080);
}

TEST(Win32MultiByteToWideChar, InvalidUtf8) {
  WCHAR buffer[16];
  // Replaced by U+FFFD, one per maximal ill-formed part.
  ASSERT_EQ(MultiByteToWideChar(CP_UTF8, 0, "\xC3(", 2, buffer, 16), 2);
  EXPECT_EQ(buffer[0], 0xFFFD);
  EXPECT_EQ(buffer[1], L'(');
  ASSERT_EQ(MultiByteToWideChar(CP_UTF8, 0, "\xC0\xAF", 2, buffer, 16), 2);  // overlong '/'
  EXPECT_EQ(buffer[0], 0xFFFD);
  EXPECT_EQ(buffer[1], 0xFFFD);
  ASSERT_EQ(MultiByteToWideChar(CP_UTF8, 0, "\xED\xA0\x80", 3, buffer, 16), 3);  // a surrogate
  SetLastError(0);
  EXPECT_EQ(MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, "ok\xFF", 3, buffer, 16), 0);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_NO_UNICODE_TRANSLATION));
}

TEST(Win32MultiByteToWideChar, Errors) {
  WCHAR buffer[4];
  SetLastError(0);
  EXPECT_EQ(MultiByteToWideChar(CP_UTF8, 0, "toolong", -1, buffer, 4), 0);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INSUFFICIENT_BUFFER));
  EXPECT_EQ(MultiByteToWideChar(CP_UTF8, 0, nullptr, -1, buffer, 4), 0);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  EXPECT_EQ(MultiByteToWideChar(CP_UTF8, 0, "a", 0, buffer, 4), 0);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  EXPECT_EQ(MultiByteToWideChar(CP_UTF8, 0, "a", -2, buffer, 4), 0);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  EXPECT_EQ(MultiByteToWideChar(CP_UTF8, 0, "a", -1, nullptr, 4), 0);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  EXPECT_EQ(MultiByteToWideChar(CP_UTF8, 0, "a", -1, buffer, -1), 0);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  EXPECT_EQ(MultiByteToWideChar(12345, 0, "a", -1, buffer, 4), 0);  // no such code page here
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  EXPECT_EQ(MultiByteToWideChar(CP_UTF8, MB_PRECOMPOSED, "a", -1, buffer, 4), 0);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_FLAGS));
  EXPECT_EQ(MultiByteToWideChar(1252, MB_PRECOMPOSED | MB_COMPOSITE, "a", -1, buffer, 4), 0);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_FLAGS));
  // The ANSI code page keeps the flags code written for single-byte code pages passes.
  EXPECT_EQ(MultiByteToWideChar(CP_ACP, MB_PRECOMPOSED, "a", -1, buffer, 4), 2);
  EXPECT_EQ(GetACP(), static_cast<UINT>(CP_UTF8));
  EXPECT_EQ(GetOEMCP(), static_cast<UINT>(CP_UTF8));
}

TEST(Win32WideCharToMultiByte, ConvertsCountsAndReplaces) {
  char buffer[16];
  EXPECT_EQ(WideCharToMultiByte(CP_UTF8, 0, L"h\u00E9llo", -1, nullptr, 0, nullptr, nullptr), 7);
  ASSERT_EQ(WideCharToMultiByte(CP_UTF8, 0, L"h\u00E9llo", -1, buffer, 16, nullptr, nullptr), 7);
  EXPECT_STREQ(buffer, "h\xC3\xA9llo");
  // A lone surrogate becomes U+FFFD, or fails with WC_ERR_INVALID_CHARS.
  const WCHAR lone[] = {0xD800, 0};
  ASSERT_EQ(WideCharToMultiByte(CP_UTF8, 0, lone, -1, buffer, 16, nullptr, nullptr), 4);
  EXPECT_STREQ(buffer, "\xEF\xBF\xBD");
  SetLastError(0);
  EXPECT_EQ(WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, lone, -1, buffer, 16, nullptr, nullptr), 0);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_NO_UNICODE_TRANSLATION));
  // A UTF-16 pair in WCHARs is one code point.
  const WCHAR pair[] = {0xD83D, 0xDE00, 0};
  ASSERT_EQ(WideCharToMultiByte(CP_UTF8, 0, pair, -1, buffer, 16, nullptr, nullptr), 5);
  EXPECT_STREQ(buffer, "\xF0\x9F\x98\x80");
  BOOL used = TRUE;
  EXPECT_EQ(WideCharToMultiByte(CP_UTF8, 0, L"a", -1, buffer, 16, nullptr, &used), 0);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  // Single-byte: the default character for what the code page lacks.
  ASSERT_EQ(WideCharToMultiByte(1252, 0, L"\u20AC\u4E00", 2, buffer, 16, nullptr, &used), 2);
  EXPECT_EQ(static_cast<unsigned char>(buffer[0]), 0x80);
  EXPECT_EQ(buffer[1], '?');
  EXPECT_TRUE(used);
  ASSERT_EQ(WideCharToMultiByte(28591, 0, L"\u00E9\u20AC", 2, buffer, 16, "_", &used), 2);
  EXPECT_EQ(static_cast<unsigned char>(buffer[0]), 0xE9);
  EXPECT_EQ(buffer[1], '_');
  EXPECT_EQ(WideCharToMultiByte(CP_UTF8, 0, L"toolong", -1, buffer, 4, nullptr, nullptr), 0);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INSUFFICIENT_BUFFER));
}

// ---- File times ----

FILETIME Ticks(ULONGLONG ticks) {
  FILETIME time;
  time.dwLowDateTime = static_cast<DWORD>(ticks);
  time.dwHighDateTime = static_cast<DWORD>(ticks >> 32);
  return time;
}

ULONGLONG TicksOf(const FILETIME& time) {
  return (static_cast<ULONGLONG>(time.dwHighDateTime) << 32) | time.dwLowDateTime;
}

void ExpectSystemTime(const SYSTEMTIME& t, int year, int month, int day, int weekday, int hour, int minute,
                      int second, int ms) {
  EXPECT_EQ(t.wYear, year);
  EXPECT_EQ(t.wMonth, month);
  EXPECT_EQ(t.wDay, day);
  EXPECT_EQ(t.wDayOfWeek, weekday);
  EXPECT_EQ(t.wHour, hour);
  EXPECT_EQ(t.wMinute, minute);
  EXPECT_EQ(t.wSecond, second);
  EXPECT_EQ(t.wMilliseconds, ms);
}

TEST(Win32FileTime, KnownValues) {
  SYSTEMTIME t;
  FILETIME time = Ticks(116444736000000000ull);  // the Unix epoch
  ASSERT_TRUE(FileTimeToSystemTime(&time, &t));
  ExpectSystemTime(t, 1970, 1, 1, 4 /* Thursday */, 0, 0, 0, 0);
  time = Ticks(0);
  ASSERT_TRUE(FileTimeToSystemTime(&time, &t));
  ExpectSystemTime(t, 1601, 1, 1, 1 /* Monday */, 0, 0, 0, 0);
  time = Ticks((1000000000ull + 11644473600ull) * 10000000ull + 1234567);  // Unix time 10^9, +123.4567 ms
  ASSERT_TRUE(FileTimeToSystemTime(&time, &t));
  ExpectSystemTime(t, 2001, 9, 9, 0 /* Sunday */, 1, 46, 40, 123);
  time = Ticks(0x7FFFFFFFFFFFFFFFull);  // the largest valid FILETIME
  ASSERT_TRUE(FileTimeToSystemTime(&time, &t));
  ExpectSystemTime(t, 30828, 9, 14, 4, 2, 48, 5, 477);
  time = Ticks(0x8000000000000000ull);
  SetLastError(0);
  EXPECT_FALSE(FileTimeToSystemTime(&time, &t));
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
}

TEST(Win32FileTime, SystemTimeRoundTrip) {
  const SYSTEMTIME dates[] = {
      {1601, 1, 0, 1, 0, 0, 0, 0},        {1970, 1, 0, 1, 0, 0, 0, 0}, {2000, 2, 0, 29, 12, 34, 56, 789},
      {1999, 12, 0, 31, 23, 59, 59, 999}, {2100, 3, 0, 1, 0, 0, 0, 1}, {30827, 12, 0, 31, 23, 59, 59, 999},
  };
  for (const SYSTEMTIME& date : dates) {
    FILETIME time;
    ASSERT_TRUE(SystemTimeToFileTime(&date, &time)) << date.wYear;
    SYSTEMTIME back;
    ASSERT_TRUE(FileTimeToSystemTime(&time, &back));
    EXPECT_EQ(back.wYear, date.wYear);
    EXPECT_EQ(back.wMonth, date.wMonth);
    EXPECT_EQ(back.wDay, date.wDay);
    EXPECT_EQ(back.wHour, date.wHour);
    EXPECT_EQ(back.wMinute, date.wMinute);
    EXPECT_EQ(back.wSecond, date.wSecond);
    EXPECT_EQ(back.wMilliseconds, date.wMilliseconds);
  }
  const SYSTEMTIME epoch = {1970, 1, 0, 1, 0, 0, 0, 0};
  FILETIME time;
  ASSERT_TRUE(SystemTimeToFileTime(&epoch, &time));
  EXPECT_EQ(TicksOf(time), 116444736000000000ull);
}

TEST(Win32FileTime, SystemTimeOutOfRangeIsInvalidParameter) {
  const SYSTEMTIME bad[] = {
      {1600, 12, 0, 31, 0, 0, 0, 0}, {2001, 2, 0, 29, 0, 0, 0, 0},   {2000, 13, 0, 1, 0, 0, 0, 0},
      {2000, 1, 0, 0, 0, 0, 0, 0},   {2000, 1, 0, 1, 24, 0, 0, 0},   {2000, 1, 0, 1, 0, 60, 0, 0},
      {2000, 1, 0, 1, 0, 0, 60, 0},  {2000, 1, 0, 1, 0, 0, 0, 1000}, {30828, 1, 0, 1, 0, 0, 0, 0},
  };
  for (const SYSTEMTIME& date : bad) {
    FILETIME time;
    SetLastError(0);
    EXPECT_FALSE(SystemTimeToFileTime(&date, &time)) << date.wYear << "-" << date.wMonth << "-" << date.wDay;
    EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_INVALID_PARAMETER));
  }
}

// Runs with TZ set to a zone, then puts it back.
class ScopedTimeZone {
 public:
  explicit ScopedTimeZone(const char* zone) {
    if (const char* old = getenv("TZ")) previous_ = old, had_ = true;
    setenv("TZ", zone, 1);
    tzset();
  }
  ~ScopedTimeZone() {
    if (had_)
      setenv("TZ", previous_.c_str(), 1);
    else
      unsetenv("TZ");
    tzset();
  }

 private:
  std::string previous_;
  bool had_ = false;
};

TEST(Win32FileTime, LocalConversionsUseTheZonesCurrentOffset) {
  constexpr ULONGLONG kHour = 3600ull * 10000000ull;
  const FILETIME utc = Ticks(116444736000000000ull);
  FILETIME local, back;
  {
    ScopedTimeZone zone("FLT-3");  // POSIX: three hours east of UTC, no daylight saving
    ASSERT_TRUE(FileTimeToLocalFileTime(&utc, &local));
    EXPECT_EQ(TicksOf(local) - TicksOf(utc), 3 * kHour);
    ASSERT_TRUE(LocalFileTimeToFileTime(&local, &back));
    EXPECT_EQ(TicksOf(back), TicksOf(utc));
  }
  {
    ScopedTimeZone zone("FLT+5");  // five hours west
    ASSERT_TRUE(FileTimeToLocalFileTime(&utc, &local));
    EXPECT_EQ(TicksOf(utc) - TicksOf(local), 5 * kHour);
  }
  {
    ScopedTimeZone zone("UTC0");
    SYSTEMTIME system, local_time;
    GetSystemTime(&system);
    GetLocalTime(&local_time);
    EXPECT_EQ(system.wYear, local_time.wYear);
    EXPECT_EQ(system.wHour, local_time.wHour);
  }
}

TEST(Win32FileTime, NowAndCompare) {
  // The precise clock on both sides: time() reads the coarse one, which may lag a tick behind and
  // put `after` in the previous second.
  const auto seconds_now = [] {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec;
  };
  FILETIME now;
  const time_t before = seconds_now();
  GetSystemTimeAsFileTime(&now);
  const time_t after = seconds_now();
  const ULONGLONG seconds = TicksOf(now) / 10000000ull - 11644473600ull;
  EXPECT_GE(seconds, static_cast<ULONGLONG>(before));
  EXPECT_LE(seconds, static_cast<ULONGLONG>(after));
  const FILETIME a = Ticks(5), b = Ticks(0x100000000ull);
  EXPECT_EQ(CompareFileTime(&a, &b), -1);
  EXPECT_EQ(CompareFileTime(&b, &a), 1);
  EXPECT_EQ(CompareFileTime(&a, &a), 0);
}

// ---- The Microsoft C runtime additions ----

int g_invalid_parameters = 0;
void CountingHandler(const wchar_t*, const wchar_t*, const wchar_t*, unsigned int, uintptr_t) {
  ++g_invalid_parameters;
}

// Installs a handler that returns, so that the functions return their errors.
class ScopedHandler {
 public:
  ScopedHandler() : previous_(_set_invalid_parameter_handler(CountingHandler)) { g_invalid_parameters = 0; }
  ~ScopedHandler() { _set_invalid_parameter_handler(previous_); }

 private:
  _invalid_parameter_handler previous_;
};

TEST(Win32MsCrt, SprintfSFormatsInMicrosoftsDialect) {
  char buffer[128];
  EXPECT_EQ(sprintf_s(buffer, sizeof buffer, "Unknown Irp minor code (%u)", 7u), 26);
  EXPECT_STREQ(buffer, "Unknown Irp minor code (7)");
  EXPECT_EQ(sprintf_s(buffer, sizeof buffer, "%02d:%02d:%02d:%03d", 1, 2, 3, 4), 12);
  EXPECT_STREQ(buffer, "01:02:03:004");
  sprintf_s(buffer, sizeof buffer, "%I64x|%Iu|%ws|%S|%hs", 0x123456789abull, static_cast<size_t>(42), L"wide",
            L"S", "h");
  EXPECT_STREQ(buffer, "123456789ab|42|wide|S|h");
  // long is 32 bits on Windows: %lx reads a ULONG.
  const ULONG flags = 0xC0000022u;
  sprintf_s(buffer, sizeof buffer, "%08lx", flags);
  EXPECT_STREQ(buffer, "c0000022");
  sprintf_s(buffer, sizeof buffer, "%p", reinterpret_cast<void*>(0x12ab));
  EXPECT_STREQ(buffer, "00000000000012AB");
}

TEST(Win32MsCrt, SprintfSErrors) {
  ScopedHandler handler;
  char buffer[8] = "xxxxxxx";
  errno = 0;
  EXPECT_EQ(sprintf_s(buffer, sizeof buffer, "%s", "too long for it"), -1);
  EXPECT_EQ(errno, ERANGE);
  EXPECT_EQ(buffer[0], '\0');
  EXPECT_EQ(g_invalid_parameters, 1);
  EXPECT_EQ(sprintf_s(nullptr, 8, "x"), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(sprintf_s(buffer, 0, "x"), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(sprintf_s(buffer, sizeof buffer, nullptr), -1);
  EXPECT_EQ(errno, EINVAL);
  int count = 0;
  EXPECT_EQ(sprintf_s(buffer, sizeof buffer, "ab%n", &count), -1);  // %n is refused
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(g_invalid_parameters, 5);
  EXPECT_EQ(sprintf_s(buffer, sizeof buffer, "%s", "fits"), 4);  // exactly: 7 characters and the NUL
  EXPECT_EQ(sprintf_s(buffer, sizeof buffer, "%s", "1234567"), 7);
}

TEST(Win32MsCrtDeathTest, DefaultInvalidParameterHandlerEndsTheProcess) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  char buffer[4];
  EXPECT_DEATH(sprintf_s(buffer, sizeof buffer, "%s", "too long"), "invalid parameter passed to sprintf_s");
}

TEST(Win32MsCrt, FopenS) {
  ScopedHandler handler;
  TempDir dir;
  const std::string path = dir.path() + "/log.txt";
  FILE* file = reinterpret_cast<FILE*>(0x1);
  ASSERT_EQ(fopen_s(&file, path.c_str(), "w"), 0);
  ASSERT_NE(file, nullptr);
  std::fputs("record\n", file);
  std::fclose(file);
  ASSERT_EQ(fopen_s(&file, path.c_str(), "rtc"), 0);  // Microsoft's text and commit letters
  char line[16] = {};
  EXPECT_NE(std::fgets(line, sizeof line, file), nullptr);
  EXPECT_STREQ(line, "record\n");
  std::fclose(file);
  ASSERT_EQ(fopen_s(&file, path.c_str(), "a+b, ccs=UTF-8"), 0);
  std::fclose(file);
  EXPECT_EQ(fopen_s(&file, path.c_str(), "wx"), EEXIST);
  EXPECT_EQ(file, nullptr);
  EXPECT_EQ(fopen_s(&file, (dir.path() + "/missing/x").c_str(), "r"), ENOENT);
  EXPECT_EQ(file, nullptr);
  EXPECT_EQ(g_invalid_parameters, 0);
  EXPECT_EQ(fopen_s(&file, "", "r"), EINVAL);  // an error, not an invalid parameter
  EXPECT_EQ(g_invalid_parameters, 0);
  EXPECT_EQ(fopen_s(nullptr, path.c_str(), "r"), EINVAL);
  EXPECT_EQ(fopen_s(&file, nullptr, "r"), EINVAL);
  EXPECT_EQ(fopen_s(&file, path.c_str(), nullptr), EINVAL);
  EXPECT_EQ(fopen_s(&file, path.c_str(), "q"), EINVAL);
  EXPECT_EQ(fopen_s(&file, path.c_str(), "rtb"), EINVAL);  // t and b together
  EXPECT_EQ(fopen_s(&file, path.c_str(), "rx"), EINVAL);   // x only with w
  EXPECT_EQ(g_invalid_parameters, 6);
}

TEST(Win32MsCrt, CaseInsensitiveComparisons) {
  // minispy's command words: sizeof includes the NUL, so "go" does not match "gone".
  EXPECT_EQ(_strnicmp("GO", "go", sizeof("go")), 0);
  EXPECT_NE(_strnicmp("gone", "go", sizeof("go")), 0);
  EXPECT_EQ(_strnicmp("Exit", "exit", sizeof("exit")), 0);
  EXPECT_LT(_strnicmp("g", "go", 2), 0);
  EXPECT_EQ(_strnicmp("abcX", "ABCy", 3), 0);
  EXPECT_EQ(_strnicmp("a", "b", 0), 0);
  // Compared in lower case, as Microsoft's: '_' (0x5F) sorts before 'a' (0x61), after 'A' (0x41).
  EXPECT_LT(_stricmp("_", "A"), 0);
  EXPECT_EQ(_stricmp("MiniSpy", "minispy"), 0);
  EXPECT_GT(_stricmp("b", "A"), 0);
  EXPECT_EQ(_wcsicmp(L"MiniSpy", L"MINISPY"), 0);
  EXPECT_LT(_wcsicmp(L"Mini", L"minispy"), 0);
  EXPECT_GT(_wcsnicmp(L"abd", L"ABC", 3), 0);
  EXPECT_EQ(_wcsnicmp(L"abd", L"ABC", 2), 0);
  ScopedHandler handler;
  errno = 0;
  EXPECT_EQ(_strnicmp(nullptr, "a", 1), _NLSCMPERROR);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(_stricmp("a", nullptr), _NLSCMPERROR);
  EXPECT_EQ(_wcsicmp(nullptr, L"a"), _NLSCMPERROR);
  EXPECT_EQ(_wcsnicmp(L"a", nullptr, 1), _NLSCMPERROR);
  EXPECT_EQ(g_invalid_parameters, 4);
}

TEST(Win32MsCrt, PrintfFamilyInMicrosoftsDialect) {
  char buffer[64];
  EXPECT_EQ(FltportMsvcSnprintf(buffer, sizeof buffer, "%8Ix.%-4Ix|%ws", static_cast<size_t>(0x1f),
                                static_cast<size_t>(2), L"w"),
            15);
  EXPECT_STREQ(buffer, "      1f.2   |w");
  EXPECT_EQ(FltportMsvcSprintf(buffer, "%I64d %I32d %hs", -5ll, 7, "x"), 6);
  EXPECT_STREQ(buffer, "-5 7 x");
}

// ---- FilterGetDosName: a volume is a directory, and its DOS name its resolved path ----

TEST(Win32FilterGetDosName, IsTheResolvedPath) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  ASSERT_EQ(::mkdir((dir.path() + "/sub").c_str(), 0755), 0);
  ASSERT_EQ(::symlink((dir.path() + "/sub").c_str(), (dir.path() + "/link").c_str()), 0);
  char resolved[PATH_MAX];
  ASSERT_NE(::realpath(dir.path().c_str(), resolved), nullptr);
  const std::string base(resolved);
  const std::wstring expected = std::wstring(base.begin(), base.end()) + L"/sub";
  WCHAR name[PATH_MAX];
  ASSERT_EQ(FilterGetDosName((dir.wide() + L"/sub/../sub").c_str(), name, PATH_MAX), S_OK);
  EXPECT_EQ(std::wstring(name), expected);
  ASSERT_EQ(FilterGetDosName((dir.wide() + L"/link").c_str(), name, PATH_MAX), S_OK);
  EXPECT_EQ(std::wstring(name), expected);
  // The size is in WCHARs, the NUL included.
  EXPECT_EQ(FilterGetDosName((dir.wide() + L"/sub").c_str(), name, static_cast<DWORD>(expected.size())),
            HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER));
  EXPECT_EQ(FilterGetDosName((dir.wide() + L"/sub").c_str(), name, static_cast<DWORD>(expected.size() + 1)),
            S_OK);
  // minispy's 15-WCHAR buffer is too small for most paths, so it prints no DOS name.
  WCHAR drive_letter[15];
  EXPECT_EQ(FilterGetDosName(L"/", drive_letter, 15), S_OK);
  EXPECT_EQ(std::wstring(drive_letter), L"/");
}

TEST(Win32FilterGetDosName, Errors) {
  TempDir dir;
  WCHAR name[PATH_MAX];
  EXPECT_EQ(FilterGetDosName((dir.wide() + L"/missing").c_str(), name, PATH_MAX),
            HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND));
  const std::string file = dir.path() + "/file";
  std::fclose(std::fopen(file.c_str(), "w"));
  EXPECT_EQ(FilterGetDosName(std::wstring(file.begin(), file.end()).c_str(), name, PATH_MAX),
            HRESULT_FROM_WIN32(ERROR_INVALID_NAME));
  EXPECT_EQ(FilterGetDosName(nullptr, name, PATH_MAX), E_INVALIDARG);
  EXPECT_EQ(FilterGetDosName(L"/tmp", nullptr, PATH_MAX), E_INVALIDARG);
  EXPECT_EQ(FilterGetDosName(L"no/such/relative/path", name, PATH_MAX), E_INVALIDARG);
}

// ---- FilterVolumeInstanceFind* ----

TEST(Win32FilterVolumeInstanceFind, WithoutFltmgrdIsFileNotFound) {
  fltport::test::ScopedRuntimeDir runtime;
  BYTE buffer[512];
  DWORD returned = 0;
  HANDLE find = nullptr;
  EXPECT_EQ(FilterVolumeInstanceFindFirst(L"/tmp", InstanceFullInformation, buffer, sizeof buffer, &returned,
                                          &find),
            HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND));
  EXPECT_EQ(find, INVALID_HANDLE_VALUE);
}

TEST(Win32FilterVolumeInstanceFind, ArgumentChecks) {
  fltport::test::ScopedRuntimeDir runtime;
  BYTE buffer[512];
  DWORD returned = 0;
  HANDLE find = nullptr;
  EXPECT_EQ(FilterVolumeInstanceFindFirst(L"/tmp", InstanceBasicInformation, buffer, sizeof buffer, &returned,
                                          &find),
            E_INVALIDARG);
  EXPECT_EQ(
      FilterVolumeInstanceFindFirst(L"/tmp", InstanceFullInformation, buffer, sizeof buffer, nullptr, &find),
      E_INVALIDARG);
  EXPECT_EQ(FilterVolumeInstanceFindFirst(L"/tmp", InstanceFullInformation, buffer, sizeof buffer, &returned,
                                          nullptr),
            E_INVALIDARG);
  EXPECT_EQ(FilterVolumeInstanceFindFirst(nullptr, InstanceFullInformation, buffer, sizeof buffer, &returned,
                                          &find),
            E_INVALIDARG);
  const HANDLE made_up = reinterpret_cast<HANDLE>(0x7777770);
  EXPECT_EQ(FilterVolumeInstanceFindNext(made_up, InstanceFullInformation, buffer, sizeof buffer, &returned),
            HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE));
  EXPECT_EQ(
      FilterVolumeInstanceFindNext(made_up, InstancePartialInformation, buffer, sizeof buffer, &returned),
      E_INVALIDARG);
  EXPECT_EQ(FilterVolumeInstanceFindClose(made_up), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE));
}

#if defined(FLTPORT_UNIT_FLTMGRD) && defined(FLTPORT_UNIT_PROBE_PLUGIN_DIR)
std::wstring Text(const BYTE* entry, USHORT offset, USHORT length) {
  return std::wstring(reinterpret_cast<const WCHAR*>(entry + offset), length / sizeof(WCHAR));
}

TEST(Win32FilterVolumeInstanceFind, EnumeratesTheInstancesOnOneVolume) {
  if (::access(FLTPORT_UNIT_FLTMGRD, X_OK) != 0) GTEST_SKIP() << "fltmgrd is not built";
  fltport::test::ScopedRuntimeDir runtime;
  TempDir watched, other;
  char resolved[PATH_MAX];
  ASSERT_NE(::realpath(watched.path().c_str(), resolved), nullptr);
  const std::string volume(resolved);
  const std::wstring wide_volume(volume.begin(), volume.end());
  fltport::test::Proc daemon({FLTPORT_UNIT_FLTMGRD, "--foreground", "--plugin-dir",
                              FLTPORT_UNIT_PROBE_PLUGIN_DIR, "--load", "probe", "--attach",
                              "probe=" + volume});
  if (!daemon.wait_for_line("fltmgrd: ready", 10s)) {
    daemon.signal(SIGTERM);
    daemon.finish(5s);
    GTEST_SKIP() << "fltmgrd did not start with the probe attached (fanotify needs CAP_SYS_ADMIN): "
                 << daemon.err;
  }

  alignas(8) BYTE buffer[1024];
  DWORD returned = 0;
  HANDLE find = nullptr;
  // A buffer too small: the size needed, no handle.
  EXPECT_EQ(FilterVolumeInstanceFindFirst(wide_volume.c_str(), InstanceFullInformation, buffer, 8, &returned,
                                          &find),
            HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER));
  EXPECT_GT(returned, 8u);
  EXPECT_EQ(find, INVALID_HANDLE_VALUE);

  ASSERT_EQ(FilterVolumeInstanceFindFirst(wide_volume.c_str(), InstanceFullInformation, buffer, sizeof buffer,
                                          &returned, &find),
            S_OK)
      << daemon.err;
  const auto* instance = reinterpret_cast<const INSTANCE_FULL_INFORMATION*>(buffer);
  EXPECT_EQ(instance->NextEntryOffset, 0u);
  EXPECT_EQ(Text(buffer, instance->FilterNameBufferOffset, instance->FilterNameLength), L"probe");
  EXPECT_EQ(Text(buffer, instance->VolumeNameBufferOffset, instance->VolumeNameLength), wide_volume);
  EXPECT_FALSE(Text(buffer, instance->InstanceNameBufferOffset, instance->InstanceNameLength).empty());
  EXPECT_FALSE(Text(buffer, instance->AltitudeBufferOffset, instance->AltitudeLength).empty());
  // minispy's use: NUL-terminate the filter name in place and compare it case-insensitively.
  auto* name = reinterpret_cast<WCHAR*>(buffer + instance->FilterNameBufferOffset);
  name[instance->FilterNameLength / sizeof(WCHAR)] = L'\0';
  EXPECT_EQ(_wcsicmp(name, L"PROBE"), 0);
  EXPECT_EQ(FilterVolumeInstanceFindNext(find, InstanceFullInformation, buffer, sizeof buffer, &returned),
            HRESULT_FROM_WIN32(ERROR_NO_MORE_ITEMS));
  // A find handle of another kind is not this one's.
  EXPECT_EQ(FilterVolumeFindClose(find), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE));
  EXPECT_EQ(FilterVolumeInstanceFindClose(find), S_OK);
  EXPECT_EQ(FilterVolumeInstanceFindClose(find), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE));

  // Another directory, and one inside the volume, have no instance of their own.
  const std::wstring wide_other(other.path().begin(), other.path().end());
  EXPECT_EQ(FilterVolumeInstanceFindFirst(wide_other.c_str(), InstanceFullInformation, buffer, sizeof buffer,
                                          &returned, &find),
            HRESULT_FROM_WIN32(ERROR_NO_MORE_ITEMS));
  ASSERT_EQ(::mkdir((volume + "/inner").c_str(), 0755), 0);
  EXPECT_EQ(FilterVolumeInstanceFindFirst((wide_volume + L"/inner").c_str(), InstanceFullInformation, buffer,
                                          sizeof buffer, &returned, &find),
            HRESULT_FROM_WIN32(ERROR_NO_MORE_ITEMS));

  // The volume list holds it, and its DOS name is its path: what minispy's ListDevices prints.
  ASSERT_EQ(FilterVolumeFindFirst(FilterVolumeBasicInformation, buffer, sizeof buffer - sizeof(WCHAR),
                                  &returned, &find),
            S_OK);
  auto* volume_entry = reinterpret_cast<FILTER_VOLUME_BASIC_INFORMATION*>(buffer);
  volume_entry->FilterVolumeName[volume_entry->FilterVolumeNameLength / sizeof(WCHAR)] = UNICODE_NULL;
  WCHAR dos_name[PATH_MAX];
  ASSERT_EQ(FilterGetDosName(volume_entry->FilterVolumeName, dos_name, PATH_MAX), S_OK);
  EXPECT_EQ(std::wstring(dos_name), wide_volume);
  EXPECT_EQ(FilterVolumeFindClose(find), S_OK);

  daemon.signal(SIGTERM);
  EXPECT_EQ(daemon.finish(5s), 0) << daemon.err;
}
#endif

#if defined(FLTPORT_UNIT_FLTMGRD) && defined(FLTPORT_UNIT_MINISPY_PLUGIN_DIR)
// examples/minispy's filter, as minispy's user program talks to it: GetMiniSpyVersion, then
// GetMiniSpyLog polled until the records of a file written in the watched directory arrive.
TEST(Win32MiniSpyFilter, LogsFileActivityInMinispysRecordLayout) {
  if (::access(FLTPORT_UNIT_FLTMGRD, X_OK) != 0) GTEST_SKIP() << "fltmgrd is not built";
  fltport::test::ScopedRuntimeDir runtime;
  TempDir watched;
  char resolved[PATH_MAX];
  ASSERT_NE(::realpath(watched.path().c_str(), resolved), nullptr);
  const std::string volume(resolved);
  fltport::test::Proc daemon({FLTPORT_UNIT_FLTMGRD, "--foreground", "--plugin-dir",
                              FLTPORT_UNIT_MINISPY_PLUGIN_DIR, "--load", "MiniSpy", "--attach",
                              "MiniSpy=" + volume});
  if (!daemon.wait_for_line("fltmgrd: ready", 10s)) {
    daemon.signal(SIGTERM);
    daemon.finish(5s);
    GTEST_SKIP() << "fltmgrd did not start with MiniSpy attached (fanotify needs CAP_SYS_ADMIN): "
                 << daemon.err;
  }
  HANDLE port = INVALID_HANDLE_VALUE;
  ASSERT_EQ(FilterConnectCommunicationPort(MINISPY_PORT_NAME, 0, nullptr, 0, nullptr, &port), S_OK)
      << daemon.err;

  MINISPY_COMMAND_MESSAGE command = {MINISPY_GET_VERSION, 0};
  MINISPY_VERSION version = {};
  DWORD returned = 0;
  ASSERT_EQ(FilterSendMessage(port, &command, sizeof command, &version, sizeof version, &returned), S_OK);
  EXPECT_EQ(returned, sizeof version);
  EXPECT_EQ(version.Major, MINISPY_VERSION_MAJOR);
  EXPECT_EQ(version.Minor, MINISPY_VERSION_MINOR);

  // Nothing happened yet: the error minispy's log thread sleeps on.
  command.Command = MINISPY_GET_LOG;
  alignas(8) BYTE buffer[4096];
  EXPECT_EQ(FilterSendMessage(port, &command, sizeof command, buffer, sizeof buffer, &returned),
            HRESULT_FROM_WIN32(ERROR_NO_MORE_ITEMS));

  const std::string path = volume + "/spied.txt";
  const std::wstring wide_path(path.begin(), path.end());
  FILE* file = std::fopen(path.c_str(), "w");
  ASSERT_NE(file, nullptr);
  std::fputs("minispy\n", file);
  std::fclose(file);

  FILETIME now;
  GetSystemTimeAsFileTime(&now);
  const LONGLONG now_ticks =
      static_cast<LONGLONG>((static_cast<ULONGLONG>(now.dwHighDateTime) << 32) | now.dwLowDateTime);
  bool created = false, closed = false;
  ULONG last_sequence = 0;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!(created && closed) && std::chrono::steady_clock::now() < deadline) {
    const HRESULT hr = FilterSendMessage(port, &command, sizeof command, buffer, sizeof buffer, &returned);
    if (hr == HRESULT_FROM_WIN32(ERROR_NO_MORE_ITEMS)) {
      Sleep(20);
      continue;
    }
    ASSERT_EQ(hr, S_OK);
    // minispy's own walk: one record after the other, each Length bytes.
    for (DWORD used = 0; used + offsetof(MINISPY_LOG_RECORD, Name) <= returned;) {
      const auto* record = reinterpret_cast<const MINISPY_LOG_RECORD*>(buffer + used);
      ASSERT_GE(record->Length, sizeof(MINISPY_LOG_RECORD) + sizeof(WCHAR));
      ASSERT_EQ(record->Length % 8, 0u);
      ASSERT_LE(used + record->Length, returned);
      EXPECT_GT(record->SequenceNumber, last_sequence);
      last_sequence = record->SequenceNumber;
      EXPECT_EQ(record->RecordType, MINISPY_RECORD_NORMAL);
      EXPECT_EQ(record->Data.Flags, MINISPY_IRP_OPERATION);
      EXPECT_EQ(record->Data.Status, STATUS_SUCCESS);
      EXPECT_LT(std::llabs(record->Data.OriginatingTime.QuadPart - now_ticks), 60LL * 10000000);
      if (std::wstring(record->Name) == wide_path) {
        EXPECT_EQ(record->Data.ProcessId, static_cast<ULONG_PTR>(::getpid()));
        created = created || record->Data.MajorFunction == 0x00;  // IRP_MJ_CREATE
        closed = closed || record->Data.MajorFunction == 0x12;    // IRP_MJ_CLEANUP
      }
      used += record->Length;
    }
  }
  EXPECT_TRUE(created) << daemon.err;
  EXPECT_TRUE(closed) << daemon.err;
  EXPECT_TRUE(CloseHandle(port));
  daemon.signal(SIGTERM);
  EXPECT_EQ(daemon.finish(5s), 0) << daemon.err;
}
#endif

}  // namespace
