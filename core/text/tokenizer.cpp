#include "core/text/tokenizer.h"

#include "core/base/error.h"
#include "core/text/hf_tokenizer.h"
#include "core/text/llama_tokenizer.h"

namespace icet::text {
namespace {

namespace fs = std::filesystem;

// Tokenizer formats in order of preference: the first file present decides. HF's slow
// tokenizer reads tokenizer.model, and that is the behaviour the references record.
struct Format {
  const char* file;
  std::unique_ptr<Tokenizer> (*load)(const fs::path& dir);
};

// In order of preference. tokenizer.model first: the slow LlamaTokenizer is what the
// reference fixtures were recorded with, and real LLaVA snapshots ship both files.
const Format kFormats[] = {
    {"tokenizer.model",
     [](const fs::path& dir) -> std::unique_ptr<Tokenizer> { return LlamaTokenizer::load(dir); }},
    {"tokenizer.json",
     [](const fs::path& dir) -> std::unique_ptr<Tokenizer> {
       return HfTokenizer::load(dir / "tokenizer.json", dir / "tokenizer_config.json");
     }},
};

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const fs::path& snapshot_dir) {
  std::error_code ec;
  if (!fs::is_directory(snapshot_dir, ec)) {
    throw InputError(describe(snapshot_dir.string(), "a Hugging Face snapshot folder",
                              fs::exists(snapshot_dir, ec) ? "a file" : "no such folder",
                              "Choose the folder that holds config.json and the tokenizer files"));
  }
  std::string looked_for;
  for (const Format& format : kFormats) {
    if (fs::exists(snapshot_dir / format.file, ec)) {
      return format.load(snapshot_dir);
    }
    looked_for += looked_for.empty() ? format.file : std::string(", ") + format.file;
  }
  throw InputError(describe(snapshot_dir.string(), "a tokenizer file (" + looked_for + ")", "none",
                            "Copy the tokenizer files of the Hugging Face snapshot "
                            "(tokenizer.model, tokenizer_config.json, "
                            "special_tokens_map.json) into this folder"));
}

}  // namespace icet::text
