#include "core/rl/policy.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>

#include "core/base/error.h"
#include "core/base/strings.h"
#include "core/engine/prompt.h"
#include "core/generate/decode.h"
#include "core/io/safetensors.h"
#include "core/models/config.h"
#include "core/runtime/device.h"
#include "core/vision/image.h"

namespace icet::rl {

RolloutBatch RolloutBatch::rows(const at::Tensor& index_any) const {
  const at::Tensor index = index_any.to(embeds.device());
  RolloutBatch b;
  b.embeds = embeds.index_select(0, index);
  b.attention = attention.index_select(0, index);
  b.positions = positions.index_select(0, index);
  b.tokens = tokens.index_select(0, index);
  b.mask = mask.index_select(0, index);
  b.prompt_len = prompt_len;
  return b;
}

Policy::Policy(const std::filesystem::path& dir, const PolicyOptions& options) {
  if (!std::filesystem::is_directory(dir)) {
    throw InputError(dir.string() + ": not a folder. Choose the folder of a llava snapshot (e.g. models/demo/vlm).");
  }
  const std::string type = models::read_model_type(dir / "config.json");
  if (type != "llava") {
    throw InputError(describe((dir / "config.json").string() + ": key 'model_type'", "\"llava\"", "\"" + type + "\""));
  }
  device_ = runtime::parse_device(options.device);
  dtype_ = runtime::parse_dtype(options.dtype, device_);
  tokenizer_ = text::load_tokenizer(dir);
  processor_ = vision::load_clip_processor_config(dir / "preprocessor_config.json");
  prompt_format_ = engine::resolve_prompt_format(dir, type, "", "auto");
  // Outside inference mode: the weights take part in autograd graphs (as constants).
  model_ = models::load_llava(dir, models::LoadOptions{device_, dtype_});
  const auto& cfg = model_->config();
  const auto gen = models::load_generation_config(dir / "generation_config.json");
  eos_ids_ = !gen.eos_token_ids.empty() ? gen.eos_token_ids : cfg.text.eos_token_ids;
}

std::vector<int64_t> Policy::prompt_ids(const std::string& prompt) const {
  const std::vector<text::Segment> image(static_cast<size_t>(model_->config().image_tokens()),
                                         {tokenizer_->piece(model_->config().image_token_index), true});
  return engine::build_prompt_ids(*tokenizer_, prompt_format_, image, prompt);
}

at::Tensor Policy::features(const std::filesystem::path& image, int64_t layer) {
  const auto key = std::make_pair(image.string(), layer);
  if (auto it = feature_cache_.find(key); it != feature_cache_.end()) return it->second;
  at::NoGradGuard no_grad;
  const vision::Image img = vision::load_image(image);
  const at::Tensor pixels = vision::clip_preprocess(img, processor_).unsqueeze(0).to(device_, dtype_);  // [1,3,S,S]
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

// Left-pads [T_i, H] rows -> embeds [B, P, H], mask [B, P] (float).
void left_pad(const std::vector<at::Tensor>& rows, at::Tensor& embeds, at::Tensor& mask) {
  const int64_t B = static_cast<int64_t>(rows.size());
  int64_t P = 0;
  for (const auto& r : rows) P = std::max(P, r.size(0));
  const int64_t H = rows.front().size(1);
  embeds = at::zeros({B, P, H}, rows.front().options());
  mask = at::zeros({B, P}, at::TensorOptions().dtype(at::kFloat).device(rows.front().device()));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t T = rows[static_cast<size_t>(b)].size(0);
    embeds[b].narrow(0, P - T, T).copy_(rows[static_cast<size_t>(b)]);
    mask[b].narrow(0, P - T, T).fill_(1.0);
  }
}

}  // namespace

Generated Policy::generate(const std::vector<at::Tensor>& prompts, const SampleSettings& s,
                           const std::vector<uint64_t>& seeds, const std::atomic<bool>* cancel) const {
  at::NoGradGuard no_grad;
  at::Tensor embeds, mask;
  left_pad(prompts, embeds, mask);
  generate::DecodeRequest req;
  req.lm = &model_->language_model();
  req.prompt_embeds = embeds;  // [B,P,H]
  req.prompt_mask = mask;      // [B,P]
  // No repetition penalty in rollouts, so no prompt ids for its history.
  req.eos_ids = eos_ids_;
  // The lab's clean logits policy (engine::Session): no image token, no padded vocabulary rows.
  req.suppress_ids = {model_->config().image_token_index};
  req.suppress_from = tokenizer_->size();
  req.context_limit = model_->config().text.max_position_embeddings;
  req.cancel = cancel;
  for (size_t i = 0; i < prompts.size(); ++i) {
    generate::SamplingParams p;
    p.do_sample = !s.greedy;
    p.temperature = s.temperature;
    p.top_p = s.top_p;
    p.top_k = s.top_k;
    p.max_new_tokens = s.max_new_tokens;
    p.seed = seeds.at(i);
    req.params.push_back(p);
  }
  const auto rows = generate::run_decode(req);
  Generated out;
  for (const auto& r : rows) {
    if (r.stop == generate::StopReason::Cancelled) throw Cancelled();
    out.tokens.push_back(r.tokens);
    out.ended.push_back(r.stop == generate::StopReason::Eos);
    out.new_tokens += static_cast<int64_t>(r.tokens.size());
  }
  return out;
}

RolloutBatch Policy::make_batch(const std::vector<at::Tensor>& prompts,
                                const std::vector<std::vector<int64_t>>& responses) const {
  at::NoGradGuard no_grad;
  const auto& lm = model_->language_model();
  RolloutBatch batch;
  at::Tensor pe, pm;
  left_pad(prompts, pe, pm);
  const int64_t B = pe.size(0), P = pe.size(1), H = pe.size(2);
  int64_t R = 1;
  for (const auto& r : responses) R = std::max<int64_t>(R, static_cast<int64_t>(r.size()));
  batch.tokens = at::zeros({B, R}, at::TensorOptions().dtype(at::kLong).device(device_));
  batch.mask = at::zeros({B, R}, at::TensorOptions().dtype(at::kFloat).device(device_));
  for (int64_t b = 0; b < B; ++b) {
    const auto& r = responses[static_cast<size_t>(b)];
    if (r.empty()) continue;
    const int64_t n = static_cast<int64_t>(r.size());
    batch.tokens[b].narrow(0, 0, n).copy_(at::tensor(r, at::TensorOptions().dtype(at::kLong)).to(device_));
    batch.mask[b].narrow(0, 0, n).fill_(1.0);
  }
  // The response tokens' own embeddings (their last one only feeds nothing we read).
  const at::Tensor re = lm.embed(batch.tokens).to(pe.scalar_type()).view({B, R, H});
  batch.embeds = at::cat({pe, re}, 1);                   // [B,S,H]
  batch.attention = at::cat({pm, batch.mask}, 1);        // [B,S] float
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
