// Whether this build runs under ASan/UBSan or TSan: such builds run several times slower and keep
// freed memory in quarantine, so bounds on time and memory that hold for a release build get a
// margin there (each test says which and why).
#pragma once

namespace fltport::test {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

}  // namespace fltport::test
