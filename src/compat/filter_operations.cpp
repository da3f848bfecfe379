// FLT_OPERATION_REGISTRATION over fltport::FilterManager: the Windows callback shapes, called with
// what fanotify reports (see the table in fltkernel.h).
#include <fltport/fltkernel.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "base/log.hpp"
#include "compat/flt_objects.hpp"

namespace fltport::compat {
namespace {

struct Callbacks {
  PFLT_PRE_OPERATION_CALLBACK open = nullptr;
  PFLT_PRE_OPERATION_CALLBACK open_exec = nullptr;
  PFLT_PRE_OPERATION_CALLBACK read = nullptr;
  PFLT_POST_OPERATION_CALLBACK create = nullptr;
  PFLT_POST_OPERATION_CALLBACK cleanup = nullptr;
  PFLT_POST_OPERATION_CALLBACK set_information = nullptr;
};

// One operation as a Windows filter sees it. For a pended pre-operation it lives until
// FltCompletePendedPreOperation; `data` comes first so that the PFLT_CALLBACK_DATA handed out is
// also a pointer to the whole.
struct CallbackFrame {
  FLT_CALLBACK_DATA data{};
  FLT_IO_PARAMETER_BLOCK iopb{};
  FLTPORT_FILE_EVENT file{};
  FLT_RELATED_OBJECTS objects{};
  std::string path, old_path, executable;
  PendingOperation pending;
  uint32_t magic = kMagic;
  static constexpr uint32_t kMagic = 0x46524D46;  // "FMRF"

