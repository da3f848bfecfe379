// Hostile peers (issue 6): a filter process serves one well-behaved service while another process
// attacks the same port. For each kind of attack the test checks that
//   - only the hostile connections are affected: closed, or refused with the documented status;
//   - the good service's round trips (FltSendMessage -> FilterGetMessage -> FilterReplyMessage,
//     64 bytes, back to back) keep their latency: p50 within 2x of the undisturbed figure;
//   - the filter process's memory, descriptors and threads come back to where they were.
//
// Processes (all forked by the test, which itself never starts a thread of the library):
//   filter   FltRegisterFilter + FltCreateCommunicationPort (\ScannerPort); measures the good round
//            trips on command; for two cases it also keeps sending to the hostile connections.
//   decoy    the same filter on another port (\DecoyPort), with no good service.
//   good     FilterConnectCommunicationPort with context "good", then FilterGetMessage /
//            FilterReplyMessage (echo) until a message that wants no reply.
//   hostile  runs the attack on command, on the filter or on the decoy.
// They share pages of counters (MAP_SHARED, made before the forks) and talk through Signals.
//
// How the 2x is measured fairly on a 2-vCPU machine. Whatever burns CPU while the good pair runs
// slows it down, and an attack burns CPU twice: in the attacker, and in the filter that must read,
// refuse or answer it. On the shared-memory path it does more: the good pair answers in ~3 us only
// while both sides spin on a CPU each; with any other runnable thread on the machine they sleep
// between messages, and a round trip costs two futex wake-ups (~55 us here). That is the machine,
// not the port. So the undisturbed figure is measured with the very same attack running, aimed at
// the decoy: same attacker, same threads and system calls, same work in a filter process, only not
// this filter's. What the ratio shows is what hitting this filter costs its other connection beyond
// that: a lock, a queue or a thread it shares with the hostile connection, the work of its
// acceptor. Each case runs kRounds rounds of three phases: idle (nothing else runs), hostile (the
// attack on the filter), decoy (the attack on the decoy); every other round the decoy goes first,
// so that a drift in the machine's load favours neither. Each phase's p50 and p99 are over >= 3000
// round trips and >= 200 ms; the figures compared are the medians over the rounds, so that another
// process's burst lands in one round, not in the result. The idle figures, the ratio to them and
// the CPU each process used in each phase are printed too. The 2x is asserted in the dev build
// only: under the sanitizers the instrumentation, not the port, dominates.
//
// Every wait is bounded, the test has an alarm as watchdog (it kills the test's own children by
// pid), children die with the test (PR_SET_PDEATHSIG) and have alarms of their own, and the port
// lives in the test's own runtime directory ($FLTPORT_RUNTIME_DIR, PortTest). The filter's and the
// hostile's stderr go to files in that directory (each dropped connection is one log line), shown
// when a test fails.
//
// Reproduce: build/dev/tests/fltport_integration_tests --gtest_filter='HostilePeer*'
// (FLTPORT_TRANSPORT=socket for the socket path; the ring corruption case then skips).
#include <fltport/fltkernel.h>
#include <fltport/fltuser.h>
#include <fltport/port.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "base/log.hpp"
#include "support/c_filter.hpp"
#include "support/proc_info.hpp"
#include "support/process.hpp"
#include "support/raw_client.hpp"
#include "support/ring_bell.hpp"
#include "support/sanitized.hpp"
#include "support/scoped_env.hpp"
#include "transport/runtime_dir.hpp"
#include "transport/shm_ring.hpp"
#include "transport/unix_socket.hpp"
#include "wire/frame.hpp"

namespace fltport::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using wire::FrameHeader;
using wire::FrameType;

// ---- bounds and sizes ----

constexpr size_t kMessageSize = 64;
constexpr int kRounds = 9;
constexpr auto kPhaseMin = 200ms;                    // each measurement lasts at least this long ...
constexpr size_t kMinSamples = 3000;                 // ... and takes at least this many round trips,
constexpr std::chrono::milliseconds kPhaseMax = 3s;  // unless this much time has passed (default),
constexpr size_t kMaxSamples = 200000;               // or this many round trips.
constexpr auto kQuotaTime = 10s;                     // the longest an attack goes on after the measurement
constexpr auto kWarmUp = 30ms;                       // an attack runs this long before the measurement starts
constexpr double kP50Bound = 2.0;                    // hostile p50 / undisturbed p50
// Filter RSS after the case versus before (after the warm-up). What stays is glibc's: each thread
// that ran a connection was given one of at most 8 x CPUs malloc arenas (16 here), and an arena
// keeps the pages of the 128 KiB frame buffers it once held (smaps of a run: 15 new arena heaps of
// 136-200 KiB each, nothing else). So the growth stops at about 16 x 200 KiB whatever the number
// of connections; the per-round figures printed show it level off.
constexpr long kRssGrowthBoundKib = 6 * 1024;
constexpr auto kClosedWithin = 3s;          // a hostile connection is closed within this
constexpr unsigned kWatchdogSeconds = 110;  // below ctest's 120 s for the socket copies

bool socket_forced() {
  const char* forced = std::getenv("FLTPORT_TRANSPORT");
  return forced != nullptr && std::strcmp(forced, "socket") == 0;
}
const char* transport_label() {
  return socket_forced() ? "socket" : "shm";
}

// ---- the page the processes share ----

using Counter = std::atomic<uint64_t>;
static_assert(Counter::is_always_lock_free, "counters in shared memory must be plain words");

struct Board {
  // the good service
  Counter latest_good_id;  // the last MessageId it took: the forged-reply attack answers these
  // the filter: the last measurement
  Counter samples, p50_ns, p99_ns, failures, mismatches, first_failure, filter_cpu_milli, phase_us;
  // the filter: connections
  Counter hostile_accepted, hostile_disconnected, hostile_live, good_disconnected;
  // the filter: sends to hostile connections (never-read and ring cases)
  Counter sends, sends_timed_out, sends_disconnected, sends_other, first_send_other, max_send_ms;
  // the hostile process, over all phases
  Counter attempts;    // hostile connections made (or calls, for the C API cases)
  Counter closed;      // ... that the filter closed within kClosedWithin
  Counter kept;        // ... that it did not (a failure where closing is expected)
  Counter documented;  // calls that returned the documented status
  Counter refused;     // connections refused with STATUS_CONNECTION_COUNT_LIMIT
  Counter unexpected;  // anything else
  Counter first_unexpected;
  // the never-read case's last step: posts that went through, then the one that did not
  Counter stall_posted, stall_status, stall_ms;
  // the hostile process, the last phase
  Counter phase_cpu_us, phase_wall_us;
};

// Anonymous shared memory, mapped before the children are forked.
class SharedBoard {
 public:
  SharedBoard() {
    void* memory = ::mmap(nullptr, sizeof(Board), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory != MAP_FAILED) board_ = new (memory) Board();
  }
  ~SharedBoard() {
    if (board_ != nullptr) ::munmap(board_, sizeof(Board));
  }
  SharedBoard(const SharedBoard&) = delete;
  SharedBoard& operator=(const SharedBoard&) = delete;
  bool valid() const { return board_ != nullptr; }
  Board& operator*() const { return *board_; }
  Board* operator->() const { return board_; }

 private:
  Board* board_ = nullptr;
};

void note_unexpected(Board& board, int64_t code) {
  uint64_t none = 0;
  board.first_unexpected.compare_exchange_strong(none, static_cast<uint64_t>(code) | (1ull << 63));
  board.unexpected++;
}

// Commands, as Signal values.
enum Command : uint64_t {
  kMeasure = 1,
  kSendersOn,
  kSendersOff,
  kQuit,
  kAttack,       // hostile: attack the port under test
  kAttackDecoy,  // hostile: the same attack on the decoy
  kStop,
  kMark,
  kStallPeer,  // hostile: one raw connection that asks for 65536 messages and reads none
  kStallSend,  // filter: post to it until a post fails
};

// ---- figures of a process, from /proc ----

// CPU time of the whole calling process, in microseconds.
uint64_t process_cpu_us() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const auto us = [](const timeval& t) { return static_cast<uint64_t>(t.tv_sec) * 1000000 + t.tv_usec; };
  return us(usage.ru_utime) + us(usage.ru_stime);
}

// A child of this test: dies with the test, and on its own after `seconds`.
void become_bounded_child(unsigned seconds) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  ::alarm(seconds);
}

// The child's stderr goes to a file (the filter logs one line per dropped connection).
void redirect_stderr(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  ::dup2(fd, STDERR_FILENO);
  ::close(fd);
}

std::string tail_of(const std::string& path, size_t lines) {
  std::ifstream in(path);
  std::vector<std::string> all;
  std::string line;
  while (std::getline(in, line)) all.push_back(line);
  std::string text;
  for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) text += all[i] + "\n";
  return text;
}

// Log lines of one kind: how many were written, and how many they account for (a rate-limited
// line ends with "(and N more like this not logged)").
struct LoggedLines {
  size_t written = 0;
  size_t accounted = 0;
};
LoggedLines count_lines_with(const std::string& path, const std::string& needle) {
  std::ifstream in(path);
  std::string line;
  LoggedLines count;
  while (std::getline(in, line)) {
    if (line.find(needle) == std::string::npos) continue;
    ++count.written;
    ++count.accounted;
    const size_t more = line.rfind("(and ");
    if (more != std::string::npos && line.find(" more like this not logged)", more) != std::string::npos) {
      count.accounted += std::strtoull(line.c_str() + more + 5, nullptr, 10);
    }
  }
  return count;
}

