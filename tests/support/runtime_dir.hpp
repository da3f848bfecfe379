// A fresh runtime directory per test: port names map to sockets under $FLTPORT_RUNTIME_DIR, so every
// test gets its own mkdtemp directory (mode 0755, so that unprivileged children can reach it), sets
// the variable for itself and for the processes it forks, and restores it and removes the directory
// at the end.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace fltport::test {

class ScopedRuntimeDir {
 public:
  ScopedRuntimeDir();
  ~ScopedRuntimeDir();
  ScopedRuntimeDir(const ScopedRuntimeDir&) = delete;
  ScopedRuntimeDir& operator=(const ScopedRuntimeDir&) = delete;

  const std::string& path() const noexcept { return path_; }
  // Names of the directory's entries (without "." and "..").
  std::vector<std::string> entries() const;
  // The socket a port name maps to: "<dir>/<lowercased name without the leading backslash>.port"
  // when it exists, else the only socket file in the directory, else "".
  std::string socket_path(const std::string& normalized_name) const;

 private:
  std::string path_;
  std::optional<std::string> previous_;
};

// Removes a directory tree (best effort; used for the runtime directory).
void remove_tree(const std::string& path);

}  // namespace fltport::test
