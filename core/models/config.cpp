#include "core/models/config.h"

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/json_util.h"

namespace icet::models {
namespace {

using json_util::Reader;

void require_positive(const Reader& r, const char* key, int64_t value) { require_config_size(r, key, value); }

void require_divisible(const Reader& r, const char* key, int64_t value, const char* by_key, int64_t by) {
  if (by <= 0 || value % by != 0) {
    throw InputError(describe(r.where(key), std::string("a multiple of ") + r.key_path(by_key) + " (" +
                                                std::to_string(by) + ")",
                              std::to_string(value)));
  }
}

}  // namespace

int64_t config_size_limit(std::string_view key) {
  if (key == "vocab_size") return int64_t{1} << 22;
  if (key == "intermediate_size") return int64_t{1} << 20;
  if (key == "max_position_embeddings" || key == "n_positions") return int64_t{1} << 24;
  if (key == "max_num_tiles") return 64;
  if (key == "num_hidden_layers" || key == "n_layer" || key == "num_attention_heads" || key == "attention_heads" ||
      key == "n_head" || key == "num_key_value_heads" || key == "num_channels") {
    return 1024;
  }
  return int64_t{1} << 16;  // hidden_size, n_embd, head_dim, image_size, patch_size, num_labels
}

void require_config_size(const Reader& r, const char* key, int64_t value) {
  const int64_t limit = config_size_limit(key);
  if (value <= 0 || value > limit) {
    throw InputError(describe(r.where(key), "a positive integer up to " + std::to_string(limit), std::to_string(value)));
  }
}

ClipVisionConfig ClipVisionConfig::parse(const Reader& r) {
  ClipVisionConfig c;
  const std::string type = r.string("model_type", "clip_vision_model");
  if (type != "clip_vision_model") {
    throw InputError(describe(r.where("model_type"), "\"clip_vision_model\" (LLaVA-1.5 uses a CLIP vision tower)",
                              "\"" + type + "\""));
  }
  c.hidden_size = r.integer("hidden_size", c.hidden_size);
  c.intermediate_size = r.integer("intermediate_size", c.intermediate_size);
  c.num_hidden_layers = r.integer("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = r.integer("num_attention_heads", c.num_attention_heads);
  c.num_channels = r.integer("num_channels", c.num_channels);
  c.image_size = r.integer("image_size", c.image_size);
  c.patch_size = r.integer("patch_size", c.patch_size);
  c.hidden_act = r.string("hidden_act", c.hidden_act);
  c.layer_norm_eps = r.number("layer_norm_eps", c.layer_norm_eps);
  for (auto [key, value] : {std::pair{"hidden_size", c.hidden_size}, {"intermediate_size", c.intermediate_size},
                            {"num_hidden_layers", c.num_hidden_layers}, {"num_attention_heads", c.num_attention_heads},
                            {"num_channels", c.num_channels}, {"image_size", c.image_size}, {"patch_size", c.patch_size}}) {
    require_positive(r, key, value);
  }
  require_divisible(r, "hidden_size", c.hidden_size, "num_attention_heads", c.num_attention_heads);
  require_divisible(r, "image_size", c.image_size, "patch_size", c.patch_size);
  if (c.hidden_act != "quick_gelu" && c.hidden_act != "gelu") {
    throw InputError(describe(r.where("hidden_act"), "\"quick_gelu\" or \"gelu\"", "\"" + c.hidden_act + "\""));
  }
  return c;
}

LlamaConfig LlamaConfig::parse(const Reader& r) {
  LlamaConfig c;
  const std::string type = r.string("model_type", "llama");
  if (type != "llama" && type != "mistral") {
    throw InputError(describe(r.where("model_type"), "\"llama\"", "\"" + type + "\""));
  }
  c.vocab_size = r.integer("vocab_size", c.vocab_size);
  c.hidden_size = r.integer("hidden_size", c.hidden_size);
  c.intermediate_size = r.integer("intermediate_size", c.intermediate_size);
  c.num_hidden_layers = r.integer("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = r.integer("num_attention_heads", c.num_attention_heads);
  c.num_key_value_heads = r.integer("num_key_value_heads", c.num_attention_heads);
  c.head_dim = r.integer("head_dim", c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0);
  c.hidden_act = r.string("hidden_act", c.hidden_act);
  c.max_position_embeddings = r.integer("max_position_embeddings", c.max_position_embeddings);
  c.rms_norm_eps = r.number("rms_norm_eps", c.rms_norm_eps);
  c.rope_theta = r.number("rope_theta", c.rope_theta);
  c.attention_bias = r.boolean("attention_bias", c.attention_bias);
  c.mlp_bias = r.boolean("mlp_bias", c.mlp_bias);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", c.tie_word_embeddings);
  if (r.has("bos_token_id")) c.bos_token_id = r.integer("bos_token_id");
  if (r.has("eos_token_id")) c.eos_token_ids = r.integer_or_list("eos_token_id");
  if (r.has("pad_token_id")) c.pad_token_id = r.integer("pad_token_id");
  for (auto [key, value] : {std::pair{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
                            {"intermediate_size", c.intermediate_size}, {"num_hidden_layers", c.num_hidden_layers},
                            {"num_attention_heads", c.num_attention_heads},
                            {"num_key_value_heads", c.num_key_value_heads}, {"head_dim", c.head_dim},
                            {"max_position_embeddings", c.max_position_embeddings}}) {
    require_positive(r, key, value);
  }
  require_divisible(r, "num_attention_heads", c.num_attention_heads, "num_key_value_heads", c.num_key_value_heads);
  if (c.head_dim % 2 != 0) {
    throw InputError(describe(r.where("head_dim"), "an even number (RoPE rotates pairs)", std::to_string(c.head_dim)));
  }
  if (c.hidden_act != "silu") {
    throw InputError(describe(r.where("hidden_act"), "\"silu\"", "\"" + c.hidden_act + "\""));
  }
  if (r.has("rope_scaling")) {
    const Reader s = r.child("rope_scaling");
    RopeScaling scaling;
    scaling.rope_type = s.has("rope_type") ? s.string("rope_type") : s.string("type", "default");
    if (scaling.rope_type == "llama3") {
      scaling.factor = s.number("factor");
      scaling.low_freq_factor = s.number("low_freq_factor");
      scaling.high_freq_factor = s.number("high_freq_factor");
      scaling.original_max_position_embeddings = s.integer("original_max_position_embeddings");
      c.rope_scaling = scaling;
    } else if (scaling.rope_type != "default") {
      throw InputError(describe(s.where("rope_type"), "\"llama3\" or \"default\"", "\"" + scaling.rope_type + "\"",
                                "Other RoPE scalings are not supported yet."));
    }
  }
  return c;
}

int64_t LlavaConfig::default_exit_layer() const {
  return vision_feature_layer < 0 ? vision.num_hidden_layers + 1 + vision_feature_layer : vision_feature_layer;
}

int64_t LlavaConfig::image_tokens() const {
  return vision.num_patches() + (vision_feature_select_strategy == "full" ? 1 : 0);
}

LlavaConfig LlavaConfig::parse(const Reader& r) {
  LlavaConfig c;
  const std::string type = r.string("model_type");
  if (type != "llava") {
    throw InputError(describe(r.where("model_type"), "\"llava\"", "\"" + type + "\""));
  }
  if (r.has("vision_config")) {
    c.vision = ClipVisionConfig::parse(r.child("vision_config"));
  } else {  // LlavaConfig's own default vision tower: CLIP ViT-L/14-336
    c.vision.hidden_size = 1024;
    c.vision.intermediate_size = 4096;
    c.vision.patch_size = 14;
    c.vision.image_size = 336;
    c.vision.num_hidden_layers = 24;
    c.vision.num_attention_heads = 16;
    c.assumed_defaults.push_back("vision_config (CLIP ViT-L/14-336: hidden_size 1024, 24 layers)");
  }
  if (!r.has("text_config")) {  // transformers builds LlamaConfig(): Llama-2-7B sizes
    c.assumed_defaults.push_back("text_config (Llama-2-7B: hidden_size 4096, 32 layers, vocab_size 32000)");
  }
  c.text = LlamaConfig::parse(r.child("text_config"));
  c.image_token_index = r.integer("image_token_index", c.image_token_index);
  c.projector_hidden_act = r.string("projector_hidden_act", c.projector_hidden_act);
  if (r.has("vision_feature_layer") && r.json().at("vision_feature_layer").is_array()) {
    throw InputError(describe(r.where("vision_feature_layer"), "one layer index",
                              "a list (multi-layer features are not supported)"));
  }
  c.vision_feature_layer = r.integer("vision_feature_layer", c.vision_feature_layer);
  c.vision_feature_select_strategy = r.string("vision_feature_select_strategy", c.vision_feature_select_strategy);
  c.image_seq_length = r.integer("image_seq_length", c.image_seq_length);
  c.multimodal_projector_bias = r.boolean("multimodal_projector_bias", c.multimodal_projector_bias);
  if (r.has("pad_token_id")) c.pad_token_id = r.integer("pad_token_id");
  c.text.tie_word_embeddings = r.boolean("tie_word_embeddings", c.text.tie_word_embeddings);

  const int64_t n = c.vision.num_hidden_layers;
  if (c.vision_feature_layer < -(n + 1) || c.vision_feature_layer > n) {
    throw InputError(describe(r.where("vision_feature_layer"),
                              "a hidden-state index in [" + std::to_string(-(n + 1)) + ", " + std::to_string(n) + "]",
                              std::to_string(c.vision_feature_layer)));
  }
  if (c.vision_feature_select_strategy != "default" && c.vision_feature_select_strategy != "full") {
    throw InputError(describe(r.where("vision_feature_select_strategy"), "\"default\" or \"full\"",
                              "\"" + c.vision_feature_select_strategy + "\""));
  }
  if (c.projector_hidden_act != "gelu") {
    throw InputError(describe(r.where("projector_hidden_act"), "\"gelu\"", "\"" + c.projector_hidden_act + "\""));
  }
  if (c.image_token_index < 0) {
    throw InputError(describe(r.where("image_token_index"), "a token id >= 0", std::to_string(c.image_token_index)));
  }
  return c;
}

LlavaConfig load_llava_config(const std::filesystem::path& config_json) {
  const nlohmann::json j = json_util::read_file(config_json);
  return LlavaConfig::parse(Reader(j, config_json.string()));
}

GenerationConfig load_generation_config(const std::filesystem::path& generation_config_json) {
  GenerationConfig g;
  if (!std::filesystem::exists(generation_config_json)) {
    return g;
  }
  const nlohmann::json j = json_util::read_file(generation_config_json);
  const Reader r(j, generation_config_json.string());
  if (r.has("bos_token_id")) g.bos_token_id = r.integer("bos_token_id");
  g.eos_token_ids = r.integer_or_list("eos_token_id");
  if (r.has("pad_token_id")) g.pad_token_id = r.integer("pad_token_id");
  if (r.has("max_new_tokens")) g.max_new_tokens = r.integer("max_new_tokens");
  if (r.has("temperature")) g.temperature = r.number("temperature");
  if (r.has("top_p")) g.top_p = r.number("top_p");
  if (r.has("top_k")) g.top_k = r.integer("top_k");
  if (r.has("do_sample")) g.do_sample = r.boolean("do_sample");
  if (r.has("repetition_penalty")) g.repetition_penalty = r.number("repetition_penalty");
  return g;
}

std::string read_model_type(const std::filesystem::path& config_json) {
  if (!std::filesystem::exists(config_json)) {
    throw InputError(config_json.parent_path().string() +
                     ": not a model folder (no config.json). Choose the folder of a Hugging Face snapshot, "
                     "the one that holds config.json and *.safetensors.");
  }
  const nlohmann::json j = json_util::read_file(config_json);
  return Reader(j, config_json.string()).string("model_type");
}

}  // namespace icet::models
