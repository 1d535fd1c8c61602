#include "core/base/log.h"

#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "core/base/paths.h"

namespace icet::log {
namespace {

struct State {
  std::mutex mutex;
  std::vector<spdlog::sink_ptr> sinks;
  spdlog::level::level_enum level = spdlog::level::info;
  std::optional<std::filesystem::path> file;
  bool initialised = false;
};

State& state() {
  static State s;
  return s;
}

// Caller holds state().mutex.
std::shared_ptr<spdlog::logger> make_logger_locked(State& s, const std::string& name) {
  if (!s.initialised) {
    s.sinks = {std::make_shared<spdlog::sinks::stderr_color_sink_mt>()};
    s.initialised = true;
  }
  auto logger = std::make_shared<spdlog::logger>(name, s.sinks.begin(), s.sinks.end());
  logger->set_level(s.level);
  logger->flush_on(spdlog::level::warn);
  spdlog::register_logger(logger);
  return logger;
}

}  // namespace

void init(const Options& options) {
  State& s = state();
  std::lock_guard lock(s.mutex);
  std::vector<spdlog::sink_ptr> sinks;
  if (options.console) {
    auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    console->set_level(options.console_level);
    sinks.push_back(console);
  }
  std::string file_error;
  s.file.reset();
  if (options.file) {
    try {
      std::filesystem::create_directories(options.file->parent_path());
      sinks.push_back(std::make_shared<spdlog::sinks::rotating_file_sink_mt>(
          options.file->string(), 5 * 1024 * 1024, 3));
      s.file = options.file;
    } catch (const std::exception& e) {
      file_error = e.what();
    }
  }
  s.sinks = std::move(sinks);
  s.level = std::min(options.level, options.console ? options.console_level : options.level);
  s.initialised = true;
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%n] [%^%l%$] %v");
  for (std::string_view area : kAreas) {
    spdlog::drop(std::string(area));
    make_logger_locked(s, std::string(area));
  }
  if (!file_error.empty()) {
    spdlog::get("runtime")->warn("log file {} not opened: {}", options.file->string(),
                                 file_error);
  }
}

std::shared_ptr<spdlog::logger> get(std::string_view area) {
  const std::string name(area);
  if (auto logger = spdlog::get(name)) {
    return logger;
  }
  State& s = state();
  std::lock_guard lock(s.mutex);
  if (auto logger = spdlog::get(name)) {  // created meanwhile by another thread
    return logger;
  }
  return make_logger_locked(s, name);
}

void set_level(spdlog::level::level_enum level) {
  State& s = state();
  std::lock_guard lock(s.mutex);
  s.level = level;
  spdlog::apply_all([level](const std::shared_ptr<spdlog::logger>& l) { l->set_level(level); });
}

std::optional<std::filesystem::path> current_file() {
  State& s = state();
  std::lock_guard lock(s.mutex);
  return s.file;
}

std::filesystem::path default_file(std::string_view executable_name) {
  return user_data_dir() / "logs" / (std::string(executable_name) + ".log");
}

}  // namespace icet::log
