#pragma once

#include <optional>
#include <string>

namespace icet::runtime {

struct ThreadChoice {
  int intra_op = 1;
  std::string source;  // "option", "setting", "ICET_THREADS" or "default"
};

// Intra-op threads by precedence: command-line option, then the saved setting, then the
// ICET_THREADS environment variable, then the machine's hardware threads. Values < 1 are
// ignored at each level (a setting of 0 means "automatic").
ThreadChoice choose_threads(std::optional<int> option, std::optional<int> setting);

// Sets LibTorch's intra-op thread count (and so OpenMP's and OpenMP-OpenBLAS's) for the
// process. Debian's LibTorch otherwise starts with one thread.
void apply_threads(int intra_op);

// Call first thing on every thread that runs torch work (QThread workers, job threads):
// OpenMP keeps the thread count per thread, so a new thread would otherwise use the
// OpenMP default instead of the configured count.
void init_worker_thread();

int current_intra_op_threads();

}  // namespace icet::runtime
