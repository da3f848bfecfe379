#include "fltmgr/fanotify.hpp"

#include <fcntl.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string_view>
#include <vector>

#include "base/log.hpp"
#include "fltmgr/fatal_signal_guard.hpp"

// What the running kernel has and Debian 12's <linux/fanotify.h> (Linux 6.1) does not.
// FAN_PRE_ACCESS, the range info record and FAN_DENY_ERRNO: Linux 6.14.
#ifndef FAN_PRE_ACCESS
#define FAN_PRE_ACCESS 0x00100000
#endif
#ifndef FAN_EVENT_INFO_TYPE_RANGE
#define FAN_EVENT_INFO_TYPE_RANGE 6
struct fanotify_event_info_range {
  struct fanotify_event_info_header hdr;
  __u32 pad;
  __u64 offset;
  __u64 count;
};
#endif
#ifndef FAN_DENY_ERRNO
#define FAN_ERRNO_BITS 8
#define FAN_ERRNO_SHIFT (32 - FAN_ERRNO_BITS)
#define FAN_ERRNO_MASK ((1 << FAN_ERRNO_BITS) - 1)
#define FAN_DENY_ERRNO(err) (FAN_DENY | ((((__u32)(err)) & FAN_ERRNO_MASK) << FAN_ERRNO_SHIFT))
#endif
// FAN_MARK_IGNORE: Linux 6.0 (in Debian 12's header already; kept for older headers).
#ifndef FAN_MARK_IGNORE
#define FAN_MARK_IGNORE 0x00000400
#endif

