#include "core/models/lora.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cmath>
#include <map>
#include <regex>
#include <set>

#include "core/base/atomic_file.h"
#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/io/safetensors.h"
#include "core/models/llama.h"
#include "core/models/ops.h"

namespace icet::models {
namespace {

const std::array<std::string, kLoraModules> kNames = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                      "gate_proj", "up_proj", "down_proj"};

// PEFT's prefix for a wrapped model's modules.
const std::string kPeftPrefix = "base_model.model.";

// "language_model." -> the transformers >= 4.52 spelling of the same module path.
std::string new_style_prefix(const std::string& module_prefix) {
  return module_prefix == "language_model." ? "model.language_model." : std::string();
}

}  // namespace

const std::string& lora_module_name(LoraModule m) { return kNames[static_cast<size_t>(m)]; }

std::string lora_module_path(LoraModule m) {
  const size_t i = static_cast<size_t>(m);
  return (i < 4 ? "self_attn." : "mlp.") + kNames[i];
}

std::optional<LoraModule> parse_lora_module(const std::string& name) {
  for (size_t i = 0; i < kLoraModules; ++i) {
    if (kNames[i] == name) return static_cast<LoraModule>(i);
  }
  return std::nullopt;
}

LoraSet LoraSet::create(const LlamaModel& model, const LoraConfig& config, at::Generator& generator) {
  LoraSet set;
  set.config = config;
  std::array<bool, kLoraModules> on{};
  for (const auto& t : config.targets) {
    const auto m = parse_lora_module(t);
    if (!m) {
      throw InputError(describe("LoRA target '" + t + "'", "one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj",
                                "'" + t + "'"));
    }
    on[static_cast<size_t>(*m)] = true;
  }
  if (config.r < 1) throw InputError(describe("LoRA r", "a positive rank", std::to_string(config.r)));
  at::NoGradGuard no_grad;
  const int64_t L = model.config().num_hidden_layers;
  for (int64_t i = 0; i < L; ++i) {
    std::array<LoraLinear, kLoraModules> row;
    for (size_t m = 0; m < kLoraModules; ++m) {
      if (!on[m]) continue;
      const at::Tensor& w = model.linear_weight(static_cast<size_t>(i), static_cast<LoraModule>(m));
      const int64_t out = w.size(0), in = w.size(1);
      const auto opts = at::TensorOptions().dtype(at::kFloat);
      // kaiming_uniform_(a=sqrt(5)) on [r, in]: bound = sqrt(6 / ((1 + a^2) fan_in)) = 1/sqrt(in).
      const double bound = 1.0 / std::sqrt(static_cast<double>(in));
      at::Tensor a = at::empty({config.r, in}, opts).uniform_(-bound, bound, generator).to(w.device());
      at::Tensor b = at::zeros({out, config.r}, opts.device(w.device()));
      a.set_requires_grad(true);
      b.set_requires_grad(true);
      row[m] = {a, b};
    }
    set.layers.push_back(std::move(row));
  }
  return set;
}

std::vector<at::Tensor> LoraSet::parameters() const {
  std::vector<at::Tensor> out;
  for (const auto& row : layers) {
    for (const auto& l : row) {
      if (!l.defined()) continue;
      out.push_back(l.a);
      out.push_back(l.b);
    }
  }
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> LoraSet::named_tensors(const std::string& module_prefix) const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < layers.size(); ++i) {
    for (size_t m = 0; m < kLoraModules; ++m) {
      const LoraLinear& l = layers[i][m];
      if (!l.defined()) continue;
      const std::string base = kPeftPrefix + module_prefix + "model.layers." + std::to_string(i) + "." +
                               lora_module_path(static_cast<LoraModule>(m));
      out.emplace_back(base + ".lora_A.weight", l.a);
      out.emplace_back(base + ".lora_B.weight", l.b);
    }
  }
  return out;
}

