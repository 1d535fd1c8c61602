// libFuzzer target: image header probing, size limits and decoding (PNG, JPEG, WebP, BMP, TIFF,
// PNM, Sun raster, GIF), with limits small enough to keep each input fast.
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/base/error.h"
#include "core/vision/image.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  icet::vision::ImageLimits limits;
  limits.max_pixels = 1 << 20;
  limits.max_side = 4096;
  ICET_FUZZ_EXPECT_INPUT_ERRORS({
    const auto header = icet::vision::read_image_header(bytes, "fuzz.img");
    icet::vision::check_image_limits(header, limits, "fuzz.img");
    const auto image = icet::vision::decode_image(bytes, "fuzz.img", limits);
    if (image.rgb.size() != static_cast<size_t>(image.width) * static_cast<size_t>(image.height) * 3) {
      __builtin_trap();
    }
  });
  return 0;
}
