#include "core/models/ops.h"

#include <ATen/Functions.h>

#include <limits>

namespace icet::models {

at::Tensor dense(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (x.dim() <= 2) {
    return at::linear(x, w, b);
  }
  auto out_shape = x.sizes().vec();
  out_shape.back() = w.size(0);
  return at::linear(x.reshape({-1, x.size(-1)}), w, b).view(out_shape);
}

double finfo_min(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kHalf: return -65504.0;
    case c10::kBFloat16: return -3.3895313892515355e38;
    default: return std::numeric_limits<float>::lowest();
  }
}

}  // namespace icet::models
