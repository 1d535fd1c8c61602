#pragma once

// Model cards (models/cards/*.json): the judges and reward models the app supports, with the
// Hugging Face repository a user downloads, the family, the template version and label tokens.

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace icet::safety {

struct ModelCard {
  std::string id;            // unique, e.g. "llama-guard-3-8b"
  std::string hf_repo;       // e.g. "meta-llama/Llama-Guard-3-8B"
  std::string kind;          // "judge", "reward_model" or "vlm" (a model under study)
  std::string family;        // "llama_guard", "gpt2_reward", "llama_reward"
  std::string architecture;  // config.json architectures[0]
  int template_version = 0;  // Llama Guard 1/2/3; 0 for reward models
  std::vector<std::string> categories;
  std::map<std::string, std::string> label_tokens;  // "safe"/"unsafe" -> token piece
  std::string verdict_prefix;                       // text the judge writes before the verdict
  std::string prompt_format;                        // reward models; VLMs: engine prompt format
  bool paper_choice = false;                        // the model the paper's metrics use
  std::string paper_choice_note;
  std::string notes;
  std::filesystem::path file;
};

// Throws icet::InputError naming the file and key for a malformed card.
ModelCard load_model_card(const std::filesystem::path& file);
// Every *.json card of a folder, sorted by id; ids must be unique.
std::vector<ModelCard> load_model_cards(const std::filesystem::path& dir);

}  // namespace icet::safety
