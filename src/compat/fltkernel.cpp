// fltkernel.h over the C++ core. PFLT_FILTER and PFLT_PORT point to objects of this file; every
// PFLT_PORT is looked up in a registry before use, so a port closed meanwhile gives
// STATUS_PORT_DISCONNECTED rather than a use after free.
#include <fltport/fltkernel.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <unordered_set>
#include <utility>
#include <vector>

#include "compat/wide_text.hpp"
#include "port/server_port.hpp"

#include "compat/flt_objects.hpp"

namespace {

struct SecurityDescriptor {
  static constexpr uint32_t kMagic = 0x53445046;  // "FPDS"
  uint32_t magic = kMagic;
  fltport::PortSecurity security;
};

// Ports the filter may still name. Server ports leave it at FltCloseCommunicationPort, client
// ports at FltCloseClientPort; both objects stay owned by their filter until then.
std::mutex live_ports_mutex;
std::unordered_set<_FLT_PORT*>& live_ports() {
  static auto* ports = new std::unordered_set<_FLT_PORT*>();
  return *ports;
}

bool valid_filter(PFLT_FILTER filter) {
  return filter != nullptr && filter->magic == _FLT_FILTER::kMagic;
}

// Windows' absolute times count 100 ns intervals from 1601-01-01 UTC.
constexpr int64_t kUnixEpochIn100ns = 116444736000000000LL;

fltport::Timeout timeout_from(const LARGE_INTEGER* timeout) {
  using namespace std::chrono;
  if (timeout == nullptr) return fltport::Timeout::infinite();
  const int64_t value = timeout->QuadPart;
  if (value == 0) return fltport::Timeout::none();
  if (value < 0) {
    // Longer than nanoseconds can count (about 292 years): forever.
    if (value < -(INT64_MAX / 100)) return fltport::Timeout::infinite();
    return fltport::Timeout(nanoseconds(-value) * 100);
  }
  const int64_t since_unix_epoch = value - kUnixEpochIn100ns;
  if (since_unix_epoch > INT64_MAX / 100) return fltport::Timeout::infinite();
  if (since_unix_epoch <= 0) return fltport::Timeout::none();
  return fltport::Timeout::at(
      system_clock::time_point(duration_cast<system_clock::duration>(nanoseconds(since_unix_epoch * 100))));
}

}  // namespace

using namespace fltport;

extern "C" VOID NTAPI RtlInitUnicodeString(PUNICODE_STRING destination, PCWSTR source) {
  if (destination == nullptr) return;
  const size_t limit = (0xFFFF / sizeof(WCHAR)) - 1;
  const size_t characters = source == nullptr ? 0 : std::min(std::wcslen(source), limit);
  destination->Length = static_cast<USHORT>(characters * sizeof(WCHAR));
  destination->MaximumLength = source == nullptr ? 0 : static_cast<USHORT>((characters + 1) * sizeof(WCHAR));
  destination->Buffer = const_cast<PWSTR>(source);
}

extern "C" NTSTATUS FLTAPI FltRegisterFilter(PDRIVER_OBJECT driver, const FLT_REGISTRATION* registration,
                                             PFLT_FILTER* filter) {
  if (filter == nullptr || registration == nullptr) return STATUS_INVALID_PARAMETER;
  *filter = nullptr;
  if (registration->Size < offsetof(FLT_REGISTRATION, InstanceSetupCallback) ||
      registration->Version < FLT_REGISTRATION_VERSION_0200 ||
      registration->Version > FLT_REGISTRATION_VERSION_0203) {
    return STATUS_INVALID_PARAMETER;
  }
  if (registration->ContextRegistration != nullptr) return STATUS_NOT_SUPPORTED;
  const bool host =
      driver != nullptr && driver->magic == _DRIVER_OBJECT::kMagic && driver->manager != nullptr;
  // File operations need a filter manager, which a host's DriverObject brings; a port-only process
  // (DriverObject NULL) registers none.
  if (registration->OperationRegistration != nullptr && !host) return STATUS_NOT_SUPPORTED;
  auto* created = new (std::nothrow) _FLT_FILTER();
  if (created == nullptr) return STATUS_INSUFFICIENT_RESOURCES;
  created->unload = registration->FilterUnloadCallback;
  if (host && registration->OperationRegistration != nullptr) {
    auto operations = compat::operations_from(*registration, *driver, created);
    if (!operations) {
      delete created;
      return operations.status().code();
    }
    created->manager = driver->manager;
    created->operations = std::move(*operations);
  }
  if (host) {
    driver->registered = created;
    created->driver = driver;
  }
  *filter = created;
  return STATUS_SUCCESS;
}

