// fltport-bench-fanotify: what a filter costs an open(). Every case times open()+close() in a child
// process (the host's own accesses are exempt from filtering), on files in a fresh temporary
// directory, in one run:
//   no listener | a bare fanotify responder that allows everything | the filter manager with an
//   allow-all filter, uncached and cached | fltmgrd + scanner + service, uncached and cached.
//
//   fltport-bench-fanotify [--files N] [--fltmgrd PATH --plugin-dir DIR --service PATH]
#include <fltport/filter.hpp>

#include <fcntl.h>
#include <linux/fanotify.h>
#include <poll.h>
#include <signal.h>
#include <sys/fanotify.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

// Opens each file once in a child process; returns µs per open+close.
double open_all_in_child(const std::vector<std::string>& files) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  const pid_t child = ::fork();
  if (child == 0) {
    ::alarm(120);
    const auto start = Clock::now();
    for (const auto& file : files) {
      const int fd = ::open(file.c_str(), O_RDONLY);
      if (fd >= 0) ::close(fd);
    }
    const double us = std::chrono::duration<double, std::micro>(Clock::now() - start).count() /
                      static_cast<double>(files.size());
    [[maybe_unused]] ssize_t w = ::write(fds[1], &us, sizeof us);
    ::_exit(0);
  }
  ::close(fds[1]);
  double us = -1;
  if (::read(fds[0], &us, sizeof us) != sizeof us) us = -1;
  ::close(fds[0]);
  ::waitpid(child, nullptr, 0);
  return us;
}

struct Row {
  std::string name;
  double us_per_open;
};

// A fanotify group answering FAN_OPEN_PERM with allow, nothing else: the kernel's own cost.
double bare_responder(const std::string& directory, const std::vector<std::string>& files) {
  const int group = ::fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE);
  if (group < 0) return -1;
  if (::fanotify_mark(group, FAN_MARK_ADD, FAN_OPEN_PERM | FAN_EVENT_ON_CHILD, AT_FDCWD, directory.c_str()) != 0) {
    ::close(group);
    return -1;
  }
  std::atomic<bool> stop{false};
  std::thread responder([&] {
    alignas(fanotify_event_metadata) char buffer[8192];
    while (!stop.load()) {
      pollfd pfd{group, POLLIN, 0};
      if (::poll(&pfd, 1, 100) <= 0) continue;
      const ssize_t length = ::read(group, buffer, sizeof buffer);
      if (length <= 0) continue;
      auto* event = reinterpret_cast<fanotify_event_metadata*>(buffer);
      ssize_t left = length;
      for (; FAN_EVENT_OK(event, left); event = FAN_EVENT_NEXT(event, left)) {
        if (event->fd < 0) continue;
        fanotify_response response{event->fd, FAN_ALLOW};
        [[maybe_unused]] ssize_t w = ::write(group, &response, sizeof response);
        ::close(event->fd);
      }
    }
  });
  const double us = open_all_in_child(files);
  stop = true;
  responder.join();
  ::close(group);  // also releases anything unanswered
  return us;
}

double filter_manager(const std::string& directory, const std::vector<std::string>& files, bool cache) {
  auto manager = fltport::FilterManager::create();
  if (!manager) return -1;
  fltport::FilterRegistration allow_all;
  allow_all.name = "allow-all";
  allow_all.operations = static_cast<uint32_t>(fltport::Operation::open);
  allow_all.pre_operation = [cache](const fltport::FileEvent&, fltport::PendingOperation&) {
    return fltport::PreResult::now(fltport::Verdict::allow(cache));
  };
  if (!(*manager)->register_filter(std::move(allow_all)).ok() || !(*manager)->attach("allow-all", directory).ok()) {
    return -1;
  }
  if (cache) open_all_in_child(files);  // first pass fills the cache
  return open_all_in_child(files);
}

