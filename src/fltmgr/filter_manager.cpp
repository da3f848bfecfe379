#include "fltmgr/filter_manager.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fanotify.h>
#include <linux/magic.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <filesystem>
#include <limits>
#include <thread>

#include "base/log.hpp"
#include "fltmgr/fatal_signal_guard.hpp"
#include "transport/shm_ring.hpp"

namespace fltport {

namespace {
constexpr size_t kWorkers = 4;  // threads that read events and run callbacks at start
constexpr size_t kMaxWorkers = 16;
// How long one worker may run an event's callbacks with nobody reading before another takes over
// (so that one slow filter does not starve the others).
constexpr std::chrono::milliseconds kReaderWatch{5};
// How long a reader keeps looking for the next permission event without sleeping (read_batch).
// FLTPORT_SPIN_NS, which sets the ports' spin budgets, sets this too (0: never spin).
// Never more than kReaderSpinCap, whatever FLTPORT_SPIN_NS says: the ports take up to 1 s there.
constexpr std::chrono::microseconds kReaderSpin{100};
constexpr std::chrono::microseconds kReaderSpinCap{1000};
std::chrono::nanoseconds reader_spin() noexcept {
  static const std::chrono::nanoseconds spin =
      std::min<std::chrono::nanoseconds>(transport::effective_spin_budget(kReaderSpin), kReaderSpinCap);
  return spin;
}
constexpr size_t kCleanFileCacheLimit = 65536;  // entries of the user-space verdict cache
constexpr size_t kMaxTreeDirectories = 100000;  // directories one tree instance may mark
// Events read and unanswered, at most: the fd limit less what the host needs for itself, within this.
constexpr uint64_t kMaxWaiting = 16384;
constexpr uint64_t kFdsKeptForTheHost = 256;
constexpr size_t kMaxQueuedPostOperations =
    16384;                                // notifications read, waiting for post-operation callbacks
constexpr size_t kMaxTaskBacklog = 4096;  // events read, waiting for a worker to run their callbacks
constexpr int kDeadlineThreadNice = -10;

uint64_t waiting_limit() {
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) != 0 || files.rlim_cur == RLIM_INFINITY) return kMaxWaiting;
  const uint64_t usable =
      files.rlim_cur > 2 * kFdsKeptForTheHost ? files.rlim_cur - kFdsKeptForTheHost : files.rlim_cur / 2;
  return std::min(kMaxWaiting, std::max<uint64_t>(usable, 16));
}

std::string fd_path(int fd) {
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  char target[PATH_MAX];
  const ssize_t length = ::readlink(link, target, sizeof target - 1);
  return length > 0 ? std::string(target, static_cast<size_t>(length)) : std::string();
}

// Whether a directory's link count on this file system is 2 + its subdirectories, so that a walk
// may stop reading it once those are found (GNU find's "leaf optimization"). Only where known to
// hold: btrfs says 1, and network file systems may say 2 whatever the directory holds.
bool counts_subdirectories(int directory_fd) {
  struct statfs file_system {};
  if (::fstatfs(directory_fd, &file_system) != 0) return false;
  switch (static_cast<unsigned long>(file_system.f_type)) {
    case EXT4_SUPER_MAGIC:  // ext2, ext3 and ext4
    case XFS_SUPER_MAGIC:
    case TMPFS_MAGIC:
      return true;
    default:
      return false;
  }
}

// `root` and the directories under it (not through symlinks), into `directories`; false when
// there are more than kMaxTreeDirectories (the first of them are listed). Files are most of a
// tree, and every entry read costs ~1.3 us here: where link counts count subdirectories, a
// directory is read only until its subdirectories are found, and one with none not at all (a tree
// of 1,011 directories and 100,000 files: 135 ms with every entry read, 9 ms so).
bool list_tree(const std::string& root, std::vector<std::string>& directories) {
  directories = {root};
  dev_t counting_device = 0;  // the last file system found to count subdirectories
  dev_t other_device = 0;     // the last one found not to
  for (size_t next = 0; next < directories.size(); ++next) {
    // Gone since, or not ours to read: skipped, as a directory iterator skipping errors would.
    const int fd = ::open(directories[next].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) continue;
    DIR* const directory = ::fdopendir(fd);
    if (directory == nullptr) {
      ::close(fd);
      continue;
    }
    constexpr uint64_t kUnknown = UINT64_MAX;
    uint64_t subdirectories_left = kUnknown;
    struct stat status {};
    if (::fstat(fd, &status) == 0 && status.st_nlink >= 2) {
      bool counts = status.st_dev == counting_device;
      if (!counts && status.st_dev != other_device) {
        counts = counts_subdirectories(fd);
        (counts ? counting_device : other_device) = status.st_dev;
      }
      if (counts) subdirectories_left = status.st_nlink - 2;
    }
    while (subdirectories_left != 0) {
      const dirent* entry = ::readdir(directory);
      if (entry == nullptr) break;
      if (std::strcmp(entry->d_name, ".") == 0 || std::strcmp(entry->d_name, "..") == 0) continue;
      bool is_directory = entry->d_type == DT_DIR;
      if (entry->d_type == DT_UNKNOWN) {
        struct stat child {};
        is_directory =
            ::fstatat(fd, entry->d_name, &child, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(child.st_mode);
      }
      if (!is_directory) continue;
      if (directories.size() >= kMaxTreeDirectories) {
        ::closedir(directory);
        return false;
      }
      const std::string& parent = directories[next];
      directories.push_back(parent + (parent == "/" ? "" : "/") + entry->d_name);
      if (subdirectories_left != kUnknown) --subdirectories_left;
    }
    ::closedir(directory);
  }
  return true;
}

// Whether `path` is `root` or under it.
bool covers(const std::string& root, const std::string& path) {
  if (path.size() < root.size() || path.compare(0, root.size(), root) != 0) return false;
  return path.size() == root.size() || root == "/" || path[root.size()] == '/';
}

unsigned latency_bucket(std::chrono::steady_clock::duration latency) {
  const auto us =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(latency).count());
  unsigned bucket = 0;
  while (bucket + 1 < kLatencyBuckets && (us >> (bucket + 1)) != 0) ++bucket;
  return bucket;
}

}  // namespace

std::string path_of(const FileEvent& event) {
  if (!event.path.empty() || event.fd < 0) return event.path;
  return fd_path(event.fd);
}

const char* operation_name(Operation op) noexcept {
  switch (op) {
    case Operation::open:
      return "open";
    case Operation::open_exec:
      return "open_exec";
    case Operation::read:
      return "read";
    case Operation::close_write:
      return "close_write";
    case Operation::create:
      return "create";
    case Operation::remove:
      return "delete";
    case Operation::rename:
      return "rename";
    case Operation::attribute:
      return "attribute";
  }
  return "?";
}

// What a filter, and each of its instances, counts of the events it was asked about.
struct VerdictCounters {
  std::atomic<uint64_t> events{0}, allowed{0}, denied{0}, defaults_taken{0}, posts{0};
  std::array<std::atomic<uint64_t>, kLatencyBuckets> latency{};

  void record(bool allow, unsigned latency_bucket_since_arrival, bool by_default) {
    (allow ? allowed : denied).fetch_add(1, std::memory_order_relaxed);
    if (by_default) defaults_taken.fetch_add(1, std::memory_order_relaxed);
    latency[latency_bucket_since_arrival].fetch_add(1, std::memory_order_relaxed);
  }
  void copy_latency(LatencyHistogram& to) const {
    for (size_t i = 0; i < kLatencyBuckets; ++i) to[i] = latency[i].load(std::memory_order_relaxed);
  }
};

