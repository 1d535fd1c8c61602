#include "core/generate/sampling_params.h"

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/json_util.h"

namespace icet::generate {

std::string logits_policy_name(LogitsPolicy policy) {
  return policy == LogitsPolicy::hf ? "hf" : "clean";
}

std::optional<LogitsPolicy> parse_logits_policy(const std::string& name) {
  if (name == "clean") return LogitsPolicy::clean;
  if (name == "hf") return LogitsPolicy::hf;
  return std::nullopt;
}

nlohmann::json to_json(const SamplingParams& p) {
  nlohmann::json j = {{"do_sample", p.do_sample},
                      {"temperature", p.temperature},
                      {"top_k", p.top_k},
                      {"top_p", p.top_p},
                      {"repetition_penalty", p.repetition_penalty},
                      {"max_new_tokens", p.max_new_tokens},
                      {"stop_strings", p.stop_strings},
                      {"stop_at_eos", p.stop_at_eos},
                      {"logits_policy", logits_policy_name(p.logits_policy)}};
  j["seed"] = p.seed ? nlohmann::json(*p.seed) : nlohmann::json(nullptr);
  return j;
}

SamplingParams sampling_from_json(const nlohmann::json& j, const std::string& source) {
  const json_util::Reader r(j, source);
  SamplingParams p;
  p.do_sample = r.boolean("do_sample", p.do_sample);
  p.temperature = r.number("temperature", p.temperature);
  p.top_k = r.integer("top_k", p.top_k);
  p.top_p = r.number("top_p", p.top_p);
  p.repetition_penalty = r.number("repetition_penalty", p.repetition_penalty);
  p.max_new_tokens = r.integer("max_new_tokens", p.max_new_tokens);
  if (r.has("seed")) p.seed = static_cast<uint64_t>(r.integer("seed"));
  if (r.has("stop_strings")) {
    for (const auto& s : j.at("stop_strings")) {
      if (!s.is_string()) throw InputError(describe(r.where("stop_strings"), "a list of strings", json_util::type_name(s)));
      p.stop_strings.push_back(s.get<std::string>());
    }
  }
  p.stop_at_eos = r.boolean("stop_at_eos", p.stop_at_eos);
  const std::string policy = r.string("logits_policy", logits_policy_name(p.logits_policy));
  if (auto parsed = parse_logits_policy(policy)) {
    p.logits_policy = *parsed;
  } else {
    throw InputError(describe(r.where("logits_policy"), "\"clean\" or \"hf\"", "\"" + policy + "\""));
  }
  validate(p);
  return p;
}

void validate(const SamplingParams& p) {
  if (p.do_sample && !(p.temperature > 0.0)) {
    throw InputError(describe("sampling temperature", "a value > 0", std::to_string(p.temperature),
                              "Use greedy decoding for deterministic answers."));
  }
  if (!(p.top_p > 0.0 && p.top_p <= 1.0)) {
    throw InputError(describe("top_p", "a value in (0, 1]", std::to_string(p.top_p)));
  }
  if (p.top_k < 0) {
    throw InputError(describe("top_k", "0 (off) or a positive count", std::to_string(p.top_k)));
  }
  if (!(p.repetition_penalty > 0.0)) {
    throw InputError(describe("repetition_penalty", "a value > 0", std::to_string(p.repetition_penalty)));
  }
  if (p.max_new_tokens < 1) {
    throw InputError(describe("max_new_tokens", "at least 1", std::to_string(p.max_new_tokens)));
  }
}

}  // namespace icet::generate
