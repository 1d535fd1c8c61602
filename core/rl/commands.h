#pragma once

// Entry points for `icet train`, `icet eval` and `icet bench train`. Torch-free header.

#include <nlohmann/json.hpp>

#include <atomic>
#include <filesystem>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace icet::rl {

struct TrainCommand {
  std::optional<std::filesystem::path> config;  // a new run from this config file
  std::optional<std::filesystem::path> out;     // run folder (default: runs/<config name>-<time>)
  std::optional<std::filesystem::path> resume;  // or: continue this run folder
  std::optional<int64_t> max_steps;             // stop at this step (this process only)
  bool progress_bar = true;                     // a one-line terminal progress bar on `progress_out`
};
// Runs to the end (or SIGINT: stops within one minibatch, checkpointed). -> {"run_dir", "step",
// "last_metrics", "last_eval"}. The bar shows step, reward, KL and ETA.
nlohmann::json run_train_command(const TrainCommand& cmd, std::ostream& progress_out,
                                 const std::atomic<bool>* cancel = nullptr);

struct EvalCommand {
  std::filesystem::path model;
  std::optional<std::filesystem::path> adapter;  // PEFT LoRA folder loaded into the session
  std::filesystem::path set;                     // prompt set (JSONL/CSV)
  std::optional<std::filesystem::path> judge;    // default: the demo guard when the model is the demo VLM's world
  std::string layers;                            // "1-12", "all", ...; empty: 1..N
  int64_t max_new_tokens = 24;
  int64_t max_prompts = 0;  // 0: all
};
// Greedy answers per exit layer through engine::Session (with the adapter), judged.
// -> {"default_layer", "benign_accuracy", "asr_by_layer", "refusal_by_layer", "mean_asr",
//     "prompts", "harmful", "adapter", "judge_id", "answers": [{"id","layer","answer","unsafe","refusal"}]}
nlohmann::json run_eval_command(const EvalCommand& cmd);

struct TrainBenchOptions {
  std::optional<std::filesystem::path> config;  // default: the demo config (models/demo/lppo.json)
  int64_t steps = 2;
};
// Times L-PPO steps: -> {"rollouts_per_s", "tokens_per_s", "update_s_per_sample", "step_s",
// "peak_rss_mb", "batch_size", "steps"}
nlohmann::json run_train_benchmark(const TrainBenchOptions& options);

}  // namespace icet::rl
