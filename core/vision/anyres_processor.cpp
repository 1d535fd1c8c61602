#include "core/vision/anyres_processor.h"

#include <ATen/Functions.h>
#include <nlohmann/json.hpp>
#include <spdlog/fmt/fmt.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/base/error.h"
#include "core/vision/resample.h"

namespace icet::vision {

std::vector<Pinpoint> default_grid_pinpoints() {
  return {{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};
}

std::vector<Pinpoint> parse_grid_pinpoints(const nlohmann::json& j, const std::string& where) {
  const std::string expected = "a non-empty list of [height, width] pairs of positive integers";
  if (!j.is_array() || j.empty()) {
    throw InputError(describe(where, expected, j.dump().substr(0, 60)));
  }
  std::vector<Pinpoint> out;
  for (const auto& p : j) {
    if (!p.is_array() || p.size() != 2 || !p[0].is_number_integer() || !p[1].is_number_integer() ||
        p[0].get<int64_t>() <= 0 || p[1].get<int64_t>() <= 0 || p[0].get<int64_t>() > (1 << 16) ||
        p[1].get<int64_t>() > (1 << 16)) {
      throw InputError(describe(where, expected, p.dump().substr(0, 60)));
    }
    out.push_back({p[0].get<int64_t>(), p[1].get<int64_t>()});
  }
  return out;
}

Pinpoint select_best_resolution(int64_t height, int64_t width, const std::vector<Pinpoint>& pinpoints) {
  if (height <= 0 || width <= 0) {
    throw InputError(describe("anyres image size", "a non-empty image", fmt::format("{}x{}", width, height)));
  }
  // Python floats throughout, as HF: scale = min(w / W, h / H); int() truncates.
  const Pinpoint* best = nullptr;
  int64_t max_effective = 0;
  int64_t min_wasted = std::numeric_limits<int64_t>::max();
  for (const Pinpoint& p : pinpoints) {
    const double scale = std::min(static_cast<double>(p.width) / static_cast<double>(width),
                                  static_cast<double>(p.height) / static_cast<double>(height));
    const auto dw = static_cast<int64_t>(static_cast<double>(width) * scale);
    const auto dh = static_cast<int64_t>(static_cast<double>(height) * scale);
    const int64_t effective = std::min(dw * dh, width * height);
    const int64_t wasted = p.width * p.height - effective;
    // As HF: the first candidate is taken even at effective resolution 0 (a 1x4000 strip), so
    // an extreme aspect ratio still gets a grid; unpadding then keeps only newline rows.
    if (effective > max_effective || (effective == max_effective && wasted < min_wasted)) {
      max_effective = effective;
      min_wasted = wasted;
      best = &p;
    }
  }
  if (best == nullptr) {
    throw InputError(describe("LLaVA-NeXT image_grid_pinpoints", "at least one [height, width] canvas", "none"));
  }
  return *best;
}

int AnyresProcessorConfig::tile_size() const { return clip.crop_size.height.value_or(0); }

AnyresProcessorConfig AnyresProcessorConfig::from_json(const nlohmann::json& j, const std::string& source) {
  AnyresProcessorConfig c;
  c.clip = ClipProcessorConfig::from_json(j, source);
  if (const auto it = j.find("image_grid_pinpoints"); it != j.end() && !it->is_null()) {
    c.grid_pinpoints = parse_grid_pinpoints(*it, source + ": key \"image_grid_pinpoints\"");
  }
  if (const auto it = j.find("do_pad"); it != j.end() && it->is_boolean()) c.do_pad = it->get<bool>();
  if (!c.clip.size.shortest_edge && !(c.clip.size.height && c.clip.size.width)) {
    throw InputError(describe(source + ": key \"size\"", "{\"shortest_edge\": n} or {\"height\", \"width\"}",
                              "neither"));
  }
  const int tile = c.tile_size();
  for (const Pinpoint& p : c.grid_pinpoints) {
    if (p.height % tile != 0 || p.width % tile != 0) {
      throw InputError(describe(source + ": key \"image_grid_pinpoints\"",
                                fmt::format("canvases that are multiples of the tile size {} (crop_size)", tile),
                                fmt::format("[{}, {}]", p.height, p.width),
                                "A grid pinpoint must split into whole tiles."));
    }
  }
  return c;
}

AnyresProcessorConfig load_anyres_processor_config(const std::filesystem::path& file) {
  return AnyresProcessorConfig::from_json(read_preprocessor_config(file), file.string());
}

namespace {

// HF get_patch_output_size: fit (height, width) into `target` keeping the aspect ratio, the
// fitted side rounded up (math.ceil), never past the target.
std::pair<int, int> patch_output_size(int height, int width, const Pinpoint& target) {
  const double scale_w = static_cast<double>(target.width) / width;
  const double scale_h = static_cast<double>(target.height) / height;
  if (scale_w < scale_h) {
    const auto h = std::min<int64_t>(static_cast<int64_t>(std::ceil(height * scale_w)), target.height);
    return {static_cast<int>(h), static_cast<int>(target.width)};
  }
  const auto w = std::min<int64_t>(static_cast<int64_t>(std::ceil(width * scale_h)), target.width);
  return {static_cast<int>(target.height), static_cast<int>(w)};
}

}  // namespace

AnyresImage anyres_preprocess(const Image& img, const AnyresProcessorConfig& cfg) {
  const int tile = cfg.tile_size();
  if (tile <= 0) {
    throw InputError(describe("LLaVA-NeXT processor", "crop_size with a height", "none"));
  }
  AnyresImage out;
  out.image_height = img.height;
  out.image_width = img.width;
  out.best = select_best_resolution(img.height, img.width, cfg.grid_pinpoints);
  out.rows = out.best.height / tile;
  out.cols = out.best.width / tile;

  // Aspect-preserving resize, then centred padding: floor(pad / 2) on both sides, computed
  // again from the resized image (so an odd remainder leaves the canvas one pixel short).
  const auto [rh, rw] = patch_output_size(img.height, img.width, out.best);
  const Image resized = resize(img, rw, rh, cfg.clip.resample);
  const auto [ph, pw] = patch_output_size(resized.height, resized.width, out.best);
  const int pad_y = static_cast<int>((out.best.height - ph) / 2);
  const int pad_x = static_cast<int>((out.best.width - pw) / 2);
  const Image canvas = pad(resized, resized.width + 2 * pad_x, resized.height + 2 * pad_y, pad_x, pad_y);

  // Base tile: the whole image resized to (size, size) (a square of the shortest edge).
  const int base_h = cfg.clip.size.shortest_edge ? *cfg.clip.size.shortest_edge : *cfg.clip.size.height;
  const int base_w = cfg.clip.size.shortest_edge ? *cfg.clip.size.shortest_edge : *cfg.clip.size.width;
  std::vector<at::Tensor> tiles;
  tiles.push_back(clip_preprocess(resize(img, base_w, base_h, cfg.clip.resample), cfg.clip));
  // divide_to_patches: row-major windows of tile x tile, clipped at the canvas edge.
  for (int top = 0; top < canvas.height; top += tile) {
    for (int left = 0; left < canvas.width; left += tile) {
      const Image patch = crop(canvas, left, top, std::min(tile, canvas.width - left), std::min(tile, canvas.height - top));
      tiles.push_back(clip_preprocess(patch, cfg.clip));
    }
  }
  out.pixel_values = at::stack(tiles, 0);  // [1 + n, 3, S, S]
  return out;
}

int64_t anyres_image_token_count(int64_t height, int64_t width, const std::vector<Pinpoint>& pinpoints, int64_t tile,
                                 int64_t patches, bool drop_cls) {
  const Pinpoint best = select_best_resolution(height, width, pinpoints);
  const int64_t scale_h = best.height / tile, scale_w = best.width / tile;
  int64_t cur_h = patches * scale_h, cur_w = patches * scale_w;
  // Python compares the float ratios; cross-multiplying would differ only on exact ties.
  const double original_aspect = static_cast<double>(width) / static_cast<double>(height);
  const double current_aspect = static_cast<double>(cur_w) / static_cast<double>(cur_h);
  if (original_aspect > current_aspect) {
    const int64_t new_h = (height * cur_w) / width;
    cur_h -= ((cur_h - new_h) / 2) * 2;
  } else {
    const int64_t new_w = (width * cur_h) / height;
    cur_w -= ((cur_w - new_w) / 2) * 2;
  }
  const int64_t base = patches * patches + 1;
  return cur_h * cur_w + cur_h + base - (drop_cls ? 1 : 0);
}

}  // namespace icet::vision
