// The frame decoder accepts only well-formed frames for the direction they travel in; every
// field another process controls is checked.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "wire/frame.hpp"

namespace fltport::wire {
namespace {

std::vector<std::byte> encode(const FrameHeader& header, size_t payload_size = 0) {
  std::vector<std::byte> bytes(kHeaderSize + payload_size, std::byte{0x5A});
  std::memcpy(bytes.data(), &header, kHeaderSize);
  return bytes;
}

TEST(FrameDecode, AcceptsAMessageWithItsPayload) {
  auto bytes = encode(make_header(FrameType::message, 7, 3, 0, 16, kFlagWantsReply), 3);
  auto decoded = decode(bytes, Direction::to_service);
  ASSERT_TRUE(decoded.ok()) << decoded.error;
  EXPECT_EQ(decoded.frame.type(), FrameType::message);
  EXPECT_EQ(decoded.frame.header.id, 7u);
  EXPECT_EQ(decoded.frame.payload.size(), 3u);
}

TEST(FrameDecode, RejectsAFrameShorterThanItsHeader) {
  std::vector<std::byte> bytes(kHeaderSize - 1);
  EXPECT_STREQ(decode(bytes, Direction::to_filter).error, "frame shorter than its header");
}

TEST(FrameDecode, RejectsALengthThatLies) {
  auto header = make_header(FrameType::reply, 1, 10, 0, 10);
  auto bytes = encode(header, 4);
  EXPECT_STREQ(decode(bytes, Direction::to_filter).error, "payload length does not match the frame");
}

TEST(FrameDecode, RejectsUnknownTypesAndWrongDirections) {
  auto unknown = make_header(FrameType::get, 0, 0, 0, 1);
  unknown.type = 99;
  EXPECT_STREQ(decode(encode(unknown), Direction::to_filter).error, "unknown frame type");
  EXPECT_STREQ(decode(encode(make_header(FrameType::message, 1, 0)), Direction::to_filter).error,
               "frame type not valid in this direction");
  EXPECT_STREQ(decode(encode(make_header(FrameType::get, 0, 0, 0, 1)), Direction::to_service).error,
               "frame type not valid in this direction");
}

TEST(FrameDecode, RejectsReservedBitsAndUnknownFlags) {
  auto reserved = make_header(FrameType::get, 0, 0, 0, 1);
  reserved.reserved = 1;
  EXPECT_FALSE(decode(encode(reserved), Direction::to_filter).ok());
  EXPECT_STREQ(decode(encode(make_header(FrameType::get, 0, 0, 0, 1, kFlagGetNext)), Direction::to_filter).error,
               "unknown flags");
}

TEST(FrameDecode, BoundsCredits) {
  EXPECT_FALSE(decode(encode(make_header(FrameType::get, 0, 0, 0, 0)), Direction::to_filter).ok());
  EXPECT_FALSE(decode(encode(make_header(FrameType::get, 0, 0, 0, kMaxCredits + 1)), Direction::to_filter).ok());
  EXPECT_TRUE(decode(encode(make_header(FrameType::get, 0, 0, 0, kMaxCredits)), Direction::to_filter).ok());
}

TEST(FrameDecode, ReplyMayNotCarryMoreThanItsStatedLength) {
  EXPECT_TRUE(decode(encode(make_header(FrameType::reply, 5, 2, 0, 9), 2), Direction::to_filter).ok());
  EXPECT_FALSE(decode(encode(make_header(FrameType::reply, 5, 9, 0, 2), 9), Direction::to_filter).ok());
  EXPECT_FALSE(decode(encode(make_header(FrameType::reply, 0, 0, 0, 0)), Direction::to_filter).ok()) << "id 0";
}

TEST(FrameDecode, HelloChecksVersionAndContextSize) {
  EXPECT_TRUE(decode(encode(make_header(FrameType::hello, kProtocolVersion, 8), 8), Direction::to_filter).ok());
  EXPECT_FALSE(decode(encode(make_header(FrameType::hello, 99, 0)), Direction::to_filter).ok());
  EXPECT_FALSE(decode(encode(make_header(FrameType::hello, kProtocolVersion, kMaxConnectionContextSize + 1),
                             kMaxConnectionContextSize + 1),
                      Direction::to_filter)
                   .ok());
}

TEST(FrameDecode, RejectsPayloadsOverTheLimit) {
  auto bytes = encode(make_header(FrameType::request, 1, kMaxMessageSize + 1), kMaxMessageSize + 1);
  EXPECT_STREQ(decode(bytes, Direction::to_filter).error, "payload too large");
}

TEST(FrameDecode, NeverReadsPastTheDatagramWhateverTheBytes) {
  // Every short prefix of every header pattern: decoding must simply answer.
  for (size_t size = 0; size <= kHeaderSize + 4; ++size) {
    for (int fill = 0; fill < 256; fill += 17) {
      std::vector<std::byte> bytes(size, static_cast<std::byte>(fill));
      (void)decode(bytes, Direction::to_filter);
      (void)decode(bytes, Direction::to_service);
    }
  }
  SUCCEED();
}

}  // namespace
}  // namespace fltport::wire
