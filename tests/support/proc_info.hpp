// What /proc says of a process, for the tests' failure messages.
#pragma once

#include <dirent.h>
#include <sys/types.h>
#include <unistd.h>

#include <string>

namespace fltport::test {

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
