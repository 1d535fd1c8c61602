#include "core/text/sentencepiece.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iterator>
#include <queue>

#include "core/base/atomic_file.h"
#include "core/base/error.h"

namespace icet::text {
namespace {

constexpr std::string_view kSpaceSymbol = "\xe2\x96\x81";          // U+2581, SentencePiece's "▁"
constexpr std::string_view kReplacementChar = "\xef\xbf\xbd";      // U+FFFD
constexpr std::string_view kDefaultUnkSurface = " \xe2\x81\x87 ";  // " ⁇ "
constexpr char32_t kUnicodeError = 0xFFFD;

// --- UTF-8, exactly as SentencePiece's string_util does it -------------------------------------

size_t one_char_len(char c) {
  return static_cast<size_t>(
      "\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[(static_cast<unsigned char>(c)) >> 4]);
}

bool is_trail_byte(char c) { return static_cast<signed char>(c) < -0x40; }

bool is_valid_codepoint(char32_t c) { return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF); }

char32_t decode_utf8(std::string_view s, size_t* mblen) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const size_t len = s.size();
  if (b(0) < 0x80) {
    *mblen = 1;
    return b(0);
  }
  if (len >= 2 && (b(0) & 0xE0) == 0xC0) {
    const char32_t cp = ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    if (is_trail_byte(s[1]) && cp >= 0x0080 && is_valid_codepoint(cp)) {
      *mblen = 2;
      return cp;
    }
  } else if (len >= 3 && (b(0) & 0xF0) == 0xE0) {
    const char32_t cp = ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    if (is_trail_byte(s[1]) && is_trail_byte(s[2]) && cp >= 0x0800 && is_valid_codepoint(cp)) {
      *mblen = 3;
      return cp;
    }
  } else if (len >= 4 && (b(0) & 0xF8) == 0xF0) {
    const char32_t cp =
        ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
    if (is_trail_byte(s[1]) && is_trail_byte(s[2]) && is_trail_byte(s[3]) && cp >= 0x10000 &&
        is_valid_codepoint(cp)) {
      *mblen = 4;
      return cp;
    }
  }
  *mblen = 1;
  return kUnicodeError;
}

// A literal U+FFFD in the input counts as valid (its encoding is 3 bytes long).
bool valid_decode_utf8(std::string_view s, size_t* mblen) {
  return decode_utf8(s, mblen) != kUnicodeError || *mblen == 3;
}

bool structurally_valid_utf8(std::string_view s) {
  while (!s.empty()) {
    size_t n = 0;
    if (!valid_decode_utf8(s, &n)) {
      return false;
    }
    s.remove_prefix(n);
  }
  return true;
}

// Bytes a UTF-8 sequence starting with `lead` needs before SentencePiece can judge it.
size_t bytes_needed(unsigned char lead) {
  if (lead < 0x80) {
    return 1;
  }
  if ((lead & 0xE0) == 0xC0) {
    return 2;
  }
  if ((lead & 0xF0) == 0xE0) {
    return 3;
  }
  if ((lead & 0xF8) == 0xF0) {
    return 4;
  }
  return 1;  // never valid: judged at once
}

std::string byte_to_piece(unsigned char c) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "<0x%02X>", c);
  return buf;
}

