// The bounded content reader (src/fltmgr/content_reader.*): reads off the caller's thread, bounded
// in time and bytes; a stuck read (here: a pipe or a socket whose writer never writes) costs its
// caller the bound and then STATUS_IO_TIMEOUT, holds its own dup() of the fd, and the pool's cap and
// each device's share keep stuck reads from taking every thread.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.hpp"
#include "fltmgr/content_reader.hpp"

namespace fltport {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

long long ms_since(Clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - start).count();
}

MutableBytes bytes_of(std::string& text) {
  return {reinterpret_cast<std::byte*>(text.data()), text.size()};
}

// A pipe whose writer writes only when told: a read of it is stuck until then.
struct StuckPipe {
  int read_end = -1, write_end = -1;
  StuckPipe() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    read_end = fds[0];
    write_end = fds[1];
  }
  ~StuckPipe() {
    release();
    if (read_end >= 0) ::close(read_end);
  }
  void release() {  // the stuck read returns (end of file)
    if (write_end >= 0) ::close(write_end);
    write_end = -1;
  }
};

// A file with known contents on the test's file system.
struct TempFile {
  int fd = -1;
  explicit TempFile(const std::string& contents) {
    char path[] = "/tmp/fltport-content-reader-XXXXXX";
    fd = ::mkostemp(path, O_CLOEXEC);
    EXPECT_GE(fd, 0);
    ::unlink(path);
    EXPECT_EQ(::write(fd, contents.data(), contents.size()), static_cast<ssize_t>(contents.size()));
  }
  ~TempFile() {
    if (fd >= 0) ::close(fd);
  }
};

