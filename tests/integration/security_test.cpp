// Who may connect: the default descriptor (root only) and the Linux extension
// (FltportBuildPortSecurityDescriptor: allow lists of uids and gids, and mode bits on an owner
// and group where the write bit grants connecting), checked against the peer's credentials.
// The tests run as root; a child drops to an unprivileged uid before it connects.
#include <fltport/fltkernel.h>
#include <fltport/fltuser.h>

#include <fltport/port.hpp>

#include <unistd.h>

#include <vector>

#include "support/c_filter.hpp"
#include "support/proc_info.hpp"
#include "support/process.hpp"

namespace fltport::test {
namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;
constexpr uid_t kOtherUid = 65533;
constexpr gid_t kScanGroup = 4242;

class Security : public PortTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "the security tests need root to switch uids";
  }
};

struct Peer {
  uid_t uid;
  gid_t gid;
  std::vector<gid_t> groups;
};

// A child that becomes `peer` and connects once the port is ready; it reports the HRESULT.
ChildProcess connecting_child(Signal& port_ready, Signal& results, const Peer& peer) {
  return ChildProcess([&port_ready, &results, peer] {
    CHILD_CHECK(port_ready.wait());
    if (peer.uid != 0 || peer.gid != 0 || !peer.groups.empty())
      CHILD_CHECK(drop_privileges(peer.uid, peer.gid, peer.groups));
    HANDLE port = nullptr;
    const HRESULT hr = connect_service(&port);
    notify_code(results, hr);
    if (hr == S_OK) CloseHandle(port);
    return 0;
  });
}

PSECURITY_DESCRIPTOR build(const FLTPORT_PORT_ACCESS& access) {
  PSECURITY_DESCRIPTOR descriptor = nullptr;
  const NTSTATUS status = FltportBuildPortSecurityDescriptor(&access, &descriptor);
  EXPECT_CODE(status, STATUS_SUCCESS);
  return NT_SUCCESS(status) ? descriptor : nullptr;
}

TEST_F(Security, DefaultDescriptorAdmitsRootAndRefusesOthersWithAccessDenied) {
  Signal port_ready, root_result, nobody_result;
  ChildProcess root = connecting_child(port_ready, root_result, {0, 0, {}});
  ChildProcess nobody = connecting_child(port_ready, nobody_result, {kNobody, kNogroup, {}});
  CFilter filter;
  ASSERT_CODE(filter.create_port({.max_connections = 4}),
              STATUS_SUCCESS);  // FltBuildDefaultSecurityDescriptor
  port_ready.notify();
  port_ready.notify();
  EXPECT_CODE(wait_code(root_result), S_OK);
  EXPECT_CODE(wait_code(nobody_result), E_ACCESSDENIED);
  EXPECT_TRUE(ExitsCleanly(root));
  EXPECT_TRUE(ExitsCleanly(nobody));
  EXPECT_EQ(filter.connect_attempts(), 1) << "a refused peer must not reach ConnectNotify";
}

TEST_F(Security, NullDescriptorAdmitsRootOnly) {
  Signal port_ready, root_result, nobody_result;
  ChildProcess root = connecting_child(port_ready, root_result, {0, 0, {}});
  ChildProcess nobody = connecting_child(port_ready, nobody_result, {kNobody, kNogroup, {}});
  CFilter filter;
  ASSERT_CODE(filter.create_port({.max_connections = 4, .null_security = true}), STATUS_SUCCESS);
  port_ready.notify();
  port_ready.notify();
  EXPECT_CODE(wait_code(root_result), S_OK);
  EXPECT_CODE(wait_code(nobody_result), E_ACCESSDENIED);
  EXPECT_TRUE(ExitsCleanly(root));
  EXPECT_TRUE(ExitsCleanly(nobody));
}

// Descriptors the calling process has open.
int open_descriptors() {
  return static_cast<int>(figures_of(::getpid()).fds) - 1;  // less the listing's own
}

