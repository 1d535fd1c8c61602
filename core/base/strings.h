#pragma once

#include <string>
#include <string_view>

namespace icet {

// `s` without leading and trailing ASCII whitespace (" \t\n\r\f\v", as Python's str.strip() on
// ASCII text: chat templates' `| trim` and HF's message stripping).
std::string trim(std::string_view s);

// A remaining time for progress lines: "mm:ss" (minutes past 59 keep counting), "--:--" when
// unknown (negative).
std::string format_eta(double seconds);

}  // namespace icet