namespace fltport::fanotify {

static_assert(kPreAccess == FAN_PRE_ACCESS);
static_assert(sizeof(fanotify_event_info_range) == 24, "the layout of Linux 6.14's uapi");

namespace {

constexpr const char* kComponent = "fanotify";
constexpr uint64_t kPermissionMask = FAN_OPEN_PERM | FAN_ACCESS_PERM | FAN_OPEN_EXEC_PERM | kPreAccess;

// 16 KiB holds hundreds of permission events; the largest notification (three handle records
// with a name each) is under 1.5 KiB.
constexpr size_t kReadBuffer = 16384;
constexpr size_t kLargestEvent = 4096;
// Reads per read_events call: bounded so that one call never hands out an unbounded number of fds.
constexpr int kMaxReads = 8;

Status status_from_errno(int error, Status invalid = STATUS_INVALID_PARAMETER) noexcept {
  switch (error) {
    case EPERM:
    case EACCES:
      return STATUS_ACCESS_DENIED;
    case ENOENT:
      return STATUS_OBJECT_NAME_NOT_FOUND;
    case ENAMETOOLONG:
    case ELOOP:
      return STATUS_OBJECT_NAME_INVALID;
    case ENOTDIR:
    case EISDIR:
      return STATUS_INVALID_PARAMETER;
    case EINVAL:
      return invalid;
    case ENOSYS:
    case EOPNOTSUPP:
    case EXDEV:
    case ENODEV:
      return STATUS_NOT_SUPPORTED;
    case ENOMEM:
    case ENOSPC:  // fanotify's max_user_marks
    case EMFILE:  // max_user_groups, or the fd table
    case ENFILE:
      return STATUS_INSUFFICIENT_RESOURCES;
    case EBADF:
      return STATUS_INVALID_HANDLE;
    case EEXIST:
      return STATUS_OBJECT_NAME_COLLISION;
    default:
      return STATUS_UNSUCCESSFUL;
  }
}

unsigned scope_flags(MarkScope scope) noexcept {
  switch (scope) {
    case MarkScope::mount:
      return FAN_MARK_MOUNT;
    case MarkScope::filesystem:
      return FAN_MARK_FILESYSTEM;
    case MarkScope::directory:
      break;
  }
  return FAN_MARK_INODE | FAN_MARK_ONLYDIR;
}

const char* scope_name(MarkScope scope) noexcept {
  switch (scope) {
    case MarkScope::mount:
      return "mount";
    case MarkScope::filesystem:
      return "filesystem";
    case MarkScope::directory:
      break;
  }
  return "directory";
}

// EINVAL for a mount or filesystem mark means the kernel takes these events on inode marks only
// (directory entry events on mount marks); for a directory mark, a bad request.
Status mark_status(int error, MarkScope scope) noexcept {
  return status_from_errno(error,
                           scope == MarkScope::directory ? STATUS_INVALID_PARAMETER : STATUS_NOT_SUPPORTED);
}

// A removal that names no mark is checked like any other (flags, mask, group class) and then fails
// with ENOENT: so it tells what the kernel accepts without changing anything.
bool mark_accepted(int group_fd, unsigned flags, uint64_t mask) noexcept {
  return ::fanotify_mark(group_fd, FAN_MARK_REMOVE | flags, mask, AT_FDCWD, "/") == 0 || errno == ENOENT;
}

Capabilities probe(int group_fd, bool pre_content) noexcept {
  Capabilities caps;
  caps.pre_content_class = pre_content;
  caps.pre_access = pre_content && mark_accepted(group_fd, 0, FAN_PRE_ACCESS);
  caps.ignore_marks = mark_accepted(group_fd, FAN_MARK_IGNORE, FAN_OPEN_PERM);
  // Likewise a response is checked before its event is looked up: FAN_DENY_ERRNO for an fd that no
  // event can have gives ENOENT where the kernel takes errnos (6.14+, pre-content groups), EINVAL
  // elsewhere. No live event needed.
  if (pre_content) {
    fanotify_response response{};
    response.fd = INT_MAX;
    response.response = FAN_DENY_ERRNO(EIO);
    caps.deny_errno = ::write(group_fd, &response, sizeof response) >= 0 || errno == ENOENT;
  }
  return caps;
}

// The fanotify event records of one read(). Lengths from the kernel are checked all the same.
// `each(metadata, info, info_size)`; `malformed(metadata)` for an event whose lengths do not fit.
template <class Each, class Malformed>
Status walk_events(const unsigned char* data, size_t size, Each&& each, Malformed&& malformed) {
  size_t pos = 0;
  while (size - pos >= FAN_EVENT_METADATA_LEN) {
    fanotify_event_metadata meta;
    std::memcpy(&meta, data + pos, sizeof meta);  // records are only 4-aligned
    if (meta.vers != FANOTIFY_METADATA_VERSION) {
      FLTPORT_LOG(error, kComponent, "event metadata version %u, expected %u", meta.vers,
                  FANOTIFY_METADATA_VERSION);
      return STATUS_NOT_SUPPORTED;
    }
    if (meta.event_len < FAN_EVENT_METADATA_LEN || meta.event_len > size - pos ||
        meta.metadata_len < FAN_EVENT_METADATA_LEN || meta.metadata_len > meta.event_len) {
      FLTPORT_LOG(error, kComponent, "malformed event: event_len %u, metadata_len %u, %zu bytes left",
                  meta.event_len, meta.metadata_len, size - pos);
      malformed(meta);
      return STATUS_UNSUCCESSFUL;
    }
    each(meta, data + pos + meta.metadata_len, size_t{meta.event_len} - meta.metadata_len);
    pos += meta.event_len;
  }
  if (pos != size) FLTPORT_LOG(warning, kComponent, "%zu stray bytes after the last event", size - pos);
  return STATUS_SUCCESS;
}

// `each(info_type, record, record_size)` for each info record of one event.
template <class Each>
void walk_info(const unsigned char* data, size_t size, Each&& each) {
  size_t pos = 0;
  while (size - pos >= sizeof(fanotify_event_info_header)) {
    fanotify_event_info_header header;
    std::memcpy(&header, data + pos, sizeof header);
    if (header.len < sizeof header || header.len > size - pos) {
      FLTPORT_LOG(warning, kComponent, "malformed info record: type %u, len %u, %zu bytes left",
                  header.info_type, header.len, size - pos);
      return;
    }
    each(header.info_type, data + pos, size_t{header.len});
    pos += header.len;
  }
}

// Reads the group until it is empty, kMaxReads times at most; `parse(buffer, size)`.
template <class Parse>
Status read_group(int group_fd, Parse&& parse) {
  alignas(8) unsigned char buffer[kReadBuffer];
  bool appended = false;
  for (int reads = 0; reads < kMaxReads;) {
    const ssize_t got = ::read(group_fd, buffer, sizeof buffer);
    if (got < 0) {
      const int error = errno;
      if (error == EINTR) continue;
      if (error == EAGAIN) return STATUS_SUCCESS;
      // EMFILE/ENFILE: the kernel could not open the event's file (and denied a permission event).
      FLTPORT_LOG(warning, kComponent, "read: %s", std::strerror(error));
      return appended ? STATUS_SUCCESS : status_from_errno(error);
    }
    ++reads;
    if (got == 0) return STATUS_SUCCESS;
    const Status status = parse(buffer, static_cast<size_t>(got));
    if (!status.ok()) return status;
    appended = true;
    // The kernel fills the buffer while the next event fits: a short read emptied the queue.
    if (static_cast<size_t>(got) + kLargestEvent <= sizeof buffer) return STATUS_SUCCESS;
  }
  return STATUS_SUCCESS;
}

// The handle records: FID, DFID, DFID_NAME, OLD_DFID_NAME, NEW_DFID_NAME.
struct FidRecord {
  uint64_t fsid = 0;
  const unsigned char* handle = nullptr;  // a struct file_handle, handle_size bytes, unaligned
  size_t handle_size = 0;
  std::string_view name;  // *_NAME records
};

std::optional<FidRecord> parse_fid(const unsigned char* record, size_t size, bool with_name) {
  constexpr size_t kFixed = sizeof(fanotify_event_info_header) + sizeof(__kernel_fsid_t);
  if (size < kFixed + sizeof(file_handle)) return std::nullopt;
  __kernel_fsid_t fsid;
  std::memcpy(&fsid, record + sizeof(fanotify_event_info_header), sizeof fsid);
  file_handle head;
  std::memcpy(&head, record + kFixed, sizeof head);
  const size_t handle_size = sizeof(file_handle) + head.handle_bytes;
  if (head.handle_bytes > MAX_HANDLE_SZ || handle_size > size - kFixed) return std::nullopt;
  FidRecord fid;
  fid.fsid = (uint64_t{static_cast<uint32_t>(fsid.val[0])} << 32) | static_cast<uint32_t>(fsid.val[1]);
  fid.handle = record + kFixed;
  fid.handle_size = handle_size;
  if (with_name) {
    const char* name = reinterpret_cast<const char*>(record + kFixed + handle_size);
    const size_t room = size - kFixed - handle_size;
    const void* end = std::memchr(name, '\0', room);
    if (end == nullptr) return std::nullopt;
    fid.name = std::string_view(name, static_cast<const char*>(end) - name);
  }
  return fid;
}

std::string join(const std::string& dir, std::string_view name) {
  // Events on a marked directory itself name it ".".
  if (name.empty() || name == ".") return dir;
  std::string path = dir;
  if (path.empty() || path.back() != '/') path += '/';
  path += name;
  return path;
}

std::optional<std::string> fd_path(int fd) {
  char link[32];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  char target[PATH_MAX];
  const ssize_t length = ::readlink(link, target, sizeof target);
  if (length <= 0 || static_cast<size_t>(length) >= sizeof target) return std::nullopt;
  return std::string(target, static_cast<size_t>(length));
}

}  // namespace

// ---- PermissionGroup ----

PermissionGroup::PermissionGroup(UniqueFd fd, Capabilities capabilities) noexcept
    : fd_(std::move(fd)), capabilities_(capabilities) {}

PermissionGroup::PermissionGroup(PermissionGroup&& other) noexcept
    : fd_(std::move(other.fd_)),
      capabilities_(std::exchange(other.capabilities_, Capabilities{})),
      overflows_(other.overflows_.exchange(0)) {}

PermissionGroup::~PermissionGroup() {
  close();
}

void PermissionGroup::close() noexcept {
  forget_group_fd(fd_.fd());  // before the number can be reused
  fd_ = UniqueFd();
}

PermissionGroup& PermissionGroup::operator=(PermissionGroup&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::move(other.fd_);
    capabilities_ = std::exchange(other.capabilities_, Capabilities{});
    overflows_.store(other.overflows_.exchange(0));
  }
  return *this;
}

