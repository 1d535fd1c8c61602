#include "core/runtime/diagnostics.h"

#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <dlfcn.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <sstream>
#include <thread>

#include "core/base/log.h"
#include "core/runtime/blas_kernels.h"
#include "icet/version.h"

namespace icet::runtime {
namespace {

// The value of `key=` in LibTorch's build configuration, e.g. BLAS_INFO=generic.
std::string build_setting(const std::string& config, const std::string& key) {
  const std::string needle = key + "=";
  const auto pos = config.find(needle);
  if (pos == std::string::npos) {
    return {};
  }
  const auto start = pos + needle.size();
  const auto end = config.find_first_of(", \n", start);
  return config.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

// Finds the library that actually serves BLAS calls: whichever shared object provides
// sgemm_ in the process's global scope. On Debian that is libblas.so.3 behind the
// alternatives system, so the symlink is resolved to tell OpenBLAS from the reference.
BlasInfo detect_blas(const std::string& torch_config) {
  BlasInfo info;
  info.torch_build = build_setting(torch_config, "BLAS_INFO");

  void* sgemm = dlsym(RTLD_DEFAULT, "sgemm_");
  Dl_info where{};
  void* provider = nullptr;  // handle of the library serving sgemm_ (searches its deps too)
  if (sgemm != nullptr && dladdr(sgemm, &where) != 0 && where.dli_fname != nullptr) {
    std::error_code ec;
    auto resolved = std::filesystem::canonical(where.dli_fname, ec);
    info.library = ec ? std::string(where.dli_fname) : resolved.string();
    provider = dlopen(where.dli_fname, RTLD_NOW | RTLD_NOLOAD);
  }
  // Probe the provider, not the whole process: with the reference BLAS selected, OpenBLAS
  // can still be loaded (e.g. as LAPACK) without serving any BLAS call.
  auto probe = [&](const char* symbol) {
    return provider != nullptr ? dlsym(provider, symbol) : dlsym(RTLD_DEFAULT, symbol);
  };

  using ConfigFn = char* (*)();
  if (auto* openblas_config = reinterpret_cast<ConfigFn>(probe("openblas_get_config"))) {
    info.name = "OpenBLAS";
    info.version = openblas_config();
    info.kernels = blas_kernels();
    info.kernels_note = blas_kernels_note(info.version);
  } else if (probe("mkl_get_version_string") != nullptr ||
             (info.library.empty() && info.torch_build == "mkl")) {
    info.name = "MKL";
  } else if (probe("bli_info_get_version_str") != nullptr) {
    info.name = "BLIS";
  } else if (info.library.empty()) {
    info.name = info.torch_build.empty() ? "unknown" : info.torch_build;
  } else if (info.library.find("/blas/libblas.so") != std::string::npos) {
    // Debian's netlib reference implementation; optimised providers sit in their own
    // folders (openblas-openmp/, atlas/, blis-openmp/).
    info.name = "reference BLAS (netlib)";
    info.reference = true;
  } else {
    info.name = std::filesystem::path(info.library).filename().string();
  }
  if (provider != nullptr) {
    dlclose(provider);  // drops the reference RTLD_NOLOAD took; the library stays loaded
  }
  return info;
}

// Device names come from the CUDA driver API, opened at run time, so the same code builds
// against a CPU-only LibTorch (no CUDA headers) and reports devices on a CUDA build.
std::vector<CudaDevice> query_cuda_devices(std::string& note) {
  std::vector<CudaDevice> devices;
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    note = "no NVIDIA driver (libcuda.so.1 not found)";
    return devices;
  }
  using InitFn = int (*)(unsigned);
  using CountFn = int (*)(int*);
  using GetFn = int (*)(int*, int);
  using NameFn = int (*)(char*, int, int);
  using MemFn = int (*)(std::size_t*, int);
  auto init = reinterpret_cast<InitFn>(dlsym(lib, "cuInit"));
  auto count = reinterpret_cast<CountFn>(dlsym(lib, "cuDeviceGetCount"));
  auto get = reinterpret_cast<GetFn>(dlsym(lib, "cuDeviceGet"));
  auto name = reinterpret_cast<NameFn>(dlsym(lib, "cuDeviceGetName"));
  auto mem = reinterpret_cast<MemFn>(dlsym(lib, "cuDeviceTotalMem_v2"));
  int n = 0;
  if (init == nullptr || count == nullptr || get == nullptr || name == nullptr ||
      init(0) != 0 || count(&n) != 0) {
    note = "the NVIDIA driver did not initialise";
  } else {
    for (int i = 0; i < n; ++i) {
      int dev = 0;
      char buf[256] = {};
      std::size_t bytes = 0;
      if (get(&dev, i) != 0 || name(buf, sizeof(buf), dev) != 0) {
        continue;
      }
      if (mem != nullptr && mem(&bytes, dev) != 0) {
        bytes = 0;
      }
      devices.push_back({i, buf, static_cast<std::int64_t>(bytes)});
    }
  }
  // The driver library stays loaded: CUDA-enabled LibTorch uses it anyway, and unloading
  // an initialised driver is unsafe.
  return devices;
}

std::string format_gib(std::int64_t bytes) {
  std::ostringstream out;
  out.precision(1);
  out << std::fixed << static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0) << " GiB";
  return out.str();
}

}  // namespace

