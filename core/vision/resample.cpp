#include "core/vision/resample.h"

#include <ATen/Parallel.h>
#include <spdlog/fmt/fmt.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>

#include "core/base/error.h"

// Bit-exactness with PIL depends on evaluating the filter and coefficient arithmetic below in
// plain IEEE double, operation by operation, as Pillow's C code does (no -ffast-math, no FMA
// contraction: the project compiles in ISO mode, where GCC keeps fp-contract off).

namespace icet::vision {
namespace {

// Pillow's filters (libImaging/Resample.c), same expressions and constants.
double box_filter(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

double bilinear_filter(double x) {
  if (x < 0.0) {
    x = -x;
  }
  return x < 1.0 ? 1.0 - x : 0.0;
}

double hamming_filter(double x) {
  if (x < 0.0) {
    x = -x;
  }
  if (x == 0.0) {
    return 1.0;
  }
  if (x >= 1.0) {
    return 0.0;
  }
  x = x * std::numbers::pi;
  // Pillow writes the constants as floats: 0.54f and 0.46f, widened to double.
  return std::sin(x) / x * (static_cast<double>(0.54F) + static_cast<double>(0.46F) * std::cos(x));
}

double bicubic_filter(double x) {
  constexpr double a = -0.5;  // Pillow's (and Keys') a; OpenCV and torch use -0.75
  if (x < 0.0) {
    x = -x;
  }
  if (x < 1.0) {
    return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  }
  if (x < 2.0) {
    return (((x - 5) * x + 8) * x - 4) * a;
  }
  return 0.0;
}

double sinc_filter(double x) {
  if (x == 0.0) {
    return 1.0;
  }
  x = x * std::numbers::pi;
  return std::sin(x) / x;
}

double lanczos_filter(double x) {
  return (-3.0 <= x && x < 3.0) ? sinc_filter(x) * sinc_filter(x / 3) : 0.0;
}

struct Filter {
  double (*fn)(double);
  double support;
};

Filter filter_for(Resample r) {
  switch (r) {
    case Resample::Box: return {box_filter, 0.5};
    case Resample::Bilinear: return {bilinear_filter, 1.0};
    case Resample::Hamming: return {hamming_filter, 1.0};
    case Resample::Bicubic: return {bicubic_filter, 2.0};
    case Resample::Lanczos: return {lanczos_filter, 3.0};
  }
  throw InputError(describe("resize", "a PIL resampling filter 1..5",
                            std::to_string(static_cast<int>(r))));
}

// 8 bits of result, 2 bits of headroom for the negative lobes: coefficients are 22-bit fixed
// point and every sum fits an int32.
constexpr int kPrecisionBits = 32 - 8 - 2;

// Pillow's clip8: arithmetic shift, then clamp (its lookup table covers -640..639).
inline uint8_t clip8(int32_t v) {
  return static_cast<uint8_t>(std::clamp(v >> kPrecisionBits, 0, 255));
}

// One pass: out[i] = sum_{t < count[i]} in[first[i] + t] * k[i * ksize + t].
struct Coefficients {
  int ksize = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> k;
};

// Pillow's precompute_coeffs followed by normalize_coeffs_8bpc, for the box [0, in_size).
Coefficients precompute(int in_size, int out_size, const Filter& filter) {
  const double in0 = 0.0;
  const double in1 = in_size;
  const double scale = (in1 - in0) / out_size;
  const double filterscale = std::max(scale, 1.0);  // antialias only when downscaling
  const double support = filter.support * filterscale;
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(static_cast<size_t>(out_size));
  c.count.resize(static_cast<size_t>(out_size));
  c.k.assign(static_cast<size_t>(out_size) * static_cast<size_t>(c.ksize), 0);
  std::vector<double> w(static_cast<size_t>(c.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    // Pillow rounds by adding 0.5 and truncating toward zero.
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xmax = std::min(static_cast<int>(center + support + 0.5), in_size) - xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double v = filter.fn((static_cast<double>(x + xmin) - center + 0.5) * ss);
      w[static_cast<size_t>(x)] = v;
      ww += v;
    }
    int32_t* k = c.k.data() + static_cast<size_t>(xx) * static_cast<size_t>(c.ksize);
    for (int x = 0; x < xmax; ++x) {
      double v = w[static_cast<size_t>(x)];
      if (ww != 0.0) {
        v /= ww;
      }
      const double scaled = v * (1 << kPrecisionBits);
      k[x] = static_cast<int32_t>(v < 0 ? -0.5 + scaled : 0.5 + scaled);
    }
    c.first[static_cast<size_t>(xx)] = xmin;
    c.count[static_cast<size_t>(xx)] = xmax;
  }
  return c;
}

constexpr int64_t kRowGrain = 16;

// Horizontal pass over source rows [row0, row0 + out.height).
void resample_horizontal(const Image& in, int row0, const Coefficients& c, Image& out) {
  const size_t in_stride = static_cast<size_t>(in.width) * 3;
  const size_t out_stride = static_cast<size_t>(out.width) * 3;
  at::parallel_for(0, out.height, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t yy = begin; yy < end; ++yy) {
      const uint8_t* src = in.rgb.data() + static_cast<size_t>(yy + row0) * in_stride;
      uint8_t* dst = out.rgb.data() + static_cast<size_t>(yy) * out_stride;
      for (int xx = 0; xx < out.width; ++xx) {
        const int32_t* k = c.k.data() + static_cast<size_t>(xx) * static_cast<size_t>(c.ksize);
        const uint8_t* px = src + static_cast<size_t>(c.first[static_cast<size_t>(xx)]) * 3;
        int32_t s0 = 1 << (kPrecisionBits - 1);
        int32_t s1 = s0;
        int32_t s2 = s0;
        const int n = c.count[static_cast<size_t>(xx)];
        for (int x = 0; x < n; ++x, px += 3) {
          s0 += px[0] * k[x];
          s1 += px[1] * k[x];
          s2 += px[2] * k[x];
        }
        dst[xx * 3 + 0] = clip8(s0);
        dst[xx * 3 + 1] = clip8(s1);
        dst[xx * 3 + 2] = clip8(s2);
      }
    }
  });
}

// Vertical pass; `row_shift` is subtracted from every first row (rows the horizontal pass
// skipped).
void resample_vertical(const Image& in, int row_shift, const Coefficients& c, Image& out) {
  const size_t stride = static_cast<size_t>(in.width) * 3;
  at::parallel_for(0, out.height, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t yy = begin; yy < end; ++yy) {
      const int32_t* k = c.k.data() + static_cast<size_t>(yy) * static_cast<size_t>(c.ksize);
      const int ymin = c.first[static_cast<size_t>(yy)] - row_shift;
      const int n = c.count[static_cast<size_t>(yy)];
      const uint8_t* col0 = in.rgb.data() + static_cast<size_t>(ymin) * stride;
      uint8_t* dst = out.rgb.data() + static_cast<size_t>(yy) * stride;
      for (size_t i = 0; i < stride; ++i) {
        int32_t s = 1 << (kPrecisionBits - 1);
        const uint8_t* p = col0 + i;
        for (int y = 0; y < n; ++y, p += stride) {
          s += *p * k[y];
        }
        dst[i] = clip8(s);
      }
    }
  });
}

