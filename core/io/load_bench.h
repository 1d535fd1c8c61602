#pragma once

// Checkpoint load benchmark: how fast a safetensors checkpoint becomes usable tensors, and
// how much memory that costs. Zero-copy loading should cost about the file's size in RSS
// (the mapped page-cache pages), not twice that.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>

namespace icet::io {

// Peak RSS increase allowed per byte of checkpoint: the mapped pages plus a little
// bookkeeping. A copying loader would be at ~2.
inline constexpr double kMaxLoadRssRatio = 1.15;

struct LoadBenchReport {
  std::filesystem::path file;  // what was loaded; a generated file is removed afterwards
  bool generated = false;      // true when no file was given
  uint64_t file_bytes = 0;     // all files of the checkpoint together
  std::size_t tensor_count = 0;
  double open_seconds = 0;  // opening and validating every header
  double load_seconds = 0;  // open + obtain every tensor + touch every byte
  double gb_per_s = 0;      // file_bytes / load_seconds, in 1e9 bytes per second
  uint64_t rss_before_bytes = 0;
  int64_t rss_increase_bytes = 0;  // peak RSS during the load minus RSS before it
  double rss_ratio = 0;            // rss_increase_bytes / file_bytes
  bool rss_ok = false;             // rss_ratio <= kMaxLoadRssRatio
  // Whether the kernel's peak-RSS counter could be reset (/proc/self/clear_refs). Without it
  // rss_increase_bytes is measured from the current RSS at the end of the load instead, which
  // misses transient copies.
  bool peak_reset = false;
  uint64_t checksum = 0;    // wrapping sum of every tensor's bytes as 64-bit words
  bool checksum_ok = true;  // generated files: equals the generator's sum; given files: true
};

// Loads `file` (a .safetensors file, an index .json or a snapshot folder), or, when none is
// given, a generated float32 file of about `generate_bytes` (8 tensors) in a temporary folder
// that is removed afterwards. The page cache is warmed by reading the files once first, so
// the number measures mapping and page-table work, not the disk. Throws InputError for a bad
// file and EnvironmentError when the temporary file cannot be written.
LoadBenchReport run_load_benchmark(std::optional<std::filesystem::path> file,
                                   uint64_t generate_bytes = 2ull << 30);

nlohmann::json to_json(const LoadBenchReport& report);

}  // namespace icet::io
