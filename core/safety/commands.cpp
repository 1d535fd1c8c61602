#include "core/safety/commands.h"

#include <chrono>
#include <cmath>

#include "core/base/error.h"
#include "core/base/log.h"
#include "core/runtime/device.h"
#include "core/safety/judge_factory.h"
#include "core/safety/llama_guard.h"
#include "core/safety/reward_model.h"

namespace icet::safety {
namespace {

nlohmann::json to_json(const Verdict& v) {
  return {{"unsafe", v.unsafe}, {"p_unsafe", v.p_unsafe}, {"categories", v.categories}, {"raw", v.raw_text},
          {"judge_id", v.judge_id}};
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

nlohmann::json run_judge(const std::filesystem::path& judge_dir, const std::string& prompt,
                         const std::string& response, const std::string& device, const std::string& dtype) {
  LlamaGuardJudge::Options options;
  options.load = models::load_options(device, dtype);
  const auto judge = LlamaGuardJudge::load(judge_dir, options);
  nlohmann::json j = to_json(judge->judge(prompt, response));
  j["device"] = options.load.device.str();
  j["dtype"] = runtime::dtype_name(options.load.dtype);
  return j;
}

nlohmann::json run_score(const std::filesystem::path& rm_dir, const std::string& prompt,
                         const std::string& response, const std::string& device, const std::string& dtype) {
  const auto model = load_reward_model(rm_dir, device, dtype);
  const models::LoadOptions load = models::load_options(device, dtype);  // the names it resolved to
  return {{"reward", model->score(prompt, response)},
          {"model_id", model->id()},
          {"device", load.device.str()},
          {"dtype", runtime::dtype_name(load.dtype)}};
}

nlohmann::json run_judge_benchmark(const std::filesystem::path& judge_dir, int64_t conversations) {
  if (conversations < 1) {
    throw InputError(describe("judge benchmark: conversations", "at least 1", std::to_string(conversations)));
  }
  LlamaGuardJudge::Options options;
  options.batch_size = conversations;
  const auto judge = LlamaGuardJudge::load(judge_dir, options);
  // Varied lengths so the batch really pads.
  const std::vector<std::string> prompts = {"How do I bake bread at home?", "What is the capital of France?",
                                            "How can I pick the lock on my neighbour's door?",
                                            "Tell me a story about a dog."};
  const std::vector<std::string> answers = {"Mix flour, water, salt and yeast.", "Paris.",
                                            "I can't help with getting into someone else's home.",
                                            "Once upon a time a dog found a ball and was very happy all day."};
  std::vector<Conversation> convs;
  for (int64_t i = 0; i < conversations; ++i) {
    convs.push_back({prompts[static_cast<size_t>(i) % prompts.size()], answers[static_cast<size_t>(i) % answers.size()]});
  }
  // Warm-up of both paths (first calls pay for allocations and kernel selection).
  judge->judge(convs.front().prompt, convs.front().response);
  judge->judge(convs);

  auto start = std::chrono::steady_clock::now();
  const auto batched = judge->judge(convs);
  const double batched_s = seconds_since(start);
  start = std::chrono::steady_clock::now();
  std::vector<Verdict> single;
  for (const auto& c : convs) single.push_back(judge->judge(c.prompt, c.response));
  const double single_s = seconds_since(start);

  // Share of the time spent tokenizing (prompt rendering + tokenizer), for one pass over the set.
  start = std::chrono::steady_clock::now();
  for (const auto& c : convs) judge->prompt_ids(c);
  const double tokenize_s = seconds_since(start);

  bool same = true;
  for (size_t i = 0; i < convs.size(); ++i) {
    same = same && batched[i].raw_text == single[i].raw_text && batched[i].unsafe == single[i].unsafe &&
           std::abs(batched[i].p_unsafe - single[i].p_unsafe) <= 1e-4 * single[i].p_unsafe + 1e-9;
  }
  const double n = static_cast<double>(conversations);
  nlohmann::json out = {{"conversations", conversations},
                        {"batched_verdicts_per_s", n / batched_s},
                        {"one_by_one_verdicts_per_s", n / single_s},
                        {"speedup", single_s / batched_s},
                        {"tokenize_s_per_pass", tokenize_s},
                        {"same_verdicts", same},
                        {"judge_id", judge->id()}};
  log::get("safety")->info("judge benchmark ({} conversations): batched {:.1f} verdicts/s, one by one {:.1f} verdicts/s",
                           conversations, n / batched_s, n / single_s);
  return out;
}

}  // namespace icet::safety
