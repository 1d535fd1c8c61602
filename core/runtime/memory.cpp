#include "core/runtime/memory.h"

#include <dlfcn.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace icet::runtime {
namespace {

// A "Key:   123 kB" line of a /proc file, in bytes; 0 when absent.
int64_t proc_kib(const char* file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) {
      std::istringstream v(line.substr(key.size() + 1));
      int64_t kib = 0;
      v >> kib;
      return kib * 1024;
    }
  }
  return 0;
}

DeviceMemory nvml_memory(unsigned index) {
  // NVML's C API, declared here (no CUDA headers in CPU builds).
  struct NvmlMemory {
    unsigned long long total, free, used;
  };
  using InitFn = int (*)();
  using HandleFn = int (*)(unsigned, void**);
  using MemFn = int (*)(void*, NvmlMemory*);
  static void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);  // kept loaded
  if (lib == nullptr) return {};
  static const bool ready = [] {
    auto init = reinterpret_cast<InitFn>(dlsym(lib, "nvmlInit_v2"));
    return init != nullptr && init() == 0;
  }();
  static const auto handle = reinterpret_cast<HandleFn>(dlsym(lib, "nvmlDeviceGetHandleByIndex_v2"));
  static const auto mem = reinterpret_cast<MemFn>(dlsym(lib, "nvmlDeviceGetMemoryInfo"));
  void* dev = nullptr;
  NvmlMemory m{};
  if (!ready || handle == nullptr || mem == nullptr || handle(index, &dev) != 0 || mem(dev, &m) != 0) return {};
  return {static_cast<int64_t>(m.total), static_cast<int64_t>(m.free)};
}

}  // namespace

DeviceMemory device_memory(const std::string& device) {
  if (device.rfind("cuda", 0) == 0) {
    unsigned index = 0;
    if (device.size() > 5) index = static_cast<unsigned>(std::strtoul(device.c_str() + 5, nullptr, 10));
    return nvml_memory(index);
  }
  return {proc_kib("/proc/meminfo", "MemTotal"), proc_kib("/proc/meminfo", "MemAvailable")};
}

int64_t proc_status_bytes(const char* key) { return proc_kib("/proc/self/status", key); }

}  // namespace icet::runtime
