// A soak service: connects to \SoakPort (retrying for a second while the port is at its
// MaxConnections), then serves with 1-4 threads: most messages are answered at once, some just
// after the filter's timeout, a few never; some threads also call FilterSendMessage. It ends after
// a random number of messages or a random lifetime, either with CloseHandle while its other
// threads still wait or hold messages, or with _exit and no CloseHandle at all. (The test also
// kills some with SIGKILL.) Everything it does is counted in the shared file.
#include <fltport/fltuser.h>

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "soak/soak_shared.hpp"
#include "support/c_filter.hpp"

namespace fltport::soak {
namespace {

constexpr HRESULT kClosedAbort = HRESULT_FROM_WIN32(ERROR_OPERATION_ABORTED);
constexpr HRESULT kClosedHandle = HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
constexpr HRESULT kCountLimit = HRESULT_FROM_WIN32(ERROR_CONNECTION_COUNT_LIMIT);

bool closed(HRESULT hr) {
  return hr == kClosedAbort || hr == kClosedHandle;
}

struct Params {
  int threads;
  uint64_t messages;
  int lifetime_ms;
  bool end_with_exit;  // else CloseHandle
  bool socket_transport;
  bool requester;               // a thread that only calls FilterSendMessage
  uint32_t late_short_per_10k;  // of messages with a timeout of 30 ms or less
  uint32_t late_per_10k;        // of the others
  uint32_t drop_per_10k;
  uint32_t request_per_mille;  // a FilterSendMessage after a message
};

Params choose(Rng& rng) {
  Params p{};
  p.threads = static_cast<int>(rng.between(1, 4));
  p.messages = 10ull << rng.below(8);  // 10 .. 1280
  p.lifetime_ms = static_cast<int>(rng.between(200, 5000));
  p.end_with_exit = rng.per_mille(400);
  p.socket_transport = rng.per_mille(250);
  p.requester = rng.per_mille(300);
  // Late replies are mostly to messages with short timeouts (a late reply holds a filter thread
  // for the timeout); some services are slow at everything.
  const bool slow = rng.per_mille(100);
  p.late_short_per_10k = slow ? 3000 : 500;
  p.late_per_10k = slow ? 100 : 5;
  p.drop_per_10k = 5;
  p.request_per_mille = 50;
  return p;
}

struct Service {
  Shared* shared = nullptr;
  Params params{};
  HANDLE port = nullptr;
  std::atomic<uint64_t> handled{0};
  std::atomic<bool> ending{false};
  std::mutex mutex;
  std::condition_variable ended;
  bool end_done = false;

  void unexpected(const char* what, HRESULT hr) {
    shared->last_unexpected_hr.store(hr);
    std::fprintf(stderr, "soak service %d: %s: 0x%08X\n", static_cast<int>(::getpid()), what,
                 static_cast<unsigned>(hr));
  }

  // Ends the service once: _exit (messages in hand, nothing closed) or CloseHandle (the other
  // threads' calls return ERROR_OPERATION_ABORTED; messages they hold stay unanswered).
  void end() {
    if (ending.exchange(true)) return;
    if (params.end_with_exit) {
      shared->svc_end_exit++;
      std::fflush(nullptr);
      // The process ends here, its other threads wherever they are (no CloseHandle, no joins).
      // exit_group directly: the sanitizers' _exit would report those threads as leaked.
      ::syscall(SYS_exit_group, 0);
    }
    shared->svc_end_close++;
    CloseHandle(port);
    std::lock_guard lock(mutex);
    end_done = true;
    ended.notify_all();
  }

  void request(Rng& rng, std::vector<uint8_t>& buffer) {
    const uint32_t payload = rng.below(100) < 80 ? rng.between(0, 512) : rng.between(513, 8000);
    RequestHead head{rng.next(), payload, 0};
    fill(buffer.data() + sizeof head, payload, head.token);
    head.checksum = checksum(buffer.data() + sizeof head, payload);
    std::memcpy(buffer.data(), &head, sizeof head);
    ResponseBody response{};
    DWORD returned = 0;
    shared->svc_requests++;
    const HRESULT hr = FilterSendMessage(port, buffer.data(), static_cast<DWORD>(sizeof head + payload),
                                         &response, sizeof response, &returned);
    if (hr == S_OK) {
      if (returned == sizeof response && response.token == response_token(head.token) &&
          response.checksum == head.checksum && response.length == payload) {
        shared->svc_request_ok++;
      } else {
        shared->svc_request_bad++;
        unexpected("FilterSendMessage: a response that does not match the request", hr);
      }
    } else if (closed(hr) && ending.load()) {
      shared->svc_request_closed++;
    } else {
      shared->svc_request_other++;
      unexpected("FilterSendMessage", hr);
    }
  }

