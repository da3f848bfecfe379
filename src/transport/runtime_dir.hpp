// Where port names live: a socket file per port under the runtime directory
// ($FLTPORT_RUNTIME_DIR, default /run/fltport), and a lock file that says which process owns it.
#pragma once

#include <fltport/result.hpp>

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
// Creates the directory (0755) when missing; refuses a path that is not a real directory.
Status ensure_runtime_directory(const std::string& directory);

std::string socket_path(const std::string& directory, const std::string& normalized_name);

// Takes the name for this process (an flock on "<name>.lock", released when the returned descriptor closes,
// even if the process dies): STATUS_OBJECT_NAME_COLLISION when a live owner holds it.
Result<UniqueFd> claim_port_name(const std::string& directory, const std::string& normalized_name);

}  // namespace fltport::transport
