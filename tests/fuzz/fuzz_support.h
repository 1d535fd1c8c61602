#pragma once

// Helpers shared by the fuzz targets (tests/fuzz): a private temp folder for loaders that only
// take paths, and the one rule for exceptions (see expect_input_errors).

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>

namespace icet::fuzz {

// A folder of this process (under /dev/shm when present, else the temp folder), created on
// first use and removed at exit.
const std::filesystem::path& scratch_dir();

// Writes `bytes` to scratch_dir() / name (replacing it) and returns the path.
std::filesystem::path write_scratch(const std::string& name, std::string_view bytes);

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace icet::fuzz

// Runs `body`; icet::InputError (bad input, reported to the user) is the expected way to fail.
// Any other exception escapes to libFuzzer and is reported as a crash: a parser must turn
// every problem with a file into an InputError naming it.
#define ICET_FUZZ_EXPECT_INPUT_ERRORS(...) \
  try {                                    \
    __VA_ARGS__;                           \
  } catch (const icet::InputError&) {      \
  }