extern "C" NTSTATUS FLTAPI FltStartFiltering(PFLT_FILTER filter) {
  if (!valid_filter(filter) || filter->manager == nullptr || !filter->operations)
    return STATUS_INVALID_PARAMETER;
  std::lock_guard lock(filter->mutex);
  if (filter->filtering) return STATUS_SUCCESS;
  if (Status registered = filter->manager->register_filter(*filter->operations); !registered.ok()) {
    return registered.code();
  }
  filter->filtering = true;
  return STATUS_SUCCESS;
}

extern "C" VOID FLTAPI FltUnregisterFilter(PFLT_FILTER filter) {
  if (!valid_filter(filter)) return;
  // The host must not unregister it again (a DriverEntry that fails unregisters itself).
  if (filter->driver != nullptr && filter->driver->registered == filter) filter->driver->registered = nullptr;
  bool filtering = false;
  {
    std::lock_guard lock(filter->mutex);
    filtering = std::exchange(filter->filtering, false);
  }
  // Detaches its instances; events already with its callbacks finish or take the default.
  if (filtering) filter->manager->unregister_filter(filter->operations->name);
  std::vector<_FLT_PORT*> servers;
  {
    std::lock_guard lock(filter->mutex);
    servers.swap(filter->server_ports);
  }
  {
    std::lock_guard lock(live_ports_mutex);
    for (_FLT_PORT* port : servers) live_ports().erase(port);
  }
  // Closes every connection and waits for the callbacks: DisconnectNotify runs here and may call
  // FltCloseClientPort, so no lock of ours is held.
  for (_FLT_PORT* port : servers) delete port;
  std::unordered_set<_FLT_PORT*> clients;
  {
    std::lock_guard lock(filter->mutex);
    clients.swap(filter->client_ports);
  }
  {
    std::lock_guard lock(live_ports_mutex);
    for (_FLT_PORT* port : clients) live_ports().erase(port);
  }
  for (_FLT_PORT* port : clients) delete port;
  filter->magic = 0;
  delete filter;
}

extern "C" NTSTATUS FLTAPI FltBuildDefaultSecurityDescriptor(PSECURITY_DESCRIPTOR* descriptor,
                                                             ACCESS_MASK /*DesiredAccess*/) {
  if (descriptor == nullptr) return STATUS_INVALID_PARAMETER;
  *descriptor = new (std::nothrow) SecurityDescriptor();
  return *descriptor != nullptr ? STATUS_SUCCESS : STATUS_INSUFFICIENT_RESOURCES;
}

extern "C" NTSTATUS FLTAPI FltportBuildPortSecurityDescriptor(const FLTPORT_PORT_ACCESS* access,
                                                              PSECURITY_DESCRIPTOR* descriptor) {
  if (descriptor == nullptr || access == nullptr ||
      (access->AllowedUidCount != 0 && access->AllowedUids == nullptr) ||
      (access->AllowedGidCount != 0 && access->AllowedGids == nullptr)) {
    return STATUS_INVALID_PARAMETER;
  }
  auto* built = new (std::nothrow) SecurityDescriptor();
  if (built == nullptr) return STATUS_INSUFFICIENT_RESOURCES;
  built->security = PortSecurity::with_mode(access->OwnerUid, access->OwnerGid, access->Mode);
  for (ULONG i = 0; i < access->AllowedUidCount; ++i) built->security.allow_uid(access->AllowedUids[i]);
  for (ULONG i = 0; i < access->AllowedGidCount; ++i) built->security.allow_gid(access->AllowedGids[i]);
  *descriptor = built;
  return STATUS_SUCCESS;
}

