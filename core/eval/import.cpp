#include "core/eval/import.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <set>

#include "core/base/atomic_file.h"
#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/base/strings.h"
#include "core/eval/csv.h"

namespace icet::eval {
namespace fs = std::filesystem;
namespace {

std::string read_text(const fs::path& file, const std::string& what) {
  if (!fs::exists(file)) throw InputError(describe(file.string(), what, "no such file"));
  return read_file_limited(file, kMaxImportBytes, what);
}

CsvTable read_csv(const fs::path& file, const std::string& what) {
  return parse_csv(read_text(file, what), file.string());
}

std::string padded(size_t v, int width) {
  std::string s = std::to_string(v);
  if (static_cast<int>(s.size()) < width) s.insert(0, static_cast<size_t>(width) - s.size(), '0');
  return s;
}

// Text-only sets pair every prompt with one image the user gives.
void require_image(const fs::path& image, const std::string& set) {
  if (image.empty()) {
    throw InputError(describe(set + " import", "an image to pair with every prompt (" + set + " is text-only)", "none",
                              "Pass any benign image, or a blank one written by write_blank_image"));
  }
}

// "<prefix><the row's id column>", or "<prefix><fallback number, zero-padded>" without one.
std::string row_id(const std::vector<std::string>& row, std::optional<size_t> id, const std::string& prefix,
                   size_t fallback, int width) {
  const std::string raw = id ? trim(row[*id]) : std::string();
  return prefix + (raw.empty() ? padded(fallback, width) : raw);
}

// The field at `column` of row `r`, which must not be blank (errors name the file, line and column).
const std::string& nonblank(const CsvTable& t, size_t r, size_t column, const std::string& name,
                            const std::string& expected) {
  const std::string& v = t.rows[r][column];
  if (trim(v).empty()) throw InputError(describe(t.where(r) + ": column '" + name + "'", expected, "an empty field"));
  return v;
}

fs::path absolute_folder(const fs::path& folder) { return fs::absolute(folder).lexically_normal(); }

void check_unique(const std::vector<PromptItem>& items, const std::string& file) {
  std::set<std::string> ids;
  for (const auto& it : items) {
    if (!ids.insert(it.id).second) {
      throw InputError(describe(file, "unique ids", "\"" + it.id + "\" twice", "Ids come from the file's id column"));
    }
  }
}

std::string ascii_lower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

}  // namespace

std::vector<fs::path> list_images(const fs::path& folder) {
  static const std::set<std::string> kExtensions{".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"};
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) {
    throw InputError(describe(folder.string(), "a folder of images", "no such folder"));
  }
  std::vector<fs::path> images;
  for (const auto& e : fs::directory_iterator(folder, ec)) {
    std::error_code entry_ec;  // a dangling link is skipped, not an error of the folder
    if (!e.is_regular_file(entry_ec)) continue;
    if (kExtensions.count(ascii_lower(e.path().extension().string())) != 0) images.push_back(e.path());
  }
  if (ec) throw InputError(describe(folder.string(), "a readable folder", ec.message()));
  if (images.empty()) {
    throw InputError(describe(folder.string(), "image files (.jpg, .jpeg, .png, .bmp, .webp, .gif, .tif)", "none"));
  }
  std::sort(images.begin(), images.end(),
            [](const fs::path& a, const fs::path& b) { return a.filename().string() < b.filename().string(); });
  const fs::path base = absolute_folder(folder);
  for (auto& p : images) p = base / p.filename();
  return images;
}

std::vector<PromptItem> import_jailbreakv(const fs::path& csv, const JailbreakVOptions& options) {
  const CsvTable t = read_csv(csv, "a JailBreakV-28K CSV");
  const std::vector<std::string> expected{"redteam_query", "jailbreak_query", "image_path", "policy"};
  if (options.query_column != "jailbreak_query" && options.query_column != "redteam_query") {
    throw InputError(describe("JailBreakV-28K query column", "jailbreak_query or redteam_query", "\"" + options.query_column + "\""));
  }
  const size_t query = t.require(options.query_column, expected);
  const size_t image = t.require("image_path", expected);
  const size_t policy = t.require("policy", expected);
  const auto id = t.column("id");
  const auto format = t.column("format");
  const fs::path root = absolute_folder(options.image_root.empty() ? csv.parent_path() : options.image_root);
  std::vector<PromptItem> items;
  items.reserve(t.rows.size());
  for (size_t r = 0; r < t.rows.size(); ++r) {
    const auto& row = t.rows[r];
    PromptItem it;
    it.id = row_id(row, id, "jbv-", r, 5);
    it.prompt = nonblank(t, r, query, options.query_column, "a query");
    const std::string rel = trim(nonblank(t, r, image, "image_path", "an image path"));
    it.image = fs::path(rel).is_absolute() ? rel : (root / rel).lexically_normal().string();
    it.category = trim(row[policy]).empty() ? "harmful" : trim(row[policy]);
    it.harmful = true;
    if (format) it.task = trim(row[*format]);
    items.push_back(std::move(it));
  }
  check_unique(items, csv.string());
  return items;
}

