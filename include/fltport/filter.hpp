// The C++ API of the filter manager: filters register callbacks for file operations, instances
// attach them to directories, mounts or filesystems, and every permission decision is answered
// before its deadline whatever the filters and their services do.
#pragma once

#include <fltport/result.hpp>

#include <sys/stat.h>
#include <sys/types.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace fltport {

// What a filter can watch. Pre-operations wait for a verdict; post-operations report what happened.
enum class Operation : uint32_t {
  open = 1u << 0,       // pre: FAN_OPEN_PERM
  open_exec = 1u << 1,  // pre: FAN_OPEN_EXEC_PERM
  // pre: FAN_PRE_ACCESS with the byte range where the kernel has it (it comes before writes,
  // truncates and mappings of the range too, and does not say which), else FAN_ACCESS_PERM (reads)
  read = 1u << 2,
  close_write = 1u << 3,  // post: FAN_CLOSE_WRITE
  create = 1u << 4,       // post: FAN_CREATE
  remove = 1u << 5,       // post: FAN_DELETE
  rename = 1u << 6,       // post: FAN_RENAME
  attribute = 1u << 7,    // post: FAN_ATTRIB
};
using OperationSet = uint32_t;
constexpr OperationSet operator|(Operation a, Operation b) noexcept {
  return static_cast<uint32_t>(a) | static_cast<uint32_t>(b);
}
constexpr OperationSet operator|(OperationSet a, Operation b) noexcept {
  return a | static_cast<uint32_t>(b);
}
constexpr bool contains(OperationSet set, Operation op) noexcept {
  return (set & static_cast<uint32_t>(op)) != 0;
}
inline constexpr OperationSet kPreOperations = static_cast<uint32_t>(Operation::open) |
                                               static_cast<uint32_t>(Operation::open_exec) |
                                               static_cast<uint32_t>(Operation::read);
const char* operation_name(Operation op) noexcept;

// What the filter is told about one operation.
struct FileEvent {
  Operation operation = Operation::open;
  pid_t pid = 0;
  // Of the process, at the time of the event, when the filter asked (want_credentials); else -1.
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  // Pre-operations: the file, opened by the kernel (O_NOATIME); reads through it make no events
  // and leave the access time.
  int fd = -1;
  // The file (for rename, its new path). Pre-operations: may be empty when none of the event's
  // filters wants paths (FilterRegistration::want_path); path_of() gives it then.
  std::string path;
  std::string old_path;    // rename only
  std::string executable;  // the process's executable, when the filter asked for it
  bool is_directory = false;
  // Pre-operations: fd's fstat when the event came (st_mode 0 when unknown), the version of the file
  // a cached verdict is about; read it here rather than ask the kernel again.
  struct stat file_status {};
  // The flags the kernel reports with the event: fanotify's mask bits (FAN_OPEN_PERM,
  // FAN_OPEN_EXEC_PERM, FAN_ACCESS_PERM, FAN_PRE_ACCESS, FAN_CLOSE_WRITE, FAN_CREATE, FAN_DELETE,
  // FAN_RENAME, FAN_ATTRIB, FAN_ONDIR). fanotify does not report the opener's own open flags.
  uint64_t kernel_flags = 0;
  std::optional<uint64_t> range_offset;  // read with pre-access: the bytes about to be read
  std::optional<uint64_t> range_count;
  // Pre-operations: when the default verdict will be taken (arrival + the smallest deadline of the
  // event's filters); read_file_contents waits no longer. Post-operations: none (time_point{}).
  std::chrono::steady_clock::time_point deadline{};
};

enum class Decision { allow, deny };

// A verdict: allow, or deny with the errno the process sees where the kernel lets us choose it
// (FAN_DENY_ERRNO; plain EPERM elsewhere). `cache` lets an allow stand for the file until it is
// modified (kernel ignore mark + user-space cache).
struct Verdict {
  Decision decision = Decision::allow;
  int error = 0;
  bool cache = false;
  static Verdict allow(bool cache = false) { return {Decision::allow, 0, cache}; }
  static Verdict deny(int error = 0) { return {Decision::deny, error, false}; }
};

// A pre-operation the filter chose to answer later (FltCompletePendedPreOperation in spirit).
// complete() may be called once, from any thread; a PendingOperation dropped without completing
// answers with the filter's default at once. The deadline holds either way.
class FLTPORT_API PendingOperation {
 public:
  PendingOperation() noexcept = default;
  PendingOperation(PendingOperation&&) noexcept;
  PendingOperation& operator=(PendingOperation&&) noexcept;
  PendingOperation(const PendingOperation&) = delete;
  PendingOperation& operator=(const PendingOperation&) = delete;
  ~PendingOperation();