// =================================================================================================
// The cases
// =================================================================================================

enum class Attack {
  garbage,
  truncated,
  lying_lengths,
  forged_replies,
  send_flood,
  connect_churn,
  never_read,
  ring_corruption,
};

struct HostileCase {
  const char* name;
  Attack attack;
  int threads;           // of the hostile process
  LONG max_connections;  // of the port
  // The filter keeps sending to the hostile connections during the attack, with this timeout.
  std::chrono::milliseconds filter_sends{0};
  bool shared_memory_only = false;
  // Attempts each round's attack makes at least: after the measurement, the attack goes on until
  // it has made them (the back-to-back round trips of the measurement leave it little CPU).
  uint64_t attempts_per_round = 0;
};

const HostileCase kGarbage{"garbage datagrams", Attack::garbage, 2, 16};
const HostileCase kTruncated{"truncated frames", Attack::truncated, 2, 16};
const HostileCase kLyingLengths{"lengths that lie", Attack::lying_lengths, 2, 16};
const HostileCase kForgedReplies{"forged replies", Attack::forged_replies, 2, 16};
const HostileCase kSendFlood{"FilterSendMessage flood", Attack::send_flood, 8, 16};
// Few slots, so that the churn also meets the connection limit.
// At least 400 cycles a round, 3,600 in all (the sanitizers' builds connect 10-50 times slower, and
// are there for what they check, not for the count: 60 a round).
const HostileCase kConnectChurn{"connect/disconnect churn", Attack::connect_churn, 3, 4, {}, false,
                                kSanitized ? 60u : 400u};
const HostileCase kNeverRead{"connections that never read", Attack::never_read, 2, 32, 20ms};
const HostileCase kRingCorruption{
    "shared-memory ring corruption", Attack::ring_corruption, 2, 16, 5000ms, true};

// =================================================================================================
// The filter process
// =================================================================================================

class HostileTestFilter {
 public:
  HostileTestFilter(const HostileCase& c, Board& board, const wchar_t* port_name)
      : case_(c), board_(board), port_name_(port_name) {
    good_.owner = this;
    good_.good = true;
    for (Slot& slot : slots_) slot.owner = this;
    samples_.assign(kMaxSamples, 0);  // touched now: the measurements allocate nothing
    samples_.clear();
  }
  ~HostileTestFilter() { stop(); }
  HostileTestFilter(const HostileTestFilter&) = delete;
  HostileTestFilter& operator=(const HostileTestFilter&) = delete;

  NTSTATUS start() {
    FLT_REGISTRATION registration;
    std::memset(&registration, 0, sizeof registration);
    registration.Size = sizeof registration;
    registration.Version = FLT_REGISTRATION_VERSION;
    NTSTATUS status = FltRegisterFilter(nullptr, &registration, &filter_);
    if (!NT_SUCCESS(status)) return status;
    PSECURITY_DESCRIPTOR security = nullptr;
    status = FltBuildDefaultSecurityDescriptor(&security, FLT_PORT_ALL_ACCESS);
    if (!NT_SUCCESS(status)) return status;
    UNICODE_STRING name;
    RtlInitUnicodeString(&name, port_name_);
    OBJECT_ATTRIBUTES attributes;
    InitializeObjectAttributes(&attributes, &name, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE, nullptr,
                               security);
    status = FltCreateCommunicationPort(filter_, &server_, &attributes, this, &connect_notify,
                                        &disconnect_notify, &message_notify, case_.max_connections);
    FltFreeSecurityDescriptor(security);
    return status;
  }

  bool wait_good(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return good_.used; });
  }

  // Back-to-back round trips to the good service; figures on the board.
  void measure() {
    samples_.clear();
    std::array<uint8_t, kMessageSize> message{};
    std::array<uint8_t, kMessageSize> reply{};
    for (size_t i = 0; i < kMessageSize; ++i) message[i] = static_cast<uint8_t>(i * 7 + 3);
    LARGE_INTEGER timeout = relative_timeout(5s);
    uint64_t failures = 0, mismatches = 0;
    const uint64_t cpu_start = process_cpu_us();
    const auto start = Clock::now();
    for (uint64_t sequence = 1;; ++sequence) {
      const auto elapsed = Clock::now() - start;
      if ((samples_.size() >= kMinSamples && elapsed >= kPhaseMin) || elapsed >= kPhaseMax ||
          samples_.size() >= kMaxSamples || failures > 10) {
        break;
      }
      std::memcpy(message.data(), &sequence, sizeof sequence);
      ULONG reply_length = kMessageSize;
      const auto before = Clock::now();
      const NTSTATUS status = FltSendMessage(filter_, &good_.port, message.data(), kMessageSize, reply.data(),
                                             &reply_length, &timeout);
      const auto after = Clock::now();
      if (status != STATUS_SUCCESS) {
        if (failures++ == 0) board_.first_failure = static_cast<uint32_t>(status);
        continue;
      }
      if (reply_length != kMessageSize || reply != message) ++mismatches;
      samples_.push_back(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(after - before).count()));
    }
    board_.samples = samples_.size();
    board_.failures += failures;
    board_.mismatches += mismatches;
    board_.p50_ns = percentile(0.50);
    board_.p99_ns = percentile(0.99);
    // The filter process's CPU meanwhile, in thousandths of a CPU: its side of the good round
    // trips, and whatever a hostile peer makes it do.
    const auto wall_us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
    board_.filter_cpu_milli =
        (process_cpu_us() - cpu_start) * 1000 / static_cast<uint64_t>(std::max<int64_t>(1, wall_us));
    board_.phase_us = static_cast<uint64_t>(wall_us);
  }

  // Threads that keep sending to the hostile connections (with case_.filter_sends as timeout).
  void senders_on() {
    stop_senders_ = false;
    for (int i = 0; i < kSenders; ++i) senders_.emplace_back([this, i] { send_to_hostiles(i); });
  }
  void senders_off() {
    stop_senders_ = true;
    for (std::thread& sender : senders_) sender.join();
    senders_.clear();
  }

  // Posts (no reply wanted, no timeout) to the one hostile connection until a post fails: the
  // connection asked for many messages and reads none, so its socket fills, and the post that finds
  // it full waits for the stall limit, then the connection is closed.
  void post_until_refused() {
    PFLT_PORT port = nullptr;
    {
      std::lock_guard lock(mutex_);
      for (const Slot& slot : slots_) {
        if (slot.used) port = slot.port;
      }
    }
    std::array<uint8_t, kMessageSize> message{};
    uint64_t posted = 0;
    NTSTATUS status = STATUS_SUCCESS;
    auto last = Clock::now();
    while (status == STATUS_SUCCESS && posted < 100000) {
      last = Clock::now();
      status = FltSendMessage(filter_, &port, message.data(), kMessageSize, nullptr, nullptr, nullptr);
      if (status == STATUS_SUCCESS) ++posted;
    }
    board_.stall_posted = posted;
    board_.stall_status = static_cast<uint32_t>(status);
    board_.stall_ms = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last).count());
  }

  // Tells the good service to stop (a message that wants no reply), then unregisters.
  void stop() {
    if (filter_ == nullptr) return;
    senders_off();
    uint8_t stop = 0;
    LARGE_INTEGER timeout = relative_timeout(5s);
    FltSendMessage(filter_, &good_.port, &stop, 1, nullptr, nullptr, &timeout);
    FltCloseCommunicationPort(server_);
    FltUnregisterFilter(filter_);
    filter_ = nullptr;
  }

 private:
  static constexpr int kSenders = 4;
  // One connection: its client port, and the cookie its callbacks get.
  struct Slot {
    HostileTestFilter* owner = nullptr;
    PFLT_PORT port = nullptr;
    bool used = false;
    bool good = false;
  };

  uint64_t percentile(double fraction) {
    if (samples_.empty()) return 0;
    const size_t index = std::min(samples_.size() - 1, static_cast<size_t>(fraction * samples_.size()));
    std::nth_element(samples_.begin(), samples_.begin() + static_cast<std::ptrdiff_t>(index), samples_.end());
    return samples_[index];
  }

  static NTSTATUS FLTAPI connect_notify(PFLT_PORT client_port, PVOID server_cookie, PVOID context,
                                        ULONG context_size, PVOID* connection_cookie) {
    auto* self = static_cast<HostileTestFilter*>(server_cookie);
    std::lock_guard lock(self->mutex_);
    const bool good =
        context_size == 4 && context != nullptr && std::memcmp(context, "good", 4) == 0 && !self->good_.used;
    Slot* slot = good ? &self->good_ : nullptr;
    for (size_t i = 0; slot == nullptr && i < self->slots_.size(); ++i) {
      if (!self->slots_[i].used) slot = &self->slots_[i];
    }
    if (slot == nullptr) return STATUS_INSUFFICIENT_RESOURCES;
    slot->used = true;
    slot->port = client_port;
    *connection_cookie = slot;
    if (!good) {
      self->board_.hostile_accepted++;
      self->board_.hostile_live++;
    }
    self->changed_.notify_all();
    return STATUS_SUCCESS;
  }

  static VOID FLTAPI disconnect_notify(PVOID connection_cookie) {
    auto* slot = static_cast<Slot*>(connection_cookie);
    HostileTestFilter* self = slot->owner;
    std::lock_guard lock(self->mutex_);
    FltCloseClientPort(self->filter_, &slot->port);
    slot->used = false;
    if (slot->good) {
      self->board_.good_disconnected++;
    } else {
      self->board_.hostile_disconnected++;
      self->board_.hostile_live--;
    }
  }

  // FilterSendMessage: echo, keeping nothing per call.
  static NTSTATUS FLTAPI message_notify(PVOID, PVOID input, ULONG input_length, PVOID output,
                                        ULONG output_length, PULONG returned_length) {
    const ULONG n = std::min(input_length, output_length);
    if (n != 0) std::memcpy(output, input, n);
    *returned_length = n;
    return STATUS_SUCCESS;
  }

  void send_to_hostiles(int first) {
    std::array<uint8_t, kMessageSize> message{};
    std::array<uint8_t, kMessageSize> reply{};
    size_t next = static_cast<size_t>(first);
    while (!stop_senders_) {
      PFLT_PORT port = nullptr;
      {
        std::lock_guard lock(mutex_);
        for (size_t n = 0; n < slots_.size() && port == nullptr; ++n, ++next) {
          const Slot& slot = slots_[next % slots_.size()];
          if (slot.used) port = slot.port;
        }
      }
      if (port == nullptr) {
        std::this_thread::sleep_for(1ms);
        continue;
      }
      // A copy of the pointer: if the port is closed meanwhile, FltSendMessage finds it is not a
      // live port any more and says STATUS_PORT_DISCONNECTED.
      ULONG reply_length = kMessageSize;
      LARGE_INTEGER timeout = relative_timeout(case_.filter_sends);
      const auto before = Clock::now();
      const NTSTATUS status =
          FltSendMessage(filter_, &port, message.data(), kMessageSize, reply.data(), &reply_length, &timeout);
      const auto ms = static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - before).count());
      board_.sends++;
      uint64_t seen = board_.max_send_ms.load();
      while (ms > seen && !board_.max_send_ms.compare_exchange_weak(seen, ms)) {
      }
      if (status == STATUS_TIMEOUT) {
        board_.sends_timed_out++;
      } else if (status == STATUS_PORT_DISCONNECTED) {
        board_.sends_disconnected++;
        // Closed, and its DisconnectNotify (which frees the slot) may not have run yet: no busy loop.
        std::this_thread::sleep_for(1ms);
      } else {
        uint64_t none = 0;
        board_.first_send_other.compare_exchange_strong(none, static_cast<uint32_t>(status) | (1ull << 63));
        board_.sends_other++;
      }
    }
  }

  const HostileCase& case_;
  Board& board_;
  const wchar_t* port_name_;
  PFLT_FILTER filter_ = nullptr;
  PFLT_PORT server_ = nullptr;
  std::mutex mutex_;
  std::condition_variable changed_;
  Slot good_;
  std::array<Slot, 256> slots_{};
  std::vector<uint64_t> samples_;
  std::atomic<bool> stop_senders_{false};
  std::vector<std::thread> senders_;
};

