#include "core/models/llava_next.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <nlohmann/json.hpp>

#include <cmath>

#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/base/log.h"
#include "core/io/safetensors.h"

namespace icet::models {
namespace {

// Python's int(round(x, 7)) for the non-negative values unpad_image produces.
int64_t round7_trunc(double x) { return static_cast<int64_t>(std::nearbyint(x * 1e7) / 1e7); }

}  // namespace

LlavaNextConfig LlavaNextConfig::parse(const nlohmann::json& j, const std::string& source) {
  const json_util::Reader r(j, source);
  const std::string type = r.string("model_type");
  if (type != "llava_next") {
    throw InputError(describe(r.where("model_type"), "\"llava_next\"", "\"" + type + "\""));
  }
  // Every LlavaConfig field means the same here: parse the object as one.
  nlohmann::json as_llava = j;
  as_llava["model_type"] = "llava";
  LlavaNextConfig c;
  c.base = LlavaConfig::parse(json_util::Reader(as_llava, source));
  if (r.has("image_grid_pinpoints")) {
    c.image_grid_pinpoints = vision::parse_grid_pinpoints(j.at("image_grid_pinpoints"), r.where("image_grid_pinpoints"));
  }
  const int64_t S = c.base.vision.image_size;
  for (const auto& p : c.image_grid_pinpoints) {
    if (p.height % S != 0 || p.width % S != 0) {
      throw InputError(describe(r.where("image_grid_pinpoints"),
                                "canvases that are multiples of vision_config.image_size (" + std::to_string(S) + ")",
                                "[" + std::to_string(p.height) + ", " + std::to_string(p.width) + "]",
                                "A grid pinpoint must split into whole tiles."));
    }
  }
  return c;
}

LlavaNextConfig load_llava_next_config(const std::filesystem::path& config_json) {
  const nlohmann::json j = json_util::read_file(config_json);
  return LlavaNextConfig::parse(j, config_json.string());
}

LlavaNextModel::LlavaNextModel(const LlavaNextConfig& config, WeightLoader& w)
    : config_(config), llava_(config.base, w) {
  newline_ = w.take("image_newline", {config.base.text.hidden_size});
}

std::vector<at::Tensor> LlavaNextModel::encode(const at::Tensor& pixel_values, int64_t last_layer) const {
  return llava_.encode(pixel_values, last_layer);
}

at::Tensor LlavaNextModel::select(const at::Tensor& hidden_state) const { return llava_.select(hidden_state); }

at::Tensor LlavaNextModel::project(const at::Tensor& selected) const { return llava_.project(selected); }

std::pair<int64_t, int64_t> LlavaNextModel::grid_shape(int64_t image_height, int64_t image_width) const {
  const vision::Pinpoint best = vision::select_best_resolution(image_height, image_width, config_.image_grid_pinpoints);
  const int64_t S = config_.base.vision.image_size;
  return {best.height / S, best.width / S};
}

namespace {

// unpad_image's crop along one axis of the (rows*p) x (cols*p) grid: (axis, start, length).
struct Unpad {
  int dim;  // 1 = rows, 2 = columns of a [H, rows, cols] grid
  int64_t start, length;
};

Unpad unpad_window(int64_t cur_h, int64_t cur_w, int64_t image_height, int64_t image_width) {
  const double original_aspect = static_cast<double>(image_width) / static_cast<double>(image_height);
  const double current_aspect = static_cast<double>(cur_w) / static_cast<double>(cur_h);
  if (original_aspect > current_aspect) {
    const double scale = static_cast<double>(cur_w) / static_cast<double>(image_width);
    const int64_t new_h = round7_trunc(static_cast<double>(image_height) * scale);
    const int64_t pad = (cur_h - new_h) / 2;  // Python floor division; new_h <= cur_h here
    return {1, pad, cur_h - 2 * pad};
  }
  const double scale = static_cast<double>(cur_h) / static_cast<double>(image_height);
  const int64_t new_w = round7_trunc(static_cast<double>(image_width) * scale);
  const int64_t pad = (cur_w - new_w) / 2;
  return {2, pad, cur_w - 2 * pad};
}

}  // namespace

int64_t LlavaNextModel::packed_tokens(int64_t image_height, int64_t image_width) const {
  const auto [rows, cols] = grid_shape(image_height, image_width);
  const int64_t p = config_.base.vision.image_size / config_.base.vision.patch_size;
  const Unpad u = unpad_window(rows * p, cols * p, image_height, image_width);
  const int64_t h = u.dim == 1 ? u.length : rows * p;
  const int64_t w = u.dim == 2 ? u.length : cols * p;
  const int64_t base = config_.base.image_tokens();
  return base + h * (w + 1);
}

at::Tensor LlavaNextModel::pack(const at::Tensor& tiles, int64_t image_height, int64_t image_width) const {
  const auto [rows, cols] = grid_shape(image_height, image_width);
  const int64_t p = config_.base.vision.image_size / config_.base.vision.patch_size;
  const int64_t H = tiles.size(-1);
  if (tiles.dim() != 3 || tiles.size(0) != 1 + rows * cols || tiles.size(1) != p * p) {
    throw InputError(describe("LLaVA-NeXT image features",
                              "[" + std::to_string(1 + rows * cols) + ", " + std::to_string(p * p) + ", H] (base tile + " +
                                  std::to_string(rows) + "x" + std::to_string(cols) + " grid)",
                              "shape " + c10::str(tiles.sizes()),
                              "With the \"full\" select strategy the CLS row does not fit the grid; it is not supported."));
  }
  const at::Tensor base = tiles[0];  // [p*p, H]
  // [rows*cols, p*p, H] -> [rows, cols, p, p, H] -> [H, rows, p, cols, p] -> [H, rows*p, cols*p]
  at::Tensor grid = tiles.narrow(0, 1, rows * cols)
                        .reshape({rows, cols, p, p, H})
                        .permute({4, 0, 2, 1, 3})
                        .reshape({H, rows * p, cols * p});
  const Unpad u = unpad_window(rows * p, cols * p, image_height, image_width);
  grid = grid.narrow(u.dim, u.start, u.length);  // [H, h, w]
  const int64_t h = grid.size(1);
  // image_newline as one more column on every row, then row-major tokens: [h*(w+1), H]
  const at::Tensor nl = newline_.to(grid.scalar_type()).view({H, 1, 1}).expand({H, h, 1});
  grid = at::cat({grid, nl}, 2).flatten(1, 2).transpose(0, 1);
  return at::cat({base, grid}, 0);
}

std::unique_ptr<LlavaNextModel> load_llava_next(const LlavaNextConfig& config, const io::TensorStore& store,
                                                const std::string& source, const LoadOptions& options,
                                                const LoadProgress& progress) {
  WeightLoader weights(store, options, source, progress);
  weights.set_assumed_defaults(config.base.assumed_defaults);
  auto model = std::make_unique<LlavaNextModel>(config, weights);
  weights.finish();
  log::get("models")->info("loaded llava_next from {}: vision {} layers x {}, text {} layers x {}, {} grid pinpoints",
                           source, config.base.vision.num_hidden_layers, config.base.vision.hidden_size,
                           config.base.text.num_hidden_layers, config.base.text.hidden_size,
                           config.image_grid_pinpoints.size());
  return model;
}

std::unique_ptr<LlavaNextModel> load_llava_next(const std::filesystem::path& dir, const LoadOptions& options,
                                                const LoadProgress& progress) {
  return load_llava_next(load_llava_next_config(dir / "config.json"), io::TensorStore::open_dir(dir), dir.string(),
                         options, progress);
}

}  // namespace icet::models
