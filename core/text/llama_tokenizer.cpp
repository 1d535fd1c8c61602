#include "core/text/llama_tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <utility>

#include "core/base/atomic_file.h"
#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/base/log.h"

namespace icet::text {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::string_view kSpiece = "\xe2\x96\x81";  // "▁"

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  for (size_t pos = 0;;) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) {
      out.append(s.substr(pos));
      return out;
    }
    out.append(s.substr(pos, hit - pos)).append(to);
    pos = hit + from.size();
  }
}

// Code points of `s` with their byte offsets (offsets has one extra entry: s.size()). A malformed
// byte becomes a value above U+10FFFF, which no token contains.
void code_points(std::string_view s, std::vector<char32_t>& cps, std::vector<size_t>& offsets) {
  cps.clear();
  offsets.clear();
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    size_t n = b0 < 0x80 ? 1 : (b0 >> 5) == 6 ? 2 : (b0 >> 4) == 14 ? 3 : (b0 >> 3) == 30 ? 4 : 0;
    bool ok = n > 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) {
      ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
    }
    char32_t cp = 0x110000u + b0;
    if (ok) {
      cp = n == 1 ? b0 : static_cast<char32_t>(b0 & (0x7F >> n));
      for (size_t k = 1; k < n; ++k) {
        cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
      }
    } else {
      n = 1;
    }
    cps.push_back(cp);
    offsets.push_back(i);
    i += n;
  }
  offsets.push_back(s.size());
}

// Python's str.isspace().
bool py_isspace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

std::string py_lstrip(std::string_view s) {
  std::vector<char32_t> cps;
  std::vector<size_t> off;
  code_points(s, cps, off);
  size_t i = 0;
  while (i < cps.size() && py_isspace(cps[i])) {
    ++i;
  }
  return std::string(s.substr(off[i]));
}

std::string py_rstrip(std::string_view s) {
  std::vector<char32_t> cps;
  std::vector<size_t> off;
  code_points(s, cps, off);
  size_t i = cps.size();
  while (i > 0 && py_isspace(cps[i - 1])) {
    --i;
  }
  return std::string(s.substr(0, off[i]));
}

// --- config files ------------------------------------------------------------------------------

json read_json_file(const fs::path& file) {
  const std::string text = read_file_limited(file, json_util::kMaxJsonFileBytes, "a JSON file");
  try {
    json value = json_util::parse(text, file.string());
    if (!value.is_object()) {
      throw InputError(describe(file.string(), "a JSON object",
                                std::string("a JSON ") + value.type_name(),
                                "Copy the file again from the model's Hugging Face snapshot"));
    }
    return value;
  } catch (const json::exception& e) {
    throw InputError(describe(file.string(), "valid JSON",
                              std::string("a syntax error (") + e.what() + ")",
                              "Copy the file again from the model's Hugging Face snapshot"));
  }
}

std::string where_key(const fs::path& file, std::string_view key) {
  return file.string() + ": \"" + std::string(key) + "\"";
}

// A boolean setting; `null_value` is what Python's truth test makes of None.
bool get_bool(const json& obj, const char* key, bool absent, bool null_value,
              const fs::path& file) {
  const auto it = obj.find(key);
  if (it == obj.end()) {
    return absent;
  }
  if (it->is_null()) {
    return null_value;
  }
  if (!it->is_boolean()) {
    throw InputError(describe(where_key(file, key), "true or false", it->dump()));
  }
  return it->get<bool>();
}

bool token_flag(const json& obj, const char* key, bool fallback, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    return fallback;
  }
  if (!it->is_boolean()) {
    throw InputError(describe(where + "." + key, "true or false", it->dump()));
  }
  return it->get<bool>();
}

// HF AddedToken(**dict) or a plain string; nullopt for null.
std::optional<AddedToken> parse_token(const json& value, const std::string& where,
                                      const AddedToken& string_defaults) {
  if (value.is_null()) {
    return std::nullopt;
  }
  if (value.is_string()) {
    AddedToken t = string_defaults;
    t.content = value.get<std::string>();
    return t;
  }
  if (!value.is_object()) {
    throw InputError(describe(where, "a token string or an AddedToken object", value.dump()));
  }
  const auto content = value.find("content");
  if (content == value.end() || !content->is_string()) {
    throw InputError(
        describe(where, "an AddedToken object with a \"content\" string", value.dump()));
  }
  AddedToken t;
  t.content = content->get<std::string>();
  t.single_word = token_flag(value, "single_word", false, where);
  t.lstrip = token_flag(value, "lstrip", false, where);
  t.rstrip = token_flag(value, "rstrip", false, where);
  t.normalized = token_flag(value, "normalized", true, where);
  t.special = token_flag(value, "special", false, where);
  return t;
}

