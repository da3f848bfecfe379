// The fanotify mechanism against the real kernel (root only; skipped elsewhere).
//
// Safety: marks go only on directories made under a fresh mkdtemp directory in /tmp, and mount or
// filesystem marks only on a tmpfs the test mounted there itself. Every test that takes permission
// events answers each one, opens from a child process with a bounded wait, and has a watchdog
// that, after 10 s, replaces the group fd with /dev/null (which releases every blocked opener),
// kills the child, and fails the test.
#include "fltmgr/fanotify.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/fanotify.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace fltport::fanotify {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kWatchdog = 10s;
constexpr auto kEventWait = 5s;
constexpr auto kQuiet = 300ms;  // how long "no event" is waited for

bool skip_status(Status status) {
  return status == Status(STATUS_ACCESS_DENIED) || status == Status(STATUS_NOT_SUPPORTED);
}

std::string fd_path(int fd) {
  char buffer[4096];
  const ssize_t n = ::readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), buffer, sizeof buffer);
  return n > 0 ? std::string(buffer, static_cast<size_t>(n)) : std::string();
}

void write_file(const std::string& path, const std::string& content) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  ASSERT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  ::close(fd);
}

// After kWatchdog: puts /dev/null in place of the group fd (closing the group releases every
// blocked opener, and the number stays valid for the group's own close), kills the child, fails.
class Watchdog {
 public:
  explicit Watchdog(int group_fd) : group_fd_(group_fd) {
    thread_ = std::thread([this] {
      std::unique_lock lock(mutex_);
      if (cv_.wait_for(lock, kWatchdog, [this] { return done_; })) return;
      fired_ = true;
      const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      ::dup2(null_fd, group_fd_);
      ::close(null_fd);
      if (child_ > 0) ::kill(child_, SIGKILL);
      ADD_FAILURE() << "watchdog: the test hung; group closed";
    });
  }
  ~Watchdog() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void watch_child(pid_t pid) {
    std::lock_guard lock(mutex_);
    child_ = pid;
  }
  bool fired() {
    std::lock_guard lock(mutex_);
    return fired_;
  }

 private:
  int group_fd_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  bool fired_ = false;
  pid_t child_ = -1;
  std::thread thread_;
};

// A child that runs `action` (async-signal-safe calls only) and exits with its errno, 0 for success.
class Child {
 public:
  Child(int group_fd, Watchdog& watchdog, const std::function<int()>& action) {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(group_fd);  // the child must not keep the group alive
      ::_exit(action());
    }
    if (pid_ > 0) watchdog.watch_child(pid_);
  }
  ~Child() {
    if (pid_ > 0 && !status_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  // The child's errno (0: success), or nullopt if it has not finished within `limit`.
  std::optional<int> wait(
      std::chrono::milliseconds limit = std::chrono::duration_cast<std::chrono::milliseconds>(kEventWait)) {
    const auto deadline = Clock::now() + limit;
    while (!status_) {
      int status = 0;
      const pid_t got = ::waitpid(pid_, &status, WNOHANG);
      if (got == pid_) {
        status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 255;
        break;
      }
      if (Clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(5ms);
    }
    return status_;
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

int open_file(const char* path, int flags) {
  const int fd = ::open(path, flags | O_CLOEXEC);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

int open_and_read(const char* path) {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  char buffer[100];
  const ssize_t n = ::read(fd, buffer, sizeof buffer);
  const int error = n < 0 ? errno : 0;
  ::close(fd);
  return error;
}

int append_byte(const char* path) {
  const int fd = ::open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) return errno;
  const int error = ::write(fd, "x", 1) == 1 ? 0 : errno;
  ::close(fd);
  return error;
}

template <class Group, class Event>
std::vector<Event> collect(Group& group, size_t count, std::chrono::milliseconds limit) {
  std::vector<Event> events;
  const auto deadline = Clock::now() + limit;
  while (events.size() < count) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) break;
    pollfd pfd{group.fd(), POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left)) <= 0) continue;
    const Status status = group.read_events(events);
    EXPECT_TRUE(status.ok()) << status.to_string();
    if (!status.ok()) break;
  }
  return events;
}