void check_image(const Image& src, const char* what) {
  if (src.empty() ||
      src.rgb.size() != static_cast<size_t>(src.width) * static_cast<size_t>(src.height) * 3) {
    throw InputError(describe(what, "a non-empty RGB image with width*height*3 bytes",
                              fmt::format("{}x{} with {} bytes", src.width, src.height,
                                          src.rgb.size())));
  }
}

Image black(int width, int height) {
  Image out;
  out.width = width;
  out.height = height;
  out.rgb.assign(static_cast<size_t>(width) * static_cast<size_t>(height) * 3, 0);
  return out;
}

int floor_div2(int v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); }

}  // namespace

const char* resample_name(Resample filter) {
  switch (filter) {
    case Resample::Lanczos: return "lanczos";
    case Resample::Bilinear: return "bilinear";
    case Resample::Bicubic: return "bicubic";
    case Resample::Box: return "box";
    case Resample::Hamming: return "hamming";
  }
  return "unknown";
}

Image resize(const Image& src, int width, int height, Resample filter) {
  check_image(src, "resize");
  if (width <= 0 || height <= 0) {
    throw InputError(describe("resize", "a positive target size",
                              fmt::format("{}x{}", width, height)));
  }
  const Filter f = filter_for(filter);
  const bool need_horizontal = width != src.width;
  const bool need_vertical = height != src.height;
  if (!need_horizontal && !need_vertical) {
    return src;
  }
  const Coefficients vert = precompute(src.height, height, f);
  // Source rows the vertical pass reads; the horizontal pass only produces those.
  const int row_first = vert.first.front();
  const int row_last = vert.first.back() + vert.count.back();

  Image tmp;
  const Image* in = &src;
  int row_shift = 0;
  if (need_horizontal) {
    const Coefficients horiz = precompute(src.width, width, f);
    tmp = black(width, row_last - row_first);
    resample_horizontal(src, row_first, horiz, tmp);
    in = &tmp;
    row_shift = row_first;
    if (!need_vertical) {
      return tmp;  // row_first is 0 and row_last the full height when the height is unchanged
    }
  }
  Image out = black(in->width, height);
  resample_vertical(*in, row_shift, vert, out);
  return out;
}

