// libFuzzer target: tokenizer.json (+ tokenizer_config.json after the first NUL byte), then
// encoding and decoding a fixed text with whatever loaded.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/base/error.h"
#include "core/text/hf_tokenizer.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(icet::fuzz::as_text(data, size));
  const size_t nul = input.find('\0');
  const std::string tokenizer_json = input.substr(0, nul);
  const std::string config = nul == std::string::npos ? std::string() : input.substr(nul + 1);
  ICET_FUZZ_EXPECT_INPUT_ERRORS({
    const auto tok = icet::text::HfTokenizer::from_json(tokenizer_json,
                                                        nul == std::string::npos ? nullptr : &config);
    const std::string text = "Hello <s> wörld\n\t 123 <|eot_id|> \xe2\x96\x81x \xff";
    const auto ids = tok->encode_with_special_tokens(text);
    (void)tok->encode_user(text);
    (void)tok->encode_pair_with_special_tokens("a b", "c");
    (void)tok->decode(ids);
    (void)tok->decode(ids, true);
    for (int64_t id = 0; id < tok->size() && id < 64; ++id) {
      (void)tok->piece(id);
      (void)tok->token_bytes(id);
    }
    (void)tok->decode({0, 1, 2, tok->size() - 1});
  });
  return 0;
}
