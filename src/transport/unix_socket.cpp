#include "transport/unix_socket.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "base/log.hpp"

namespace fltport::transport {
namespace {

// Milliseconds poll() may wait before `deadline`, rounded up so that it never returns early.
int poll_timeout_ms(Deadline deadline) noexcept {
  if (deadline == Deadline::max()) return -1;
  const auto now = Timeout::Clock::now();
  if (deadline <= now) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

// Waits until `fd` is ready for `events`; STATUS_TIMEOUT at the deadline.
Status wait_ready(int fd, short events, Deadline deadline) noexcept {
  for (;;) {
    pollfd pfd{fd, events, 0};
    const int ready = ::poll(&pfd, 1, poll_timeout_ms(deadline));
    if (ready > 0) return STATUS_SUCCESS;  // including POLLHUP/POLLERR: the next call reports it
    if (ready == 0) {
      if (Timeout::Clock::now() >= deadline) return STATUS_TIMEOUT;
      continue;
    }
    if (errno != EINTR) return STATUS_PORT_DISCONNECTED;
  }
}

Status status_from_errno(int error) noexcept {
  switch (error) {
    case ENOENT:
    case ECONNREFUSED:
      return STATUS_OBJECT_NAME_NOT_FOUND;
    case EACCES:
    case EPERM:
      return STATUS_ACCESS_DENIED;
    case ENAMETOOLONG:
      return STATUS_OBJECT_NAME_INVALID;
    case EADDRINUSE:
      return STATUS_OBJECT_NAME_COLLISION;
    case ENOMEM:
    case ENOBUFS:
    case EMFILE:
    case ENFILE:
      return STATUS_INSUFFICIENT_RESOURCES;
    default:
      return STATUS_UNSUCCESSFUL;
  }
}

}  // namespace

Result<sockaddr_un> address_of(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof address.sun_path) return Status(STATUS_OBJECT_NAME_INVALID);
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  return address;
}

Status send_frame(int fd, const wire::FrameHeader& header, ConstBytes payload, Deadline deadline,
                  int passed_fd) noexcept {
  iovec parts[2] = {
      {const_cast<wire::FrameHeader*>(&header), sizeof header},
      {const_cast<std::byte*>(payload.data()), payload.size()},
  };
  msghdr message{};
  message.msg_iov = parts;
  message.msg_iovlen = payload.empty() ? 1 : 2;
  // Zeroed: CMSG_SPACE pads the 4-byte descriptor to 8, and the padding goes to the kernel too.
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (passed_fd >= 0) {
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    cmsghdr* header_of_fd = CMSG_FIRSTHDR(&message);
    header_of_fd->cmsg_level = SOL_SOCKET;
    header_of_fd->cmsg_type = SCM_RIGHTS;
    header_of_fd->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(header_of_fd), &passed_fd, sizeof(int));
  }
  // Without a deadline a plain blocking send is one system call; with one, never block past it.
  const int flags = MSG_NOSIGNAL | (deadline == Deadline::max() ? 0 : MSG_DONTWAIT);
  for (;;) {
    if (::sendmsg(fd, &message, flags) >= 0) return STATUS_SUCCESS;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      if (Status waited = wait_ready(fd, POLLOUT, deadline); !waited.ok()) return waited;
      continue;
    }
    if (errno == EMSGSIZE) return STATUS_INVALID_PARAMETER;
    return STATUS_PORT_DISCONNECTED;
  }
}

namespace {

// Keeps the first descriptor of SCM_RIGHTS messages in `passed` and closes the rest, so that a
// peer cannot make us hold descriptors we did not ask for.
void take_passed_descriptors(msghdr& message, UniqueFd* passed) noexcept {
  for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int descriptor = -1;
      std::memcpy(&descriptor, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (passed != nullptr && !passed->valid()) {
        *passed = UniqueFd(descriptor);
      } else {
        ::close(descriptor);
      }
    }
  }
}

}  // namespace

