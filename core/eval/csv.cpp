#include "core/eval/csv.h"

#include <cstdio>

#include "core/base/error.h"
#include "core/base/strings.h"

namespace icet::eval {
namespace {

std::string hex_byte(unsigned char b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", static_cast<unsigned>(b));
  return buf;
}

// Length of the valid UTF-8 sequence at s[i], or 0 when it is not valid (RFC 3629 table).
size_t utf8_sequence(std::string_view s, size_t i) {
  const auto at = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = at(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c == 0xE0) {
    n = 3, lo = 0xA0;  // no overlongs
  } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
    n = 3;
  } else if (c == 0xED) {
    n = 3, hi = 0x9F;  // no surrogates
  } else if (c == 0xF0) {
    n = 4, lo = 0x90;
  } else if (c >= 0xF1 && c <= 0xF3) {
    n = 4;
  } else if (c == 0xF4) {
    n = 4, hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;  // 0x80..0xC1 (continuation or overlong lead), 0xF5..0xFF
  }
  if (i + n > s.size()) return 0;
  if (at(i + 1) < lo || at(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (at(i + k) < 0x80 || at(i + k) > 0xBF) return 0;
  }
  return n;
}

}  // namespace

void check_utf8(std::string_view text, const std::string& where) {
  size_t line = 1, line_start = 0;
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      ++line;
      line_start = ++i;
      continue;
    }
    const size_t n = utf8_sequence(text, i);
    if (n == 0) {
      throw InputError(describe(where + ":" + std::to_string(line), "UTF-8 text",
                                "byte " + hex_byte(c) + " at column " + std::to_string(i - line_start + 1),
                                "Re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 in > out)"));
    }
    i += n;
  }
}

std::string_view strip_bom(std::string_view text) {
  if (text.size() >= 3 && text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  return text;
}

std::optional<size_t> CsvTable::column(std::string_view name) const {
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == name) return i;
  }
  return std::nullopt;
}

size_t CsvTable::require(std::string_view name, const std::vector<std::string>& all_expected) const {
  if (const auto c = column(name)) return *c;
  std::string expected, found;
  if (all_expected.empty()) {
    expected = "a column '" + std::string(name) + "'";
  } else {
    expected = "the columns ";
    for (size_t i = 0; i < all_expected.size(); ++i) expected += (i ? ", " : "") + all_expected[i];
    expected += " (missing '" + std::string(name) + "')";
  }
  for (size_t i = 0; i < header.size(); ++i) found += (i ? ", " : "") + header[i];
  if (found.empty()) found = "no columns";
  throw InputError(describe(file + ":1: CSV header", expected, found));
}

std::string CsvTable::where(size_t r) const { return file + ":" + std::to_string(row_lines.at(r)); }

CsvTable parse_csv(std::string_view text, const std::string& file) {
  text = strip_bom(text);
  check_utf8(text, file);
  CsvTable table;
  table.file = file;

  std::vector<std::string> record;
  std::string field;
  size_t line = 1;          // physical line of the current position
  size_t record_line = 1;   // where the current record started
  bool field_started = false;  // anything (even "") seen in the current record
  bool have_header = false;
  bool quoted_seen = false;  // the current record has a quoted field
  auto end_record = [&] {
    record.push_back(std::move(field));
    field.clear();
    // A line of nothing but spaces or tabs (no quotes, no commas) is blank, as before.
    const bool blank = record.size() == 1 && !quoted_seen && record[0].find_first_not_of(" \t") == std::string::npos;
    if (!blank) {
      if (!have_header) {
        for (auto& h : record) table.header.push_back(trim(h));
        have_header = true;
      } else {
        if (record.size() != table.header.size()) {
          throw InputError(describe(file + ":" + std::to_string(record_line),
                                    std::to_string(table.header.size()) + " fields (as the header)",
                                    std::to_string(record.size())));
        }
        table.rows.push_back(std::move(record));
        table.row_lines.push_back(record_line);
      }
    }
    record.clear();
    field_started = false;
    quoted_seen = false;
  };

  const size_t n = text.size();
  // The state machine proper.
  enum class State { field_start, unquoted, quoted, after_quote };
  State state = State::field_start;
  size_t quote_line = 0;
  auto end_field = [&] {  // a comma outside quotes
    record.push_back(std::move(field));
    field.clear();
    state = State::field_start;
  };
  auto end_line = [&](size_t& i) {  // a line end outside quotes; CRLF counts once
    if (text[i] == '\r' && i + 1 < n && text[i + 1] == '\n') ++i;
    end_record();
    ++line;
    record_line = line;
    state = State::field_start;
  };
  for (size_t i = 0; i < n; ++i) {
    const char c = text[i];
    switch (state) {
      case State::field_start:
      case State::unquoted:
        if (c == '"' && state == State::field_start) {
          state = State::quoted;
          quoted_seen = true;
          quote_line = line;
          field_started = true;
        } else if (c == ',') {
          end_field();
          field_started = true;
        } else if (c == '\n' || c == '\r') {
          end_line(i);
        } else {
          field += c;
          field_started = true;
          state = State::unquoted;
        }
        break;
      case State::quoted:
        if (c == '"') {
          if (i + 1 < n && text[i + 1] == '"') {
            field += '"';
            ++i;
          } else {
            state = State::after_quote;
          }
        } else if (c == '\r' && i + 1 < n && text[i + 1] == '\n') {
          field += '\n';
          ++i;
          ++line;
        } else {
          if (c == '\n') ++line;
          field += c;
        }
        break;
      case State::after_quote:
        if (c == ',') {
          end_field();
        } else if (c == '\n' || c == '\r') {
          end_line(i);
        } else if (c == ' ' || c == '\t') {
          // trailing blanks after a closing quote ("a" ,b) are dropped
        } else {
          throw InputError(describe(file + ":" + std::to_string(line), "a comma or a line end after a closing quote",
                                    "'" + std::string(1, c) + "'", "Double a quote inside a quoted field (\"\")"));
        }
        break;
    }
  }
  if (state == State::quoted) {
    throw InputError(describe(file + ":" + std::to_string(quote_line), "a closing quote for the field opened here",
                              "the end of the file"));
  }
  if (state != State::field_start || !record.empty() || field_started) end_record();
  if (!have_header) throw InputError(describe(file, "a CSV header row", "an empty file"));
  return table;
}

std::string csv_escape(std::string_view v) {
  if (v.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(v);
  std::string out = "\"";
  for (char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace icet::eval