// The filter under test (`decoy` false: it waits for the good service and measures it), or the
// decoy (the same filter on another port, with no good service).
int run_filter(const HostileCase& c, Board& board, const wchar_t* port_name, bool decoy, Signal& ready,
               Signal& command, Signal& done, const std::string& log) {
  become_bounded_child(kWatchdogSeconds + 10);
  redirect_stderr(log);
  HostileTestFilter filter(c, board, port_name);
  CHILD_CHECK_EQ(filter.start(), STATUS_SUCCESS);
  ready.notify();
  if (!decoy) CHILD_CHECK(filter.wait_good(30s));
  done.notify();
  for (;;) {
    const std::optional<uint64_t> next = command.wait_value(120s);
    CHILD_CHECK(next.has_value());
    switch (*next) {
      case kMeasure:
        filter.measure();
        break;
      case kSendersOn:
        filter.senders_on();
        break;
      case kSendersOff:
        filter.senders_off();
        break;
      case kStallSend:
        filter.post_until_refused();
        break;
      case kQuit:
        filter.stop();
        done.notify();
        return 0;
      default:
        CHILD_CHECK(false);
    }
    done.notify();
  }
}

// =================================================================================================
// The good service
// =================================================================================================

int run_good_service(Board& board, Signal& go, Signal& connected) {
  become_bounded_child(kWatchdogSeconds + 10);
  CHILD_CHECK(go.wait(30s));
  HANDLE port = nullptr;
  CHILD_CHECK_EQ(connect_service(&port, "good", 4), S_OK);
  connected.notify();
  MessageBuffer<kMessageSize> message{};
  struct {
    FILTER_REPLY_HEADER header;
    uint8_t data[kMessageSize];
  } reply{};
  static_assert(sizeof reply == sizeof(FILTER_REPLY_HEADER) + kMessageSize);
  for (;;) {
    CHILD_CHECK_EQ(FilterGetMessage(port, &message.header, sizeof message, nullptr), S_OK);
    if (message.header.ReplyLength == 0) break;  // stop
    board.latest_good_id.store(message.header.MessageId, std::memory_order_relaxed);
    reply.header.Status = STATUS_SUCCESS;
    reply.header.MessageId = message.header.MessageId;
    std::memcpy(reply.data, message.data, kMessageSize);
    CHILD_CHECK_EQ(FilterReplyMessage(port, &reply.header, sizeof reply), S_OK);
  }
  CHILD_CHECK(CloseHandle(port));
  return 0;
}

// =================================================================================================
// The hostile process
// =================================================================================================

// What an attack is aimed at: the port under test, or the decoy (the same filter, another process,
// another port, no good service), where it gives the undisturbed figure.
struct Target {
  Board* board;  // the counters of that filter and of the attacks on it
  const wchar_t* port_name;
  std::string socket_path;
};

struct AttackContext {
  AttackContext(const HostileCase& c, Board& good_board, Target real, Target decoy)
      : c(c), good_board(good_board), targets{std::move(real), std::move(decoy)} {}
  const HostileCase& c;
  Board& good_board;  // the good service's message ids (forged replies use them, on either target)
  Target targets[2];
  int current = 0;  // set between phases, while no attack thread runs
  std::atomic<bool> stop{false};
  std::atomic<int> ready{0};  // threads that have set up what the attack needs
  std::mutex maps_mutex;      // ring corruption: one connect or close at a time (see below)

  Board& board() { return *targets[current].board; }
  const std::string& socket_path() const { return targets[current].socket_path; }
  const wchar_t* port_name() const { return targets[current].port_name; }
  std::string port_name_utf8() const {
    std::string name;
    for (const wchar_t* c = port_name(); *c != L'\0'; ++c) name += static_cast<char>(*c);
    return name;
  }
};

// A welcome's status, or this when none came.
constexpr NTSTATUS kNoWelcome = static_cast<NTSTATUS>(0x7EADBEEF);

// Hello (optionally asking for shared memory, which needs a reply channel) and the welcome's status.
NTSTATUS raw_hello(RawClient& client, bool shared_memory, UniqueFd* reply_channel) {
  UniqueFd filter_end;
  if (shared_memory) {
    auto pair = transport::socket_pair();
    if (!pair) return kNoWelcome;
    *reply_channel = std::move(pair->first);
    filter_end = std::move(pair->second);
  }
  const FrameHeader hello = wire::make_header(FrameType::hello, wire::kProtocolVersion, 0, 0,
                                              shared_memory ? uint32_t{wire::kOptionSharedMemory} : 0u);
  if (!transport::send_frame(client.fd(), hello, {}, Clock::now() + kWaitTimeout, filter_end.fd()).ok()) {
    return kNoWelcome;
  }
  std::vector<uint8_t> datagram;
  if (!client.receive(datagram, kWaitTimeout) || datagram.size() < sizeof(FrameHeader)) return kNoWelcome;
  FrameHeader welcome;
  std::memcpy(&welcome, datagram.data(), sizeof welcome);
  return welcome.type == static_cast<uint8_t>(FrameType::welcome) ? welcome.status : kNoWelcome;
}

// Connects a raw client and, if asked, says hello. False when the connection went no further
// (refused with the documented STATUS_CONNECTION_COUNT_LIMIT, or not at all: counted).
bool raw_connect(AttackContext& ctx, RawClient& client, bool hello, bool shared_memory,
                 UniqueFd* reply_channel) {
  ctx.board().attempts++;
  if (!client.connect(ctx.socket_path())) {
    note_unexpected(ctx.board(), -errno);
    return false;
  }
  if (!hello) return true;
  const NTSTATUS status = raw_hello(client, shared_memory, reply_channel);
  if (status == STATUS_SUCCESS) return true;
  if (status == STATUS_CONNECTION_COUNT_LIMIT) {
    ctx.board().refused++;
  } else {
    note_unexpected(ctx.board(), status);
  }
  return false;
}

void expect_closed(AttackContext& ctx, RawClient& client) {
  if (client.closed_by_peer_within(kClosedWithin)) {
    ctx.board().closed++;
  } else {
    ctx.board().kept++;
  }
}

