// The filter manager's core: which filters see an event (instances, altitude), the chain of
// pre-operation callbacks, pending verdicts, deadlines, the verdict cache and statistics.
#pragma once

#include <fltport/filter.hpp>

#include <sys/stat.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <queue>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "fltmgr/fanotify.hpp"

namespace fltport {

struct FilterEntry;
struct InstanceCounters;
struct PermissionRequest;

class FilterManagerCore : public std::enable_shared_from_this<FilterManagerCore> {
 public:
  static Result<std::shared_ptr<FilterManagerCore>> create(FilterManagerOptions options);
  ~FilterManagerCore();

  Status register_filter(FilterRegistration registration);
  Status unregister_filter(const std::string& name);
  Status attach(const std::string& filter, const std::string& path, AttachScope scope);
  Status detach(const std::string& filter, const std::string& path);
  void exempt_process(pid_t pid);
  std::vector<std::string> filters() const;
  std::vector<InstanceInfo> instances() const;
  Result<FilterStatistics> statistics(const std::string& filter) const;
  HostStatistics host_statistics() const;
  size_t stop_filtering() noexcept;
  void shutdown() noexcept;

  // A filter's verdict for `request` at chain position `index` (now or completed later).
  bool resume(const std::shared_ptr<PermissionRequest>& request, size_t index, const Verdict& verdict,
              bool by_default);

 private:
  struct Instance {
    std::shared_ptr<FilterEntry> filter;
    std::string path;  // canonical
    AttachScope scope;
    std::unordered_set<std::string> marked_directories;  // directory_tree: every directory marked, by name
    std::shared_ptr<InstanceCounters> counters;
  };
  struct Deadline {
    std::chrono::steady_clock::time_point when;
    std::weak_ptr<PermissionRequest> request;
    bool operator>(const Deadline& other) const { return when > other.when; }
  };
  struct FileIdentity {
    dev_t device;
    ino_t inode;
    bool operator==(const FileIdentity&) const = default;
  };
  struct FileIdentityHash {
    size_t operator()(const FileIdentity& id) const noexcept {
      return std::hash<uint64_t>()(id.inode ^ (id.device << 1));
    }
  };
  struct FileVersion {
    timespec modified;
    timespec changed;
    off_t size;
    static FileVersion of(const struct stat& file) noexcept {
      return {file.st_mtim, file.st_ctim, file.st_size};
    }
    bool operator==(const FileVersion& other) const noexcept {
      return size == other.size && modified.tv_sec == other.modified.tv_sec &&
             modified.tv_nsec == other.modified.tv_nsec && changed.tv_sec == other.changed.tv_sec &&
             changed.tv_nsec == other.changed.tv_nsec;
    }
  };

  FilterManagerCore(fanotify::PermissionGroup permissions, fanotify::NotificationGroup notifications,
                    FilterManagerOptions options);
  using Task = std::function<void()>;
  // Appends the tasks of the events read; false when one of them runs post-operations.
  bool read_batch(std::vector<Task>& batch) noexcept;
  void on_permission_event(fanotify::PermissionEvent& event, std::vector<Task>& batch);
  void on_notification(const fanotify::Notification& notification, std::vector<Task>& batch);
  void deadline_loop() noexcept;
  void take_default(const std::shared_ptr<PermissionRequest>& request);
  bool answer_without_callbacks(const std::shared_ptr<PermissionRequest>& request);
  void watch_reader();
  void continue_chain(const std::shared_ptr<PermissionRequest>& request, size_t from);
  // The one answer to the kernel (false if another came first). `default_of`: the chain position
  // of the filter whose default this is, counted as such.
  static constexpr size_t kNoDefault = SIZE_MAX;
  bool answer(PermissionRequest& request, bool allow, int error, bool cache, size_t default_of = kNoDefault);
  void worker() noexcept;
  void run_post_operations();

  uint64_t permission_mask(OperationSet operations) const noexcept;
  static uint64_t notification_mask(OperationSet operations) noexcept;
  Status mark_instance(Instance& instance, bool add);
  // The notification bits `instance` marks: its filter's post-operations, and for a tree what
  // following its directories takes.
  static uint64_t notification_bits(const Instance& instance) noexcept;
  // The marks `instance` needs on `directory` (or the mount or filesystem it names).
  Status add_marks(const Instance& instance, const std::string& directory, fanotify::MarkScope scope);
  // Takes these bits off `directory`'s marks, but what another instance listing it needs
  // (`leaving`: one still listed that is going, whose needs do not count).
  void remove_marks(const std::string& directory, fanotify::MarkScope scope, uint64_t permission,
                    uint64_t notification, const Instance* leaving);
  // A directory made or moved (from old_path, "" when the kernel could not name it): tree
  // instances mark it, rename it or unmark it.
  void follow_directory(const std::string& path, const std::string& old_path, bool moved);
  // The filters (highest altitude first) that see `operation` on `path`, and for each the
  // instance that covers it. With no path: false (and nothing found) if the answer depends on it.
  // `old_path` (a rename's): filters whose instance covers only where the file was are in too.
  bool chain_for(Operation operation, const std::string* path,
                 std::vector<std::shared_ptr<FilterEntry>>& chain,
                 std::vector<std::shared_ptr<InstanceCounters>>& instances,
                 const std::string* old_path = nullptr) const;
  bool exempt(pid_t pid) const;
  // The user-space verdict cache: allowed with caching before, and unchanged since.
  // Looks at the file (`file`: what the verdict will be about; st_mode 0 if fstat failed) and its
  // cached verdict.
  bool known_clean(int fd, struct stat& file, Operation operation);
  void forget_ignore_marks();

