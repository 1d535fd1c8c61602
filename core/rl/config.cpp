// LppoConfig <-> JSON, with errors that name the file and the key.
#include <nlohmann/json.hpp>

#include <set>

#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/rl/trainer.h"

namespace icet::rl {
namespace {

// Every key a config may hold (anything else is a typo worth reporting).
const std::set<std::string> kKeys = {
    "method", "model", "reward_model", "judge", "train_set", "eval_set", "train_items", "layer_schedule", "layers",
    "curriculum_start", "curriculum_steps", "benign_layers",
    "temperature", "top_p", "top_k", "max_new_tokens", "reward_kind", "judge_weight", "reward_scale",
    "reward_clip", "missing_eos_penalty", "refusal_bonus", "answer_bonus", "reward_reference", "whiten_rewards", "kl_estimator", "kl_control", "kl_coef",
    "kl_target", "kl_horizon", "benign_kl_coef", "batch_size", "ppo_epochs", "num_minibatches", "gamma", "lam", "cliprange",
    "cliprange_value", "vf_coef", "entropy_coef", "target_kl", "whiten_advantages", "learning_rate",
    "weight_decay", "adam_beta1", "adam_beta2", "adam_eps", "max_grad_norm", "lr_schedule", "warmup_steps",
    "lora_targets", "lora_r", "lora_alpha", "lora_dropout", "value_head_lr_scale", "sft_refusal", "max_steps",
    "checkpoint_every", "keep_last", "eval_every", "eval_layers", "eval_max_prompts", "samples_per_step", "seed",
    "threads", "device", "dtype", "gradient_checkpointing", "memory_budget_gib", "comment"};

std::vector<std::string> strings(const json_util::Reader& r, const char* key, std::vector<std::string> fallback) {
  if (!r.has(key)) return fallback;
  const auto& v = r.json()[key];
  if (!v.is_array()) throw InputError(describe(r.where(key), "a list of strings", json_util::type_name(v)));
  std::vector<std::string> out;
  for (const auto& e : v) {
    if (!e.is_string()) throw InputError(describe(r.where(key), "a list of strings", "a " + json_util::type_name(e) + " in it"));
    out.push_back(e.get<std::string>());
  }
  return out;
}

void one_of(const std::string& source, const char* key, const std::string& value, const std::set<std::string>& allowed) {
  if (allowed.contains(value)) return;
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "\"" : ", \"") + a + "\"";
  throw InputError(describe(source + ": key '" + key + "'", "one of " + list, "\"" + value + "\""));
}

void check(bool ok, const std::string& source, const char* key, const std::string& expected, const std::string& found) {
  if (!ok) throw InputError(describe(source + ": key '" + key + "'", expected, found));
}

}  // namespace

