#pragma once

#include <filesystem>
#include <iosfwd>

namespace icet::text {

// `icet tokenize`: reads one JSON string per line from `in` and writes one JSON array of token
// ids per line to `out`. No BOS/EOS is added. `special` = template-text mode (added/special
// tokens in the text are parsed, HF's add_special_tokens=False default); otherwise every line is
// plain user text. `tokenizer_dir_or_file` is a tokenizer.json file, or a snapshot folder (its
// tokenizer.json, else its tokenizer.model). Empty lines are skipped.
// Returns 0 on success, 1 for a line that is not a JSON string, 2 when the tokenizer cannot be
// loaded; the message goes to stderr.
int run_tokenize_command(const std::filesystem::path& tokenizer_dir_or_file, bool special,
                         std::istream& in, std::ostream& out);

}  // namespace icet::text
