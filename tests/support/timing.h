#pragma once

// Wall-clock bounds that tests assert are set for optimised builds. An unoptimised build runs
// the same work several times slower, and the asan preset (-O0 with ASan + UBSan) many times
// slower, so a bound is multiplied by kTimeScale: it still catches a hang or a limit that does
// not stop work, without turning a sanitizer run into a benchmark.

namespace icet::test {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ICET_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define ICET_TEST_SANITIZED 1
#endif
#endif

#if defined(ICET_TEST_SANITIZED)
inline constexpr double kTimeScale = 30.0;
#elif !defined(__OPTIMIZE__)
inline constexpr double kTimeScale = 5.0;
#else
inline constexpr double kTimeScale = 1.0;
#endif

}  // namespace icet::test
