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
struct KvCache;
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

// The text model run_decode drives, for models that are not a plain LlamaModel (Mllama's
// decoder also needs its cross-attention inputs). Shapes as LlamaModel's.
class TextDecoder {
 public:
  virtual ~TextDecoder() = default;
  virtual models::KvCache make_cache(int64_t batch, int64_t capacity) const = 0;
  // embeds [B, T, H], positions [B, T], key_mask [B, P+T] (1 = attend; undefined: none)
  // -> final-norm hidden [B, T, H], or [B, 1, H] of the last position with `last_only`.
  // A decoder without key padding throws for a defined mask.
  virtual at::Tensor forward(const at::Tensor& embeds, const at::Tensor& positions, models::KvCache* cache,
                             const at::Tensor& key_mask, bool last_only) const = 0;
  virtual at::Tensor logits(const at::Tensor& hidden) const = 0;  // [B, T, H] -> [B, T, V]
  virtual at::Tensor embed(const at::Tensor& ids) const = 0;      // [B, T] -> [B, T, H]
};

// A batch of rows decoded together: rows that share one prompt layout (the sweep's rows differ
// only in their image features), or, with `prompt_mask`, different prompts left-padded to one
// length (L-PPO rollouts). Rows that finish leave the batch, so they stop costing work.
struct DecodeRequest {
  const models::LlamaModel* lm = nullptr;
  const TextDecoder* decoder = nullptr;  // used instead of `lm` when set
  at::Tensor prompt_embeds;           // [B, T, H]
  // [B, T] 1 = prompt position, 0 = left padding (undefined: none). Each row then attends to
  // its own positions only and is numbered from 0 at its first real position, so a row decodes
  // as it would alone. The decoder must take a key mask (a plain Llama one does).
  at::Tensor prompt_mask;
  std::vector<int64_t> prompt_ids;    // [T], for the repetition-penalty history (shared by the rows)
  std::vector<SamplingParams> params; // one per row, seed set
  std::vector<int64_t> eos_ids;
  // What LogitsPolicy::clean bans, for rows whose params ask for it (LogitsPolicy::hf rows
  // see every logit): these ids (e.g. the image token), and every id from suppress_from on
  // (checkpoints pad the vocabulary past the tokenizer, llava-hf: 32064 rows for 32002 tokens,
  // and those rows decode to nothing; -1: none).
  std::vector<int64_t> suppress_ids;
  int64_t suppress_from = -1;
  int64_t context_limit = 0;          // max positions (prompt + answer)
  const text::Tokenizer* tokenizer = nullptr;  // for streaming text and stop strings
  TokenCallback on_token;
  const std::atomic<bool>* cancel = nullptr;  // honoured before every decode step
};

std::vector<RowOutput> run_decode(const DecodeRequest& request);

}  // namespace icet::generate
