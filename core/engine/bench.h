#pragma once

#include <nlohmann/json_fwd.hpp>

#include <filesystem>
#include <optional>

namespace icet::engine {

struct SweepBenchOptions {
  std::optional<std::filesystem::path> model;  // none: a synthetic checkpoint (below)
  int64_t max_new_tokens = 16;
  int repeats = 3;  // each timing is the best of this many runs
  // Synthetic checkpoint: LLaVA-1.5's layer counts (24 vision, 32 text layers) at tiny width.
  int64_t image_size = 30;
  int64_t patch_size = 6;
};

// Writes a random LLaVA-1.5-layout snapshot (config.json, model.safetensors, tokenizer,
// preprocessor config) with LLaVA-1.5's layer counts at tiny width into `dir`.
void write_synthetic_llava(const std::filesystem::path& dir, int64_t image_size, int64_t patch_size, uint64_t seed);

// One process, one checkpoint: (a) one greedy generation per layer in turn and (b) the
// batched sweep over the same layers, then single-generation tokens/s and the time to first
// token after a layer change with cached encoder states. Returns the figures as JSON
// (sequential_s, batched_s, speedup, tokens_per_second, ttft_layer_change_s, ...).
nlohmann::json run_sweep_benchmark(const SweepBenchOptions& options);

}  // namespace icet::engine
