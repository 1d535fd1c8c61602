#pragma once

// PPO building blocks as pure tensor functions (TRL's PPO trainer semantics), each on a
// response batch: B rollouts x R response positions, with mask [B, R] (1 = a real token).

#include <ATen/core/Tensor.h>

#include <string>

namespace icet::rl {

// Mean / variance over the masked entries (variance unbiased, as TRL's masked_var).
at::Tensor masked_mean(const at::Tensor& x, const at::Tensor& mask);
at::Tensor masked_var(const at::Tensor& x, const at::Tensor& mask);
// (x - mean) / sqrt(var + 1e-8) over the masked entries; shift_mean false adds the mean back.
at::Tensor masked_whiten(const at::Tensor& x, const at::Tensor& mask, bool shift_mean = true);

// Per-token KL estimate of pi (logp) against the reference (ref_logp), both [B, R]:
// "k1": logp - ref_logp; "k3": (r - 1) - log r with r = exp(ref_logp - logp) (never negative).
at::Tensor kl_estimate(const at::Tensor& logp, const at::Tensor& ref_logp, const std::string& estimator);

// Token rewards [B, R]: -kl_coef * kl on every real token, plus score[b] at the last real token.
at::Tensor token_rewards(const at::Tensor& kl, const at::Tensor& score, const at::Tensor& mask, double kl_coef);

struct Gae {
  at::Tensor advantages;  // [B, R] (0 on padding)
  at::Tensor returns;     // [B, R] advantages + values
};
// Generalized advantage estimation backwards over each row's real tokens.
Gae gae(const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& mask, double gamma, double lam);

struct PolicyLoss {
  at::Tensor loss;      // scalar
  at::Tensor clipfrac;  // scalar: share of tokens where the clipped term won
  at::Tensor approx_kl; // scalar: 0.5 * mean(log ratio ^ 2) (TRL)
  at::Tensor ratio;     // scalar: mean ratio
};
// Clipped surrogate: mean(max(-A r, -A clip(r, 1 - eps, 1 + eps))).
PolicyLoss policy_loss(const at::Tensor& logp, const at::Tensor& old_logp, const at::Tensor& advantages,
                       const at::Tensor& mask, double cliprange);

struct ValueLoss {
  at::Tensor loss;      // scalar: 0.5 * mean(max((v - R)^2, (clip(v, v_old +- eps) - R)^2))
  at::Tensor clipfrac;
};
ValueLoss value_loss(const at::Tensor& values, const at::Tensor& old_values, const at::Tensor& returns,
                     const at::Tensor& mask, double cliprange_value);

// logits [B, R, V] -> per-token entropy [B, R]
at::Tensor entropy_from_logits(const at::Tensor& logits);
// Exact per-token KL(p || q) over the vocabulary: logits, ref_logits [B, R, V] -> [B, R]
// (sum_v p_v (log p_v - log q_v)); unlike the sampled estimators it also sees tokens the
// rollouts never picked, e.g. a refusal word creeping into a benign answer.
at::Tensor full_kl(const at::Tensor& logits, const at::Tensor& ref_logits);
// logits [B, R, V], tokens [B, R] -> log-softmax of each token [B, R]
at::Tensor token_logprobs(const at::Tensor& logits, const at::Tensor& tokens);

// Adaptive KL controller (Ziegler et al. 2019, TRL's AdaptiveKLController).
double adaptive_kl_update(double coef, double current_kl, double target, double horizon, int64_t n_steps);

// Learning-rate multiplier at `step` (0-based) for "constant", "linear", "cosine" with warmup.
double lr_multiplier(const std::string& schedule, int64_t step, int64_t warmup, int64_t max_steps);

}  // namespace icet::rl
