// The socket transport: one AF_UNIX SOCK_SEQPACKET connection per service. The kernel keeps
// message boundaries, tells each side the other's credentials, and reports a dead peer at once.
#pragma once

#include <fltport/port.hpp>

#include "base/unique_fd.hpp"
#include "wire/frame.hpp"

#include <sys/un.h>

#include <string>

namespace fltport::transport {

using Deadline = Timeout::Clock::time_point;

// A deadline that reads the clock only if a wait needs it: `wanted`, brought forward to `limit`
// after the first moment it is asked for. A ring send that finds room waits for nothing, and the
// clock read it saves is a tenth of a busy round trip's software (bench, 1 x 1, 64 B).
class LazyDeadline {
 public:
  LazyDeadline(Deadline deadline) noexcept : at_(deadline) {}  // NOLINT(google-explicit-constructor)
  LazyDeadline(Deadline wanted, std::chrono::nanoseconds limit) noexcept : at_(wanted), limit_(limit) {}
  Deadline get() noexcept {
    if (limit_ != kNoLimit) {
      const Deadline by_limit = Timeout::Clock::now() + limit_;
      if (by_limit < at_) at_ = by_limit;
      limit_ = kNoLimit;
    }
    return at_;
  }

 private:
  static constexpr std::chrono::nanoseconds kNoLimit = std::chrono::nanoseconds::max();
  Deadline at_;
  std::chrono::nanoseconds limit_ = kNoLimit;
};

// Sends one frame as one datagram, waiting for room until `deadline`. STATUS_TIMEOUT means
// nothing was sent; STATUS_PORT_DISCONNECTED that the peer is gone or the socket was shut down.
// `passed_fd` >= 0 travels with the frame (SCM_RIGHTS).
Status send_frame(int fd, const wire::FrameHeader& header, ConstBytes payload, Deadline deadline,
                  int passed_fd = -1) noexcept;

// Receives one datagram into `buffer`. STATUS_PORT_DISCONNECTED at end of stream or on error,
// STATUS_TIMEOUT at the deadline, STATUS_BUFFER_OVERFLOW for a datagram longer than the buffer.
// Descriptors a peer sends along are dropped by the kernel, unless `passed` asks for one: then it
// receives the first (owned), and any others are closed.
Result<size_t> receive_frame(int fd, MutableBytes buffer, Deadline deadline,
                             UniqueFd* passed = nullptr) noexcept;

// A connected pair for a second channel of a connection; one end is passed to the peer.
Result<std::pair<UniqueFd, UniqueFd>> socket_pair();
// True for an AF_UNIX SOCK_SEQPACKET socket: what a peer passes us must be one.
bool is_seqpacket_socket(int fd) noexcept;

// The AF_UNIX address of `path`; STATUS_OBJECT_NAME_INVALID when it does not fit.
Result<sockaddr_un> address_of(const std::string& path);
Result<UniqueFd> listen_at(const std::string& path);
// STATUS_OBJECT_NAME_NOT_FOUND when nobody listens there.
Result<UniqueFd> connect_to(const std::string& path);
// STATUS_PORT_DISCONNECTED once the listener was shut down.
Result<UniqueFd> accept_from(int listen_fd);
Result<PeerCredentials> peer_credentials(int fd);

}  // namespace fltport::transport
