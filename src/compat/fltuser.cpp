// fltuser.h over the C++ core: argument checks of the Windows API, the handle table, and the one
// status conversion (FltportHResultFromNtStatus).
#include <fltport/fltuser.h>

#include <cstring>
#include <string>

#include "compat/handle_table.hpp"
#include "compat/message_requests.hpp"
#include "compat/wide_text.hpp"
#include "port/connection.hpp"

namespace fltport::compat {
namespace {

// A port handle is also a file handle for overlapped I/O: it can be associated with a completion
// port, waited on, and its overlapped FilterGetMessage requests cancelled.
class PortHandle final : public HandleObject, public IoTarget {
 public:
  PortHandle(std::shared_ptr<detail::ServiceConnection> connection, bool sync_handle)
      : connection(std::move(connection)), sync_handle(sync_handle), requests(*this, this->connection) {}
  void close() noexcept override { requests.close(); }
  size_t cancel(OVERLAPPED* overlapped, bool this_thread_only) override {
    return requests.cancel(overlapped, this_thread_only);
  }
  const std::shared_ptr<detail::ServiceConnection> connection;
  const bool sync_handle;  // FLT_PORT_FLAG_SYNC_HANDLE
  MessageRequests requests;
};

std::shared_ptr<detail::ServiceConnection> find_port(HANDLE handle) {
  auto port = HandleTable::instance().find<PortHandle>(handle);
  return port ? port->connection : nullptr;
}

HRESULT hresult(Status status) {
  return FltportHResultFromNtStatus(status.code());
}

constexpr HRESULT kInvalidHandle = HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);

}  // namespace
}  // namespace fltport::compat

using namespace fltport;
using namespace fltport::compat;

extern "C" HRESULT WINAPI FilterConnectCommunicationPort(LPCWSTR lpPortName, DWORD dwOptions,
                                                         LPCVOID lpContext, WORD wSizeOfContext,
                                                         LPSECURITY_ATTRIBUTES /*lpSecurityAttributes*/,
                                                         HANDLE* hPort) {
  if (hPort == nullptr) return E_INVALIDARG;
  *hPort = INVALID_HANDLE_VALUE;
  if (lpPortName == nullptr || (dwOptions & ~static_cast<DWORD>(FLT_PORT_FLAG_SYNC_HANDLE)) != 0 ||
      (wSizeOfContext != 0 && lpContext == nullptr)) {
    return E_INVALIDARG;
  }
  ConnectOptions options;
  options.context = ConstBytes(static_cast<const std::byte*>(lpContext), wSizeOfContext);
  options.sync_handle = (dwOptions & FLT_PORT_FLAG_SYNC_HANDLE) != 0;
  auto connection =
      detail::ServiceConnection::connect(port_name_from_wide(lpPortName, std::wcslen(lpPortName)), options);
  if (!connection) return hresult(connection.status());
  *hPort = HandleTable::instance().insert(
      std::make_shared<PortHandle>(std::move(*connection), options.sync_handle));
  return S_OK;
}

extern "C" HRESULT WINAPI FilterSendMessage(HANDLE hPort, LPVOID lpInBuffer, DWORD dwInBufferSize,
                                            LPVOID lpOutBuffer, DWORD dwOutBufferSize,
                                            LPDWORD lpBytesReturned) {
  auto port = find_port(hPort);
  if (!port) return kInvalidHandle;
  if (lpBytesReturned == nullptr || (dwInBufferSize != 0 && lpInBuffer == nullptr) ||
      (dwOutBufferSize != 0 && lpOutBuffer == nullptr)) {
    return E_INVALIDARG;
  }
  size_t returned = 0;
  const Status status =
      port->send(ConstBytes(static_cast<const std::byte*>(lpInBuffer), dwInBufferSize),
                 MutableBytes(static_cast<std::byte*>(lpOutBuffer), dwOutBufferSize), returned);
  *lpBytesReturned = static_cast<DWORD>(returned);
  return hresult(status);
}

extern "C" HRESULT WINAPI FilterGetMessage(HANDLE hPort, PFILTER_MESSAGE_HEADER lpMessageBuffer,
                                           DWORD dwMessageBufferSize, LPOVERLAPPED lpOverlapped) {
  auto handle = HandleTable::instance().find<PortHandle>(hPort);
  if (!handle) return kInvalidHandle;
  if (lpMessageBuffer == nullptr || dwMessageBufferSize < sizeof(FILTER_MESSAGE_HEADER)) return E_INVALIDARG;
  // On a synchronous handle Windows ignores lpOverlapped (DeviceIoControl's documented rule for
  // handles opened without FILE_FLAG_OVERLAPPED): the call completes before it returns.
  if (lpOverlapped != nullptr && !handle->sync_handle) {
    return handle->requests.submit(lpMessageBuffer, dwMessageBufferSize, lpOverlapped);
  }
  const auto& port = handle->connection;
  auto* bytes = reinterpret_cast<std::byte*>(lpMessageBuffer);
  auto message = port->get_message(MutableBytes(bytes + sizeof(FILTER_MESSAGE_HEADER),
                                                dwMessageBufferSize - sizeof(FILTER_MESSAGE_HEADER)),
                                   Timeout::infinite());
  if (!message) return hresult(message.status());
  FILTER_MESSAGE_HEADER header{};
  // ReplyLength counts the FILTER_REPLY_HEADER too, as Microsoft documents it.
  header.ReplyLength =
      message->wants_reply ? static_cast<ULONG>(message->reply_capacity + sizeof(FILTER_REPLY_HEADER)) : 0;
  header.MessageId = message->id;
  std::memcpy(lpMessageBuffer, &header, sizeof header);
  return message->truncated() ? HRESULT_FROM_WIN32(ERROR_MORE_DATA) : S_OK;
}

extern "C" HRESULT WINAPI FilterReplyMessage(HANDLE hPort, PFILTER_REPLY_HEADER lpReplyBuffer,
                                             DWORD dwReplyBufferSize) {
  auto port = find_port(hPort);
  if (!port) return kInvalidHandle;
  if (lpReplyBuffer == nullptr || dwReplyBufferSize < sizeof(FILTER_REPLY_HEADER)) return E_INVALIDARG;
  FILTER_REPLY_HEADER header;
  std::memcpy(&header, lpReplyBuffer, sizeof header);
  const auto* data = reinterpret_cast<const std::byte*>(lpReplyBuffer) + sizeof(FILTER_REPLY_HEADER);
  return hresult(port->reply(
      header.MessageId, ConstBytes(data, dwReplyBufferSize - sizeof(FILTER_REPLY_HEADER)), header.Status));
}
