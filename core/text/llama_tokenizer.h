#pragma once

// HF transformers 4.47 slow `LlamaTokenizer` over a SentencePiece tokenizer.model: added and
// special tokens, the `legacy` flag and `add_prefix_space`, reproduced id for id.
//
// legacy=false (current snapshots): HF disables the model's own dummy prefix, prepends "▁" once
// to the whole text, splits the text on added tokens, encodes a chunk that starts with "▁"/" " as
// `unk_token + chunk` and drops the unk pieces (so the leading "▁" survives), and drops a leading
// "▁" token that is followed by a special token.
// legacy=true (older snapshots, or no `legacy` key): every chunk between added tokens is encoded
// by SentencePiece as is, so each one gets the model's dummy prefix.

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/text/sentencepiece.h"
#include "core/text/tokenizer.h"

namespace icet::text {

// HF tokenizers.AddedToken.
struct AddedToken {
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

// tokenizer_config.json (+ special_tokens_map.json and added_tokens.json for snapshots saved
// before added_tokens_decoder existed), resolved as transformers 4.47 from_pretrained does.
struct LlamaTokenizerConfig {
  bool legacy = true;  // HF's default when the key is missing
  bool add_prefix_space = true;
  bool add_bos_token = true;
  bool add_eos_token = false;
  bool clean_up_tokenization_spaces = false;
  bool split_special_tokens = false;  // true: template text is not parsed for added tokens either
  std::map<int64_t, AddedToken> added_tokens_decoder;
  // HF SPECIAL_TOKENS_ATTRIBUTES; nullopt stands for None.
  std::optional<AddedToken> bos_token = AddedToken{"<s>", false, false, false, false, true};
  std::optional<AddedToken> eos_token = AddedToken{"</s>", false, false, false, false, true};
  std::optional<AddedToken> unk_token = AddedToken{"<unk>", false, false, false, false, true};
  std::optional<AddedToken> sep_token;
  std::optional<AddedToken> pad_token;
  std::optional<AddedToken> cls_token;
  std::optional<AddedToken> mask_token;
  std::vector<AddedToken> additional_special_tokens;
};

// Reads the config files of a snapshot folder; missing files give HF's defaults.
// Throws icet::InputError naming the file for malformed JSON or a value of the wrong type.
LlamaTokenizerConfig read_llama_tokenizer_config(const std::filesystem::path& snapshot_dir);

class LlamaTokenizer final : public Tokenizer {
 public:
  LlamaTokenizer(SentencePieceModel model, const LlamaTokenizerConfig& config);
  // tokenizer.model + config files of an HF snapshot folder.
  static std::unique_ptr<LlamaTokenizer> load(const std::filesystem::path& snapshot_dir);

  std::vector<int64_t> encode_template(std::string_view text) const override;
  std::vector<int64_t> encode_user(std::string_view text) const override;
  std::vector<int64_t> encode_segments(const std::vector<Segment>& segments) const override;
  std::string decode(const std::vector<int64_t>& ids,
                     bool skip_special_tokens = false) const override;
  std::unique_ptr<DecodeStream> decode_stream(bool skip_special_tokens) const override;
  std::string piece(int64_t id) const override;
  std::optional<int64_t> token_id(std::string_view piece_or_added_token) const override;
  int64_t size() const override { return size_; }
  std::optional<int64_t> bos_id() const override { return bos_id_; }
  std::optional<int64_t> eos_id() const override { return eos_id_; }
  std::optional<int64_t> pad_id() const override { return pad_id_; }
  std::optional<int64_t> unk_id() const override { return unk_id_; }
  bool add_bos() const override { return add_bos_; }
  bool add_eos() const override { return add_eos_; }
  bool is_special(int64_t id) const override { return special_ids_.count(id) != 0; }
  std::string token_bytes(int64_t id) const override;

  // HF tokenize(text): the token strings behind encode_template().
  std::vector<std::string> tokenize(std::string_view text) const;
  bool legacy() const { return legacy_; }
  const SentencePieceModel& model() const { return model_; }
  const std::map<int64_t, AddedToken>& added_tokens() const { return added_decoder_; }

 private:
  friend class LlamaDecodeStream;

  enum class Mode { template_text, user_text, segments };
  struct Chunk {
    std::string text;
    bool added = false;  // an added token (HF's no_split_token), not text
  };
  struct Token {
    std::string text;
    int64_t id = 0;
    bool added = false;
  };
  struct TrieNode {
    std::map<char32_t, int> next;
    bool terminal = false;
  };

  std::vector<Token> run(std::vector<Chunk> chunks, Mode mode) const;
  // Template text as HF's tokenize() prepares it (prefix "▁", added-token split), then run().
  std::vector<Token> template_tokens(std::string_view text) const;
  std::vector<std::string> sp_tokenize(std::string_view chunk) const;  // HF _tokenize
  std::vector<Chunk> trie_split(const std::string& text) const;        // HF Trie.split
  void trie_add(std::string_view word);
  // HF convert_ids_to_tokens for one id; throws icet::InputError for an unknown id.
  std::string_view token_string(int64_t id) const;
  int64_t convert_token_to_id(std::string_view token) const;  // added tokens, then the vocabulary
  bool is_special_token(std::string_view token) const { return special_tokens_.count(token) != 0; }
  static std::vector<int64_t> ids_of(const std::vector<Token>& tokens);

  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using StringSet = std::unordered_set<std::string, StringHash, std::equal_to<>>;

  SentencePieceModel model_;
  bool legacy_ = true;
  bool add_prefix_space_ = true;
  bool add_bos_ = true;
  bool add_eos_ = false;
  bool clean_up_tokenization_spaces_ = false;
  bool split_special_tokens_ = false;
  std::map<int64_t, AddedToken> added_decoder_;
  std::unordered_map<std::string, int64_t, StringHash, std::equal_to<>> added_encoder_;
  StringSet special_tokens_;       // HF all_special_tokens
  std::set<int64_t> special_ids_;  // HF all_special_ids
  // Added tokens that decode() renders as separate sub-texts (HF's "legacy_added_tokens").
  StringSet legacy_added_;
  std::vector<TrieNode> trie_;
  std::string unk_text_;   // str(unk_token), prepended to chunks that start with a space
  size_t unk_length_ = 0;  // pieces SentencePiece makes of unk_text_
  int64_t size_ = 0;
  std::optional<int64_t> bos_id_, eos_id_, pad_id_, unk_id_;
};

}  // namespace icet::text
