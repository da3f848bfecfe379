// RingReader over a ring a hostile peer wrote: the input is laid over a fresh region's to_filter
// control block and slots, and over the overflow socket, and the reader takes what it finds with
// an expired deadline. Besides not crashing, every outcome must be the one a model of the ring
// predicts: a frame exactly as the slot or the datagram held it, a data error with a reason, a
// disconnect, or "nothing yet". Every frame returned then goes through wire::decode.
//
// Input layout (integers little-endian; a short input leaves the rest zero):
//   u32 head                       the producer index the reader sees (tail starts at 0)
//   u8  datagrams                  low 2 bits: how many datagrams to queue on the overflow socket
//   per datagram: u32 length, then that many bytes (clamped to what is left and to kMaxFrameSize + 16);
//                 with bit 31 set, a datagram of (length & 0x7fffffff) bytes (same clamp) whose first
//                 bytes are the next min(24, length) input bytes and the rest zero: large datagrams
//                 from a small input
//   sizeof(RingControl) bytes      laid over the control block, before head is set
//   per slot from slot 0: u16 length, then that many bytes (at most kRingSlotSize) at the slot's start
// The socket's other end is closed before reading: a record announcing a datagram that is not
// queued reads as a disconnect instead of a one-second wait.
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "fuzz_entry.hpp"
#include "transport/shm_ring.hpp"
#include "transport/unix_socket.hpp"
#include "wire/frame.hpp"