RuntimeInfo collect_runtime_info(const std::string& threads_source) {
  RuntimeInfo info;
  info.icet_version = kVersion;
  info.torch_version = TORCH_VERSION;
  const std::string config = at::show_config();
  info.blas = detect_blas(config);
  info.parallel_backend = build_setting(config, "USE_OPENMP") == "ON" ? "OpenMP" : "native";
  info.intra_op_threads = at::get_num_threads();
  info.threads_source = threads_source;
  info.hardware_threads = static_cast<int>(std::thread::hardware_concurrency());

  std::string driver_note;
  const auto driver_devices = query_cuda_devices(driver_note);
  info.cuda_available = torch::cuda::is_available();
  if (info.cuda_available) {
    info.cuda_devices = driver_devices;
    if (info.cuda_devices.empty()) {  // driver query failed but LibTorch sees devices
      for (int i = 0; i < static_cast<int>(torch::cuda::device_count()); ++i) {
        info.cuda_devices.push_back({i, "CUDA device " + std::to_string(i), 0});
      }
    }
  } else if (build_setting(config, "USE_CUDA") != "ON") {
    info.cuda_note = "this LibTorch is CPU-only (USE_CUDA=OFF)";
    if (!driver_devices.empty()) {
      info.cuda_note += "; the driver sees " + std::to_string(driver_devices.size()) +
                        " GPU(s): build against a CUDA LibTorch to use them";
    }
  } else {
    info.cuda_note = driver_note.empty() ? "no CUDA device visible" : driver_note;
  }
  return info;
}

std::vector<std::string> runtime_warnings(const RuntimeInfo& info) {
  std::vector<std::string> warnings;
  if (info.blas.reference) {
    warnings.push_back(
        "LibTorch is running on the reference BLAS (" + info.blas.library +
        "): matrix products are about 20x slower than with OpenBLAS. Install it with "
        "'sudo apt-get install libopenblas0-openmp' (packaging/setup.sh does this).");
  }
  if (info.hardware_threads > 1 && info.intra_op_threads == 1 && info.threads_source == "default") {
    warnings.push_back("running torch on 1 thread although " +
                       std::to_string(info.hardware_threads) + " are available");
  }
  return warnings;
}

std::string device_summary(const RuntimeInfo& info) {
  if (info.cuda_available && !info.cuda_devices.empty()) {
    return "CUDA · " + info.cuda_devices.front().name;
  }
  std::string text = "CPU · " + std::to_string(info.intra_op_threads) +
                     (info.intra_op_threads == 1 ? " thread · " : " threads · ") +
                     (info.blas.reference ? std::string("reference BLAS (slow)") : info.blas.name);
  return text;
}

