#include "fltmgr/content_reader.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "base/log.hpp"
#include "base/unique_fd.hpp"

namespace fltport {

namespace {
using Clock = std::chrono::steady_clock;
// An idle reader thread ends after this long without work; the pool grows again on demand.
constexpr std::chrono::seconds kIdleThreadLife{30};
// A read running this long counts as stalled: when every thread a waiting read could use holds
// one, that read gives up at once instead of waiting out its bound (a healthy disk answers in
// milliseconds; a queue of reads behind a stalled device would each cost their event the deadline).
constexpr std::chrono::milliseconds kStalledAfter{200};
// How often a queued read looks again whether the threads it waits for have stalled.
constexpr std::chrono::milliseconds kRecheck{25};

long long ms_between(Clock::time_point from, Clock::time_point to) {
  return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(to - from).count());
}

// page_cache_reads_cannot_stall, remembered per block device on each thread for a second: a statfs
// per read cost as much as the read. Not for anonymous devices (major 0: tmpfs, btrfs subvolumes,
// overlayfs, FUSE, NFS): their numbers are handed out and reused as file systems come and go, and
// overlayfs shows another file system's number on its files.
bool page_cache_reads_cannot_stall_on(int fd, dev_t device) {
  if (major(device) == 0) return page_cache_reads_cannot_stall(fd);
  struct Known {
    dev_t device = 0;
    bool cannot_stall = false;
    Clock::time_point until{};
  };
  constexpr std::chrono::seconds kKeepFileSystemType{1};
  thread_local std::array<Known, 4> known{};
  thread_local size_t next = 0;
  const auto now = Clock::now();
  for (const Known& entry : known) {
    if (entry.device == device && now < entry.until) return entry.cannot_stall;
  }
  const bool cannot_stall = page_cache_reads_cannot_stall(fd);
  known[next] = Known{device, cannot_stall, now + kKeepFileSystemType};
  next = (next + 1) % known.size();
  return cannot_stall;
}

// The read on the caller's thread when every byte asked for is in the page cache: no hand-over to a
// reader thread and back (two wake-ups, most of a scan's cost on a file just written). False when
// any page is not cached (RWF_NOWAIT: EAGAIN or a short read), or the file system is not known to
// answer cached reads without waiting. (RWF_NOWAIT starts readahead for a missing page and reads it
// if it came in time, which on a busy machine it often does: never a wait on the device.)
bool read_from_page_cache(int fd, const struct stat& file, uint64_t offset, MutableBytes buffer,
                          size_t& bytes) {
  if (!S_ISREG(file.st_mode) || !page_cache_reads_cannot_stall_on(fd, file.st_dev)) return false;
  const uint64_t size = file.st_size > 0 ? static_cast<uint64_t>(file.st_size) : 0;
  const size_t expected =
      static_cast<size_t>(std::min<uint64_t>(buffer.size(), offset < size ? size - offset : 0));
  if (expected == 0) {
    bytes = 0;
    return true;
  }
  iovec into{buffer.data(), expected};
  const ssize_t n = ::preadv2(fd, &into, 1, static_cast<off_t>(offset), RWF_NOWAIT);
  if (n != static_cast<ssize_t>(expected)) return false;
  bytes = expected;
  return true;
}

// A read from the page cache up to `buffer.size()` bytes, for a read that may reach the end of the
// file, which may have moved since the size the caller knew: the read itself says where it is,
// without an fstat. A short read that stops off a page boundary (or reads nothing) stopped at the
// end of the file; one that stops on a boundary may have met a page not cached: false then, as
// when the first is missing (EAGAIN) or the file system is not known to answer without waiting.
bool read_to_end_from_page_cache(int fd, dev_t device, uint64_t offset, MutableBytes buffer, size_t& bytes) {
  if (!page_cache_reads_cannot_stall_on(fd, device)) return false;
  iovec into{buffer.data(), buffer.size()};
  const ssize_t n = ::preadv2(fd, &into, 1, static_cast<off_t>(offset), RWF_NOWAIT);
  if (n < 0) return false;
  static const uint64_t page_size = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const auto read = static_cast<size_t>(n);
  if (read != buffer.size() && read != 0 && (offset + read) % page_size == 0) return false;
  bytes = read;
  return true;
}

// The file a log line names: the event's path, or its fd's when the event came without one (its
// filters take no paths). readlink reads no file system, so a stalled one does not hold it up.
std::string name_of(const std::string& path, int fd) {
  if (!path.empty() || fd < 0) return path;
  FileEvent event;
  event.fd = fd;
  return path_of(event);
}

Status status_for_errno(int error) {
  switch (error) {
    case EBADF:
      return STATUS_INVALID_HANDLE;
    case EISDIR:
    case EINVAL:
      return STATUS_INVALID_PARAMETER;
    case ENOMEM:
      return STATUS_NO_MEMORY;
    case EACCES:
    case EPERM:
      return STATUS_ACCESS_DENIED;
    default:
      return STATUS_UNSUCCESSFUL;
  }
}
}  // namespace

