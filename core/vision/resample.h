#pragma once

// Geometry on RGB8 images, bit-exact with what Hugging Face image processors get from PIL.
//
// resize() reimplements Pillow's ImagingResample for 8-bit images (libImaging/Resample.c):
// separable convolution, horizontal pass then vertical pass, the filter support widened by the
// downscale factor (antialiasing), coefficients normalised per output pixel and quantised to
// 22-bit fixed point, intermediate rows rounded and clipped to 8 bits. A pass whose size does
// not change is skipped, as in PIL.

#include "core/vision/image.h"

namespace icet::vision {

// PIL's filter codes, as written in preprocessor_config.json "resample".
// 0 (NEAREST) is not a convolution filter in PIL and is not supported.
enum class Resample { Lanczos = 1, Bilinear = 2, Bicubic = 3, Box = 4, Hamming = 5 };

// "bicubic", ...
const char* resample_name(Resample filter);

// PIL's Image.resize((width, height), filter) on an RGB image, bit for bit.
// Throws icet::InputError for an empty source or a non-positive target size.
Image resize(const Image& src, int width, int height, Resample filter);

// Hugging Face's image_transforms.center_crop: top = (h - height) // 2, left = (w - width) // 2
// (floor division). Where the image is smaller than the crop it is first centred on a black
// canvas, ceil((crop - size) / 2) pixels from the top/left, so the result is always
// width x height.
Image center_crop(const Image& src, int width, int height);

// The width x height window at (left, top); it must lie inside `src`.
Image crop(const Image& src, int left, int top, int width, int height);

// `src` placed at (left, top) on a black width x height canvas (it must fit): LLaVA-NeXT's
// centred padding and Mllama's bottom/right padding are both this.
Image pad(const Image& src, int width, int height, int left, int top);

}  // namespace icet::vision
