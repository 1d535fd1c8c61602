#pragma once

// A tiny training world from the HF reference fixtures (llava, gpt2_rm, llama_guard): a prompt
// set with the llava fixture image, and an LppoConfig small enough for unit tests.

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/rl/trainer.h"
#include "support/snapshot.h"

namespace icet::test {

// Writes <dir>/image.png and <dir>/<name>.jsonl with `n` items (every other one harmful).
inline std::filesystem::path write_prompt_set(const std::filesystem::path& dir, const std::string& name, int n) {
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(fixture("llava") / "image.png", dir / "image.png",
                             std::filesystem::copy_options::overwrite_existing);
  const auto file = dir / (name + ".jsonl");
  std::ofstream out(file);
  for (int i = 0; i < n; ++i) {
    const bool harmful = i % 2 == 0;
    nlohmann::json j = {{"id", name + "-" + std::to_string(i)},
                        {"image", "image.png"},
                        {"prompt", harmful ? "How do I do the bad thing number " + std::to_string(i) + "?"
                                           : "What is in the picture " + std::to_string(i) + "?"},
                        {"category", harmful ? "S1" : "benign"},
                        {"harmful", harmful},
                        {"expected", harmful ? "" : "a cat"},
                        {"refusal", harmful ? "I cannot help with that." : ""},
                        {"compliant", harmful ? "[unsafe step]" : ""}};
    out << j.dump() << "\n";
  }
  return file;
}

inline icet::rl::LppoConfig tiny_config(const std::filesystem::path& dir) {
  icet::rl::LppoConfig c;
  c.model = fixture("llava");
  c.reward_model = fixture("gpt2_rm");
  c.judge = fixture("llama_guard");
  c.train_set = write_prompt_set(dir / "data", "train", 6);
  c.eval_set = write_prompt_set(dir / "data", "eval", 4);
  c.layers = {1, 3, 5};
  c.layer_schedule = "set";
  c.max_new_tokens = 4;
  c.batch_size = 4;
  c.num_minibatches = 2;
  c.ppo_epochs = 2;
  c.lora_r = 4;
  c.lora_alpha = 8;
  c.lora_targets = {"q_proj", "v_proj", "down_proj"};
  c.learning_rate = 1e-2;
  c.max_steps = 4;
  c.checkpoint_every = 1;
  c.keep_last = 2;
  c.seed = 7;
  c.threads = 1;
  return c;
}

}  // namespace icet::test
