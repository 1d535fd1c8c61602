#include "core/models/llama.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/base/error.h"
#include "core/models/ops.h"
#include "core/models/weights.h"

namespace icet::models {
namespace {

// x: [..., d] -> [..., d]: (-x2, x1) over halves (HF rotate_half, not interleaved pairs).
at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

void KvCache::remove_row(int64_t row) {
  for (auto* list : {&k, &v}) {
    for (auto& t : *list) {
      const int64_t last = t.size(0) - 1;
      if (row != last) t.select(0, row).copy_(t.select(0, last));
      t = t.narrow(0, 0, last);
    }
  }
}

at::Tensor rope_inv_freq(const LlamaConfig& c) {
  const int64_t d = c.head_dim;
  at::Tensor inv = 1.0 / at::pow(c.rope_theta, at::arange(0, d, 2, at::kLong).to(at::kFloat) / static_cast<double>(d));
  if (c.rope_scaling && c.rope_scaling->rope_type == "llama3") {
    // transformers' _compute_llama3_parameters, element by element in float32.
    const RopeScaling& s = *c.rope_scaling;
    const double old_len = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_len / s.low_freq_factor;
    const double high_wavelen = old_len / s.high_freq_factor;
    at::Tensor wavelen = 2 * std::numbers::pi / inv;
    at::Tensor scaled = at::where(wavelen > low_wavelen, inv / s.factor, inv);
    at::Tensor smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    at::Tensor smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
    at::Tensor is_medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv = at::where(is_medium, smoothed, scaled);
  }
  return inv.contiguous();
}

LlamaModel::LlamaModel(const LlamaConfig& c, WeightLoader& w, const std::string& prefix, bool lm_head)
    : config_(c) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t q_out = c.num_attention_heads * c.head_dim, kv_out = c.num_key_value_heads * c.head_dim;
  const std::string m = prefix + "model.";
  embed_tokens_ = w.take(m + "embed_tokens.weight", {V, H});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string l = m + "layers." + std::to_string(i) + ".";
    Layer L;
    L.in_norm = w.take(l + "input_layernorm.weight", {H});
    L.q_w = w.take(l + "self_attn.q_proj.weight", {q_out, H});
    L.k_w = w.take(l + "self_attn.k_proj.weight", {kv_out, H});
    L.v_w = w.take(l + "self_attn.v_proj.weight", {kv_out, H});
    L.o_w = w.take(l + "self_attn.o_proj.weight", {H, q_out});
    if (c.attention_bias) {
      L.q_b = w.take(l + "self_attn.q_proj.bias", {q_out});
      L.k_b = w.take(l + "self_attn.k_proj.bias", {kv_out});
      L.v_b = w.take(l + "self_attn.v_proj.bias", {kv_out});
      L.o_b = w.take(l + "self_attn.o_proj.bias", {H});
    }
    L.post_norm = w.take(l + "post_attention_layernorm.weight", {H});
    L.gate_w = w.take(l + "mlp.gate_proj.weight", {I, H});
    L.up_w = w.take(l + "mlp.up_proj.weight", {I, H});
    L.down_w = w.take(l + "mlp.down_proj.weight", {H, I});
    layers_.push_back(std::move(L));
  }
  norm_ = w.take(m + "norm.weight", {H});
  if (lm_head) {
    // Tied checkpoints (e.g. Llama 3.2 1B, Llama Guard 3 1B) carry no lm_head.weight.
    lm_head_ = c.tie_word_embeddings && !w.contains(prefix + "lm_head.weight")
                   ? embed_tokens_
                   : w.take(prefix + "lm_head.weight", {V, H});
  }
  inv_freq_ = rope_inv_freq(c).to(embed_tokens_.device());
}

KvCache LlamaModel::make_cache(int64_t batch, int64_t capacity) const {
  KvCache cache;
  const auto opts = embed_tokens_.options();
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    cache.k.push_back(at::empty({batch, config_.num_key_value_heads, capacity, config_.head_dim}, opts));
    cache.v.push_back(at::empty({batch, config_.num_key_value_heads, capacity, config_.head_dim}, opts));
  }
  cache.capacity = capacity;
  return cache;
}

at::Tensor LlamaModel::embed(const at::Tensor& ids) const {
  return at::embedding(embed_tokens_, ids.to(embed_tokens_.device()));
}