Result<PermissionGroup> PermissionGroup::open() {
  // O_NOATIME: a filter that reads the file (a scanner) leaves its access time alone, as a
  // Windows scanner leaves the last access time; and the read dirties no inode, which on ext4
  // cost the host a journal update on the first scan of every file.
  constexpr unsigned kEventFlags = O_RDONLY | O_LARGEFILE | O_CLOEXEC | O_NOATIME;
  bool pre_content = true;
  int fd = ::fanotify_init(FAN_CLASS_PRE_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK, kEventFlags);
  if (fd < 0 && errno != EPERM) {
    pre_content = false;
    fd = ::fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK, kEventFlags);
  }
  if (fd < 0) {
    const int error = errno;
    FLTPORT_LOG(warning, kComponent, "fanotify_init (permission group): %s", std::strerror(error));
    return status_from_errno(error, STATUS_NOT_SUPPORTED);
  }
  const Capabilities caps = probe(fd, pre_content);
  FLTPORT_LOG(info, kComponent,
              "permission group: pre_content_class %d, pre_access %d, deny_errno %d, ignore_marks %d",
              caps.pre_content_class, caps.pre_access, caps.deny_errno, caps.ignore_marks);
  guard_group_fd(fd);
  return PermissionGroup(UniqueFd(fd), caps);
}

const Capabilities& PermissionGroup::capabilities() const noexcept {
  return capabilities_;
}
int PermissionGroup::fd() const noexcept {
  return fd_.fd();
}
uint64_t PermissionGroup::overflows() const noexcept {
  return overflows_.load(std::memory_order_relaxed);
}

Status PermissionGroup::add_mark(const std::string& path, MarkScope scope, uint64_t mask) {
  return mark(path, scope, mask, true);
}

