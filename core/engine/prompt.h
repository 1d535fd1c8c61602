#pragma once

// How a user's message becomes prompt ids, shared by engine::Session (the lab) and rl::Policy
// (L-PPO rollouts), so both ask the model the same thing. Torch-free.

#include <filesystem>
#include <string>
#include <vector>

#include "core/text/tokenizer.h"

namespace icet::engine {

// The snapshot's chat template: chat_template.json, else tokenizer_config.json (a string, or
// a list of named templates of which "default" is used). "" when there is none or it is
// unreadable (logged).
std::string read_chat_template(const std::filesystem::path& dir);

// The prompt format of a snapshot: `requested` unless "auto"; else the one its chat template
// renders (detect_prompt_format); else the family's usual one (llava: "llava", mllama:
// "llama3", llava_next: "mistral" when its text model is Mistral, else "vicuna").
std::string resolve_prompt_format(const std::filesystem::path& dir, const std::string& family,
                                  const std::string& text_model_type, const std::string& requested);

// The message in `format` (see prompt_formats() in session.h) around the image placeholder
// `image` segments -> ids (BOS as the tokenizer adds it). The user's text is a text segment: a
// typed "<image>" or "</s>" never becomes a special token. InputError for an empty message.
std::vector<int64_t> build_prompt_ids(const text::Tokenizer& tokenizer, const std::string& format,
                                      const std::vector<text::Segment>& image, const std::string& prompt);

}  // namespace icet::engine