// POSIX_FADV_DONTNEED is advice: a page something else holds a reference to at that moment (on a
// busy machine, often) stays cached, and a read of it rightly comes from the cache. Asks until
// mincore() shows the file's first page gone, for up to a second.
bool drop_from_page_cache(int fd) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    if (::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0) return false;
    void* page = ::mmap(nullptr, 1, PROT_READ, MAP_SHARED, fd, 0);
    if (page == MAP_FAILED) return false;
    unsigned char resident = 1;
    const bool looked = ::mincore(page, 1, &resident) == 0;
    ::munmap(page, 1);
    if (looked && (resident & 1) == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// A bound long enough for a reader thread to start the read even under a sanitizer, so that the
// read times out running (stuck), not still queued.
constexpr milliseconds kStuckBound = 150ms;

// Waits (bounded) until no thread of `reader` is in a read whose caller gave up.
bool wait_unstuck(const ContentReader& reader, milliseconds timeout = 5s) {
  const auto until = Clock::now() + timeout;
  while (reader.statistics().stuck != 0 && Clock::now() < until) std::this_thread::sleep_for(5ms);
  return reader.statistics().stuck == 0;
}

TEST(ContentReader, ReadsAtMostTheBufferAndStopsAtEndOfFile) {
  ContentReader reader(4, 2);
  TempFile file("0123456789abcdef");
  std::string buffer(4, '.');
  auto read = reader.read(file.fd, 3, bytes_of(buffer), Clock::now() + 2s, "file");
  ASSERT_TRUE(read.ok()) << read.status().to_string();
  EXPECT_EQ(*read, 4u);
  EXPECT_EQ(buffer, "3456");

  std::string large(64, '.');
  read = reader.read(file.fd, 10, bytes_of(large), Clock::now() + 2s, "file");
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(*read, 6u);
  EXPECT_EQ(large.substr(0, 6), "abcdef");
  EXPECT_EQ(large[6], '.') << "wrote past what it read";

  read = reader.read(file.fd, 100, bytes_of(large), Clock::now() + 2s, "file");
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(*read, 0u);

  EXPECT_EQ(reader.read(-1, 0, bytes_of(large), Clock::now() + 2s, "none").status(),
            Status(STATUS_INVALID_HANDLE));
}

TEST(ContentReader, StuckReadReturnsIoTimeoutAtItsBound) {
  ContentReader reader(4, 2);
  StuckPipe pipe;
  std::string buffer(16, '.');
  const auto start = Clock::now();
  const auto read = reader.read(pipe.read_end, 0, bytes_of(buffer), start + 150ms, "pipe");
  const long long elapsed = ms_since(start);
  EXPECT_EQ(read.status(), Status(STATUS_IO_TIMEOUT));
  EXPECT_GE(elapsed, 150);
  EXPECT_LT(elapsed, 400) << "the caller waited past its bound";
  EXPECT_EQ(RtlNtStatusToDosError(STATUS_IO_TIMEOUT), static_cast<ULONG>(ERROR_SEM_TIMEOUT));
  auto stats = reader.statistics();
  EXPECT_EQ(stats.timeouts, 1u);
  EXPECT_EQ(stats.stuck, 1u);

  // The read stays with its thread; when it returns at last, the thread is free again and nothing
  // reaches the caller's buffer.
  pipe.release();
  ASSERT_TRUE(wait_unstuck(reader));
  EXPECT_EQ(buffer, std::string(16, '.'));
  TempFile file("after");
  const auto after = reader.read(file.fd, 0, bytes_of(buffer), Clock::now() + 2s, "file");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(buffer.substr(0, 5), "after");
}

TEST(ContentReader, StuckReadHoldsItsOwnDescriptorWhenTheNumberIsReused) {
  ContentReader reader(4, 2);
  auto* first = new StuckPipe();
  const int number = first->read_end;
  std::string buffer(8, '.');
  EXPECT_EQ(reader.read(number, 0, bytes_of(buffer), Clock::now() + kStuckBound, "first").status(),
            Status(STATUS_IO_TIMEOUT));
  EXPECT_EQ(reader.statistics().stuck, 1u);
  // The caller closes its fd (as fltmgr does when the event is answered) and the number is reused.
  ::close(first->read_end);
  first->read_end = -1;
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  const int second_read = fds[0], second_write = fds[1];
  EXPECT_EQ(second_read, number) << "the kernel did not reuse the number (the test still checks the data)";
  ASSERT_EQ(::write(second_write, "second", 6), 6);

  // The stuck read ends on its own pipe, not on the new one holding the same number.
  ASSERT_EQ(::write(first->write_end, "first", 5), 5);
  ASSERT_TRUE(wait_unstuck(reader));
  std::string second(6, '.');
  const auto read = reader.read(second_read, 0, bytes_of(second), Clock::now() + 2s, "second");
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(second.substr(0, *read), "second") << "the stuck read took the new pipe's data";
  EXPECT_EQ(buffer, std::string(8, '.'));
  delete first;
  ::close(second_read);
  ::close(second_write);
}

TEST(ContentReader, StalledDeviceRefusesAtOnceWhileOtherDevicesReadOn) {
  ContentReader reader(3, 2);  // 3 threads, at most 2 per device
  StuckPipe one, two, three;   // every pipe is on pipefs: one device
  std::string buffer(8, '.');
  for (StuckPipe* pipe : {&one, &two}) {
    EXPECT_EQ(reader.read(pipe->read_end, 0, bytes_of(buffer), Clock::now() + kStuckBound, "pipe").status(),
              Status(STATUS_IO_TIMEOUT));
  }
  ASSERT_EQ(reader.statistics().stuck, 2u);
  // The device's share is stuck: a third read there is refused at once.
  auto start = Clock::now();
  EXPECT_EQ(reader.read(three.read_end, 0, bytes_of(buffer), start + 2s, "pipe 3").status(),
            Status(STATUS_IO_TIMEOUT));
  EXPECT_LT(ms_since(start), 100) << "a read behind a stalled device's share waited out its bound";
  EXPECT_EQ(reader.statistics().refused, 1u);

  // Another device still has its thread.
  TempFile file("elsewhere");
  start = Clock::now();
  auto read = reader.read(file.fd, 0, bytes_of(buffer), start + 2s, "file");
  ASSERT_TRUE(read.ok()) << read.status().to_string();
  EXPECT_EQ(buffer, "elsewher");
  EXPECT_LT(ms_since(start), 100);

  // A third device takes the last thread; with every thread stalled, all reads are refused at once.
  int sockets[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets), 0);
  EXPECT_EQ(reader.read(sockets[0], 0, bytes_of(buffer), Clock::now() + kStuckBound, "socket").status(),
            Status(STATUS_IO_TIMEOUT));
  EXPECT_EQ(reader.statistics().threads, 3u) << "the pool went past its cap";
  EXPECT_EQ(reader.statistics().stuck, 3u);
  int waiting_sockets[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, waiting_sockets), 0);
  ASSERT_EQ(::write(waiting_sockets[1], "readable", 8), 8);
  start = Clock::now();
  EXPECT_EQ(reader.read(waiting_sockets[0], 0, bytes_of(buffer), start + 2s, "socket 2").status(),
            Status(STATUS_IO_TIMEOUT));
  EXPECT_LT(ms_since(start), 100);
  ::close(waiting_sockets[0]);
  ::close(waiting_sockets[1]);
  // Except where nothing can stall: a local file's cached pages are read on the caller's thread.
  if (page_cache_reads_cannot_stall(file.fd)) {
    buffer.assign(8, '.');
    read = reader.read(file.fd, 0, bytes_of(buffer), Clock::now() + 2s, "file");
    ASSERT_TRUE(read.ok()) << read.status().to_string();
    EXPECT_EQ(buffer, "elsewher");
  }

  // The devices recover: reads go on.
  one.release();
  two.release();
  ::close(sockets[1]);
  ASSERT_TRUE(wait_unstuck(reader));
  read = reader.read(file.fd, 0, bytes_of(buffer), Clock::now() + 2s, "file");
  EXPECT_TRUE(read.ok());
  EXPECT_LE(reader.statistics().threads, 3u);
  ::close(sockets[0]);
}

