#pragma once

// Hugging Face LlavaNextImageProcessor (transformers 4.47), "anyres": the image becomes a base
// tile (the whole image squashed to the tower's input size) followed by the tiles of a grid
// chosen among `image_grid_pinpoints`.
//
//   image -> best pinpoint (h, w) -> aspect-preserving resize (rounded up) -> centred black pad
//         -> row-major patches of crop_size -> [base, patches...] each through
//            CLIPImageProcessor (shortest-edge resize, centre crop, rescale, normalise)
//         -> pixel_values [1 + rows*cols, 3, S, S]

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "core/vision/clip_processor.h"

namespace icet::vision {

// One grid pinpoint: a canvas in pixels, as HF writes it, [height, width].
struct Pinpoint {
  int64_t height = 0;
  int64_t width = 0;
  bool operator==(const Pinpoint&) const = default;
};

// LlavaNextImageProcessor's defaults for image_grid_pinpoints (LLaVA-v1.6 at 336 px).
std::vector<Pinpoint> default_grid_pinpoints();

// Parses a JSON list of [height, width] pairs; InputError naming `where` otherwise.
std::vector<Pinpoint> parse_grid_pinpoints(const nlohmann::json& j, const std::string& where);

// HF select_best_resolution: the pinpoint with the largest effective resolution
// (min(downscaled area, original area)), ties broken by the least wasted area. A 1x4000 strip
// scales to 0 pixels on its thin side everywhere; HF then takes the first pinpoint, and so do
// we. Throws InputError for an empty list.
Pinpoint select_best_resolution(int64_t height, int64_t width, const std::vector<Pinpoint>& pinpoints);

struct AnyresProcessorConfig {
  ClipProcessorConfig clip;  // per-tile processing (size = shortest edge, crop = tile size)
  std::vector<Pinpoint> grid_pinpoints = default_grid_pinpoints();
  bool do_pad = true;  // pads the tile count of a batch; a single image needs none

  // Tile side in pixels: crop_size.height (HF passes crop_size["height"] as patch_size).
  int tile_size() const;
  static AnyresProcessorConfig from_json(const nlohmann::json& j, const std::string& source);
};

AnyresProcessorConfig load_anyres_processor_config(const std::filesystem::path& preprocessor_config_json);

struct AnyresImage {
  at::Tensor pixel_values;  // [1 + rows*cols, 3, S, S] float32, base tile first
  Pinpoint best;            // chosen canvas
  int64_t rows = 0, cols = 0;  // grid of tiles (best / tile size)
  int64_t image_height = 0, image_width = 0;  // original size (HF image_sizes)
};

// LlavaNextImageProcessor.preprocess for one image.
AnyresImage anyres_preprocess(const Image& img, const AnyresProcessorConfig& cfg);

// LlavaNextProcessor._get_number_of_features (integer arithmetic), minus the CLS token for the
// "default" select strategy: the number of <image> tokens the prompt gets.
//   patches: tower side / patch size (tokens per tile side); tile: tower input side.
int64_t anyres_image_token_count(int64_t image_height, int64_t image_width, const std::vector<Pinpoint>& pinpoints,
                                 int64_t tile, int64_t patches, bool drop_cls);

}  // namespace icet::vision