at::Tensor LlamaModel::rms_norm(const at::Tensor& x, const at::Tensor& w) const {
  // HF LlamaRMSNorm: in float32, then back to the input dtype before the weight.
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean({-1}, true) + config_.rms_norm_eps);
  return w * normed.to(x.scalar_type());
}

at::Tensor LlamaModel::attention(const Layer& l, size_t index, const at::Tensor& x, const at::Tensor& cos,
                                 const at::Tensor& sin, KvCache* cache, const at::Tensor& mask) const {
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t h = config_.num_attention_heads, g = config_.num_key_value_heads, d = config_.head_dim;
  const int64_t r = h / g;  // query heads per kv head (HF repeat_kv: kv head j serves j*r .. j*r+r-1)
  const auto* ad = active_adapters();
  const auto lin = [&](LoraModule m) -> const LoraLinear* {
    return ad != nullptr ? &ad->layers[index][static_cast<size_t>(m)] : nullptr;
  };
  at::Tensor q = lora_dense(x, l.q_w, l.q_b, lin(LoraModule::q_proj), ad).view({B, T, h, d});  // [B,T,h,d]
  at::Tensor k = lora_dense(x, l.k_w, l.k_b, lin(LoraModule::k_proj), ad).view({B, T, g, d});  // [B,T,g,d]
  at::Tensor v = lora_dense(x, l.v_w, l.v_b, lin(LoraModule::v_proj), ad).view({B, T, g, d}).transpose(1, 2);  // [B,g,T,d]
  // RoPE on the projections' own contiguous layout (cos/sin [B,T,1,d]), then heads first.
  q = (q * cos + rotate_half(q) * sin).transpose(1, 2);  // [B,h,T,d]
  k = (k * cos + rotate_half(k) * sin).transpose(1, 2);  // [B,g,T,d]
  if (cache != nullptr) {
    const int64_t P = cache->length;
    cache->k[index].narrow(2, P, T).copy_(k);
    cache->v[index].narrow(2, P, T).copy_(v);
    k = cache->k[index].narrow(2, 0, P + T);  // [B,g,S,d], S = P+T (a view: no copy)
    v = cache->v[index].narrow(2, 0, P + T);
  }
  const int64_t S = k.size(2);
  // GQA without repeating K/V: the r query heads of a group are stacked along the query axis,
  // [B,h,T,d] -> [B,g,r*T,d], so each group is one product against its own keys.
  q = q.reshape({B, g, r * T, d});
  // Scores [B,g,r*T,S] are computed in blocks of whole (row, kv group) pairs of at most
  // kAttentionBlock floats: a 24-row, 590-token prefill would otherwise materialise 134 MB of
  // scores per layer (and as much again for the mask sum and the softmax), which runs at memory
  // speed. Each block is the same batched product as the whole, so the numbers do not change.
  constexpr int64_t kAttentionBlock = 2 << 20;  // 8 MiB of float32 scores
  const int64_t pair = r * T * S;
  const int64_t groups = std::clamp<int64_t>(kAttentionBlock / std::max<int64_t>(pair, 1), 1, g);
  const int64_t rows = groups < g ? 1 : std::clamp<int64_t>(kAttentionBlock / std::max<int64_t>(g * pair, 1), 1, B);
  const double scale = std::sqrt(static_cast<double>(d));
  // [b,n,r*t,d] x [b,n,s,d] -> [b,n,r*t,d]; mb [b|1,1,t,s] or undefined
  const auto product = [&](const at::Tensor& qb, const at::Tensor& kb, const at::Tensor& vb, const at::Tensor& mb) {
    const int64_t b = qb.size(0), n = qb.size(1), s = kb.size(2);
    at::Tensor scores;  // [b,n,r*t,s]
    if (mb.defined()) {
      // The mask (rows repeated for the r heads of a group) is the product's accumulator and
      // the scale its alpha: one pass over the scores instead of three (divide, add, copy).
      const int64_t t = mb.size(2);
      const at::Tensor acc = mb.unsqueeze(1).expand({b, n, r, t, s}).reshape({b * n, r * t, s});
      scores = at::baddbmm(acc, qb.reshape({b * n, r * t, d}), kb.reshape({b * n, s, d}).transpose(1, 2),
                           /*beta=*/1.0, /*alpha=*/1.0 / scale)
                   .view({b, n, r * t, s});
    } else {
      scores = at::matmul(qb, kb.transpose(-1, -2)).div_(scale);
    }
    return at::matmul(at::softmax(scores, -1, at::kFloat).to(qb.scalar_type()), vb);
  };
  // A long causal block of queries is cut into tiles of kQueryTileRows / r positions; a tile
  // attends only to the keys up to its last query, which skips most of the masked upper
  // triangle (the skipped keys would get exactly zero weight). 256 product rows measured best
  // at head size 128 for r = 1 and r = 2 (590 positions; under GQA 5-12% faster than 512).
  constexpr int64_t kQueryTileRows = 256;
  const int64_t query_tile = std::max<int64_t>(1, kQueryTileRows / r);
  const auto block = [&](const at::Tensor& qb, const at::Tensor& kb, const at::Tensor& vb, const at::Tensor& mb) {
    if (T <= query_tile || !mb.defined()) return product(qb, kb, vb, mb);
    const int64_t b = qb.size(0), n = qb.size(1), P0 = S - T;
    at::Tensor out = at::empty_like(qb);
    const at::Tensor q5 = qb.view({b, n, r, T, d}), out5 = out.view({b, n, r, T, d});
    for (int64_t t0 = 0; t0 < T; t0 += query_tile) {
      const int64_t t = std::min(query_tile, T - t0), s = P0 + t0 + t;
      const at::Tensor qt = q5.narrow(3, t0, t).reshape({b, n, r * t, d});
      out5.narrow(3, t0, t).copy_(product(qt, kb.narrow(2, 0, s), vb.narrow(2, 0, s), mb.narrow(2, t0, t).narrow(3, 0, s))
                                      .view({b, n, r, t, d}));
    }
    return out;
  };
  at::Tensor ctx;  // [B,g,r*T,d]
  if (rows == B && groups == g) {
    ctx = block(q, k, v, mask);
  } else {
    ctx = at::empty({B, g, r * T, d}, q.options());
    for (int64_t b0 = 0; b0 < B; b0 += rows) {
      const int64_t nb = std::min(rows, B - b0);
      const at::Tensor mb = !mask.defined() ? mask : mask.size(0) == 1 ? mask : mask.narrow(0, b0, nb);
      for (int64_t g0 = 0; g0 < g; g0 += groups) {
        const int64_t ng = std::min(groups, g - g0);
        const auto part = [&](const at::Tensor& t) { return t.narrow(0, b0, nb).narrow(1, g0, ng); };
        part(ctx).copy_(block(part(q), part(k), part(v), mb));
      }
    }
  }
  ctx = ctx.view({B, h, T, d}).transpose(1, 2).reshape({B, T, h * d});  // [B,T,h*d]
  return lora_dense(ctx, l.o_w, l.o_b, lin(LoraModule::o_proj), ad);
}

