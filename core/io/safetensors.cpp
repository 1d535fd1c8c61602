#include "core/io/safetensors.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>

#include "core/base/atomic_file.h"
#include "core/base/error.h"
#include "core/base/hash.h"
#include "core/base/json_util.h"
#include "core/base/log.h"

namespace icet::io {

// The format stores little-endian integers and elements; we alias the bytes directly.
static_assert(std::endian::native == std::endian::little,
              "safetensors zero-copy loading assumes a little-endian host");

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr std::array<DType, 9> kAllDTypes = {DType::F32, DType::F16, DType::BF16,
                                             DType::I64, DType::I32, DType::I16,
                                             DType::I8,  DType::U8,  DType::BOOL};

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }

std::string where_tensor(const fs::path& file, const std::string& name) {
  return file.string() + ": tensor " + in_quotes(name);
}

std::string json_type(const json& j) { return j.type_name(); }

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    s += (i > 0 ? ", " : "") + std::to_string(shape[i]);
  }
  return s + "]";
}

std::string range_text(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}


// Parses JSON text and reports duplicate keys, which nlohmann would otherwise resolve silently
// (last one wins). `dup_scope` picks the object whose keys are checked: empty for the root,
// else the root key whose object value is checked (e.g. "weight_map").
json parse_json_checked(std::string_view text, const std::string& where,
                        const std::string& dup_scope, const std::string& what,
                        const std::string& key_kind) {
  std::set<std::string> seen;
  std::string current_top;
  std::string duplicate;
  const int depth_checked = dup_scope.empty() ? 1 : 2;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) {
      json_util::check_depth(depth, where);
    }
    if (event == json::parse_event_t::key) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (depth == 1) {
        current_top = key;
      }
      if (depth == depth_checked && (dup_scope.empty() || current_top == dup_scope) &&
          !seen.insert(key).second && duplicate.empty()) {
        duplicate = key;
      }
    }
    return true;
  };
  json parsed;
  try {
    parsed = json::parse(text.begin(), text.end(), callback);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for "1e999" (406)
    throw InputError(describe(where, "a valid JSON " + what,
                              std::string("invalid JSON (") + e.what() + ")",
                              "The file is damaged or not a " + what + "; re-download it"));
  }
  if (!parsed.is_object()) {
    throw InputError(
        describe(where, "a JSON object as the " + what, "a JSON " + json_type(parsed)));
  }
  if (!duplicate.empty()) {
    const std::string scope = dup_scope.empty() ? "" : " in " + in_quotes(dup_scope);
    throw InputError(describe(where + ": " + key_kind + " " + in_quotes(duplicate),
                              "each " + key_kind + " once" + scope, "it twice"));
  }
  return parsed;
}

int64_t checked_numel(const std::vector<int64_t>& shape, bool* overflow) {
  int64_t n = 1;
  *overflow = false;
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(n, d, &n)) {
      *overflow = true;
      return 0;
    }
  }
  return n;
}

void write_all(int fd, const void* data, std::size_t size, const fs::path& file) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      throw EnvironmentError(
          describe(file.string(), "to write " + std::to_string(size) + " more bytes",
                   "error: " + errno_message(errno), "Check free disk space and permissions"));
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// DType

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::I64:
      return "I64";
    case DType::I32:
      return "I32";
    case DType::I16:
      return "I16";
    case DType::I8:
      return "I8";
    case DType::U8:
      return "U8";
    case DType::BOOL:
      return "BOOL";
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (DType d : kAllDTypes) {
    if (dtype_name(d) == name) {
      return d;
    }
  }
  return std::nullopt;
}

std::string known_dtype_names() {
  std::string s;
  for (DType d : kAllDTypes) {
    s += (s.empty() ? "" : ", ") + std::string(dtype_name(d));
  }
  return s;
}

