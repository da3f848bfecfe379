// fltmgrd as a real process (ready line, signals, the lock, the config file, the control port) and
// the fltuser management calls against it. Every process is bounded by a timeout, killed by its
// pid when it overstays, and reaped. Each test has its own runtime directory.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <fltport/fltuser.h>
#include <gtest/gtest.h>
#include <fltport/port.hpp>

#include "control/control_protocol.hpp"
#include "support/captured_process.hpp"
#include "support/prerequisites.hpp"
#include "support/runtime_dir.hpp"

#ifndef FLTMGRD_PATH
#error "FLTMGRD_PATH is set by tools/fltmgrd/CMakeLists.txt"
#endif

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

using fltport::test::Proc;

std::vector<std::string> daemon_args(std::vector<std::string> extra = {}) {
  std::vector<std::string> args{FLTMGRD_PATH, "--foreground"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

std::string write_file(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

// A directory for config files and attach targets, removed at the end.
class TempDir {
 public:
  TempDir() {
    char name[] = "/tmp/fltmgrd-test-XXXXXX";
    if (::mkdtemp(name) != nullptr) path_ = name;
  }
  ~TempDir() { fltport::test::remove_tree(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// ---- the control protocol, without processes ----

TEST(FltmgrdProtocol, RequestsRoundTrip) {
  namespace control = fltport::control;
  control::Request request{"attach", {"scanner", "/tmp/a b"}, 0};
  const std::string bytes = control::encode_request(request);
  ASSERT_FALSE(bytes.empty());
  control::DecodeError error;
  auto decoded = control::decode_request(bytes, error);
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->command, "attach");
  EXPECT_EQ(decoded->arguments, request.arguments);

  control::Request paged{"instances", {}, 42};
  decoded = control::decode_request(control::encode_request(paged), error);
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->start, 42u);
}

TEST(FltmgrdProtocol, RejectsBadRequests) {
  namespace control = fltport::control;
  control::DecodeError error;
  using namespace std::string_literals;
  EXPECT_FALSE(control::decode_request(""s, error));
  EXPECT_FALSE(control::decode_request("FLTCTL/1\0filters"s, error));  // no final NUL
  EXPECT_FALSE(control::decode_request("FLTCTL/2\0filters\0"s, error));
  EXPECT_EQ(error, control::DecodeError::version);
  EXPECT_FALSE(control::decode_request("FLTCTL/1\0bogus\0"s, error));
  EXPECT_EQ(error, control::DecodeError::unknown_command);
  EXPECT_FALSE(control::decode_request("FLTCTL/1\0load\0"s, error));
  EXPECT_EQ(error, control::DecodeError::arguments);
  EXPECT_FALSE(control::decode_request("FLTCTL/1\0load\0a\0b\0"s, error));
  EXPECT_FALSE(control::decode_request("FLTCTL/1\0load\0\0"s, error));       // empty argument
  EXPECT_FALSE(control::decode_request("FLTCTL/1\0load\0a\nb\0"s, error));   // control character
  EXPECT_FALSE(control::decode_request("FLTCTL/1\0filters\0x1\0"s, error));  // bad page index
  EXPECT_FALSE(control::decode_request(std::string(control::kMaxRequestSize + 1, '\0'), error));
  EXPECT_TRUE(control::encode_request({"load", {}, 0}).empty());
  EXPECT_TRUE(control::encode_request({"nope", {}, 0}).empty());
}

TEST(FltmgrdProtocol, TablesEscapeAndPage) {
  namespace control = fltport::control;
  control::TableWriter writer({{"name", control::ColumnType::text}, {"n", control::ColumnType::number}});
  writer.add({"a\tb\\c\nd", "7"});
  auto table = control::decode_table(writer.finish());
  ASSERT_TRUE(table.has_value());
  ASSERT_EQ(table->rows.size(), 1u);
  EXPECT_EQ(table->rows[0][0], "a\tb\\c\nd");
  EXPECT_EQ(table->columns[1].type, control::ColumnType::number);
  EXPECT_EQ(table->next, 0u);

  control::TableWriter big({{"path", control::ColumnType::text}});
  for (int i = 0; i < 100; ++i) big.add({std::string(4000, 'x')});
  const std::string first = big.finish();
  EXPECT_LE(first.size(), control::kMaxResponseSize);
  auto page = control::decode_table(first);
  ASSERT_TRUE(page.has_value());
  EXPECT_GT(page->next, 0u);
  size_t rows = page->rows.size();
  for (int pages = 1; page->next != 0 && pages < 10; ++pages) {
    const std::string text = big.finish(page->next);
    EXPECT_LE(text.size(), control::kMaxResponseSize);
    page = control::decode_table(text);
    ASSERT_TRUE(page.has_value());
    rows += page->rows.size();
  }
  EXPECT_EQ(page->next, 0u);
  EXPECT_EQ(rows, 100u);

  EXPECT_FALSE(control::decode_table("FLTCTL/1 next=0\n#n\nabc\n"));     // not a number
  EXPECT_FALSE(control::decode_table("FLTCTL/1 next=0\nname\na\tb\n"));  // too many fields
  EXPECT_FALSE(control::decode_table("garbage"));
}

// ---- the daemon ----

TEST(Fltmgrd, PrintsReadyAndExitsZeroOnSigterm) {
  FLTPORT_SKIP_WITHOUT_FANOTIFY();
  fltport::test::ScopedRuntimeDir runtime;
  Proc daemon(daemon_args());
  ASSERT_TRUE(daemon.wait_for_line("fltmgrd: ready")) << daemon.err;
  EXPECT_EQ(daemon.out, "fltmgrd: ready\n");
  const auto start = Clock::now();
  daemon.signal(SIGTERM);
  EXPECT_EQ(daemon.finish(2s), 0) << daemon.err;
  EXPECT_LT(Clock::now() - start, 2s);
}

TEST(Fltmgrd, ExitsZeroOnSigint) {
  FLTPORT_SKIP_WITHOUT_FANOTIFY();
  fltport::test::ScopedRuntimeDir runtime;
  Proc daemon(daemon_args());
  ASSERT_TRUE(daemon.wait_for_line("fltmgrd: ready")) << daemon.err;
  daemon.signal(SIGINT);
  EXPECT_EQ(daemon.finish(2s), 0) << daemon.err;
}

TEST(Fltmgrd, SecondDaemonOnTheSameRuntimeDirectoryRefuses) {
  FLTPORT_SKIP_WITHOUT_FANOTIFY();
  fltport::test::ScopedRuntimeDir runtime;
  Proc first(daemon_args());
  ASSERT_TRUE(first.wait_for_line("fltmgrd: ready")) << first.err;
  Proc second(daemon_args());
  EXPECT_EQ(second.finish(5s), 1);
  EXPECT_NE(second.err.find("another fltmgrd is already running"), std::string::npos) << second.err;
  EXPECT_EQ(second.out.find("ready"), std::string::npos);
  // The first one is unharmed.
  first.signal(SIGTERM);
  EXPECT_EQ(first.finish(2s), 0) << first.err;
}

// Someone who could write the runtime directory plants fltmgrd.lock as a symlink to a file of
// theirs: fltmgrd must neither follow it (it would truncate and write its pid there) nor start.
TEST(Fltmgrd, RefusesALockFilePlantedAsASymlink) {
  fltport::test::ScopedRuntimeDir runtime;
  TempDir elsewhere;
  const std::string victim = elsewhere.path() + "/victim";
  { std::ofstream(victim) << "keep me\n"; }
  ASSERT_EQ(::symlink(victim.c_str(), (runtime.path() + "/fltmgrd.lock").c_str()), 0) << std::strerror(errno);
  Proc daemon(daemon_args());
  EXPECT_EQ(daemon.finish(5s), 1);
  EXPECT_NE(daemon.err.find("fltmgrd.lock"), std::string::npos) << daemon.err;
  EXPECT_EQ(daemon.out.find("ready"), std::string::npos);
  std::ifstream in(victim);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "keep me\n");
}

TEST(Fltmgrd, UnknownFilterAtStartupFailsClearly) {
  FLTPORT_SKIP_WITHOUT_FANOTIFY();
  fltport::test::ScopedRuntimeDir runtime;
  TempDir plugins;
  Proc daemon(daemon_args({"--plugin-dir", plugins.path(), "--load", "nosuchfilter"}));
  EXPECT_EQ(daemon.finish(5s), 1);
  EXPECT_NE(daemon.err.find("no plugin named 'nosuchfilter'"), std::string::npos) << daemon.err;
  EXPECT_NE(daemon.err.find(plugins.path()), std::string::npos) << daemon.err;
}

TEST(Fltmgrd, AttachOfAFilterNotLoadedFails) {
  FLTPORT_SKIP_WITHOUT_FANOTIFY();
  fltport::test::ScopedRuntimeDir runtime;
  TempDir dir;
  Proc daemon(daemon_args({"--attach", "ghost=" + dir.path()}));
  EXPECT_EQ(daemon.finish(5s), 1);
  EXPECT_NE(daemon.err.find("not loaded"), std::string::npos) << daemon.err;
}

TEST(Fltmgrd, BadFlagValuesAreRefused) {
  fltport::test::ScopedRuntimeDir runtime;
  for (const auto& args : std::vector<std::vector<std::string>>{{"--altitude", "x=abc"},
                                                                {"--default", "x=maybe"},
                                                                {"--deadline-ms", "x=0"},
                                                                {"--attach", "noequals"},
                                                                {"--load", "../evil"}}) {
    Proc daemon(daemon_args(args));
    EXPECT_EQ(daemon.finish(5s), 2) << args[0] << " " << args[1] << ": " << daemon.err;
    EXPECT_FALSE(daemon.err.empty());
  }
}

TEST(Fltmgrd, ConfigErrorsNameTheLine) {
  fltport::test::ScopedRuntimeDir runtime;
  TempDir dir;
  struct Case {
    std::string text;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"# comment\n[filter a]\naltitude = high\n", ":3: altitude"},
      {"[filter a]\nload = true\n\nbogus = 1\n", ":4: unknown key 'bogus'"},
      {"altitude = 1\n", ":1: 'altitude' outside a section"},
      {"[filter a]\n[filter a]\n", ":2: duplicate section"},
      {"[nonsense]\n", ":1: unknown section"},
      {"[filter a\n", ":1: section header"},
      {"[filter a]\ndefault = maybe\n", ":2: default must be allow or deny"},
      {"[filter a]\nattach = relative/dir\n", ":2: attach needs an absolute"},
      {"[filter a]\n" + std::string(5000, 'x') + "\n", ":2: line longer than"},
      {"[filter a]\nload\n", ":2: expected 'key = value'"},
      {std::string("[filter a]\nload = true\x01\n"), ":2: control character"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = write_file(dir.path(), "bad" + std::to_string(i) + ".conf", cases[i].text);
    Proc daemon(daemon_args({"--config", path}));
    EXPECT_EQ(daemon.finish(5s), 2) << cases[i].text;
    EXPECT_NE(daemon.err.find(path + cases[i].expect), std::string::npos)
        << "case " << i << ": " << daemon.err;
  }
  Proc missing(daemon_args({"--config", dir.path() + "/absent.conf"}));
  EXPECT_EQ(missing.finish(5s), 2);
  EXPECT_NE(missing.err.find("absent.conf"), std::string::npos) << missing.err;
}

TEST(Fltmgrd, ValidConfigWithoutLoadsStarts) {
  FLTPORT_SKIP_WITHOUT_FANOTIFY();
  fltport::test::ScopedRuntimeDir runtime;
  TempDir dir;
  const std::string path = write_file(dir.path(), "ok.conf",
                                      "; fltmgrd configuration\n[fltmgrd]\nplugin_dir = " + dir.path() +
                                          "\n\n[filter scanner]\naltitude = 320000\ndeadline_ms = 500\n"
                                          "default = deny\nattach = " +
                                          dir.path() + "\nload = false\n");
  Proc daemon(daemon_args({"--config", path}));
  ASSERT_TRUE(daemon.wait_for_line("fltmgrd: ready")) << daemon.err;
  daemon.signal(SIGTERM);
  EXPECT_EQ(daemon.finish(2s), 0) << daemon.err;
}

TEST(Fltmgrd, ControlPortRejectsMalformedRequests) {
  FLTPORT_SKIP_WITHOUT_FANOTIFY();
  fltport::test::ScopedRuntimeDir runtime;
  Proc daemon(daemon_args());
  ASSERT_TRUE(daemon.wait_for_line("fltmgrd: ready")) << daemon.err;
  {
    auto connection = fltport::Connection::connect("\\FltMgrControl");
    ASSERT_TRUE(connection.ok()) << connection.status().to_string();
    std::vector<std::byte> output(fltport::control::kMaxResponseSize);
    auto send = [&](const std::string& bytes) {
      size_t returned = 0;
      return connection->send(
          fltport::ConstBytes(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()),
          fltport::MutableBytes(output), returned);
    };
    using namespace std::string_literals;
    EXPECT_EQ(send("FLTCTL/1\0bogus\0"s), fltport::Status(STATUS_INVALID_PARAMETER));
    EXPECT_EQ(send("FLTCTL/9\0filters\0"s), fltport::Status(STATUS_INVALID_PARAMETER));
    EXPECT_EQ(send("\xff\xfe garbage"s), fltport::Status(STATUS_INVALID_PARAMETER));
    EXPECT_EQ(send("FLTCTL/1\0load\0"s), fltport::Status(STATUS_INVALID_PARAMETER));
    EXPECT_EQ(send(std::string(200000, 'A')), fltport::Status(STATUS_INVALID_PARAMETER));
    // A valid request still works afterwards, and a small output buffer is reported, not overrun.
    EXPECT_EQ(send("FLTCTL/1\0filters\0"s), fltport::Status(STATUS_SUCCESS));
    std::vector<std::byte> tiny(4);
    size_t returned = 0;
    const std::string request = "FLTCTL/1\0filters\0"s;
    EXPECT_EQ(connection->send(
                  fltport::ConstBytes(reinterpret_cast<const std::byte*>(request.data()), request.size()),
                  fltport::MutableBytes(tiny), returned),
              fltport::Status(STATUS_BUFFER_TOO_SMALL));
    EXPECT_LE(returned, tiny.size());
  }
  daemon.signal(SIGTERM);
  EXPECT_EQ(daemon.finish(2s), 0) << daemon.err;
}

// ---- the fltuser management calls ----

TEST(Management, WithoutFltmgrdCallsReportFileNotFound) {
  fltport::test::ScopedRuntimeDir runtime;
  BYTE buffer[512];
  DWORD returned = 0;
  HANDLE find = nullptr;
  EXPECT_EQ(FilterFindFirst(FilterFullInformation, buffer, sizeof buffer, &returned, &find),
            HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND));
  EXPECT_EQ(find, INVALID_HANDLE_VALUE);
  EXPECT_EQ(FilterLoad(L"scanner"), HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND));
  EXPECT_EQ(FilterUnload(L"scanner"), HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND));
  EXPECT_EQ(FilterAttach(L"scanner", L"/tmp", nullptr, 0, nullptr), HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND));
  EXPECT_EQ(FilterDetach(L"scanner", L"/tmp", nullptr), HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND));
  EXPECT_EQ(FilterVolumeFindFirst(FilterVolumeBasicInformation, buffer, sizeof buffer, &returned, &find),
            HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND));
}

