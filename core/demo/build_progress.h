#pragma once

// Progress of the demo build (`icet demo build`) and of each model it trains.

#include <cstdint>
#include <functional>
#include <string>

namespace icet::demo {

struct BuildStatus {
  std::string stage;   // e.g. "vision", "instruct", "align", "guard", "reward", "eval"
  int64_t step = 0;    // steps done in this stage
  int64_t total = 0;   // steps in this stage
  double loss = 0.0;   // recent training loss (0 when the stage does not train)
  double eta_seconds = 0.0;  // estimated time left in this stage
};

// Called from the building thread; return false to cancel (the build then throws
// icet::Cancelled or stops cleanly, leaving no half-written model folder).
using BuildProgress = std::function<bool(const BuildStatus&)>;

}  // namespace icet::demo
