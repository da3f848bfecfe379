// Attacks on the runtime directory by an unprivileged local user, through the real C API.
//
// $FLTPORT_RUNTIME_DIR may point into a place everyone can write, as /tmp. An attacker (a child
// that drops to uid 65534) plants traps there before the filter or the service runs: the runtime
// directory itself (created by the attacker, world-writable, a symlink, a file), a symlink, a file,
// a FIFO or a listening socket of its own at "<name>.lock" or "<name>.port"; or it tries to replace
// the filter's socket once bound. Each test asserts the refusal (a documented status, and a log line
// naming the reason) and that the file outside that the trap pointed at was not touched.
//
// Layout: `parent_` stands for /tmp (root, 01777); the runtime directory is `parent_/run` unless a
// test says otherwise; `outside_` is a root directory (0755) holding `secret` (0600, root) that the
// traps point at.
#include <fltport/fltkernel.h>
#include <fltport/fltuser.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "support/c_filter.hpp"
#include "support/process.hpp"
#include "support/runtime_dir.hpp"
#include "support/stderr_capture.hpp"
#include "transport/unix_socket.hpp"
#include "wire/frame.hpp"

namespace fltport::test {
namespace {

constexpr uid_t kAttacker = 65534;
constexpr gid_t kAttackerGroup = 65534;
constexpr const char* kSecretText = "root's secret\n";

// A mkdtemp directory of the test's own with the given mode, removed at the end.
class TempDir {
 public:
  explicit TempDir(mode_t mode) {
    char pattern[] = "/tmp/fltport-attack-XXXXXX";
    if (::mkdtemp(pattern) != nullptr) {
      path_ = pattern;
      ::chmod(path_.c_str(), mode);
    }
  }
  ~TempDir() {
    if (!path_.empty()) remove_tree(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const noexcept { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// What a file outside looks like: the test asserts that a trap did not change it.
struct FileState {
  bool exists = false;
  dev_t device = 0;
  ino_t inode = 0;
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  nlink_t links = 0;
  std::string content;

  bool operator==(const FileState&) const = default;
};

FileState file_state(const std::string& path) {
  FileState state;
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0) return state;
  state.exists = true;
  state.device = info.st_dev;
  state.inode = info.st_ino;
  state.mode = info.st_mode;
  state.uid = info.st_uid;
  state.gid = info.st_gid;
  state.links = info.st_nlink;
  if (S_ISREG(info.st_mode)) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    state.content = text.str();
  }
  return state;
}

std::string describe(const FileState& s) {
  if (!s.exists) return "(missing)";
  char text[160];
  std::snprintf(text, sizeof text, "ino %lu mode %o uid %u gid %u links %lu, %zu bytes",
                static_cast<unsigned long>(s.inode), static_cast<unsigned>(s.mode),
                static_cast<unsigned>(s.uid), static_cast<unsigned>(s.gid),
                static_cast<unsigned long>(s.links), s.content.size());
  return text;
}

::testing::AssertionResult Unchanged(const FileState& before, const FileState& after) {
  if (before == after) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "was " << describe(before) << ", now " << describe(after);
}

// Runs `body` in a child that became the attacker (uid/gid 65534, no groups); its exit code.
::testing::AssertionResult AsAttacker(const std::function<int()>& body) {
  ChildProcess child([&body] {
    CHILD_CHECK(drop_privileges(kAttacker, kAttackerGroup));
    ::umask(0);
    return body();
  });
  return ExitsCleanly(child);
}

// FltCreateCommunicationPort with the default descriptor; the status. The port, when created, is
// closed by the filter's destructor.
NTSTATUS create_port(CFilter& filter, const wchar_t* name = kPortName) {
  return filter.create_port({.name = name, .max_connections = 4});
}

// A socket bound at `path` (mode 0666) and listening.
int listening_socket(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
      ::chmod(path.c_str(), 0666) != 0 || ::listen(fd, 16) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

class RuntimeDirAttack : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "the attacks need root to switch to an unprivileged uid";
    ASSERT_FALSE(parent_.path().empty());
    ASSERT_FALSE(outside_.path().empty());
    {
      std::ofstream secret(outside_ / "secret");
      secret << kSecretText;
    }
    ASSERT_EQ(::chmod((outside_ / "secret").c_str(), 0600), 0);
    if (const char* old = std::getenv("FLTPORT_RUNTIME_DIR"); old != nullptr) previous_ = old;
    use_runtime_dir(parent_ / "run");
  }
  void TearDown() override {
    if (previous_) {
      ::setenv("FLTPORT_RUNTIME_DIR", previous_->c_str(), 1);
    } else {
      ::unsetenv("FLTPORT_RUNTIME_DIR");
    }
  }

  void use_runtime_dir(const std::string& path) {
    runtime_ = path;
    ::setenv("FLTPORT_RUNTIME_DIR", runtime_.c_str(), 1);
  }
  // The runtime directory as root makes it, with this mode (e.g. 01777, as /tmp).
  void make_runtime_dir(mode_t mode) {
    ASSERT_EQ(::mkdir(runtime_.c_str(), 0700), 0) << std::strerror(errno);
    ASSERT_EQ(::chmod(runtime_.c_str(), mode), 0);
  }
  std::string in_runtime(const std::string& name) const { return runtime_ + "/" + name; }

  TempDir parent_{01777};  // stands for /tmp
  TempDir outside_{0755};  // root's, where the traps point
  std::string runtime_;
  std::optional<std::string> previous_;
};

// The attacker creates the runtime directory before the filter (world-writable, as a user may):
// the filter must not put its lock and socket where the attacker can swap them.
TEST_F(RuntimeDirAttack, RuntimeDirCreatedByAttackerIsRefused) {
  ASSERT_TRUE(AsAttacker([this] {
    CHILD_CHECK(::mkdir(runtime_.c_str(), 0777) == 0);
    return 0;
  }));
  const FileState planted = file_state(runtime_);
  CFilter filter;
  StderrCapture log;
  EXPECT_CODE(create_port(filter), STATUS_ACCESS_DENIED);
  EXPECT_NE(log.text().find("runtime directory"), std::string::npos) << "no log line naming the reason";
  EXPECT_TRUE(Unchanged(planted, file_state(runtime_)));
  EXPECT_FALSE(file_state(in_runtime("scannerport.lock")).exists)
      << "the filter wrote into the attacker's dir";
  EXPECT_FALSE(file_state(in_runtime("scannerport.port")).exists)
      << "the filter wrote into the attacker's dir";
}

// A runtime directory others may write without the sticky bit (an administrator's mistake): anyone
// could rename the filter's socket away and put theirs in its place.
TEST_F(RuntimeDirAttack, RuntimeDirWritableByOthersWithoutStickyBitIsRefused) {
  for (const mode_t mode : {mode_t{0777}, mode_t{0775}, mode_t{0757}}) {
    SCOPED_TRACE(mode);
    ASSERT_EQ(::mkdir(runtime_.c_str(), 0700), 0);
    ASSERT_EQ(::chmod(runtime_.c_str(), mode), 0);
    CFilter filter;
    StderrCapture log;
    EXPECT_CODE(create_port(filter), STATUS_ACCESS_DENIED);
    EXPECT_NE(log.text().find("writable"), std::string::npos) << "no log line naming the reason";
    EXPECT_FALSE(file_state(in_runtime("scannerport.lock")).exists);
    filter.unregister();
    remove_tree(runtime_);
  }
}

// The runtime directory is a symlink to a directory root owns (as /etc): following it would put
// root's lock file and socket there.
TEST_F(RuntimeDirAttack, SymlinkedRuntimeDirIsNotFollowed) {
  ASSERT_TRUE(AsAttacker([this] {
    CHILD_CHECK(::symlink(outside_.path().c_str(), runtime_.c_str()) == 0);
    CHILD_CHECK(::symlink((outside_ / "not-there").c_str(), (parent_ / "dangling").c_str()) == 0);
    return 0;
  }));
  const FileState link = file_state(runtime_);
  const FileState secret = file_state(outside_ / "secret");
  {
    CFilter filter;
    StderrCapture log;
    EXPECT_CODE(create_port(filter), STATUS_ACCESS_DENIED);
    EXPECT_NE(log.text().find("symlink"), std::string::npos) << "no log line naming the reason";
  }
  use_runtime_dir(parent_ / "dangling");  // a symlink to nothing: mkdir must not create its target
  {
    CFilter filter;
    EXPECT_CODE(create_port(filter), STATUS_ACCESS_DENIED);
  }
  EXPECT_TRUE(Unchanged(link, file_state(parent_ / "run")));
  EXPECT_TRUE(Unchanged(secret, file_state(outside_ / "secret")));
  EXPECT_FALSE(file_state(outside_ / "scannerport.lock").exists) << "the lock file went through the symlink";
  EXPECT_FALSE(file_state(outside_ / "scannerport.port").exists) << "the socket went through the symlink";
  EXPECT_FALSE(file_state(outside_ / "not-there").exists) << "the dangling symlink's target was created";
}

// A file or a FIFO where the runtime directory should be.
TEST_F(RuntimeDirAttack, FileInPlaceOfRuntimeDirIsRefused) {
  ASSERT_TRUE(AsAttacker([this] {
    const int fd = ::open(runtime_.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
    CHILD_CHECK(fd >= 0);
    ::close(fd);
    CHILD_CHECK(::mkfifo((parent_ / "fifo").c_str(), 0666) == 0);
    return 0;
  }));
  const FileState file = file_state(runtime_);
  {
    CFilter filter;
    EXPECT_CODE(create_port(filter), STATUS_ACCESS_DENIED);
  }
  use_runtime_dir(parent_ / "fifo");
  {
    CFilter filter;
    EXPECT_CODE(create_port(filter), STATUS_ACCESS_DENIED);  // and promptly: a FIFO is never opened
  }
  EXPECT_TRUE(Unchanged(file, file_state(parent_ / "run")));
}

// A symlink at "<name>.lock" in a runtime directory like /tmp (root's, sticky, world-writable):
// O_CREAT through it would create or truncate a file the attacker chose.
TEST_F(RuntimeDirAttack, SymlinkAtLockFileIsNotFollowed) {
  make_runtime_dir(01777);
  ASSERT_TRUE(AsAttacker([this] {
    CHILD_CHECK(::symlink((outside_ / "secret").c_str(), in_runtime("scannerport.lock").c_str()) == 0);
    CHILD_CHECK(::symlink((outside_ / "created").c_str(), in_runtime("otherport.lock").c_str()) == 0);
    return 0;
  }));
  const FileState secret = file_state(outside_ / "secret");
  CFilter filter;
  StderrCapture log;
  EXPECT_CODE(create_port(filter), STATUS_ACCESS_DENIED);
  EXPECT_CODE(create_port(filter, L"\\OtherPort"), STATUS_ACCESS_DENIED);
  EXPECT_NE(log.text().find("scannerport.lock"), std::string::npos) << "no log line naming the file";
  EXPECT_TRUE(Unchanged(secret, file_state(outside_ / "secret")));
  EXPECT_FALSE(file_state(outside_ / "created").exists) << "a file was created through the symlink";
  EXPECT_FALSE(file_state(in_runtime("scannerport.port")).exists) << "a socket was bound anyway";
}

// A lock file the attacker made (world-writable, its own): the attacker could delete it while the
// filter holds its lock, and a second owner of the name would then get in.
TEST_F(RuntimeDirAttack, LockFileOwnedByAttackerIsRefused) {
  make_runtime_dir(01777);
  ASSERT_TRUE(AsAttacker([this] {
    const int fd =
        ::open(in_runtime("scannerport.lock").c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0666);
    CHILD_CHECK(fd >= 0);
    ::close(fd);
    return 0;
  }));
  const FileState planted = file_state(in_runtime("scannerport.lock"));
  CFilter filter;
  StderrCapture log;
  EXPECT_CODE(create_port(filter), STATUS_ACCESS_DENIED);
  EXPECT_NE(log.text().find("scannerport.lock"), std::string::npos) << "no log line naming the file";
  EXPECT_TRUE(Unchanged(planted, file_state(in_runtime("scannerport.lock"))));
  EXPECT_FALSE(file_state(in_runtime("scannerport.port")).exists);
}

// A FIFO or a socket at "<name>.lock": refused, and without blocking in open().
TEST_F(RuntimeDirAttack, NonRegularLockFileIsRefused) {
  make_runtime_dir(01777);
  ASSERT_TRUE(AsAttacker([this] {
    CHILD_CHECK(::mkfifo(in_runtime("scannerport.lock").c_str(), 0666) == 0);
    const int fd = listening_socket(in_runtime("otherport.lock"));
    CHILD_CHECK(fd >= 0);
    ::close(fd);
    return 0;
  }));
  const FileState fifo = file_state(in_runtime("scannerport.lock"));
  CFilter filter;
  Stopwatch watch;
  EXPECT_CODE(create_port(filter), STATUS_ACCESS_DENIED);
  EXPECT_CODE(create_port(filter, L"\\OtherPort"), STATUS_ACCESS_DENIED);
  EXPECT_LT(watch.ms(), 2000);
  EXPECT_TRUE(Unchanged(fifo, file_state(in_runtime("scannerport.lock"))));
  EXPECT_FALSE(file_state(in_runtime("scannerport.port")).exists);
}

// A symlink at "<name>.port": the filter's stale-socket removal, bind and chmod must not reach the
// file it points at (a chmod 0666 through it would open root's file to everyone).
TEST_F(RuntimeDirAttack, SymlinkAtSocketPathIsNotFollowed) {
  make_runtime_dir(01777);
  ASSERT_TRUE(AsAttacker([this] {
    CHILD_CHECK(::symlink((outside_ / "secret").c_str(), in_runtime("scannerport.port").c_str()) == 0);
    return 0;
  }));
  const FileState secret = file_state(outside_ / "secret");
  const FileState link = file_state(in_runtime("scannerport.port"));
  CFilter filter;
  StderrCapture log;
  EXPECT_CODE(create_port(filter), STATUS_ACCESS_DENIED);
  EXPECT_NE(log.text().find("scannerport.port"), std::string::npos) << "no log line naming the file";
  EXPECT_TRUE(Unchanged(secret, file_state(outside_ / "secret")));
  EXPECT_TRUE(Unchanged(link, file_state(in_runtime("scannerport.port"))))
      << "the attacker's symlink was removed";
}

// A regular file or a FIFO of the attacker's at "<name>.port": not the socket a previous owner
// left, so not the filter's to remove.
TEST_F(RuntimeDirAttack, ForeignFileAtSocketPathIsRefused) {
  make_runtime_dir(01777);
  ASSERT_TRUE(AsAttacker([this] {
    const int fd =
        ::open(in_runtime("scannerport.port").c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    CHILD_CHECK(fd >= 0);
    ::close(fd);
    CHILD_CHECK(::mkfifo(in_runtime("otherport.port").c_str(), 0666) == 0);
    return 0;
  }));
  const FileState file = file_state(in_runtime("scannerport.port"));
  const FileState fifo = file_state(in_runtime("otherport.port"));
  CFilter filter;
  EXPECT_CODE(create_port(filter), STATUS_ACCESS_DENIED);
  EXPECT_CODE(create_port(filter, L"\\OtherPort"), STATUS_ACCESS_DENIED);
  EXPECT_TRUE(Unchanged(file, file_state(in_runtime("scannerport.port"))));
  EXPECT_TRUE(Unchanged(fifo, file_state(in_runtime("otherport.port"))));
}

// The attacker listens at "<name>.port" before the filter runs: a service that connected would
// send its context to the attacker and trust the attacker's messages (a man in the middle). The
// service checks who listens (SO_PEERCRED) before it sends anything.
TEST_F(RuntimeDirAttack, ServiceRefusesAFilterSocketOfAnotherUid) {
  make_runtime_dir(01777);
  Signal listening, saw;
  ChildProcess attacker([this, &listening, &saw] {
    CHILD_CHECK(drop_privileges(kAttacker, kAttackerGroup));
    const int listener = listening_socket(in_runtime("scannerport.port"));
    CHILD_CHECK(listener >= 0);
    listening.notify();
    pollfd ready{listener, POLLIN, 0};
    CHILD_CHECK(::poll(&ready, 1, 5000) == 1);
    const int connection = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    CHILD_CHECK(connection >= 0);
    // What a service sent us: its hello (with its context), or nothing.
    std::byte buffer[wire::kHeaderSize + 256];
    pollfd readable{connection, POLLIN, 0};
    ::poll(&readable, 1, 5000);
    const ssize_t received = ::recv(connection, buffer, sizeof buffer, MSG_DONTWAIT);
    if (received > 0) {
      // Play the filter: a welcome, as a real one would answer.
      const auto welcome = wire::make_header(wire::FrameType::welcome, 0, 0, STATUS_SUCCESS);
      transport::send_frame(connection, welcome, {}, Timeout::Clock::now() + std::chrono::seconds(5));
    }
    saw.notify(received > 0 ? static_cast<uint64_t>(received) : 0);
    ::poll(&readable, 1, 5000);  // until the service is gone
    return 0;
  });
  ASSERT_TRUE(listening.wait());
  const char context[] = "service credentials";
  HANDLE port = nullptr;
  StderrCapture log;
  const HRESULT hr = connect_service(&port, context, sizeof context);
  const std::string text = log.text();
  EXPECT_CODE(hr, E_ACCESSDENIED);
  EXPECT_NE(text.find("uid 65534"), std::string::npos) << "no log line naming the listener";
  if (hr == S_OK) CloseHandle(port);
  EXPECT_EQ(wait_number(saw), 0) << "the attacker received the service's hello";
  EXPECT_TRUE(ExitsCleanly(attacker));
}

// Once the filter has bound its socket in a runtime directory like /tmp (root's, 01777), the
// attacker can neither remove nor replace it, nor its lock file; a service still reaches the filter.
TEST_F(RuntimeDirAttack, BoundSocketCannotBeReplaced) {
  make_runtime_dir(01777);
  Signal go, result;
  ChildProcess attacker([this, &go, &result] {
    CHILD_CHECK(drop_privileges(kAttacker, kAttackerGroup));
    CHILD_CHECK(go.wait());
    int refused = 0;
    const std::string socket = in_runtime("scannerport.port");
    const std::string lock = in_runtime("scannerport.lock");
    const int own = listening_socket(in_runtime("mine.port"));
    CHILD_CHECK(own >= 0);
    CHILD_CHECK(::symlink((outside_ / "secret").c_str(), in_runtime("mine.link").c_str()) == 0);
    refused += ::unlink(socket.c_str()) != 0 && (errno == EPERM || errno == EACCES);
    refused +=
        ::rename(in_runtime("mine.port").c_str(), socket.c_str()) != 0 && (errno == EPERM || errno == EACCES);
    refused +=
        ::rename(in_runtime("mine.link").c_str(), socket.c_str()) != 0 && (errno == EPERM || errno == EACCES);
    refused += ::rename(socket.c_str(), in_runtime("stolen.port").c_str()) != 0 &&
               (errno == EPERM || errno == EACCES);
    refused += ::unlink(lock.c_str()) != 0 && (errno == EPERM || errno == EACCES);
    refused +=
        ::rename(in_runtime("mine.port").c_str(), lock.c_str()) != 0 && (errno == EPERM || errno == EACCES);
    refused += ::chmod(socket.c_str(), 0600) != 0 && (errno == EPERM || errno == EACCES);
    result.notify(static_cast<uint64_t>(refused));
    ::close(own);
    return 0;
  });
  CFilter filter;
  ASSERT_CODE(filter.create_port({.max_connections = 4}), STATUS_SUCCESS);
  const FileState socket = file_state(in_runtime("scannerport.port"));
  const FileState lock = file_state(in_runtime("scannerport.lock"));
  const FileState secret = file_state(outside_ / "secret");
  go.notify();
  EXPECT_EQ(wait_number(result), 7) << "an attempt on the filter's files succeeded";
  EXPECT_TRUE(ExitsCleanly(attacker));
  EXPECT_TRUE(Unchanged(socket, file_state(in_runtime("scannerport.port"))));
  EXPECT_TRUE(Unchanged(lock, file_state(in_runtime("scannerport.lock"))));
  EXPECT_TRUE(Unchanged(secret, file_state(outside_ / "secret")));
  HANDLE port = nullptr;
  ASSERT_CODE(connect_service(&port), S_OK);
  EXPECT_TRUE(filter.wait_connections(1));
  CloseHandle(port);
}

// The classic race on a runtime directory the attacker can write: between the filter's bind and
// its chmod 0666, swap the fresh socket for a symlink to root's file. Refused up front (the
// directory is the attacker's); the loop (50 ports, the attacker swapping for up to 3 s) shows that
// no attempt reaches the file.
TEST_F(RuntimeDirAttack, SocketSwapRaceCannotChmodAnotherFile) {
  ASSERT_EQ(::mkdir(runtime_.c_str(), 0700), 0);
  ASSERT_EQ(::chown(runtime_.c_str(), kAttacker, kAttackerGroup), 0);  // as if the attacker made it
  Signal started, stop;
  ChildProcess attacker([this, &started, &stop] {
    CHILD_CHECK(drop_privileges(kAttacker, kAttackerGroup));
    const std::string socket = in_runtime("scannerport.port");
    const std::string staged = in_runtime("staged.link");
    started.notify();
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    for (unsigned i = 0; std::chrono::steady_clock::now() < end; ++i) {
      if (i % 1024 == 0 && stop.wait(std::chrono::milliseconds(0))) break;
      struct stat info {};
      if (::lstat(socket.c_str(), &info) == 0 && S_ISSOCK(info.st_mode)) {
        ::unlink(staged.c_str());
        if (::symlink((outside_ / "secret").c_str(), staged.c_str()) == 0)
          ::rename(staged.c_str(), socket.c_str());
      }
    }
    return 0;
  });
  ASSERT_TRUE(started.wait());
  const FileState secret = file_state(outside_ / "secret");
  int created = 0;
  for (int i = 0; i < 50; ++i) {
    CFilter filter;
    const NTSTATUS status = create_port(filter);
    if (NT_SUCCESS(status)) ++created;
    if (!Unchanged(secret, file_state(outside_ / "secret"))) break;
  }
  stop.notify();
  EXPECT_EQ(created, 0) << "ports were created in the attacker's directory";
  EXPECT_TRUE(Unchanged(secret, file_state(outside_ / "secret")));
  ::chmod((outside_ / "secret").c_str(), 0600);  // in case the attack got through
  EXPECT_TRUE(ExitsCleanly(attacker));
}

}  // namespace
}  // namespace fltport::test
