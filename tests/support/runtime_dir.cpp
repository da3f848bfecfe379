#include "support/runtime_dir.hpp"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace fltport::test {

ScopedRuntimeDir::ScopedRuntimeDir() {
  char pattern[] = "/tmp/fltport-test-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) {
    throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  }
  path_ = pattern;
  // mkdtemp makes 0700; children that drop privileges must be able to traverse it.
  ::chmod(path_.c_str(), 0755);
  if (const char* old = std::getenv("FLTPORT_RUNTIME_DIR"); old != nullptr) previous_ = old;
  ::setenv("FLTPORT_RUNTIME_DIR", path_.c_str(), 1);
}

ScopedRuntimeDir::~ScopedRuntimeDir() {
  if (previous_) {
    ::setenv("FLTPORT_RUNTIME_DIR", previous_->c_str(), 1);
  } else {
    ::unsetenv("FLTPORT_RUNTIME_DIR");
  }
  remove_tree(path_);
}

std::vector<std::string> ScopedRuntimeDir::entries() const {
  std::vector<std::string> names;
  DIR* dir = ::opendir(path_.c_str());
  if (dir == nullptr) return names;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(dir);
  return names;
}

std::string ScopedRuntimeDir::socket_path(const std::string& normalized_name) const {
  const std::string expected = path_ + "/" + normalized_name + ".port";
  struct stat info{};
  if (::stat(expected.c_str(), &info) == 0 && S_ISSOCK(info.st_mode)) return expected;
  std::string found;
  int count = 0;
  for (const std::string& name : entries()) {
    const std::string full = path_ + "/" + name;
    if (::stat(full.c_str(), &info) == 0 && S_ISSOCK(info.st_mode)) {
      found = full;
      ++count;
    }
  }
  return count == 1 ? found : std::string();
}

void remove_tree(const std::string& path) {
  struct stat info{};
  if (::lstat(path.c_str(), &info) != 0) return;
  if (S_ISDIR(info.st_mode)) {
    if (DIR* dir = ::opendir(path.c_str())) {
      std::vector<std::string> children;
      while (const dirent* entry = ::readdir(dir)) {
        const std::string name = entry->d_name;
        if (name != "." && name != "..") children.push_back(path + "/" + name);
      }
      ::closedir(dir);
      for (const std::string& child : children) remove_tree(child);
    }
    ::rmdir(path.c_str());
  } else {
    ::unlink(path.c_str());
  }
}

}  // namespace fltport::test
