#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/models/clip_vision.h"
#include "core/models/config.h"
#include "core/models/llama.h"
#include "core/models/weights.h"

namespace icet::io {
class TensorStore;
}

namespace icet::models {

// LlavaForConditionalGeneration (llava-hf LLaVA-1.5) with image-encoder early exit (ICET):
// the LM takes hidden_states[l] of the vision tower through the unchanged projector.
//
// Shape legend: B batch (images or exit layers), N image tokens (patches; +1 with the "full"
// strategy), Dv vision width, H LM width, T prompt length.
class LlavaModel {
 public:
  LlavaModel(const LlavaConfig& config, WeightLoader& weights);

  // pixel_values: [B, 3, S, S] -> hidden states 0..last_layer, each [B, N+1, Dv]
  std::vector<at::Tensor> encode(const at::Tensor& pixel_values, int64_t last_layer) const;
  // One hidden state [B, N+1, Dv] -> selected features [B, N, Dv] (drops CLS for "default").
  at::Tensor select(const at::Tensor& hidden_state) const;
  // selected: [B, N, Dv] -> image features [B, N, H] (Linear, GELU(erf), Linear)
  at::Tensor project(const at::Tensor& selected) const;
  // ids: [T] int64 with N image tokens; features: [B, N, H] -> embeds [B, T, H], image rows
  // written in order at the image-token positions (HF masked_scatter).
  at::Tensor merge(const at::Tensor& ids, const at::Tensor& features) const;

  // Exit layer to use: the checkpoint's default when empty; otherwise checked to be in
  // 1..num_hidden_layers (ICET-l = hidden_states[l]).
  int64_t resolve_layer(std::optional<int64_t> layer) const;

  const LlavaConfig& config() const { return config_; }
  const LlamaModel& language_model() const { return lm_; }
  LlamaModel& language_model() { return lm_; }  // e.g. to set LoRA adapters
  const ClipVisionTower& vision_tower() const { return vision_; }

 private:
  LlavaConfig config_;
  ClipVisionTower vision_;
  at::Tensor proj1_w_, proj1_b_, proj2_w_, proj2_b_;
  LlamaModel lm_;
};

// Loads config.json and the safetensors weights of a llava snapshot folder.
std::unique_ptr<LlavaModel> load_llava(const std::filesystem::path& dir, const LoadOptions& options,
                                       const LoadProgress& progress = {});
// The same from an already opened checkpoint (`source` names it in errors).
std::unique_ptr<LlavaModel> load_llava(const LlavaConfig& config, const io::TensorStore& store,
                                       const std::string& source, const LoadOptions& options,
                                       const LoadProgress& progress = {});

}  // namespace icet::models