std::vector<PromptItem> import_redteam2k(const fs::path& csv, const RedTeam2KOptions& options) {
  require_image(options.image, "RedTeam-2K");
  const CsvTable t = read_csv(csv, "a RedTeam-2K CSV (id,question,from,policy)");
  const size_t query = t.require(options.query_column, {options.query_column, "policy"});
  const size_t policy = t.require("policy", {options.query_column, "policy"});
  const auto id = t.column("id");
  const auto from = t.column("from");
  const std::string image = fs::absolute(options.image).lexically_normal().string();
  std::vector<PromptItem> items;
  items.reserve(t.rows.size());
  for (size_t r = 0; r < t.rows.size(); ++r) {
    const auto& row = t.rows[r];
    PromptItem it;
    it.id = row_id(row, id, "rt2k-", r, 4);
    it.prompt = nonblank(t, r, query, options.query_column, "a query");
    it.image = image;
    it.category = trim(row[policy]).empty() ? "harmful" : trim(row[policy]);
    it.harmful = true;
    if (from) it.task = trim(row[*from]);
    items.push_back(std::move(it));
  }
  check_unique(items, csv.string());
  return items;
}

std::vector<PromptItem> import_advbench(const fs::path& csv, const fs::path& image_folder, std::uint64_t seed) {
  const CsvTable t = read_csv(csv, "an AdvBench CSV (goal,target)");
  const size_t goal = t.require("goal", {"goal", "target"});
  const size_t target = t.require("target", {"goal", "target"});
  const auto images = list_images(image_folder);
  const auto perm = seeded_permutation(images.size(), seed);
  std::vector<PromptItem> items;
  for (size_t r = 0; r < t.rows.size(); ++r) {
    PromptItem it;
    it.id = "advbench-s" + std::to_string(seed) + "-" + padded(r, 4);
    it.prompt = nonblank(t, r, goal, "goal", "a behaviour");
    it.compliant = t.rows[r][target];
    it.image = images[perm[r % images.size()]].string();
    it.category = "advbench";
    it.harmful = true;
    items.push_back(std::move(it));
  }
  return items;
}

std::vector<PromptItem> import_images_x_prompts(const fs::path& image_folder, const fs::path& prompts_txt,
                                                const ImagesXPromptsOptions& options) {
  const std::string raw = read_text(prompts_txt, "a text file of prompts (one a line)");
  const std::string_view text = strip_bom(raw);
  check_utf8(text, prompts_txt.string());
  std::vector<std::string> prompts;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string line(text.substr(start, end - start));
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!trim(line).empty()) prompts.push_back(std::move(line));
    start = end + 1;
  }
  if (prompts.empty()) throw InputError(describe(prompts_txt.string(), "one prompt a line", "no prompt"));
  const auto images = list_images(image_folder);
  std::vector<PromptItem> items;
  items.reserve(prompts.size() * images.size());
  for (size_t p = 0; p < prompts.size(); ++p) {
    for (size_t i = 0; i < images.size(); ++i) {
      PromptItem it;
      it.id = options.id_prefix + "-p" + padded(p, 3) + "-i" + padded(i, 3);
      it.prompt = prompts[p];
      it.image = images[i].string();
      it.category = options.category;
      it.harmful = options.harmful;
      items.push_back(std::move(it));
    }
  }
  return items;
}

