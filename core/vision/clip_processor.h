#pragma once

// Hugging Face CLIPImageProcessor (transformers 4.47) on top of the PIL-exact resampler, and the
// one conversion from RGB8 pixels to the normalised float32 CHW tensor a vision tower takes.
//
//   image [H, W, 3] uint8 -> resize -> center crop -> x * rescale_factor -> (x - mean) / std
//                         -> pixel_values [3, crop_h, crop_w] float32

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include <array>
#include <filesystem>
#include <optional>
#include <string>

#include "core/vision/image.h"
#include "core/vision/resample.h"

namespace icet::vision {

// OpenAI CLIP's normalisation, as transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD. They are
// Python floats (doubles) that HF casts to float32 when it normalises, so they are rounded from
// the double values here too.
inline constexpr std::array<float, 3> kOpenAiClipMean{
    static_cast<float>(0.48145466), static_cast<float>(0.4578275),
    static_cast<float>(0.40821073)};
inline constexpr std::array<float, 3> kOpenAiClipStd{
    static_cast<float>(0.26862954), static_cast<float>(0.26130258),
    static_cast<float>(0.27577711)};

// One of HF's size dicts: {"shortest_edge": n} or {"height": h, "width": w}.
struct SizeDict {
  std::optional<int> shortest_edge;
  std::optional<int> height;
  std::optional<int> width;

  static SizeDict edge(int n) { return {n, std::nullopt, std::nullopt}; }
  static SizeDict exact(int h, int w) { return {std::nullopt, h, w}; }
};

// Output (width, height) of an image processor resize.
struct ResizeTarget {
  int width = 0;
  int height = 0;
};

// transformers' get_resize_output_image_size with default_to_square=False: the short side
// becomes `shortest_edge`, the long side int(shortest_edge * long / short) (truncated).
ResizeTarget shortest_edge_size(int width, int height, int shortest_edge);

// CLIPImageProcessor.resize: "shortest_edge" wins; otherwise exact "height" x "width".
ResizeTarget clip_resize_target(int width, int height, const SizeDict& size);

// Every CLIPImageProcessor field; defaults are HF's (a missing key takes its default).
struct ClipProcessorConfig {
  bool do_resize = true;
  SizeDict size = SizeDict::edge(224);
  Resample resample = Resample::Bicubic;
  bool do_center_crop = true;
  SizeDict crop_size = SizeDict::exact(224, 224);
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  bool do_normalize = true;
  std::array<float, 3> image_mean = kOpenAiClipMean;
  std::array<float, 3> image_std = kOpenAiClipStd;
  bool do_convert_rgb = true;  // decode_image always yields RGB; kept for round trips
  std::string image_processor_type = "CLIPImageProcessor";

  // Parses a preprocessor_config.json object. Keys of other processors (LLaVA-NeXT's
  // image_grid_pinpoints, ...) are ignored. A mistyped or out-of-range value throws
  // icet::InputError naming `source` and the key.
  static ClipProcessorConfig from_json(const nlohmann::json& j, const std::string& source);
};

// Reads and parses preprocessor_config.json (see ClipProcessorConfig::from_json).
ClipProcessorConfig load_clip_processor_config(const std::filesystem::path& preprocessor_config_json);
// The parsed JSON of a preprocessor_config.json; InputError naming the file when it cannot be
// opened or is not JSON. Shared by every family's processor loader.
nlohmann::json read_preprocessor_config(const std::filesystem::path& file);

// The one place RGB8 HWC pixels become float32 CHW [3, H, W], with HF's arithmetic:
//   v = float32(float64(x) * rescale_factor);  out = (v - mean[c]) / std[c]   (float32 ops)
// Pass rescale_factor 1 to skip rescaling and mean 0 / std 1 to skip normalisation: both are
// then exact identities, as when HF skips the step.
at::Tensor to_normalized_tensor(const Image& img, const std::array<float, 3>& mean,
                                const std::array<float, 3>& std, double rescale_factor);

// CLIPImageProcessor.preprocess for one image: resize, center crop, rescale, normalize.
// Returns [3, crop_h, crop_w] float32 (or the resized size without center crop).
at::Tensor clip_preprocess(const Image& img, const ClipProcessorConfig& cfg);

}  // namespace icet::vision
