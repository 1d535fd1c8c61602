#pragma once

#include <filesystem>
#include <memory>

#include "core/text/tokenizer.h"

namespace icet::safety {

// The tokenizer of a judge or reward-model snapshot: tokenizer.model (SentencePiece) through
// text::load_tokenizer, otherwise tokenizer.json (GPT-2, Llama 3 / Llama Guard 2 and 3 as
// published) through text::HfTokenizer. InputError naming the folder or file otherwise.
std::unique_ptr<text::Tokenizer> load_snapshot_tokenizer(const std::filesystem::path& dir);

}  // namespace icet::safety
