#pragma once

// Torch-free: the UI and the session API carry these.

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace icet::generate {

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
};

nlohmann::json to_json(const SamplingParams& p);
// Unknown keys are ignored; wrong types are an InputError naming `source` and the key.
SamplingParams sampling_from_json(const nlohmann::json& j, const std::string& source);
// Range checks (temperature > 0 when sampling, 0 < top_p <= 1, ...); InputError naming the field.
void validate(const SamplingParams& p);

}  // namespace icet::generate
