// libFuzzer target: a chat template (Jinja) parsed and rendered with a small conversation, under
// reduced limits so that each input stays fast (the limits themselves are what is tested).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/text/chat_template.h"
#include "core/text/jinja.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string source(icet::fuzz::as_text(data, size));
  icet::text::jinja::RenderLimits limits;
  limits.max_steps = 5'000;
  limits.max_output_bytes = 16u << 10;
  static const nlohmann::ordered_json context = nlohmann::ordered_json::parse(R"({
    "messages": [{"role": "system", "content": "Be brief."},
                 {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "<|eot_id|> hi"}]},
                 {"role": "assistant", "content": "Hello."},
                 {"role": "user", "content": "1e999 and {{ x }}"}],
    "bos_token": "<s>", "eos_token": "</s>", "add_generation_prompt": true,
    "tools": null, "n": 3, "f": 2.5, "big": 9223372036854775807, "neg": -9223372036854775808
  })");
  ICET_FUZZ_EXPECT_INPUT_ERRORS({
    const icet::text::jinja::Template t(source, "fuzz.jinja", limits);
    (void)t.render(context);
  });
  // ChatTemplate (its own context and special-token split) on one input in four.
  if (size == 0 || data[0] % 4 != 0) return 0;
  ICET_FUZZ_EXPECT_INPUT_ERRORS({
    const icet::text::ChatTemplate t(source, "tokenizer_config.json chat_template",
                                     {{"bos_token", "<s>"}, {"eos_token", "</s>"}});
    const std::vector<icet::text::ChatMessage> messages = {{"user", "What is in the image?", true},
                                                           {"assistant", "A cat.", false}};
    (void)t.render_text(messages, true);
  });
  return 0;
}
