#include "core/safety/snapshot_tokenizer.h"

#include "core/text/hf_tokenizer.h"

namespace icet::safety {

std::unique_ptr<text::Tokenizer> load_snapshot_tokenizer(const std::filesystem::path& dir) {
  if (!std::filesystem::exists(dir / "tokenizer.model") && std::filesystem::exists(dir / "tokenizer.json")) {
    return text::HfTokenizer::load(dir / "tokenizer.json", dir / "tokenizer_config.json");
  }
  return text::load_tokenizer(dir);
}

}  // namespace icet::safety
