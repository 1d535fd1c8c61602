#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace icet::json_util {

// Nesting deeper than this is refused while parsing. nlohmann's parser and destructor are
// iterative, but copying and dumping a value recurse once per level, so a hostile file nested a
// million deep would overflow the stack later and far from the file (a metadata copy, an error
// message). Real configs, tokenizers and templates nest under 10 levels.
inline constexpr int kMaxDepth = 256;

// InputError naming `where`, the depth and the limit when `depth` (nlohmann's parser-callback
// depth) exceeds kMaxDepth. For parsers that need their own callback (safetensors headers).
void check_depth(int depth, const std::string& where);

// Parses JSON text; invalid JSON or nesting past kMaxDepth is an InputError naming `where`
// (with the parser's position).
nlohmann::json parse(std::string_view text, const std::string& where);

// The largest JSON file read_file takes by default. The largest real ones are tokenizer.json
// files (Llama 3: 9 MB; multilingual vocabularies: about 35 MB).
inline constexpr std::uint64_t kMaxJsonFileBytes = 256ull << 20;

// Reads a JSON file; a missing, unreadable, non-regular (/dev/zero, a FIFO), oversized or
// malformed file is an InputError naming it (with the parser's line/column).
nlohmann::json read_file(const std::filesystem::path& file, std::uint64_t max_bytes = kMaxJsonFileBytes);

// Typed access with errors that name the file and the key path, e.g.
// "config.json: key 'text_config.hidden_size': expected an integer, found a string".
// `where` is "<file>: key '<prefix>" and the key is appended.
class Reader {
 public:
  Reader(const nlohmann::json& object, std::string file, std::string prefix = {});

  bool has(const char* key) const;
  int64_t integer(const char* key, std::optional<int64_t> fallback = std::nullopt) const;
  double number(const char* key, std::optional<double> fallback = std::nullopt) const;
  bool boolean(const char* key, std::optional<bool> fallback = std::nullopt) const;
  std::string string(const char* key, std::optional<std::string> fallback = std::nullopt) const;
  std::vector<int64_t> integers(const char* key, std::optional<std::vector<int64_t>> fallback = std::nullopt) const;
  std::vector<double> numbers(const char* key, std::optional<std::vector<double>> fallback = std::nullopt) const;
  // An integer or a list of integers (e.g. eos_token_id); empty when absent or null.
  std::vector<int64_t> integer_or_list(const char* key) const;
  // A nested object (absent or null -> empty object), reporting keys as "<prefix><key>.".
  Reader child(const char* key) const;

  const nlohmann::json& json() const { return *object_; }
  const std::string& file() const { return file_; }
  std::string key_path(const char* key) const { return prefix_ + key; }
  // "<file>: key '<path>'" for error messages about a key's value.
  std::string where(const char* key) const;

 private:
  const nlohmann::json* find(const char* key) const;  // nullptr when absent or null
  [[noreturn]] void type_error(const char* key, const char* expected) const;

  const nlohmann::json* object_;  // never null: absent objects point at a shared empty one
  std::string file_;
  std::string prefix_;
};

std::string type_name(const nlohmann::json& value);

}  // namespace icet::json_util