std::size_t item_size(DType dtype) {
  switch (dtype) {
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16:
      return 2;
    case DType::I64:
      return 8;
    case DType::I8:
    case DType::U8:
    case DType::BOOL:
      return 1;
  }
  return 1;
}

at::ScalarType to_scalar_type(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return at::kFloat;
    case DType::F16:
      return at::kHalf;
    case DType::BF16:
      return at::kBFloat16;
    case DType::I64:
      return at::kLong;
    case DType::I32:
      return at::kInt;
    case DType::I16:
      return at::kShort;
    case DType::I8:
      return at::kChar;
    case DType::U8:
      return at::kByte;
    case DType::BOOL:
      return at::kBool;
  }
  return at::kFloat;
}

std::optional<DType> from_scalar_type(at::ScalarType type) {
  for (DType d : kAllDTypes) {
    if (to_scalar_type(d) == type) {
      return d;
    }
  }
  return std::nullopt;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) {
    n *= d;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

struct SafetensorsFile::Mapping {
  std::byte* base = nullptr;
  std::size_t size = 0;

  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (base != nullptr) {
      ::munmap(base, size);
    }
  }
};

SafetensorsFile::~SafetensorsFile() = default;

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const fs::path& file) {
  std::shared_ptr<SafetensorsFile> self(new SafetensorsFile());
  self->path_ = file;
  self->mapping_ = std::make_shared<Mapping>();  // allocated first: no leak of fd or map

  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    throw InputError(describe(file.string(), "a readable safetensors file",
                              "it cannot be opened (" + errno_message(err) + ")",
                              "Check the path and its permissions"));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(
        describe(file.string(), "a regular safetensors file", "a folder or special file"));
  }
  self->file_size_ = static_cast<uint64_t>(st.st_size);
  if (self->file_size_ < 8) {
    ::close(fd);
    throw InputError(describe(file.string(), "at least 8 bytes (the header length)",
                              std::to_string(self->file_size_) + " bytes",
                              "The file is truncated or not a safetensors file"));
  }

  // Private + writable = copy-on-write: in-place ops on returned tensors never reach the
  // file and never fault. No MAP_POPULATE: on a private writable mapping it pre-faults with
  // write intent and copies every page. MAP_NORESERVE: a private writable mapping is
  // otherwise charged as if every page will be copied, and the kernel's default overcommit
  // heuristic refuses a checkpoint larger than RAM + swap; pages only become private when
  // written, which loading never does.
  void* addr =
      ::mmap(nullptr, self->file_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
  const int map_err = errno;
  ::close(fd);  // the mapping keeps its own reference to the file
  if (addr == MAP_FAILED) {
    throw EnvironmentError(
        describe(file.string(), "a memory map of " + std::to_string(self->file_size_) + " bytes",
                 "mmap failed (" + errno_message(map_err) + ")",
                 "Check the address-space limit (ulimit -v); with "
                 "vm.overcommit_memory=2 the whole file counts against "
                 "the commit limit"));
  }
  self->mapping_->base = static_cast<std::byte*>(addr);
  self->mapping_->size = self->file_size_;

  uint64_t n = 0;
  std::memcpy(&n, self->mapping_->base, 8);
  if (n > kMaxHeaderBytes) {
    throw InputError(describe(
        file.string(), "a header length of at most " + std::to_string(kMaxHeaderBytes) + " bytes",
        std::to_string(n) + " bytes", "The file is corrupt or not a safetensors file"));
  }
  if (n > self->file_size_ - 8) {
    throw InputError(
        describe(file.string(), "a header of " + std::to_string(n) + " bytes within the file",
                 "only " + std::to_string(self->file_size_ - 8) + " bytes after the length field",
                 "The file is truncated; re-download or re-save it"));
  }
  self->header_size_ = n;
  self->parse_header();
  icet::log::get("io")->debug("opened {} ({} tensors, {} bytes)", file.string(),
                              self->infos_.size(), self->file_size_);
  return self;
}

