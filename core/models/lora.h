#pragma once

// LoRA adapters on the Llama decoder's linear layers (Hu et al. 2021), saved and loaded in
// Hugging Face PEFT's layout:
//   adapter_config.json          {"peft_type": "LORA", "r", "lora_alpha", "lora_dropout",
//                                 "target_modules", "bias": "none", ...}
//   adapter_model.safetensors    "<peft prefix><module>.lora_A.weight" [r, in],
//                                "<peft prefix><module>.lora_B.weight" [out, r]
// PEFT names a tensor "base_model.model." + the module's path in the wrapped model, without
// the adapter name ("default"). For llava-hf LlavaForConditionalGeneration with the checkpoint
// layout this project loads (transformers < 4.52) a module path is
//   language_model.model.layers.<i>.self_attn.{q,k,v,o}_proj
//   language_model.model.layers.<i>.mlp.{gate,up,down}_proj
// so a key reads "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight".
// transformers >= 4.52 wraps the LM as model.language_model.layers.<i>...; load() accepts that
// spelling too ("base_model.model.model.language_model.layers.0...."). For a plain
// LlamaForCausalLM the path is model.layers.<i>....
// Because target_modules as a list matches by suffix (and would also catch the CLIP tower's
// q_proj), the saved config writes a regex limited to the LM, as PEFT users do for VLMs:
//   ".*language_model.*\.(q_proj|v_proj)"
//
// y = x W^T + b + (alpha / r) * dropout(x) A^T B^T; B starts at zero, so a fresh adapter
// leaves the model unchanged (PEFT's init_lora_weights=True: A Kaiming-uniform, B zeros).

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include <array>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace icet::models {

class LlamaModel;

// The seven linear layers of a Llama block, in this order.
enum class LoraModule { q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj };
inline constexpr size_t kLoraModules = 7;
const std::string& lora_module_name(LoraModule m);
// "self_attn.q_proj", "mlp.gate_proj", ...
std::string lora_module_path(LoraModule m);
std::optional<LoraModule> parse_lora_module(const std::string& name);

struct LoraConfig {
  int64_t r = 64;
  double alpha = 128.0;
  double dropout = 0.0;
  std::vector<std::string> targets = {"q_proj", "v_proj"};  // module names (lora_module_name)
  std::string base_model;  // base_model_name_or_path written to adapter_config.json
  double scale() const { return alpha / static_cast<double>(r); }
};

// One adapted linear layer: A [r, in], B [out, r].
struct LoraLinear {
  at::Tensor a, b;
  bool defined() const { return a.defined(); }
};

// The adapters of one model. A LlamaModel applies them while set_adapters() points at them;
// `enabled` false (or no set) is the base model: the reference policy in L-PPO.
struct LoraSet {
  LoraConfig config;
  std::vector<std::array<LoraLinear, kLoraModules>> layers;  // per decoder layer
  bool enabled = true;
  // Dropout is applied only while `training` is set, with `generator` (CPU) for its masks.
  bool training = false;
  at::Generator* generator = nullptr;

  // A fresh adapter for `model`: A ~ Kaiming-uniform(a=sqrt(5)) drawn from `generator`, B = 0,
  // both float32 leaves with requires_grad on the model's device.
  static LoraSet create(const LlamaModel& model, const LoraConfig& config, at::Generator& generator);
  // Every A and B in a fixed order (layer, module, A then B): the trainable parameters.
  std::vector<at::Tensor> parameters() const;
  // (PEFT key, tensor) pairs in the same order. `module_prefix`: the LM's module path in the
  // wrapped model ("language_model." for llava, "" for a plain Llama).
  std::vector<std::pair<std::string, at::Tensor>> named_tensors(const std::string& module_prefix) const;
};

// x: [..., in] -> [..., out]: the linear layer (w, b) with adapter `lora` added when defined.
at::Tensor lora_dense(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const LoraLinear* lora,
                      const LoraSet* set);

// Writes adapter_config.json + adapter_model.safetensors into `dir` (created; files replaced
// atomically).
void save_peft_adapter(const LoraSet& set, const std::filesystem::path& dir, const std::string& module_prefix);
// adapter_config.json's settings (r, lora_alpha, lora_dropout, rsLoRA folded into alpha,
// base_model_name_or_path; targets stay the default: load_peft_adapter takes them from the
// tensors). InputError naming `file` and the key for a value this loader cannot apply.
LoraConfig parse_peft_adapter_config(const nlohmann::json& j, const std::string& file);
// Reads a PEFT LoRA folder for `model` (shapes checked against it); tensors as the model's
// dtype and device, no grad unless `trainable`. InputError naming the file and key or tensor.
LoraSet load_peft_adapter(const std::filesystem::path& dir, const LlamaModel& model, const std::string& module_prefix,
                          bool trainable = false);

}  // namespace icet::models
