#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "core/runtime/diagnostics.h"

namespace icet::runtime {

// What both executables decide at start-up, before any torch work.
struct StartupOptions {
  std::string executable;              // "icet" or "icet-studio": names the log file
  int verbosity = 0;                   // 0 info, 1 debug, 2+ trace
  bool quiet_console = false;          // console shows warnings only (CLI)
  std::optional<int> threads_option;   // --threads
  std::optional<int> threads_setting;  // saved setting (GUI)
  // Log file; default log::default_file(executable). An empty path disables the file sink.
  std::optional<std::filesystem::path> log_file;
};

// Installs logging, sets the intra-op thread count explicitly, collects the runtime
// diagnostics and logs them (warnings loudly). Shared by icet and icet-studio.
RuntimeInfo start(const StartupOptions& options);

}  // namespace icet::runtime
