// The filter manager on real fanotify, as root. Every test marks only a directory it created,
// answers every event (the manager's deadline guarantees it), and runs under a watchdog: if the
// test process hangs, SIGALRM ends it, and the kernel drops its groups so blocked opens go on.
#include <gtest/gtest.h>
#include <fltport/filter.hpp>

#include <fcntl.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/proc_info.hpp"

namespace fltport {
namespace {

using namespace std::chrono_literals;

// Opens `path` read-only in a child process (this process's own accesses are exempt) and returns
// 0 when the open succeeded or the errno it failed with. The child is bounded by its own alarm.
int open_in_child(const std::string& path, int flags = O_RDONLY) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return -1;
  const pid_t child = ::fork();
  if (child == 0) {
    ::alarm(20);
    const int fd = ::open(path.c_str(), flags);
    const int result = fd >= 0 ? 0 : errno;
    if (fd >= 0) ::close(fd);
    [[maybe_unused]] ssize_t written = ::write(pipe_fds[1], &result, sizeof result);
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  int result = -1;
  if (::read(pipe_fds[0], &result, sizeof result) != sizeof result) result = -1;
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  return result;
}

void write_file(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::trunc) << content;
}

// Runs `path` (with no arguments) in a child process and returns 0 when the exec succeeded and the
// program exited 0, the errno the exec failed with, or -1.
int exec_in_child(const std::string& path) {
  const pid_t child = ::fork();
  if (child == 0) {
    ::alarm(20);
    ::execl(path.c_str(), path.c_str(), static_cast<char*>(nullptr));
    ::_exit(100 + errno);
  }
  int status = 0;
  if (::waitpid(child, &status, 0) != child || !WIFEXITED(status)) return -1;
  const int code = WEXITSTATUS(status);
  return code >= 100 ? code - 100 : (code == 0 ? 0 : -1);
}

// Up to `count` bytes from the start of the event's file, read through the event (nullopt: the
// read failed).
std::optional<std::string> first_bytes(const FileEvent& event, size_t count) {
  std::string buffer(count, '.');
  auto read = read_file_contents(event, 0, {reinterpret_cast<std::byte*>(buffer.data()), buffer.size()});
  if (!read) return std::nullopt;
  return buffer.substr(0, *read);
}

class FilterManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::alarm(60);  // watchdog: a hung test dies, and with it its fanotify groups
    char pattern[] = "/tmp/fltport-fm-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    directory_ = pattern;
    auto manager = FilterManager::create();
    if (!manager) {
      GTEST_SKIP()
          << "fanotify is not available here (" << manager.status().to_string()
          << "): the filter manager needs CAP_SYS_ADMIN and a kernel with fanotify permission events";
    }
    manager_ = std::move(*manager);
  }
  void TearDown() override {
    manager_.reset();  // answers what is left, removes marks, closes the groups
    std::error_code ignored;
    std::filesystem::remove_all(directory_, ignored);
    for (const auto& other : others_) std::filesystem::remove_all(other, ignored);
    ::alarm(0);
  }

  FilterRegistration filter(const std::string& name, uint32_t altitude, PreOperationCallback pre) {
    FilterRegistration registration;
    registration.name = name;
    registration.altitude = altitude;
    registration.operations = static_cast<uint32_t>(Operation::open);
    registration.pre_operation = std::move(pre);
    return registration;
  }

  // A directory of the test's own beside directory_ (removed at the end); "" if none could be made.
  std::string other_directory() {
    char pattern[] = "/tmp/fltport-fm-other-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) return {};
    others_.emplace_back(pattern);
    return others_.back();
  }

  // Counts its calls in `calls` and allows, asking for the verdict to be cached.
  FilterRegistration clean_and_cached(const std::string& name, std::atomic<int>& calls) {
    return filter(name, 100, [&calls](const FileEvent&, PendingOperation&) {
      ++calls;
      return PreResult::now(Verdict::allow(true));
    });
  }

  FilterRegistration deny_all() {
    return filter("deny-all", 100,
                  [](const FileEvent&, PendingOperation&) { return PreResult::now(Verdict::deny()); });
  }

  std::string directory_;
  std::vector<std::string> others_;
  std::unique_ptr<FilterManager> manager_;
};