std::string_view SafetensorsFile::header_text() const {
  return {reinterpret_cast<const char*>(mapping_->base) + 8, header_size_};
}

std::span<const std::byte> SafetensorsFile::data_area() const {
  const uint64_t start = 8 + header_size_;
  return {mapping_->base + start, file_size_ - start};
}

void SafetensorsFile::parse_header() {
  const std::string file = path_.string();
  const json header =
      parse_json_checked(header_text(), file + ": header", "", "safetensors header", "tensor");
  const uint64_t data_size = file_size_ - 8 - header_size_;

  for (const auto& [key, entry] : header.items()) {
    if (key == "__metadata__") {
      const std::string where = file + ": header key '__metadata__'";
      if (!entry.is_object()) {
        throw InputError(
            describe(where, "an object of string values", "a JSON " + json_type(entry)));
      }
      for (const auto& [mkey, mvalue] : entry.items()) {
        if (!mvalue.is_string()) {
          throw InputError(describe(where + " key " + in_quotes(mkey), "a string value",
                                    "a JSON " + json_type(mvalue)));
        }
        metadata_[mkey] = mvalue.get<std::string>();
      }
      continue;
    }

    const std::string where = where_tensor(path_, key);
    if (!entry.is_object()) {
      throw InputError(describe(where, "an object with dtype, shape and data_offsets",
                                "a JSON " + json_type(entry)));
    }
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      if (!entry.contains(field)) {
        throw InputError(describe(where, std::string("a \"") + field + "\" field",
                                  "none (fields: " + entry.dump() + ")"));
      }
    }

    TensorInfo info;
    info.name = key;

    const json& dtype = entry["dtype"];
    if (!dtype.is_string()) {
      throw InputError(describe(where + " dtype", "a string", "a JSON " + json_type(dtype)));
    }
    const auto parsed_dtype = parse_dtype(dtype.get_ref<const std::string&>());
    if (!parsed_dtype) {
      throw InputError(describe(where + " dtype", "one of " + known_dtype_names(),
                                in_quotes(dtype.get<std::string>()),
                                "Convert the checkpoint to a supported dtype"));
    }
    info.dtype = *parsed_dtype;

    const json& shape = entry["shape"];
    if (!shape.is_array()) {
      throw InputError(
          describe(where + " shape", "an array of integers", "a JSON " + json_type(shape)));
    }
    for (std::size_t i = 0; i < shape.size(); ++i) {
      const json& d = shape[i];
      const std::string dim = where + " shape[" + std::to_string(i) + "]";
      if (!d.is_number_integer()) {
        throw InputError(describe(dim, "an integer", "a JSON " + json_type(d) + " " + d.dump()));
      }
      if (d.is_number_unsigned()) {
        if (d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          throw InputError(describe(dim, "a dimension below 2^63", d.dump()));
        }
      } else if (d.get<int64_t>() < 0) {
        throw InputError(describe(dim, "a non-negative dimension", d.dump()));
      }
      info.shape.push_back(d.get<int64_t>());
    }

    const json& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2) {
      throw InputError(describe(where + " data_offsets", "an array [begin, end]", offsets.dump()));
    }
    for (const json& o : offsets) {
      if (!o.is_number_unsigned()) {
        throw InputError(
            describe(where + " data_offsets", "two non-negative integers", offsets.dump()));
      }
    }
    info.begin = offsets[0].get<uint64_t>();
    info.end = offsets[1].get<uint64_t>();
    if (info.begin > info.end) {
      throw InputError(
          describe(where + " data_offsets", "begin <= end", range_text(info.begin, info.end)));
    }

    bool overflow = false;
    const int64_t numel = checked_numel(info.shape, &overflow);
    uint64_t expected_bytes = 0;
    if (overflow ||
        __builtin_mul_overflow(static_cast<uint64_t>(numel),
                               static_cast<uint64_t>(item_size(info.dtype)), &expected_bytes)) {
      throw InputError(describe(where + " shape", "a shape whose byte size fits in 64 bits",
                                shape_text(info.shape)));
    }
    if (expected_bytes != info.end - info.begin) {
      throw InputError(describe(where,
                                std::to_string(expected_bytes) + " bytes (" +
                                    std::string(dtype_name(info.dtype)) + " " +
                                    shape_text(info.shape) + ")",
                                "data_offsets " + range_text(info.begin, info.end) + " = " +
                                    std::to_string(info.end - info.begin) + " bytes"));
    }
    if (info.end > data_size) {
      throw InputError(describe(
          where + " data_offsets",
          "a range inside the data area of " + std::to_string(data_size) + " bytes",
          range_text(info.begin, info.end), "The file is truncated; re-download or re-save it"));
    }
    infos_.emplace(key, std::move(info));
  }

  // Overlap check: sort by begin; a tensor overlaps an earlier one iff it starts before the
  // furthest end seen so far (empty tensors occupy no bytes and overlap nothing).
  std::vector<const TensorInfo*> by_begin;
  by_begin.reserve(infos_.size());
  for (const auto& [name, info] : infos_) {
    if (info.begin != info.end) {
      by_begin.push_back(&info);
    }
  }
  std::sort(by_begin.begin(), by_begin.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->name < b->name;
  });
  const TensorInfo* furthest = nullptr;
  for (const TensorInfo* info : by_begin) {
    if (furthest != nullptr && info->begin < furthest->end) {
      throw InputError(describe(
          where_tensor(path_, info->name), "a byte range disjoint from every other tensor",
          range_text(info->begin, info->end) + ", which overlaps tensor " +
              in_quotes(furthest->name) + " at " + range_text(furthest->begin, furthest->end),
          "The file is corrupt"));
    }
    if (furthest == nullptr || info->end > furthest->end) {
      furthest = info;
    }
  }
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(infos_.size());
  for (const auto& [name, info] : infos_) {
    out.push_back(name);
  }
  return out;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto it = infos_.find(name);
  if (it == infos_.end()) {
    throw InputError(
        describe(where_tensor(path_, name), "a tensor of that name",
                 "none among the file's " + std::to_string(infos_.size()) + " tensors"));
  }
  return it->second;
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo& ti = info(name);
  std::byte* ptr = mapping_->base + 8 + header_size_ + ti.begin;
  const auto options = at::TensorOptions().dtype(to_scalar_type(ti.dtype)).device(at::kCPU);
  if (ti.byte_size() > 0 && reinterpret_cast<std::uintptr_t>(ptr) % item_size(ti.dtype) != 0) {
    icet::log::get("io")->debug("{}: tensor '{}' is not aligned to its element size; copied",
                                path_.string(), name);
    at::Tensor copy = at::empty(ti.shape, options);
    std::memcpy(copy.data_ptr(), ptr, ti.byte_size());
    return copy;
  }
  // The deleter owns a reference to the mapping, so the tensor keeps the bytes alive after
  // this object (and every other tensor) is gone.
  std::shared_ptr<Mapping> keep = mapping_;
  return at::from_blob(
      ptr, ti.shape, [keep](void*) {}, options);
}

