#include "core/runtime/blas_kernels.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace icet::runtime {
namespace {

// Set on the restarted process: what OpenBLAS had picked on its own.
constexpr const char* kPickedEnv = "ICET_OPENBLAS_PICKED";

bool has_dynamic_arch(std::string_view config) {
  return config.find("DYNAMIC_ARCH") != std::string_view::npos;
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return out;
}

// OpenBLAS's exports, looked up in the process (nullptr when it is not loaded).
const char* openblas_string(const char* symbol) {
  using Fn = char* (*)();
  auto* fn = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, symbol));
  return fn != nullptr ? fn() : nullptr;
}

}  // namespace

CpuFeatures this_cpu() {
  CpuFeatures f;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  f.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl");
  f.amd = __builtin_cpu_is("amd");
#endif
  return f;
}

std::optional<std::string> better_blas_core(std::string_view core, bool dynamic_arch,
                                            const CpuFeatures& cpu) {
  const std::string c = lower(core);
  if (!dynamic_arch || !cpu.avx512 || c == "skylakex") return std::nullopt;
  const bool avx2_class = c == "haswell" || c == "zen" || c == "excavator";
  if (!avx2_class && !cpu.amd) return std::nullopt;
  return std::string("SkylakeX");
}

void restart_with_better_blas_kernels(char** argv) {
  // Set: the user's choice, or this is the restarted process.
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  const char* core = openblas_string("openblas_get_corename");
  const char* config = openblas_string("openblas_get_config");
  if (core == nullptr || config == nullptr) return;
  const auto better = better_blas_core(core, has_dynamic_arch(config), this_cpu());
  if (!better) return;
  if (setenv("OPENBLAS_CORETYPE", better->c_str(), 1) != 0 || setenv(kPickedEnv, core, 1) != 0)
    return;
  execv("/proc/self/exe", argv);
  // Not restarted (no /proc, say): go on as loaded, and do not claim otherwise.
  unsetenv("OPENBLAS_CORETYPE");
  unsetenv(kPickedEnv);
}

std::string blas_kernels() {
  const char* core = openblas_string("openblas_get_corename");
  return core != nullptr ? core : "";
}

std::string blas_kernels_note(std::string_view openblas_config) {
  const std::string running = blas_kernels();
  const char* picked = std::getenv(kPickedEnv);
  const char* chosen = std::getenv("OPENBLAS_CORETYPE");
  if (running.empty() || chosen == nullptr) return "";
  if (picked != nullptr && lower(running) == lower(chosen)) {
    return std::string("chosen by icet; OpenBLAS picked ") + picked;
  }
  if (const auto better =
          better_blas_core(running, has_dynamic_arch(openblas_config), this_cpu())) {
    return "kept from OPENBLAS_CORETYPE=" + std::string(chosen) + "; unset it to run " + *better +
           " kernels, usually much faster on this CPU";
  }
  return "";
}

}  // namespace icet::runtime