// Starts `argv` with stdout on a pipe; waits (bounded) for a line containing `ready`. 0 on failure.
pid_t start_process(const std::vector<std::string>& argv, const char* ready) {
  int out[2];
  if (::pipe(out) != 0) return 0;
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    // Nobody reads a daemon's output after it is ready: a full pipe would stall it.
    ::dup2(ready != nullptr ? out[1] : null, STDOUT_FILENO);
    ::dup2(null, STDERR_FILENO);
    std::vector<char*> args;
    for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(out[1]);
  std::string seen;
  const auto give_up = Clock::now() + std::chrono::seconds(10);
  while (ready != nullptr && seen.find(ready) == std::string::npos && Clock::now() < give_up) {
    pollfd pfd{out[0], POLLIN, 0};
    if (::poll(&pfd, 1, 100) <= 0) continue;
    char buffer[256];
    const ssize_t n = ::read(out[0], buffer, sizeof buffer);
    if (n <= 0) break;
    seen.append(buffer, static_cast<size_t>(n));
  }
  // Keep draining in the background is not needed: the daemons write little; close our end later.
  if (ready != nullptr && seen.find(ready) == std::string::npos) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ::close(out[0]);
    return 0;
  }
  return pid;
}

void stop_process(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 50; ++i) {
    if (::waitpid(pid, nullptr, WNOHANG) == pid) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

// fltmgrd with the scanner filter and the scanner service: first pass uncached (every file is
// sent to the service), second pass cached.
std::pair<double, double> scanner(const std::string& directory, const std::vector<std::string>& files,
                                  const std::string& fltmgrd, const std::string& plugin_dir,
                                  const std::string& service) {
  const pid_t host = start_process({fltmgrd, "--foreground", "--plugin-dir", plugin_dir, "--load", "scanner",
                                    "--attach", "scanner=" + directory},
                                   "fltmgrd: ready");
  if (host == 0) return {-1, -1};
  const pid_t scanning = start_process({service}, nullptr);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // it connects within a few ms
  const double uncached = open_all_in_child(files);
  const double cached = open_all_in_child(files);
  stop_process(scanning);
  stop_process(host);
  return {uncached, cached};
}

}  // namespace

int main(int argc, char** argv) {
  size_t count = 20000;
  std::string fltmgrd = FLTPORT_BENCH_FLTMGRD;
  std::string plugin_dir = FLTPORT_BENCH_PLUGIN_DIR;
  std::string service = FLTPORT_BENCH_SCANNER_SERVICE;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--files") == 0) count = std::stoul(argv[++i]);
    else if (std::strcmp(argv[i], "--fltmgrd") == 0) fltmgrd = argv[++i];
    else if (std::strcmp(argv[i], "--plugin-dir") == 0) plugin_dir = argv[++i];
    else if (std::strcmp(argv[i], "--service") == 0) service = argv[++i];
  }
  char pattern[] = "/tmp/fltport-bench-fan-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) return 1;
  const std::string directory = pattern;
  char runtime[] = "/tmp/fltport-bench-run-XXXXXX";
  if (::mkdtemp(runtime) == nullptr) return 1;
  ::setenv("FLTPORT_RUNTIME_DIR", runtime, 1);
  // Distinct files, so that every open of a first pass is a first look for the filters.
  std::vector<std::string> files;
  for (size_t i = 0; i < count; ++i) {
    files.push_back(directory + "/file" + std::to_string(i) + ".txt");
    std::ofstream(files.back()) << "clean content " << i;
  }

  std::vector<Row> rows;
  rows.push_back({"no listener", open_all_in_child(files)});
  rows.push_back({"bare fanotify responder (allow all)", bare_responder(directory, files)});
  rows.push_back({"filter manager, allow-all filter, uncached", filter_manager(directory, files, false)});
  rows.push_back({"filter manager, allow-all filter, cached", filter_manager(directory, files, true)});
  if (!fltmgrd.empty() && !service.empty()) {
    const auto [uncached, cached] = scanner(directory, files, fltmgrd, plugin_dir, service);
    rows.push_back({"fltmgrd + scanner + service, uncached", uncached});
    rows.push_back({"fltmgrd + scanner + service, cached", cached});
  }
  std::filesystem::remove_all(directory);
  std::filesystem::remove_all(runtime);

  std::printf("\nopen()+close() of %zu files, each once per pass, in a child process\n", count);
  std::printf("%-48s %10s %12s %14s\n", "case", "us/open", "vs no filter", "vs bare resp.");
  for (const Row& row : rows) {
    if (row.us_per_open < 0) {
      std::printf("%-48s %10s\n", row.name.c_str(), "failed");
      continue;
    }
    std::printf("%-48s %10.2f %11.2fx %13.2fx\n", row.name.c_str(), row.us_per_open, row.us_per_open / rows[0].us_per_open,
                row.us_per_open / rows[1].us_per_open);
  }
  return 0;
}
