// The soak's filter process: a port for up to kMaxConnections services and `senders` threads that
// call FltSendMessage, with mixed timeouts and sizes, on whichever connections exist, and count
// every call's outcome in the shared file. MessageNotify answers the services' FilterSendMessage.
#include <fltport/fltkernel.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "soak/soak_shared.hpp"
#include "support/c_filter.hpp"

namespace fltport::soak {
namespace {

// One accepted connection. Its address is the connection cookie; it lives until DisconnectNotify
// has closed its client port and every sender that picked it has returned.
struct Connection {
  PFLT_PORT client_port = nullptr;  // written by the library (FltCloseClientPort) under its lock
  // A sender saw STATUS_PORT_DISCONNECTED: the others leave it alone until DisconnectNotify.
  std::atomic<bool> ended{false};
};

struct FilterState {
  Shared* shared = nullptr;
  PFLT_FILTER filter = nullptr;
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::shared_ptr<Connection>> connections;
  std::atomic<uint64_t> next_seq{1};
};

FilterState* g_state = nullptr;

NTSTATUS FLTAPI on_connect(PFLT_PORT client_port, PVOID, PVOID, ULONG, PVOID* connection_cookie) {
  auto connection = std::make_shared<Connection>();
  connection->client_port = client_port;
  *connection_cookie = connection.get();
  {
    std::lock_guard lock(g_state->mutex);
    g_state->connections.push_back(std::move(connection));
  }
  g_state->shared->connects++;
  g_state->shared->live_connections++;
  g_state->changed.notify_all();
  return STATUS_SUCCESS;
}

VOID FLTAPI on_disconnect(PVOID connection_cookie) {
  auto* connection = static_cast<Connection*>(connection_cookie);
  // The scanner's pattern: close the client port here. Senders still in FltSendMessage on it
  // return STATUS_PORT_DISCONNECTED; later ones read NULL and return the same.
  FltCloseClientPort(g_state->filter, &connection->client_port);
  std::shared_ptr<Connection> last;  // freed outside the lock (or by the last sender holding it)
  {
    std::lock_guard lock(g_state->mutex);
    auto& all = g_state->connections;
    const auto it =
        std::find_if(all.begin(), all.end(), [&](const auto& c) { return c.get() == connection; });
    if (it != all.end()) {
      last = std::move(*it);
      all.erase(it);
    }
  }
  g_state->shared->disconnects++;
  g_state->shared->live_connections--;
}

NTSTATUS FLTAPI on_message(PVOID, PVOID input, ULONG input_length, PVOID output, ULONG output_length,
                           PULONG returned_length) {
  Shared& shared = *g_state->shared;
  shared.notify_calls++;
  RequestHead head{};
  if (input == nullptr || input_length < sizeof head || output == nullptr ||
      output_length < sizeof(ResponseBody)) {
    shared.notify_bad++;
    return STATUS_INVALID_PARAMETER;
  }
  std::memcpy(&head, input, sizeof head);
  const auto* payload = static_cast<const uint8_t*>(input) + sizeof head;
  if (head.payload_length != input_length - sizeof head ||
      checksum(payload, head.payload_length) != head.checksum) {
    shared.notify_bad++;
    return STATUS_INVALID_PARAMETER;
  }
  const ResponseBody response{response_token(head.token), head.checksum, head.payload_length};
  std::memcpy(output, &response, sizeof response);
  *returned_length = sizeof response;
  return STATUS_SUCCESS;
}

void sender(FilterState& state, int index, uint64_t seed) {
  Shared& shared = *state.shared;
  SenderSlot& slot = shared.senders[index];
  Rng rng(seed);
  std::vector<uint8_t> message(sizeof(MessageHead) + kMaxPayload);
  while (shared.stop.load() == 0) {
    std::shared_ptr<Connection> connection;
    {
      std::unique_lock lock(state.mutex);
      if (state.connections.empty()) {
        state.changed.wait_for(lock, std::chrono::milliseconds(50));
        continue;
      }
      connection = state.connections[rng.below(static_cast<uint32_t>(state.connections.size()))];
    }
    if (connection->ended.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    // Sizes: mostly small, some up to a ring slot, some larger (those go by the socket).
    const uint32_t size_kind = rng.below(100);
    const uint32_t payload = size_kind < 60   ? rng.between(0, 256)
                             : size_kind < 90 ? rng.between(257, 2000)
                                              : rng.between(2001, kMaxPayload);
    MessageHead head{};
    head.seq = state.next_seq++;
    head.payload_length = payload;
    head.sender = static_cast<uint32_t>(index);
    fill(message.data() + sizeof head, payload, head.seq);
    head.checksum = checksum(message.data() + sizeof head, payload);
    // Timeouts: relative (mostly ample, some short enough to withdraw queued messages), absolute,
    // zero (do not wait) and none at all (NULL: only a reply or the end of the connection ends it).
    LARGE_INTEGER timeout{};
    PLARGE_INTEGER timeout_argument = &timeout;
    const uint32_t timeout_kind = rng.below(100);
    if (timeout_kind < 60) {
      head.timeout_ms = rng.between(100, 1000);
      timeout = test::relative_timeout(std::chrono::milliseconds(head.timeout_ms));
    } else if (timeout_kind < 75) {
      head.timeout_ms = rng.between(1, 30);
      timeout = test::relative_timeout(std::chrono::milliseconds(head.timeout_ms));
    } else if (timeout_kind < 87) {
      head.timeout_ms = rng.between(50, 500);
      timeout = test::absolute_timeout(std::chrono::system_clock::now() +
                                       std::chrono::milliseconds(head.timeout_ms));
    } else if (timeout_kind < 92) {
      head.timeout_ms = 0;
      timeout.QuadPart = 0;
    } else {
      head.timeout_ms = kNoTimeout;
      timeout_argument = nullptr;
    }
    std::memcpy(message.data(), &head, sizeof head);

    ReplyBody reply{};
    ULONG reply_length = sizeof reply;
    slot.timeout_ms.store(head.timeout_ms);
    const int64_t started_ns = monotonic_ns();
    slot.call_start_ns.store(started_ns);
    shared.sent++;
    const NTSTATUS status =
        FltSendMessage(state.filter, &connection->client_port, message.data(),
                       static_cast<ULONG>(sizeof head + payload), &reply, &reply_length, timeout_argument);
    slot.call_start_ns.store(0);
    const auto call_us = static_cast<uint64_t>((monotonic_ns() - started_ns) / 1000);
    if (status == STATUS_SUCCESS) {
      if (reply_length == sizeof reply && reply.seq == head.seq && reply.checksum == head.checksum) {
        shared.replied++;
        shared.replied_us += call_us;
      } else {
        shared.bad_reply++;
        std::fprintf(stderr,
                     "soak filter: message %llu: a reply of %u bytes that is not its own (seq %llu)\n",
                     static_cast<unsigned long long>(head.seq), static_cast<unsigned>(reply_length),
                     static_cast<unsigned long long>(reply.seq));
      }
    } else if (status == STATUS_TIMEOUT) {
      shared.timed_out++;
      shared.timed_out_us += call_us;
      const int64_t overrun_us = (monotonic_ns() - started_ns) / 1000 - int64_t{head.timeout_ms} * 1000;
      int64_t worst = shared.max_timeout_overrun_us.load();
      while (overrun_us > worst && !shared.max_timeout_overrun_us.compare_exchange_weak(worst, overrun_us)) {
      }
    } else if (status == STATUS_PORT_DISCONNECTED) {
      shared.disconnected++;
      shared.disconnected_us += call_us;
      connection->ended.store(true);
    } else {
      shared.other_status++;
      shared.last_other_status.store(status);
      std::fprintf(stderr, "soak filter: message %llu: FltSendMessage returned 0x%08X\n",
                   static_cast<unsigned long long>(head.seq), static_cast<unsigned>(status));
    }
  }
}

}  // namespace

int run_filter(const std::string& shared_path, int senders, uint64_t seed) {
  Shared* shared = map_shared(shared_path, false);
  senders = std::clamp(senders, 1, kMaxSenders);
  FilterState state;
  state.shared = shared;
  g_state = &state;

  FLT_REGISTRATION registration;
  std::memset(&registration, 0, sizeof registration);
  registration.Size = sizeof registration;
  registration.Version = FLT_REGISTRATION_VERSION;
  if (const NTSTATUS status = FltRegisterFilter(nullptr, &registration, &state.filter); !NT_SUCCESS(status)) {
    std::fprintf(stderr, "soak filter: FltRegisterFilter: 0x%08X\n", static_cast<unsigned>(status));
    return 1;
  }
  PSECURITY_DESCRIPTOR security = nullptr;
  FltBuildDefaultSecurityDescriptor(&security, FLT_PORT_ALL_ACCESS);
  UNICODE_STRING name;
  RtlInitUnicodeString(&name, kPortName);
  OBJECT_ATTRIBUTES attributes;
  InitializeObjectAttributes(&attributes, &name, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, nullptr, security);
  PFLT_PORT server_port = nullptr;
  const NTSTATUS created = FltCreateCommunicationPort(state.filter, &server_port, &attributes, nullptr,
                                                      on_connect, on_disconnect, on_message, kMaxConnections);
  FltFreeSecurityDescriptor(security);
  if (!NT_SUCCESS(created)) {
    std::fprintf(stderr, "soak filter: FltCreateCommunicationPort: 0x%08X\n", static_cast<unsigned>(created));
    FltUnregisterFilter(state.filter);
    return 1;
  }

  std::vector<std::thread> threads;
  for (int i = 0; i < senders; ++i) threads.emplace_back(sender, std::ref(state), i, seed * 1000 + i);
  shared->filter_ready.store(1);
  while (shared->stop.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  state.changed.notify_all();
  for (auto& thread : threads) thread.join();

  FltCloseCommunicationPort(server_port);
  FltUnregisterFilter(state.filter);  // closes what is still connected; DisconnectNotify runs for each
  {
    std::lock_guard lock(state.mutex);
    state.connections.clear();
  }
  g_state = nullptr;
  shared->filter_done.store(1);
  ::munmap(shared, sizeof(Shared));
  return 0;
}

}  // namespace fltport::soak
