#pragma once

// Precompiled for every icet_core translation unit: the LibTorch headers cost ~20 s per unit
// on a 2-core machine; compiled once here, they cost ~1 s.
#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
