#include "core/models/mllama.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <set>

#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/base/log.h"
#include "core/io/safetensors.h"
#include "core/models/ops.h"

namespace icet::models {
namespace {

using json_util::Reader;

std::string list_string(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// x: [..., d] -> [..., d]: (-x2, x1) over halves (HF rotate_half).
at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

// --- configs -------------------------------------------------------------------------------

MllamaVisionConfig MllamaVisionConfig::parse(const Reader& r) {
  MllamaVisionConfig c;
  const std::string type = r.string("model_type", "mllama_vision_model");
  if (type != "mllama_vision_model") {
    throw InputError(describe(r.where("model_type"), "\"mllama_vision_model\"", "\"" + type + "\""));
  }
  c.hidden_size = r.integer("hidden_size", c.hidden_size);
  c.hidden_act = r.string("hidden_act", c.hidden_act);
  c.num_hidden_layers = r.integer("num_hidden_layers", c.num_hidden_layers);
  c.num_global_layers = r.integer("num_global_layers", c.num_global_layers);
  c.num_attention_heads = r.integer("attention_heads", c.num_attention_heads);
  c.num_channels = r.integer("num_channels", c.num_channels);
  c.intermediate_size = r.integer("intermediate_size", c.intermediate_size);
  c.vision_output_dim = r.integer("vision_output_dim", c.vision_output_dim);
  c.image_size = r.integer("image_size", c.image_size);
  c.patch_size = r.integer("patch_size", c.patch_size);
  c.norm_eps = r.number("norm_eps", c.norm_eps);
  c.max_num_tiles = r.integer("max_num_tiles", c.max_num_tiles);
  c.intermediate_layers_indices = r.integers("intermediate_layers_indices", c.intermediate_layers_indices);
  if (r.has("supported_aspect_ratios")) {
    const auto& j = r.json().at("supported_aspect_ratios");
    c.supported_aspect_ratios.clear();
    bool ok = j.is_array() && !j.empty();
    for (const auto& p : ok ? j : nlohmann::json::array()) {
      if (!p.is_array() || p.size() != 2 || !p[0].is_number_integer() || !p[1].is_number_integer() ||
          p[0].get<int64_t>() < 1 || p[1].get<int64_t>() < 1) {
        ok = false;
        break;
      }
      c.supported_aspect_ratios.emplace_back(p[0].get<int64_t>(), p[1].get<int64_t>());
    }
    if (!ok) {
      throw InputError(describe(r.where("supported_aspect_ratios"), "a non-empty list of [rows, cols] pairs",
                                j.dump().substr(0, 60)));
    }
  }
  for (auto [key, value] : {std::pair{"hidden_size", c.hidden_size}, {"num_hidden_layers", c.num_hidden_layers},
                            {"attention_heads", c.num_attention_heads}, {"num_channels", c.num_channels},
                            {"intermediate_size", c.intermediate_size}, {"image_size", c.image_size},
                            {"patch_size", c.patch_size}, {"max_num_tiles", c.max_num_tiles}}) {
    require_config_size(r, key, value);
  }
  if (c.num_global_layers < 0 || c.num_global_layers > config_size_limit("num_hidden_layers")) {
    throw InputError(describe(r.where("num_global_layers"), "an integer from 0 to 1024", std::to_string(c.num_global_layers)));
  }
  if (c.hidden_size % c.num_attention_heads != 0) {
    throw InputError(describe(r.where("hidden_size"), "a multiple of attention_heads", std::to_string(c.hidden_size)));
  }
  if (c.image_size % c.patch_size != 0) {
    throw InputError(describe(r.where("image_size"), "a multiple of patch_size", std::to_string(c.image_size)));
  }
  for (int64_t i : c.intermediate_layers_indices) {
    if (i < 0 || i > c.num_hidden_layers) {
      throw InputError(describe(r.where("intermediate_layers_indices"),
                                "hidden-state indices in 0.." + std::to_string(c.num_hidden_layers),
                                list_string(c.intermediate_layers_indices)));
    }
  }
  const int64_t dout = c.hidden_size * (1 + static_cast<int64_t>(c.intermediate_layers_indices.size()));
  if (c.vision_output_dim != dout) {
    throw InputError(describe(r.where("vision_output_dim"),
                              std::to_string(dout) + " (hidden_size x (1 + number of intermediate layers))",
                              std::to_string(c.vision_output_dim)));
  }
  if (c.hidden_act != "gelu") {
    throw InputError(describe(r.where("hidden_act"), "\"gelu\"", "\"" + c.hidden_act + "\""));
  }
  return c;
}

MllamaTextConfig MllamaTextConfig::parse(const Reader& r) {
  const std::string type = r.string("model_type", "mllama_text_model");
  if (type != "mllama_text_model") {
    throw InputError(describe(r.where("model_type"), "\"mllama_text_model\"", "\"" + type + "\""));
  }
  // MllamaTextConfig's defaults differ from LlamaConfig's: fill them in, then parse as Llama.
  nlohmann::json j = r.json().is_object() ? r.json() : nlohmann::json::object();
  const nlohmann::json defaults = {{"vocab_size", 128256},       {"hidden_size", 4096},
                                   {"intermediate_size", 14336}, {"num_hidden_layers", 40},
                                   {"num_attention_heads", 32},  {"num_key_value_heads", 8},
                                   {"rope_theta", 500000.0},     {"rms_norm_eps", 1e-5},
                                   {"max_position_embeddings", 131072}, {"bos_token_id", 128000},
                                   {"eos_token_id", 128001},     {"pad_token_id", 128004}};
  for (const auto& [key, value] : defaults.items()) {
    if (!j.contains(key) || j[key].is_null()) j[key] = value;
  }
  j["model_type"] = "llama";
  MllamaTextConfig c;
  c.llama = LlamaConfig::parse(Reader(j, r.file(), r.key_path("")));
  c.cross_attention_layers = r.integers("cross_attention_layers", c.cross_attention_layers);
  std::set<int64_t> seen;
  for (int64_t i : c.cross_attention_layers) {
    if (i < 0 || i >= c.llama.num_hidden_layers || !seen.insert(i).second) {
      throw InputError(describe(r.where("cross_attention_layers"),
                                "distinct layer indices in 0.." + std::to_string(c.llama.num_hidden_layers - 1) +
                                    " (num_hidden_layers " + std::to_string(c.llama.num_hidden_layers) + ")",
                                list_string(c.cross_attention_layers)));
    }
  }
  return c;
}

MllamaConfig MllamaConfig::parse(const nlohmann::json& j, const std::string& source) {
  const Reader r(j, source);
  const std::string type = r.string("model_type");
  if (type != "mllama") {
    throw InputError(describe(r.where("model_type"), "\"mllama\"", "\"" + type + "\""));
  }
  MllamaConfig c;
  if (!r.has("vision_config")) c.assumed_defaults.push_back("vision_config (Llama 3.2 11B's vision tower)");
  if (!r.has("text_config")) c.assumed_defaults.push_back("text_config (Llama 3.1 8B sizes: hidden_size 4096, 40 layers)");
  c.vision = MllamaVisionConfig::parse(r.child("vision_config"));
  c.text = MllamaTextConfig::parse(r.child("text_config"));
  c.image_token_index = r.integer("image_token_index", c.image_token_index);
  if (c.image_token_index < 0) {
    throw InputError(describe(r.where("image_token_index"), "a token id >= 0", std::to_string(c.image_token_index)));
  }
  return c;
}

MllamaConfig load_mllama_config(const std::filesystem::path& config_json) {
  return MllamaConfig::parse(json_util::read_file(config_json), config_json.string());
}

// --- vision --------------------------------------------------------------------------------

MllamaVisionModel::Layer MllamaVisionModel::load_layer(WeightLoader& w, const std::string& l, bool gated) const {
  const int64_t D = config_.hidden_size, I = config_.intermediate_size;
  Layer L;
  L.ln1_w = w.take(l + "input_layernorm.weight", {D});
  L.ln1_b = w.take(l + "input_layernorm.bias", {D});
  L.q_w = w.take(l + "self_attn.q_proj.weight", {D, D});
  L.k_w = w.take(l + "self_attn.k_proj.weight", {D, D});
  L.v_w = w.take(l + "self_attn.v_proj.weight", {D, D});
  L.o_w = w.take(l + "self_attn.o_proj.weight", {D, D});
  L.ln2_w = w.take(l + "post_attention_layernorm.weight", {D});
  L.ln2_b = w.take(l + "post_attention_layernorm.bias", {D});
  L.fc1_w = w.take(l + "mlp.fc1.weight", {I, D});
  L.fc1_b = w.take(l + "mlp.fc1.bias", {I});
  L.fc2_w = w.take(l + "mlp.fc2.weight", {D, I});
  L.fc2_b = w.take(l + "mlp.fc2.bias", {D});
  if (gated) {
    L.gate_attn = w.take(l + "gate_attn", {1});
    L.gate_ffn = w.take(l + "gate_ffn", {1});
  }
  return L;
}

MllamaVisionModel::MllamaVisionModel(const MllamaVisionConfig& c, WeightLoader& w, const std::string& prefix)
    : config_(c) {
  const int64_t D = c.hidden_size, A = c.max_num_tiles, P = c.num_patches(), R = c.max_aspect_ratio_id() + 1;
  patch_w_ = w.take(prefix + "patch_embedding.weight", {D, c.num_channels, c.patch_size, c.patch_size});
  class_embedding_ = w.take(prefix + "class_embedding", {D});
  pos_embedding_ = w.take(prefix + "gated_positional_embedding.embedding", {P, D});
  pos_gate_ = w.take(prefix + "gated_positional_embedding.gate", {1});
  tile_pos_embedding_ = w.take(prefix + "gated_positional_embedding.tile_embedding.weight", {R, A * P * D});
  pre_tile_ = w.take(prefix + "pre_tile_positional_embedding.embedding.weight", {R, A * D});
  pre_tile_gate_ = w.take(prefix + "pre_tile_positional_embedding.gate", {1});
  post_tile_ = w.take(prefix + "post_tile_positional_embedding.embedding.weight", {R, A * D});
  post_tile_gate_ = w.take(prefix + "post_tile_positional_embedding.gate", {1});
  ln_pre_w_ = w.take(prefix + "layernorm_pre.weight", {D});
  ln_pre_b_ = w.take(prefix + "layernorm_pre.bias", {D});
  ln_post_w_ = w.take(prefix + "layernorm_post.weight", {D});
  ln_post_b_ = w.take(prefix + "layernorm_post.bias", {D});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    local_.push_back(load_layer(w, prefix + "transformer.layers." + std::to_string(i) + ".", false));
  }
  for (int64_t i = 0; i < c.num_global_layers; ++i) {
    global_.push_back(load_layer(w, prefix + "global_transformer.layers." + std::to_string(i) + ".", true));
  }
}

std::vector<int64_t> MllamaVisionModel::taps(int64_t layer) const {
  std::vector<int64_t> out;
  for (int64_t i : config_.intermediate_layers_indices) out.push_back(std::min(i, layer));
  return out;
}

at::Tensor MllamaVisionModel::attention_mask(const at::Tensor& aspect_mask, c10::ScalarType dtype) const {
  const int64_t B = aspect_mask.size(0), A = aspect_mask.size(1), Pp = config_.padded_patches();
  const int64_t pad = Pp - config_.num_patches();
  at::Tensor m = aspect_mask.to(dtype).view({B, A, 1, 1}).repeat({1, 1, Pp, 1});  // [B,A,Pp,1]
  // HF: attention_mask[:, :, -pad:] = 0 (with pad 0 that slice is everything, as in HF).
  m.narrow(2, Pp - (pad > 0 ? pad : Pp), pad > 0 ? pad : Pp).zero_();
  m = (1 - m).reshape({B, A * Pp, 1});
  // Masked only where both query and key are padding (padded token or padded tile).
  return (at::matmul(m, m.transpose(-1, -2)) * finfo_min(dtype)).unsqueeze(1);  // [B,1,A*Pp,A*Pp]
}

at::Tensor MllamaVisionModel::aspect_rows(const at::Tensor& table, const at::Tensor& ids, int64_t n) const {
  const at::Tensor cpu = ids.to(at::kCPU).to(at::kLong);
  const int64_t lo = cpu.min().item<int64_t>(), hi = cpu.max().item<int64_t>();
  if (lo < 0 || hi >= table.size(0)) {
    throw InputError(describe("Mllama aspect_ratio_id", "0.." + std::to_string(table.size(0) - 1) +
                                                           " (rows of the tile embedding tables)",
                              std::to_string(lo < 0 ? lo : hi),
                              "The image processor's max_image_tiles must match vision_config.max_num_tiles."));
  }
  return at::embedding(table, ids.to(table.device()).to(at::kLong))
      .view({ids.size(0), config_.max_num_tiles, n, config_.hidden_size});
}

at::Tensor MllamaVisionModel::layer_forward(const Layer& l, const at::Tensor& x, const at::Tensor& mask) const {
  const int64_t B = x.size(0), T = x.size(1), D = config_.hidden_size;
  const int64_t h = config_.num_attention_heads, d = D / h;
  const double eps = config_.norm_eps;
  at::Tensor y = at::layer_norm(x, {D}, l.ln1_w, l.ln1_b, eps);
  const at::Tensor q = dense(y, l.q_w).view({B, T, h, d}).transpose(1, 2);  // [B,h,T,d]
  const at::Tensor k = dense(y, l.k_w).view({B, T, h, d}).transpose(1, 2);
  const at::Tensor v = dense(y, l.v_w).view({B, T, h, d}).transpose(1, 2);
  // HF MllamaVisionAttention divides the product (not q) by sqrt(d).
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(d)) + mask;  // [B,h,T,T]
  at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  y = dense(at::matmul(probs, v).transpose(1, 2).reshape({B, T, D}), l.o_w);
  if (l.gate_attn.defined()) y = l.gate_attn.tanh() * y;
  at::Tensor h1 = x + y;
  y = at::layer_norm(h1, {D}, l.ln2_w, l.ln2_b, eps);
  y = dense(at::gelu(dense(y, l.fc1_w, l.fc1_b)), l.fc2_w, l.fc2_b);
  if (l.gate_ffn.defined()) y = l.gate_ffn.tanh() * y;
  return h1 + y;
}

std::vector<at::Tensor> MllamaVisionModel::encode_local(const at::Tensor& pixel_values, const at::Tensor& aspect_ids,
                                                        const at::Tensor& aspect_mask, int64_t last_layer) const {
  const int64_t A = config_.max_num_tiles, C = config_.num_channels, t = config_.image_size, D = config_.hidden_size;
  const int64_t P = config_.num_patches(), Pp = config_.padded_patches(), n = P - 1;
  if (pixel_values.dim() != 5 || pixel_values.size(1) != A || pixel_values.size(2) != C || pixel_values.size(3) != t ||
      pixel_values.size(4) != t) {
    throw InputError(describe("Mllama vision input", "pixel values [B, " + std::to_string(A) + ", " + std::to_string(C) +
                                                         ", " + std::to_string(t) + ", " + std::to_string(t) + "]",
                              "shape " + c10::str(pixel_values.sizes())));
  }
  const int64_t B = pixel_values.size(0);
  if (aspect_ids.numel() != B || aspect_mask.dim() != 2 || aspect_mask.size(0) != B || aspect_mask.size(1) != A) {
    throw InputError(describe("Mllama tile layout", "aspect_ratio_ids [B] and aspect_ratio_mask [B, " +
                                                        std::to_string(A) + "]",
                              "shapes " + c10::str(aspect_ids.sizes()) + " and " + c10::str(aspect_mask.sizes())));
  }
  if (last_layer < 0 || last_layer > config_.num_hidden_layers) {
    throw InputError(describe("Mllama vision exit layer", "0.." + std::to_string(config_.num_hidden_layers),
                              std::to_string(last_layer)));
  }
  const at::Tensor ids = aspect_ids.reshape({B});
  // [B*A, C, t, t] -> [B*A, D, g, g] -> [B, A, n, D]
  at::Tensor x = at::conv2d(pixel_values.to(patch_w_.scalar_type()).reshape({B * A, C, t, t}), patch_w_, {},
                            config_.patch_size)
                     .flatten(2)
                     .transpose(1, 2)
                     .reshape({B, A, n, D});
  x = x + aspect_rows(pre_tile_, ids, 1) * pre_tile_gate_.tanh();  // gated pre-tile embedding
  x = at::cat({class_embedding_.view({1, 1, 1, D}).expand({B, A, 1, D}), x}, 2);  // CLS first: [B,A,P,D]
  const at::Tensor g = pos_gate_.tanh();
  x = x + ((1 - g) * pos_embedding_).view({1, 1, P, D});
  x = x + g * aspect_rows(tile_pos_embedding_, ids, P);
  x = at::layer_norm(x, {D}, ln_pre_w_, ln_pre_b_, config_.norm_eps);
  x = at::constant_pad_nd(x, {0, 0, 0, Pp - P}).reshape({B, A * Pp, D});  // [B, A*Pp, D]
  const at::Tensor mask = attention_mask(aspect_mask.to(x.device()), x.scalar_type());
  std::vector<at::Tensor> states{x};
  for (int64_t i = 0; i < last_layer; ++i) {
    x = layer_forward(local_[static_cast<size_t>(i)], x, mask);
    states.push_back(x);
  }
  return states;
}

at::Tensor MllamaVisionModel::finish_batch(const at::Tensor& last, const std::vector<at::Tensor>& tap_states,
                                           const at::Tensor& aspect_ids, const at::Tensor& aspect_mask) const {
  const int64_t B = last.size(0), A = config_.max_num_tiles, D = config_.hidden_size;
  const int64_t P = config_.num_patches(), Pp = config_.padded_patches();
  at::Tensor x = at::layer_norm(last, {D}, ln_post_w_, ln_post_b_, config_.norm_eps).reshape({B, A, Pp, D});
  x = x + aspect_rows(post_tile_, aspect_ids.reshape({B}), 1) * post_tile_gate_.tanh();
  x = x.reshape({B, A * Pp, D});
  const at::Tensor mask = attention_mask(aspect_mask.to(x.device()), x.scalar_type());
  for (const Layer& l : global_) x = layer_forward(l, x, mask);
  x = x.reshape({B, A, Pp, D}).narrow(2, 0, P);  // padding removed: [B,A,P,D]
  if (tap_states.empty()) return x.contiguous();
  // HF stacks the taps on a new last axis, so features interleave: [.., D, K] -> [.., D*K].
  const int64_t K = static_cast<int64_t>(tap_states.size());
  const at::Tensor taps = at::stack(tap_states, -1).reshape({B, A, Pp, D * K}).narrow(2, 0, P);
  return at::cat({x, taps}, -1);  // [B, A, P, D*(1+K)]
}

at::Tensor MllamaVisionModel::finish(const std::vector<at::Tensor>& states, int64_t layer, const at::Tensor& aspect_ids,
                                     const at::Tensor& aspect_mask) const {
  if (layer < 1 || layer >= static_cast<int64_t>(states.size())) {
    throw InputError(describe("Mllama exit layer", "1.." + std::to_string(static_cast<int64_t>(states.size()) - 1),
                              std::to_string(layer)));
  }
  std::vector<at::Tensor> tap_states;
  for (int64_t i : taps(layer)) tap_states.push_back(states[static_cast<size_t>(i)]);
  return finish_batch(states[static_cast<size_t>(layer)], tap_states, aspect_ids, aspect_mask);
}

at::Tensor MllamaVisionModel::finish_layers(const std::vector<at::Tensor>& states, const std::vector<int64_t>& layers,
                                            const at::Tensor& aspect_ids, const at::Tensor& aspect_mask) const {
  for (int64_t layer : layers) {
    if (layer < 1 || layer >= static_cast<int64_t>(states.size())) {
      throw InputError(describe("Mllama exit layer", "1.." + std::to_string(static_cast<int64_t>(states.size()) - 1),
                                std::to_string(layer)));
    }
  }
  // Layers go through the global encoder as one batch, in chunks whose attention scores stay
  // near 1 GiB (Llama 3.2 Vision: 16 heads x 4128^2 floats ~ 1.1 GB per layer).
  const int64_t S = config_.max_num_tiles * config_.padded_patches();
  const int64_t per_layer = config_.num_attention_heads * S * S * 4;
  const auto chunk = static_cast<size_t>(std::max<int64_t>(1, (int64_t{1} << 30) / std::max<int64_t>(per_layer, 1)));
  std::vector<at::Tensor> outs;
  for (size_t begin = 0; begin < layers.size(); begin += chunk) {
    const size_t end = std::min(layers.size(), begin + chunk);
    const auto L = static_cast<int64_t>(end - begin);
    std::vector<at::Tensor> last;
    std::vector<std::vector<at::Tensor>> per_tap(config_.intermediate_layers_indices.size());
    for (size_t i = begin; i < end; ++i) {
      last.push_back(states[static_cast<size_t>(layers[i])]);
      const auto t = taps(layers[i]);
      for (size_t j = 0; j < t.size(); ++j) per_tap[j].push_back(states[static_cast<size_t>(t[j])]);
    }
    std::vector<at::Tensor> tap_states;
    for (auto& v : per_tap) tap_states.push_back(at::cat(v, 0));  // [L, A*Pp, D]
    outs.push_back(finish_batch(at::cat(last, 0), tap_states, aspect_ids.reshape({1}).repeat({L}),
                                aspect_mask.reshape({1, -1}).repeat({L, 1})));
  }
  return outs.size() == 1 ? outs.front() : at::cat(outs, 0);
}

// --- text ----------------------------------------------------------------------------------

MllamaTextModel::MllamaTextModel(const MllamaTextConfig& config, WeightLoader& w, const std::string& prefix)
    : config_(config) {
  const LlamaConfig& c = config.llama;
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, d = c.head_dim;
  const int64_t q_out = c.num_attention_heads * d, kv_out = c.num_key_value_heads * d;
  const std::string m = prefix + "model.";
  // HF adds 8 rows to the embedding (the image token is the first id past the vocabulary).
  embed_tokens_ = w.take(m + "embed_tokens.weight", {V + 8, H});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string l = m + "layers." + std::to_string(i) + ".";
    Layer L;
    L.cross = std::find(config.cross_attention_layers.begin(), config.cross_attention_layers.end(), i) !=
              config.cross_attention_layers.end();
    const std::string a = l + (L.cross ? "cross_attn." : "self_attn.");
    L.in_norm = w.take(l + "input_layernorm.weight", {H});
    L.q_w = w.take(a + "q_proj.weight", {q_out, H});
    L.k_w = w.take(a + "k_proj.weight", {kv_out, H});
    L.v_w = w.take(a + "v_proj.weight", {kv_out, H});
    L.o_w = w.take(a + "o_proj.weight", {H, q_out});
    if (L.cross) {
      L.q_norm = w.take(a + "q_norm.weight", {d});
      L.k_norm = w.take(a + "k_norm.weight", {d});
      L.attn_gate = w.take(l + "cross_attn_attn_gate", {1});
      L.mlp_gate = w.take(l + "cross_attn_mlp_gate", {1});
    }
    L.post_norm = w.take(l + "post_attention_layernorm.weight", {H});
    L.gate_w = w.take(l + "mlp.gate_proj.weight", {I, H});
    L.up_w = w.take(l + "mlp.up_proj.weight", {I, H});
    L.down_w = w.take(l + "mlp.down_proj.weight", {H, I});
    layers_.push_back(std::move(L));
  }
  norm_ = w.take(m + "norm.weight", {H});
  lm_head_ = c.tie_word_embeddings && !w.contains(prefix + "lm_head.weight") ? embed_tokens_.narrow(0, 0, V)
                                                                             : w.take(prefix + "lm_head.weight", {V, H});
  inv_freq_ = rope_inv_freq(c).to(embed_tokens_.device());
}