const AddedToken kSpecialString{"", false, false, false, false, true};

constexpr const char* kSpecialKeys[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                        "pad_token", "cls_token", "mask_token"};

// --- clean_up_tokenization_spaces --------------------------------------------------------------

std::string clean_up_tokenization(std::string s) {
  static constexpr std::pair<std::string_view, std::string_view> kRules[] = {
      {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) {
    s = replace_all(s, from, to);
  }
  return s;
}

// Applies HF's clean-up to a stream. Every rule deletes a space that starts a pattern of at most
// 4 characters, so a cut whose 4 preceding bytes hold no space is never crossed by a rule: text
// before such a cut can be cleaned and emitted for good.
class CleanupStream {
 public:
  void push(std::string_view text, std::string& out) {
    const size_t old_size = raw_.size();
    raw_ += text;
    // Cuts before old_size were tried when that text arrived.
    for (size_t p = raw_.size(); p > old_size && p > 0; --p) {
      if (p < raw_.size() && (static_cast<unsigned char>(raw_[p]) & 0xC0) == 0x80) {
        continue;
      }
      if (!space_free_before(p)) {
        continue;
      }
      out += clean_up_tokenization(raw_.substr(0, p));
      const std::string before = context_ + raw_.substr(0, p);
      context_ = before.substr(before.size() - std::min<size_t>(before.size(), 4));
      raw_.erase(0, p);
      return;
    }
  }
  void finish(std::string& out) {
    out += clean_up_tokenization(raw_);
    raw_.clear();
    context_.clear();
  }

 private:
  bool space_free_before(size_t p) const {
    if (context_.size() + p < 4) {
      return false;
    }
    for (size_t k = 1; k <= 4; ++k) {
      const char c = p >= k ? raw_[p - k] : context_[context_.size() - (k - p)];
      if (c == ' ') {
        return false;
      }
    }
    return true;
  }

  std::string raw_;      // not yet emitted
  std::string context_;  // the last (up to) 4 bytes already emitted, uncleaned
};

}  // namespace

// --- decoding ----------------------------------------------------------------------------------

// HF's slow decode (PreTrainedTokenizer._decode + LlamaTokenizer.convert_tokens_to_string +
// SentencePiece Decode) written as a left-to-right fold: decode() runs it over all ids at once,
// StreamDecoder one id at a time, so both give the same text by construction.
class LlamaDecodeStream final : public DecodeStream {
 public:
  LlamaDecodeStream(const LlamaTokenizer& tokenizer, bool skip_special_tokens)
      : tok_(tokenizer),
        skip_(skip_special_tokens),
        // legacy=true puts a space *before* the decoded run that a special token ends, so such
        // a run is held until its end is known. With skipping no special token reaches it.
        hold_runs_(tokenizer.legacy_ && !skip_special_tokens),
        sp_(tokenizer.model_) {}

  void push(int64_t id, std::string& out) override {
    if (skip_ && tok_.is_special(id)) {
      return;
    }
    const std::string_view token = tok_.token_string(id);
    if (skip_ && tok_.is_special_token(token)) {
      return;
    }
    if (tok_.legacy_added_.contains(token)) {
      // Such an added token is a sub-text of its own; sub-texts are joined with " ".
      end_sub_text(false, out);
      separate(out);
      emit(token, out);
      return;
    }
    convert_push(token, out);
  }

  void finish(std::string& out) override {
    end_sub_text(true, out);
    if (tok_.clean_up_tokenization_spaces_) {
      cleanup_.finish(out);
    }
  }

 private:
  // HF's slow _decode joins sub-texts with " ": spaces_between_special_tokens defaults to True
  // in PreTrainedTokenizer._decode and decode() does not pass tokenizer_config's value on.
  static constexpr bool kSpacesBetweenSpecialTokens = true;

  void emit(std::string_view text, std::string& out) {
    if (text.empty()) {
      return;
    }
    if (tok_.clean_up_tokenization_spaces_) {
      cleanup_.push(text, out);
    } else {
      out += text;
    }
  }

