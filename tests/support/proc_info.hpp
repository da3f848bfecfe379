// What /proc says of a process, for the tests' failure messages.
#pragma once

#include <dirent.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

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

// The fields of a thread of this process's /proc stat line after its name: [0] is field 3 of
// proc(5) (the state), [16] field 19 (the nice value). Empty if the thread is gone.
inline std::vector<std::string> thread_stat_fields(pid_t thread) {
  std::ifstream stat("/proc/self/task/" + std::to_string(thread) + "/stat");
  std::string line;
  std::getline(stat, line);
  std::vector<std::string> fields;
  const auto after_name = line.rfind(") ");
  if (after_name == std::string::npos) return fields;
  std::istringstream rest(line.substr(after_name + 2));
  for (std::string field; rest >> field;) fields.push_back(field);
  return fields;
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
