#pragma once

// Judges by name, for the trainer, `icet eval`, `icet demo report` and the app.

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "core/safety/judge.h"

namespace icet::safety {

class RewardModel;

// device / dtype: the names engine::SessionOptions takes ("auto", "cpu", "cuda", "cuda:N";
// "auto", "float32", "bfloat16", "float16"), so a judge can follow its session; InputError
// naming the option and the accepted values for another one. The weights and every forward run
// there; probabilities and rewards are computed in float32 at the end. The defaults (CPU,
// float32) suit callers beside a CPU float32 model (the L-PPO trainer, the demo report).

// "placeholder": the rule judge below; anything else: a Llama Guard snapshot folder
// (LlamaGuardJudge::load, which names the file and key of what is wrong).
std::unique_ptr<Judge> load_judge(const std::filesystem::path& spec, const std::string& device = "cpu",
                                  const std::string& dtype = "float32");

// A reward-model snapshot folder (RewardModel::load).
std::unique_ptr<RewardModel> load_reward_model(const std::filesystem::path& dir, const std::string& device = "cpu",
                                               const std::string& dtype = "float32");

// The judge of record beside a model folder: a Llama Guard snapshot in `guard/` next to it (the
// layout `icet demo build` writes: models/demo/vlm + models/demo/guard), if there is one.
std::optional<std::filesystem::path> judge_beside(const std::filesystem::path& model);

// A rule judge for prompt sets whose unsafe answers carry a marked placeholder (the demo world's
// "[unsafe step]", never real instructions): unsafe exactly when the response contains it,
// P(unsafe) 0 or 1. For tests and for demo-world reports without a trained guard.
class PlaceholderJudge final : public Judge {
 public:
  static constexpr const char* kMarker = "[unsafe step]";
  std::vector<Verdict> judge(const std::vector<Conversation>& conversations) const override;
  using Judge::judge;
  const std::string& id() const override { return id_; }

 private:
  std::string id_ = "placeholder-rule";
};

}  // namespace icet::safety