int piece_to_byte(std::string_view piece) {
  // Only the exact spelling ByteToPiece produces ("<0x0A>", upper-case hex) is a byte piece.
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') {
    return -1;
  }
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    int digit = -1;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    }
    if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    }
    if (digit < 0) {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

// --- protobuf wire format ----------------------------------------------------------------------

enum WireType {
  kVarint = 0,
  kFixed64 = 1,
  kLengthDelimited = 2,
  kStartGroup = 3,
  kEndGroup = 4,
  kFixed32 = 5
};

class WireReader {
 public:
  WireReader(std::string_view data, const std::string& source, size_t base_offset)
      : data_(data), source_(source), base_(base_offset) {}

  bool done() const { return pos_ >= data_.size(); }

  // Reads a field key. Field numbers start at 1; wire types 6 and 7 do not exist.
  std::pair<uint32_t, int> key() {
    const size_t at = pos_;
    const uint64_t k = varint();
    const auto field = static_cast<uint32_t>(k >> 3);
    const int wire = static_cast<int>(k & 7);
    if (field == 0 || wire > kFixed32 || (k >> 3) > 0x1FFFFFFF) {
      fail("an invalid field key (field " + std::to_string(k >> 3) + ", wire type " +
               std::to_string(wire) + ")",
           at);
    }
    return {field, wire};
  }

  uint64_t varint() {
    const size_t at = pos_;
    uint64_t value = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (pos_ >= data_.size()) {
        fail("data that ends inside a varint", at);
      }
      const auto byte = static_cast<unsigned char>(data_[pos_++]);
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) {
        return value;
      }
    }
    fail("a varint longer than 10 bytes", at);
  }

  std::string_view bytes() {
    const size_t at = pos_;
    const uint64_t length = varint();
    if (length > data_.size() - pos_) {
      fail("a length-delimited field of " + std::to_string(length) + " bytes with only " +
               std::to_string(data_.size() - pos_) + " bytes left",
           at);
    }
    const std::string_view out = data_.substr(pos_, static_cast<size_t>(length));
    pos_ += static_cast<size_t>(length);
    return out;
  }

  uint32_t fixed32() {
    if (data_.size() - pos_ < 4) {
      fail("data that ends inside a 32-bit field", pos_);
    }
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) {
      v = (v << 8) | static_cast<unsigned char>(data_[pos_ + i]);
    }
    pos_ += 4;
    return v;
  }

  float float32() {
    const uint32_t bits = fixed32();
    float f = 0.0f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }

  // Skips a field this reader does not use, whatever its wire type (groups included).
  void skip(uint32_t field, int wire, int depth = 0) {
    switch (wire) {
      case kVarint:
        varint();
        return;
      case kFixed64:
        if (data_.size() - pos_ < 8) {
          fail("data that ends inside a 64-bit field", pos_);
        }
        pos_ += 8;
        return;
      case kLengthDelimited:
        bytes();
        return;
      case kFixed32:
        fixed32();
        return;
      case kStartGroup: {
        if (depth > 64) {
          fail("groups nested more than 64 deep", pos_);
        }
        const size_t at = pos_;
        while (true) {
          if (done()) {
            fail("a group (field " + std::to_string(field) + ") that is never closed", at);
          }
          const auto [inner, inner_wire] = key();
          if (inner_wire == kEndGroup) {
            if (inner != field) {
              fail("an end-group key that does not match its group", pos_);
            }
            return;
          }
          skip(inner, inner_wire, depth + 1);
        }
      }
      default:
        fail("an end-group key outside any group", pos_);
    }
  }

  bool boolean() { return varint() != 0; }
  int32_t int32() { return static_cast<int32_t>(static_cast<uint32_t>(varint())); }
  size_t offset() const { return base_ + pos_; }

  [[noreturn]] void fail(const std::string& found, size_t at) const {
    throw InputError(describe(source_, "a SentencePiece model (serialised ModelProto)",
                              found + " at byte " + std::to_string(base_ + at),
                              "The file is truncated or is not a tokenizer.model; copy it again "
                              "from the model's Hugging Face snapshot"));
  }

 private:
  std::string_view data_;
  const std::string& source_;
  size_t base_;
  size_t pos_ = 0;
};

struct ParsedModel {
  struct RawPiece {
    std::string piece;
    float score = 0.0f;
    int type = 1;
  };
  std::vector<RawPiece> pieces;
  TrainerSpec trainer;
  NormalizerSpec normalizer;
  int raw_model_type = static_cast<int>(ModelType::unigram);
  bool denormalizer_has_rules = false;
  std::vector<std::pair<std::string, std::string>> self_test;  // input, expected pieces
};

// Sub-messages are parsed from the bytes of their field; a repeated occurrence of a singular
// message merges into the earlier one, as protobuf does.
void parse_piece(WireReader r, ParsedModel::RawPiece& p) {
  while (!r.done()) {
    const auto [field, wire] = r.key();
    if (field == 1 && wire == kLengthDelimited) {
      p.piece = std::string(r.bytes());
    } else if (field == 2 && wire == kFixed32) {
      p.score = r.float32();
    } else if (field == 3 && wire == kVarint) {
      p.type = static_cast<int>(r.varint());
    } else {
      r.skip(field, wire);
    }
  }
}

