#include "core/text/tokenize_command.h"

#include <nlohmann/json.hpp>

#include <iostream>
#include <memory>
#include <string>

#include "core/base/error.h"
#include "core/text/hf_tokenizer.h"
#include "core/text/tokenizer.h"

namespace icet::text {
namespace {

namespace fs = std::filesystem;

std::unique_ptr<Tokenizer> open_tokenizer(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    return load_tokenizer(path);  // the same choice as the engine makes for a snapshot
  }
  if (path.filename() == "tokenizer.model") return load_tokenizer(path.parent_path());
  return HfTokenizer::load(path, path.parent_path() / "tokenizer_config.json");
}

}  // namespace

int run_tokenize_command(const fs::path& tokenizer_dir_or_file, bool special, std::istream& in,
                         std::ostream& out) {
  std::unique_ptr<Tokenizer> tokenizer;
  try {
    tokenizer = open_tokenizer(tokenizer_dir_or_file);
  } catch (const Error& e) {
    std::cerr << "icet tokenize: " << e.what() << "\n";
    return 2;
  }
  std::string line;
  size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    nlohmann::json text;
    try {
      text = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {  // parse_error, or out_of_range for "1e999"
      text = nullptr;
    }
    if (!text.is_string()) {
      std::cerr << "icet tokenize: "
                << describe("stdin line " + std::to_string(number),
                            "a JSON string such as \"Hello\"",
                            line.size() > 80 ? line.substr(0, 80) + "..." : line)
                << "\n";
      return 1;
    }
    const std::string s = text.get<std::string>();
    try {
      const std::vector<int64_t> ids =
          special ? tokenizer->encode_template(s) : tokenizer->encode_user(s);
      out << nlohmann::json(ids).dump() << "\n";
    } catch (const Error& e) {
      std::cerr << "icet tokenize: stdin line " << number << ": " << e.what() << "\n";
      return 1;
    }
  }
  out.flush();
  return 0;
}

}  // namespace icet::text
