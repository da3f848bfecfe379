#include "transport/runtime_dir.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/log.hpp"
#include "transport/unix_socket.hpp"

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

std::string socket_path(const std::string& directory, const std::string& normalized_name) {
  return directory + "/" + normalized_name + ".port";
}

bool trusted_owner(uid_t uid) noexcept {
  return uid == 0 || uid == ::geteuid();
}

namespace {

constexpr const char* kLog = "runtime-dir";

unsigned euid() noexcept {
  return static_cast<unsigned>(::geteuid());
}

// The path of `name` inside the directory open as `directory_fd`, through /proc: binding or
// changing a file there reaches that very directory, whatever its path names now.
std::string through_descriptor(int directory_fd, const std::string& name) {
  return "/proc/self/fd/" + std::to_string(directory_fd) + "/" + name;
}

std::string descriptor_path(int fd) {
  return "/proc/self/fd/" + std::to_string(fd);
}

// What is at `name` in the directory, for a log line: "a symlink", "a FIFO"...
const char* kind_of(int directory_fd, const char* name) noexcept {
  struct stat info {};
  if (::fstatat(directory_fd, name, &info, AT_SYMLINK_NOFOLLOW) != 0) return "not accessible";
  switch (info.st_mode & S_IFMT) {
    case S_IFLNK:
      return "a symlink";
    case S_IFDIR:
      return "a directory";
    case S_IFIFO:
      return "a FIFO";
    case S_IFSOCK:
      return "a socket";
    case S_IFCHR:
    case S_IFBLK:
      return "a device";
    case S_IFREG:
      return "a regular file";
    default:
      return "of an unknown type";
  }
}

bool proc_available() noexcept {
  return ::access("/proc/self/fd", F_OK) == 0;
}

Status status_from_errno(int error) noexcept {
  switch (error) {
    case EACCES:
    case EPERM:
    case EROFS:
      return STATUS_ACCESS_DENIED;
    case ENAMETOOLONG:
      return STATUS_OBJECT_NAME_INVALID;
    case ENOMEM:
    case ENOBUFS:
    case EMFILE:
    case ENFILE:
    case ENOSPC:
      return STATUS_INSUFFICIENT_RESOURCES;
    default:
      return STATUS_UNSUCCESSFUL;
  }
}

}  // namespace

Result<UniqueFd> open_lock_file(int directory_fd, const std::string& directory,
                                const std::string& file_name) {
  const std::string shown = directory + "/" + file_name;
  UniqueFd lock(::openat(directory_fd, file_name.c_str(),
                         O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0600));
  if (!lock.valid()) {
    const int error = errno;
    FLTPORT_LOG(warning, kLog, "cannot open the lock file %s (%s: it is %s); refusing the port name",
                shown.c_str(), std::strerror(error), kind_of(directory_fd, file_name.c_str()));
    switch (error) {
      case ELOOP:  // a symlink
      case ENXIO:  // a socket
      case EISDIR:
      case ENODEV:
      case EOPNOTSUPP:
        return Status(STATUS_ACCESS_DENIED);
      default:
        return status_from_errno(error);
    }
  }
  struct stat info {};
  if (::fstat(lock.fd(), &info) != 0) return status_from_errno(errno);
  if (!S_ISREG(info.st_mode)) {
    FLTPORT_LOG(warning, kLog, "%s is not a regular file (mode %06o); refusing the port name", shown.c_str(),
                static_cast<unsigned>(info.st_mode));
    return Status(STATUS_ACCESS_DENIED);
  }
  if (!trusted_owner(info.st_uid)) {
    FLTPORT_LOG(warning, kLog, "%s is owned by uid %u, neither root nor us (uid %u); refusing the port name",
                shown.c_str(), static_cast<unsigned>(info.st_uid), euid());
    return Status(STATUS_ACCESS_DENIED);
  }
  if (info.st_nlink != 1) {
    FLTPORT_LOG(warning, kLog, "%s has %lu links; refusing the port name", shown.c_str(),
                static_cast<unsigned long>(info.st_nlink));
    return Status(STATUS_ACCESS_DENIED);
  }
  return lock;
}