struct FilterEntry : VerdictCounters {
  FilterRegistration registration;
  std::atomic<uint64_t> cache_hits{0};

  // Callbacks running, so that unregistering waits for them (FltUnregisterFilter's rundown): after
  // it returns, a plugin's code may be unmapped.
  bool enter_callback() {
    std::lock_guard lock(callbacks_mutex);
    if (unregistered) return false;
    ++running_callbacks;
    return true;
  }
  void leave_callback() {
    std::lock_guard lock(callbacks_mutex);
    if (--running_callbacks == 0) callbacks_done.notify_all();
  }
  void unregister_and_wait() {
    std::unique_lock lock(callbacks_mutex);
    unregistered = true;
    callbacks_done.wait(lock, [this] { return running_callbacks == 0; });
  }

  // Defaults are each counted, but logged at most this rate: under a flood the log must not
  // become the next thing that slows the host down.
  log::RateLimit default_log{log::kLinesPerSecondPerSite};

  std::mutex callbacks_mutex;
  std::condition_variable callbacks_done;
  int running_callbacks = 0;
  bool unregistered = false;
};

struct InstanceCounters : VerdictCounters {};

struct PermissionRequest {
  UniqueFd fd;  // owned until the last callback that may read it is done
  uint64_t mask = 0;
  FileEvent event;
  std::chrono::steady_clock::time_point arrival;
  std::vector<std::shared_ptr<FilterEntry>> chain;           // highest altitude first
  std::vector<std::shared_ptr<InstanceCounters>> instances;  // chain[i]'s instance covering the file
  // The chain position whose verdict is awaited; kClaimed set while one party gives it (claim()).
  std::atomic<size_t> deciding{0};
  std::atomic<bool> answered{false};
  bool counted_waiting = false;  // in FilterManagerCore::waiting_ until answered
  bool cache = true;  // every allow so far asked for caching (touched by one deciding thread at a time)
  uint64_t generation = 0;  // FilterManagerCore::chain_generation_ when the chain was found
};

constexpr size_t kClaimed = size_t{1} << (std::numeric_limits<size_t>::digits - 1);

// Chain position `index`'s verdict is the caller's to give: of its callback's verdict, the deadline's
// default, a dropped operation's default and the shutdown's, exactly one gives it (and is counted).
// The winner then answers, or moves the chain on by storing the next position (which frees it).
bool claim(PermissionRequest& request, size_t index) {
  size_t expected = index;
  return request.deciding.compare_exchange_strong(expected, index | kClaimed);
}

// Claims whichever position decides now, waiting out another party's claim (it answers or moves
// the chain on within microseconds); false once the event is answered or the chain is through.
bool claim_current(PermissionRequest& request, size_t& index) {
  for (;;) {
    if (request.answered.load()) return false;
    index = request.deciding.load();
    if ((index & kClaimed) != 0) {
      std::this_thread::yield();
      continue;
    }
    if (index >= request.chain.size()) return false;
    if (claim(request, index)) return true;
  }
}

// Each default, counted by record(), is also logged (at most at its filter's default_log rate).
void log_default(PermissionRequest& request, size_t index, bool allow, bool at_deadline) {
  uint64_t not_logged = 0;
  if (!log::enabled(log::Level::warning) || !request.chain[index]->default_log.admit(not_logged)) return;
  const auto& filter = request.chain[index]->registration;
  const std::string deadline = std::to_string(filter.deadline.count()) + " ms";
  log::write_after(not_logged, log::Level::warning, "fltmgr",
                   "%s: no verdict for %s of %s by pid %d %s; %s by default", filter.name.c_str(),
                   operation_name(request.event.operation), path_of(request.event).c_str(),
                   static_cast<int>(request.event.pid),
                   at_deadline ? ("within " + deadline).c_str() : "(the filter dropped the operation)",
                   allow ? "allowed" : "denied");
}

// A verdict of chain position `index`, in its filter's and its instance's counters.
void record(PermissionRequest& request, size_t index, bool allow, bool by_default) {
  const unsigned bucket = latency_bucket(std::chrono::steady_clock::now() - request.arrival);
  request.chain[index]->record(allow, bucket, by_default);
  request.instances[index]->record(allow, bucket, by_default);
}

struct PendingOperation::State {
  std::weak_ptr<FilterManagerCore> core;
  std::shared_ptr<PermissionRequest> request;
  size_t index = 0;
  std::atomic<bool> used{false};
};

PendingOperation::PendingOperation(PendingOperation&&) noexcept = default;
PendingOperation& PendingOperation::operator=(PendingOperation&& other) noexcept {
  if (this != &other) {
    if (state_) {
      // Dropping an uncompleted operation answers with the default, as its destructor would.
      PendingOperation dropped(std::move(state_));
    }
    state_ = std::move(other.state_);
  }
  return *this;
}

PendingOperation::~PendingOperation() {
  if (!state_ || state_->used.exchange(true)) return;
  if (auto core = state_->core.lock()) {
    const auto& filter = *state_->request->chain[state_->index];
    const Verdict fallback =
        filter.registration.default_decision == Decision::allow ? Verdict::allow() : Verdict::deny();
    core->resume(state_->request, state_->index, fallback, true);
  }
}

bool PendingOperation::complete(const Verdict& verdict) noexcept {
  if (!state_ || state_->used.exchange(true)) return false;
  auto core = state_->core.lock();
  return core && core->resume(state_->request, state_->index, verdict, false);
}

// ---------------------------------------------------------------------------------------------

Result<std::shared_ptr<FilterManagerCore>> FilterManagerCore::create(FilterManagerOptions options) {
  auto permissions = fanotify::PermissionGroup::open();
  if (!permissions) return permissions.status();
  auto notifications = fanotify::NotificationGroup::open();
  if (!notifications) return notifications.status();
  if (options.close_groups_on_fatal_signal) fanotify::install_fatal_signal_guard();
  std::shared_ptr<FilterManagerCore> core(
      new FilterManagerCore(std::move(*permissions), std::move(*notifications), std::move(options)));
  if (core->wake_fd_ < 0) return Status(STATUS_INSUFFICIENT_RESOURCES);
  fanotify::guard_wake_fd(core->wake_fd_);
  {
    std::lock_guard lock(core->tasks_mutex_);  // workers may add workers
    for (size_t i = 0; i < kWorkers; ++i) core->workers_.emplace_back([raw = core.get()] { raw->worker(); });
  }
  core->deadline_thread_ = std::thread([raw = core.get()] { raw->deadline_loop(); });
  return core;
}

FilterManagerCore::FilterManagerCore(fanotify::PermissionGroup permissions,
                                     fanotify::NotificationGroup notifications, FilterManagerOptions options)
    : permissions_(std::move(permissions)),
      notifications_(std::move(notifications)),
      wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      waiting_limit_(waiting_limit()) {
  exempt_.insert(::getpid());
  for (pid_t pid : options.exempt_processes) exempt_.insert(pid);
}