  void separate(std::string& out) {
    if (sub_texts_ > 0 && kSpacesBetweenSpecialTokens) {
      emit(" ", out);
    }
    ++sub_texts_;
  }

  // Text of the current convert_tokens_to_string call. A sub-text joins the list (with its
  // separator) once it has text; an empty one is only kept at the very end, as in HF.
  void sub_out(std::string_view text, std::string& out) {
    if (text.empty()) {
      return;
    }
    if (!sub_appended_) {
      separate(out);
      sub_appended_ = true;
    }
    emit(text, out);
  }

  void convert_push(std::string_view token, std::string& out) {
    const size_t i = sub_tokens_++;
    // "since we manually add the prefix space, we have to remove it when decoding"
    if (i == 0 && tok_.add_prefix_space_ && starts_with(token, kSpiece)) {
      token.remove_prefix(kSpiece.size());
    }
    if (tok_.is_special_token(token)) {
      std::string run = std::move(held_);
      held_.clear();
      sp_.finish(run);
      if (!prev_special_ && i != 0 && tok_.legacy_) {
        sub_out(" ", out);
      }
      sub_out(run, out);
      sub_out(token, out);
      prev_special_ = true;
      return;
    }
    if (prev_special_ && i == 1 && tok_.add_prefix_space_ && !starts_with(token, kSpiece)) {
      sub_out(" ", out);
    }
    if (hold_runs_) {
      sp_.push(token, held_);
    } else {
      std::string text;
      sp_.push(token, text);
      sub_out(text, out);
    }
    prev_special_ = false;
  }

  void end_sub_text(bool at_end, std::string& out) {
    if (sub_tokens_ == 0) {
      return;
    }
    std::string run = std::move(held_);
    held_.clear();
    sp_.finish(run);
    sub_out(run, out);
    if (at_end && !sub_appended_) {
      separate(out);  // HF appends the last sub-text even if empty
    }
    sub_tokens_ = 0;
    prev_special_ = false;
    sub_appended_ = false;
  }

  const LlamaTokenizer& tok_;
  bool skip_;
  bool hold_runs_;
  size_t sub_texts_ = 0;       // sub-texts joined so far
  size_t sub_tokens_ = 0;      // tokens in the current sub-text (HF's index i)
  bool sub_appended_ = false;  // the current sub-text is in the list already
  bool prev_special_ = false;
  std::string held_;
  SentencePieceDecoder sp_;
  CleanupStream cleanup_;
};

// --- LlamaTokenizer ----------------------------------------------------------------------------

