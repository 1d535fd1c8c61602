#pragma once

#include <nlohmann/json_fwd.hpp>

#include <filesystem>
#include <optional>
#include <string>

namespace icet::engine {

// A random LLaVA-1.5-layout checkpoint. The default is LLaVA-1.5's layer counts (24 vision,
// 32 text layers) at tiny width and 25 image tokens; image_size 336 / patch 14 gives LLaVA-1.5's
// 576 image tokens.
struct SyntheticLlava {
  int64_t image_size = 30;
  int64_t patch_size = 6;
  int64_t vision_hidden = 32;  // MLP 2x, 4 heads
  int64_t text_hidden = 64;    // MLP 2x, 4 heads, 2 kv heads
  int64_t text_layers = 32;
  int64_t image_tokens() const { return (image_size / patch_size) * (image_size / patch_size); }
  std::string describe() const;
};

struct SweepBenchOptions {
  std::optional<std::filesystem::path> model;  // none: a synthetic checkpoint
  SyntheticLlava synthetic;
  int64_t max_new_tokens = 16;
  int repeats = 3;  // each timing is the best of this many runs
  std::string only;  // "sequential" or "batched" runs one variant (for profiling); "": both
};

// Writes a random LLaVA-1.5-layout snapshot (config.json, model.safetensors, tokenizer,
// preprocessor config) of the given shape into `dir`.
void write_synthetic_llava(const std::filesystem::path& dir, const SyntheticLlava& shape, uint64_t seed);

// One process, one checkpoint: (a) one greedy generation per layer in turn and (b) the
// batched sweep over the same layers, then single-generation tokens/s and the time to first
// token after a layer change with cached encoder states. Returns the figures as JSON
// (sequential_s, batched_s, speedup, tokens_per_second, ttft_layer_change_s, ...).
nlohmann::json run_sweep_benchmark(const SweepBenchOptions& options);

}  // namespace icet::engine
