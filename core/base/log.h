#pragma once

#include <spdlog/logger.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace icet::log {

// Named loggers, one per core area (DESIGN.md "core, by folder"), plus the front ends.
// Every logger shares the sinks installed by init(); before init() they write to stderr.
inline constexpr std::string_view kAreas[] = {
    "io", "text", "vision", "models", "generate", "safety", "rl",
    "eval", "demo", "jobs", "runtime", "ui", "app", "cli",
};

struct Options {
  spdlog::level::level_enum level = spdlog::level::info;  // loggers and the file sink
  bool console = true;  // colour console sink on stderr
  // The console can be quieter than the file (the CLI keeps stderr for warnings).
  spdlog::level::level_enum console_level = spdlog::level::info;
  // Rotating file sink (5 MiB x 3 files); none when empty.
  std::optional<std::filesystem::path> file;
};

// Installs the sinks on every area logger. Safe to call again (e.g. tests); later calls
// replace the sinks. A file that cannot be opened is reported on the console and skipped:
// logging must never stop the app from starting.
void init(const Options& options);

// The logger of an area. Unknown names get a logger on the same sinks, so a typo never
// throws; areas should still come from kAreas.
std::shared_ptr<spdlog::logger> get(std::string_view area);

// Sets the level of every area logger.
void set_level(spdlog::level::level_enum level);

// The file the rotating sink writes to, if any.
std::optional<std::filesystem::path> current_file();

// Default log file for an executable: user_data_dir()/logs/<name>.log.
std::filesystem::path default_file(std::string_view executable_name);

}  // namespace icet::log
