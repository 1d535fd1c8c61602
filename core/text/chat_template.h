#pragma once

// A snapshot's own chat template, rendered to tokenizer segments as transformers'
// apply_chat_template(tokenize=True) would tokenize it, except that conversation text is never
// parsed for special tokens (a typed "<|eot_id|>" stays text). Torch-free.

#include <nlohmann/json.hpp>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/text/jinja.h"
#include "core/text/tokenizer.h"

namespace icet::text {

struct ChatMessage {
  std::string role;     // "system", "user", "assistant"
  std::string content;  // the message text
  bool image = false;   // an image part before the text (content-parts templates only)
};

class ChatTemplate {
 public:
  // The template a snapshot ships, first found: chat_template.jinja, chat_template.json
  // ("chat_template"), tokenizer_config.json ("chat_template" as a string, or the "default"
  // entry of a list of named templates). nullopt when there is none; InputError naming the file
  // for a template that does not parse. bos_token/eos_token/... come from tokenizer_config.json.
  static std::optional<ChatTemplate> load(const std::filesystem::path& snapshot_dir);
  ChatTemplate(const std::string& source, std::string origin, nlohmann::ordered_json special_tokens = {});

  // Segments of the rendered conversation: the template's own text with the special tokens the
  // tokenizer knows split out, and the messages as plain text.
  std::vector<Segment> render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                              const Tokenizer& tokenizer) const;
  // The rendered text (what HF's apply_chat_template(tokenize=False) returns).
  std::string render_text(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

  const std::string& source() const { return source_; }
  const std::string& origin() const { return origin_; }  // e.g. "tokenizer_config.json chat_template"
  // Whether the template reads message content as typed parts ([{"type": "text", ...}]).
  bool content_parts() const { return content_parts_; }

 private:
  nlohmann::ordered_json context(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

  std::string source_;
  std::string origin_;
  std::shared_ptr<const jinja::Template> template_;
  nlohmann::ordered_json special_tokens_;
  bool content_parts_ = false;
};

// Template text -> segments: "<...>" pieces that are special tokens of `tokenizer` become
// special segments, the rest is text. Appends to `out`, merging adjacent text.
void append_template_text(std::string_view text, const Tokenizer& tokenizer, std::vector<Segment>& out);
// Plain text (never parsed for special tokens), merged into a preceding text segment.
void append_plain_text(std::string_view text, std::vector<Segment>& out);

}  // namespace icet::text