  // False when the verdict came too late (the deadline already answered) or was given before.
  bool complete(const Verdict& verdict) noexcept;

  struct State;
  explicit PendingOperation(std::shared_ptr<State> state) noexcept : state_(std::move(state)) {}

 private:
  std::shared_ptr<State> state_;
};

// What a pre-operation callback returns: a verdict now, or pending (it took `pending` and will
// complete it).
struct PreResult {
  bool pending = false;
  Verdict verdict;
  static PreResult now(const Verdict& verdict) { return {false, verdict}; }
  static PreResult later() { return {true, {}}; }
};

using PreOperationCallback = std::function<PreResult(const FileEvent& event, PendingOperation& pending)>;
using PostOperationCallback = std::function<void(const FileEvent& event)>;

struct FilterRegistration {
  std::string name;
  uint32_t altitude = 0;  // higher altitudes are called first, as on Windows
  OperationSet operations = 0;
  PreOperationCallback pre_operation;
  PostOperationCallback post_operation;
  // Every permission event is answered by then, with `default_decision` if the filter has not.
  std::chrono::milliseconds deadline{3000};
  Decision default_decision = Decision::allow;
  bool want_executable = false;
  bool want_credentials = false;  // fill FileEvent::uid and gid (one stat of /proc/PID per event)
  // Fill FileEvent::path in pre-operations. A path costs a readlink of /proc/self/fd per event
  // (3-8 us here, a fifth of a scanned open): a filter that needs it only now and then (a log line)
  // says false and calls path_of().
  bool want_path = true;
};

// What an instance marks. Whatever the scope, it covers the files whose path, as the host sees it,
// is under the path it was attached by: attach a mount instance at its mount point. A filesystem
// mark also makes the kernel ask about the file system's other mounts (a bind mount elsewhere):
// those files are allowed at once, their paths being outside the instance.
enum class AttachScope { directory_tree, mount, filesystem };

// Buckets of the verdict latency histograms (FilterStatistics, InstanceInfo).
inline constexpr size_t kLatencyBuckets = 24;
using LatencyHistogram = std::array<uint64_t, kLatencyBuckets>;

// Counters of one filter. Latencies are from the event's arrival to its verdict.
struct FilterStatistics {
  uint64_t events = 0;
  uint64_t allowed = 0;
  uint64_t denied = 0;
  uint64_t defaults_taken = 0;  // answered by the deadline or a dropped PendingOperation
  uint64_t cache_hits = 0;
  uint64_t post_notifications = 0;
  // Powers of two of microseconds: bucket i counts verdicts in [2^i, 2^(i+1)) µs (bucket 0 from 0).
  LatencyHistogram latency_us_log2{};
};

struct InstanceInfo {
  std::string filter;
  std::string path;
  AttachScope scope = AttachScope::directory_tree;
  uint32_t altitude = 0;
  // What went through this instance: the events its filter was asked about under it.
  uint64_t events = 0;
  uint64_t allowed = 0;
  uint64_t denied = 0;
  uint64_t defaults_taken = 0;
  uint64_t post_notifications = 0;
  LatencyHistogram latency_us_log2{};  // as FilterStatistics', for this instance's verdicts
};

// The host's queues (fltmc host): what waits for verdicts, and what the kernel could not queue.
struct HostStatistics {
  uint64_t waiting = 0;        // permission events read and not answered yet
  uint64_t waiting_limit = 0;  // beyond it an event takes its filter's default at once (bounded memory, fds)
  uint64_t overload_defaults = 0;  // events answered so
  uint64_t kernel_queued = 0;      // permission events queued in the kernel, not read yet
  uint64_t post_operations_queued = 0;
  uint64_t post_operations_dropped = 0;  // over the queue's bound (slow post-operation callbacks)
  uint64_t permission_overflows = 0;     // FAN_Q_OVERFLOW: the kernel allowed events it could not queue
  uint64_t notification_overflows = 0;   // FAN_Q_OVERFLOW: notifications lost
};

struct FilterManagerOptions {
  // Processes whose accesses never reach filters (besides this process, always exempt).
  std::vector<pid_t> exempt_processes;
  // On a fatal signal (SIGSEGV, SIGBUS, SIGABRT, ...), flush the marks and close the groups before
  // the process dies or dumps core, so that no process (the core-dump helper included) waits on a
  // dying host; the signal then goes to the previous handler or its default action. Installs
  // process-wide handlers once; signals that are ignored are left alone.
  bool close_groups_on_fatal_signal = true;
};