at::Tensor LlamaModel::forward(const at::Tensor& embeds, const at::Tensor& positions, KvCache* cache,
                               const at::Tensor& key_mask, bool last_only) const {
  const int64_t B = embeds.size(0), T = embeds.size(1);
  const int64_t P = cache != nullptr ? cache->length : 0;
  if (cache != nullptr && P + T > cache->capacity) {
    throw Error(describe("KV cache", "at most " + std::to_string(cache->capacity) + " positions",
                         std::to_string(P + T)));
  }
  // Inference over many long rows (the sweep's prefill: 24 rows x ~600 positions) runs in
  // groups of rows whose MLP activations stay under 16 MiB, so transient buffers are reused
  // from the heap rather than mapped and faulted in per layer. Rows are independent, and each
  // group writes its own rows of the cache.
  constexpr int64_t kRowGroupFloats = 4 << 20;
  const int64_t group = std::max<int64_t>(
      1, kRowGroupFloats / std::max<int64_t>(1, T * std::max(config_.intermediate_size, config_.hidden_size)));
  if (B > group && T > 1 && !at::GradMode::is_enabled()) {
    std::vector<at::Tensor> parts;
    for (int64_t b0 = 0; b0 < B; b0 += group) {
      const int64_t n = std::min(group, B - b0);
      KvCache rows;
      if (cache != nullptr) {
        rows.length = P;
        rows.capacity = cache->capacity;
        for (const auto& t : cache->k) rows.k.push_back(t.narrow(0, b0, n));
        for (const auto& t : cache->v) rows.v.push_back(t.narrow(0, b0, n));
      }
      parts.push_back(forward(embeds.narrow(0, b0, n), positions.narrow(0, b0, n), cache != nullptr ? &rows : nullptr,
                              key_mask.defined() ? key_mask.narrow(0, b0, n) : key_mask, last_only));
    }
    if (cache != nullptr) cache->length = P + T;
    return at::cat(parts, 0);
  }
  const auto dev = embeds.device();
  // RoPE tables for the new positions: [B,T,1,d] (float32 products, as HF).
  at::Tensor freqs = positions.to(dev).to(at::kFloat).unsqueeze(-1) * inv_freq_.view({1, 1, -1});  // [B,T,d/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1).unsqueeze(2);
  const at::Tensor cos = emb.cos().to(embeds.scalar_type());
  const at::Tensor sin = emb.sin().to(embeds.scalar_type());

  // Additive mask [B,1,T,P+T] ([1,1,T,P+T] without key padding): causal within the new block,
  // plus key padding. A single new token with no padding needs none.
  at::Tensor mask;
  // HF fills with the dtype's lowest finite value (not -inf: a fully masked padding row must
  // not turn into NaN).
  const double min_value = finfo_min(embeds.scalar_type());
  if (T > 1 || key_mask.defined()) {
    at::Tensor q_pos = at::arange(P, P + T, at::TensorOptions().dtype(at::kLong).device(dev)).view({T, 1});
    at::Tensor k_pos = at::arange(0, P + T, at::TensorOptions().dtype(at::kLong).device(dev)).view({1, P + T});
    at::Tensor allowed = (k_pos <= q_pos).view({1, 1, T, P + T});  // one causal mask for every row
    if (key_mask.defined()) {
      allowed = allowed.logical_and(key_mask.to(dev).to(at::kBool).view({B, 1, 1, P + T}));
    }
    mask = at::zeros(allowed.sizes(), at::TensorOptions().dtype(embeds.scalar_type()).device(dev))
               .masked_fill(allowed.logical_not(), min_value);
  }

  at::Tensor x = embeds;
  const bool recompute = checkpointing_ && cache == nullptr && at::GradMode::is_enabled();
  for (size_t i = 0; i < layers_.size(); ++i) {
    x = recompute ? checkpointed_layer(i, x, cos, sin, mask) : layer_forward(i, x, cos, sin, cache, mask);
  }
  if (cache != nullptr) {
    cache->length = P + T;
  }
  return rms_norm(last_only ? x.narrow(1, T - 1, 1) : x, norm_);
}

