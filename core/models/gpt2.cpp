#include "core/models/gpt2.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <numbers>

#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/base/log.h"
#include "core/io/safetensors.h"
#include "core/models/config.h"
#include "core/models/ops.h"
#include "core/models/sequence_classifier.h"

namespace icet::models {
namespace {

using json_util::Reader;

// HF Conv1D: weight stored (in, out), y = x @ W + b. x: [..., in] -> [..., out] as one 2-D GEMM.
at::Tensor conv1d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  auto out_shape = x.sizes().vec();
  out_shape.back() = w.size(1);
  return at::addmm(b, x.reshape({-1, x.size(-1)}), w).view(out_shape);
}

// gelu_new: the tanh approximation (not the erf GELU).
at::Tensor gelu_new(const at::Tensor& x) {
  const double c = std::sqrt(2.0 / std::numbers::pi);
  return 0.5 * x * (1.0 + at::tanh(c * (x + 0.044715 * at::pow(x, 3.0))));
}

}  // namespace

Gpt2Config Gpt2Config::parse(const Reader& r) {
  Gpt2Config c;
  const std::string type = r.string("model_type", "gpt2");
  if (type != "gpt2") {
    throw InputError(describe(r.where("model_type"), "\"gpt2\"", "\"" + type + "\""));
  }
  c.vocab_size = r.integer("vocab_size", c.vocab_size);
  c.n_positions = r.integer("n_positions", c.n_positions);
  c.n_embd = r.integer("n_embd", c.n_embd);
  c.n_layer = r.integer("n_layer", c.n_layer);
  c.n_head = r.integer("n_head", c.n_head);
  c.n_inner = r.has("n_inner") ? r.integer("n_inner") : 0;
  c.activation_function = r.string("activation_function", c.activation_function);
  c.layer_norm_epsilon = r.number("layer_norm_epsilon", c.layer_norm_epsilon);
  c.scale_attn_weights = r.boolean("scale_attn_weights", c.scale_attn_weights);
  if (r.has("pad_token_id")) c.pad_token_id = r.integer("pad_token_id");
  c.num_labels = read_num_labels(r);
  for (auto [key, value] : {std::pair{"vocab_size", c.vocab_size}, {"n_positions", c.n_positions},
                            {"n_embd", c.n_embd}, {"n_layer", c.n_layer}, {"n_head", c.n_head},
                            {"num_labels", c.num_labels}}) {
    require_config_size(r, key, value);
  }
  if (c.n_embd % c.n_head != 0) {
    throw InputError(describe(r.where("n_embd"), "a multiple of n_head (" + std::to_string(c.n_head) + ")",
                              std::to_string(c.n_embd)));
  }
  if (c.activation_function != "gelu_new") {
    throw InputError(describe(r.where("activation_function"), "\"gelu_new\"", "\"" + c.activation_function + "\""));
  }
  for (const char* key : {"reorder_and_upcast_attn", "scale_attn_by_inverse_layer_idx"}) {
    if (r.boolean(key, false)) {
      throw InputError(describe(r.where(key), "false", "true", "This GPT-2 variant is not supported."));
    }
  }
  return c;
}

Gpt2Config load_gpt2_config(const std::filesystem::path& config_json) {
  const nlohmann::json j = json_util::read_file(config_json);
  return Gpt2Config::parse(Reader(j, config_json.string()));
}

Gpt2Model::Gpt2Model(const Gpt2Config& c, WeightLoader& w, const std::string& prefix) : config_(c) {
  const int64_t H = c.n_embd, I = c.inner();
  wte_ = w.take(prefix + "wte.weight", {c.vocab_size, H});
  wpe_ = w.take(prefix + "wpe.weight", {c.n_positions, H});
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = prefix + "h." + std::to_string(i) + ".";
    Block b;
    b.ln_1_w = w.take(p + "ln_1.weight", {H});
    b.ln_1_b = w.take(p + "ln_1.bias", {H});
    b.attn_w = w.take(p + "attn.c_attn.weight", {H, 3 * H});
    b.attn_b = w.take(p + "attn.c_attn.bias", {3 * H});
    b.attn_proj_w = w.take(p + "attn.c_proj.weight", {H, H});
    b.attn_proj_b = w.take(p + "attn.c_proj.bias", {H});
    b.ln_2_w = w.take(p + "ln_2.weight", {H});
    b.ln_2_b = w.take(p + "ln_2.bias", {H});
    b.fc_w = w.take(p + "mlp.c_fc.weight", {H, I});
    b.fc_b = w.take(p + "mlp.c_fc.bias", {I});
    b.mlp_proj_w = w.take(p + "mlp.c_proj.weight", {I, H});
    b.mlp_proj_b = w.take(p + "mlp.c_proj.bias", {H});
    // Older checkpoints carry the causal mask as buffers; it is rebuilt here.
    if (w.contains(p + "attn.bias")) w.skip(p + "attn.bias", {});
    if (w.contains(p + "attn.masked_bias")) w.skip(p + "attn.masked_bias", {});
    blocks_.push_back(std::move(b));
  }
  ln_f_w_ = w.take(prefix + "ln_f.weight", {H});
  ln_f_b_ = w.take(prefix + "ln_f.bias", {H});
}