LlamaTokenizerConfig read_llama_tokenizer_config(const fs::path& dir) {
  LlamaTokenizerConfig c;
  const fs::path config_file = dir / "tokenizer_config.json";
  std::error_code ec;
  json config = fs::exists(config_file, ec) ? read_json_file(config_file) : json::object();

  c.legacy = get_bool(config, "legacy", true, true, config_file);
  c.add_prefix_space = get_bool(config, "add_prefix_space", true, false, config_file);
  c.add_bos_token = get_bool(config, "add_bos_token", true, false, config_file);
  c.add_eos_token = get_bool(config, "add_eos_token", false, false, config_file);
  c.clean_up_tokenization_spaces =
      get_bool(config, "clean_up_tokenization_spaces", false, false, config_file);
  c.split_special_tokens = get_bool(config, "split_special_tokens", false, false, config_file);

  // Special-token attributes start from LlamaTokenizer's defaults.
  json specials = json::object();
  specials["bos_token"] = "<s>";
  specials["eos_token"] = "</s>";
  specials["unk_token"] = "<unk>";
  for (const char* key : kSpecialKeys) {
    if (config.contains(key)) {
      specials[key] = config[key];
    }
  }
  json additional = config.value("additional_special_tokens", json::array());
  if (additional.is_null()) {
    additional = json::array();
  }

  std::map<std::string, AddedToken> by_content;
  if (config.contains("added_tokens_decoder")) {
    // Saved by transformers >= 4.34: the config is complete and the other two files are ignored.
    const json& decoder = config["added_tokens_decoder"];
    if (!decoder.is_object()) {
      throw InputError(describe(where_key(config_file, "added_tokens_decoder"),
                                "an object of id -> AddedToken", decoder.dump()));
    }
    for (const auto& [key, value] : decoder.items()) {
      int64_t id = -1;
      const auto [end, err] = std::from_chars(key.data(), key.data() + key.size(), id);
      const std::string where =
          where_key(config_file, "added_tokens_decoder") + "[\"" + key + "\"]";
      if (err != std::errc() || end != key.data() + key.size() || id < 0) {
        throw InputError(describe(where, "a token id (a non-negative integer)", "\"" + key + "\""));
      }
      if (!value.is_object()) {
        throw InputError(describe(where, "an AddedToken object", value.dump()));
      }
      AddedToken token = *parse_token(value, where, AddedToken{});
      by_content[token.content] = token;
      c.added_tokens_decoder[id] = std::move(token);
    }
  } else {
    // Older snapshots: special_tokens_map.json overrides the config, added_tokens.json lists
    // the added tokens (special when they are one of the special tokens).
    const fs::path map_file = dir / "special_tokens_map.json";
    if (fs::exists(map_file, ec)) {
      const json map = read_json_file(map_file);
      for (const auto& [key, value] : map.items()) {
        if (key == "additional_special_tokens" && value.is_array()) {
          if (!additional.is_array()) {
            additional = json::array();
          }
          for (json token : value) {
            if (token.is_object()) {
              token["special"] = true;
            }
            const std::string content = token.is_object()   ? token.value("content", std::string())
                                        : token.is_string() ? token.get<std::string>()
                                                            : std::string();
            const bool present =
                std::any_of(additional.begin(), additional.end(), [&](const json& t) {
                  return (t.is_string() && t.get<std::string>() == content) ||
                         (t.is_object() && t.value("content", std::string()) == content);
                });
            if (!present) {
              additional.push_back(token);
            }
          }
        } else if (std::find(std::begin(kSpecialKeys), std::end(kSpecialKeys), key) !=
                   std::end(kSpecialKeys)) {
          json v = value;
          if (v.is_object()) {
            v["special"] = true;
          }
          specials[key] = v;
        }
      }
    }
    const fs::path added_file = dir / "added_tokens.json";
    if (fs::exists(added_file, ec)) {
      std::vector<std::string> special_strings;
      for (const char* key : kSpecialKeys) {
        if (auto t = parse_token(specials[key], where_key(map_file, key), kSpecialString)) {
          special_strings.push_back(t->content);
        }
      }
      if (additional.is_array()) {
        for (const auto& t : additional) {
          if (auto a = parse_token(t, where_key(config_file, "additional_special_tokens"),
                                   kSpecialString)) {
            special_strings.push_back(a->content);
          }
        }
      }
      const json added_tokens = read_json_file(added_file);
      for (const auto& [content, index] : added_tokens.items()) {
        if (!index.is_number_integer() || index.get<int64_t>() < 0) {
          throw InputError(describe(where_key(added_file, content), "a token id", index.dump()));
        }
        const bool special = std::find(special_strings.begin(), special_strings.end(), content) !=
                             special_strings.end();
        AddedToken token{content, false, false, false, !special, special};
        by_content[content] = token;
        c.added_tokens_decoder[index.get<int64_t>()] = std::move(token);
      }
    }
  }

  // A special token written as a string means the added token of that content, if there is one.
  std::optional<AddedToken>* fields[] = {&c.bos_token, &c.eos_token, &c.unk_token, &c.sep_token,
                                         &c.pad_token, &c.cls_token, &c.mask_token};
  for (size_t k = 0; k < std::size(kSpecialKeys); ++k) {
    const std::string where = where_key(config_file, kSpecialKeys[k]);
    std::optional<AddedToken> token =
        specials.contains(kSpecialKeys[k])
            ? parse_token(specials[kSpecialKeys[k]], where, kSpecialString)
            : std::nullopt;
    if (token) {
      if (auto it = by_content.find(token->content); it != by_content.end()) {
        token = it->second;
      }
      token->special = true;
    }
    *fields[k] = token;
  }
  if (!additional.is_array()) {
    throw InputError(describe(where_key(config_file, "additional_special_tokens"),
                              "a list of tokens", additional.dump()));
  }
  for (const auto& t : additional) {
    if (auto token =
            parse_token(t, where_key(config_file, "additional_special_tokens"), kSpecialString)) {
      token->special = true;
      c.additional_special_tokens.push_back(*token);
    }
  }

  if (const auto cls = config.find("tokenizer_class");
      cls != config.end() && cls->is_string() && !starts_with(cls->get<std::string>(), "Llama")) {
    log::get("text")->warn("{}: tokenizer_class is {}; tokenizing with LlamaTokenizer rules",
                           config_file.string(), cls->get<std::string>());
  }
  if (const auto kw = config.find("sp_model_kwargs");
      kw != config.end() && kw->is_object() && !kw->empty()) {
    log::get("text")->warn("{}: sp_model_kwargs {} ignored (no sampling, no options)",
                           config_file.string(), kw->dump());
  }
  return c;
}