void parse_trainer(WireReader r, ParsedModel& m) {
  TrainerSpec& t = m.trainer;
  while (!r.done()) {
    const auto [field, wire] = r.key();
    if (wire == kVarint && field == 3) {
      m.raw_model_type = static_cast<int>(r.varint());
    } else if (wire == kVarint && field == 24) {
      t.treat_whitespace_as_suffix = r.boolean();
    } else if (wire == kVarint && field == 35) {
      t.byte_fallback = r.boolean();
    } else if (wire == kVarint && field == 40) {
      t.unk_id = r.int32();
    } else if (wire == kVarint && field == 41) {
      t.bos_id = r.int32();
    } else if (wire == kVarint && field == 42) {
      t.eos_id = r.int32();
    } else if (wire == kVarint && field == 43) {
      t.pad_id = r.int32();
    } else if (wire == kLengthDelimited && field == 44) {
      t.unk_surface = std::string(r.bytes());
    } else {
      r.skip(field, wire);
    }
  }
}

void parse_normalizer(WireReader r, NormalizerSpec& n) {
  while (!r.done()) {
    const auto [field, wire] = r.key();
    if (wire == kLengthDelimited && field == 1) {
      n.name = std::string(r.bytes());
    } else if (wire == kLengthDelimited && field == 2) {
      n.has_precompiled_charsmap = !r.bytes().empty();
    } else if (wire == kVarint && field == 3) {
      n.add_dummy_prefix = r.boolean();
    } else if (wire == kVarint && field == 4) {
      n.remove_extra_whitespaces = r.boolean();
    } else if (wire == kVarint && field == 5) {
      n.escape_whitespaces = r.boolean();
    } else {
      r.skip(field, wire);
    }
  }
}

void parse_self_test(WireReader r, ParsedModel& m, const std::string& source) {
  while (!r.done()) {
    const auto [field, wire] = r.key();
    if (field == 1 && wire == kLengthDelimited) {
      const size_t base = r.offset();
      WireReader sample(r.bytes(), source, base + 1);
      std::pair<std::string, std::string> s;
      while (!sample.done()) {
        const auto [f, w] = sample.key();
        if (f == 1 && w == kLengthDelimited) {
          s.first = std::string(sample.bytes());
        } else if (f == 2 && w == kLengthDelimited) {
          s.second = std::string(sample.bytes());
        } else {
          sample.skip(f, w);
        }
      }
      m.self_test.push_back(std::move(s));
    } else {
      r.skip(field, wire);
    }
  }
}

ParsedModel parse_model_proto(std::string_view data, const std::string& source) {
  ParsedModel m;
  WireReader r(data, source, 0);
  // Offsets of sub-messages are approximate (they point at the length prefix); good enough to
  // find the spot in a hex dump.
  while (!r.done()) {
    const auto [field, wire] = r.key();
    if (wire != kLengthDelimited || field > 5) {
      r.skip(field, wire);
      continue;
    }
    const size_t base = r.offset();
    const std::string_view body = r.bytes();
    WireReader sub(body, source, base + 1);
    switch (field) {
      case 1: {
        ParsedModel::RawPiece p;
        parse_piece(sub, p);
        m.pieces.push_back(std::move(p));
        break;
      }
      case 2:
        parse_trainer(sub, m);
        break;
      case 3:
        parse_normalizer(sub, m.normalizer);
        break;
      case 4:
        parse_self_test(sub, m, source);
        break;
      case 5: {
        NormalizerSpec denorm;
        parse_normalizer(sub, denorm);
        m.denormalizer_has_rules = m.denormalizer_has_rules || denorm.has_precompiled_charsmap;
        break;
      }
      default:
        break;
    }
  }
  return m;
}