// Bounded content reads (why: a stalled device under a scanned file must cost one event its
// default at its deadline, never the event threads or the host; fapolicyd #237). The read runs on a
// small pool of reader threads, each with its own dup() of the fd, never on the caller's thread; the
// caller waits until 50 ms past event.deadline (pre-operations: by then the event has taken its
// filter's default) or kDefaultContentReadTimeout (post-operations) and then gets
// STATUS_IO_TIMEOUT, while the read stays with its thread. At most buffer.size() bytes, and at
// most kMaxContentReadBytes per call; fewer only at end of file (0 there). A non-seekable fd
// (pipe, socket) is read from where it is. The pool has at most
// kMaxContentReaders threads and lets one device hold at most half of them: when every thread a
// read could use is in a stalled read (running for 200 ms, or given up by its caller), the read fails
// at once with STATUS_IO_TIMEOUT; otherwise it waits in the queue within its bound. See
// docs/architecture.md, "Bounded content reads".
inline constexpr std::chrono::milliseconds kDefaultContentReadTimeout{2000};
inline constexpr size_t kMaxContentReadBytes = 1u << 20;
inline constexpr size_t kMaxContentReaders = 8;
using MutableBytes = std::span<std::byte>;  // as in <fltport/port.hpp>
FLTPORT_API Result<size_t> read_file_contents(const FileEvent& event, uint64_t offset, MutableBytes buffer);
// The same with a bound of `timeout` from now, never later than the one above when the event has a deadline.
FLTPORT_API Result<size_t> read_file_contents(const FileEvent& event, uint64_t offset, MutableBytes buffer,
                                              std::chrono::milliseconds timeout);

// The event's path: FileEvent::path, or when the event came without one (no filter asked,
// FilterRegistration::want_path), the path of its fd now ("" when the kernel cannot name it).
FLTPORT_API std::string path_of(const FileEvent& event);

// The process's content reads since it started (all filters together).
struct ContentReadStatistics {
  uint64_t reads = 0;     // asked for
  uint64_t from_page_cache = 0;  // of those, read on the caller's thread: all in the page cache of a local file system
  uint64_t timeouts = 0;  // STATUS_IO_TIMEOUT: not finished within their bound, or refused at once
  uint64_t refused = 0;   // of those, refused at once: every thread they could use was stuck
  uint64_t stuck = 0;     // reader threads now in a read whose caller gave up
  uint64_t threads = 0;   // reader threads now
};
FLTPORT_API ContentReadStatistics content_read_statistics() noexcept;

class FilterManagerCore;

// Owns the fanotify groups and the thread that reads them. Destroying it (or shutdown()) answers
// every event still waiting with its filter's default, removes every mark and closes the groups.
// stop_filtering() is the first half of that, which never waits on a filter: a host calls it
// first on the way out, then unloads its filters (which may wait on their services), then shuts down.
class FLTPORT_API FilterManager {
 public:
  // Failures: STATUS_ACCESS_DENIED (no CAP_SYS_ADMIN), STATUS_NOT_SUPPORTED (no fanotify).
  static Result<std::unique_ptr<FilterManager>> create(FilterManagerOptions options = {});
  ~FilterManager();

  Status register_filter(FilterRegistration registration);  // STATUS_OBJECT_NAME_COLLISION for a name in use
  // Detaches its instances, then waits for its callbacks still running (never call it from one);
  // events already read skip it from then on.
  Status unregister_filter(const std::string& name);
  Status attach(const std::string& filter, const std::string& path,
                AttachScope scope = AttachScope::directory_tree);
  Status detach(const std::string& filter, const std::string& path);
  void exempt_process(pid_t pid);

  std::vector<std::string> filters() const;
  std::vector<InstanceInfo> instances() const;
  Result<FilterStatistics> statistics(const std::string& filter) const;
  HostStatistics host_statistics() const;
  // Removes every mark first (opens from now on are not held), then answers with its filter's
  // default every event read and every event still queued in the kernel. Callbacks still
  // running finish unheard. Does not wait for them; idempotent. Returns how many events it answered.
  size_t stop_filtering() noexcept;
  void shutdown() noexcept;

 private:
  explicit FilterManager(std::shared_ptr<FilterManagerCore> core) noexcept;
  std::shared_ptr<FilterManagerCore> core_;
};

}  // namespace fltport
