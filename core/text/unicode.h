#pragma once

#include <cstdint>
#include <string>
#include <string_view>

// UTF-8 and the few Unicode properties that HF tokenizers' regexes and normalizers use. The
// tables come from unicode_tables.inc (generated from ICU by
// tests/reference/gen_unicode_tables.js).
namespace icet::text::unicode {

inline constexpr char32_t kReplacement = 0xFFFD;

// Decodes the code point at `pos` and advances `pos` past it. Invalid or truncated sequences
// decode as U+FFFD and advance by one byte, so any byte string can be walked safely.
char32_t next(std::string_view s, size_t& pos);

// Byte length of the UTF-8 sequence starting at s[pos] (1 for invalid bytes).
size_t sequence_length(std::string_view s, size_t pos);

void append(std::string& out, char32_t cp);
std::string encode(char32_t cp);

// True when `s` is well-formed UTF-8.
bool is_valid(std::string_view s);

// Replaces ill-formed subsequences with U+FFFD using the "maximal subpart" rule (Unicode §3.9,
// as Rust's String::from_utf8_lossy and WHATWG TextDecoder do).
std::string decode_lossy(std::string_view bytes);

// Length of the prefix of `bytes` that decode_lossy() renders the same whatever bytes follow:
// everything but an unfinished (so far well-formed) sequence at the end.
size_t stable_prefix(std::string_view bytes);

size_t count(std::string_view s);  // number of code points

// General categories \p{L}, \p{N}, \p{M}, \p{Pc}, \p{Nd}.
bool is_letter(char32_t cp);
bool is_number(char32_t cp);
bool is_mark(char32_t cp);
bool is_decimal_number(char32_t cp);
// White_Space: Oniguruma's \s, Rust's char::is_whitespace and regex \s.
bool is_whitespace(char32_t cp);
// Rust regex's Unicode \w: Alphabetic, M, Nd, Pc, Join_Control.
bool is_word(char32_t cp);

// Full lowercase mapping of one code point (may be several code points, e.g. U+0130).
void append_lowercase(std::string& out, char32_t cp);

}  // namespace icet::text::unicode
