#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace icet::json_util {
class Reader;
}

namespace icet::models {

// Typed Hugging Face configs. config.json omits sub-config values equal to the transformers
// class defaults, so every field defaults to that class's default (transformers 4.47).

struct ClipVisionConfig {  // CLIPVisionConfig
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t num_channels = 3;
  int64_t image_size = 224;
  int64_t patch_size = 32;
  std::string hidden_act = "quick_gelu";
  double layer_norm_eps = 1e-5;

  int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  static ClipVisionConfig parse(const json_util::Reader& r);
};

struct RopeScaling {  // rope_scaling with rope_type "llama3" (Llama 3.1+); others are rejected
  std::string rope_type;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {  // LlamaConfig
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 0;  // 0 -> num_attention_heads
  int64_t head_dim = 0;             // 0 -> hidden_size / num_attention_heads
  std::string hidden_act = "silu";
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;
  bool attention_bias = false;
  bool mlp_bias = false;
  bool tie_word_embeddings = false;
  std::optional<int64_t> bos_token_id = 1;
  std::vector<int64_t> eos_token_ids = {2};
  std::optional<int64_t> pad_token_id;

  static LlamaConfig parse(const json_util::Reader& r);
};

struct LlavaConfig {  // LlavaConfig (llava-hf LLaVA-1.5)
  ClipVisionConfig vision;
  LlamaConfig text;
  int64_t image_token_index = 32000;
  std::string projector_hidden_act = "gelu";
  int64_t vision_feature_layer = -2;
  std::string vision_feature_select_strategy = "default";  // "default" drops CLS, "full" keeps it
  int64_t image_seq_length = 576;
  bool multimodal_projector_bias = true;
  std::optional<int64_t> pad_token_id;
  // Sections config.json lacks, filled with transformers' defaults (named in load errors).
  std::vector<std::string> assumed_defaults;

  // hidden_states index the checkpoint's own setting selects (e.g. -2 -> 23 of 0..24).
  int64_t default_exit_layer() const;
  // Image tokens per image after selection (CLS dropped with "default").
  int64_t image_tokens() const;
  static LlavaConfig parse(const json_util::Reader& r);
};

LlavaConfig load_llava_config(const std::filesystem::path& config_json);

// The largest value a size key of a config.json may hold (e.g. "hidden_size": 65536,
// "num_hidden_layers": 1024), far above every released model: tensors, loops and tables are
// sized from these numbers, so a typo or a hostile file is refused before any of that.
int64_t config_size_limit(std::string_view key);
// InputError naming the key unless 0 < value <= config_size_limit(key).
void require_config_size(const json_util::Reader& r, const char* key, int64_t value);

// generation_config.json; every field optional.
struct GenerationConfig {
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> pad_token_id;
  std::optional<int64_t> max_new_tokens;
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int64_t> top_k;
  std::optional<bool> do_sample;
  std::optional<double> repetition_penalty;
};

// Absent file -> all fields empty.
GenerationConfig load_generation_config(const std::filesystem::path& generation_config_json);

// Reads config.json's model_type, naming the file when it is missing or malformed.
std::string read_model_type(const std::filesystem::path& config_json);

}  // namespace icet::models