std::vector<uint8_t> random_bytes(std::mt19937_64& random, size_t size) {
  std::vector<uint8_t> bytes(size);
  for (uint8_t& byte : bytes) byte = static_cast<uint8_t>(random());
  return bytes;
}

std::vector<uint8_t> frame_bytes(const FrameHeader& header, const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> bytes(sizeof header + payload.size());
  std::memcpy(bytes.data(), &header, sizeof header);
  if (!payload.empty()) std::memcpy(bytes.data() + sizeof header, payload.data(), payload.size());
  return bytes;
}

// One datagram carrying `count` descriptors (SCM_RIGHTS), all copies of `fd`.
bool send_with_descriptors(int socket, const std::vector<uint8_t>& bytes, int fd, size_t count) {
  std::vector<int> fds(count, fd);
  std::vector<char> control(CMSG_SPACE(sizeof(int) * count), 0);
  iovec part{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  msghdr message{};
  message.msg_iov = &part;
  message.msg_iovlen = 1;
  message.msg_control = control.data();
  message.msg_controllen = control.size();
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int) * count);
  std::memcpy(CMSG_DATA(header), fds.data(), sizeof(int) * count);
  return ::sendmsg(socket, &message, MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

// 1. Random bytes, before or after a valid hello. The first byte (the frame type) is made invalid,
// so that no random datagram is by chance a valid frame; an empty datagram now and then; one in
// four carries 16 descriptors, which the filter must not keep.
void attack_garbage(AttackContext& ctx, std::mt19937_64& random) {
  while (!ctx.stop) {
    RawClient client;
    UniqueFd reply_channel;
    const bool hello = random() % 2 == 0;
    if (!raw_connect(ctx, client, hello, hello && random() % 2 == 0, &reply_channel)) continue;
    std::vector<uint8_t> bytes = random_bytes(random, random() % 8 == 0 ? 0 : 1 + random() % 600);
    if (!bytes.empty()) bytes[0] = static_cast<uint8_t>(random() % 2 == 0 ? 0 : 10 + random() % 246);
    if (!bytes.empty() && random() % 4 == 0) {
      send_with_descriptors(client.fd(), bytes, client.fd(), 16);
    } else {
      client.send_bytes(bytes.data(), bytes.size());
    }
    expect_closed(ctx, client);
  }
}

// 2. Frames cut short: shorter than a header, or shorter than their header says.
void attack_truncated(AttackContext& ctx, std::mt19937_64& random) {
  for (unsigned variant = static_cast<unsigned>(random() % 5); !ctx.stop; variant = (variant + 1) % 5) {
    RawClient client;
    UniqueFd reply_channel;
    const bool hello = variant >= 2;
    if (!raw_connect(ctx, client, hello, hello && random() % 2 == 0, &reply_channel)) continue;
    std::vector<uint8_t> bytes;
    switch (variant) {
      case 0:  // a hello cut inside its header
        bytes = frame_bytes(wire::make_header(FrameType::hello, wire::kProtocolVersion, 0), {});
        bytes.resize(1 + random() % (wire::kHeaderSize - 1));
        break;
      case 1:  // a hello whose context is cut
        bytes = frame_bytes(wire::make_header(FrameType::hello, wire::kProtocolVersion, 100),
                            random_bytes(random, 100));
        bytes.resize(wire::kHeaderSize + random() % 100);
        break;
      case 2:  // a reply cut inside its payload
        bytes = frame_bytes(wire::make_header(FrameType::reply, 1 + random() % 1000, 64, 0, 64),
                            random_bytes(random, 64));
        bytes.resize(wire::kHeaderSize + random() % 64);
        break;
      case 3:  // a request cut inside its header
        bytes = frame_bytes(wire::make_header(FrameType::request, 1, 8, 0, 8), random_bytes(random, 8));
        bytes.resize(1 + random() % (wire::kHeaderSize - 1));
        break;
      default:  // a get, one byte short
        bytes = frame_bytes(wire::make_header(FrameType::get, 0, 0, 0, 1), {});
        bytes.resize(wire::kHeaderSize - 1);
        break;
    }
    client.send_bytes(bytes.data(), bytes.size());
    expect_closed(ctx, client);
  }
}

// 3. Lengths that lie: payload_length larger or smaller than the datagram, huge lengths, a
// datagram larger than any frame, counts beyond their bounds.
void attack_lying_lengths(AttackContext& ctx, std::mt19937_64& random) {
  constexpr unsigned kVariants = 8;
  const std::vector<uint8_t> huge(wire::kMaxFrameSize + 1000, 0x42);
  for (unsigned variant = static_cast<unsigned>(random() % kVariants); !ctx.stop;
       variant = (variant + 1) % kVariants) {
    RawClient client;
    UniqueFd reply_channel;
    const bool hello = variant >= 4;
    if (!raw_connect(ctx, client, hello, hello && random() % 2 == 0, &reply_channel)) continue;
    const std::vector<uint8_t> payload = random_bytes(random, 16 + random() % 64);
    const auto size = static_cast<uint32_t>(payload.size());
    std::vector<uint8_t> bytes;
    switch (variant) {
      case 0:  // larger than the datagram
        bytes = frame_bytes(
            wire::make_header(FrameType::hello, wire::kProtocolVersion, size + 1 + random() % 5000), payload);
        break;
      case 1:  // smaller than the datagram
        bytes = frame_bytes(wire::make_header(FrameType::hello, wire::kProtocolVersion, random() % size),
                            payload);
        break;
      case 2:  // 4 GiB
        bytes =
            frame_bytes(wire::make_header(FrameType::hello, wire::kProtocolVersion, 0xFFFFFFFFu), payload);
        break;
      case 3:  // a datagram longer than any frame, saying so
        bytes = huge;
        {
          const FrameHeader h =
              wire::make_header(FrameType::hello, wire::kProtocolVersion, huge.size() - wire::kHeaderSize);
          std::memcpy(bytes.data(), &h, sizeof h);
        }
        break;
      case 4:  // a request claiming 4 GiB of input
        bytes = frame_bytes(wire::make_header(FrameType::request, 1, 0xFFFFFFF0u, 0, 64), payload);
        break;
      case 5:  // a request asking for 4 GiB of output
        bytes = frame_bytes(wire::make_header(FrameType::request, 1, size, 0, 0xFFFFFFFFu), payload);
        break;
      case 6:  // a reply longer than the full length it states
        bytes =
            frame_bytes(wire::make_header(FrameType::reply, 1 + random() % 1000, size, 0, size - 1), payload);
        break;
      default:  // more credits than a service may hold
        bytes = frame_bytes(wire::make_header(FrameType::get, 0, 0, 0, wire::kMaxCredits), {});
        client.send_bytes(bytes.data(), bytes.size());
        bytes = frame_bytes(wire::make_header(FrameType::get, 0, 0, 0, 1 + random() % 1000), {});
        break;
    }
    client.send_bytes(bytes.data(), bytes.size());
    expect_closed(ctx, client);
  }
}

// 4. Replies for ids the client never received: the good connection's own ids (read from the
// board: some are in flight at that moment) and ids never issued. A raw client sends them to the
// filter and is closed; the C API answers ERROR_FLT_NO_WAITER_FOR_REPLY without sending anything.
void attack_forged_replies(AttackContext& ctx, std::mt19937_64& random, int thread) {
  const auto forged_id = [&]() -> uint64_t {
    const uint64_t latest = ctx.good_board.latest_good_id.load(std::memory_order_relaxed);
    return random() % 4 == 0 ? (1ull << 62) + random() % 100000 : latest + random() % 6;
  };
  if (thread == 0) {
    while (!ctx.stop) {
      RawClient client;
      UniqueFd none;
      if (!raw_connect(ctx, client, true, false, &none)) continue;
      const std::vector<uint8_t> data = random_bytes(random, kMessageSize);
      client.send_frame(wire::make_header(FrameType::reply, forged_id(), data.size(), 0,
                                          static_cast<uint32_t>(data.size())),
                        data.data(), data.size());
      expect_closed(ctx, client);
    }
    return;
  }
  while (!ctx.stop) {
    HANDLE port = nullptr;
    ctx.board().attempts++;
    const HRESULT connected = connect_service(&port, nullptr, 0, ctx.port_name());
    if (connected != S_OK) {
      if (connected == HRESULT_FROM_WIN32(ERROR_CONNECTION_COUNT_LIMIT)) {
        ctx.board().refused++;
      } else {
        note_unexpected(ctx.board(), connected);
      }
      continue;
    }
    struct {
      FILTER_REPLY_HEADER header;
      uint8_t data[kMessageSize];
    } reply{};
    for (int i = 0; i < 100 && !ctx.stop; ++i) {
      reply.header.MessageId = forged_id();
      const HRESULT replied = FilterReplyMessage(port, &reply.header, sizeof reply);
      if (replied == ERROR_FLT_NO_WAITER_FOR_REPLY) {
        ctx.board().documented++;
      } else {
        note_unexpected(ctx.board(), replied);
      }
    }
    CloseHandle(port);
  }
}

// 5. Many threads calling FilterSendMessage as fast as they can, on two connections.
struct FloodPorts {
  std::mutex mutex;
  HANDLE ports[2][2] = {{nullptr, nullptr}, {nullptr, nullptr}};  // per target
};

void attack_send_flood(AttackContext& ctx, FloodPorts& flood, int thread) {
  HANDLE port = nullptr;
  {
    std::lock_guard lock(flood.mutex);
    HANDLE& shared = flood.ports[ctx.current][thread % 2];
    if (shared == nullptr) {
      ctx.board().attempts++;
      const HRESULT connected = connect_service(&shared, nullptr, 0, ctx.port_name());
      if (connected != S_OK) {
        note_unexpected(ctx.board(), connected);
        shared = nullptr;
      }
    }
    port = shared;
  }
  ctx.ready++;
  if (port == nullptr) return;
  std::array<uint8_t, kMessageSize> in{};
  std::array<uint8_t, kMessageSize> out{};
  for (uint64_t i = 0; !ctx.stop; ++i) {
    std::memcpy(in.data(), &i, sizeof i);
    DWORD returned = 0;
    const HRESULT sent =
        FilterSendMessage(port, in.data(), kMessageSize, out.data(), kMessageSize, &returned);
    if (sent == S_OK && returned == kMessageSize && in == out) {
      ctx.board().documented++;
    } else {
      note_unexpected(ctx.board(), sent == S_OK ? -1 : sent);
    }
  }
}

// 6. Connect and disconnect, over and over: through the C API (on a port of 4 slots, so that the
// limit is met too), and as raw sockets that hang up at every step of the handshake.
void attack_connect_churn(AttackContext& ctx, std::mt19937_64& random, int thread) {
  if (thread < 2) {
    while (!ctx.stop) {
      HANDLE port = nullptr;
      ctx.board().attempts++;
      const HRESULT connected = connect_service(&port, nullptr, 0, ctx.port_name());
      if (connected == S_OK) {
        ctx.board().documented++;
        if (!CloseHandle(port)) note_unexpected(ctx.board(), -2);
      } else if (connected == HRESULT_FROM_WIN32(ERROR_CONNECTION_COUNT_LIMIT)) {
        ctx.board().refused++;
      } else {
        note_unexpected(ctx.board(), connected);
      }
    }
    return;
  }
  for (unsigned variant = 0; !ctx.stop; variant = (variant + 1) % 4) {
    RawClient client;
    ctx.board().attempts++;
    if (!client.connect(ctx.socket_path())) {
      note_unexpected(ctx.board(), -errno);
      continue;
    }
    ctx.board().documented++;
    switch (variant) {
      case 0:  // hang up at once
        break;
      case 1: {  // half a hello
        const auto bytes = frame_bytes(wire::make_header(FrameType::hello, wire::kProtocolVersion, 0), {});
        client.send_bytes(bytes.data(), 10);
        break;
      }
      case 2: {  // a hello asking for shared memory, then hang up before the welcome
        auto pair = transport::socket_pair();
        if (!pair) break;
        const FrameHeader hello =
            wire::make_header(FrameType::hello, wire::kProtocolVersion, 0, 0, wire::kOptionSharedMemory);
        transport::send_frame(client.fd(), hello, {}, Clock::now() + kWaitTimeout, pair->second.fd());
        break;
      }
      default: {  // the whole handshake, then hang up
        UniqueFd reply_channel;
        raw_hello(client, random() % 2 == 0, &reply_channel);
        break;
      }
    }
  }
}

// 7. Connections that never read: 8 through the C API that never call FilterGetMessage, 8 raw
// ones that ask for 1000 messages and never read one. The filter keeps sending to them (its
// senders, kSendersOn) with a 20 ms timeout; they stay open until the phase ends.
void attack_never_read(AttackContext& ctx, std::mt19937_64&, int thread) {
  constexpr int kConnections = 8;
  std::vector<HANDLE> ports;
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < kConnections; ++i) {
    if (thread == 0) {
      HANDLE port = nullptr;
      ctx.board().attempts++;
      const HRESULT connected = connect_service(&port, nullptr, 0, ctx.port_name());
      if (connected == S_OK) {
        ports.push_back(port);
      } else {
        note_unexpected(ctx.board(), connected);
      }
    } else {
      auto client = std::make_unique<RawClient>();
      UniqueFd none;
      if (!raw_connect(ctx, *client, true, false, &none)) continue;
      client->send_frame(wire::make_header(FrameType::get, 0, 0, 0, 1000));
      clients.push_back(std::move(client));
    }
  }
  ctx.ready++;
  while (!ctx.stop) std::this_thread::sleep_for(2ms);
  // Open until now: every one of them was kept, as it should be (not reading is no offence).
  ctx.board().documented += ports.size() + clients.size();
  for (HANDLE port : ports) CloseHandle(port);
}