std::string format_image_pattern(const std::string& pattern, std::int64_t value) {
  std::string out;
  int conversions = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '%') {
      out += pattern[i];
      continue;
    }
    size_t j = i + 1;
    if (j < pattern.size() && pattern[j] == '%') {
      out += '%';
      i = j;
      continue;
    }
    bool zero = false;
    if (j < pattern.size() && pattern[j] == '0') zero = true, ++j;
    int width = 0;
    while (j < pattern.size() && pattern[j] >= '0' && pattern[j] <= '9' && width <= 32) width = width * 10 + (pattern[j++] - '0');
    if (j >= pattern.size() || pattern[j] != 'd' || width > 32) {
      throw InputError(describe("image pattern \"" + pattern + "\"", "one %d or %0Nd (N <= 32) and %% for a percent sign",
                                "\"" + pattern.substr(i, j - i + 1) + "\""));
    }
    const std::string sign = value < 0 ? "-" : "";
    std::string digits = std::to_string(value);
    if (!sign.empty()) digits.erase(0, 1);
    const size_t len = sign.size() + digits.size();
    const size_t pad = static_cast<size_t>(width) > len ? static_cast<size_t>(width) - len : 0;
    out += zero ? sign + std::string(pad, '0') + digits : std::string(pad, ' ') + sign + digits;
    ++conversions;
    i = j;
  }
  if (conversions != 1) {
    throw InputError(describe("image pattern \"" + pattern + "\"", "exactly one %d or %0Nd for the image id",
                              std::to_string(conversions)));
  }
  return out;
}

std::vector<PromptItem> import_vqa_v2(const fs::path& questions_json, const fs::path& annotations_json,
                                      const VqaOptions& options) {
  auto read_json = [](const fs::path& file, const std::string& what) {
    const std::string raw = read_text(file, what);
    const std::string_view text = strip_bom(raw);
    check_utf8(text, file.string());
    return json_util::parse(text, file.string());
  };
  const nlohmann::json qdoc = read_json(questions_json, "a VQA questions JSON ({\"questions\": [...]})");
  const nlohmann::json adoc = read_json(annotations_json, "a VQA annotations JSON ({\"annotations\": [...]})");
  auto list = [](const nlohmann::json& doc, const fs::path& file, const char* key) -> const nlohmann::json& {
    if (!doc.is_object() || !doc.contains(key) || !doc.at(key).is_array()) {
      throw InputError(describe(file.string() + ": key '" + key + "'", "an array", doc.is_object() && doc.contains(key) ? json_util::type_name(doc.at(key)) : "nothing (the key is missing)"));
    }
    return doc.at(key);
  };
  const auto& questions = list(qdoc, questions_json, "questions");
  const auto& annotations = list(adoc, annotations_json, "annotations");

  struct Annotation {
    std::string majority;
    std::vector<std::string> answers;
    std::string answer_type;
  };
  std::map<int64_t, Annotation> by_question;
  for (size_t i = 0; i < annotations.size(); ++i) {
    const json_util::Reader a(annotations[i], annotations_json.string(), "annotations[" + std::to_string(i) + "].");
    Annotation ann;
    const auto& list_answers = a.json().contains("answers") ? a.json().at("answers") : nlohmann::json::array();
    if (!list_answers.is_array()) throw InputError(describe(a.where("answers"), "an array", json_util::type_name(list_answers)));
    for (size_t k = 0; k < list_answers.size(); ++k) {
      const json_util::Reader ans(list_answers[k], annotations_json.string(), "annotations[" + std::to_string(i) + "].answers[" + std::to_string(k) + "].");
      ann.answers.push_back(ans.string("answer"));
    }
    ann.majority = a.string("multiple_choice_answer", "");
    if (ann.majority.empty() && !ann.answers.empty()) {
      std::map<std::string, size_t> counts;
      for (const auto& s : ann.answers) ++counts[s];
      size_t best = 0;
      for (const auto& [s, c] : counts) {
        if (c > best) best = c, ann.majority = s;  // map order: ties go to the byte-wise smallest
      }
    }
    ann.answer_type = a.string("answer_type", "");
    by_question[a.integer("question_id")] = std::move(ann);
  }
  const fs::path folder = absolute_folder(options.image_folder.empty() ? questions_json.parent_path() : options.image_folder);
  std::vector<PromptItem> items;
  items.reserve(questions.size());
  for (size_t i = 0; i < questions.size(); ++i) {
    const json_util::Reader q(questions[i], questions_json.string(), "questions[" + std::to_string(i) + "].");
    const int64_t qid = q.integer("question_id");
    const auto found = by_question.find(qid);
    if (found == by_question.end()) {
      throw InputError(describe(q.where("question_id"), "an annotation for question " + std::to_string(qid) + " in " + annotations_json.string(),
                                "none", "Use the annotations file of the same split as the questions"));
    }
    PromptItem it;
    it.id = "vqa-" + std::to_string(qid);
    it.prompt = q.string("question") + options.prompt_suffix;
    it.image = (folder / format_image_pattern(options.image_pattern, q.integer("image_id"))).string();
    it.category = "benign";
    it.harmful = false;
    it.expected = found->second.majority;
    it.answers = found->second.answers;
    it.task = found->second.answer_type;
    items.push_back(std::move(it));
  }
  check_unique(items, questions_json.string());
  return items;
}

