// The frame format of one connection: a 24-byte header and a payload, one frame per
// SOCK_SEQPACKET datagram. Pure functions: decoding takes bytes that came from another process
// and accepts only frames that are valid for the direction they travelled in.
#pragma once

#include <fltport/port.hpp>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>

namespace fltport::wire {

inline constexpr uint64_t kProtocolVersion = 1;

enum class FrameType : uint8_t {
  hello = 1,      // service -> filter: id = protocol version, aux = options, payload = context
  welcome = 2,    // filter -> service: status = ConnectNotify's verdict
  message = 3,    // filter -> service: id = MessageId, aux = reply capacity, payload = message
  withdrawn = 4,  // filter -> service: the waiter for message `id` gave up (timed out)
  get = 5,        // service -> filter: aux = how many more messages the service is ready to take
  reply = 6,      // service -> filter: id, status, aux = full reply length, payload = reply data
  request = 7,    // service -> filter: id = request id, aux = output capacity, payload = input
  response = 8,   // filter -> service: id = request id, status, aux = returned length, payload
  drain = 9,      // service -> filter (control socket): its shared-memory ring is full, read it
};

enum FrameFlags : uint8_t {
  kFlagWantsReply = 0x1,  // message: the filter waits for a reply
  kFlagGetNext = 0x2,     // reply: also a `get` of one message (reply and get next)
};

// hello's aux: what the service asks for.
enum ConnectOptionBits : uint32_t {
  kOptionSyncHandle = 0x1,    // FLT_PORT_FLAG_SYNC_HANDLE
  kOptionSharedMemory = 0x2,  // the service can use the shared-memory rings
};
// welcome's aux: 1 = the rings are in use; their memfd travels with the welcome.
inline constexpr uint32_t kWelcomeSharedMemory = 1;

enum class Direction { to_filter, to_service };

struct FrameHeader {
  uint8_t type = 0;
  uint8_t flags = 0;
  uint16_t reserved = 0;
  uint32_t payload_length = 0;
  uint64_t id = 0;
  int32_t status = 0;
  uint32_t aux = 0;
};
static_assert(sizeof(FrameHeader) == 24, "the frame header is part of the protocol");

inline constexpr size_t kHeaderSize = sizeof(FrameHeader);
inline constexpr size_t kMaxFrameSize = kHeaderSize + kMaxMessageSize;
// Room for one frame, not zeroed first: recvmsg or a ring copy writes what arrives, and only that
// is read. (A value-initialised vector zeroes, and so faults in, every page of its 128 KiB: for a
// connection that sends one small frame that was most of what it cost, ~100 us of CPU per
// connection in a flood of them, taken from every other connection on a small machine.)
class FrameBuffer {
 public:
  explicit FrameBuffer(size_t size = kMaxFrameSize) : bytes_(new std::byte[size]), size_(size) {}
  MutableBytes span() const noexcept { return {bytes_.get(), size_}; }

 private:
  std::unique_ptr<std::byte[]> bytes_;
  size_t size_;
};

// Credits a service may hold at once; more is a broken or hostile peer.
inline constexpr uint32_t kMaxCredits = 65536;

struct Frame {
  FrameHeader header;
  ConstBytes payload;
  FrameType type() const noexcept { return static_cast<FrameType>(header.type); }
};

// A decoding failure names what was wrong, for the log line that explains the disconnect.
struct DecodeResult {
  Frame frame;
  const char* error = nullptr;  // nullptr: valid
  bool ok() const noexcept { return error == nullptr; }
};

DecodeResult decode(ConstBytes datagram, Direction direction) noexcept;

inline FrameHeader make_header(FrameType type, uint64_t id, size_t payload_length, int32_t status = 0,
                               uint32_t aux = 0, uint8_t flags = 0) noexcept {
  FrameHeader header;
  header.type = static_cast<uint8_t>(type);
  header.flags = flags;
  header.payload_length = static_cast<uint32_t>(payload_length);
  header.id = id;
  header.status = status;
  header.aux = aux;
  return header;
}

std::string_view type_name(uint8_t type) noexcept;

}  // namespace fltport::wire