// 8. A service that corrupts the ring it writes to the filter. It is a real one (Connection, the
// library's shared-memory path): it takes a message the filter sends it, then, while the filter's
// sender waits for the reply on the ring, writes into the mapping a record the filter must refuse.

// The mappings of our memfds (the library names them "fltport-port"), by address.
std::set<uintptr_t> fltport_mappings() {
  std::set<uintptr_t> found;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("memfd:fltport-port") == std::string::npos) continue;
    uintptr_t start = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &start, &end) == 2 &&
        end - start == transport::SharedRegion::kSize) {
      found.insert(start);
    }
  }
  return found;
}

// Our socket descriptors.
std::set<int> socket_descriptors() {
  std::set<int> found;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (const dirent* entry = ::readdir(dir)) {
      if (entry->d_name[0] == '.') continue;
      char target[64] = {};
      const std::string link = std::string("/proc/self/fd/") + entry->d_name;
      if (::readlink(link.c_str(), target, sizeof target - 1) > 0 &&
          std::strncmp(target, "socket:", 7) == 0) {
        found.insert(std::atoi(entry->d_name));
      }
    }
    ::closedir(dir);
  }
  return found;
}

// True when the filter hangs up one of `sockets` (the connection's control socket and reply
// channel: it shuts both down when it closes the connection) within the timeout.
bool hung_up_within(const std::vector<int>& sockets, std::chrono::milliseconds timeout) {
  std::vector<pollfd> watched;
  for (const int fd : sockets) watched.push_back({fd, POLLRDHUP, 0});
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    const int ready = ::poll(watched.data(), watched.size(), static_cast<int>(left));
    if (ready > 0) {
      for (const pollfd& p : watched) {
        if ((p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) return true;
      }
    }
    if (ready < 0 && errno != EINTR) return false;
  }
}

// Writes one bad record (or a bad index) into the ring to the filter at `base`.
void corrupt_ring(std::byte* base, unsigned variant, uint64_t taken_id, std::mt19937_64& random) {
  using transport::kFlagOnSocket;
  using transport::kRingSlots;
  using transport::kRingSlotSize;
  using transport::RingDirection;
  auto& control =
      reinterpret_cast<transport::RingControl*>(base)[static_cast<size_t>(RingDirection::to_filter)];
  std::byte* slots = base + transport::SharedRegion::kControlSize +
                     static_cast<size_t>(RingDirection::to_filter) * transport::SharedRegion::kRingBytes;
  const uint32_t head = control.head.load(std::memory_order_acquire);
  std::byte* slot = slots + (head % kRingSlots) * kRingSlotSize;
  FrameHeader header = wire::make_header(FrameType::reply, taken_id, 0, STATUS_SUCCESS, 0);
  uint32_t new_head = head + 1;
  switch (variant % 7) {
    case 0:  // an index far beyond what was written
      new_head = head + 1000;
      break;
    case 1:  // an index behind the reader's
      new_head = head - 2;
      break;
    case 2:  // a record longer than its slot
      header.payload_length = header.aux =
          static_cast<uint32_t>(transport::kRingSlotPayload + 1 + random() % 100000);
      break;
    case 3:  // a datagram announced but never sent
      header.flags = kFlagOnSocket;
      break;
    case 4:  // an announcement that carries data
      header.flags = kFlagOnSocket;
      header.payload_length = header.aux = 8;
      break;
    case 5:  // a frame the filter never receives
      header = wire::make_header(FrameType::message, taken_id, 0);
      break;
    default: {  // random bytes, with a frame type that does not exist
      const std::vector<uint8_t> bytes = random_bytes(random, sizeof header);
      std::memcpy(&header, bytes.data(), sizeof header);
      header.type = 0xEE;
      header.payload_length %= 64;
      break;
    }
  }
  std::memcpy(slot, &header, sizeof header);
  control.head.store(new_head, std::memory_order_seq_cst);
  test::ring_bell_as_peer(control.data_bell);
}

