#include "core/models/ops.h"

#include <ATen/Functions.h>

namespace icet::models {

at::Tensor dense(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (x.dim() <= 2) {
    return at::linear(x, w, b);
  }
  auto out_shape = x.sizes().vec();
  out_shape.back() = w.size(0);
  return at::linear(x.reshape({-1, x.size(-1)}), w, b).view(out_shape);
}

}  // namespace icet::models
