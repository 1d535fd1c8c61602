#pragma once

// Import of public evaluation sets, as users download them, into PromptItems (torch-free).
// Every text file is read through read_file_limited (kMaxImportBytes), checked as strict UTF-8
// (errors name the file and the line) and, for CSV, parsed by parse_csv (RFC 4180, BOM, CRLF).
// Image paths in the items are absolute (the folder the user gave, joined with the file name),
// so the set can be written anywhere with write_prompt_set; ids are unique within one import.
//
//   format           source                                  items
//   jailbreakv       JailBreakV_28K.csv / mini_*.csv         harmful; category = policy; task = format
//   redteam2k        RedTeam_2K.csv + one image               harmful; category = policy; task = from
//   advbench         harmful_behaviors.csv + image folder     harmful; compliant = target; seeded pairing
//   images_x_prompts image folder + prompts.txt               every prompt with every image (10x10 set)
//   vqa_v2           questions + annotations JSON + images    benign; expected = majority answer; answers
//   xstest           xstest_prompts.csv + one image           label safe -> benign, unsafe -> harmful

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/eval/prompt_set.h"
#include "core/eval/random.h"

namespace icet::eval {

// Largest file an importer reads (the full VQA-v2 val annotations are about 150 MiB).
inline constexpr std::uint64_t kMaxImportBytes = 512ull << 20;

// The image files directly in `folder` (.jpg .jpeg .png .bmp .webp .gif .tif .tiff, any case),
// sorted by file name bytes; InputError when the folder is missing or holds no image.
std::vector<std::filesystem::path> list_images(const std::filesystem::path& folder);

// JailBreakV-28K: columns redteam_query, jailbreak_query, image_path, policy (others such as id,
// format, from are used when present: id -> item id, format -> task).
struct JailbreakVOptions {
  std::string query_column = "jailbreak_query";  // or "redteam_query"
  std::filesystem::path image_root;              // image_path is relative to it; empty: the CSV's folder
};
std::vector<PromptItem> import_jailbreakv(const std::filesystem::path& csv, const JailbreakVOptions& options = {});

// RedTeam-2K (RedTeam_2K.csv of JailBreakV-28K: id, question, from, policy; the paper's L-PPO
// training queries): text-only, so every item gets `image`. category = policy, task = from,
// harmful. Id "rt2k-<id>" (the row number when there is no id column).
struct RedTeam2KOptions {
  std::filesystem::path image;            // required
  std::string query_column = "question";
};
std::vector<PromptItem> import_redteam2k(const std::filesystem::path& csv, const RedTeam2KOptions& options);

// AdvBench harmful_behaviors.csv (goal, target) with images from `image_folder` (list_images).
// Pairing: p = seeded_permutation(#images, seed); row i gets image p[i mod #images] (no image is
// reused while rows <= images). Item id "advbench-s<seed>-<row 0-based, 4 digits>"; the image
// path is the pairing. prompt = goal, compliant = target, category "advbench", harmful.
std::vector<PromptItem> import_advbench(const std::filesystem::path& csv, const std::filesystem::path& image_folder,
                                        std::uint64_t seed);

// Every prompt line of `prompts_txt` (blank lines skipped, CR stripped) with every image of
// `image_folder`, prompt-major. Ids "<prefix>-p<prompt 0-based, 3 digits>-i<image, 3 digits>".
struct ImagesXPromptsOptions {
  bool harmful = true;
  std::string category = "custom";
  std::string id_prefix = "custom";
};
std::vector<PromptItem> import_images_x_prompts(const std::filesystem::path& image_folder,
                                                const std::filesystem::path& prompts_txt,
                                                const ImagesXPromptsOptions& options = {});

// VQA-v2: questions file {"questions": [{image_id, question, question_id}]} and annotations file
// {"annotations": [{question_id, multiple_choice_answer, answers: [{answer}], answer_type}]}.
// expected = multiple_choice_answer (VQA's most frequent answer; when absent, the most frequent
// of `answers`, ties to the byte-wise smallest); answers = every human answer (for vqa_accuracy);
// task = answer_type. Image = image_folder / pattern with the image id ("%012d", "%d", "%0Nd").
// Id "vqa-<question_id>". A question without an annotation is an InputError.
struct VqaOptions {
  std::filesystem::path image_folder;
  std::string image_pattern = "COCO_val2014_%012d.jpg";
  // Appended to each question (LLaVA-1.5's VQA-v2 prompt; "" for the bare question).
  std::string prompt_suffix = "\nAnswer the question using a single word or phrase.";
};
std::vector<PromptItem> import_vqa_v2(const std::filesystem::path& questions_json,
                                      const std::filesystem::path& annotations_json, const VqaOptions& options);

// Formats `pattern` with one integer: "%d" or "%0Nd" (N <= 32) exactly once, "%%" for '%'.
// Anything else is an InputError (no printf on user text).
std::string format_image_pattern(const std::string& pattern, std::int64_t value);

// XSTest (xstest_prompts.csv: id, prompt, type, label, focus, note; a file without a label
// column (v1) takes types starting "contrast_" as unsafe). label "safe" -> benign (category "benign"), "unsafe" -> harmful
// (category = type); task = type. Text-only: every item gets `image` (e.g. one written by
// write_blank_image). Id "xstest-<id>" (the row number when there is no id column).
struct XsTestOptions {
  std::filesystem::path image;  // required
  bool safe_only = false;       // the paper's over-refusal split
};
std::vector<PromptItem> import_xstest(const std::filesystem::path& csv, const XsTestOptions& options);

// Writes a uniform grey (0..255) 24-bit BMP of width x height (for text-only sets).
void write_blank_image(const std::filesystem::path& file, int width = 336, int height = 336, int grey = 255);

// The items at `n` seeded-random positions (seeded_permutation), kept in their original order;
// all of them when n == 0 or n >= size (a "mini" subset that any machine reproduces).
std::vector<PromptItem> sample_items(const std::vector<PromptItem>& items, size_t n, std::uint64_t seed);

}  // namespace icet::eval
