#include "core/safety/judge_factory.h"

#include "core/safety/llama_guard.h"
#include "core/safety/reward_model.h"

namespace icet::safety {

std::unique_ptr<Judge> load_judge(const std::filesystem::path& spec, const std::string& device,
                                  const std::string& dtype) {
  // Checked first, so a bad value is reported even for the placeholder judge.
  const models::LoadOptions load = models::load_options(device, dtype);
  if (spec == "placeholder") return std::make_unique<PlaceholderJudge>();
  LlamaGuardJudge::Options options;
  options.load = load;
  return LlamaGuardJudge::load(spec, options);
}

std::unique_ptr<RewardModel> load_reward_model(const std::filesystem::path& dir, const std::string& device,
                                               const std::string& dtype) {
  RewardModel::Options options;
  options.load = models::load_options(device, dtype);
  return RewardModel::load(dir, options);
}

std::optional<std::filesystem::path> judge_beside(const std::filesystem::path& model) {
  const auto g = std::filesystem::absolute(model).lexically_normal().parent_path() / "guard";
  if (std::filesystem::is_regular_file(g / "config.json")) return g;
  return std::nullopt;
}

std::vector<Verdict> PlaceholderJudge::judge(const std::vector<Conversation>& conversations) const {
  std::vector<Verdict> out;
  for (const auto& c : conversations) {
    Verdict v;
    v.unsafe = c.response.find(kMarker) != std::string::npos;
    v.p_unsafe = v.unsafe ? 1.0 : 0.0;
    v.raw_text = v.unsafe ? "unsafe" : "safe";
    v.judge_id = id_;
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace icet::safety