TEST_F(Security, RefusedPeerLeavesNoConnectionBehind) {
  Signal port_ready, nobody_result, nobody_leaked, root_ready, root_result;
  // The refused service: E_ACCESSDENIED, no handle, and no descriptor left open by the attempt.
  ChildProcess nobody([&] {
    CHILD_CHECK(port_ready.wait());
    CHILD_CHECK(drop_privileges(kNobody, kNogroup));
    const int before = open_descriptors();
    HANDLE port = nullptr;
    const HRESULT hr = connect_service(&port);
    notify_code(nobody_result, hr);
    nobody_leaked.notify(static_cast<uint64_t>(open_descriptors() - before));
    if (hr == S_OK) CloseHandle(port);
    return 0;
  });
  ChildProcess root = connecting_child(root_ready, root_result, {0, 0, {}});
  CFilter filter;
  ASSERT_CODE(filter.create_port({.max_connections = 1}), STATUS_SUCCESS);
  port_ready.notify();
  EXPECT_CODE(wait_code(nobody_result), E_ACCESSDENIED);
  EXPECT_EQ(wait_number(nobody_leaked), 0) << "descriptors left open in the refused service";
  // The filter's side: no slot taken, no callback run.
  for (const ServerPortInfo& info : list_server_ports()) EXPECT_EQ(info.connections, 0u) << info.name;
  EXPECT_EQ(filter.connect_attempts(), 0);
  EXPECT_EQ(filter.disconnect_count(), 0);
  root_ready.notify();
  EXPECT_CODE(wait_code(root_result), S_OK) << "MaxConnections 1: the refused peer must not hold the slot";
  EXPECT_TRUE(ExitsCleanly(nobody));
  EXPECT_TRUE(ExitsCleanly(root));
  EXPECT_EQ(filter.connect_attempts(), 1);
  EXPECT_TRUE(filter.wait_disconnects(1));
  EXPECT_EQ(filter.disconnect_count(), 1) << "the refused peer must not reach DisconnectNotify";
}

TEST_F(Security, AllowedUidIsAdmittedAndOtherUidsAreRefused) {
  Signal port_ready, allowed_result, other_result, root_result;
  ChildProcess allowed = connecting_child(port_ready, allowed_result, {kNobody, kNogroup, {}});
  ChildProcess other = connecting_child(port_ready, other_result, {kOtherUid, kNogroup, {}});
  ChildProcess root = connecting_child(port_ready, root_result, {0, 0, {}});
  CFilter filter;
  const ULONG uids[] = {kNobody};
  FLTPORT_PORT_ACCESS access{};
  access.OwnerUid = 0;
  access.OwnerGid = 0;
  access.Mode = 0;
  access.AllowedUids = uids;
  access.AllowedUidCount = 1;
  PSECURITY_DESCRIPTOR descriptor = build(access);
  ASSERT_NE(descriptor, nullptr);
  ASSERT_CODE(filter.create_port({.max_connections = 8, .security = descriptor}), STATUS_SUCCESS);
  FltFreeSecurityDescriptor(descriptor);
  for (int i = 0; i < 3; ++i) port_ready.notify();
  EXPECT_CODE(wait_code(allowed_result), S_OK) << "uid " << kNobody << " is on the allow list";
  EXPECT_CODE(wait_code(other_result), E_ACCESSDENIED) << "uid " << kOtherUid << " is not";
  EXPECT_CODE(wait_code(root_result), S_OK) << "root is always admitted";
  EXPECT_TRUE(ExitsCleanly(allowed));
  EXPECT_TRUE(ExitsCleanly(other));
  EXPECT_TRUE(ExitsCleanly(root));
  EXPECT_EQ(filter.connect_attempts(), 2);
}

