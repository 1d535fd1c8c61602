#include "core/rl/ppo.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/base/error.h"

namespace icet::rl {

at::Tensor masked_mean(const at::Tensor& x, const at::Tensor& mask) {
  return (x * mask).sum() / mask.sum().clamp_min(1.0);
}

at::Tensor masked_var(const at::Tensor& x, const at::Tensor& mask) {
  const at::Tensor mean = masked_mean(x, mask);
  const at::Tensor centered = (x - mean) * mask;
  const at::Tensor n = mask.sum();
  const at::Tensor var = (centered * centered).sum() / n.clamp_min(1.0);
  // Bessel's correction, as TRL (a single entry keeps variance 0).
  return var * n / (n - 1).clamp_min(1.0);
}

at::Tensor masked_whiten(const at::Tensor& x, const at::Tensor& mask, bool shift_mean) {
  const at::Tensor mean = masked_mean(x, mask);
  const at::Tensor var = masked_var(x, mask);
  at::Tensor w = (x - mean) * at::rsqrt(var + 1e-8);
  if (!shift_mean) w = w + mean;
  return w * mask;
}

at::Tensor kl_estimate(const at::Tensor& logp, const at::Tensor& ref_logp, const std::string& estimator) {
  const at::Tensor logr = ref_logp - logp;  // log(pi_ref / pi)
  if (estimator == "k1") return -logr;
  if (estimator == "k3") return at::expm1(logr) - logr;
  throw InputError(describe("kl_estimator", "\"k1\" or \"k3\"", "\"" + estimator + "\""));
}

at::Tensor token_rewards(const at::Tensor& kl, const at::Tensor& score, const at::Tensor& mask, double kl_coef) {
  at::Tensor rewards = -kl_coef * kl * mask;  // [B,R]
  // Index of the last real token per row (rows are right-padded: length - 1).
  const at::Tensor last = (mask.sum(1) - 1).clamp_min(0).to(at::kLong);  // [B]
  const at::Tensor has = (mask.sum(1) > 0).to(rewards.scalar_type());
  return rewards.scatter_add(1, last.unsqueeze(1), (score * has).unsqueeze(1).to(rewards.scalar_type()));
}

Gae gae(const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& mask, double gamma, double lam) {
  const int64_t R = rewards.size(1);
  const at::Tensor v = values * mask;
  const at::Tensor r = rewards * mask;
  std::vector<at::Tensor> rev;
  at::Tensor last = at::zeros({rewards.size(0)}, rewards.options());
  for (int64_t t = R - 1; t >= 0; --t) {
    // Past a row's end the mask is 0: next value 0, and the advantage is zeroed below.
    const at::Tensor next_v = t + 1 < R ? v.select(1, t + 1) : at::zeros_like(last);
    const at::Tensor delta = r.select(1, t) + gamma * next_v - v.select(1, t);
    last = (delta + gamma * lam * last) * mask.select(1, t);
    rev.push_back(last);
  }
  std::reverse(rev.begin(), rev.end());
  Gae out;
  out.advantages = at::stack(rev, 1);
  out.returns = (out.advantages + values) * mask;
  return out;
}

PolicyLoss policy_loss(const at::Tensor& logp, const at::Tensor& old_logp, const at::Tensor& advantages,
                       const at::Tensor& mask, double cliprange) {
  const at::Tensor logratio = (logp - old_logp) * mask;
  const at::Tensor ratio = at::exp(logratio);
  const at::Tensor l1 = -advantages * ratio;
  const at::Tensor l2 = -advantages * at::clamp(ratio, 1.0 - cliprange, 1.0 + cliprange);
  PolicyLoss out;
  out.loss = masked_mean(at::max(l1, l2), mask);
  out.clipfrac = masked_mean((l2 > l1).to(logp.scalar_type()), mask);
  out.approx_kl = 0.5 * masked_mean(logratio * logratio, mask);
  out.ratio = masked_mean(ratio, mask);
  return out;
}

ValueLoss value_loss(const at::Tensor& values, const at::Tensor& old_values, const at::Tensor& returns,
                     const at::Tensor& mask, double cliprange_value) {
  const at::Tensor clipped = old_values + at::clamp(values - old_values, -cliprange_value, cliprange_value);
  const at::Tensor l1 = (values - returns).pow(2);
  const at::Tensor l2 = (clipped - returns).pow(2);
  ValueLoss out;
  out.loss = 0.5 * masked_mean(at::max(l1, l2), mask);
  out.clipfrac = masked_mean((l2 > l1).to(values.scalar_type()), mask);
  return out;
}

at::Tensor entropy_from_logits(const at::Tensor& logits) {
  const at::Tensor logp = at::log_softmax(logits, -1);
  return -(at::exp(logp) * logp).sum(-1);
}

at::Tensor full_kl(const at::Tensor& logits, const at::Tensor& ref_logits) {
  const at::Tensor logp = at::log_softmax(logits, -1);
  return (at::exp(logp) * (logp - at::log_softmax(ref_logits, -1))).sum(-1);
}

at::Tensor token_logprobs(const at::Tensor& logits, const at::Tensor& tokens) {
  return at::log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1);
}

double adaptive_kl_update(double coef, double current_kl, double target, double horizon, int64_t n_steps) {
  const double error = std::clamp(current_kl / target - 1.0, -0.2, 0.2);
  return coef * (1.0 + error * static_cast<double>(n_steps) / horizon);
}

double lr_multiplier(const std::string& schedule, int64_t step, int64_t warmup, int64_t max_steps) {
  if (warmup > 0 && step < warmup) return static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double span = static_cast<double>(std::max<int64_t>(1, max_steps - warmup));
  const double progress = std::clamp(static_cast<double>(step - warmup) / span, 0.0, 1.0);
  if (schedule == "linear") return 1.0 - progress;
  if (schedule == "cosine") return 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  return 1.0;
}

}  // namespace icet::rl
