// Who a port admits, decided on the connecting process's credentials; and the checks that keep the
// runtime directory from being used to get around that (symlinks, files planted by others).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fltport/port.hpp>

#include "support/runtime_dir.hpp"
#include "transport/runtime_dir.hpp"

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

// ---- the runtime directory's checks (transport/runtime_dir.hpp), on files the test makes ----

namespace fltport::transport {
namespace {

constexpr uid_t kStranger = 65534;

class RuntimeDirChecks : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/fltport-unit-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    base_ = pattern;
  }
  void TearDown() override { test::remove_tree(base_); }
  std::string path(const std::string& name) const { return base_ + "/" + name; }
  bool root() const { return ::geteuid() == 0; }

  std::string base_;
};

TEST_F(RuntimeDirChecks, TrustsRootAndItsOwnUidOnly) {
  EXPECT_TRUE(trusted_owner(0));
  EXPECT_TRUE(trusted_owner(::geteuid()));
  if (::geteuid() != kStranger) {
    EXPECT_FALSE(trusted_owner(kStranger));
  }
}

TEST_F(RuntimeDirChecks, CreatesAMissingDirectory) {
  auto dir = open_runtime_directory(path("run"));
  ASSERT_TRUE(dir.ok());
  struct stat info {};
  ASSERT_EQ(::lstat(path("run").c_str(), &info), 0);
  EXPECT_TRUE(S_ISDIR(info.st_mode));
  EXPECT_EQ(info.st_mode & 022, 0u) << "created writable by others";
}

TEST_F(RuntimeDirChecks, AcceptsAPrivateOrStickyDirectory) {
  for (const mode_t mode : {mode_t{0700}, mode_t{0755}, mode_t{01777}, mode_t{01770}}) {
    ASSERT_EQ(::chmod(base_.c_str(), mode), 0);
    EXPECT_TRUE(open_runtime_directory(base_).ok()) << std::oct << mode;
  }
}

TEST_F(RuntimeDirChecks, RefusesWhatIsNotASafeDirectory) {
  ASSERT_EQ(::mkdir(path("open").c_str(), 0700), 0);
  ASSERT_EQ(::chmod(path("open").c_str(), 0777), 0);
  ASSERT_EQ(::mkdir(path("group").c_str(), 0700), 0);
  ASSERT_EQ(::chmod(path("group").c_str(), 0770), 0);
  ASSERT_EQ(::symlink(base_.c_str(), path("link").c_str()), 0);
  ASSERT_EQ(::symlink(path("nowhere").c_str(), path("dangling").c_str()), 0);
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  ::close(::open(path("file").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
  for (const char* name : {"open", "group", "link", "dangling", "fifo", "file"}) {
    EXPECT_EQ(open_runtime_directory(path(name)).status(), Status(STATUS_ACCESS_DENIED)) << name;
  }
  EXPECT_FALSE(::access(path("nowhere").c_str(), F_OK) == 0) << "mkdir went through the dangling symlink";
}

TEST_F(RuntimeDirChecks, RefusesADirectoryOfAnotherUid) {
  if (!root()) GTEST_SKIP() << "needs root to chown";
  ASSERT_EQ(::mkdir(path("theirs").c_str(), 0755), 0);
  ASSERT_EQ(::chown(path("theirs").c_str(), kStranger, kStranger), 0);
  EXPECT_EQ(open_runtime_directory(path("theirs")).status(), Status(STATUS_ACCESS_DENIED));
}

TEST_F(RuntimeDirChecks, LockFileMustBeOurOwnRegularFile) {
  auto dir = open_runtime_directory(base_);
  ASSERT_TRUE(dir.ok());
  ASSERT_EQ(::symlink(path("target").c_str(), path("link.lock").c_str()), 0);
  ASSERT_EQ(::mkfifo(path("fifo.lock").c_str(), 0600), 0);
  ASSERT_EQ(::mkdir(path("dir.lock").c_str(), 0700), 0);
  ::close(::open(path("linked.lock").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
  ASSERT_EQ(::link(path("linked.lock").c_str(), path("second-name").c_str()), 0);
  for (const char* name : {"link.lock", "fifo.lock", "dir.lock", "linked.lock"}) {
    EXPECT_EQ(open_lock_file(dir->fd(), base_, name).status(), Status(STATUS_ACCESS_DENIED)) << name;
  }
  EXPECT_NE(::access(path("target").c_str(), F_OK), 0) << "O_CREAT went through the symlink";
  EXPECT_TRUE(open_lock_file(dir->fd(), base_, "fresh.lock").ok());
  EXPECT_TRUE(open_lock_file(dir->fd(), base_, "fresh.lock").ok()) << "our own lock file, again";
  if (root()) {
    ::close(::open(path("theirs.lock").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0666));
    ASSERT_EQ(::chown(path("theirs.lock").c_str(), kStranger, kStranger), 0);
    EXPECT_EQ(open_lock_file(dir->fd(), base_, "theirs.lock").status(), Status(STATUS_ACCESS_DENIED));
  }
}

TEST_F(RuntimeDirChecks, ASecondClaimOfANameCollides) {
  auto first = PortName::claim(base_, "scannerport");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(PortName::claim(base_, "scannerport").status(), Status(STATUS_OBJECT_NAME_COLLISION));
  EXPECT_TRUE(PortName::claim(base_, "otherport").ok());
}

TEST_F(RuntimeDirChecks, ListenReplacesOnlyAStaleSocketOfOurs) {
  {
    auto name = PortName::claim(base_, "scannerport");
    ASSERT_TRUE(name.ok());
    auto listener = name->listen();
    ASSERT_TRUE(listener.ok());
    EXPECT_EQ(name->socket_path(), path("scannerport.port"));
    struct stat info {};
    ASSERT_EQ(::lstat(path("scannerport.port").c_str(), &info), 0);
    EXPECT_TRUE(S_ISSOCK(info.st_mode));
    EXPECT_EQ(info.st_mode & 0777, 0666u);
    // The owner dies without removing it: the next owner replaces it.
  }
  auto again = PortName::claim(base_, "scannerport");
  ASSERT_TRUE(again.ok());
  auto listener = again->listen();
  ASSERT_TRUE(listener.ok());
  again->remove_socket();
  EXPECT_NE(::access(path("scannerport.port").c_str(), F_OK), 0);

  // Not a socket of ours: left alone, refused.
  ::close(::open(path("target").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
  ASSERT_EQ(::symlink(path("target").c_str(), path("link.port").c_str()), 0);
  ::close(::open(path("file.port").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
  for (const char* name : {"link", "file"}) {
    auto claimed = PortName::claim(base_, name);
    ASSERT_TRUE(claimed.ok());
    EXPECT_EQ(claimed->listen().status(), Status(STATUS_ACCESS_DENIED)) << name;
  }
  struct stat info {};
  ASSERT_EQ(::lstat(path("link.port").c_str(), &info), 0);
  EXPECT_TRUE(S_ISLNK(info.st_mode)) << "the symlink was removed";
  ASSERT_EQ(::stat(path("target").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u) << "the symlink's target was changed";
  ASSERT_EQ(::lstat(path("file.port").c_str(), &info), 0);
  EXPECT_TRUE(S_ISREG(info.st_mode)) << "the file was removed";
}

TEST_F(RuntimeDirChecks, ServiceTrustsAListenerOfItsOwnUid) {
  int ends[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ends), 0);
  EXPECT_TRUE(check_filter_peer(ends[0], "\\ScannerPort").ok());
  ::close(ends[0]);
  ::close(ends[1]);
}

}  // namespace
}  // namespace fltport::transport