LppoConfig config_from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw InputError(describe(source, "a JSON object (an L-PPO config)", json_util::type_name(j)));
  for (const auto& [key, value] : j.items()) {
    if (!kKeys.contains(key)) {
      throw InputError(describe(source + ": key '" + key + "'", "a known config key", "an unknown key",
                                "Check the spelling; `icet train --print-default-config` lists every key."));
    }
  }
  const json_util::Reader r(j, source);
  LppoConfig c;
  c.method = r.string("method", c.method);
  c.model = r.string("model", "");
  c.reward_model = r.string("reward_model", "");
  c.judge = r.string("judge", "");
  c.train_set = r.string("train_set", "");
  c.eval_set = r.string("eval_set", "");
  c.train_items = r.string("train_items", c.train_items);
  c.layer_schedule = r.string("layer_schedule", c.layer_schedule);
  if (c.layer_schedule == "uniform") c.layer_schedule = "set";  // the name before issue 14
  c.layers = r.integers("layers", c.layers);
  c.curriculum_start = r.integer("curriculum_start", c.curriculum_start);
  c.curriculum_steps = r.integer("curriculum_steps", c.curriculum_steps);
  c.benign_layers = r.integers("benign_layers", c.benign_layers);
  c.temperature = r.number("temperature", c.temperature);
  c.top_p = r.number("top_p", c.top_p);
  c.top_k = r.integer("top_k", c.top_k);
  c.max_new_tokens = r.integer("max_new_tokens", c.max_new_tokens);
  c.reward_kind = r.string("reward_kind", c.reward_kind);
  c.judge_weight = r.number("judge_weight", c.judge_weight);
  c.reward_scale = r.number("reward_scale", c.reward_scale);
  c.reward_clip = r.number("reward_clip", c.reward_clip);
  c.missing_eos_penalty = r.number("missing_eos_penalty", c.missing_eos_penalty);
  c.refusal_bonus = r.number("refusal_bonus", c.refusal_bonus);
  c.answer_bonus = r.number("answer_bonus", c.answer_bonus);
  c.reward_reference = r.boolean("reward_reference", c.reward_reference);
  c.whiten_rewards = r.boolean("whiten_rewards", c.whiten_rewards);
  c.kl_estimator = r.string("kl_estimator", c.kl_estimator);
  c.kl_control = r.string("kl_control", c.kl_control);
  c.kl_coef = r.number("kl_coef", c.kl_coef);
  c.kl_target = r.number("kl_target", c.kl_target);
  c.kl_horizon = r.number("kl_horizon", c.kl_horizon);
  c.benign_kl_coef = r.number("benign_kl_coef", c.benign_kl_coef);
  c.batch_size = r.integer("batch_size", c.batch_size);
  c.ppo_epochs = r.integer("ppo_epochs", c.ppo_epochs);
  c.num_minibatches = r.integer("num_minibatches", c.num_minibatches);
  c.gamma = r.number("gamma", c.gamma);
  c.lam = r.number("lam", c.lam);
  c.cliprange = r.number("cliprange", c.cliprange);
  c.cliprange_value = r.number("cliprange_value", c.cliprange_value);
  c.vf_coef = r.number("vf_coef", c.vf_coef);
  c.entropy_coef = r.number("entropy_coef", c.entropy_coef);
  c.target_kl = r.number("target_kl", c.target_kl);
  c.whiten_advantages = r.boolean("whiten_advantages", c.whiten_advantages);
  c.learning_rate = r.number("learning_rate", c.learning_rate);
  c.weight_decay = r.number("weight_decay", c.weight_decay);
  c.adam_beta1 = r.number("adam_beta1", c.adam_beta1);
  c.adam_beta2 = r.number("adam_beta2", c.adam_beta2);
  c.adam_eps = r.number("adam_eps", c.adam_eps);
  c.max_grad_norm = r.number("max_grad_norm", c.max_grad_norm);
  c.lr_schedule = r.string("lr_schedule", c.lr_schedule);
  c.warmup_steps = r.integer("warmup_steps", c.warmup_steps);
  c.lora_targets = strings(r, "lora_targets", c.lora_targets);
  c.lora_r = r.integer("lora_r", c.lora_r);
  c.lora_alpha = r.number("lora_alpha", c.lora_alpha);
  c.lora_dropout = r.number("lora_dropout", c.lora_dropout);
  c.value_head_lr_scale = r.number("value_head_lr_scale", c.value_head_lr_scale);
  c.sft_refusal = r.string("sft_refusal", c.sft_refusal);
  c.max_steps = r.integer("max_steps", c.max_steps);
  c.checkpoint_every = r.integer("checkpoint_every", c.checkpoint_every);
  c.keep_last = r.integer("keep_last", c.keep_last);
  c.eval_every = r.integer("eval_every", c.eval_every);
  c.eval_layers = r.integers("eval_layers", c.eval_layers);
  c.eval_max_prompts = r.integer("eval_max_prompts", c.eval_max_prompts);
  c.samples_per_step = r.integer("samples_per_step", c.samples_per_step);
  const int64_t seed = r.integer("seed", static_cast<int64_t>(c.seed));
  check(seed >= 0, source, "seed", "a non-negative integer", std::to_string(seed));
  c.seed = static_cast<uint64_t>(seed);
  c.threads = static_cast<int>(r.integer("threads", c.threads));
  c.device = r.string("device", c.device);
  c.dtype = r.string("dtype", c.dtype);
  c.gradient_checkpointing = r.boolean("gradient_checkpointing", c.gradient_checkpointing);
  c.memory_budget_gib = r.number("memory_budget_gib", c.memory_budget_gib);
  validate(c, source);
  return c;
}