KvCache MllamaTextModel::make_cache(int64_t batch, int64_t capacity) const {
  const LlamaConfig& c = config_.llama;
  KvCache cache;
  const auto opts = embed_tokens_.options();
  for (const Layer& l : layers_) {
    // Cross layers hold the vision K/V once computed; empty until then.
    const int64_t n = l.cross ? 0 : capacity;
    cache.k.push_back(at::empty({batch, c.num_key_value_heads, n, c.head_dim}, opts));
    cache.v.push_back(at::empty({batch, c.num_key_value_heads, n, c.head_dim}, opts));
  }
  cache.capacity = capacity;
  return cache;
}

at::Tensor MllamaTextModel::embed(const at::Tensor& ids) const {
  return at::embedding(embed_tokens_, ids.to(embed_tokens_.device()));
}

at::Tensor MllamaTextModel::rms_norm(const at::Tensor& x, const at::Tensor& w) const {
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean({-1}, true) + config_.llama.rms_norm_eps);
  return w * normed.to(x.scalar_type());
}

at::Tensor MllamaTextModel::self_attention(const Layer& l, size_t index, const at::Tensor& x, const at::Tensor& cos,
                                           const at::Tensor& sin, KvCache* cache, const at::Tensor& mask) const {
  const LlamaConfig& c = config_.llama;
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t h = c.num_attention_heads, g = c.num_key_value_heads, d = c.head_dim, r = h / g;
  at::Tensor q = dense(x, l.q_w).view({B, T, h, d}).transpose(1, 2);  // [B,h,T,d]
  at::Tensor k = dense(x, l.k_w).view({B, T, g, d}).transpose(1, 2);  // [B,g,T,d]
  at::Tensor v = dense(x, l.v_w).view({B, T, g, d}).transpose(1, 2);
  q = q * cos + rotate_half(q) * sin;
  k = k * cos + rotate_half(k) * sin;
  if (cache != nullptr) {
    const int64_t P = cache->length;
    cache->k[index].narrow(2, P, T).copy_(k);
    cache->v[index].narrow(2, P, T).copy_(v);
    k = cache->k[index].narrow(2, 0, P + T);
    v = cache->v[index].narrow(2, 0, P + T);
  }
  const int64_t S = k.size(2);
  // GQA: the r query heads of a kv group stacked along the query axis ([B,g,r*T,d]).
  q = q.reshape({B, g, r * T, d});
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(d));
  if (mask.defined()) scores = (scores.view({B, g, r, T, S}) + mask.unsqueeze(1)).view({B, g, r * T, S});
  at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  return dense(at::matmul(probs, v).view({B, h, T, d}).transpose(1, 2).reshape({B, T, h * d}), l.o_w);
}

