#include "core/rl/policy.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <limits>

#include "core/base/error.h"
#include "core/base/strings.h"
#include "core/io/safetensors.h"
#include "core/models/config.h"
#include "core/vision/image.h"

namespace icet::rl {

RolloutBatch RolloutBatch::rows(const at::Tensor& index) const {
  RolloutBatch b;
  b.embeds = embeds.index_select(0, index);
  b.attention = attention.index_select(0, index);
  b.positions = positions.index_select(0, index);
  b.tokens = tokens.index_select(0, index);
  b.mask = mask.index_select(0, index);
  b.prompt_len = prompt_len;
  return b;
}

Policy::Policy(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir)) {
    throw InputError(dir.string() + ": not a folder. Choose the folder of a llava snapshot (e.g. models/demo/vlm).");
  }
  const std::string type = models::read_model_type(dir / "config.json");
  if (type != "llava") {
    throw InputError(describe((dir / "config.json").string() + ": key 'model_type'", "\"llava\"", "\"" + type + "\""));
  }
  tokenizer_ = text::load_tokenizer(dir);
  processor_ = vision::load_clip_processor_config(dir / "preprocessor_config.json");
  // Outside inference mode: the weights take part in autograd graphs (as constants).
  model_ = models::load_llava(dir, models::LoadOptions{});
  const auto& cfg = model_->config();
  const auto gen = models::load_generation_config(dir / "generation_config.json");
  eos_ids_ = !gen.eos_token_ids.empty() ? gen.eos_token_ids : cfg.text.eos_token_ids;

  const int64_t V = cfg.text.vocab_size;
  banned_ = at::zeros({V}, at::TensorOptions().dtype(at::kBool));
  const int64_t n = std::min(V, tokenizer_->size());
  for (int64_t id = 0; id < n; ++id) {
    const bool eos = std::find(eos_ids_.begin(), eos_ids_.end(), id) != eos_ids_.end();
    if (!eos && tokenizer_->is_special(id)) banned_[id] = true;
  }
  if (n < V) banned_.narrow(0, n, V - n).fill_(true);
  if (cfg.image_token_index >= 0 && cfg.image_token_index < V) banned_[cfg.image_token_index] = true;
}

std::vector<int64_t> Policy::prompt_ids(const std::string& prompt) const {
  if (prompt.find_first_not_of(" \t\r\n") == std::string::npos) {
    throw InputError("a prompt of the set is empty");
  }
  const std::string image_token = tokenizer_->piece(model_->config().image_token_index);
  std::vector<text::Segment> segments{{"USER: ", false}};
  for (int64_t i = 0; i < model_->config().image_tokens(); ++i) segments.push_back({image_token, true});
  segments.push_back({"\n" + prompt + " ASSISTANT:", false});
  std::vector<int64_t> ids;
  if (tokenizer_->add_bos() && tokenizer_->bos_id()) ids.push_back(*tokenizer_->bos_id());
  const auto body = tokenizer_->encode_segments(segments);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

at::Tensor Policy::features(const std::filesystem::path& image, int64_t layer) {
  const auto key = std::make_pair(image.string(), layer);
  if (auto it = feature_cache_.find(key); it != feature_cache_.end()) return it->second;
  at::NoGradGuard no_grad;
  const vision::Image img = vision::load_image(image);
  const at::Tensor pixels = vision::clip_preprocess(img, processor_).unsqueeze(0);  // [1,3,S,S]
  const auto states = model_->encode(pixels, vision_layers());
  // Every layer of this image at once: the encoder does not run again for it.
  for (int64_t l = 1; l <= vision_layers(); ++l) {
    feature_cache_[{image.string(), l}] = model_->project(model_->select(states[static_cast<size_t>(l)])).squeeze(0);
  }
  return feature_cache_.at(key);
}

at::Tensor Policy::prompt_embeds(const std::vector<int64_t>& ids, const at::Tensor& feats) const {
  at::NoGradGuard no_grad;
  const at::Tensor t = at::tensor(ids, at::TensorOptions().dtype(at::kLong));
  return model_->merge(t, feats.unsqueeze(0)).squeeze(0);  // [T,H]
}

namespace {

// Left-pads [T_i, H] rows -> embeds [B, P, H], mask [B, P] (float), positions [B, P].
void left_pad(const std::vector<at::Tensor>& rows, at::Tensor& embeds, at::Tensor& mask, at::Tensor& positions) {
  const int64_t B = static_cast<int64_t>(rows.size());
  int64_t P = 0;
  for (const auto& r : rows) P = std::max(P, r.size(0));
  const int64_t H = rows.front().size(1);
  embeds = at::zeros({B, P, H}, rows.front().options());
  mask = at::zeros({B, P}, at::TensorOptions().dtype(at::kFloat));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t T = rows[static_cast<size_t>(b)].size(0);
    embeds[b].narrow(0, P - T, T).copy_(rows[static_cast<size_t>(b)]);
    mask[b].narrow(0, P - T, T).fill_(1.0);
  }
  positions = (mask.cumsum(1) - 1).clamp_min(0).to(at::kLong);
}

}  // namespace

