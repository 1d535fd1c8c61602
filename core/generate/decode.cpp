#include "core/generate/decode.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <memory>
#include <optional>

#include "core/base/error.h"
#include "core/base/log.h"
#include "core/models/llama.h"
#include "core/text/stream_decoder.h"
#include "core/text/tokenizer.h"

namespace icet::generate {

std::string stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::Eos: return "eos";
    case StopReason::StopString: return "stop_string";
    case StopReason::MaxTokens: return "max_new_tokens";
    case StopReason::ContextFull: return "context_full";
    case StopReason::Cancelled: return "cancelled";
  }
  return "unknown";
}

namespace {

// A plain LlamaModel as a TextDecoder.
class LlamaDecoder final : public TextDecoder {
 public:
  explicit LlamaDecoder(const models::LlamaModel& lm) : lm_(lm) {}
  models::KvCache make_cache(int64_t batch, int64_t capacity) const override { return lm_.make_cache(batch, capacity); }
  at::Tensor forward(const at::Tensor& embeds, const at::Tensor& positions, models::KvCache* cache,
                     const at::Tensor& key_mask, bool last_only) const override {
    return lm_.forward(embeds, positions, cache, key_mask, last_only);
  }
  at::Tensor logits(const at::Tensor& hidden) const override { return lm_.logits(hidden); }
  at::Tensor embed(const at::Tensor& ids) const override { return lm_.embed(ids); }

 private:
  const models::LlamaModel& lm_;
};

}  // namespace