extern "C" VOID FLTAPI FltFreeSecurityDescriptor(PSECURITY_DESCRIPTOR descriptor) {
  auto* built = static_cast<SecurityDescriptor*>(descriptor);
  if (built == nullptr || built->magic != SecurityDescriptor::kMagic) return;
  built->magic = 0;
  delete built;
}

extern "C" NTSTATUS FLTAPI FltCreateCommunicationPort(PFLT_FILTER filter, PFLT_PORT* server_port,
                                                      POBJECT_ATTRIBUTES attributes, PVOID server_cookie,
                                                      PFLT_CONNECT_NOTIFY connect_notify,
                                                      PFLT_DISCONNECT_NOTIFY disconnect_notify,
                                                      PFLT_MESSAGE_NOTIFY message_notify,
                                                      LONG max_connections) {
  if (!valid_filter(filter) || server_port == nullptr || attributes == nullptr ||
      attributes->ObjectName == nullptr || attributes->ObjectName->Buffer == nullptr ||
      (attributes->Attributes & OBJ_KERNEL_HANDLE) == 0 || max_connections <= 0) {
    return STATUS_INVALID_PARAMETER;
  }
  *server_port = nullptr;
  const auto* descriptor = static_cast<const SecurityDescriptor*>(attributes->SecurityDescriptor);
  if (descriptor != nullptr && descriptor->magic != SecurityDescriptor::kMagic)
    return STATUS_INVALID_PARAMETER;

  ServerPortOptions options;
  options.name = compat::port_name_from_wide(attributes->ObjectName->Buffer,
                                             attributes->ObjectName->Length / sizeof(WCHAR));
  options.security = descriptor != nullptr ? descriptor->security : PortSecurity::root_only();
  options.max_connections = max_connections;
  options.on_connect = [filter, server_cookie, connect_notify](ClientPort& client,
                                                               const ConnectRequest& request,
                                                               void*& connection_cookie) -> Status {
    auto* port =
        new (std::nothrow) _FLT_PORT{_FLT_PORT::Kind::client, filter, ServerPort(), std::move(client)};
    if (port == nullptr) return STATUS_INSUFFICIENT_RESOURCES;
    {
      std::lock_guard lock(live_ports_mutex);
      live_ports().insert(port);
    }
    {
      std::lock_guard lock(filter->mutex);
      filter->client_ports.insert(port);
    }
    if (connect_notify == nullptr) return STATUS_SUCCESS;
    auto* context = request.context.empty() ? nullptr : const_cast<std::byte*>(request.context.data());
    const NTSTATUS status = connect_notify(port, server_cookie, context,
                                           static_cast<ULONG>(request.context.size()), &connection_cookie);
    if (status != STATUS_SUCCESS) {
      // Refused: the library still owes the service the verdict, so the connection is handed
      // back open rather than closed here.
      {
        std::lock_guard lock(live_ports_mutex);
        live_ports().erase(port);
      }
      {
        std::lock_guard lock(filter->mutex);
        filter->client_ports.erase(port);
      }
      client = std::move(port->client);
      delete port;
    }
    return status;
  };
  if (disconnect_notify != nullptr) {
    options.on_disconnect = [disconnect_notify](void* cookie) { disconnect_notify(cookie); };
  }
  if (message_notify != nullptr) {
    options.on_message = [message_notify](void* cookie, ConstBytes input, MutableBytes output,
                                          size_t& returned) -> Status {
      ULONG returned_length = 0;
      const NTSTATUS status =
          message_notify(cookie, input.empty() ? nullptr : const_cast<std::byte*>(input.data()),
                         static_cast<ULONG>(input.size()), output.empty() ? nullptr : output.data(),
                         static_cast<ULONG>(output.size()), &returned_length);
      returned = returned_length;
      return status;
    };
  }
  auto created = ServerPort::create(std::move(options));
  if (!created) return created.status().code();
  auto* port =
      new (std::nothrow) _FLT_PORT{_FLT_PORT::Kind::server, filter, std::move(*created), ClientPort()};
  if (port == nullptr) return STATUS_INSUFFICIENT_RESOURCES;
  {
    std::lock_guard lock(filter->mutex);
    filter->server_ports.push_back(port);
  }
  {
    std::lock_guard lock(live_ports_mutex);
    live_ports().insert(port);
  }
  *server_port = port;
  return STATUS_SUCCESS;
}

