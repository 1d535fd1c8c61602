#pragma once

// Sequence classifiers in HF layout (reward models): the pooling rule shared by every
// *ForSequenceClassification head of transformers 4.47, and LlamaForSequenceClassification.
//
// Shape legend: B batch, T positions, H hidden, L labels.

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "core/models/llama.h"
#include "core/models/weights.h"

namespace icet::json_util {
class Reader;
}

namespace icet::models {

// Number of labels of a sequence classifier's config.json: len(id2label), else num_labels, else
// 2 (HF's default).
int64_t read_num_labels(const json_util::Reader& r);

// HF pooling rule (v4.47): argmax(ids == pad_token_id) - 1, modulo T. The attention mask is not
// used: a row without pad tokens pools at its last token, right padding at the last real token,
// and a text containing the pad token (GPT-2: pad = eos) just before its first occurrence.
// Without a pad token only one row is allowed (HF raises for B > 1); `where` names the model.
// ids: [B, T] int64 -> [B] int64
at::Tensor sequence_pool_index(const at::Tensor& ids, std::optional<int64_t> pad_token_id, const std::string& where);

// values: [B, T, L], index: [B] -> values[b, index[b]]: [B, L]
at::Tensor gather_rows(const at::Tensor& values, const at::Tensor& index);

// LlamaForSequenceClassification: LlamaModel without lm_head + `score` (Linear H -> L, no bias),
// pooled by sequence_pool_index. Checkpoint keys "model.*" and "score.weight".
class LlamaForSequenceClassification {
 public:
  LlamaForSequenceClassification(const LlamaConfig& config, int64_t num_labels, WeightLoader& weights,
                                 std::string source = "Llama");

  struct Output {
    at::Tensor logits;      // [B, L] at the pooled positions
    at::Tensor pool_index;  // [B] int64
    at::Tensor scores;      // [B, T, L] score head at every position, float32 (whatever the weights' dtype)
    at::Tensor hidden;      // [B, T, H] after the final RMSNorm
  };
  // ids: [B, T] int64, right-padded with pad_token_id; attention_mask: optional [B, T].
  // Positions are 0..T-1 as in HF's forward without position_ids.
  Output forward(const at::Tensor& ids, const at::Tensor& attention_mask = {}) const;

  const LlamaModel& model() const { return model_; }
  const LlamaConfig& config() const { return model_.config(); }
  int64_t num_labels() const { return score_.size(0); }

 private:
  LlamaModel model_;
  at::Tensor score_;  // [L, H]
  std::string source_;
};

// A LlamaForSequenceClassification snapshot folder (config.json + *.safetensors).
std::unique_ptr<LlamaForSequenceClassification> load_llama_classifier(const std::filesystem::path& dir,
                                                                       const LoadOptions& options = {});

}  // namespace icet::models