TEST(Management, ArgumentChecks) {
  fltport::test::ScopedRuntimeDir runtime;
  BYTE buffer[64];
  DWORD returned = 0;
  HANDLE find = nullptr;
  EXPECT_EQ(FilterLoad(nullptr), E_INVALIDARG);
  EXPECT_EQ(FilterLoad(L""), E_INVALIDARG);
  EXPECT_EQ(FilterLoad(L"../x"), E_INVALIDARG);
  EXPECT_EQ(FilterFindFirst(FilterFullInformation, buffer, sizeof buffer, nullptr, &find), E_INVALIDARG);
  EXPECT_EQ(FilterFindFirst(FilterAggregateBasicInformation, buffer, sizeof buffer, &returned, &find),
            E_INVALIDARG);
  EXPECT_EQ(FilterInstanceFindFirst(L"x", InstanceBasicInformation, buffer, sizeof buffer, &returned, &find),
            E_INVALIDARG);
  EXPECT_EQ(FilterFindNext(reinterpret_cast<HANDLE>(0x7777770), FilterFullInformation, buffer, sizeof buffer,
                           &returned),
            HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE));
  EXPECT_EQ(FilterFindClose(reinterpret_cast<HANDLE>(0x7777770)), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE));
}

TEST(Management, EmptyDaemonEnumeratesNothing) {
  FLTPORT_SKIP_WITHOUT_FANOTIFY();
  fltport::test::ScopedRuntimeDir runtime;
  Proc daemon(daemon_args());
  ASSERT_TRUE(daemon.wait_for_line("fltmgrd: ready")) << daemon.err;
  BYTE buffer[1024];
  DWORD returned = 123;
  HANDLE find = nullptr;
  EXPECT_EQ(FilterFindFirst(FilterFullInformation, buffer, sizeof buffer, &returned, &find),
            HRESULT_FROM_WIN32(ERROR_NO_MORE_ITEMS));
  EXPECT_EQ(find, INVALID_HANDLE_VALUE);
  EXPECT_EQ(FilterVolumeFindFirst(FilterVolumeBasicInformation, buffer, sizeof buffer, &returned, &find),
            HRESULT_FROM_WIN32(ERROR_NO_MORE_ITEMS));
  EXPECT_EQ(
      FilterInstanceFindFirst(L"scanner", InstanceFullInformation, buffer, sizeof buffer, &returned, &find),
      HRESULT_FROM_WIN32(ERROR_NO_MORE_ITEMS));
  const HRESULT load = FilterLoad(L"nosuchfilter");
  EXPECT_TRUE(FAILED(load));
  EXPECT_EQ(load, HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND));  // as Windows: no such driver file
  EXPECT_TRUE(FAILED(FilterUnload(L"nosuchfilter")));
  EXPECT_TRUE(FAILED(FilterAttach(L"nosuchfilter", L"/tmp", nullptr, 0, nullptr)));
  daemon.signal(SIGTERM);
  EXPECT_EQ(daemon.finish(2s), 0) << daemon.err;
}

