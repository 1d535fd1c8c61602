#pragma once

// Tokenizer interface of core/text. One implementation per tokenizer file format; each one
// reproduces the Hugging Face tokenizer that the snapshot declares, id for id:
//   LlamaTokenizer (llama_tokenizer.h): tokenizer.model, HF's slow LlamaTokenizer.
// load_tokenizer() picks the implementation from the files present in a snapshot folder.
//
// Text a user types is always text: only encode_template() parses special/added tokens, and
// chat templates should build prompts with encode_segments() instead.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace icet::text {

// One piece of a prompt built by a chat template.
struct Segment {
  std::string text;
  bool special = false;  // text is exactly one added/special token's content
};

// Incremental form of Tokenizer::decode for token-by-token output. Pushing ids one at a time and
// appending what push() and finish() write gives exactly decode(ids, skip_special_tokens).
class DecodeStream {
 public:
  virtual ~DecodeStream() = default;
  // Appends to `out` the decoded text that no later id can change; never a partial UTF-8
  // character. Throws icet::InputError for an id the tokenizer does not have.
  virtual void push(int64_t id, std::string& out) = 0;
  // Appends whatever is still held back (e.g. an unfinished byte sequence, as U+FFFD).
  virtual void finish(std::string& out) = 0;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Template text: special/added tokens inside `text` are parsed as HF does by default.
  // No BOS/EOS added.
  virtual std::vector<int64_t> encode_template(std::string_view text) const = 0;
  // User text: never parsed into special tokens (a typed "<image>" or "</s>" stays text).
  // No BOS/EOS added.
  virtual std::vector<int64_t> encode_user(std::string_view text) const = 0;
  // A prompt built by a chat template: text segments are never parsed for special tokens,
  // special segments are looked up exactly (unknown -> InputError). Equals HF tokenizing the
  // concatenated string (add_special_tokens=False) whenever the text segments contain no
  // special-token text.
  virtual std::vector<int64_t> encode_segments(const std::vector<Segment>& segments) const = 0;

  // HF tokenizer.decode(ids, skip_special_tokens). Throws icet::InputError for an unknown id.
  virtual std::string decode(const std::vector<int64_t>& ids,
                             bool skip_special_tokens = false) const = 0;
  // The incremental decoder behind decode(); see DecodeStream and StreamDecoder.
  virtual std::unique_ptr<DecodeStream> decode_stream(bool skip_special_tokens) const = 0;

  // Raw piece / token string (HF convert_ids_to_tokens). Throws icet::InputError for an unknown id.
  virtual std::string piece(int64_t id) const = 0;
  // Id of an added token's content or of a vocabulary piece (exact match, no unk fallback).
  virtual std::optional<int64_t> token_id(std::string_view piece_or_added_token) const = 0;
  // len(tokenizer): vocabulary plus added tokens.
  virtual int64_t size() const = 0;

  virtual std::optional<int64_t> bos_id() const = 0;
  virtual std::optional<int64_t> eos_id() const = 0;
  virtual std::optional<int64_t> pad_id() const = 0;
  virtual std::optional<int64_t> unk_id() const = 0;
  // tokenizer_config add_bos_token / add_eos_token. Reported only: encode_* never add them.
  virtual bool add_bos() const = 0;
  virtual bool add_eos() const = 0;
  // HF all_special_ids: what decode(..., skip_special_tokens=true) drops.
  virtual bool is_special(int64_t id) const = 0;

  // Bytes of one token as they would appear in decoded text (byte pieces -> raw byte,
  // "▁" -> " ", control pieces -> "", added tokens -> their content), for streaming consumers
  // such as stop-string matching. A single byte piece may be part of a UTF-8 character.
  virtual std::string token_bytes(int64_t id) const = 0;
};

// Loads the tokenizer of an HF snapshot folder: tokenizer.model + tokenizer_config.json
// (added_tokens_decoder, add_bos_token, add_eos_token, legacy, add_prefix_space, bos/eos/unk/pad
// tokens) + special_tokens_map.json + added_tokens.json. A folder without a tokenizer file, or a
// malformed one, gives icet::InputError naming the folder or file.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& snapshot_dir);

}  // namespace icet::text