at::Tensor SafetensorsFile::tensor(const std::string& name, at::ScalarType dtype,
                                   const at::Device& device) const {
  at::Tensor t = tensor(name);
  if (t.scalar_type() == dtype && device.is_cpu()) {
    return t;
  }
  return t.to(device, dtype);
}

// ---------------------------------------------------------------------------------------------
// TensorStore

TensorStore TensorStore::open_dir(const fs::path& snapshot_dir) {
  std::error_code ec;
  if (!fs::is_directory(snapshot_dir, ec)) {
    throw InputError(describe(snapshot_dir.string(), "a snapshot folder",
                              fs::exists(snapshot_dir, ec) ? "a file" : "nothing",
                              "Pass the folder that holds config.json and the weights"));
  }
  const fs::path index = snapshot_dir / "model.safetensors.index.json";
  if (fs::exists(index, ec)) {
    return open_index(index);
  }
  const fs::path single = snapshot_dir / "model.safetensors";
  if (fs::exists(single, ec)) {
    TensorStore store = open_file(single);
    store.origin_ = snapshot_dir;
    return store;
  }
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(snapshot_dir, ec)) {
    const std::string fname = entry.path().filename().string();
    if (fname.ends_with(".safetensors") || fname.ends_with(".safetensors.index.json")) {
      found.push_back(fname);
    }
  }
  std::sort(found.begin(), found.end());
  std::string listing;
  for (const auto& f : found) {
    listing += (listing.empty() ? "" : ", ") + f;
  }
  throw InputError(describe(
      snapshot_dir.string(), "model.safetensors or model.safetensors.index.json",
      found.empty() ? "no safetensors files" : "only " + listing,
      found.empty() ? "Convert .bin weights to safetensors, or point at the snapshot folder"
                    : "Open one of these files directly"));
}

