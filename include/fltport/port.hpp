// The C++ API of communication ports. The filter side creates a ServerPort; each service that
// connects becomes a ClientPort the filter sends messages to. The service side holds a Connection.
// fltkernel.h and fltuser.h are thin translations of these classes.
#pragma once

#include <fltport/result.hpp>

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace fltport {

using ConstBytes = std::span<const std::byte>;
using MutableBytes = std::span<std::byte>;

// Largest message, reply, request or response payload, in bytes. One frame of the socket
// transport must fit the default AF_UNIX send buffer (212992 bytes) that unprivileged peers get.
inline constexpr size_t kMaxMessageSize = 128 * 1024;
// The connection context is a WORD-sized count in FilterConnectCommunicationPort.
inline constexpr size_t kMaxConnectionContextSize = 65535;

// How long a call may wait: forever, not at all, for a duration, or until a point in time.
class FLTPORT_API Timeout {
 public:
  using Clock = std::chrono::steady_clock;

  static Timeout infinite() noexcept { return Timeout(Clock::time_point::max()); }
  static Timeout none() noexcept { return Timeout(std::chrono::nanoseconds::zero()); }
  static Timeout at(Clock::time_point deadline) noexcept { return Timeout(deadline); }
  static Timeout at(std::chrono::system_clock::time_point deadline) noexcept;
  Timeout(std::chrono::nanoseconds relative) noexcept;  // NOLINT(google-explicit-constructor)

  bool is_infinite() const noexcept { return deadline_ == Clock::time_point::max(); }
  Clock::time_point deadline() const noexcept { return deadline_; }

 private:
  explicit Timeout(Clock::time_point deadline) noexcept : deadline_(deadline) {}
  Clock::time_point deadline_;
};

// The credentials of the process at the other end, from the kernel (SO_PEERCRED, SO_PEERGROUPS).
struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
};

// Who may connect to a port. Root is always admitted (as administrators are by Windows' default
// descriptor); others by an allow list, or by Unix-style mode bits on an owner and group where the
// write bit grants connecting.
class FLTPORT_API PortSecurity {
 public:
  // FltBuildDefaultSecurityDescriptor: administrators (root) only.
  static PortSecurity root_only() { return PortSecurity(); }
  static PortSecurity with_mode(uid_t owner, gid_t group, mode_t mode);
  static PortSecurity everyone() { return with_mode(0, 0, 0666); }
  PortSecurity& allow_uid(uid_t uid);
  PortSecurity& allow_gid(gid_t gid);

  bool admits(const PeerCredentials& peer) const;

 private:
  uid_t owner_ = 0;
  gid_t group_ = 0;
  mode_t mode_ = 0600;
  std::vector<uid_t> uids_;
  std::vector<gid_t> gids_;
};

namespace detail {
class ServerPortCore;
class PortConnection;
class ServiceConnection;
}  // namespace detail

// What the service's reply was, as FltSendMessage reports it.
// How a connection carries its frames. `shared_memory`: two bounded rings in a memfd that both
// processes map, with spin-then-sleep waits (futex), the socket kept for liveness and for frames
// larger than a ring slot; chosen when both sides ask for it, else the socket. `socket`: every
// frame through the AF_UNIX socket. The environment variable FLTPORT_TRANSPORT=socket forces the
// socket for every port and connection of a process (tests, comparisons).
enum class PortTransport : uint8_t { shared_memory, socket };