at::Tensor MllamaTextModel::cross_attention(const Layer& l, size_t index, const at::Tensor& x,
                                            const CrossAttentionInputs& cross, KvCache* cache,
                                            const at::Tensor& mask) const {
  const LlamaConfig& c = config_.llama;
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t h = c.num_attention_heads, g = c.num_key_value_heads, d = c.head_dim;
  at::Tensor q = rms_norm(dense(x, l.q_w).view({B, T, h, d}).transpose(1, 2), l.q_norm);  // [B,h,T,d], per-head norm
  at::Tensor k, v;
  if (cache != nullptr && cache->length > 0 && cache->k[index].size(2) > 0) {
    k = cache->k[index];
    v = cache->v[index];
  } else {
    if (!cross.states.defined() || cross.states.size(0) != B) {
      throw Error(describe("Mllama cross-attention", "vision states for " + std::to_string(B) + " rows",
                           cross.states.defined() ? c10::str(cross.states.sizes()) : "none"));
    }
    const at::Tensor s = cross.states.to(x.scalar_type());  // [B,S,H]
    k = rms_norm(dense(s, l.k_w).view({B, -1, g, d}).transpose(1, 2), l.k_norm);  // [B,g,S,d]
    v = dense(s, l.v_w).view({B, -1, g, d}).transpose(1, 2);
    if (cache != nullptr) {
      cache->k[index] = k;
      cache->v[index] = v;
    }
  }
  // HF repeat_kv: kv head j serves query heads j*r .. j*r+r-1.
  k = k.repeat_interleave(h / g, 1);
  v = v.repeat_interleave(h / g, 1);
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(d)) + mask;  // [B,h,T,S]
  at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  return dense(at::matmul(probs, v).transpose(1, 2).reshape({B, T, h * d}), l.o_w);
}

