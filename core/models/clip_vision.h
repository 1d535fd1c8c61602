#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "core/models/config.h"

namespace icet::models {

class WeightLoader;

// CLIP vision transformer (HF CLIPVisionModel), returning every hidden state.
//
// Shape legend: B images, C channels, S image side, p patch, g = S/p, N = g*g patches,
// D hidden size, I MLP size, h heads, d = D/h.
//
// hidden_states[0] = patch + position embeddings (CLS first) after pre_layrnorm;
// hidden_states[k] = output of encoder block k (1-based). post_layernorm is never applied:
// LLaVA selects hidden states directly (PAPER.md "ICET").
class ClipVisionTower {
 public:
  // prefix: e.g. "vision_tower.vision_model." as in llava-hf checkpoints.
  ClipVisionTower(const ClipVisionConfig& config, WeightLoader& weights, const std::string& prefix);

  // pixel_values: [B, C, S, S] -> (last_layer + 1) tensors [B, N+1, D], indices 0..last_layer.
  // Only blocks 1..last_layer run (an early exit needs no deeper block).
  std::vector<at::Tensor> forward(const at::Tensor& pixel_values, int64_t last_layer) const;

  const ClipVisionConfig& config() const { return config_; }

 private:
  struct Block {
    at::Tensor ln1_w, ln1_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, ln2_w, ln2_b, fc1_w, fc1_b,
        fc2_w, fc2_b;
  };
  // x: [B, T, D] -> [B, T, D]
  at::Tensor block_forward(const Block& b, const at::Tensor& x) const;

  ClipVisionConfig config_;
  at::Tensor patch_w_;  // [D, C, p, p], no bias
  at::Tensor class_embedding_;  // [D]
  at::Tensor position_embedding_;  // [N+1, D]
  at::Tensor pre_ln_w_, pre_ln_b_;  // [D]
  std::vector<Block> blocks_;
};

}  // namespace icet::models
