#pragma once

// L-PPO (layer-wise PPO, PAPER.md "L-PPO") and the SFT baseline: the trainer's API for front
// ends (CLI `icet train`, the app's training dashboard). Torch-free header (pimpl), so ui code
// can hold a TrainingRun without including LibTorch.
//
// Use (on a worker thread):
//   auto run = TrainingRun::create(load_config("models/demo/lppo.json"), "runs/demo");  // or resume(dir)
//   run->run(&cancel, [](const TrainProgress& p) { ... });  // blocks; throws icet::Error
// and, from any thread (e.g. a GUI timer every ~40 ms): drain_metrics(), drain_samples(),
// drain_evals(). Each drain returns what was produced since the previous drain, oldest first.
//
// Run folder layout (everything a resume needs; nothing else is read):
//   config.json              the full LppoConfig (paths absolute), written by create()
//   metrics.jsonl            one MetricsRow per step: {"step", "seconds", <values>...}
//   samples.jsonl            some rollouts per step (RolloutSample)
//   evals.jsonl              periodic evaluations (EvalPoint)
//   checkpoints/step-NNNNNNNN/
//       adapter_config.json + adapter_model.safetensors   the LoRA adapter, PEFT layout
//       value_head.safetensors, optimizer.safetensors, state.json (step, data cursor, RNG
//       stream seeds, KL coefficient, episode count)
//   adapter/                 the latest adapter (PEFT layout), refreshed at every checkpoint
// Checkpoints are written to a temporary folder, fsynced and renamed into place; the last
// `keep_last` are kept. A killed run resumes from its newest complete checkpoint, and the
// log files are cut back to that step, so the resumed run is the identical run.

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/rl/memory.h"

namespace icet::rl {

// Every hyperparameter of a run, with PAPER.md's (TRL-style, *assumed*) defaults. Relative
// paths in a config file are resolved against the file's folder.
struct LppoConfig {
  std::string method = "lppo";  // "lppo" (layer-wise PPO) or "sft" (refusal SFT baseline)

  // Models and data.
  std::filesystem::path model;       // llava snapshot (the policy; its weights stay frozen)
  std::filesystem::path reward_model;  // GPT-2 / Llama sequence-classifier reward model (may be empty with reward.kind "judge")
  std::filesystem::path judge;       // judge for rewards "judge"/"mix" and the periodic evaluation, as
                                     // safety::load_judge reads it (a Llama Guard folder or "placeholder")
  std::filesystem::path train_set;   // prompt set (JSONL/CSV: id, image, prompt, harmful, refusal, expected, ...)
  std::filesystem::path eval_set;    // held-out prompt set for the periodic evaluation (may be empty)
  std::string train_items = "all";   // "all" or "harmful" (only the harmful prompts, as the paper's RedTeam-2K)

  // Exit-layer schedule for rollouts (and SFT samples):
  //   "fixed"       every rollout at layers[0] (the paper: one run per layer; `icet train --layers`
  //                 starts one such run per listed layer)
  //   "set"         each rollout a layer drawn uniformly from `layers` (a layer set; "uniform" is read as "set")
  //   "cycle"       the layers in turn
  //   "random"      each rollout a layer drawn uniformly from all of the model's exit layers
  //                 (the reviewers' suggestion; `layers` must be empty)
  //   "curriculum"  `layers` are opened in list order: curriculum_start of them at step 1, one
  //                 more at even intervals until all are open at curriculum_steps; each rollout
  //                 draws uniformly from the open ones (e.g. the default layer as an anchor, then
  //                 the boundary layers where the model half refuses, then earlier ones)
  std::string layer_schedule = "set";
  std::vector<int64_t> layers;              // empty: the model's default layer
  int64_t curriculum_start = 1;
  int64_t curriculum_steps = 0;             // 0: all open from step 1
  // Benign prompts (train_items "all") at these exit layers instead of the schedule's, e.g. the
  // default layer only: their reward then pays for keeping the answers the app shows by default.
  std::vector<int64_t> benign_layers;

  // Rollout sampling (never emits special tokens: the image token, padding rows, BOS).
  double temperature = 0.7;
  double top_p = 1.0;
  int64_t top_k = 0;
  int64_t max_new_tokens = 128;

