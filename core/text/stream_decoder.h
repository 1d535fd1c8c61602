#pragma once

// Streaming detokenisation for token-by-token output.
//
//   StreamDecoder stream(tokenizer);           // skip_special_tokens = true
//   for (id : generated) ui_append(stream.push(id));
//   ui_append(stream.flush());
//
// Guarantees: no push()/flush() result ever ends inside a UTF-8 character (a character spread
// over several byte-fallback tokens appears once it is complete), and the concatenation of all
// results equals tokenizer.decode(ids, skip_special_tokens) for the same flag. With the default
// (true) that is HF's decode(..., skip_special_tokens=True): every id in all_special_ids (BOS,
// EOS, unk, pad and the additional special tokens such as <image> or <|eot_id|>) is dropped;
// added tokens that are not special are still rendered.
//
// Latency: a character made of byte pieces appears with its last byte. Two HF rules delay text
// further because later tokens change it: with clean_up_tokenization_spaces (off for LLaMA-family
// snapshots) text waits for four non-space bytes, and with legacy=true and
// skip_special_tokens=false a run of text waits for the next special token (HF puts a space in
// front of that run).

#include <cstdint>
#include <memory>
#include <string>

#include "core/text/tokenizer.h"

namespace icet::text {

class StreamDecoder {
 public:
  // `tokenizer` must outlive the decoder.
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = true);

  // Text that token `id` completes; often empty. Throws icet::InputError for an unknown id.
  std::string push(int64_t id);
  // The rest (held bytes of an unfinished character come out as U+FFFD). The decoder is then
  // ready for a new sequence.
  std::string flush();

 private:
  std::string take_complete(std::string& text);

  const Tokenizer* tokenizer_;
  bool skip_special_tokens_;
  std::unique_ptr<DecodeStream> stream_;
  std::string carry_;  // bytes of a character the tokenizer's stream emitted only in part
};

}  // namespace icet::text