bool page_cache_reads_cannot_stall(int fd) {
  struct statfs file_system {};
  if (::fstatfs(fd, &file_system) != 0) return false;
  switch (static_cast<unsigned long>(file_system.f_type)) {
    case TMPFS_MAGIC:
    case RAMFS_MAGIC:
    case EXT4_SUPER_MAGIC:  // also ext2 and ext3
    case XFS_SUPER_MAGIC:
    case BTRFS_SUPER_MAGIC:
    case F2FS_SUPER_MAGIC:
      return true;
    default:
      return false;
  }
}

// One read. The fd and the buffer are the job's own, so that a read that outlives its caller
// touches nothing of the caller's: not its buffer, not its fd number (closed and reused since).
struct ContentReader::Job {
  UniqueFd fd;
  uint64_t offset = 0;
  dev_t device = 0;
  std::string path;
  std::vector<std::byte> data;
  Clock::time_point asked;
  // Under Shared::mutex:
  Clock::time_point started;  // running since
  enum class State { queued, running, done } state = State::queued;
  bool caller_gone = false;  // running, and its caller got STATUS_IO_TIMEOUT: the thread is stuck
  size_t bytes = 0;
  int error = 0;
  std::condition_variable finished;
};

struct ContentReader::Shared {
  struct Device {
    size_t busy = 0;  // threads reading on it
  };
  size_t max_threads = 0;
  size_t max_per_device = 0;
  mutable std::mutex mutex;
  std::condition_variable work;
  std::deque<std::shared_ptr<Job>> queue;
  std::map<dev_t, Device> devices;
  std::vector<std::shared_ptr<Job>> running;
  size_t threads = 0;
  size_t idle = 0;
  size_t stuck = 0;
  bool stopping = false;
  uint64_t reads = 0, from_page_cache = 0, timeouts = 0, refused = 0;

  size_t busy_on(dev_t device) const {
    const auto found = devices.find(device);
    return found == devices.end() ? 0 : found->second.busy;
  }
  bool runnable(const Job& job) const { return busy_on(job.device) < max_per_device; }
  size_t runnable_count() const {
    return static_cast<size_t>(
        std::count_if(queue.begin(), queue.end(), [this](const auto& job) { return runnable(*job); }));
  }
  static bool stalled(const Job& job, Clock::time_point now) {
    return job.caller_gone || now - job.started >= kStalledAfter;
  }
  // Every thread `job` could use holds a stalled read: its device's share, or the whole pool.
  bool blocked(const Job& job, Clock::time_point now) const {
    const auto all_stalled = [&](bool same_device_only) {
      return std::all_of(running.begin(), running.end(), [&](const auto& other) {
        return (same_device_only && other->device != job.device) || stalled(*other, now);
      });
    };
    const bool device_full = busy_on(job.device) >= max_per_device;
    const bool pool_full = running.size() >= max_threads;  // a thread not in a read will take it
    return (device_full && all_stalled(true)) || (pool_full && all_stalled(false));
  }
  std::shared_ptr<Job> take_runnable() {
    const auto found =
        std::find_if(queue.begin(), queue.end(), [this](const auto& job) { return runnable(*job); });
    if (found == queue.end()) return nullptr;
    std::shared_ptr<Job> job = std::move(*found);
    queue.erase(found);
    return job;
  }
};