TensorStore TensorStore::open_file(const fs::path& file) {
  if (file.filename().string().ends_with(".index.json")) {
    return open_index(file);
  }
  TensorStore store;
  store.origin_ = file;
  store.files_.push_back(SafetensorsFile::open(file));
  store.metadata_ = store.files_.front()->metadata();
  for (const auto& name : store.files_.front()->names()) {
    store.owner_.emplace(name, 0);
  }
  return store;
}

TensorStore TensorStore::open_index(const fs::path& index_file) {
  const std::string where = index_file.string();
  // Real indexes list one entry per tensor: under 1 MiB even for 70B checkpoints.
  const std::string text = read_file_limited(index_file, json_util::kMaxJsonFileBytes, "a checkpoint index");
  const json index = parse_json_checked(text, where, "weight_map", "checkpoint index", "tensor");

  TensorStore store;
  store.origin_ = index_file;
  if (index.contains("metadata")) {
    const json& meta = index["metadata"];
    if (!meta.is_object()) {
      throw InputError(
          describe(where + ": key 'metadata'", "an object", "a JSON " + json_type(meta)));
    }
    for (const auto& [key, value] : meta.items()) {
      store.metadata_[key] = value.is_string() ? value.get<std::string>() : value.dump();
    }
  }
  if (!index.contains("weight_map")) {
    throw InputError(describe(where, "a \"weight_map\" object (tensor name -> shard file)",
                              "no such key", "Is this a model.safetensors.index.json?"));
  }
  const json& weight_map = index["weight_map"];
  if (!weight_map.is_object()) {
    throw InputError(
        describe(where + ": key 'weight_map'", "an object", "a JSON " + json_type(weight_map)));
  }

  // Open each distinct shard once, in name order (stable files() and content_hash()).
  std::map<std::string, std::string> shard_of;         // tensor -> shard file name
  std::map<std::string, std::string> first_tensor_of;  // shard -> a tensor naming it
  for (const auto& [name, shard] : weight_map.items()) {
    const std::string entry_where = where + ": weight_map tensor " + in_quotes(name);
    if (!shard.is_string()) {
      throw InputError(
          describe(entry_where, "a shard file name (string)", "a JSON " + json_type(shard)));
    }
    const std::string shard_name = shard.get<std::string>();
    const fs::path rel(shard_name);
    const bool escapes =
        std::any_of(rel.begin(), rel.end(), [](const fs::path& part) { return part == ".."; });
    if (shard_name.empty() || rel.is_absolute() || escapes) {
      throw InputError(describe(entry_where, "a shard file name inside the index's folder",
                                in_quotes(shard_name)));
    }
    shard_of[name] = shard_name;
    first_tensor_of.emplace(shard_name, name);
  }

  const fs::path dir = index_file.parent_path();
  std::map<std::string, std::size_t> file_index;  // shard name -> index into files_
  for (const auto& [shard_name, tensor] : first_tensor_of) {
    const fs::path shard_path = dir / shard_name;
    std::error_code ec;
    if (!fs::is_regular_file(shard_path, ec)) {
      throw InputError(describe(
          where + ": shard " + in_quotes(shard_name) + " (holds tensor " + in_quotes(tensor) + ")",
          "the file " + shard_path.string(), "no such file",
          "The snapshot is incomplete; download the missing shard"));
    }
    file_index[shard_name] = store.files_.size();
    store.files_.push_back(SafetensorsFile::open(shard_path));
  }

  for (const auto& [name, shard_name] : shard_of) {
    const auto& file = store.files_[file_index.at(shard_name)];
    if (!file->contains(name)) {
      throw InputError(describe(where + ": weight_map tensor " + in_quotes(name),
                                "the tensor in shard " + file->path().string(),
                                "no such tensor in that shard's header",
                                "The index and the shards disagree; re-download the snapshot"));
    }
  }

  // Every tensor of every shard exactly once. Shards may hold tensors the map omits; the
  // shard's header is the truth for those, as in transformers.
  for (std::size_t i = 0; i < store.files_.size(); ++i) {
    for (const auto& name : store.files_[i]->names()) {
      const auto [it, inserted] = store.owner_.emplace(name, i);
      if (!inserted) {
        throw InputError(describe(where + ": tensor " + in_quotes(name), "one shard holding it",
                                  "two: " + store.files_[it->second]->path().string() + " and " +
                                      store.files_[i]->path().string(),
                                  "The snapshot mixes shards of different checkpoints"));
      }
      if (!shard_of.contains(name)) {
        icet::log::get("io")->warn("{}: tensor '{}' is in shard {} but not in the weight_map",
                                   where, name, store.files_[i]->path().filename().string());
      }
    }
  }
  icet::log::get("io")->debug("opened index {} ({} shards, {} tensors)", where, store.files_.size(),
                              store.owner_.size());
  return store;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  out.reserve(owner_.size());
  for (const auto& [name, index] : owner_) {
    out.push_back(name);
  }
  return out;
}

