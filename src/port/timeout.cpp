#include <fltport/port.hpp>

namespace fltport {

Timeout::Timeout(std::chrono::nanoseconds relative) noexcept : deadline_(Clock::time_point::max()) {
  const auto now = Clock::now();
  // A wait longer than the clock can count is a wait forever.
  if (relative < Clock::time_point::max() - now)
    deadline_ = now + std::max(relative, std::chrono::nanoseconds::zero());
}

Timeout Timeout::at(std::chrono::system_clock::time_point deadline) noexcept {
  // Waits run on the steady clock so that a wall-clock step cannot stretch them.
  return Timeout(
      std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - std::chrono::system_clock::now()));
}

}  // namespace fltport
