#pragma once

#include <filesystem>
#include <optional>

namespace icet::demo {

// The built-in demo world's folder (vlm/, guard/, reward/, sets/, build.json), searched in order:
//   1. $ICET_DEMO_DIR, when set (must exist);
//   2. <executable dir>/../share/icet/demo (an installed tree);
//   3. <executable dir>/models/demo and its parents' models/demo (a build tree inside the
//      source tree, e.g. build/dev/app/icet -> models/demo);
//   4. the source tree this binary was built from (ICET_SOURCE_ROOT/models/demo).
// Empty when none holds a vlm/config.json.
std::optional<std::filesystem::path> find_demo_root();

// find_demo_root(), or icet::InputError saying where it looked and how to build one
// (`icet demo build`).
std::filesystem::path demo_root();

// demo_root() / "vlm", the default model of `icet generate` / `sweep` and the app.
std::filesystem::path demo_vlm_dir();

}  // namespace icet::demo