std::vector<PermissionEvent> take(
    PermissionGroup& group, size_t count,
    std::chrono::milliseconds limit = std::chrono::duration_cast<std::chrono::milliseconds>(kEventWait)) {
  return collect<PermissionGroup, PermissionEvent>(group, count, limit);
}

void allow_and_close(PermissionGroup& group, std::vector<PermissionEvent>& events) {
  for (auto& event : events) {
    EXPECT_TRUE(group.respond(event.fd, true).ok());
    ::close(event.fd);
  }
  events.clear();
}

class FanotifyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) {
      GTEST_SKIP() << "fanotify permission events need root";
    }
    char pattern[] = "/tmp/fltport-fanotify-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr) << std::strerror(errno);
    root_ = std::filesystem::canonical(pattern).string();
    dir_ = root_ + "/watched";
    ASSERT_EQ(::mkdir(dir_.c_str(), 0755), 0);
  }
  void TearDown() override {
    if (!tmpfs_.empty()) {
      if (::umount2(tmpfs_.c_str(), 0) != 0) ::umount2(tmpfs_.c_str(), MNT_DETACH);
    }
    if (!root_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(root_, ignored);
    }
  }

  std::optional<PermissionGroup> open_permission_group() {
    auto group = PermissionGroup::open();
    if (!group.ok()) {
      if (skip_status(group.status())) return std::nullopt;
      ADD_FAILURE() << group.status().to_string();
      return std::nullopt;
    }
    return std::move(group).value();
  }

  // A tmpfs of our own under root_, or empty when it cannot be mounted.
  std::string mount_tmpfs() {
    const std::string target = root_ + "/tmpfs";
    if (::mkdir(target.c_str(), 0755) != 0) return {};
    if (::mount("fltport-test", target.c_str(), "tmpfs", 0, "size=4m") != 0) return {};
    tmpfs_ = target;
    return target;
  }

  std::string root_;
  std::string dir_;
  std::string tmpfs_;
};

#define OPEN_PERMISSION_GROUP_OR_SKIP(name)                                   \
  auto name##_opened = open_permission_group();                               \
  if (HasFailure()) return;                                                   \
  if (!name##_opened) {                                                       \
    GTEST_SKIP() << "fanotify_init refused (EPERM/ENOSYS): no fanotify here"; \
  }                                                                           \
  PermissionGroup& name = *name##_opened

using FanotifyPermission = FanotifyTest;
using FanotifyNotification = FanotifyTest;

TEST_F(FanotifyPermission, OpensWithCapabilitiesAndNoOverflows) {
  OPEN_PERMISSION_GROUP_OR_SKIP(group);
  EXPECT_GE(group.fd(), 0);
  EXPECT_EQ(group.overflows(), 0u);
  const Capabilities& caps = group.capabilities();
  std::printf("capabilities: pre_content_class=%d pre_access=%d deny_errno=%d ignore_marks=%d\n",
              caps.pre_content_class, caps.pre_access, caps.deny_errno, caps.ignore_marks);
  if (caps.pre_access || caps.deny_errno) {
    EXPECT_TRUE(caps.pre_content_class);
  }

  std::vector<PermissionEvent> events;
  EXPECT_TRUE(group.read_events(events).ok()) << "an empty queue is not an error";
  EXPECT_TRUE(events.empty());

  PermissionGroup moved(std::move(group));
  EXPECT_GE(moved.fd(), 0);
  EXPECT_EQ(group.fd(), -1);  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  EXPECT_EQ(group.add_mark(dir_, MarkScope::directory, FAN_OPEN_PERM), Status(STATUS_INVALID_HANDLE));
}

TEST_F(FanotifyPermission, MarkErrors) {
  OPEN_PERMISSION_GROUP_OR_SKIP(group);
  EXPECT_EQ(group.add_mark(root_ + "/missing", MarkScope::directory, FAN_OPEN_PERM),
            Status(STATUS_OBJECT_NAME_NOT_FOUND));
  EXPECT_EQ(group.add_mark(dir_, MarkScope::directory, FAN_CLOSE_WRITE), Status(STATUS_INVALID_PARAMETER));
  EXPECT_EQ(group.add_mark(dir_, MarkScope::directory, 0), Status(STATUS_INVALID_PARAMETER));
  write_file(dir_ + "/file", "x");
  EXPECT_EQ(group.add_mark(dir_ + "/file", MarkScope::directory, FAN_OPEN_PERM),
            Status(STATUS_INVALID_PARAMETER))
      << "a directory mark is for directories";
}

