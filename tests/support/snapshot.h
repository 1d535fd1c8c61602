#pragma once

// Fixture snapshots for tokenizer tests: paths, JSON, and edited copies.

#include <QTemporaryDir>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

namespace icet::test {

inline std::filesystem::path fixture(const std::string& name) {
  return std::filesystem::path(ICET_FIXTURES) / "hf-reference" / name;
}

inline nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

// A copy of a fixture snapshot's tokenizer files whose tokenizer_config.json is edited by `edit`.
inline std::filesystem::path snapshot_copy(const QTemporaryDir& tmp, const std::string& name,
                                           const std::function<void(nlohmann::json&)>& edit) {
  namespace fs = std::filesystem;
  const fs::path dst = fs::path(tmp.path().toStdString()) / name;
  fs::create_directories(dst);
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                        "added_tokens.json"}) {
    if (fs::exists(fixture(name) / f)) fs::copy_file(fixture(name) / f, dst / f);
  }
  nlohmann::json config = read_json(dst / "tokenizer_config.json");
  edit(config);
  std::ofstream(dst / "tokenizer_config.json") << config.dump(1);
  return dst;
}

}  // namespace icet::test
