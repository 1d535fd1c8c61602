#pragma once

#include <nlohmann/json_fwd.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace icet::engine {

// A random LLaVA-1.5-layout checkpoint. The default is LLaVA-1.5's layer counts (24 vision,
// 32 text layers) at tiny width and 25 image tokens; image_size 336 / patch 14 gives LLaVA-1.5's
// 576 image tokens. named("llava-1.5-7b") is the real model's shape (random weights).
struct SyntheticLlava {
  int64_t image_size = 30;
  int64_t patch_size = 6;
  int64_t vision_hidden = 32;  // MLP 2x, 4 heads (the defaults below)
  int64_t text_hidden = 64;    // MLP 2x, 4 heads, 2 kv heads
  int64_t text_layers = 32;
  // The rest of the shape. 0 = the tiny defaults: MLP 2x the width; a vocabulary of the
  // tokenizer's ids plus <image> and <pad>. A larger vocab_size pads the embeddings and the LM
  // head past the tokenizer, as llava-hf does (32064 rows for 32002 ids); generation never
  // picks those rows (LogitsPolicy::clean).
  int64_t vision_intermediate = 0;
  int64_t vision_heads = 4;
  int64_t vision_layers = 24;
  int64_t text_intermediate = 0;
  int64_t text_heads = 4;
  int64_t text_kv_heads = 2;
  int64_t vocab_size = 0;
  // Stored dtype. "float32": seeded normal draws (the bench's historical checkpoints, bit for
  // bit). "bfloat16" / "float16": counter-based uniform draws of the same variance, filled in
  // parallel and written in that dtype, so a 7B checkpoint (14.1 GB) takes seconds, not minutes.
  std::string dtype = "float32";

  int64_t image_tokens() const { return (image_size / patch_size) * (image_size / patch_size); }
  std::string describe() const;
  // Named shapes: "tiny" (the defaults) and "llava-1.5-7b" (llava-hf/llava-1.5-7b-hf: CLIP
  // ViT-L/14-336, 1024 x 24 layers, 16 heads, MLP 4096; Vicuna-7B, 4096 x 32 layers, 32 heads,
  // MLP 11008, vocabulary 32064; 576 image tokens). InputError for another name.
  static SyntheticLlava named(const std::string& name);
  static std::vector<std::string> names();
  // InputError unless every size is positive, each width splits into its heads, the key/value
  // heads divide the attention heads, the text head size is even (RoPE) and the image holds
  // at least one patch. write_synthetic_llava checks this first.
  void check() const;
};

struct SweepBenchOptions {
  std::optional<std::filesystem::path> model;  // none: a synthetic checkpoint
  SyntheticLlava synthetic;
  int64_t max_new_tokens = 16;
  int repeats = 3;  // each timing is the best of this many runs
  // "sequential" or "batched" runs one variant (for profiling); "decode" neither (only the
  // single generations: decode tokens/s and time to first token); "": both.
  std::string only;
  // The session's device and dtype (runtime::parse_device / parse_dtype names: "auto", "cpu",
  // "cuda", "cuda:N"; "auto", "float32", "bfloat16", "float16"). A synthetic checkpoint is
  // written in this dtype when it is bfloat16 or float16 (SyntheticLlava::dtype).
  std::string device = "cpu";
  std::string dtype = "float32";
};

// Writes a random LLaVA-1.5-layout snapshot (config.json, model.safetensors, tokenizer,
// preprocessor config) of the given shape into `dir`.
void write_synthetic_llava(const std::filesystem::path& dir, const SyntheticLlava& shape, uint64_t seed);

// One process, one checkpoint: (a) one greedy generation per layer in turn and (b) the
// batched sweep over the same layers, then single-generation tokens/s and the time to first
// token after a layer change with cached encoder states. Returns the figures as JSON
// (sequential_s, batched_s, speedup, tokens_per_second, ttft_layer_change_s, ...), and for
// LLaVA layouts the bytes one decode step reads (decode_weight_bytes_per_token: every text
// weight but the embedding table, in the session dtype; decode_kv_bytes_per_token: the KV
// cache at the answer's mean length; decode_bytes_per_token: their sum), so that
// memory bandwidth / decode_bytes_per_token bounds decode_tokens_per_second.
nlohmann::json run_sweep_benchmark(const SweepBenchOptions& options);

}  // namespace icet::engine
