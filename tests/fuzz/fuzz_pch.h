#pragma once

// clang (14 and 16 alike) rejects LibTorch's headers in C++20 unless IValue is complete before
// ATen/core/List.h instantiates std::vector<IValue>'s constexpr members; GCC accepts either
// order. Including ivalue.h first is enough.
#include <ATen/core/ivalue.h>

#include "core/pch.h"