void validate(const LppoConfig& c, const std::string& source) {
  one_of(source, "method", c.method, {"lppo", "sft"});
  one_of(source, "train_items", c.train_items, {"all", "harmful"});
  one_of(source, "layer_schedule", c.layer_schedule, {"fixed", "set", "cycle", "random", "curriculum"});
  one_of(source, "reward_kind", c.reward_kind, {"reward_model", "judge", "mix"});
  one_of(source, "kl_estimator", c.kl_estimator, {"k1", "k3"});
  one_of(source, "kl_control", c.kl_control, {"fixed", "adaptive"});
  one_of(source, "lr_schedule", c.lr_schedule, {"constant", "linear", "cosine"});
  // The spelling here; whether the device exists is checked when the run starts.
  const bool cuda_n = c.device.rfind("cuda:", 0) == 0 && c.device.size() > 5 &&
                      c.device.find_first_not_of("0123456789", 5) == std::string::npos;
  check(c.device == "auto" || c.device == "cpu" || c.device == "cuda" || cuda_n, source, "device",
        "\"auto\", \"cpu\", \"cuda\" or \"cuda:N\"", "\"" + c.device + "\"");
  one_of(source, "dtype", c.dtype, {"auto", "float32", "bfloat16", "float16"});
  check(c.memory_budget_gib >= 0, source, "memory_budget_gib", "a size in GiB >= 0 (0: the device's memory)",
        std::to_string(c.memory_budget_gib));
  for (const auto& t : c.lora_targets) {
    one_of(source, "lora_targets", t, {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"});
  }
  check(!c.lora_targets.empty(), source, "lora_targets", "at least one module", "an empty list");
  for (int64_t l : c.layers) check(l >= 1, source, "layers", "exit layers >= 1", std::to_string(l));
  for (int64_t l : c.eval_layers) check(l >= 1, source, "eval_layers", "exit layers >= 1", std::to_string(l));
  for (int64_t l : c.benign_layers) check(l >= 1, source, "benign_layers", "exit layers >= 1", std::to_string(l));
  check(c.layer_schedule != "fixed" || c.layers.size() <= 1, source, "layers",
        "one layer with layer_schedule \"fixed\" (one run per layer: `icet train --layers`)",
        std::to_string(c.layers.size()) + " layers");
  check(c.layer_schedule != "random" || c.layers.empty(), source, "layers",
        "no layers with layer_schedule \"random\" (every exit layer of the model)", std::to_string(c.layers.size()) + " layers");
  check(c.layer_schedule != "curriculum" || !c.layers.empty(), source, "layers",
        "the layers in the order a curriculum opens them", "an empty list");
  check(c.curriculum_start >= 1, source, "curriculum_start", ">= 1", std::to_string(c.curriculum_start));
  check(c.curriculum_steps >= 0 && c.curriculum_steps <= c.max_steps, source, "curriculum_steps",
        "0..max_steps (" + std::to_string(c.max_steps) + "): every listed layer opens before the run ends",
        std::to_string(c.curriculum_steps));
  check(c.temperature > 0, source, "temperature", "> 0", std::to_string(c.temperature));
  check(c.top_p > 0 && c.top_p <= 1, source, "top_p", "in (0, 1]", std::to_string(c.top_p));
  check(c.top_k >= 0, source, "top_k", ">= 0", std::to_string(c.top_k));
  check(c.max_new_tokens >= 1, source, "max_new_tokens", ">= 1", std::to_string(c.max_new_tokens));
  check(c.kl_coef >= 0, source, "kl_coef", ">= 0", std::to_string(c.kl_coef));
  check(c.kl_target > 0, source, "kl_target", "> 0", std::to_string(c.kl_target));
  check(c.kl_horizon > 0, source, "kl_horizon", "> 0", std::to_string(c.kl_horizon));
  check(c.benign_kl_coef >= 0, source, "benign_kl_coef", ">= 0", std::to_string(c.benign_kl_coef));
  check(c.batch_size >= 1, source, "batch_size", ">= 1", std::to_string(c.batch_size));
  check(c.ppo_epochs >= 1, source, "ppo_epochs", ">= 1", std::to_string(c.ppo_epochs));
  check(c.num_minibatches >= 1 && c.num_minibatches <= c.batch_size, source, "num_minibatches",
        "1..batch_size (" + std::to_string(c.batch_size) + ")", std::to_string(c.num_minibatches));
  check(c.gamma >= 0 && c.gamma <= 1, source, "gamma", "in [0, 1]", std::to_string(c.gamma));
  check(c.lam >= 0 && c.lam <= 1, source, "lam", "in [0, 1]", std::to_string(c.lam));
  check(c.cliprange > 0, source, "cliprange", "> 0", std::to_string(c.cliprange));
  check(c.cliprange_value > 0, source, "cliprange_value", "> 0", std::to_string(c.cliprange_value));
  check(c.vf_coef >= 0, source, "vf_coef", ">= 0", std::to_string(c.vf_coef));
  check(c.learning_rate > 0, source, "learning_rate", "> 0", std::to_string(c.learning_rate));
  check(c.max_grad_norm >= 0, source, "max_grad_norm", ">= 0 (0: off)", std::to_string(c.max_grad_norm));
  check(c.lora_r >= 1, source, "lora_r", ">= 1", std::to_string(c.lora_r));
  check(c.lora_alpha > 0, source, "lora_alpha", "> 0", std::to_string(c.lora_alpha));
  check(c.lora_dropout >= 0 && c.lora_dropout < 1, source, "lora_dropout", "in [0, 1)", std::to_string(c.lora_dropout));
  check(c.max_steps >= 1, source, "max_steps", ">= 1", std::to_string(c.max_steps));
  check(c.checkpoint_every >= 0, source, "checkpoint_every", ">= 0", std::to_string(c.checkpoint_every));
  check(c.keep_last >= 1, source, "keep_last", ">= 1", std::to_string(c.keep_last));
  check(c.eval_every >= 0, source, "eval_every", ">= 0", std::to_string(c.eval_every));
  check(c.samples_per_step >= 0, source, "samples_per_step", ">= 0", std::to_string(c.samples_per_step));
  check(c.warmup_steps >= 0, source, "warmup_steps", ">= 0", std::to_string(c.warmup_steps));
  check(c.threads >= 0, source, "threads", ">= 0", std::to_string(c.threads));
  check(!c.model.empty(), source, "model", "a llava snapshot folder", "nothing");
  check(!c.train_set.empty(), source, "train_set", "a prompt set file", "nothing");
  if (c.method == "lppo") {
    check(c.reward_kind == "judge" || !c.reward_model.empty(), source, "reward_model",
          "a reward-model folder (reward_kind \"" + c.reward_kind + "\")", "nothing");
    check(c.reward_kind == "reward_model" || !c.judge.empty(), source, "judge",
          "a judge folder (reward_kind \"" + c.reward_kind + "\")", "nothing");
  }
  check(c.eval_every == 0 || (!c.judge.empty() && !c.eval_set.empty()), source, "eval_every",
        "0, or a judge and an eval_set for the periodic evaluation", std::to_string(c.eval_every));
}

nlohmann::json to_json(const LppoConfig& c) {
  return {{"method", c.method},
          {"model", c.model.string()},
          {"reward_model", c.reward_model.string()},
          {"judge", c.judge.string()},
          {"train_set", c.train_set.string()},
          {"eval_set", c.eval_set.string()},
          {"train_items", c.train_items},
          {"layer_schedule", c.layer_schedule},
          {"layers", c.layers},
          {"curriculum_start", c.curriculum_start},
          {"curriculum_steps", c.curriculum_steps},
          {"benign_layers", c.benign_layers},
          {"temperature", c.temperature},
          {"top_p", c.top_p},
          {"top_k", c.top_k},
          {"max_new_tokens", c.max_new_tokens},
          {"reward_kind", c.reward_kind},
          {"judge_weight", c.judge_weight},
          {"reward_scale", c.reward_scale},
          {"reward_clip", c.reward_clip},
          {"missing_eos_penalty", c.missing_eos_penalty},
          {"refusal_bonus", c.refusal_bonus},
          {"answer_bonus", c.answer_bonus},
          {"reward_reference", c.reward_reference},
          {"whiten_rewards", c.whiten_rewards},
          {"kl_estimator", c.kl_estimator},
          {"kl_control", c.kl_control},
          {"kl_coef", c.kl_coef},
          {"kl_target", c.kl_target},
          {"kl_horizon", c.kl_horizon},
          {"benign_kl_coef", c.benign_kl_coef},
          {"batch_size", c.batch_size},
          {"ppo_epochs", c.ppo_epochs},
          {"num_minibatches", c.num_minibatches},
          {"gamma", c.gamma},
          {"lam", c.lam},
          {"cliprange", c.cliprange},
          {"cliprange_value", c.cliprange_value},
          {"vf_coef", c.vf_coef},
          {"entropy_coef", c.entropy_coef},
          {"target_kl", c.target_kl},
          {"whiten_advantages", c.whiten_advantages},
          {"learning_rate", c.learning_rate},
          {"weight_decay", c.weight_decay},
          {"adam_beta1", c.adam_beta1},
          {"adam_beta2", c.adam_beta2},
          {"adam_eps", c.adam_eps},
          {"max_grad_norm", c.max_grad_norm},
          {"lr_schedule", c.lr_schedule},
          {"warmup_steps", c.warmup_steps},
          {"lora_targets", c.lora_targets},
          {"lora_r", c.lora_r},
          {"lora_alpha", c.lora_alpha},
          {"lora_dropout", c.lora_dropout},
          {"value_head_lr_scale", c.value_head_lr_scale},
          {"sft_refusal", c.sft_refusal},
          {"max_steps", c.max_steps},
          {"checkpoint_every", c.checkpoint_every},
          {"keep_last", c.keep_last},
          {"eval_every", c.eval_every},
          {"eval_layers", c.eval_layers},
          {"eval_max_prompts", c.eval_max_prompts},
          {"samples_per_step", c.samples_per_step},
          {"seed", c.seed},
          {"threads", c.threads},
          {"device", c.device},
          {"dtype", c.dtype},
          {"gradient_checkpointing", c.gradient_checkpointing},
          {"memory_budget_gib", c.memory_budget_gib}};
}

void check_paths(const LppoConfig& c, const std::string& source) {
  const auto need = [&](const std::filesystem::path& p, const char* key, const std::string& what, bool folder) {
    if (p.empty() || p == "placeholder") return;
    const bool ok = folder ? std::filesystem::is_directory(p) : std::filesystem::is_regular_file(p);
    if (!ok) {
      throw InputError(describe(source + ": key '" + key + "'", what, (std::filesystem::exists(p) ? "not one: " : "nothing at ") + p.string(),
                                "Paths in a config file are relative to the file's folder."));
    }
  };
  need(c.model, "model", "a model snapshot folder", true);
  need(c.reward_model, "reward_model", "a reward-model folder", true);
  need(c.judge, "judge", "a judge folder or \"placeholder\"", true);
  need(c.train_set, "train_set", "a prompt set file", false);
  need(c.eval_set, "eval_set", "a prompt set file", false);
}

LppoConfig load_config(const std::filesystem::path& file) {
  const nlohmann::json j = json_util::read_file(file);
  LppoConfig c = config_from_json(j, file.string());
  // Paths in a file are relative to the file's folder.
  const auto base = std::filesystem::absolute(file).parent_path();
  for (std::filesystem::path* p : {&c.model, &c.reward_model, &c.judge, &c.train_set, &c.eval_set}) {
    if (!p->empty() && p->is_relative() && *p != "placeholder") *p = (base / *p).lexically_normal();
  }
  return c;
}

}  // namespace icet::rl
