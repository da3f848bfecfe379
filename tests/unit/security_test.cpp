// Who a port admits, decided on the connecting process's credentials.
#include <fltport/port.hpp>
#include <gtest/gtest.h>

namespace fltport {
namespace {

PeerCredentials peer(uid_t uid, gid_t gid, std::vector<gid_t> groups = {}) {
  PeerCredentials p;
  p.uid = uid;
  p.gid = gid;
  p.groups = std::move(groups);
  return p;
}

TEST(PortSecurity, DefaultAdmitsRootOnly) {
  const auto security = PortSecurity::root_only();
  EXPECT_TRUE(security.admits(peer(0, 0)));
  EXPECT_FALSE(security.admits(peer(1000, 1000)));
  EXPECT_FALSE(security.admits(peer(65534, 0))) << "group root is not root";
}

TEST(PortSecurity, AllowListsAdmitListedUsersAndGroups) {
  auto security = PortSecurity::root_only();
  security.allow_uid(1000).allow_gid(50);
  EXPECT_TRUE(security.admits(peer(1000, 1000)));
  EXPECT_FALSE(security.admits(peer(1001, 1001)));
  EXPECT_TRUE(security.admits(peer(1001, 1001, {50})));
  EXPECT_TRUE(security.admits(peer(1002, 50)));
}

TEST(PortSecurity, ModeBitsFollowFilePermissionOrder) {
  const auto security = PortSecurity::with_mode(1000, 100, 0060);  // group may, owner may not
  EXPECT_FALSE(security.admits(peer(1000, 100))) << "the owner's bits decide for the owner";
  EXPECT_TRUE(security.admits(peer(1001, 100)));
  EXPECT_TRUE(security.admits(peer(1001, 1001, {100})));
  EXPECT_FALSE(security.admits(peer(1002, 1002)));
  EXPECT_TRUE(PortSecurity::everyone().admits(peer(1234, 1234)));
}

}  // namespace
}  // namespace fltport
