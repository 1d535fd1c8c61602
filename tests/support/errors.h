#pragma once

#include <initializer_list>
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

// In a Qt Test function: `expr` throws an InputError whose message holds every string in the
// braces, e.g. ICET_EXPECT_INPUT_ERROR(load(f), {"config.json", "hidden_size"}). Any other
// exception escapes and fails the test.
#define ICET_EXPECT_INPUT_ERROR(expr, ...)                                                      \
  do {                                                                                         \
    const std::string message = icet::test::input_error_of([&] { (void)(expr); });             \
    QVERIFY2(!message.empty(), "no InputError thrown");                                        \
    for (const std::string& part : std::initializer_list<std::string> __VA_ARGS__) {          \
      QVERIFY2(message.find(part) != std::string::npos, (message + " lacks: " + part).c_str()); \
    }                                                                                          \
  } while (false)
