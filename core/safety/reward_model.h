#pragma once

// Reward-model scorer: one scalar per (prompt, response), in the conversation format the
// model family was trained on:
//   gpt2  (e.g. Ray2333/gpt2-large-harmless-reward_model): "\n\nHuman: {prompt}\n\nAssistant: {response}",
//         tokenized as one string;
//   llama (LlamaForSequenceClassification): user + assistant turns through the snapshot's own
//         chat template (rendered by core/text/jinja), or the Llama 3 chat format without one.
// Batches are right-padded with the config's pad token; batched equals one-by-one scoring.

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/models/gpt2.h"
#include "core/models/sequence_classifier.h"
#include "core/text/chat_template.h"
#include "core/text/tokenizer.h"

namespace icet::safety {

struct ScoredPair {
  std::string prompt;
  std::string response;
};

class RewardModel {
 public:
  enum class Family { gpt2, llama };
  struct Options {
    int64_t batch_size = 16;
    // gpt2 only: the model card's call tokenizer("\n\nHuman: {prompt}\n\nAssistant:", response),
    // i.e. the two id lists concatenated (no space token before the response), instead of the
    // joined string.
    bool gpt2_pair_call = false;
    models::LoadOptions load;
  };
  // A snapshot folder; the family comes from config.json's model_type. A folder whose tokenizer
  // cannot be loaded still scores token ids (score_ids); score() then reports the tokenizer error.
  static std::unique_ptr<RewardModel> load(const std::filesystem::path& dir, const Options& options);
  static std::unique_ptr<RewardModel> load(const std::filesystem::path& dir) { return load(dir, Options{}); }

  std::vector<double> score(const std::vector<ScoredPair>& pairs) const;
  double score(const std::string& prompt, const std::string& response) const {
    return score(std::vector<ScoredPair>{{prompt, response}}).front();
  }
  // Rows of token ids (no padding) -> one reward each (label 0).
  std::vector<double> score_ids(const std::vector<std::vector<int64_t>>& rows) const;
  // The conversation's token ids in the family's format.
  std::vector<int64_t> format_ids(const ScoredPair& pair) const;

  Family family() const { return family_; }
  const std::string& id() const { return id_; }

 private:
  RewardModel() = default;
  // ids, mask: [B, T] right-padded -> rewards [B]
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& mask) const;
  const text::Tokenizer& tokenizer() const;

  std::filesystem::path dir_;
  Family family_ = Family::gpt2;
  Options options_;
  std::unique_ptr<models::Gpt2ForSequenceClassification> gpt2_;
  std::unique_ptr<models::LlamaForSequenceClassification> llama_;
  std::unique_ptr<text::Tokenizer> tokenizer_;
  std::string tokenizer_error_;
  std::optional<text::ChatTemplate> chat_template_;  // llama: the snapshot's, when it has one
  std::optional<int64_t> pad_id_;
  int64_t context_ = 0;
  std::string id_;
};

}  // namespace icet::safety
