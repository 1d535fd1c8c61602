#pragma once

// FNV-1a 64: tiny, stable across platforms and versions, good enough for an id (weights,
// images, prompt sets, adapters); not a security measure.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace icet {

class Fnv1a64 {
 public:
  void update(const void* data, std::size_t size) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < size; ++i) {
      hash_ = (hash_ ^ p[i]) * 0x100000001b3ull;
    }
  }
  // The 8 little-endian bytes of `v`.
  void update_u64(uint64_t v) {
    unsigned char bytes[8];
    for (int i = 0; i < 8; ++i) {
      bytes[i] = static_cast<unsigned char>(v >> (8 * i));
    }
    update(bytes, 8);
  }
  uint64_t value() const { return hash_; }
  std::string hex() const {  // 16 hex digits
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(hash_));
    return buf;
  }

 private:
  uint64_t hash_ = 0xcbf29ce484222325ull;
};

}  // namespace icet
