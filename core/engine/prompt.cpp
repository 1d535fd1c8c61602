#include "core/engine/prompt.h"

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/base/log.h"
#include "core/base/strings.h"
#include "core/engine/session.h"

namespace icet::engine {
namespace {

const char* const kVicunaSystem =
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions.";

}  // namespace

std::string read_chat_template(const std::filesystem::path& dir) {
  try {
    if (std::filesystem::exists(dir / "chat_template.json")) {
      const nlohmann::json j = json_util::read_file(dir / "chat_template.json");
      if (j.contains("chat_template") && j["chat_template"].is_string()) return j["chat_template"].get<std::string>();
    }
    if (std::filesystem::exists(dir / "tokenizer_config.json")) {
      const nlohmann::json j = json_util::read_file(dir / "tokenizer_config.json");
      if (j.contains("chat_template")) {
        const auto& t = j["chat_template"];
        if (t.is_string()) return t.get<std::string>();
        if (t.is_array()) {
          for (const auto& e : t) {
            if (e.value("name", "") == "default" && e.contains("template") && e["template"].is_string()) {
              return e["template"].get<std::string>();
            }
          }
        }
      }
    }
  } catch (const Error& e) {
    log::get("engine")->warn("{}: chat template unreadable ({}); using the family's default prompt format",
                             dir.string(), e.what());
  }
  return {};
}

std::string resolve_prompt_format(const std::filesystem::path& dir, const std::string& family,
                                  const std::string& text_model_type, const std::string& requested) {
  if (requested != "auto") return requested;
  std::string f = detect_prompt_format(read_chat_template(dir), family);
  if (f.empty()) {
    f = family == "mllama" ? "llama3" : family == "llava" ? "llava" : text_model_type == "mistral" ? "mistral" : "vicuna";
    log::get("engine")->info("{}: no known chat template; using the \"{}\" prompt format", dir.string(), f);
  }
  return f;
}

std::vector<int64_t> build_prompt_ids(const text::Tokenizer& tokenizer, const std::string& f,
                                      const std::vector<text::Segment>& image, const std::string& prompt) {
  if (prompt.find_first_not_of(" \t\r\n") == std::string::npos) {
    throw InputError("the prompt is empty: type a question or an instruction about the image");
  }
  std::vector<text::Segment> segments;
  bool bos = tokenizer.add_bos();
  if (f == "llama3") {
    // Tokenized with add_special_tokens=False (Llama 3.2 Vision model card): one BOS, in the text.
    bos = false;
    segments = {{"<|begin_of_text|>", true}, {"<|start_header_id|>", true}, {"user", false},
                {"<|end_header_id|>", true}, {"\n\n", false}};
    segments.insert(segments.end(), image.begin(), image.end());
    segments.push_back({trim(prompt), false});  // the template trims the message
    segments.insert(segments.end(), {{"<|eot_id|>", true}, {"<|start_header_id|>", true}, {"assistant", false},
                                     {"<|end_header_id|>", true}, {"\n\n", false}});
  } else if (f == "mistral") {
    segments = {{"[INST] ", false}};
    segments.insert(segments.end(), image.begin(), image.end());
    segments.push_back({"\n" + prompt + " [/INST]", false});
  } else {
    segments = {{f == "vicuna" ? std::string(kVicunaSystem) + " USER: " : std::string("USER: "), false}};
    segments.insert(segments.end(), image.begin(), image.end());
    segments.push_back({"\n" + prompt + " ASSISTANT:", false});
  }
  std::vector<int64_t> ids;
  if (bos && tokenizer.bos_id()) ids.push_back(*tokenizer.bos_id());
  const auto body = tokenizer.encode_segments(segments);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

}  // namespace icet::engine