at::Tensor MllamaTextModel::forward(const at::Tensor& embeds, const at::Tensor& positions,
                                    const CrossAttentionInputs& cross, KvCache* cache) const {
  const int64_t T = embeds.size(1);
  const int64_t P = cache != nullptr ? cache->length : 0;
  if (cache != nullptr && P + T > cache->capacity) {
    throw Error(describe("KV cache", "at most " + std::to_string(cache->capacity) + " positions", std::to_string(P + T)));
  }
  const auto dev = embeds.device();
  const auto dtype = embeds.scalar_type();
  const double min_value = finfo_min(dtype);
  at::Tensor freqs = positions.to(dev).to(at::kFloat).unsqueeze(-1) * inv_freq_.view({1, 1, -1});  // [B,T,d/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1).unsqueeze(1);
  const at::Tensor cos = emb.cos().to(dtype), sin = emb.sin().to(dtype);

  at::Tensor causal;  // [1,1,T,P+T]
  if (T > 1) {
    at::Tensor q_pos = at::arange(P, P + T, at::TensorOptions().dtype(at::kLong).device(dev)).view({T, 1});
    at::Tensor k_pos = at::arange(0, P + T, at::TensorOptions().dtype(at::kLong).device(dev)).view({1, P + T});
    causal = at::zeros({1, 1, T, P + T}, at::TensorOptions().dtype(dtype).device(dev))
                 .masked_fill((k_pos <= q_pos).logical_not().view({1, 1, T, P + T}), min_value);
  }
  // Cross-attention mask, HF _prepare_cross_attention_mask: positions that see the image get
  // 0 on real-tile tokens and min elsewhere; positions before the image see nothing, and that
  // full-row mask becomes all zeros (they attend to everything) while their MLP branch is zeroed.
  const at::Tensor sees = positions.to(dev).ge(cross.image_position).to(dtype).unsqueeze(-1);  // [B,T,1]
  const at::Tensor hidden_tokens = (1 - cross.tile_mask.to(dev).to(dtype)).view({1, 1, -1});  // [1,1,S]
  const at::Tensor cross_mask = (hidden_tokens * min_value * sees).unsqueeze(1);  // [B,1,T,S]
  const at::Tensor row_mask = sees;  // [B,T,1]

  at::Tensor x = embeds;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    if (l.cross) {
      x = x + l.attn_gate.tanh() * cross_attention(l, i, rms_norm(x, l.in_norm), cross, cache, cross_mask);
      const at::Tensor y = rms_norm(x, l.post_norm);
      const at::Tensor mlp = dense(at::silu(dense(y, l.gate_w)) * dense(y, l.up_w), l.down_w);
      x = x + l.mlp_gate.tanh() * (row_mask * mlp);
    } else {
      x = x + self_attention(l, i, rms_norm(x, l.in_norm), cos, sin, cache, causal);
      const at::Tensor y = rms_norm(x, l.post_norm);
      x = x + dense(at::silu(dense(y, l.gate_w)) * dense(y, l.up_w), l.down_w);
    }
  }
  if (cache != nullptr) cache->length = P + T;
  return rms_norm(x, norm_);
}