[[noreturn]] void unsupported(const std::string& source, const std::string& found,
                              const std::string& hint) {
  throw InputError(describe(source, "a SentencePiece BPE model with identity normalisation",
                            "an unsupported " + found, hint));
}

[[noreturn]] void invalid(const std::string& source, const std::string& found) {
  throw InputError(describe(source, "a valid SentencePiece model", found,
                            "SentencePiece itself refuses to load this file; copy tokenizer.model "
                            "again from the model's Hugging Face snapshot"));
}

}  // namespace

// --- SentencePieceModel ------------------------------------------------------------------------

SentencePieceModel SentencePieceModel::load(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    throw InputError(describe(
        file.string(), "a SentencePiece tokenizer.model file",
        std::filesystem::exists(file, ec) ? "something that is not a file" : "no such file",
        "Point to the model's Hugging Face snapshot folder"));
  }
  // Real tokenizer.model files are under 5 MiB (Gemma's 256K pieces: 4.2 MiB).
  return parse(read_file_limited(file, 256ull << 20, "a SentencePiece tokenizer.model file"), file.string());
}

SentencePieceModel SentencePieceModel::parse(std::string_view bytes, const std::string& source) {
  ParsedModel parsed = parse_model_proto(bytes, source);
  if (parsed.pieces.empty()) {
    invalid(source, "no pieces");
  }
  if (parsed.raw_model_type != static_cast<int>(ModelType::bpe)) {
    const int t = parsed.raw_model_type;
    const std::string name = t == 1   ? "Unigram model"
                             : t == 3 ? "word model"
                             : t == 4 ? "char model"
                                      : "model type";
    unsupported(source, name + " (trainer_spec.model_type = " + std::to_string(t) + ")",
                "Only BPE SentencePiece models (LLaMA, Llama-2, Vicuna, Mistral, LLaVA) are "
                "supported");
  }
  if (parsed.normalizer.has_precompiled_charsmap || parsed.denormalizer_has_rules) {
    unsupported(
        source,
        "normalisation with precompiled rules (normalizer \"" + parsed.normalizer.name + "\")",
        "Only identity normalisation is implemented; LLaMA-family tokenizers use it");
  }
  if (parsed.trainer.treat_whitespace_as_suffix) {
    unsupported(source, "whitespace-as-suffix model (treat_whitespace_as_suffix = true)",
                "LLaMA-family tokenizers put the whitespace symbol in front of a word");
  }
  SentencePieceModel model;
  model.source_ = source;
  model.trainer_ = parsed.trainer;
  model.trainer_.model_type = ModelType::bpe;
  model.normalizer_ = parsed.normalizer;
  model.pieces_.reserve(parsed.pieces.size());
  for (size_t i = 0; i < parsed.pieces.size(); ++i) {
    auto& raw = parsed.pieces[i];
    if (raw.type < 1 || raw.type > 6) {
      invalid(source,
              "piece " + std::to_string(i) + " with unknown type " + std::to_string(raw.type));
    }
    if (!structurally_valid_utf8(raw.piece)) {
      invalid(source, "piece " + std::to_string(i) + " that is not valid UTF-8");
    }
    model.pieces_.push_back({std::move(raw.piece), raw.score, static_cast<PieceType>(raw.type)});
  }
  model.index_pieces();

  // SentencePiece refuses a model whose embedded self-test fails; so do we.
  for (const auto& [input, expected] : parsed.self_test) {
    std::string got;
    for (const auto& p : model.encode(input)) {
      if (!got.empty()) {
        got += ' ';
      }
      got += p.piece;
    }
    if (got != expected) {
      invalid(source, "a failing self-test sample: \"" + input + "\" gives \"" + got +
                          "\", the model says \"" + expected + "\"");
    }
  }
  return model;
}

