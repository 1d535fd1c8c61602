#include "core/text/hf_tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <fstream>
#include <functional>
#include <mutex>
#include <queue>
#include <set>
#include <sstream>
#include <unordered_map>

#include "core/base/atomic_file.h"
#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/base/log.h"
#include "core/text/unicode.h"

// Semantics follow huggingface/tokenizers (Rust): tokenizer/added_vocabulary.rs,
// models/bpe/{model,word}.rs, pre_tokenizers/*, normalizers/*, decoders/*, processors/*.

namespace icet::text {
namespace {

using json = nlohmann::json;
using Ids = std::vector<int64_t>;
namespace uni = unicode;

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// ---------------------------------------------------------------------------------------------
// Error reporting: every message names the file and the key path inside it.

class Source {
 public:
  explicit Source(std::string file) : file_(std::move(file)) {}
  const std::string& file() const { return file_; }

  [[noreturn]] void fail(const std::string& key, const std::string& expected,
                         const std::string& found, const std::string& hint = {}) const {
    throw InputError(describe(file_ + ": key '" + key + "'", expected, found, hint));
  }
  [[noreturn]] void unsupported(const std::string& key, const std::string& what,
                                const std::string& value) const {
    fail(key, "a supported " + what, "unsupported " + what + " " + value,
         "icet reads BPE tokenizer.json files as used by GPT-2, Llama 2/3, Mistral and similar "
         "models");
  }

  const json* find(const json& obj, const char* key) const {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  const json& object(const json& obj, const std::string& path, const char* key) const {
    const json* v = find(obj, key);
    if (v == nullptr) fail(join(path, key), "an object", "nothing");
    if (!v->is_object()) fail(join(path, key), "an object", json_util::type_name(*v));
    return *v;
  }
  std::string string(const json& obj, const std::string& path, const char* key,
                     std::optional<std::string> fallback = std::nullopt) const {
    const json* v = find(obj, key);
    if (v == nullptr) {
      if (fallback) return *fallback;
      fail(join(path, key), "a string", "nothing");
    }
    if (!v->is_string()) fail(join(path, key), "a string", json_util::type_name(*v));
    return v->get<std::string>();
  }
  std::optional<std::string> optional_string(const json& obj, const std::string& path,
                                             const char* key) const {
    const json* v = find(obj, key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) fail(join(path, key), "a string or null", json_util::type_name(*v));
    return v->get<std::string>();
  }
  bool boolean(const json& obj, const std::string& path, const char* key, bool fallback) const {
    const json* v = find(obj, key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) fail(join(path, key), "true or false", json_util::type_name(*v));
    return v->get<bool>();
  }
  int64_t integer(const json& obj, const std::string& path, const char* key,
                  std::optional<int64_t> fallback = std::nullopt) const {
    const json* v = find(obj, key);
    if (v == nullptr) {
      if (fallback) return *fallback;
      fail(join(path, key), "an integer", "nothing");
    }
    if (!v->is_number_integer()) fail(join(path, key), "an integer", json_util::type_name(*v));
    return v->get<int64_t>();
  }
  const json& array(const json& obj, const std::string& path, const char* key) const {
    const json* v = find(obj, key);
    if (v == nullptr) fail(join(path, key), "a list", "nothing");
    if (!v->is_array()) fail(join(path, key), "a list", json_util::type_name(*v));
    return *v;
  }
  // A single character (Metaspace replacement, Strip content).
  char32_t character(const json& obj, const std::string& path, const char* key) const {
    const std::string s = string(obj, path, key);
    size_t pos = 0;
    const char32_t cp = s.empty() ? 0 : uni::next(s, pos);
    if (s.empty() || pos != s.size()) fail(join(path, key), "a single character", "\"" + s + "\"");
    return cp;
  }

  static std::string join(const std::string& path, const char* key) {
    return path.empty() ? std::string(key) : path + "." + key;
  }
  static std::string index(const std::string& path, size_t i) {
    return path + "[" + std::to_string(i) + "]";
  }

 private:
  std::string file_;
};

// ---------------------------------------------------------------------------------------------
// GPT-2's byte-to-unicode table: printable bytes map to themselves, the others to U+0100...

struct ByteLevelTable {
  std::array<std::string, 256> byte_to_text;
  std::array<int16_t, 0x144> char_to_byte{};  // -1 where the code point is not a byte symbol

  ByteLevelTable() {
    char_to_byte.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      byte_to_text[b] = uni::encode(cp);
      char_to_byte[cp] = static_cast<int16_t>(b);
    }
  }
  // Rust ByteLevel::decode_chain per token: all chars must be byte symbols, else the token's
  // own UTF-8 bytes are used.
  void append_bytes(std::string_view token, std::string& out) const {
    const size_t mark = out.size();
    for (size_t pos = 0; pos < token.size();) {
      const char32_t cp = uni::next(token, pos);
      if (cp >= char_to_byte.size() || char_to_byte[cp] < 0) {
        out.resize(mark);
        out.append(token);
        return;
      }
      out.push_back(static_cast<char>(char_to_byte[cp]));
    }
  }
};

const ByteLevelTable& byte_level() {
  static const ByteLevelTable table;
  return table;
}

std::string byte_level_encode(std::string_view s) {
  const auto& table = byte_level();
  std::string out;
  out.reserve(s.size() * 2);
  for (unsigned char b : s) out += table.byte_to_text[b];
  return out;
}

// ---------------------------------------------------------------------------------------------
// Pieces of text between pre-tokenization steps.

struct Piece {
  std::string text;
  bool at_origin = false;  // starts at offset 0 of the input (Metaspace prepend_scheme "first")
};

struct Span {
  size_t begin;
  size_t end;
  bool match;
};

enum class Behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

// NormalizedString::split: turns matches into pieces according to `behavior`.
void split_into(const Piece& piece, const std::vector<Span>& matches, Behavior behavior,
                std::vector<Piece>& out) {
  std::vector<Span> splits;  // match == true means "remove"
  switch (behavior) {
    case Behavior::isolated:
      for (const Span& s : matches) splits.push_back({s.begin, s.end, false});
      break;
    case Behavior::removed:
      splits = matches;
      break;
    case Behavior::contiguous: {
      bool previous = false;
      for (const Span& s : matches) {
        if (s.match == previous && !splits.empty()) {
          splits.back().end = s.end;
        } else {
          splits.push_back({s.begin, s.end, false});
        }
        previous = s.match;
      }
      break;
    }
    case Behavior::merged_with_previous: {
      bool previous = false;
      for (const Span& s : matches) {
        if (s.match && !previous && !splits.empty()) {
          splits.back().end = s.end;
        } else {
          splits.push_back({s.begin, s.end, false});
        }
        previous = s.match;
      }
      break;
    }
    case Behavior::merged_with_next: {
      bool previous = false;
      for (auto it = matches.rbegin(); it != matches.rend(); ++it) {
        if (it->match && !previous && !splits.empty()) {
          splits.back().begin = it->begin;
        } else {
          splits.push_back({it->begin, it->end, false});
        }
        previous = it->match;
      }
      std::reverse(splits.begin(), splits.end());
      break;
    }
  }
  for (const Span& s : splits) {
    if (s.match || s.begin == s.end) continue;  // removed, or empty (dropped by HF)
    out.push_back({piece.text.substr(s.begin, s.end - s.begin), piece.at_origin && s.begin == 0});
  }
}

// A pattern's matches and the text between them, covering the whole string (Pattern trait).
template <class FindNext>
std::vector<Span> find_matches(std::string_view s, FindNext&& find_next) {
  std::vector<Span> out;
  if (s.empty()) return {{0, 0, false}};
  size_t prev = 0;
  size_t start = 0;
  size_t end = 0;
  while (prev < s.size() && find_next(s, prev, start, end)) {
    if (prev != start) out.push_back({prev, start, false});
    out.push_back({start, end, true});
    prev = end;
  }
  if (prev != s.size()) out.push_back({prev, s.size(), false});
  return out;
}

// Every code point matching `pred` is a match of its own (Rust's Fn(char) -> bool pattern).
template <class Pred>
std::vector<Span> find_char_matches(std::string_view s, Pred&& pred) {
  if (s.empty()) return {{0, 0, false}};
  std::vector<Span> out;
  size_t last = 0;
  for (size_t pos = 0; pos < s.size();) {
    const size_t b = pos;
    const char32_t cp = uni::next(s, pos);
    if (pred(cp)) {
      if (last < b) out.push_back({last, b, false});
      out.push_back({b, pos, true});
      last = pos;
    }
  }
  if (last < s.size()) out.push_back({last, s.size(), false});
  return out;
}

// ---------------------------------------------------------------------------------------------
// The split regexes of GPT-2, Llama 3 (= OpenAI cl100k) and Qwen 2, matched by hand with
// Oniguruma's semantics: alternatives tried in order at each position, greedy with
// backtracking, \s = White_Space, \p{L} / \p{N} = Unicode general categories.

constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

enum class KnownRegex { gpt2, llama3, qwen2 };

class Cursor {
 public:
  explicit Cursor(std::string_view s) : s_(s) {}
  bool at_end(size_t pos) const { return pos >= s_.size(); }
  char32_t peek(size_t pos, size_t& next) const {
    next = pos;
    return uni::next(s_, next);
  }
  template <class Pred>
  size_t skip_while(size_t pos, Pred&& pred, size_t max_count = SIZE_MAX) const {
    size_t count = 0;
    while (pos < s_.size() && count < max_count) {
      size_t next = 0;
      if (!pred(peek(pos, next))) break;
      pos = next;
      ++count;
    }
    return pos;
  }