#ifdef FLTPORT_TEST_SCANNER_PLUGIN_DIR
std::wstring wide(const std::string& text) {
  return std::wstring(text.begin(), text.end());
}

// What the systemd unit relies on: a configuration that loads a filter and attaches it, with its
// settings, and nothing on the command line but --config.
TEST(Fltmgrd, ConfigLoadsAndAttachesWithItsSettings) {
  FLTPORT_SKIP_WITHOUT_FANOTIFY();
  const std::string plugin_dir = FLTPORT_TEST_SCANNER_PLUGIN_DIR;
  FLTPORT_SKIP_WITHOUT_SCANNER_PLUGIN(plugin_dir);
  fltport::test::ScopedRuntimeDir runtime;
  TempDir dir;
  TempDir watched;
  const std::string config = write_file(dir.path(), "fltmgrd.conf",
                                        "[fltmgrd]\nplugin_dir = " + plugin_dir +
                                            "\n\n[filter scanner]\naltitude = 320000\ndeadline_ms = 1500\n"
                                            "default = deny\nattach = " +
                                            watched.path() + "\nload = true\n");
  Proc daemon(daemon_args({"--config", config}));
  ASSERT_TRUE(daemon.wait_for_line("fltmgrd: ready")) << daemon.err;
  EXPECT_NE(daemon.err.find("loaded scanner from " + plugin_dir), std::string::npos) << daemon.err;
  EXPECT_NE(daemon.err.find("altitude 320000, deadline 1500 ms, default deny"), std::string::npos)
      << daemon.err;
  EXPECT_NE(daemon.err.find("attached scanner to " + watched.path()), std::string::npos) << daemon.err;
  alignas(8) BYTE buffer[4096];
  DWORD returned = 0;
  HANDLE find = INVALID_HANDLE_VALUE;
  ASSERT_EQ(
      FilterInstanceFindFirst(L"scanner", InstanceFullInformation, buffer, sizeof buffer, &returned, &find),
      S_OK);
  auto* instance = reinterpret_cast<INSTANCE_FULL_INFORMATION*>(buffer);
  const std::wstring volume(reinterpret_cast<const WCHAR*>(buffer + instance->VolumeNameBufferOffset),
                            instance->VolumeNameLength / sizeof(WCHAR));
  EXPECT_EQ(volume, wide(watched.path()));
  EXPECT_EQ(FilterInstanceFindClose(find), S_OK);
  daemon.signal(SIGTERM);
  EXPECT_EQ(daemon.finish(2s), 0) << daemon.err;
}