LlamaTokenizer::LlamaTokenizer(SentencePieceModel model, const LlamaTokenizerConfig& c)
    : model_(std::move(model)),
      legacy_(c.legacy),
      add_prefix_space_(c.add_prefix_space),
      add_bos_(c.add_bos_token),
      add_eos_(c.add_eos_token),
      clean_up_tokenization_spaces_(c.clean_up_tokenization_spaces),
      split_special_tokens_(c.split_special_tokens),
      added_decoder_(c.added_tokens_decoder) {
  // HF reloads the model without its dummy prefix unless legacy (get_spm_processor).
  if (!legacy_) {
    model_.set_add_dummy_prefix(false);
  }
  for (const auto& [id, token] : added_decoder_) {
    added_encoder_[token.content] = id;
  }

  // all_special_tokens: SPECIAL_TOKENS_ATTRIBUTES order, then additional, without repeats.
  std::vector<AddedToken> specials;
  for (const auto* t : {&c.bos_token, &c.eos_token, &c.unk_token, &c.sep_token, &c.pad_token,
                        &c.cls_token, &c.mask_token}) {
    if (*t && !(*t)->content.empty() && special_tokens_.insert((*t)->content).second) {
      specials.push_back(**t);
    }
  }
  for (const auto& t : c.additional_special_tokens) {
    if (!t.content.empty() && special_tokens_.insert(t.content).second) {
      specials.push_back(t);
    }
  }

  const auto vocab_map = [this] {
    std::unordered_map<std::string, int64_t> vocab;
    for (int64_t i = 0; i < model_.size(); ++i) {
      vocab[std::string(token_string(i))] = i;
    }
    for (const auto& [content, id] : added_encoder_) {
      vocab[content] = id;
    }
    return vocab;
  };
  // PreTrainedTokenizer.__init__: special tokens that are not added tokens yet are added, at
  // their vocabulary id when they are a piece, else after the vocabulary.
  auto vocab = vocab_map();
  const auto first_new = static_cast<int64_t>(vocab.size());
  int64_t added = 0;
  for (AddedToken token : specials) {
    if (added_encoder_.contains(token.content)) {
      continue;
    }
    int64_t index = 0;
    if (auto it = vocab.find(token.content); it != vocab.end()) {
      index = it->second;
    } else {
      index = first_new + added++;
      vocab[token.content] = index;
    }
    token.special = true;
    added_encoder_[token.content] = index;
    added_decoder_[index] = std::move(token);
  }
  size_ = static_cast<int64_t>(vocab_map().size());

  for (const auto& token : specials) {
    special_ids_.insert(convert_token_to_id(token.content));
  }
  for (const auto& [content, id] : added_encoder_) {
    if (!special_tokens_.contains(content)) {
      legacy_added_.insert(content);
    }
  }
  for (const auto& t : c.additional_special_tokens) {
    if (convert_token_to_id(t.content) >= model_.size()) {
      legacy_added_.insert(t.content);
    }
  }

  trie_.assign(1, TrieNode{});
  for (const auto& [id, token] : added_decoder_) {
    trie_add(token.content);
  }

  unk_text_ = c.unk_token ? c.unk_token->content : model_.piece(model_.unk_id());
  unk_length_ = model_.encode(unk_text_).size();

  const auto id_of = [this](const std::optional<AddedToken>& t) -> std::optional<int64_t> {
    if (!t) {
      return std::nullopt;
    }
    return convert_token_to_id(t->content);
  };
  bos_id_ = id_of(c.bos_token);
  eos_id_ = id_of(c.eos_token);
  pad_id_ = id_of(c.pad_token);
  unk_id_ = id_of(c.unk_token);
}

