#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "core/generate/sampling.h"

namespace icet::models {
class LlamaModel;
}
namespace icet::text {
class Tokenizer;
}

namespace icet::generate {

enum class StopReason { Eos, StopString, MaxTokens, ContextFull, Cancelled };
std::string stop_reason_name(StopReason r);

// One generated token of one batch row, with the text it completes (never a partial UTF-8
// character; may be empty while a character is incomplete).
struct TokenEvent {
  size_t row = 0;
  int64_t token = 0;
  std::string text;
};
using TokenCallback = std::function<void(const TokenEvent&)>;

struct RowOutput {
  std::vector<int64_t> tokens;  // including a final EOS, as HF returns it
  std::string text;             // decoded, special tokens skipped
  StopReason stop = StopReason::MaxTokens;
  double first_token_seconds = 0.0;  // from the start of the call (prefill included)
  double seconds = 0.0;              // until this row finished
};

// A batch of rows that share one prompt layout (same length T: the sweep's rows differ only
// in their image features), decoded together. Rows that finish leave the batch, so they stop
// costing work.
struct DecodeRequest {
  const models::LlamaModel* lm = nullptr;
  at::Tensor prompt_embeds;           // [B, T, H]
  std::vector<int64_t> prompt_ids;    // [T], for the repetition-penalty history
  std::vector<SamplingParams> params; // one per row, seed set
  std::vector<int64_t> eos_ids;
  std::vector<int64_t> suppress_ids;  // never generated (e.g. the image token)
  // Ids from here on are never generated: checkpoints pad the vocabulary past the tokenizer
  // (llava-hf: 32064 rows for 32002 tokens) and those rows decode to nothing. -1: off.
  int64_t suppress_from = -1;
  int64_t context_limit = 0;          // max positions (prompt + answer)
  const text::Tokenizer* tokenizer = nullptr;  // for streaming text and stop strings
  TokenCallback on_token;
  const std::atomic<bool>* cancel = nullptr;  // honoured before every decode step
};

std::vector<RowOutput> run_decode(const DecodeRequest& request);

}  // namespace icet::generate
