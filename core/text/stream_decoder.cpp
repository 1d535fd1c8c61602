#include "core/text/stream_decoder.h"

namespace icet::text {
namespace {

// Length of the longest prefix of `s` that does not end inside a UTF-8 sequence. Malformed
// bytes count as complete: they can never be completed by later bytes.
size_t complete_prefix(const std::string& s) {
  const size_t n = s.size();
  // A sequence is at most 4 bytes: only the last 3 can belong to an unfinished one.
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto b = static_cast<unsigned char>(s[n - back]);
    if ((b & 0xC0) == 0x80) {
      continue;  // continuation byte: look further back
    }
    const size_t need = (b & 0xE0) == 0xC0   ? 2
                        : (b & 0xF0) == 0xE0 ? 3
                        : (b & 0xF8) == 0xF0 ? 4
                                             : 1;
    return need > back ? n - back : n;
  }
  return n;
}

}  // namespace

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(&tokenizer),
      skip_special_tokens_(skip_special_tokens),
      stream_(tokenizer.decode_stream(skip_special_tokens)) {}

std::string StreamDecoder::take_complete(std::string& text) {
  // The tokenizer streams hold unfinished characters back themselves; this guard keeps the
  // promise for any implementation.
  text.insert(0, carry_);
  carry_.clear();
  const size_t keep = complete_prefix(text);
  carry_ = text.substr(keep);
  text.resize(keep);
  return std::move(text);
}

std::string StreamDecoder::push(int64_t id) {
  std::string out;
  stream_->push(id, out);
  return take_complete(out);
}

std::string StreamDecoder::flush() {
  std::string out;
  stream_->finish(out);
  out.insert(0, carry_);
  carry_.clear();
  stream_ = tokenizer_->decode_stream(skip_special_tokens_);
  return out;
}

}  // namespace icet::text