Result<size_t> receive_frame(int fd, MutableBytes buffer, Deadline deadline, UniqueFd* passed) noexcept {
  iovec part{buffer.data(), buffer.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))];
  const int flags = MSG_CMSG_CLOEXEC | (deadline == Deadline::max() ? 0 : MSG_DONTWAIT);
  for (;;) {
    msghdr message{};
    message.msg_iov = &part;
    message.msg_iovlen = 1;
    if (passed != nullptr) {
      message.msg_control = control;
      message.msg_controllen = sizeof control;
    }
    const ssize_t received = ::recvmsg(fd, &message, flags);
    if (received > 0) {
      if (passed != nullptr) take_passed_descriptors(message, passed);
      if ((message.msg_flags & MSG_TRUNC) != 0) return Status(STATUS_BUFFER_OVERFLOW);
      return static_cast<size_t>(received);
    }
    if (received == 0) return Status(STATUS_PORT_DISCONNECTED);  // end of stream: the peer left
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      // A deadline already past asks only for what has arrived: no poll() to find that out.
      if (Timeout::Clock::now() >= deadline) return Status(STATUS_TIMEOUT);
      if (Status waited = wait_ready(fd, POLLIN, deadline); !waited.ok()) return waited;
      continue;
    }
    return Status(STATUS_PORT_DISCONNECTED);
  }
}

Result<UniqueFd> listen_at(const std::string& path) {
  auto address = address_of(path);
  if (!address) return address.status();
  UniqueFd socket(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!socket.valid()) return status_from_errno(errno);
  if (::bind(socket.fd(), reinterpret_cast<const sockaddr*>(&*address), sizeof *address) != 0) {
    return status_from_errno(errno);
  }
  // Who may connect is decided on the peer's credentials at accept, not by file permissions.
  if (::chmod(path.c_str(), 0666) != 0 || ::listen(socket.fd(), SOMAXCONN) != 0) {
    const Status failure = status_from_errno(errno);
    ::unlink(path.c_str());
    return failure;
  }
  return socket;
}

Result<UniqueFd> connect_to(const std::string& path) {
  auto address = address_of(path);
  if (!address) return address.status();
  UniqueFd socket(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!socket.valid()) return status_from_errno(errno);
  for (;;) {
    if (::connect(socket.fd(), reinterpret_cast<const sockaddr*>(&*address), sizeof *address) == 0) {
      return socket;
    }
    if (errno == EINTR) continue;
    // A full backlog says the filter is busy, not that the port is gone: report it as such.
    if (errno == EAGAIN) return Status(STATUS_INSUFFICIENT_RESOURCES);
    return status_from_errno(errno);
  }
}

Result<UniqueFd> accept_from(int listen_fd) {
  for (;;) {
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) return UniqueFd(fd);
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
      return Status(STATUS_INSUFFICIENT_RESOURCES);
    }
    return Status(STATUS_PORT_DISCONNECTED);
  }
}

Result<std::pair<UniqueFd, UniqueFd>> socket_pair() {
  int ends[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ends) != 0) return status_from_errno(errno);
  return std::pair<UniqueFd, UniqueFd>(UniqueFd(ends[0]), UniqueFd(ends[1]));
}

bool is_seqpacket_socket(int fd) noexcept {
  int type = 0;
  int domain = 0;
  socklen_t length = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) != 0) return false;
  length = sizeof domain;
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length) != 0) return false;
  return type == SOCK_SEQPACKET && domain == AF_UNIX;
}

Result<PeerCredentials> peer_credentials(int fd) {
  ucred credentials{};
  socklen_t length = sizeof credentials;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) {
    return Status(STATUS_ACCESS_DENIED);
  }
  PeerCredentials peer;
  peer.pid = credentials.pid;
  peer.uid = credentials.uid;
  peer.gid = credentials.gid;
  // Supplementary groups as they were at connect time (Linux >= 4.13).
  gid_t groups[256];
  socklen_t groups_length = sizeof groups;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &groups_length) == 0) {
    peer.groups.assign(groups, groups + groups_length / sizeof(gid_t));
  } else {
    FLTPORT_LOG_LIMITED(info, "transport", "no supplementary groups for pid %d: %s",
                        static_cast<int>(peer.pid), std::strerror(errno));
  }
  return peer;
}

}  // namespace fltport::transport
