#pragma once

// Hugging Face MllamaImageProcessor (transformers 4.47) for one image: the canvas is chosen
// among tile arrangements (rows, cols) with rows*cols <= max_image_tiles, the image is resized
// to fit it (bilinear, aspect kept), zero-padded at the bottom/right, normalised and cut into
// tiles row-major; missing tiles up to max_image_tiles are zero.
//
//   image -> canvas (rows*t, cols*t) -> resize -> pad -> rescale/normalise -> tiles
//         -> pixel_values [max_tiles, 3, t, t], aspect_ratio_id, aspect_ratio_mask [max_tiles]

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "core/vision/clip_processor.h"

namespace icet::vision {

// get_all_supported_aspect_ratios: every (a, b) with a, b >= 1 and a*b <= max_tiles, a-major:
// 4 -> (1,1) (1,2) (1,3) (1,4) (2,1) (2,2) (3,1) (4,1).
std::vector<std::pair<int64_t, int64_t>> supported_aspect_ratios(int64_t max_tiles);

// get_optimal_tiled_canvas: (height, width) in pixels. The smallest scale >= 1 over all
// arrangements, else the largest scale < 1; ties -> the smaller canvas.
std::pair<int64_t, int64_t> optimal_tiled_canvas(int64_t height, int64_t width, int64_t max_tiles, int64_t tile);

// get_image_size_fit_to_canvas: (height, width) of the resized image.
std::pair<int64_t, int64_t> fit_to_canvas(int64_t height, int64_t width, int64_t canvas_height, int64_t canvas_width,
                                          int64_t tile);

struct MllamaProcessorConfig {
  ClipProcessorConfig clip;  // resample (bilinear by default), rescale, mean/std
  int64_t tile_size = 224;   // size.height (= size.width)
  int64_t max_image_tiles = 4;

  static MllamaProcessorConfig from_json(const nlohmann::json& j, const std::string& source);
};

MllamaProcessorConfig load_mllama_processor_config(const std::filesystem::path& preprocessor_config_json);

struct MllamaImage {
  at::Tensor pixel_values;       // [max_tiles, 3, t, t] float32, zero tiles after the real ones
  int64_t rows = 0, cols = 0;    // tile arrangement
  int64_t aspect_ratio_id = 0;   // 1 + index of (rows, cols) in supported_aspect_ratios
  std::vector<int64_t> aspect_ratio_mask;  // [max_tiles]: 1 for the rows*cols real tiles
  int64_t num_tiles() const { return rows * cols; }
};

MllamaImage mllama_preprocess(const Image& img, const MllamaProcessorConfig& cfg);

}  // namespace icet::vision