  CallbackFrame(const FileEvent& event, PFLT_FILTER filter, UCHAR major) {
    path = event.path;
    old_path = event.old_path;
    executable = event.executable;
    file.FileDescriptor = event.fd;
    file.Path = path.c_str();
    file.OldPath = old_path.c_str();
    file.Executable = executable.c_str();
    file.ProcessId = static_cast<ULONG>(event.pid);
    file.UserId = event.uid;
    file.GroupId = event.gid;
    file.IsDirectory = event.is_directory;
    file.KernelFlags = event.kernel_flags;
    file.FileMode = event.file_status.st_mode;
    file.FileSize = event.file_status.st_size;
    file.HasRange = event.range_offset.has_value();
    // Alive while the filter may read through it: see FltportReadFile.
    file.FltportReserved = const_cast<FileEvent*>(&event);
    iopb.MajorFunction = major;
    if (event.range_offset) {
      iopb.Parameters.Read.ByteOffset.QuadPart = static_cast<LONGLONG>(*event.range_offset);
      iopb.Parameters.Read.Length = static_cast<ULONG>(event.range_count.value_or(0));
    }
    data.Iopb = &iopb;
    data.FileEvent = &file;
    data.IoStatus.Status = STATUS_SUCCESS;
    objects.Size = sizeof objects;
    objects.Filter = filter;
  }
};

// The errno a denied process sees for the status a Windows filter completes with: the nearest of
// those FAN_DENY_ERRNO takes (Linux 6.14+: EPERM, EIO, EBUSY, ETXTBSY, EAGAIN, ENOSPC, EDQUOT; a
// plain deny, EPERM, on older kernels). Not EACCES for access denied: no kernel takes it.
int errno_for(NTSTATUS status) {
  switch (status) {
    case STATUS_SHARING_VIOLATION:
      return EBUSY;
    case STATUS_FILE_LOCK_CONFLICT:
      return EAGAIN;
    case STATUS_IO_DEVICE_ERROR:
      return EIO;
    case STATUS_DISK_FULL:
      return ENOSPC;
    case STATUS_QUOTA_EXCEEDED:
      return EDQUOT;
    default:  // STATUS_ACCESS_DENIED, STATUS_VIRUS_INFECTED and the rest
      return EPERM;
  }
}

Verdict verdict_of(const CallbackFrame& frame, FLT_PREOP_CALLBACK_STATUS status) {
  const NTSTATUS io = frame.data.IoStatus.Status;
  if (status == FLT_PREOP_COMPLETE && !NT_SUCCESS(io)) return Verdict::deny(errno_for(io));
  return Verdict::allow(frame.file.CacheVerdict != FALSE);
}

}  // namespace

Result<FilterRegistration> operations_from(const FLT_REGISTRATION& registration, const _DRIVER_OBJECT& driver,
                                           PFLT_FILTER filter) {
  auto callbacks = std::make_shared<Callbacks>();
  OperationSet operations = 0;
  for (const FLT_OPERATION_REGISTRATION* op = registration.OperationRegistration;
       op->MajorFunction != IRP_MJ_OPERATION_END; ++op) {
    switch (op->MajorFunction) {
      case IRP_MJ_CREATE:
        if (op->PreOperation) operations = operations | Operation::open, callbacks->open = op->PreOperation;
        if (op->PostOperation)
          operations = operations | Operation::create, callbacks->create = op->PostOperation;
        break;
      case IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION:
        if (op->PreOperation)
          operations = operations | Operation::open_exec, callbacks->open_exec = op->PreOperation;
        break;
      case IRP_MJ_READ:
        if (op->PreOperation) operations = operations | Operation::read, callbacks->read = op->PreOperation;
        break;
      case IRP_MJ_CLEANUP:
        if (op->PostOperation)
          operations = operations | Operation::close_write, callbacks->cleanup = op->PostOperation;
        break;
      case IRP_MJ_SET_INFORMATION:
        if (op->PostOperation) {
          operations = operations | Operation::remove | Operation::rename | Operation::attribute;
          callbacks->set_information = op->PostOperation;
        }
        break;
      default:
        // Other major functions have no Linux event to come from: registering them is harmless
        // (they are never called), as a Windows filter's IRP_MJ_* list may be long.
        FLTPORT_LOG(info, "fltmgr", "%s: major function 0x%02X has no Linux event; never called",
                    driver.name.c_str(), static_cast<unsigned>(op->MajorFunction));
        break;
    }
  }
  if (operations == 0) return Status(STATUS_INVALID_PARAMETER);

  FilterRegistration result;
  result.name = driver.name;
  result.altitude = driver.altitude;
  result.deadline = driver.deadline;
  result.default_decision = driver.default_decision;
  result.operations = operations;
  result.want_executable = (registration.Flags & FLTFL_REGISTRATION_FLTPORT_WANT_EXECUTABLE) != 0;
  result.want_credentials = (registration.Flags & FLTFL_REGISTRATION_FLTPORT_WANT_CREDENTIALS) != 0;
  result.want_path = (registration.Flags & FLTFL_REGISTRATION_FLTPORT_PATH_ON_REQUEST) == 0;
  result.pre_operation = [callbacks, filter](const FileEvent& event, PendingOperation& pending) -> PreResult {
    PFLT_PRE_OPERATION_CALLBACK callback = event.operation == Operation::open        ? callbacks->open
                                           : event.operation == Operation::open_exec ? callbacks->open_exec
                                                                                     : callbacks->read;
    if (callback == nullptr) return PreResult::now(Verdict::allow());
    const UCHAR major = event.operation == Operation::open        ? IRP_MJ_CREATE
                        : event.operation == Operation::open_exec ? IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION
                                                                  : IRP_MJ_READ;
    // The frame holds the operation, and is not ours, while the callback runs: one that pends may
    // hand Data to another thread, which may complete it (FltCompletePendedPreOperation frees the
    // frame) before the callback has returned.
    auto* frame_while_called = new CallbackFrame(event, filter, major);
    frame_while_called->pending = std::move(pending);
    PVOID completion_context = nullptr;
    const FLT_PREOP_CALLBACK_STATUS status =
        callback(&frame_while_called->data, &frame_while_called->objects, &completion_context);
    if (status == FLT_PREOP_PENDING) return PreResult::later();  // FltCompletePendedPreOperation's now
    std::unique_ptr<CallbackFrame> frame(frame_while_called);
    pending = std::move(frame->pending);  // answered here and now, by the caller
    if (status == FLT_PREOP_FLTPORT_TAKE_DEFAULT) {
      PendingOperation dropped(std::move(pending));  // dropped: the filter's default answers, counted
      return PreResult::later();
    }
    return PreResult::now(verdict_of(*frame, status));
  };
  result.post_operation = [callbacks, filter](const FileEvent& event) {
    PFLT_POST_OPERATION_CALLBACK callback = nullptr;
    UCHAR major = IRP_MJ_SET_INFORMATION;
    ULONG information_class = 0;
    switch (event.operation) {
      case Operation::create:
        callback = callbacks->create, major = IRP_MJ_CREATE;
        break;
      case Operation::close_write:
        callback = callbacks->cleanup, major = IRP_MJ_CLEANUP;
        break;
      case Operation::remove:
        callback = callbacks->set_information, information_class = FileDispositionInformation;
        break;
      case Operation::rename:
        callback = callbacks->set_information, information_class = FileRenameInformation;
        break;
      case Operation::attribute:
        callback = callbacks->set_information, information_class = FileBasicInformation;
        break;
      default:
        break;
    }
    if (callback == nullptr) return;
    CallbackFrame frame(event, filter, major);
    frame.iopb.Parameters.SetFileInformation.FileInformationClass = information_class;
    if (event.operation == Operation::create) frame.data.IoStatus.Information = 2;  // FILE_CREATED
    callback(&frame.data, &frame.objects, nullptr, 0);
  };
  return result;
}

}  // namespace fltport::compat