at::Tensor lora_dense(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const LoraLinear* lora,
                      const LoraSet* set) {
  at::Tensor y = dense(x, w, b);  // [..., out]
  if (lora == nullptr || set == nullptr || !lora->defined()) return y;
  at::Tensor h = x.to(lora->a.scalar_type());
  if (set->training && set->config.dropout > 0.0) {
    const double keep = 1.0 - set->config.dropout;
    // Drawn on the CPU (the generator is a CPU one) and moved: the same masks on any device.
    at::Tensor mask = at::empty(h.sizes(), h.options().device(at::kCPU))
                          .bernoulli_(keep, set->generator != nullptr ? c10::optional<at::Generator>(*set->generator)
                                                                      : c10::nullopt)
                          .to(h.device());
    h = h * mask / keep;
  }
  // [..., in] -> [..., r] -> [..., out]
  const at::Tensor delta = dense(dense(h, lora->a), lora->b) * set->config.scale();
  return y + delta.to(y.scalar_type());
}

void save_peft_adapter(const LoraSet& set, const std::filesystem::path& dir, const std::string& module_prefix) {
  std::filesystem::create_directories(dir);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto& [name, t] : set.named_tensors(module_prefix)) {
    tensors.emplace_back(name, t.detach().to(at::kCPU).to(at::kFloat).contiguous());
  }
  io::save_safetensors(dir / "adapter_model.safetensors", tensors, {{"format", "pt"}});
  std::string alternation;
  for (const auto& t : set.config.targets) alternation += (alternation.empty() ? "" : "|") + t;
  const std::string scope = module_prefix.empty() ? std::string(".*") : ".*" + module_prefix.substr(0, module_prefix.size() - 1) + ".*";
  nlohmann::json cfg = {
      {"peft_type", "LORA"},
      {"task_type", nullptr},
      {"base_model_name_or_path", set.config.base_model},
      {"r", set.config.r},
      {"lora_alpha", set.config.alpha},
      {"lora_dropout", set.config.dropout},
      {"target_modules", scope + "\\.(" + alternation + ")"},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"use_rslora", false},
      {"use_dora", false},
      {"modules_to_save", nullptr},
      {"layers_to_transform", nullptr},
      {"revision", nullptr},
      {"icet_targets", set.config.targets},
  };
  write_file_atomic(dir / "adapter_config.json", cfg.dump(2) + "\n");
}

LoraConfig parse_peft_adapter_config(const nlohmann::json& j, const std::string& file) {
  const json_util::Reader r(j, file);
  const std::string type = r.string("peft_type", "LORA");
  if (type != "LORA") throw InputError(describe(r.where("peft_type"), "\"LORA\"", "\"" + type + "\""));
  if (r.has("use_dora") && r.boolean("use_dora", false)) {
    throw InputError(describe(r.where("use_dora"), "false (DoRA is not supported)", "true"));
  }
  if (r.string("bias", "none") != "none") {
    throw InputError(describe(r.where("bias"), "\"none\"", "\"" + r.string("bias") + "\""));
  }
  LoraConfig config;
  config.r = r.integer("r");
  config.alpha = r.number("lora_alpha");
  config.dropout = r.number("lora_dropout", 0.0);
  if (config.r < 1) {
    throw InputError(describe(r.where("r"), "a LoRA rank >= 1", std::to_string(config.r)));
  }
  if (!(config.dropout >= 0.0 && config.dropout < 1.0)) {
    throw InputError(describe(r.where("lora_dropout"), "a probability in [0, 1)", std::to_string(config.dropout)));
  }
  config.base_model = j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string()
                          ? j["base_model_name_or_path"].get<std::string>()
                          : std::string();
  if (r.has("use_rslora") && r.boolean("use_rslora", false)) {
    // rsLoRA scales by alpha / sqrt(r): express it as an equivalent alpha.
    config.alpha = config.alpha * std::sqrt(static_cast<double>(config.r));
  }
  return config;
}

