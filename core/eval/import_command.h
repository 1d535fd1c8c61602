#pragma once

// `icet import FORMAT`: converts a public evaluation set, as downloaded, into a prompt set file
// (.jsonl or .csv) that `icet eval`, `icet train` and the app read.

#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace icet::eval {

struct ImportCommand {
  std::string format;  // one of import_formats()
  std::filesystem::path csv;            // jailbreakv, redteam2k, advbench, xstest
  std::filesystem::path questions;      // vqa-v2
  std::filesystem::path annotations;    // vqa-v2
  std::filesystem::path prompts;        // images-x-prompts: one prompt a line
  std::filesystem::path images;         // advbench, images-x-prompts, vqa-v2: an image folder
  std::filesystem::path image;          // redteam2k, xstest: the one image (empty: a blank one beside `out`)
  std::filesystem::path image_root;     // jailbreakv: image_path is relative to it (default: the CSV's folder)
  std::string query_column;             // jailbreakv, redteam2k (empty: the format's default)
  std::string image_pattern;            // vqa-v2 (empty: COCO_val2014_%012d.jpg)
  std::string prompt_suffix = "\x01";   // vqa-v2 ("\x01": LLaVA-1.5's default suffix)
  std::uint64_t seed = 0;               // advbench pairing and --sample
  bool safe_only = false;               // xstest
  bool benign = false;                  // images-x-prompts: the prompts are benign
  std::size_t sample = 0;               // keep this many seeded-random items (0: all)
  std::filesystem::path out;
};

// "jailbreakv", "redteam2k", "advbench", "images-x-prompts", "vqa-v2", "xstest".
const char* const* import_formats();

// Imports, writes `out` (write_prompt_set) and returns a summary: format, out, items, harmful,
// benign, seed, sampled_from. Missing inputs for the format are InputErrors naming the option.
nlohmann::json run_import_command(const ImportCommand& cmd);

}  // namespace icet::eval