at::Tensor LlamaModel::layer_forward(size_t i, const at::Tensor& x_in, const at::Tensor& cos, const at::Tensor& sin,
                                     KvCache* cache, const at::Tensor& mask) const {
  const Layer& l = layers_[i];
  at::Tensor x = x_in + attention(l, i, rms_norm(x_in, l.in_norm), cos, sin, cache, mask);
  const at::Tensor y = rms_norm(x, l.post_norm);
  const auto* ad = active_adapters();
  const auto lin = [&](LoraModule m) -> const LoraLinear* {
    return ad != nullptr ? &ad->layers[i][static_cast<size_t>(m)] : nullptr;
  };
  at::Tensor gate = lora_dense(y, l.gate_w, {}, lin(LoraModule::gate_proj), ad);
  const at::Tensor up = lora_dense(y, l.up_w, {}, lin(LoraModule::up_proj), ad);
  // Without autograd the gate buffer takes the product in place: one pass and one
  // [B,T,I] buffer fewer per layer.
  gate = at::GradMode::is_enabled() ? at::silu(gate) * up : at::silu_(gate).mul_(up);
  return x + lora_dense(gate, l.down_w, {}, lin(LoraModule::down_proj), ad);
}

namespace {

// Gradient checkpointing of one decoder layer (PyTorch's reentrant torch.utils.checkpoint):
// forward keeps only the layer's input; backward runs the layer again with autograd and takes
// the gradients of the input and of the layer's LoRA tensors. The LoRA dropout generator is
// rewound for the rerun so it draws the same masks.
struct CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  // inputs: x [B,T,H], cos, sin, mask (may be undefined), then the layer's LoRA A/B tensors.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const LlamaModel* model, int64_t layer,
                            at::TensorList inputs) {
    ctx->saved_data["model"] = reinterpret_cast<int64_t>(model);
    ctx->saved_data["layer"] = layer;
    const LoraSet* ad = model->adapters();
    if (ad != nullptr && ad->training && ad->config.dropout > 0.0 && ad->generator != nullptr) {
      ctx->saved_data["rng"] = ad->generator->get_state();
    }
    ctx->save_for_backward(inputs.vec());
    return model->layer_forward(static_cast<size_t>(layer), inputs[0], inputs[1], inputs[2], nullptr, inputs[3]);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto* model = reinterpret_cast<const LlamaModel*>(ctx->saved_data["model"].toInt());
    const auto layer = static_cast<size_t>(ctx->saved_data["layer"].toInt());
    const auto saved = ctx->get_saved_variables();
    const at::Tensor x = saved[0].detach().requires_grad_(saved[0].requires_grad());
    at::Generator* gen = model->adapters() != nullptr ? model->adapters()->generator : nullptr;
    at::Tensor resume_state;
    if (ctx->saved_data.find("rng") != ctx->saved_data.end() && gen != nullptr) {
      resume_state = gen->get_state();
      gen->set_state(ctx->saved_data["rng"].toTensor());
    }
    at::Tensor y;
    {
      at::AutoGradMode grad(true);
      y = model->layer_forward(layer, x, saved[1], saved[2], nullptr, saved[3]);
    }
    if (resume_state.defined()) gen->set_state(resume_state);
    // Gradients for x and the LoRA tensors (positions 0 and 4.. of the inputs).
    std::vector<at::Tensor> wrt;
    std::vector<size_t> at_input;
    for (size_t k = 0; k < saved.size(); ++k) {
      if ((k == 0 || k >= 4) && saved[k].defined() && saved[k].requires_grad()) {
        wrt.push_back(k == 0 ? x : saved[k]);
        at_input.push_back(k);
      }
    }
    const auto grads = torch::autograd::grad({y}, wrt, {grad_out[0]}, /*retain_graph=*/false, /*create_graph=*/false,
                                             /*allow_unused=*/true);
    // One entry per forward argument: model, layer (not tensors), then each input tensor.
    torch::autograd::variable_list out(2 + saved.size());
    for (size_t j = 0; j < wrt.size(); ++j) out[2 + at_input[j]] = grads[j];
    return out;
  }
};

}  // namespace