TEST(ContentReader, ReadWaitsInTheQueueForABusyThreadWithinItsBound) {
  ContentReader reader(1, 1);
  StuckPipe slow;
  std::string slow_buffer(4, '.');
  std::thread slow_reader(
      [&] { (void)reader.read(slow.read_end, 0, bytes_of(slow_buffer), Clock::now() + 2s, "slow"); });
  while (reader.statistics().threads == 0) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(20ms);
  std::thread writer([&] {
    std::this_thread::sleep_for(50ms);
    [[maybe_unused]] ssize_t written = ::write(slow.write_end, "done", 4);
  });
  StuckPipe queued;  // readable at once, but never from the page cache: it needs a thread
  ASSERT_EQ(::write(queued.write_end, "queued", 6), 6);
  std::string buffer(6, '.');
  const auto read = reader.read(queued.read_end, 0, bytes_of(buffer), Clock::now() + 2s, "queued");
  writer.join();
  slow_reader.join();
  ASSERT_TRUE(read.ok()) << read.status().to_string();
  EXPECT_EQ(buffer, "queued");
  EXPECT_EQ(slow_buffer, "done");
  EXPECT_EQ(reader.statistics().threads, 1u);
}

// A scan of a file just written (the common case) costs no hand-over to a reader thread and back;
// pages not in the cache still go to the pool, where a stalled device costs only the bound.
TEST(ContentReader, CachedPagesOfALocalFileAreReadOnTheCallersThread) {
  TempFile file("in the page cache");
  if (!page_cache_reads_cannot_stall(file.fd))
    GTEST_SKIP() << "/tmp is not a local file system fltport knows";
  ContentReader reader(2, 1);
  std::string buffer(6, '.');
  auto read = reader.read(file.fd, 3, bytes_of(buffer), Clock::now() + 2s, "cached");
  ASSERT_TRUE(read.ok()) << read.status().to_string();
  EXPECT_EQ(*read, 6u);
  EXPECT_EQ(buffer, "the pa");
  EXPECT_EQ(reader.statistics().from_page_cache, 1u);
  EXPECT_EQ(reader.statistics().threads, 0u) << "a cached read went to a reader thread";
  // At and past the end of the file: nothing to read, and nothing that could wait.
  read = reader.read(file.fd, 100, bytes_of(buffer), Clock::now() + 2s, "past the end");
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(*read, 0u);

  // Written out and dropped from the cache: the read needs the disk, so a reader thread does it.
  // (tmpfs pages are the file itself: they never leave.) But RWF_NOWAIT still starts the page's
  // readahead, and on a busy machine the read often finds it done already and reads it at once (8 %
  // of such reads in a standalone check run beside the test suite here; more in this test under
  // load, where ten tries on one open file could all go that way): a page-cache read, and a right one. So up
  // to ten tries, each on a fresh open file; the counts must add up whichever way each went, and the first
  // that goes to a thread ends the tries.
  struct statfs file_system {};
  ASSERT_EQ(::fstatfs(file.fd, &file_system), 0);
  if (file_system.f_type == TMPFS_MAGIC || file_system.f_type == RAMFS_MAGIC) return;
  ASSERT_EQ(::fdatasync(file.fd), 0);
  uint64_t uncached_reads = 0;
  auto thread_reads = [&reader] { return reader.statistics().reads - reader.statistics().from_page_cache; };
  for (int attempt = 0; attempt < 10 && thread_reads() == 0; ++attempt) {
    if (!drop_from_page_cache(file.fd)) {
      GTEST_SKIP() << "the kernel kept the page cached through every POSIX_FADV_DONTNEED";
    }
    const UniqueFd fresh(::open(("/proc/self/fd/" + std::to_string(file.fd)).c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fresh.valid());
    buffer.assign(6, '.');
    read = reader.read(fresh.fd(), 0, bytes_of(buffer), Clock::now() + 2s, "uncached");
    ASSERT_TRUE(read.ok()) << read.status().to_string();
    EXPECT_EQ(buffer, "in the");
    ++uncached_reads;
  }
  const auto stats = reader.statistics();
  EXPECT_EQ(stats.reads, 2 + uncached_reads);
  EXPECT_LE(stats.reads - stats.from_page_cache, 1u) << "only the last try may have gone to a thread";
  EXPECT_EQ(stats.threads, stats.reads - stats.from_page_cache) << "a thread read counted as cached, or "
                                                                   "a cached read that started a thread";
}

// The event's status stands in for an fstat when the read ends within the size it gives (a status
// that claims more than there is shows it is used); a read reaching past that size looks again, so
// that a file grown since the event is read as it is now. A status of something that is not a
// regular file sends the read to a reader thread as a fresh fstat would.
TEST(ContentReader, AKnownStatusStandsInForAnFstatWithinItsSize) {
  TempFile file("0123456789");
  if (!page_cache_reads_cannot_stall(file.fd))
    GTEST_SKIP() << "/tmp is not a local file system fltport knows";
  struct stat status {};
  ASSERT_EQ(::fstat(file.fd, &status), 0);
  ContentReader reader(2, 1);
  std::string buffer(4, '.');
  status.st_size = 100;
  auto read = reader.read(file.fd, 0, bytes_of(buffer), Clock::now() + 2s, "known", &status);
  ASSERT_TRUE(read.ok()) << read.status().to_string();
  EXPECT_EQ(*read, 4u);
  EXPECT_EQ(buffer, "0123");
  EXPECT_EQ(reader.statistics().from_page_cache, 1u);

  status.st_size = 4;  // the file as the event saw it; it has grown since
  buffer.assign(16, '.');
  read = reader.read(file.fd, 0, bytes_of(buffer), Clock::now() + 2s, "grown", &status);
  ASSERT_TRUE(read.ok()) << read.status().to_string();
  EXPECT_EQ(*read, 10u) << "the bytes written since the event were not read";
  EXPECT_EQ(buffer.substr(0, 10), "0123456789");

  status.st_size = 100;
  status.st_mode = S_IFIFO | 0600;
  buffer.assign(4, '.');
  read = reader.read(file.fd, 0, bytes_of(buffer), Clock::now() + 2s, "not a file", &status);
  ASSERT_TRUE(read.ok()) << read.status().to_string();
  EXPECT_EQ(buffer, "0123");
  EXPECT_EQ(reader.statistics().from_page_cache, 2u);
  EXPECT_EQ(reader.statistics().threads, 1u);
}

// A read past the size the event knew finds the end of the file where it is now, with no fstat
// when the page-cache read stops short of a page boundary, and through an fstat when it stops on
// one (where a page missing from the cache would stop it too).
TEST(ContentReader, AReadPastTheKnownSizeFindsTheEndWhereverItIs) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  for (const size_t size : {size_t{1}, page - 1, page, page + 1, 2 * page}) {
    std::string content(size, 'x');
    content.back() = 'E';
    TempFile file(content);
    if (!page_cache_reads_cannot_stall(file.fd))
      GTEST_SKIP() << "/tmp is not a local file system fltport knows";
    struct stat status {};
    ASSERT_EQ(::fstat(file.fd, &status), 0);
    status.st_size = 0;  // the event saw it empty: it was written since
    ContentReader reader(2, 1);
    std::string buffer(3 * page, '.');
    auto read = reader.read(file.fd, 0, bytes_of(buffer), Clock::now() + 2s, "grown", &status);
    ASSERT_TRUE(read.ok()) << read.status().to_string();
    EXPECT_EQ(*read, size) << "file of " << size << " bytes";
    EXPECT_EQ(buffer.substr(0, size), content);
    // From an offset inside the file, and from past its end.
    read = reader.read(file.fd, size - 1, bytes_of(buffer), Clock::now() + 2s, "tail", &status);
    ASSERT_TRUE(read.ok());
    EXPECT_EQ(*read, 1u);
    EXPECT_EQ(buffer[0], 'E');
    read = reader.read(file.fd, size + 5, bytes_of(buffer), Clock::now() + 2s, "past", &status);
    ASSERT_TRUE(read.ok());
    EXPECT_EQ(*read, 0u);
  }
}

TEST(ContentReader, EventReadIsBoundedByTheEventsDeadline) {
  StuckPipe pipe;
  FileEvent event;
  event.fd = pipe.read_end;
  event.path = "pipe";
  std::string buffer(4, '.');
  event.deadline = Clock::now() + 100ms;
  auto start = Clock::now();
  EXPECT_EQ(read_file_contents(event, 0, bytes_of(buffer)).status(), Status(STATUS_IO_TIMEOUT));
  EXPECT_GE(ms_since(start), 90);
  EXPECT_LT(ms_since(start), 400);
  // An explicit timeout never goes past the deadline; a deadline already past does not wait.
  start = Clock::now();
  EXPECT_EQ(read_file_contents(event, 0, bytes_of(buffer), 5s).status(), Status(STATUS_IO_TIMEOUT));
  EXPECT_LT(ms_since(start), 100);
  EXPECT_GE(content_read_statistics().timeouts, 1u);
  pipe.release();
  const auto until = Clock::now() + 5s;
  while (content_read_statistics().stuck != 0 && Clock::now() < until) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(content_read_statistics().stuck, 0u);
}

}  // namespace
}  // namespace fltport
