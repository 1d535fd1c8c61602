// libFuzzer target: tokenizer.model (SentencePiece ModelProto), then encoding and decoding a
// fixed text with whatever parsed.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/base/error.h"
#include "core/text/sentencepiece.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ICET_FUZZ_EXPECT_INPUT_ERRORS({
    const auto model = icet::text::SentencePieceModel::parse(icet::fuzz::as_text(data, size), "tokenizer.model");
    const std::string text = "Hello  wörld\n\t 123 <s> \xe2\x96\x81x \xff\xfe end";
    const auto pieces = model.encode(text);
    std::vector<std::string> names;
    for (int64_t id = 0; id < model.size() && id < 64; ++id) {
      names.push_back(model.piece(id));
      (void)model.byte_value(id);
      (void)model.piece_to_id(model.piece(id));
    }
    (void)model.decode(names);
    (void)model.normalize(text);
    (void)pieces;
  });
  return 0;
}
