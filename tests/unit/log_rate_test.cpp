// log::RateLimit: lines another process can cause at will are capped per second, and the first
// line let through afterwards counts the ones left out, so that nothing goes unaccounted.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "base/log.hpp"

namespace {

TEST(LogRateLimit, CapsABurstAndCountsWhatItLeftOut) {
  fltport::log::RateLimit limit(10);
  uint64_t admitted = 0;
  uint64_t reported_not_logged = 0;
  for (int i = 0; i < 1000; ++i) {
    uint64_t not_logged = 0;
    if (limit.admit(not_logged)) {
      ++admitted;
      reported_not_logged += not_logged;
    }
  }
  // The burst may straddle one change of second: at most two seconds' worth.
  EXPECT_GE(admitted, 10u);
  EXPECT_LE(admitted, 20u);

  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  uint64_t not_logged = 0;
  ASSERT_TRUE(limit.admit(not_logged));
  EXPECT_EQ(admitted + reported_not_logged + not_logged, 1000u) << "every line is written or counted";
  uint64_t again = 0;
  if (limit.admit(again)) {
    EXPECT_EQ(again, 0u) << "a count is reported once";
  }
}

}  // namespace
