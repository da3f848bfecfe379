#include "transport/runtime_dir.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace fltport::transport {

Result<std::string> normalize_port_name(std::string_view name) {
  if (!name.empty() && name.front() == '\\') name.remove_prefix(1);
  if (name.empty() || name.size() > kMaxPortNameLength || name == "." || name == "..") {
    return Status(STATUS_OBJECT_NAME_INVALID);
  }
  std::string normalized;
  normalized.reserve(name.size());
  for (const char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x21 || u > 0x7E || c == '/' || c == '\\') return Status(STATUS_OBJECT_NAME_INVALID);
    normalized.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
  }
  return normalized;
}

std::string runtime_directory() {
  const char* configured = std::getenv("FLTPORT_RUNTIME_DIR");
  return configured != nullptr && configured[0] != '\0' ? configured : "/run/fltport";
}

Status ensure_runtime_directory(const std::string& directory) {
  if (::mkdir(directory.c_str(), 0755) != 0 && errno != EEXIST) {
    return errno == EACCES || errno == EPERM ? STATUS_ACCESS_DENIED : STATUS_OBJECT_NAME_NOT_FOUND;
  }
  struct stat info {};
  // lstat: a symlink planted at the runtime path must not redirect our sockets elsewhere.
  if (::lstat(directory.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) return STATUS_ACCESS_DENIED;
  return STATUS_SUCCESS;
}

std::string socket_path(const std::string& directory, const std::string& normalized_name) {
  return directory + "/" + normalized_name + ".port";
}

Result<UniqueFd> claim_port_name(const std::string& directory, const std::string& normalized_name) {
  const std::string path = directory + "/" + normalized_name + ".lock";
  UniqueFd lock(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock.valid())
    return Status(errno == EACCES || errno == ELOOP ? STATUS_ACCESS_DENIED : STATUS_UNSUCCESSFUL);
  for (;;) {
    if (::flock(lock.fd(), LOCK_EX | LOCK_NB) == 0) return lock;
    if (errno == EINTR) continue;
    return Status(errno == EWOULDBLOCK ? STATUS_OBJECT_NAME_COLLISION : STATUS_UNSUCCESSFUL);
  }
}

}  // namespace fltport::transport