  // Reward: "reward_model" (score), "judge" (-P(unsafe)), or "mix" (score - judge_weight * P(unsafe)).
  std::string reward_kind = "reward_model";
  double judge_weight = 1.0;
  double reward_scale = 1.0;          // score multiplier (before the KL penalty)
  double reward_clip = 10.0;          // |score| clipped to this (0: off)
  double missing_eos_penalty = 1.0;   // subtracted from the score of an answer that never ended (TRL)
  // Reward-model prompts of items with an expected answer carry it (safety::reward_prompt), for
  // reference-guided reward models; the policy never sees it.
  bool reward_reference = false;
  double refusal_bonus = 0.0;         // added to the score of a harmful prompt's proper refusal
                                      // (safety::is_proper_refusal: the set's `refusal` up to case and punctuation)
  double answer_bonus = 0.0;          // added to the score of a benign prompt's exact expected answer
                                      // (matches_expected): a verifiable reward beside the reward model
  bool whiten_rewards = false;        // whiten per-token rewards over the batch (TRL)

  // KL penalty r_t -= kl_coef * KL_t against the reference (adapters off).
  std::string kl_estimator = "k3";    // "k1" (log ratio) or "k3" ((r - 1) - log r, never negative)
  std::string kl_control = "adaptive";  // "fixed" or "adaptive" (Ziegler et al.)
  double kl_coef = 0.2;
  double kl_target = 6.0;             // adaptive: target sequence KL (nats)
  double kl_horizon = 10000.0;        // adaptive: horizon (episodes)
  // > 0: adds benign_kl_coef * the exact per-token KL to the reference over the vocabulary
  // (full_kl, mean over the response tokens of benign prompts) to the PPO loss: an anchor that
  // keeps the benign answers where they were, including tokens the rollouts never sampled (a
  // refusal word creeping into a description). One extra adapters-off forward per minibatch.
  double benign_kl_coef = 0.0;

  // PPO.
  int64_t batch_size = 64;            // rollouts per step
  int64_t ppo_epochs = 4;
  int64_t num_minibatches = 4;
  double gamma = 1.0;
  double lam = 0.95;
  double cliprange = 0.2;
  double cliprange_value = 0.2;
  double vf_coef = 0.1;
  double entropy_coef = 0.0;
  double target_kl = 0.0;             // > 0: stop an update's epochs once approx KL > 1.5 * target_kl
  bool whiten_advantages = true;

  // Optimizer: AdamW, gradient clipping, learning-rate schedule.
  double learning_rate = 1e-5;
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_eps = 1e-8;
  double max_grad_norm = 1.0;
  std::string lr_schedule = "constant";  // "constant", "linear" (to 0 at max_steps), "cosine"
  int64_t warmup_steps = 0;

  // LoRA on the language model's linear layers.
  std::vector<std::string> lora_targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  int64_t lora_r = 64;
  double lora_alpha = 128.0;
  double lora_dropout = 0.0;
  double value_head_lr_scale = 1.0;   // value head learning rate = learning_rate * this

  // SFT baseline: the target of a harmful prompt is its set's refusal (else `sft_refusal`);
  // a benign prompt's target is its expected answer.
  std::string sft_refusal = "I cannot help with that request.";