Result<UniqueFd> open_runtime_directory(const std::string& directory) {
  if (::mkdir(directory.c_str(), 0755) != 0 && errno != EEXIST) {
    const int error = errno;
    FLTPORT_LOG(warning, kLog, "cannot create the runtime directory %s: %s", directory.c_str(),
                std::strerror(error));
    return Status(error == EACCES || error == EPERM || error == EROFS ? STATUS_ACCESS_DENIED
                                                                      : STATUS_OBJECT_NAME_NOT_FOUND);
  }
  // O_NOFOLLOW: a symlink planted at the runtime path must not redirect our files elsewhere.
  UniqueFd fd(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid()) {
    const int error = errno;
    FLTPORT_LOG(warning, kLog, "cannot open the runtime directory %s (%s: it is %s); refusing to use it",
                directory.c_str(), std::strerror(error), kind_of(AT_FDCWD, directory.c_str()));
    return Status(error == ELOOP || error == ENOTDIR || error == EACCES || error == EPERM
                      ? STATUS_ACCESS_DENIED
                      : STATUS_OBJECT_NAME_NOT_FOUND);
  }
  struct stat info {};
  if (::fstat(fd.fd(), &info) != 0 || !S_ISDIR(info.st_mode)) return Status(STATUS_ACCESS_DENIED);
  if (!trusted_owner(info.st_uid)) {
    FLTPORT_LOG(
        warning, kLog,
        "the runtime directory %s is owned by uid %u, neither root nor us (uid %u); refusing to use it",
        directory.c_str(), static_cast<unsigned>(info.st_uid), euid());
    return Status(STATUS_ACCESS_DENIED);
  }
  if ((info.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (info.st_mode & S_ISVTX) == 0) {
    FLTPORT_LOG(warning, kLog,
                "the runtime directory %s is writable by group or others without the sticky bit (mode %04o); "
                "refusing to use it",
                directory.c_str(), static_cast<unsigned>(info.st_mode & 07777));
    return Status(STATUS_ACCESS_DENIED);
  }
  return fd;
}

Result<PortName> PortName::claim(const std::string& directory, const std::string& normalized_name) {
  auto opened = open_runtime_directory(directory);
  if (!opened) return opened.status();
  PortName name;
  name.directory_ = std::move(*opened);
  name.socket_name_ = normalized_name + ".port";
  name.socket_path_ = transport::socket_path(directory, normalized_name);
  auto lock = open_lock_file(name.directory_.fd(), directory, normalized_name + ".lock");
  if (!lock) return lock.status();
  for (;;) {
    if (::flock(lock->fd(), LOCK_EX | LOCK_NB) == 0) break;
    if (errno == EINTR) continue;
    return Status(errno == EWOULDBLOCK ? STATUS_OBJECT_NAME_COLLISION : STATUS_UNSUCCESSFUL);
  }
  name.lock_ = std::move(*lock);
  return name;
}

Result<UniqueFd> PortName::listen() {
  const int dir = directory_.fd();
  const char* shown = socket_path_.c_str();
  // We own the name: a socket left here belongs to a dead owner. Nothing else is ours to remove.
  struct stat info {};
  if (::fstatat(dir, socket_name_.c_str(), &info, AT_SYMLINK_NOFOLLOW) == 0) {
    if (!S_ISSOCK(info.st_mode) || !trusted_owner(info.st_uid)) {
      FLTPORT_LOG(
          warning, kLog,
          "%s is not a socket a previous owner left (mode %06o, uid %u); leaving it, refusing the port",
          shown, static_cast<unsigned>(info.st_mode), static_cast<unsigned>(info.st_uid));
      return Status(STATUS_ACCESS_DENIED);
    }
    if (::unlinkat(dir, socket_name_.c_str(), 0) != 0 && errno != ENOENT) {
      const int error = errno;
      FLTPORT_LOG(warning, kLog, "cannot remove the stale socket %s: %s", shown, std::strerror(error));
      return status_from_errno(error);
    }
  } else if (errno != ENOENT) {
    const int error = errno;
    FLTPORT_LOG(warning, kLog, "cannot inspect %s: %s", shown, std::strerror(error));
    return status_from_errno(error);
  }

  UniqueFd socket(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!socket.valid()) return status_from_errno(errno);
  // Bound inside the directory we checked (through its descriptor); by path only without /proc.
  const bool proc = proc_available();
  auto address = address_of(proc ? through_descriptor(dir, socket_name_) : socket_path_);
  if (!address) return address.status();
  if (::bind(socket.fd(), reinterpret_cast<const sockaddr*>(&*address), sizeof *address) != 0) {
    const int error = errno;
    if (error == EADDRINUSE) {
      FLTPORT_LOG(warning, kLog, "%s appeared while the port was being created; refusing the port", shown);
      return Status(STATUS_ACCESS_DENIED);
    }
    FLTPORT_LOG(warning, kLog, "cannot bind %s: %s", shown, std::strerror(error));
    return status_from_errno(error);
  }
  bound_ = true;
  // Who may connect is decided on the peer's credentials at accept, not by file permissions: the
  // socket is made 0666 — the socket we bound, reached without following a symlink.
  UniqueFd bound(::openat(dir, socket_name_.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!bound.valid() || ::fstat(bound.fd(), &info) != 0 || !S_ISSOCK(info.st_mode) ||
      !trusted_owner(info.st_uid)) {
    FLTPORT_LOG(warning, kLog, "%s is not the socket just bound there; refusing the port", shown);
    bound_ = false;  // not ours to remove
    return Status(STATUS_ACCESS_DENIED);
  }
  const int changed = proc ? ::chmod(descriptor_path(bound.fd()).c_str(), 0666)
                           : ::fchmodat(dir, socket_name_.c_str(), 0666, 0);
  if (changed != 0 || ::listen(socket.fd(), SOMAXCONN) != 0) {
    const int error = errno;
    const Status failure = status_from_errno(error);
    FLTPORT_LOG(warning, kLog, "cannot make %s ready: %s", shown, std::strerror(error));
    remove_socket();
    return failure;
  }
  return socket;
}

void PortName::remove_socket() noexcept {
  if (!bound_ || !directory_.valid()) return;
  bound_ = false;
  struct stat info {};
  if (::fstatat(directory_.fd(), socket_name_.c_str(), &info, AT_SYMLINK_NOFOLLOW) == 0 &&
      S_ISSOCK(info.st_mode) && trusted_owner(info.st_uid)) {
    ::unlinkat(directory_.fd(), socket_name_.c_str(), 0);
  }
}

Status check_filter_peer(int connected, const std::string& port_name) {
  ucred listener{};
  socklen_t length = sizeof listener;
  if (::getsockopt(connected, SOL_SOCKET, SO_PEERCRED, &listener, &length) != 0) {
    FLTPORT_LOG(warning, kLog, "%s: cannot tell who listens on the port (%s); not connecting",
                port_name.c_str(), std::strerror(errno));
    return STATUS_ACCESS_DENIED;
  }
  if (trusted_owner(listener.uid)) return STATUS_SUCCESS;
  FLTPORT_LOG(
      warning, kLog,
      "%s: the port's socket is served by pid %d uid %u, neither root nor us (uid %u); not connecting",
      port_name.c_str(), static_cast<int>(listener.pid), static_cast<unsigned>(listener.uid), euid());
  return STATUS_ACCESS_DENIED;
}

}  // namespace fltport::transport
