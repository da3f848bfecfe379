// Port names: Windows object names compared case-insensitively, kept inside the runtime directory.
#include <gtest/gtest.h>

#include "transport/runtime_dir.hpp"

namespace fltport::transport {
namespace {

TEST(PortName, DropsTheRootBackslashAndFoldsCase) {
  EXPECT_EQ(*normalize_port_name("\\ScannerPort"), "scannerport");
  EXPECT_EQ(*normalize_port_name("SCANNERPORT"), "scannerport");
}

TEST(PortName, RefusesNamesThatCouldLeaveTheDirectory) {
  for (const char* bad : {"", "\\", "..", "\\..", ".", "a/b", "\\a\\b", "with space", "tab\t"}) {
    auto name = normalize_port_name(bad);
    EXPECT_FALSE(name.ok()) << bad;
    EXPECT_EQ(name.status(), Status(STATUS_OBJECT_NAME_INVALID)) << bad;
  }
  EXPECT_FALSE(normalize_port_name(std::string(kMaxPortNameLength + 1, 'a')).ok());
  EXPECT_TRUE(normalize_port_name(std::string(kMaxPortNameLength, 'a')).ok());
}

}  // namespace
}  // namespace fltport::transport
