#include "core/vision/clip_processor.h"

#include <ATen/Functions.h>
#include <nlohmann/json.hpp>
#include <spdlog/fmt/fmt.h>


#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/base/log.h"

namespace icet::vision {
namespace {

using nlohmann::json;

// Resizing to a shortest edge keeps the aspect ratio, so a 1x20000 strip asked for a shortest
// edge of 336 would become 336x6720000. Refuse targets above the decode limit instead.
constexpr int64_t kMaxResizePixels = ImageLimits{}.max_pixels;

std::string shown(const json& v) {
  std::string s = v.dump();
  if (s.size() > 60) {
    s = s.substr(0, 57) + "...";
  }
  return s;
}

// Field parsing with messages of the form
//   preprocessor_config.json: key "size": expected ..., found ...
class Fields {
 public:
  Fields(const json& j, const std::string& source) : j_(j), source_(source) {}

  [[noreturn]] void fail(const std::string& key, const std::string& expected,
                         const std::string& found, const std::string& hint = {}) const {
    throw InputError(describe(source_ + ": key \"" + key + "\"", expected, found, hint));
  }

  const json* find(const std::string& key) const {
    const auto it = j_.find(key);
    return it == j_.end() ? nullptr : &*it;
  }

  void boolean(const std::string& key, bool& out) const {
    if (const json* v = find(key)) {
      if (!v->is_boolean()) {
        fail(key, "true or false", shown(*v));
      }
      out = v->get<bool>();
    }
  }

  int positive_int(const std::string& key, const json& v) const {
    if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > 1 << 20) {
      fail(key, "a positive integer number of pixels", shown(v));
    }
    return static_cast<int>(v.get<int64_t>());
  }

  // HF's get_size_dict: an int is a shortest edge (size) or a square (crop_size); a list is
  // [height, width]; a dict must use one of HF's key sets.
  SizeDict size_dict(const std::string& key, const json& v, bool default_to_square) const {
    const std::string expected =
        default_to_square ? "an integer, [height, width] or {\"height\": h, \"width\": w}"
                          : "an integer, [height, width], {\"shortest_edge\": n} or "
                            "{\"height\": h, \"width\": w}";
    if (v.is_number_integer()) {
      const int n = positive_int(key, v);
      return default_to_square ? SizeDict::exact(n, n) : SizeDict::edge(n);
    }
    if (v.is_array()) {
      if (v.size() != 2) {
        fail(key, expected, shown(v));
      }
      return SizeDict::exact(positive_int(key, v[0]), positive_int(key, v[1]));
    }
    if (!v.is_object()) {
      fail(key, expected, shown(v));
    }
    SizeDict out;
    bool longest = false;
    for (const auto& [name, value] : v.items()) {
      if (name == "shortest_edge" && !default_to_square) {
        out.shortest_edge = positive_int(key + "." + name, value);
      } else if (name == "height") {
        out.height = positive_int(key + "." + name, value);
      } else if (name == "width") {
        out.width = positive_int(key + "." + name, value);
      } else if (name == "longest_edge" && !default_to_square) {
        positive_int(key + "." + name, value);
        longest = true;
      } else {
        fail(key, expected, shown(v));
      }
    }
    const bool edge_only = out.shortest_edge && !out.height && !out.width;
    const bool exact = !out.shortest_edge && out.height && out.width && !longest;
    if (!edge_only && !exact) {
      fail(key, expected, shown(v));
    }
    if (longest) {
      // CLIPImageProcessor.resize reads only "shortest_edge".
      icet::log::get("vision")->debug("{}: \"{}.longest_edge\" is ignored, as in HF", source_, key);
    }
    return out;
  }

