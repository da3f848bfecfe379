// wire::decode over arbitrary bytes, in both directions. Whatever it accepts must satisfy the
// checks the port layer relies on without checking again.
#include <cstring>
#include <string_view>
#include <vector>

#include "fuzz_entry.hpp"
#include "wire/frame.hpp"

namespace {

using fltport::ConstBytes;
using namespace fltport::wire;

void check_accepted(const DecodeResult& result, ConstBytes datagram, Direction direction) {
  const FrameHeader& h = result.frame.header;
  FUZZ_CHECK(datagram.size() >= kHeaderSize);
  FUZZ_CHECK(std::memcmp(&h, datagram.data(), kHeaderSize) == 0);
  FUZZ_CHECK(result.frame.payload.data() == datagram.data() + kHeaderSize);
  FUZZ_CHECK(result.frame.payload.size() == h.payload_length);
  FUZZ_CHECK(h.payload_length <= fltport::kMaxMessageSize);
  FUZZ_CHECK(h.reserved == 0);
  FUZZ_CHECK(type_name(h.type) != "unknown");
  // Every type travels one way only.
  const Direction other = direction == Direction::to_filter ? Direction::to_service : Direction::to_filter;
  FUZZ_CHECK(!decode(datagram, other).ok());
  // The rules of each type as the port layer relies on them. A type added to the protocol and not
  // yet listed here gets only the common checks above.
  switch (result.frame.type()) {
    case FrameType::hello:
      FUZZ_CHECK(direction == Direction::to_filter);
      FUZZ_CHECK(h.id == kProtocolVersion);
      FUZZ_CHECK(h.payload_length <= fltport::kMaxConnectionContextSize);
      FUZZ_CHECK(h.flags == 0);
      FUZZ_CHECK((h.aux & ~uint32_t{kOptionSyncHandle | kOptionSharedMemory}) == 0);
      break;
    case FrameType::welcome:
      FUZZ_CHECK(direction == Direction::to_service);
      FUZZ_CHECK(h.payload_length == 0 && h.flags == 0);
      FUZZ_CHECK(h.aux <= kWelcomeSharedMemory);
      break;
    case FrameType::withdrawn:
      FUZZ_CHECK(direction == Direction::to_service);
      FUZZ_CHECK(h.payload_length == 0 && h.flags == 0);
      break;
    case FrameType::drain:
      FUZZ_CHECK(direction == Direction::to_filter);
      FUZZ_CHECK(h.payload_length == 0 && h.flags == 0);
      break;
    case FrameType::get:
      FUZZ_CHECK(direction == Direction::to_filter);
      FUZZ_CHECK(h.payload_length == 0 && h.flags == 0);
      FUZZ_CHECK(h.aux >= 1 && h.aux <= kMaxCredits);
      break;
    case FrameType::message:
      FUZZ_CHECK(direction == Direction::to_service);
      FUZZ_CHECK(h.id != 0);
      FUZZ_CHECK((h.flags & ~kFlagWantsReply) == 0);
      FUZZ_CHECK(h.aux <= fltport::kMaxMessageSize);
      FUZZ_CHECK((h.flags & kFlagWantsReply) != 0 || h.aux == 0);
      break;
    case FrameType::reply:
      FUZZ_CHECK(direction == Direction::to_filter);
      FUZZ_CHECK(h.id != 0);
      FUZZ_CHECK((h.flags & ~kFlagGetNext) == 0);
      FUZZ_CHECK(h.payload_length <= h.aux);
      break;
    case FrameType::request:
      FUZZ_CHECK(direction == Direction::to_filter);
      FUZZ_CHECK(h.flags == 0);
      FUZZ_CHECK(h.aux <= fltport::kMaxMessageSize);
      break;
    case FrameType::response:
      FUZZ_CHECK(direction == Direction::to_service);
      FUZZ_CHECK(h.flags == 0);
      FUZZ_CHECK(h.payload_length <= h.aux);
      break;
    default:
      break;
  }
}

}  // namespace

FLTPORT_FUZZ_ENTRY(frame_decode) {
  // An exactly sized copy: a read past the datagram is a heap overflow the sanitizer reports.
  std::vector<std::byte> copy(size);
  if (size != 0) std::memcpy(copy.data(), data, size);
  const ConstBytes datagram(copy.data(), copy.size());
  for (Direction direction : {Direction::to_filter, Direction::to_service}) {
    const DecodeResult result = decode(datagram, direction);
    if (result.ok()) {
      check_accepted(result, datagram, direction);
    } else {
      FUZZ_CHECK(result.error[0] != '\0');
    }
  }
  return 0;
}