void attack_ring_corruption(AttackContext& ctx, std::mt19937_64& random) {
  std::vector<uint8_t> buffer(kMessageSize);
  const auto bytes = std::as_writable_bytes(std::span(buffer));
  for (unsigned variant = static_cast<unsigned>(random() % 7); !ctx.stop; ++variant) {
    std::optional<Connection> connection;
    std::byte* base = nullptr;
    std::vector<int> sockets;
    {
      // One connect (and one close, below) at a time in this process: the new mapping and the new
      // sockets are the connection's.
      std::lock_guard lock(ctx.maps_mutex);
      const std::set<uintptr_t> before = fltport_mappings();
      const std::set<int> sockets_before = socket_descriptors();
      ctx.board().attempts++;
      auto connected = Connection::connect(ctx.port_name_utf8());
      if (!connected) {
        if (connected.status() == Status(STATUS_CONNECTION_COUNT_LIMIT)) {
          ctx.board().refused++;
        } else {
          note_unexpected(ctx.board(), connected.status().code());
        }
        continue;
      }
      connection.emplace(std::move(*connected));
      for (uintptr_t start : fltport_mappings()) {
        if (before.count(start) == 0) base = reinterpret_cast<std::byte*>(start);
      }
      for (const int fd : socket_descriptors()) {
        if (sockets_before.count(fd) == 0) sockets.push_back(fd);
      }
    }
    if (base == nullptr || sockets.empty() || connection->transport() != PortTransport::shared_memory) {
      note_unexpected(ctx.board(), -3);
    } else {
      // A message from one of the filter's senders.
      std::optional<uint64_t> taken_id;
      NTSTATUS failure = STATUS_SUCCESS;
      while (!ctx.stop && !taken_id && failure == STATUS_SUCCESS) {
        const auto taken = connection->get_message(bytes, Timeout(100ms));
        if (taken) {
          taken_id = taken->id;
        } else if (taken.status() != Status(STATUS_TIMEOUT)) {
          failure = taken.status().code();
        }
      }
      if (taken_id) {
        corrupt_ring(base, variant, *taken_id, random);
        // The filter must close the connection. (Not a call into the library to find out: its
        // next `get` would be written over the bad record, at the index the library keeps.)
        if (hung_up_within(sockets, kClosedWithin)) {
          ctx.board().closed++;
          // And the library says so: the documented STATUS_PORT_DISCONNECTED.
          const auto next = connection->get_message(bytes, Timeout(kClosedWithin));
          if (!next && next.status() == Status(STATUS_PORT_DISCONNECTED)) {
            ctx.board().documented++;
          } else {
            note_unexpected(ctx.board(), next ? -4 : next.status().code());
          }
        } else {
          ctx.board().kept++;
        }
      } else if (failure != STATUS_SUCCESS) {
        note_unexpected(ctx.board(), failure);
      }
    }
    std::lock_guard lock(ctx.maps_mutex);
    connection.reset();
  }
}

int run_hostile(const HostileCase& c, Board& board, Target real, Target decoy, Signal& command, Signal& done,
                const std::string& log) {
  become_bounded_child(kWatchdogSeconds + 10);
  redirect_stderr(log);
  AttackContext ctx(c, board, std::move(real), std::move(decoy));
  std::vector<std::thread> threads;
  FloodPorts flood;
  uint64_t cpu_start = 0;
  auto wall_start = Clock::now();
  bool marked = false;
  std::unique_ptr<RawClient> staller;
  for (uint64_t phase = 0;; ++phase) {
    const std::optional<uint64_t> next = command.wait_value(120s);
    CHILD_CHECK(next.has_value());
    if (*next == kStallPeer) {
      ctx.current = 0;
      staller = std::make_unique<RawClient>();
      UniqueFd none;
      CHILD_CHECK(raw_connect(ctx, *staller, true, false, &none));
      CHILD_CHECK(staller->send_frame(wire::make_header(FrameType::get, 0, 0, 0, wire::kMaxCredits)));
      done.notify();
      continue;
    }
    if (*next == kQuit) {
      staller.reset();
      for (auto& ports : flood.ports) {
        for (HANDLE& port : ports) {
          if (port != nullptr) CloseHandle(port);
          port = nullptr;
        }
      }
      done.notify();
      return 0;
    }
    const auto note_cpu = [&] {
      board.phase_cpu_us = process_cpu_us() - cpu_start;
      board.phase_wall_us = static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - wall_start).count());
    };
    if (*next == kMark) {  // the CPU used so far: while the good round trips were measured
      note_cpu();
      marked = true;
      done.notify();
      continue;
    }
    if (*next == kStop) {
      if (!marked) note_cpu();
      ctx.stop = true;
      for (std::thread& thread : threads) thread.join();
      threads.clear();
      done.notify();
      continue;
    }
    CHILD_CHECK(*next == kAttack || *next == kAttackDecoy);
    ctx.current = *next == kAttack ? 0 : 1;
    marked = false;
    ctx.stop = false;
    ctx.ready = 0;
    cpu_start = process_cpu_us();
    wall_start = Clock::now();
    for (int t = 0; t < c.threads; ++t) {
      threads.emplace_back([&ctx, &flood, &c, t, phase] {
        std::mt19937_64 random(0x5EED0000u + phase * 64 + static_cast<uint64_t>(t));
        switch (c.attack) {
          case Attack::garbage:
            ctx.ready++;
            return attack_garbage(ctx, random);
          case Attack::truncated:
            ctx.ready++;
            return attack_truncated(ctx, random);
          case Attack::lying_lengths:
            ctx.ready++;
            return attack_lying_lengths(ctx, random);
          case Attack::forged_replies:
            ctx.ready++;
            return attack_forged_replies(ctx, random, t);
          case Attack::send_flood:
            return attack_send_flood(ctx, flood, t);
          case Attack::connect_churn:
            ctx.ready++;
            return attack_connect_churn(ctx, random, t);
          case Attack::never_read:
            return attack_never_read(ctx, random, t);
          case Attack::ring_corruption:
            ctx.ready++;
            return attack_ring_corruption(ctx, random);
        }
      });
    }
    // Set up before the measurement starts (connections of the flood and of the never-readers).
    const auto deadline = Clock::now() + 10s;
    while (ctx.ready.load() < c.threads && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
    CHILD_CHECK(ctx.ready.load() == c.threads);
    done.notify();
  }
}

// =================================================================================================
// The test
// =================================================================================================

// The watchdog: SIGALRM kills the test's own children (by pid) and ends the test program.
volatile pid_t g_children[4] = {-1, -1, -1, -1};

void watchdog_expired(int) {
  for (const pid_t pid : g_children) {
    if (pid > 0) ::kill(pid, SIGKILL);
  }
  static const char message[] = "hostile_peer_test: watchdog expired; children killed\n";
  [[maybe_unused]] const ssize_t written = ::write(STDERR_FILENO, message, sizeof message - 1);
  ::_exit(124);
}