FilterManagerCore::~FilterManagerCore() {
  shutdown();
  fanotify::forget_wake_fd(wake_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

size_t FilterManagerCore::stop_filtering() noexcept {
  {
    std::lock_guard lock(mutex_);
    if (filtering_stopped_) return 0;
    filtering_stopped_ = true;  // from now on an event read is answered by its reader at once
  }
  // Marks first: an open that starts from now on is not held at all (fapolicyd #227: after Ctrl-C
  // the daemon's marks outlived its answers, and nothing could be opened).
  {
    std::shared_lock groups(groups_mutex_);
    if (groups_open_) {
      permissions_.flush_marks();
      notifications_.flush_marks();
    }
  }
  {
    std::lock_guard lock(tasks_mutex_);
    stopping_ = true;
  }
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t written = ::write(wake_fd_, &one, sizeof one);  // the reader's poll returns
  tasks_ready_.notify_all();
  // Read, and waiting for a verdict: the deciding filter's default now.
  std::vector<std::shared_ptr<PermissionRequest>> waiting;
  {
    std::lock_guard lock(mutex_);
    while (!deadlines_.empty()) {
      if (auto request = deadlines_.top().request.lock()) waiting.push_back(std::move(request));
      deadlines_.pop();
    }
  }
  size_t answered = 0;
  for (auto& request : waiting) {
    if (answer_without_callbacks(request)) ++answered;
  }
  // Queued in the kernel and not read yet: read them here (a worker still reading answers the ones
  // it takes the same way, seeing filtering_stopped_).
  std::vector<fanotify::PermissionEvent> events;
  std::vector<Task> no_tasks;
  for (int reads = 0; reads < 1024; ++reads) {
    events.clear();
    {
      std::shared_lock groups(groups_mutex_);
      if (!groups_open_ || !permissions_.read_events(events).ok()) break;
    }
    if (events.empty()) break;
    for (auto& event : events) on_permission_event(event, no_tasks);
    answered += events.size();
  }
  FLTPORT_LOG(info, "fltmgr", "filtering stopped: marks removed, %zu waiting events answered", answered);
  return answered;
}

void FilterManagerCore::shutdown() noexcept {
  {
    std::lock_guard lock(mutex_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  stop_filtering();
  std::vector<std::thread> workers;
  {
    std::lock_guard lock(tasks_mutex_);  // no worker starts another once stopping_ is set
    workers.swap(workers_);
  }
  for (std::thread& worker : workers) worker.join();
  {
    std::lock_guard lock(mutex_);
    deadlines_stopping_ = true;
  }
  deadlines_changed_.notify_all();
  if (deadline_thread_.joinable()) deadline_thread_.join();
  std::unique_lock groups(groups_mutex_);
  groups_open_ = false;
  permissions_.close();
  notifications_.close();
}

// ---- events ----

// Waits for events and turns what was queued into tasks. Called by one worker at a time.
// A process opening files one after another sends its next event some tens of µs after the last
// verdict. For kReaderSpin after a permission event was read or answered, the reader looks again
// without sleeping (polls with no timeout, so that notifications and a shutdown are seen as
// before), which saves the host's wake-up on each such event: on this VM a bare responder that
// spins so costs an open ~0.6x one that sleeps in poll (docs/performance.md). It yields between
// looks, for the opener and the service may be waiting for this very CPU.
bool FilterManagerCore::read_batch(std::vector<Task>& batch) noexcept {
  pollfd fds[3] = {{permissions_.fd(), POLLIN, 0}, {notifications_.fd(), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  int ready = 0;
  const auto spin = reader_spin();
  // Only within a run of events: after a lone one the next comes later than any spin, and the
  // spin only took the CPUs from the opener and the service (sporadic opens 1 ms apart, scanner
  // path: 137-143 us each without a spin, 157-197 us with one after every event).
  const bool in_a_run = permission_read_gap_ns_ <= spin.count();
  const auto spin_until = std::chrono::steady_clock::time_point(std::chrono::nanoseconds(
                              last_permission_event_ns_.load(std::memory_order_relaxed))) +
                          spin;
  while (in_a_run && ready == 0 && std::chrono::steady_clock::now() < spin_until) {
    ready = ::poll(fds, 3, 0);
    if (ready == 0) ::sched_yield();
  }
  if (ready == 0) ready = ::poll(fds, 3, -1);
  if (ready < 0) {
    if (errno != EINTR) FLTPORT_LOG(error, "fltmgr", "poll failed: %s", std::strerror(errno));
    return true;
  }
  if (fanotify::groups_closed_by_fatal_signal()) {
    // The process is dying of a signal and its groups are closed (their numbers may be reused):
    // wait here for the end rather than poll them again.
    for (;;) ::pause();
  }
  if ((fds[2].revents & POLLIN) != 0) {
    uint64_t count;
    [[maybe_unused]] ssize_t drained = ::read(wake_fd_, &count, sizeof count);
  }
  // Notifications first: a directory that left a tree before an open inside it was asked about is
  // unmarked (and no longer in the chain's way) before that open's event is looked at.
  std::vector<Task> post_operations;
  if ((fds[1].revents & POLLIN) != 0) {
    std::vector<fanotify::Notification> notifications;
    const uint64_t overflows = notifications_.overflows();
    notifications_.read_events(notifications);
    if (notifications_.overflows() != overflows) {
      // Lost notifications may have been directories leaving a tree: find chains by path from now on.
      std::lock_guard lock(mutex_);
      chains_need_paths_ = true;
    }
    for (const auto& notification : notifications) on_notification(notification, post_operations);
  }
  if ((fds[0].revents & POLLIN) != 0) {
    std::vector<fanotify::PermissionEvent> events;
    permissions_.read_events(events);
    if (!events.empty()) {
      const int64_t now = transport::steady_ns();
      permission_read_gap_ns_ = now - last_permission_read_ns_;
      last_permission_read_ns_ = now;
      last_permission_event_ns_.store(now, std::memory_order_relaxed);
    }
    // Events queued before a directory left a tree may have come through its marks: by path until
    // the queue has been seen empty since.
    pollfd more{permissions_.fd(), POLLIN, 0};
    const bool drained = left_tree_since_drained_ && ::poll(&more, 1, 0) == 0;
    for (auto& event : events) on_permission_event(event, batch);
    if (drained) left_tree_since_drained_ = false;
  }
  const size_t permission_tasks = batch.size();
  for (Task& task : post_operations) batch.push_back(std::move(task));
  return batch.size() == permission_tasks;
}

bool FilterManagerCore::exempt(pid_t pid) const {
  std::lock_guard lock(mutex_);
  return exempt_.count(pid) != 0;
}

bool FilterManagerCore::chain_for(Operation operation, const std::string* path,
                                  std::vector<std::shared_ptr<FilterEntry>>& chain,
                                  std::vector<std::shared_ptr<InstanceCounters>>& instances,
                                  const std::string* old_path) const {
  std::lock_guard lock(mutex_);
  if (path == nullptr && chains_need_paths_) return false;
  const auto filter_instance = [this](const std::shared_ptr<FilterEntry>& filter, const std::string* where) {
    return std::find_if(instances_.begin(), instances_.end(), [&](const Instance& candidate) {
      return candidate.filter == filter && (where == nullptr || covers(candidate.path, *where));
    });
  };
  for (const auto& filter : filters_) {
    // An exec makes two events, FAN_OPEN_EXEC_PERM then FAN_OPEN_PERM: each goes to its own filters.
    if (!contains(filter->registration.operations, operation)) continue;
    auto instance = filter_instance(filter, path);
    if (instance == instances_.end() && old_path != nullptr) instance = filter_instance(filter, old_path);
    if (instance == instances_.end()) continue;
    chain.push_back(filter);
    instances.push_back(instance->counters);
  }
  return true;
}

void FilterManagerCore::on_permission_event(fanotify::PermissionEvent& kernel_event,
                                            std::vector<Task>& batch) {
  // Not make_shared: the deadline queue's weak_ptr would keep the whole request's memory.
  std::shared_ptr<PermissionRequest> request(new PermissionRequest());
  request->fd = UniqueFd(kernel_event.fd);
  request->mask = kernel_event.mask;
  request->arrival = std::chrono::steady_clock::now();
  const int fd = request->fd.fd();
  // The host's own accesses, and those of exempt services, never wait on a filter.
  if (exempt(kernel_event.pid)) {
    std::shared_lock groups(groups_mutex_);
    permissions_.respond(fd, true);
    return;
  }
  Operation operation = Operation::open;
  if ((kernel_event.mask & FAN_OPEN_EXEC_PERM) != 0) {
    operation = Operation::open_exec;
  } else if ((kernel_event.mask & (FAN_ACCESS_PERM | fanotify::kPreAccess)) != 0) {
    operation = Operation::read;
  }
  FileEvent& event = request->event;
  event.operation = operation;
  event.pid = kernel_event.pid;
  event.kernel_flags = kernel_event.mask;
  event.fd = fd;
  event.range_offset = kernel_event.range_offset;
  event.range_count = kernel_event.range_count;
  request->generation = chain_generation_.load();
  // The path only when the instances or a filter need it: its readlink costs more than the rest
  // of the event's bookkeeping (3-8 us here).
  bool have_path = false;
  if (left_tree_since_drained_ || !chain_for(operation, nullptr, request->chain, request->instances)) {
    event.path = fd_path(fd);
    have_path = true;
    chain_for(operation, &event.path, request->chain, request->instances);
  }
  if (request->chain.empty()) {
    std::shared_lock groups(groups_mutex_);
    permissions_.respond(fd, true);
    return;
  }
  if (known_clean(fd, event.file_status, operation)) {
    for (const auto& filter : request->chain) filter->cache_hits.fetch_add(1, std::memory_order_relaxed);
    std::shared_lock groups(groups_mutex_);
    permissions_.respond(fd, true);
    return;
  }
  auto minimum_deadline = request->chain.front()->registration.deadline;
  bool want_executable = false;
  bool want_credentials = false;
  bool want_path = false;
  for (size_t i = 0; i < request->chain.size(); ++i) {
    const auto& filter = request->chain[i];
    minimum_deadline = std::min(minimum_deadline, filter->registration.deadline);
    want_executable = want_executable || filter->registration.want_executable;
    want_credentials = want_credentials || filter->registration.want_credentials;
    want_path = want_path || filter->registration.want_path;
    filter->events.fetch_add(1, std::memory_order_relaxed);
    request->instances[i]->events.fetch_add(1, std::memory_order_relaxed);
  }
  event.deadline = request->arrival + minimum_deadline;  // read_file_contents waits no longer
  if (want_path && !have_path) event.path = fd_path(fd);
  const std::string proc = "/proc/" + std::to_string(kernel_event.pid);
  // A stat of /proc/PID costs as much as the rest of the bookkeeping: only for filters that ask.
  struct stat process {};
  if (want_credentials && ::stat(proc.c_str(), &process) == 0) {
    event.uid = process.st_uid;
    event.gid = process.st_gid;
  }
  if (want_executable) {
    char target[PATH_MAX];
    const ssize_t length = ::readlink((proc + "/exe").c_str(), target, sizeof target - 1);
    if (length > 0) event.executable.assign(target, static_cast<size_t>(length));
  }
  bool stopped;
  bool overloaded = false;
  {
    std::lock_guard lock(mutex_);
    stopped = filtering_stopped_;
    // Beyond either bound the host would hold ever more fds and memory for a filter that cannot
    // keep up: events read while the callbacks' backlog is full, or while too many wait, take
    // their default at once.
    overloaded = !stopped && (waiting_.load() >= waiting_limit_ || task_backlog_.load() >= kMaxTaskBacklog);
    if (!stopped && !overloaded) {
      request->counted_waiting = true;
      waiting_.fetch_add(1);
      const auto when = request->arrival + minimum_deadline;
      deadlines_.push(Deadline{when, request});
      if (when < deadline_thread_wakes_) {
        deadline_thread_wakes_ = when;
        deadlines_changed_.notify_one();
      }
    }
  }
  if (overloaded && overload_defaults_.fetch_add(1) % 1000 == 0) {
    FLTPORT_LOG(warning, "fltmgr",
                "%llu events wait for verdicts already (the limit): %s of %s takes the default",
                static_cast<unsigned long long>(waiting_limit_), operation_name(event.operation),
                path_of(event).c_str());
  }
  if (stopped || overloaded) {  // no callback starts: the filters' defaults answer now
    answer_without_callbacks(request);
    return;
  }
  batch.push_back([this, request] { continue_chain(request, 0); });
}

bool FilterManagerCore::known_clean(int fd, struct stat& file, Operation operation) {
  if (::fstat(fd, &file) != 0) {
    file.st_mode = 0;  // unknown: no verdict cached either
    return false;
  }
  std::lock_guard lock(mutex_);
  const auto found = clean_files_.find({file.st_dev, file.st_ino});
  if (found == clean_files_.end()) return false;
  if (found->second.version == FileVersion::of(file)) return contains(found->second.operations, operation);
  clean_files_.erase(found);  // changed since its verdict: scan again
  return false;
}

void FilterManagerCore::on_notification(const fanotify::Notification& notification,
                                        std::vector<Task>& batch) {
  // Trees follow directories whoever moves them, exempt processes too (a service's quarantine).
  if (notification.is_directory && (notification.mask & (FAN_CREATE | FAN_RENAME)) != 0) {
    if ((notification.mask & FAN_CREATE) != 0 && !notification.path.empty())
      follow_directory(notification.path, "", false);
    if ((notification.mask & FAN_RENAME) != 0)
      follow_directory(notification.path, notification.old_path, true);
  }
  if (exempt(notification.pid)) return;
  // The kernel merges events on one object (a create and the close after writing it arrive as one):
  // each bit is reported as its own operation, in the order they happen.
  static constexpr std::pair<uint64_t, Operation> kOrder[] = {
      {FAN_CREATE, Operation::create},           {FAN_ATTRIB, Operation::attribute},
      {FAN_CLOSE_WRITE, Operation::close_write}, {FAN_RENAME, Operation::rename},
      {FAN_DELETE, Operation::remove},
  };
  for (const auto& [bit, operation] : kOrder) {
    if ((notification.mask & bit) == 0) continue;
    std::vector<std::shared_ptr<FilterEntry>> chain;
    std::vector<std::shared_ptr<InstanceCounters>> instances;
    // A rename goes to the instances of both places: one moved out of is told where the file went.
    chain_for(operation, &notification.path, chain, instances,
              operation == Operation::rename ? &notification.old_path : nullptr);
    if (chain.empty()) continue;
    FileEvent event;
    event.operation = operation;
    event.pid = notification.pid;
    event.kernel_flags = notification.mask;
    event.path = notification.path;
    event.old_path = operation == Operation::rename ? notification.old_path : std::string();
    event.is_directory = notification.is_directory;
    std::lock_guard lock(tasks_mutex_);
    if (notifications_queue_.size() >= kMaxQueuedPostOperations) {
      // Slow post-operation callbacks must not make the host's memory grow without end (fapolicyd
      // #305): past the bound a notification is dropped and counted, as the kernel's own queue does.
      if (post_operations_dropped_.fetch_add(1) % 1000 == 0) {
        FLTPORT_LOG(warning, "fltmgr", "%zu post-operations queued already: %s of %s dropped",
                    notifications_queue_.size(), operation_name(operation), event.path.c_str());
      }
      continue;
    }
    notifications_queue_.push_back({std::move(chain), std::move(instances), std::move(event)});
    if (!posting_) {
      posting_ = true;
      batch.push_back([this] { run_post_operations(); });
    }
  }
}

// Post-operations run one at a time, in the order they happened (one worker drains the queue),
// so a filter sees a file created before it sees it written, renamed or deleted.
void FilterManagerCore::run_post_operations() {
  std::unique_lock lock(tasks_mutex_);
  while (!notifications_queue_.empty() && !stopping_) {
    PostOperation next = std::move(notifications_queue_.front());
    notifications_queue_.pop_front();
    lock.unlock();
    for (size_t i = 0; i < next.chain.size(); ++i) {
      const auto& filter = next.chain[i];
      filter->posts.fetch_add(1, std::memory_order_relaxed);
      next.instances[i]->posts.fetch_add(1, std::memory_order_relaxed);
      if (!filter->registration.post_operation || !filter->enter_callback()) continue;
      try {
        filter->registration.post_operation(next.event);
      } catch (...) {
        FLTPORT_LOG(error, "fltmgr", "%s: post-operation callback threw", filter->registration.name.c_str());
      }
      filter->leave_callback();
    }
    lock.lock();
  }
  posting_ = false;
}

// Answers, with the deciding filter's default, every event whose deadline passed. A thread of its
// own, so that no filter callback can hold it up.
void FilterManagerCore::deadline_loop() noexcept {
  // The deadline is the promise that nothing freezes: on a busy machine this thread must not queue
  // behind the load it protects. A better nice value (root only; ignored otherwise) costs nothing
  // while it sleeps, and it sleeps almost always.
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kDeadlineThreadNice);
  std::vector<std::shared_ptr<PermissionRequest>> swept;
  bool quiet = true;  // no event since the last kReaderWatch tick
  std::unique_lock lock(mutex_);
  using TimePoint = std::chrono::steady_clock::time_point;
  // Waits until `wake` (max: until notified) and says whether the time came; while it waits,
  // deadline_thread_wakes_ tells a new event whether it must wake this thread.
  auto sleep_until = [&](TimePoint wake) {
    deadline_thread_wakes_ = wake;
    bool timed_out = false;
    if (wake == TimePoint::max()) {
      deadlines_changed_.wait(lock);
    } else {
      timed_out = deadlines_changed_.wait_until(lock, wake) == std::cv_status::timeout;
    }
    deadline_thread_wakes_ = TimePoint::min();
    return timed_out;
  };
  while (!deadlines_stopping_) {
    // Answered requests leave the queue when this thread next looks, not at their deadline: left
    // there, they would wake it once per event, each at its own deadline, for nothing (and hold
    // the queue at events/s x deadline entries). The first request still waiting stops the sweep.
    while (!deadlines_.empty()) {
      auto request = deadlines_.top().request.lock();
      if (request && !request->answered.load()) break;
      if (request) swept.push_back(std::move(request));
      deadlines_.pop();
    }
    if (!swept.empty()) {  // released unlocked: a last reference closes the event's fd
      lock.unlock();
      swept.clear();
      lock.lock();
      continue;
    }
    if (deadlines_.empty() && quiet) {  // a whole kReaderWatch without events: sleep until one comes
      sleep_until(TimePoint::max());
      quiet = false;
      continue;
    }
    // While events come, also wake every kReaderWatch to see that somebody reads them. (Also when
    // the queue just emptied: while events keep coming, the first after the sweep does not wake
    // this thread, the next tick sees them.)
    auto wake = std::chrono::steady_clock::now() + kReaderWatch;
    if (!deadlines_.empty()) wake = std::min(wake, deadlines_.top().when);
    if (!sleep_until(wake)) continue;
    quiet = deadlines_.empty();
    lock.unlock();
    watch_reader();
    lock.lock();
    const auto now = std::chrono::steady_clock::now();
    std::vector<std::shared_ptr<PermissionRequest>> expired;
    while (!deadlines_.empty() && deadlines_.top().when <= now) {
      if (auto request = deadlines_.top().request.lock()) expired.push_back(std::move(request));
      deadlines_.pop();
    }
    lock.unlock();
    for (auto& request : expired) take_default(request);
    lock.lock();
  }
}

// Every kReaderWatch while events wait, two checks, so that later events are read and run whatever
// a callback does: a worker running an event's callbacks itself leaves nobody reading (if it takes
// longer than kReaderWatch, another worker takes over reading); and events queued for callbacks
// while every worker is inside one get another worker (up to kMaxWorkers) instead of waiting for
// the next event to arrive.
void FilterManagerCore::watch_reader() {
  const int64_t since = inline_since_.load();
  const bool inline_too_long = since != 0 && std::chrono::steady_clock::now().time_since_epoch() -
                                                     std::chrono::steady_clock::duration(since) >=
                                                 kReaderWatch;
  std::lock_guard lock(tasks_mutex_);
  if (stopping_) return;
  const bool reader_needed = inline_too_long && !reading_;
  const bool worker_needed = !tasks_.empty();
  if (!reader_needed && !worker_needed) return;
  if (idle_workers_ > 0) {
    tasks_ready_.notify_one();
  } else if (workers_.size() < kMaxWorkers) {
    workers_.emplace_back([this] { worker(); });
  }
}

// The filters from the deciding one on will not be asked (shutdown, overload): a filter whose default is
// deny would have denied what it was never shown, so any such default denies (and is counted as
// that filter's); otherwise the deciding filter's default, allow.
bool FilterManagerCore::answer_without_callbacks(const std::shared_ptr<PermissionRequest>& request) {
  size_t from;
  if (!claim_current(*request, from)) return false;
  size_t speaker = from;
  for (size_t i = from; i < request->chain.size(); ++i) {
    if (request->chain[i]->registration.default_decision == Decision::deny) {
      speaker = i;
      break;
    }
  }
  const bool allow = request->chain[speaker]->registration.default_decision == Decision::allow;
  return answer(*request, allow, 0, false, speaker);
}

void FilterManagerCore::take_default(const std::shared_ptr<PermissionRequest>& request) {
  // The deadline is the event's: whichever filter decides when it passes gives its default (unless
  // its verdict is being given just now: then that one answers, or the next filter decides).
  size_t index;
  if (!claim_current(*request, index)) return;
  const auto& filter = request->chain[index]->registration;
  const bool allow = filter.default_decision == Decision::allow;
  if (answer(*request, allow, 0, false, index)) log_default(*request, index, allow, true);
}

// ---- the chain of pre-operation callbacks ----

// From position `from`, which the caller made the deciding one (unclaimed): each filter's callback
// in turn, until one denies or pends, or the chain is through.
void FilterManagerCore::continue_chain(const std::shared_ptr<PermissionRequest>& request, size_t from) {
  const size_t last = request->chain.size() - 1;
  for (size_t index = from; index <= last; ++index) {
    if (request->answered.load()) return;
    FilterEntry& filter = *request->chain[index];
    Verdict verdict = Verdict::allow();
    if (filter.registration.pre_operation && filter.enter_callback()) {  // else none, or unregistered
      auto state = std::make_shared<PendingOperation::State>();
      state->core = weak_from_this();
      state->request = request;
      state->index = index;
      PendingOperation pending(state);
      PreResult result;
      try {
        result = filter.registration.pre_operation(request->event, pending);
      } catch (...) {
        filter.leave_callback();
        FLTPORT_LOG(error, "fltmgr", "%s: pre-operation callback threw; taking its default",
                    filter.registration.name.c_str());
        return;  // `pending` answers with the default as it goes
      }
      filter.leave_callback();
      if (result.pending) return;  // the filter holds `pending`, or dropping it answers with the default
      state->used.store(true);     // answered here and now
      verdict = result.verdict;
    }
    // A default given meanwhile (the deadline passed during the callback) answered and was counted:
    // this verdict came too late.
    if (!claim(*request, index)) return;
    const bool allow = verdict.decision == Decision::allow;
    record(*request, index, allow, false);
    if (!allow) {
      answer(*request, false, verdict.error, false);
      return;
    }
    request->cache = request->cache && verdict.cache;
    if (index < last) request->deciding.store(index + 1);
  }
  answer(*request, true, 0, request->cache);
}

bool FilterManagerCore::resume(const std::shared_ptr<PermissionRequest>& request, size_t index,
                               const Verdict& verdict, bool by_default) {
  if (request->answered.load() || !claim(*request, index)) return false;
  const bool allow = verdict.decision == Decision::allow;
  if (by_default) {
    // A dropped operation speaks for this filter and ends the chain: later filters would only make
    // the late answer later.
    if (!answer(*request, allow, verdict.error, false, index)) return false;
    log_default(*request, index, allow, false);
    return true;
  }
  record(*request, index, allow, false);
  if (!allow) return answer(*request, false, verdict.error, false);
  request->cache = request->cache && verdict.cache;
  if (index + 1 < request->chain.size()) {
    request->deciding.store(index + 1);
    continue_chain(request, index + 1);
    return true;
  }
  return answer(*request, true, 0, request->cache);
}

bool FilterManagerCore::answer(PermissionRequest& request, bool allow, int error, bool cache,
                               size_t default_of) {
  if (request.answered.exchange(true)) return false;
  if (request.counted_waiting) waiting_.fetch_sub(1);
  std::shared_lock groups(groups_mutex_);
  if (!groups_open_) return false;
  // Counted before the process learns the verdict: what it then reads in the statistics holds it.
  if (default_of != kNoDefault) record(request, default_of, allow, true);
  const struct stat& seen = request.event.file_status;
  if (allow && cache && seen.st_mode != 0) {
    // Before the answer, not after: a process that writes the moment its open is allowed must find
    // the ignore mark there to be dropped, and the cache entry already holding the old state. The
    // verdict is about the file as it was when the event came; a write since then (through an fd
    // opened earlier) did not drop a mark that was not there yet: a file that looks changed once
    // the mark is on gets it taken back, and no entry.
    // Likewise a filter attached while the chain decided (it was not asked): an attach after the
    // mark is on takes the mark back itself.
    const int fd = request.fd.fd();
    const FileVersion judged = FileVersion::of(seen);
    const bool marked = permissions_.ignore_until_modified(fd, request.mask).ok();
    struct stat now {};
    bool cached = false;
    if (::fstat(fd, &now) == 0 && FileVersion::of(now) == judged) {
      std::lock_guard lock(mutex_);
      if (request.generation == chain_generation_.load()) {
        if (clean_files_.size() >= kCleanFileCacheLimit) clean_files_.clear();
        CleanVerdict& entry = clean_files_[{seen.st_dev, seen.st_ino}];
        if (!(entry.version == judged)) entry = CleanVerdict{judged, 0};
        entry.operations = entry.operations | request.event.operation;
        cached = true;
      }
    }
    if (!cached && marked) permissions_.stop_ignoring(fd, request.mask);
  }
  permissions_.respond(request.fd.fd(), allow, error);
  // The opener's next event comes some tens of µs after this verdict: the reader's spin counts
  // from here too, however long the callbacks took.
  last_permission_event_ns_.store(transport::steady_ns(), std::memory_order_relaxed);
  return true;
}

// ---- workers ----

// Leader/follower: one worker at a time waits for events; when it has some and another worker is
// idle, that one takes over waiting and the first runs the callbacks itself, so an event costs no
// hand-over between threads. When every other worker is busy in a callback, the reader keeps
// reading and queues: a slow filter never stops events from being read and their deadlines kept.
void FilterManagerCore::worker() noexcept {
  std::vector<Task> batch;
  std::unique_lock lock(tasks_mutex_);
  for (;;) {
    if (stopping_) return;
    if (!tasks_.empty() && (reading_ || idle_workers_ > 0)) {
      Task task = std::move(tasks_.front());
      tasks_.pop_front();
      task_backlog_.store(tasks_.size());
      if (!reading_) tasks_ready_.notify_one();  // an idle worker becomes the reader
      lock.unlock();
      task();
      lock.lock();
      continue;
    }
    if (!tasks_.empty() && workers_.size() < kMaxWorkers) {
      // Every other worker is inside a callback: one more runs the queue while this one reads.
      workers_.emplace_back([this] { worker(); });
    }
    if (!reading_) {
      reading_ = true;
      lock.unlock();
      batch.clear();
      const bool only_permission_events = read_batch(batch);
      lock.lock();
      reading_ = false;
      // Inline only while another worker can take the reading over: with every worker in a
      // callback, the reader keeps reading (and queueing), so deadlines and overload defaults hold.
      // Never post-operations: they have no deadline, so nothing would notice the reading stopped,
      // and a post-operation that opens a file under its own marks (the scanner rescanning what was
      // written) would wait for a permission event that nobody reads.
      if (batch.size() == 1 && only_permission_events && tasks_.empty() && !stopping_ &&
          (idle_workers_ > 0 || workers_.size() < kMaxWorkers)) {
        // One event and nothing queued: run it here, without waking another worker to read. If it
        // runs long, the deadline thread's watch hands the reading to another worker.
        Task task = std::move(batch.front());
        inline_since_.store(std::chrono::steady_clock::now().time_since_epoch().count());
        lock.unlock();
        task();
        lock.lock();
        inline_since_.store(0);
        continue;
      }
      for (Task& task : batch) tasks_.push_back(std::move(task));
      task_backlog_.store(tasks_.size());
      continue;
    }
    ++idle_workers_;
    tasks_ready_.wait(lock);
    --idle_workers_;
  }
}

// ---- filters and instances ----

uint64_t FilterManagerCore::permission_mask(OperationSet operations) const noexcept {
  uint64_t mask = 0;
  if (contains(operations, Operation::open)) mask |= FAN_OPEN_PERM;
  if (contains(operations, Operation::open_exec)) mask |= FAN_OPEN_EXEC_PERM;
  if (contains(operations, Operation::read)) {
    mask |= permissions_.capabilities().pre_access ? fanotify::kPreAccess : FAN_ACCESS_PERM;
  }
  return mask;
}

uint64_t FilterManagerCore::notification_mask(OperationSet operations) noexcept {
  uint64_t mask = 0;
  if (contains(operations, Operation::close_write)) mask |= FAN_CLOSE_WRITE;
  if (contains(operations, Operation::create)) mask |= FAN_CREATE;
  if (contains(operations, Operation::remove)) mask |= FAN_DELETE;
  if (contains(operations, Operation::rename)) mask |= FAN_RENAME;
  if (contains(operations, Operation::attribute)) mask |= FAN_ATTRIB;
  return mask;
}

Status FilterManagerCore::register_filter(FilterRegistration registration) {
  if (registration.name.empty() || registration.operations == 0) return STATUS_INVALID_PARAMETER;
  std::lock_guard lock(mutex_);
  if (shut_down_) return STATUS_THREAD_IS_TERMINATING;
  for (const auto& filter : filters_) {
    if (filter->registration.name == registration.name) return STATUS_OBJECT_NAME_COLLISION;
  }
  auto entry = std::make_shared<FilterEntry>();
  entry->registration = std::move(registration);
  const auto position = std::find_if(filters_.begin(), filters_.end(), [&](const auto& other) {
    return other->registration.altitude < entry->registration.altitude;
  });
  filters_.insert(position, std::move(entry));
  return STATUS_SUCCESS;
}

Status FilterManagerCore::unregister_filter(const std::string& name) {
  std::vector<std::string> paths;
  {
    std::lock_guard lock(mutex_);
    for (const Instance& instance : instances_) {
      if (instance.filter->registration.name == name) paths.push_back(instance.path);
    }
  }
  for (const auto& path : paths) detach(name, path);
  std::shared_ptr<FilterEntry> entry;
  {
    std::lock_guard lock(mutex_);
    const auto found = std::find_if(filters_.begin(), filters_.end(),
                                    [&](const auto& filter) { return filter->registration.name == name; });
    if (found == filters_.end()) return STATUS_OBJECT_NAME_NOT_FOUND;
    entry = *found;
    filters_.erase(found);
  }
  // Events already read may still call it: not from now on, and the running callbacks end first.
  entry->unregister_and_wait();
  return STATUS_SUCCESS;
}

uint64_t FilterManagerCore::notification_bits(const Instance& instance) noexcept {
  return notification_mask(instance.filter->registration.operations) |
         (instance.scope == AttachScope::directory_tree ? FAN_CREATE | FAN_RENAME : 0);
}

Status FilterManagerCore::add_marks(const Instance& instance, const std::string& directory,
                                    fanotify::MarkScope scope) {
  const uint64_t permission = permission_mask(instance.filter->registration.operations);
  const uint64_t notification = notification_bits(instance);
  if (permission != 0) {
    // (Where the file system takes no pre-access marks, reads are marked as FAN_ACCESS_PERM.)
    if (Status s = permissions_.add_mark(directory, scope, permission); !s.ok()) return s;
  }
  if (notification != 0) {
    Status s = notifications_.add_mark(directory, scope, notification);
    if (s == Status(STATUS_NOT_SUPPORTED) && permission != 0) {
      // A file system with a weak fsid (FUSE: zero) cannot share the notification group with
      // file systems that have one (EXDEV): its opens are still decided, its post-operations
      // and new directories are not reported.
      FLTPORT_LOG(warning, "fltmgr",
                  "%s: post-operations are not reported under %s (its file system "
                  "cannot share the notification group)",
                  instance.filter->registration.name.c_str(), directory.c_str());
      s = STATUS_SUCCESS;
    }
    if (!s.ok()) return s;
  }
  return STATUS_SUCCESS;
}

void FilterManagerCore::remove_marks(const std::string& directory, fanotify::MarkScope scope,
                                     uint64_t permission, uint64_t notification, const Instance* leaving) {
  // Marks are shared by every instance on a directory: what another that lists it still needs stays.
  uint64_t keep_permission = 0;
  uint64_t keep_notification = 0;
  for (const Instance& other : instances_) {
    if (&other == leaving || other.marked_directories.count(directory) == 0) continue;
    keep_permission |= permission_mask(other.filter->registration.operations);
    keep_notification |= notification_bits(other);
  }
  if ((permission & ~keep_permission) != 0)
    permissions_.remove_mark(directory, scope, permission & ~keep_permission, keep_permission == 0);
  if ((notification & ~keep_notification) != 0)
    notifications_.remove_mark(directory, scope, notification & ~keep_notification, keep_notification == 0);
}

Status FilterManagerCore::mark_instance(Instance& instance, bool add) {
  const auto scope = instance.scope == AttachScope::mount        ? fanotify::MarkScope::mount
                     : instance.scope == AttachScope::filesystem ? fanotify::MarkScope::filesystem
                                                                 : fanotify::MarkScope::directory;
  if (!add) {
    const uint64_t permission = permission_mask(instance.filter->registration.operations);
    const uint64_t notification = notification_bits(instance);
    for (const auto& directory : instance.marked_directories)
      remove_marks(directory, scope, permission, notification, &instance);
    return STATUS_SUCCESS;
  }
  if (instance.scope == AttachScope::directory_tree) {
    std::vector<std::string> tree;
    if (!list_tree(instance.path, tree)) return STATUS_INSUFFICIENT_RESOURCES;
    instance.marked_directories = {tree.begin(), tree.end()};
  } else {
    instance.marked_directories = {instance.path};
  }
  for (const auto& directory : instance.marked_directories) {
    if (Status s = add_marks(instance, directory, scope); !s.ok()) return s;
  }
  return STATUS_SUCCESS;
}

void FilterManagerCore::follow_directory(const std::string& path, const std::string& old_path, bool moved) {
  // A tree instance covers a directory made or moved into it from then on, with whatever it holds
  // already (a tree moved in comes whole, and a directory made inside this one before its mark was
  // on made no event we saw), and no longer one moved out of it. Marks are on inodes: a directory
  // moved within a tree keeps them, only the names listed change.
  const auto in_tree = [](const Instance& instance, const std::string& where) {
    return instance.scope == AttachScope::directory_tree && !where.empty() && covers(instance.path, where);
  };
  const auto comes_in = [&](const Instance& instance) {
    return in_tree(instance, path) && !in_tree(instance, old_path);
  };
  bool any_comes_in;
  {
    std::lock_guard lock(mutex_);
    any_comes_in = std::any_of(instances_.begin(), instances_.end(), comes_in);
  }
  std::vector<std::string> inside;  // `path` and its subdirectories, read outside the lock
  const bool listed_all = !any_comes_in || list_tree(path, inside);
  std::lock_guard lock(mutex_);
  if (filtering_stopped_) return;
  // Whenever a tree may hold a directory it has not listed, or keep marks on one that left it
  // (moved from a place gone before we could name it), chains are found by path from then on.
  const bool left_unnamed = moved && old_path.empty() &&
                            std::none_of(instances_.begin(), instances_.end(),
                                         [&](const Instance& instance) { return in_tree(instance, path); });
  if (!listed_all || left_unnamed) chains_need_paths_ = true;
  if (!listed_all) {
    FLTPORT_LOG(warning, "fltmgr",
                "%s came into a tree with more than %zu directories: those past them are not filtered "
                "(a mount or filesystem instance covers any number)",
                path.c_str(), kMaxTreeDirectories);
  }
  struct Left {
    std::string now;
    uint64_t permission;
    uint64_t notification;
  };
  std::vector<Left> left;  // what instances the directory left had marked in it, by where it is now
  for (Instance& instance : instances_) {
    const bool was_in = in_tree(instance, old_path);
    const bool is_in = in_tree(instance, path);
    const uint64_t permission = permission_mask(instance.filter->registration.operations);
    const uint64_t notification = notification_bits(instance);
    auto& listed = instance.marked_directories;
    if (comes_in(instance)) {
      for (const auto& directory : inside) {
        // Marked even when listed: the name may be that of a directory deleted or moved since.
        add_marks(instance, directory, fanotify::MarkScope::directory);
        if (listed.count(directory) != 0) continue;
        if (listed.size() < kMaxTreeDirectories) {
          listed.insert(directory);
        } else {
          chains_need_paths_ = true;
        }
      }
    } else if (was_in) {
      std::vector<std::string> renamed;
      for (auto it = listed.begin(); it != listed.end();) {
        if (!covers(old_path, *it)) {
          ++it;
          continue;
        }
        std::string now = path + it->substr(old_path.size());
        if (is_in) {
          renamed.push_back(std::move(now));  // moved within the tree: the same marks, another name
        } else {
          left_tree_since_drained_ = true;
          // (Gone before we could look, no path: its marks went with it.)
          if (!path.empty()) left.push_back({std::move(now), permission, notification});
        }
        it = listed.erase(it);
      }
      listed.insert(renamed.begin(), renamed.end());
    }
  }
  // (An instance that lists it now, because it moved into that one's tree, keeps what it needs.)
  for (const Left& directory : left) {
    remove_marks(directory.now, fanotify::MarkScope::directory, directory.permission, directory.notification,
                 nullptr);
  }
}

Status FilterManagerCore::attach(const std::string& filter_name, const std::string& path, AttachScope scope) {
  std::error_code error;
  const auto canonical = std::filesystem::canonical(path, error);
  if (error || !std::filesystem::is_directory(canonical, error)) return STATUS_OBJECT_NAME_NOT_FOUND;
  std::unique_lock lock(mutex_);
  if (filtering_stopped_) return STATUS_THREAD_IS_TERMINATING;
  const auto filter = std::find_if(filters_.begin(), filters_.end(), [&](const auto& entry) {
    return entry->registration.name == filter_name;
  });
  if (filter == filters_.end()) return STATUS_OBJECT_NAME_NOT_FOUND;
  for (const Instance& instance : instances_) {
    if (instance.filter == *filter && instance.path == canonical.string())
      return STATUS_OBJECT_NAME_COLLISION;
  }
  Instance instance{*filter, canonical.string(), scope, {}, std::make_shared<InstanceCounters>()};
  if (first_root_.empty()) first_root_ = instance.path;
  chains_need_paths_ =
      chains_need_paths_ || scope != AttachScope::directory_tree || instance.path != first_root_;
  if (Status marked = mark_instance(instance, true); !marked.ok()) {
    mark_instance(instance, false);
    return marked;
  }
  instances_.push_back(std::move(instance));
  // The verdicts cached so far were given without this filter: none holds now. In this order (see
  // answer()): a chain found before the attach caches nothing after it, and an ignore mark it put on
  // before is taken back here.
  chain_generation_.fetch_add(1);
  clean_files_.clear();
  lock.unlock();
  forget_ignore_marks();
  return STATUS_SUCCESS;
}

// Takes back the kernel's cached verdicts (ignore marks). The files are found with no lock held: a
// stalled file system then holds up this attach, not the host's shutdown.
void FilterManagerCore::forget_ignore_marks() {
  std::vector<fanotify::IgnoreMark> marks;
  {
    std::shared_lock groups(groups_mutex_);
    if (!groups_open_) return;
    marks = permissions_.ignore_marks();
  }
  const auto files = fanotify::open_marked_files(marks);
  size_t left = marks.size() - files.size();
  {
    std::shared_lock groups(groups_mutex_);
    if (!groups_open_) return;
    for (const auto& [file, mask] : files) {
      if (!permissions_.stop_ignoring_file(file.fd(), mask).ok()) ++left;
    }
  }
  if (left != 0) {
    FLTPORT_LOG(warning, "fltmgr",
                "%zu of %zu cached verdicts could not be taken back (a file system without file handles?): "
                "those files are not shown to the filter just attached until they are written or evicted",
                left, marks.size());
  }
}

Status FilterManagerCore::detach(const std::string& filter_name, const std::string& path) {
  std::error_code error;
  auto canonical = std::filesystem::canonical(path, error);
  const std::string wanted = error ? path : canonical.string();
  std::lock_guard lock(mutex_);
  const auto found = std::find_if(instances_.begin(), instances_.end(), [&](const Instance& instance) {
    return instance.filter->registration.name == filter_name && instance.path == wanted;
  });
  if (found == instances_.end()) return STATUS_OBJECT_NAME_NOT_FOUND;
  mark_instance(*found, false);
  instances_.erase(found);
  return STATUS_SUCCESS;
}

void FilterManagerCore::exempt_process(pid_t pid) {
  std::lock_guard lock(mutex_);
  exempt_.insert(pid);
}

std::vector<std::string> FilterManagerCore::filters() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> names;
  for (const auto& filter : filters_) names.push_back(filter->registration.name);
  return names;
}

std::vector<InstanceInfo> FilterManagerCore::instances() const {
  std::lock_guard lock(mutex_);
  std::vector<InstanceInfo> infos;
  for (const Instance& instance : instances_) {
    InstanceInfo info;
    info.filter = instance.filter->registration.name;
    info.path = instance.path;
    info.scope = instance.scope;
    info.altitude = instance.filter->registration.altitude;
    info.events = instance.counters->events.load();
    info.allowed = instance.counters->allowed.load();
    info.denied = instance.counters->denied.load();
    info.defaults_taken = instance.counters->defaults_taken.load();
    info.post_notifications = instance.counters->posts.load();
    instance.counters->copy_latency(info.latency_us_log2);
    infos.push_back(std::move(info));
  }
  return infos;
}

Result<FilterStatistics> FilterManagerCore::statistics(const std::string& name) const {
  std::lock_guard lock(mutex_);
  for (const auto& filter : filters_) {
    if (filter->registration.name != name) continue;
    FilterStatistics stats;
    stats.events = filter->events.load();
    stats.allowed = filter->allowed.load();
    stats.denied = filter->denied.load();
    stats.defaults_taken = filter->defaults_taken.load();
    stats.cache_hits = filter->cache_hits.load();
    stats.post_notifications = filter->posts.load();
    filter->copy_latency(stats.latency_us_log2);
    return stats;
  }
  return Status(STATUS_OBJECT_NAME_NOT_FOUND);
}

HostStatistics FilterManagerCore::host_statistics() const {
  HostStatistics stats;
  stats.waiting = waiting_.load();
  stats.waiting_limit = waiting_limit_;
  stats.overload_defaults = overload_defaults_.load();
  {
    std::shared_lock groups(groups_mutex_);
    int bytes = 0;
    // fanotify's FIONREAD counts FAN_EVENT_METADATA_LEN per queued event.
    if (groups_open_ && ::ioctl(permissions_.fd(), FIONREAD, &bytes) == 0 && bytes > 0)
      stats.kernel_queued = static_cast<uint64_t>(bytes) / FAN_EVENT_METADATA_LEN;
    stats.permission_overflows = permissions_.overflows();
    stats.notification_overflows = notifications_.overflows();
  }
  {
    std::lock_guard lock(tasks_mutex_);
    stats.post_operations_queued = notifications_queue_.size();
    stats.post_operations_dropped = post_operations_dropped_.load();
  }
  return stats;
}

// ---- the public class ----

FilterManager::FilterManager(std::shared_ptr<FilterManagerCore> core) noexcept : core_(std::move(core)) {}
FilterManager::~FilterManager() {
  if (core_) core_->shutdown();
}

Result<std::unique_ptr<FilterManager>> FilterManager::create(FilterManagerOptions options) {
  auto core = FilterManagerCore::create(std::move(options));
  if (!core) return core.status();
  return std::unique_ptr<FilterManager>(new FilterManager(std::move(*core)));
}

Status FilterManager::register_filter(FilterRegistration registration) {
  return core_->register_filter(std::move(registration));
}
Status FilterManager::unregister_filter(const std::string& name) {
  return core_->unregister_filter(name);
}
Status FilterManager::attach(const std::string& filter, const std::string& path, AttachScope scope) {
  return core_->attach(filter, path, scope);
}
Status FilterManager::detach(const std::string& filter, const std::string& path) {
  return core_->detach(filter, path);
}
void FilterManager::exempt_process(pid_t pid) {
  core_->exempt_process(pid);
}
std::vector<std::string> FilterManager::filters() const {
  return core_->filters();
}
std::vector<InstanceInfo> FilterManager::instances() const {
  return core_->instances();
}
Result<FilterStatistics> FilterManager::statistics(const std::string& filter) const {
  return core_->statistics(filter);
}
HostStatistics FilterManager::host_statistics() const {
  return core_->host_statistics();
}
size_t FilterManager::stop_filtering() noexcept {
  return core_->stop_filtering();
}
void FilterManager::shutdown() noexcept {
  core_->shutdown();
}

}  // namespace fltport
