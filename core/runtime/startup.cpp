#include "core/runtime/startup.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "core/base/log.h"
#include "core/runtime/threads.h"

// Under ASan or TSan (the asan preset) the sanitizer's allocator serves malloc and its mallopt
// accepts nothing, so there is no glibc heap to tune and no reason to warn.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ICET_SANITIZER_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define ICET_SANITIZER_MALLOC 1
#endif
#endif

namespace icet::runtime {
namespace {

// glibc serves every block above its mmap threshold (128 KiB, adapting up to 32 MiB) with a
// fresh mmap and gives freed heap tops back to the kernel, so each forward pass re-faults the
// pages of its activations: on this class of VM, page faults took 30% of a 24-row prefill and
// made a 590-token single prefill 7x slower (185 vs 25 ms, `icet bench sweep --image-tokens
// 576`). A fixed 32 MiB threshold (glibc's maximum) and a 256 MiB trim threshold let freed
// activations be reused; weights and larger buffers are still mapped on their own.
void keep_freed_memory() {
#if defined(__GLIBC__) && !defined(ICET_SANITIZER_MALLOC)
  const bool ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 256 << 20) == 1;
  if (!ok) log::get("runtime")->warn("malloc settings were not accepted; large tensors may be slower to allocate");
#endif
}

}  // namespace

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
  keep_freed_memory();

  const ThreadChoice threads = choose_threads(options.threads_option, options.threads_setting);
  apply_threads(threads.intra_op);

  RuntimeInfo info = collect_runtime_info(threads.source);
  log_runtime_info(info);
  return info;
}

}  // namespace icet::runtime
