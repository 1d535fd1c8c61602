#pragma once

// Torch-free: the UI and the session API carry these.

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace icet::generate {

// Which ids generation may pick.
//   clean: never the image token, nor ids past the tokenizer (checkpoints pad the vocabulary:
//          llava-hf has 32064 rows for 32002 tokens; those rows decode to nothing). The default.
//   hf:    every row of the logits, as Hugging Face transformers' greedy/sampling decoding
//          without logits processors: HF's tokens exactly, even where a padded row wins.
enum class LogitsPolicy { clean, hf };
std::string logits_policy_name(LogitsPolicy policy);  // "clean", "hf"
// "clean" / "hf"; nullopt for another name.
std::optional<LogitsPolicy> parse_logits_policy(const std::string& name);

struct SamplingParams {
  bool do_sample = false;          // false: greedy (argmax)
  double temperature = 1.0;
  int64_t top_k = 0;               // 0: off
  double top_p = 1.0;              // 1: off
  double repetition_penalty = 1.0; // 1: off (HF semantics, over prompt and answer)
  int64_t max_new_tokens = 64;
  std::optional<uint64_t> seed;    // empty: a fresh seed is drawn and recorded
  std::vector<std::string> stop_strings;
  bool stop_at_eos = true;
  LogitsPolicy logits_policy = LogitsPolicy::clean;
};

nlohmann::json to_json(const SamplingParams& p);
// Unknown keys are ignored; wrong types and an unknown logits_policy are an InputError naming
// `source` and the key. A record without logits_policy (written before it existed) reads "clean".
SamplingParams sampling_from_json(const nlohmann::json& j, const std::string& source);
// Range checks (temperature > 0 when sampling, 0 < top_p <= 1, ...); InputError naming the field.
void validate(const SamplingParams& p);

}  // namespace icet::generate