class Watchdog {
 public:
  explicit Watchdog(unsigned seconds) {
    struct sigaction action {};
    action.sa_handler = watchdog_expired;
    ::sigaction(SIGALRM, &action, &previous_);
    ::alarm(seconds);
  }
  ~Watchdog() {
    ::alarm(0);
    ::sigaction(SIGALRM, &previous_, nullptr);
    for (volatile pid_t& pid : g_children) pid = -1;
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  struct sigaction previous_ {};
};

// CPU time a process has used (utime + stime), in seconds; 10 ms resolution.
double cpu_seconds_of(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t end_of_name = text.rfind(')');
  if (end_of_name == std::string::npos) return 0;
  std::istringstream fields(text.substr(end_of_name + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {  // field 3 is the state
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

struct PhaseFigures {
  double p50_us = 0;
  double p99_us = 0;
  uint64_t samples = 0;
  double seconds = 0;       // how long the measurement took
  double filter_cpu = 0;    // CPUs the filter under test used meanwhile
  double decoy_cpu = 0;     // CPUs the decoy filter used meanwhile
  double attacker_cpu = 0;  // CPUs the hostile process used meanwhile
  uint64_t attempts = 0;    // hostile attempts in the phase (all, and while measured)
  uint64_t attempts_measured = 0;
  uint64_t answers_measured = 0;  // hostile calls answered with the documented status meanwhile
};

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

class HostilePeer : public PortTest {
 protected:
  void run_case(const HostileCase& c);
};

void HostilePeer::run_case(const HostileCase& c) {
  if (c.shared_memory_only && socket_forced()) {
    GTEST_SKIP() << "FLTPORT_TRANSPORT=socket: there is no shared-memory ring to corrupt";
  }
  Watchdog watchdog(kWatchdogSeconds);
  SharedBoard board;        // the filter under test, its good service, the attacks on it
  SharedBoard decoy_board;  // the decoy filter and the attacks on it
  ASSERT_TRUE(board.valid() && decoy_board.valid());
  Signal filter_ready, filter_command, filter_done, good_go, good_connected, hostile_command, hostile_done;
  Signal decoy_ready, decoy_command, decoy_done;
  constexpr const wchar_t* kDecoyPortName = L"\\DecoyPort";
  const Target real{&*board, kPortName, transport::socket_path(runtime_dir_.path(), kNormalizedPortName)};
  const Target decoy{&*decoy_board, kDecoyPortName, transport::socket_path(runtime_dir_.path(), "decoyport")};
  const auto case_start = std::chrono::steady_clock::now();
  // Every process of the case sleeps at once instead of spinning first. With spinning, on 2 vCPUs
  // the good pair runs at ~4 us or ~110 us depending on whether it happened to settle into
  // spinning (the adaptive budget keeps whichever regime it is in), in any phase, attacked or not:
  // three runs of the flood case gave ratios of 0.03, 0.98 and 25. What this test measures is what
  // the attack costs the other connection through what they share, not that luck; the spin is the
  // port benchmarks' subject.
  const ScopedEnv no_spin("FLTPORT_SPIN_NS", "0");
  const std::string filter_log = runtime_dir_.path() + "/filter.log";
  const std::string decoy_log = runtime_dir_.path() + "/decoy.log";
  const std::string hostile_log = runtime_dir_.path() + "/hostile.log";

  ChildProcess filter([&] {
    return run_filter(c, *board, kPortName, false, filter_ready, filter_command, filter_done, filter_log);
  });
  ChildProcess decoy_filter([&] {
    return run_filter(c, *decoy_board, kDecoyPortName, true, decoy_ready, decoy_command, decoy_done,
                      decoy_log);
  });
  ChildProcess good([&] { return run_good_service(*board, good_go, good_connected); });
  ChildProcess hostile(
      [&] { return run_hostile(c, *board, real, decoy, hostile_command, hostile_done, hostile_log); });
  g_children[0] = filter.pid();
  g_children[1] = decoy_filter.pid();
  g_children[2] = good.pid();
  g_children[3] = hostile.pid();
  // What the children wrote, when something went wrong.
  struct Logs {
    const std::string& filter;
    const std::string& hostile;
    ~Logs() {
      if (::testing::Test::HasFailure()) {
        std::fprintf(stderr,
                     "---- filter stderr (last lines) ----\n%s---- hostile stderr (last lines) ----\n%s",
                     tail_of(filter, 40).c_str(), tail_of(hostile, 40).c_str());
      }
    }
  } logs{filter_log, hostile_log};

  ASSERT_TRUE(filter_ready.wait(30s)) << "the filter did not create its port";
  ASSERT_TRUE(decoy_ready.wait(30s)) << "the decoy filter did not create its port";
  ASSERT_TRUE(decoy_done.wait(30s));
  good_go.notify();
  ASSERT_TRUE(good_connected.wait(30s)) << "the good service could not connect";
  ASSERT_TRUE(filter_done.wait(30s)) << "the filter did not see the good service";

  const auto filter_do = [&](Command command) {
    filter_command.notify(command);
    return filter_done.wait(60s);
  };
  const auto decoy_do = [&](Command command) {
    decoy_command.notify(command);
    return decoy_done.wait(60s);
  };
  const auto hostile_do = [&](Command command) {
    hostile_command.notify(command);
    return hostile_done.wait(60s);
  };
  const auto measure = [&]() -> std::optional<PhaseFigures> {
    const double decoy_cpu = cpu_seconds_of(decoy_filter.pid());
    if (!filter_do(kMeasure)) return std::nullopt;
    PhaseFigures figures;
    figures.p50_us = static_cast<double>(board->p50_ns.load()) / 1000.0;
    figures.p99_us = static_cast<double>(board->p99_ns.load()) / 1000.0;
    figures.samples = board->samples.load();
    figures.seconds = static_cast<double>(board->phase_us.load()) / 1e6;
    figures.filter_cpu = static_cast<double>(board->filter_cpu_milli.load()) / 1000.0;
    figures.decoy_cpu = (cpu_seconds_of(decoy_filter.pid()) - decoy_cpu) / std::max(figures.seconds, 1e-3);
    return figures;
  };
  // One phase under attack, on the port under test or on the decoy: the good round trips measured
  // meanwhile, the CPU the hostile process used while they were, and its attempts. After the
  // measurement the attack goes on until it has made its attempts (the churn's quota).
  const auto attack_phase = [&](bool on_decoy) -> std::optional<PhaseFigures> {
    Board& target = on_decoy ? *decoy_board : *board;
    const auto senders = [&](Command command) {
      return c.filter_sends.count() == 0 || (on_decoy ? decoy_do(command) : filter_do(command));
    };
    if (!senders(kSendersOn)) return std::nullopt;
    const uint64_t attempts_before = target.attempts.load();
    if (!hostile_do(on_decoy ? kAttackDecoy : kAttack)) return std::nullopt;
    std::this_thread::sleep_for(kWarmUp);
    const uint64_t answers_before = target.documented.load();
    auto figures = measure();
    if (!figures) return std::nullopt;
    figures->attempts_measured = target.attempts.load() - attempts_before;
    figures->answers_measured = target.documented.load() - answers_before;
    if (!hostile_do(kMark)) return std::nullopt;
    // (On the decoy the attack only has to be the same while the good round trips are measured.)
    const uint64_t quota = on_decoy ? 0 : c.attempts_per_round;
    const auto quota_deadline = Clock::now() + kQuotaTime;
    while (target.attempts.load() - attempts_before < quota && Clock::now() < quota_deadline) {
      std::this_thread::sleep_for(5ms);
    }
    if (!senders(kSendersOff) || !hostile_do(kStop)) return std::nullopt;
    figures->attacker_cpu = static_cast<double>(board->phase_cpu_us.load()) /
                            static_cast<double>(std::max<uint64_t>(1, board->phase_wall_us.load()));
    figures->attempts = target.attempts.load() - attempts_before;
    return figures;
  };

  // Warm-up (first connections, the spin budgets settle), then the filter's figures before.
  ASSERT_TRUE(measure().has_value());
  const ProcessFigures before = figures_of(filter.pid());
  const std::string descriptors_before = descriptors_of(filter.pid());

  // Rounds of idle, hostile, decoy; every other round the decoy goes first, so that a drift in the
  // machine's load favours neither.
  std::vector<PhaseFigures> phases[3];  // idle, hostile, decoy
  std::string rounds;
  for (int round = 0; round < kRounds; ++round) {
    const auto idle = measure();
    ASSERT_TRUE(idle.has_value()) << "round " << round << ": idle measurement";
    std::optional<PhaseFigures> attacked, decoyed;
    for (const bool on_decoy : {round % 2 == 1, round % 2 == 0}) {
      auto& figures = on_decoy ? decoyed : attacked;
      figures = attack_phase(on_decoy);
      ASSERT_TRUE(figures.has_value())
          << "round " << round << (on_decoy ? ": the attack on the decoy" : ": the attack");
    }
    phases[0].push_back(*idle);
    phases[1].push_back(*attacked);
    phases[2].push_back(*decoyed);
    char line[512];
    std::snprintf(
        line, sizeof line,
        "    round %d: p50 idle %.1f, hostile %.1f, decoy %.1f us; CPU of the filter %.2f / %.2f / %.2f, "
        "of the decoy filter %.2f / %.2f / %.2f, of the attacker - / %.2f / %.2f; hostile attempts "
        "%llu (%llu measured), %.0f answers/s measured; filter RSS %ld KiB\n",
        round, idle->p50_us, attacked->p50_us, decoyed->p50_us, idle->filter_cpu, attacked->filter_cpu,
        decoyed->filter_cpu, idle->decoy_cpu, attacked->decoy_cpu, decoyed->decoy_cpu, attacked->attacker_cpu,
        decoyed->attacker_cpu, static_cast<unsigned long long>(attacked->attempts),
        static_cast<unsigned long long>(attacked->attempts_measured),
        static_cast<double>(attacked->answers_measured) / std::max(attacked->seconds, 1e-3),
        figures_of(filter.pid()).rss_kib);
    rounds += line;
  }
  const uint64_t good_disconnects = board->good_disconnected.load();

  if (c.attack == Attack::never_read) {
    // Last, a connection that asked for messages and reads none, while the filter posts to it with
    // no timeout at all: the post that finds its socket full waits for the stall limit (10 s),
    // then the connection is closed and the post fails with STATUS_PORT_DISCONNECTED.
    const auto settled = Clock::now() + 10s;
    while (board->hostile_live.load() != 0 && Clock::now() < settled) std::this_thread::sleep_for(5ms);
    ASSERT_TRUE(hostile_do(kStallPeer));
    while (board->hostile_live.load() != 1 && Clock::now() < settled + 10s) std::this_thread::sleep_for(5ms);
    ASSERT_EQ(board->hostile_live.load(), 1u);
    ASSERT_TRUE(filter_do(kStallSend));
  }

  ASSERT_TRUE(hostile_do(kQuit));
  EXPECT_TRUE(ExitsCleanly(hostile));
  // Every hostile connection gone through DisconnectNotify, then the filter's descriptors back.
  const auto settle = Clock::now() + 10s;
  while ((board->hostile_live.load() != 0 || decoy_board->hostile_live.load() != 0) &&
         Clock::now() < settle) {
    std::this_thread::sleep_for(5ms);
  }
  ProcessFigures after = figures_of(filter.pid());
  while ((after.fds != before.fds || after.threads != before.threads) && Clock::now() < settle) {
    std::this_thread::sleep_for(5ms);
    after = figures_of(filter.pid());
  }
  // The good service still works after it all.
  const auto last = measure();
  ASSERT_TRUE(last.has_value());
  EXPECT_GT(last->samples, 0u);

  const auto medians = [&](int phase, auto field) {
    std::vector<double> values;
    for (const PhaseFigures& figures : phases[phase]) values.push_back(figures.*field);
    return median(values);
  };
  const double idle_p50 = medians(0, &PhaseFigures::p50_us);
  const double disturbed_p50 = medians(1, &PhaseFigures::p50_us);
  const double undisturbed_p50 = medians(2, &PhaseFigures::p50_us);
  const double ratio = disturbed_p50 / std::max(undisturbed_p50, 1e-3);
  const double idle_ratio = disturbed_p50 / std::max(idle_p50, 1e-3);
  uint64_t samples = 0;
  for (const auto& list : phases) {
    for (const PhaseFigures& figures : list) samples += figures.samples;
  }
  const LoggedLines log_lines = count_lines_with(filter_log, "closing the connection");
  // The rate limit counts per clock second: a case of 6.98 s can touch 8 of them (its first and
  // last partly), so the bound is whole seconds elapsed + 2 (a CI run wrote 80 lines in 6.98 s).
  const auto case_seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - case_start)
          .count() +
      2;
  const auto count = [](const Counter& counter) { return static_cast<unsigned long long>(counter.load()); };
  std::printf(
      "[ measured ] HostilePeer %s (%s): good p50/p99 undisturbed (same attack on a decoy filter) %.1f/%.1f "
      "us "
      "-> hostile %.1f/%.1f us, ratio %.2f; idle %.1f/%.1f us (ratio to idle %.2f); %llu round trips\n"
      "[ measured ]   CPU (medians): filter under test idle %.2f, attacked %.2f; decoy filter attacked %.2f; "
      "attacker %.2f on the port, %.2f on the decoy\n"
      "[ measured ]   hostile: %llu attempts, %llu closed, %llu kept, %llu documented status, %llu refused "
      "(limit), %llu unexpected; filter: %llu hostile connections accepted, %llu disconnected, %zu "
      "\"closing the connection\" log lines (accounting for %zu); %llu sends to hostiles (%llu timed out, "
      "%llu "
      "disconnected, "
      "%llu other, longest %llu ms)\n"
      "[ measured ]   filter RSS %ld -> %ld KiB, fds %ld -> %ld, threads %ld -> %ld\n%s",
      c.name, transport_label(), undisturbed_p50, medians(2, &PhaseFigures::p99_us), disturbed_p50,
      medians(1, &PhaseFigures::p99_us), ratio, idle_p50, medians(0, &PhaseFigures::p99_us), idle_ratio,
      static_cast<unsigned long long>(samples), medians(0, &PhaseFigures::filter_cpu),
      medians(1, &PhaseFigures::filter_cpu), medians(2, &PhaseFigures::decoy_cpu),
      medians(1, &PhaseFigures::attacker_cpu), medians(2, &PhaseFigures::attacker_cpu),
      count(board->attempts), count(board->closed), count(board->kept), count(board->documented),
      count(board->refused), count(board->unexpected), count(board->hostile_accepted),
      count(board->hostile_disconnected), log_lines.written, log_lines.accounted, count(board->sends),
      count(board->sends_timed_out), count(board->sends_disconnected), count(board->sends_other),
      count(board->max_send_ms), before.rss_kib, after.rss_kib, before.fds, after.fds, before.threads,
      after.threads, rounds.c_str());
  std::fflush(stdout);

  // ---- only the hostile connections were affected ----
  EXPECT_EQ(good_disconnects, 0u) << "the good service was disconnected";
  EXPECT_EQ(board->failures.load(), 0u)
      << "good round trips failed; first status 0x" << std::hex << board->first_failure.load();
  EXPECT_EQ(board->mismatches.load(), 0u) << "good round trips came back with another reply";
  for (Board* b : {&*board, &*decoy_board}) {
    const char* which = b == &*board ? "port under test" : "decoy";
    EXPECT_GT(b->attempts.load(), 0u) << which;
    EXPECT_EQ(b->unexpected.load(), 0u)
        << which << ": hostile calls ended with an undocumented status; first 0x" << std::hex
        << (b->first_unexpected.load() & 0xFFFFFFFFull) << " (negative: -errno or a failed check)";
    EXPECT_EQ(b->kept.load(), 0u) << which << ": hostile connections the filter did not close within "
                                  << kClosedWithin.count() << " s";
    EXPECT_EQ(b->hostile_live.load(), 0u) << which << ": hostile connections still open in the filter";
    EXPECT_EQ(b->hostile_accepted.load(), b->hostile_disconnected.load()) << which;
  }
  switch (c.attack) {
    case Attack::garbage:
    case Attack::truncated:
    case Attack::lying_lengths:
      // Every raw connection that got as far as the garbage was closed (the others were refused
      // at hello with STATUS_CONNECTION_COUNT_LIMIT).
      EXPECT_EQ(board->closed.load() + board->refused.load(), board->attempts.load());
      // Each dropped connection is logged or counted in a later line, and the log stays within the
      // rate limit (log::kLinesPerSecondPerSite a second) however fast the attacker goes.
      EXPECT_GE(log_lines.accounted, board->closed.load() / 2) << "a dropped connection is logged";
      EXPECT_LE(log_lines.written, static_cast<size_t>(case_seconds) * log::kLinesPerSecondPerSite)
          << "over " << case_seconds << " s";
      break;
    case Attack::forged_replies:
      EXPECT_GT(board->closed.load(), 0u) << "raw clients forging replies";
      EXPECT_GT(board->documented.load(), 0u) << "FilterReplyMessage with forged ids";
      break;
    case Attack::send_flood:
      EXPECT_GT(board->documented.load(), 1000u) << "FilterSendMessage calls answered";
      break;
    case Attack::connect_churn:
      EXPECT_GE(board->attempts.load(), kRounds * c.attempts_per_round) << "connect/disconnect cycles";
      break;
    case Attack::never_read:
      EXPECT_EQ(board->documented.load(), static_cast<uint64_t>(kRounds) * 16) << "never-readers kept open";
      std::printf(
          "[ measured ]   a connection that asked and never read: %llu posts went through, the next "
          "failed with 0x%08llX after %llu ms\n",
          static_cast<unsigned long long>(board->stall_posted.load()),
          static_cast<unsigned long long>(board->stall_status.load()),
          static_cast<unsigned long long>(board->stall_ms.load()));
      EXPECT_GT(board->stall_posted.load(), 0u);
      EXPECT_CODE(static_cast<int32_t>(board->stall_status.load()), STATUS_PORT_DISCONNECTED);
      EXPECT_GE(board->stall_ms.load(), 9000u) << "closed before the stall limit (10 s)";
      EXPECT_LT(board->stall_ms.load(), 15000u) << "held past the stall limit (10 s)";
      EXPECT_GT(board->sends.load(), 0u);
      EXPECT_EQ(board->sends_timed_out.load(), board->sends.load())
          << "every send to a never-reader times out";
      // Returned at its timeout, give or take the scheduler (a thread of a TSan build on a loaded
      // 2-vCPU machine waits its turn for up to a second).
      EXPECT_LT(board->max_send_ms.load(),
                static_cast<uint64_t>(c.filter_sends.count()) + (kSanitized ? 3000 : 500))
          << "a send to a never-reader outlived its timeout";
      break;
    case Attack::ring_corruption:
      EXPECT_GT(board->closed.load(), 0u);
      EXPECT_EQ(board->documented.load(), board->closed.load()) << "STATUS_PORT_DISCONNECTED in the service";
      EXPECT_EQ(board->sends_other.load(), 0u)
          << "first 0x" << std::hex << (board->first_send_other.load() & 0xFFFFFFFFull);
      EXPECT_EQ(board->sends_timed_out.load(), 0u) << "a corruption the filter did not notice";
      EXPECT_GT(board->sends_disconnected.load(), 0u);
      break;
  }

  // ---- the filter's memory, descriptors and threads ----
  EXPECT_EQ(after.fds, before.fds) << "descriptors of the filter process, before: " << descriptors_before
                                   << "\nafter: " << descriptors_of(filter.pid());
  EXPECT_EQ(after.threads, before.threads) << "threads of the filter process";
  // Not under the sanitizers: ASan keeps freed memory in its quarantine (256 MiB by default) and
  // TSan's shadow grows with every address touched, so their RSS says nothing about ours.
  if (!kSanitized) {
    EXPECT_LT(after.rss_kib - before.rss_kib, kRssGrowthBoundKib) << "RSS of the filter process, KiB";
  }

  // ---- the good service's latency ----
  if (!kSanitized) {
    EXPECT_LE(ratio, kP50Bound) << "good p50 under attack " << disturbed_p50 << " us, undisturbed (the same "
                                << "attack on the decoy) " << undisturbed_p50 << " us";
  }

  EXPECT_TRUE(filter_do(kQuit));
  EXPECT_TRUE(ExitsCleanly(filter));
  EXPECT_TRUE(ExitsCleanly(good));
}

TEST_F(HostilePeer, GarbageDatagrams) {
  run_case(kGarbage);
}
TEST_F(HostilePeer, TruncatedFrames) {
  run_case(kTruncated);
}
TEST_F(HostilePeer, LengthsThatLie) {
  run_case(kLyingLengths);
}
TEST_F(HostilePeer, RepliesForIdsItNeverReceived) {
  run_case(kForgedReplies);
}
TEST_F(HostilePeer, FilterSendMessageFlood) {
  run_case(kSendFlood);
}
TEST_F(HostilePeer, ThousandsOfConnectDisconnectCycles) {
  run_case(kConnectChurn);
}
TEST_F(HostilePeer, ConnectionsThatNeverRead) {
  run_case(kNeverRead);
}
TEST_F(HostilePeer, SharedMemoryRingCorruption) {
  run_case(kRingCorruption);
}

}  // namespace
}  // namespace fltport::test