LoraSet load_peft_adapter(const std::filesystem::path& dir, const LlamaModel& model, const std::string& module_prefix,
                          bool trainable) {
  const auto cfg_file = dir / "adapter_config.json";
  const auto st_file = dir / "adapter_model.safetensors";
  if (!std::filesystem::is_regular_file(cfg_file) || !std::filesystem::is_regular_file(st_file)) {
    throw InputError(describe(dir.string(), "a PEFT LoRA folder (adapter_config.json + adapter_model.safetensors)",
                              "missing files", "Choose the adapter/ folder of a training run or a checkpoint."));
  }
  LoraSet set;
  set.config = parse_peft_adapter_config(json_util::read_file(cfg_file), cfg_file.string());
  const auto file = io::SafetensorsFile::open(st_file);
  const auto dtype = model.linear_weight(0, LoraModule::q_proj).scalar_type();
  const auto device = model.linear_weight(0, LoraModule::q_proj).device();
  std::set<std::string> used;
  std::set<std::string> targets;
  const std::string alt = new_style_prefix(module_prefix);
  const int64_t L = model.config().num_hidden_layers;
  for (int64_t i = 0; i < L; ++i) {
    std::array<LoraLinear, kLoraModules> row;
    for (size_t m = 0; m < kLoraModules; ++m) {
      const std::string path = "layers." + std::to_string(i) + "." + lora_module_path(static_cast<LoraModule>(m));
      std::string base = kPeftPrefix + module_prefix + "model." + path;
      if (!file->contains(base + ".lora_A.weight") && !alt.empty()) base = kPeftPrefix + alt + path;
      const std::string ka = base + ".lora_A.weight", kb = base + ".lora_B.weight";
      if (!file->contains(ka) && !file->contains(kb)) continue;
      const at::Tensor& w = model.linear_weight(static_cast<size_t>(i), static_cast<LoraModule>(m));
      const std::vector<std::pair<std::string, std::vector<int64_t>>> want = {{ka, {set.config.r, w.size(1)}},
                                                                            {kb, {w.size(0), set.config.r}}};
      std::array<at::Tensor, 2> got;
      for (size_t k = 0; k < 2; ++k) {
        const auto& [name, shape] = want[k];
        if (!file->contains(name)) {
          throw InputError(describe(st_file.string() + ": tensor '" + name + "'", "present (its pair is)", "missing"));
        }
        const auto& info = file->info(name);
        if (info.shape != shape) {
          auto fmt = [](const std::vector<int64_t>& s) {
            std::string o = "[";
            for (size_t q = 0; q < s.size(); ++q) o += (q ? ", " : "") + std::to_string(s[q]);
            return o + "]";
          };
          throw InputError(describe(st_file.string() + ": tensor '" + name + "'", "shape " + fmt(shape),
                                    fmt(info.shape), "Was this adapter trained for another model?"));
        }
        got[k] = file->tensor(name, trainable ? at::kFloat : dtype, device);
        if (trainable) {
          got[k] = got[k].clone();
          got[k].set_requires_grad(true);
        }
        used.insert(name);
      }
      row[m] = {got[0], got[1]};
      targets.insert(lora_module_name(static_cast<LoraModule>(m)));
    }
    set.layers.push_back(std::move(row));
  }
  for (const auto& name : file->names()) {
    if (!used.contains(name)) {
      throw InputError(describe(st_file.string() + ": tensor '" + name + "'",
                                "a LoRA A/B weight of this model's language model (" + kPeftPrefix + module_prefix +
                                    "model.layers.<i>.<self_attn|mlp>.<proj>.lora_<A|B>.weight)",
                                "an unexpected tensor", "Adapters for the vision tower or other modules are not supported."));
    }
  }
  if (used.empty()) {
    throw InputError(describe(st_file.string(), "at least one LoRA weight", "none"));
  }
  set.config.targets.assign(targets.begin(), targets.end());
  return set;
}

}  // namespace icet::models