  // A number (used for every channel, as HF does) or one number per channel.
  std::array<float, 3> per_channel(const std::string& key, const json& v) const {
    const std::string expected = "a number or a list of 3 numbers (R, G, B)";
    std::array<float, 3> out{};
    if (v.is_number()) {
      out.fill(static_cast<float>(v.get<double>()));
      return out;
    }
    if (!v.is_array() || v.size() != 3) {
      fail(key, expected, shown(v));
    }
    for (size_t c = 0; c < 3; ++c) {
      if (!v[c].is_number()) {
        fail(key, expected, shown(v));
      }
      // JSON numbers are doubles (as in Python); HF casts them to float32 when normalising.
      out[c] = static_cast<float>(v[c].get<double>());
    }
    return out;
  }

 private:
  const json& j_;
  const std::string& source_;
};

}  // namespace

ResizeTarget shortest_edge_size(int width, int height, int shortest_edge) {
  const bool portrait = width <= height;
  const int64_t short_side = portrait ? width : height;
  const int64_t long_side = portrait ? height : width;
  // Python: int(size * long / short), an exact integer product then a correctly rounded
  // division, truncated. Both operands are exact doubles here, so the result is the same.
  const auto new_long = static_cast<int64_t>(static_cast<double>(shortest_edge * long_side) /
                                             static_cast<double>(short_side));
  if (new_long * shortest_edge > kMaxResizePixels) {
    throw InputError(fmt::format(
        "resizing a {}x{} image to a shortest edge of {} would give {} megapixels; the aspect "
        "ratio is too extreme. Crop the image first.",
        width, height, shortest_edge, static_cast<double>(new_long * shortest_edge) / 1e6));
  }
  const int n = static_cast<int>(new_long);
  return portrait ? ResizeTarget{shortest_edge, n} : ResizeTarget{n, shortest_edge};
}

ResizeTarget clip_resize_target(int width, int height, const SizeDict& size) {
  if (size.shortest_edge) {
    return shortest_edge_size(width, height, *size.shortest_edge);
  }
  if (size.height && size.width) {
    return {*size.width, *size.height};
  }
  throw InputError(describe("CLIP resize", "size with \"shortest_edge\" or \"height\" and \"width\"",
                            "neither"));
}

ClipProcessorConfig ClipProcessorConfig::from_json(const nlohmann::json& j,
                                                   const std::string& source) {
  if (!j.is_object()) {
    throw InputError(describe(source, "a JSON object of image processor settings", shown(j)));
  }
  const Fields f(j, source);
  ClipProcessorConfig c;
  f.boolean("do_resize", c.do_resize);
  f.boolean("do_center_crop", c.do_center_crop);
  f.boolean("do_rescale", c.do_rescale);
  f.boolean("do_normalize", c.do_normalize);
  f.boolean("do_convert_rgb", c.do_convert_rgb);

  if (const json* v = f.find("size"); v && !v->is_null()) {
    c.size = f.size_dict("size", *v, false);
  }
  // Kosmos-2 era configs: a square of the shortest edge (HF keeps this for compatibility).
  if (const json* v = f.find("use_square_size"); v && v->is_boolean() && v->get<bool>() &&
                                                 c.size.shortest_edge) {
    c.size = SizeDict::exact(*c.size.shortest_edge, *c.size.shortest_edge);
  }
  if (const json* v = f.find("crop_size"); v && !v->is_null()) {
    c.crop_size = f.size_dict("crop_size", *v, true);
  }
  if (const json* v = f.find("resample")) {
    if (!v->is_number_integer()) {
      f.fail("resample", "a PIL filter code 1..5", shown(*v));
    }
    const int64_t code = v->get<int64_t>();
    if (code == 0) {
      f.fail("resample", "a PIL filter code 1..5", "0 (NEAREST)",
             "Nearest-neighbour resizing is not supported; use 2 (bilinear) or 3 (bicubic)");
    }
    if (code < 1 || code > 5) {
      f.fail("resample", "a PIL filter code 1..5", shown(*v));
    }
    c.resample = static_cast<Resample>(code);
  }
  if (const json* v = f.find("rescale_factor")) {
    if (!v->is_number()) {
      f.fail("rescale_factor", "a number such as 0.00392156862745098 (1/255)", shown(*v));
    }
    c.rescale_factor = v->get<double>();
  }
  if (const json* v = f.find("image_mean"); v && !v->is_null()) {
    c.image_mean = f.per_channel("image_mean", *v);
  }
  if (const json* v = f.find("image_std"); v && !v->is_null()) {
    c.image_std = f.per_channel("image_std", *v);
    for (const float s : c.image_std) {
      if (s == 0.0F) {
        f.fail("image_std", "non-zero standard deviations", shown(*v));
      }
    }
  }
  if (const json* v = f.find("image_processor_type")) {
    if (!v->is_string()) {
      f.fail("image_processor_type", "a string", shown(*v));
    }
    c.image_processor_type = v->get<std::string>();
  }
  return c;
}