Status PermissionGroup::remove_mark(const std::string& path, MarkScope scope, uint64_t mask, bool whole) {
  return mark(path, scope, mask, false, whole);
}

Status PermissionGroup::mark(const std::string& path, MarkScope scope, uint64_t mask, bool add, bool whole) {
  if (!fd_.valid()) return STATUS_INVALID_HANDLE;
  if (mask == 0 || (mask & ~kPermissionMask) != 0) return STATUS_INVALID_PARAMETER;
  if (!capabilities_.pre_access) mask &= ~kPreAccess;
  if (mask == 0) return STATUS_NOT_SUPPORTED;
  const unsigned flags = (add ? FAN_MARK_ADD : FAN_MARK_REMOVE) | scope_flags(scope);
  const uint64_t event_flags = scope == MarkScope::directory && (add || whole) ? FAN_EVENT_ON_CHILD : 0;
  int rc = ::fanotify_mark(fd_.fd(), flags, mask | event_flags, AT_FDCWD, path.c_str());
  if (rc != 0 && errno == EOPNOTSUPP && (mask & kPreAccess) != 0) {
    // Pre-content events need the filesystem's consent (ext4, xfs, btrfs give it; tmpfs does not):
    // reads are seen there as FAN_ACCESS_PERM, without the byte range.
    FLTPORT_LOG(info, kComponent, "%s: no pre-access events on this filesystem", path.c_str());
    mask = (mask & ~kPreAccess) | FAN_ACCESS_PERM;
    rc = ::fanotify_mark(fd_.fd(), flags, mask | event_flags, AT_FDCWD, path.c_str());
  }
  if (rc != 0) {
    const int error = errno;
    FLTPORT_LOG(info, kComponent, "%s %s mark 0x%llx on %s: %s", add ? "add" : "remove", scope_name(scope),
                static_cast<unsigned long long>(mask), path.c_str(), std::strerror(error));
    return mark_status(error, scope);
  }
  return STATUS_SUCCESS;
}

Status PermissionGroup::ignore_until_modified(int event_fd, uint64_t mask) {
  if (!fd_.valid() || event_fd < 0) return STATUS_INVALID_HANDLE;
  if (mask == 0 || (mask & ~kPermissionMask) != 0) return STATUS_INVALID_PARAMETER;
  if (!capabilities_.pre_access) mask &= ~kPreAccess;
  if (mask == 0) return STATUS_NOT_SUPPORTED;
  // One style per group: the kernel refuses a legacy ignore mask on a FAN_MARK_IGNORE mark.
  // Evictable: a verdict cache must not pin every inode it has seen; an evicted inode just
  // comes back as a new event.
  unsigned flags = FAN_MARK_ADD | (capabilities_.ignore_marks ? FAN_MARK_IGNORE : FAN_MARK_IGNORED_MASK) |
                   FAN_MARK_EVICTABLE;
  for (;;) {
    // dirfd = the event's file, pathname NULL: the very file of the event, whatever its path now.
    if (::fanotify_mark(fd_.fd(), flags, mask, event_fd, nullptr) == 0) return STATUS_SUCCESS;
    const int error = errno;
    if ((error == EEXIST || error == EINVAL) && (flags & FAN_MARK_EVICTABLE) != 0) {
      // The inode has a non-evictable mark of ours already (EEXIST), or the kernel predates 5.19.
      flags &= ~FAN_MARK_EVICTABLE;
      continue;
    }
    if (error == EOPNOTSUPP && (mask & kPreAccess) != 0 && (mask & ~kPreAccess) != 0) {
      mask &= ~kPreAccess;
      continue;
    }
    FLTPORT_LOG(info, kComponent, "ignore mark 0x%llx on event fd %d: %s",
                static_cast<unsigned long long>(mask), event_fd, std::strerror(error));
    return status_from_errno(error);
  }
}

Status PermissionGroup::stop_ignoring(int event_fd, uint64_t mask) {
  if (!fd_.valid() || event_fd < 0) return STATUS_INVALID_HANDLE;
  if (!capabilities_.pre_access) mask &= ~kPreAccess;
  const unsigned flags =
      FAN_MARK_REMOVE | (capabilities_.ignore_marks ? FAN_MARK_IGNORE : FAN_MARK_IGNORED_MASK);
  // ENOENT: the kernel dropped the mark already (the modification did).
  if (::fanotify_mark(fd_.fd(), flags, mask, event_fd, nullptr) == 0 || errno == ENOENT)
    return STATUS_SUCCESS;
  const int error = errno;
  FLTPORT_LOG_LIMITED(warning, kComponent, "could not take back the ignore mark 0x%llx on event fd %d: %s",
                      static_cast<unsigned long long>(mask), event_fd, std::strerror(error));
  return status_from_errno(error);
}