  // Run control.
  int64_t max_steps = 100;
  int64_t checkpoint_every = 10;      // steps (0: only at the end)
  int64_t keep_last = 3;
  int64_t eval_every = 0;             // steps (0: off); also at step 0 and at the end when on
  std::vector<int64_t> eval_layers;   // empty: `layers` plus the default layer
  int64_t eval_max_prompts = 0;       // 0: the whole eval set
  int64_t samples_per_step = 4;       // rollouts kept per step for drain_samples()/samples.jsonl
  uint64_t seed = 0;
  int threads = 0;                    // intra-op threads (0: leave as set)
  // Where the run trains: the frozen base model (VLM, reward model, judge) in `dtype` on
  // `device`; LoRA, value head, optimizer state and losses stay float32. Names as --device /
  // --dtype ("auto", "cpu", "cuda", "cuda:N"; "auto", "float32", "bfloat16", "float16").
  std::string device = "cpu";
  std::string dtype = "float32";
  bool gradient_checkpointing = false;  // recompute each LM layer in backward (less activation memory)
  double memory_budget_gib = 0;         // refuse to start above this estimate (0: the device's memory)
};

// Reads a config file (JSON); unknown keys and bad values are InputErrors naming the file and key.
LppoConfig load_config(const std::filesystem::path& file);
nlohmann::json to_json(const LppoConfig& config);
// `source` names the origin in errors; relative paths stay as written.
LppoConfig config_from_json(const nlohmann::json& json, const std::string& source);
// Range checks (methods, schedules, positive sizes, ...); InputError naming `source` and the key.
void validate(const LppoConfig& config, const std::string& source);
// The model, judge, reward model and prompt sets exist (InputError naming the key and the path).
void check_paths(const LppoConfig& config, const std::string& source);
// The layers a step's rollouts may use: `layers` (all model layers for "random"), for
// "curriculum" those open at step s (1-based). `model_layers`: the model's exit layers (1..N).
std::vector<int64_t> open_layers(const LppoConfig& config, int64_t step, int64_t model_layers, int64_t default_layer);

// One training step's metrics. values use TRL's names: objective/kl, objective/entropy,
// objective/non_score_reward, objective/rlhf_reward, objective/scores, policy/approxkl_avg,
// policy/clipfrac_avg, loss/policy_avg, loss/value_avg, val/clipfrac_avg, val/ratio, lr,
// episode; plus objective/kl_coef, reward/layer_<l> (mean score per exit layer),
// response/length_mean, response/eos_frac, perf/rollouts_per_s, perf/tokens_per_s,
// time/rollout_s, time/update_s (timings: perf/ and time/ only). SFT: loss/sft, lr, episode.
struct MetricsRow {
  int64_t step = 0;
  double seconds = 0;  // wall time since the run (first) started, excluding pauses
  std::map<std::string, double> values;
};
nlohmann::json to_json(const MetricsRow& row);

struct RolloutSample {
  int64_t step = 0;
  int64_t layer = 0;
  std::string image, prompt, answer;
  double reward = 0;
};
nlohmann::json to_json(const RolloutSample& sample);

// Periodic evaluation on the held-out set: greedy answers per exit layer, judged.
struct EvalPoint {
  int64_t step = 0;
  // Fractions 0..1, as eval::evaluate / `icet demo report`.
  std::map<int64_t, double> asr_by_layer;      // unsafe (judge) among harmful prompts
  std::map<int64_t, double> refusal_by_layer;  // proper refusals among harmful prompts
  double benign_accuracy = 0;                  // benign prompts answered exactly, default layer
};
nlohmann::json to_json(const EvalPoint& point);

struct TrainProgress {
  int64_t step = 0;  // steps done
  int64_t max_steps = 0;
  std::string stage;  // "loading", "rollouts", "update", "evaluating", "checkpoint", "done"
  double eta_seconds = -1;  // < 0 while unknown
  double reward = 0;        // last step's objective/scores
  double kl = 0;            // last step's objective/kl
};

class TrainingRun {
 public:
  // Validates the config, creates `run_dir` (which must not hold a run yet) and writes
  // config.json. Models are loaded by run().
  static std::unique_ptr<TrainingRun> create(const LppoConfig& config, const std::filesystem::path& run_dir);
  // A run folder written by create(): continues from its newest complete checkpoint (step 0
  // when none), with the identical data order, sampling and optimizer state.
  static std::unique_ptr<TrainingRun> resume(const std::filesystem::path& run_dir);
  ~TrainingRun();
  TrainingRun(const TrainingRun&) = delete;
  TrainingRun& operator=(const TrainingRun&) = delete;

  // Blocks the calling (worker) thread until max_steps, cancel (checked before every
  // minibatch and every decode step; ends by a checkpoint of the last finished step and
  // returns normally) or an error (a typed icet::Error; NaN/inf in a loss or reward stops the
  // run with a message naming the step and quantity; the last good checkpoint is kept).
  // `progress` is called on this thread.
  void run(const std::atomic<bool>* cancel, const std::function<void(const TrainProgress&)>& progress);

  // Thread-safe; for a GUI timer.
  std::vector<MetricsRow> drain_metrics();
  std::vector<RolloutSample> drain_samples();
  std::vector<EvalPoint> drain_evals();

  int64_t step() const;  // steps done (thread-safe)
  int64_t max_steps() const;
  const std::filesystem::path& dir() const;
  const LppoConfig& config() const;
  // The memory estimate the run checked before loading (device and dtype resolved); nullopt
  // until run() has got that far. Thread-safe.
  std::optional<MemoryEstimate> memory_estimate() const;
  // Stops at this step instead of config().max_steps (the CLI's --max-steps; resume keeps it
  // only for this process).
  void set_max_steps(int64_t steps);

 private:
  struct Impl;
  explicit TrainingRun(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// metrics.jsonl -> CSV (one column per metric name, sorted; "step" and "seconds" first).
void export_metrics_csv(const std::filesystem::path& metrics_jsonl, const std::filesystem::path& csv);

// The newest complete checkpoint folder of a run (empty path when none).
std::filesystem::path latest_checkpoint(const std::filesystem::path& run_dir);

}  // namespace icet::rl
