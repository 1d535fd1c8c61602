#include "core/generate/sampling.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include <algorithm>
#include <limits>
#include <random>

#include "core/base/error.h"

namespace icet::generate {

at::Tensor apply_repetition_penalty(const at::Tensor& logits, const std::vector<int64_t>& history, double penalty) {
  if (penalty == 1.0 || history.empty()) {
    return logits;
  }
  std::vector<int64_t> ids;
  ids.reserve(history.size());
  for (int64_t id : history) {
    if (id >= 0 && id < logits.size(0)) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  const at::Tensor index = at::tensor(ids, at::TensorOptions().dtype(at::kLong)).to(logits.device());
  const at::Tensor picked = logits.index_select(0, index);
  const at::Tensor penalised = at::where(picked < 0, picked * penalty, picked / penalty);
  return logits.index_copy(0, index, penalised);
}

at::Tensor apply_temperature(const at::Tensor& logits, double temperature) {
  return temperature == 1.0 ? logits : logits / temperature;
}

at::Tensor apply_top_k(const at::Tensor& logits, int64_t k) {
  if (k <= 0 || k >= logits.size(-1)) {
    return logits;
  }
  const at::Tensor kth = std::get<0>(at::topk(logits, k, -1)).narrow(-1, k - 1, 1);
  return logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
}

at::Tensor apply_top_p(const at::Tensor& logits, double p) {
  if (p >= 1.0) {
    return logits;
  }
  // HF TopPLogitsWarper: ascending sort; drop the low tail whose cumulative mass <= 1 - p,
  // always keeping the most likely token.
  auto [sorted, order] = at::sort(logits, /*dim=*/-1, /*descending=*/false);
  at::Tensor cumulative = at::softmax(sorted, -1).cumsum(-1);
  at::Tensor remove_sorted = cumulative <= (1.0 - p);
  remove_sorted.narrow(-1, remove_sorted.size(-1) - 1, 1).fill_(false);
  const at::Tensor remove = at::zeros_like(remove_sorted).scatter(-1, order, remove_sorted);
  return logits.masked_fill(remove, -std::numeric_limits<float>::infinity());
}

at::Tensor suppress(const at::Tensor& logits, const std::vector<int64_t>& ids) {
  std::vector<int64_t> valid;
  for (int64_t id : ids) {
    if (id >= 0 && id < logits.size(0)) valid.push_back(id);
  }
  if (valid.empty()) {
    return logits;
  }
  const at::Tensor index = at::tensor(valid, at::TensorOptions().dtype(at::kLong)).to(logits.device());
  return logits.index_fill(0, index, -std::numeric_limits<double>::infinity());
}

int64_t choose_token(const at::Tensor& logits, const SamplingParams& p, const std::vector<int64_t>& history,
                     at::Generator& generator) {
  at::Tensor scores = apply_repetition_penalty(logits.to(at::kFloat), history, p.repetition_penalty);
  if (!p.do_sample) {
    return scores.argmax().item<int64_t>();
  }
  scores = apply_top_p(apply_top_k(apply_temperature(scores, p.temperature), p.top_k), p.top_p);
  const at::Tensor probs = at::softmax(scores, 0).to(at::kCPU);
  return at::multinomial(probs, 1, /*replacement=*/false, generator).item<int64_t>();
}

std::vector<int64_t> choose_tokens(const at::Tensor& scores, const std::vector<const SamplingParams*>& params,
                                   const std::vector<const std::vector<int64_t>*>& histories,
                                   const std::vector<at::Generator*>& generators) {
  const size_t b = params.size();
  std::vector<int64_t> out(b);
  const at::Tensor rows = scores.to(at::kFloat);  // [b,V]
  // Rows without a repetition penalty whose settings match row 0's (the usual batch: one set
  // of settings, a seed per row) are warped as one [b,V] tensor: same math per row, far fewer
  // small ops than a loop. Every other row goes through choose_token alone.
  const SamplingParams& p0 = *params.front();
  bool uniform = true;
  for (const auto* p : params) {
    uniform = uniform && p->repetition_penalty == 1.0 && p->do_sample == p0.do_sample &&
              (!p->do_sample || (p->temperature == p0.temperature && p->top_k == p0.top_k && p->top_p == p0.top_p));
  }
  if (!uniform) {
    for (size_t i = 0; i < b; ++i) out[i] = choose_token(rows[static_cast<int64_t>(i)], *params[i], *histories[i], *generators[i]);
    return out;
  }
  if (!p0.do_sample) {
    const at::Tensor best = rows.argmax(-1).contiguous();
    std::copy_n(best.data_ptr<int64_t>(), b, out.begin());
    return out;
  }
  // The rows are on the CPU (run_decode moves them there): the generators are CPU ones.
  const at::Tensor probs =
      at::softmax(apply_top_p(apply_top_k(apply_temperature(rows, p0.temperature), p0.top_k), p0.top_p), -1).contiguous();
  for (size_t i = 0; i < b; ++i) {
    out[i] = at::multinomial(probs[static_cast<int64_t>(i)], 1, /*replacement=*/false, *generators[i]).item<int64_t>();
  }
  return out;
}

at::Generator make_generator(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

uint64_t fresh_seed() {
  std::random_device rd;
  // 53 bits so the seed survives a round trip through JSON numbers in any tool.
  return ((static_cast<uint64_t>(rd()) << 32) ^ rd()) & ((1ULL << 53) - 1);
}

}  // namespace icet::generate
