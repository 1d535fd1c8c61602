#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace icet::runtime {

// OpenBLAS built with DYNAMIC_ARCH picks its kernel set once, when the library loads (before
// main), from the CPU model it recognises, or from OPENBLAS_CORETYPE. Debian 12's OpenBLAS
// (0.3.21) predates AMD Zen 5 and picks its Cooperlake kernels there; on a 2-core Zen 5 they
// run float32 512x512 matmul at 63 GFLOP/s, its Haswell (AVX2) kernels at 168 and its SkylakeX
// (AVX-512) kernels at 278 (`icet info --matmul`).

struct CpuFeatures {
  bool avx512 = false;  // AVX-512 F/CD/BW/DQ/VL: what OpenBLAS's SkylakeX kernels use
  bool amd = false;
};
CpuFeatures this_cpu();

// The kernel set to ask for instead of OpenBLAS's own choice `core` ("Haswell", "Cooperlake",
// ...), or nothing. Only when the library can switch (built with DYNAMIC_ARCH) and the CPU has
// AVX-512: an AVX2-class choice (a CPU newer than the library) becomes SkylakeX, and on AMD
// any other choice does too (measured above; Intel's Cooper Lake and Sapphire Rapids keep
// the kernels OpenBLAS made for them).
std::optional<std::string> better_blas_core(std::string_view core, bool dynamic_arch,
                                            const CpuFeatures& cpu);

// First thing in main: when better_blas_core names a kernel set for the loaded OpenBLAS and
// OPENBLAS_CORETYPE is not set (a set one is the user's choice and is kept), restarts the process
// once (same arguments, same environment plus OPENBLAS_CORETYPE) so OpenBLAS loads with it. Returns
// when no restart is needed, or when the restart failed (the process goes on with OpenBLAS's
// choice).
void restart_with_better_blas_kernels(char** argv);

// The kernel set OpenBLAS runs ("SkylakeX"), empty when the BLAS is not OpenBLAS.
std::string blas_kernels();
// For the diagnostics, empty when there is nothing to say: that icet chose the kernels (and
// what OpenBLAS had picked), or that OPENBLAS_CORETYPE keeps kernels better_blas_core would
// replace. openblas_config: openblas_get_config()'s string, as the diagnostics read it.
std::string blas_kernels_note(std::string_view openblas_config);

}  // namespace icet::runtime