json read_preprocessor_config(const std::filesystem::path& file) {
  if (!std::filesystem::exists(file)) {
    throw InputError(file.string() + ": cannot open the file. Check that the model folder has a "
                                     "preprocessor_config.json.");
  }
  return json_util::read_file(file);
}

ClipProcessorConfig load_clip_processor_config(const std::filesystem::path& preprocessor_config_json) {
  return ClipProcessorConfig::from_json(read_preprocessor_config(preprocessor_config_json),
                                        preprocessor_config_json.string());
}

at::Tensor to_normalized_tensor(const Image& img, const std::array<float, 3>& mean,
                                const std::array<float, 3>& std, double rescale_factor) {
  const size_t plane = static_cast<size_t>(img.width) * static_cast<size_t>(img.height);
  if (img.empty() || img.rgb.size() != plane * 3) {
    throw InputError(describe("to_normalized_tensor",
                              "a non-empty RGB image with width*height*3 bytes",
                              fmt::format("{}x{} with {} bytes", img.width, img.height,
                                          img.rgb.size())));
  }
  // There are only 256 inputs per channel: tabulate HF's arithmetic exactly.
  //   rescale: float64(x) * factor, cast to float32 (image_transforms.rescale)
  //   normalize: (x - mean) / std with float32 operands (image_transforms.normalize)
  std::array<std::array<float, 256>, 3> table{};
  for (size_t c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) {
      const auto x = static_cast<float>(static_cast<double>(v) * rescale_factor);
      table[c][static_cast<size_t>(v)] = (x - mean[c]) / std[c];
    }
  }
  at::Tensor out = at::empty({3, img.height, img.width}, at::TensorOptions().dtype(at::kFloat));
  float* r = out.data_ptr<float>();
  float* g = r + plane;
  float* b = g + plane;
  const uint8_t* px = img.rgb.data();
  for (size_t i = 0; i < plane; ++i, px += 3) {
    r[i] = table[0][px[0]];
    g[i] = table[1][px[1]];
    b[i] = table[2][px[2]];
  }
  return out;  // [3, H, W] float32, contiguous
}

at::Tensor clip_preprocess(const Image& img, const ClipProcessorConfig& cfg) {
  Image work;
  const Image* current = &img;
  if (cfg.do_resize) {
    const ResizeTarget t = clip_resize_target(img.width, img.height, cfg.size);
    work = resize(img, t.width, t.height, cfg.resample);
    current = &work;
  }
  if (cfg.do_center_crop) {
    if (!cfg.crop_size.height || !cfg.crop_size.width) {
      throw InputError(describe("CLIP center crop", "crop_size with \"height\" and \"width\"",
                                "neither"));
    }
    work = center_crop(*current, *cfg.crop_size.width, *cfg.crop_size.height);
    current = &work;
  }
  const std::array<float, 3> no_mean{0.0F, 0.0F, 0.0F};
  const std::array<float, 3> no_std{1.0F, 1.0F, 1.0F};
  return to_normalized_tensor(*current, cfg.do_normalize ? cfg.image_mean : no_mean,
                              cfg.do_normalize ? cfg.image_std : no_std,
                              cfg.do_rescale ? cfg.rescale_factor : 1.0);
}

}  // namespace icet::vision
