// Bounded content reads: a file's bytes read for a filter on a small pool of reader threads, so that
// a stalled device (a failing disk, a hung network or FUSE file system) costs the waiting caller its
// bound and nothing more: the caller gets STATUS_IO_TIMEOUT, the read stays with its thread (which
// holds its own dup() of the fd and its own buffer), and other events go on. fapolicyd #237.
#pragma once

#include <fltport/filter.hpp>

#include <sys/stat.h>
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace fltport {

// Whether fd is on a local memory or disk file system, whose cached pages a RWF_NOWAIT read returns
// without waiting on anyone. Elsewhere (FUSE, network file systems) even a read of cached pages may
// first ask a server whether they are still valid, so those reads always go to a reader thread.
bool page_cache_reads_cannot_stall(int fd);

class ContentReader {
 public:
  // At most `max_threads` reader threads; one device may hold at most `max_per_device` of them, so
  // that a stuck device leaves the others threads to read with.
  ContentReader(size_t max_threads, size_t max_per_device);
  // Threads stuck in a read keep what they need and end when their read returns.
  ~ContentReader();
  ContentReader(const ContentReader&) = delete;
  ContentReader& operator=(const ContentReader&) = delete;

  // The process's pool (kMaxContentReaders threads, half of them per device); never destroyed.
  static ContentReader& instance();

  // Up to min(buffer.size(), kMaxContentReadBytes) bytes of `fd` at `offset` (a non-seekable fd
  // from where it is), waiting no later than `until`; on the caller's thread when every byte is in
  // the page cache of a file system where that read cannot stall, else on a reader thread. STATUS_IO_TIMEOUT when the read has not
  // finished by then, or at once when every thread it could use is stuck in a read whose caller
  // gave up. `path` names the file in the log; `known`, when given, is fd's fstat (the event's),
  // used instead of a new one when the read ends within the size it gives.
  Result<size_t> read(int fd, uint64_t offset, MutableBytes buffer, std::chrono::steady_clock::time_point until,
                      const std::string& path, const struct stat* known = nullptr);

  ContentReadStatistics statistics() const noexcept;

  struct Job;
  struct Shared;

 private:
  Status refuse(std::unique_lock<std::mutex>& lock, const Job& job);
  std::shared_ptr<Shared> shared_;
};

}  // namespace fltport