void SentencePieceModel::index_pieces() {
  normal_.clear();
  reserved_.clear();
  user_defined_.assign(256, {});
  byte_values_.assign(pieces_.size(), -1);
  std::vector<bool> byte_found(256, false);
  int32_t unk = -1;
  for (size_t i = 0; i < pieces_.size(); ++i) {
    const Piece& p = pieces_[i];
    const auto id = static_cast<int32_t>(i);
    if (p.piece.empty()) {
      invalid(source_, "piece " + std::to_string(i) + " that is empty");
    }
    const bool normal_like = p.type == PieceType::normal || p.type == PieceType::user_defined ||
                             p.type == PieceType::unused;
    if (!(normal_like ? normal_ : reserved_).emplace(p.piece, id).second) {
      invalid(source_, "piece \"" + p.piece + "\" defined twice (id " + std::to_string(i) + ")");
    }
    if (p.type == PieceType::user_defined) {
      user_defined_[static_cast<unsigned char>(p.piece[0])].push_back(p.piece);
    }
    if (p.type == PieceType::unknown) {
      if (unk >= 0) {
        invalid(source_, "a second unknown piece at id " + std::to_string(i));
      }
      unk = id;
    }
    if (p.type == PieceType::byte) {
      if (!trainer_.byte_fallback) {
        invalid(source_, "byte piece " + p.piece + " although byte_fallback is false");
      }
      const int b = piece_to_byte(p.piece);
      if (b < 0) {
        invalid(source_, "byte piece \"" + p.piece + "\" that is not <0xXX>");
      }
      byte_found[static_cast<size_t>(b)] = true;
      byte_values_[i] = static_cast<int16_t>(b);
    }
  }
  if (unk < 0) {
    invalid(source_, "no unknown piece (<unk>)");
  }
  if (trainer_.byte_fallback &&
      std::find(byte_found.begin(), byte_found.end(), false) != byte_found.end()) {
    invalid(source_, "byte_fallback without all 256 byte pieces");
  }
  for (auto& bucket : user_defined_) {
    std::stable_sort(bucket.begin(), bucket.end(), [](const std::string& a, const std::string& b) {
      return a.size() > b.size();
    });
  }
  unk_id_ = unk;
  unk_surface_ = trainer_.unk_surface.value_or(std::string(kDefaultUnkSurface));
}

int SentencePieceModel::byte_value(int64_t id) const {
  return valid_id(id) ? byte_values_[static_cast<size_t>(id)] : -1;
}

int32_t SentencePieceModel::piece_to_id(std::string_view piece) const {
  return find(piece).value_or(unk_id_);
}

std::optional<int32_t> SentencePieceModel::find(std::string_view piece) const {
  if (auto it = reserved_.find(piece); it != reserved_.end()) {
    return it->second;
  }
  if (auto it = normal_.find(piece); it != normal_.end()) {
    return it->second;
  }
  return std::nullopt;
}

size_t SentencePieceModel::match_user_defined(std::string_view text) const {
  if (text.empty()) {
    return 0;
  }
  for (const auto& symbol : user_defined_[static_cast<unsigned char>(text[0])]) {
    if (text.substr(0, symbol.size()) == symbol) {
      return symbol.size();
    }
  }
  return 0;
}

std::string SentencePieceModel::normalize(std::string_view input) const {
  std::string out;
  if (input.empty()) {
    return out;
  }
  const NormalizerSpec& spec = normalizer_;

  // NormalizePrefix with identity rules: a user-defined symbol whole, else one character, else
  // U+FFFD for one malformed byte.
  const auto prefix = [this](std::string_view s) -> std::pair<std::string_view, size_t> {
    if (const size_t n = match_user_defined(s)) {
      return {s.substr(0, n), n};
    }
    size_t n = 0;
    if (!valid_decode_utf8(s, &n)) {
      return {kReplacementChar, 1};
    }
    return {s.substr(0, n), n};
  };

  if (spec.remove_extra_whitespaces) {
    while (!input.empty()) {
      const auto p = prefix(input);
      if (p.first != " ") {
        break;
      }
      input.remove_prefix(p.second);
    }
  }
  if (input.empty()) {
    return out;
  }

  out.reserve(input.size() * 3);
  const std::string_view space = spec.escape_whitespaces ? kSpaceSymbol : std::string_view(" ");
  if (spec.add_dummy_prefix) {
    out += space;
  }

  bool is_prev_space = spec.remove_extra_whitespaces;
  while (!input.empty()) {
    auto [sp, consumed] = prefix(input);
    while (is_prev_space && !sp.empty() && sp.front() == ' ') {
      sp.remove_prefix(1);
    }
    if (!sp.empty()) {
      for (char c : sp) {
        if (spec.escape_whitespaces && c == ' ') {
          out += kSpaceSymbol;
        } else {
          out += c;
        }
      }
      is_prev_space = sp.back() == ' ';
    }
    input.remove_prefix(consumed);
    if (!spec.remove_extra_whitespaces) {
      is_prev_space = false;
    }
  }

  if (spec.remove_extra_whitespaces) {
    while (out.size() >= space.size() &&
           std::string_view(out).substr(out.size() - space.size()) == space) {
      out.resize(out.size() - space.size());
    }
  }
  return out;
}