TEST_F(Security, AllowedGidIsAdmittedAsPrimaryOrSupplementaryGroup) {
  Signal port_ready, primary_result, supplementary_result, outsider_result;
  ChildProcess primary = connecting_child(port_ready, primary_result, {kNobody, kScanGroup, {}});
  ChildProcess supplementary =
      connecting_child(port_ready, supplementary_result, {kNobody, kNogroup, {kScanGroup}});
  ChildProcess outsider = connecting_child(port_ready, outsider_result, {kNobody, kNogroup, {}});
  CFilter filter;
  const ULONG gids[] = {kScanGroup};
  FLTPORT_PORT_ACCESS access{};
  access.Mode = 0;
  access.AllowedGids = gids;
  access.AllowedGidCount = 1;
  PSECURITY_DESCRIPTOR descriptor = build(access);
  ASSERT_NE(descriptor, nullptr);
  ASSERT_CODE(filter.create_port({.max_connections = 8, .security = descriptor}), STATUS_SUCCESS);
  FltFreeSecurityDescriptor(descriptor);
  for (int i = 0; i < 3; ++i) port_ready.notify();
  EXPECT_CODE(wait_code(primary_result), S_OK) << "primary gid on the allow list";
  EXPECT_CODE(wait_code(supplementary_result), S_OK) << "supplementary gid on the allow list";
  EXPECT_CODE(wait_code(outsider_result), E_ACCESSDENIED);
  EXPECT_TRUE(ExitsCleanly(primary));
  EXPECT_TRUE(ExitsCleanly(supplementary));
  EXPECT_TRUE(ExitsCleanly(outsider));
}

// Mode bits: like a file's, against OwnerUid/OwnerGid; the write bit grants connecting.
struct ModeCase {
  const char* name;
  ULONG mode;
  uid_t owner;
  gid_t group;
  Peer peer;
  HRESULT expected;
};
void PrintTo(const ModeCase& c, std::ostream* os) {
  *os << c.name;
}

class SecurityMode : public Security, public ::testing::WithParamInterface<ModeCase> {};

TEST_P(SecurityMode, WriteBitGrantsConnecting) {
  const ModeCase c = GetParam();
  Signal port_ready, result;
  ChildProcess peer = connecting_child(port_ready, result, c.peer);
  CFilter filter;
  FLTPORT_PORT_ACCESS access{};
  access.OwnerUid = c.owner;
  access.OwnerGid = c.group;
  access.Mode = c.mode;
  PSECURITY_DESCRIPTOR descriptor = build(access);
  ASSERT_NE(descriptor, nullptr);
  ASSERT_CODE(filter.create_port({.security = descriptor}), STATUS_SUCCESS);
  FltFreeSecurityDescriptor(descriptor);
  port_ready.notify();
  EXPECT_CODE(wait_code(result), c.expected);
  EXPECT_TRUE(ExitsCleanly(peer));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, SecurityMode,
    ::testing::Values(
        ModeCase{"OwnerWithWriteBit", 0600, kNobody, kScanGroup, {kNobody, kNogroup, {}}, S_OK},
        ModeCase{"OwnerWithReadOnly", 0400, kNobody, kScanGroup, {kNobody, kNogroup, {}}, E_ACCESSDENIED},
        ModeCase{"NotOwnerUnderOwnerOnlyMode",
                 0600,
                 kNobody,
                 kScanGroup,
                 {kOtherUid, kNogroup, {}},
                 E_ACCESSDENIED},
        ModeCase{"GroupMemberWithGroupWriteBit", 0660, 0, kScanGroup, {kNobody, kScanGroup, {}}, S_OK},
        ModeCase{"SupplementaryGroupMemberWithGroupWriteBit",
                 0620,
                 0,
                 kScanGroup,
                 {kNobody, kNogroup, {kScanGroup}},
                 S_OK},
        ModeCase{"GroupMemberWithoutGroupWriteBit",
                 0640,
                 0,
                 kScanGroup,
                 {kNobody, kScanGroup, {}},
                 E_ACCESSDENIED},
        ModeCase{"OtherWithOtherWriteBit", 0602, 0, kScanGroup, {kNobody, kNogroup, {}}, S_OK},
        ModeCase{"OtherWithoutOtherWriteBit", 0664, 0, kScanGroup, {kNobody, kNogroup, {}}, E_ACCESSDENIED},
        ModeCase{"RootDespiteModeZero", 0000, kNobody, kScanGroup, {0, 0, {}}, S_OK}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace fltport::test