 private:
  std::string_view s_;
};

bool is_other(char32_t cp) {
  return !uni::is_whitespace(cp) && !uni::is_letter(cp) && !uni::is_number(cp);
}

// Length of a contraction ('s 't 're 've 'm 'll 'd) at pos, or 0.
size_t contraction(std::string_view s, size_t pos, bool ignore_case) {
  if (s[pos] != '\'' || pos + 1 >= s.size()) return 0;
  auto at = [&](size_t i) -> char {
    if (pos + i >= s.size()) return 0;
    const char c = s[pos + i];
    return ignore_case && c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c;
  };
  const char c1 = at(1);
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  const char c2 = at(2);
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

// \s+(?!\S) then \s+, from a whitespace character at pos.
size_t whitespace_run(const Cursor& c, size_t pos, size_t text_size) {
  size_t second = 0;
  c.peek(pos, second);
  const size_t end = c.skip_while(pos, uni::is_whitespace);
  if (end == text_size) return end;
  if (end > second) {
    // Give back the last whitespace character so that the lookahead sees whitespace.
    size_t last = pos;
    for (size_t p = pos; p < end;) {
      last = p;
      size_t next = 0;
      c.peek(p, next);
      p = next;
    }
    return last;
  }
  return end;
}

// End of the match starting exactly at pos, or pos when no alternative matches there.
size_t match_known(KnownRegex kind, std::string_view s, size_t pos) {
  const Cursor c(s);
  const size_t n = s.size();
  if (kind == KnownRegex::gpt2) {
    if (size_t len = contraction(s, pos, false)) return pos + len;
    const size_t q = s[pos] == ' ' ? pos + 1 : pos;
    size_t next = 0;
    if (q < n) {
      const char32_t cp = c.peek(q, next);
      if (uni::is_letter(cp)) return c.skip_while(q, uni::is_letter);
      if (uni::is_number(cp)) return c.skip_while(q, uni::is_number);
      if (is_other(cp)) return c.skip_while(q, is_other);
    }
    if (uni::is_whitespace(c.peek(pos, next))) return whitespace_run(c, pos, n);
    return pos;
  }
  // Llama 3 / Qwen 2.
  if (size_t len = contraction(s, pos, true)) return pos + len;
  size_t next = 0;
  const char32_t first = c.peek(pos, next);
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (first != '\r' && first != '\n' && !uni::is_letter(first) && !uni::is_number(first)) {
    size_t after = 0;
    if (next < n && uni::is_letter(c.peek(next, after))) return c.skip_while(next, uni::is_letter);
  }
  if (uni::is_letter(first)) return c.skip_while(pos, uni::is_letter);
  // \p{N}{1,3} (Llama 3) or \p{N} (Qwen 2)
  if (uni::is_number(first)) {
    return c.skip_while(pos, uni::is_number, kind == KnownRegex::llama3 ? 3 : 1);
  }
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  {
    const size_t q = first == ' ' ? next : pos;
    size_t after = 0;
    if (q < n && is_other(c.peek(q, after))) {
      const size_t end = c.skip_while(q, is_other);
      return c.skip_while(end, [](char32_t cp) { return cp == '\r' || cp == '\n'; });
    }
  }
  if (!uni::is_whitespace(first)) return pos;
  // \s*[\r\n]+: ends after the last CR/LF of the whitespace run.
  const size_t run_end = c.skip_while(pos, uni::is_whitespace);
  size_t last_newline = SIZE_MAX;
  for (size_t p = pos; p < run_end; ++p) {
    if (s[p] == '\r' || s[p] == '\n') last_newline = p;
  }
  if (last_newline != SIZE_MAX) return last_newline + 1;
  return whitespace_run(c, pos, n);
}

class Matcher {
 public:
  virtual ~Matcher() = default;
  // Finds the next match at or after `from`; false when there is none.
  virtual bool find(std::string_view s, size_t from, size_t& start, size_t& end) const = 0;
};

class LiteralMatcher final : public Matcher {
 public:
  explicit LiteralMatcher(std::string literal) : literal_(std::move(literal)) {}
  bool find(std::string_view s, size_t from, size_t& start, size_t& end) const override {
    const size_t at = s.find(literal_, from);
    if (at == std::string_view::npos) return false;
    start = at;
    end = at + literal_.size();
    return true;
  }

 private:
  std::string literal_;
};

class KnownRegexMatcher final : public Matcher {
 public:
  explicit KnownRegexMatcher(KnownRegex kind) : kind_(kind) {}
  bool find(std::string_view s, size_t from, size_t& start, size_t& end) const override {
    for (size_t pos = from; pos < s.size(); pos += uni::sequence_length(s, pos)) {
      const size_t e = match_known(kind_, s, pos);
      if (e > pos) {
        start = pos;
        end = e;
        return true;
      }
    }
    return false;
  }

 private:
  KnownRegex kind_;
};

// Rust regex \w+|[^\w\s]+ (Whitespace pre-tokenizer).
class WordMatcher final : public Matcher {
 public:
  bool find(std::string_view s, size_t from, size_t& start, size_t& end) const override {
    const Cursor c(s);
    for (size_t pos = from; pos < s.size();) {
      size_t next = 0;
      const char32_t cp = c.peek(pos, next);
      if (uni::is_word(cp)) {
        start = pos;
        end = c.skip_while(pos, uni::is_word);
        return true;
      }
      if (!uni::is_whitespace(cp)) {
        start = pos;
        end = c.skip_while(pos,
                           [](char32_t x) { return !uni::is_word(x) && !uni::is_whitespace(x); });
        return true;
      }
      pos = next;
    }
    return false;
  }
};

std::unique_ptr<Matcher> make_pattern(const Source& src, const json& obj, const std::string& path,
                                      bool allow_regex) {
  const json& pattern = src.object(obj, path, "pattern");
  const std::string ppath = Source::join(path, "pattern");
  if (const json* literal = src.find(pattern, "String")) {
    if (!literal->is_string())
      src.fail(ppath + ".String", "a string", json_util::type_name(*literal));
    if (literal->get<std::string>().empty())
      src.fail(ppath + ".String", "a non-empty string", "\"\"");
    return std::make_unique<LiteralMatcher>(literal->get<std::string>());
  }
  if (const json* regex = src.find(pattern, "Regex")) {
    if (!regex->is_string()) src.fail(ppath + ".Regex", "a string", json_util::type_name(*regex));
    const std::string r = regex->get<std::string>();
    if (allow_regex) {
      if (r == kGpt2Pattern) return std::make_unique<KnownRegexMatcher>(KnownRegex::gpt2);
      if (r == kLlama3Pattern) return std::make_unique<KnownRegexMatcher>(KnownRegex::llama3);
      if (r == kQwen2Pattern) return std::make_unique<KnownRegexMatcher>(KnownRegex::qwen2);
    }
    src.fail(ppath + ".Regex",
             allow_regex ? "one of the supported split regexes (GPT-2, Llama 3, Qwen 2)"
                         : "a String pattern",
             "the regex \"" + r + "\"",
             "icet matches these regexes by hand; other patterns are not supported");
  }
  src.fail(ppath, "{\"String\": ...} or {\"Regex\": ...}", pattern.dump());
}

// ---------------------------------------------------------------------------------------------
// Normalizers.

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& s) const = 0;
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  void normalize(std::string& s) const override {
    for (const auto& step : steps_) step->normalize(s);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& s) const override {
    if (!s.empty()) s.insert(0, prefix_);  // HF prepends only to non-empty strings
  }

 private:
  std::string prefix_;
};

std::string replace_all(std::string_view s, const Matcher& pattern, std::string_view content) {
  std::string out;
  out.reserve(s.size());
  size_t prev = 0, start = 0, end = 0;
  while (prev < s.size() && pattern.find(s, prev, start, end)) {
    out.append(s.substr(prev, start - prev));
    out.append(content);
    prev = end;
  }
  out.append(s.substr(prev));
  return out;
}

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Matcher> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void normalize(std::string& s) const override { s = replace_all(s, *pattern_, content_); }

 private:
  std::unique_ptr<Matcher> pattern_;
  std::string content_;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  void normalize(std::string& s) const override {
    std::string out;
    out.reserve(s.size());
    for (size_t pos = 0; pos < s.size();) uni::append_lowercase(out, uni::next(s, pos));
    s = std::move(out);
  }
};

std::string_view strip_view(std::string_view s, bool left, bool right) {
  if (left) {
    size_t pos = 0;
    while (pos < s.size()) {
      size_t next = pos;
      if (!uni::is_whitespace(uni::next(s, next))) break;
      pos = next;
    }
    s.remove_prefix(pos);
  }
  if (right) {
    size_t end = s.size();
    while (end > 0) {
      size_t begin = end - 1;
      while (begin > 0 && (static_cast<unsigned char>(s[begin]) & 0xC0) == 0x80) --begin;
      size_t pos = begin;
      if (!uni::is_whitespace(uni::next(s, pos))) break;
      end = begin;
    }
    s = s.substr(0, end);
  }
  return s;
}

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& s) const override { s = std::string(strip_view(s, left_, right_)); }

 private:
  bool left_, right_;
};

class ByteLevelNormalizer final : public Normalizer {
 public:
  void normalize(std::string& s) const override { s = byte_level_encode(s); }
};