at::Tensor MllamaTextModel::logits(const at::Tensor& hidden) const { return dense(hidden, lm_head_).to(at::kFloat); }

// --- the whole model -----------------------------------------------------------------------

MllamaModel::MllamaModel(const MllamaConfig& config, WeightLoader& w)
    : config_(config),
      vision_(config.vision, w, "vision_model."),
      text_(config.text, w, "language_model.") {
  proj_w_ = w.take("multi_modal_projector.weight", {config.text.llama.hidden_size, config.vision.vision_output_dim});
  proj_b_ = w.take("multi_modal_projector.bias", {config.text.llama.hidden_size});
}

at::Tensor MllamaModel::project(const at::Tensor& vision_output) const {
  const int64_t B = vision_output.size(0);
  return dense(vision_output, proj_w_, proj_b_).reshape({B, -1, config_.text.llama.hidden_size});  // [B, A*P, H]
}

CrossAttentionInputs MllamaModel::cross_inputs(const at::Tensor& ids, const at::Tensor& states, int64_t num_tiles) const {
  const at::Tensor flat = ids.to(at::kCPU).to(at::kLong).reshape({-1}).contiguous();
  const int64_t* p = flat.data_ptr<int64_t>();
  const int64_t* hit = std::find(p, p + flat.numel(), config_.image_token_index);
  if (hit == p + flat.numel()) {
    throw InputError(describe("Mllama prompt", "one <|image|> token (id " + std::to_string(config_.image_token_index) + ")",
                              "none"));
  }
  const int64_t A = config_.vision.max_num_tiles, P = config_.vision.num_patches();
  if (num_tiles < 1 || num_tiles > A) {
    throw InputError(describe("Mllama image", "1.." + std::to_string(A) + " tiles", std::to_string(num_tiles)));
  }
  CrossAttentionInputs c;
  c.states = states;
  c.image_position = hit - p;
  c.tile_mask = at::zeros({A * P}, at::TensorOptions().dtype(at::kFloat));
  c.tile_mask.narrow(0, 0, num_tiles * P).fill_(1);
  return c;
}