std::vector<IgnoreMark> PermissionGroup::ignore_marks() const {
  std::vector<IgnoreMark> marks;
  if (!fd_.valid()) return marks;
  // The group's marks, one line each (fs/notify/fdinfo.c):
  //   fanotify ino:<hex> sdev:<hex> mflags:<hex> mask:<hex> ignored_mask:<hex> fhandle-bytes:<hex>
  //   fhandle-type:<hex> f_handle:<hex bytes>
  // sdev is the superblock's dev_t as the kernel keeps it: major above bit 20, minor below.
  std::ifstream info("/proc/self/fdinfo/" + std::to_string(fd_.fd()));
  std::string line;
  while (std::getline(info, line)) {
    unsigned long inode = 0;
    unsigned sdev = 0, mark_flags = 0, bytes = 0, type = 0;
    unsigned long long mask = 0, ignored = 0;
    int consumed = 0;
    if (std::sscanf(line.c_str(),
                    "fanotify ino:%lx sdev:%x mflags:%x mask:%llx ignored_mask:%llx fhandle-bytes:%x "
                    "fhandle-type:%x f_handle:%n",
                    &inode, &sdev, &mark_flags, &mask, &ignored, &bytes, &type, &consumed) != 7 ||
        consumed == 0 || (ignored & kPermissionMask) == 0) {
      continue;
    }
    IgnoreMark mark;
    mark.device = makedev(sdev >> 20, sdev & 0xFFFFF);
    mark.inode = static_cast<ino_t>(inode);
    mark.mask = ignored & kPermissionMask;
    mark.handle_type = static_cast<int>(type);
    const std::string_view hex = std::string_view(line).substr(static_cast<size_t>(consumed));
    const auto digit = [](char c) -> int {
      return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    };
    // No handle (a file system without them): listed all the same, and counted as left.
    if (bytes <= MAX_HANDLE_SZ && hex.size() >= 2 * static_cast<size_t>(bytes)) {
      for (unsigned i = 0; i < bytes; ++i) {
        const int high = digit(hex[2 * i]), low = digit(hex[2 * i + 1]);
        if (high < 0 || low < 0) {
          mark.handle.clear();
          break;
        }
        mark.handle.push_back(static_cast<unsigned char>(high * 16 + low));
      }
    }
    marks.push_back(std::move(mark));
  }
  return marks;
}

std::vector<std::pair<UniqueFd, uint64_t>> open_marked_files(const std::vector<IgnoreMark>& marks) {
  std::vector<std::pair<UniqueFd, uint64_t>> files;
  // A handle opens on a mount of the file system it names: one per device, found in mountinfo,
  // whose major:minor is the superblock's (on btrfs not what stat says of a subvolume's files).
  std::vector<std::pair<dev_t, UniqueFd>> mounts;
  const auto mount_of = [&](dev_t device) -> int {
    for (const auto& [known, fd] : mounts) {
      if (known == device) return fd.fd();
    }
    std::ifstream table("/proc/self/mountinfo");
    std::string line;
    UniqueFd opened;
    while (!opened.valid() && std::getline(table, line)) {
      // <id> <parent> <major>:<minor> <root> <mount point> ...; the mount point with \040 for a space.
      unsigned id = 0, parent = 0, major_number = 0, minor_number = 0;
      char root[4096], point[4096];
      if (std::sscanf(line.c_str(), "%u %u %u:%u %4095s %4095s", &id, &parent, &major_number, &minor_number,
                      root, point) != 6 ||
          makedev(major_number, minor_number) != device) {
        continue;
      }
      std::string path;
      for (const char* c = point; *c != '\0'; ++c) {
        if (c[0] == '\\' && c[1] >= '0' && c[1] <= '3' && c[2] >= '0' && c[2] <= '7' && c[3] >= '0' &&
            c[3] <= '7') {
          path.push_back(static_cast<char>((c[1] - '0') * 64 + (c[2] - '0') * 8 + (c[3] - '0')));
          c += 3;
        } else {
          path.push_back(*c);
        }
      }
      // Not O_PATH (open_by_handle_at refuses it); a directory's open makes no event of a
      // permission group (no FAN_ONDIR).
      opened = UniqueFd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    }
    const int fd = opened.fd();
    mounts.emplace_back(device, std::move(opened));  // also when none: not looked up again
    return fd;
  };
  for (const IgnoreMark& mark : marks) {
    if (mark.handle.empty()) continue;
    const int mount = mount_of(mark.device);
    if (mount < 0) continue;
    std::vector<unsigned char> storage(sizeof(file_handle) + mark.handle.size());
    auto* handle = reinterpret_cast<file_handle*>(storage.data());
    handle->handle_bytes = static_cast<unsigned>(mark.handle.size());
    handle->handle_type = mark.handle_type;
    std::copy(mark.handle.begin(), mark.handle.end(), handle->f_handle);
    // O_PATH: opening the file for real would make an event of the very group it is marked in.
    UniqueFd file(::open_by_handle_at(mount, handle, O_PATH | O_CLOEXEC));
    struct stat status {};
    if (!file.valid() || ::fstat(file.fd(), &status) != 0 || status.st_ino != mark.inode) continue;
    files.emplace_back(std::move(file), mark.mask);
  }
  return files;
}