TEST_F(FilterManagerTest, DenyReachesTheOpeningProcessAndAllowLetsItOpen) {
  write_file(directory_ + "/clean.txt", "hello");
  write_file(directory_ + "/bad.txt", "foul");
  std::atomic<int> flagged_as_open{0};
  ASSERT_TRUE(manager_
                  ->register_filter(filter("judge", 100,
                                           [&](const FileEvent& event, PendingOperation&) {
                                             if ((event.kernel_flags & FAN_OPEN_PERM) != 0 &&
                                                 (event.kernel_flags & FAN_ONDIR) == 0 && event.pid > 0) {
                                               ++flagged_as_open;
                                             }
                                             const bool bad = event.path.find("bad") != std::string::npos;
                                             return PreResult::now(bad ? Verdict::deny(EACCES)
                                                                       : Verdict::allow());
                                           }))
                  .ok());
  ASSERT_TRUE(manager_->attach("judge", directory_).ok());
  EXPECT_EQ(open_in_child(directory_ + "/clean.txt"), 0);
  const int denied = open_in_child(directory_ + "/bad.txt");
  EXPECT_TRUE(denied == EACCES || denied == EPERM) << "errno " << denied;
  EXPECT_EQ(flagged_as_open.load(), 2) << "each event carries the kernel's flags (FAN_OPEN_PERM)";
  auto stats = manager_->statistics("judge");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->allowed, 1u);
  EXPECT_EQ(stats->denied, 1u);
  EXPECT_EQ(stats->defaults_taken, 0u);
  const auto instances = manager_->instances();
  ASSERT_EQ(instances.size(), 1u);
  EXPECT_EQ(instances[0].events, 2u) << "per-instance statistics";
  EXPECT_EQ(instances[0].allowed, 1u);
  EXPECT_EQ(instances[0].denied, 1u);
  uint64_t timed = 0;
  for (size_t i = 0; i < instances[0].latency_us_log2.size(); ++i) {
    timed += instances[0].latency_us_log2[i];
    EXPECT_EQ(instances[0].latency_us_log2[i], stats->latency_us_log2[i])
        << "one instance: its histogram is its filter's (bucket " << i << ")";
  }
  EXPECT_EQ(timed, 2u) << "each verdict has its latency in the instance's histogram";
}

// The host's fstat of the event's file comes with the event, so that neither the filter nor the
// content read asks the kernel again: it is the file's (inode, size, type), and reading through it
// gives the file's bytes.
TEST_F(FilterManagerTest, AnEventCarriesItsFilesStatusAndReadsWithIt) {
  const std::string path = directory_ + "/seven.txt";
  write_file(path, "7 bytes");
  struct stat expected {};
  ASSERT_EQ(::stat(path.c_str(), &expected), 0);
  std::mutex mutex;
  struct stat seen {};
  std::string contents;
  ASSERT_TRUE(manager_
                  ->register_filter(filter("status", 100,
                                           [&](const FileEvent& event, PendingOperation&) {
                                             auto read = first_bytes(event, 16);
                                             std::lock_guard lock(mutex);
                                             seen = event.file_status;
                                             if (read) contents = *read;
                                             return PreResult::now(Verdict::allow());
                                           }))
                  .ok());
  ASSERT_TRUE(manager_->attach("status", directory_).ok());
  EXPECT_EQ(open_in_child(path), 0);
  std::lock_guard lock(mutex);
  EXPECT_EQ(seen.st_ino, expected.st_ino);
  EXPECT_EQ(seen.st_dev, expected.st_dev);
  EXPECT_EQ(seen.st_size, 7);
  EXPECT_TRUE(S_ISREG(seen.st_mode));
  EXPECT_EQ(contents, "7 bytes");
}

// A filter that reads the file (a scanner) leaves its access time as it was: the event's fd is
// opened O_NOATIME, as a Windows scanner leaves the last access time. The access time is set old
// enough (before today, after the modification) for relatime to update it on any other read.
TEST_F(FilterManagerTest, ReadingThroughTheEventLeavesTheAccessTime) {
  const std::string path = directory_ + "/old.txt";
  write_file(path, "read me");
  const timespec times[2] = {{1609459200, 0}, {1577836800, 0}};  // atime 2021-01-01, mtime 2020-01-01
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0) << std::strerror(errno);
  std::atomic<bool> read_it{false};
  ASSERT_TRUE(manager_
                  ->register_filter(filter("reader", 100,
                                           [&](const FileEvent& event, PendingOperation&) {
                                             if (first_bytes(event, 16) == "read me") read_it = true;
                                             return PreResult::now(Verdict::allow());
                                           }))
                  .ok());
  ASSERT_TRUE(manager_->attach("reader", directory_).ok());
  EXPECT_EQ(open_in_child(path), 0);
  EXPECT_TRUE(read_it.load()) << "the filter did not read the file";
  struct stat after {};
  ASSERT_EQ(::stat(path.c_str(), &after), 0);
  EXPECT_EQ(after.st_atim.tv_sec, times[0].tv_sec) << "the filter's read changed the access time";
}

// The deadline thread is the one with a better nice value (-10, fltmgr's kDeadlineThreadNice);
// its context switches (voluntary and not) count its wake-ups. 0 when it is not found.
pid_t deadline_thread() {
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    const auto thread = static_cast<pid_t>(std::stoi(entry.path().filename().string()));
    const auto fields = test::thread_stat_fields(thread);
    if (fields.size() > 16 && fields[16] == "-10") return thread;
  }
  return 0;
}

long long context_switches(pid_t thread) {
  std::ifstream status("/proc/self/task/" + std::to_string(thread) + "/status");
  long long total = 0;
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("voluntary_ctxt_switches:", 0) == 0 || line.rfind("nonvoluntary_ctxt_switches:", 0) == 0)
      total += std::stoll(line.substr(line.find(':') + 1));
  }
  return total;
}

