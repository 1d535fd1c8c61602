// libFuzzer target: config.json of every VLM family (llava, llava_next, mllama), read_model_type
// and generation_config.json.
#include <cstddef>
#include <cstdint>

#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/models/config.h"
#include "core/models/llava_next.h"
#include "core/models/mllama.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto text = icet::fuzz::as_text(data, size);
  ICET_FUZZ_EXPECT_INPUT_ERRORS({
    const nlohmann::json j = icet::json_util::parse(text, "config.json");
    ICET_FUZZ_EXPECT_INPUT_ERRORS({
      const auto c = icet::models::LlavaConfig::parse(icet::json_util::Reader(j, "config.json"));
      (void)c.default_exit_layer();
      (void)c.image_tokens();
    });
    ICET_FUZZ_EXPECT_INPUT_ERRORS((void)icet::models::LlavaNextConfig::parse(j, "config.json"));
    ICET_FUZZ_EXPECT_INPUT_ERRORS({
      const auto m = icet::models::MllamaConfig::parse(j, "config.json");
      (void)m.vision.num_patches();
      (void)m.vision.padded_patches();
    });
  });
  // The path-only readers (model_type, generation_config.json) on one input in eight: writing
  // the file costs more than parsing it.
  if (size > 0 && data[0] % 8 == 0) {
    const auto file = icet::fuzz::write_scratch("config.json", text);
    ICET_FUZZ_EXPECT_INPUT_ERRORS((void)icet::models::read_model_type(file));
    ICET_FUZZ_EXPECT_INPUT_ERRORS((void)icet::models::load_generation_config(file));
  }
  return 0;
}