Status PermissionGroup::stop_ignoring_file(int file, uint64_t mask) {
  if (!fd_.valid() || file < 0) return STATUS_INVALID_HANDLE;
  const unsigned flags =
      FAN_MARK_REMOVE | (capabilities_.ignore_marks ? FAN_MARK_IGNORE : FAN_MARK_IGNORED_MASK);
  // By the fd's /proc path: the kernel takes no O_PATH fd as dirfd, and the path names the inode
  // whatever became of its names.
  const std::string by_fd = "/proc/self/fd/" + std::to_string(file);
  if (::fanotify_mark(fd_.fd(), flags, mask, AT_FDCWD, by_fd.c_str()) == 0 || errno == ENOENT)
    return STATUS_SUCCESS;
  return status_from_errno(errno);
}

Status PermissionGroup::flush_marks() {
  if (!fd_.valid()) return STATUS_INVALID_HANDLE;
  const int error = flush_group_marks(fd_.fd());
  return error == 0 ? Status(STATUS_SUCCESS) : status_from_errno(error);
}

Status PermissionGroup::read_events(std::vector<PermissionEvent>& events) {
  if (!fd_.valid()) return STATUS_INVALID_HANDLE;
  const int group = fd_.fd();
  const auto parse = [&](const unsigned char* data, size_t size) {
    const auto each = [&](const fanotify_event_metadata& meta, const unsigned char* info, size_t info_size) {
      if ((meta.mask & FAN_Q_OVERFLOW) != 0) {
        overflows_.fetch_add(1, std::memory_order_relaxed);
        FLTPORT_LOG(warning, kComponent, "permission event queue overflowed");
        if (meta.fd >= 0) ::close(meta.fd);
        return;
      }
      if (meta.fd < 0) return;  // nothing to answer or read through
      if ((meta.mask & kPermissionMask) == 0) {
        ::close(meta.fd);  // not asked for; nobody waits on it
        return;
      }
      PermissionEvent event;
      event.mask = meta.mask;
      event.fd = meta.fd;
      event.pid = meta.pid;
      walk_info(info, info_size, [&](unsigned type, const unsigned char* record, size_t size) {
        if (type != FAN_EVENT_INFO_TYPE_RANGE || size < sizeof(fanotify_event_info_range)) return;
        fanotify_event_info_range range;
        std::memcpy(&range, record, sizeof range);
        event.range_offset = range.offset;
        event.range_count = range.count;
      });
      events.push_back(event);
    };
    const auto malformed = [&](const fanotify_event_metadata& meta) {
      if (meta.fd < 0) return;
      // Its lengths are wrong but the fd is real: release whoever waits on it, then drop it.
      if ((meta.mask & kPermissionMask) != 0) respond(meta.fd, false);
      ::close(meta.fd);
    };
    return walk_events(data, size, each, malformed);
  };
  return read_group(group, parse);
}

Status PermissionGroup::respond(int event_fd, bool allow, int deny_errno) noexcept {
  if (!fd_.valid() || event_fd < 0) return STATUS_INVALID_HANDLE;
  uint32_t answer = allow ? FAN_ALLOW : FAN_DENY;
  if (!allow && deny_errno > 0 && deny_errno <= FAN_ERRNO_MASK && capabilities_.deny_errno) {
    answer = FAN_DENY_ERRNO(deny_errno);
  }
  for (;;) {
    fanotify_response response{};
    response.fd = event_fd;
    response.response = answer;
    if (::write(fd_.fd(), &response, sizeof response) >= 0) return STATUS_SUCCESS;
    const int error = errno;
    if (error == EINTR) continue;
    if (error == EINVAL && answer != FAN_DENY && !allow) {
      // The kernel takes only the errnos open/read may give (EIO, EBUSY, EAGAIN, ...): deny anyway.
      answer = FAN_DENY;
      continue;
    }
    if (error == ENOENT) return STATUS_INVALID_HANDLE;  // no event waits with this fd
    return status_from_errno(error);
  }
}

// ---- NotificationGroup ----

NotificationGroup::NotificationGroup(UniqueFd fd) noexcept : fd_(std::move(fd)) {}