std::vector<RowOutput> run_decode(const DecodeRequest& req) {
  c10::InferenceMode inference;
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };

  if (req.decoder == nullptr && req.lm == nullptr) {
    throw Error("decode request: no text model");
  }
  std::optional<LlamaDecoder> llama_decoder;
  if (req.decoder == nullptr) llama_decoder.emplace(*req.lm);
  const TextDecoder& lm = req.decoder != nullptr ? *req.decoder : *llama_decoder;
  const int64_t B = req.prompt_embeds.size(0), T = req.prompt_embeds.size(1);
  if (static_cast<int64_t>(req.params.size()) != B) {
    throw Error(describe("decode request", std::to_string(B) + " sampling settings (one per row)",
                         std::to_string(req.params.size())));
  }
  const bool padded = req.prompt_mask.defined();
  int64_t max_new = 0;
  for (const auto& p : req.params) max_new = std::max(max_new, p.max_new_tokens);
  const int64_t capacity = std::min(T + max_new, req.context_limit);

  std::vector<RowOutput> out(static_cast<size_t>(B));
  std::vector<at::Generator> generators;
  std::vector<std::unique_ptr<text::StreamDecoder>> streams;
  std::vector<std::vector<int64_t>> history(static_cast<size_t>(B), req.prompt_ids);
  for (int64_t r = 0; r < B; ++r) {
    generators.push_back(make_generator(req.params[static_cast<size_t>(r)].seed.value_or(0)));
    streams.push_back(req.tokenizer != nullptr ? std::make_unique<text::StreamDecoder>(*req.tokenizer) : nullptr);
  }

  models::KvCache cache = lm.make_cache(B, capacity);
  const auto dev = req.prompt_embeds.device();
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(dev);
  // Prefill: all prompt positions, logits of the last one only. [B,T,H] -> [B,V]
  // Each row's next position next_pos [b]; padded rows also carry key_mask [b, cache positions].
  at::Tensor positions, key_mask;
  if (padded) {
    key_mask = req.prompt_mask.to(dev).to(at::kFloat).clone();  // [B,T], rows move below
    positions = (key_mask.cumsum(1) - 1).clamp_min(0).to(at::kLong);
  } else {
    positions = at::arange(T, long_opts).view({1, T}).expand({B, T});
  }
  at::Tensor next_pos = positions.select(1, T - 1) + 1;  // [B]
  at::Tensor logits =
      lm.logits(lm.forward(req.prompt_embeds, positions, &cache, key_mask, /*last_only=*/true)).select(1, 0);

  // [V] true at every id LogitsPolicy::clean never generates.
  const int64_t V = logits.size(1);
  at::Tensor banned = at::zeros({V}, at::TensorOptions().dtype(at::kBool));
  for (int64_t id : req.suppress_ids) {
    if (id >= 0 && id < V) banned[id] = true;
  }
  if (req.suppress_from >= 0 && req.suppress_from < V) banned.narrow(0, req.suppress_from, V - req.suppress_from).fill_(true);
  const auto is_clean = [&](size_t r) { return req.params[r].logits_policy == LogitsPolicy::clean; };

  const double prefill_s = elapsed();
  int64_t steps = 0;
  std::vector<size_t> active(static_cast<size_t>(B));
  for (size_t r = 0; r < active.size(); ++r) active[r] = r;

  while (!active.empty()) {
    if (req.cancel != nullptr && req.cancel->load(std::memory_order_relaxed)) {
      for (size_t r : active) out[r].stop = StopReason::Cancelled;
      break;
    }
    // Banned ids masked for all "clean" rows in one op; rows sharing their settings are warped
    // as one batch (choose_tokens: a per-row loop of small ops would cost more than the step).
    at::Tensor scores = logits.to(at::kCPU);  // [b,V]
    const size_t clean_rows = static_cast<size_t>(std::count_if(active.begin(), active.end(), is_clean));
    if (clean_rows == active.size()) {
      scores = scores.masked_fill(banned, -std::numeric_limits<float>::infinity());
    } else if (clean_rows > 0) {
      std::vector<uint8_t> clean(active.size());
      for (size_t i = 0; i < active.size(); ++i) clean[i] = is_clean(active[i]) ? 1 : 0;
      const at::Tensor rows = at::tensor(clean, at::TensorOptions().dtype(at::kByte)).to(at::kBool).view({-1, 1});
      scores = scores.masked_fill(rows.logical_and(banned.view({1, V})), -std::numeric_limits<float>::infinity());
    }
    std::vector<const SamplingParams*> row_params;
    std::vector<const std::vector<int64_t>*> row_history;
    std::vector<at::Generator*> row_generator;
    for (size_t r : active) {
      row_params.push_back(&req.params[r]);
      row_history.push_back(&history[r]);
      row_generator.push_back(&generators[r]);
    }
    std::vector<int64_t> chosen = choose_tokens(scores, row_params, row_history, row_generator);
    std::vector<bool> finished(active.size(), false);
    for (size_t i = 0; i < active.size(); ++i) {
      const size_t r = active[i];
      const SamplingParams& p = req.params[r];
      const int64_t token = chosen[i];
      RowOutput& o = out[r];
      if (o.tokens.empty()) o.first_token_seconds = elapsed();
      o.tokens.push_back(token);
      history[r].push_back(token);

      const bool is_eos = std::find(req.eos_ids.begin(), req.eos_ids.end(), token) != req.eos_ids.end();
      // An id past the tokenizer (a padded row, LogitsPolicy::hf) decodes to nothing, as HF's
      // fast tokenizers skip ids they do not know (the tokenizer here would throw).
      const bool decodable = req.tokenizer == nullptr || token < req.tokenizer->size();
      std::string piece;
      if (streams[r] && decodable && !(is_eos && p.stop_at_eos)) {
        piece = streams[r]->push(token);
        o.text += piece;
      }
      if (req.on_token) req.on_token({r, token, piece});

      bool done = true;
      if (is_eos && p.stop_at_eos) {
        o.stop = StopReason::Eos;
      } else if (std::any_of(p.stop_strings.begin(), p.stop_strings.end(),
                             [&](const std::string& s) { return !s.empty() && o.text.find(s) != std::string::npos; })) {
        o.stop = StopReason::StopString;
      } else if (static_cast<int64_t>(o.tokens.size()) >= p.max_new_tokens) {
        o.stop = StopReason::MaxTokens;
      } else if (cache.length >= capacity) {
        o.stop = StopReason::ContextFull;
      } else {
        done = false;
      }
      if (done) {
        if (streams[r]) {
          const std::string tail = streams[r]->flush();
          o.text += tail;
          if (!tail.empty() && req.on_token) req.on_token({r, -1, tail});
        }
        o.seconds = elapsed();
        finished[i] = true;
      }
    }
    // Finished rows leave the batch, from the highest position down: the batch's last row moves
    // into the hole (rows past i are all going on by then), so a finished row costs one row's
    // cache copy rather than a copy of the whole cache.
    for (size_t i = finished.size(); i-- > 0;) {
      if (!finished[i]) continue;
      cache.remove_row(static_cast<int64_t>(i));
      // The same move for the row's position (and mask).
      const int64_t last = next_pos.size(0) - 1, row = static_cast<int64_t>(i);
      for (at::Tensor* t : {&next_pos, &key_mask}) {
        if (!t->defined()) continue;
        if (row != last) (*t)[row].copy_((*t)[last]);
        *t = t->narrow(0, 0, last);
      }
      active[i] = active.back();
      chosen[i] = chosen.back();
      active.pop_back();
      chosen.pop_back();
    }
    if (active.empty()) break;
    const int64_t b = static_cast<int64_t>(active.size());
    // One decode step for the rows still going: [b,1] -> [b,V]
    const at::Tensor ids = at::tensor(chosen, at::TensorOptions().dtype(at::kLong)).to(dev).view({b, 1});
    if (padded) key_mask = at::cat({key_mask, at::ones({b, 1}, key_mask.options())}, 1);  // [b, cache.length + 1]
    logits = lm.logits(lm.forward(lm.embed(ids), next_pos.view({b, 1}), &cache, key_mask, false)).select(1, 0);
    next_pos = next_pos + 1;
    ++steps;
  }
  log::get("generate")->debug("decode: {} rows x {} prompt tokens, prefill {:.1f} ms, {} steps {:.1f} ms", B, T,
                              prefill_s * 1e3, steps, (elapsed() - prefill_s) * 1e3);
  for (auto& o : out) {
    if (o.seconds == 0.0) o.seconds = elapsed();
  }
  return out;
}

}  // namespace icet::generate
