#include "core/base/error.h"

namespace icet {

std::string describe(const std::string& where, const std::string& expected,
                     const std::string& found, const std::string& hint) {
  std::string msg = where + ": expected " + expected + ", found " + found;
  if (!hint.empty()) {
    msg += ". " + hint;
  }
  return msg;
}

}  // namespace icet