Generated Policy::generate(const std::vector<at::Tensor>& prompts, const SampleSettings& s, at::Generator& generator,
                           const std::atomic<bool>* cancel) const {
  at::NoGradGuard no_grad;
  const auto& lm = model_->language_model();
  const int64_t B = static_cast<int64_t>(prompts.size());
  at::Tensor embeds, mask, positions;
  left_pad(prompts, embeds, mask, positions);
  const int64_t P = embeds.size(1);
  const int64_t max_new = std::max<int64_t>(1, std::min(s.max_new_tokens, model_->config().text.max_position_embeddings - P));
  models::KvCache cache = lm.make_cache(B, P + max_new);
  // Prefill: [B,P,H] -> logits of the last position [B,V]
  at::Tensor logits = lm.logits(lm.forward(embeds, positions, &cache, mask).narrow(1, P - 1, 1)).select(1, 0);
  at::Tensor next_pos = positions.select(1, P - 1) + 1;  // [B]
  at::Tensor key_mask = mask;

  Generated out;
  out.tokens.resize(static_cast<size_t>(B));
  out.ended.assign(static_cast<size_t>(B), false);
  std::vector<bool> done(static_cast<size_t>(B), false);
  const int64_t fill = eos_ids_.empty() ? 0 : eos_ids_.front();
  for (int64_t step = 0; step < max_new; ++step) {
    if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) throw Cancelled();
    at::Tensor scores = logits.to(at::kFloat).masked_fill(banned_, -std::numeric_limits<float>::infinity());  // [B,V]
    at::Tensor chosen;
    if (s.greedy) {
      chosen = scores.argmax(1);
    } else {
      scores = scores / s.temperature;
      if (s.top_k > 0 && s.top_k < scores.size(1)) {
        const at::Tensor kth = std::get<0>(scores.topk(s.top_k, 1)).narrow(1, s.top_k - 1, 1);  // [B,1]
        scores = scores.masked_fill(scores < kth, -std::numeric_limits<float>::infinity());
      }
      if (s.top_p < 1.0) {
        // HF TopP: drop the low tail whose cumulative mass <= 1 - top_p (ascending sort).
        auto [sorted, idx] = scores.sort(1, false);
        const at::Tensor cum = at::softmax(sorted, 1).cumsum(1);
        at::Tensor remove = cum <= (1.0 - s.top_p);
        remove.narrow(1, remove.size(1) - 1, 1).fill_(false);
        scores = scores.scatter(1, idx, sorted.masked_fill(remove, -std::numeric_limits<float>::infinity()));
      }
      chosen = at::multinomial(at::softmax(scores, 1), 1, false, generator).squeeze(1);
    }
    chosen = chosen.contiguous();
    const int64_t* c = chosen.data_ptr<int64_t>();
    std::vector<int64_t> feed(static_cast<size_t>(B));
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      const size_t r = static_cast<size_t>(b);
      if (done[r]) {
        feed[r] = fill;
        continue;
      }
      out.tokens[r].push_back(c[b]);
      ++out.new_tokens;
      if (std::find(eos_ids_.begin(), eos_ids_.end(), c[b]) != eos_ids_.end()) {
        done[r] = true;
        out.ended[r] = true;
      }
      feed[r] = c[b];
      all_done = all_done && done[r];
    }
    if (all_done || step + 1 == max_new) break;
    // One decode step for every row (finished rows feed a dummy token; their output is not kept).
    const at::Tensor ids = at::tensor(feed, at::TensorOptions().dtype(at::kLong)).view({B, 1});
    key_mask = at::cat({key_mask, at::ones({B, 1}, key_mask.options())}, 1);
    logits = lm.logits(lm.forward(lm.embed(ids), next_pos.view({B, 1}), &cache, key_mask)).select(1, 0);
    next_pos = next_pos + 1;
  }
  return out;
}

RolloutBatch Policy::make_batch(const std::vector<at::Tensor>& prompts,
                                const std::vector<std::vector<int64_t>>& responses) const {
  at::NoGradGuard no_grad;
  const auto& lm = model_->language_model();
  RolloutBatch batch;
  at::Tensor pe, pm, pp;
  left_pad(prompts, pe, pm, pp);
  const int64_t B = pe.size(0), P = pe.size(1), H = pe.size(2);
  int64_t R = 1;
  for (const auto& r : responses) R = std::max<int64_t>(R, static_cast<int64_t>(r.size()));
  batch.tokens = at::zeros({B, R}, at::TensorOptions().dtype(at::kLong));
  batch.mask = at::zeros({B, R}, at::TensorOptions().dtype(at::kFloat));
  for (int64_t b = 0; b < B; ++b) {
    const auto& r = responses[static_cast<size_t>(b)];
    if (r.empty()) continue;
    const int64_t n = static_cast<int64_t>(r.size());
    batch.tokens[b].narrow(0, 0, n).copy_(at::tensor(r, at::TensorOptions().dtype(at::kLong)));
    batch.mask[b].narrow(0, 0, n).fill_(1.0);
  }
  // The response tokens' own embeddings (their last one only feeds nothing we read).
  const at::Tensor re = lm.embed(batch.tokens).to(pe.scalar_type()).view({B, R, H});
  batch.embeds = at::cat({pe, re}, 1);                   // [B,S,H]
  batch.attention = at::cat({pm, batch.mask}, 1);        // [B,S]
  batch.positions = (batch.attention.cumsum(1) - 1).clamp_min(0).to(at::kLong);
  batch.prompt_len = P;
  return batch;
}

at::Tensor Policy::response_hidden(const RolloutBatch& batch) const {
  const auto& lm = model_->language_model();
  const int64_t R = batch.tokens.size(1);
  // [B,S,H] -> hidden [B,S,H]; position P-1+t predicts response token t.
  const at::Tensor hidden = lm.forward(batch.embeds, batch.positions, nullptr, batch.attention);
  return hidden.narrow(1, batch.prompt_len - 1, R);  // [B,R,H]
}

std::string Policy::decode(const std::vector<int64_t>& ids) const { return tokenizer_->decode(ids, true); }

bool matches_expected(const std::string& answer, const std::string& expected) {
  return !expected.empty() && trim(answer) == trim(expected);
}

}  // namespace icet::rl
