#pragma once

// Image input: header probing, size limits, decoding to 8-bit RGB, encoding.
//
// Every decoded image goes through one conversion (gray, gray+alpha, BGR, BGRA, 8 or 16 bit ->
// RGB8), so the rest of core only ever sees `Image`: 8-bit RGB, row-major HWC. OpenCV stays
// inside image.cpp; this header is free of OpenCV and torch so any layer may include it.

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace icet::vision {

// 8-bit RGB, row-major HWC: channel c of pixel (x, y) is rgb[(y * width + x) * 3 + c].
struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;

  bool empty() const { return width <= 0 || height <= 0; }
  uint8_t at(int x, int y, int c) const {
    return rgb[(static_cast<size_t>(y) * static_cast<size_t>(width) + static_cast<size_t>(x)) * 3 +
               static_cast<size_t>(c)];
  }
};

// Images above these limits are refused from their header, before any pixel buffer exists.
struct ImageLimits {
  int64_t max_pixels = 8192LL * 8192;
  int max_side = 32768;
  // load_image only: the whole file is read into memory before decoding.
  int64_t max_file_bytes = 1LL << 30;
};

// What a file's header says about it, read without decoding any pixel.
struct ImageHeader {
  std::string format;  // "PNG", "JPEG", "WebP", "BMP", "GIF", "TIFF", "PNM", "Sun raster"
  int64_t width = 0;
  int64_t height = 0;
};

// Reads format and dimensions from the header. Formats other than the ones listed in
// ImageHeader::format are refused here, so OpenCV never sees data whose size was not checked.
// Throws icet::InputError for empty, unknown, or truncated-header data; messages start with
// `source_name`.
ImageHeader read_image_header(std::span<const uint8_t> bytes, const std::string& source_name);

// Throws icet::InputError when `header` is above `limits`.
void check_image_limits(const ImageHeader& header, const ImageLimits& limits,
                        const std::string& source_name);

// Decodes PNG, JPEG, WebP, BMP, TIFF, PNM and Sun raster data (GIF only if the OpenCV build can)
// to 8-bit RGB. Grayscale is replicated, alpha is dropped without compositing (as PIL's
// convert("RGB")), and 16-bit samples keep their high byte (value >> 8, as PIL unpacks 16-bit
// RGB(A) PNGs). Orientation tags are ignored, as PIL's Image.open does. Truncated or corrupt
// data, and images above `limits`, throw icet::InputError naming `source_name`.
Image decode_image(std::span<const uint8_t> bytes, const std::string& source_name,
                   const ImageLimits& limits = {});

// Reads `file` and decodes it (see decode_image). Messages name the path.
Image load_image(const std::filesystem::path& file, const ImageLimits& limits = {});

// Lossless PNG and baseline JPEG (quality 0..100) of an RGB image, for reports and tests.
std::vector<uint8_t> encode_png(const Image& image);
std::vector<uint8_t> encode_jpeg(const Image& image, int quality = 95);

}  // namespace icet::vision
