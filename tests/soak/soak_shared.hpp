// The soak test's three kinds of process (the test itself, the filter process, the services it
// churns) share one file mapped MAP_SHARED in the runtime directory: control flags and counters,
// lock-free atomics that keep their values when a service is killed -9. The messages the filter
// and the services exchange carry a sequence number and a checksum, so that every reply and every
// response is checked against what it answers.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

namespace fltport::soak {

inline constexpr const wchar_t* kPortName = L"\\SoakPort";
inline constexpr int kMaxConnections = 16;
inline constexpr int kMaxSenders = 16;
inline constexpr uint32_t kNoTimeout = 0xFFFFFFFFu;  // FltSendMessage with a NULL timeout
inline constexpr size_t kMaxPayload = 16000;         // larger than a ring slot: some go by socket
inline constexpr uint64_t kMagic = 0x534f414b32303236ull;

using Counter = std::atomic<uint64_t>;
static_assert(Counter::is_always_lock_free, "counters are shared between processes");
static_assert(std::atomic<int64_t>::is_always_lock_free, "counters are shared between processes");

// A FltSendMessage call in progress, for the test's hang check (0: none).
struct SenderSlot {
  std::atomic<int64_t> call_start_ns{0};
  std::atomic<uint32_t> timeout_ms{0};
};

struct Shared {
  uint64_t magic = kMagic;
  // ---- control (the test writes, the filter reads) ----
  std::atomic<uint32_t> stop{0};
  // ---- the filter process ----
  std::atomic<uint32_t> filter_ready{0};
  std::atomic<uint32_t> filter_done{0};
  Counter sent;          // FltSendMessage calls started
  Counter replied;       // STATUS_SUCCESS with the reply to that very message
  Counter timed_out;     // STATUS_TIMEOUT
  Counter disconnected;  // STATUS_PORT_DISCONNECTED
  Counter other_status;  // anything else: a failure
  Counter bad_reply;     // STATUS_SUCCESS with a reply that is not this message's: a failure
  std::atomic<int32_t> last_other_status{0};
  std::atomic<int64_t> max_timeout_overrun_us{0};     // how late STATUS_TIMEOUT came, at worst
  Counter replied_us, timed_out_us, disconnected_us;  // time spent in calls, by outcome
  Counter connects;                                   // ConnectNotify
  Counter disconnects;                                // DisconnectNotify
  std::atomic<int64_t> live_connections{0};
  Counter notify_calls;  // MessageNotify (FilterSendMessage from the services)
  Counter notify_bad;    // MessageNotify with input that is not a request: a failure
  SenderSlot senders[kMaxSenders];
  // ---- the services ----
  Counter svc_started;
  Counter svc_connected;
  Counter svc_refused;         // ERROR_CONNECTION_COUNT_LIMIT for a whole second: gave up
  Counter svc_limit_retries;   // ERROR_CONNECTION_COUNT_LIMIT, then retried
  Counter svc_connect_other;   // any other connect failure: a failure
  Counter svc_got;             // FilterGetMessage S_OK
  Counter svc_msg_bad;         // a message whose checksum or reply length is wrong: a failure
  Counter svc_get_closed;      // FilterGetMessage ended by the service's own CloseHandle
  Counter svc_get_other;       // a failure
  Counter svc_reply_attempts;  // counted before the call: a service killed in it is counted
  Counter svc_reply_ok;
  Counter svc_reply_no_waiter;  // ERROR_FLT_NO_WAITER_FOR_REPLY: the filter had timed out
  Counter svc_reply_closed;     // after the service's own CloseHandle
  Counter svc_reply_other;      // a failure
  Counter svc_late;             // replies held past the message's timeout
  Counter svc_dropped;          // messages never answered
  Counter svc_requests;         // FilterSendMessage calls
  Counter svc_request_ok;
  Counter svc_request_bad;     // S_OK with a response that does not match: a failure
  Counter svc_request_closed;  // after the service's own CloseHandle
  Counter svc_request_other;   // a failure
  Counter svc_end_close;       // ended with CloseHandle while other threads still waited or held messages
  Counter svc_end_exit;        // ended with _exit, no CloseHandle, messages possibly in hand
  std::atomic<int32_t> last_unexpected_hr{0};
  // ---- the file load (fanotify half) ----
  std::atomic<uint32_t> files_stop{0};  // the test writes: stop and exit
  Counter file_opens, file_open_failures, file_writes, file_write_failures;
  std::atomic<uint64_t> worst_open_us{0}, worst_write_us{0};
};

inline int64_t monotonic_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Creates (create = true; the test) or maps (a child) the shared file.
inline Shared* map_shared(const std::string& path, bool create) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0), 0600);
  if (fd < 0) throw std::runtime_error("open " + path + ": " + std::strerror(errno));
  if (create && ::ftruncate(fd, sizeof(Shared)) != 0) {
    ::close(fd);
    throw std::runtime_error("ftruncate: " + std::string(std::strerror(errno)));
  }
  void* memory = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (memory == MAP_FAILED) throw std::runtime_error("mmap: " + std::string(std::strerror(errno)));
  Shared* shared = create ? new (memory) Shared() : static_cast<Shared*>(memory);
  if (shared->magic != kMagic) throw std::runtime_error("not a soak file: " + path);
  return shared;
}

// ---- what travels ----

// FltSendMessage: a head, then payload_length bytes.
struct MessageHead {
  uint64_t seq;
  uint32_t timeout_ms;  // kNoTimeout: none; the service uses it to reply just too late
  uint32_t payload_length;
  uint32_t checksum;
  uint32_t sender;
};
// FilterReplyMessage's data.
struct ReplyBody {
  uint64_t seq;
  uint32_t checksum;
  uint32_t service_pid;
};
// FilterSendMessage: a head, then payload_length bytes; MessageNotify answers a ResponseBody.
struct RequestHead {
  uint64_t token;
  uint32_t payload_length;
  uint32_t checksum;
};
struct ResponseBody {
  uint64_t token;  // response_token(request token)
  uint32_t checksum;
  uint32_t length;
};

inline uint64_t response_token(uint64_t token) {
  return (token * 0x9E3779B97F4A7C15ull) ^ 0xA5A5A5A55A5A5A5Aull;
}

inline uint32_t checksum(const uint8_t* data, size_t size) {
  uint32_t hash = 2166136261u;  // FNV-1a
  for (size_t i = 0; i < size; ++i) hash = (hash ^ data[i]) * 16777619u;
  return hash;
}

inline void fill(uint8_t* data, size_t size, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    data[i] = static_cast<uint8_t>(x);
  }
}

// A small deterministic generator (splitmix64): each thread and process has its own.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n).
  uint32_t below(uint32_t n) { return n == 0 ? 0 : static_cast<uint32_t>(next() % n); }
  // Uniform in [lo, hi].
  uint32_t between(uint32_t lo, uint32_t hi) { return lo + below(hi - lo + 1); }
  bool per_mille(uint32_t p) { return below(1000) < p; }
  bool per_10k(uint32_t p) { return below(10000) < p; }

 private:
  uint64_t state_;
};

// The two child roles, entered from main() when the test binary is started with --soak-role=...
int run_filter(const std::string& shared_path, int senders, uint64_t seed);
int run_service(const std::string& shared_path, uint64_t seed);
int run_files(const std::string& shared_path, const std::string& directory, int count, bool rewrites,
              uint64_t seed);

}  // namespace fltport::soak
