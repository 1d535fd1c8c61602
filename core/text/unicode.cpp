#include "core/text/unicode.h"

#include <algorithm>
#include <iterator>

namespace icet::text::unicode {
namespace {

struct CodepointRange {
  char32_t first;
  char32_t last;
};

struct LowercaseEntry {
  char32_t cp;
  const char* lower;
};

#include "core/text/unicode_tables.inc"

template <size_t N>
bool in(const CodepointRange (&table)[N], char32_t cp) {
  const auto* end = std::end(table);
  const auto* it = std::upper_bound(
      std::begin(table), end, cp, [](char32_t c, const CodepointRange& r) { return c < r.first; });
  return it != std::begin(table) && cp <= std::prev(it)->last;
}

bool is_continuation(unsigned char b) { return (b & 0xC0) == 0x80; }

enum class Scan { complete, invalid, truncated };

// The sequence at s[pos]: returns how many bytes form its longest well-formed prefix (at least
// 1) and whether that is a whole code point, an ill-formed subpart, or cut off by the end of s.
size_t scan(std::string_view s, size_t pos, Scan& state, char32_t& cp) {
  const auto b0 = static_cast<unsigned char>(s[pos]);
  state = Scan::invalid;
  cp = kReplacement;
  if (b0 < 0x80) {
    state = Scan::complete;
    cp = b0;
    return 1;
  }
  size_t need = 0;
  char32_t value = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
    value = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    value = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    value = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 1;
  }
  size_t i = 1;
  for (; i <= need; ++i) {
    if (pos + i >= s.size()) {
      state = Scan::truncated;
      return i;
    }
    const auto b = static_cast<unsigned char>(s[pos + i]);
    if (i == 1 ? (b < lo || b > hi) : !is_continuation(b)) return i;
    value = (value << 6) | (b & 0x3F);
  }
  state = Scan::complete;
  cp = value;
  return i;
}

}  // namespace

char32_t next(std::string_view s, size_t& pos) {
  Scan state = Scan::invalid;
  char32_t cp = kReplacement;
  const size_t n = scan(s, pos, state, cp);
  pos += state == Scan::complete ? n : 1;
  return cp;
}

size_t sequence_length(std::string_view s, size_t pos) {
  Scan state = Scan::invalid;
  char32_t cp = 0;
  const size_t n = scan(s, pos, state, cp);
  return state == Scan::complete ? n : 1;
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string encode(char32_t cp) {
  std::string out;
  append(out, cp);
  return out;
}

bool is_valid(std::string_view s) {
  for (size_t pos = 0; pos < s.size();) {
    Scan state = Scan::invalid;
    char32_t cp = 0;
    const size_t n = scan(s, pos, state, cp);
    if (state != Scan::complete) return false;
    pos += n;
  }
  return true;
}

std::string decode_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t pos = 0; pos < bytes.size();) {
    Scan state = Scan::invalid;
    char32_t cp = 0;
    const size_t n = scan(bytes, pos, state, cp);
    if (state == Scan::complete) {
      out.append(bytes.substr(pos, n));
    } else {
      append(out, kReplacement);  // one U+FFFD per maximal ill-formed subpart
    }
    pos += n;
  }
  return out;
}

size_t stable_prefix(std::string_view bytes) {
  for (size_t pos = 0; pos < bytes.size();) {
    Scan state = Scan::invalid;
    char32_t cp = 0;
    const size_t n = scan(bytes, pos, state, cp);
    if (state == Scan::truncated) return pos;
    pos += n;
  }
  return bytes.size();
}

size_t count(std::string_view s) {
  size_t n = 0;
  for (size_t pos = 0; pos < s.size(); ++n) next(s, pos);
  return n;
}

bool is_letter(char32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return in(kLetter, cp);
}
bool is_number(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in(kNumber, cp);
}
bool is_mark(char32_t cp) { return cp >= 0x300 && in(kMark, cp); }
bool is_decimal_number(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in(kDecimalNumber, cp);
}
bool is_whitespace(char32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
  return in(kWhiteSpace, cp);
}
bool is_word(char32_t cp) {
  if (cp < 0x80) return is_letter(cp) || is_number(cp) || cp == '_';
  return in(kAlphabetic, cp) || in(kMark, cp) || in(kDecimalNumber, cp) ||
         in(kConnectorPunctuation, cp) || in(kJoinControl, cp);
}

void append_lowercase(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp));
    return;
  }
  const auto* end = std::end(kLowercase);
  const auto* it = std::lower_bound(std::begin(kLowercase), end, cp,
                                    [](const LowercaseEntry& e, char32_t c) { return e.cp < c; });
  if (it != end && it->cp == cp) {
    out.append(it->lower);
  } else {
    append(out, cp);
  }
}

}  // namespace icet::text::unicode
