#include "core/eval/prompt_set.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/base/atomic_file.h"
#include "core/base/error.h"
#include "core/base/json_util.h"

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
  if (const auto it = j.find("harmful"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) throw InputError(describe(at + ": field 'harmful'", "true or false", it->dump()));
    item.harmful = it->get<bool>();
  }
  return item;
}

// One CSV record (RFC 4180 quoting, no line breaks inside fields).
std::vector<std::string> split_csv(const std::string& line, const std::string& at) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < line.size() && line[i + 1] == '"') {
          fields.back() += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        fields.back() += c;
      }
    } else if (c == '"') {
      if (!fields.back().empty()) throw InputError(describe(at, "a quote only at the start of a field", "a quote inside field " + std::to_string(fields.size())));
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else {
      fields.back() += c;
    }
  }
  if (quoted) throw InputError(describe(at, "a closing quote", "the end of the line"));
  return fields;
}

std::string csv_field(const std::string& v) {
  if (v.find_first_of(",\"\n") == std::string::npos) return v;
  std::string out = "\"";
  for (char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

bool is_csv(const std::filesystem::path& file) { return file.extension() == ".csv"; }

}  // namespace

std::filesystem::path PromptSet::image_path(const PromptItem& item) const {
  const std::filesystem::path p(item.image);
  return p.is_absolute() ? p : file.parent_path() / p;
}

PromptSet load_prompt_set(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError(file.string() + ": cannot open the prompt set (expected a .jsonl or .csv file)");
  PromptSet set;
  set.file = file;
  std::set<std::string> ids;
  std::string line;
  size_t number = 0;
  std::vector<std::string> header;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string at = where(file, number);
    PromptItem item;
    if (is_csv(file)) {
      auto fields = split_csv(line, at);
      if (header.empty()) {
        header = fields;
        for (const char* required : {"id", "image", "prompt"}) {
          if (std::find(header.begin(), header.end(), required) == header.end()) {
            throw InputError(describe(at + ": CSV header", std::string("a column '") + required + "'", line));
          }
        }
        continue;
      }
      if (fields.size() != header.size()) {
        throw InputError(describe(at, std::to_string(header.size()) + " fields (as the header)", std::to_string(fields.size())));
      }
      nlohmann::json j = nlohmann::json::object();
      for (size_t i = 0; i < header.size(); ++i) {
        if (header[i] == "harmful") j["harmful"] = parse_bool(fields[i], at);
        else j[header[i]] = fields[i];
      }
      item = from_json(j, at);
    } else {
      item = from_json(json_util::parse(line, at), at);
    }
    if (item.id.empty()) throw InputError(describe(at + ": field 'id'", "a non-empty id", "\"\""));
    if (item.prompt.empty()) throw InputError(describe(at + ": field 'prompt'", "a non-empty prompt", "\"\""));
    if (!ids.insert(item.id).second) throw InputError(describe(at + ": field 'id'", "a unique id", "\"" + item.id + "\" again"));
    set.items.push_back(std::move(item));
  }
  if (is_csv(file) && header.empty()) throw InputError(describe(file.string(), "a CSV header row", "an empty file"));
  return set;
}

void write_prompt_set(const std::filesystem::path& file, const std::vector<PromptItem>& items) {
  std::ostringstream out;
  if (is_csv(file)) {
    for (size_t i = 0; i < kColumns.size(); ++i) out << (i ? "," : "") << kColumns[i];
    out << "\n";
    for (const auto& it : items) {
      out << csv_field(it.id) << ',' << csv_field(it.image) << ',' << csv_field(it.prompt) << ','
          << csv_field(it.category) << ',' << (it.harmful ? "true" : "false") << ',' << csv_field(it.expected) << ','
          << csv_field(it.refusal) << ',' << csv_field(it.compliant) << ',' << csv_field(it.task) << "\n";
    }
  } else {
    for (const auto& it : items) {
      nlohmann::json j{{"id", it.id}, {"image", it.image}, {"prompt", it.prompt}, {"category", it.category}, {"harmful", it.harmful}};
      if (!it.harmful || !it.expected.empty()) j["expected"] = it.expected;
      if (!it.refusal.empty()) j["refusal"] = it.refusal;
      if (!it.compliant.empty()) j["compliant"] = it.compliant;
      if (!it.task.empty()) j["task"] = it.task;
      out << j.dump() << "\n";
    }
  }
  write_file_atomic(file, out.str());  // fsynced: a crash leaves the old set or the new one
}

}  // namespace icet::eval
