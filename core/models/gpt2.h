#pragma once

// HF GPT-2 (GPT2Model + GPT2ForSequenceClassification), as used by reward models such as
// gpt2-large-harmless-reward_model. transformers 4.47 semantics (tests/fixtures/README: gpt2_rm).
//
// Shape legend: B batch, T positions, H hidden (n_embd), h heads, d head_dim, I MLP size,
// V vocab, L labels.

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/models/weights.h"

namespace icet::json_util {
class Reader;
}

namespace icet::models {

struct Gpt2Config {  // GPT2Config
  int64_t vocab_size = 50257;
  int64_t n_positions = 1024;
  int64_t n_embd = 768;
  int64_t n_layer = 12;
  int64_t n_head = 12;
  int64_t n_inner = 0;  // 0 (null in config.json) -> 4 * n_embd
  std::string activation_function = "gelu_new";
  double layer_norm_epsilon = 1e-5;
  bool scale_attn_weights = true;
  std::optional<int64_t> pad_token_id;
  int64_t num_labels = 2;  // len(id2label); HF's default is 2

  int64_t head_dim() const { return n_embd / n_head; }
  int64_t inner() const { return n_inner > 0 ? n_inner : 4 * n_embd; }
  static Gpt2Config parse(const json_util::Reader& r);
};

Gpt2Config load_gpt2_config(const std::filesystem::path& config_json);

class Gpt2Model {
 public:
  // prefix: "transformer." in GPT2ForSequenceClassification / GPT2LMHeadModel checkpoints.
  Gpt2Model(const Gpt2Config& config, WeightLoader& weights, const std::string& prefix);

  // ids: [B, T] int64; positions: optional [B, T] int64 (default 0..T-1 per row: GPT-2 does not
  // derive positions from the mask, so left-padded callers pass cumsum(mask) - 1);
  // attention_mask: optional [B, T] (1 = token, 0 = padding); hidden_states: when given, receives
  // HF's tuple: embeddings, the output of each block, the last one after ln_f (n_layer + 1 entries).
  // -> [B, T, H] after ln_f
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& positions = {}, const at::Tensor& attention_mask = {},
                     std::vector<at::Tensor>* hidden_states = nullptr) const;

  const Gpt2Config& config() const { return config_; }

 private:
  struct Block {
    at::Tensor ln_1_w, ln_1_b, attn_w, attn_b, attn_proj_w, attn_proj_b;  // Conv1D weights are (in, out)
    at::Tensor ln_2_w, ln_2_b, fc_w, fc_b, mlp_proj_w, mlp_proj_b;
  };
  // x: [B, T, H]; causal: [T, T] bool (true = may attend); padding: additive [B, 1, 1, T] or
  // undefined -> [B, T, H]
  at::Tensor attention(const Block& b, const at::Tensor& x, const at::Tensor& causal,
                       const at::Tensor& padding) const;

  Gpt2Config config_;
  at::Tensor wte_, wpe_;  // [V, H], [n_positions, H]
  at::Tensor ln_f_w_, ln_f_b_;
  std::vector<Block> blocks_;
};

// GPT2ForSequenceClassification: GPT2Model + `score` (Linear H -> L, no bias) pooled by
// sequence_pool_index.
class Gpt2ForSequenceClassification {
 public:
  Gpt2ForSequenceClassification(const Gpt2Config& config, WeightLoader& weights, std::string source = "GPT-2");

  struct Output {
    at::Tensor logits;      // [B, L] at the pooled positions
    at::Tensor pool_index;  // [B] int64
    at::Tensor scores;      // [B, T, L] score head at every position, float32 (whatever the weights' dtype)
    at::Tensor hidden;      // [B, T, H] last hidden state (after ln_f)
  };
  // ids: [B, T] int64, right-padded with pad_token_id; attention_mask: optional [B, T];
  // positions: optional [B, T] (see Gpt2Model::forward).
  Output forward(const at::Tensor& ids, const at::Tensor& attention_mask = {}, const at::Tensor& positions = {}) const;

  const Gpt2Model& transformer() const { return transformer_; }
  const Gpt2Config& config() const { return transformer_.config(); }

 private:
  Gpt2Model transformer_;
  at::Tensor score_;  // [L, H]
  std::string source_;
};

// A GPT2ForSequenceClassification snapshot folder (config.json + *.safetensors).
std::unique_ptr<Gpt2ForSequenceClassification> load_gpt2_classifier(const std::filesystem::path& dir,
                                                                     const LoadOptions& options = {});

}  // namespace icet::models