std::unique_ptr<Normalizer> make_normalizer(const Source& src, const json& cfg,
                                            const std::string& path) {
  if (!cfg.is_object()) src.fail(path, "an object or null", json_util::type_name(cfg));
  const std::string type = src.string(cfg, path, "type");
  if (type == "Sequence") {
    const json& list = src.array(cfg, path, "normalizers");
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      steps.push_back(make_normalizer(src, list[i], Source::index(path + ".normalizers", i)));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  if (type == "Prepend")
    return std::make_unique<PrependNormalizer>(src.string(cfg, path, "prepend"));
  if (type == "Replace") {
    return std::make_unique<ReplaceNormalizer>(make_pattern(src, cfg, path, false),
                                               src.string(cfg, path, "content"));
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(src.boolean(cfg, path, "strip_left", false),
                                             src.boolean(cfg, path, "strip_right", false));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  // NFC/NFD/NFKC/NFKD, StripAccents, BertNormalizer, Precompiled need Unicode decomposition
  // tables that icet does not carry.
  src.unsupported(Source::join(path, "type"), "normalizer", type);
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers.

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& step : steps_) step->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex), regex_(KnownRegex::gpt2) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 2);
    for (Piece& piece : pieces) {
      if (add_prefix_space_ && piece.text.front() != ' ') piece.text.insert(0, " ");
      if (use_regex_) {
        const auto matches =
            find_matches(piece.text, [this](std::string_view s, size_t from, size_t& b, size_t& e) {
              return regex_.find(s, from, b, e);
            });
        split_into(piece, matches, Behavior::isolated, out);
      } else {
        out.push_back(std::move(piece));
      }
    }
    for (Piece& piece : out) piece.text = byte_level_encode(piece.text);
    pieces = std::move(out);
  }

 private:
  bool add_prefix_space_;
  bool use_regex_;
  KnownRegexMatcher regex_;
};

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Matcher> pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 4);
    for (const Piece& piece : pieces) {
      auto matches =
          find_matches(piece.text, [this](std::string_view s, size_t from, size_t& b, size_t& e) {
            return pattern_->find(s, from, b, e);
          });
      if (invert_) {
        for (Span& m : matches) m.match = !m.match;
      }
      split_into(piece, matches, behavior_, out);
    }
    pieces = std::move(out);
  }

 private:
  std::unique_ptr<Matcher> pattern_;
  Behavior behavior_;
  bool invert_;
};

enum class PrependScheme { always, first, never };

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(char32_t replacement, PrependScheme scheme, bool split)
      : replacement_(replacement),
        replacement_text_(uni::encode(replacement)),
        scheme_(scheme),
        split_(split) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    const LiteralMatcher space(" ");
    std::vector<Piece> out;
    for (Piece& piece : pieces) {
      piece.text = replace_all(piece.text, space, replacement_text_);
      const bool starts = piece.text.compare(0, replacement_text_.size(), replacement_text_) == 0;
      if (!starts && (scheme_ == PrependScheme::always ||
                      (scheme_ == PrependScheme::first && piece.at_origin))) {
        piece.text.insert(0, replacement_text_);
      }
      if (split_) {
        const auto matches =
            find_char_matches(piece.text, [this](char32_t cp) { return cp == replacement_; });
        split_into(piece, matches, Behavior::merged_with_next, out);
      } else {
        out.push_back(std::move(piece));
      }
    }
    pieces = std::move(out);
  }

 private:
  char32_t replacement_;
  std::string replacement_text_;
  PrependScheme scheme_;
  bool split_;
};

class DigitsPreTokenizer final : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    for (const Piece& piece : pieces) {
      split_into(piece, find_char_matches(piece.text, uni::is_number),
                 individual_ ? Behavior::isolated : Behavior::contiguous, out);
    }
    pieces = std::move(out);
  }

 private:
  bool individual_;
};

class WhitespacePreTokenizer final : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    const WordMatcher words;
    std::vector<Piece> out;
    for (const Piece& piece : pieces) {
      auto matches =
          find_matches(piece.text, [&words](std::string_view s, size_t from, size_t& b, size_t& e) {
            return words.find(s, from, b, e);
          });
      for (Span& m : matches) m.match = !m.match;  // Invert + Removed: keep the words
      split_into(piece, matches, Behavior::removed, out);
    }
    pieces = std::move(out);
  }
};

class WhitespaceSplitPreTokenizer final : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    for (const Piece& piece : pieces) {
      split_into(piece, find_char_matches(piece.text, uni::is_whitespace), Behavior::removed, out);
    }
    pieces = std::move(out);
  }
};

Behavior parse_behavior(const Source& src, const json& cfg, const std::string& path) {
  const std::string b = src.string(cfg, path, "behavior");
  if (b == "Removed") return Behavior::removed;
  if (b == "Isolated") return Behavior::isolated;
  if (b == "MergedWithPrevious") return Behavior::merged_with_previous;
  if (b == "MergedWithNext") return Behavior::merged_with_next;
  if (b == "Contiguous") return Behavior::contiguous;
  src.fail(Source::join(path, "behavior"),
           "Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous", "\"" + b + "\"");
}

PrependScheme parse_prepend_scheme(const Source& src, const json& cfg, const std::string& path) {
  PrependScheme scheme = PrependScheme::always;
  if (auto s = src.optional_string(cfg, path, "prepend_scheme")) {
    if (*s == "always")
      scheme = PrependScheme::always;
    else if (*s == "first")
      scheme = PrependScheme::first;
    else if (*s == "never")
      scheme = PrependScheme::never;
    else
      src.fail(Source::join(path, "prepend_scheme"), "always, first or never", "\"" + *s + "\"");
  }
  // Older files: add_prefix_space false means "never" (and contradicts any other scheme).
  if (!src.boolean(cfg, path, "add_prefix_space", true)) {
    if (scheme != PrependScheme::never && src.find(cfg, "prepend_scheme") != nullptr) {
      src.fail(Source::join(path, "add_prefix_space"), "a value that matches prepend_scheme",
               "false with prepend_scheme \"" + src.string(cfg, path, "prepend_scheme") + "\"");
    }
    scheme = PrependScheme::never;
  }
  return scheme;
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Source& src, const json& cfg,
                                                 const std::string& path) {
  if (!cfg.is_object()) src.fail(path, "an object or null", json_util::type_name(cfg));
  const std::string type = src.string(cfg, path, "type");
  if (type == "Sequence") {
    const json& list = src.array(cfg, path, "pretokenizers");
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      steps.push_back(make_pre_tokenizer(src, list[i], Source::index(path + ".pretokenizers", i)));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPreTokenizer>(src.boolean(cfg, path, "add_prefix_space", true),
                                                   src.boolean(cfg, path, "use_regex", true));
  }
  if (type == "Split") {
    return std::make_unique<SplitPreTokenizer>(make_pattern(src, cfg, path, true),
                                               parse_behavior(src, cfg, path),
                                               src.boolean(cfg, path, "invert", false));
  }
  if (type == "Metaspace") {
    return std::make_unique<MetaspacePreTokenizer>(src.character(cfg, path, "replacement"),
                                                   parse_prepend_scheme(src, cfg, path),
                                                   src.boolean(cfg, path, "split", true));
  }
  if (type == "Digits") {
    return std::make_unique<DigitsPreTokenizer>(src.boolean(cfg, path, "individual_digits", false));
  }
  if (type == "Whitespace") return std::make_unique<WhitespacePreTokenizer>();
  if (type == "WhitespaceSplit") return std::make_unique<WhitespaceSplitPreTokenizer>();
  src.unsupported(Source::join(path, "type"), "pre-tokenizer", type);
}

// ---------------------------------------------------------------------------------------------
// BPE model.

class BpeModel {
 public:
  BpeModel(const Source& src, const json& cfg, int64_t id_limit);

  // Appends the ids of one pre-tokenized word.
  void tokenize(std::string_view word, Ids& out) const;

  std::optional<int64_t> find(std::string_view token) const {
    auto it = vocab_.find(token);
    return it == vocab_.end() ? std::nullopt : std::optional<int64_t>(it->second);
  }
  const std::string* token(int64_t id) const {
    if (id < 0 || static_cast<size_t>(id) >= vocab_r_.size() || !present_[id]) return nullptr;
    return &vocab_r_[id];
  }
  const StringMap<int32_t>& vocab() const { return vocab_; }
  const std::optional<std::string>& unk_token() const { return unk_token_; }

 private:
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    uint32_t len;  // bytes of the original word; 0 once merged away
  };
  std::vector<int32_t> merge_word(std::string_view word) const;

  StringMap<int32_t> vocab_;
  std::vector<std::string> vocab_r_;
  std::vector<uint8_t> present_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (a, b) -> (rank, new id)
  std::optional<std::string> unk_token_;
  int32_t unk_id_ = -1;
  std::optional<std::string> prefix_;
  std::optional<std::string> suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::array<int32_t, 256> byte_ids_{};

  // Words seen before (HF caches words shorter than 256 bytes, up to 10,000 of them).
  static constexpr size_t kCacheCapacity = 10000;
  static constexpr size_t kCacheMaxLength = 256;
  mutable std::mutex cache_mutex_;
  mutable StringMap<std::vector<int32_t>> cache_;
};

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