at::Tensor LlamaModel::checkpointed_layer(size_t i, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                          const at::Tensor& mask) const {
  std::vector<at::Tensor> inputs{x, cos, sin, mask};
  if (const LoraSet* ad = active_adapters()) {
    for (const LoraLinear& lin : ad->layers[i]) {
      if (!lin.defined()) continue;
      inputs.push_back(lin.a);
      inputs.push_back(lin.b);
    }
  }
  return CheckpointedLayer::apply(this, static_cast<int64_t>(i), at::TensorList(inputs));
}

const LoraSet* LlamaModel::active_adapters() const {
  return adapters_ != nullptr && adapters_->enabled && !adapters_->layers.empty() ? adapters_ : nullptr;
}

const at::Tensor& LlamaModel::linear_weight(size_t layer, LoraModule m) const {
  const Layer& l = layers_.at(layer);
  switch (m) {
    case LoraModule::q_proj: return l.q_w;
    case LoraModule::k_proj: return l.k_w;
    case LoraModule::v_proj: return l.v_w;
    case LoraModule::o_proj: return l.o_w;
    case LoraModule::gate_proj: return l.gate_w;
    case LoraModule::up_proj: return l.up_w;
    case LoraModule::down_proj: return l.down_w;
  }
  return l.q_w;
}

void LlamaModel::merge_adapters(const LoraSet& set, double sign) {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < set.layers.size() && i < layers_.size(); ++i) {
    for (size_t m = 0; m < kLoraModules; ++m) {
      const LoraLinear& a = set.layers[i][m];
      if (!a.defined()) continue;
      // const_cast: the weight tensors are this model's own (private mapping or copy).
      at::Tensor w = linear_weight(i, static_cast<LoraModule>(m));
      w.add_(at::matmul(a.b, a.a).to(w.scalar_type()), sign * set.config.scale());  // [out,r]x[r,in]
    }
  }
}

at::Tensor LlamaModel::logits(const at::Tensor& hidden) const {
  return dense(hidden, lm_head_).to(at::kFloat);
}

}  // namespace icet::models