TEST(Management, LoadAttachEnumerateDetachUnloadWithTheScanner) {
  FLTPORT_SKIP_WITHOUT_FANOTIFY();
  const std::string plugin_dir = FLTPORT_TEST_SCANNER_PLUGIN_DIR;
  FLTPORT_SKIP_WITHOUT_SCANNER_PLUGIN(plugin_dir);
  fltport::test::ScopedRuntimeDir runtime;
  TempDir dir;
  Proc daemon(daemon_args({"--plugin-dir", plugin_dir, "--altitude", "scanner=320000"}));
  ASSERT_TRUE(daemon.wait_for_line("fltmgrd: ready")) << daemon.err;

  ASSERT_EQ(FilterLoad(L"scanner"), S_OK) << daemon.err;
  EXPECT_TRUE(FAILED(FilterLoad(L"scanner")));  // already loaded
  WCHAR created[512];
  ASSERT_EQ(FilterAttach(L"scanner", wide(dir.path()).c_str(), nullptr, sizeof created, created), S_OK);
  EXPECT_EQ(std::wstring(created), wide(fltport::control::instance_name("scanner", dir.path())));

  // Filters: one entry; a buffer too small says how much is needed and does not advance.
  alignas(8) BYTE buffer[4096];
  DWORD returned = 0;
  HANDLE find = INVALID_HANDLE_VALUE;
  EXPECT_EQ(FilterFindFirst(FilterFullInformation, buffer, 8, &returned, &find),
            HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER));
  EXPECT_EQ(returned, offsetof(FILTER_FULL_INFORMATION, FilterNameBuffer) + 7 * sizeof(WCHAR));
  EXPECT_EQ(find, INVALID_HANDLE_VALUE);
  ASSERT_EQ(FilterFindFirst(FilterFullInformation, buffer, sizeof buffer, &returned, &find), S_OK);
  auto* filter = reinterpret_cast<FILTER_FULL_INFORMATION*>(buffer);
  EXPECT_EQ(filter->NumberOfInstances, 1u);
  EXPECT_EQ(filter->FrameID, 0u);
  EXPECT_EQ(std::wstring(filter->FilterNameBuffer, filter->FilterNameLength / sizeof(WCHAR)), L"scanner");
  EXPECT_EQ(FilterFindNext(find, FilterFullInformation, buffer, sizeof buffer, &returned),
            HRESULT_FROM_WIN32(ERROR_NO_MORE_ITEMS));
  EXPECT_EQ(FilterFindClose(find), S_OK);

  // Instances.
  ASSERT_EQ(
      FilterInstanceFindFirst(L"scanner", InstanceFullInformation, buffer, sizeof buffer, &returned, &find),
      S_OK);
  auto* instance = reinterpret_cast<INSTANCE_FULL_INFORMATION*>(buffer);
  auto text = [&](USHORT offset, USHORT length) {
    return std::wstring(reinterpret_cast<const WCHAR*>(buffer + offset), length / sizeof(WCHAR));
  };
  EXPECT_EQ(text(instance->FilterNameBufferOffset, instance->FilterNameLength), L"scanner");
  EXPECT_EQ(text(instance->VolumeNameBufferOffset, instance->VolumeNameLength), wide(dir.path()));
  EXPECT_EQ(text(instance->AltitudeBufferOffset, instance->AltitudeLength), L"320000");
  EXPECT_EQ(FilterInstanceFindNext(find, InstanceFullInformation, buffer, sizeof buffer, &returned),
            HRESULT_FROM_WIN32(ERROR_NO_MORE_ITEMS));
  EXPECT_EQ(FilterInstanceFindClose(find), S_OK);

  // Volumes.
  ASSERT_EQ(FilterVolumeFindFirst(FilterVolumeBasicInformation, buffer, sizeof buffer, &returned, &find),
            S_OK);
  auto* volume = reinterpret_cast<FILTER_VOLUME_BASIC_INFORMATION*>(buffer);
  EXPECT_EQ(std::wstring(volume->FilterVolumeName, volume->FilterVolumeNameLength / sizeof(WCHAR)),
            wide(dir.path()));
  EXPECT_EQ(CloseHandle(find), TRUE);  // CloseHandle works on find handles too

  EXPECT_EQ(FilterDetach(L"scanner", wide(dir.path()).c_str(), nullptr), S_OK);
  EXPECT_EQ(
      FilterInstanceFindFirst(L"scanner", InstanceFullInformation, buffer, sizeof buffer, &returned, &find),
      HRESULT_FROM_WIN32(ERROR_NO_MORE_ITEMS));
  EXPECT_EQ(FilterUnload(L"scanner"), S_OK);
  EXPECT_EQ(FilterFindFirst(FilterFullInformation, buffer, sizeof buffer, &returned, &find),
            HRESULT_FROM_WIN32(ERROR_NO_MORE_ITEMS));
  daemon.signal(SIGTERM);
  EXPECT_EQ(daemon.finish(2s), 0) << daemon.err;
}
#endif

}  // namespace