std::unique_ptr<LlamaTokenizer> LlamaTokenizer::load(const fs::path& dir) {
  SentencePieceModel model = SentencePieceModel::load(dir / "tokenizer.model");
  const LlamaTokenizerConfig config = read_llama_tokenizer_config(dir);
  auto tokenizer = std::make_unique<LlamaTokenizer>(std::move(model), config);
  log::get("text")->info(
      "tokenizer {}: SentencePiece BPE, {} pieces, {} added tokens, len {}, legacy={}, "
      "add_bos={}",
      dir.string(), tokenizer->model_.size(), tokenizer->added_decoder_.size(), tokenizer->size_,
      tokenizer->legacy_, tokenizer->add_bos_);
  return tokenizer;
}

void LlamaTokenizer::trie_add(std::string_view word) {
  if (word.empty()) {
    return;
  }
  std::vector<char32_t> cps;
  std::vector<size_t> off;
  code_points(word, cps, off);
  int node = 0;
  for (char32_t c : cps) {
    auto it = trie_[static_cast<size_t>(node)].next.find(c);
    if (it == trie_[static_cast<size_t>(node)].next.end()) {
      trie_.push_back(TrieNode{});
      const int child = static_cast<int>(trie_.size()) - 1;
      trie_[static_cast<size_t>(node)].next[c] = child;
      node = child;
    } else {
      node = it->second;
    }
  }
  trie_[static_cast<size_t>(node)].terminal = true;
}

// A line-by-line port of transformers' Trie.split, quirks included (its lookahead can prefer an
// earlier-starting token over the first one found to end), over code points.
std::vector<LlamaTokenizer::Chunk> LlamaTokenizer::trie_split(const std::string& text) const {
  std::vector<char32_t> cps;
  std::vector<size_t> off;
  code_points(text, cps, off);
  const size_t n = cps.size();
  const auto child = [this](int node, char32_t c) -> int {
    const auto& next = trie_[static_cast<size_t>(node)].next;
    const auto it = next.find(c);
    return it == next.end() ? -1 : it->second;
  };
  const auto terminal = [this](int node) { return trie_[static_cast<size_t>(node)].terminal; };

  std::vector<std::pair<size_t, int>> states;  // start -> trie node, in insertion order
  std::vector<size_t> offsets{0};
  size_t skip = 0;
  for (size_t current = 0; current < n; ++current) {
    if (skip != 0 && current < skip) {
      continue;
    }
    std::vector<size_t> to_remove;
    bool reset = false;
    for (auto& state : states) {
      size_t start = state.first;
      if (terminal(state.second)) {
        size_t end = 0;
        for (const auto& [lookstart, looknode_start] : states) {
          int looknode = looknode_start;
          size_t lookahead = 0;
          if (lookstart > start) {
            break;
          }
          if (lookstart < start) {
            lookahead = current + 1;  // this state already consumed `current`
            end = current + 1;
          } else {
            lookahead = current;
            end = current;
          }
          if (terminal(looknode)) {
            start = lookstart;
            end = lookahead;
            skip = lookahead;
          }
          while (lookahead < n) {
            const int next = child(looknode, cps[lookahead]);
            if (next < 0) {
              break;
            }
            looknode = next;
            ++lookahead;
            if (terminal(looknode)) {
              start = lookstart;
              end = lookahead;
              skip = lookahead;
            }
          }
        }
        offsets.push_back(start);
        offsets.push_back(end);
        reset = true;
        break;
      }
      const int next = child(state.second, cps[current]);
      if (next >= 0) {
        state.second = next;
      } else {
        to_remove.push_back(start);
      }
    }
    if (reset) {
      states.clear();
    } else {
      std::erase_if(states, [&](const auto& s) {
        return std::find(to_remove.begin(), to_remove.end(), s.first) != to_remove.end();
      });
    }
    if (current >= skip) {
      if (const int first = child(0, cps[current]); first >= 0) {
        states.emplace_back(current, first);
      }
    }
  }
  for (const auto& [start, node] : states) {
    if (terminal(node)) {
      offsets.push_back(start);
      offsets.push_back(n);
      break;
    }
  }

  // cut_text: zero-width and backwards cuts are dropped.
  offsets.push_back(n);
  std::vector<Chunk> chunks;
  size_t start = 0;
  for (size_t end : offsets) {
    if (start >= end) {
      continue;
    }
    std::string piece = text.substr(off[start], off[end] - off[start]);
    const bool added = added_encoder_.contains(piece);
    chunks.push_back({std::move(piece), added});
    start = end;
  }
  return chunks;
}

