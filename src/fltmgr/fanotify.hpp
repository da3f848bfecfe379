// fanotify, as the filter manager uses it: the groups, their marks, the events they read and the
// answers they give. Mechanism only: which filter sees what is decided above (filter_manager.*).
//
// Two groups, because the kernel does not let one group both take permission decisions and report
// directory entries by file handle:
//   - a permission group (FAN_CLASS_PRE_CONTENT) for open, open-for-exec and read (access /
//     pre-access with a byte range), answered with allow / deny / deny with an errno;
//   - a notification group (FAN_CLASS_NOTIF with FAN_REPORT_DFID_NAME_TARGET and FAN_REPORT_FID) for
//     close-after-write, create, delete, rename and attribute change.
#pragma once

#include <fltport/result.hpp>

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/unique_fd.hpp"
#include "transport/unix_socket.hpp"

namespace fltport::fanotify {

// Event bits of the running kernel that Debian 12's headers (Linux 6.1) do not have yet.
inline constexpr uint64_t kPreAccess = 0x00100000;  // FAN_PRE_ACCESS, Linux >= 6.14

enum class MarkScope { directory, mount, filesystem };

struct Capabilities {
  bool pre_content_class = false;  // FAN_CLASS_PRE_CONTENT groups
  bool pre_access = false;         // FAN_PRE_ACCESS with byte ranges
  bool deny_errno = false;         // FAN_DENY_ERRNO(err) in responses
  bool ignore_marks = false;       // FAN_MARK_IGNORE (else the legacy FAN_MARK_IGNORED_MASK)
};

// One permission event: the kernel holds the opening (reading, executing) process until
// PermissionGroup::respond is called with this event's fd, or the group is closed.
struct PermissionEvent {
  uint64_t mask = 0;                     // FAN_OPEN_PERM, FAN_OPEN_EXEC_PERM, FAN_ACCESS_PERM or kPreAccess
  int fd = -1;                           // the file, opened by the kernel; reads through it make no events
  pid_t pid = 0;                         // the process (thread group) that asked
  std::optional<uint64_t> range_offset;  // kPreAccess: the byte range about to be read
  std::optional<uint64_t> range_count;
};

// One notification (the operation has happened).
struct Notification {
  uint64_t mask = 0;  // FAN_CLOSE_WRITE, FAN_CREATE, FAN_DELETE, FAN_RENAME, FAN_ATTRIB (| FAN_ONDIR)
  pid_t pid = 0;
  std::string path;      // the object, or for rename the new path; resolved from the file handles
  std::string old_path;  // rename only
  bool is_directory = false;
};

// Both groups: one thread reads (read_events); respond, ignore_until_modified and the accessors may
// be called from any thread meanwhile. Marks are changed by one thread at a time.
// An ignore mark of a permission group, as /proc/self/fdinfo lists it.
struct IgnoreMark {
  dev_t device = 0;  // the file system's (its superblock's)
  ino_t inode = 0;
  uint64_t mask = 0;                  // the permission events ignored
  std::vector<unsigned char> handle;  // the inode's file handle; empty when none is listed
  int handle_type = 0;
};

// The files `marks` are on, opened O_PATH by handle (no event) on a mount of their file system,
// each with its mask. Reads file systems (a stalled one can hold it up): call it with no lock held.
// A file gone meanwhile, or without a handle, is not in the list.
std::vector<std::pair<UniqueFd, uint64_t>> open_marked_files(const std::vector<IgnoreMark>& marks);

class PermissionGroup {
 public:
  PermissionGroup() noexcept = default;  // no group: fd() is -1, every call fails
  PermissionGroup(PermissionGroup&& other) noexcept;
  PermissionGroup& operator=(PermissionGroup&& other) noexcept;
  ~PermissionGroup();

  // Opens a FAN_CLASS_PRE_CONTENT group when the kernel has one (FAN_CLASS_CONTENT otherwise),
  // FAN_CLOEXEC | FAN_NONBLOCK, event files O_RDONLY | O_LARGEFILE | O_CLOEXEC.
  static Result<PermissionGroup> open();
  const Capabilities& capabilities() const noexcept;
  int fd() const noexcept;  // poll() it for POLLIN

