// Baseline two-process ping-pong benchmarks: each forks one echo child and measures, in the parent,
// the round trip of a request_size-byte request and a reply_size-byte reply. They bracket what a
// cross-process port can reach: shared-memory busy-poll is the floor, ZeroMQ the conventional choice.
#pragma once

#include <chrono>
#include <cstddef>

#include "harness.hpp"

namespace fltport::bench {

// Row names, so a port benchmark can use the busy-poll row as the floor of print_table().
// Every baseline takes a time_limit: non-zero ends its timed loop early (see measure()).
inline constexpr const char* kBusyPollName = "shm busy-poll";
inline constexpr const char* kSpinFutexName = "shm spin+futex";
inline constexpr const char* kSpinFutexWakeAlwaysName = "shm spin+futex, wake always";
inline constexpr const char* kSeqpacketName = "AF_UNIX seqpacket";
inline constexpr const char* kSameCpuYieldName = "shm yield, 1 CPU";
inline constexpr const char* kSameCpuYieldThreadsName = "shm yield, 1 CPU, threads";
inline constexpr const char* kZmqReqRepName = "zmq REQ/REP ipc";

// Shared memory (mapped before fork), one cache-line-aligned sequence counter per direction, both
// sides spin with pause; payloads are copied through shared slots.
LatencyStats busy_poll_pingpong(size_t warmup, size_t iterations, size_t request_size = 64,
                                size_t reply_size = 16, std::chrono::nanoseconds time_limit = {});

// As busy_poll_pingpong, but a waiter spins `spins` pause iterations and then sleeps in FUTEX_WAIT
// (shared, not PRIVATE); a writer calls FUTEX_WAKE only when the peer has flagged itself sleeping.
LatencyStats spin_futex_pingpong(size_t warmup, size_t iterations, size_t request_size = 64,
                                 size_t reply_size = 16, unsigned spins = 2000,
                                 std::chrono::nanoseconds time_limit = {});

// The simpler design many spin-then-futex waits have: the writer calls FUTEX_WAKE after every
// publish, whether the peer sleeps or not (a system call per message, no sleep flag to read).
LatencyStats spin_futex_wake_always_pingpong(size_t warmup, size_t iterations, size_t request_size = 64,
                                             size_t reply_size = 16, unsigned spins = 2000,
                                             std::chrono::nanoseconds time_limit = {});

// The price of a switch on one CPU, which bounds many-threaded throughput when threads outnumber
// CPUs: as busy_poll_pingpong, with both sides pinned to one CPU and each calling sched_yield()
// while it waits. A round trip is two switches: between two processes, or (`threads`) between two
// threads of this process.
LatencyStats same_cpu_yield_pingpong(bool threads, size_t warmup, size_t iterations, size_t request_size = 64,
                                     size_t reply_size = 16, std::chrono::nanoseconds time_limit = {});

// socketpair(AF_UNIX, SOCK_SEQPACKET), blocking send/recv.
LatencyStats seqpacket_pingpong(size_t warmup, size_t iterations, size_t request_size = 64,
                                size_t reply_size = 16, std::chrono::nanoseconds time_limit = {});

// ZeroMQ REQ (parent, binds) / REP (child, connects) over ipc:// in a fresh mkdtemp directory under
// /tmp that is removed afterwards. Each process creates its zmq context after fork.
LatencyStats zmq_reqrep(size_t warmup, size_t iterations, size_t request_size = 64, size_t reply_size = 16,
                        std::chrono::nanoseconds time_limit = {});

}  // namespace fltport::bench
