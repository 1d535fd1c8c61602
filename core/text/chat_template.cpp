#include "core/text/chat_template.h"


#include "core/base/atomic_file.h"
#include "core/base/error.h"
#include "core/base/json_util.h"

namespace icet::text {
namespace {

std::string read_file(const std::filesystem::path& file) {
  // Chat templates are a few KiB; tokenizer_config.json files that carry one are under 1 MiB
  // apart from those that embed added tokens (a few MiB).
  return read_file_limited(file, json_util::kMaxJsonFileBytes, "a tokenizer or template file");
}

// tokenizer_config.json "chat_template": a string, or [{"name": ..., "template": ...}, ...].
std::optional<std::string> template_entry(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_array()) {
    for (const auto& entry : value) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        return entry["template"].get<std::string>();
      }
    }
  }
  return std::nullopt;
}

}  // namespace

void append_plain_text(std::string_view text, std::vector<Segment>& out) {
  if (text.empty()) return;
  if (out.empty() || out.back().special) {
    out.push_back({std::string(text), false});
  } else {
    out.back().text += text;
  }
}

void append_template_text(std::string_view s, const Tokenizer& tokenizer, std::vector<Segment>& out) {
  size_t pos = 0;
  size_t from = 0;
  while (true) {
    const size_t open = s.find('<', from);
    if (open == std::string_view::npos) break;
    const size_t close = s.find('>', open + 1);
    if (close == std::string_view::npos) break;
    const std::string_view token = s.substr(open, close + 1 - open);
    // Special tokens are short and have no whitespace ("<|eot_id|>", "</s>", "<image>").
    const bool plausible = token.size() <= 64 && token.find_first_of(" \t\n<", 1) == std::string_view::npos;
    const auto id = plausible ? tokenizer.token_id(token) : std::nullopt;
    if (id && tokenizer.is_special(*id)) {
      append_plain_text(s.substr(pos, open - pos), out);
      out.push_back({std::string(token), true});
      pos = from = close + 1;
    } else {
      from = open + 1;
    }
  }
  append_plain_text(s.substr(pos), out);
}

std::optional<ChatTemplate> ChatTemplate::load(const std::filesystem::path& dir) {
  nlohmann::ordered_json specials = nlohmann::ordered_json::object();
  std::optional<std::string> source;
  std::string origin;
  const std::filesystem::path config_file = dir / "tokenizer_config.json";
  if (std::filesystem::exists(config_file)) {
    const nlohmann::json config = json_util::read_file(config_file);
    for (const char* key : {"bos_token", "eos_token", "pad_token", "unk_token"}) {
      if (!config.contains(key)) continue;
      const nlohmann::json& v = config[key];
      if (v.is_string()) specials[key] = v.get<std::string>();
      if (v.is_object() && v.contains("content") && v["content"].is_string()) specials[key] = v["content"].get<std::string>();
    }
    if (config.contains("chat_template")) {
      source = template_entry(config["chat_template"]);
      origin = config_file.string() + " chat_template";
    }
  }
  if (std::filesystem::exists(dir / "chat_template.json")) {
    const nlohmann::json j = json_util::read_file(dir / "chat_template.json");
    if (j.contains("chat_template") && j["chat_template"].is_string()) {
      source = j["chat_template"].get<std::string>();
      origin = (dir / "chat_template.json").string();
    }
  }
  if (std::filesystem::exists(dir / "chat_template.jinja")) {
    source = read_file(dir / "chat_template.jinja");
    origin = (dir / "chat_template.jinja").string();
  }
  if (!source) return std::nullopt;
  return ChatTemplate(*source, origin, specials);
}

ChatTemplate::ChatTemplate(const std::string& source, std::string origin, nlohmann::ordered_json special_tokens)
    : source_(source),
      origin_(std::move(origin)),
      template_(std::make_shared<const jinja::Template>(source, origin_)),
      special_tokens_(special_tokens.is_object() ? std::move(special_tokens) : nlohmann::ordered_json::object()),
      // Templates that read message['content'] as typed parts (llava-hf, Mllama, Llama Guard
      // 3 1B/11B) get parts; the others get strings.
      content_parts_(source.find("['type']") != std::string::npos || source.find("('type'") != std::string::npos ||
                     source.find("['text']") != std::string::npos || source.find(".type") != std::string::npos) {}

nlohmann::ordered_json ChatTemplate::context(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  nlohmann::ordered_json ctx = special_tokens_;
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) {
    nlohmann::ordered_json content;
    if (content_parts_) {
      content = nlohmann::ordered_json::array();
      if (m.image) content.push_back({{"type", "image"}});
      content.push_back({{"type", "text"}, {"text", m.content}});
    } else {
      content = m.content;
    }
    list.push_back({{"role", m.role}, {"content", std::move(content)}});
  }
  ctx["messages"] = std::move(list);
  // apply_chat_template passes these even when unused (templates test "tools is not none").
  ctx["tools"] = nullptr;
  ctx["documents"] = nullptr;
  ctx["add_generation_prompt"] = add_generation_prompt;
  return ctx;
}

std::vector<Segment> ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                          const Tokenizer& tokenizer) const {
  std::vector<Segment> out;
  for (const jinja::Span& span : template_->render(context(messages, add_generation_prompt), {"messages"})) {
    if (span.data) {
      append_plain_text(span.text, out);
    } else {
      append_template_text(span.text, tokenizer, out);
    }
  }
  return out;
}

std::string ChatTemplate::render_text(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  return template_->render_text(context(messages, add_generation_prompt));
}

}  // namespace icet::text