TEST_F(FanotifyPermission, OpenIsReportedAndAllowed) {
  OPEN_PERMISSION_GROUP_OR_SKIP(group);
  const std::string file = dir_ + "/file";
  write_file(file, "content");
  ASSERT_TRUE(group.add_mark(dir_, MarkScope::directory, FAN_OPEN_PERM).ok());
  Watchdog watchdog(group.fd());

  Child child(group.fd(), watchdog, [&] { return open_file(file.c_str(), O_RDONLY); });
  ASSERT_GT(child.pid(), 0);
  auto events = take(group, 1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].mask, uint64_t{FAN_OPEN_PERM});
  EXPECT_EQ(events[0].pid, child.pid());
  EXPECT_EQ(fd_path(events[0].fd), file);
  EXPECT_FALSE(events[0].range_offset.has_value());
  EXPECT_FALSE(child.wait(kQuiet).has_value()) << "the opener waits for the answer";
  allow_and_close(group, events);
  EXPECT_EQ(child.wait(), std::optional<int>(0));
  EXPECT_FALSE(watchdog.fired());
}

TEST_F(FanotifyPermission, DenyFailsTheOpenWithEperm) {
  OPEN_PERMISSION_GROUP_OR_SKIP(group);
  const std::string file = dir_ + "/file";
  write_file(file, "content");
  ASSERT_TRUE(group.add_mark(dir_, MarkScope::directory, FAN_OPEN_PERM).ok());
  Watchdog watchdog(group.fd());

  Child child(group.fd(), watchdog, [&] { return open_file(file.c_str(), O_RDONLY); });
  auto events = take(group, 1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(group.respond(events[0].fd, false).ok());
  EXPECT_EQ(child.wait(), std::optional<int>(EPERM));
  ::close(events[0].fd);
}

TEST_F(FanotifyPermission, DenyWithErrno) {
  OPEN_PERMISSION_GROUP_OR_SKIP(group);
  if (!group.capabilities().deny_errno) {
    GTEST_SKIP() << "this kernel has no FAN_DENY_ERRNO";
  }
  const std::string file = dir_ + "/file";
  write_file(file, "content");
  ASSERT_TRUE(group.add_mark(dir_, MarkScope::directory, FAN_OPEN_PERM).ok());
  Watchdog watchdog(group.fd());

  {
    Child child(group.fd(), watchdog, [&] { return open_file(file.c_str(), O_RDONLY); });
    auto events = take(group, 1);
    ASSERT_EQ(events.size(), 1u);
    EXPECT_TRUE(group.respond(events[0].fd, false, EIO).ok());
    EXPECT_EQ(child.wait(), std::optional<int>(EIO));
    ::close(events[0].fd);
  }
  {
    // The kernel takes only errnos an open or read may give; others fall back to plain deny.
    Child child(group.fd(), watchdog, [&] { return open_file(file.c_str(), O_RDONLY); });
    auto events = take(group, 1);
    ASSERT_EQ(events.size(), 1u);
    EXPECT_TRUE(group.respond(events[0].fd, false, EACCES).ok());
    EXPECT_EQ(child.wait(), std::optional<int>(EPERM));
    ::close(events[0].fd);
  }
}

TEST_F(FanotifyPermission, IgnoreUntilModified) {
  OPEN_PERMISSION_GROUP_OR_SKIP(group);
  const std::string file = dir_ + "/file";
  write_file(file, "content");
  ASSERT_TRUE(group.add_mark(dir_, MarkScope::directory, FAN_OPEN_PERM).ok());
  Watchdog watchdog(group.fd());

  {
    Child child(group.fd(), watchdog, [&] { return open_file(file.c_str(), O_RDONLY); });
    auto events = take(group, 1);
    ASSERT_EQ(events.size(), 1u);
    EXPECT_TRUE(group.ignore_until_modified(events[0].fd, FAN_OPEN_PERM).ok());
    allow_and_close(group, events);
    EXPECT_EQ(child.wait(), std::optional<int>(0));
  }
  {
    Child child(group.fd(), watchdog, [&] { return open_file(file.c_str(), O_RDONLY); });
    auto events = take(group, 1, kQuiet);
    EXPECT_TRUE(events.empty()) << "the ignore mark holds until the file changes";
    allow_and_close(group, events);
    EXPECT_EQ(child.wait(), std::optional<int>(0));
  }
  {
    // Opening to write is still ignored; the write itself drops the ignore mark.
    Child child(group.fd(), watchdog, [&] { return append_byte(file.c_str()); });
    auto events = take(group, 1, kQuiet);
    EXPECT_TRUE(events.empty());
    allow_and_close(group, events);
    EXPECT_EQ(child.wait(), std::optional<int>(0));
  }
  {
    Child child(group.fd(), watchdog, [&] { return open_file(file.c_str(), O_RDONLY); });
    auto events = take(group, 1);
    ASSERT_EQ(events.size(), 1u) << "modified: asked again";
    EXPECT_EQ(events[0].pid, child.pid());
    allow_and_close(group, events);
    EXPECT_EQ(child.wait(), std::optional<int>(0));
  }
}

TEST_F(FanotifyPermission, PreAccessCarriesTheRange) {
  OPEN_PERMISSION_GROUP_OR_SKIP(group);
  if (!group.capabilities().pre_access) {
    GTEST_SKIP() << "this kernel has no FAN_PRE_ACCESS";
  }
  const std::string file = dir_ + "/file";
  write_file(file, std::string(10000, 'a'));
  ASSERT_TRUE(group.add_mark(dir_, MarkScope::directory, FAN_ACCESS_PERM | kPreAccess).ok());
  Watchdog watchdog(group.fd());

  Child child(group.fd(), watchdog, [&] { return open_and_read(file.c_str()); });
  // Each read gives FAN_PRE_ACCESS then FAN_ACCESS_PERM; answer as they come.
  std::vector<PermissionEvent> seen;
  while (seen.size() < 2) {
    auto events = take(group, 1);
    if (events.empty()) break;
    for (auto& event : events) {
      EXPECT_TRUE(group.respond(event.fd, true).ok());
      ::close(event.fd);
      seen.push_back(event);
    }
  }
  EXPECT_EQ(child.wait(), std::optional<int>(0));
  ASSERT_FALSE(seen.empty());
  if (seen[0].mask == FAN_ACCESS_PERM) {
    GTEST_SKIP() << "this filesystem gives no pre-content events";
  }
  EXPECT_EQ(seen[0].mask, kPreAccess);
  ASSERT_TRUE(seen[0].range_offset.has_value());
  ASSERT_TRUE(seen[0].range_count.has_value());
  EXPECT_EQ(*seen[0].range_offset, 0u);
  EXPECT_GE(*seen[0].range_count, 100u);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].mask, uint64_t{FAN_ACCESS_PERM});
  EXPECT_FALSE(seen[1].range_offset.has_value());
}

