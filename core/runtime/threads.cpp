#include "core/runtime/threads.h"

#include <ATen/Parallel.h>

#include <charconv>
#include <cstdlib>
#include <string_view>
#include <thread>

#include "core/base/log.h"

namespace icet::runtime {
namespace {

std::optional<int> env_threads() {
  const char* raw = std::getenv("ICET_THREADS");
  if (raw == nullptr) {
    return std::nullopt;
  }
  std::string_view text(raw);
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 1) {
    log::get("runtime")->warn("ICET_THREADS='{}' ignored: expected a positive integer", text);
    return std::nullopt;
  }
  return value;
}

}  // namespace

ThreadChoice choose_threads(std::optional<int> option, std::optional<int> setting) {
  if (option && *option >= 1) {
    return {*option, "option"};
  }
  if (setting && *setting >= 1) {
    return {*setting, "setting"};
  }
  if (auto env = env_threads()) {
    return {*env, "ICET_THREADS"};
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return {hw == 0 ? 1 : static_cast<int>(hw), "default"};
}

void apply_threads(int intra_op) {
  at::set_num_threads(intra_op < 1 ? 1 : intra_op);
}

void init_worker_thread() {
  at::init_num_threads();
}

int current_intra_op_threads() {
  return at::get_num_threads();
}

}  // namespace icet::runtime
