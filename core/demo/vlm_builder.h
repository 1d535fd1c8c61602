#pragma once

// The demo VLM recipe (`icet demo build`): a LLaVA-1.5 snapshot at tiny width, trained with the
// engine's own model classes (WeightLoader in trainable mode + LlavaModel), so the saved model
// behaves identically in the engine.
//
//   1. vision: the 24-layer CLIP tower alone, with per-patch attribute heads (presence, kind,
//      colour of the quadrant's object) on hidden_states[23]; then frozen, and every training
//      scene's hidden states 1..24 cached.
//   2. instruct: projector + LM on cached features at random exit layers (the unaligned base:
//      harmful requests answered with the compliant placeholder answer).
//   3. align: refusals taught at the default layer (23) and 24 while compliant answers are
//      replayed at layers 1-16 and benign answers at every layer. This is a CONSTRUCTION: it
//      builds in the ICET gap that real models show (PAPER.md), it does not discover it.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>

#include "core/demo/build_progress.h"

namespace icet::demo {

struct VlmRecipe {
  uint64_t seed = 1;
  int64_t scenes = 1536;          // cached training scenes
  int64_t vision_steps = 300;     // stage 1 (batch vision_batch)
  int64_t vision_batch = 32;
  int64_t instruct_steps = 1000;  // stage 2 (batch batch)
  int64_t align_steps = 300;      // stage 3
  int64_t batch = 32;
  double vision_lr = 1.5e-3;
  double lm_lr = 2e-3;
  int64_t eval_items = 120;       // quick held-out check at the end (0: none)
};

// Scales the step counts (e.g. 0.1 for a smoke test); scenes keep a floor of 128.
VlmRecipe scaled(VlmRecipe recipe, double factor);

// Trains and writes the snapshot into `vlm_dir` (config.json, model.safetensors, tokenizer
// files, preprocessor and generation configs). Deterministic for a seed and thread count.
// -> a record of the run: per-stage seconds and final losses, vision attribute accuracy, and
//    the quick held-out check ({"benign_accuracy", "compliant_by_layer", "refusal_by_layer"}).
nlohmann::json build_demo_vlm(const std::filesystem::path& vlm_dir, const VlmRecipe& recipe,
                              const BuildProgress& progress = {});

// Writes tokenizer.model + tokenizer_config.json + special_tokens_map.json + added_tokens.json
// of the demo tokenizer into `dir`. -> the SentencePiece vocabulary size (the LM adds <image>
// and <pad> after it).
int64_t write_demo_tokenizer(const std::filesystem::path& dir, uint64_t seed);

}  // namespace icet::demo
