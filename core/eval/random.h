#pragma once

// Seeded randomness that gives the same numbers on every compiler and OS (import pairings,
// subsets, bootstrap resamples). std::shuffle and std::uniform_int_distribution are
// implementation-defined and are not used for anything that must be reproducible.

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace icet::eval {

// splitmix64 (Steele, Lea, Flood 2014; the seeding generator of xoshiro): state += 0x9E3779B97F4A7C15,
// then two xor-shift-multiply rounds.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) for n > 0: draws below 2^64 - (2^64 mod n) are kept (rejection, no bias),
  // then taken mod n.
  std::uint64_t below(std::uint64_t n) {
    const std::uint64_t threshold = (0 - n) % n;  // 2^64 mod n
    for (;;) {
      const std::uint64_t r = next();
      if (r >= threshold) return r % n;
    }
  }

 private:
  std::uint64_t state_;
};

// Fisher-Yates permutation of 0..n-1: for i = n-1 down to 1, swap(p[i], p[below(i + 1)]).
inline std::vector<size_t> seeded_permutation(size_t n, std::uint64_t seed) {
  std::vector<size_t> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = i;
  SplitMix64 rng(seed);
  for (size_t i = n; i > 1; --i) {
    const size_t j = static_cast<size_t>(rng.below(i));
    std::swap(p[i - 1], p[j]);
  }
  return p;
}

}  // namespace icet::eval
