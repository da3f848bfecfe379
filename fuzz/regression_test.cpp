// The fuzz targets as ordinary tests: each entry point runs over its checked-in corpus (and over
// truncations of it) in every build, so that an input that once crashed keeps being tried under
// the dev, ASan and TSan presets. Built with FLTPORT_FUZZ_NO_MAIN; FLTPORT_FUZZ_CORPUS_DIR names
// fuzz/corpus.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int fltport_fuzz_ring_reader(const uint8_t* data, size_t size);
extern "C" int fltport_fuzz_frame_decode(const uint8_t* data, size_t size);
extern "C" int fltport_fuzz_control_protocol(const uint8_t* data, size_t size);
extern "C" int fltport_fuzz_config(const uint8_t* data, size_t size);

namespace {

using Entry = int (*)(const uint8_t*, size_t);

std::vector<std::filesystem::path> corpus(const char* target) {
  std::vector<std::filesystem::path> files;
  const std::filesystem::path directory = std::filesystem::path(FLTPORT_FUZZ_CORPUS_DIR) / target;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(directory, error)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<uint8_t> contents(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

void RunCorpus(const char* target, Entry entry) {
  const auto files = corpus(target);
  ASSERT_FALSE(files.empty()) << "no corpus in " << FLTPORT_FUZZ_CORPUS_DIR << "/" << target;
  for (const auto& path : files) {
    SCOPED_TRACE(path.string());
    const auto input = contents(path);
    EXPECT_EQ(entry(input.data(), input.size()), 0);
  }
}

// Every prefix up to 64 bytes, then every 61st: a short input leaves the rest of the layout zero.
void RunPrefixes(const char* target, Entry entry) {
  for (const auto& path : corpus(target)) {
    SCOPED_TRACE(path.string());
    const auto input = contents(path);
    for (size_t length = 0; length < input.size(); length += length < 64 ? 1 : 61) {
      const std::vector<uint8_t> prefix(input.begin(), input.begin() + static_cast<ptrdiff_t>(length));
      EXPECT_EQ(entry(prefix.data(), prefix.size()), 0) << length << " bytes";
    }
  }
}

TEST(FuzzCorpus, RingReader) {
  RunCorpus("ring_reader", fltport_fuzz_ring_reader);
}
TEST(FuzzCorpus, FrameDecode) {
  RunCorpus("frame_decode", fltport_fuzz_frame_decode);
}
TEST(FuzzCorpus, RingReaderPrefixes) {
  RunPrefixes("ring_reader", fltport_fuzz_ring_reader);
}
TEST(FuzzCorpus, FrameDecodePrefixes) {
  RunPrefixes("frame_decode", fltport_fuzz_frame_decode);
}

TEST(FuzzCorpus, ControlProtocol) {
  RunCorpus("control_protocol", fltport_fuzz_control_protocol);
  RunPrefixes("control_protocol", fltport_fuzz_control_protocol);
}
TEST(FuzzCorpus, Config) {
  RunCorpus("config", fltport_fuzz_config);
  RunPrefixes("config", fltport_fuzz_config);
}

TEST(FuzzCorpus, DegenerateInputs) {
  for (Entry entry : {Entry{fltport_fuzz_ring_reader}, Entry{fltport_fuzz_frame_decode},
                      Entry{fltport_fuzz_control_protocol}, Entry{fltport_fuzz_config}}) {
    EXPECT_EQ(entry(nullptr, 0), 0);
    for (uint8_t fill : {uint8_t{0x00}, uint8_t{0x80}, uint8_t{0xFF}}) {
      for (size_t size : {size_t{1}, size_t{24}, size_t{200}, size_t{5000}}) {
        const std::vector<uint8_t> input(size, fill);
        EXPECT_EQ(entry(input.data(), input.size()), 0) << int{fill} << " x " << size;
      }
    }
  }
}

}  // namespace
