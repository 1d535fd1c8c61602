#pragma once

// Text input shared by the prompt-set readers: strict UTF-8 validation with the line of the first
// bad byte, and an RFC 4180 CSV reader (quoted fields with commas, doubled quotes and line
// breaks; a UTF-8 byte-order mark; CRLF or LF line ends). Torch-free.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace icet::eval {

// Throws InputError "<where>:<line>: expected UTF-8 text, found byte 0xNN at column C" (line and
// column 1-based, column in bytes) at the first byte that is not strict UTF-8: overlong forms,
// UTF-16 surrogates (U+D800..DFFF), code points above U+10FFFF and truncated sequences are
// refused, as Python's "utf-8" codec does.
void check_utf8(std::string_view text, const std::string& where);

// `text` without a leading UTF-8 byte-order mark (EF BB BF).
std::string_view strip_bom(std::string_view text);

struct CsvTable {
  std::string file;                         // for messages
  std::vector<std::string> header;          // names trimmed of ASCII whitespace
  std::vector<std::vector<std::string>> rows;
  std::vector<size_t> row_lines;            // physical line (1-based) where each row starts

  // Index of the column `name`, or nullopt.
  std::optional<size_t> column(std::string_view name) const;
  // Index of `name`; missing -> InputError "<file>:1: CSV header: expected the columns a, b, found x, y".
  size_t require(std::string_view name, const std::vector<std::string>& all_expected = {}) const;
  // "<file>:<line of row r>".
  std::string where(size_t r) const;
};

// Parses CSV text (first record = header). Validates UTF-8 first (after the BOM). A line break
// inside a quoted field is kept as "\n" (CRLF inside quotes becomes LF); blank lines between
// records (empty or only spaces and tabs) are skipped; a quote inside an unquoted field is kept as text (as Python's csv does).
// Errors name `file` and the line: an unclosed quote (the line where the field opened), text after
// a closing quote, a row whose field count differs from the header's, an empty file.
CsvTable parse_csv(std::string_view text, const std::string& file);

// One CSV field, quoted when it holds a comma, quote, CR or LF (RFC 4180).
std::string csv_escape(std::string_view field);

}  // namespace icet::eval
