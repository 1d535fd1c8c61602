#pragma once

#include <string>

#include "core/base/error.h"

namespace icet::test {

// The message of the icet::InputError `f` throws, or "" when it throws nothing. Any other
// exception escapes and fails the test.
template <typename F>
std::string input_error_of(F&& f) {
  try {
    f();
  } catch (const icet::InputError& e) {
    return e.what();
  }
  return {};
}

}  // namespace icet::test
