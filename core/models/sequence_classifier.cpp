#include "core/models/sequence_classifier.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/base/log.h"
#include "core/io/safetensors.h"
#include "core/models/ops.h"

namespace icet::models {

int64_t read_num_labels(const json_util::Reader& r) {
  if (r.has("id2label") && r.json().at("id2label").is_object()) {
    return static_cast<int64_t>(r.json().at("id2label").size());
  }
  return r.integer("num_labels", 2);
}

at::Tensor sequence_pool_index(const at::Tensor& ids, std::optional<int64_t> pad_token_id, const std::string& where) {
  const int64_t B = ids.size(0), T = ids.size(1);
  if (!pad_token_id) {
    if (B > 1) {
      throw InputError(describe(where + ": config.json key 'pad_token_id'",
                                "a pad token to find the last token of each row of a batch", "none",
                                "Score one sequence at a time, or set pad_token_id in config.json."));
    }
    return at::full({B}, T - 1, ids.options().dtype(at::kLong));
  }
  const at::Tensor first_pad = ids.eq(*pad_token_id).to(at::kInt).argmax(-1);  // 0 when there is none
  return at::remainder(first_pad.to(at::kLong) - 1, T);
}

at::Tensor gather_rows(const at::Tensor& values, const at::Tensor& index) {
  const int64_t B = values.size(0), L = values.size(2);
  return values.gather(1, index.to(values.device()).view({B, 1, 1}).expand({B, 1, L})).squeeze(1);
}

LlamaForSequenceClassification::LlamaForSequenceClassification(const LlamaConfig& config, int64_t num_labels,
                                                               WeightLoader& weights, std::string source)
    : model_(config, weights, "", /*lm_head=*/false), source_(std::move(source)) {
  score_ = weights.take("score.weight", {num_labels, config.hidden_size});
}

LlamaForSequenceClassification::Output LlamaForSequenceClassification::forward(const at::Tensor& ids,
                                                                                const at::Tensor& attention_mask) const {
  const int64_t B = ids.size(0), T = ids.size(1);
  const at::Tensor positions = at::arange(T, at::TensorOptions().dtype(at::kLong)).unsqueeze(0).expand({B, T});
  Output out;
  out.hidden = model_.forward(model_.embed(ids), positions, nullptr, attention_mask);  // [B,T,H]
  // The head in float32: a bfloat16 reward keeps ~3 significant digits (the 7-bit mantissa).
  out.scores = dense(out.hidden.to(at::kFloat), score_.to(at::kFloat));                // [B,T,L]
  out.pool_index = sequence_pool_index(ids, config().pad_token_id, source_);
  out.logits = gather_rows(out.scores, out.pool_index);  // [B,L]
  return out;
}

std::unique_ptr<LlamaForSequenceClassification> load_llama_classifier(const std::filesystem::path& dir,
                                                                       const LoadOptions& options) {
  const std::filesystem::path config_json = dir / "config.json";
  const nlohmann::json j = json_util::read_file(config_json);
  const json_util::Reader r(j, config_json.string());
  const LlamaConfig config = LlamaConfig::parse(r);
  const int64_t num_labels = read_num_labels(r);
  const io::TensorStore store = io::TensorStore::open_dir(dir);
  WeightLoader weights(store, options, dir.string());
  auto model = std::make_unique<LlamaForSequenceClassification>(config, num_labels, weights, dir.string());
  weights.finish();
  log::get("models")->info("loaded Llama sequence classifier from {}: {} layers x {}, {} label(s)", dir.string(),
                           config.num_hidden_layers, config.hidden_size, num_labels);
  return model;
}

}  // namespace icet::models