// Answered events leave the deadline thread alone: it wakes to watch the reading (every 5 ms while
// events wait) and for deadlines that are due, not once per answered event when its deadline
// passes. 400 opens 1 ms apart with a 20 ms deadline: each event's deadline passes during the run.
TEST_F(FilterManagerTest, TheDeadlineThreadDoesNotWakeForAnsweredEvents) {
  for (int i = 0; i < 400; ++i) write_file(directory_ + "/f" + std::to_string(i), "x");
  auto registration = filter(
      "quick", 100, [](const FileEvent&, PendingOperation&) { return PreResult::now(Verdict::allow()); });
  registration.deadline = std::chrono::milliseconds(20);
  ASSERT_TRUE(manager_->register_filter(std::move(registration)).ok());
  ASSERT_TRUE(manager_->attach("quick", directory_).ok());
  EXPECT_EQ(open_in_child(directory_ + "/f0"), 0);  // the threads exist once an event came
  const pid_t thread = deadline_thread();
  if (thread == 0) GTEST_SKIP() << "no thread with the deadline thread's nice value (not root?)";
  const long long before = context_switches(thread);
  const auto start = std::chrono::steady_clock::now();
  const pid_t child = ::fork();
  if (child == 0) {
    ::alarm(30);
    for (int i = 1; i < 400; ++i) {
      const int fd = ::open((directory_ + "/f" + std::to_string(i)).c_str(), O_RDONLY);
      if (fd < 0) ::_exit(1);
      ::close(fd);
      ::usleep(1000);
    }
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const long long elapsed_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
  const long long wakes = context_switches(thread) - before;
  // At most two per 5 ms watch (its tick, and the first event after the queue emptied), and some
  // slack; waking per answered event would be 400 more.
  EXPECT_LE(wakes, 2 * elapsed_ms / 5 + 40) << "in " << elapsed_ms << " ms";
  std::printf("[ measured ] deadline thread: %lld wake-ups in %lld ms for 399 events\n", wakes, elapsed_ms);
}

TEST_F(FilterManagerTest, PendingVerdictCompletedFromAnotherThread) {
  write_file(directory_ + "/later.txt", "x");
  std::mutex mutex;
  std::vector<std::thread> completers;
  ASSERT_TRUE(manager_
                  ->register_filter(filter("async", 100,
                                           [&](const FileEvent&, PendingOperation& pending) {
                                             std::lock_guard lock(mutex);
                                             completers.emplace_back(
                                                 [operation = std::move(pending)]() mutable {
                                                   std::this_thread::sleep_for(20ms);
                                                   operation.complete(Verdict::deny(EPERM));
                                                 });
                                             return PreResult::later();
                                           }))
                  .ok());
  ASSERT_TRUE(manager_->attach("async", directory_).ok());
  EXPECT_EQ(open_in_child(directory_ + "/later.txt"), EPERM);
  std::lock_guard lock(mutex);
  for (auto& t : completers) t.join();
  EXPECT_EQ(manager_->statistics("async")->defaults_taken, 0u);
}

TEST_F(FilterManagerTest, HigherAltitudeIsCalledFirstAndTheFirstDenyWins) {
  write_file(directory_ + "/file.txt", "x");
  std::mutex mutex;
  std::vector<std::string> calls;
  auto recorder = [&](std::string name, bool deny) {
    return [&, name, deny](const FileEvent&, PendingOperation&) {
      std::lock_guard lock(mutex);
      calls.push_back(name);
      return PreResult::now(deny ? Verdict::deny() : Verdict::allow());
    };
  };
  ASSERT_TRUE(manager_->register_filter(filter("low", 100, recorder("low", false))).ok());
  ASSERT_TRUE(manager_->register_filter(filter("high", 300, recorder("high", false))).ok());
  ASSERT_TRUE(manager_->register_filter(filter("middle", 200, recorder("middle", true))).ok());
  for (const char* name : {"low", "high", "middle"}) ASSERT_TRUE(manager_->attach(name, directory_).ok());
  EXPECT_EQ(open_in_child(directory_ + "/file.txt"), EPERM);
  std::lock_guard lock(mutex);
  EXPECT_EQ(calls, (std::vector<std::string>{"high", "middle"})) << "low must not be asked after a deny";
}

TEST_F(FilterManagerTest, CleanVerdictIsCachedUntilTheFileIsWritten) {
  const std::string path = directory_ + "/cached.txt";
  write_file(path, "clean");
  std::atomic<int> scans{0};
  ASSERT_TRUE(manager_->register_filter(clean_and_cached("scanner", scans)).ok());
  ASSERT_TRUE(manager_->attach("scanner", directory_).ok());
  EXPECT_EQ(open_in_child(path), 0);
  EXPECT_EQ(open_in_child(path), 0);
  EXPECT_EQ(open_in_child(path), 0);
  EXPECT_EQ(scans.load(), 1) << "a file scanned clean is not scanned again while unchanged";
  write_file(path, "changed");  // this process is exempt: the write makes no event but drops the cache
  EXPECT_EQ(open_in_child(path), 0);
  EXPECT_EQ(scans.load(), 2) << "a written file is scanned again";
}

// A filter that asks for credentials gets the process's effective uid and gid, also for one that
// changed them. (Such a process is not dumpable, and its /proc files are root's; /proc/PID itself,
// which the host stats, keeps the effective ids: the kernel's rule for that directory.)
TEST_F(FilterManagerTest, AnEventCarriesTheEffectiveIdsOfAProcessThatChangedThem) {
  if (::geteuid() != 0) GTEST_SKIP() << "switching to another uid needs root";
  const std::string path = directory_ + "/readable.txt";
  write_file(path, "x");
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  ASSERT_EQ(::chmod(directory_.c_str(), 0755), 0);
  std::mutex mutex;
  std::vector<std::pair<uid_t, gid_t>> seen;
  auto registration = filter("ids", 100, [&](const FileEvent& event, PendingOperation&) {
    std::lock_guard lock(mutex);
    seen.emplace_back(event.uid, event.gid);
    return PreResult::now(Verdict::allow());
  });
  registration.want_credentials = true;
  ASSERT_TRUE(manager_->register_filter(std::move(registration)).ok());
  ASSERT_TRUE(manager_->attach("ids", directory_).ok());
  const pid_t child = ::fork();
  if (child == 0) {
    ::alarm(20);
    if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
        ::setresuid(65534, 65534, 65534) != 0)
      ::_exit(2);
    const int fd = ::open(path.c_str(), O_RDONLY);
    ::_exit(fd >= 0 ? 0 : 3);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  std::lock_guard lock(mutex);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].first, 65534u) << "uid";
  EXPECT_EQ(seen[0].second, 65534u) << "gid";
}