namespace {

void read_into(ContentReader::Job& job) {
  size_t have = 0;
  bool seekable = true;
  while (have < job.data.size()) {
    std::byte* at = job.data.data() + have;
    const size_t want = job.data.size() - have;
    ssize_t n = seekable ? ::pread(job.fd.fd(), at, want, static_cast<off_t>(job.offset + have)) : -1;
    if (seekable && n < 0 && errno == ESPIPE) seekable = false;
    if (!seekable) n = ::read(job.fd.fd(), at, want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      if (have == 0) job.error = errno;
      break;
    }
    if (n == 0) break;
    have += static_cast<size_t>(n);
    if (!seekable) break;  // a pipe or a socket: what is there now
  }
  job.bytes = have;
}

void reader_thread(std::shared_ptr<ContentReader::Shared> shared) noexcept {
  std::unique_lock lock(shared->mutex);
  for (;;) {
    if (shared->stopping) break;
    std::shared_ptr<ContentReader::Job> job = shared->take_runnable();
    if (!job) {
      ++shared->idle;
      const bool woken = shared->work.wait_for(lock, kIdleThreadLife) == std::cv_status::no_timeout;
      --shared->idle;
      if (!woken && shared->runnable_count() == 0) break;
      continue;
    }
    ++shared->devices[job->device].busy;
    job->state = ContentReader::Job::State::running;
    job->started = Clock::now();
    shared->running.push_back(job);
    lock.unlock();
    read_into(*job);  // may never return: the thread then stays here, harmless, with its own fd
    lock.lock();
    shared->running.erase(std::find(shared->running.begin(), shared->running.end(), job));
    const auto device = shared->devices.find(job->device);
    --device->second.busy;
    const bool caller_gone = job->caller_gone;
    if (caller_gone) {
      --shared->stuck;
    } else {
      job->state = ContentReader::Job::State::done;
      job->finished.notify_one();
    }
    if (device->second.busy == 0) shared->devices.erase(device);
    // A read of this device may have waited for this thread: let idle threads look again.
    if (shared->idle > 0 && !shared->queue.empty()) shared->work.notify_all();
    lock.unlock();
    if (caller_gone) {
      FLTPORT_LOG_LIMITED(info, "fltmgr",
                          "content read of %s returned after %lld ms, after its caller gave up",
                          name_of(job->path, job->fd.fd()).c_str(), ms_between(job->asked, Clock::now()));
    }
    job.reset();  // the fd's close, outside the lock (a FUSE close sends a flush)
    lock.lock();
  }
  --shared->threads;
}

}  // namespace

ContentReader::ContentReader(size_t max_threads, size_t max_per_device)
    : shared_(std::make_shared<Shared>()) {
  shared_->max_threads = std::max<size_t>(max_threads, 1);
  shared_->max_per_device = std::clamp<size_t>(max_per_device, 1, shared_->max_threads);
}

ContentReader::~ContentReader() {
  std::lock_guard lock(shared_->mutex);
  shared_->stopping = true;
  shared_->work.notify_all();
}

ContentReader& ContentReader::instance() {
  // Never destroyed: reader threads stuck in a read at exit must find it there.
  static ContentReader* const reader = new ContentReader(kMaxContentReaders, kMaxContentReaders / 2);
  return *reader;
}

Result<size_t> ContentReader::read(int fd, uint64_t offset, MutableBytes buffer, Clock::time_point until,
                                   const std::string& path, const struct stat* known) {
  const auto asked = Clock::now();
  const auto count_read = [this](bool from_page_cache) {
    std::lock_guard lock(shared_->mutex);
    ++shared_->reads;
    if (from_page_cache) ++shared_->from_page_cache;
  };
  if (fd < 0) {
    count_read(false);
    return Status(STATUS_INVALID_HANDLE);
  }
  const size_t length = std::min(buffer.size(), kMaxContentReadBytes);
  // fstat reads the inode the open already loaded; the read is what may stall. The event's status
  // saves it when the read ends within the size it knew. A read that reaches that end reads the
  // file as it is now (it may have grown since), whichever path reads: from the page cache, which
  // tells where the file ends, else after an fstat.
  struct stat file {};
  const auto known_size = known != nullptr && known->st_size > 0 ? static_cast<uint64_t>(known->st_size) : 0;
  if (length != 0 && known != nullptr && offset <= known_size && length <= known_size - offset) {
    file = *known;
  } else if (size_t bytes = 0;
             length != 0 && known != nullptr && S_ISREG(known->st_mode) &&
             read_to_end_from_page_cache(fd, known->st_dev, offset, buffer.first(length), bytes)) {
    count_read(true);
    return bytes;
  } else if (length != 0 && ::fstat(fd, &file) != 0) {
    count_read(false);
    return status_for_errno(errno);
  }
  size_t cached_bytes = 0;
  const bool cached =
      length != 0 && read_from_page_cache(fd, file, offset, buffer.first(length), cached_bytes);
  count_read(cached);
  if (length == 0) return size_t{0};
  if (cached) return cached_bytes;
  if (S_ISDIR(file.st_mode)) return Status(STATUS_INVALID_PARAMETER);
  auto job = std::make_shared<Job>();
  job->fd = UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!job->fd.valid()) {
    return errno == EMFILE || errno == ENFILE ? Status(STATUS_INSUFFICIENT_RESOURCES)
                                              : status_for_errno(errno);
  }
  job->offset = offset;
  job->device = file.st_dev;
  job->path = path;
  job->asked = asked;
  job->data.resize(length);

  std::unique_lock lock(shared_->mutex);
  if (shared_->stopping) return Status(STATUS_THREAD_IS_TERMINATING);
  // Refused at once when every thread the read could use holds a stalled read: waiting would cost
  // its caller the whole bound for nothing.
  if (shared_->blocked(*job, Clock::now())) return refuse(lock, *job);
  shared_->queue.push_back(job);
  const size_t runnable = shared_->runnable_count();
  if (shared_->idle > 0) shared_->work.notify_all();
  if (runnable > shared_->idle && shared_->threads < shared_->max_threads) {
    ++shared_->threads;
    try {
      std::thread(reader_thread, shared_).detach();
    } catch (...) {
      --shared_->threads;
      FLTPORT_LOG(error, "fltmgr", "could not start a content reader thread");
      if (shared_->threads == 0) {
        shared_->queue.erase(std::find(shared_->queue.begin(), shared_->queue.end(), job));
        return Status(STATUS_INSUFFICIENT_RESOURCES);
      }
    }
  }
  for (;;) {
    if (job->state == Job::State::done) break;
    const auto now = Clock::now();
    if (now >= until) break;
    if (job->state == Job::State::queued && shared_->blocked(*job, now)) {
      shared_->queue.erase(std::find(shared_->queue.begin(), shared_->queue.end(), job));
      return refuse(lock, *job);
    }
    job->finished.wait_until(lock, std::min(until, now + kRecheck));
  }
  if (job->state == Job::State::done) {
    lock.unlock();
    if (job->bytes == 0 && job->error != 0) return status_for_errno(job->error);
    std::copy_n(job->data.begin(), job->bytes, buffer.begin());
    return job->bytes;
  }
  ++shared_->timeouts;
  const bool running = job->state == Job::State::running;
  if (running) {
    job->caller_gone = true;  // the thread keeps the job, its fd and its buffer
    ++shared_->stuck;
  } else {
    shared_->queue.erase(std::find(shared_->queue.begin(), shared_->queue.end(), job));
  }
  lock.unlock();
  FLTPORT_LOG_LIMITED(warning, "fltmgr",
                      "content read of %s (%zu bytes at %llu) not done within %lld ms: STATUS_IO_TIMEOUT%s",
                      name_of(path, fd).c_str(), length, static_cast<unsigned long long>(offset),
                      ms_between(asked, until),
                      running ? "; its reader thread stays with it" : " (it waited for a reader thread)");
  return Status(STATUS_IO_TIMEOUT);
}