BpeModel::BpeModel(const Source& src, const json& cfg, int64_t id_limit) {
  const std::string path = "model";
  if (auto dropout = src.find(cfg, "dropout")) {
    if (!dropout->is_number())
      src.fail("model.dropout", "a number or null", json_util::type_name(*dropout));
    if (dropout->get<double>() != 0.0) {
      src.fail("model.dropout", "null or 0 (no BPE dropout at inference)", dropout->dump());
    }
  }
  unk_token_ = src.optional_string(cfg, path, "unk_token");
  prefix_ = src.optional_string(cfg, path, "continuing_subword_prefix");
  suffix_ = src.optional_string(cfg, path, "end_of_word_suffix");
  fuse_unk_ = src.boolean(cfg, path, "fuse_unk", false);
  byte_fallback_ = src.boolean(cfg, path, "byte_fallback", false);
  ignore_merges_ = src.boolean(cfg, path, "ignore_merges", false);

  const json* vocab = src.find(cfg, "vocab");
  if (vocab == nullptr || !vocab->is_object()) {
    src.fail("model.vocab", "an object mapping tokens to ids",
             vocab == nullptr ? "nothing" : json_util::type_name(*vocab));
  }
  vocab_.reserve(vocab->size());
  vocab_r_.resize(std::min<size_t>(vocab->size(), static_cast<size_t>(id_limit)));
  present_.resize(vocab_r_.size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    const std::string key = "model.vocab[\"" + it.key() + "\"]";
    if (!it->is_number_integer()) src.fail(key, "an integer id", json_util::type_name(*it));
    const int64_t id = it->get<int64_t>();
    if (id < 0 || id >= id_limit) {
      src.fail(key, "an id in [0, " + std::to_string(id_limit) + ")", std::to_string(id),
               "ids must be below the number of vocabulary entries plus added tokens");
    }
    if (static_cast<size_t>(id) >= vocab_r_.size()) {
      vocab_r_.resize(id + 1);
      present_.resize(id + 1);
    }
    if (present_[id]) {
      src.fail(key, "a unique id",
               "id " + std::to_string(id) + " also used by \"" + vocab_r_[id] + "\"");
    }
    present_[id] = 1;
    vocab_r_[id] = it.key();
    vocab_.emplace(it.key(), static_cast<int32_t>(id));
  }
  if (unk_token_) {
    auto unk = vocab_.find(*unk_token_);
    if (unk == vocab_.end())
      src.fail("model.unk_token", "a token of model.vocab", "\"" + *unk_token_ + "\"");
    unk_id_ = unk->second;
  }
  byte_ids_.fill(-1);
  if (byte_fallback_) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      if (auto it = vocab_.find(std::string_view(name)); it != vocab_.end())
        byte_ids_[b] = it->second;
    }
  }

  const json& merges = src.array(cfg, path, "merges");
  merges_.reserve(merges.size());
  const size_t prefix_len = prefix_ ? prefix_->size() : 0;
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string key = Source::index("model.merges", i);
    const json& m = merges[i];
    std::string a, b;
    if (m.is_string()) {
      // Legacy "a b" form: exactly one space.
      const std::string line = m.get<std::string>();
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        src.fail(key, "\"<left> <right>\" with exactly one space", "\"" + line + "\"");
      }
      a = line.substr(0, space);
      b = line.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      src.fail(key, "a merge (\"a b\" or [\"a\", \"b\"])", m.dump());
    }
    auto ia = vocab_.find(a);
    auto ib = vocab_.find(b);
    if (ia == vocab_.end())
      src.fail(key, "tokens of model.vocab", "\"" + a + "\", which is not in the vocabulary");
    if (ib == vocab_.end())
      src.fail(key, "tokens of model.vocab", "\"" + b + "\", which is not in the vocabulary");
    if (b.size() < prefix_len)
      src.fail(key, "a right part that starts with continuing_subword_prefix", "\"" + b + "\"");
    const std::string merged = a + b.substr(prefix_len);
    auto im = vocab_.find(merged);
    if (im == vocab_.end())
      src.fail(key, "a merge whose result is in model.vocab", "\"" + merged + "\", which is not");
    // Like HF's HashMap collect, a repeated pair keeps its last rank.
    merges_[pair_key(ia->second, ib->second)] = {static_cast<int32_t>(i), im->second};
  }
}

std::vector<int32_t> BpeModel::merge_word(std::string_view w) const {
  std::vector<Symbol> symbols;
  symbols.reserve(w.size());
  auto add = [&symbols](int32_t id, size_t len) {
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1, static_cast<uint32_t>(len)});
  };
  // A pending unknown: its id (-1 when none) and byte length, fused with the next ones if asked.
  int32_t unk_pending = -1;
  size_t unk_len = 0;
  std::string buffer;
  for (size_t pos = 0; pos < w.size();) {
    const size_t begin = pos;
    pos += uni::sequence_length(w, pos);
    const bool first = begin == 0;
    const bool last = pos >= w.size();
    std::string_view s = w.substr(begin, pos - begin);
    const size_t byte_len = s.size();
    if ((!first && prefix_) || (last && suffix_)) {
      buffer.clear();
      if (!first && prefix_) buffer += *prefix_;
      buffer += s;
      if (last && suffix_) buffer += *suffix_;
      s = buffer;
    }
    if (auto it = vocab_.find(s); it != vocab_.end()) {
      if (unk_pending >= 0) {
        add(unk_pending, unk_len);
        unk_pending = -1;
      }
      add(it->second, byte_len);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char b : s) all = all && byte_ids_[b] >= 0;
      if (all) {
        for (unsigned char b : s) add(byte_ids_[b], 1);
        continue;
      }
    }
    if (unk_token_) {
      if (unk_pending >= 0 && fuse_unk_) {
        unk_len += byte_len;
      } else {
        if (unk_pending >= 0) add(unk_pending, unk_len);
        unk_pending = unk_id_;
        unk_len = byte_len;
      }
    }
    // Without an unk token HF drops the character.
  }
  if (unk_pending >= 0) add(unk_pending, unk_len);
  if (!symbols.empty()) symbols.back().next = -1;

  struct Merge {
    int32_t pos;
    int32_t rank;
    int32_t new_id;
    bool operator<(const Merge& o) const {  // priority_queue pops the lowest rank, then position
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Merge> queue;
  auto lookup = [this](int32_t a, int32_t b) -> const std::pair<int32_t, int32_t>* {
    auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (auto m = lookup(symbols[i].id, symbols[i + 1].id))
      queue.push({static_cast<int32_t>(i), m->first, m->second});
  }
  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& cur = symbols[top.pos];
    if (cur.len == 0 || cur.next == -1) continue;
    const int32_t next_pos = cur.next;
    const Symbol right = symbols[next_pos];
    const auto* target = lookup(cur.id, right.id);
    if (target == nullptr || target->second != top.new_id) continue;  // stale entry
    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    symbols[next_pos].len = 0;
    if (right.next >= 0 && static_cast<size_t>(right.next) < symbols.size())
      symbols[right.next].prev = top.pos;
    if (cur.prev >= 0) {
      if (auto m = lookup(symbols[cur.prev].id, cur.id))
        queue.push({cur.prev, m->first, m->second});
    }
    if (cur.next >= 0 && static_cast<size_t>(cur.next) < symbols.size()) {
      if (auto m = lookup(cur.id, symbols[cur.next].id)) queue.push({top.pos, m->first, m->second});
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(symbols.size());
  for (const Symbol& s : symbols) {
    if (s.len != 0) ids.push_back(s.id);
  }
  return ids;
}

void BpeModel::tokenize(std::string_view word, Ids& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids = merge_word(word);
  out.insert(out.end(), ids.begin(), ids.end());
  if (word.size() < kCacheMaxLength) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(word), std::move(ids));
  }
}

// ---------------------------------------------------------------------------------------------
// Post-processors: they turn the list of encodings (one, or two for a pair) into one.

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void process(std::vector<Ids>& encodings, bool add_special_tokens) const = 0;
  // Special ids placed before / after sequence A of a single sequence (for bos/eos defaults).
  virtual void single_specials(Ids& before, Ids& after) const = 0;
};

class TemplatePostProcessor final : public PostProcessor {
 public:
  struct Item {
    bool special;
    int sequence;  // 0 = A, 1 = B
    Ids ids;
  };
  TemplatePostProcessor(std::vector<Item> single, std::vector<Item> pair)
      : single_(std::move(single)), pair_(std::move(pair)) {}
  void process(std::vector<Ids>& encodings, bool add_special_tokens) const override {
    const auto& items = encodings.size() >= 2 ? pair_ : single_;
    Ids out;
    for (const Item& item : items) {
      if (item.special) {
        if (add_special_tokens) out.insert(out.end(), item.ids.begin(), item.ids.end());
      } else if (static_cast<size_t>(item.sequence) < encodings.size()) {
        const Ids& e = encodings[item.sequence];
        out.insert(out.end(), e.begin(), e.end());
      }
    }
    encodings = {std::move(out)};
  }
  void single_specials(Ids& before, Ids& after) const override {
    bool seen_a = false;
    for (const Item& item : single_) {
      if (!item.special)
        seen_a = true;
      else
        (seen_a ? after : before)
            .insert((seen_a ? after : before).end(), item.ids.begin(), item.ids.end());
    }
  }

 private:
  std::vector<Item> single_, pair_;
};

class BertPostProcessor final : public PostProcessor {
 public:
  BertPostProcessor(int64_t cls, int64_t sep, bool roberta)
      : cls_(cls), sep_(sep), roberta_(roberta) {}
  void process(std::vector<Ids>& encodings, bool add_special_tokens) const override {
    Ids out;
    if (add_special_tokens) out.push_back(cls_);
    out.insert(out.end(), encodings[0].begin(), encodings[0].end());
    if (add_special_tokens) out.push_back(sep_);
    if (encodings.size() >= 2) {
      if (add_special_tokens && roberta_) out.push_back(sep_);
      out.insert(out.end(), encodings[1].begin(), encodings[1].end());
      if (add_special_tokens) out.push_back(sep_);
    }
    encodings = {std::move(out)};
  }
  void single_specials(Ids& before, Ids& after) const override {
    before.push_back(cls_);
    after.push_back(sep_);
  }

