#include "core/io/load_bench.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/base/error.h"
#include "core/base/log.h"
#include "core/io/safetensors.h"
#include "core/runtime/memory.h"

namespace icet::io {

namespace fs = std::filesystem;

namespace {

constexpr int kBenchTensors = 8;
constexpr int64_t kBenchColumns = 1024;
constexpr std::size_t kChunkBytes = 16u << 20;

using Clock = std::chrono::steady_clock;


double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Wrapping sum of 64-bit little-endian words, the last partial word zero-padded. Reading
// every word is what makes the kernel map every page.
uint64_t word_sum(const std::byte* data, std::size_t size) {
  uint64_t sum = 0;
  std::size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t w;
    std::memcpy(&w, data + i, 8);
    sum += w;
  }
  if (i < size) {
    uint64_t w = 0;
    std::memcpy(&w, data + i, size - i);
    sum += w;
  }
  return sum;
}

uint64_t proc_status_bytes(const char* key) { return static_cast<uint64_t>(runtime::proc_status_bytes(key)); }

// "5" resets VmHWM to the current RSS (Linux >= 4.0).
bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

// Reads every byte once with read(2), so the measured load finds the pages in the page
// cache; a small reusable buffer keeps this process's RSS out of it.
void warm_page_cache(const fs::path& file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return;  // open() in the measured part reports the problem properly
  }
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::vector<char> buffer(kChunkBytes);
  while (::read(fd, buffer.data(), buffer.size()) > 0) {
  }
  ::close(fd);
}