  // mask: permission bits. directory: inode mark with FAN_EVENT_ON_CHILD (the directory's own
  // entries; a tree is marked directory by directory by the caller). mount/filesystem: the whole
  // mount / filesystem `path` is on. Where the filesystem has no pre-content events (tmpfs),
  // kPreAccess is marked as FAN_ACCESS_PERM (reads are asked about, without their range); where the
  // kernel has none, kPreAccess is dropped, and alone it is STATUS_NOT_SUPPORTED. With both
  // kPreAccess and FAN_ACCESS_PERM, each read asks twice (FAN_PRE_ACCESS with its range first).
  Status add_mark(const std::string& path, MarkScope scope, uint64_t mask);
  // `whole`: the group keeps nothing on `path`, and the mark goes. Otherwise the bits left keep the
  // flags that make a directory's mark apply to its files (removing those flags would end that).
  Status remove_mark(const std::string& path, MarkScope scope, uint64_t mask, bool whole = true);
  // Verdict cache: no more `mask` events for this file until it is modified (the kernel drops an
  // ignore mark without FAN_MARK_IGNORED_SURV_MODIFY on modification).
  Status ignore_until_modified(int event_fd, uint64_t mask);
  // Takes back what ignore_until_modified() did (a file that changed before the mark was there).
  Status stop_ignoring(int event_fd, uint64_t mask);
  // The group's ignore marks (the kernel half of a verdict cache), from /proc/self/fdinfo. Reads
  // no file system. To take them back: open_marked_files(), then stop_ignoring_file() on each.
  std::vector<IgnoreMark> ignore_marks() const;
  // Takes back the ignore `mask` on `file` (any fd of it, O_PATH too); ENOENT (gone) is success.
  Status stop_ignoring_file(int file, uint64_t mask);
  Status flush_marks();  // every mark of this group, all scopes
  // Closes the group: the kernel allows every event still unanswered. Nothing else may use it then.
  void close() noexcept;

  // Reads what is queued (non-blocking): appends events; never waits. The caller owns each
  // event's fd from then on. A queue overflow (FAN_Q_OVERFLOW) is counted in `overflows`.
  Status read_events(std::vector<PermissionEvent>& events);
  uint64_t overflows() const noexcept;
  // Answers one event. The caller still owns (and later closes) event_fd: a filter may still be
  // reading through it. deny_errno 0 = plain FAN_DENY (the opener sees EPERM); otherwise
  // FAN_DENY_ERRNO(deny_errno) where the kernel has it, plain FAN_DENY elsewhere.
  Status respond(int event_fd, bool allow, int deny_errno = 0) noexcept;

 private:
  PermissionGroup(UniqueFd fd, Capabilities capabilities) noexcept;
  Status mark(const std::string& path, MarkScope scope, uint64_t mask, bool add, bool whole = true);

  UniqueFd fd_;
  Capabilities capabilities_;
  std::atomic<uint64_t> overflows_{0};
};

class NotificationGroup {
 public:
  NotificationGroup() noexcept = default;  // no group: fd() is -1, every call fails
  NotificationGroup(NotificationGroup&& other) noexcept;
  NotificationGroup& operator=(NotificationGroup&& other) noexcept;
  ~NotificationGroup();

  static Result<NotificationGroup> open();
  int fd() const noexcept;
  Status add_mark(const std::string& path, MarkScope scope, uint64_t mask);
  Status remove_mark(const std::string& path, MarkScope scope, uint64_t mask, bool whole = true);  // as above
  Status flush_marks();  // every mark of this group, all scopes
  void close() noexcept;
  // Reads what is queued (non-blocking), as PermissionGroup::read_events. An event whose object
  // cannot be named any more (its directory is gone) is dropped. rename: a move out of the marked
  // directories has only old_path, a move into them only path.
  Status read_events(std::vector<Notification>& events);
  uint64_t overflows() const noexcept;  // FAN_Q_OVERFLOW seen: notifications were lost

 private:
  explicit NotificationGroup(UniqueFd fd) noexcept;
  Status mark(const std::string& path, MarkScope scope, uint64_t mask, bool add, bool whole = true);
  std::optional<std::string> resolve(uint64_t fsid, const void* handle, size_t handle_size) const;

  struct Marked {
    uint64_t fsid = 0;
    uint64_t mask = 0;
  };

  UniqueFd fd_;
  // open_by_handle_at needs a descriptor on the handle's filesystem: one per fsid, opened on the
  // first path marked there and closed with the last mark there, because it keeps the
  // mount busy (umount fails with EBUSY while it is open).
  std::map<uint64_t, UniqueFd> mount_fds_;
  std::map<std::pair<MarkScope, std::string>, Marked> marks_;
  // Marks change (attach, new directories) while another thread reads events.
  std::unique_ptr<std::mutex> marks_mutex_ = std::make_unique<std::mutex>();
  std::atomic<uint64_t> overflows_{0};
};

}  // namespace fltport::fanotify