const std::shared_ptr<SafetensorsFile>& TensorStore::owner_file(const std::string& name) const {
  const auto it = owner_.find(name);
  if (it == owner_.end()) {
    throw InputError(
        describe(origin_.string() + ": tensor " + in_quotes(name), "a tensor of that name",
                 "none among the checkpoint's " + std::to_string(owner_.size()) + " tensors"));
  }
  return files_[it->second];
}

const TensorInfo& TensorStore::info(const std::string& name) const {
  return owner_file(name)->info(name);
}

at::Tensor TensorStore::get(const std::string& name) const {
  return owner_file(name)->tensor(name);
}

at::Tensor TensorStore::get(const std::string& name, at::ScalarType dtype,
                            const at::Device& device) const {
  return owner_file(name)->tensor(name, dtype, device);
}

fs::path TensorStore::file_of(const std::string& name) const { return owner_file(name)->path(); }

std::string TensorStore::content_hash() const {
  constexpr uint64_t kSamples = 64;
  constexpr uint64_t kSampleBytes = 4096;
  std::vector<const SafetensorsFile*> ordered;
  for (const auto& f : files_) {
    ordered.push_back(f.get());
  }
  std::sort(ordered.begin(), ordered.end(), [](const auto* a, const auto* b) {
    return a->path().filename() < b->path().filename();
  });
  Fnv1a64 h;
  for (const SafetensorsFile* f : ordered) {
    const std::string fname = f->path().filename().string();
    h.update_u64(fname.size());
    h.update(fname.data(), fname.size());
    h.update_u64(f->file_size());
    const std::string_view header = f->header_text();
    h.update_u64(header.size());
    h.update(header.data(), header.size());
    const auto data = f->data_area();
    if (data.size() <= kSamples * kSampleBytes) {
      h.update(data.data(), data.size());
    } else {
      for (uint64_t i = 0; i < kSamples; ++i) {
        const uint64_t offset = (data.size() - kSampleBytes) * i / (kSamples - 1);
        h.update(data.data() + offset, kSampleBytes);
      }
    }
  }
  return h.hex();
}

