#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "core/models/config.h"
#include "core/models/lora.h"

namespace icet::models {

class WeightLoader;

// Key/value cache, preallocated for `capacity` positions so a decode step writes in place
// instead of concatenating. k[l], v[l]: [B, kv_heads, capacity, head_dim].
struct KvCache {
  std::vector<at::Tensor> k, v;
  int64_t length = 0;  // positions filled
  int64_t capacity = 0;

  int64_t batch() const { return k.empty() ? 0 : k.front().size(0); }
  // Removes batch row `row` (finished rows of a batch stop costing work): the last row moves
  // into its place and the batch shrinks by one, a view of the same storage. One row is copied,
  // not the cache; the caller moves its own record of the last row the same way.
  void remove_row(int64_t row);
};

// Llama decoder (HF LlamaModel + lm_head): RMSNorm, RoPE (with Llama-3 scaling), grouped-query
// attention, SiLU-gated MLP, KV cache.
//
// Shape legend: B batch, T new positions, P cached positions, H hidden, V vocab, h query
// heads, g kv heads, d head_dim, I MLP size.
class LlamaModel {
 public:
  // prefix: "language_model." in llava-hf checkpoints, "" for a plain LlamaForCausalLM.
  // With `lm_head` false no output projection is loaded (sequence classifiers).
  LlamaModel(const LlamaConfig& config, WeightLoader& weights, const std::string& prefix, bool lm_head = true);

  // ids: [B, T] int64 -> [B, T, H]
  at::Tensor embed(const at::Tensor& ids) const;

  // embeds: [B, T, H]; positions: [B, T] int64 (absolute positions of the new tokens);
  // cache: optional, filled from cache->length on; key_mask: optional [B, P+T] (1 = attend,
  // 0 = padding). -> final-norm hidden states [B, T, H], or [B, 1, H] of the last position
  // with `last_only` (a prefill reads nothing else: the other positions skip the final norm
  // and, in row groups, the [B, T, H] concatenation: 232 MB at 24 x 590 x 4096).
  at::Tensor forward(const at::Tensor& embeds, const at::Tensor& positions, KvCache* cache = nullptr,
                     const at::Tensor& key_mask = {}, bool last_only = false) const;

  // hidden: [B, T, H] -> logits [B, T, V] (float32)
  at::Tensor logits(const at::Tensor& hidden) const;

  KvCache make_cache(int64_t batch, int64_t capacity) const;

  // LoRA (lora.h): while `adapters` is set and enabled, every adapted linear layer adds its
  // low-rank update in forward(). Not owned; nullptr = the base model. The caller keeps the
  // set alive and does not change it while another thread runs forward().
  void set_adapters(const LoraSet* adapters) { adapters_ = adapters; }
  const LoraSet* adapters() const { return adapters_; }
  // Merge for inference: W += sign * (alpha / r) * B A for every adapted layer, in place (a
  // merged adapter costs nothing per token; sign -1 takes it out again, up to rounding).
  void merge_adapters(const LoraSet& adapters, double sign = 1.0);
  // Weight [out, in] of linear `m` in decoder layer `layer` (for adapter shapes).
  const at::Tensor& linear_weight(size_t layer, LoraModule m) const;

  // Gradient checkpointing (training): while on, a forward with autograd and no cache keeps
  // only each layer's input and recomputes the layer in backward (activation memory of one
  // layer instead of all; one more forward per step).
  void set_gradient_checkpointing(bool on) { checkpointing_ = on; }
  // One decoder layer: x [B, T, H] -> [B, T, H] (cos/sin: RoPE tables, mask: additive or undefined).
  at::Tensor layer_forward(size_t layer, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                           KvCache* cache, const at::Tensor& mask) const;

  const LlamaConfig& config() const { return config_; }
  const at::Tensor& inv_freq() const { return inv_freq_; }  // [d/2] float32, scaled

 private:
  struct Layer {
    at::Tensor in_norm, q_w, k_w, v_w, o_w, q_b, k_b, v_b, o_b, post_norm, gate_w, up_w, down_w;
  };
  at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w) const;
  const LoraSet* active_adapters() const;  // adapters_ when set, enabled and non-empty
  at::Tensor checkpointed_layer(size_t layer, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                const at::Tensor& mask) const;
  // x: [B, T, H] -> [B, T, H]
  at::Tensor attention(const Layer& l, size_t index, const at::Tensor& x, const at::Tensor& cos,
                       const at::Tensor& sin, KvCache* cache, const at::Tensor& mask) const;

  LlamaConfig config_;
  at::Tensor embed_tokens_;  // [V, H]
  at::Tensor lm_head_;       // [V, H] (the embedding when tied)
  at::Tensor norm_;          // [H]
  at::Tensor inv_freq_;      // [d/2] float32
  std::vector<Layer> layers_;
  const LoraSet* adapters_ = nullptr;
  bool checkpointing_ = false;
};

// RoPE inverse frequencies as transformers computes them, float32: 1 / theta^(2i/d), then the
// llama3 scaling when configured. -> [d/2]
at::Tensor rope_inv_freq(const LlamaConfig& config);

}  // namespace icet::models