extern "C" PCSTR FLTAPI FltportGetFilePath(PFLT_CALLBACK_DATA Data) {
  auto* frame = reinterpret_cast<fltport::compat::CallbackFrame*>(Data);
  if (frame == nullptr || frame->magic != fltport::compat::CallbackFrame::kMagic) return "";
  const auto* event = static_cast<const fltport::FileEvent*>(frame->file.FltportReserved);
  if (frame->path.empty() && event != nullptr) {
    frame->path = fltport::path_of(*event);
    frame->file.Path = frame->path.c_str();
  }
  return frame->file.Path;
}

extern "C" NTSTATUS FLTAPI FltportReadFile(PFLTPORT_FILE_EVENT file, ULONGLONG offset, PVOID buffer,
                                           ULONG length, PULONG bytes_read) {
  if (bytes_read != nullptr) *bytes_read = 0;
  if (file == nullptr || bytes_read == nullptr || (buffer == nullptr && length != 0))
    return STATUS_INVALID_PARAMETER;
  // The event the frame was made from gives the bound; a FLTPORT_FILE_EVENT the filter made itself
  // has none, and gets the post-operation bound.
  fltport::FileEvent bound;
  bound.fd = file->FileDescriptor;
  if (const auto* event = static_cast<const fltport::FileEvent*>(file->FltportReserved)) {
    bound.deadline = event->deadline;
    if (event->fd == bound.fd) bound.file_status = event->file_status;  // not a file the filter opened
  }
  bound.path = file->Path != nullptr ? file->Path : "";
  auto read = fltport::read_file_contents(bound, offset, {static_cast<std::byte*>(buffer), length});
  if (!read) return read.status().code();
  *bytes_read = static_cast<ULONG>(*read);
  return STATUS_SUCCESS;
}

extern "C" VOID FLTAPI FltCompletePendedPreOperation(PFLT_CALLBACK_DATA data,
                                                     FLT_PREOP_CALLBACK_STATUS status, PVOID /*Context*/) {
  using fltport::compat::CallbackFrame;
  auto* frame = reinterpret_cast<CallbackFrame*>(data);
  if (frame == nullptr || frame->magic != CallbackFrame::kMagic) return;
  frame->magic = 0;
  std::unique_ptr<CallbackFrame> owned(frame);
  if (status == FLT_PREOP_FLTPORT_TAKE_DEFAULT) return;  // the operation, dropped, takes the default
  owned->pending.complete(fltport::compat::verdict_of(*owned, status));
}
