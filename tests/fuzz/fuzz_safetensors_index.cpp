// libFuzzer target: model.safetensors.index.json beside two valid shards (weight_map, metadata,
// shard paths), opened as a file and as a snapshot folder.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/base/error.h"
#include "core/io/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

// A safetensors file with one F32 tensor of `n` elements named `name`.
std::string shard(const std::string& name, int n) {
  std::string header = "{\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[" + std::to_string(n) +
                       "],\"data_offsets\":[0," + std::to_string(4 * n) + "]}}";
  while (header.size() % 8 != 0) header += ' ';
  std::string out(8, '\0');
  uint64_t len = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((len >> (8 * i)) & 0xff);
  return out + header + std::string(static_cast<size_t>(4 * n), '\0');
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool shards = [] {
    icet::fuzz::write_scratch("model-00001-of-00002.safetensors", shard("a.weight", 4));
    icet::fuzz::write_scratch("model-00002-of-00002.safetensors", shard("b.weight", 2));
    return true;
  }();
  (void)shards;
  const auto index = icet::fuzz::write_scratch("model.safetensors.index.json", icet::fuzz::as_text(data, size));
  ICET_FUZZ_EXPECT_INPUT_ERRORS({
    const auto store = icet::io::TensorStore::open_file(index);
    for (const auto& name : store.names()) {
      (void)store.info(name);
      (void)store.get(name);
      (void)store.file_of(name);
    }
    (void)store.metadata();
  });
  ICET_FUZZ_EXPECT_INPUT_ERRORS((void)icet::io::TensorStore::open_dir(icet::fuzz::scratch_dir()));
  return 0;
}
