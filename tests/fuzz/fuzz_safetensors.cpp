// libFuzzer target: one .safetensors file (header validation, tensor views, content hash).
#include <cstddef>
#include <cstdint>

#include "core/base/error.h"
#include "core/io/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto file = icet::fuzz::write_scratch("model.safetensors", icet::fuzz::as_text(data, size));
  ICET_FUZZ_EXPECT_INPUT_ERRORS({
    const auto st = icet::io::SafetensorsFile::open(file);
    for (const auto& name : st->names()) {
      const auto& info = st->info(name);
      const at::Tensor t = st->tensor(name);
      if (t.numel() != info.numel()) __builtin_trap();
      if (t.numel() > 0 && t.numel() < 4096) (void)st->tensor(name, at::kFloat, at::kCPU);
    }
    (void)st->metadata();
    (void)st->header_text();
    const auto store = icet::io::TensorStore::open_file(file);
    (void)store.content_hash();
  });
  return 0;
}
