#include "core/demo/paths.h"

#include <unistd.h>

#include <cstdlib>
#include <vector>

#include "core/base/error.h"

namespace icet::demo {
namespace {

namespace fs = std::filesystem;

bool holds_demo(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / "vlm" / "config.json", ec);
}

fs::path executable_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : exe.parent_path();
}

std::vector<fs::path> candidates() {
  std::vector<fs::path> out;
  if (const char* env = std::getenv("ICET_DEMO_DIR"); env != nullptr && *env != '\0') out.emplace_back(env);
  const fs::path exe = executable_dir();
  if (!exe.empty()) {
    out.push_back(exe.parent_path() / "share" / "icet" / "demo");
    for (fs::path d = exe; !d.empty(); d = d.parent_path()) {
      out.push_back(d / "models" / "demo");
      if (d == d.parent_path()) break;
    }
  }
#ifdef ICET_SOURCE_ROOT
  out.push_back(fs::path(ICET_SOURCE_ROOT) / "models" / "demo");
#endif
  return out;
}

}  // namespace

std::optional<fs::path> find_demo_root() {
  if (const char* env = std::getenv("ICET_DEMO_DIR"); env != nullptr && *env != '\0') {
    // An explicit choice is never silently replaced by another folder.
    return holds_demo(env) ? std::optional<fs::path>(fs::path(env)) : std::nullopt;
  }
  for (const auto& c : candidates()) {
    if (holds_demo(c)) return c.lexically_normal();
  }
  return std::nullopt;
}

fs::path demo_root() {
  if (auto r = find_demo_root()) return *r;
  std::string looked;
  for (const auto& c : candidates()) looked += "\n  " + c.string();
  throw InputError("no demo world found (a folder with vlm/config.json); looked in:" + looked +
                   "\nSet ICET_DEMO_DIR, pass --model, or build one with `icet demo build --out models/demo`.");
}

fs::path demo_vlm_dir() { return demo_root() / "vlm"; }

}  // namespace icet::demo
