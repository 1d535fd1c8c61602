#include "core/safety/reward_model.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>

#include "core/base/error.h"
#include "core/base/log.h"
#include "core/base/strings.h"
#include "core/io/safetensors.h"
#include "core/models/config.h"
#include "core/safety/snapshot_tokenizer.h"
#include "core/text/chat_template.h"

namespace icet::safety {
namespace {

}  // namespace

std::unique_ptr<RewardModel> RewardModel::load(const std::filesystem::path& dir, const Options& options) {
  std::unique_ptr<RewardModel> m(new RewardModel());
  m->dir_ = dir;
  m->options_ = options;
  const std::string type = models::read_model_type(dir / "config.json");
  if (type == "gpt2") {
    m->family_ = Family::gpt2;
    m->gpt2_ = models::load_gpt2_classifier(dir, options.load);
    m->pad_id_ = m->gpt2_->config().pad_token_id;
    m->context_ = m->gpt2_->config().n_positions;
  } else if (type == "llama") {
    m->family_ = Family::llama;
    m->llama_ = models::load_llama_classifier(dir, options.load);
    m->pad_id_ = m->llama_->config().pad_token_id;
    m->context_ = m->llama_->config().max_position_embeddings;
    m->chat_template_ = text::ChatTemplate::load(dir);
  } else {
    throw InputError(describe((dir / "config.json").string() + ": key 'model_type'",
                              "\"gpt2\" or \"llama\" (a sequence-classification reward model)", "\"" + type + "\""));
  }
  try {
    m->tokenizer_ = load_snapshot_tokenizer(dir);
  } catch (const InputError& e) {
    m->tokenizer_error_ = e.what();
    log::get("safety")->warn("reward model {}: no usable tokenizer ({}); only token ids can be scored", dir.string(),
                             e.what());
  }
  m->id_ = dir.filename().string() + "@" + io::TensorStore::open_dir(dir).content_hash();
  return m;
}

const text::Tokenizer& RewardModel::tokenizer() const {
  if (!tokenizer_) {
    throw InputError(tokenizer_error_.empty() ? dir_.string() + ": no tokenizer" : tokenizer_error_);
  }
  return *tokenizer_;
}

std::vector<int64_t> RewardModel::format_ids(const ScoredPair& p) const {
  const text::Tokenizer& tok = tokenizer();
  if (family_ == Family::gpt2) {
    if (options_.gpt2_pair_call) {
      std::vector<int64_t> ids = tok.encode_user("\n\nHuman: " + p.prompt + "\n\nAssistant:");
      const std::vector<int64_t> answer = tok.encode_user(p.response);
      ids.insert(ids.end(), answer.begin(), answer.end());
      return ids;
    }
    // Anthropic HH format, tokenized as one string; user text is never parsed for special tokens.
    return tok.encode_user("\n\nHuman: " + p.prompt + "\n\nAssistant: " + p.response);
  }
  if (chat_template_) {
    return tok.encode_segments(
        chat_template_->render({{"user", p.prompt}, {"assistant", p.response}}, /*add_generation_prompt=*/false, tok));
  }
  // No template in the snapshot: the Llama 3 chat format (no system header), contents trimmed
  // as that template does.
  return tok.encode_segments({{"<|begin_of_text|>", true},
                              {"<|start_header_id|>", true},
                              {"user", false},
                              {"<|end_header_id|>", true},
                              {"\n\n" + trim(p.prompt), false},
                              {"<|eot_id|>", true},
                              {"<|start_header_id|>", true},
                              {"assistant", false},
                              {"<|end_header_id|>", true},
                              {"\n\n" + trim(p.response), false},
                              {"<|eot_id|>", true}});
}

at::Tensor RewardModel::forward(const at::Tensor& ids, const at::Tensor& mask) const {
  if (gpt2_) return gpt2_->forward(ids, mask).logits.select(1, 0);
  return llama_->forward(ids, mask).logits.select(1, 0);
}

std::vector<double> RewardModel::score_ids(const std::vector<std::vector<int64_t>>& rows) const {
  c10::InferenceMode guard;
  std::vector<double> out;
  const size_t chunk = static_cast<size_t>(std::max<int64_t>(1, options_.batch_size));
  for (size_t i = 0; i < rows.size(); i += chunk) {
    const size_t n = std::min(chunk, rows.size() - i);
    int64_t T = 0;
    for (size_t r = i; r < i + n; ++r) {
      const int64_t len = static_cast<int64_t>(rows[r].size());
      if (len == 0 || len > context_) {
        throw InputError(describe(dir_.string() + ": conversation " + std::to_string(r),
                                  "1 to " + std::to_string(context_) + " tokens (the model's context)",
                                  std::to_string(len) + " tokens", "Shorten the prompt or the response."));
      }
      T = std::max(T, len);
    }
    if (n > 1 && !pad_id_) {
      throw InputError(describe((dir_ / "config.json").string() + ": key 'pad_token_id'",
                                "a pad token to batch conversations", "none",
                                "Score one conversation at a time (batch_size 1), or set pad_token_id."));
    }
    at::Tensor ids = at::full({static_cast<int64_t>(n), T}, pad_id_.value_or(0), at::kLong);
    at::Tensor mask = at::zeros({static_cast<int64_t>(n), T}, at::kLong);
    for (size_t r = 0; r < n; ++r) {  // right padding: HF pools before the first pad token
      const auto& row = rows[i + r];
      const int64_t len = static_cast<int64_t>(row.size());
      ids[static_cast<int64_t>(r)].narrow(0, 0, len).copy_(at::tensor(row, at::kLong));
      mask[static_cast<int64_t>(r)].narrow(0, 0, len).fill_(1);
    }
    const at::Tensor rewards = forward(ids, mask).to(at::kCPU).to(at::kDouble).contiguous();
    out.insert(out.end(), rewards.data_ptr<double>(), rewards.data_ptr<double>() + rewards.numel());
  }
  return out;
}

std::vector<double> RewardModel::score(const std::vector<ScoredPair>& pairs) const {
  std::vector<std::vector<int64_t>> rows;
  rows.reserve(pairs.size());
  for (const auto& p : pairs) rows.push_back(format_ids(p));
  return score_ids(rows);
}

}  // namespace icet::safety