TEST_F(FanotifyPermission, RemoveMarkStopsEvents) {
  OPEN_PERMISSION_GROUP_OR_SKIP(group);
  const std::string file = dir_ + "/file";
  write_file(file, "content");
  ASSERT_TRUE(group.add_mark(dir_, MarkScope::directory, FAN_OPEN_PERM).ok());
  ASSERT_TRUE(group.remove_mark(dir_, MarkScope::directory, FAN_OPEN_PERM).ok());
  EXPECT_EQ(group.remove_mark(dir_, MarkScope::directory, FAN_OPEN_PERM),
            Status(STATUS_OBJECT_NAME_NOT_FOUND))
      << "no such mark any more";
  Watchdog watchdog(group.fd());

  Child child(group.fd(), watchdog, [&] { return open_file(file.c_str(), O_RDONLY); });
  EXPECT_EQ(child.wait(), std::optional<int>(0));
  auto events = take(group, 1, kQuiet);
  EXPECT_TRUE(events.empty());
  allow_and_close(group, events);
}

TEST_F(FanotifyPermission, RespondToUnknownFdFails) {
  OPEN_PERMISSION_GROUP_OR_SKIP(group);
  const int some_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(some_fd, 0);
  EXPECT_FALSE(group.respond(some_fd, true).ok());
  EXPECT_FALSE(group.respond(some_fd, false, EIO).ok());
  EXPECT_FALSE(group.respond(-1, false).ok());
  EXPECT_GE(::fcntl(some_fd, F_GETFD), 0) << "respond never closes the fd";
  ::close(some_fd);
  EXPECT_FALSE(group.ignore_until_modified(-1, FAN_OPEN_PERM).ok());
}

