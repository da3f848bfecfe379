// A client that speaks (or does not speak) the frame protocol directly over a port's AF_UNIX
// socket: the hostile and broken peers of the integration tests (bad_input_test.cpp,
// hostile_peer_test.cpp). Header-only.
#pragma once

#include <fltport/port.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "support/process.hpp"
#include "wire/frame.hpp"

namespace fltport::test {

// A client speaking (or not) the frame protocol directly over the port's AF_UNIX socket.
class RawClient {
 public:
  RawClient() = default;
  ~RawClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connect(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd_ < 0 || path.empty()) return false;
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    return ::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
  }

  bool send_bytes(const void* data, size_t size) {
    const ssize_t n = ::send(fd_, data, size, MSG_NOSIGNAL);
    return n == static_cast<ssize_t>(size);
  }
  // The header as given (payload_length is not fixed up), then the payload.
  bool send_frame(const wire::FrameHeader& header, const void* payload = nullptr, size_t size = 0) {
    std::vector<uint8_t> datagram(sizeof header + size);
    std::memcpy(datagram.data(), &header, sizeof header);
    if (size != 0) std::memcpy(datagram.data() + sizeof header, payload, size);
    return send_bytes(datagram.data(), datagram.size());
  }
  // Receives one datagram; false on EOF, error or timeout.
  bool receive(std::vector<uint8_t>& datagram, std::chrono::milliseconds timeout) {
    pollfd pfd{fd_, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(timeout.count())) <= 0) return false;
    datagram.resize(wire::kMaxFrameSize + 1);
    const ssize_t n = ::recv(fd_, datagram.data(), datagram.size(), 0);
    if (n <= 0) return false;
    datagram.resize(static_cast<size_t>(n));
    return true;
  }
  // A hello with an empty context, and a welcome with STATUS_SUCCESS back.
  bool hello() {
    if (!send_frame(wire::make_header(wire::FrameType::hello, wire::kProtocolVersion, 0))) return false;
    std::vector<uint8_t> datagram;
    if (!receive(datagram, kWaitTimeout) || datagram.size() < sizeof(wire::FrameHeader)) return false;
    wire::FrameHeader welcome;
    std::memcpy(&welcome, datagram.data(), sizeof welcome);
    return welcome.type == static_cast<uint8_t>(wire::FrameType::welcome) && welcome.status == STATUS_SUCCESS;
  }
  // True when the other end closes the connection within the timeout (frames before that are read
  // and dropped).
  bool closed_by_peer_within(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::vector<uint8_t> datagram(wire::kMaxFrameSize + 1);
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd pfd{fd_, POLLIN, 0};
      const int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return false;
      const ssize_t n = ::recv(fd_, datagram.data(), datagram.size(), MSG_DONTWAIT);
      if (n == 0) return true;
      if (n < 0 && (errno == ECONNRESET || errno == EPIPE)) return true;
      if (n < 0 && errno != EAGAIN && errno != EINTR) return true;
    }
  }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

}  // namespace fltport::test