at::Tensor Gpt2Model::attention(const Block& b, const at::Tensor& x, const at::Tensor& causal,
                                const at::Tensor& padding) const {
  const int64_t B = x.size(0), T = x.size(1), h = config_.n_head, d = config_.head_dim();
  const int64_t H = config_.n_embd;
  const at::Tensor qkv = conv1d(x, b.attn_w, b.attn_b);  // [B,T,3H]: q, k, v in that order
  auto heads = [&](int64_t i) { return qkv.narrow(-1, i * H, H).view({B, T, h, d}).transpose(1, 2); };
  const at::Tensor q = heads(0), k = heads(1), v = heads(2);  // [B,h,T,d]
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2));   // [B,h,T,T]
  if (config_.scale_attn_weights) {
    scores = scores / std::sqrt(static_cast<double>(d));
  }
  // HF: causal positions replaced by finfo.min, then (1 - mask) * finfo.min added, so a future
  // pad key becomes -inf while a fully padded query row still has its own key.
  const double min_value = finfo_min(scores.scalar_type());
  scores = at::where(causal, scores, at::scalar_tensor(min_value, scores.options()));
  if (padding.defined()) {
    scores = scores + padding;
  }
  const at::Tensor probs = at::softmax(scores, -1);
  const at::Tensor ctx = at::matmul(probs, v).transpose(1, 2).reshape({B, T, H});  // [B,T,H]
  return conv1d(ctx, b.attn_proj_w, b.attn_proj_b);
}

at::Tensor Gpt2Model::forward(const at::Tensor& ids_in, const at::Tensor& positions_in,
                              const at::Tensor& attention_mask, std::vector<at::Tensor>* hidden_states) const {
  const auto dev = wte_.device();
  const at::Tensor ids = ids_in.to(dev);
  const int64_t B = ids.size(0), T = ids.size(1), H = config_.n_embd;
  if (T > config_.n_positions) {
    throw InputError(describe("GPT-2 input", "at most n_positions = " + std::to_string(config_.n_positions) + " tokens",
                              std::to_string(T) + " tokens", "Shorten the prompt or the response."));
  }
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(dev);
  const at::Tensor positions =
      positions_in.defined() ? positions_in.to(dev) : at::arange(T, long_opts).unsqueeze(0).expand({B, T});
  at::Tensor x = at::embedding(wte_, ids) + at::embedding(wpe_, positions);  // [B,T,H]
  if (hidden_states != nullptr) {
    hidden_states->clear();
    hidden_states->push_back(x);
  }
  const at::Tensor q_pos = at::arange(T, long_opts).view({T, 1});
  const at::Tensor causal = at::arange(T, long_opts).view({1, T}) <= q_pos;  // [T,T]
  at::Tensor padding;
  if (attention_mask.defined()) {
    padding = ((1.0 - attention_mask.to(dev).to(wte_.scalar_type())) * finfo_min(wte_.scalar_type()))
                  .view({B, 1, 1, T});
  }
  const double eps = config_.layer_norm_epsilon;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const Block& b = blocks_[i];
    x = x + attention(b, at::layer_norm(x, {H}, b.ln_1_w, b.ln_1_b, eps), causal, padding);
    const at::Tensor y = at::layer_norm(x, {H}, b.ln_2_w, b.ln_2_b, eps);
    x = x + conv1d(gelu_new(conv1d(y, b.fc_w, b.fc_b)), b.mlp_proj_w, b.mlp_proj_b);
    if (hidden_states != nullptr && i + 1 < blocks_.size()) {
      hidden_states->push_back(x);
    }
  }
  x = at::layer_norm(x, {H}, ln_f_w_, ln_f_b_, eps);
  if (hidden_states != nullptr) {
    hidden_states->push_back(x);  // HF: the last entry is after ln_f
  }
  return x;
}

Gpt2ForSequenceClassification::Gpt2ForSequenceClassification(const Gpt2Config& c, WeightLoader& w, std::string source)
    : transformer_(c, w, "transformer."), source_(std::move(source)) {
  score_ = w.take("score.weight", {c.num_labels, c.n_embd});
}

Gpt2ForSequenceClassification::Output Gpt2ForSequenceClassification::forward(const at::Tensor& ids,
                                                                              const at::Tensor& attention_mask,
                                                                              const at::Tensor& positions) const {
  Output out;
  out.hidden = transformer_.forward(ids, positions, attention_mask);  // [B,T,H]
  // The head in float32: a bfloat16 reward keeps ~3 significant digits (the 7-bit mantissa).
  out.scores = dense(out.hidden.to(at::kFloat), score_.to(at::kFloat));  // [B,T,L]
  out.pool_index = sequence_pool_index(ids, config().pad_token_id, source_).to(out.scores.device());
  out.logits = gather_rows(out.scores, out.pool_index);  // [B,L]
  return out;
}

std::unique_ptr<Gpt2ForSequenceClassification> load_gpt2_classifier(const std::filesystem::path& dir,
                                                                     const LoadOptions& options) {
  const Gpt2Config config = load_gpt2_config(dir / "config.json");
  const io::TensorStore store = io::TensorStore::open_dir(dir);
  WeightLoader weights(store, options, dir.string());
  auto model = std::make_unique<Gpt2ForSequenceClassification>(config, weights, dir.string());
  weights.finish();
  log::get("models")->info("loaded GPT-2 sequence classifier from {}: {} layers x {}, {} label(s)", dir.string(),
                           config.n_layer, config.n_embd, config.num_labels);
  return model;
}

}  // namespace icet::models
