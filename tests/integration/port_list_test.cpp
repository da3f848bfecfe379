// list_server_ports(): what fltmgrd's `ports` command shows.
#include <gtest/gtest.h>
#include <fltport/port.hpp>

#include <algorithm>

#include "support/runtime_dir.hpp"

namespace fltport {
namespace {

const ServerPortInfo* find(const std::vector<ServerPortInfo>& ports, const std::string& name) {
  const auto found =
      std::find_if(ports.begin(), ports.end(), [&](const auto& port) { return port.name == name; });
  return found == ports.end() ? nullptr : &*found;
}

TEST(ListServerPorts, ShowsThisProcessPortsWithTheirStateUntilDestroyed) {
  test::ScopedRuntimeDir runtime;
  ServerPortOptions first;
  first.name = "\\ListedOne";
  first.max_connections = 3;
  auto one = ServerPort::create(first);
  ASSERT_TRUE(one.ok());
  ServerPortOptions second;
  second.name = "\\ListedTwo";
  auto two = ServerPort::create(second);
  ASSERT_TRUE(two.ok());

  auto ports = list_server_ports();
  const ServerPortInfo* listed = find(ports, "\\ListedOne");
  ASSERT_NE(listed, nullptr);
  EXPECT_EQ(listed->max_connections, 3);
  EXPECT_EQ(listed->connections, 0u);
  EXPECT_TRUE(listed->listening);
  EXPECT_NE(listed->socket_path.find("listedone.port"), std::string::npos) << listed->socket_path;
  ASSERT_NE(find(ports, "\\ListedTwo"), nullptr);

  one->close();  // FltCloseCommunicationPort: still there, no longer listening
  ports = list_server_ports();
  ASSERT_NE(find(ports, "\\ListedOne"), nullptr);
  EXPECT_FALSE(find(ports, "\\ListedOne")->listening);

  *two = ServerPort();  // destroyed: gone from the list
  EXPECT_EQ(find(list_server_ports(), "\\ListedTwo"), nullptr);
}

}  // namespace
}  // namespace fltport