// A verdict is cached for the chain that gave it: a filter attached later is asked about a file
// already cached (the kernel's ignore marks and the host's entries are dropped at an attach),
// and an open's clean verdict does not answer an exec, which other filters may watch.
TEST_F(FilterManagerTest, ACachedVerdictDoesNotAnswerForAFilterAttachedLaterOrAnotherOperation) {
  const std::string path = directory_ + "/cached.txt";
  write_file(path, "clean");
  std::atomic<int> scans{0};
  ASSERT_TRUE(manager_->register_filter(clean_and_cached("scanner", scans)).ok());
  ASSERT_TRUE(manager_->attach("scanner", directory_).ok());
  EXPECT_EQ(open_in_child(path), 0);
  EXPECT_EQ(open_in_child(path), 0);
  ASSERT_EQ(scans.load(), 1) << "cached";
  ASSERT_TRUE(manager_->register_filter(deny_all()).ok());
  ASSERT_TRUE(manager_->attach("deny-all", directory_).ok());
  const int denied = open_in_child(path);
  EXPECT_TRUE(denied == EPERM || denied == EACCES) << "the filter attached later was not asked: " << denied;
  EXPECT_EQ(scans.load(), 2) << "the first filter is asked again too (its cache was dropped)";
  ASSERT_TRUE(manager_->detach("deny-all", directory_).ok());

  // An executable scanned clean on open, then run: the exec filter is asked.
  const std::string program = directory_ + "/true";
  ASSERT_TRUE(std::filesystem::copy_file("/bin/true", program));
  std::atomic<int> exec_checks{0};
  auto exec_watch = filter("exec-watch", 50, [&](const FileEvent&, PendingOperation&) {
    ++exec_checks;
    return PreResult::now(Verdict::allow(true));
  });
  exec_watch.operations = static_cast<uint32_t>(Operation::open_exec);
  ASSERT_TRUE(manager_->register_filter(std::move(exec_watch)).ok());
  ASSERT_TRUE(manager_->attach("exec-watch", directory_).ok());
  EXPECT_EQ(open_in_child(program), 0);
  EXPECT_EQ(open_in_child(program), 0);
  EXPECT_EQ(exec_checks.load(), 0);
  const int ran = exec_in_child(program);
  if (ran == EACCES && exec_checks.load() == 0) GTEST_SKIP() << directory_ << " is on a noexec mount";
  EXPECT_EQ(ran, 0);
  EXPECT_EQ(exec_checks.load(), 1) << "an open's clean verdict answered the exec";
}

// A write through an fd opened earlier, while the filter decides, makes no event and comes before
// the ignore mark is there to be dropped: the verdict (about the file as it was) must not be
// cached for the file as it is now.
TEST_F(FilterManagerTest, AFileWrittenWhileItsVerdictIsMadeIsScannedAgainOnItsNextOpen) {
  const std::string path = directory_ + "/racy.txt";
  write_file(path, "clean");
  const int writer = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  ASSERT_GE(writer, 0) << std::strerror(errno);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{writer};
  std::atomic<int> scans{0};
  std::atomic<bool> wrote{false};
  ASSERT_TRUE(manager_
                  ->register_filter(filter("scanner", 100,
                                           [&](const FileEvent&, PendingOperation&) {
                                             if (++scans == 1) wrote = ::write(writer, " foul", 5) == 5;
                                             return PreResult::now(Verdict::allow(true));
                                           }))
                  .ok());
  ASSERT_TRUE(manager_->attach("scanner", directory_).ok());
  EXPECT_EQ(open_in_child(path), 0);
  ASSERT_TRUE(wrote.load());
  EXPECT_EQ(open_in_child(path), 0);
  EXPECT_EQ(scans.load(), 2) << "the file changed while its first verdict was made: its next open is scanned";
  EXPECT_EQ(open_in_child(path), 0);
  EXPECT_EQ(scans.load(), 2) << "the second verdict, about an unchanged file, is cached";
}

