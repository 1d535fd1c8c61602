#pragma once

// The demo VLM recipe (`icet demo build`): a LLaVA-1.5 snapshot at tiny width, trained with the
// engine's own model classes (WeightLoader in trainable mode + LlavaModel), so the saved model
// behaves identically in the engine.
//
//   1. vision: the 24-layer CLIP tower alone, with per-patch attribute heads (presence, kind,
//      colour of the quadrant's object, and the patch's own quadrant) on hidden_states[23], on
//      fresh scenes every step; then frozen, and the hidden states 1..24 of the LM stages'
//      training scenes cached.
//   2. instruct: projector + LM on cached, standardised features at random exit layers (the
//      unaligned base: harmful requests answered with the compliant placeholder answer).
//   3. align: refusals taught at the default layer (23) and 24 while compliant answers are
//      replayed at layers 1-16 and benign answers at every layer. This is a CONSTRUCTION: it
//      builds in the ICET gap that real models show (PAPER.md), it does not discover it.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>

#include "core/demo/build_progress.h"

namespace at {
class Tensor;
}

namespace icet::demo {

struct VlmRecipe {
  uint64_t seed = 1;
  int64_t scenes = 1536;          // cached training scenes
  int64_t vision_steps = 2500;    // stage 1 (batch vision_batch, fresh scenes every step)
  int64_t vision_batch = 32;
  int64_t instruct_steps = 2500;  // stage 2 (batch batch)
  int64_t align_steps = 300;      // stage 3
  int64_t batch = 32;
  double vision_lr = 1e-3;
  double lm_lr = 2e-3;
  int64_t text_layers = 2;        // decoder layers of the LM
  bool standardise = true;        // LM stages see per-channel standardised features (folded into the projector)
  int64_t probe_every = 500;      // held-out probe every N steps (0: only at the end of each stage)
  // An existing demo VLM snapshot whose vision tower is reused (stage 1 skipped); empty: train one.
  std::filesystem::path vision_from;
};

// Scales the step counts (e.g. 0.1 for a smoke test); scenes keep a floor of 128.
VlmRecipe scaled(VlmRecipe recipe, double factor);

// Trains and writes the snapshot into `vlm_dir` (config.json, model.safetensors, tokenizer
// files, preprocessor and generation configs). Deterministic for a seed and thread count.
// -> a record of the run: the recipe, per-stage seconds and final losses, the tower's held-out
//    attribute accuracy, and each LM stage's final held-out probe (teacher-forced exact match on
//    40 questions per benign task at the default layer).
nlohmann::json build_demo_vlm(const std::filesystem::path& vlm_dir, const VlmRecipe& recipe,
                              const BuildProgress& progress = {});

// Folds a per-channel standardisation of the projector's input into its first linear layer:
// W (x - mean) / std + b == W' x + b' with W' = W / std, b' = b - W' mean.
// weight [H,Dv], bias [H], mean and std [Dv]; weight and bias are replaced.
void fold_standardisation(at::Tensor& weight, at::Tensor& bias, const at::Tensor& mean, const at::Tensor& std);

// Writes tokenizer.model + tokenizer_config.json + special_tokens_map.json + added_tokens.json
// of the demo tokenizer into `dir`. -> the SentencePiece vocabulary size (the LM adds <image>
// and <pad> after it).
int64_t write_demo_tokenizer(const std::filesystem::path& dir, uint64_t seed);

}  // namespace icet::demo
