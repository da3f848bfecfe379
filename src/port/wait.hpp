// Condition-variable waits against a steady deadline, where Deadline::max() means no deadline.
#pragma once

#include <condition_variable>
#include <mutex>

#include "transport/unix_socket.hpp"

namespace fltport::detail {

using transport::Deadline;

// Returns false when the deadline passed (the caller re-checks its predicate either way).
inline bool wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, Deadline deadline) {
  if (deadline == Deadline::max()) {
    cv.wait(lock);
    return true;
  }
  return cv.wait_until(lock, deadline) == std::cv_status::no_timeout;
}

// How long a peer may leave a frame we must send it unread before we call it stuck and close the
// connection. A service that asked for a message (or sent a request) and then stops reading
// must not hold a filter thread forever.
inline constexpr std::chrono::seconds kPeerStallLimit{10};
// How long a connecting service may take to say hello, and a filter to answer it.
inline constexpr std::chrono::seconds kHandshakeLimit{10};
// How long a connect to a full port waits for the slot of a service that has left (its
// DisconnectNotify still running) before it is refused with STATUS_CONNECTION_COUNT_LIMIT.
inline constexpr std::chrono::seconds kLeavingSlotWait{2};

inline transport::LazyDeadline stall_limit(Deadline wanted = Deadline::max()) {
  return {wanted, kPeerStallLimit};
}
inline Deadline stall_deadline(Deadline wanted = Deadline::max()) {
  return stall_limit(wanted).get();
}

}  // namespace fltport::detail