// The temporary folder of a generated file, removed on every exit path.
struct TempDir {
  fs::path path;
  ~TempDir() {
    if (!path.empty()) {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  }
};

uint64_t next_random(uint64_t& state) {  // xorshift64
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}

void write_or_throw(int fd, const void* data, std::size_t size, const fs::path& file) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      throw EnvironmentError(describe(file.string(), "to write the benchmark file",
                                      "error: " + errno_message(errno),
                                      "Set TMPDIR to a folder with enough space, or pass a file"));
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

// Streams a float32 safetensors file of `kBenchTensors` tensors [rows, 1024] without holding
// it in memory. Values are uniform in [1, 2) (finite, non-trivial). Returns the word_sum of
// every tensor's bytes, as run_load_benchmark will compute it.
uint64_t generate_file(const fs::path& file, uint64_t target_bytes) {
  const uint64_t row_bytes = kBenchColumns * 4;
  const int64_t rows =
      std::max<int64_t>(1, static_cast<int64_t>(target_bytes / kBenchTensors / row_bytes));
  const uint64_t tensor_bytes = static_cast<uint64_t>(rows) * row_bytes;

  nlohmann::json header = nlohmann::json::object();
  for (int k = 0; k < kBenchTensors; ++k) {
    header["bench." + std::to_string(k) + ".weight"] = {
        {"dtype", "F32"},
        {"shape", {rows, kBenchColumns}},
        {"data_offsets", {k * tensor_bytes, (k + 1) * tensor_bytes}}};
  }
  header["__metadata__"] = {{"generator", "icet load benchmark"}};
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t n = text.size();

  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw EnvironmentError(describe(file.string(), "a writable temporary file",
                                    "error: " + errno_message(errno),
                                    "Set TMPDIR to a writable folder, or pass a file"));
  }
  uint64_t sum = 0;
  try {
    write_or_throw(fd, &n, 8, file);
    write_or_throw(fd, text.data(), text.size(), file);
    std::vector<uint32_t> chunk(kChunkBytes / 4);
    uint64_t state = 0x9e3779b97f4a7c15ull;
    for (int k = 0; k < kBenchTensors; ++k) {
      // Tensor sizes are multiples of 8, so chunk words line up with word_sum's words.
      for (uint64_t done = 0; done < tensor_bytes;) {
        const std::size_t bytes = std::min<uint64_t>(kChunkBytes, tensor_bytes - done);
        for (std::size_t i = 0; i < bytes / 4; ++i) {
          chunk[i] = 0x3f800000u | static_cast<uint32_t>(next_random(state) >> 41);
        }
        sum += word_sum(reinterpret_cast<const std::byte*>(chunk.data()), bytes);
        write_or_throw(fd, chunk.data(), bytes, file);
        done += bytes;
      }
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return sum;
}

}  // namespace

LoadBenchReport run_load_benchmark(std::optional<fs::path> file, uint64_t generate_bytes) {
  auto log = icet::log::get("io");
  LoadBenchReport report;
  TempDir temp;
  std::optional<uint64_t> expected_sum;

  if (file) {
    report.file = *file;
    std::error_code ec;
    if (!fs::exists(*file, ec)) {
      throw InputError(describe(file->string(), "a safetensors file or snapshot folder",
                                "nothing at that path"));
    }
  } else {
    std::error_code ec;
    const fs::path base = fs::temp_directory_path(ec);
    std::string pattern = (base / "icet-load-bench-XXXXXX").string();
    if (ec || ::mkdtemp(pattern.data()) == nullptr) {
      const std::string error = ec ? ec.message() : errno_message(errno);
      throw EnvironmentError(describe(base.string(), "a writable temporary folder",
                                      "error: " + error, "Set TMPDIR to a writable folder"));
    }
    temp.path = pattern;
    const auto space = fs::space(temp.path, ec);
    if (!ec && space.available < generate_bytes + (64u << 20)) {
      throw EnvironmentError(describe(temp.path.string(),
                                      std::to_string(generate_bytes) + " bytes of free space",
                                      std::to_string(space.available) + " bytes",
                                      "Set TMPDIR to a folder with enough space, or pass a file"));
    }
    report.file = temp.path / "bench.safetensors";
    report.generated = true;
    log->info("load bench: generating {:.2f} GB in {}", generate_bytes / 1e9, report.file.string());
    expected_sum = generate_file(report.file, generate_bytes);
  }

  // Warm the cache with the checkpoint's own files (opening the store once tells which).
  {
    const TensorStore probe = fs::is_directory(report.file) ? TensorStore::open_dir(report.file)
                                                            : TensorStore::open_file(report.file);
    for (const auto& f : probe.files()) {
      warm_page_cache(f->path());
    }
  }

  report.peak_reset = reset_peak_rss();
  report.rss_before_bytes = proc_status_bytes("VmRSS");
  uint64_t rss_end = 0;
  {
    const auto start = Clock::now();
    const TensorStore store = fs::is_directory(report.file) ? TensorStore::open_dir(report.file)
                                                            : TensorStore::open_file(report.file);
    report.open_seconds = seconds_since(start);
    for (const auto& name : store.names()) {
      const at::Tensor t = store.get(name);
      report.checksum += word_sum(static_cast<const std::byte*>(t.data_ptr()), t.nbytes());
    }
    report.load_seconds = seconds_since(start);
    report.tensor_count = store.size();
    for (const auto& f : store.files()) {
      report.file_bytes += f->file_size();
    }
    rss_end = proc_status_bytes("VmRSS");
  }
  const uint64_t peak = report.peak_reset ? proc_status_bytes("VmHWM") : rss_end;
  report.rss_increase_bytes =
      static_cast<int64_t>(peak) - static_cast<int64_t>(report.rss_before_bytes);
  report.rss_ratio = report.file_bytes > 0
                         ? static_cast<double>(report.rss_increase_bytes) / report.file_bytes
                         : 0.0;
  report.rss_ok = report.rss_ratio <= kMaxLoadRssRatio;
  report.gb_per_s = report.load_seconds > 0 ? report.file_bytes / report.load_seconds / 1e9 : 0;
  report.checksum_ok = !expected_sum || *expected_sum == report.checksum;

  log->info(
      "load bench: {} tensors, {:.3f} GB in {:.3f} s ({:.2f} GB/s), peak RSS +{:.3f} GB "
      "(x{:.3f} of the file){}",
      report.tensor_count, report.file_bytes / 1e9, report.load_seconds, report.gb_per_s,
      report.rss_increase_bytes / 1e9, report.rss_ratio,
      report.checksum_ok ? "" : ", CHECKSUM MISMATCH");
  return report;
}

nlohmann::json to_json(const LoadBenchReport& r) {
  return {
      {"file", r.file.string()},
      {"generated", r.generated},
      {"file_bytes", r.file_bytes},
      {"tensor_count", r.tensor_count},
      {"open_seconds", r.open_seconds},
      {"load_seconds", r.load_seconds},
      {"gb_per_s", r.gb_per_s},
      {"rss_before_bytes", r.rss_before_bytes},
      {"rss_increase_bytes", r.rss_increase_bytes},
      {"rss_ratio", r.rss_ratio},
      {"rss_ratio_max", kMaxLoadRssRatio},
      {"rss_ok", r.rss_ok},
      {"peak_reset", r.peak_reset},
      {"checksum", r.checksum},
      {"checksum_ok", r.checksum_ok},
  };
}

}  // namespace icet::io
