#pragma once

// Memory of a device, for the training memory check, the status bar and the job list.
// Torch-free.

#include <cstdint>
#include <string>

namespace icet::runtime {

struct DeviceMemory {
  int64_t total_bytes = 0;  // 0: unknown
  int64_t free_bytes = 0;
  int64_t used_bytes() const { return total_bytes - free_bytes; }
};

// "cpu": /proc/meminfo MemTotal and MemAvailable. "cuda" / "cuda:N": NVML (libnvidia-ml.so.1,
// opened at run time, so CPU-only builds need no CUDA); device-wide figures; zeros without a
// driver.
DeviceMemory device_memory(const std::string& device);

// A "Key:  N kB" field of /proc/self/status (VmRSS, VmHWM, ...) in bytes; 0 when unavailable.
int64_t proc_status_bytes(const char* key);
// This process's resident memory (VmRSS), bytes.
inline int64_t process_rss_bytes() { return proc_status_bytes("VmRSS"); }

}  // namespace icet::runtime
