#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace icet::runtime {

struct BlasInfo {
  std::string name;           // "OpenBLAS", "reference BLAS (netlib)", "MKL", "BLIS", ...
  std::string version;        // OpenBLAS config string when available
  std::string library;        // resolved path of the library that provides sgemm_
  std::string torch_build;    // BLAS_INFO from LibTorch's build configuration
  bool reference = false;     // the slow netlib reference implementation
  std::string kernels;        // OpenBLAS's kernel set ("SkylakeX"), empty for other BLAS
  std::string kernels_note;   // why icet chose them (blas_kernels.h), empty when OpenBLAS did
};

struct CudaDevice {
  int index = 0;
  std::string name;
  std::int64_t total_memory_bytes = 0;
};

struct RuntimeInfo {
  std::string icet_version;
  std::string torch_version;
  std::string parallel_backend;  // "OpenMP", "native", ...
  BlasInfo blas;
  int intra_op_threads = 0;
  std::string threads_source;
  int hardware_threads = 0;
  bool cuda_available = false;  // LibTorch was built with CUDA and sees a device
  std::vector<CudaDevice> cuda_devices;
  std::string cuda_note;  // why there is no CUDA, when there is none
};

// Everything `icet info` prints. Cheap (no benchmark); safe on any thread.
RuntimeInfo collect_runtime_info(const std::string& threads_source);

// Problems the user should fix, worded with the fix (e.g. the package to install).
std::vector<std::string> runtime_warnings(const RuntimeInfo& info);

// One line for status bars: "CPU · 2 threads · OpenBLAS" or "CUDA · NVIDIA H200".
std::string device_summary(const RuntimeInfo& info);

std::string to_text(const RuntimeInfo& info);
nlohmann::json to_json(const RuntimeInfo& info);

// Writes the diagnostics and every warning to the "runtime" logger (warnings at warn level).
void log_runtime_info(const RuntimeInfo& info);

// Float32 square matmul throughput on the CPU in GFLOP/s (best of `reps`). For `icet info`
// and benchmarks only: takes tens of milliseconds.
double measure_cpu_matmul_gflops(int n, int reps);
// The same product run back to back for `seconds`: the mean rate, what a long computation
// sustains (the best single product catches the clock's bursts; on a shared 2-core VM the
// two differ by up to 25%).
double measure_cpu_matmul_gflops_sustained(int n, double seconds);

}  // namespace icet::runtime
