#include "core/models/llava.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include "core/base/error.h"
#include "core/models/ops.h"
#include "core/base/log.h"
#include "core/io/safetensors.h"

namespace icet::models {

LlavaModel::LlavaModel(const LlavaConfig& config, WeightLoader& w)
    : config_(config),
      vision_(config.vision, w, "vision_tower.vision_model."),
      lm_(config.text, w, "language_model.") {
  const int64_t Dv = config.vision.hidden_size, H = config.text.hidden_size;
  proj1_w_ = w.take("multi_modal_projector.linear_1.weight", {H, Dv});
  proj2_w_ = w.take("multi_modal_projector.linear_2.weight", {H, H});
  if (config.multimodal_projector_bias) {
    proj1_b_ = w.take("multi_modal_projector.linear_1.bias", {H});
    proj2_b_ = w.take("multi_modal_projector.linear_2.bias", {H});
  }
}

std::vector<at::Tensor> LlavaModel::encode(const at::Tensor& pixel_values, int64_t last_layer) const {
  return vision_.forward(pixel_values, last_layer);
}

at::Tensor LlavaModel::select(const at::Tensor& hidden_state) const {
  return config_.vision_feature_select_strategy == "default" ? hidden_state.narrow(1, 1, hidden_state.size(1) - 1)
                                                             : hidden_state;
}

at::Tensor LlavaModel::project(const at::Tensor& selected) const {
  return dense(at::gelu(dense(selected, proj1_w_, proj1_b_)), proj2_w_, proj2_b_);
}

at::Tensor LlavaModel::merge(const at::Tensor& ids, const at::Tensor& features) const {
  const int64_t B = features.size(0), N = features.size(1), H = features.size(2);
  const at::Tensor ids_dev = ids.to(features.device());
  const at::Tensor positions = (ids_dev == config_.image_token_index).nonzero().view({-1});  // [N]
  if (positions.size(0) != N) {
    throw InputError(describe("prompt", std::to_string(N) + " image tokens (one per image feature)",
                              std::to_string(positions.size(0))));
  }
  at::Tensor embeds = lm_.embed(ids_dev.view({1, -1})).expand({B, ids.size(0), H}).clone();  // [B,T,H]
  embeds.index_copy_(1, positions, features.to(embeds.scalar_type()));
  return embeds;
}

int64_t LlavaModel::resolve_layer(std::optional<int64_t> layer) const {
  if (!layer) {
    return config_.default_exit_layer();
  }
  const int64_t n = config_.vision.num_hidden_layers;
  if (*layer < 1 || *layer > n) {
    throw InputError(describe("exit layer", "1.." + std::to_string(n) + " (ICET-l = hidden_states[l])",
                              std::to_string(*layer)));
  }
  return *layer;
}

std::unique_ptr<LlavaModel> load_llava(const LlavaConfig& config, const io::TensorStore& store,
                                       const std::string& source, const LoadOptions& options,
                                       const LoadProgress& progress) {
  WeightLoader weights(store, options, source, progress);
  weights.set_assumed_defaults(config.assumed_defaults);
  auto model = std::make_unique<LlavaModel>(config, weights);
  weights.finish();
  log::get("models")->info("loaded llava from {}: vision {} layers x {}, text {} layers x {}", source,
                           config.vision.num_hidden_layers, config.vision.hidden_size, config.text.num_hidden_layers,
                           config.text.hidden_size);
  return model;
}

std::unique_ptr<LlavaModel> load_llava(const std::filesystem::path& dir, const LoadOptions& options,
                                       const LoadProgress& progress) {
  return load_llava(load_llava_config(dir / "config.json"), io::TensorStore::open_dir(dir), dir.string(), options,
                    progress);
}

}  // namespace icet::models
