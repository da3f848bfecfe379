// Where port names live: a socket file per port under the runtime directory
// ($FLTPORT_RUNTIME_DIR, default /run/fltport), and a lock file that says which process owns it.
//
// The directory may be one that others can write (a user may point the variable into /tmp), so
// the filter side trusts nothing it finds there: it opens the directory without following a
// symlink and checks it (owned by us or root; writable by group or others only with the sticky
// bit), then works relative to that descriptor, never by path, and follows no symlink and removes
// or changes no file that it did not make. The service side checks who listens on the socket it
// reached (the listener's kernel credentials), since anyone who can write the directory could
// have put a socket there.
#pragma once

#include <fltport/result.hpp>

#include <sys/types.h>

#include <string>
#include <string_view>

#include "transport/unix_socket.hpp"

namespace fltport::transport {

inline constexpr size_t kMaxPortNameLength = 64;

// "\\ScannerPort" -> "scannerport". Windows compares object names case-insensitively
// (OBJ_CASE_INSENSITIVE); one leading backslash is the root of the object namespace. Printable
// ASCII without '/' or '\\', not "." or "..", at most kMaxPortNameLength characters, or
// STATUS_OBJECT_NAME_INVALID.
Result<std::string> normalize_port_name(std::string_view name);

std::string runtime_directory();
std::string socket_path(const std::string& directory, const std::string& normalized_name);

// Whose files in the runtime directory, and whose listening socket, this process trusts: root's
// and its own effective uid's.
bool trusted_owner(uid_t uid) noexcept;

// The runtime directory, created (0755) when missing, opened (O_DIRECTORY | O_NOFOLLOW) and
// checked on the descriptor: a directory, owned by a trusted owner, not writable by group or
// others unless the sticky bit is set (as /tmp: then no one can remove or rename our files).
// STATUS_ACCESS_DENIED otherwise (a symlink, a file, someone else's directory), with a log line.
Result<UniqueFd> open_runtime_directory(const std::string& directory);

// Opens (creating it 0600 when missing) `file_name` in the directory open as `directory_fd`, for an
// flock: never through a symlink, never blocking (a FIFO), and only a regular file of a trusted
// owner with no other link; else STATUS_ACCESS_DENIED, logged with "<directory>/<file_name>".
Result<UniqueFd> open_lock_file(int directory_fd, const std::string& directory, const std::string& file_name);

// What a port holds in the runtime directory: the directory, opened and checked, and the lock on
// "<name>.lock" (an flock, released when this object goes, even if the process dies).
class PortName {
 public:
  PortName() = default;

  // Takes the name for this process. STATUS_OBJECT_NAME_COLLISION when a live owner holds it;
  // STATUS_ACCESS_DENIED when the directory fails its checks, or "<name>.lock" is a symlink, not a
  // regular file, not a trusted owner's, or has other links (each logged).
  static Result<PortName> claim(const std::string& directory, const std::string& normalized_name);

  // Binds and listens on "<name>.port" in the directory (mode 0666: who may connect is decided at
  // accept). A socket a previous owner left there (a trusted owner's socket: we hold the lock now)
  // is replaced; anything else there is left alone and refused with STATUS_ACCESS_DENIED.
  Result<UniqueFd> listen();
  // Removes the socket listen() made; before the lock goes, so that a new owner's is never removed.
  void remove_socket() noexcept;

  const std::string& socket_path() const noexcept { return socket_path_; }

 private:
  UniqueFd directory_;
  UniqueFd lock_;
  std::string socket_name_;  // "<name>.port"
  std::string socket_path_;  // for connecting and for the logs
  bool bound_ = false;
};

// For the service: STATUS_SUCCESS when the process listening at the other end of `connected` is a
// trusted owner's, else STATUS_ACCESS_DENIED (logged, naming the listener's pid and uid).
Status check_filter_peer(int connected, const std::string& port_name);

}  // namespace fltport::transport
