#include "core/base/error.h"

#include <cstring>

namespace icet {
namespace {

// The two overloads accept either strerror_r: GNU returns the message, POSIX fills the buffer
// and returns 0.
[[maybe_unused]] const char* strerror_result(const char* message, const char* /*buffer*/) { return message; }
[[maybe_unused]] const char* strerror_result(int /*status*/, const char* buffer) { return buffer; }

}  // namespace

std::string errno_message(int err) {
  char buffer[256] = {};
  return strerror_result(::strerror_r(err, buffer, sizeof buffer), buffer);
}

std::string describe(const std::string& where, const std::string& expected,
                     const std::string& found, const std::string& hint) {
  std::string msg = where + ": expected " + expected + ", found " + found;
  if (!hint.empty()) {
    msg += ". " + hint;
  }
  return msg;
}

}  // namespace icet