TEST_F(FilterManagerTest, AFilterThatNeverAnswersTakesItsDefaultAtTheDeadline) {
  write_file(directory_ + "/stuck.txt", "x");
  std::vector<PendingOperation> never_completed;
  std::mutex mutex;
  auto registration = filter("stuck", 100, [&](const FileEvent&, PendingOperation& pending) {
    std::lock_guard lock(mutex);
    never_completed.push_back(std::move(pending));
    return PreResult::later();
  });
  registration.deadline = 300ms;
  registration.default_decision = Decision::deny;
  ASSERT_TRUE(manager_->register_filter(std::move(registration)).ok());
  ASSERT_TRUE(manager_->attach("stuck", directory_).ok());
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(open_in_child(directory_ + "/stuck.txt"), EPERM);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 300ms + 500ms) << "the deadline must hold within a margin";
  EXPECT_EQ(manager_->statistics("stuck")->defaults_taken, 1u);
  std::lock_guard lock(mutex);
  ASSERT_EQ(never_completed.size(), 1u);
  EXPECT_FALSE(never_completed[0].complete(Verdict::allow())) << "a verdict after the deadline is refused";
}

// A callback that returns after its deadline: the default answered and is what the statistics
// count; the late verdict is neither answered nor counted (allowed + denied = events, one latency).
TEST_F(FilterManagerTest, AVerdictReturnedAfterTheDeadlineIsNotCountedBesideTheDefault) {
  write_file(directory_ + "/late.txt", "x");
  std::atomic<bool> returned{false};
  auto registration = filter("late", 100, [&](const FileEvent&, PendingOperation&) {
    std::this_thread::sleep_for(600ms);
    returned = true;
    return PreResult::now(Verdict::allow());
  });
  registration.deadline = 200ms;
  registration.default_decision = Decision::deny;
  ASSERT_TRUE(manager_->register_filter(std::move(registration)).ok());
  ASSERT_TRUE(manager_->attach("late", directory_).ok());
  EXPECT_EQ(open_in_child(directory_ + "/late.txt"), EPERM) << "the default (deny) answers at the deadline";
  for (int i = 0; i < 200 && !returned; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(returned.load());
  std::this_thread::sleep_for(50ms);  // the late verdict has been handed back
  auto stats = manager_->statistics("late");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->events, 1u);
  EXPECT_EQ(stats->defaults_taken, 1u);
  EXPECT_EQ(stats->denied, 1u) << "the default's verdict";
  EXPECT_EQ(stats->allowed, 0u) << "the late verdict is not counted";
  uint64_t timed = 0;
  for (const uint64_t count : stats->latency_us_log2) timed += count;
  EXPECT_EQ(timed, 1u) << "one latency per event";
  const auto instances = manager_->instances();
  ASSERT_EQ(instances.size(), 1u);
  EXPECT_EQ(instances[0].allowed + instances[0].denied, instances[0].events);
}

TEST_F(FilterManagerTest, FilesOutsideTheInstanceAndOperationsNobodyWantsAreNotFiltered) {
  char other[] = "/tmp/fltport-fm-other-XXXXXX";
  ASSERT_NE(::mkdtemp(other), nullptr);
  write_file(std::string(other) + "/free.txt", "x");
  write_file(directory_ + "/watched.txt", "x");
  std::atomic<int> calls{0};
  ASSERT_TRUE(manager_
                  ->register_filter(filter("deny-all", 100,
                                           [&](const FileEvent&, PendingOperation&) {
                                             ++calls;
                                             return PreResult::now(Verdict::deny());
                                           }))
                  .ok());
  ASSERT_TRUE(manager_->attach("deny-all", directory_).ok());
  EXPECT_EQ(open_in_child(std::string(other) + "/free.txt"), 0);
  EXPECT_EQ(calls.load(), 0);
  EXPECT_EQ(open_in_child(directory_ + "/watched.txt"), EPERM);
  EXPECT_EQ(calls.load(), 1);
  ASSERT_TRUE(manager_->detach("deny-all", directory_).ok());
  EXPECT_EQ(open_in_child(directory_ + "/watched.txt"), 0) << "detached: no mark left";
  std::filesystem::remove_all(other);
}

TEST_F(FilterManagerTest, SubdirectoriesOfATreeAreCoveredIncludingNewOnes) {
  std::filesystem::create_directories(directory_ + "/a/b");
  write_file(directory_ + "/a/b/deep.txt", "x");
  ASSERT_TRUE(manager_->register_filter(deny_all()).ok());
  ASSERT_TRUE(manager_->attach("deny-all", directory_).ok());
  EXPECT_EQ(open_in_child(directory_ + "/a/b/deep.txt"), EPERM);
  // A directory created after attaching: made by a child, since this process is exempt.
  const pid_t child = ::fork();
  if (child == 0) {
    ::mkdir((directory_ + "/new").c_str(), 0755);
    ::_exit(0);
  }
  ::waitpid(child, nullptr, 0);
  write_file(directory_ + "/new/later.txt", "x");
  int result = 0;
  for (int attempt = 0; attempt < 50 && result == 0; ++attempt) {
    result = open_in_child(directory_ + "/new/later.txt");
    if (result == 0) std::this_thread::sleep_for(20ms);  // the create notification is asynchronous
  }
  EXPECT_EQ(result, EPERM);
}

// Runs `action` in a child process: this process's own accesses and notifications are exempt.
void in_child(const std::function<void()>& action) {
  const pid_t child = ::fork();
  if (child == 0) {
    ::alarm(20);
    action();
    ::_exit(0);
  }
  ::waitpid(child, nullptr, 0);
}

// Opens `path` in a child until the open ends with `expected` (0 or an errno), at most ~2 s: what a
// notification changes (marks on new or moved directories) comes asynchronously.
int open_until(const std::string& path, int expected) {
  int result = open_in_child(path);
  for (int attempt = 0; attempt < 100 && result != expected; ++attempt) {
    std::this_thread::sleep_for(20ms);
    result = open_in_child(path);
  }
  return result;
}

