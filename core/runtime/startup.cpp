#include "core/runtime/startup.h"

#include "core/base/log.h"
#include "core/runtime/threads.h"

namespace icet::runtime {

RuntimeInfo start(const StartupOptions& options) {
  log::Options log_options;
  log_options.level = options.verbosity >= 2   ? spdlog::level::trace
                      : options.verbosity == 1 ? spdlog::level::debug
                                               : spdlog::level::info;
  log_options.console_level =
      options.quiet_console && options.verbosity == 0 ? spdlog::level::warn : log_options.level;
  if (!options.log_file) {
    log_options.file = log::default_file(options.executable);
  } else if (!options.log_file->empty()) {
    log_options.file = *options.log_file;
  }
  log::init(log_options);

  const ThreadChoice threads = choose_threads(options.threads_option, options.threads_setting);
  apply_threads(threads.intra_op);

  RuntimeInfo info = collect_runtime_info(threads.source);
  log_runtime_info(info);
  return info;
}

}  // namespace icet::runtime