TEST_F(FanotifyPermission, FilesystemAndMountMarksOnOwnTmpfs) {
  OPEN_PERMISSION_GROUP_OR_SKIP(group);
  const std::string fs = mount_tmpfs();
  if (fs.empty()) {
    GTEST_SKIP() << "cannot mount a tmpfs here: " << std::strerror(errno);
  }
  const std::string file = fs + "/file";
  write_file(file, "content");

  {
    // tmpfs takes no pre-content marks: what it does take is marked.
    ASSERT_TRUE(group.add_mark(fs, MarkScope::filesystem, FAN_OPEN_PERM | FAN_ACCESS_PERM | kPreAccess).ok());
    Watchdog watchdog(group.fd());
    Child child(group.fd(), watchdog, [&] { return open_file(file.c_str(), O_RDONLY); });
    auto events = take(group, 1);
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].mask, uint64_t{FAN_OPEN_PERM});
    EXPECT_EQ(fd_path(events[0].fd), file);
    allow_and_close(group, events);
    EXPECT_EQ(child.wait(), std::optional<int>(0));
    ASSERT_TRUE(group.flush_marks().ok());
  }
  {
    // Pre-access alone with the opens, as a filter of opens and reads asks: tmpfs's reads come as
    // FAN_ACCESS_PERM rather than not at all.
    ASSERT_TRUE(group.add_mark(fs, MarkScope::filesystem, FAN_OPEN_PERM | kPreAccess).ok());
    Watchdog watchdog(group.fd());
    Child child(group.fd(), watchdog, [&] {
      const int fd = ::open(file.c_str(), O_RDONLY);
      if (fd < 0) return errno;
      char byte;
      const int result = ::read(fd, &byte, 1) == 1 ? 0 : errno;
      ::close(fd);
      return result;
    });
    auto events = take(group, 1);
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].mask, uint64_t{FAN_OPEN_PERM});
    allow_and_close(group, events);
    events = take(group, 1);
    ASSERT_EQ(events.size(), 1u) << "the read was not asked about";
    EXPECT_EQ(events[0].mask, uint64_t{FAN_ACCESS_PERM});
    allow_and_close(group, events);
    EXPECT_EQ(child.wait(), std::optional<int>(0));
    ASSERT_TRUE(group.flush_marks().ok());
  }
  {
    ASSERT_TRUE(group.add_mark(fs, MarkScope::mount, FAN_OPEN_PERM).ok());
    Watchdog watchdog(group.fd());
    Child child(group.fd(), watchdog, [&] { return open_file(file.c_str(), O_RDONLY); });
    auto events = take(group, 1);
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].pid, child.pid());
    allow_and_close(group, events);
    EXPECT_EQ(child.wait(), std::optional<int>(0));
    ASSERT_TRUE(group.flush_marks().ok());
  }
  {
    Watchdog watchdog(group.fd());
    Child child(group.fd(), watchdog, [&] { return open_file(file.c_str(), O_RDONLY); });
    EXPECT_EQ(child.wait(), std::optional<int>(0)) << "flushed: no mark left";
    auto events = take(group, 1, kQuiet);
    EXPECT_TRUE(events.empty());
    allow_and_close(group, events);
  }
}

// ---- notifications ----

std::optional<NotificationGroup> open_notification_group() {
  auto group = NotificationGroup::open();
  if (!group.ok()) {
    if (!skip_status(group.status())) ADD_FAILURE() << group.status().to_string();
    return std::nullopt;
  }
  return std::move(group).value();
}

#define OPEN_NOTIFICATION_GROUP_OR_SKIP(name)                                 \
  auto name##_opened = open_notification_group();                             \
  if (HasFailure()) return;                                                   \
  if (!name##_opened) {                                                       \
    GTEST_SKIP() << "fanotify_init refused (EPERM/ENOSYS): no fanotify here"; \
  }                                                                           \
  NotificationGroup& name = *name##_opened