TEST_F(FilterManagerTest, ThePathIsReadOnlyForFiltersThatWantIt) {
  write_file(directory_ + "/named.txt", "x");
  const std::string expected = std::filesystem::canonical(directory_ + "/named.txt").string();
  std::mutex mutex;
  std::vector<std::pair<std::string, std::string>> seen;  // event.path, path_of(event)
  auto recorder = [&](const FileEvent& event, PendingOperation&) {
    std::lock_guard lock(mutex);
    seen.emplace_back(event.path, path_of(event));
    return PreResult::now(Verdict::allow());
  };
  auto quiet = filter("quiet", 100, recorder);
  quiet.want_path = false;
  ASSERT_TRUE(manager_->register_filter(std::move(quiet)).ok());
  ASSERT_TRUE(manager_->attach("quiet", directory_).ok());
  EXPECT_EQ(open_in_child(directory_ + "/named.txt"), 0);
  {
    std::lock_guard lock(mutex);
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].first, "") << "no filter of the event asked for its path";
    EXPECT_EQ(seen[0].second, expected) << "path_of names the file from its fd";
    seen.clear();
  }
  // With a filter that wants it, the event carries it, for every filter of the chain.
  ASSERT_TRUE(manager_->register_filter(filter("naming", 200, recorder)).ok());
  ASSERT_TRUE(manager_->attach("naming", directory_).ok());
  EXPECT_EQ(open_in_child(directory_ + "/named.txt"), 0);
  std::lock_guard lock(mutex);
  ASSERT_EQ(seen.size(), 2u);
  for (const auto& [path, named] : seen) {
    EXPECT_EQ(path, expected);
    EXPECT_EQ(named, expected);
  }
}

TEST_F(FilterManagerTest, InstancesOnTwoTreesEachSeeOnlyTheirOwn) {
  const std::string other = other_directory();
  ASSERT_FALSE(other.empty());
  write_file(directory_ + "/mine.txt", "x");
  write_file(other + "/theirs.txt", "x");
  std::mutex mutex;
  std::vector<std::string> calls;
  auto recorder = [&](std::string name) {
    return [&, name](const FileEvent& event, PendingOperation&) {
      std::lock_guard lock(mutex);
      calls.push_back(name + ":" + std::filesystem::path(path_of(event)).filename().string());
      return PreResult::now(Verdict::allow());
    };
  };
  // Neither wants paths: the host still finds which tree an event came from.
  for (const char* name : {"first", "second"}) {
    auto registration = filter(name, 100, recorder(name));
    registration.want_path = false;
    ASSERT_TRUE(manager_->register_filter(std::move(registration)).ok());
  }
  ASSERT_TRUE(manager_->attach("first", directory_).ok());
  ASSERT_TRUE(manager_->attach("second", other).ok());
  EXPECT_EQ(open_in_child(directory_ + "/mine.txt"), 0);
  EXPECT_EQ(open_in_child(other + "/theirs.txt"), 0);
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(calls, (std::vector<std::string>{"first:mine.txt", "second:theirs.txt"}));
  }
}

// The tree's walk stops reading a directory once its link count's subdirectories are found (where
// the file system counts them): every directory is still found, wherever it comes among files.
TEST_F(FilterManagerTest, EveryDirectoryOfATreeIsFilteredWhereverItComesAmongFiles) {
  std::vector<std::string> leaves;
  for (const char* branch : {"/wide", "/wide/late", "/wide/late/er", "/narrow", "/narrow/a/b/c/d"}) {
    std::filesystem::create_directories(directory_ + branch);
    for (int i = 0; i < 50; ++i) write_file(directory_ + branch + "/f" + std::to_string(i), "x");
    leaves.push_back(directory_ + branch + "/f49");
  }
  std::filesystem::create_directories(directory_ + "/wide/zz-last");  // made after the files
  leaves.push_back(directory_ + "/wide/zz-last/file.txt");
  write_file(leaves.back(), "x");
  // A link to a directory of the test's own (never to a system one: a walk through it would mark it).
  const std::string linked = other_directory();
  ASSERT_FALSE(linked.empty());
  write_file(linked + "/file.txt", "x");
  ASSERT_EQ(::symlink(linked.c_str(), (directory_ + "/wide/link").c_str()), 0);
  ASSERT_TRUE(manager_->register_filter(deny_all()).ok());
  ASSERT_TRUE(manager_->attach("deny-all", directory_).ok());
  for (const auto& leaf : leaves) EXPECT_EQ(open_in_child(leaf), EPERM) << leaf;
  // A tree moved in is walked the same way.
  const std::string outside = other_directory();
  ASSERT_FALSE(outside.empty());
  std::filesystem::create_directories(outside + "/moved/x/y");
  for (int i = 0; i < 50; ++i) write_file(outside + "/moved/x/f" + std::to_string(i), "x");
  std::filesystem::create_directories(outside + "/moved/x/z");
  write_file(outside + "/moved/x/z/file.txt", "x");
  write_file(outside + "/moved/x/y/file.txt", "x");
  in_child([&] { ::rename((outside + "/moved").c_str(), (directory_ + "/moved").c_str()); });
  EXPECT_EQ(open_until(directory_ + "/moved/x/z/file.txt", EPERM), EPERM);
  EXPECT_EQ(open_until(directory_ + "/moved/x/y/file.txt", EPERM), EPERM);
  EXPECT_EQ(open_in_child(directory_ + "/wide/link/file.txt"), 0) << "the walk does not follow symlinks";
}

