// What /proc says of a process, for the tests' failure messages.
#pragma once

#include <dirent.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace fltport::test {

// A process's resident memory, descriptors and threads (-1: not readable, e.g. it has ended).
struct ProcessFigures {
  long rss_kib = -1;
  long fds = -1;
  long threads = -1;
};

inline ProcessFigures figures_of(pid_t pid) {
  ProcessFigures figures;
  const std::string proc = "/proc/" + std::to_string(pid);
  std::ifstream status(proc + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) figures.rss_kib = std::atol(line.c_str() + 6);
    if (line.rfind("Threads:", 0) == 0) figures.threads = std::atol(line.c_str() + 8);
  }
  if (DIR* dir = ::opendir((proc + "/fd").c_str())) {
    figures.fds = 0;
    while (const dirent* entry = ::readdir(dir)) {
      if (entry->d_name[0] != '.') ++figures.fds;
    }
    ::closedir(dir);
  }
  return figures;
}

// Each descriptor and what it is, "fd=target " (socket:[inode], /memfd:..., pipe:[...]).
inline std::string descriptors_of(pid_t pid) {
  const std::string directory = "/proc/" + std::to_string(pid) + "/fd";
  std::string text;
  if (DIR* dir = ::opendir(directory.c_str())) {
    while (const dirent* entry = ::readdir(dir)) {
      if (entry->d_name[0] == '.') continue;
      char target[256] = {};
      const ssize_t n = ::readlink((directory + "/" + entry->d_name).c_str(), target, sizeof target - 1);
      text += std::string(entry->d_name) + "=" + (n > 0 ? std::string(target, static_cast<size_t>(n)) : "?") +
              " ";
    }
    ::closedir(dir);
  }
  return text;
}

}  // namespace fltport::test