std::vector<std::pair<std::string_view, int32_t>> SentencePieceModel::bpe(
    std::string_view normalized) const {
  struct Symbol {
    int prev;
    int next;
    bool freeze;
    std::string_view piece;
  };
  struct Pair {
    int left;
    int right;
    float score;
    size_t size;
  };
  // Highest score first; on a tie the leftmost pair (SentencePiece's SymbolPairComparator).
  struct Lower {
    bool operator()(const Pair& a, const Pair& b) const {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };

  std::vector<std::pair<std::string_view, int32_t>> output;
  if (normalized.empty()) {
    return output;
  }

  std::vector<Symbol> symbols;
  symbols.reserve(normalized.size());
  for (std::string_view rest = normalized; !rest.empty();) {
    size_t n = match_user_defined(rest);
    const bool freeze = n > 0;  // user-defined symbols are never merged
    if (n == 0) {
      n = std::min(rest.size(), one_char_len(rest[0]));
    }
    const int index = static_cast<int>(symbols.size());
    rest.remove_prefix(n);
    symbols.push_back(
        {index - 1, rest.empty() ? -1 : index + 1, freeze, std::string_view(rest.data() - n, n)});
  }

  std::priority_queue<Pair, std::vector<Pair>, Lower> agenda;
  // Merged unused piece -> the two symbols it was last proposed from, to split it again.
  std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> rev_merge;

  const auto maybe_add = [&](int left, int right) {
    if (left == -1 || right == -1 || symbols[left].freeze || symbols[right].freeze) {
      return;
    }
    // Adjacent symbols are adjacent in `normalized`, so the merged piece is one view.
    const std::string_view piece(symbols[left].piece.data(),
                                 symbols[left].piece.size() + symbols[right].piece.size());
    const auto it = normal_.find(piece);
    if (it == normal_.end()) {
      return;
    }
    agenda.push({left, right, pieces_[static_cast<size_t>(it->second)].score, piece.size()});
    if (pieces_[static_cast<size_t>(it->second)].type == PieceType::unused) {
      rev_merge[piece] = {symbols[left].piece, symbols[right].piece};
    }
  };

  for (size_t i = 1; i < symbols.size(); ++i) {
    maybe_add(static_cast<int>(i) - 1, static_cast<int>(i));
  }

  while (!agenda.empty()) {
    const Pair top = agenda.top();
    agenda.pop();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    // Stale entry: one side was merged away or grew since the pair was proposed.
    if (left.piece.empty() || right.piece.empty() ||
        left.piece.size() + right.piece.size() != top.size) {
      continue;
    }
    left.piece = std::string_view(left.piece.data(), left.piece.size() + right.piece.size());
    left.next = right.next;
    if (right.next >= 0) {
      symbols[right.next].prev = top.left;
    }
    right.piece = std::string_view();
    maybe_add(left.prev, top.left);
    maybe_add(top.left, left.next);
  }

  std::function<void(std::string_view)> resegment = [&](std::string_view w) {
    const int32_t id = piece_to_id(w);
    if (type(id) != PieceType::unused) {
      output.emplace_back(w, id);
      return;
    }
    const auto p = rev_merge.find(w);
    if (p == rev_merge.end()) {
      output.emplace_back(w, id);
      return;
    }
    resegment(p->second.first);
    resegment(p->second.second);
  };
  for (int index = 0; index != -1; index = symbols[static_cast<size_t>(index)].next) {
    resegment(symbols[static_cast<size_t>(index)].piece);
  }
  return output;
}

std::vector<EncodedPiece> SentencePieceModel::encode(std::string_view text) const {
  const std::string normalized = normalize(text);
  std::vector<EncodedPiece> out;
  bool prev_unknown = false;
  for (const auto& [w, id] : bpe(normalized)) {
    const bool unknown = type(id) == PieceType::unknown;
    if (unknown && trainer_.byte_fallback) {
      for (char c : w) {
        std::string piece = byte_to_piece(static_cast<unsigned char>(c));
        const int32_t byte_id = piece_to_id(piece);
        out.push_back({std::move(piece), byte_id});
      }
    } else if (unknown && prev_unknown) {
      // SentencePiece reports a run of unknown characters as one <unk>.
      out.back().piece += w;
    } else {
      out.push_back({std::string(w), id});
    }
    prev_unknown = unknown;
  }
  return out;
}

std::string SentencePieceModel::decode(const std::vector<std::string>& pieces) const {
  std::string out;
  SentencePieceDecoder decoder(*this);
  for (const auto& p : pieces) {
    decoder.push(p, out);
  }
  decoder.finish(out);
  return out;
}

// --- SentencePieceDecoder ----------------------------------------------------------------------

void SentencePieceDecoder::append(std::string_view text, std::string& out) {
  if (text.empty()) {
    return;
  }
  out += text;
  wrote_ = true;
}

void SentencePieceDecoder::drain_bytes(bool final_bytes, std::string& out) {
  while (!pending_.empty()) {
    const size_t need = bytes_needed(static_cast<unsigned char>(pending_[0]));
    if (!final_bytes && pending_.size() < need) {
      return;  // later byte pieces may complete it
    }
    size_t n = 0;
    if (valid_decode_utf8(pending_, &n)) {
      append(std::string_view(pending_).substr(0, n), out);
    } else {
      append(kReplacementChar, out);
      n = 1;
    }
    pending_.erase(0, n);
  }
}

void SentencePieceDecoder::push(std::string_view piece, std::string& out) {
  const SentencePieceModel& m = *model_;
  const int32_t id = m.piece_to_id(piece);
  const PieceType t = m.type(id);
  if (t == PieceType::byte) {
    pending_ += static_cast<char>(m.byte_values_[static_cast<size_t>(id)]);
    drain_bytes(false, out);
    return;
  }
  drain_bytes(true, out);
  // Only the first visible piece may lose its leading "▁" (SentencePiece's is_bos_ws).
  if (bos_ws_seen_ || wrote_) {
    is_bos_ws_ = false;
  }

  if (t == PieceType::control) {
    bos_ws_seen_ = false;
    return;
  }
  if (t == PieceType::unknown) {
    bos_ws_seen_ = false;
    append(m.piece(id) == piece ? std::string_view(m.unk_surface_) : piece, out);
    return;
  }
  bool has_bos_ws = false;
  const NormalizerSpec& spec = m.normalizer_;
  if (is_bos_ws_ && (spec.add_dummy_prefix || spec.remove_extra_whitespaces)) {
    if (piece.substr(0, kSpaceSymbol.size()) == kSpaceSymbol) {
      piece.remove_prefix(kSpaceSymbol.size());
      has_bos_ws = true;
    }
    // With whitespace collapsing every leading whitespace piece is dropped, not just one.
    if (spec.remove_extra_whitespaces) {
      has_bos_ws = false;
    }
  }
  bos_ws_seen_ = has_bos_ws;
  std::string text;
  text.reserve(piece.size());
  for (size_t pos = 0; pos < piece.size();) {
    if (piece.substr(pos, kSpaceSymbol.size()) == kSpaceSymbol) {
      text += ' ';
      pos += kSpaceSymbol.size();
    } else {
      text += piece[pos++];
    }
  }
  append(text, out);
}

void SentencePieceDecoder::finish(std::string& out) {
  drain_bytes(true, out);
  wrote_ = false;
  bos_ws_seen_ = false;
  is_bos_ws_ = true;
}

}  // namespace icet::text