TEST_F(FilterManagerTest, ADirectoryMovedOutOfTheTreeIsNoLongerFiltered) {
  const std::string outside = other_directory();
  ASSERT_FALSE(outside.empty());
  std::filesystem::create_directories(directory_ + "/leaving/deeper");
  write_file(directory_ + "/leaving/deeper/file.txt", "x");
  auto pathless = deny_all();
  pathless.want_path = false;
  ASSERT_TRUE(manager_->register_filter(std::move(pathless)).ok());
  ASSERT_TRUE(manager_->attach("deny-all", directory_).ok());
  EXPECT_EQ(open_in_child(directory_ + "/leaving/deeper/file.txt"), EPERM);
  // Renamed within the tree first, by this process (exempt from filtering, not from being
  // followed): still covered, and known by its new name when it leaves.
  ASSERT_EQ(::rename((directory_ + "/leaving").c_str(), (directory_ + "/renamed").c_str()), 0);
  EXPECT_EQ(open_in_child(directory_ + "/renamed/deeper/file.txt"), EPERM);
  in_child([&] { ::rename((directory_ + "/renamed").c_str(), (outside + "/left").c_str()); });
  EXPECT_EQ(open_until(outside + "/left/deeper/file.txt", 0), 0)
      << "a directory moved out of the tree, and its subdirectories, lose their marks";
  // A directory moved back in is covered again.
  in_child([&] { ::rename((outside + "/left").c_str(), (directory_ + "/back").c_str()); });
  EXPECT_EQ(open_until(directory_ + "/back/deeper/file.txt", EPERM), EPERM);
}

