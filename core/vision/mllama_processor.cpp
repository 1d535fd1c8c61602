#include "core/vision/mllama_processor.h"

#include <ATen/Functions.h>
#include <nlohmann/json.hpp>
#include <spdlog/fmt/fmt.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "core/base/error.h"
#include "core/vision/resample.h"

namespace icet::vision {

std::vector<std::pair<int64_t, int64_t>> supported_aspect_ratios(int64_t max_tiles) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t a = 1; a <= max_tiles; ++a) {
    for (int64_t b = 1; b <= max_tiles; ++b) {
      if (a * b <= max_tiles) out.emplace_back(a, b);
    }
  }
  return out;
}

std::pair<int64_t, int64_t> optimal_tiled_canvas(int64_t height, int64_t width, int64_t max_tiles, int64_t tile) {
  // numpy float64, as HF: scale = min(target_h / h, target_w / w) per arrangement (h, w).
  const auto arrangements = supported_aspect_ratios(max_tiles);
  std::vector<double> scales;
  for (const auto& [a, b] : arrangements) {
    const double sh = static_cast<double>(a * tile) / static_cast<double>(height);
    const double sw = static_cast<double>(b * tile) / static_cast<double>(width);
    scales.push_back(sw > sh ? sh : sw);
  }
  double selected = -1.0;
  for (double s : scales) {
    if (s >= 1.0 && (selected < 0.0 || s < selected)) selected = s;
  }
  if (selected < 0.0) {
    for (double s : scales) {
      if (s < 1.0 && s > selected) selected = s;
    }
  }
  std::pair<int64_t, int64_t> best{0, 0};
  int64_t best_area = -1;
  for (size_t i = 0; i < arrangements.size(); ++i) {
    if (scales[i] != selected) continue;
    const int64_t h = arrangements[i].first * tile, w = arrangements[i].second * tile;
    if (best_area < 0 || h * w < best_area) {  // np.argmin: the first of equal areas
      best = {h, w};
      best_area = h * w;
    }
  }
  return best;
}

std::pair<int64_t, int64_t> fit_to_canvas(int64_t height, int64_t width, int64_t canvas_height, int64_t canvas_width,
                                          int64_t tile) {
  const int64_t target_w = std::clamp(width, tile, canvas_width);
  const int64_t target_h = std::clamp(height, tile, canvas_height);
  const double scale_h = static_cast<double>(target_h) / static_cast<double>(height);
  const double scale_w = static_cast<double>(target_w) / static_cast<double>(width);
  if (scale_w < scale_h) {
    const auto h = static_cast<int64_t>(std::floor(static_cast<double>(height) * scale_w));
    return {std::min(h == 0 ? 1 : h, target_h), target_w};  // `or 1`: never 0 rows
  }
  const auto w = static_cast<int64_t>(std::floor(static_cast<double>(width) * scale_h));
  return {target_h, std::min(w == 0 ? 1 : w, target_w)};
}

MllamaProcessorConfig MllamaProcessorConfig::from_json(const nlohmann::json& j, const std::string& source) {
  MllamaProcessorConfig c;
  c.clip = ClipProcessorConfig::from_json(j, source);
  if (j.find("resample") == j.end()) c.clip.resample = Resample::Bilinear;  // MllamaImageProcessor's default
  if (const auto it = j.find("size"); it != j.end() && !it->is_null()) {
    if (!c.clip.size.height || !c.clip.size.width || *c.clip.size.height != *c.clip.size.width) {
      throw InputError(describe(source + ": key \"size\"", "{\"height\": t, \"width\": t} (square tiles)",
                                it->dump().substr(0, 60)));
    }
    c.tile_size = *c.clip.size.height;
  }
  if (const auto it = j.find("max_image_tiles"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > 64) {
      throw InputError(describe(source + ": key \"max_image_tiles\"", "an integer in 1..64", it->dump().substr(0, 60)));
    }
    c.max_image_tiles = it->get<int64_t>();
  }
  return c;
}

MllamaProcessorConfig load_mllama_processor_config(const std::filesystem::path& file) {
  return MllamaProcessorConfig::from_json(read_preprocessor_config(file), file.string());
}

MllamaImage mllama_preprocess(const Image& img, const MllamaProcessorConfig& cfg) {
  if (img.empty()) {
    throw InputError(describe("Mllama image processor", "a non-empty image", fmt::format("{}x{}", img.width, img.height)));
  }
  const int64_t t = cfg.tile_size;
  const auto [canvas_h, canvas_w] = optimal_tiled_canvas(img.height, img.width, cfg.max_image_tiles, t);
  MllamaImage out;
  out.rows = canvas_h / t;
  out.cols = canvas_w / t;
  const auto [new_h, new_w] = fit_to_canvas(img.height, img.width, canvas_h, canvas_w, t);
  const Image resized = cfg.clip.do_resize ? resize(img, static_cast<int>(new_w), static_cast<int>(new_h), cfg.clip.resample) : img;
  if (resized.width > canvas_w || resized.height > canvas_h) {
    throw InputError(describe("Mllama image processor", fmt::format("an image within the {}x{} canvas", canvas_w, canvas_h),
                              fmt::format("{}x{} (do_resize is off)", resized.width, resized.height)));
  }
  // Zero padding at the bottom and right, before normalisation (padded pixels are black).
  const Image canvas = pad(resized, static_cast<int>(canvas_w), static_cast<int>(canvas_h), 0, 0);
  const std::array<float, 3> no_mean{0.0F, 0.0F, 0.0F};
  const std::array<float, 3> no_std{1.0F, 1.0F, 1.0F};
  const at::Tensor pixels = to_normalized_tensor(canvas, cfg.clip.do_normalize ? cfg.clip.image_mean : no_mean,
                                                 cfg.clip.do_normalize ? cfg.clip.image_std : no_std,
                                                 cfg.clip.do_rescale ? cfg.clip.rescale_factor : 1.0);  // [3,H,W]
  // [3, rows*t, cols*t] -> [rows*cols, 3, t, t], row-major; then zero tiles up to max_tiles.
  at::Tensor tiles = pixels.view({3, out.rows, t, out.cols, t}).permute({1, 3, 0, 2, 4}).reshape({out.rows * out.cols, 3, t, t});
  out.pixel_values = at::zeros({cfg.max_image_tiles, 3, t, t}, at::TensorOptions().dtype(at::kFloat));
  out.pixel_values.narrow(0, 0, out.num_tiles()).copy_(tiles);

  const auto ratios = supported_aspect_ratios(cfg.max_image_tiles);
  const auto it = std::find(ratios.begin(), ratios.end(), std::pair<int64_t, int64_t>{out.rows, out.cols});
  out.aspect_ratio_id = 1 + (it - ratios.begin());
  out.aspect_ratio_mask.assign(static_cast<size_t>(cfg.max_image_tiles), 0);
  for (int64_t i = 0; i < out.num_tiles(); ++i) out.aspect_ratio_mask[static_cast<size_t>(i)] = 1;
  out.aspect_ratio_mask[0] = 1;
  return out;
}

}  // namespace icet::vision
