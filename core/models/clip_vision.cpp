#include "core/models/clip_vision.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include "core/base/error.h"
#include "core/models/ops.h"
#include "core/models/weights.h"

namespace icet::models {

ClipVisionTower::ClipVisionTower(const ClipVisionConfig& config, WeightLoader& w,
                                 const std::string& prefix)
    : config_(config) {
  const int64_t D = config.hidden_size, I = config.intermediate_size;
  const std::string e = prefix + "embeddings.";
  patch_w_ = w.take(e + "patch_embedding.weight", {D, config.num_channels, config.patch_size, config.patch_size});
  class_embedding_ = w.take(e + "class_embedding", {D});
  position_embedding_ = w.take(e + "position_embedding.weight", {config.num_patches() + 1, D});
  pre_ln_w_ = w.take(prefix + "pre_layrnorm.weight", {D});
  pre_ln_b_ = w.take(prefix + "pre_layrnorm.bias", {D});
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const std::string l = prefix + "encoder.layers." + std::to_string(i) + ".";
    Block b;
    b.ln1_w = w.take(l + "layer_norm1.weight", {D});
    b.ln1_b = w.take(l + "layer_norm1.bias", {D});
    b.q_w = w.take(l + "self_attn.q_proj.weight", {D, D});
    b.q_b = w.take(l + "self_attn.q_proj.bias", {D});
    b.k_w = w.take(l + "self_attn.k_proj.weight", {D, D});
    b.k_b = w.take(l + "self_attn.k_proj.bias", {D});
    b.v_w = w.take(l + "self_attn.v_proj.weight", {D, D});
    b.v_b = w.take(l + "self_attn.v_proj.bias", {D});
    b.o_w = w.take(l + "self_attn.out_proj.weight", {D, D});
    b.o_b = w.take(l + "self_attn.out_proj.bias", {D});
    b.ln2_w = w.take(l + "layer_norm2.weight", {D});
    b.ln2_b = w.take(l + "layer_norm2.bias", {D});
    b.fc1_w = w.take(l + "mlp.fc1.weight", {I, D});
    b.fc1_b = w.take(l + "mlp.fc1.bias", {I});
    b.fc2_w = w.take(l + "mlp.fc2.weight", {D, I});
    b.fc2_b = w.take(l + "mlp.fc2.bias", {D});
    blocks_.push_back(std::move(b));
  }
  // LLaVA never applies post_layernorm to selected features; it is in the checkpoint anyway.
  w.skip(prefix + "post_layernorm.weight", {D});
  w.skip(prefix + "post_layernorm.bias", {D});
}

at::Tensor ClipVisionTower::block_forward(const Block& b, const at::Tensor& x) const {
  const int64_t B = x.size(0), T = x.size(1), D = config_.hidden_size;
  const int64_t h = config_.num_attention_heads, d = config_.head_dim();
  const double eps = config_.layer_norm_eps;

  // Self-attention (pre-LN). HF scales q before the product: (q * d^-0.5) k^T.
  at::Tensor y = at::layer_norm(x, {D}, b.ln1_w, b.ln1_b, eps);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  at::Tensor q = (dense(y, b.q_w, b.q_b) * scale).view({B, T, h, d}).transpose(1, 2);  // [B,h,T,d]
  at::Tensor k = dense(y, b.k_w, b.k_b).view({B, T, h, d}).transpose(1, 2);
  at::Tensor v = dense(y, b.v_w, b.v_b).view({B, T, h, d}).transpose(1, 2);
  at::Tensor attn = at::softmax(at::matmul(q, k.transpose(-1, -2)), -1, at::kFloat).to(q.scalar_type());
  at::Tensor ctx = at::matmul(attn, v).transpose(1, 2).reshape({B, T, D});  // [B,T,D]
  at::Tensor h1 = x + dense(ctx, b.o_w, b.o_b);

  // MLP (pre-LN); quick_gelu(x) = x * sigmoid(1.702 x).
  y = at::layer_norm(h1, {D}, b.ln2_w, b.ln2_b, eps);
  y = dense(y, b.fc1_w, b.fc1_b);
  y = config_.hidden_act == "quick_gelu" ? y * at::sigmoid(1.702 * y) : at::gelu(y);
  return h1 + dense(y, b.fc2_w, b.fc2_b);
}

std::vector<at::Tensor> ClipVisionTower::forward(const at::Tensor& pixel_values, int64_t last_layer) const {
  const int64_t S = config_.image_size;
  if (pixel_values.dim() != 4 || pixel_values.size(1) != config_.num_channels || pixel_values.size(2) != S ||
      pixel_values.size(3) != S) {
    throw InputError(describe("vision tower input", "pixel values [B, " + std::to_string(config_.num_channels) +
                                                        ", " + std::to_string(S) + ", " + std::to_string(S) + "]",
                              "shape " + c10::str(pixel_values.sizes())));
  }
  if (last_layer < 0 || last_layer > config_.num_hidden_layers) {
    throw InputError(describe("vision exit layer", "0.." + std::to_string(config_.num_hidden_layers),
                              std::to_string(last_layer)));
  }
  const int64_t B = pixel_values.size(0), D = config_.hidden_size;
  const at::Tensor px = pixel_values.to(patch_w_.scalar_type());
  // [B,C,S,S] -> [B,D,g,g] -> [B,N,D]
  at::Tensor patches = at::conv2d(px, patch_w_, {}, config_.patch_size).flatten(2).transpose(1, 2);
  at::Tensor cls = class_embedding_.view({1, 1, D}).expand({B, 1, D});
  at::Tensor x = at::cat({cls, patches}, 1) + position_embedding_.unsqueeze(0);  // [B,N+1,D]
  x = at::layer_norm(x, {D}, pre_ln_w_, pre_ln_b_, config_.layer_norm_eps);

  std::vector<at::Tensor> states;
  states.reserve(static_cast<size_t>(last_layer) + 1);
  states.push_back(x);
  for (int64_t i = 0; i < last_layer; ++i) {
    x = block_forward(blocks_[static_cast<size_t>(i)], x);
    states.push_back(x);
  }
  return states;
}

}  // namespace icet::models