 private:
  int64_t cls_, sep_;
  bool roberta_;
};

class IdentityPostProcessor final : public PostProcessor {  // ByteLevel: offsets only
 public:
  void process(std::vector<Ids>&, bool) const override {}
  void single_specials(Ids&, Ids&) const override {}
};

class SequencePostProcessor final : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> steps)
      : steps_(std::move(steps)) {}
  void process(std::vector<Ids>& encodings, bool add_special_tokens) const override {
    for (const auto& step : steps_) step->process(encodings, add_special_tokens);
  }
  void single_specials(Ids& before, Ids& after) const override {
    for (const auto& step : steps_) step->single_specials(before, after);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

// ---------------------------------------------------------------------------------------------
// Decoders, as incremental steps. Before a fusing step (Fuse, ByteLevel) items are whole tokens;
// after it they are consecutive fragments of one string. decode() runs the same steps, so
// streamed output equals decode() by construction.

class DecoderState {
 public:
  virtual ~DecoderState() = default;
  virtual void push(std::string item, std::vector<std::string>& out) = 0;
  virtual void finish(std::vector<std::string>& out) = 0;
};

class DecoderSpec {
 public:
  virtual ~DecoderSpec() = default;
  virtual std::unique_ptr<DecoderState> start(bool fragments) const = 0;
  virtual bool fuses() const { return false; }
  virtual bool needs_whole_tokens() const { return false; }
  // The token alone, for token_bytes().
  virtual void isolated(std::string& token) const = 0;
};

class ReplaceDecoder final : public DecoderSpec {
 public:
  ReplaceDecoder(std::string pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::unique_ptr<DecoderState> start(bool fragments) const override {
    return std::make_unique<State>(*this, fragments);
  }
  void isolated(std::string& token) const override {
    token = replace_all(token, LiteralMatcher(pattern_), content_);
  }

 private:
  class State final : public DecoderState {
   public:
    State(const ReplaceDecoder& spec, bool fragments)
        : spec_(spec), matcher_(spec.pattern_), fragments_(fragments) {}
    void push(std::string item, std::vector<std::string>& out) override {
      if (!fragments_) {
        out.push_back(replace_all(item, matcher_, spec_.content_));
        return;
      }
      held_ += item;
      // Hold back a tail that could be the start of the pattern.
      size_t keep = 0;
      for (size_t k = std::min(held_.size(), spec_.pattern_.size() - 1); k > 0; --k) {
        if (held_.compare(held_.size() - k, k, spec_.pattern_, 0, k) == 0) {
          keep = k;
          break;
        }
      }
      std::string ready = replace_all(std::string_view(held_).substr(0, held_.size() - keep),
                                      matcher_, spec_.content_);
      held_.erase(0, held_.size() - keep);
      if (!ready.empty()) out.push_back(std::move(ready));
    }
    void finish(std::vector<std::string>& out) override {
      if (!held_.empty()) out.push_back(replace_all(held_, matcher_, spec_.content_));
      held_.clear();
    }

   private:
    const ReplaceDecoder& spec_;
    LiteralMatcher matcher_;
    bool fragments_;
    std::string held_;
  };
  std::string pattern_, content_;
};

std::optional<uint8_t> byte_token(std::string_view token) {
  if (token.size() != 6 || token.substr(0, 3) != "<0x" || token[5] != '>') return std::nullopt;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  const int hi = hex(token[3]), lo = hex(token[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<uint8_t>(hi * 16 + lo);
}

class ByteFallbackDecoder final : public DecoderSpec {
 public:
  std::unique_ptr<DecoderState> start(bool) const override { return std::make_unique<State>(); }
  bool needs_whole_tokens() const override { return true; }
  void isolated(std::string& token) const override {
    if (auto b = byte_token(token)) token = std::string(1, static_cast<char>(*b));
  }

 private:
  class State final : public DecoderState {
   public:
    void push(std::string item, std::vector<std::string>& out) override {
      if (auto b = byte_token(item)) {
        bytes_.push_back(static_cast<char>(*b));
        return;
      }
      flush(out);
      out.push_back(std::move(item));
    }
    void finish(std::vector<std::string>& out) override { flush(out); }

   private:
    // A run of byte tokens becomes its UTF-8 text, or one U+FFFD per byte when invalid.
    void flush(std::vector<std::string>& out) {
      if (bytes_.empty()) return;
      if (uni::is_valid(bytes_)) {
        out.push_back(bytes_);
      } else {
        for (size_t i = 0; i < bytes_.size(); ++i) out.push_back(uni::encode(uni::kReplacement));
      }
      bytes_.clear();
    }
    std::string bytes_;
  };
};

class FuseDecoder final : public DecoderSpec {
 public:
  std::unique_ptr<DecoderState> start(bool) const override { return std::make_unique<State>(); }
  bool fuses() const override { return true; }
  void isolated(std::string&) const override {}

 private:
  class State final : public DecoderState {
   public:
    void push(std::string item, std::vector<std::string>& out) override {
      if (!item.empty()) out.push_back(std::move(item));
    }
    void finish(std::vector<std::string>&) override {}
  };
};

class StripDecoder final : public DecoderSpec {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  std::unique_ptr<DecoderState> start(bool fragments) const override {
    return std::make_unique<State>(*this, fragments);
  }
  void isolated(std::string&) const override {}  // depends on the token's position

 private:
  std::string strip_token(const std::string& token) const {
    std::vector<std::pair<size_t, char32_t>> chars;
    for (size_t pos = 0; pos < token.size();) {
      const size_t b = pos;
      chars.emplace_back(b, uni::next(token, pos));
    }
    size_t start_cut = 0;
    for (size_t i = 0; i < chars.size() && i < start_; ++i) {
      if (chars[i].second != content_) break;
      start_cut = i + 1;
    }
    size_t stop_cut = chars.size();
    for (size_t i = 0; i < stop_ && i < chars.size(); ++i) {
      const size_t index = chars.size() - i - 1;
      if (chars[index].second != content_) break;
      stop_cut = index;
    }
    stop_cut = std::max(stop_cut, start_cut);
    const size_t b = start_cut < chars.size() ? chars[start_cut].first : token.size();
    const size_t e = stop_cut < chars.size() ? chars[stop_cut].first : token.size();
    return token.substr(b, e - b);
  }

  class State final : public DecoderState {
   public:
    State(const StripDecoder& spec, bool fragments) : spec_(spec), fragments_(fragments) {}
    void push(std::string item, std::vector<std::string>& out) override {
      if (!fragments_) {
        out.push_back(spec_.strip_token(item));
        return;
      }
      std::string ready;
      for (size_t pos = 0; pos < item.size();) {
        const size_t b = pos;
        const char32_t cp = uni::next(item, pos);
        const std::string_view ch(item.data() + b, pos - b);
        if (leading_ && cp == spec_.content_ && stripped_ < spec_.start_) {
          ++stripped_;
          continue;
        }
        leading_ = false;
        if (cp == spec_.content_ && spec_.stop_ > 0) {
          held_.append(ch);
          if (++held_count_ > spec_.stop_) {  // the oldest held character can no longer be trailing
            const size_t len = uni::sequence_length(held_, 0);
            ready.append(held_, 0, len);
            held_.erase(0, len);
            --held_count_;
          }
          continue;
        }
        ready += held_;
        held_.clear();
        held_count_ = 0;
        ready.append(ch);
      }
      if (!ready.empty()) out.push_back(std::move(ready));
    }
    void finish(std::vector<std::string>&) override {
      held_.clear();  // trailing content characters, at most `stop` of them
      held_count_ = 0;
    }

   private:
    const StripDecoder& spec_;
    bool fragments_;
    bool leading_ = true;
    size_t stripped_ = 0;
    std::string held_;
    size_t held_count_ = 0;
  };
  char32_t content_;
  size_t start_, stop_;
};

class MetaspaceDecoder final : public DecoderSpec {
 public:
  MetaspaceDecoder(char32_t replacement, PrependScheme scheme)
      : replacement_(replacement), scheme_(scheme) {}
  std::unique_ptr<DecoderState> start(bool fragments) const override {
    return std::make_unique<State>(*this, fragments);
  }
  void isolated(std::string& token) const override { token = map(token, false); }

 private:
  // HF drops every replacement character of the first token (unless the scheme is "never").
  std::string map(const std::string& token, bool first) const {
    std::string out;
    out.reserve(token.size());
    for (size_t pos = 0; pos < token.size();) {
      const size_t b = pos;
      const char32_t cp = uni::next(token, pos);
      if (cp == replacement_) {
        if (!(first && scheme_ != PrependScheme::never)) out.push_back(' ');
      } else {
        out.append(token, b, pos - b);
      }
    }
    return out;
  }
  class State final : public DecoderState {
   public:
    State(const MetaspaceDecoder& spec, bool fragments) : spec_(spec), fragments_(fragments) {}
    void push(std::string item, std::vector<std::string>& out) override {
      out.push_back(spec_.map(item, fragments_ || index_ == 0));
      ++index_;
    }
    void finish(std::vector<std::string>&) override {}

   private:
    const MetaspaceDecoder& spec_;
    bool fragments_;
    size_t index_ = 0;
  };
  char32_t replacement_;
  PrependScheme scheme_;
};

class ByteLevelDecoder final : public DecoderSpec {
 public:
  std::unique_ptr<DecoderState> start(bool) const override { return std::make_unique<State>(); }
  bool fuses() const override { return true; }
  bool needs_whole_tokens() const override { return true; }
  void isolated(std::string& token) const override {
    std::string bytes;
    byte_level().append_bytes(token, bytes);
    token = std::move(bytes);
  }

 private:
  class State final : public DecoderState {
   public:
    void push(std::string item, std::vector<std::string>& out) override {
      byte_level().append_bytes(item, bytes_);
      // Emit all but an unfinished UTF-8 sequence at the end (from_utf8_lossy is prefix-stable).
      const size_t stable = uni::stable_prefix(bytes_);
      if (stable > 0) {
        out.push_back(uni::decode_lossy(std::string_view(bytes_).substr(0, stable)));
        bytes_.erase(0, stable);
      }
    }
    void finish(std::vector<std::string>& out) override {
      if (!bytes_.empty()) out.push_back(uni::decode_lossy(bytes_));
      bytes_.clear();
    }

   private:
    std::string bytes_;
  };
};

// No decoder: HF joins the tokens with spaces.
class JoinDecoder final : public DecoderSpec {
 public:
  std::unique_ptr<DecoderState> start(bool) const override { return std::make_unique<State>(); }
  void isolated(std::string&) const override {}

 private:
  class State final : public DecoderState {
   public:
    void push(std::string item, std::vector<std::string>& out) override {
      if (!first_) out.emplace_back(" ");
      first_ = false;
      out.push_back(std::move(item));
    }
    void finish(std::vector<std::string>&) override {}

   private:
    bool first_ = true;
  };
};

void make_decoders(const Source& src, const json& cfg, const std::string& path,
                   std::vector<std::unique_ptr<DecoderSpec>>& out) {
  if (!cfg.is_object()) src.fail(path, "an object or null", json_util::type_name(cfg));
  const std::string type = src.string(cfg, path, "type");
  if (type == "Sequence") {
    const json& list = src.array(cfg, path, "decoders");
    for (size_t i = 0; i < list.size(); ++i)
      make_decoders(src, list[i], Source::index(path + ".decoders", i), out);
    return;
  }
  if (type == "ByteLevel") {
    out.push_back(std::make_unique<ByteLevelDecoder>());
  } else if (type == "Metaspace") {
    out.push_back(std::make_unique<MetaspaceDecoder>(src.character(cfg, path, "replacement"),
                                                     parse_prepend_scheme(src, cfg, path)));
  } else if (type == "ByteFallback") {
    out.push_back(std::make_unique<ByteFallbackDecoder>());
  } else if (type == "Fuse") {
    out.push_back(std::make_unique<FuseDecoder>());
  } else if (type == "Strip") {
    const int64_t start = src.integer(cfg, path, "start", 0);
    const int64_t stop = src.integer(cfg, path, "stop", 0);
    if (start < 0) src.fail(path + ".start", "a non-negative integer", std::to_string(start));
    if (stop < 0) src.fail(path + ".stop", "a non-negative integer", std::to_string(stop));
    out.push_back(std::make_unique<StripDecoder>(src.character(cfg, path, "content"),
                                                 static_cast<size_t>(start),
                                                 static_cast<size_t>(stop)));
  } else if (type == "Replace") {
    const json& pattern = src.object(cfg, path, "pattern");
    const auto literal = src.optional_string(pattern, path + ".pattern", "String");
    if (!literal || literal->empty()) {
      src.fail(path + ".pattern", "a non-empty {\"String\": ...} pattern", pattern.dump(),
               "regex patterns in decoders are not supported");
    }
    out.push_back(std::make_unique<ReplaceDecoder>(*literal, src.string(cfg, path, "content")));
  } else {
    src.unsupported(Source::join(path, "type"), "decoder", type);
  }
}

// ---------------------------------------------------------------------------------------------
// Added tokens: leftmost-longest matching on a byte trie.

struct AddedTokenInfo {
  int64_t id = 0;
  std::string content;
  std::string pattern;  // content, or its normalized form for normalized tokens
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

class AddedTrie {
 public:
  void add(std::string_view pattern, int32_t token) {
    if (pattern.empty()) return;
    if (nodes_.empty()) nodes_.emplace_back();
    size_t node = 0;
    for (unsigned char b : pattern) {
      auto& children = nodes_[node].children;
      auto it = std::find_if(children.begin(), children.end(),
                             [b](const auto& c) { return c.first == b; });
      if (it == children.end()) {
        nodes_.emplace_back();
        nodes_[node].children.emplace_back(b, static_cast<int32_t>(nodes_.size() - 1));
        node = nodes_.size() - 1;
      } else {
        node = it->second;
      }
    }
    nodes_[node].token = token;
    first_bytes_[static_cast<unsigned char>(pattern[0])] = true;
  }
  bool empty() const { return nodes_.empty(); }
  // Leftmost-longest match at or after `from`: (start, end, token index).
  bool find(std::string_view s, size_t from, size_t& start, size_t& end, int32_t& token) const {
    if (nodes_.empty()) return false;
    for (size_t i = from; i < s.size(); ++i) {
      if (!first_bytes_[static_cast<unsigned char>(s[i])]) continue;
      size_t node = 0;
      int32_t best = -1;
      size_t best_end = 0;
      for (size_t j = i; j < s.size(); ++j) {
        const auto& children = nodes_[node].children;
        const auto b = static_cast<unsigned char>(s[j]);
        auto it = std::find_if(children.begin(), children.end(),
                               [b](const auto& c) { return c.first == b; });
        if (it == children.end()) break;
        node = it->second;
        if (nodes_[node].token >= 0) {
          best = nodes_[node].token;
          best_end = j + 1;
        }
      }
      if (best >= 0) {
        start = i;
        end = best_end;
        token = best;
        return true;
      }
    }
    return false;
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    int32_t token = -1;
  };
  std::vector<Node> nodes_;
  std::array<bool, 256> first_bytes_{};
};

bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t begin = s.size() - 1;
  while (begin > 0 && (static_cast<unsigned char>(s[begin]) & 0xC0) == 0x80) --begin;
  size_t pos = begin;
  return uni::is_word(uni::next(s, pos));
}

bool starts_with_word(std::string_view s) {
  size_t pos = 0;
  return !s.empty() && uni::is_word(uni::next(s, pos));
}

std::string sanitize(std::string_view text) {
  return uni::is_valid(text) ? std::string(text) : uni::decode_lossy(text);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct HfTokenizer::Impl {
  std::string file;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<PostProcessor> post_processor;
  std::vector<std::unique_ptr<DecoderSpec>> decoders;  // flattened; JoinDecoder when none

  std::vector<AddedTokenInfo> added;
  std::unordered_map<int64_t, size_t> added_by_id;
  StringMap<size_t> added_by_content;
  AddedTrie raw_trie;         // tokens with normalized == false, matched on the input
  AddedTrie normalized_trie;  // tokens with normalized == true, matched after normalization

  int64_t size = 0;
  std::optional<int64_t> bos, eos, pad, unk;
  bool add_bos = false;
  bool add_eos = false;

  // Text after added tokens are split off: normalizer (when `normalize`), pre-tokenizer, model.
  void encode_text(std::string text, bool at_origin, bool normalize, Ids& out) const {
    if (normalize && normalizer) normalizer->normalize(text);
    if (text.empty()) return;
    std::vector<Piece> pieces;
    pieces.push_back({std::move(text), at_origin});
    if (pre_tokenizer) pre_tokenizer->pre_tokenize(pieces);
    for (const Piece& p : pieces) model->tokenize(p.text, out);
  }

  struct Section {
    size_t begin, end;
    int32_t token;  // index into `added`, or -1 for text
  };

  // AddedVocabulary::find_matches.
  std::vector<Section> find_added(std::string_view s, const AddedTrie& trie) const {
    std::vector<Section> out;
    size_t start_offset = 0;
    size_t from = 0, start = 0, stop = 0;
    int32_t token = -1;
    while (from < s.size() && trie.find(s, from, start, stop, token)) {
      from = stop;
      const AddedTokenInfo& t = added[token];
      if (t.single_word) {
        const bool start_space = start == 0 || !ends_with_word(s.substr(0, start));
        const bool stop_space = stop == s.size() || !starts_with_word(s.substr(stop));
        if (!start_space || !stop_space) continue;
      }
      if (t.lstrip) {
        const size_t stripped = strip_view(s.substr(0, start), false, true).size();
        start = std::max(stripped, start_offset);
      }
      if (t.rstrip) {
        const std::string_view rest = s.substr(stop);
        stop += rest.size() - strip_view(rest, true, false).size();
      }
      if (start_offset < start) out.push_back({start_offset, start, -1});
      out.push_back({start, stop, token});
      start_offset = stop;
      from = stop;
    }
    if (start_offset < s.size()) out.push_back({start_offset, s.size(), -1});
    return out;
  }

  Ids encode_template(std::string_view input) const {
    const std::string text = sanitize(input);
    Ids out;
    out.reserve(text.size() / 3 + 4);
    for (const Section& sec : find_added(text, raw_trie)) {
      if (sec.token >= 0) {
        out.push_back(added[sec.token].id);
        continue;
      }
      std::string part = text.substr(sec.begin, sec.end - sec.begin);
      if (normalizer) normalizer->normalize(part);
      for (const Section& sub : find_added(part, normalized_trie)) {
        if (sub.token >= 0) {
          out.push_back(added[sub.token].id);
        } else {
          encode_text(part.substr(sub.begin, sub.end - sub.begin), sec.begin == 0 && sub.begin == 0,
                      false, out);
        }
      }
    }
    return out;
  }

  Ids encode_user(std::string_view input) const {
    Ids out;
    encode_text(sanitize(input), true, true, out);
    return out;
  }

  Ids post_process(std::vector<Ids> encodings, bool add_special_tokens) const {
    if (post_processor) post_processor->process(encodings, add_special_tokens);
    Ids out;
    for (const Ids& e : encodings) out.insert(out.end(), e.begin(), e.end());
    return out;
  }

  const std::string* token_string(int64_t id) const {
    if (auto it = added_by_id.find(id); it != added_by_id.end()) return &added[it->second].pattern;
    return model->token(id);
  }

  const std::string& checked_token(int64_t id) const {
    const std::string* t = token_string(id);
    if (t == nullptr) {
      throw InputError(describe(file + ": token id " + std::to_string(id),
                                "an id of this tokenizer (0 .. " + std::to_string(size - 1) + ")",
                                "an id it does not have"));
    }
    return *t;
  }

  bool special(int64_t id) const {
    auto it = added_by_id.find(id);
    return it != added_by_id.end() && added[it->second].special;
  }
};

namespace {

class HfDecodeStream final : public DecodeStream {
 public:
  HfDecodeStream(const HfTokenizer::Impl& impl, bool skip_special_tokens)
      : impl_(impl), skip_special_(skip_special_tokens) {
    bool fragments = false;
    for (const auto& spec : impl.decoders) {
      states_.push_back(spec->start(fragments));
      fragments = fragments || spec->fuses();
    }
  }
  void push(int64_t id, std::string& out) override {
    const std::string& token = impl_.checked_token(id);
    if (skip_special_ && impl_.special(id)) return;
    run(0, {token}, out);
  }
  void finish(std::string& out) override {
    for (size_t i = 0; i < states_.size(); ++i) {
      std::vector<std::string> items;
      states_[i]->finish(items);
      run(i + 1, std::move(items), out);
    }
  }

 private:
  void run(size_t first, std::vector<std::string> items, std::string& out) {
    for (size_t i = first; i < states_.size() && !items.empty(); ++i) {
      std::vector<std::string> next;
      for (std::string& item : items) states_[i]->push(std::move(item), next);
      items = std::move(next);
    }
    for (const std::string& item : items) out += item;
  }

  const HfTokenizer::Impl& impl_;
  bool skip_special_;
  std::vector<std::unique_ptr<DecoderState>> states_;
};

std::optional<std::string> config_token(const Source& src, const json& cfg, const char* key) {
  const json* v = src.find(cfg, key);
  if (v == nullptr) return std::nullopt;
  if (v->is_string()) return v->get<std::string>();
  if (v->is_object()) return src.string(*v, key, "content");
  src.fail(key, "a token string or an AddedToken object", json_util::type_name(*v));
}

json parse_text(const std::string& text, const std::string& file) { return json_util::parse(text, file); }

std::unique_ptr<PostProcessor> make_post_processor(
    const Source& src, const json& cfg, const std::string& path,
    const std::function<std::optional<int64_t>(const std::string&)>& lookup) {
  if (!cfg.is_object()) src.fail(path, "an object or null", json_util::type_name(cfg));
  const std::string type = src.string(cfg, path, "type");
  if (type == "ByteLevel") return std::make_unique<IdentityPostProcessor>();
  if (type == "Sequence") {
    const json& list = src.array(cfg, path, "processors");
    std::vector<std::unique_ptr<PostProcessor>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      steps.push_back(
          make_post_processor(src, list[i], Source::index(path + ".processors", i), lookup));
    }
    return std::make_unique<SequencePostProcessor>(std::move(steps));
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    auto pair_id = [&](const char* key) {
      const json& v = src.array(cfg, path, key);
      if (v.size() != 2 || !v[0].is_string() || !v[1].is_number_integer()) {
        src.fail(Source::join(path, key), "[token, id]", v.dump());
      }
      return v[1].get<int64_t>();
    };
    return std::make_unique<BertPostProcessor>(pair_id("cls"), pair_id("sep"),
                                               type == "RobertaProcessing");
  }
  if (type == "TemplateProcessing") {
    StringMap<Ids> specials;
    if (const json* map = src.find(cfg, "special_tokens")) {
      if (!map->is_object())
        src.fail(path + ".special_tokens", "an object", json_util::type_name(*map));
      for (auto it = map->begin(); it != map->end(); ++it) {
        const std::string key = path + ".special_tokens[\"" + it.key() + "\"]";
        const json& ids = src.array(*it, key, "ids");
        Ids list;
        for (const json& id : ids) {
          if (!id.is_number_integer()) src.fail(key + ".ids", "a list of integer ids", ids.dump());
          list.push_back(id.get<int64_t>());
        }
        specials[it.key()] = std::move(list);
      }
    }
    auto parse = [&](const char* key) {
      std::vector<TemplatePostProcessor::Item> items;
      const json& list = src.array(cfg, path, key);
      for (size_t i = 0; i < list.size(); ++i) {
        const std::string ipath = Source::index(Source::join(path, key), i);
        const json& item = list[i];
        if (const json* s = src.find(item, "SpecialToken")) {
          const std::string name = src.string(*s, ipath + ".SpecialToken", "id");
          auto it = specials.find(name);
          Ids ids;
          if (it != specials.end()) {
            ids = it->second;
          } else if (auto id = lookup(name)) {
            ids = {*id};
          } else {
            src.fail(ipath + ".SpecialToken.id", "a token listed in special_tokens",
                     "\"" + name + "\"");
          }
          items.push_back({true, 0, std::move(ids)});
        } else if (const json* q = src.find(item, "Sequence")) {
          const std::string which = src.string(*q, ipath + ".Sequence", "id");
          if (which != "A" && which != "B")
            src.fail(ipath + ".Sequence.id", "\"A\" or \"B\"", "\"" + which + "\"");
          items.push_back({false, which == "A" ? 0 : 1, {}});
        } else {
          src.fail(ipath, "{\"SpecialToken\": ...} or {\"Sequence\": ...}", item.dump());
        }
      }
      return items;
    };
    auto single = parse("single");
    auto pair = src.find(cfg, "pair") ? parse("pair") : single;
    return std::make_unique<TemplatePostProcessor>(std::move(single), std::move(pair));
  }
  src.unsupported(Source::join(path, "type"), "post-processor", type);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

HfTokenizer::HfTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HfTokenizer::~HfTokenizer() = default;

std::unique_ptr<HfTokenizer> HfTokenizer::load(const std::filesystem::path& tokenizer_json,
                                               const std::filesystem::path& tokenizer_config_json) {
  auto read = [](const std::filesystem::path& file) {
    if (!std::filesystem::exists(file)) {
      throw InputError(describe(file.string(), "a readable tokenizer file", "no such file"));
    }
    return read_file_limited(file, json_util::kMaxJsonFileBytes, "a tokenizer file");
  };
  const std::string text = read(tokenizer_json);
  std::error_code ec;
  if (!tokenizer_config_json.empty() && std::filesystem::exists(tokenizer_config_json, ec)) {
    const std::string config = read(tokenizer_config_json);
    return from_json(text, &config, tokenizer_json.string(), tokenizer_config_json.string());
  }
  return from_json(text, nullptr, tokenizer_json.string());
}

std::unique_ptr<HfTokenizer> HfTokenizer::from_json(const std::string& tokenizer_json_text,
                                                    const std::string* tokenizer_config_json_text,
                                                    const std::string& file,
                                                    const std::string& config_file) {
  const Source src(file);
  const json root = parse_text(tokenizer_json_text, file);
  if (!root.is_object())
    throw InputError(describe(file, "a JSON object", json_util::type_name(root)));
  auto impl = std::make_unique<Impl>();
  impl->file = file;

  // Added tokens first: their count bounds the ids the vocabulary may use (the vocabulary is
  // stored densely by id, so ids far beyond its size are refused).
  std::vector<AddedTokenInfo> added;
  if (const json* list = src.find(root, "added_tokens")) {
    if (!list->is_array()) src.fail("added_tokens", "a list", json_util::type_name(*list));
    for (size_t i = 0; i < list->size(); ++i) {
      const std::string path = Source::index("added_tokens", i);
      const json& t = (*list)[i];
      if (!t.is_object()) src.fail(path, "an object", json_util::type_name(t));
      AddedTokenInfo info;
      info.id = src.integer(t, path, "id");
      info.content = src.string(t, path, "content");
      info.single_word = src.boolean(t, path, "single_word", false);
      info.lstrip = src.boolean(t, path, "lstrip", false);
      info.rstrip = src.boolean(t, path, "rstrip", false);
      info.special = src.boolean(t, path, "special", false);
      info.normalized = src.boolean(t, path, "normalized", !info.special);
      if (info.content.empty()) continue;  // HF ignores empty added tokens
      added.push_back(std::move(info));
    }
  }

  const json& model_cfg = src.object(root, "", "model");
  const std::string model_type = src.string(model_cfg, "model", "type", "BPE");
  if (model_type != "BPE") src.unsupported("model.type", "model", model_type);
  const json* vocab = src.find(model_cfg, "vocab");
  const int64_t id_limit = static_cast<int64_t>(
      (vocab != nullptr && vocab->is_object() ? vocab->size() : 0) + added.size());
  impl->model = std::make_unique<BpeModel>(src, model_cfg, id_limit);

  if (const json* n = src.find(root, "normalizer"))
    impl->normalizer = make_normalizer(src, *n, "normalizer");
  if (const json* p = src.find(root, "pre_tokenizer"))
    impl->pre_tokenizer = make_pre_tokenizer(src, *p, "pre_tokenizer");

  // Added tokens: ids must agree with the vocabulary and with each other.
  // HF ignores the listed ids: a token of model.vocab keeps its id, the others are numbered
  // consecutively after the vocabulary. A file whose ids disagree would encode differently than
  // it says, so it is refused.
  StringMap<int64_t> all_strings;
  for (const auto& [token, id] : impl->model->vocab()) all_strings.emplace(token, id);
  int64_t next_id = static_cast<int64_t>(impl->model->vocab().size());
  std::vector<AddedTokenInfo> unique;
  for (size_t i = 0; i < added.size(); ++i) {
    AddedTokenInfo& t = added[i];
    const std::string path = Source::index("added_tokens", i);
    int64_t hf_id = 0;
    if (auto it = impl->added_by_content.find(t.content); it != impl->added_by_content.end()) {
      hf_id = unique[it->second].id;  // listed twice: the later flags win
    } else if (auto in_vocab = impl->model->find(t.content)) {
      hf_id = *in_vocab;
    } else {
      hf_id = next_id++;
    }
    if (t.id != hf_id) {
      src.fail(path + ".id", std::to_string(hf_id) + " (the id HF gives \"" + t.content + "\")",
               std::to_string(t.id),
               "HF keeps model.vocab ids and numbers other added tokens consecutively after the "
               "vocabulary");
    }
    if (auto it = impl->added_by_content.find(t.content); it != impl->added_by_content.end()) {
      unique[it->second] = t;
      continue;
    }
    impl->added_by_content[t.content] = unique.size();
    impl->added_by_id[t.id] = unique.size();
    unique.push_back(t);
    all_strings.emplace(t.content, t.id);
  }
  added = std::move(unique);
  for (AddedTokenInfo& t : added) {
    t.pattern = t.content;
    if (t.normalized && impl->normalizer) impl->normalizer->normalize(t.pattern);
  }
  for (size_t i = 0; i < added.size(); ++i) {
    (added[i].normalized ? impl->normalized_trie : impl->raw_trie)
        .add(added[i].pattern, static_cast<int32_t>(i));
  }
  impl->added = std::move(added);
  impl->size = static_cast<int64_t>(all_strings.size());

  auto lookup = [&impl](const std::string& token) -> std::optional<int64_t> {
    if (auto it = impl->added_by_content.find(token); it != impl->added_by_content.end())
      return impl->added[it->second].id;
    return impl->model->find(token);
  };
  if (const json* p = src.find(root, "post_processor")) {
    impl->post_processor = make_post_processor(src, *p, "post_processor", lookup);
  }
  if (const json* d = src.find(root, "decoder")) {
    make_decoders(src, *d, "decoder", impl->decoders);
    bool fused = false;
    for (const auto& spec : impl->decoders) {
      if (fused && spec->needs_whole_tokens()) {
        src.fail("decoder", "ByteFallback and ByteLevel before any Fuse or ByteLevel step",
                 "a decoder sequence that applies them to fused text");
      }
      fused = fused || spec->fuses();
    }
  } else {
    impl->decoders.push_back(std::make_unique<JoinDecoder>());
  }
  for (const char* key : {"truncation", "padding"}) {
    if (src.find(root, key) != nullptr) {
      log::get("text")->info("{}: '{}' is set; icet leaves truncation and padding to the caller",
                             file, key);
    }
  }

  // Special tokens and BOS/EOS: tokenizer_config.json first, then the post-processor and model.
  Ids before, after;
  if (impl->post_processor) impl->post_processor->single_specials(before, after);
  impl->add_bos = !before.empty();
  impl->add_eos = !after.empty();
  if (!before.empty()) impl->bos = before.front();
  if (!after.empty()) impl->eos = after.back();
  if (impl->model->unk_token()) impl->unk = impl->model->find(*impl->model->unk_token());
  if (tokenizer_config_json_text != nullptr) {
    const Source csrc(config_file);
    const json config = parse_text(*tokenizer_config_json_text, config_file);
    if (!config.is_object())
      throw InputError(describe(config_file, "a JSON object", json_util::type_name(config)));
    impl->add_bos = csrc.boolean(config, "", "add_bos_token", impl->add_bos);
    impl->add_eos = csrc.boolean(config, "", "add_eos_token", impl->add_eos);
    auto resolve = [&](const char* key, std::optional<int64_t>& slot) {
      if (auto name = config_token(csrc, config, key)) {
        auto id = lookup(*name);
        if (!id) csrc.fail(key, "a token of " + file, "\"" + *name + "\"");
        slot = id;
      }
    };
    resolve("bos_token", impl->bos);
    resolve("eos_token", impl->eos);
    resolve("pad_token", impl->pad);
    resolve("unk_token", impl->unk);
  }
  log::get("text")->debug("{}: BPE tokenizer with {} tokens ({} added)", file, impl->size,
                          impl->added.size());
  return std::unique_ptr<HfTokenizer>(new HfTokenizer(std::move(impl)));
}

std::vector<int64_t> HfTokenizer::encode_template(std::string_view text) const {
  return impl_->encode_template(text);
}

std::vector<int64_t> HfTokenizer::encode_user(std::string_view text) const {
  return impl_->encode_user(text);
}

std::vector<int64_t> HfTokenizer::encode_segments(const std::vector<Segment>& segments) const {
  // Adjacent text segments form one section, as in the joined string; a special segment's
  // lstrip/rstrip takes the whitespace next to it, as HF's added-token matching does.
  struct Part {
    std::string text;
    int64_t id = -1;
    const AddedTokenInfo* token = nullptr;
  };
  std::vector<Part> parts;
  for (const Segment& seg : segments) {
    if (!seg.special) {
      if (parts.empty() || parts.back().id >= 0) parts.emplace_back();
      parts.back().text += sanitize(seg.text);
      continue;
    }
    Part p;
    if (auto it = impl_->added_by_content.find(seg.text); it != impl_->added_by_content.end()) {
      p.token = &impl_->added[it->second];
      p.id = p.token->id;
    } else if (auto id = impl_->model->find(seg.text)) {
      p.id = *id;
    } else {
      throw InputError(describe(impl_->file + ": special segment \"" + seg.text + "\"",
                                "an added token or vocabulary entry of this tokenizer",
                                "no such token",
                                "check the chat template's special tokens against tokenizer.json"));
    }
    parts.push_back(std::move(p));
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i].token == nullptr) continue;
    if (parts[i].token->lstrip && i > 0 && parts[i - 1].id < 0) {
      parts[i - 1].text = std::string(strip_view(parts[i - 1].text, false, true));
    }
    if (parts[i].token->rstrip && i + 1 < parts.size() && parts[i + 1].id < 0) {
      parts[i + 1].text = std::string(strip_view(parts[i + 1].text, true, false));
    }
  }
  Ids out;
  bool at_origin = true;
  for (const Part& p : parts) {
    if (p.id >= 0) {
      out.push_back(p.id);
    } else {
      impl_->encode_text(p.text, at_origin, true, out);
    }
    at_origin = at_origin && p.id < 0 && p.text.empty();
  }
  return out;
}

std::vector<int64_t> HfTokenizer::encode_with_special_tokens(std::string_view text) const {
  return impl_->post_process({impl_->encode_template(text)}, true);
}

std::vector<int64_t> HfTokenizer::encode_pair_with_special_tokens(std::string_view a,
                                                                  std::string_view b) const {
  return impl_->post_process({impl_->encode_template(a), impl_->encode_template(b)}, true);
}

std::string HfTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  HfDecodeStream stream(*impl_, skip_special_tokens);
  std::string out;
  for (int64_t id : ids) stream.push(id, out);
  stream.finish(out);
  return out;
}

std::unique_ptr<DecodeStream> HfTokenizer::decode_stream(bool skip_special_tokens) const {
  return std::make_unique<HfDecodeStream>(*impl_, skip_special_tokens);
}

std::string HfTokenizer::piece(int64_t id) const { return impl_->checked_token(id); }

std::optional<int64_t> HfTokenizer::token_id(std::string_view piece_or_added_token) const {
  if (auto it = impl_->added_by_content.find(piece_or_added_token);
      it != impl_->added_by_content.end()) {
    return impl_->added[it->second].id;
  }
  return impl_->model->find(piece_or_added_token);
}

int64_t HfTokenizer::size() const { return impl_->size; }
std::optional<int64_t> HfTokenizer::bos_id() const { return impl_->bos; }
std::optional<int64_t> HfTokenizer::eos_id() const { return impl_->eos; }
std::optional<int64_t> HfTokenizer::pad_id() const { return impl_->pad; }
std::optional<int64_t> HfTokenizer::unk_id() const { return impl_->unk; }
bool HfTokenizer::add_bos() const { return impl_->add_bos; }
bool HfTokenizer::add_eos() const { return impl_->add_eos; }
bool HfTokenizer::is_special(int64_t id) const { return impl_->special(id); }

std::string HfTokenizer::token_bytes(int64_t id) const {
  std::string token = impl_->checked_token(id);
  for (const auto& spec : impl_->decoders) spec->isolated(token);
  return token;
}

}  // namespace icet::text
