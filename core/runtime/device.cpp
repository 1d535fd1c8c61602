#include "core/runtime/device.h"

#include <c10/util/Exception.h>
#include <torch/cuda.h>

#include "core/base/error.h"

namespace icet::runtime {

c10::Device parse_device(const std::string& name) {
  if (name == "auto") {
    return torch::cuda::is_available() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  }
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(name);
  } catch (const c10::Error&) {
    throw InputError(describe("device", "\"auto\", \"cpu\", \"cuda\" or \"cuda:N\"", "\"" + name + "\""));
  }
  if (device.is_cuda()) {
    if (!torch::cuda::is_available()) {
      throw InputError(describe("device \"" + name + "\"", "a CUDA device", "none (this LibTorch sees no GPU)",
                                "Use --device cpu, or run `icet info` to see why CUDA is unavailable."));
    }
    const auto count = static_cast<int64_t>(torch::cuda::device_count());
    if (device.has_index() && device.index() >= count) {
      throw InputError(describe("device \"" + name + "\"", "cuda:0 to cuda:" + std::to_string(count - 1),
                                "no such GPU", "Run `icet info` to list the CUDA devices."));
    }
  } else if (!device.is_cpu()) {
    throw InputError(describe("device", "\"auto\", \"cpu\", \"cuda\" or \"cuda:N\"", "\"" + name + "\""));
  }
  return device;
}

c10::ScalarType parse_dtype(const std::string& name, const c10::Device& device) {
  if (name == "auto") return device.is_cuda() ? c10::kBFloat16 : c10::kFloat;
  if (name == "float32" || name == "f32") return c10::kFloat;
  if (name == "bfloat16" || name == "bf16") return c10::kBFloat16;
  if (name == "float16" || name == "f16") {
    if (device.is_cpu()) {
      throw InputError(describe("dtype \"" + name + "\" on the CPU", "\"float32\" or \"bfloat16\"", "float16",
                                "LibTorch's CPU kernels lack float16 matrix products: use --dtype bfloat16, "
                                "or float16 with --device cuda."));
    }
    return c10::kHalf;
  }
  throw InputError(describe("dtype", "\"auto\", \"float32\", \"bfloat16\" or \"float16\"", "\"" + name + "\""));
}

std::string dtype_name(c10::ScalarType type) {
  switch (type) {
    case c10::kFloat: return "float32";
    case c10::kBFloat16: return "bfloat16";
    case c10::kHalf: return "float16";
    default: return c10::toString(type);
  }
}

}  // namespace icet::runtime