// ---------------------------------------------------------------------------------------------
// Writer

void save_safetensors(const fs::path& file,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  struct Item {
    const std::string* name;
    const at::Tensor* tensor;
    DType dtype;
    uint64_t bytes;
  };
  std::vector<Item> items;
  items.reserve(tensors.size());
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    const std::string where = file.string() + ": tensor " + in_quotes(name);
    if (name.empty() || name == "__metadata__") {
      throw InputError(
          describe(where, "a non-empty name other than '__metadata__'", in_quotes(name)));
    }
    if (!seen.insert(name).second) {
      throw InputError(describe(where, "each name once", "it twice"));
    }
    if (!t.defined()) {
      throw InputError(describe(where, "a defined tensor", "an undefined tensor"));
    }
    if (t.layout() != at::kStrided) {
      throw InputError(describe(where, "a dense (strided) tensor", "a sparse or other layout"));
    }
    const auto dtype = from_scalar_type(t.scalar_type());
    if (!dtype) {
      throw InputError(describe(where, "a dtype among " + known_dtype_names(),
                                c10::toString(t.scalar_type()),
                                "Convert it first, e.g. .to(at::kFloat)"));
    }
    items.push_back({&name, &t, *dtype, static_cast<uint64_t>(t.numel()) * item_size(*dtype)});
  }
  // Largest elements first: every tensor's size is a multiple of its element size, so each
  // one starts aligned to it (zero-copy on read). Same-size tensors keep the caller's order.
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return item_size(a.dtype) > item_size(b.dtype);
  });

  json header = json::object();
  uint64_t offset = 0;
  for (const Item& item : items) {
    header[*item.name] = {{"dtype", std::string(dtype_name(item.dtype))},
                          {"shape", item.tensor->sizes().vec()},
                          {"data_offsets", {offset, offset + item.bytes}}};
    offset += item.bytes;
  }
  if (!metadata.empty()) {
    header["__metadata__"] = metadata;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const json::type_error& e) {
    throw InputError(describe(file.string(), "tensor names and metadata in valid UTF-8",
                              std::string("invalid text (") + e.what() + ")"));
  }
  // Pad with spaces (valid JSON whitespace) so the data area starts 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t n = text.size();

  fs::path tmp = file;
  tmp += ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    throw EnvironmentError(describe(tmp.string(), "a writable file",
                                    "it cannot be created (" + errno_message(err) + ")",
                                    "Check that the folder exists and is writable"));
  }
  try {
    write_all(fd, &n, 8, tmp);
    write_all(fd, text.data(), text.size(), tmp);
    for (const Item& item : items) {
      // One tensor at a time on the CPU, so saving GPU weights needs little host memory.
      const at::Tensor cpu = item.tensor->to(at::kCPU).contiguous();
      write_all(fd, cpu.data_ptr(), item.bytes, tmp);
    }
    if (::fsync(fd) != 0) {
      throw EnvironmentError(
          describe(tmp.string(), "fsync to succeed", "error: " + errno_message(errno)));
    }
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw EnvironmentError(describe(tmp.string(), "close to succeed", "error: " + errno_message(err)));
  }
  if (::rename(tmp.c_str(), file.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw EnvironmentError(
        describe(file.string(), "to replace it with " + tmp.string(), "error: " + errno_message(err)));
  }
  // Make the rename itself durable.
  const fs::path dir = file.has_parent_path() ? file.parent_path() : fs::path(".");
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  icet::log::get("io")->debug("wrote {} ({} tensors, {} bytes)", file.string(), items.size(),
                              8 + n + offset);
}

}  // namespace icet::io