constexpr uint64_t kNotifyMask = FAN_CREATE | FAN_CLOSE_WRITE | FAN_DELETE | FAN_RENAME | FAN_ATTRIB;

// Waits until `done(events)` or kEventWait.
std::vector<Notification> notifications_until(
    NotificationGroup& group, const std::function<bool(const std::vector<Notification>&)>& done) {
  std::vector<Notification> events;
  const auto deadline = Clock::now() + kEventWait;
  while (!done(events) && Clock::now() < deadline) {
    pollfd pfd{group.fd(), POLLIN, 0};
    if (::poll(&pfd, 1, 50) <= 0) continue;
    const Status status = group.read_events(events);
    EXPECT_TRUE(status.ok()) << status.to_string();
  }
  return events;
}

const Notification* find(const std::vector<Notification>& events, uint64_t bit, const std::string& path) {
  for (const auto& event : events) {
    if ((event.mask & bit) != 0 && event.path == path) return &event;
  }
  return nullptr;
}

std::string describe(const std::vector<Notification>& events) {
  std::string text;
  for (const auto& event : events) {
    char mask[32];
    std::snprintf(mask, sizeof mask, "0x%llx", static_cast<unsigned long long>(event.mask));
    text += std::string("\n  ") + mask + " " + event.path +
            (event.old_path.empty() ? "" : " from " + event.old_path);
  }
  return text;
}

TEST_F(FanotifyNotification, ReportsEntryAndContentChanges) {
  OPEN_NOTIFICATION_GROUP_OR_SKIP(group);
  EXPECT_EQ(group.overflows(), 0u);
  ASSERT_TRUE(group.add_mark(dir_, MarkScope::directory, kNotifyMask).ok());

  const std::string a = dir_ + "/a", b = dir_ + "/b", sub = dir_ + "/sub";
  write_file(a, "hello");
  ASSERT_EQ(::chmod(a.c_str(), 0600), 0);
  ASSERT_EQ(::rename(a.c_str(), b.c_str()), 0);
  ASSERT_EQ(::mkdir(sub.c_str(), 0755), 0);
  ASSERT_EQ(::unlink(b.c_str()), 0);

  const auto events = notifications_until(group, [&](const auto& seen) {
    return find(seen, FAN_DELETE, b) != nullptr && find(seen, FAN_CREATE, sub) != nullptr;
  });
  SCOPED_TRACE(describe(events));
  const Notification* created = find(events, FAN_CREATE, a);
  ASSERT_NE(created, nullptr);
  EXPECT_EQ(created->pid, ::getpid());
  EXPECT_FALSE(created->is_directory);
  EXPECT_NE(find(events, FAN_CLOSE_WRITE, a), nullptr);
  EXPECT_NE(find(events, FAN_ATTRIB, a), nullptr);
  const Notification* renamed = find(events, FAN_RENAME, b);
  ASSERT_NE(renamed, nullptr);
  EXPECT_EQ(renamed->old_path, a);
  const Notification* subdir = find(events, FAN_CREATE, sub);
  ASSERT_NE(subdir, nullptr);
  EXPECT_TRUE(subdir->is_directory);
  EXPECT_NE(subdir->mask & FAN_ONDIR, 0u);
  EXPECT_NE(find(events, FAN_DELETE, b), nullptr);
  EXPECT_EQ(group.overflows(), 0u);
}

TEST_F(FanotifyNotification, RemoveMarkStopsEvents) {
  OPEN_NOTIFICATION_GROUP_OR_SKIP(group);
  ASSERT_TRUE(group.add_mark(dir_, MarkScope::directory, kNotifyMask).ok());
  ASSERT_TRUE(group.remove_mark(dir_, MarkScope::directory, kNotifyMask).ok());
  write_file(dir_ + "/a", "hello");
  std::this_thread::sleep_for(kQuiet);
  std::vector<Notification> events;
  EXPECT_TRUE(group.read_events(events).ok());
  EXPECT_TRUE(events.empty()) << describe(events);
  EXPECT_EQ(group.add_mark(root_ + "/missing", MarkScope::directory, kNotifyMask),
            Status(STATUS_OBJECT_NAME_NOT_FOUND));
  EXPECT_EQ(group.add_mark(dir_, MarkScope::directory, FAN_OPEN_PERM), Status(STATUS_INVALID_PARAMETER));

  NotificationGroup moved(std::move(group));
  EXPECT_GE(moved.fd(), 0);
  EXPECT_EQ(group.fd(), -1);  // NOLINT(bugprone-use-after-move): the moved-from state is specified
}