int64_t MllamaModel::resolve_layer(std::optional<int64_t> layer) const {
  const int64_t n = config_.vision.num_hidden_layers;
  if (!layer) return n;  // the unmodified model
  if (*layer < 1 || *layer > n) {
    throw InputError(describe("exit layer", "1.." + std::to_string(n) + " (local encoder layers kept)",
                              std::to_string(*layer)));
  }
  return *layer;
}

std::unique_ptr<MllamaModel> load_mllama(const MllamaConfig& config, const io::TensorStore& store,
                                         const std::string& source, const LoadOptions& options,
                                         const LoadProgress& progress) {
  WeightLoader weights(store, options, source, progress);
  weights.set_assumed_defaults(config.assumed_defaults);
  auto model = std::make_unique<MllamaModel>(config, weights);
  weights.finish();
  log::get("models")->info("loaded mllama from {}: vision {}+{} layers x {}, text {} layers x {} (cross {})", source,
                           config.vision.num_hidden_layers, config.vision.num_global_layers, config.vision.hidden_size,
                           config.text.llama.num_hidden_layers, config.text.llama.hidden_size,
                           list_string(config.text.cross_attention_layers));
  return model;
}

std::unique_ptr<MllamaModel> load_mllama(const std::filesystem::path& dir, const LoadOptions& options,
                                         const LoadProgress& progress) {
  return load_mllama(load_mllama_config(dir / "config.json"), io::TensorStore::open_dir(dir), dir.string(), options,
                     progress);
}

}  // namespace icet::models
