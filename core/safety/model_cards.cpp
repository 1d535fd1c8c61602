#include "core/safety/model_cards.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>

#include "core/base/error.h"
#include "core/base/json_util.h"

namespace icet::safety {

ModelCard load_model_card(const std::filesystem::path& file) {
  const nlohmann::json j = json_util::read_file(file);
  const json_util::Reader r(j, file.string());
  ModelCard c;
  c.file = file;
  c.id = r.string("id");
  c.hf_repo = r.string("hf_repo");
  c.kind = r.string("kind");
  c.family = r.string("family");
  c.architecture = r.string("architecture");
  c.template_version = static_cast<int>(r.integer("template_version", 0));
  c.verdict_prefix = r.string("verdict_prefix", "");
  c.prompt_format = r.string("prompt_format", "");
  c.paper_choice = r.boolean("paper_choice", false);
  c.paper_choice_note = r.string("paper_choice_note", "");
  c.notes = r.string("notes", "");
  if (j.contains("categories")) {
    if (!j["categories"].is_array()) {
      throw InputError(describe(r.where("categories"), "a list of strings", json_util::type_name(j["categories"])));
    }
    for (const auto& v : j["categories"]) {
      if (!v.is_string()) throw InputError(describe(r.where("categories"), "strings", json_util::type_name(v)));
      c.categories.push_back(v.get<std::string>());
    }
  }
  const json_util::Reader labels = r.child("label_tokens");
  for (const auto& [key, value] : labels.json().items()) {
    if (!value.is_string()) {
      throw InputError(describe(labels.where(key.c_str()), "a string", json_util::type_name(value)));
    }
    c.label_tokens[key] = value.get<std::string>();
  }
  if (c.kind != "judge" && c.kind != "reward_model" && c.kind != "vlm") {
    throw InputError(describe(r.where("kind"), "\"judge\", \"reward_model\" or \"vlm\"", "\"" + c.kind + "\""));
  }
  if (c.hf_repo.find('/') == std::string::npos) {
    throw InputError(describe(r.where("hf_repo"), "\"owner/name\"", "\"" + c.hf_repo + "\""));
  }
  if (c.family == "llama_guard") {
    if (c.template_version < 1 || c.template_version > 3) {
      throw InputError(describe(r.where("template_version"), "1, 2 or 3", std::to_string(c.template_version)));
    }
    if (!c.label_tokens.count("safe") || !c.label_tokens.count("unsafe")) {
      throw InputError(describe(r.where("label_tokens"), "\"safe\" and \"unsafe\" entries", "fewer"));
    }
  }
  return c;
}

std::vector<ModelCard> load_model_cards(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir)) {
    throw InputError(describe(dir.string(), "a folder of model cards (*.json)", "no such folder"));
  }
  std::vector<ModelCard> cards;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".json") cards.push_back(load_model_card(entry.path()));
  }
  std::sort(cards.begin(), cards.end(), [](const ModelCard& a, const ModelCard& b) { return a.id < b.id; });
  std::set<std::string> seen;
  for (const auto& c : cards) {
    if (!seen.insert(c.id).second) {
      throw InputError(describe(c.file.string() + ": key 'id'", "an id no other card uses", "\"" + c.id + "\" again"));
    }
  }
  return cards;
}

}  // namespace icet::safety