namespace {

using namespace fltport;
using namespace fltport::transport;

class Input {
 public:
  Input(const uint8_t* data, size_t size) noexcept : data_(data), size_(size) {}
  bool empty() const noexcept { return size_ == 0; }
  ConstBytes take(size_t n) noexcept {
    n = std::min(n, size_);
    ConstBytes taken(reinterpret_cast<const std::byte*>(data_), n);
    data_ += n;
    size_ -= n;
    return taken;
  }
  template <class T>
  T integer() noexcept {
    T value = 0;
    const ConstBytes bytes = take(sizeof(T));
    if (!bytes.empty()) std::memcpy(&value, bytes.data(), bytes.size());
    return value;
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

// make_corpus.py lays out control blocks of this size.
static_assert(sizeof(RingControl) == 256, "update fuzz/make_corpus.py");

// What the reader must do with the record at index `tail`.
enum class Expect { frame_from_slot, frame_from_socket, data_error, disconnected, timeout };

}  // namespace

FLTPORT_FUZZ_ENTRY(ring_reader) {
  Input input(data, size);
  auto region = SharedRegion::create();
  auto pair = socket_pair();
  if (!region || !pair) return 0;  // out of descriptors or memory: not what is being tested

  const uint32_t head = input.integer<uint32_t>();
  std::vector<std::vector<std::byte>> datagrams;  // those queued, in order
  for (unsigned n = input.integer<uint8_t>() & 3u; n > 0; --n) {
    const uint32_t word = input.integer<uint32_t>();
    const size_t length = std::min<size_t>(word & 0x7FFFFFFFu, wire::kMaxFrameSize + 16);
    std::vector<std::byte> datagram;
    if ((word & 0x80000000u) != 0) {
      datagram.resize(length);
      const ConstBytes start = input.take(std::min(length, wire::kHeaderSize));
      if (!start.empty()) std::memcpy(datagram.data(), start.data(), start.size());
    } else {
      const ConstBytes bytes = input.take(length);
      datagram.assign(bytes.begin(), bytes.end());
    }
    if (::send(pair->first.fd(), datagram.data(), datagram.size(), MSG_DONTWAIT | MSG_NOSIGNAL) ==
        static_cast<ssize_t>(datagram.size())) {
      datagrams.push_back(std::move(datagram));
    }
  }
  pair->first = UniqueFd();

  RingControl& control = region->control(RingDirection::to_filter);
  const ConstBytes control_bytes = input.take(sizeof(RingControl));
  if (!control_bytes.empty())
    std::memcpy(static_cast<void*>(&control), control_bytes.data(), control_bytes.size());
  control.head.store(head);
  std::byte* slots = region->slots(RingDirection::to_filter);
  for (size_t i = 0; i < kRingSlots && !input.empty(); ++i) {
    const size_t length = std::min<size_t>(input.integer<uint16_t>(), kRingSlotSize);
    const ConstBytes bytes = input.take(length);
    if (!bytes.empty()) std::memcpy(slots + i * kRingSlotSize, bytes.data(), bytes.size());
  }

  static std::vector<std::byte> buffer(wire::kMaxFrameSize);
  RingReader reader(&control, slots, pair->second.fd(), WaitPolicy{});
  const Deadline expired = Timeout::Clock::now();
  size_t next_datagram = 0;
  uint32_t consumed = 0;
  for (size_t i = 0; i < kRingSlots; ++i) {
    // The model: the record the reader is about to take, as the peer left it.
    const uint32_t available = head - consumed;
    wire::FrameHeader record;
    const std::byte* slot = slots + (consumed % kRingSlots) * kRingSlotSize;
    std::memcpy(&record, slot, wire::kHeaderSize);
    Expect expect = Expect::frame_from_slot;
    if (available == 0) {
      expect = Expect::timeout;
    } else if (available > kRingSlots) {
      expect = Expect::data_error;
    } else if ((record.flags & kFlagOnSocket) != 0) {
      if (record.payload_length != 0) {
        expect = Expect::data_error;
      } else if (next_datagram == datagrams.size() || datagrams[next_datagram].empty()) {
        expect = Expect::disconnected;  // end of stream (a zero-length datagram reads as one)
      } else if (datagrams[next_datagram].size() > wire::kMaxFrameSize) {
        expect = Expect::data_error;
      } else {
        expect = Expect::frame_from_socket;
      }
    } else if (record.payload_length > kRingSlotPayload) {
      expect = Expect::data_error;
    }

    auto received = reader.receive(buffer, expired);
    switch (expect) {
      case Expect::timeout:
        FUZZ_CHECK(!received && received.status() == Status(STATUS_TIMEOUT));
        break;
      case Expect::data_error:
        FUZZ_CHECK(!received && received.status() == Status(STATUS_DATA_ERROR));
        FUZZ_CHECK(reader.error() != nullptr && reader.error()[0] != '\0');
        // A broken ring stays broken.
        FUZZ_CHECK(reader.receive(buffer, expired).status() == Status(STATUS_DATA_ERROR));
        break;
      case Expect::disconnected:
        FUZZ_CHECK(!received && received.status() == Status(STATUS_PORT_DISCONNECTED));
        FUZZ_CHECK(reader.error() == nullptr);
        break;
      case Expect::frame_from_slot:
        FUZZ_CHECK(received);
        FUZZ_CHECK(*received == wire::kHeaderSize + record.payload_length);
        FUZZ_CHECK(std::memcmp(buffer.data(), slot, *received) == 0);
        break;
      case Expect::frame_from_socket: {
        FUZZ_CHECK(received);
        const auto& datagram = datagrams[next_datagram];
        FUZZ_CHECK(*received == datagram.size());
        FUZZ_CHECK(std::memcmp(buffer.data(), datagram.data(), datagram.size()) == 0);
        break;
      }
    }
    if (expect == Expect::frame_from_socket || expect == Expect::disconnected ||
        (expect == Expect::data_error && (record.flags & kFlagOnSocket) != 0 && record.payload_length == 0 &&
         available <= kRingSlots)) {
      ++next_datagram;  // the reader took it off the socket
    }
    if (!received) break;
    ++consumed;
    FUZZ_CHECK(*received <= wire::kMaxFrameSize);
    FUZZ_CHECK(control.tail.load() == consumed);
    const ConstBytes frame(buffer.data(), *received);
    const auto decoded = wire::decode(frame, wire::Direction::to_filter);
    if (decoded.ok()) FUZZ_CHECK(decoded.frame.payload.size() == decoded.frame.header.payload_length);
  }
  return 0;
}