std::vector<PromptItem> import_xstest(const fs::path& csv, const XsTestOptions& options) {
  require_image(options.image, "XSTest");
  const CsvTable t = read_csv(csv, "an XSTest CSV (id,prompt,type,label,...)");
  const size_t prompt = t.require("prompt", {"prompt", "type", "label"});
  const size_t type = t.require("type", {"prompt", "type", "label"});
  const auto label = t.column("label");
  const auto id = t.column("id");
  const std::string image = fs::absolute(options.image).lexically_normal().string();
  std::vector<PromptItem> items;
  for (size_t r = 0; r < t.rows.size(); ++r) {
    const auto& row = t.rows[r];
    const std::string kind = trim(row[type]);
    bool harmful = false;
    if (label) {
      const std::string l = ascii_lower(trim(row[*label]));
      if (l != "safe" && l != "unsafe") {
        throw InputError(describe(t.where(r) + ": column 'label'", "\"safe\" or \"unsafe\"", "\"" + row[*label] + "\""));
      }
      harmful = l == "unsafe";
    } else {
      harmful = kind.rfind("contrast_", 0) == 0;  // XSTest v1: unsafe contrast prompts
    }
    if (options.safe_only && harmful) continue;
    PromptItem it;
    it.id = row_id(row, id, "xstest-", r + 1, 3);
    it.prompt = nonblank(t, r, prompt, "prompt", "a prompt");
    it.image = image;
    it.harmful = harmful;
    it.category = harmful ? (kind.empty() ? "harmful" : kind) : "benign";
    it.task = kind;
    items.push_back(std::move(it));
  }
  check_unique(items, csv.string());
  return items;
}

void write_blank_image(const fs::path& file, int width, int height, int grey) {
  if (width <= 0 || height <= 0 || width > 8192 || height > 8192 || grey < 0 || grey > 255) {
    throw InputError(describe("blank image", "1..8192 pixels a side and a grey level 0..255",
                              std::to_string(width) + "x" + std::to_string(height) + " grey " + std::to_string(grey)));
  }
  const std::uint32_t row = (static_cast<std::uint32_t>(width) * 3 + 3) & ~3u;
  const std::uint32_t pixels = row * static_cast<std::uint32_t>(height);
  std::string out;
  auto u16 = [&](std::uint32_t v) { out += static_cast<char>(v & 0xFF), out += static_cast<char>((v >> 8) & 0xFF); };
  auto u32 = [&](std::uint32_t v) { u16(v & 0xFFFF), u16(v >> 16); };
  out += "BM";
  u32(54 + pixels), u32(0), u32(54);                                                  // file header
  u32(40), u32(static_cast<std::uint32_t>(width)), u32(static_cast<std::uint32_t>(height));  // info header
  u16(1), u16(24), u32(0), u32(pixels), u32(2835), u32(2835), u32(0), u32(0);
  std::string line(row, '\0');
  std::fill(line.begin(), line.begin() + static_cast<std::ptrdiff_t>(width) * 3, static_cast<char>(grey));
  for (int y = 0; y < height; ++y) out += line;
  write_file_atomic(file, out);
}

std::vector<PromptItem> sample_items(const std::vector<PromptItem>& items, size_t n, std::uint64_t seed) {
  if (n == 0 || n >= items.size()) return items;
  auto picked = seeded_permutation(items.size(), seed);
  picked.resize(n);
  std::sort(picked.begin(), picked.end());
  std::vector<PromptItem> out;
  out.reserve(n);
  for (size_t i : picked) out.push_back(items[i]);
  return out;
}

}  // namespace icet::eval
