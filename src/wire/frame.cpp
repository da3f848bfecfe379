#include "wire/frame.hpp"

namespace fltport::wire {
namespace {

bool travels(FrameType type, Direction direction) noexcept {
  switch (type) {
    case FrameType::hello:
    case FrameType::get:
    case FrameType::reply:
    case FrameType::request:
    case FrameType::drain:
      return direction == Direction::to_filter;
    case FrameType::welcome:
    case FrameType::message:
    case FrameType::withdrawn:
    case FrameType::response:
      return direction == Direction::to_service;
  }
  return false;
}

// Checks of each type's fields, beyond the common header checks.
const char* check_fields(const FrameHeader& h) noexcept {
  const auto type = static_cast<FrameType>(h.type);
  const uint8_t allowed_flags = type == FrameType::message ? kFlagWantsReply
                                : type == FrameType::reply ? kFlagGetNext
                                                           : 0;
  if ((h.flags & ~allowed_flags) != 0) return "unknown flags";
  switch (type) {
    case FrameType::hello:
      if (h.id != kProtocolVersion) return "unsupported protocol version";
      if (h.payload_length > kMaxConnectionContextSize) return "connection context too long";
      if ((h.aux & ~(kOptionSyncHandle | kOptionSharedMemory)) != 0) return "unknown connect options";
      return nullptr;
    case FrameType::welcome:
      if (h.aux > kWelcomeSharedMemory) return "unknown welcome options";
      return h.payload_length == 0 ? nullptr : "unexpected payload";
    case FrameType::withdrawn:
    case FrameType::drain:
      return h.payload_length == 0 ? nullptr : "unexpected payload";
    case FrameType::get:
      if (h.payload_length != 0) return "unexpected payload";
      if (h.aux == 0 || h.aux > kMaxCredits) return "credit count out of range";
      return nullptr;
    case FrameType::message:
      if (h.id == 0) return "message id 0";
      if ((h.flags & kFlagWantsReply) == 0 && h.aux != 0) return "reply capacity without a reply";
      return h.aux <= kMaxMessageSize ? nullptr : "reply capacity too large";
    case FrameType::reply:
      if (h.id == 0) return "message id 0";
      return h.payload_length <= h.aux ? nullptr : "reply longer than its stated length";
    case FrameType::request:
      return h.aux <= kMaxMessageSize ? nullptr : "output capacity too large";
    case FrameType::response:
      return h.payload_length <= h.aux ? nullptr : "response longer than its stated length";
  }
  return "unknown frame type";
}

}  // namespace

DecodeResult decode(ConstBytes datagram, Direction direction) noexcept {
  DecodeResult result;
  if (datagram.size() < kHeaderSize) {
    result.error = "frame shorter than its header";
    return result;
  }
  // memcpy: the datagram buffer carries no alignment promise.
  std::memcpy(&result.frame.header, datagram.data(), kHeaderSize);
  const FrameHeader& h = result.frame.header;
  if (h.payload_length != datagram.size() - kHeaderSize) {
    result.error = "payload length does not match the frame";
  } else if (h.payload_length > kMaxMessageSize) {
    result.error = "payload too large";
  } else if (h.reserved != 0) {
    result.error = "reserved field set";
  } else if (h.type < static_cast<uint8_t>(FrameType::hello) ||
             h.type > static_cast<uint8_t>(FrameType::drain)) {
    result.error = "unknown frame type";
  } else if (!travels(static_cast<FrameType>(h.type), direction)) {
    result.error = "frame type not valid in this direction";
  } else {
    result.error = check_fields(h);
  }
  if (result.ok()) result.frame.payload = datagram.subspan(kHeaderSize);
  return result;
}

std::string_view type_name(uint8_t type) noexcept {
  switch (static_cast<FrameType>(type)) {
    case FrameType::hello:
      return "hello";
    case FrameType::welcome:
      return "welcome";
    case FrameType::message:
      return "message";
    case FrameType::withdrawn:
      return "withdrawn";
    case FrameType::get:
      return "get";
    case FrameType::reply:
      return "reply";
    case FrameType::request:
      return "request";
    case FrameType::response:
      return "response";
    case FrameType::drain:
      return "drain";
  }
  return "unknown";
}

}  // namespace fltport::wire