// How long a thread that waits on a shared-memory ring spins before it sleeps. Spinning costs CPU
// while it lasts; a wake-up from sleep costs ~10 us on a VM. 0 = sleep at once. The environment
// variable FLTPORT_SPIN_NS overrides it. No spinning when the peer is known to be asleep.
inline constexpr std::chrono::nanoseconds kDefaultSpinBudget{50'000};
// A service's default is longer: its reader waits for the filter's next message, and between two
// file operations of one process lies the kernel's own round trip (~35 us on a 2-vCPU VM), which
// a 50 us budget misses often enough to put the service to sleep on every other event.
inline constexpr std::chrono::nanoseconds kDefaultServiceSpinBudget{100'000};

struct ReplyInfo {
  size_t length = 0;                       // bytes copied into the reply buffer
  size_t full_length = 0;                  // bytes the service replied with
  NTSTATUS reply_status = STATUS_SUCCESS;  // FILTER_REPLY_HEADER.Status
  bool truncated() const noexcept { return full_length > length; }
};

// The filter's handle on one service connection. Move-only; destroying or closing it closes the
// connection (FltCloseClientPort).
class FLTPORT_API ClientPort {
 public:
  ClientPort() noexcept;
  explicit ClientPort(std::shared_ptr<detail::PortConnection> connection) noexcept;
  ClientPort(ClientPort&&) noexcept;
  ClientPort& operator=(ClientPort&&) noexcept;
  ClientPort(const ClientPort&) = delete;
  ClientPort& operator=(const ClientPort&) = delete;
  ~ClientPort();

  // Sends `message` and waits until the service has replied into `reply` (FltSendMessage with a
  // reply buffer). Failures: STATUS_TIMEOUT, STATUS_PORT_DISCONNECTED, STATUS_INVALID_PARAMETER,
  // STATUS_THREAD_IS_TERMINATING. A reply longer than `reply` is reported by ReplyInfo::truncated().
  Result<ReplyInfo> send(ConstBytes message, MutableBytes reply, Timeout timeout = Timeout::infinite());
  // Sends `message` and waits until the service has taken it, expecting no reply.
  Status post(ConstBytes message, Timeout timeout = Timeout::infinite());
  void close() noexcept;

  bool is_open() const noexcept;
  const PeerCredentials& peer() const noexcept;
  // What this connection settled on at connect.
  PortTransport transport() const noexcept;
  const std::shared_ptr<detail::PortConnection>& connection() const noexcept { return connection_; }

 private:
  std::shared_ptr<detail::PortConnection> connection_;
};

struct ConnectRequest {
  ConstBytes context;  // the service's connection context, at most kMaxConnectionContextSize bytes
  const PeerCredentials& peer;
};

// Runs when a service connects. Return a failure status to refuse it (the service receives that
// status). Move `client` out to keep it; if left, the library keeps the connection open until the
// service closes it. `connection_cookie` is handed to the two other callbacks.
using ConnectHandler =
    std::function<Status(ClientPort& client, const ConnectRequest& request, void*& connection_cookie)>;
// Runs once per accepted connection, when it ends for any reason.
using DisconnectHandler = std::function<void(void* connection_cookie)>;
// Runs for each FilterSendMessage; sets `returned_length` (at most output.size()).
using MessageHandler = std::function<Status(void* connection_cookie, ConstBytes input, MutableBytes output,
                                            size_t& returned_length)>;

struct ServerPortOptions {
  std::string name;  // "\\ScannerPort" or "ScannerPort"; compared case-insensitively
  PortSecurity security = PortSecurity::root_only();
  int max_connections = 1;
  ConnectHandler on_connect;        // may be empty: every admitted connection is accepted
  DisconnectHandler on_disconnect;  // may be empty
  MessageHandler on_message;        // may be empty: FilterSendMessage then fails
  // Messages waiting for a service thread, per connection, before senders wait for room.
  size_t queue_limit = 1024;
  PortTransport transport = PortTransport::shared_memory;
  std::chrono::nanoseconds spin_budget = kDefaultSpinBudget;
};

// A named rendezvous services connect to (FltCreateCommunicationPort). Move-only. close() stops
// new connections and leaves existing ones working (FltCloseCommunicationPort); destroying the
// object also closes every connection and waits for the callbacks in flight.
class FLTPORT_API ServerPort {
 public:
  // Failures: STATUS_INVALID_PARAMETER (bad options), STATUS_OBJECT_NAME_INVALID,
  // STATUS_OBJECT_NAME_COLLISION, STATUS_ACCESS_DENIED (runtime directory), STATUS_INSUFFICIENT_RESOURCES.
  static Result<ServerPort> create(ServerPortOptions options);

  ServerPort() noexcept = default;  // no port
  ServerPort(ServerPort&&) noexcept;
  ServerPort& operator=(ServerPort&&) noexcept;
  ServerPort(const ServerPort&) = delete;
  ServerPort& operator=(const ServerPort&) = delete;
  ~ServerPort();

  void close() noexcept;
  const std::string& name() const noexcept;
  size_t connection_count() const noexcept;

 private:
  explicit ServerPort(std::shared_ptr<detail::ServerPortCore> core) noexcept;
  std::shared_ptr<detail::ServerPortCore> core_;
};

// A server port of this process, as fltmgrd's `ports` command reports it.
struct ServerPortInfo {
  std::string name;
  std::string socket_path;  // where services connect
  int max_connections = 0;
  size_t connections = 0;
  bool listening = false;  // false after close() (FltCloseCommunicationPort)
};
// The server ports this process has created and not destroyed, in creation order.
FLTPORT_API std::vector<ServerPortInfo> list_server_ports();

// A message taken by the service (FilterGetMessage).
struct MessageInfo {
  uint64_t id = 0;
  bool wants_reply = false;
  size_t reply_capacity = 0;  // reply data bytes the filter accepts (FILTER_REPLY_HEADER excluded)
  size_t length = 0;          // bytes copied into the buffer
  size_t full_length = 0;     // bytes the filter sent
  bool truncated() const noexcept { return full_length > length; }
};

struct ConnectOptions {
  ConstBytes context;
  bool sync_handle = false;  // FLT_PORT_FLAG_SYNC_HANDLE
  PortTransport transport = PortTransport::shared_memory;
  std::chrono::nanoseconds spin_budget = kDefaultServiceSpinBudget;
};

// The service's connection to a port (FilterConnectCommunicationPort). Move-only; every member
// may be called from many threads at once.
class FLTPORT_API Connection {
 public:
  // Failures: STATUS_OBJECT_NAME_NOT_FOUND, STATUS_ACCESS_DENIED, STATUS_CONNECTION_COUNT_LIMIT,
  // STATUS_INVALID_PARAMETER, or the status the filter's ConnectNotify refused with.
  static Result<Connection> connect(const std::string& port_name, const ConnectOptions& options = {});

  Connection() noexcept = default;  // not connected
  Connection(Connection&&) noexcept;
  Connection& operator=(Connection&&) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();

  // Takes the oldest message into `buffer` (payload only). Failures: STATUS_PORT_DISCONNECTED,
  // STATUS_CANCELLED (closed locally meanwhile), STATUS_TIMEOUT.
  Result<MessageInfo> get_message(MutableBytes buffer, Timeout timeout = Timeout::infinite());
  // Answers message `id`. Failures: STATUS_FLT_NO_WAITER_FOR_REPLY, STATUS_PORT_DISCONNECTED,
  // STATUS_INVALID_PARAMETER. Data longer than the filter accepts still succeeds here; the filter
  // sees STATUS_BUFFER_OVERFLOW.
  Status reply(uint64_t id, ConstBytes data, NTSTATUS reply_status = STATUS_SUCCESS);
  // reply() and get_message() in one crossing: the reply carries the request for the next message.
  Result<MessageInfo> reply_and_get(uint64_t id, ConstBytes data, NTSTATUS reply_status, MutableBytes next,
                                    Timeout timeout = Timeout::infinite());
  // Runs the port's MessageNotify (FilterSendMessage) and returns its status (or
  // STATUS_PORT_DISCONNECTED, STATUS_INVALID_PARAMETER); `returned_length` receives the output length
  // it set, also with a warning or failure status, never more than output.size().
  Status send(ConstBytes input, MutableBytes output, size_t& returned_length);
  void close() noexcept;
  // What this connection settled on at connect.
  PortTransport transport() const noexcept;

 private:
  explicit Connection(std::shared_ptr<detail::ServiceConnection> core) noexcept;
  std::shared_ptr<detail::ServiceConnection> core_;
};

}  // namespace fltport
