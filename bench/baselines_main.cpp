// fltport-bench-baselines: round-trip latency of the two-process baselines a port is compared with.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "baselines.hpp"
#include "harness.hpp"

namespace {

constexpr size_t kWarmup = 1000;

struct Options {
  size_t iterations = 200000;
  size_t request_size = 64;
  size_t reply_size = 16;
  std::string json_path;
};

void print_usage(const char* program) {
  std::fprintf(stderr,
               "usage: %s [--iterations N] [--request-size BYTES] [--reply-size BYTES] [--json PATH]\n",
               program);
}

bool parse_size(const char* text, size_t& value) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long parsed = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-') return false;
  value = static_cast<size_t>(parsed);
  return true;
}

// Returns false (after printing why) if the command line is not usable.
bool parse_options(int argc, char** argv, Options& options) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") return false;
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s: missing value for %s\n", argv[0], flag.c_str());
      return false;
    }
    const char* value = argv[++i];
    bool ok = true;
    if (flag == "--iterations") {
      ok = parse_size(value, options.iterations) && options.iterations > 0;
    } else if (flag == "--request-size") {
      ok = parse_size(value, options.request_size);
    } else if (flag == "--reply-size") {
      ok = parse_size(value, options.reply_size);
    } else if (flag == "--json") {
      options.json_path = value;
    } else {
      std::fprintf(stderr, "%s: unknown option %s\n", argv[0], flag.c_str());
      return false;
    }
    if (!ok) {
      std::fprintf(stderr, "%s: invalid value '%s' for %s\n", argv[0], value, flag.c_str());
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace fltport::bench;
  Options options;
  if (!parse_options(argc, argv, options)) {
    print_usage(argv[0]);
    return 2;
  }

  const size_t n = options.iterations, request = options.request_size, reply = options.reply_size;
  const std::vector<std::pair<const char*, std::function<LatencyStats()>>> baselines = {
      {kBusyPollName, [&] { return busy_poll_pingpong(kWarmup, n, request, reply); }},
      {kSpinFutexName, [&] { return spin_futex_pingpong(kWarmup, n, request, reply); }},
      {kSeqpacketName, [&] { return seqpacket_pingpong(kWarmup, n, request, reply); }},
      {kZmqReqRepName, [&] { return zmq_reqrep(kWarmup, n, request, reply); }},
  };

  std::fprintf(stderr, "two-process ping-pong: %zu-byte request, %zu-byte reply, %zu warm-up + %zu timed\n",
               request, reply, kWarmup, n);
  std::vector<LatencyStats> rows;
  int exit_code = 0;
  for (const auto& [name, run] : baselines) {
    std::fprintf(stderr, "  %s ...\n", name);
    try {
      rows.push_back(run());
    } catch (const std::exception& error) {
      // One broken baseline should not hide the others.
      std::fprintf(stderr, "  %s failed: %s\n", name, error.what());
      exit_code = 1;
    }
  }

  print_table(rows, kBusyPollName);
  if (!options.json_path.empty()) {
    try {
      write_json(rows, options.json_path);
    } catch (const std::exception& error) {
      std::fprintf(stderr, "%s\n", error.what());
      exit_code = 1;
    }
  }
  return exit_code;
}
