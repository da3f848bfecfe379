// What a peer process does to wake the other side of a shared-memory ring: bump the futex word,
// then FUTEX_WAKE everyone on it. For tests that drive a ring by hand (hostile or hand-written
// peers); the library's own writers do the same in transport/shm_ring.cpp.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdint>

namespace fltport::test {

inline void ring_bell_as_peer(std::atomic<uint32_t>& bell) {
  bell.fetch_add(1, std::memory_order_seq_cst);
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&bell), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

}  // namespace fltport::test
