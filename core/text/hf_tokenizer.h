#pragma once

// Hugging Face `tokenizer.json` tokenizers (the "fast" tokenizers of transformers), reproducing
// the Rust `tokenizers` library id for id:
//   model           BPE: merges as "a b" strings or [a, b] pairs, byte_fallback, unk_token with
//                   fuse_unk, continuing_subword_prefix, end_of_word_suffix, ignore_merges.
//   normalizer      Sequence, Prepend, Replace (string pattern), Lowercase, Strip, ByteLevel.
//   pre_tokenizer   ByteLevel, Split, Metaspace, Digits, Whitespace, WhitespaceSplit, Sequence.
//                   Split regexes: the GPT-2, Llama 3 (cl100k) and Qwen 2 patterns, recognised
//                   by their exact text and matched by hand (Oniguruma semantics, Unicode
//                   general categories); a string pattern matches literally.
//   post_processor  TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence.
//   decoder         ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace, Sequence.
//   added_tokens    special and non-special, lstrip/rstrip/single_word/normalized.
// Anything else is an icet::InputError naming the file and the key, at load time.
//
// Three encodings, none of which adds BOS/EOS:
//   encode_template  HF tokenizer(text, add_special_tokens=False): added tokens in the text are
//                    split off (leftmost-longest) and become their ids.
//   encode_user      the whole text goes through normalizer, pre-tokenizer and model: typing
//                    "<|eot_id|>" or "</s>" gives the ids of those characters, never the token.
//   encode_segments  template pieces and user text joined without re-parsing the user text.
// encode_with_special_tokens() additionally applies the post-processor (add_special_tokens=True).
//
// decode() is HF's decode without transformers' clean_up_tokenization_spaces (that clean-up is
// lossy and not part of the tokenizers library). It is built on the same incremental decoder as
// decode_stream(), so streamed text always equals decode().

#include <filesystem>
#include <memory>

#include "core/text/tokenizer.h"

namespace icet::text {

class HfTokenizer final : public Tokenizer {
 public:
  ~HfTokenizer() override;
  HfTokenizer(const HfTokenizer&) = delete;
  HfTokenizer& operator=(const HfTokenizer&) = delete;

  // tokenizer.json plus tokenizer_config.json when that file exists (add_bos_token,
  // add_eos_token, bos/eos/pad/unk tokens); without it those come from the post-processor and
  // the model's unk_token. Malformed or unsupported content: icet::InputError naming the file.
  static std::unique_ptr<HfTokenizer> load(const std::filesystem::path& tokenizer_json,
                                           const std::filesystem::path& tokenizer_config_json);
  // The same from the files' text; the config may be null. The names appear in errors.
  static std::unique_ptr<HfTokenizer> from_json(
      const std::string& tokenizer_json_text, const std::string* tokenizer_config_json_text,
      const std::string& file = "tokenizer.json",
      const std::string& config_file = "tokenizer_config.json");

  std::vector<int64_t> encode_template(std::string_view text) const override;
  std::vector<int64_t> encode_user(std::string_view text) const override;
  std::vector<int64_t> encode_segments(const std::vector<Segment>& segments) const override;
  // encode_template() followed by the post-processor with add_special_tokens=True.
  std::vector<int64_t> encode_with_special_tokens(std::string_view text) const;
  // HF tokenizer(a, b): both texts encoded as template text, joined by the pair post-processor.
  std::vector<int64_t> encode_pair_with_special_tokens(std::string_view a,
                                                       std::string_view b) const;

  std::string decode(const std::vector<int64_t>& ids,
                     bool skip_special_tokens = false) const override;
  std::unique_ptr<DecodeStream> decode_stream(bool skip_special_tokens) const override;

  std::string piece(int64_t id) const override;
  std::optional<int64_t> token_id(std::string_view piece_or_added_token) const override;
  int64_t size() const override;

  std::optional<int64_t> bos_id() const override;
  std::optional<int64_t> eos_id() const override;
  std::optional<int64_t> pad_id() const override;
  std::optional<int64_t> unk_id() const override;
  bool add_bos() const override;
  bool add_eos() const override;
  bool is_special(int64_t id) const override;
  // The token through the decoder steps that do not depend on neighbours (byte pieces give raw
  // bytes, "▁" gives " ", byte-level symbols give their bytes); Strip steps and the Metaspace
  // decoder's first-token rule are left out.
  std::string token_bytes(int64_t id) const override;

  struct Impl;

 private:
  explicit HfTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace icet::text
