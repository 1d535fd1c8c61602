#include "core/eval/import_command.h"

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/eval/import.h"
#include "core/eval/prompt_set.h"

namespace icet::eval {
namespace fs = std::filesystem;
namespace {

const fs::path& require(const fs::path& value, const char* option, const std::string& format) {
  if (value.empty()) {
    throw InputError(describe("icet import " + format, std::string("the option ") + option, "none"));
  }
  return value;
}

// Text-only sets need an image: the user's, or a blank one written beside the output.
fs::path image_or_blank(const ImportCommand& cmd) {
  if (!cmd.image.empty()) return fs::absolute(cmd.image).lexically_normal();
  const fs::path blank = fs::absolute(cmd.out).parent_path() / "blank.bmp";
  if (!fs::exists(blank)) write_blank_image(blank);
  return blank;
}

}  // namespace

const char* const* import_formats() {
  static const char* const formats[] = {"jailbreakv", "redteam2k", "advbench", "images-x-prompts", "vqa-v2", "xstest",
                                        nullptr};
  return formats;
}

nlohmann::json run_import_command(const ImportCommand& cmd) {
  const std::string& f = cmd.format;
  require(cmd.out, "--out", f);
  std::vector<PromptItem> items;
  if (f == "jailbreakv") {
    JailbreakVOptions o;
    if (!cmd.query_column.empty()) o.query_column = cmd.query_column;
    o.image_root = cmd.image_root;
    items = import_jailbreakv(require(cmd.csv, "--csv", f), o);
  } else if (f == "redteam2k") {
    RedTeam2KOptions o;
    if (!cmd.query_column.empty()) o.query_column = cmd.query_column;
    o.image = image_or_blank(cmd);
    items = import_redteam2k(require(cmd.csv, "--csv", f), o);
  } else if (f == "advbench") {
    const fs::path& csv = require(cmd.csv, "--csv", f);  // checked in the order of the usage text
    items = import_advbench(csv, require(cmd.images, "--images", f), cmd.seed);
  } else if (f == "images-x-prompts") {
    ImagesXPromptsOptions o;
    o.harmful = !cmd.benign;
    if (cmd.benign) o.category = "benign";
    const fs::path& images = require(cmd.images, "--images", f);
    items = import_images_x_prompts(images, require(cmd.prompts, "--prompts", f), o);
  } else if (f == "vqa-v2") {
    VqaOptions o;
    o.image_folder = require(cmd.images, "--images", f);
    if (!cmd.image_pattern.empty()) o.image_pattern = cmd.image_pattern;
    if (cmd.prompt_suffix != "\x01") o.prompt_suffix = cmd.prompt_suffix;
    const fs::path& questions = require(cmd.questions, "--questions", f);
    items = import_vqa_v2(questions, require(cmd.annotations, "--annotations", f), o);
  } else if (f == "xstest") {
    XsTestOptions o;
    o.image = image_or_blank(cmd);
    o.safe_only = cmd.safe_only;
    items = import_xstest(require(cmd.csv, "--csv", f), o);
  } else {
    std::string known;
    for (const char* const* p = import_formats(); *p != nullptr; ++p) known += std::string(known.empty() ? "" : ", ") + *p;
    throw InputError(describe("icet import", "a format among " + known, "\"" + f + "\""));
  }
  const size_t total = items.size();
  items = sample_items(items, cmd.sample, cmd.seed);
  write_prompt_set(cmd.out, items);
  size_t harmful = 0;
  for (const auto& it : items) harmful += it.harmful ? 1 : 0;
  return {{"format", f},          {"out", cmd.out.string()},         {"items", items.size()},
          {"harmful", harmful},   {"benign", items.size() - harmful}, {"seed", cmd.seed},
          {"sampled_from", total}};
}

}  // namespace icet::eval
