#pragma once

// Llama Guard judges (versions 1, 2 and 3) over models::LlamaModel.
//
// Prompt, first found: the snapshot's template_llama_guard_<N>.txt; the snapshot's own Jinja
// chat_template (tokenizer_config.json), rendered as transformers' apply_chat_template renders
// it (core/text/jinja); each version's built-in template (v1/v2 byte-identical to the chat
// templates of meta-llama/LlamaGuard-7b and Meta-Llama-Guard-2-8B, v3 the model-card format
// recorded in tests/fixtures/hf-reference/llama_guard/template_llama_guard_3.txt).
// Verdict: P(unsafe) at the verdict step (v1/v2: the first generated token; v3: after the
// leading "\n\n" the model writes first, which is appended to the prompt), then greedy decoding
// of the verdict and category lines with a KV cache.

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/models/llama.h"
#include "core/models/weights.h"
#include "core/safety/judge.h"
#include "core/text/chat_template.h"
#include "core/text/tokenizer.h"

namespace icet::safety {

// Placeholders in the templates: {{ role }}, {{ user_message_1 }}, {{ model_answer_1 }}.
// -> the template text of a version (1, 2, 3); InputError for another version.
const std::string& llama_guard_template(int version);
// Category codes and short names of a version's default policy: {"S1", "Violent Crimes"}, ...
std::vector<std::pair<std::string, std::string>> llama_guard_categories(int version);

// The rendered prompt, as the chat template renders [user] or [user, assistant]: messages
// trimmed; role "Agent" when there is a response, else "User" and the Agent line left out.
std::string render_llama_guard(const std::string& template_text, const Conversation& conversation);
// The same prompt as tokenizer segments: the template's special tokens (<|...|> known to the
// tokenizer) are special segments, everything else (including user text) is plain text, so a
// typed "<|eot_id|>" stays text.
std::vector<text::Segment> llama_guard_segments(const std::string& template_text, const Conversation& conversation,
                                                const text::Tokenizer& tokenizer);

// Greedy decoding of left-padded rows with a KV cache, as HF generate() does it:
// prefill positions cumsum(mask) - 1 (pads set to 1), each step appends a mask column of ones
// and feeds one token at position n_real - 1 + s.
struct GreedyOutput {
  at::Tensor input_ids;         // [B, T] left-padded prompt
  at::Tensor attention_mask;    // [B, T]
  at::Tensor prefill_positions; // [B, T]
  at::Tensor ids;               // [B, N] generated ids (pad after a row stopped)
  at::Tensor step_logits;       // [B, N, V] float32: the logits that chose each token
  at::Tensor decode_positions;  // [B, N] position of the token whose logits chose step s
  std::vector<int64_t> lengths; // generated tokens per row, up to and excluding a stop id
};
GreedyOutput greedy_generate(const models::LlamaModel& model, const std::vector<std::vector<int64_t>>& rows,
                             int64_t pad_id, int64_t max_new_tokens, const std::vector<int64_t>& stop_ids = {});

class LlamaGuardJudge final : public Judge {
 public:
  struct Options {
    int version = 0;              // 0: from the snapshot (template file, chat template, vocab)
    bool use_chat_template = true;  // false: the built-in template even when the snapshot has one
    int64_t max_new_tokens = 12;  // verdict line + category line
    int64_t batch_size = 16;
    models::LoadOptions load;
  };
  static std::unique_ptr<LlamaGuardJudge> load(const std::filesystem::path& dir, const Options& options);
  static std::unique_ptr<LlamaGuardJudge> load(const std::filesystem::path& dir) { return load(dir, Options{}); }

  std::vector<Verdict> judge(const std::vector<Conversation>& conversations) const override;
  using Judge::judge;
  const std::string& id() const override { return id_; }

  int version() const { return version_; }
  const std::string& template_text() const { return template_; }
  // Where the prompt format comes from: the template file, "<dir>/tokenizer_config.json
  // chat_template" (or chat_template.json / .jinja), or "built-in Llama Guard 3 template".
  const std::string& template_origin() const { return template_origin_; }
  // Prompt ids of a conversation up to the verdict step (v3: with the "\n\n" appended).
  std::vector<int64_t> prompt_ids(const Conversation& conversation) const;
  int64_t safe_id() const { return safe_id_; }
  int64_t unsafe_id() const { return unsafe_id_; }
  const std::vector<int64_t>& verdict_prefix_ids() const { return prefix_ids_; }
  const models::LlamaModel& model() const { return *model_; }
  const text::Tokenizer& tokenizer() const { return *tokenizer_; }

 private:
  LlamaGuardJudge() = default;
  std::vector<Verdict> judge_chunk(const std::vector<Conversation>& conversations) const;

  std::filesystem::path dir_;
  std::unique_ptr<models::LlamaModel> model_;
  std::unique_ptr<text::Tokenizer> tokenizer_;
  Options options_;
  int version_ = 3;
  std::string template_;
  std::string template_origin_;
  std::optional<text::ChatTemplate> chat_template_;  // set when the snapshot's is used
  std::string id_;
  int64_t safe_id_ = 0, unsafe_id_ = 0;
  std::vector<int64_t> prefix_ids_;  // v3: "\n\n" before the verdict
  std::vector<int64_t> stop_ids_;
  std::optional<int64_t> pad_id_;
};

// Parses "safe" / "unsafe\nS1,S10" (leading whitespace ignored). Returns false when the first
// line is neither word.
bool parse_llama_guard_output(const std::string& text, bool& unsafe, std::vector<std::string>& categories);

}  // namespace icet::safety
