#pragma once

// Prompt sets: (image, prompt) items for evaluation and RL, as JSONL (one object a line) or CSV
// with a header row. Fields: id, image (path relative to the set file's folder), prompt,
// category ("benign" or a harm category), harmful (bool), expected (benign items: the exact
// answer), optional refusal and compliant (reference answers for harmful items),
// task (what the item asks, for per-task scores) and answers (all reference answers, VQA-style).

#include <filesystem>
#include <string>
#include <vector>

namespace icet::eval {

struct PromptItem {
  std::string id;
  std::string image;  // as written in the file (relative to the set's folder, or absolute)
  std::string prompt;
  std::string category = "benign";
  bool harmful = false;
  std::string expected;   // benign: exact answer; may be empty for harmful items
  std::string refusal;    // optional
  std::string compliant;  // optional
  std::string task;       // optional: what the item asks (demo: "colour", "count", ...), for per-task scores
  // optional: every reference answer (VQA-v2: the 10 human answers) for vqa_accuracy; JSONL
  // "answers": ["..."], CSV column "answers" holding that JSON array (written only when non-empty).
  std::vector<std::string> answers;
};

struct PromptSet {
  std::filesystem::path file;  // the set file it was read from
  std::string content_hash;    // FNV-1a 64 of the bytes read (load_prompt_set); "" for sets built in code
  std::vector<PromptItem> items;

  // The image of `item`, resolved against the set file's folder.
  std::filesystem::path image_path(const PromptItem& item) const;
};

// Reads a .jsonl or .csv prompt set. Problems throw icet::InputError naming the file, the line
// and the field (missing id/image/prompt, wrong types, bad CSV quoting, duplicate ids).
PromptSet load_prompt_set(const std::filesystem::path& file);

// Writes JSONL (".jsonl") or CSV (".csv", with a header) atomically enough for build outputs.
void write_prompt_set(const std::filesystem::path& file, const std::vector<PromptItem>& items);

}  // namespace icet::eval