Image crop(const Image& src, int left, int top, int width, int height) {
  check_image(src, "crop");
  if (width <= 0 || height <= 0 || left < 0 || top < 0 || left > src.width - width ||
      top > src.height - height) {
    throw InputError(describe("crop", fmt::format("a window inside the {}x{} image", src.width,
                                                  src.height),
                              fmt::format("{}x{} at ({}, {})", width, height, left, top)));
  }
  Image out = black(width, height);
  const size_t row_bytes = static_cast<size_t>(width) * 3;
  for (int y = 0; y < height; ++y) {
    std::memcpy(out.rgb.data() + static_cast<size_t>(y) * row_bytes,
                src.rgb.data() + (static_cast<size_t>(y + top) * static_cast<size_t>(src.width) +
                                  static_cast<size_t>(left)) * 3,
                row_bytes);
  }
  return out;
}

Image pad(const Image& src, int width, int height, int left, int top) {
  check_image(src, "pad");
  if (left < 0 || top < 0 || left > width - src.width || top > height - src.height) {
    throw InputError(describe("pad", fmt::format("a canvas that holds the {}x{} image", src.width,
                                                 src.height),
                              fmt::format("{}x{} with the image at ({}, {})", width, height, left,
                                          top)));
  }
  Image out = black(width, height);
  const size_t row_bytes = static_cast<size_t>(src.width) * 3;
  for (int y = 0; y < src.height; ++y) {
    std::memcpy(out.rgb.data() + (static_cast<size_t>(y + top) * static_cast<size_t>(width) +
                                  static_cast<size_t>(left)) * 3,
                src.rgb.data() + static_cast<size_t>(y) * row_bytes, row_bytes);
  }
  return out;
}

Image center_crop(const Image& src, int width, int height) {
  check_image(src, "center_crop");
  if (width <= 0 || height <= 0) {
    throw InputError(describe("center_crop", "a positive crop size",
                              fmt::format("{}x{}", width, height)));
  }
  // HF: top = (h - crop_h) // 2 with Python's floor division; if the window leaves the image,
  // the image is first padded to max(crop, size) with ceil((new - old) / 2) before it, which
  // moves the window to offset 0 on that axis.
  const int top = floor_div2(src.height - height);
  const int left = floor_div2(src.width - width);
  if (top >= 0 && left >= 0) {
    return crop(src, left, top, width, height);
  }
  const int canvas_w = std::max(width, src.width);
  const int canvas_h = std::max(height, src.height);
  const int pad_left = (canvas_w - src.width + 1) / 2;
  const int pad_top = (canvas_h - src.height + 1) / 2;
  const Image canvas = pad(src, canvas_w, canvas_h, pad_left, pad_top);
  return crop(canvas, std::max(0, left + pad_left), std::max(0, top + pad_top), width, height);
}

}  // namespace icet::vision
