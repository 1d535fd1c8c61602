// libFuzzer target: a prompt set read as JSONL and as CSV (load_prompt_set takes a path).
#include <cstddef>
#include <cstdint>

#include "core/base/error.h"
#include "core/eval/prompt_set.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // One file an input (the write is most of the cost): CSV when the input starts with a
  // letter, as a header row does, else JSONL.
  const auto text = icet::fuzz::as_text(data, size);
  const bool csv = size > 0 && ((data[0] | 0x20) >= 'a' && (data[0] | 0x20) <= 'z');
  const auto file = icet::fuzz::write_scratch(csv ? "set.csv" : "set.jsonl", text);
  ICET_FUZZ_EXPECT_INPUT_ERRORS({
    const auto set = icet::eval::load_prompt_set(file);
    for (const auto& item : set.items) (void)set.image_path(item);
  });
  return 0;
}