  void worker(uint64_t seed) {
    Rng rng(seed);
    struct {
      FILTER_MESSAGE_HEADER header;
      uint8_t data[sizeof(MessageHead) + kMaxPayload];
    } message;
    std::vector<uint8_t> request_buffer(sizeof(RequestHead) + 8000);
    for (;;) {
      const HRESULT hr = FilterGetMessage(port, &message.header, sizeof message, nullptr);
      if (hr != S_OK) {
        if (closed(hr) && ending.load()) {
          shared->svc_get_closed++;
        } else {
          shared->svc_get_other++;
          unexpected("FilterGetMessage", hr);
        }
        return;
      }
      shared->svc_got++;
      MessageHead head{};
      std::memcpy(&head, message.data, sizeof head);
      if (head.payload_length > kMaxPayload ||
          checksum(message.data + sizeof head, head.payload_length) != head.checksum ||
          message.header.ReplyLength != sizeof(FILTER_REPLY_HEADER) + sizeof(ReplyBody)) {
        shared->svc_msg_bad++;
        unexpected("a message that is not what the filter sent", hr);
      }
      if (rng.per_10k(params.drop_per_10k)) {
        shared->svc_dropped++;
      } else {
        if (rng.per_10k(head.timeout_ms <= 30 ? params.late_short_per_10k : params.late_per_10k)) {
          // Just after the filter's timeout (capped), or a while for a message with none.
          const uint32_t wait = head.timeout_ms == kNoTimeout
                                    ? rng.between(10, 200)
                                    : std::min<uint32_t>(head.timeout_ms, 1000) + rng.between(1, 20);
          shared->svc_late++;
          std::this_thread::sleep_for(std::chrono::milliseconds(wait));
        }
        const ReplyBody body{head.seq, head.checksum, static_cast<uint32_t>(::getpid())};
        shared->svc_reply_attempts++;
        const HRESULT replied = test::reply_message(port, message.header.MessageId, &body, sizeof body);
        if (replied == S_OK) {
          shared->svc_reply_ok++;
        } else if (replied == ERROR_FLT_NO_WAITER_FOR_REPLY) {
          shared->svc_reply_no_waiter++;
        } else if (closed(replied) && ending.load()) {
          shared->svc_reply_closed++;
        } else {
          shared->svc_reply_other++;
          unexpected("FilterReplyMessage", replied);
        }
      }
      if (!ending.load() && rng.per_mille(params.request_per_mille)) request(rng, request_buffer);
      if (handled.fetch_add(1) + 1 == params.messages) end();
    }
  }

  void requester(uint64_t seed) {
    Rng rng(seed);
    std::vector<uint8_t> buffer(sizeof(RequestHead) + 8000);
    while (!ending.load()) {
      request(rng, buffer);
      std::this_thread::sleep_for(std::chrono::microseconds(rng.between(0, 2000)));
    }
  }
};

}  // namespace

int run_service(const std::string& shared_path, uint64_t seed) {
  ::alarm(60);  // its own watchdog
  Shared* shared = map_shared(shared_path, false);
  Rng rng(seed);
  Service service;
  service.shared = shared;
  service.params = choose(rng);
  if (service.params.socket_transport) ::setenv("FLTPORT_TRANSPORT", "socket", 1);
  shared->svc_started++;

  const uint64_t context[2] = {static_cast<uint64_t>(::getpid()), seed};
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (;;) {
    const HRESULT hr =
        FilterConnectCommunicationPort(kPortName, 0, context, sizeof context, nullptr, &service.port);
    if (hr == S_OK) break;
    if (hr != kCountLimit) {
      shared->svc_connect_other++;
      shared->last_unexpected_hr.store(hr);
      std::fprintf(stderr, "soak service %d: FilterConnectCommunicationPort: 0x%08X\n",
                   static_cast<int>(::getpid()), static_cast<unsigned>(hr));
      return 1;
    }
    if (std::chrono::steady_clock::now() >= give_up) {
      shared->svc_refused++;
      return 0;
    }
    shared->svc_limit_retries++;
    std::this_thread::sleep_for(std::chrono::milliseconds(rng.between(10, 40)));
  }
  shared->svc_connected++;

  std::vector<std::thread> threads;
  for (int i = 0; i < service.params.threads; ++i)
    threads.emplace_back(&Service::worker, &service, rng.next());
  if (service.params.requester) threads.emplace_back(&Service::requester, &service, rng.next());
  {
    std::unique_lock lock(service.mutex);
    service.ended.wait_for(lock, std::chrono::milliseconds(service.params.lifetime_ms),
                           [&] { return service.end_done; });
  }
  service.end();  // the lifetime is over (or a worker ended it already: then nothing)
  for (auto& thread : threads) thread.join();
  std::fflush(nullptr);
  return 0;
}

}  // namespace fltport::soak