NotificationGroup::NotificationGroup(NotificationGroup&& other) noexcept
    : fd_(std::move(other.fd_)),
      mount_fds_(std::move(other.mount_fds_)),
      marks_(std::move(other.marks_)),
      marks_mutex_(std::move(other.marks_mutex_)),
      overflows_(other.overflows_.exchange(0)) {}

NotificationGroup::~NotificationGroup() {
  close();
}

void NotificationGroup::close() noexcept {
  forget_group_fd(fd_.fd());
  fd_ = UniqueFd();
}

Status NotificationGroup::flush_marks() {
  if (!fd_.valid()) return STATUS_INVALID_HANDLE;
  const int error = flush_group_marks(fd_.fd());
  return error == 0 ? Status(STATUS_SUCCESS) : status_from_errno(error);
}

NotificationGroup& NotificationGroup::operator=(NotificationGroup&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::move(other.fd_);
    mount_fds_ = std::move(other.mount_fds_);
    marks_ = std::move(other.marks_);
    marks_mutex_ = std::move(other.marks_mutex_);
    overflows_.store(other.overflows_.exchange(0));
  }
  return *this;
}

Result<NotificationGroup> NotificationGroup::open() {
  const int fd = ::fanotify_init(
      FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME_TARGET | FAN_REPORT_FID,
      O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    FLTPORT_LOG(warning, kComponent, "fanotify_init (notification group): %s", std::strerror(error));
    return status_from_errno(error, STATUS_NOT_SUPPORTED);
  }
  guard_group_fd(fd);
  return NotificationGroup(UniqueFd(fd));
}

int NotificationGroup::fd() const noexcept {
  return fd_.fd();
}
uint64_t NotificationGroup::overflows() const noexcept {
  return overflows_.load(std::memory_order_relaxed);
}

Status NotificationGroup::add_mark(const std::string& path, MarkScope scope, uint64_t mask) {
  return mark(path, scope, mask, true);
}

Status NotificationGroup::remove_mark(const std::string& path, MarkScope scope, uint64_t mask, bool whole) {
  return mark(path, scope, mask, false, whole);
}

Status NotificationGroup::mark(const std::string& path, MarkScope scope, uint64_t mask, bool add,
                               bool whole) {
  if (!fd_.valid() || !marks_mutex_) return STATUS_INVALID_HANDLE;
  if (mask == 0 || (mask & (FAN_ALL_PERM_EVENTS | kPreAccess)) != 0) return STATUS_INVALID_PARAMETER;
  // FAN_ONDIR: a subdirectory's creation, deletion and renaming are reported too.
  const uint64_t event_flags =
      add || whole ? FAN_ONDIR | (scope == MarkScope::directory ? FAN_EVENT_ON_CHILD : 0) : 0;
  const unsigned flags = (add ? FAN_MARK_ADD : FAN_MARK_REMOVE) | scope_flags(scope);
  const auto key = std::make_pair(scope, path);

  UniqueFd at;
  uint64_t fsid = 0;
  if (add) {
    // Not O_PATH: open_by_handle_at refuses an O_PATH mount fd (EBADF). A directory, because
    // permission groups do not report directory opens (no FAN_ONDIR), so this open never waits
    // on one of ours.
    at = UniqueFd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!at.valid() && errno == ENOTDIR && scope != MarkScope::directory) {
      // A file names its mount or filesystem as well as its directory does.
      const auto slash = path.find_last_of('/');
      const std::string parent = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
      at = UniqueFd(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    }
    if (!at.valid()) return mark_status(errno, scope);
    struct statfs fs;
    if (::fstatfs(at.fd(), &fs) != 0) return mark_status(errno, scope);
    int val[2];
    static_assert(sizeof val == sizeof fs.f_fsid);
    std::memcpy(val, &fs.f_fsid, sizeof val);
    fsid = (uint64_t{static_cast<uint32_t>(val[0])} << 32) | static_cast<uint32_t>(val[1]);
  }
  if (::fanotify_mark(fd_.fd(), flags, mask | event_flags, AT_FDCWD, path.c_str()) != 0) {
    const int error = errno;
    FLTPORT_LOG(info, kComponent, "%s %s mark 0x%llx on %s: %s", add ? "add" : "remove", scope_name(scope),
                static_cast<unsigned long long>(mask), path.c_str(), std::strerror(error));
    return mark_status(error, scope);
  }

  std::lock_guard lock(*marks_mutex_);
  if (add) {
    Marked& marked = marks_[key];
    marked.fsid = fsid;
    marked.mask |= mask;
    mount_fds_.try_emplace(fsid, std::move(at));
    return STATUS_SUCCESS;
  }
  const auto found = marks_.find(key);
  if (found == marks_.end()) return STATUS_SUCCESS;
  found->second.mask &= ~mask;
  if (found->second.mask != 0) return STATUS_SUCCESS;
  const uint64_t gone = found->second.fsid;
  marks_.erase(found);
  for (const auto& [other_key, other] : marks_) {
    if (other.fsid == gone) return STATUS_SUCCESS;
  }
  mount_fds_.erase(gone);
  return STATUS_SUCCESS;
}

