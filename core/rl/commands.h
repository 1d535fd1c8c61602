#pragma once

// Entry points for `icet train` and `icet bench train` (`icet eval`: core/eval/eval_command.h). Torch-free header.

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
  // New runs only: override the config's exit layers ("1-12", "3,7,9", "all": checked against
  // the model's layers), layer_schedule and seed. With schedule "fixed" and several layers, one
  // run per layer (the paper's reading) goes into <out>/layer-NN, one after another. A
  // "curriculum" opens the given layers nearest the model's default layer first.
  std::string layers;
  std::optional<std::string> schedule;
  std::optional<uint64_t> seed;
  bool progress_bar = true;                     // a one-line terminal progress bar on `progress_out`
};
// Runs to the end (or SIGINT: stops within one minibatch, checkpointed). -> {"run_dir", "step",
// "last_metrics", "last_eval"} (per-layer runs: {"runs": [...]}). The bar shows step, reward, KL and ETA.
nlohmann::json run_train_command(const TrainCommand& cmd, std::ostream& progress_out,
                                 const std::atomic<bool>* cancel = nullptr);

struct TrainBenchOptions {
  std::optional<std::filesystem::path> config;  // default: the demo config (models/demo/lppo.json)
  int64_t steps = 2;
};
// Times L-PPO steps (the config's model, data and reward; no evaluation, no checkpoints):
// -> {"rollouts_per_s", "tokens_per_s" (sampling incl. scoring), "update_s_per_sample" (old/ref
// passes + PPO epochs), "step_s" (rollout + update), "total_s_with_loading", "peak_rss_mb",
// "batch_size", "steps"}
nlohmann::json run_train_benchmark(const TrainBenchOptions& options);

}  // namespace icet::rl