  fanotify::PermissionGroup permissions_;
  fanotify::NotificationGroup notifications_;
  int wake_fd_ = -1;  // eventfd: wakes the event loop for shutdown and new deadlines
  // The reader's spin (read_batch), steady clock ns: when a permission event was last read or
  // answered (by any worker); and, touched only by the reader (one worker at a time, handed over
  // under tasks_mutex_), when it last read some and the time between its last two reads.
  std::atomic<int64_t> last_permission_event_ns_{0};
  int64_t last_permission_read_ns_ = 0;
  int64_t permission_read_gap_ns_ = INT64_MAX;
  // Also the reader's: a directory left a tree since the permission queue was last seen empty, so
  // events read until then may have come through its marks and are matched by path.
  bool left_tree_since_drained_ = false;

  // Responses to the kernel hold this shared; shutdown takes it exclusively before closing groups.
  mutable std::shared_mutex groups_mutex_;
  bool groups_open_ = true;
  bool filtering_stopped_ = false;  // with mutex_: marks flushed, every event answered as it comes

  mutable std::mutex mutex_;                           // filters, instances, exemptions, deadlines, cache
  std::vector<std::shared_ptr<FilterEntry>> filters_;  // highest altitude first
  std::vector<Instance> instances_;
  // Whether an event's filters are found by its path (chain_for). Not while every instance
  // attached here has been a tree on the same root: whatever is marked is in that tree then (a
  // directory moved out loses its marks; a file of the tree reached through a bind mount is still
  // the tree's). A mount or filesystem mark covers more than the path it was attached by. For good
  // once set: events read after a detach may have come through the marks it removed.
  std::string first_root_;
  bool chains_need_paths_ = false;
  std::unordered_set<pid_t> exempt_;
  std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>> deadlines_;
  // Clean verdicts, by file: for the version judged, and the operations whose chains gave them.
  struct CleanVerdict {
    FileVersion version;
    OperationSet operations;
  };
  std::unordered_map<FileIdentity, CleanVerdict, FileIdentityHash> clean_files_;
  // Counts the attaches: a verdict is cached only by chains found since the last one (a filter
  // attached later must be asked about files already cached; the attach drops the cache).
  std::atomic<uint64_t> chain_generation_{0};

  // Events read and not answered: each holds an fd and memory, so there is a ceiling (from the
  // fd limit); beyond it an event takes its filter's default at once.
  std::atomic<uint64_t> waiting_{0};
  uint64_t waiting_limit_ = 0;
  std::atomic<uint64_t> overload_defaults_{0};
  std::atomic<uint64_t> post_operations_dropped_{0};
  std::atomic<size_t> task_backlog_{0};  // tasks_.size(), read without tasks_mutex_

  std::condition_variable deadlines_changed_;  // with mutex_
  // When the deadline thread will next look by itself (max while it waits for any change, min while
  // it runs): an event due earlier wakes it, any other does not (no wake-up per event).
  std::chrono::steady_clock::time_point deadline_thread_wakes_ = std::chrono::steady_clock::time_point::min();
  bool deadlines_stopping_ = false;
  std::thread deadline_thread_;

  mutable std::mutex tasks_mutex_;
  std::condition_variable tasks_ready_;
  std::deque<Task> tasks_;
  std::vector<std::thread> workers_;
  bool reading_ = false;                  // a worker waits for events
  std::atomic<int64_t> inline_since_{0};  // a worker runs callbacks with nobody reading, since then
  struct PostOperation {
    std::vector<std::shared_ptr<FilterEntry>> chain;
    std::vector<std::shared_ptr<InstanceCounters>> instances;
    FileEvent event;
  };
  std::deque<PostOperation> notifications_queue_;
  bool posting_ = false;  // a worker is draining notifications_queue_
  size_t idle_workers_ = 0;
  bool stopping_ = false;
  bool shut_down_ = false;
};

}  // namespace fltport
