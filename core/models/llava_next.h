#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/models/config.h"
#include "core/models/llava.h"
#include "core/models/weights.h"
#include "core/vision/anyres_processor.h"

namespace icet::io {
class TensorStore;
}

namespace icet::models {

struct LlavaNextConfig {  // LlavaNextConfig (llava-hf LLaVA-v1.6)
  LlavaConfig base;       // vision tower, LM, projector, image token, feature layer/strategy
  std::vector<vision::Pinpoint> image_grid_pinpoints = vision::default_grid_pinpoints();

  static LlavaNextConfig parse(const nlohmann::json& j, const std::string& source);
};

LlavaNextConfig load_llava_next_config(const std::filesystem::path& config_json);

// LlavaNextForConditionalGeneration with image-encoder early exit (ICET): every tile (base
// tile first) goes through the CLIP tower; the LM takes hidden_states[l] of every tile through
// the unchanged projector, then HF's packing: base tile, then the grid tiles arranged on the
// feature grid, unpadded to the image's aspect ratio, with image_newline after every row.
//
// Shape legend: B batch (exit layers), N tiles (1 + rows*cols), p tokens per tile side
// (S / patch), Dv vision width, H LM width, M packed image tokens, T prompt length.
class LlavaNextModel {
 public:
  LlavaNextModel(const LlavaNextConfig& config, WeightLoader& weights);

  // pixel_values: [N, 3, S, S] -> hidden states 0..last_layer, each [N, p*p+1, Dv]
  std::vector<at::Tensor> encode(const at::Tensor& pixel_values, int64_t last_layer) const;
  // [N, p*p+1, Dv] -> [N, p*p, Dv] (CLS dropped with "default")
  at::Tensor select(const at::Tensor& hidden_state) const;
  // [..., Dv] -> [..., H]
  at::Tensor project(const at::Tensor& selected) const;
  // tiles: [N, p*p, H] projected features of one image (base first); image (height, width)
  // -> packed [M, H]: base p*p rows, then rows x (cols + 1) of the unpadded grid.
  at::Tensor pack(const at::Tensor& tiles, int64_t image_height, int64_t image_width) const;
  // M for an image (the model's arithmetic: unpad_image with round(x, 7)).
  int64_t packed_tokens(int64_t image_height, int64_t image_width) const;
  // (rows, cols) of the grid for an image: best pinpoint / tower input size.
  std::pair<int64_t, int64_t> grid_shape(int64_t image_height, int64_t image_width) const;
  // ids: [T] with M image tokens; features: [B, M, H] -> embeds [B, T, H]
  at::Tensor merge(const at::Tensor& ids, const at::Tensor& features) const { return llava_.merge(ids, features); }

  int64_t resolve_layer(std::optional<int64_t> layer) const { return llava_.resolve_layer(layer); }
  const LlavaNextConfig& config() const { return config_; }
  const LlamaModel& language_model() const { return llava_.language_model(); }
  LlamaModel& language_model() { return llava_.language_model(); }  // e.g. to set LoRA adapters

 private:
  LlavaNextConfig config_;
  LlavaModel llava_;     // tower, projector and LM: the same tensors and names as LLaVA-1.5
  at::Tensor newline_;   // [H] image_newline
};

std::unique_ptr<LlavaNextModel> load_llava_next(const std::filesystem::path& dir, const LoadOptions& options,
                                                const LoadProgress& progress = {});
std::unique_ptr<LlavaNextModel> load_llava_next(const LlavaNextConfig& config, const io::TensorStore& store,
                                                const std::string& source, const LoadOptions& options,
                                                const LoadProgress& progress = {});

}  // namespace icet::models