// The kernel queues at most 16384 events per group; past that it queues one FAN_Q_OVERFLOW,
// which is counted. 17000 creations with distinct names (none merge) and nobody reading.
TEST_F(FanotifyNotification, QueueOverflowIsCounted) {
  OPEN_NOTIFICATION_GROUP_OR_SKIP(group);
  ASSERT_TRUE(group.add_mark(dir_, MarkScope::directory, FAN_CREATE).ok());
  for (int i = 0; i < 17000; ++i) {
    const int fd = ::open((dir_ + "/f" + std::to_string(i)).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    ::close(fd);
  }
  std::vector<Notification> events;
  for (int reads = 0; reads < 10000; ++reads) {
    const size_t before = events.size();
    ASSERT_TRUE(group.read_events(events).ok());
    if (events.size() == before && group.overflows() > 0) break;
  }
  EXPECT_EQ(group.overflows(), 1u);
  EXPECT_LT(events.size(), 17000u);
  EXPECT_GT(events.size(), 16000u);
}

// flush_marks (shutdown, fatal signals): no event after it; close() leaves an empty group.
TEST_F(FanotifyNotification, FlushMarksStopsEventsAndCloseEndsTheGroup) {
  OPEN_NOTIFICATION_GROUP_OR_SKIP(group);
  ASSERT_TRUE(group.add_mark(dir_, MarkScope::directory, kNotifyMask).ok());
  ASSERT_TRUE(group.flush_marks().ok());
  write_file(dir_ + "/a", "hello");
  std::this_thread::sleep_for(kQuiet);
  std::vector<Notification> events;
  EXPECT_TRUE(group.read_events(events).ok());
  EXPECT_TRUE(events.empty()) << describe(events);
  group.close();
  EXPECT_EQ(group.fd(), -1);
  EXPECT_EQ(group.flush_marks(), Status(STATUS_INVALID_HANDLE));
}

TEST_F(FanotifyNotification, FilesystemMarkOnOwnTmpfsNamesNestedPaths) {
  OPEN_NOTIFICATION_GROUP_OR_SKIP(group);
  const std::string fs = mount_tmpfs();
  if (fs.empty()) {
    GTEST_SKIP() << "cannot mount a tmpfs here: " << std::strerror(errno);
  }
  EXPECT_EQ(group.add_mark(fs, MarkScope::mount, FAN_CREATE), Status(STATUS_NOT_SUPPORTED))
      << "the kernel reports directory entries on inode and filesystem marks only";
  ASSERT_TRUE(group.add_mark(fs, MarkScope::filesystem, kNotifyMask).ok());

  const std::string one = fs + "/one", two = fs + "/one/two", file = fs + "/one/two/f", moved = fs + "/g";
  ASSERT_EQ(::mkdir(one.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(two.c_str(), 0755), 0);
  write_file(file, "x");
  ASSERT_EQ(::rename(file.c_str(), moved.c_str()), 0);

  const auto events =
      notifications_until(group, [&](const auto& seen) { return find(seen, FAN_RENAME, moved); });
  SCOPED_TRACE(describe(events));
  EXPECT_NE(find(events, FAN_CREATE, two), nullptr);
  EXPECT_NE(find(events, FAN_CLOSE_WRITE, file), nullptr);
  const Notification* renamed = find(events, FAN_RENAME, moved);
  ASSERT_NE(renamed, nullptr);
  EXPECT_EQ(renamed->old_path, file);

  // The group holds a descriptor on the tmpfs while it has marks there; the last removal lets go.
  ASSERT_TRUE(group.remove_mark(fs, MarkScope::filesystem, kNotifyMask).ok());
  EXPECT_EQ(::umount2(fs.c_str(), 0), 0) << std::strerror(errno);
  tmpfs_.clear();
}

}  // namespace
}  // namespace fltport::fanotify
