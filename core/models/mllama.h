#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/models/config.h"
#include "core/models/llama.h"
#include "core/models/weights.h"

namespace icet::io {
class TensorStore;
}

namespace icet::models {

// Typed Llama 3.2 Vision configs; missing keys take the transformers 4.47 class defaults.
struct MllamaVisionConfig {  // MllamaVisionConfig
  int64_t hidden_size = 1280;
  std::string hidden_act = "gelu";
  int64_t num_hidden_layers = 32;  // local (ungated) encoder
  int64_t num_global_layers = 8;   // gated global encoder
  int64_t num_attention_heads = 16;  // "attention_heads" in config.json
  int64_t num_channels = 3;
  int64_t intermediate_size = 5120;
  int64_t vision_output_dim = 7680;
  int64_t image_size = 448;
  int64_t patch_size = 14;
  double norm_eps = 1e-5;
  int64_t max_num_tiles = 4;
  std::vector<int64_t> intermediate_layers_indices = {3, 7, 15, 23, 30};
  std::vector<std::pair<int64_t, int64_t>> supported_aspect_ratios = {{1, 1}, {1, 2}, {1, 3}, {1, 4},
                                                                      {2, 1}, {2, 2}, {3, 1}, {4, 1}};

  int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size) + 1; }  // with CLS
  int64_t padded_patches() const { return num_patches() + (8 - num_patches() % 8) % 8; }  // to a multiple of 8
  int64_t max_aspect_ratio_id() const { return static_cast<int64_t>(supported_aspect_ratios.size()); }
  static MllamaVisionConfig parse(const json_util::Reader& r);
};

struct MllamaTextConfig {  // MllamaTextConfig: a Llama decoder with cross-attention layers
  LlamaConfig llama;       // vocab_size, sizes, RoPE, norms (defaults: MllamaTextConfig's)
  std::vector<int64_t> cross_attention_layers = {3, 8, 13, 18, 23, 28, 33, 38};
  static MllamaTextConfig parse(const json_util::Reader& r);
};

struct MllamaConfig {  // MllamaConfig
  MllamaVisionConfig vision;
  MllamaTextConfig text;
  int64_t image_token_index = 128256;
  // Sections config.json lacks, filled with transformers' defaults (named in load errors).
  std::vector<std::string> assumed_defaults;
  static MllamaConfig parse(const nlohmann::json& j, const std::string& source);
};

MllamaConfig load_mllama_config(const std::filesystem::path& config_json);

// Mllama's vision model (HF MllamaVisionModel) split at the exit point.
//
// Shape legend: B images (or exit layers), A tiles (max_num_tiles), P tokens per tile with
// CLS, Pp = P padded to a multiple of 8, D vision width, C channels, t tile side.
class MllamaVisionModel {
 public:
  MllamaVisionModel(const MllamaVisionConfig& config, WeightLoader& weights, const std::string& prefix);

  // The local encoder. pixel_values: [B, A, C, t, t]; aspect_ids: [B] int64 (1-based);
  // aspect_mask: [B, A] (1 = real tile) -> hidden states 0..last_layer, each [B, A*Pp, D]
  // (0 = the encoder input, k = output of local layer k).
  std::vector<at::Tensor> encode_local(const at::Tensor& pixel_values, const at::Tensor& aspect_ids,
                                       const at::Tensor& aspect_mask, int64_t last_layer) const;

  // Everything after the local encoder, for exit layer `layer` (1..num_hidden_layers):
  // layernorm_post(hs[layer]) -> gated post-tile embedding -> gated global layers -> padding
  // removed -> concatenated with the taps hs[min(i, layer)] (HF interleaves the taps: stack on
  // the last axis, then flatten). states: from encode_local with last_layer >= layer.
  // -> [B, A, P, D * (1 + taps)]
  at::Tensor finish(const std::vector<at::Tensor>& states, int64_t layer, const at::Tensor& aspect_ids,
                    const at::Tensor& aspect_mask) const;
  // The same for several exit layers of ONE image in one batch: states of batch 1 ->
  // [L, A, P, D * (1 + taps)], row i for layers[i].
  at::Tensor finish_layers(const std::vector<at::Tensor>& states, const std::vector<int64_t>& layers,
                           const at::Tensor& aspect_ids, const at::Tensor& aspect_mask) const;

  // The taps exit layer `layer` uses: min(i, layer) for every intermediate index.
  std::vector<int64_t> taps(int64_t layer) const;

  const MllamaVisionConfig& config() const { return config_; }

 private:
  struct Layer {
    at::Tensor ln1_w, ln1_b, q_w, k_w, v_w, o_w, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
    at::Tensor gate_attn, gate_ffn;  // [1], global layers only
  };
  Layer load_layer(WeightLoader& w, const std::string& prefix, bool gated) const;
  // x: [B, A*Pp, D], mask: [B, 1, A*Pp, A*Pp] additive -> [B, A*Pp, D]
  at::Tensor layer_forward(const Layer& l, const at::Tensor& x, const at::Tensor& mask) const;
  // aspect_mask [B, A] -> additive [B, 1, A*Pp, A*Pp] (HF _prepare_aspect_ratio_attention_mask)
  at::Tensor attention_mask(const at::Tensor& aspect_mask, c10::ScalarType dtype) const;
  // table: [R, A*n*D]; ids [B] -> [B, A, n, D], with a bounds check on the ids
  at::Tensor aspect_rows(const at::Tensor& table, const at::Tensor& ids, int64_t n) const;
  at::Tensor finish_batch(const at::Tensor& last, const std::vector<at::Tensor>& tap_states,
                          const at::Tensor& aspect_ids, const at::Tensor& aspect_mask) const;

