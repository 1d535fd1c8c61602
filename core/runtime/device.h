#pragma once

// Device and dtype by name, as SessionOptions, the judges, the reward models and the CLI spell
// them. One place, so `--device` / `--dtype` accept and reject the same values everywhere.

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

namespace icet::runtime {

// "auto" (CUDA device 0 when available, else the CPU), "cpu", "cuda", "cuda:N".
// InputError for another name, for CUDA when this LibTorch sees no GPU and for a device index
// past the last GPU.
c10::Device parse_device(const std::string& name);

// "auto" (float32 on the CPU, bfloat16 on CUDA), "float32"/"f32", "bfloat16"/"bf16",
// "float16"/"f16". InputError for another name, and for float16 on the CPU (LibTorch's CPU
// kernels lack float16 matrix products).
c10::ScalarType parse_dtype(const std::string& name, const c10::Device& device);

// "float32", "bfloat16", "float16" (the names parse_dtype takes); c10's name for others.
std::string dtype_name(c10::ScalarType type);

}  // namespace icet::runtime
