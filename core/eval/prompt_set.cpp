#include "core/eval/prompt_set.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/base/atomic_file.h"
#include "core/base/error.h"
#include "core/base/hash.h"
#include "core/base/json_util.h"
#include "core/eval/csv.h"

namespace icet::eval {
namespace {

const std::vector<std::string> kColumns{"id", "image", "prompt", "category", "harmful", "expected", "refusal", "compliant", "task"};

std::string where(const std::filesystem::path& file, size_t line) {
  return file.string() + ":" + std::to_string(line);
}

bool parse_bool(const std::string& v, const std::string& at) {
  if (v == "true" || v == "1" || v == "True" || v == "TRUE") return true;
  if (v == "false" || v == "0" || v == "False" || v == "FALSE" || v.empty()) return false;
  throw InputError(describe(at + ": field 'harmful'", "true or false", "\"" + v + "\""));
}

PromptItem from_json(const nlohmann::json& j, const std::string& at) {
  if (!j.is_object()) throw InputError(describe(at, "a JSON object", std::string(j.type_name())));
  PromptItem item;
  auto text = [&](const char* key, std::string& out, bool required) {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
      if (required) throw InputError(describe(at + ": field '" + key + "'", "a string", "nothing (the field is missing)"));
      return;
    }
    if (!it->is_string()) throw InputError(describe(at + ": field '" + key + "'", "a string", std::string(it->type_name())));
    out = it->get<std::string>();
  };
  text("id", item.id, true);
  text("image", item.image, true);
  text("prompt", item.prompt, true);
  text("category", item.category, false);
  text("expected", item.expected, false);
  text("refusal", item.refusal, false);
  text("compliant", item.compliant, false);
  text("task", item.task, false);
  if (const auto it = j.find("answers"); it != j.end() && !it->is_null()) {
    // JSONL: an array of strings; CSV: a cell holding that array as JSON text ("" for none).
    nlohmann::json list = *it;
    if (list.is_string()) list = list.get<std::string>().empty() ? nlohmann::json::array() : json_util::parse(list.get<std::string>(), at + ": field 'answers'");
    if (!list.is_array()) throw InputError(describe(at + ": field 'answers'", "an array of strings", std::string(list.type_name())));
    for (const auto& a : list) {
      if (!a.is_string()) throw InputError(describe(at + ": field 'answers'", "an array of strings", "an element of type " + std::string(a.type_name())));
      item.answers.push_back(a.get<std::string>());
    }
  }
  if (const auto it = j.find("harmful"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) throw InputError(describe(at + ": field 'harmful'", "true or false", it->dump()));
    item.harmful = it->get<bool>();
  }
  return item;
}

bool is_csv(const std::filesystem::path& file) { return file.extension() == ".csv"; }

}  // namespace

std::filesystem::path PromptSet::image_path(const PromptItem& item) const {
  const std::filesystem::path p(item.image);
  return p.is_absolute() ? p : file.parent_path() / p;
}

PromptSet load_prompt_set(const std::filesystem::path& file) {
  if (!std::filesystem::exists(file)) {
    throw InputError(file.string() + ": cannot open the prompt set (expected a .jsonl or .csv file)");
  }
  // Whole public sets (JailBreakV-28K: 28K rows) are a few MiB; a bound keeps /dev/zero or a
  // multi-GiB file from filling memory line by line.
  const std::string text = read_file_limited(file, 256ull << 20, "a prompt set (.jsonl or .csv)");
  PromptSet set;
  set.file = file;
  Fnv1a64 hash;
  hash.update(text.data(), text.size());
  set.content_hash = hash.hex();
  std::set<std::string> ids;
  auto add = [&](PromptItem item, const std::string& at) {
    if (item.id.empty()) throw InputError(describe(at + ": field 'id'", "a non-empty id", "\"\""));
    if (item.prompt.empty()) throw InputError(describe(at + ": field 'prompt'", "a non-empty prompt", "\"\""));
    if (!ids.insert(item.id).second) throw InputError(describe(at + ": field 'id'", "a unique id", "\"" + item.id + "\" again"));
    set.items.push_back(std::move(item));
  };
  if (is_csv(file)) {
    // RFC 4180 (quoted commas, quotes and line breaks; BOM; CRLF), strict UTF-8: see csv.h.
    const CsvTable table = parse_csv(text, file.string());
    for (const char* required : {"id", "image", "prompt"}) table.require(required, {"id", "image", "prompt"});
    for (size_t r = 0; r < table.rows.size(); ++r) {
      const std::string at = table.where(r);
      nlohmann::json j = nlohmann::json::object();
      for (size_t i = 0; i < table.header.size(); ++i) {
        if (table.header[i] == "harmful") j["harmful"] = parse_bool(table.rows[r][i], at);
        else j[table.header[i]] = table.rows[r][i];
      }
      add(from_json(j, at), at);
    }
    return set;
  }
  const std::string_view body = strip_bom(text);
  check_utf8(body, file.string());
  std::istringstream in{std::string(body)};
  std::string line;
  size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string at = where(file, number);
    add(from_json(json_util::parse(line, at), at), at);
  }
  return set;
}

void write_prompt_set(const std::filesystem::path& file, const std::vector<PromptItem>& items) {
  std::ostringstream out;
  if (is_csv(file)) {
    const bool with_answers = std::any_of(items.begin(), items.end(), [](const PromptItem& it) { return !it.answers.empty(); });
    for (size_t i = 0; i < kColumns.size(); ++i) out << (i ? "," : "") << kColumns[i];
    out << (with_answers ? ",answers\n" : "\n");
    for (const auto& it : items) {
      out << csv_escape(it.id) << ',' << csv_escape(it.image) << ',' << csv_escape(it.prompt) << ','
          << csv_escape(it.category) << ',' << (it.harmful ? "true" : "false") << ',' << csv_escape(it.expected) << ','
          << csv_escape(it.refusal) << ',' << csv_escape(it.compliant) << ',' << csv_escape(it.task);
      if (with_answers) out << ',' << csv_escape(it.answers.empty() ? std::string() : nlohmann::json(it.answers).dump());
      out << "\n";
    }
  } else {
    for (const auto& it : items) {
      nlohmann::json j{{"id", it.id}, {"image", it.image}, {"prompt", it.prompt}, {"category", it.category}, {"harmful", it.harmful}};
      if (!it.harmful || !it.expected.empty()) j["expected"] = it.expected;
      if (!it.refusal.empty()) j["refusal"] = it.refusal;
      if (!it.compliant.empty()) j["compliant"] = it.compliant;
      if (!it.task.empty()) j["task"] = it.task;
      if (!it.answers.empty()) j["answers"] = it.answers;
      out << j.dump() << "\n";
    }
  }
  write_file_atomic(file, out.str());  // fsynced: a crash leaves the old set or the new one
}

}  // namespace icet::eval