  MllamaVisionConfig config_;
  at::Tensor patch_w_;           // [D, C, p, p], no bias
  at::Tensor class_embedding_;   // [D]
  at::Tensor pos_embedding_, pos_gate_, tile_pos_embedding_;  // [P, D], [1], [R+1, A*P*D]
  at::Tensor pre_tile_, pre_tile_gate_, post_tile_, post_tile_gate_;  // [R+1, A*D], [1]
  at::Tensor ln_pre_w_, ln_pre_b_, ln_post_w_, ln_post_b_;
  std::vector<Layer> local_, global_;
};

// Cross-attention context of one prompt: the projected vision tokens of every batch row and
// the per-position visibility rule of HF's cross_attention_mask.
struct CrossAttentionInputs {
  at::Tensor states;       // [B, A*P, H] (padded tiles included, as HF)
  at::Tensor tile_mask;    // [A*P] 1 where the token belongs to a real tile
  int64_t image_position = 0;  // positions >= this see the image (HF: from <|image|> to the end)
};

// MllamaForCausalLM's text model: Llama self-attention layers plus gated cross-attention
// layers (per-head q/k RMSNorm, no RoPE, K/V from the vision tokens).
// Shape legend: B batch, T new positions, H hidden, V vocab, S vision tokens (A*P).
class MllamaTextModel {
 public:
  MllamaTextModel(const MllamaTextConfig& config, WeightLoader& weights, const std::string& prefix);

  at::Tensor embed(const at::Tensor& ids) const;  // [B, T] -> [B, T, H]
  // embeds: [B, T, H]; positions [B, T]; cache: self-attention K/V as LlamaModel's, and for a
  // cross-attention layer its vision K/V (computed at the first call, when cache->length is 0,
  // and reused after). -> final-norm hidden [B, T, H]
  at::Tensor forward(const at::Tensor& embeds, const at::Tensor& positions, const CrossAttentionInputs& cross,
                     KvCache* cache = nullptr) const;
  at::Tensor logits(const at::Tensor& hidden) const;  // [B, T, H] -> [B, T, V] float32
  KvCache make_cache(int64_t batch, int64_t capacity) const;

  const MllamaTextConfig& config() const { return config_; }

 private:
  struct Layer {
    bool cross = false;
    at::Tensor in_norm, q_w, k_w, v_w, o_w, post_norm, gate_w, up_w, down_w;
    at::Tensor q_norm, k_norm, attn_gate, mlp_gate;  // cross layers
  };
  at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w) const;
  at::Tensor self_attention(const Layer& l, size_t index, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& sin, KvCache* cache, const at::Tensor& mask) const;
  at::Tensor cross_attention(const Layer& l, size_t index, const at::Tensor& x, const CrossAttentionInputs& cross,
                             KvCache* cache, const at::Tensor& mask) const;

  MllamaTextConfig config_;
  at::Tensor embed_tokens_, lm_head_, norm_, inv_freq_;
  std::vector<Layer> layers_;
};

// MllamaForConditionalGeneration with image-encoder early exit.
//
// EXIT POLICY (an assumption: the paper does not say how it exits Mllama): exit at local
// layer l keeps the first l layers of the local encoder and clamps every intermediate tap to
// min(i, l); layernorm_post, the post-tile embedding, the gated global encoder, the
// concatenation and the projector are unchanged. The default (no exit) equals l = N.
class MllamaModel {
 public:
  MllamaModel(const MllamaConfig& config, WeightLoader& weights);

  // vision output [B, A, P, Dout] -> cross-attention states [B, A*P, H]
  at::Tensor project(const at::Tensor& vision_output) const;
  // HF's cross-attention visibility for a prompt: from the first image token on, over the
  // first `num_tiles` tiles. ids: [T]. Throws InputError without an image token.
  CrossAttentionInputs cross_inputs(const at::Tensor& ids, const at::Tensor& states, int64_t num_tiles) const;

  int64_t resolve_layer(std::optional<int64_t> layer) const;

  const MllamaConfig& config() const { return config_; }
  const MllamaVisionModel& vision_model() const { return vision_; }
  const MllamaTextModel& language_model() const { return text_; }

  static constexpr const char* kExitPolicy =
      "assumption: exit at local layer l truncates the local encoder after layer l and clamps the intermediate "
      "taps to min(i, l); the global encoder and projector run unchanged (the paper does not specify this)";

 private:
  MllamaConfig config_;
  MllamaVisionModel vision_;
  at::Tensor proj_w_, proj_b_;
  MllamaTextModel text_;
};

std::unique_ptr<MllamaModel> load_mllama(const std::filesystem::path& dir, const LoadOptions& options,
                                         const LoadProgress& progress = {});
std::unique_ptr<MllamaModel> load_mllama(const MllamaConfig& config, const io::TensorStore& store,
                                         const std::string& source, const LoadOptions& options,
                                         const LoadProgress& progress = {});

}  // namespace icet::models