std::string to_text(const RuntimeInfo& info) {
  std::ostringstream out;
  out << kAppName << " " << info.icet_version << "\n";
  out << "  LibTorch          " << info.torch_version << " (parallel backend: "
      << info.parallel_backend << ")\n";
  out << "  BLAS              " << info.blas.name;
  if (!info.blas.version.empty()) {
    out << " [" << info.blas.version << "]";
  }
  out << "\n";
  if (!info.blas.library.empty()) {
    out << "  BLAS library      " << info.blas.library << "\n";
  }
  if (!info.blas.kernels.empty()) {
    out << "  BLAS kernels      " << info.blas.kernels;
    if (!info.blas.kernels_note.empty()) out << " (" << info.blas.kernels_note << ")";
    out << "\n";
  }
  out << "  Intra-op threads  " << info.intra_op_threads << " (" << info.threads_source << "; "
      << info.hardware_threads << " hardware threads)\n";
  if (info.cuda_available) {
    out << "  CUDA              available, " << info.cuda_devices.size() << " device(s)\n";
    for (const auto& d : info.cuda_devices) {
      out << "    cuda:" << d.index << "  " << d.name;
      if (d.total_memory_bytes > 0) {
        out << " (" << format_gib(d.total_memory_bytes) << ")";
      }
      out << "\n";
    }
  } else {
    out << "  CUDA              not available: " << info.cuda_note << "\n";
  }
  for (const auto& w : runtime_warnings(info)) {
    out << "\n  WARNING: " << w << "\n";
  }
  return out.str();
}

nlohmann::json to_json(const RuntimeInfo& info) {
  nlohmann::json devices = nlohmann::json::array();
  for (const auto& d : info.cuda_devices) {
    devices.push_back({{"index", d.index}, {"name", d.name}, {"total_memory_bytes", d.total_memory_bytes}});
  }
  return {
      {"version", info.icet_version},
      {"torch_version", info.torch_version},
      {"parallel_backend", info.parallel_backend},
      {"blas",
       {{"name", info.blas.name},
        {"version", info.blas.version},
        {"library", info.blas.library},
        {"torch_build", info.blas.torch_build},
        {"kernels", info.blas.kernels},
        {"kernels_note", info.blas.kernels_note},
        {"reference", info.blas.reference}}},
      {"intra_op_threads", info.intra_op_threads},
      {"threads_source", info.threads_source},
      {"hardware_threads", info.hardware_threads},
      {"cuda_available", info.cuda_available},
      {"cuda_devices", devices},
      {"cuda_note", info.cuda_note},
      {"warnings", runtime_warnings(info)},
  };
}

void log_runtime_info(const RuntimeInfo& info) {
  auto logger = log::get("runtime");
  logger->info("{} {}, LibTorch {}, BLAS {} ({}), {} intra-op threads ({})", kAppName,
               info.icet_version, info.torch_version, info.blas.name,
               info.blas.library.empty() ? "built in" : info.blas.library, info.intra_op_threads,
               info.threads_source);
  if (!info.blas.kernels.empty()) {
    logger->info("OpenBLAS kernels: {}{}", info.blas.kernels,
                 info.blas.kernels_note.empty() ? "" : " (" + info.blas.kernels_note + ")");
  }
  if (info.cuda_available) {
    for (const auto& d : info.cuda_devices) {
      logger->info("CUDA device cuda:{}: {}", d.index, d.name);
    }
  } else {
    logger->info("CUDA not available: {}", info.cuda_note);
  }
  for (const auto& w : runtime_warnings(info)) {
    logger->warn("{}", w);
  }
}

namespace {

// Runs float32 n x n products back to back (after a warm-up for the thread pool
// and BLAS initialisation) until `keep_going(seconds of this product, seconds so far)` says
// stop; returns the GFLOP of one product.
double time_square_products(int n, const std::function<bool(double, double)>& keep_going) {
  const auto a = at::randn({n, n});
  const auto b = at::randn({n, n});
  (void)at::mm(a, b);
  const auto start = std::chrono::steady_clock::now();
  auto last = start;
  bool more = true;
  while (more) {
    (void)at::mm(a, b);
    const auto now = std::chrono::steady_clock::now();
    more = keep_going(std::chrono::duration<double>(now - last).count(),
                      std::chrono::duration<double>(now - start).count());
    last = now;
  }
  return 2.0 * n * n * static_cast<double>(n) / 1e9;
}

}  // namespace

double measure_cpu_matmul_gflops(int n, int reps) {
  double best = 0.0;
  int done = 0;
  const double gflop = time_square_products(n, [&](double s, double) {
    best = std::max(best, 1.0 / s);
    return ++done < std::max(1, reps);
  });
  return best * gflop;
}

double measure_cpu_matmul_gflops_sustained(int n, double seconds) {
  int64_t products = 0;
  double elapsed = 0.0;
  const double gflop = time_square_products(n, [&](double, double total) {
    ++products;
    elapsed = total;
    return total < seconds;
  });
  return gflop * static_cast<double>(products) / elapsed;
}

}  // namespace icet::runtime