extern "C" VOID FLTAPI FltCloseCommunicationPort(PFLT_PORT server_port) {
  {
    std::lock_guard lock(live_ports_mutex);
    if (server_port == nullptr || server_port->kind != _FLT_PORT::Kind::server ||
        live_ports().erase(server_port) == 0) {
      return;
    }
  }
  // The object stays with its filter: the connections it accepted go on until they end or the
  // filter unregisters.
  server_port->server.close();
}

extern "C" VOID FLTAPI FltCloseClientPort(PFLT_FILTER filter, PFLT_PORT* client_port) {
  if (client_port == nullptr) return;
  PFLT_PORT port = nullptr;
  {
    std::lock_guard lock(live_ports_mutex);
    port = *client_port;
    *client_port = nullptr;
    if (port == nullptr || live_ports().count(port) == 0 || port->kind != _FLT_PORT::Kind::client) return;
    live_ports().erase(port);
  }
  PFLT_FILTER owner = valid_filter(filter) ? filter : port->filter;
  {
    std::lock_guard lock(owner->mutex);
    owner->client_ports.erase(port);
  }
  port->client.close();
  delete port;
}

extern "C" NTSTATUS FLTAPI FltSendMessage(PFLT_FILTER /*Filter*/, PFLT_PORT* client_port, PVOID sender_buffer,
                                          ULONG sender_length, PVOID reply_buffer, PULONG reply_length,
                                          PLARGE_INTEGER timeout) {
  if (client_port == nullptr || (sender_length != 0 && sender_buffer == nullptr) ||
      (reply_buffer != nullptr && reply_length == nullptr)) {
    return STATUS_INVALID_PARAMETER;
  }
  std::shared_ptr<detail::PortConnection> connection;
  {
    // Read *ClientPort under the registry lock: this is how FltCloseClientPort, which clears it,
    // and a concurrent send agree on whether the port still exists.
    std::lock_guard lock(live_ports_mutex);
    PFLT_PORT port = *client_port;
    if (port == nullptr || live_ports().count(port) == 0 || port->kind != _FLT_PORT::Kind::client) {
      return STATUS_PORT_DISCONNECTED;
    }
    connection = port->client.connection();
  }
  if (!connection) return STATUS_PORT_DISCONNECTED;
  const ConstBytes message(static_cast<const std::byte*>(sender_buffer), sender_length);
  if (reply_buffer == nullptr)
    return connection->send(message, nullptr, timeout_from(timeout)).status().code();
  MutableBytes reply(static_cast<std::byte*>(reply_buffer), *reply_length);
  auto replied = connection->send(message, &reply, timeout_from(timeout));
  if (!replied) return replied.status().code();
  *reply_length = static_cast<ULONG>(replied->length);
  return replied->truncated() ? STATUS_BUFFER_OVERFLOW : STATUS_SUCCESS;
}
