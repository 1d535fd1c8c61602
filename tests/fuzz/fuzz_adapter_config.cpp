// libFuzzer target: a PEFT adapter_config.json (json_util::parse, then the LoRA settings).
#include <cstddef>
#include <cstdint>

#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/models/lora.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ICET_FUZZ_EXPECT_INPUT_ERRORS({
    const nlohmann::json j = icet::json_util::parse(icet::fuzz::as_text(data, size), "adapter_config.json");
    const auto config = icet::models::parse_peft_adapter_config(j, "adapter_config.json");
    (void)config.scale();
  });
  return 0;
}
