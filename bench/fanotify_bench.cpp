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

// The same file `count` times.
std::vector<std::string> repeated(const std::string& file, size_t count) { return std::vector<std::string>(count, file); }

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

}  // namespace

int main(int argc, char** argv) {
  size_t count = 20000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--files") == 0 && i + 1 < argc) count = std::stoul(argv[++i]);
  }
  char pattern[] = "/tmp/fltport-bench-fan-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) return 1;
  const std::string directory = pattern;
  const std::string file = directory + "/file.txt";
  std::ofstream(file) << "clean content";

  std::vector<Row> rows;
  const auto same = repeated(file, count);
  rows.push_back({"no listener", open_all_in_child(same)});
  rows.push_back({"bare fanotify responder (allow all)", bare_responder(directory, same)});
  rows.push_back({"filter manager, allow-all filter, uncached", filter_manager(directory, same, false)});
  rows.push_back({"filter manager, allow-all filter, cached", filter_manager(directory, same, true)});
  std::filesystem::remove_all(directory);

  std::printf("\nopen()+close() of one file, %zu times, in a child process\n", count);
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
