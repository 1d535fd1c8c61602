#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/generate/sampling_params.h"

namespace icet::generate {

// Logits processors: pure functions on one row of logits [V] (float32), HF order and
// semantics (RepetitionPenalty, then Temperature, TopK, TopP warpers).
at::Tensor apply_repetition_penalty(const at::Tensor& logits, const std::vector<int64_t>& history, double penalty);
at::Tensor apply_temperature(const at::Tensor& logits, double temperature);
at::Tensor apply_top_k(const at::Tensor& logits, int64_t k);
at::Tensor apply_top_p(const at::Tensor& logits, double p);
// -inf at every id in `ids` (e.g. the image token: an answer never contains one).
at::Tensor suppress(const at::Tensor& logits, const std::vector<int64_t>& ids);

// Picks the next token from logits [V]: argmax when greedy, else the processors and a draw
// from `generator` (CPU). `history` = prompt ids + tokens so far.
int64_t choose_token(const at::Tensor& logits, const SamplingParams& p, const std::vector<int64_t>& history,
                     at::Generator& generator);

// choose_token for the rows of a batch: scores [b, V] on the CPU, row i with params[i], histories[i] and
// generators[i]. Rows that share their settings (and have no repetition penalty) are warped
// together; each row still draws from its own generator, so a row's token does not depend on
// the other rows.
std::vector<int64_t> choose_tokens(const at::Tensor& scores, const std::vector<const SamplingParams*>& params,
                                   const std::vector<const std::vector<int64_t>*>& histories,
                                   const std::vector<at::Generator*>& generators);

at::Generator make_generator(uint64_t seed);
uint64_t fresh_seed();

}  // namespace icet::generate
