// fltmc as a real process against a real fltmgrd: the Windows-like tables, --json (checked with a
// small JSON parser), and clear errors with a non-zero exit. Each test has its own runtime
// directory; every process is bounded by a timeout, killed by its pid when it overstays, and reaped.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/captured_process.hpp"
#include "support/prerequisites.hpp"
#include "support/runtime_dir.hpp"

#ifndef FLTMC_PATH
#error "FLTMC_PATH is set by tools/fltmgrd/CMakeLists.txt"
#endif

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

using fltport::test::Proc;

// A directory for config files and attach targets, removed at the end.
class TempDir {
 public:
  TempDir() {
    char name[] = "/tmp/fltmc-test-XXXXXX";
    if (::mkdtemp(name) != nullptr) path_ = name;
  }
  ~TempDir() { fltport::test::remove_tree(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct Run {
  int code;
  std::string out, err;
};

Run fltmc(const std::vector<std::string>& args) {
  std::vector<std::string> argv{FLTMC_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  Proc proc(argv);
  const int code = proc.finish(10s);
  return {code, proc.out, proc.err};
}

// A strict little JSON parser: true when `text` is one JSON value (and whitespace).
class Json {
 public:
  static bool valid(const std::string& text) {
    Json parser(text);
    parser.space();
    if (!parser.value(0)) return false;
    parser.space();
    return parser.at_ == text.size();
  }

 private:
  explicit Json(const std::string& text) : s_(text) {}
  bool more() const { return at_ < s_.size(); }
  char peek() const { return more() ? s_[at_] : '\0'; }
  void space() {
    while (more() && (peek() == ' ' || peek() == '\n' || peek() == '\t' || peek() == '\r')) ++at_;
  }
  bool literal(const char* word) {
    const std::string w(word);
    if (s_.compare(at_, w.size(), w) != 0) return false;
    at_ += w.size();
    return true;
  }
  bool string() {
    if (peek() != '"') return false;
    ++at_;
    while (more()) {
      const auto c = static_cast<unsigned char>(s_[at_++]);
      if (c == '"') return true;
      if (c < 0x20) return false;
      if (c == '\\') {
        if (!more()) return false;
        const char e = s_[at_++];
        if (e == 'u') {
          for (int i = 0; i < 4; ++i)
            if (!more() || !std::isxdigit(static_cast<unsigned char>(s_[at_++]))) return false;
        } else if (std::string("\"\\/bfnrt").find(e) == std::string::npos) {
          return false;
        }
      }
    }
    return false;
  }
  bool number() {
    const size_t begin = at_;
    if (peek() == '-') ++at_;
    if (!std::isdigit(static_cast<unsigned char>(peek()))) return false;
    if (peek() == '0') {
      ++at_;
    } else {
      while (std::isdigit(static_cast<unsigned char>(peek()))) ++at_;
    }
    if (peek() == '.') {
      ++at_;
      if (!std::isdigit(static_cast<unsigned char>(peek()))) return false;
      while (std::isdigit(static_cast<unsigned char>(peek()))) ++at_;
    }
    return at_ > begin;
  }
  bool value(int depth) {
    if (depth > 32) return false;
    space();
    switch (peek()) {
      case '"': return string();
      case '{': {
        ++at_;
        space();
        if (peek() == '}') return ++at_, true;
        while (true) {
          space();
          if (!string()) return false;
          space();
          if (peek() != ':') return false;
          ++at_;
          if (!value(depth + 1)) return false;
          space();
          if (peek() == ',') { ++at_; continue; }
          if (peek() == '}') return ++at_, true;
          return false;
        }
      }
      case '[': {
        ++at_;
        space();
        if (peek() == ']') return ++at_, true;
        while (true) {
          if (!value(depth + 1)) return false;
          space();
          if (peek() == ',') { ++at_; continue; }
          if (peek() == ']') return ++at_, true;
          return false;
        }
      }
      case 't': return literal("true");
      case 'f': return literal("false");
      case 'n': return literal("null");
      default: return number();
    }
  }
  const std::string& s_;
  size_t at_ = 0;
};

class Daemon {
 public:
  explicit Daemon(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{FLTMGRD_PATH, "--foreground"};
    args.insert(args.end(), extra.begin(), extra.end());
    proc_ = std::make_unique<Proc>(args);
    ready_ = proc_->wait_for_line("fltmgrd: ready");
  }
  ~Daemon() { stop(); }
  bool ready() const { return ready_; }
  const std::string& log() const { return proc_->err; }
  int stop() {
    if (stopped_) return code_;
    stopped_ = true;
    proc_->signal(SIGTERM);
    code_ = proc_->finish(5s);
    return code_;
  }

 private:
  std::unique_ptr<Proc> proc_;
  bool ready_ = false;
  bool stopped_ = false;
  int code_ = -1;
};

const char* const kFiltersHeader =
    "\nFilter Name                     Num Instances    Altitude    Frame\n"
    "------------------------------  -------------  ------------  -----\n";

TEST(Fltmc, WithoutFltmgrdSaysSoAndFails) {
  fltport::test::ScopedRuntimeDir runtime;
  for (const auto& command : {"filters", "instances", "volumes", "ports", "stats"}) {
    auto run = fltmc({command});
    EXPECT_EQ(run.code, 1) << command;
    EXPECT_EQ(run.err, "fltmc: cannot reach fltmgrd (is it running?)\n") << command;
    EXPECT_EQ(run.out, "");
  }
  auto load = fltmc({"load", "scanner"});
  EXPECT_EQ(load.code, 1);
  EXPECT_NE(load.err.find("cannot reach fltmgrd"), std::string::npos);
}

TEST(Fltmc, UsageErrorsFail) {
  fltport::test::ScopedRuntimeDir runtime;
  EXPECT_NE(fltmc({}).code, 0);
  EXPECT_NE(fltmc({"frobnicate"}).code, 0);
  EXPECT_NE(fltmc({"load"}).code, 0);
  EXPECT_NE(fltmc({"attach", "scanner"}).code, 0);
  auto bad = fltmc({"load", "../x"});
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("invalid filter name"), std::string::npos) << bad.err;
}

TEST(Fltmc, EmptyDaemonShowsEmptyTables) {
  FLTPORT_SKIP_WITHOUT_FANOTIFY();
  fltport::test::ScopedRuntimeDir runtime;
  Daemon daemon;
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  auto filters = fltmc({"filters"});
  EXPECT_EQ(filters.code, 0) << filters.err;
  EXPECT_EQ(filters.out, kFiltersHeader);
  auto instances = fltmc({"instances"});
  EXPECT_EQ(instances.code, 0) << instances.err;
  EXPECT_EQ(instances.out.find("\nFilter                Volume Name"), 0u) << instances.out;
  auto volumes = fltmc({"volumes"});
  EXPECT_EQ(volumes.code, 0) << volumes.err;
  auto stats = fltmc({"stats"});
  EXPECT_EQ(stats.code, 0) << stats.err;
  auto ports = fltmc({"ports"});
  EXPECT_EQ(ports.code, 0) << ports.err;
  EXPECT_NE(ports.out.find("\\FltMgrControl"), std::string::npos) << ports.out;
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
}

TEST(Fltmc, JsonOutputIsValid) {
  FLTPORT_SKIP_WITHOUT_FANOTIFY();
  fltport::test::ScopedRuntimeDir runtime;
  Daemon daemon;
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  for (const auto& command : {"filters", "instances", "volumes", "ports", "stats"}) {
    auto run = fltmc({command, "--json"});
    EXPECT_EQ(run.code, 0) << command << ": " << run.err;
    EXPECT_TRUE(Json::valid(run.out)) << command << ": " << run.out;
    EXPECT_EQ(run.out.front(), '[') << command;
  }
  EXPECT_EQ(fltmc({"filters", "--json"}).out, "[]\n");
  auto ports = fltmc({"ports", "--json"});
  EXPECT_NE(ports.out.find("\"name\": \"\\\\FltMgrControl\""), std::string::npos) << ports.out;
  // The parser itself refuses what is not JSON.
  EXPECT_FALSE(Json::valid("[1,]"));
  EXPECT_FALSE(Json::valid("{\"a\" 1}"));
  EXPECT_FALSE(Json::valid("[\"\x01\"]"));
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
}

TEST(Fltmc, FailedCommandsExplainAndExitNonZero) {
  FLTPORT_SKIP_WITHOUT_FANOTIFY();
  fltport::test::ScopedRuntimeDir runtime;
  TempDir dir;
  Daemon daemon({"--plugin-dir", dir.path()});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  auto load = fltmc({"load", "nosuchfilter"});
  EXPECT_EQ(load.code, 1);
  EXPECT_NE(load.err.find("no plugin named 'nosuchfilter'"), std::string::npos) << load.err;
  EXPECT_NE(load.err.find(dir.path()), std::string::npos) << load.err;
  auto unload = fltmc({"unload", "nosuchfilter"});
  EXPECT_EQ(unload.code, 1);
  EXPECT_NE(unload.err.find("not loaded"), std::string::npos) << unload.err;
  auto attach = fltmc({"attach", "nosuchfilter", dir.path()});
  EXPECT_EQ(attach.code, 1);
  EXPECT_NE(attach.err.find("not loaded"), std::string::npos) << attach.err;
  auto detach = fltmc({"detach", "nosuchfilter", dir.path()});
  EXPECT_EQ(detach.code, 1);
  auto stats = fltmc({"stats", "nosuchfilter"});
  EXPECT_EQ(stats.code, 1);
  EXPECT_NE(stats.err.find("no filter named"), std::string::npos) << stats.err;
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
}

#ifdef FLTPORT_TEST_SCANNER_PLUGIN_DIR
TEST(Fltmc, ManagesTheScanner) {
  FLTPORT_SKIP_WITHOUT_FANOTIFY();
  const std::string plugin_dir = FLTPORT_TEST_SCANNER_PLUGIN_DIR;
  FLTPORT_SKIP_WITHOUT_SCANNER_PLUGIN(plugin_dir);
  fltport::test::ScopedRuntimeDir runtime;
  TempDir dir;
  Daemon daemon({"--plugin-dir", plugin_dir, "--altitude", "scanner=320000"});
  ASSERT_TRUE(daemon.ready()) << daemon.log();

  auto load = fltmc({"load", "scanner"});
  ASSERT_EQ(load.code, 0) << load.err;
  EXPECT_EQ(load.out.find("loaded scanner"), 0u) << load.out;
  auto again = fltmc({"load", "scanner"});
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.err.find("already loaded"), std::string::npos) << again.err;

  auto attach = fltmc({"attach", "scanner", dir.path(), "--json"});
  ASSERT_EQ(attach.code, 0) << attach.err;
  EXPECT_TRUE(Json::valid(attach.out)) << attach.out;

  auto filters = fltmc({"filters"});
  ASSERT_EQ(filters.code, 0) << filters.err;
  EXPECT_EQ(filters.out, std::string(kFiltersHeader) +
                             "scanner                                 1       320000         0\n");
  auto instances = fltmc({"instances"});
  EXPECT_NE(instances.out.find("scanner               " + dir.path()), std::string::npos) << instances.out;
  auto volumes = fltmc({"volumes", "--json"});
  EXPECT_TRUE(Json::valid(volumes.out)) << volumes.out;
  EXPECT_NE(volumes.out.find("\"volume\": \"" + dir.path() + "\""), std::string::npos) << volumes.out;
  auto ports = fltmc({"ports"});
  EXPECT_NE(ports.out.find("\\ScannerPort"), std::string::npos) << ports.out;

  std::ofstream(dir.path() + "/file") << "clean";  // some events for the statistics
  std::ifstream(dir.path() + "/file").get();
  auto stats = fltmc({"stats", "scanner", "--json"});
  ASSERT_EQ(stats.code, 0) << stats.err;
  EXPECT_TRUE(Json::valid(stats.out)) << stats.out;
  EXPECT_NE(stats.out.find("\"latency_us_log2\": ["), std::string::npos) << stats.out;
  auto instance_stats = fltmc({"instances", "--json"});
  EXPECT_TRUE(Json::valid(instance_stats.out)) << instance_stats.out;
  EXPECT_NE(instance_stats.out.find("\"latency_us_log2\": ["), std::string::npos) << instance_stats.out;
  auto all_stats = fltmc({"stats"});
  ASSERT_EQ(all_stats.code, 0) << all_stats.err;
  const size_t instance_section = all_stats.out.find("\nFilter                Volume Name");
  ASSERT_NE(instance_section, std::string::npos) << "fltmc stats shows each instance:\n" << all_stats.out;
  EXPECT_NE(all_stats.out.find("scanner               " + dir.path(), instance_section), std::string::npos)
      << all_stats.out;

  auto detach = fltmc({"detach", "scanner", dir.path()});
  EXPECT_EQ(detach.code, 0) << detach.err;
  EXPECT_EQ(fltmc({"instances", "--json"}).out, "[]\n");
  auto unload = fltmc({"unload", "scanner"});
  EXPECT_EQ(unload.code, 0) << unload.err;
  EXPECT_EQ(fltmc({"filters"}).out, kFiltersHeader);
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
}
#endif

}  // namespace