std::optional<std::string> NotificationGroup::resolve(uint64_t fsid, const void* handle,
                                                      size_t handle_size) const {
  if (!marks_mutex_) return std::nullopt;
  std::lock_guard lock(*marks_mutex_);  // held while the mount fd is used: a detach may close it
  const auto mount = mount_fds_.find(fsid);
  if (mount == mount_fds_.end() || handle_size > sizeof(file_handle) + MAX_HANDLE_SZ) return std::nullopt;
  alignas(file_handle) unsigned char copy[sizeof(file_handle) + MAX_HANDLE_SZ];
  std::memcpy(copy, handle, handle_size);
  const UniqueFd object(
      ::open_by_handle_at(mount->second.fd(), reinterpret_cast<file_handle*>(copy), O_PATH | O_CLOEXEC));
  if (!object.valid()) return std::nullopt;  // ESTALE: gone meanwhile
  struct stat st;
  if (::fstat(object.fd(), &st) == 0 && st.st_nlink == 0) return std::nullopt;  // readlink says "(deleted)"
  return fd_path(object.fd());
}

Status NotificationGroup::read_events(std::vector<Notification>& events) {
  if (!fd_.valid()) return STATUS_INVALID_HANDLE;
  const auto parse = [&](const unsigned char* data, size_t size) {
    const auto each = [&](const fanotify_event_metadata& meta, const unsigned char* info, size_t info_size) {
      if (meta.fd >= 0) ::close(meta.fd);  // none with FID reporting; never leak one
      if ((meta.mask & FAN_Q_OVERFLOW) != 0) {
        overflows_.fetch_add(1, std::memory_order_relaxed);
        FLTPORT_LOG(warning, kComponent, "notification queue overflowed");
        return;
      }
      std::optional<FidRecord> dir, old_dir, new_dir, object;
      walk_info(info, info_size, [&](unsigned type, const unsigned char* record, size_t record_size) {
        switch (type) {
          case FAN_EVENT_INFO_TYPE_FID:
            object = parse_fid(record, record_size, false);
            break;
          case FAN_EVENT_INFO_TYPE_DFID:
            dir = parse_fid(record, record_size, false);
            break;
          case FAN_EVENT_INFO_TYPE_DFID_NAME:
            dir = parse_fid(record, record_size, true);
            break;
          case FAN_EVENT_INFO_TYPE_OLD_DFID_NAME:
            old_dir = parse_fid(record, record_size, true);
            break;
          case FAN_EVENT_INFO_TYPE_NEW_DFID_NAME:
            new_dir = parse_fid(record, record_size, true);
            break;
          default:
            break;
        }
      });
      const auto path_of = [&](const std::optional<FidRecord>& fid) -> std::string {
        if (!fid) return {};
        const auto resolved = resolve(fid->fsid, fid->handle, fid->handle_size);
        return resolved ? join(*resolved, fid->name) : std::string();
      };
      Notification note;
      note.mask = meta.mask;
      note.pid = meta.pid;
      note.is_directory = (meta.mask & FAN_ONDIR) != 0;
      if ((meta.mask & FAN_RENAME) != 0) {
        note.old_path = path_of(old_dir);
        note.path = path_of(new_dir);
        // The kernel names only the watched side: moved out of what we watch, the object's own fid
        // says where it went (a tree instance must unmark a directory that left it).
        if (note.path.empty()) note.path = path_of(object);
      } else {
        note.path = path_of(dir);
        if (note.path.empty()) note.path = path_of(object);  // e.g. attributes of an unlinked file
      }
      // A directory's move is kept even when neither side can be named: a tree it left must know.
      const bool directory_moved = note.is_directory && (meta.mask & FAN_RENAME) != 0;
      if (note.path.empty() && note.old_path.empty() && !directory_moved) {
        FLTPORT_LOG(debug, kComponent, "notification 0x%llx: object no longer has a path; dropped",
                    static_cast<unsigned long long>(meta.mask));
        return;
      }
      events.push_back(std::move(note));
    };
    const auto malformed = [](const fanotify_event_metadata& meta) {
      if (meta.fd >= 0) ::close(meta.fd);
    };
    return walk_events(data, size, each, malformed);
  };
  return read_group(fd_.fd(), parse);
}

}  // namespace fltport::fanotify
