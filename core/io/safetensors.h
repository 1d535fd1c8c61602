#pragma once

// Safetensors checkpoints: a memory-mapped, strictly validated reader that hands out zero-copy
// CPU tensors, a sharded-checkpoint view (model.safetensors.index.json) and an atomic writer.
//
// File layout (https://github.com/huggingface/safetensors):
//   [u64 little-endian N][N bytes of JSON header][data area]
//   header: {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//            "__metadata__": {"<key>": "<value>"}}
//   offsets are byte offsets relative to the start of the data area.
//
// Every problem with a file is an icet::InputError that names the file and the tensor or key.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace icet::io {

// The element types this project reads and writes (a subset of the safetensors dtypes; F64,
// the unsigned wide types and the F8 types are rejected as unknown).
enum class DType { F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

// The safetensors spelling: "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL".
std::string_view dtype_name(DType dtype);
// Inverse of dtype_name; nullopt for any other spelling (case-sensitive, as in the format).
std::optional<DType> parse_dtype(std::string_view name);
// "F32, F16, BF16, ..." for error messages.
std::string known_dtype_names();
// Bytes per element.
std::size_t item_size(DType dtype);
at::ScalarType to_scalar_type(DType dtype);
// nullopt for torch types with no DType (double, complex, ...).
std::optional<DType> from_scalar_type(at::ScalarType type);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets in the data area, [begin, end)

  uint64_t byte_size() const { return end - begin; }
  int64_t numel() const;
};

// Header-size bound, as in the reference implementation: a larger header is a corrupt or
// hostile file, not a checkpoint.
inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// One memory-mapped safetensors file. The mapping is private and writable (copy-on-write):
// an in-place op on a returned tensor changes only this process's copy, never the file, and
// never faults. Tensors returned by tensor() keep the mapping alive on their own, so they may
// outlive this object. Immutable after open(): any thread may call the const members.
// As with any mmap reader, a file truncated by another process while mapped raises SIGBUS on
// access; checkpoints are replaced by rename (as save_safetensors does), never rewritten.
class SafetensorsFile {
 public:
  // Maps and validates the whole header (dtypes, shapes, byte ranges, overlaps); throws
  // icet::InputError for a bad file and icet::EnvironmentError when the OS refuses the map.
  static std::shared_ptr<SafetensorsFile> open(const std::filesystem::path& file);

  const std::filesystem::path& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return infos_.contains(name); }
  std::size_t size() const { return infos_.size(); }
  // Throws InputError naming the file and the tensor when absent.
  const TensorInfo& info(const std::string& name) const;

  // Zero-copy CPU tensor aliasing the mapping. The only exception is a tensor whose bytes are
  // not aligned to its element size (possible in files from other writers): it is copied,
  // because unaligned element access is undefined behaviour in torch kernels.
  at::Tensor tensor(const std::string& name) const;
  // As tensor(name) when dtype and device match the stored ones; otherwise a converted copy.
  at::Tensor tensor(const std::string& name, at::ScalarType dtype, const at::Device& device) const;

  // Raw views, for hashing and diagnostics.
  uint64_t file_size() const { return file_size_; }
  std::string_view header_text() const;          // the N header bytes, verbatim
  std::span<const std::byte> data_area() const;  // everything after the header

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  struct Mapping;  // owns the mmap; shared with every tensor that aliases it

 private:
  SafetensorsFile() = default;
  void parse_header();

  std::filesystem::path path_;
  std::shared_ptr<Mapping> mapping_;
  uint64_t file_size_ = 0;
  uint64_t header_size_ = 0;  // N
  std::map<std::string, std::string> metadata_;
  std::map<std::string, TensorInfo> infos_;
};

// A checkpoint: either one file or the shards listed by a model.safetensors.index.json.
// Cheap to copy (shares the opened files); immutable, so safe to share between threads.
class TensorStore {
 public:
  // A Hugging Face snapshot folder: model.safetensors.index.json if present (sharded), else
  // model.safetensors. Throws InputError listing the *.safetensors files found otherwise.
  static TensorStore open_dir(const std::filesystem::path& snapshot_dir);
  // One .safetensors file, or an index .json file (anything ending in ".index.json").
  static TensorStore open_file(const std::filesystem::path& file);
  // A specific index file; shard paths in its weight_map are relative to its folder.
  static TensorStore open_index(const std::filesystem::path& index_file);

  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return owner_.contains(name); }
  std::size_t size() const { return owner_.size(); }
  const TensorInfo& info(const std::string& name) const;
  at::Tensor get(const std::string& name) const;
  at::Tensor get(const std::string& name, at::ScalarType dtype, const at::Device& device) const;
  std::filesystem::path file_of(const std::string& name) const;
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }
  // The index's "metadata" object (e.g. total_size) or the single file's __metadata__, as
  // strings (non-string index values are kept as their JSON text).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A cheap, stable id of the weights, 16 hex digits (FNV-1a 64). It covers, for each file in
  // name order: its file name (not the folder), its size, its header JSON verbatim and 64
  // evenly spaced 4 KiB samples of its data area. Headers alone would give every fine-tune of
  // one architecture the same id; the samples tell them apart at the cost of ~64 page reads
  // per file. It does not cover the index file, mtimes or unsampled bytes: it identifies a
  // checkpoint, it is not an integrity check.
  std::string content_hash() const;

 private:
  const std::shared_ptr<SafetensorsFile>& owner_file(const std::string& name) const;

  std::filesystem::path origin_;  // the file, index or folder it was opened from
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::size_t> owner_;  // tensor name -> index into files_
  std::map<std::string, std::string> metadata_;
};

// Writes a safetensors file atomically: <file>.tmp, fsync, rename over <file>, fsync of the
// folder. Tensors are written contiguous, from CPU, in their own dtype (which must be one of
// DType). The data area is ordered by element size, largest first, so every tensor starts
// aligned to its element size and reads back zero-copy; the header is padded to a multiple
// of 8 bytes. Throws InputError for bad names or dtypes (nothing is written), EnvironmentError
// when the disk refuses.
void save_safetensors(const std::filesystem::path& file,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace icet::io