// The open comes right after the move, before the host has read of it: its event, queued through
// marks still there, is matched by path, not shown to the tree's filter.
TEST_F(FilterManagerTest, AnOpenRightAfterItsDirectoryLeftTheTreeIsNotShownToTheFilter) {
  const std::string outside = other_directory();
  ASSERT_FALSE(outside.empty());
  auto pathless = deny_all();
  pathless.want_path = false;
  ASSERT_TRUE(manager_->register_filter(std::move(pathless)).ok());
  ASSERT_TRUE(manager_->attach("deny-all", directory_).ok());
  for (int round = 0; round < 20; ++round) {
    const std::string name = "/moving" + std::to_string(round);
    ASSERT_TRUE(std::filesystem::create_directory(directory_ + name));
    write_file(directory_ + name + "/file.txt", "x");
    const pid_t child = ::fork();
    if (child == 0) {
      ::alarm(20);
      if (::rename((directory_ + name).c_str(), (outside + name).c_str()) != 0) ::_exit(100);
      const int fd = ::open((outside + name + "/file.txt").c_str(), O_RDONLY);
      ::_exit(fd >= 0 ? 0 : errno);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "round " << round << ": the open just outside the tree was denied";
  }
}

TEST_F(FilterManagerTest, ATreeMovedInAndADirectoryMadeAgainUnderAnOldNameAreCovered) {
  const std::string outside = other_directory();
  ASSERT_FALSE(outside.empty());
  std::filesystem::create_directories(outside + "/tree/inner");
  write_file(outside + "/tree/inner/file.txt", "x");
  ASSERT_TRUE(manager_->register_filter(deny_all()).ok());
  ASSERT_TRUE(manager_->attach("deny-all", directory_).ok());
  in_child([&] { ::rename((outside + "/tree").c_str(), (directory_ + "/tree").c_str()); });
  EXPECT_EQ(open_until(directory_ + "/tree/inner/file.txt", EPERM), EPERM)
      << "the subdirectories of a tree moved in are marked too";
  // Deleted and made again: the name was marked once, the new directory must be too.
  in_child([&] {
    std::error_code ignored;
    std::filesystem::remove_all(directory_ + "/tree", ignored);
    ::mkdir((directory_ + "/tree").c_str(), 0755);
  });
  write_file(directory_ + "/tree/again.txt", "x");
  EXPECT_EQ(open_until(directory_ + "/tree/again.txt", EPERM), EPERM);
}

// Detaching one of two filters on a directory takes only its bits off the shared mark: the other
// filter's operations still apply to the directory's files (removing FAN_EVENT_ON_CHILD with the
// bits would have ended that).
TEST_F(FilterManagerTest, DetachingOneFilterLeavesTheOtherFilteringTheFiles) {
  write_file(directory_ + "/file.txt", "x");
  ASSERT_TRUE(manager_
                  ->register_filter(filter(
                      "deny-opens", 100,
                      [](const FileEvent&, PendingOperation&) { return PreResult::now(Verdict::deny()); }))
                  .ok());
  auto reads_too = filter(
      "allow-all", 200, [](const FileEvent&, PendingOperation&) { return PreResult::now(Verdict::allow()); });
  reads_too.operations = Operation::open | Operation::read;
  ASSERT_TRUE(manager_->register_filter(std::move(reads_too)).ok());
  ASSERT_TRUE(manager_->attach("deny-opens", directory_).ok());
  ASSERT_TRUE(manager_->attach("allow-all", directory_).ok());
  EXPECT_EQ(open_in_child(directory_ + "/file.txt"), EPERM);
  ASSERT_TRUE(manager_->detach("allow-all", directory_).ok());
  EXPECT_EQ(open_in_child(directory_ + "/file.txt"), EPERM)
      << "the remaining filter's opens went with the detach";
}

TEST_F(FilterManagerTest, PostOperationsReportCreateWriteRenameDelete) {
  std::mutex mutex;
  std::vector<std::string> seen;
  FilterRegistration registration;
  registration.name = "monitor";
  registration.operations =
      Operation::create | Operation::close_write | Operation::rename | Operation::remove;
  registration.post_operation = [&](const FileEvent& event) {
    std::lock_guard lock(mutex);
    const uint64_t expected_flag = event.operation == Operation::create        ? FAN_CREATE
                                   : event.operation == Operation::close_write ? FAN_CLOSE_WRITE
                                   : event.operation == Operation::rename      ? FAN_RENAME
                                                                               : FAN_DELETE;
    if ((event.kernel_flags & expected_flag) == 0) seen.push_back("missing kernel flag");
    seen.push_back(
        std::string(operation_name(event.operation)) + " " +
        std::filesystem::path(event.path).filename().string() +
        (event.old_path.empty() ? "" : " from " + std::filesystem::path(event.old_path).filename().string()));
  };
  ASSERT_TRUE(manager_->register_filter(std::move(registration)).ok());
  ASSERT_TRUE(manager_->attach("monitor", directory_).ok());
  const pid_t child = ::fork();
  if (child == 0) {
    const std::string a = directory_ + "/a.txt";
    const int fd = ::open(a.c_str(), O_CREAT | O_WRONLY, 0644);
    [[maybe_unused]] ssize_t w = ::write(fd, "x", 1);
    ::close(fd);
    ::rename(a.c_str(), (directory_ + "/b.txt").c_str());
    ::unlink((directory_ + "/b.txt").c_str());
    ::_exit(0);
  }
  ::waitpid(child, nullptr, 0);
  const std::vector<std::string> expected{"create a.txt", "close_write a.txt", "rename b.txt from a.txt",
                                          "delete b.txt"};
  for (int attempt = 0; attempt < 100; ++attempt) {
    {
      std::lock_guard lock(mutex);
      if (seen.size() >= expected.size()) break;
    }
    std::this_thread::sleep_for(10ms);
  }
  std::lock_guard lock(mutex);
  EXPECT_EQ(seen, expected);
}

TEST_F(FilterManagerTest, AFileMovedFromOneTreeToAnotherIsReportedToTheFiltersOfBoth) {
  const std::string other = other_directory();
  ASSERT_FALSE(other.empty());
  write_file(directory_ + "/a.txt", "x");
  std::mutex mutex;
  std::vector<std::string> seen;
  for (const char* name : {"left", "right"}) {
    FilterRegistration registration;
    registration.name = name;
    registration.operations = OperationSet{0} | Operation::rename;
    registration.post_operation = [&, name](const FileEvent& event) {
      std::lock_guard lock(mutex);
      seen.push_back(std::string(name) + ": " + std::filesystem::path(event.path).filename().string() +
                     " from " + std::filesystem::path(event.old_path).filename().string());
    };
    ASSERT_TRUE(manager_->register_filter(std::move(registration)).ok());
  }
  ASSERT_TRUE(manager_->attach("left", directory_).ok());
  ASSERT_TRUE(manager_->attach("right", other).ok());
  in_child([&] { ::rename((directory_ + "/a.txt").c_str(), (other + "/b.txt").c_str()); });
  for (int attempt = 0; attempt < 100; ++attempt) {
    {
      std::lock_guard lock(mutex);
      if (seen.size() >= 2) break;
    }
    std::this_thread::sleep_for(10ms);
  }
  std::this_thread::sleep_for(50ms);  // nothing more comes
  std::lock_guard lock(mutex);
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, (std::vector<std::string>{"left: b.txt from a.txt", "right: b.txt from a.txt"}))
      << "the tree the file left and the tree it entered each hear of the move, once";
}

}  // namespace
}  // namespace fltport

namespace fltport {
namespace {

// A callback that blocks (a filter waiting on a hung service) must not hold up other events: the
// worker running it hands the reading of events to another.
TEST_F(FilterManagerTest, ASlowCallbackDoesNotHoldUpOtherEvents) {
  write_file(directory_ + "/slow.txt", "x");
  write_file(directory_ + "/fast.txt", "x");
  ASSERT_TRUE(manager_
                  ->register_filter(filter("sometimes-slow", 100,
                                           [](const FileEvent& event, PendingOperation&) {
                                             if (event.path.find("slow") != std::string::npos) {
                                               std::this_thread::sleep_for(1500ms);
                                             }
                                             return PreResult::now(Verdict::allow());
                                           }))
                  .ok());
  ASSERT_TRUE(manager_->attach("sometimes-slow", directory_).ok());
  std::thread slow_open([&] { EXPECT_EQ(open_in_child(directory_ + "/slow.txt"), 0); });
  std::this_thread::sleep_for(100ms);  // the slow callback is running
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(open_in_child(directory_ + "/fast.txt"), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms) << "another event waited for a slow callback";
  slow_open.join();
}

}  // namespace
}  // namespace fltport