std::vector<std::string> LlamaTokenizer::sp_tokenize(std::string_view chunk) const {
  const auto strings = [](std::vector<EncodedPiece> pieces, size_t drop) {
    std::vector<std::string> out;
    out.reserve(pieces.size());
    for (size_t i = drop; i < pieces.size(); ++i) {
      out.push_back(std::move(pieces[i].piece));
    }
    return out;
  };
  if (legacy_ || !(starts_with(chunk, kSpiece) || starts_with(chunk, " "))) {
    return strings(model_.encode(chunk), 0);
  }
  // The model has no dummy prefix now and would drop a leading "▁": encode "<unk>" + chunk and
  // remove the pieces of "<unk>" so that the chunk's "▁" stays attached to its word.
  auto pieces = model_.encode(unk_text_ + std::string(chunk));
  const size_t drop = pieces.size() >= unk_length_ ? unk_length_ : 0;
  return strings(std::move(pieces), drop);
}

// PreTrainedTokenizer.tokenize after the split (AddedToken lstrip/rstrip/single_word, then
// _tokenize per text chunk) and LlamaTokenizer.tokenize's removal of "▁" before a special token.
std::vector<LlamaTokenizer::Token> LlamaTokenizer::run(std::vector<Chunk> chunks, Mode mode) const {
  // Template text is looked up by string, as HF does; a chunk that came from user or segment
  // text stays text whatever it becomes.
  const auto set_text = [&](Chunk& chunk, std::string text) {
    if (text == chunk.text) {
      return;
    }
    chunk.text = std::move(text);
    chunk.added = mode == Mode::template_text && added_encoder_.contains(chunk.text);
  };
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (!chunks[i].added) {
      continue;
    }
    const AddedToken& token = added_decoder_.at(added_encoder_.at(chunks[i].text));
    Chunk* left = i > 0 ? &chunks[i - 1] : nullptr;
    Chunk* right = i + 1 < chunks.size() ? &chunks[i + 1] : nullptr;
    if (token.rstrip && right != nullptr && !right->text.empty()) {
      set_text(*right, py_lstrip(right->text));
    }
    if (token.lstrip && left != nullptr && !left->text.empty()) {
      set_text(*left, py_rstrip(left->text));
    }
    const std::string current = chunks[i].text;
    if (token.single_word && left != nullptr && !left->text.empty() && left->text.back() != ' ') {
      set_text(*left, left->text + current);
      set_text(chunks[i], "");
    } else if (token.single_word && right != nullptr && !right->text.empty() &&
               right->text[0] != ' ') {
      set_text(chunks[i], current + right->text);
      set_text(*right, "");
    }
  }

  std::vector<Token> tokens;
  for (const Chunk& chunk : chunks) {
    if (chunk.text.empty()) {
      continue;
    }
    if (chunk.added) {
      tokens.push_back({chunk.text, added_encoder_.at(chunk.text), true});
      continue;
    }
    for (std::string& piece : sp_tokenize(chunk.text)) {
      // HF maps every token string through the added tokens first; for user text only the
      // vocabulary counts, so no piece of typed text can turn into a special token.
      const int64_t id =
          mode == Mode::template_text ? convert_token_to_id(piece) : model_.piece_to_id(piece);
      tokens.push_back({std::move(piece), id, false});
    }
  }
  if (!legacy_ && tokens.size() > 1 && tokens[0].text == kSpiece &&
      is_special_token(tokens[1].text) &&
      (mode == Mode::template_text || (mode == Mode::segments && tokens[1].added))) {
    tokens.erase(tokens.begin());
  }
  return tokens;
}

std::vector<int64_t> LlamaTokenizer::ids_of(const std::vector<Token>& tokens) {
  std::vector<int64_t> ids;
  ids.reserve(tokens.size());
  for (const auto& t : tokens) {
    ids.push_back(t.id);
  }
  return ids;
}

std::vector<LlamaTokenizer::Token> LlamaTokenizer::template_tokens(std::string_view text) const {
  if (text.empty()) {
    return {};
  }
  std::string prepared = legacy_ ? std::string(text) : replace_all(text, kSpiece, " ");
  if (!legacy_ && add_prefix_space_) {
    prepared.insert(0, kSpiece);
  }
  auto chunks =
      split_special_tokens_ ? std::vector<Chunk>{{prepared, false}} : trie_split(prepared);
  return run(std::move(chunks), Mode::template_text);
}