Status ContentReader::refuse(std::unique_lock<std::mutex>& lock, const Job& job) {
  ++shared_->timeouts;
  ++shared_->refused;
  const size_t running = shared_->running.size();
  lock.unlock();
  FLTPORT_LOG_LIMITED(
      warning, "fltmgr",
      "content read of %s refused with STATUS_IO_TIMEOUT: every reader thread it could use is in a stalled "
      "read (%zu reads running)",
      name_of(job.path, job.fd.fd()).c_str(), running);
  return STATUS_IO_TIMEOUT;
}

ContentReadStatistics ContentReader::statistics() const noexcept {
  std::lock_guard lock(shared_->mutex);
  ContentReadStatistics stats;
  stats.reads = shared_->reads;
  stats.from_page_cache = shared_->from_page_cache;
  stats.timeouts = shared_->timeouts;
  stats.refused = shared_->refused;
  stats.stuck = shared_->stuck;
  stats.threads = shared_->threads;
  return stats;
}

// ---- the public functions ----

namespace {
// A pre-operation's read gives up this long after the event's deadline, so that the deadline thread
// has answered with the filter's default by then: a stalled read always means the default, never a
// race between it and whatever the filter does on STATUS_IO_TIMEOUT.
constexpr std::chrono::milliseconds kPastDeadline{50};

const struct stat* known_status(const FileEvent& event) {
  return event.file_status.st_mode != 0 ? &event.file_status : nullptr;
}
}  // namespace

Result<size_t> read_file_contents(const FileEvent& event, uint64_t offset, MutableBytes buffer) {
  const auto until = event.deadline != Clock::time_point{} ? event.deadline + kPastDeadline
                                                           : Clock::now() + kDefaultContentReadTimeout;
  return ContentReader::instance().read(event.fd, offset, buffer, until, event.path, known_status(event));
}

Result<size_t> read_file_contents(const FileEvent& event, uint64_t offset, MutableBytes buffer,
                                  std::chrono::milliseconds timeout) {
  auto until = Clock::now() + timeout;
  if (event.deadline != Clock::time_point{}) until = std::min(until, event.deadline + kPastDeadline);
  return ContentReader::instance().read(event.fd, offset, buffer, until, event.path, known_status(event));
}

ContentReadStatistics content_read_statistics() noexcept {
  return ContentReader::instance().statistics();
}

}  // namespace fltport