std::vector<std::string> LlamaTokenizer::tokenize(std::string_view text) const {
  std::vector<std::string> out;
  for (auto& t : template_tokens(text)) {
    out.push_back(std::move(t.text));
  }
  return out;
}

std::vector<int64_t> LlamaTokenizer::encode_template(std::string_view text) const {
  return ids_of(template_tokens(text));
}

std::vector<int64_t> LlamaTokenizer::encode_user(std::string_view text) const {
  // HF with split_special_tokens=True: the whole text is one chunk.
  if (text.empty()) {
    return {};
  }
  std::string prepared = legacy_ ? std::string(text) : replace_all(text, kSpiece, " ");
  if (!legacy_ && add_prefix_space_) {
    prepared.insert(0, kSpiece);
  }
  return ids_of(run({{std::move(prepared), false}}, Mode::user_text));
}

std::vector<int64_t> LlamaTokenizer::encode_segments(const std::vector<Segment>& segments) const {
  // Build the chunks HF's split would make of the concatenated string: adjacent text segments
  // form one chunk, each special segment is its own.
  std::vector<Chunk> chunks;
  std::string text;
  for (const Segment& segment : segments) {
    if (!segment.special) {
      text += legacy_ ? segment.text : replace_all(segment.text, kSpiece, " ");
      continue;
    }
    if (!added_encoder_.contains(segment.text)) {
      throw InputError(describe("chat template segment \"" + segment.text + "\"",
                                "an added or special token of the tokenizer",
                                "no token with that content",
                                "Check the chat template against tokenizer_config.json's "
                                "added_tokens_decoder"));
    }
    if (!text.empty()) {
      chunks.push_back({std::move(text), false});
    }
    text.clear();
    chunks.push_back({segment.text, true});
  }
  if (!text.empty()) {
    chunks.push_back({std::move(text), false});
  }
  if (chunks.empty()) {
    return {};
  }
  if (!legacy_ && add_prefix_space_) {
    if (chunks.front().added) {
      chunks.insert(chunks.begin(), Chunk{std::string(kSpiece), false});
    } else {
      chunks.front().text.insert(0, kSpiece);
    }
  }
  return ids_of(run(std::move(chunks), Mode::segments));
}

std::string_view LlamaTokenizer::token_string(int64_t id) const {
  if (const auto it = added_decoder_.find(id); it != added_decoder_.end()) {
    return it->second.content;
  }
  if (model_.valid_id(id)) {
    return model_.piece(id);
  }
  throw InputError(describe(
      "token id " + std::to_string(id),
      "an id of the tokenizer (0.." + std::to_string(model_.size() - 1) + " or an added token)",
      "none",
      "A model whose vocabulary is larger than its tokenizer produced an id the tokenizer cannot "
      "decode; HF raises here too"));
}

int64_t LlamaTokenizer::convert_token_to_id(std::string_view token) const {
  if (const auto it = added_encoder_.find(token); it != added_encoder_.end()) {
    return it->second;
  }
  return model_.piece_to_id(token);
}

std::string LlamaTokenizer::decode(const std::vector<int64_t>& ids,
                                   bool skip_special_tokens) const {
  std::string out;
  LlamaDecodeStream stream(*this, skip_special_tokens);
  for (int64_t id : ids) {
    stream.push(id, out);
  }
  stream.finish(out);
  return out;
}

std::unique_ptr<DecodeStream> LlamaTokenizer::decode_stream(bool skip_special_tokens) const {
  return std::make_unique<LlamaDecodeStream>(*this, skip_special_tokens);
}

std::string LlamaTokenizer::piece(int64_t id) const { return std::string(token_string(id)); }

std::optional<int64_t> LlamaTokenizer::token_id(std::string_view piece_or_added_token) const {
  if (const auto it = added_encoder_.find(piece_or_added_token); it != added_encoder_.end()) {
    return it->second;
  }
  if (const auto id = model_.find(piece_or_added_token)) {
    return *id;
  }
  return std::nullopt;
}

std::string LlamaTokenizer::token_bytes(int64_t id) const {
  if (const auto it = added_decoder_.find(id); it != added_decoder_.end()) {
    return it->second.content;
  }
  const std::string_view piece = token_string(id);
  switch (model_.type(id)) {
    case PieceType::byte:
      return std::string(1, static_cast<char>(model_.byte_value(id)));
    case PieceType::control:
      return {};
    default:
      return replace_all(piece, kSpiece, " ");
  }
}

}  // namespace icet::text
